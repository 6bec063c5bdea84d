//! The FUSE file system: passthrough to the store, timing and faults from
//! the device model, op-log rows and observer calls.
//!
//! Data ops (read, write, fsync) are submitted to the device model when
//! they arrive; the real I/O on the store happens at once on the FUSE
//! thread, and the reply goes out when the model says the op completes
//! (through the completion thread when that is in the future). Injected
//! errors skip the real I/O (a failed write writes nothing) and become the
//! reply's errno; injected read corruption alters the returned bytes;
//! hangs delay the reply by their duration and then fail with ETIMEDOUT.
//! Metadata ops go straight to the store and reply at once.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use mlpdrive_emu::{Clock, Device, DeviceOp, RealClock};

use crate::backend::{Meta, Store, fstat};
use crate::buf::{ALIGN, BufPool};
use crate::completion::Completer;
use crate::crash::{CrashCounts, CrashLog};
use crate::inodes::{Inodes, ROOT_INO, join};
use crate::oplog::{OpLogSender, Row, digest};
use crate::{CRASH_IOCTL, Observer, PID_IOCTL, errno};

/// How long the kernel may cache attributes and names.
const TTL: Duration = Duration::from_secs(1);
/// Largest request the kernel sends (the kernel's default page limit).
pub(crate) const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Each file occupies its own 1 TiB stretch of the emulated device, so
/// sequential access within a file looks sequential to the model.
const FILE_SPAN_SHIFT: u32 = 40;

/// An open file.
struct Handle {
    file: File,
    ino: u64,
    /// The client opened with O_DIRECT (the store's descriptor is O_DIRECT
    /// too, so buffers must be aligned).
    direct: bool,
    /// Served by the kernel's passthrough (holds a backing reference).
    passthrough: bool,
}

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: String,
}

/// Counters for the unmount summary.
#[derive(Default)]
pub(crate) struct Stats {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
}

/// State shared by the FUSE threads, the completion thread and the mount
/// handle.
pub(crate) struct Shared {
    pub store: Store,
    pub inodes: Mutex<Inodes>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    device: Mutex<Device>,
    pub clock: RealClock,
    pub completer: Completer,
    /// Present while the op log runs; taken at unmount so the logger ends.
    pub oplog: RwLock<Option<OpLogSender>>,
    logging: bool,
    pub observer: Option<Arc<dyn Observer>>,
    bufs: BufPool,
    pub capacity_bytes: Option<u64>,
    /// Passthrough was asked for (profile costs nothing, nothing observes).
    pub want_passthrough: bool,
    /// The kernel accepted FUSE_PASSTHROUGH at init.
    pub passthrough_negotiated: AtomicBool,
    /// Passthrough is in use (negotiated and the probe worked).
    pub passthrough: AtomicBool,
    passthrough_warned: AtomicBool,
    pub stats: Stats,
    /// Unsynced writes, for `mlpdrive shim crash` (`--crash-tracking`).
    pub crash: Option<CrashLog>,
    /// Tells the kernel to drop cached pages after a crash.
    pub notifier: std::sync::OnceLock<fuser::Notifier>,
    /// Delayed replies go out this much before their due time: the
    /// measured FUSE round trip (see `calibrate_round_trip`), 0 if off.
    pub reply_lead_ns: AtomicU64,
}

pub(crate) struct SharedParts {
    pub store: Store,
    pub device: Device,
    pub clock: RealClock,
    pub completer: Completer,
    pub oplog: Option<OpLogSender>,
    pub observer: Option<Arc<dyn Observer>>,
    pub capacity_bytes: Option<u64>,
    pub want_passthrough: bool,
    pub crash: Option<CrashLog>,
}

impl Shared {
    pub(crate) fn new(p: SharedParts) -> Shared {
        let used = if p.capacity_bytes.is_some() { p.store.used_bytes() } else { 0 };
        Shared {
            store: p.store,
            inodes: Mutex::new(Inodes::new(used)),
            handles: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            device: Mutex::new(p.device),
            clock: p.clock,
            completer: p.completer,
            logging: p.oplog.is_some(),
            oplog: RwLock::new(p.oplog),
            observer: p.observer,
            bufs: BufPool::default(),
            capacity_bytes: p.capacity_bytes,
            want_passthrough: p.want_passthrough,
            passthrough_negotiated: AtomicBool::new(false),
            passthrough: AtomicBool::new(false),
            passthrough_warned: AtomicBool::new(false),
            stats: Stats::default(),
            crash: p.crash,
            notifier: std::sync::OnceLock::new(),
            reply_lead_ns: AtomicU64::new(0),
        }
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.inodes.lock().expect("inode table poisoned")
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        self.handles.read().expect("handle table poisoned").get(&fh.0).cloned()
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.write().expect("handle table poisoned").insert(fh, Arc::new(h));
        fh
    }

