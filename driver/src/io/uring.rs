//! The data path: one io_uring per worker thread.
//!
//! Each worker owns its ring (no cross-thread hop per I/O) sized to its queue
//! depth. Submissions are pushed to the SQ without a syscall and flushed in
//! one `io_uring_enter` that also waits for completions, so at queue depth
//! 32 the syscall cost is shared by many ops. The worker's buffer pool is
//! registered with the ring (READ_FIXED/WRITE_FIXED) when it fits in
//! RLIMIT_MEMLOCK; otherwise plain READ/WRITE are used and the result says
//! so. IOPOLL and SQPOLL are not used: IOPOLL needs polled NVMe queues (and
//! fails on virtual disks), SQPOLL spends a whole core spinning.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};

use super::{Resolved, Resolver, Span, plan_span, requested_bytes};
use crate::buf::{AlignedBuf, BufPool};
use crate::target::{Completion, IoMode, ObjectHandle, Op, Queue, QueueFull, TargetError};

struct InFlight {
    tag: u64,
    op: Op,
    buf: Option<AlignedBuf>,
    span: Option<Span>,
    submitted: Instant,
}

/// A completion decided at submission (bad request): delivered at next reap.
struct Immediate {
    tag: u64,
    op: Op,
    buf: Option<AlignedBuf>,
    err: TargetError,
    at: Instant,
}

pub struct UringQueue {
    ring: IoUring,
    resolver: Arc<dyn Resolver>,
    cache: Vec<Option<Resolved>>,
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<u32>,
    immediate: Vec<Immediate>,
    depth: usize,
    align: u64,
    direct: bool,
    registered: bool,
    note: Option<String>,
    ext_arg: bool,
    /// Reused for draining the CQ (no allocation per reap).
    cq_buf: Vec<(u64, i32)>,
}

impl UringQueue {
    /// Sets up a ring of `depth` entries and tries to register `pool`.
    pub fn new(
        depth: usize,
        resolver: Arc<dyn Resolver>,
        align: usize,
        direct: bool,
        pool: &mut BufPool,
    ) -> std::io::Result<UringQueue> {
        let entries = depth.next_power_of_two().max(8) as u32;
        let ring = build_ring(entries)?;
        let iovecs = pool.iovecs();
        let total: usize = iovecs.iter().map(|v| v.iov_len).sum();
        // SAFETY: every iovec points into an AlignedBuf owned by `pool`; the
        // pool's buffers live as long as the worker, which outlives this ring
        // (the worker drops the queue before the pool), and buffers are never
        // reallocated, only moved as owning handles.
        let reg = unsafe { ring.submitter().register_buffers(&iovecs) };
        let (registered, note) = match reg {
            Ok(()) => (true, None),
            Err(e) => (
                false,
                Some(format!(
                    "buffers not registered with io_uring ({} in {} buffers; {e}; RLIMIT_MEMLOCK bounds this); plain READ/WRITE used",
                    crate::buf::format_kib(total),
                    iovecs.len()
                )),
            ),
        };
        let ext_arg = ring.params().is_feature_ext_arg();
        Ok(UringQueue {
            ring,
            resolver,
            cache: Vec::new(),
            slots: (0..depth).map(|_| None).collect(),
            free_slots: (0..depth as u32).rev().collect(),
            immediate: Vec::new(),
            depth,
            align: align as u64,
            direct,
            registered,
            note,
            ext_arg,
            cq_buf: Vec::with_capacity(depth * 2),
        })
    }

    /// Resolves `obj` once per queue; later ops borrow the cached entry, so
    /// the hot path touches no lock and no reference count. Handles are
    /// never reused by targets, so a cached entry cannot go stale.
    fn cache(&mut self, obj: ObjectHandle) -> bool {
        let i = obj.0 as usize;
        if matches!(self.cache.get(i), Some(Some(_))) {
            return true;
        }
        let Some(r) = self.resolver.resolve(obj) else { return false };
        if self.cache.len() <= i {
            self.cache.resize(i + 1, None);
        }
        self.cache[i] = Some(r);
        true
    }

    fn cached(&self, obj: ObjectHandle) -> &Resolved {
        self.cache[obj.0 as usize].as_ref().expect("resolved before use")
    }

    fn name_of(&self, obj: ObjectHandle) -> String {
        self.cache
            .get(obj.0 as usize)
            .and_then(Option::as_ref)
            .map_or_else(|| format!("#{}", obj.0), |r| r.name.to_string())
    }

    fn reject(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>, err: TargetError) {
        self.immediate.push(Immediate { tag, op, buf, err, at: Instant::now() });
    }

    fn build_entry(
        &self,
        op: &Op,
        r: &Resolved,
        span: Option<&Span>,
        buf: Option<&mut AlignedBuf>,
        slot: u32,
    ) -> io_uring::squeue::Entry {
        let fd = types::Fd(r.file.as_raw_fd());
        let entry = match (op, span, buf) {
            (Op::Read { .. }, Some(s), Some(b)) => {
                if let (true, Some(idx)) = (self.registered, b.slot()) {
                    opcode::ReadFixed::new(fd, b.as_mut_ptr(), s.len as u32, idx as u16).offset(s.fd_offset).build()
                } else {
                    opcode::Read::new(fd, b.as_mut_ptr(), s.len as u32).offset(s.fd_offset).build()
                }
            }
            (Op::Write { .. }, Some(s), Some(b)) => {
                if let (true, Some(idx)) = (self.registered, b.slot()) {
                    opcode::WriteFixed::new(fd, b.as_ptr(), s.len as u32, idx as u16).offset(s.fd_offset).build()
                } else {
                    opcode::Write::new(fd, b.as_ptr(), s.len as u32).offset(s.fd_offset).build()
                }
            }
            _ => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
        };
        entry.user_data(u64::from(slot))
    }

