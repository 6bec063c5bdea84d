//! `mlpdrive shim mount|unmount`: the command-line glue around the FUSE
//! shim crate (`mlpdrive-shim`). Validation happens before anything is
//! mounted or written; `--daemon` forks before any thread starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mlpdrive_emu::Profile;
use mlpdrive_shim::{Backing, Daemon, ShimConfig, ShimError, Summary};

use crate::cli::{ShimCrashArgs, ShimMountArgs, ShimUnmountArgs};
use crate::error::{EXIT_FAILED, EXIT_OK, Error};
use crate::shim_verify::LiveVerifier;

fn shim_error(e: ShimError) -> Error {
    match e {
        ShimError::Usage(m) => Error::usage(m),
        ShimError::Failed(m) => Error::failed(m),
    }
}

/// A path made absolute against the current directory (the daemon keeps
/// the directory, but absolute paths make messages unambiguous).
fn absolute(p: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(p).map_err(|e| Error::usage(format!("{}: {e}", p.display())))
}

/// The parent directory of an output file must exist.
fn output_path(flag: &str, p: &Path) -> Result<PathBuf, Error> {
    let p = absolute(p)?;
    match p.parent() {
        Some(d) if d.is_dir() => {}
        _ => return Err(Error::usage(format!("{flag} {}: the directory it goes in does not exist", p.display()))),
    }
    if p.is_dir() {
        return Err(Error::usage(format!("{flag} {}: is a directory; give a file path", p.display())));
    }
    Ok(p)
}

struct Validated {
    cfg_profile: Profile,
    backing: Backing,
    mountpoint: PathBuf,
    oplog: Option<PathBuf>,
    verdict: Option<PathBuf>,
    log: Option<PathBuf>,
    seed: u64,
}

fn validate(a: &ShimMountArgs) -> Result<Validated, Error> {
    let profile = Profile::load(&a.profile).map_err(|e| Error::usage(format!("--profile {}: {e}", a.profile)))?;
    let backing = if a.backing == "mem" {
        Backing::Mem
    } else {
        let p = absolute(Path::new(&a.backing))?;
        if !p.is_dir() {
            return Err(Error::usage(format!(
                "--backing {}: not an existing directory (create it, or use `mem` for in-memory files)",
                a.backing
            )));
        }
        Backing::Dir(p)
    };
    let mountpoint = absolute(&a.mountpoint)?;
    if !mountpoint.is_dir() {
        return Err(Error::usage(format!(
            "--mountpoint {}: not an existing directory (create an empty one)",
            a.mountpoint.display()
        )));
    }
    if mlpdrive_shim::is_shim_mount(&mountpoint.canonicalize().unwrap_or(mountpoint.clone())) {
        return Err(Error::usage(format!(
            "--mountpoint {}: a shim is already mounted there (`mlpdrive shim unmount {}` first)",
            mountpoint.display(),
            mountpoint.display()
        )));
    }
    if a.threads == 0 || a.threads > 1024 {
        return Err(Error::usage(format!("--threads {}: give 1 to 1024", a.threads)));
    }
    let oplog = a.oplog.as_deref().map(|p| output_path("--oplog", p)).transpose()?;
    if a.verdict.is_some() && !a.verify {
        return Err(Error::usage("--verdict needs --verify"));
    }
    let verdict = match (&a.verdict, &oplog) {
        (Some(v), _) => Some(output_path("--verdict", v)?),
        (None, Some(log)) if a.verify => Some(log.with_extension("verdicts.json")),
        _ => None,
    };
    if a.log.is_some() && !a.daemon {
        return Err(Error::usage("--log applies only with --daemon (in the foreground messages go to stderr)"));
    }
    let log = a.log.as_deref().map(|p| output_path("--log", p)).transpose()?;
    Ok(Validated {
        cfg_profile: profile,
        backing,
        mountpoint,
        oplog,
        verdict,
        log,
        seed: a.seed.unwrap_or(crate::config::DEFAULT_SEED),
    })
}

/// `mlpdrive shim mount`.
pub fn mount(a: &ShimMountArgs) -> Result<i32, Error> {
    let v = validate(a)?;
    let mut daemon = None;
    if a.daemon {
        match mlpdrive_shim::fork_daemon(v.log.as_deref())
            .map_err(|e| Error::failed(format!("cannot start the daemon: {e}")))?
        {
            parent @ Daemon::Parent { .. } => {
                return match parent.wait_ready() {
                    Ok(msg) => {
                        eprintln!("mlpdrive shim: {msg}");
                        Ok(EXIT_OK)
                    }
                    Err(msg) => Err(Error::failed(msg)),
                };
            }
            child @ Daemon::Child { .. } => daemon = Some(child),
        }
    }
    let r = serve(a, v, &mut daemon);
    if let (Some(d), Err(e)) = (daemon.as_mut(), &r) {
        d.report(Err(&e.to_string()));
    }
    r
}