    fn submit(&self, op: DeviceOp, arrival_ns: u64) -> mlpdrive_emu::Outcome {
        self.device.lock().expect("device poisoned").submit(op, arrival_ns)
    }

    /// A row for the op log, if there is one.
    fn row(&self, op: &'static str, path: &str, arrival_ns: u64, result: Result<(), i32>) -> Option<Row> {
        self.logging.then(|| Row {
            start_ns: arrival_ns,
            op,
            path: path.to_string(),
            result: match result {
                Ok(()) => "ok".to_string(),
                Err(e) => errno::name(e),
            },
            ..Row::default()
        })
    }

    fn log(&self, row: Row) {
        if let Some(tx) = self.oplog.read().expect("op log poisoned").as_ref() {
            tx.send(row);
        }
    }

    fn count(&self, result: Result<(), i32>) {
        self.stats.ops.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn warn_passthrough(&self, what: &str, e: &std::io::Error) {
        if !self.passthrough_warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "mlpdrive shim: warning: kernel passthrough refused ({what}: {e}); \
                 such files are served by the daemon path"
            );
        }
    }
}

/// Sends the reply (`send`) at `due_ns` and logs `row` with the latency
/// from arrival to the reply.
fn complete(sh: &Arc<Shared>, arrival_ns: u64, due_ns: u64, row: Option<Row>, send: impl FnOnce() + Send + 'static) {
    complete_then(sh, arrival_ns, due_ns, || row, send);
}

/// Like [`complete`], with the row (and any observer call) built by
/// `after`: when the reply is due now it is sent first and `after` runs
/// once the client is on its way, keeping hashing and verification off the
/// request's latency; when it is due later, `after` runs now, on this FUSE
/// thread, so the completion thread only sends.
fn complete_then(
    sh: &Arc<Shared>,
    arrival_ns: u64,
    due_ns: u64,
    after: impl FnOnce() -> Option<Row>,
    send: impl FnOnce() + Send + 'static,
) {
    // The reply still has to travel back to the client, and the request
    // travelled here before `arrival_ns`: send it that much early.
    let due_ns = due_ns.saturating_sub(sh.reply_lead_ns.load(Ordering::Relaxed)).max(arrival_ns);
    if due_ns <= sh.clock.now_ns() {
        send();
        let latency_ns = sh.clock.now_ns().saturating_sub(arrival_ns);
        if let Some(mut r) = after() {
            r.latency_ns = latency_ns;
            sh.log(r);
        }
        return;
    }
    let row = after();
    let sh2 = sh.clone();
    sh.completer.schedule(
        due_ns,
        Box::new(move || {
            send();
            if let Some(mut r) = row {
                r.latency_ns = sh2.clock.now_ns().saturating_sub(arrival_ns);
                sh2.log(r);
            }
        }),
    );
}

fn attr(ino: u64, m: &Meta) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.size,
        blocks: m.blocks,
        atime: m.atime,
        mtime: m.mtime,
        ctime: m.ctime,
        crtime: m.ctime,
        kind: m.kind,
        perm: m.perm,
        nlink: m.nlink,
        uid: m.uid,
        gid: m.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn dev_offset(ino: u64, offset: u64) -> u64 {
    (ino << FILE_SPAN_SHIFT).wrapping_add(offset & ((1 << FILE_SPAN_SHIFT) - 1))
}

fn name_str(name: &OsStr) -> Result<&str, i32> {
    name.to_str().ok_or(libc::EINVAL)
}

/// The file system handed to fuser.
pub(crate) struct ShimFs {
    pub sh: Arc<Shared>,
}