    fn collect(&mut self, out: &mut Vec<Completion>) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for im in self.immediate.drain(..) {
            out.push(Completion {
                tag: im.tag,
                op: im.op,
                result: Err(im.err),
                buf: im.buf,
                data_start: 0,
                submitted: im.at,
                completed: im.at,
            });
            n += 1;
        }
        let mut cq = std::mem::take(&mut self.cq_buf);
        cq.clear();
        cq.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(slot, res) in &cq {
            let Some(f) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            self.free_slots.push(slot as u32);
            let result = if res < 0 {
                let (what, offset) = match f.op {
                    Op::Read { offset, .. } => ("read", offset),
                    Op::Write { offset, .. } => ("write", offset),
                    Op::Commit { size, .. } => ("fsync", size),
                };
                Err(TargetError::io(what, self.name_of(f.op.obj()), offset, -res))
            } else {
                match (&f.op, &f.span) {
                    (Op::Write { len, .. }, Some(s)) if (res as usize) < s.len.min(*len as usize) => {
                        Err(short_write(&self.name_of(f.op.obj()), s, res))
                    }
                    (Op::Write { len, .. }, _) => Ok(*len),
                    (Op::Read { .. }, Some(s)) => Ok(requested_bytes(s, res as usize)),
                    _ => Ok(0),
                }
            };
            out.push(Completion {
                tag: f.tag,
                op: f.op,
                result,
                buf: f.buf,
                data_start: f.span.map_or(0, |s| s.data_start),
                submitted: f.submitted,
                completed: now,
            });
            n += 1;
        }
        self.cq_buf = cq;
        n
    }
}

/// Creates the ring with deferred task running when the kernel has it
/// (6.1+): completions are then processed when this thread enters the
/// kernel to wait, instead of io-wq workers interrupting it with an IPI per
/// completion. On a tmpfs that interrupt cost tripled the CPU per op.
/// `SINGLE_ISSUER` is implied: each ring is used only by the worker thread
/// that created it.
fn build_ring(entries: u32) -> std::io::Result<IoUring> {
    let deferred =
        IoUring::builder().setup_cqsize(entries * 2).setup_single_issuer().setup_defer_taskrun().build(entries);
    match deferred {
        Ok(r) => Ok(r),
        Err(_) => match IoUring::builder().setup_cqsize(entries * 2).setup_coop_taskrun().build(entries) {
            Ok(r) => Ok(r),
            Err(_) => IoUring::builder().setup_cqsize(entries * 2).build(entries),
        },
    }
}

fn short_write(name: &str, s: &Span, res: i32) -> TargetError {
    TargetError::namespace(format!(
        "short write to {name} at offset {}: {res} of {} bytes (device full?)",
        s.fd_offset, s.len
    ))
}

impl Drop for UringQueue {
    fn drop(&mut self) {
        // Ops still in flight (a stalled device) may complete after the ring
        // is gone: the kernel could still write into their buffers. Leak
        // those buffers rather than free memory the device may write to.
        for f in self.slots.iter_mut().filter_map(Option::take) {
            if let Some(b) = f.buf {
                std::mem::forget(b);
            }
        }
    }
}

impl Queue for UringQueue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.depth - self.free_slots.len() + self.immediate.len()
    }

    fn submit(&mut self, tag: u64, op: Op, mut buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
        let Some(slot) = self.free_slots.last().copied() else {
            return Err(QueueFull { op, buf });
        };
        if !self.cache(op.obj()) {
            self.reject(tag, op, buf, TargetError::namespace(format!("unknown object handle {}", op.obj().0)));
            return Ok(());
        }
        let span = match op {
            Op::Commit { obj, size } => {
                if let Err(e) = self.resolver.set_logical_size(obj, size) {
                    self.reject(tag, op, buf, e);
                    return Ok(());
                }
                None
            }
            _ => {
                let cap = buf.as_ref().map_or(0, AlignedBuf::capacity);
                match plan_span(&op, self.cached(op.obj()), self.align, cap) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.reject(tag, op, buf, e);
                        return Ok(());
                    }
                }
            }
        };
        let entry = self.build_entry(&op, self.cached(op.obj()), span.as_ref(), buf.as_mut(), slot);
        // SAFETY: the entry's buffer pointer stays valid until completion:
        // the AlignedBuf is moved into `slots[slot]` below and only handed
        // back after its CQE is reaped; the fd is kept open by the Resolved
        // Arc<File> in `cache`.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            return Err(QueueFull { op, buf });
        }
        self.free_slots.pop();
        self.slots[slot as usize] = Some(InFlight { tag, op, buf, span, submitted: Instant::now() });
        Ok(())
    }

    fn reap(
        &mut self,
        min_complete: usize,
        timeout: Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, TargetError> {
        let ready = self.immediate.len() + self.ring.completion().len();
        let want = min_complete.saturating_sub(ready).min(self.depth - self.free_slots.len());
        let res = if want == 0 {
            self.ring.submit()
        } else if self.ext_arg {
            let ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(want, &args)
        } else {
            self.ring.submit_and_wait(want)
        };
        match res {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(TargetError::namespace(format!("io_uring_enter failed: {e}"))),
        }
        Ok(self.collect(out))
    }

    fn io_mode(&self) -> IoMode {
        IoMode {
            direct: self.direct,
            engine: "io_uring".into(),
            registered_buffers: self.registered,
            note: self.note.clone(),
        }
    }
}
