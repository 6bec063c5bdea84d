//! Targets: where bytes go.
//!
//! Every workload talks to storage through [`Target`] (object namespace:
//! create, open, delete, list) and [`Queue`] (a per-worker submission /
//! completion queue of reads, writes and durability points). The shape is a
//! queue rather than blocking calls because a storage benchmark cares most
//! about queue depth and about submit and complete timestamps; it maps one to
//! one onto io_uring, and an emulated or S3 target can implement it without
//! any workload noticing.
//!
//! Objects are addressed by an [`ObjectHandle`] handed out by the target plus
//! a byte range; how a handle maps to a file, an extent or an S3 key is the
//! target's business.
//!
//! Write rules (so that S3-like targets can implement them later): an
//! object's bytes are written at offsets that are multiples of
//! [`Capabilities::align`]; only the final chunk may have a length that is not
//! a multiple of it (the target pads the I/O inside the buffer, which always
//! has aligned capacity). [`Op::Commit`] is the durability point and fixes the
//! object's logical size.

pub mod dev;
pub mod emu;
pub mod extents;
pub mod file;
pub mod nbd;
pub mod null;
pub mod s3;
pub mod table;
pub mod uri;
pub mod workdir;

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::buf::AlignedBuf;

/// How a target should do I/O, from the run's `io.*` config.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// O_DIRECT (bypass the page cache).
    pub direct: bool,
    /// io_uring (true) or the synchronous pread/pwrite queue (false).
    pub use_uring: bool,
}

/// A target-local handle for an object (an index into the target's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectHandle(pub u32);

/// What the target can do; workloads size their I/O from this.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Capabilities {
    /// Required alignment of buffer addresses, offsets and lengths (bytes).
    pub align: usize,
    /// Writes may land at any aligned offset (files, devices); false for
    /// stores that need sequential chunks (S3 multipart).
    pub ranged_writes: bool,
    /// The target stores bytes (reads return what was written).
    pub stores_data: bool,
    /// Largest object the target accepts, if bounded (a device's size).
    pub max_object_bytes: Option<u64>,
}

/// The I/O mode actually in use; recorded in every result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoMode {
    /// O_DIRECT (page cache bypassed) in use.
    pub direct: bool,
    /// "io_uring", "sync" (pread/pwrite fallback) or "null".
    pub engine: String,
    /// Registered (fixed) buffers in use with io_uring.
    #[serde(default)]
    pub registered_buffers: bool,
    /// Why the mode differs from what was asked for, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetInfo {
    /// "file", "dev" or "null".
    pub kind: &'static str,
    /// Human-readable location (a path; never credentials).
    pub location: String,
    pub caps: Capabilities,
}

/// One operation on an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes at `offset` into the buffer.
    Read { obj: ObjectHandle, offset: u64, len: u32 },
    /// Write the first `len` bytes of the buffer at `offset`.
    Write { obj: ObjectHandle, offset: u64, len: u32 },
    /// Durability point for the object; sets its logical size to `size`
    /// (files are truncated to it after aligned writes). Carries no buffer.
    Commit { obj: ObjectHandle, size: u64 },
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Read { .. } => OpKind::Read,
            Op::Write { .. } => OpKind::Write,
            Op::Commit { .. } => OpKind::Commit,
        }
    }

    pub fn obj(&self) -> ObjectHandle {
        match *self {
            Op::Read { obj, .. } | Op::Write { obj, .. } | Op::Commit { obj, .. } => obj,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Read,
    Write,
    Commit,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Commit => "commit",
        }
    }
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag from `submit`.
    pub tag: u64,
    pub op: Op,
    /// Bytes transferred (for reads: valid bytes of the requested range, which
    /// may be fewer than asked at the end of an object), or the error.
    pub result: Result<u32, TargetError>,
    /// The buffer handed to `submit`, always returned.
    pub buf: Option<AlignedBuf>,
    /// For reads: where the requested bytes start in `buf` (the target reads
    /// an aligned span around an unaligned request).
    pub data_start: usize,
    pub submitted: Instant,
    pub completed: Instant,
}

impl Completion {
    /// The bytes a successful read returned.
    pub fn data(&self) -> &[u8] {
        match (&self.result, &self.buf) {
            (Ok(n), Some(b)) => &b.as_slice()[self.data_range(*n)],
            _ => &[],
        }
    }

    fn data_range(&self, n: u32) -> Range<usize> {
        self.data_start..self.data_start + n as usize
    }

    pub fn latency(&self) -> Duration {
        self.completed.saturating_duration_since(self.submitted)
    }
}

/// A refused submission: the op and its buffer come back.
#[derive(Debug)]
pub struct QueueFull {
    pub op: Op,
    pub buf: Option<AlignedBuf>,
}

