//! `mlpdrive-shim`: a FUSE file system that passes through to a backing
//! directory (or in-memory files) and gives every data op the latency and
//! faults of an emulated device from `mlpdrive-emu`.
//!
//! [`mount`] starts a session and returns a [`Mounted`] handle;
//! [`Mounted::unmount`] (or an external `mlpdrive shim unmount`) ends it
//! and returns a [`Summary`] with the op-log row count and the
//! [`Observer`]'s verdicts. With a profile that costs nothing and nothing
//! to observe, open files are handed to the kernel's FUSE passthrough and
//! the daemon leaves the data path. docs/shim.md is the user guide.

#![warn(unreachable_pub)]

mod backend;
mod buf;
mod completion;
mod control;
mod crash;
mod daemon;
mod errno;
mod fs;
mod inodes;
mod oplog;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use mlpdrive_emu::{Capacity, Device, Profile, RealClock};

pub use backend::Backing;
pub use control::{
    FuseMount, UnmountOutcome, crash, daemon_pid, dead_fuse_mount_of, fuse_mount_of, is_daemon_gone_errno,
    is_shim_mount, unmount,
};
pub use crash::CrashCounts;
pub use daemon::{Daemon, fork_daemon};
pub use oplog::{HASH_BLOCK_BYTES, OPLOG_HEADER};

use crate::completion::Completer;
use crate::fs::{Shared, SharedParts, ShimFs};
use crate::oplog::OpLog;

/// `_IOR('M', 0x53, u64)` on the mount root answers the daemon's pid
/// (`mlpdrive shim unmount` uses it to wait until the daemon has written
/// its op log and verdicts).
pub const PID_IOCTL: u32 = (2 << 30) | (8 << 16) | ((b'M' as u32) << 8) | 0x53;

/// `_IOR('M', 0x54, [u64; 4])` on the mount root crashes the emulated
/// device (`--crash-tracking` mounts): it answers the files, writes lost,
/// bytes lost and writes kept (see [`crash`]).
pub const CRASH_IOCTL: u32 = (2 << 30) | (32 << 16) | ((b'M' as u32) << 8) | 0x54;

/// The mount source of every shim mount (`fsname`, first column of /proc/mounts).
pub const FS_NAME: &str = "mlpdrive-shim";

/// Sees the bytes of every successful read and write (for live verdicts).
/// Called on FUSE threads, before the reply is sent; keep it fast.
pub trait Observer: Send + Sync {
    /// `data` was written to `path` (relative to the mount root) at `offset`.
    fn on_write(&self, path: &str, offset: u64, data: &[u8]);
    /// `data` (as returned to the reader) was read from `path` at `offset`.
    fn on_read(&self, path: &str, offset: u64, data: &[u8]);
    /// `from` (a file or a directory) was renamed to `to`, replacing any
    /// `to`; with `exchange` (`RENAME_EXCHANGE`) the two swapped names.
    /// Called after the rename succeeded, before the reply.
    fn on_rename(&self, from: &str, to: &str, exchange: bool) {
        let _ = (from, to, exchange);
    }
    /// `mlpdrive shim crash` lost the unsynced writes covering `len` bytes
    /// of `path` at `offset`; `now` is what the file holds there after the
    /// crash (shorter than `len` if the file shrank back).
    fn on_crash(&self, path: &str, offset: u64, len: u64, now: &[u8]) {
        let _ = (path, offset, len, now);
    }
    /// The verdicts so far.
    fn report(&self) -> Report;
}

/// An observer's verdicts.
#[derive(Debug, Clone)]
pub struct Report {
    /// No violation.
    pub ok: bool,
    /// Human-readable lines.
    pub text: String,
    /// The same as a JSON document.
    pub json: String,
}

/// What to mount.
pub struct ShimConfig {
    /// An existing, empty directory.
    pub mountpoint: PathBuf,
    /// Where files live.
    pub backing: Backing,
    /// Device timing and faults.
    pub profile: Profile,
    /// Seed of the device model's random choices.
    pub seed: u64,
    /// Write the op log here (CSV, see docs/shim.md).
    pub oplog: Option<PathBuf>,
    /// Live verdicts over the data.
    pub observer: Option<Arc<dyn Observer>>,
    /// Let other users than the mounting one use the mount.
    pub allow_other: bool,
    /// Allow the kernel passthrough fast path (used only when the profile
    /// costs nothing and there is no op log or observer).
    pub allow_passthrough: bool,
    /// FUSE request threads.
    pub threads: usize,
    /// Track unsynced writes so that [`crash`] can drop them.
    pub crash_tracking: bool,
    /// Measure the FUSE round trip at mount and send delayed replies that
    /// much early, so clients see the profile's latency rather than the
    /// profile's plus the round trip (daemon path only).
    pub rtt_compensation: bool,
}

