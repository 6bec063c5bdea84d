//! `file://DIR`: objects are files under an mlpdrive work directory in DIR,
//! read and written with O_DIRECT through io_uring.
//!
//! Objects whose size is not a multiple of the DIO alignment are written as
//! whole aligned blocks and truncated to their logical size at the commit
//! (fsync) point; reads of the tail ask for the aligned span and the kernel
//! returns the bytes up to end of file.

use std::fs::{File, OpenOptions as FsOpen};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use mlpdrive_shim::{FuseMount, is_daemon_gone_errno};

use super::table::HandleTable;
use super::workdir::WorkDir;
use super::{
    Capabilities, Completion, IoMode, ObjectHandle, Op, OpenOptions, Queue, QueueFull, Target, TargetError, TargetInfo,
};
use crate::buf::{AlignedBuf, BufPool};
use crate::error::Error;
use crate::io::{self, Resolved, Resolver};

pub struct FileTarget {
    info: TargetInfo,
    workdir: WorkDir,
    opts: OpenOptions,
    table: Arc<FileTable>,
}

struct FileTable {
    handles: HandleTable,
    /// The FUSE mount the directory is on, if it is on one: its daemon's
    /// death shows up as ENOTCONN/ECONNABORTED, explained in the errors.
    fuse: Option<Arc<FuseMount>>,
}

impl FileTable {
    /// Adds the cause to an error that says the FUSE daemon is gone.
    fn explain(&self, e: TargetError) -> TargetError {
        match (&self.fuse, e.errno()) {
            (Some(m), Some(code)) if is_daemon_gone_errno(code) => e.with_cause(m.gone_hint()),
            _ => e,
        }
    }

    fn io_err(&self, op: &'static str, name: &str, offset: u64, e: &std::io::Error) -> TargetError {
        self.explain(TargetError::io(op, name, offset, errno(e)))
    }
}

/// A queue on a FUSE mount: completions that failed because the daemon is
/// gone say so.
struct FuseQueue {
    inner: Box<dyn Queue>,
    table: Arc<FileTable>,
}

impl Queue for FuseQueue {
    fn depth(&self) -> usize {
        self.inner.depth()
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
        self.inner.submit(tag, op, buf)
    }

    fn reap(
        &mut self,
        min_complete: usize,
        timeout: std::time::Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, TargetError> {
        let before = out.len();
        let n = self.inner.reap(min_complete, timeout, out).map_err(|e| self.table.explain(e))?;
        for c in &mut out[before..] {
            if let Err(e) = &mut c.result {
                *e = self.table.explain(std::mem::replace(e, TargetError::namespace("")));
            }
        }
        Ok(n)
    }

    fn io_mode(&self) -> IoMode {
        self.inner.io_mode()
    }
}

impl Resolver for FileTable {
    fn resolve(&self, obj: ObjectHandle) -> Option<Resolved> {
        self.handles.get(obj)
    }

    fn set_logical_size(&self, obj: ObjectHandle, size: u64) -> Result<(), TargetError> {
        let r = self.handles.get(obj).ok_or_else(|| TargetError::namespace("unknown object handle"))?;
        r.file.set_len(size).map_err(|e| self.io_err("truncate", &r.name, size, &e))
    }
}

impl FileTarget {
    /// Opens (creating if needed) the work directory under `dir` and checks
    /// that O_DIRECT works there when asked for.
    pub fn open(dir: &Path, display: &str, opts: OpenOptions) -> Result<FileTarget, Error> {
        let fuse = mlpdrive_shim::fuse_mount_of(dir).map(Arc::new);
        if let Some(m) = fuse.as_deref().and_then(|m| mlpdrive_shim::dead_fuse_mount_of(&m.mountpoint)) {
            return Err(Error::failed(format!("target {}: {}", dir.display(), m.gone_hint())));
        }
        let workdir = WorkDir::open_or_create(dir)?;
        let align = io::align::dio_align_for_path(workdir.root()).unwrap_or(io::align::FALLBACK_ALIGN);
        if opts.direct {
            probe_direct(workdir.root(), align)?;
        }
        let info = TargetInfo {
            kind: "file",
            location: display.to_string(),
            caps: Capabilities { align, ranged_writes: true, stores_data: true, max_object_bytes: None },
        };
        Ok(FileTarget { info, workdir, opts, table: Arc::new(FileTable { handles: HandleTable::default(), fuse }) })
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.root()
    }

