//! The FUSE shim end to end: `mlpdrive shim mount --daemon`, workloads
//! through the mount (O_DIRECT + io_uring on the file target), injected
//! faults surfacing as counted errors with exit 1, a killed daemon giving
//! ENOTCONN instead of a hang, and `mlpdrive shim unmount` (also of a stale
//! mount). Every test unmounts through a guard, even when it fails. Without
//! /dev/fuse the tests say so loudly and skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const BASE_PROFILE: &str = "description: test device\ncapacity: unlimited\nchannels: 8\nlatency:\n  read: {fixed: 20us}\n  write: {fixed: 20us}\n  flush: {fixed: 20us}\n  trim: {fixed: 5us}\nchannel_bandwidth: {read: 2GB/s, write: 2GB/s}\ndevice_bandwidth: {read: 8GB/s, write: 8GB/s}\n";

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    eprintln!("\n*** SKIPPED: /dev/fuse is missing, so the FUSE shim cannot be tested here ***\n");
    false
}

/// A shim mounted with `--daemon`; unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
    mountpoint: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Mounts on `<dir>/mnt` over `<dir>/backing` with the given profile
    /// (a name, or YAML text written to `<dir>/dev.yaml`) and extra args.
    fn new(profile: &str, extra: &[&str]) -> Mount {
        let dir = scratch();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        std::fs::create_dir(dir.path().join("backing")).unwrap();
        let profile = if profile.contains('\n') {
            let p = dir.path().join("dev.yaml");
            std::fs::write(&p, profile).unwrap();
            p.display().to_string()
        } else {
            profile.to_string()
        };
        let mp = mountpoint.display().to_string();
        let backing = dir.path().join("backing").display().to_string();
        let mut args =
            vec!["shim", "mount", "--daemon", "--mountpoint", &mp, "--backing", &backing, "--profile", &profile];
        args.extend_from_slice(extra);
        let r = mlpdrive(dir.path(), &args);
        assert_eq!(r.code, 0, "mount failed: {}", r.show());
        Mount { dir, mountpoint, mounted: true }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn target(&self) -> String {
        format!("file://{}", self.mountpoint.display())
    }

    /// Runs raw-smoke through the mount; returns the run and its results.
    fn run(&self, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
        let out = self.path().join("out.json");
        let _ = std::fs::remove_file(&out);
        let res = self.path().join("res");
        let target = self.target();
        let mut args = vec![
            "run",
            "raw-smoke",
            "--quiet",
            "--target",
            &target,
            "--results",
            res.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let r = run_bounded(self.path(), &args, Duration::from_secs(120));
        let j = out.is_file().then(|| read_json(&out));
        (r, j)
    }

    fn unmount(&mut self) -> Run {
        self.mounted = false;
        mlpdrive(self.path(), &["shim", "unmount", self.mountpoint.to_str().unwrap()])
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let r = mlpdrive(self.dir.path(), &["shim", "unmount", self.mountpoint.to_str().unwrap()]);
            if r.code != 0 {
                let c = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: c is a valid path; a lazy detach cannot hurt anything.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Runs mlpdrive and kills it if it has not finished after `limit` (a hang
/// is a failure, reported as exit -9).
fn run_bounded(cwd: &Path, args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mlpdrive");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn direct_io_runs_through_the_mount_and_verify() {
    if !fuse_available() {
        return;
    }
    let d = scratch();
    let oplog = d.path().join("ops.csv");
    let mut m = Mount::new("ci-fast", &["--oplog", oplog.to_str().unwrap(), "--verify"]);
    // Each run lays out its file again; distinct seeds keep the data of
    // different runs distinct, as the dedup verdict expects.
    for (seed, rw) in [("11", "write"), ("12", "randread"), ("13", "randrw")] {
        let (r, j) = m.run(&["--duration", "1s", "--seed", seed, "--set", &format!("rw={rw}")]);
        assert_eq!(r.code, 0, "rw={rw}: {}", r.show());
        let j = j.unwrap();
        assert_eq!(j["status"], "ok", "{j}");
        assert_eq!(j["io_mode"]["direct"], true, "O_DIRECT through the mount: {j}");
        if rw != "write" {
            assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{j}");
        }
    }
    let u = m.unmount();
    assert_eq!(u.code, 0, "{}", u.show());
    // The daemon has finished: the op log and the verdicts are complete.
    let text = std::fs::read_to_string(&oplog).unwrap();
    let writes = text.lines().filter(|l| l.contains(",write,mlpdrive/")).count();
    assert!(writes > 100, "op log has the workload's writes:\n{}", &text[..text.len().min(2000)]);
    let verdicts = read_json(&d.path().join("ops.verdicts.json"));
    assert_eq!(verdicts["ok"], true, "{verdicts}");
    assert_eq!(verdicts["dedup"]["verdict"], "pass", "{verdicts}");
    assert_eq!(verdicts["content"]["verdict"], "pass", "{verdicts}");
}

#[test]
fn passthrough_mount_says_so_and_runs() {
    if !fuse_available() {
        return;
    }
    let d = scratch();
    let log = d.path().join("daemon.log");
    let mut m = Mount::new("ideal", &["--log", log.to_str().unwrap()]);
    let (r, j) = m.run(&["--duration", "1s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(j.unwrap()["io_mode"]["direct"], true);
    assert_eq!(m.unmount().code, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("data path:"), "{text}");
    eprintln!("{text}");
}

#[test]
fn injected_read_errors_fail_the_run() {
    if !fuse_available() {
        return;
    }
    let profile = format!("{BASE_PROFILE}faults:\n  error_probability: {{read: 1, write: 0, flush: 0, trim: 0}}\n");
    let m = Mount::new(&profile, &[]);
    // With O_DIRECT the target's direct-I/O probe (a read) already fails,
    // with exit 1 and a message naming the probe.
    let (r, _) = m.run(&["--duration", "1s", "--set", "rw=randread"]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert!(r.stderr.contains("Input/output error"), "{}", r.show());
    // Half the reads fail: with the model's seed 1 the probe's read passes
    // (the model is deterministic per seed), the run starts and counts the
    // errors of the measured reads.
    drop(m);
    let half = profile.replace("read: 1,", "read: 0.5,");
    let m = Mount::new(&half, &["--seed", "1"]);
    let (r, j) = m.run(&["--duration", "1s", "--set", "rw=randread", "--set", "continue_on_error=true"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.expect("results written");
    assert_eq!(j["status"], "failed", "{j}");
    let errors = j["errors"]["count"].as_u64().unwrap();
    let reads = j["summary"]["read"]["ops"].as_u64().unwrap();
    assert!(errors > 10 && reads > 10, "about half the reads fail: {errors} errors, {reads} good reads: {j}");
    assert!(j.to_string().contains("Input/output error") || j.to_string().contains("EIO"), "{j}");
}

#[test]
fn a_full_device_gives_enospc() {
    if !fuse_available() {
        return;
    }
    let profile = BASE_PROFILE.replace("capacity: unlimited", "capacity: 4MiB");
    let m = Mount::new(&profile, &[]);
    let (r, j) = m.run(&["--duration", "1s", "--set", "rw=write"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let all = format!("{}{}", r.stderr, j.map(|j| j.to_string()).unwrap_or_default());
    assert!(all.contains("No space left") || all.contains("ENOSPC"), "{all}");
}

/// Kills the daemon serving `m` (SIGKILL, as a crash would).
fn kill_daemon(m: &Mount) {
    let pid = mlpdrive_shim::daemon_pid(&m.mountpoint).expect("daemon pid");
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// One O_DIRECT read of the first 4 KiB of `f` into an aligned buffer.
fn direct_read(f: &std::fs::File) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut raw = vec![0u8; 8192];
    let pad = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[pad..pad + 4096];
    // SAFETY: buf is 4096 valid, writable bytes; the fd is open.
    let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
}

#[test]
fn a_killed_daemon_aborts_in_flight_ops_and_refuses_new_ones_with_enotconn() {
    if !fuse_available() {
        return;
    }
    // Reads take 30 s, so the first one is still in the daemon when it dies.
    let profile = BASE_PROFILE.replace("read: {fixed: 20us}", "read: {fixed: 30s}");
    let mut m = Mount::new(&profile, &[]);
    std::fs::write(m.path().join("backing/f"), vec![7u8; 4096]).unwrap();
    let opened = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::File::options().read(true).custom_flags(libc::O_DIRECT).open(m.mountpoint.join("f")).unwrap()
    };
    let file = std::sync::Arc::new(opened);
    let (tx, rx) = std::sync::mpsc::channel();
    let f2 = file.clone();
    std::thread::spawn(move || {
        let _ = tx.send(direct_read(&f2));
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(rx.try_recv().is_err(), "the read is still in the daemon");
    kill_daemon(&m);
    // A request the kernel had already sent is ended with ECONNABORTED when
    // the last /dev/fuse descriptor closes (the daemon's exit): no hang.
    let in_flight = rx.recv_timeout(Duration::from_secs(10)).expect("the in-flight read returns soon after the kill");
    assert_eq!(errno_of(in_flight), Some(libc::ECONNABORTED), "in-flight read");
    // Every request after the abort gets ENOTCONN: on the open file, and by
    // name (a name never looked up, so no cached answer hides it).
    assert_eq!(errno_of(direct_read(&file)), Some(libc::ENOTCONN), "new read on an open file");
    assert_eq!(errno_of(std::fs::metadata(m.mountpoint.join("never-seen"))), Some(libc::ENOTCONN), "stat");
    assert_eq!(errno_of(std::fs::File::create(m.mountpoint.join("new"))), Some(libc::ENOTCONN), "create");
    assert_eq!(errno_of(std::fs::read_dir(&m.mountpoint)), Some(libc::ENOTCONN), "readdir");
    // `unmount` clears the stale mount even while a file under it is open.
    let u = m.unmount();
    assert_eq!(u.code, 0, "stale mount unmounts: {}", u.show());
    assert!(u.stderr.contains("stale"), "{}", u.show());
    assert!(!mlpdrive_shim::is_shim_mount(&m.mountpoint));
    drop(file);
}

#[test]
fn a_daemon_killed_during_a_run_fails_it_naming_the_cause() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::new("ci-fast", &[]);
    let out = m.path().join("out.json");
    let res = m.path().join("res");
    let target = m.target();
    let mut child = Command::new(BIN)
        .args(["run", "raw-smoke", "--quiet", "--duration", "60s", "--target", &target])
        .args(["--results", res.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .current_dir(m.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the daemon once the run is doing I/O (its data file exists).
    let data = m.path().join("backing/mlpdrive/raw");
    let start = Instant::now();
    while std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none()) {
        assert!(start.elapsed() < Duration::from_secs(60), "the run never started writing");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    kill_daemon(&m);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("the run hangs 30 s after the daemon was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = Run::from(child.wait_with_output().unwrap());
    let mp = m.mountpoint.display().to_string();
    let hint = format!("the FUSE daemon behind {mp} is gone; run `mlpdrive shim unmount {mp}`");
    assert_eq!(r.code, 1, "{}", r.show());
    let j = read_json(&out);
    let first = j["errors"]["first"].as_str().unwrap_or_default().to_string();
    assert!(first.contains(&hint), "the first error names the cause: {first}");
    assert!(
        first.contains("Transport endpoint is not connected") || first.contains("Software caused connection abort"),
        "and keeps the errno: {first}"
    );
    // A run on the dead mount fails at once, with the same advice.
    let (again, _) = m.run(&["--duration", "1s"]);
    assert_eq!(again.code, 1, "{}", again.show());
    assert!(again.stderr.contains(&hint), "{}", again.show());
    let u = m.unmount();
    assert_eq!(u.code, 0, "stale mount unmounts: {}", u.show());
    assert!(u.stderr.contains("stale"), "{}", u.show());
    assert!(!mlpdrive_shim::is_shim_mount(&m.mountpoint));
}

#[test]
fn shim_crash_loses_the_unsynced_write_and_check_accepts_the_post_crash_content() {
    if !fuse_available() {
        return;
    }
    let d = scratch();
    let oplog = d.path().join("ops.csv");
    let mut m = Mount::new(BASE_PROFILE, &["--crash-tracking", "--oplog", oplog.to_str().unwrap()]);
    let mp = m.mountpoint.to_str().unwrap().to_string();
    // Two distinct blocks (check's dedup verdict wants unique data).
    let mut a = vec![b'A'; 8192];
    a[4096..].fill(b'C');
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(m.mountpoint.join("f")).unwrap();
        f.write_all_at(&a, 0).unwrap();
        f.sync_all().unwrap();
        f.write_all_at(&[b'B'; 4096], 4096).unwrap();
    }
    assert_eq!(std::fs::read(m.mountpoint.join("f")).unwrap()[4096], b'B');
    let c = mlpdrive(m.path(), &["shim", "crash", &mp]);
    assert_eq!(c.code, 0, "{}", c.show());
    assert!(c.stdout.contains("lost 1 unsynced writes (4096 bytes) in 1 files"), "{}", c.show());
    assert_eq!(std::fs::read(m.mountpoint.join("f")).unwrap(), a, "the mount shows A after the crash");
    let u = m.unmount();
    assert_eq!(u.code, 0, "{}", u.show());
    let r = mlpdrive(d.path(), &["check", "--oplog", oplog.to_str().unwrap()]);
    assert_eq!(r.code, 0, "reads after the crash match the post-crash content: {}", r.show());
    let v = read_json(&d.path().join("ops.csv.verdicts.json"));
    let content = v["verdicts"].as_array().unwrap().iter().find(|v| v["name"] == "content").unwrap().clone();
    assert_eq!(content["numbers"]["crash_lost_writes"], 1, "{content:#}");
    assert_eq!(content["numbers"]["crash_lost_bytes"], 4096, "{content:#}");
    assert_eq!(content["numbers"]["blocks_mismatched"], 0, "{content:#}");
    assert!(content["reason"].as_str().unwrap().contains("a crash lost 1 unsynced writes"), "{content:#}");
}

#[test]
fn shim_crash_without_crash_tracking_is_a_usage_error() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(BASE_PROFILE, &[]);
    let c = mlpdrive(m.path(), &["shim", "crash", m.mountpoint.to_str().unwrap()]);
    assert_eq!(c.code, 2, "{}", c.show());
    assert!(c.stderr.contains("mount it with --crash-tracking"), "{}", c.show());
}

#[test]
fn bad_shim_arguments_are_usage_errors() {
    let d = scratch();
    let r = mlpdrive(
        d.path(),
        &["shim", "mount", "--mountpoint", "/nonexistent-mp", "--backing", "mem", "--profile", "ideal"],
    );
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("--mountpoint"), "{}", r.show());
    let mp = d.path().to_str().unwrap();
    let r =
        mlpdrive(d.path(), &["shim", "mount", "--mountpoint", mp, "--backing", "mem", "--profile", "no-such-profile"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("--profile"), "{}", r.show());
    let r = mlpdrive(d.path(), &["shim", "unmount", mp]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("not an mlpdrive shim mount"), "{}", r.show());
    assert!(tree(d.path()).is_empty(), "nothing written: {:?}", tree(d.path()));
}

#[test]
fn verify_catches_corrupted_reads_and_the_foreground_shim_exits_1() {
    if !fuse_available() {
        return;
    }
    let d = scratch();
    let mp = d.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let profile = d.path().join("dev.yaml");
    std::fs::write(&profile, format!("{BASE_PROFILE}faults:\n  read_corruption_probability: 0.01\n")).unwrap();
    let verdict = d.path().join("verdict.json");
    // Foreground: the test owns the shim process and sees its exit code.
    let mut shim = Command::new(BIN)
        .args(["shim", "mount", "--backing", "mem", "--verify", "--verdict"])
        .arg(&verdict)
        .arg("--mountpoint")
        .arg(&mp)
        .arg("--profile")
        .arg(&profile)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let canonical = mp.canonicalize().unwrap();
    let start = Instant::now();
    while !mlpdrive_shim::is_shim_mount(&canonical) {
        assert!(start.elapsed() < Duration::from_secs(20), "the shim did not mount");
        assert!(shim.try_wait().unwrap().is_none(), "the shim exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = format!("file://{}", mp.display());
    let res = d.path().join("res");
    let r = run_bounded(
        d.path(),
        &[
            "run",
            "raw-smoke",
            "--quiet",
            "--duration",
            "1s",
            "--set",
            "rw=randread",
            "--target",
            &target,
            "--results",
            res.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let u = mlpdrive(d.path(), &["shim", "unmount", mp.to_str().unwrap()]);
    if u.code != 0 {
        let _ = shim.kill();
    }
    let out = shim.wait_with_output().unwrap();
    let shim_run = Run::from(out);
    assert_eq!(u.code, 0, "{}", u.show());
    assert_eq!(r.code, 1, "the driver's own verification fails too: {}", r.show());
    assert_eq!(shim_run.code, 1, "{}", shim_run.show());
    assert!(shim_run.stdout.contains("content: fail"), "{}", shim_run.show());
    let v = read_json(&verdict);
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["content"]["blocks_bad"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["dedup"]["verdict"], "pass", "{v}");
}

/// `--verify` follows a rename through the mount: a file renamed after it
/// was written keeps its object, so another object's valid blocks swapped
/// in under the new name (behind the shim's back, in the backing
/// directory) fail the content verdict. Without following the rename the
/// new name would be unknown and those blocks would pass on their own
/// headers.
#[test]
fn verify_follows_a_rename_through_the_mount() {
    if !fuse_available() {
        return;
    }
    let d = scratch();
    // Two files of mlpdrive data with different objects (one per job).
    let gen_dir = d.path().join("gen");
    std::fs::create_dir(&gen_dir).unwrap();
    let target = format!("file://{}", gen_dir.display());
    let res = d.path().join("res").display().to_string();
    let args = ["run", "raw-smoke", "--quiet", "--target", &target, "--results", &res, "--duration", "1s"];
    let r = mlpdrive(d.path(), &[&args[..], &["--set", "rw=write", "--set", "jobs=2", "--set", "size=1MiB"]].concat());
    assert_eq!(r.code, 0, "{}", r.show());
    let mut files: Vec<PathBuf> = tree(&gen_dir)
        .into_iter()
        .map(|p| gen_dir.join(p))
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "one file per job: {files:?}");
    let verdict = d.path().join("verdict.json");
    let mut m = Mount::new("ci-fast", &["--verify", "--verdict", verdict.to_str().unwrap()]);
    let (a, c) = (m.mountpoint.join("a"), m.mountpoint.join("c"));
    std::fs::copy(&files[0], &a).unwrap();
    std::fs::rename(&a, &c).unwrap();
    std::fs::copy(&files[1], m.path().join("backing/c")).unwrap();
    let back = std::fs::read(&c).unwrap();
    assert_eq!(back, std::fs::read(&files[1]).unwrap(), "the read sees the swapped-in bytes");
    let u = m.unmount();
    assert_eq!(u.code, 0, "{}", u.show());
    let v = read_json(&verdict);
    assert_eq!(v["content"]["verdict"], "fail", "{v:#}");
    // Every block under the new name is another object's: all fail. The
    // first one reported is the first in time, and the kernel's readahead
    // sends several reads of the file at once, so its offset varies.
    let content = &v["content"];
    assert_eq!(content["blocks_bad"], content["blocks_checked"], "{v:#}");
    assert!(content["blocks_bad"].as_u64().unwrap() > 0, "{v:#}");
    let first = content["first_bad"].as_str().unwrap();
    assert!(first.starts_with("c at offset ") && first.contains("misplaced data"), "{v:#}");
}
