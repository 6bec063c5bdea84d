//! Finding, querying and unmounting shim mounts from outside the daemon.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{CRASH_IOCTL, CrashCounts, FS_NAME, PID_IOCTL, ShimError};

/// `_IOW(229, 2, uint32_t)`: FUSE_DEV_IOC_BACKING_CLOSE.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = (1 << 30) | (4 << 16) | (229 << 8) | 2;

/// Registers `file` as a passthrough backing file and closes the
/// registration again: proves the kernel accepts passthrough here.
pub(crate) fn probe_backing<FS: fuser::Filesystem>(session: &fuser::Session<FS>, file: &File) -> io::Result<()> {
    let id = fuser::BackingId::create_raw(session.as_fd(), file.as_fd())?;
    // SAFETY: the ioctl reads one u32 (the backing id we were just given)
    // through a valid pointer on the session's /dev/fuse descriptor.
    let rc = unsafe { libc::ioctl(session.as_fd().as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE as _, &id) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of the daemon serving `mountpoint` (asked through the mount;
/// ENOTCONN means the daemon is gone).
pub fn daemon_pid(mountpoint: &Path) -> io::Result<u32> {
    let dir = File::open(mountpoint)?;
    let mut pid: u64 = 0;
    // SAFETY: PID_IOCTL is _IOR(.., u64): the kernel writes 8 bytes
    // through the pointer, which points at a u64.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), PID_IOCTL as _, &mut pid) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Crashes the emulated device behind `mountpoint` (a shim mounted with
/// crash tracking): its unsynced writes are lost. EOPNOTSUPP: the mount
/// does not track them; ENOTTY: not a shim mount.
pub fn crash(mountpoint: &Path) -> io::Result<CrashCounts> {
    let dir = File::open(mountpoint)?;
    let mut out = [0u64; 4];
    // SAFETY: CRASH_IOCTL is _IOR(.., [u64; 4]): the kernel writes 32 bytes
    // through the pointer, which points at a [u64; 4].
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), CRASH_IOCTL as _, out.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let [files, writes_lost, bytes_lost, writes_kept] = out.map(u64::from_le);
    Ok(CrashCounts { files, writes_lost, bytes_lost, writes_kept })
}

/// The FUSE round trip of this mount, measured as the 10th percentile of
/// 200 trivial requests (the pid ioctl, answered at once by the daemon)
/// after 20 to warm up: the time a request spends reaching the daemon and
/// its reply reaching the client, which the model's latency does not
/// include. Not the median: on these VMs the times are bimodal (3–5 µs
/// with the FUSE threads awake, ~60 µs when each request has to wake one),
/// the median flipped between the two from mount to mount, and a 60 µs lead
/// sent 1 ms replies 5 % early; the low mode is the path's own cost.
pub(crate) fn calibrate_round_trip(mountpoint: &Path) -> io::Result<u64> {
    let dir = File::open(mountpoint)?;
    let mut ns = Vec::with_capacity(200);
    for i in 0..220 {
        let mut pid: u64 = 0;
        let t = Instant::now();
        // SAFETY: as in `daemon_pid`: the kernel writes 8 bytes into `pid`.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), PID_IOCTL as _, &mut pid) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if i >= 20 {
            ns.push(t.elapsed().as_nanos() as u64);
        }
    }
    ns.sort_unstable();
    Ok(ns[ns.len() / 10])
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mount from /proc/self/mountinfo.
struct MountEntry {
    mountpoint: PathBuf,
    fuse: bool,
    source: String,
}

fn mounts() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            // id parent dev root MOUNTPOINT options [optional…] - FSTYPE SOURCE superoptions
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            if fields.len() <= dash + 2 || fields.len() < 5 {
                return None;
            }
            let fstype = fields[dash + 1];
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape_mountinfo(fields[4])),
                fuse: fstype == "fuse" || fstype.starts_with("fuse."),
                source: unescape_mountinfo(fields[dash + 2]),
            })
        })
        .collect()
}

/// True if `path` (absolute) is the mount point of a shim mount.
pub fn is_shim_mount(path: &Path) -> bool {
    mounts().iter().any(|m| m.fuse && m.source == FS_NAME && m.mountpoint == path)
}

/// The FUSE mount a path lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseMount {
    /// Its mount point.
    pub mountpoint: PathBuf,
    /// It is an mlpdrive shim mount (else some other FUSE file system).
    pub shim: bool,
}

impl FuseMount {
    /// What to tell a user whose I/O under this mount failed with ENOTCONN
    /// or ECONNABORTED: the daemon is gone and how to clear the mount.
    pub fn gone_hint(&self) -> String {
        let m = self.mountpoint.display();
        if self.shim {
            format!("the FUSE daemon behind {m} is gone; run `mlpdrive shim unmount {m}`")
        } else {
            format!("the FUSE daemon behind {m} is gone; unmount it (`umount {m}` or `fusermount3 -u {m}`)")
        }
    }
}

/// The absolute form of `path` with symlinks resolved as far as the path
/// can be stat'ed: a dead FUSE mount cannot be, so the part from there on
/// is kept as written (with `.` and `..` folded).
fn resolve_as_far_as_possible(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut head = abs.as_path();
    loop {
        if let Ok(c) = head.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::Normal(p) => out.push(p),
                    _ => {}
                }
            }
            return Some(out);
        }
        let name = head.components().next_back()?;
        rest.push(name);
        head = head.parent()?;
    }
}