/// A per-worker submission/completion queue. Not shared between threads.
pub trait Queue: Send {
    /// Maximum operations in flight.
    fn depth(&self) -> usize;
    /// Operations submitted and not yet reaped.
    fn in_flight(&self) -> usize;
    /// Queues an operation. Never blocks; refuses when `depth` are in flight.
    /// Buffers must come from this worker's pool with aligned capacity that
    /// covers the aligned span of the operation.
    fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull>;
    /// Queues a write whose payload `fill(dst, offset)` produces: it writes
    /// the object's bytes at `offset` into `dst`. The default fills `buf`
    /// and submits it; a target that buffers writes anyway (S3's part
    /// buffers) has the payload generated straight into its own buffer,
    /// without a copy.
    fn submit_fill(
        &mut self,
        tag: u64,
        op: Op,
        mut buf: Option<AlignedBuf>,
        fill: &mut dyn FnMut(&mut [u8], u64),
    ) -> Result<(), QueueFull> {
        if let (Op::Write { offset, len, .. }, Some(b)) = (op, buf.as_mut()) {
            fill(&mut b.as_mut_slice()[..len as usize], offset);
        }
        self.submit(tag, op, buf)
    }
    /// Flushes queued submissions to the device, waits until at least
    /// `min_complete` operations have completed or `timeout` passed, and
    /// appends every available completion to `out`. Returns how many were
    /// appended. An `Err` means the queue itself failed (not one op).
    fn reap(&mut self, min_complete: usize, timeout: Duration, out: &mut Vec<Completion>)
    -> Result<usize, TargetError>;
    /// The I/O mode this queue really uses.
    fn io_mode(&self) -> IoMode;
}

/// Storage with object semantics.
pub trait Target: Send + Sync {
    fn info(&self) -> &TargetInfo;
    /// Creates (or re-creates) an object for writing; any previous content
    /// of an object of this name that the target created is discarded.
    /// `size_hint` is the expected logical size (extent-based targets
    /// reserve it; others ignore it).
    fn create(&self, name: &str, size_hint: u64) -> Result<ObjectHandle, TargetError>;
    /// Opens an existing object: its handle and current logical size.
    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError>;
    /// Removes an object the target created.
    fn delete(&self, name: &str) -> Result<(), TargetError>;
    /// Removes several objects; object stores batch the requests.
    fn delete_many(&self, names: &[String]) -> Result<(), TargetError> {
        names.iter().try_for_each(|n| self.delete(n))
    }
    /// Names and sizes of objects whose name starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError>;
    /// Opens an object that [`Target::list`] just reported with `size`
    /// bytes. Object stores take the listed size instead of asking again
    /// (S3: no HEAD per object); others open it as [`Target::open`] does.
    fn open_listed(&self, name: &str, size: u64) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        let _ = size;
        self.open(name)
    }
    /// A new queue for one worker thread.
    fn queue(&self, depth: usize, pool: &mut crate::buf::BufPool) -> Result<Box<dyn Queue>, TargetError>;
    /// The clock the run must use with this target, if the target brings its
    /// own (a simulated device on a virtual clock); `None`: the host's.
    fn clock(&self) -> Option<crate::clock::Clock> {
        None
    }
    /// True if the target keeps any bytes written; false for a target that
    /// keeps only mlpdrive's generated 4 KiB blocks (`emu://…?store=none`),
    /// which refuses other bytes such as a file-format header.
    fn keeps_any_bytes(&self) -> bool {
        true
    }
    /// Called once when the workload is done, before results are written:
    /// the target releases what it still holds (S3 aborts unfinished
    /// multipart uploads) and returns notes for the results.
    fn finish(&self) -> Vec<String> {
        Vec::new()
    }
    /// Target-specific counters for results.json (`target.s3` for S3).
    fn record(&self) -> Option<serde_json::Value> {
        None
    }
}

/// An I/O or namespace error, with enough context to act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    #[error("{op} {object} at offset {offset}: {errno}{cause}")]
    Io { op: &'static str, object: String, offset: u64, errno: IoErrorKind, cause: Cause },
    #[error("{0}")]
    Namespace(String),
    #[error("operation stalled: no completion for {secs:.1} s ({in_flight} in flight)")]
    Stalled { secs: f64, in_flight: usize },
}

/// An errno with its text, cloneable (std::io::Error is not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoErrorKind {
    pub errno: i32,
}

impl std::fmt::Display for IoErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))
    }
}

/// What the target knows about why an I/O error happened (empty if
/// nothing): shown after the errno, as "; CAUSE".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause(pub Option<String>);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "; {c}"),
            None => Ok(()),
        }
    }
}

impl TargetError {
    /// The errno of an I/O error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            TargetError::Io { errno, .. } => Some(errno.errno),
            _ => None,
        }
    }

    /// Attaches what the target knows about the cause of an I/O error.
    pub fn with_cause(mut self, text: impl Into<String>) -> TargetError {
        if let TargetError::Io { cause, .. } = &mut self {
            cause.0 = Some(text.into());
        }
        self
    }

    pub fn namespace(msg: impl Into<String>) -> TargetError {
        TargetError::Namespace(msg.into())
    }

    pub fn io(op: &'static str, object: impl Into<String>, offset: u64, errno: i32) -> TargetError {
        TargetError::Io { op, object: object.into(), offset, errno: IoErrorKind { errno }, cause: Cause(None) }
    }
}
