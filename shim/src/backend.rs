//! Where the bytes live: a backing directory, or in-memory files.
//!
//! Both stores hand out real file descriptors for open files (a directory's
//! files, or memfds for `mem`), so the data path (pread/pwrite, fsync, and
//! the kernel's FUSE passthrough) is the same for both; only the namespace
//! differs. Paths are relative to the mount root, '/'-joined, "" for the
//! root itself.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fuser::FileType;

/// The backing store named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Files live in this directory (which must exist).
    Dir(PathBuf),
    /// Files live in memory (memfds) and vanish at unmount.
    Mem,
}

/// Attributes of a file or directory in the store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub kind: FileType,
    pub size: u64,
    pub blocks: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// Totals for statfs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FsTotals {
    pub block_bytes: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u32,
}

pub(crate) enum Store {
    Dir(PathBuf),
    Mem(MemStore),
}

/// Open flags the store applies itself; access mode, creation and append
/// are handled separately (the kernel computes append offsets for FUSE).
const PASSED_FLAGS: i32 = libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;

fn time_of(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, nsecs as u32)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    let ft = m.file_type();
    let kind = FileType::from_std(ft).unwrap_or(FileType::RegularFile);
    Meta {
        kind,
        size: m.size(),
        blocks: m.blocks(),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        atime: time_of(m.atime(), m.atime_nsec()),
        mtime: time_of(m.mtime(), m.mtime_nsec()),
        ctime: time_of(m.ctime(), m.ctime_nsec()),
    }
}

/// Attributes of an open file.
pub(crate) fn fstat(file: &File) -> io::Result<Meta> {
    file.metadata().map(|m| meta_of(&m))
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| errno(libc::EINVAL))
}

fn open_options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => o.read(true),
        // Write-only opens are widened to read-write so the kernel can read
        // pages back through the same handle; see `open_with`.
        _ => o.read(true).write(true),
    };
    o.custom_flags(flags & PASSED_FLAGS);
    o
}

impl Store {
    pub(crate) fn new(backing: &Backing) -> io::Result<Store> {
        match backing {
            Backing::Dir(d) => {
                if !std::fs::metadata(d)?.is_dir() {
                    return Err(errno(libc::ENOTDIR));
                }
                Ok(Store::Dir(d.clone()))
            }
            Backing::Mem => Ok(Store::Mem(MemStore::new())),
        }
    }

    fn full(&self, rel: &str) -> PathBuf {
        match self {
            Store::Dir(root) if rel.is_empty() => root.clone(),
            Store::Dir(root) => root.join(rel),
            Store::Mem(_) => PathBuf::from(rel),
        }
    }

    pub(crate) fn stat(&self, rel: &str) -> io::Result<Meta> {
        match self {
            Store::Dir(_) => std::fs::symlink_metadata(self.full(rel)).map(|m| meta_of(&m)),
            Store::Mem(m) => m.stat(rel),
        }
    }

    /// Opens an existing file. `flags` are the client's open flags.
    pub(crate) fn open(&self, rel: &str, flags: i32) -> io::Result<File> {
        match self {
            Store::Dir(_) => self.open_with(rel, flags, None),
            Store::Mem(m) => m.open(rel, flags & libc::O_TRUNC != 0),
        }
    }

    /// Creates a file (honouring O_EXCL and O_TRUNC in `flags`).
    pub(crate) fn create(&self, rel: &str, mode: u32, flags: i32) -> io::Result<File> {
        match self {
            Store::Dir(_) => self.open_with(rel, flags, Some(mode)),
            Store::Mem(m) => m.create(rel, mode, flags),
        }
    }