/// The FUSE mount that `path` is on (the deepest mount containing it, if
/// that is a FUSE one). Works for a dead mount too.
pub fn fuse_mount_of(path: &Path) -> Option<FuseMount> {
    let path = resolve_as_far_as_possible(path)?;
    let all = mounts();
    // The last mount on a point is the visible one; the deepest point wins.
    let m = all.iter().filter(|m| path.starts_with(&m.mountpoint)).max_by_key(|m| m.mountpoint.as_os_str().len())?;
    m.fuse.then(|| FuseMount { mountpoint: m.mountpoint.clone(), shim: m.source == FS_NAME })
}

/// The FUSE mount `path` is on, if its daemon is gone: a listing of the
/// mount point (which always reaches the daemon; a stat may be answered
/// from the kernel's cache) fails with ENOTCONN or ECONNABORTED.
pub fn dead_fuse_mount_of(path: &Path) -> Option<FuseMount> {
    let m = fuse_mount_of(path)?;
    let gone = std::fs::read_dir(&m.mountpoint).err().and_then(|e| e.raw_os_error()).is_some_and(is_daemon_gone_errno);
    gone.then_some(m)
}

/// True for the errnos a FUSE client sees once the daemon is gone:
/// `ECONNABORTED` for requests the kernel had already queued or sent when
/// the connection was aborted, `ENOTCONN` for every request after.
pub fn is_daemon_gone_errno(errno: i32) -> bool {
    errno == libc::ENOTCONN || errno == libc::ECONNABORTED
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn fusermount3() -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("fusermount3")).find(|p| p.is_file())
}

/// Unmounts `path`: umount(2), or `fusermount3 -u` when not allowed to;
/// a mount whose daemon died is detached (MNT_DETACH) if the plain unmount
/// fails. A busy mount (files open under it) is an error naming the fix.
pub(crate) fn unmount_path(path: &Path) -> Result<(), String> {
    match umount2(path, 0) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(format!(
            "{} is busy (files or working directories are open under it); close them and retry, \
             or detach it anyway with `umount -l {}`",
            path.display(),
            path.display()
        )),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => match fusermount3() {
            Some(bin) => {
                let out = std::process::Command::new(bin)
                    .arg("-u")
                    .arg(path)
                    .output()
                    .map_err(|e| format!("fusermount3 -u {}: {e}", path.display()))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!("fusermount3 -u {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim()))
                }
            }
            None => Err(format!("unmount {}: {e} (run as root, or install fusermount3 from fuse3)", path.display())),
        },
        Err(e) => {
            umount2(path, libc::MNT_DETACH).map_err(|e2| format!("unmount {}: {e}; detach: {e2}", path.display()))
        }
    }
}

/// Lazily detaches `path` (MNT_DETACH): it leaves the namespace now and
/// the kernel ends the session once nothing uses it.
pub(crate) fn detach(path: &Path) -> Result<(), String> {
    umount2(path, libc::MNT_DETACH).map_err(|e| format!("detach {}: {e}", path.display()))
}

/// What `unmount` found and did.
#[derive(Debug, Clone)]
pub struct UnmountOutcome {
    /// The daemon that served the mount (None: it was already gone).
    pub daemon_pid: Option<u32>,
    /// The daemon exited (after writing its op log and verdicts).
    pub daemon_exited: bool,
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name; Z is a zombie.
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// Unmounts the shim mount at `mountpoint` and waits up to `wait` for its
/// daemon to finish (flush the op log, write verdicts, exit).
pub fn unmount(mountpoint: &Path, wait: Duration) -> Result<UnmountOutcome, ShimError> {
    let abs =
        std::path::absolute(mountpoint).map_err(|e| ShimError::Usage(format!("{}: {e}", mountpoint.display())))?;
    // A live mount resolves symlinks; a dead one cannot be stat'ed, so keep
    // the path as given then.
    let abs = abs.canonicalize().unwrap_or(abs);
    if !is_shim_mount(&abs) {
        return Err(ShimError::Usage(format!(
            "{} is not an mlpdrive shim mount (no FUSE mount of {FS_NAME} there in /proc/self/mountinfo)",
            abs.display()
        )));
    }
    let pid = daemon_pid(&abs).ok();
    match (pid, umount2(&abs, 0)) {
        (_, Ok(())) => {}
        // A stale mount (the daemon is gone) that something still holds
        // open: nothing can be served or lost any more, so detach it; the
        // kernel frees it when the last holder lets go.
        (None, Err(e)) if e.raw_os_error() == Some(libc::EBUSY) => detach(&abs).map_err(ShimError::Failed)?,
        (_, Err(_)) => unmount_path(&abs).map_err(ShimError::Failed)?,
    }
    let mut exited = pid.is_none();
    if let Some(p) = pid
        && p != std::process::id()
    {
        let deadline = Instant::now() + wait;
        while process_alive(p) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        exited = !process_alive(p);
    }
    Ok(UnmountOutcome { daemon_pid: pid, daemon_exited: exited })
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes() {
        assert_eq!(super::unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(super::unescape_mountinfo("/plain"), "/plain");
    }
}
