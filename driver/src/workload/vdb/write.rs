//! Writes the in-memory index file through the target with the engine
//! (`Data::Source`: the source copies its own bytes into each buffer),
//! then commits it.

use std::time::Instant;

use crate::buf::BufPool;
use crate::engine::{self, Data, Next, OpSource, Request, WorkerReport};
use crate::error::Error;
use crate::recorder::{Recorder, SeriesKey};
use crate::target::{ObjectHandle, Op, OpKind};

use super::super::RunEnv;

const CHUNK_BYTES: usize = 1 << 20;
const DEPTH: usize = 4;

struct WriteSource<'a> {
    obj: ObjectHandle,
    bytes: &'a [u8],
    next: usize,
    committed: bool,
    in_flight: usize,
}

fn key(op: OpKind) -> SeriesKey {
    SeriesKey { phase: "index-write", op, tier: "storage" }
}

impl OpSource for WriteSource<'_> {
    fn next(&mut self, _now: Instant) -> Next {
        if self.next < self.bytes.len() {
            let len = CHUNK_BYTES.min(self.bytes.len() - self.next);
            let offset = self.next as u64;
            self.next += len;
            self.in_flight += 1;
            return Next::Op(Request {
                op: Op::Write { obj: self.obj, offset, len: len as u32 },
                data: Data::Source,
                key: key(OpKind::Write),
                exact: false,
            });
        }
        if self.in_flight > 0 {
            return Next::Wait;
        }
        if !self.committed {
            self.committed = true;
            return Next::Op(Request {
                op: Op::Commit { obj: self.obj, size: self.bytes.len() as u64 },
                data: Data::None,
                key: key(OpKind::Commit),
                exact: false,
            });
        }
        Next::Done
    }

    fn completed(&mut self, req: &Request, _c: &crate::target::Completion) {
        if matches!(req.op, Op::Write { .. }) {
            self.in_flight -= 1;
        }
    }

    fn fill(&mut self, req: &Request, dst: &mut [u8]) {
        if let Op::Write { offset, len, .. } = req.op {
            let at = offset as usize;
            dst.copy_from_slice(&self.bytes[at..at + len as usize]);
        }
    }
}

/// Creates `name`, writes `bytes` to it and commits; the handle stays
/// valid for the search.
pub fn write_index(env: &RunEnv, name: &str, bytes: &[u8], rec: &mut Recorder) -> Result<ObjectHandle, Error> {
    let obj =
        env.target.create(name, bytes.len() as u64).map_err(|e| Error::failed(format!("cannot create {name}: {e}")))?;
    let align = env.target.info().caps.align;
    let mut pool = BufPool::new(DEPTH, CHUNK_BYTES, align);
    let mut queue =
        env.target.queue(DEPTH, &mut pool).map_err(|e| Error::failed(format!("cannot set up a queue: {e}")))?;
    let mut src = WriteSource { obj, bytes, next: 0, committed: false, in_flight: 0 };
    let mut rep = WorkerReport::default();
    engine::run_worker(
        &mut src,
        queue.as_mut(),
        &mut pool,
        &env.control(None, crate::datagen::Verifier::OFF),
        &mut rep,
    );
    drop(queue);
    rec.merge(&rep.recorder);
    if rep.errors.count > 0 || !src.committed || src.in_flight > 0 {
        return Err(Error::failed(format!(
            "writing the index {name} ({} bytes) failed: {}",
            bytes.len(),
            rep.errors.first.unwrap_or_else(|| "interrupted".into())
        )));
    }
    Ok(obj)
}