impl ShimFs {
    /// Path of `name` in directory `parent`.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<String, i32> {
        let name = name_str(name)?;
        let dir = self.sh.inodes().path(parent.0).ok_or(libc::ENOENT)?;
        Ok(join(&dir, name))
    }

    /// Reports a metadata op: counts it, logs it (replying is the caller's).
    fn note(&self, op: &'static str, path: &str, path2: &str, arrival_ns: u64, result: Result<(), i32>) {
        // A lookup of a name that does not exist is an answer, not a failure.
        let failed = if op == "getattr" && result == Err(libc::ENOENT) { Ok(()) } else { result };
        self.sh.count(failed);
        if let Some(mut r) = self.sh.row(op, path, arrival_ns, result) {
            r.path2 = path2.to_string();
            r.latency_ns = self.sh.clock.now_ns().saturating_sub(arrival_ns);
            self.sh.log(r);
        }
    }

    /// A backing reference for passthrough of inode `ino` (shared by all its
    /// opens), registered through `open_backing`.
    fn backing_for(
        &self,
        ino: u64,
        path: &str,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.sh.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let mut inodes = self.sh.inodes();
        let node = inodes.get_mut(ino)?;
        if let Some(b) = &node.backing {
            node.backing_users += 1;
            return Some(b.clone());
        }
        let file = match self.sh.store.open_backing(path) {
            Ok(f) => f,
            Err(e) => {
                self.sh.warn_passthrough("opening the backing file", &e);
                return None;
            }
        };
        match open_backing(&file) {
            Ok(id) => {
                let id = Arc::new(id);
                node.backing = Some(id.clone());
                node.backing_users = 1;
                Some(id)
            }
            Err(e) => {
                self.sh.warn_passthrough("FUSE_DEV_IOC_BACKING_OPEN", &e);
                None
            }
        }
    }

    fn release_backing(&self, ino: u64) {
        let mut inodes = self.sh.inodes();
        if let Some(node) = inodes.get_mut(ino) {
            node.backing_users = node.backing_users.saturating_sub(1);
            if node.backing_users == 0 {
                node.backing = None;
            }
        }
    }

    fn open_flags(direct: bool) -> FopenFlags {
        if direct {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        } else {
            FopenFlags::empty()
        }
    }

    /// Reserves room for a file growing to `end_bytes` (capacity
    /// accounting); returns the bytes reserved.
    fn reserve(&self, ino: u64, file: Option<&File>, end_bytes: u64) -> Result<u64, i32> {
        let Some(cap) = self.sh.capacity_bytes else { return Ok(0) };
        let mut inodes = self.sh.inodes();
        let known = inodes.get(ino).and_then(|n| n.size_bytes);
        let size = match known {
            Some(s) => s,
            None => match file {
                Some(f) => fstat(f).map(|m| m.size).unwrap_or(0),
                None => inodes.path(ino).and_then(|p| self.sh.store.stat(&p).ok()).map_or(0, |m| m.size),
            },
        };
        let growth = end_bytes.saturating_sub(size);
        if inodes.used_bytes + growth > cap {
            return Err(libc::ENOSPC);
        }
        inodes.used_bytes += growth;
        if let Some(n) = inodes.get_mut(ino) {
            n.size_bytes = Some(size.max(end_bytes));
        }
        Ok(growth)
    }

    fn unreserve(&self, ino: u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut inodes = self.sh.inodes();
        inodes.used_bytes = inodes.used_bytes.saturating_sub(bytes);
        if let Some(n) = inodes.get_mut(ino) {
            n.size_bytes = n.size_bytes.map(|s| s.saturating_sub(bytes));
        }
    }

    /// A write the backing store refused: give back its reserved capacity,
    /// count it, answer the kernel with the errno and log the row.
    fn backing_write_failed(
        &self,
        ino: u64,
        reserved: u64,
        e: &std::io::Error,
        reply: ReplyWrite,
        path: &str,
        arrival_ns: u64,
    ) {
        self.unreserve(ino, reserved);
        let code = errno::of(e);
        self.sh.count(Err(code));
        reply.error(Errno::from_i32(code));
        self.note("write", path, "", arrival_ns, Err(code));
    }

    /// A file at `path` goes away: release its bytes from the accounting.
    fn forget_size(&self, path: &str) {
        if self.sh.capacity_bytes.is_none() {
            return;
        }
        if let Ok(m) = self.sh.store.stat(path)
            && m.kind == FileType::RegularFile
            && m.nlink <= 1
        {
            let mut inodes = self.sh.inodes();
            inodes.used_bytes = inodes.used_bytes.saturating_sub(m.size);
        }
    }

    fn truncate(&self, ino: u64, fh: Option<FileHandle>, size: u64) -> Result<(), i32> {
        let handle = fh.and_then(|fh| self.sh.handle(fh));
        let path = self.sh.inodes().path(ino);
        if self.sh.capacity_bytes.is_some() {
            let old = match &handle {
                Some(h) => meta_errno(fstat(&h.file)),
                None => path.as_deref().ok_or(libc::ENOENT).and_then(|p| meta_errno(self.sh.store.stat(p))),
            };
            let old = old?.size;
            let mut inodes = self.sh.inodes();
            if size > old && inodes.used_bytes + (size - old) > self.sh.capacity_bytes.unwrap_or(u64::MAX) {
                return Err(libc::ENOSPC);
            }
            inodes.used_bytes = (inodes.used_bytes + size).saturating_sub(old);
            if let Some(n) = inodes.get_mut(ino) {
                n.size_bytes = Some(size);
            }
        }
        let log = self.sh.crash.as_ref().and_then(|c| c.existing(ino));
        let mut log = log.as_ref().map(|l| l.lock().expect("crash log poisoned"));
        let r = match (&handle, &path) {
            (Some(h), _) => h.file.set_len(size),
            (None, Some(p)) => self.sh.store.truncate(p, size),
            (None, None) => return Err(libc::ENOENT),
        };
        if let (Ok(()), Some(c), Some(l)) = (&r, &self.sh.crash, log.as_deref_mut()) {
            c.truncated(l, size);
        }
        r.map_err(|e| errno::of(&e))
    }
}