/// Why a mount failed or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// Bad input: a path, a profile, an option.
    #[error("{0}")]
    Usage(String),
    /// The mount or the session failed.
    #[error("{0}")]
    Failed(String),
}

/// True if `profile` can never delay, fail or alter an op (the fast path
/// may then bypass the model).
pub fn profile_is_free(profile: &Profile) -> bool {
    let Ok(ideal) = Profile::load("ideal") else { return false };
    let mut p = profile.clone();
    p.name = ideal.name.clone();
    p.description = ideal.description.clone();
    p.channels = ideal.channels;
    p == ideal
}

/// How a session's data flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPath {
    /// The kernel reads and writes the backing files itself.
    Passthrough,
    /// Every read and write goes through the daemon; the string says why.
    Daemon(String),
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataPath::Passthrough => write!(f, "kernel passthrough (the daemon serves metadata only)"),
            DataPath::Daemon(why) => write!(f, "daemon ({why})"),
        }
    }
}

/// A live mount.
pub struct Mounted {
    session: Option<BackgroundSession>,
    shared: Arc<Shared>,
    oplog: Option<OpLog>,
    mountpoint: PathBuf,
    data_path: DataPath,
}

/// What a finished session did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Operations served.
    pub ops: u64,
    /// Operations answered with an error.
    pub errors: u64,
    /// Rows written to the op log (None without one).
    pub oplog_rows: Option<u64>,
    /// The observer's verdicts (None without one).
    pub report: Option<Report>,
    /// Things that went wrong while shutting down (op-log write errors).
    pub problems: Vec<String>,
    /// With crash tracking: bytes of replaced data still held at the end
    /// to undo unsynced writes (None without crash tracking).
    pub crash_undo_bytes: Option<u64>,
}

