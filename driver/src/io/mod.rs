//! Queues that move bytes between aligned buffers and file descriptors.
//!
//! Both the `file://` and the `dev://` targets end up as "an fd plus a byte
//! offset" per object; they differ only in how a handle maps to that pair and
//! in what a durability point means. [`Resolver`] captures that difference,
//! and the two queues here ([`uring::UringQueue`], the data path, and
//! [`sync::SyncQueue`], the fallback when io_uring cannot be set up) are
//! shared by both targets.

pub mod align;
pub mod sync;
pub mod uring;

use std::fs::File;
use std::sync::Arc;

use crate::buf::{align_down, align_up};
use crate::target::{ObjectHandle, Op, TargetError};

/// Where an object's bytes live.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub file: Arc<File>,
    /// Byte offset of the object's first byte in `file` (0 for files,
    /// the extent start for devices).
    pub base: u64,
    /// Bytes reserved for the object, if bounded (device extents).
    pub limit: Option<u64>,
    /// For error messages.
    pub name: Arc<str>,
}

/// Maps handles to fds; implemented by each fd-backed target.
pub trait Resolver: Send + Sync {
    fn resolve(&self, obj: ObjectHandle) -> Option<Resolved>;
    /// Called at submission of a `Commit`, before the fsync is queued: fix
    /// the logical size (files truncate; devices record it).
    fn set_logical_size(&self, obj: ObjectHandle, size: u64) -> Result<(), TargetError>;
}

/// A read or write turned into the aligned span the kernel will see.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    /// Absolute offset in the fd.
    pub fd_offset: u64,
    /// Bytes to transfer (aligned).
    pub len: usize,
    /// Where the caller's requested bytes start inside the buffer.
    pub data_start: usize,
    /// Bytes the caller asked for.
    pub requested: u32,
}

/// Computes the aligned span of a data op, or an error completion reason.
pub(crate) fn plan_span(op: &Op, r: &Resolved, align: u64, buf_capacity: usize) -> Result<Span, TargetError> {
    plan_extent_span(op, r.base, r.limit, &r.name, align, buf_capacity)
}

/// [`plan_span`] for an object at byte `base` of its space with `limit`
/// bytes reserved (if bounded); `fd_offset` is then the offset in the space.
pub(crate) fn plan_extent_span(
    op: &Op,
    base: u64,
    limit: Option<u64>,
    name: &str,
    align: u64,
    buf_capacity: usize,
) -> Result<Span, TargetError> {
    let (offset, len, what) = match *op {
        Op::Read { offset, len, .. } => (offset, len, "read"),
        Op::Write { offset, len, .. } => (offset, len, "write"),
        Op::Commit { .. } => unreachable!("commit has no span"),
    };
    let start = align_down(offset, align);
    let end = align_up(offset + u64::from(len), align);
    let span_len = (end - start) as usize;
    if matches!(op, Op::Write { .. }) && start != offset {
        return Err(TargetError::namespace(format!(
            "write to {name} at offset {offset} is not aligned to {align} bytes"
        )));
    }
    if span_len > buf_capacity {
        return Err(TargetError::namespace(format!(
            "{what} of {len} bytes at {offset} needs a {span_len}-byte aligned buffer; got {buf_capacity}"
        )));
    }
    if let Some(limit) = limit
        && end > limit
    {
        return Err(TargetError::io(what, name.to_string(), offset, libc::EFBIG));
    }
    Ok(Span { fd_offset: base + start, len: span_len, data_start: (offset - start) as usize, requested: len })
}

/// Bytes of the caller's request that a transfer of `n` span bytes covered.
pub(crate) fn requested_bytes(span: &Span, n: usize) -> u32 {
    let after_start = n.saturating_sub(span.data_start);
    after_start.min(span.requested as usize) as u32
}

/// Builds a worker's queue: io_uring when asked for and available, else the
/// synchronous fallback with a note saying why.
pub fn make_queue(
    depth: usize,
    resolver: Arc<dyn Resolver>,
    align: usize,
    opts: crate::target::OpenOptions,
    pool: &mut crate::buf::BufPool,
) -> Box<dyn crate::target::Queue> {
    if !opts.use_uring {
        let note = Some("io.engine=sync: synchronous pread/pwrite, one op at a time per job".to_string());
        return Box::new(sync::SyncQueue::new(depth, resolver, align, opts.direct, note));
    }
    match uring::UringQueue::new(depth, resolver.clone(), align, opts.direct, pool) {
        Ok(q) => Box::new(q),
        Err(e) => {
            let note = Some(format!(
                "io_uring setup failed ({e}); FELL BACK to synchronous pread/pwrite, one op at a time per job"
            ));
            Box::new(sync::SyncQueue::new(depth, resolver, align, opts.direct, note))
        }
    }
}