    fn open_file(&self, path: &Path, create: bool) -> std::io::Result<File> {
        let mut o = FsOpen::new();
        o.read(true).write(true);
        if create {
            o.create(true).truncate(true).mode(0o644);
        }
        if self.opts.direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(path)
    }

    fn resolved(name: &str, file: File) -> Resolved {
        Resolved { file: Arc::new(file), base: 0, limit: None, name: Arc::from(name) }
    }
}

/// Writes and reads one aligned block with O_DIRECT in a scratch file, so a
/// filesystem that refuses direct I/O is reported before the run, not as a
/// thousand I/O errors during it.
fn probe_direct(dir: &Path, align: usize) -> Result<(), Error> {
    // One probe file per process: the ranks of an MPI job open the same
    // target at once.
    let path = dir.join(format!(".direct-probe-{}", std::process::id()));
    let refuse = |what: &str, e: std::io::Error| {
        let _ = std::fs::remove_file(&path);
        // EINVAL is how a filesystem says no to O_DIRECT; anything else
        // (EIO from a failing or fault-injecting device, ENOSPC) is an I/O
        // failure, not a reason to drop direct I/O.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Error::failed(format!("the O_DIRECT probe in {} failed ({what}: {e})", dir.display()));
        }
        Error::usage(format!(
            "the filesystem at {} refuses O_DIRECT ({what}: {e}); rerun with `--set io.direct=false` \
             to use the page cache (the results will then say direct=false)",
            dir.display()
        ))
    };
    let file = FsOpen::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| refuse("open", e))?;
    let mut buf = crate::buf::AlignedBuf::new(align, align);
    use std::os::unix::fs::FileExt;
    file.write_all_at(&buf.as_slice()[..align], 0).map_err(|e| refuse("write", e))?;
    file.read_exact_at(&mut buf.as_mut_slice()[..align], 0).map_err(|e| refuse("read", e))?;
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Target for FileTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn create(&self, name: &str, _size_hint: u64) -> Result<ObjectHandle, TargetError> {
        let path = self.workdir.object_path(name)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.table.io_err("mkdir", name, 0, &e))?;
        }
        let file = self.open_file(&path, true).map_err(|e| self.table.io_err("create", name, 0, &e))?;
        Ok(self.table.handles.insert(name, Self::resolved(name, file)))
    }

    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        if let Some((h, r)) = self.table.handles.lookup(name) {
            let len = r.file.metadata().map_err(|e| self.table.io_err("stat", name, 0, &e))?.len();
            return Ok(Some((h, len)));
        }
        let path = self.workdir.object_path(name)?;
        match self.open_file(&path, false) {
            Ok(file) => {
                let len = file.metadata().map_err(|e| self.table.io_err("stat", name, 0, &e))?.len();
                Ok(Some((self.table.handles.insert(name, Self::resolved(name, file)), len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.table.io_err("open", name, 0, &e)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        let path = self.workdir.object_path(name)?;
        self.table.handles.remove(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.table.io_err("delete", name, 0, &e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let mut out = Vec::new();
        walk(self.workdir.root(), "", &mut out).map_err(|e| self.table.io_err("list", prefix, 0, &e))?;
        out.retain(|(n, _)| n.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn queue(&self, depth: usize, pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        let q = io::make_queue(depth, self.table.clone(), self.info.caps.align, self.opts, pool);
        Ok(match self.table.fuse {
            Some(_) => Box::new(FuseQueue { inner: q, table: self.table.clone() }),
            None => q,
        })
    }
}

/// Lists regular files under `dir` as '/'-joined names, skipping mlpdrive's
/// own dot-files (marker, probe).
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && name.starts_with('.') {
            continue;
        }
        let full = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&entry.path(), &full, out)?;
        } else if ft.is_file() {
            out.push((full, entry.metadata()?.len()));
        }
    }
    Ok(())
}