    fn open_with(&self, rel: &str, flags: i32, create_mode: Option<u32>) -> io::Result<File> {
        let path = self.full(rel);
        let mut o = open_options(flags);
        if let Some(mode) = create_mode {
            o.create(true).mode(mode);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
        }
        if flags & libc::O_TRUNC != 0 {
            o.truncate(true);
        }
        match o.open(&path) {
            // A write-only file (mode 0222) for a non-root user: open it as asked.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) && flags & libc::O_ACCMODE == libc::O_WRONLY => {
                let mut o = OpenOptions::new();
                o.write(true).custom_flags(flags & PASSED_FLAGS).truncate(flags & libc::O_TRUNC != 0);
                o.open(&path)
            }
            r => r,
        }
    }

    /// A read-write descriptor of the file for the kernel's passthrough
    /// (one per inode, shared by all its opens).
    pub(crate) fn open_backing(&self, rel: &str) -> io::Result<File> {
        match self {
            Store::Dir(_) => OpenOptions::new().read(true).write(true).open(self.full(rel)),
            Store::Mem(m) => m.open(rel, false),
        }
    }

    pub(crate) fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()> {
        match self {
            Store::Dir(_) => {
                let c = cpath(&self.full(rel))?;
                // SAFETY: c is a valid NUL-terminated path.
                let rc = unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) };
                if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
            }
            Store::Mem(m) => m.mkdir(rel, mode),
        }
    }

    pub(crate) fn rmdir(&self, rel: &str) -> io::Result<()> {
        match self {
            Store::Dir(_) => std::fs::remove_dir(self.full(rel)),
            Store::Mem(m) => m.remove(rel, true),
        }
    }

    pub(crate) fn unlink(&self, rel: &str) -> io::Result<()> {
        match self {
            Store::Dir(_) => std::fs::remove_file(self.full(rel)),
            Store::Mem(m) => m.remove(rel, false),
        }
    }

    /// Renames `from` to `to`; `flags` are renameat2 flags (RENAME_NOREPLACE
    /// is supported by both stores, RENAME_EXCHANGE only by directories).
    pub(crate) fn rename(&self, from: &str, to: &str, flags: u32) -> io::Result<()> {
        match self {
            Store::Dir(_) => {
                let (a, b) = (cpath(&self.full(from))?, cpath(&self.full(to))?);
                // SAFETY: both are valid NUL-terminated paths; AT_FDCWD with
                // absolute or cwd-relative paths is the plain rename.
                let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
                if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
            }
            Store::Mem(m) => m.rename(from, to, flags),
        }
    }

    /// Names and kinds of a directory's entries (no "." or "..").
    pub(crate) fn list(&self, rel: &str) -> io::Result<Vec<(String, FileType)>> {
        match self {
            Store::Dir(_) => {
                let mut out = Vec::new();
                for e in std::fs::read_dir(self.full(rel))? {
                    let e = e?;
                    let kind = e.file_type().ok().and_then(FileType::from_std).unwrap_or(FileType::RegularFile);
                    out.push((e.file_name().to_string_lossy().into_owned(), kind));
                }
                Ok(out)
            }
            Store::Mem(m) => m.list(rel),
        }
    }

    /// Truncates by path (an open handle truncates through its descriptor).
    pub(crate) fn truncate(&self, rel: &str, size: u64) -> io::Result<()> {
        match self {
            Store::Dir(_) => OpenOptions::new().write(true).open(self.full(rel))?.set_len(size),
            Store::Mem(m) => m.open(rel, false)?.set_len(size),
        }
    }

    pub(crate) fn chmod(&self, rel: &str, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match self {
            Store::Dir(_) => std::fs::set_permissions(self.full(rel), std::fs::Permissions::from_mode(mode & 0o7777)),
            Store::Mem(m) => m.chmod(rel, mode),
        }
    }

    /// Sets access and modification times (None leaves one as it is).
    pub(crate) fn set_times(&self, rel: &str, atime: Option<SystemTime>, mtime: Option<SystemTime>) -> io::Result<()> {
        match self {
            Store::Dir(_) => {
                let f = File::options().write(false).read(true).open(self.full(rel))?;
                let mut t = std::fs::FileTimes::new();
                if let Some(a) = atime {
                    t = t.set_accessed(a);
                }
                if let Some(m) = mtime {
                    t = t.set_modified(m);
                }
                f.set_times(t)
            }
            Store::Mem(m) => m.set_mtime(rel, mtime),
        }
    }

    /// Bytes held by the store's files at mount (for capacity accounting).
    pub(crate) fn used_bytes(&self) -> u64 {
        fn walk(d: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(d) else { return 0 };
            let mut sum = 0;
            for e in rd.flatten() {
                match e.metadata() {
                    Ok(m) if m.is_dir() => sum += walk(&e.path()),
                    Ok(m) => sum += m.len(),
                    Err(_) => {}
                }
            }
            sum
        }
        match self {
            Store::Dir(root) => walk(root),
            Store::Mem(_) => 0,
        }
    }

    /// Totals of the backing file system (a `mem` store reports RAM).
    pub(crate) fn totals(&self) -> io::Result<FsTotals> {
        match self {
            Store::Dir(root) => {
                let c = cpath(root)?;
                // SAFETY: zeroed statvfs is a valid out value.
                let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
                // SAFETY: c is a valid path, s a valid out pointer.
                if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(FsTotals {
                    block_bytes: s.f_frsize.max(1),
                    blocks: s.f_blocks,
                    blocks_free: s.f_bfree,
                    blocks_avail: s.f_bavail,
                    files: s.f_files,
                    files_free: s.f_ffree,
                    name_max: s.f_namemax as u32,
                })
            }
            Store::Mem(m) => {
                // SAFETY: sysconf has no preconditions.
                let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) }.max(0) as u64;
                // SAFETY: as above.
                let avail = unsafe { libc::sysconf(libc::_SC_AVPHYS_PAGES) }.max(0) as u64;
                let files = m.nodes.lock().expect("mem store poisoned").len() as u64;
                Ok(FsTotals {
                    block_bytes: 4096,
                    blocks: pages,
                    blocks_free: avail,
                    blocks_avail: avail,
                    files: files + 1_000_000,
                    files_free: 1_000_000,
                    name_max: 255,
                })
            }
        }
    }

    /// A nameless file in the store, for probing the kernel's passthrough.
    pub(crate) fn anonymous_file(&self) -> io::Result<File> {
        match self {
            Store::Dir(root) => OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).open(root),
            Store::Mem(_) => memfd("probe"),
        }
    }
}

