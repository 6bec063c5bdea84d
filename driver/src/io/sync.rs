//! The fallback queue: pread/pwrite/fdatasync, one op at a time.
//!
//! Used only when io_uring cannot be set up (old kernel, seccomp policy) or
//! when the user asks for `io.engine: sync`. Ops queue at `submit` and run at
//! `reap`; latency is the syscall's own time. The queue depth a workload
//! asks for is still honoured as a bound on queued ops, but the device sees
//! one op at a time per worker, and the results say `engine: sync`.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Resolved, Resolver, plan_span, requested_bytes};
use crate::buf::AlignedBuf;
use crate::target::{Completion, IoMode, Op, Queue, QueueFull, TargetError};

struct Pending {
    tag: u64,
    op: Op,
    buf: Option<AlignedBuf>,
}

pub struct SyncQueue {
    resolver: Arc<dyn Resolver>,
    pending: std::collections::VecDeque<Pending>,
    depth: usize,
    align: u64,
    direct: bool,
    note: Option<String>,
}

impl SyncQueue {
    pub fn new(
        depth: usize,
        resolver: Arc<dyn Resolver>,
        align: usize,
        direct: bool,
        note: Option<String>,
    ) -> SyncQueue {
        SyncQueue { resolver, pending: Default::default(), depth, align: align as u64, direct, note }
    }

    fn run_one(&self, p: Pending) -> Completion {
        let Pending { tag, op, mut buf } = p;
        let start = Instant::now();
        let done = |result, buf, data_start| Completion {
            tag,
            op,
            result,
            buf,
            data_start,
            submitted: start,
            completed: Instant::now(),
        };
        let Some(r) = self.resolver.resolve(op.obj()) else {
            let e = TargetError::namespace(format!("unknown object handle {}", op.obj().0));
            return done(Err(e), buf, 0);
        };
        match op {
            Op::Commit { obj, size } => {
                let res = self
                    .resolver
                    .set_logical_size(obj, size)
                    .and_then(|()| r.file.sync_data().map_err(|e| io_err("fsync", &r, size, &e)));
                done(res.map(|()| 0), buf, 0)
            }
            Op::Read { offset, .. } | Op::Write { offset, .. } => {
                let cap = buf.as_ref().map_or(0, AlignedBuf::capacity);
                let span = match plan_span(&op, &r, self.align, cap) {
                    Ok(s) => s,
                    Err(e) => return done(Err(e), buf, 0),
                };
                let b = buf.as_mut().expect("data op carries a buffer");
                let res = if matches!(op, Op::Read { .. }) {
                    read_full(&r, &mut b.as_mut_slice()[..span.len], span.fd_offset)
                        .map(|n| requested_bytes(&span, n))
                        .map_err(|e| io_err("read", &r, offset, &e))
                } else {
                    r.file
                        .write_all_at(&b.as_slice()[..span.len], span.fd_offset)
                        .map(|()| span.requested)
                        .map_err(|e| io_err("write", &r, offset, &e))
                };
                done(res, buf, span.data_start)
            }
        }
    }
}

/// pread until the span is full or EOF.
fn read_full(r: &Resolved, dst: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < dst.len() {
        match r.file.read_at(&mut dst[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn io_err(what: &'static str, r: &Resolved, offset: u64, e: &std::io::Error) -> TargetError {
    TargetError::io(what, r.name.to_string(), offset, e.raw_os_error().unwrap_or(libc::EIO))
}

impl Queue for SyncQueue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
        if self.pending.len() >= self.depth {
            return Err(QueueFull { op, buf });
        }
        self.pending.push_back(Pending { tag, op, buf });
        Ok(())
    }

    fn reap(
        &mut self,
        min_complete: usize,
        _timeout: Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, TargetError> {
        // Run at least one op (so callers make progress) and at most the
        // ones asked for: running the whole queue would inflate the latency
        // of ops the caller has not yet been told about.
        let n = min_complete.max(1).min(self.pending.len());
        for _ in 0..n {
            let p = self.pending.pop_front().expect("pending op");
            out.push(self.run_one(p));
        }
        Ok(n)
    }

    fn io_mode(&self) -> IoMode {
        IoMode { direct: self.direct, engine: "sync".into(), registered_buffers: false, note: self.note.clone() }
    }
}