impl ShimFs {
    /// `mlpdrive shim crash`: drops the lost unsynced writes (see
    /// `crash.rs`), tells the kernel to forget the cached pages and sizes
    /// of the files that lost any, and reports each lost extent to the op
    /// log (a `crash` row with the hashes of the content now there, and a
    /// `truncate` row when the file shrank back) and the observer.
    fn crash_now(&self) -> Result<CrashCounts, i32> {
        let sh = &self.sh;
        let Some(crash) = &sh.crash else { return Err(libc::EOPNOTSUPP) };
        let t0 = sh.clock.now_ns();
        let mut touched = Vec::new();
        let counts = crash
            .crash(|f| {
                let path = sh.inodes().log_path(f.ino);
                if let Some(n) = f.new_size {
                    let mut inodes = sh.inodes();
                    if let Some(node) = inodes.get_mut(f.ino) {
                        let old = node.size_bytes.replace(n);
                        if sh.capacity_bytes.is_some()
                            && let Some(old) = old
                        {
                            inodes.used_bytes = (inodes.used_bytes + n).saturating_sub(old);
                        }
                    }
                }
                let size = f.file.metadata().map(|m| m.len()).unwrap_or(0);
                for e in &f.lost {
                    let upto = e.end().min(size);
                    let mut now = vec![0u8; upto.saturating_sub(e.offset) as usize];
                    let _ = f.file.read_exact_at(&mut now, e.offset);
                    if let Some(o) = &sh.observer {
                        o.on_crash(&path, e.offset, e.len, &now);
                    }
                    if let Some(mut r) = sh.row("crash", &path, t0, Ok(())) {
                        r.offset = e.offset;
                        r.length = e.len;
                        r.block_hashes = digest(e.offset, &now, false).hashes;
                        sh.log(r);
                    }
                }
                if let Some(n) = f.new_size
                    && let Some(mut r) = sh.row("truncate", &path, t0, Ok(()))
                {
                    r.offset = n;
                    sh.log(r);
                }
                touched.push(f.ino);
            })
            .map_err(|e| errno::of(&e))?;
        // After the files' locks are released: the kernel may wait for a
        // write in flight (its pages locked), whose handler needs that lock.
        if let Some(n) = sh.notifier.get() {
            for ino in touched {
                let _ = n.inval_inode(INodeNo(ino), 0, 0);
            }
        }
        Ok(counts)
    }
}

fn meta_errno(r: std::io::Result<Meta>) -> Result<Meta, i32> {
    r.map_err(|e| errno::of(&e))
}