fn serve(a: &ShimMountArgs, v: Validated, daemon: &mut Option<Daemon>) -> Result<i32, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    crate::signal::install(&stop);
    let verifier = a.verify.then(|| Arc::new(LiveVerifier::new()));
    let backing_text = match &v.backing {
        Backing::Dir(d) => d.display().to_string(),
        Backing::Mem => "mem".to_string(),
    };
    let profile_name = v.cfg_profile.name.clone();
    let cfg = ShimConfig {
        mountpoint: v.mountpoint.clone(),
        backing: v.backing,
        profile: v.cfg_profile,
        seed: v.seed,
        oplog: v.oplog.clone(),
        observer: verifier.clone().map(|o| o as Arc<dyn mlpdrive_shim::Observer>),
        allow_other: a.allow_other,
        allow_passthrough: !a.no_passthrough,
        threads: a.threads,
        crash_tracking: a.crash_tracking,
        rtt_compensation: !a.no_rtt_compensation,
    };
    let mounted = mlpdrive_shim::mount(cfg).map_err(shim_error)?;
    let lead = match mounted.reply_lead_ns() {
        0 => String::new(),
        ns => format!("; FUSE round trip {:.1} µs, replies sent that much early", ns as f64 / 1000.0),
    };
    let msg = format!(
        "mounted {} (backing {backing_text}, profile {profile_name}, seed {}, pid {}); data path: {}{lead}",
        mounted.mountpoint().display(),
        v.seed,
        std::process::id(),
        mounted.data_path()
    );
    eprintln!("mlpdrive shim: {msg}");
    if let Some(d) = daemon.as_mut() {
        d.report(Ok(&msg));
    }
    while !stop.load(Ordering::SeqCst) && !mounted.ended() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !mounted.ended() {
        eprintln!("mlpdrive shim: unmounting {}", mounted.mountpoint().display());
        if let Err(e) = mounted.unmount(true) {
            eprintln!("mlpdrive shim: {e}");
        }
    }
    let summary = mounted.finish();
    report(&summary, v.oplog.as_deref(), v.verdict.as_deref())
}

/// Prints the session's summary and verdicts; writes the verdict JSON.
fn report(s: &Summary, oplog: Option<&Path>, verdict: Option<&Path>) -> Result<i32, Error> {
    let mut failed = false;
    let rows = match (s.oplog_rows, oplog) {
        (Some(n), Some(p)) => format!(", op log {} ({n} rows)", p.display()),
        _ => String::new(),
    };
    eprintln!("mlpdrive shim: unmounted: {} ops, {} answered with an error{rows}", s.ops, s.errors);
    if let Some(b) = s.crash_undo_bytes {
        eprintln!("mlpdrive shim: crash tracking held {b} bytes of replaced data for writes still unsynced at the end");
    }
    for p in &s.problems {
        eprintln!("mlpdrive shim: error: {p}");
        failed = true;
    }
    if let Some(r) = &s.report {
        print!("{}", r.text);
        if let Some(path) = verdict {
            if let Err(e) = std::fs::write(path, format!("{}\n", r.json)) {
                eprintln!("mlpdrive shim: error: cannot write verdicts to {}: {e}", path.display());
                failed = true;
            } else {
                eprintln!("mlpdrive shim: verdicts written to {}", path.display());
            }
        }
        if !r.ok {
            eprintln!("mlpdrive shim: verification FAILED");
            failed = true;
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// `mlpdrive shim unmount`.
pub fn unmount(a: &ShimUnmountArgs) -> Result<i32, Error> {
    let wait = crate::units::parse_duration(&a.wait).map_err(|e| Error::usage(format!("--wait {}: {e}", a.wait)))?;
    let out = mlpdrive_shim::unmount(&a.mountpoint, wait).map_err(shim_error)?;
    match (out.daemon_pid, out.daemon_exited) {
        (Some(pid), true) => eprintln!("mlpdrive shim: unmounted {} (daemon {pid} finished)", a.mountpoint.display()),
        (Some(pid), false) => {
            return Err(Error::failed(format!(
                "unmounted {}, but daemon {pid} did not exit within {}; its op log may be incomplete",
                a.mountpoint.display(),
                a.wait
            )));
        }
        (None, _) => eprintln!(
            "mlpdrive shim: unmounted {} (its daemon was already gone: a stale mount)",
            a.mountpoint.display()
        ),
    }
    Ok(EXIT_OK)
}

/// `mlpdrive shim crash`.
pub fn crash(a: &ShimCrashArgs) -> Result<i32, Error> {
    let mp = absolute(&a.mountpoint)?;
    if !mlpdrive_shim::is_shim_mount(&mp.canonicalize().unwrap_or(mp.clone())) {
        return Err(Error::usage(format!("{}: not an mlpdrive shim mount", a.mountpoint.display())));
    }
    let c = mlpdrive_shim::crash(&mp).map_err(|e| match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Error::usage(format!(
            "{}: the shim there does not track unsynced writes; mount it with --crash-tracking",
            mp.display()
        )),
        Some(code) if mlpdrive_shim::is_daemon_gone_errno(code) => Error::failed(format!(
            "{}: {e}; the FUSE daemon behind it is gone; run `mlpdrive shim unmount {}`",
            mp.display(),
            mp.display()
        )),
        _ => Error::failed(format!("crash {}: {e}", mp.display())),
    })?;
    println!(
        "crash: lost {} unsynced writes ({} bytes) in {} files; kept {} unsynced writes",
        c.writes_lost, c.bytes_lost, c.files, c.writes_kept
    );
    Ok(EXIT_OK)
}
