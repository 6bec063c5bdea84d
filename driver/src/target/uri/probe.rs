//! Facts about a target path, read from the system for the safety rules in
//! [`super`]: what the path resolves to, what kind of node it is, whether it
//! can be written, which filesystem it is on, and whether a block device is in
//! use. Nothing here creates or changes anything.
//!
//! The rules live apart from these probes so that they can be tested with
//! facts a test cannot build (an unwritable directory while running as root,
//! a read-only filesystem, a device held by LVM).

use std::ffi::{CString, OsString};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::error::Error;

/// What a path is, following symbolic links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeKind {
    Missing,
    Dir,
    File,
    BlockDevice,
    CharDevice,
    /// A FIFO or a socket.
    Other,
}

impl NodeKind {
    fn of(ft: fs::FileType) -> NodeKind {
        if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_file() {
            NodeKind::File
        } else if ft.is_block_device() {
            NodeKind::BlockDevice
        } else if ft.is_char_device() {
            NodeKind::CharDevice
        } else {
            NodeKind::Other
        }
    }
}

/// Whether a node can be written by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WriteFacts {
    /// `access(2)` grants the needed permissions. Root passes this for any
    /// mode bits, hence the separate read-only check.
    pub access_ok: bool,
    /// The filesystem (for a directory or file) or the device (for a block
    /// device) is read-only.
    pub read_only: bool,
}

/// Facts for a `file://DIR` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileFacts {
    /// Absolute path; symbolic links resolved for the part that exists.
    pub resolved: PathBuf,
    pub kind: NodeKind,
    /// Kind of `resolved`'s parent; what matters when `kind` is `Missing`.
    pub parent_kind: NodeKind,
    /// Writability of DIR if it is a directory, else of its parent if that is
    /// a directory, else `None`.
    pub write: Option<WriteFacts>,
    /// The nearest existing ancestor is on a tmpfs mounted below `/dev` (such
    /// as `/dev/shm`), not on the filesystem of `/dev` itself.
    pub on_tmpfs_below_dev: bool,
    /// The user's home directory (`$HOME`, resolved), if known.
    pub home: Option<PathBuf>,
}

/// Facts for a `dev://PATH` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DevFacts {
    /// The path with symbolic links resolved (`/dev/disk/by-id/…` → `/dev/sdX`).
    pub resolved: PathBuf,
    pub kind: NodeKind,
    pub write: Option<WriteFacts>,
    /// For a block device: how it is in use (mounted, swap, held by another
    /// device), or why that could not be determined.
    pub in_use: Result<Vec<String>, String>,
}

pub(super) fn file_facts(dir: &Path) -> Result<FileFacts, Error> {
    // A FUSE mount whose daemon died cannot be inspected; say why (exit 1:
    // the target failed, the command line is fine).
    if let Some(m) = mlpdrive_shim::dead_fuse_mount_of(dir) {
        return Err(Error::failed(format!("target file://{}: {}", dir.display(), m.gone_hint())));
    }
    let (existing, tail) = resolve(dir)?;
    let resolved = tail.iter().fold(existing.clone(), |p, c| p.join(c));
    let kind = if tail.is_empty() { kind_of(&existing)? } else { NodeKind::Missing };
    let parent_kind = match tail.len() {
        0 => NodeKind::Dir,
        1 => kind_of(&existing)?,
        _ => NodeKind::Missing,
    };
    let write = if kind == NodeKind::Dir {
        Some(write_facts_fs(&resolved, libc::W_OK | libc::X_OK))
    } else if kind == NodeKind::Missing && parent_kind == NodeKind::Dir {
        let parent = resolved.parent().unwrap_or(Path::new("/"));
        Some(write_facts_fs(parent, libc::W_OK | libc::X_OK))
    } else {
        None
    };
    Ok(FileFacts {
        on_tmpfs_below_dev: on_tmpfs_below_dev(&existing),
        resolved,
        kind,
        parent_kind,
        write,
        home: home_dir(),
    })
}

pub(super) fn dev_facts(path: &Path) -> Result<DevFacts, Error> {
    let resolved = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(DevFacts {
                resolved: path.to_path_buf(),
                kind: NodeKind::Missing,
                write: None,
                in_use: Ok(Vec::new()),
            });
        }
        Err(e) => return Err(Error::usage(format!("target dev://{}: cannot resolve it: {e}", path.display()))),
    };
    let meta = fs::metadata(&resolved)
        .map_err(|e| Error::usage(format!("target dev://{}: cannot inspect it: {e}", path.display())))?;
    let kind = NodeKind::of(meta.file_type());
    let (write, in_use) = match kind {
        NodeKind::BlockDevice => {
            let write = WriteFacts {
                access_ok: access_ok(&resolved, libc::R_OK | libc::W_OK),
                read_only: block_read_only(meta.rdev()),
            };
            (Some(write), block_in_use(&resolved, meta.rdev()))
        }
        NodeKind::File => (Some(write_facts_fs(&resolved, libc::R_OK | libc::W_OK)), Ok(Vec::new())),
        _ => (None, Ok(Vec::new())),
    };
    Ok(DevFacts { resolved, kind, write, in_use })
}