fn system_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for ShimFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_REQUEST_BYTES) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_REQUEST_BYTES) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(256);
        let _ = config.set_congestion_threshold(192);
        for flag in [InitFlags::FUSE_ASYNC_DIO, InitFlags::FUSE_PARALLEL_DIROPS] {
            let _ = config.add_capabilities(flag);
        }
        if self.sh.want_passthrough && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
            // 2 lets the backing directory sit on a stacked file system
            // (overlayfs), the kernel's maximum.
            let _ = config.set_max_stack_depth(2);
            self.sh.passthrough_negotiated.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t0 = self.sh.clock.now_ns();
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => {
                reply.error(Errno::from_i32(e));
                return;
            }
        };
        let r = meta_errno(self.sh.store.stat(&path));
        match &r {
            Ok(m) => {
                let ino = self.sh.inodes().ino_for(&path);
                reply.entry(&TTL, &attr(ino, m), Generation(0));
            }
            Err(e) => reply.error(Errno::from_i32(*e)),
        }
        self.note("getattr", &path, "", t0, r.map(|_| ()));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let t0 = self.sh.clock.now_ns();
        let path = self.sh.inodes().path(ino.0);
        let r = match (&path, fh.and_then(|fh| self.sh.handle(fh))) {
            (Some(p), _) => meta_errno(self.sh.store.stat(p)),
            (None, Some(h)) => meta_errno(fstat(&h.file)),
            (None, None) => Err(libc::ENOENT),
        };
        match &r {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, m)),
            Err(e) => reply.error(Errno::from_i32(*e)),
        }
        let log_path = self.sh.inodes().log_path(ino.0);
        self.note("getattr", &log_path, "", t0, r.map(|_| ()));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let t0 = self.sh.clock.now_ns();
        let path = self.sh.inodes().path(ino.0);
        let log_path = self.sh.inodes().log_path(ino.0);
        let r = (|| -> Result<Meta, i32> {
            if let Some(size) = size {
                let r = self.truncate(ino.0, fh, size);
                if let Some(mut row) = self.sh.row("truncate", &log_path, t0, r) {
                    row.offset = size;
                    row.latency_ns = self.sh.clock.now_ns().saturating_sub(t0);
                    self.sh.log(row);
                }
                self.sh.count(r);
                r?;
            }
            let p = path.as_deref().ok_or(libc::ENOENT)?;
            if let Some(mode) = mode {
                self.sh.store.chmod(p, mode).map_err(|e| errno::of(&e))?;
            }
            if (uid.is_some() || gid.is_some())
                && let Store::Dir(_) = self.sh.store
            {
                let full = match &self.sh.store {
                    Store::Dir(root) => root.join(p),
                    Store::Mem(_) => unreachable!(),
                };
                std::os::unix::fs::lchown(full, uid, gid).map_err(|e| errno::of(&e))?;
            }
            if atime.is_some() || mtime.is_some() {
                self.sh
                    .store
                    .set_times(p, atime.map(system_time), mtime.map(system_time))
                    .map_err(|e| errno::of(&e))?;
            }
            meta_errno(self.sh.store.stat(p))
        })();
        match r {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let t0 = self.sh.clock.now_ns();
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        let r = self
            .sh
            .store
            .mkdir(&path, mode & !umask)
            .and_then(|()| self.sh.store.stat(&path))
            .map_err(|e| errno::of(&e));
        match &r {
            Ok(m) => {
                let ino = self.sh.inodes().ino_for(&path);
                reply.entry(&TTL, &attr(ino, m), Generation(0));
            }
            Err(e) => reply.error(Errno::from_i32(*e)),
        }
        self.note("mkdir", &path, "", t0, r.map(|_| ()));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t0 = self.sh.clock.now_ns();
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        self.forget_size(&path);
        let r = self.sh.store.unlink(&path).map_err(|e| errno::of(&e));
        if r.is_ok() {
            let gone = self.sh.inodes().unlinked(&path);
            if let (Some(c), Some(ino)) = (&self.sh.crash, gone) {
                c.forget(ino);
            }
            reply.ok();
        } else if let Err(e) = r {
            reply.error(Errno::from_i32(e));
        }
        self.note("unlink", &path, "", t0, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t0 = self.sh.clock.now_ns();
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        let r = self.sh.store.rmdir(&path).map_err(|e| errno::of(&e));
        match r {
            Ok(()) => {
                self.sh.inodes().unlinked(&path);
                reply.ok();
            }
            Err(e) => reply.error(Errno::from_i32(e)),
        }
        self.note("rmdir", &path, "", t0, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let t0 = self.sh.clock.now_ns();
        let (from, to) = match (self.child(parent, name), self.child(newparent, newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(Errno::from_i32(e)),
        };
        let exchange = flags.bits() & libc::RENAME_EXCHANGE != 0;
        if !exchange && from != to {
            self.forget_size(&to);
        }
        let r = self.sh.store.rename(&from, &to, flags.bits()).map_err(|e| errno::of(&e));
        match r {
            Ok(()) => {
                let mut inodes = self.sh.inodes();
                if exchange {
                    // Swap through a name no path can have.
                    let tmp = format!("{from}\0exchange");
                    inodes.renamed(&from, &tmp);
                    inodes.renamed(&to, &from);
                    inodes.renamed(&tmp, &to);
                } else {
                    inodes.renamed(&from, &to);
                }
                drop(inodes);
                if let Some(o) = &self.sh.observer {
                    o.on_rename(&from, &to, exchange);
                }
                reply.ok();
            }
            Err(e) => reply.error(Errno::from_i32(e)),
        }
        self.note("rename", &from, &to, t0, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let t0 = self.sh.clock.now_ns();
        let Some(path) = self.sh.inodes().path(ino.0) else {
            reply.error(Errno::ENOENT);
            return self.note("open", &self.sh.inodes().log_path(ino.0), "", t0, Err(libc::ENOENT));
        };
        let direct = flags.0 & libc::O_DIRECT != 0;
        let r = self.sh.store.open(&path, flags.0).map_err(|e| errno::of(&e));
        match r {
            Ok(file) => {
                let backing = self.backing_for(ino.0, &path, |f| reply.open_backing(f));
                let passthrough = backing.is_some();
                let fh = self.sh.add_handle(Handle { file, ino: ino.0, direct, passthrough });
                match backing {
                    Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
                    None => reply.opened(FileHandle(fh), Self::open_flags(direct)),
                }
                self.note("open", &path, "", t0, Ok(()));
            }
            Err(e) => {
                reply.error(Errno::from_i32(e));
                self.note("open", &path, "", t0, Err(e));
            }
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let t0 = self.sh.clock.now_ns();
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        let direct = flags & libc::O_DIRECT != 0;
        let r = self
            .sh
            .store
            .create(&path, mode & !umask, flags)
            .and_then(|f| fstat(&f).map(|m| (f, m)))
            .map_err(|e| errno::of(&e));
        match r {
            Ok((file, mut m)) => {
                if let Store::Mem(_) = self.sh.store {
                    m = self.sh.store.stat(&path).unwrap_or(m);
                }
                let ino = {
                    let mut inodes = self.sh.inodes();
                    let ino = inodes.ino_for(&path);
                    if let Some(n) = inodes.get_mut(ino) {
                        n.size_bytes = Some(m.size);
                    }
                    ino
                };
                let backing = self.backing_for(ino, &path, |f| reply.open_backing(f));
                let passthrough = backing.is_some();
                let fh = self.sh.add_handle(Handle { file, ino, direct, passthrough });
                let a = attr(ino, &m);
                match backing {
                    Some(b) => {
                        reply.created_passthrough(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty(), &b)
                    }
                    None => reply.created(&TTL, &a, Generation(0), FileHandle(fh), Self::open_flags(direct)),
                }
                self.note("create", &path, "", t0, Ok(()));
            }
            Err(e) => {
                reply.error(Errno::from_i32(e));
                self.note("create", &path, "", t0, Err(e));
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let sh = &self.sh;
        let t0 = sh.clock.now_ns();
        let want_path = sh.logging || sh.observer.is_some();
        let path = if want_path { sh.inodes().log_path(ino.0) } else { String::new() };
        let Some(h) = sh.handle(fh) else {
            reply.error(Errno::EBADF);
            return self.note("read", &path, "", t0, Err(libc::EBADF));
        };
        let outcome = sh.submit(DeviceOp::read(dev_offset(ino.0, offset), u64::from(size)), t0);
        if let Err(e) = outcome.result {
            let code = e.errno();
            sh.count(Err(code));
            let row = sh.row("read", &path, t0, Err(code)).map(|mut r| {
                r.offset = offset;
                r
            });
            return complete(sh, t0, outcome.complete_ns, row, move || reply.error(Errno::from_i32(code)));
        }
        let mut buf = sh.bufs.get(size as usize);
        let n = match h.file.read_at(buf.as_mut_slice(), offset) {
            Ok(n) => n,
            Err(e) => {
                let code = errno::of(&e);
                sh.bufs.put(buf);
                reply.error(Errno::from_i32(code));
                return self.note("read", &path, "", t0, Err(code));
            }
        };
        buf.set_len(n);
        if let Some(c) = outcome.corruption {
            c.apply(buf.as_mut_slice());
        }
        sh.count(Ok(()));
        let buf = Arc::new(buf);
        let sent = buf.clone();
        let sh2 = sh.clone();
        complete_then(
            sh,
            t0,
            outcome.complete_ns,
            || {
                if let Some(o) = &sh.observer {
                    o.on_read(&path, offset, buf.as_slice());
                }
                sh.row("read", &path, t0, Ok(())).map(|mut r| {
                    r.offset = offset;
                    r.length = n as u64;
                    r.block_hashes = digest(offset, buf.as_slice(), false).hashes;
                    r
                })
            },
            move || {
                reply.data(sent.as_slice());
                if let Ok(b) = Arc::try_unwrap(sent) {
                    sh2.bufs.put(b);
                }
            },
        );
        // Whichever side lets go last returns the buffer to the pool.
        if let Ok(b) = Arc::try_unwrap(buf) {
            sh.bufs.put(b);
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let sh = &self.sh;
        let t0 = sh.clock.now_ns();
        let want_path = sh.logging || sh.observer.is_some();
        let path = if want_path { sh.inodes().log_path(ino.0) } else { String::new() };
        let len = data.len() as u64;
        let fail_row = |code: i32| {
            sh.row("write", &path, t0, Err(code)).map(|mut r| {
                r.offset = offset;
                r.length = len;
                r
            })
        };
        let Some(h) = sh.handle(fh) else {
            reply.error(Errno::EBADF);
            return self.note("write", &path, "", t0, Err(libc::EBADF));
        };
        let reserved = match self.reserve(ino.0, Some(&h.file), offset + len) {
            Ok(r) => r,
            Err(code) => {
                sh.count(Err(code));
                let row = fail_row(code);
                return complete(sh, t0, t0, row, move || reply.error(Errno::from_i32(code)));
            }
        };
        let outcome = sh.submit(DeviceOp::write(dev_offset(ino.0, offset), len), t0);
        if let Err(e) = outcome.result {
            self.unreserve(ino.0, reserved);
            let code = e.errno();
            sh.count(Err(code));
            let row = fail_row(code);
            return complete(sh, t0, outcome.complete_ns, row, move || reply.error(Errno::from_i32(code)));
        }
        // With crash tracking, the bytes this write replaces are saved first,
        // under the file's lock, which is held until the write is done.
        let log = match &sh.crash {
            None => None,
            Some(c) => {
                let p = sh.inodes().path(ino.0);
                match c.file(ino.0, || {
                    p.as_deref()
                        .map_or(Err(std::io::Error::from_raw_os_error(libc::ENOENT)), |p| sh.store.open_backing(p))
                }) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        return self.backing_write_failed(ino.0, reserved, &e, reply, &path, t0);
                    }
                }
            }
        };
        let mut log = log.as_ref().map(|l| l.lock().expect("crash log poisoned"));
        if let (Some(c), Some(l)) = (&sh.crash, log.as_deref_mut())
            && let Err(e) = c.before_write(l, offset, len)
        {
            drop(log);
            return self.backing_write_failed(ino.0, reserved, &e, reply, &path, t0);
        }
        let written = if h.direct && !(data.as_ptr() as usize).is_multiple_of(ALIGN) {
            let mut buf = sh.bufs.get(data.len());
            buf.as_mut_slice().copy_from_slice(data);
            let r = h.file.write_at(buf.as_slice(), offset);
            sh.bufs.put(buf);
            r
        } else {
            h.file.write_at(data, offset)
        };
        if let (Err(_), Some(c), Some(l)) = (&written, &sh.crash, log.as_deref_mut()) {
            c.write_failed(l);
        }
        drop(log);
        let n = match written {
            Ok(n) => n,
            Err(e) => return self.backing_write_failed(ino.0, reserved, &e, reply, &path, t0),
        };
        sh.count(Ok(()));
        let after = || {
            if let Some(o) = &sh.observer {
                o.on_write(&path, offset, &data[..n]);
            }
            sh.row("write", &path, t0, Ok(())).map(|mut r| {
                let d = digest(offset, &data[..n], true);
                r.offset = offset;
                r.length = n as u64;
                r.block_hashes = d.hashes;
                r.zstd_in_bytes = d.zstd_in_bytes;
                r.zstd_out_bytes = d.zstd_out_bytes;
                r
            })
        };
        complete_then(sh, t0, outcome.complete_ns, after, move || reply.written(n as u32));
    }

    fn flush(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _lock_owner: fuser::LockOwner, reply: ReplyEmpty) {
        let t0 = self.sh.clock.now_ns();
        reply.ok();
        let path = self.sh.inodes().log_path(ino.0);
        self.note("flush", &path, "", t0, Ok(()));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let t0 = self.sh.clock.now_ns();
        let h = self.sh.handles.write().expect("handle table poisoned").remove(&fh.0);
        if let Some(h) = &h
            && h.passthrough
        {
            self.release_backing(h.ino);
        }
        reply.ok();
        let path = self.sh.inodes().log_path(ino.0);
        self.note("release", &path, "", t0, Ok(()));
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let sh = &self.sh;
        let t0 = sh.clock.now_ns();
        let path = sh.inodes().log_path(ino.0);
        let Some(h) = sh.handle(fh) else {
            reply.error(Errno::EBADF);
            return self.note("fsync", &path, "", t0, Err(libc::EBADF));
        };
        let outcome = sh.submit(DeviceOp::flush(), t0);
        // The writes that arrived before this fsync become durable when it
        // completes (just before its reply goes out).
        let log = sh.crash.as_ref().and_then(|c| c.existing(ino.0));
        let ticket = log.as_ref().map(|l| CrashLog::fsync_started(&l.lock().expect("crash log poisoned")));
        let result = match outcome.result {
            Err(e) => Err(e.errno()),
            Ok(()) => if datasync { h.file.sync_data() } else { h.file.sync_all() }.map_err(|e| errno::of(&e)),
        };
        sh.count(result);
        let row = sh.row("fsync", &path, t0, result);
        let sh2 = sh.clone();
        complete(sh, t0, outcome.complete_ns, row, move || match result {
            Ok(()) => {
                if let (Some(c), Some(l), Some(t)) = (&sh2.crash, &log, ticket) {
                    c.fsync_completed(&mut l.lock().expect("crash log poisoned"), t);
                }
                reply.ok()
            }
            Err(code) => reply.error(Errno::from_i32(code)),
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(path) = self.sh.inodes().path(ino.0) else { return reply.error(Errno::ENOENT) };
        let listed = match self.sh.store.list(&path) {
            Ok(l) => l,
            Err(e) => return reply.error(Errno::from_i32(errno::of(&e))),
        };
        let mut entries = Vec::with_capacity(listed.len() + 2);
        entries.push(DirEntry { ino: ino.0, kind: FileType::Directory, name: ".".into() });
        {
            let mut inodes = self.sh.inodes();
            let parent = path.rfind('/').map_or("", |i| &path[..i]);
            let parent_ino = if path.is_empty() { ROOT_INO } else { inodes.ino_for(parent) };
            entries.push(DirEntry { ino: parent_ino, kind: FileType::Directory, name: "..".into() });
            for (name, kind) in listed {
                let ino = inodes.ino_for(&join(&path, &name));
                entries.push(DirEntry { ino, kind, name });
            }
        }
        let fh = self.sh.next_fh.fetch_add(1, Ordering::Relaxed);
        self.sh.dirs.lock().expect("dir handles poisoned").insert(fh, Arc::new(entries));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let t0 = self.sh.clock.now_ns();
        let path = self.sh.inodes().log_path(ino.0);
        let Some(entries) = self.sh.dirs.lock().expect("dir handles poisoned").get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return self.note("readdir", &path, "", t0, Err(libc::EBADF));
        };
        let mut added = 0u64;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                break;
            }
            added += 1;
        }
        reply.ok();
        self.sh.count(Ok(()));
        if let Some(mut r) = self.sh.row("readdir", &path, t0, Ok(())) {
            r.offset = offset;
            r.length = added;
            r.latency_ns = self.sh.clock.now_ns().saturating_sub(t0);
            self.sh.log(r);
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.sh.dirs.lock().expect("dir handles poisoned").remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let t0 = self.sh.clock.now_ns();
        let r = self.sh.store.totals().map_err(|e| errno::of(&e));
        match r {
            Ok(mut t) => {
                if let Some(cap) = self.sh.capacity_bytes {
                    let used = self.sh.inodes().used_bytes.min(cap);
                    t.block_bytes = 4096;
                    t.blocks = cap / 4096;
                    t.blocks_free = (cap - used) / 4096;
                    t.blocks_avail = t.blocks_free;
                }
                let bs = t.block_bytes as u32;
                reply.statfs(t.blocks, t.blocks_free, t.blocks_avail, t.files, t.files_free, bs, t.name_max, bs);
            }
            Err(e) => reply.error(Errno::from_i32(e)),
        }
        self.note("statfs", "", "", t0, r.map(|_| ()));
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        if ino.0 == ROOT_INO && cmd == PID_IOCTL && out_size as usize >= 8 {
            reply.ioctl(0, &u64::from(std::process::id()).to_le_bytes());
        } else if ino.0 == ROOT_INO && cmd == CRASH_IOCTL && out_size as usize >= 32 {
            match self.crash_now() {
                Ok(c) => {
                    let mut out = Vec::with_capacity(32);
                    for v in [c.files, c.writes_lost, c.bytes_lost, c.writes_kept] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                    reply.ioctl(0, &out);
                }
                Err(code) => reply.error(Errno::from_i32(code)),
            }
        } else {
            reply.error(Errno::from_i32(libc::ENOTTY));
        }
    }
}