/// Mounts the shim; returns once the kernel has accepted the mount.
pub fn mount(cfg: ShimConfig) -> Result<Mounted, ShimError> {
    let mountpoint = cfg
        .mountpoint
        .canonicalize()
        .map_err(|e| ShimError::Usage(format!("--mountpoint {}: {e}", cfg.mountpoint.display())))?;
    if !mountpoint.is_dir() {
        return Err(ShimError::Usage(format!("--mountpoint {}: not a directory", mountpoint.display())));
    }
    let store = backend::Store::new(&cfg.backing).map_err(|e| match &cfg.backing {
        Backing::Dir(d) => {
            ShimError::Usage(format!("--backing {}: {e} (give an existing directory, or `mem`)", d.display()))
        }
        Backing::Mem => ShimError::Failed(format!("in-memory store: {e}")),
    })?;
    if let Backing::Dir(d) = &cfg.backing
        && let Ok(d) = d.canonicalize()
        && (d.starts_with(&mountpoint) || mountpoint.starts_with(&d))
    {
        return Err(ShimError::Usage(format!(
            "--backing {} and --mountpoint {} overlap; use separate directories",
            d.display(),
            mountpoint.display()
        )));
    }

    let clock = RealClock::new();
    // Capacity is enforced by the shim over the files' total size; the
    // model places each file in its own stretch of offsets, so it must not
    // apply its own offset-based limit.
    let capacity_bytes = cfg.profile.capacity.bytes();
    let device = Device::new(&cfg.profile, cfg.seed).with_capacity(Capacity::Unlimited);
    let (oplog, oplog_tx) = match &cfg.oplog {
        Some(p) => {
            let (log, tx) = OpLog::start(p)?;
            (Some(log), Some(tx))
        }
        None => (None, None),
    };
    let free = profile_is_free(&cfg.profile);
    let want_passthrough =
        cfg.allow_passthrough && free && oplog_tx.is_none() && cfg.observer.is_none() && !cfg.crash_tracking;
    let why_daemon = if !cfg.allow_passthrough {
        "passthrough turned off"
    } else if !free {
        "the profile injects latency or faults"
    } else if oplog_tx.is_some() {
        "the op log sees every op"
    } else if cfg.observer.is_some() {
        "--verify sees every op"
    } else if cfg.crash_tracking {
        "--crash-tracking sees every write"
    } else {
        ""
    };
    let completer =
        Completer::start(clock).map_err(|e| ShimError::Failed(format!("cannot start the completion thread: {e}")))?;
    let shared = Arc::new(Shared::new(SharedParts {
        store,
        device,
        clock,
        completer,
        oplog: oplog_tx,
        observer: cfg.observer,
        capacity_bytes,
        want_passthrough,
        crash: cfg.crash_tracking.then(|| crash::CrashLog::new(&cfg.profile.faults, cfg.seed)),
    }));

    let mut options = vec![
        MountOption::FSName(FS_NAME.into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.push(MountOption::RW);
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if cfg.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = true;

    let fs = ShimFs { sh: shared.clone() };
    let session = fuser::Session::new(fs, &mountpoint, &config).map_err(|e| {
        let hint = if !std::path::Path::new("/dev/fuse").exists() {
            " (/dev/fuse is missing: load the fuse module or give the container the device)"
        } else {
            " (mounting needs root, or fusermount3 from the fuse3 package)"
        };
        ShimError::Failed(format!("cannot mount {}: {e}{hint}", mountpoint.display()))
    })?;

    let _ = shared.notifier.set(session.notifier());
    let data_path = if !want_passthrough {
        DataPath::Daemon(why_daemon.into())
    } else if !shared.passthrough_negotiated.load(Ordering::Relaxed) {
        DataPath::Daemon("the kernel did not offer FUSE_PASSTHROUGH".into())
    } else {
        match shared.store.anonymous_file().and_then(|f| control::probe_backing(&session, &f)) {
            Ok(()) => {
                shared.passthrough.store(true, Ordering::Relaxed);
                DataPath::Passthrough
            }
            Err(e) => DataPath::Daemon(format!("the kernel refused a passthrough backing file: {e}")),
        }
    };

    let session = session.spawn().map_err(|e| ShimError::Failed(format!("cannot start FUSE threads: {e}")))?;
    if cfg.rtt_compensation && data_path != DataPath::Passthrough && !free {
        match control::calibrate_round_trip(&mountpoint) {
            Ok(ns) => shared.reply_lead_ns.store(ns, Ordering::Relaxed),
            Err(e) => eprintln!("mlpdrive shim: warning: cannot measure the FUSE round trip ({e}); not compensated"),
        }
    }
    Ok(Mounted { session: Some(session), shared, oplog, mountpoint, data_path })
}

impl Mounted {
    /// The mount point (canonical).
    pub fn mountpoint(&self) -> &std::path::Path {
        &self.mountpoint
    }

    /// How data flows in this session.
    pub fn data_path(&self) -> &DataPath {
        &self.data_path
    }

    /// How much earlier than the model's completion time delayed replies
    /// are sent (the FUSE round trip measured at mount; 0 if not measured).
    pub fn reply_lead_ns(&self) -> u64 {
        self.shared.reply_lead_ns.load(Ordering::Relaxed)
    }

    /// True once the session has ended (unmounted from outside).
    pub fn ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts, replying at once to anything still delayed so clients are
    /// not held up. A busy mount (files open under it) is an error, unless
    /// `detach_if_busy`: then it is detached lazily and the session ends
    /// when the last file under it closes. Call [`Mounted::finish`] next.
    pub fn unmount(&self, detach_if_busy: bool) -> Result<(), ShimError> {
        self.shared.completer.hurry();
        match control::unmount_path(&self.mountpoint) {
            Ok(()) => Ok(()),
            Err(e) if detach_if_busy => {
                control::detach(&self.mountpoint).map_err(|e2| ShimError::Failed(format!("{e}; {e2}")))
            }
            Err(e) => Err(ShimError::Failed(e)),
        }
    }

    /// Waits for the session to end (after [`Mounted::unmount`], or an
    /// unmount from outside), flushes the op log and collects the verdicts.
    pub fn finish(self) -> Summary {
        self.finish_inner()
    }

    fn finish_inner(mut self) -> Summary {
        let mut problems = Vec::new();
        if let Some(s) = self.session.take()
            && let Err(e) = s.join()
        {
            problems.push(format!("FUSE session: {e}"));
        }
        self.shared.completer.stop();
        self.shared.oplog.write().expect("op log poisoned").take();
        let oplog_rows = match self.oplog.take().map(OpLog::finish) {
            None => None,
            Some(Ok(rows)) => Some(rows),
            Some(Err(e)) => {
                problems.push(e);
                None
            }
        };
        Summary {
            ops: self.shared.stats.ops.load(Ordering::Relaxed),
            errors: self.shared.stats.errors.load(Ordering::Relaxed),
            oplog_rows,
            report: self.shared.observer.as_ref().map(|o| o.report()),
            problems,
            crash_undo_bytes: self.shared.crash.as_ref().map(|c| c.undo_bytes()),
        }
    }
}