/// Splits `dir` (made absolute against the current directory) into its
/// longest existing prefix, canonicalized, and the components after it.
fn resolve(dir: &Path) -> Result<(PathBuf, Vec<OsString>), Error> {
    let shown = dir.display();
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| {
            Error::usage(format!(
                "target file://{shown}: cannot resolve a relative path because the current directory is unavailable ({e}); use an absolute path"
            ))
        })?;
        cwd.join(dir)
    };
    let mut existing = PathBuf::from("/");
    let mut tail: Vec<OsString> = Vec::new();
    for comp in abs.components() {
        let part = match comp {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir | Component::Normal(_) => comp.as_os_str(),
        };
        if !tail.is_empty() {
            if comp == Component::ParentDir {
                let missing = existing.join(&tail[0]);
                return Err(Error::usage(format!(
                    "target file://{shown}: the path goes through '..' after {}, which does not exist; write the directory without '..'",
                    missing.display()
                )));
            }
            tail.push(part.to_owned());
            continue;
        }
        let candidate = existing.join(part);
        match fs::canonicalize(&candidate) {
            Ok(p) => existing = p,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if let Ok(link) = fs::read_link(&candidate) {
                    return Err(Error::usage(format!(
                        "target file://{shown}: {} is a symbolic link to {}, which does not exist; point the target at a real directory",
                        candidate.display(),
                        link.display()
                    )));
                }
                tail.push(part.to_owned());
            }
            Err(e) if e.kind() == ErrorKind::NotADirectory => tail.push(part.to_owned()),
            Err(e) => {
                return Err(Error::usage(format!(
                    "target file://{shown}: cannot resolve {}: {e}",
                    candidate.display()
                )));
            }
        }
    }
    Ok((existing, tail))
}

fn kind_of(path: &Path) -> Result<NodeKind, Error> {
    match fs::metadata(path) {
        Ok(m) => Ok(NodeKind::of(m.file_type())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(NodeKind::Missing),
        Err(e) => Err(Error::usage(format!("cannot inspect {}: {e}", path.display()))),
    }
}

fn home_dir() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?);
    match fs::canonicalize(&home) {
        Ok(p) => Some(p),
        Err(_) => home.is_absolute().then_some(home),
    }
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// `access(2)` with `mode`; false if the path cannot be passed to C.
fn access_ok(path: &Path, mode: libc::c_int) -> bool {
    let Some(c) = c_path(path) else { return false };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// Permissions plus the read-only flag of the filesystem holding `path`.
pub(super) fn write_facts_fs(path: &Path, mode: libc::c_int) -> WriteFacts {
    WriteFacts { access_ok: access_ok(path, mode), read_only: fs_read_only(path) }
}

/// `statvfs(2)` reports `ST_RDONLY`. Unknown (the call failed) counts as not
/// read-only; `access(2)` also fails with EROFS there, so that case is still caught.
fn fs_read_only(path: &Path) -> bool {
    let Some(c) = c_path(path) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated; `st` is writable memory of the right
    // type, only read after the call reports success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    st.f_flag & libc::ST_RDONLY != 0
}

/// True when `existing` is on a tmpfs that is not the filesystem of `/dev`
/// itself. The check on `/dev`'s own device number matters: devtmpfs reports
/// the tmpfs magic number too, and containers often mount a plain tmpfs on `/dev`.
fn on_tmpfs_below_dev(existing: &Path) -> bool {
    let Some(c) = c_path(existing) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is NUL-terminated; `st` is only read after success.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let is_tmpfs = st.f_type as u64 == libc::TMPFS_MAGIC as u64;
    let (Ok(here), Ok(dev)) = (fs::metadata(existing), fs::metadata("/dev")) else { return false };
    is_tmpfs && here.dev() != dev.dev()
}

fn sysfs_dir(rdev: u64) -> PathBuf {
    PathBuf::from(format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev)))
}

/// Reads a `MAJ:MIN` file from sysfs.
fn read_devnum(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let (maj, min) = text.trim().split_once(':')?;
    Some(libc::makedev(maj.parse().ok()?, min.parse().ok()?))
}

fn block_read_only(rdev: u64) -> bool {
    fs::read_to_string(sysfs_dir(rdev).join("ro")).is_ok_and(|s| s.trim() == "1")
}

