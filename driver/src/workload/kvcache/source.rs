//! The engine side: the storage tier's namespace calls on the run's target,
//! the [`OpSource`] that hands the simulation's storage I/O to the engine,
//! and the trace-only driver that runs the simulation in logical time.

use std::time::Instant;

use super::sim::{Backend, Sim};
use crate::datagen::{Verifier, VerifyOutcome};
use crate::engine::{Data, Next, OpSource, Request};
use crate::kvtrace::TraceWriter;
use crate::target::{Completion, ObjectHandle, Op, Target};

/// Rows buffered before they are written to the trace file.
const TRACE_FLUSH_ROWS: usize = 4096;

/// Storage namespace operations on the run's target.
pub struct TargetBackend<'a> {
    pub target: &'a dyn Target,
    /// Where this process's entries live: `kvcache/` alone, or
    /// `kvcache/rank_R/` for MPI rank R of a larger job (each rank is its
    /// own cache, as each kv-cache.py client has its own cache directory).
    pub prefix: String,
}

impl TargetBackend<'_> {
    /// The stored name of the simulation's object `name` (`kvcache/KEY.npy`).
    fn stored(&self, name: &str) -> String {
        match name.strip_prefix(super::sim::STORAGE_PREFIX) {
            Some(rest) => format!("{}{rest}", self.prefix),
            None => name.to_string(),
        }
    }
}

/// The storage prefix of MPI rank `rank` in a job of `size` ranks.
pub fn rank_prefix(rank: usize, size: usize) -> String {
    if size > 1 {
        format!("{}rank_{rank}/", super::sim::STORAGE_PREFIX)
    } else {
        super::sim::STORAGE_PREFIX.to_string()
    }
}

impl Backend for TargetBackend<'_> {
    fn create(&mut self, name: &str, size_bytes: u64) -> Result<ObjectHandle, String> {
        self.target.create(&self.stored(name), size_bytes).map_err(|e| e.to_string())
    }

    fn delete(&mut self, name: &str) -> Result<(), String> {
        self.target.delete(&self.stored(name)).map_err(|e| e.to_string())
    }
}

/// Writes the simulation's trace rows (in timestamp order) as they come.
pub struct TraceSink {
    pub writer: Option<TraceWriter>,
    pub rows: u64,
    pub error: Option<String>,
}

impl TraceSink {
    pub fn flush(&mut self, sim: &mut Sim, force: bool) {
        if sim.trace_rows.is_empty() || (!force && sim.trace_rows.len() < TRACE_FLUSH_ROWS) {
            return;
        }
        if self.error.is_some() {
            sim.trace_rows.clear();
            return;
        }
        // Without a writer (tests) the rows stay with the simulation.
        let Some(w) = self.writer.as_mut() else { return };
        let rows = std::mem::take(&mut sim.trace_rows);
        for r in &rows {
            if let Err(e) = w.write(r) {
                self.error.get_or_insert_with(|| format!("writing the trace: {e}"));
                self.writer = None;
                return;
            }
            self.rows += 1;
        }
    }
}

/// The engine's op source for a kvcache phase.
pub struct KvSource<'s, 'a> {
    pub sim: &'s mut Sim<'a>,
    pub trace: &'s mut TraceSink,
    /// Checks the `.npy` header chunks of reads (as the engine verifies the
    /// others, by the same policy); the outcome goes to `verify`.
    pub verify_headers: Verifier,
    pub verify: VerifyOutcome,
}

impl OpSource for KvSource<'_, '_> {
    fn next(&mut self, now: Instant) -> Next {
        let n = self.sim.next(now);
        self.trace.flush(self.sim, false);
        n
    }

    fn fill(&mut self, req: &Request, dst: &mut [u8]) {
        self.sim.fill_chunk(req, dst);
    }

    fn completed(&mut self, req: &Request, c: &Completion) {
        // Only `.npy` header chunks are read with `Data::None`.
        if let (true, Ok(_), Op::Read { .. }, Data::None) = (self.verify_headers.is_on(), &c.result, req.op, req.data) {
            let v = self.sim.check_header_chunk(req, c.data(), &self.verify_headers);
            self.verify.merge(&v);
        }
        let result = match (&c.result, req.op) {
            (Ok(n), Op::Read { len, offset, .. }) if *n < len => {
                Err(format!("short read: {n} of {len} bytes at offset {offset}"))
            }
            (Ok(n), _) => Ok(*n),
            (Err(e), _) => Err(e.to_string()),
        };
        self.sim.completed(req, result, c.completed);
    }
}

/// Runs a phase without I/O in logical time: waits jump to their time at
/// once. Returns false if the stop flag ended it.
pub fn run_logical(sim: &mut Sim, trace: &mut TraceSink, mut now: Instant, stop: &dyn Fn() -> bool) -> (Instant, bool) {
    let mut steps = 0u64;
    loop {
        match sim.next(now) {
            Next::WaitUntil(t) => now = now.max(t),
            Next::Op(_) => unreachable!("trace-only mode issues no storage I/O"),
            Next::Wait | Next::Done => break,
        }
        trace.flush(sim, false);
        steps += 1;
        if steps.is_multiple_of(4096) && stop() {
            return (now, false);
        }
    }
    trace.flush(sim, true);
    (now, true)
}