/// An in-memory file system: a tree of names over memfds.
pub(crate) struct MemStore {
    nodes: Mutex<BTreeMap<String, MemNode>>,
}

#[derive(Clone)]
enum MemNode {
    Dir { perm: u16, mtime: SystemTime },
    File { file: Arc<File>, perm: u16 },
}

fn memfd(name: &str) -> io::Result<File> {
    let c = CString::new(format!("mlpdrive-shim:{name}")).unwrap_or_default();
    // SAFETY: c is a valid NUL-terminated name; flags are valid.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn parent_of(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

fn is_child(parent: &str, key: &str) -> bool {
    if parent.is_empty() {
        !key.is_empty() && !key.contains('/')
    } else {
        key.len() > parent.len() + 1
            && key.starts_with(parent)
            && key.as_bytes()[parent.len()] == b'/'
            && !key[parent.len() + 1..].contains('/')
    }
}

fn under(dir: &str, key: &str) -> bool {
    key.len() > dir.len() + 1 && key.starts_with(dir) && key.as_bytes()[dir.len()] == b'/'
}

impl MemStore {
    fn new() -> MemStore {
        let mut nodes = BTreeMap::new();
        nodes.insert(String::new(), MemNode::Dir { perm: 0o755, mtime: SystemTime::now() });
        MemStore { nodes: Mutex::new(nodes) }
    }

    fn stat(&self, rel: &str) -> io::Result<Meta> {
        let node = self.nodes.lock().expect("mem store poisoned").get(rel).cloned().ok_or_else(enoent)?;
        match node {
            MemNode::Dir { perm, mtime } => Ok(Meta {
                kind: FileType::Directory,
                size: 4096,
                blocks: 8,
                perm,
                nlink: 2,
                // SAFETY: getuid/getgid cannot fail.
                uid: unsafe { libc::getuid() },
                // SAFETY: as above.
                gid: unsafe { libc::getgid() },
                atime: mtime,
                mtime,
                ctime: mtime,
            }),
            MemNode::File { file, perm } => {
                let mut m = fstat(&file)?;
                m.perm = perm;
                Ok(m)
            }
        }
    }

    fn open(&self, rel: &str, truncate: bool) -> io::Result<File> {
        let node = self.nodes.lock().expect("mem store poisoned").get(rel).cloned().ok_or_else(enoent)?;
        match node {
            MemNode::Dir { .. } => Err(errno(libc::EISDIR)),
            MemNode::File { file, .. } => {
                let f = file.try_clone()?;
                if truncate {
                    f.set_len(0)?;
                }
                Ok(f)
            }
        }
    }

    fn check_parent(nodes: &BTreeMap<String, MemNode>, rel: &str) -> io::Result<()> {
        match nodes.get(parent_of(rel)) {
            Some(MemNode::Dir { .. }) => Ok(()),
            Some(_) => Err(errno(libc::ENOTDIR)),
            None => Err(enoent()),
        }
    }

    fn create(&self, rel: &str, mode: u32, flags: i32) -> io::Result<File> {
        let mut nodes = self.nodes.lock().expect("mem store poisoned");
        Self::check_parent(&nodes, rel)?;
        match nodes.get(rel) {
            Some(_) if flags & libc::O_EXCL != 0 => Err(errno(libc::EEXIST)),
            Some(MemNode::Dir { .. }) => Err(errno(libc::EISDIR)),
            Some(MemNode::File { file, .. }) => {
                let f = file.try_clone()?;
                if flags & libc::O_TRUNC != 0 {
                    f.set_len(0)?;
                }
                Ok(f)
            }
            None => {
                let file = Arc::new(memfd(rel)?);
                let f = file.try_clone()?;
                nodes.insert(rel.to_string(), MemNode::File { file, perm: (mode & 0o7777) as u16 });
                Ok(f)
            }
        }
    }

    fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()> {
        let mut nodes = self.nodes.lock().expect("mem store poisoned");
        Self::check_parent(&nodes, rel)?;
        if nodes.contains_key(rel) {
            return Err(errno(libc::EEXIST));
        }
        nodes.insert(rel.to_string(), MemNode::Dir { perm: (mode & 0o7777) as u16, mtime: SystemTime::now() });
        Ok(())
    }

    fn remove(&self, rel: &str, dir: bool) -> io::Result<()> {
        let mut nodes = self.nodes.lock().expect("mem store poisoned");
        match nodes.get(rel) {
            None => return Err(enoent()),
            Some(MemNode::Dir { .. }) if !dir => return Err(errno(libc::EISDIR)),
            Some(MemNode::File { .. }) if dir => return Err(errno(libc::ENOTDIR)),
            Some(MemNode::Dir { .. }) if nodes.keys().any(|k| under(rel, k)) => return Err(errno(libc::ENOTEMPTY)),
            Some(_) => {}
        }
        nodes.remove(rel);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str, flags: u32) -> io::Result<()> {
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(errno(libc::EINVAL));
        }
        let mut nodes = self.nodes.lock().expect("mem store poisoned");
        let src = nodes.get(from).cloned().ok_or_else(enoent)?;
        Self::check_parent(&nodes, to)?;
        if from == to {
            return Ok(());
        }
        let src_is_dir = matches!(src, MemNode::Dir { .. });
        if src_is_dir && under(from, to) {
            return Err(errno(libc::EINVAL));
        }
        if let Some(dst) = nodes.get(to) {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(errno(libc::EEXIST));
            }
            match (src_is_dir, matches!(dst, MemNode::Dir { .. })) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if nodes.keys().any(|k| under(to, k)) => return Err(errno(libc::ENOTEMPTY)),
                _ => {}
            }
        }
        let moved: Vec<String> = nodes.keys().filter(|k| under(from, k)).cloned().collect();
        nodes.remove(from);
        nodes.insert(to.to_string(), src);
        for k in moved {
            if let Some(n) = nodes.remove(&k) {
                nodes.insert(format!("{to}{}", &k[from.len()..]), n);
            }
        }
        Ok(())
    }

    fn list(&self, rel: &str) -> io::Result<Vec<(String, FileType)>> {
        let nodes = self.nodes.lock().expect("mem store poisoned");
        match nodes.get(rel) {
            Some(MemNode::Dir { .. }) => {}
            Some(_) => return Err(errno(libc::ENOTDIR)),
            None => return Err(enoent()),
        }
        let start = if rel.is_empty() { String::new() } else { format!("{rel}/") };
        Ok(nodes
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .filter(|(k, _)| is_child(rel, k))
            .map(|(k, n)| {
                let name = k[start.len()..].to_string();
                let kind = if matches!(n, MemNode::Dir { .. }) { FileType::Directory } else { FileType::RegularFile };
                (name, kind)
            })
            .collect())
    }

    fn chmod(&self, rel: &str, mode: u32) -> io::Result<()> {
        let mut nodes = self.nodes.lock().expect("mem store poisoned");
        match nodes.get_mut(rel).ok_or_else(enoent)? {
            MemNode::Dir { perm, .. } | MemNode::File { perm, .. } => *perm = (mode & 0o7777) as u16,
        }
        Ok(())
    }

    fn set_mtime(&self, rel: &str, mtime: Option<SystemTime>) -> io::Result<()> {
        let mut nodes = self.nodes.lock().expect("mem store poisoned");
        match nodes.get_mut(rel).ok_or_else(enoent)? {
            MemNode::Dir { mtime: m, .. } => {
                if let Some(t) = mtime {
                    *m = t;
                }
            }
            MemNode::File { file, .. } => {
                if let Some(t) = mtime {
                    file.set_modified(t)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_tree_operations() {
        let s = MemStore::new();
        s.mkdir("d", 0o755).unwrap();
        s.create("d/a", 0o644, 0).unwrap();
        s.create("top", 0o644, 0).unwrap();
        assert_eq!(s.list("").unwrap().len(), 2);
        assert_eq!(s.list("d").unwrap(), vec![("a".to_string(), FileType::RegularFile)]);
        assert_eq!(s.remove("d", true).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
        s.rename("d", "e", 0).unwrap();
        assert!(s.stat("e/a").is_ok());
        assert!(s.stat("d/a").is_err());
        assert_eq!(s.rename("top", "e", 0).unwrap_err().raw_os_error(), Some(libc::EISDIR));
        assert_eq!(s.create("e/a", 0o644, libc::O_EXCL).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        s.remove("e/a", false).unwrap();
        s.remove("e", true).unwrap();
        assert_eq!(s.list("").unwrap(), vec![("top".to_string(), FileType::RegularFile)]);
    }
}