/// How a block device or any of its partitions is in use: mounted, active
/// swap, or held by another block device (device-mapper, LVM, md RAID).
/// Sysfs entries that are absent (containers without /sys) are skipped; the
/// mount table must be readable, otherwise the answer is unknown.
fn block_in_use(path: &Path, rdev: u64) -> Result<Vec<String>, String> {
    let mut uses = Vec::new();
    // (device number, name used in messages)
    let mut devs: Vec<(u64, String)> = vec![(rdev, path.display().to_string())];
    let sys = sysfs_dir(rdev);
    if let Ok(entries) = fs::read_dir(&sys) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.join("partition").exists()
                && let Some(d) = read_devnum(&p.join("dev"))
            {
                devs.push((d, format!("partition {}", entry.file_name().to_string_lossy())));
            }
        }
    }
    let mut holders = Vec::new();
    for (d, name) in &devs {
        let Ok(entries) = fs::read_dir(sysfs_dir(*d).join("holders")) else { continue };
        for entry in entries.flatten() {
            let holder = entry.file_name().to_string_lossy().into_owned();
            uses.push(format!("{name} is held by {holder} (device-mapper, LVM or RAID)"));
            if let Some(hd) = read_devnum(&Path::new("/sys/class/block").join(&holder).join("dev")) {
                holders.push((hd, holder));
            }
        }
    }
    devs.extend(holders);
    let is_ours = |source: &str| -> bool {
        if source == path.as_os_str().to_string_lossy() {
            return true;
        }
        fs::metadata(source).is_ok_and(|m| m.file_type().is_block_device() && devs.iter().any(|(d, _)| *d == m.rdev()))
    };
    let mounts = fs::read_to_string("/proc/self/mounts").map_err(|e| format!("reading /proc/self/mounts: {e}"))?;
    for line in mounts.lines() {
        let mut fields = line.split(' ');
        let (Some(source), Some(point)) = (fields.next(), fields.next()) else { continue };
        let source = unescape_mount_field(source);
        if source.starts_with('/') && is_ours(&source) {
            uses.push(format!("{source} is mounted on {}", unescape_mount_field(point)));
        }
    }
    // The root filesystem is often listed as /dev/root, which has no node.
    if let Ok(root) = fs::metadata("/")
        && devs.iter().any(|(d, _)| *d == root.dev())
        && !uses.iter().any(|u| u.ends_with(" mounted on /"))
    {
        uses.push(format!("{} holds the root filesystem /", path.display()));
    }
    if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let Some(source) = line.split_whitespace().next() else { continue };
            let source = unescape_mount_field(source);
            if is_ours(&source) {
                uses.push(format!("{source} is in use as swap"));
            }
        }
    }
    Ok(uses)
}

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mounts.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = bytes[i + 1..i + 4].iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(unescape_mount_field(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount_field(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mount_field(r"/plain"), "/plain");
        assert_eq!(unescape_mount_field(r"/end\04"), r"/end\04");
    }

    #[test]
    fn missing_tail_is_split_from_the_existing_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let (existing, tail) = resolve(&tmp.path().join("a/b")).unwrap();
        assert_eq!(existing, base);
        assert_eq!(tail, vec![OsString::from("a"), OsString::from("b")]);
        let err = resolve(&tmp.path().join("a/../b")).unwrap_err().to_string();
        assert!(err.contains("'..'"), "{err}");
    }

    #[test]
    fn a_file_in_the_middle_ends_the_existing_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        let facts = file_facts(&file.join("sub")).unwrap();
        assert_eq!(facts.kind, NodeKind::Missing);
        assert_eq!(facts.parent_kind, NodeKind::File);
        assert_eq!(facts.write, None);
    }

    #[test]
    fn a_read_only_mount_is_reported_read_only() {
        // Needs a read-only kernel filesystem mount, as containers often
        // have (/sys, /proc/sys); skips with a note otherwise. The rule itself
        // is tested with injected facts in `super::super::tests`.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let ro = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = unescape_mount_field(f.get(1)?);
            let kernel_fs = Path::new(&point).starts_with("/sys") || Path::new(&point).starts_with("/proc");
            let ro = f.get(3)?.split(',').any(|o| o == "ro");
            (ro && kernel_fs && Path::new(&point).is_dir()).then_some(point)
        });
        let Some(point) = ro else {
            eprintln!("skipped: no read-only mount on this machine");
            return;
        };
        let w = write_facts_fs(Path::new(&point), libc::W_OK | libc::X_OK);
        assert!(w.read_only, "{point} is mounted ro but statvfs did not say so");
        assert!(!w.access_ok, "access(W_OK) should fail with EROFS on {point}");
    }

    #[test]
    fn dev_shm_is_a_tmpfs_below_dev_and_dev_is_not() {
        assert!(!on_tmpfs_below_dev(Path::new("/dev")));
        if Path::new("/dev/shm").is_dir()
            && fs::metadata("/dev/shm").unwrap().dev() != fs::metadata("/dev").unwrap().dev()
        {
            assert!(on_tmpfs_below_dev(Path::new("/dev/shm")));
        } else {
            eprintln!("skipped the /dev/shm half: /dev/shm is not a separate mount here");
        }
    }
}
