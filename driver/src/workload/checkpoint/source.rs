//! One rank's op stream for one checkpoint: its files in order, each
//! streamed in `transfer_size` chunks at the rank's queue depth.
//!
//! Saving: chunks are written with generated data (the engine fills each
//! buffer just before its write and takes it back only when the write has
//! completed, so a buffer is never refilled while the kernel still reads
//! it); when every chunk of a file has completed, the file's commit
//! (truncate to its size + fdatasync) is issued, while the next file's
//! chunks keep the queue full. Loading: chunks are read and verified
//! against the generator.

use std::time::Instant;

use crate::datagen::Expect;
use crate::engine::{Data, Next, OpSource, Request};
use crate::recorder::SeriesKey;
use crate::target::{Completion, ObjectHandle, Op, OpKind};

const TIER: &str = "storage";

/// Save or load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Save,
    Load,
}

impl Direction {
    /// Phase name of the latency series.
    pub fn phase(self) -> &'static str {
        match self {
            Direction::Save => "save",
            Direction::Load => "load",
        }
    }
}

/// One file of the rank's checkpoint, opened or created.
#[derive(Debug, Clone, Copy)]
pub struct FileJob {
    pub handle: ObjectHandle,
    /// Data generator object key (from the file's full name).
    pub key: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct FileState {
    /// Bytes issued so far.
    issued: u64,
    /// Chunks in flight.
    in_flight: u32,
    committed: bool,
}

pub struct RankSource {
    dir: Direction,
    files: Vec<FileJob>,
    state: Vec<FileState>,
    /// File whose chunks are being issued.
    current: usize,
    chunk: u64,
    seed: u64,
    /// Generation of the data (the checkpoint's step number), so a load
    /// checks it reads the checkpoint it asked for.
    generation: u64,
    in_flight: usize,
}

impl RankSource {
    pub fn new(dir: Direction, files: Vec<FileJob>, chunk: u64, seed: u64, generation: u64) -> RankSource {
        let state = vec![FileState::default(); files.len()];
        RankSource { dir, files, state, current: 0, chunk, seed, generation, in_flight: 0 }
    }

    fn key(&self, op: OpKind) -> SeriesKey {
        SeriesKey { phase: self.dir.phase(), op, tier: TIER }
    }

    /// A saved file whose chunks have all completed and that is not yet
    /// committed.
    fn ready_to_commit(&self) -> Option<usize> {
        (0..self.files.len()).find(|&i| {
            let s = &self.state[i];
            !s.committed && s.in_flight == 0 && s.issued == self.files[i].bytes && i < self.current
        })
    }

    /// True when every op was issued (commits included for saves) and has
    /// completed: the rank's part of the checkpoint is done.
    pub fn finished(&self) -> bool {
        self.in_flight == 0
            && self
                .state
                .iter()
                .zip(&self.files)
                .all(|(s, f)| s.issued == f.bytes && s.in_flight == 0 && (self.dir == Direction::Load || s.committed))
    }
}

impl OpSource for RankSource {
    fn next(&mut self, _now: Instant) -> Next {
        // Move past files with nothing left to issue (a file of 0 bytes is
        // only committed).
        while self.current < self.files.len() && self.state[self.current].issued == self.files[self.current].bytes {
            self.current += 1;
        }
        if self.dir == Direction::Save
            && let Some(i) = self.ready_to_commit()
        {
            self.state[i].committed = true;
            self.in_flight += 1;
            let f = self.files[i];
            return Next::Op(Request {
                op: Op::Commit { obj: f.handle, size: f.bytes },
                data: Data::None,
                key: self.key(OpKind::Commit),
                exact: false,
            });
        }
        if self.current == self.files.len() {
            return if self.in_flight > 0 { Next::Wait } else { Next::Done };
        }
        let i = self.current;
        let f = self.files[i];
        let offset = self.state[i].issued;
        let len = self.chunk.min(f.bytes - offset);
        self.state[i].issued += len;
        self.state[i].in_flight += 1;
        self.in_flight += 1;
        let (op, data, kind) = match self.dir {
            Direction::Save => (
                Op::Write { obj: f.handle, offset, len: len as u32 },
                Data::Fill { object: f.key, seed: self.seed, generation: self.generation },
                OpKind::Write,
            ),
            Direction::Load => (
                Op::Read { obj: f.handle, offset, len: len as u32 },
                Data::Verify(Expect { seed: self.seed, object: f.key, generation: Some(self.generation) }),
                OpKind::Read,
            ),
        };
        Next::Op(Request { op, data, key: self.key(kind), exact: true })
    }

    fn completed(&mut self, req: &Request, _c: &Completion) {
        self.in_flight -= 1;
        if matches!(req.op, Op::Commit { .. }) {
            return;
        }
        let obj = req.op.obj();
        if let Some(i) = self.files.iter().position(|f| f.handle == obj) {
            self.state[i].in_flight -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(req: &Request) -> Completion {
        let now = Instant::now();
        Completion { tag: 0, op: req.op, result: Ok(0), buf: None, data_start: 0, submitted: now, completed: now }
    }

    fn op(n: Next) -> Request {
        match n {
            Next::Op(r) => r,
            other => panic!("expected an op, got {other:?}"),
        }
    }

    /// A file is committed only after all its writes completed; the next
    /// file's writes go on meanwhile; a 0-byte file is only committed.
    #[test]
    fn saves_commit_each_file_after_its_writes_and_keep_streaming() {
        let files = vec![
            FileJob { handle: ObjectHandle(0), key: 1, bytes: 10_000 },
            FileJob { handle: ObjectHandle(1), key: 2, bytes: 0 },
            FileJob { handle: ObjectHandle(2), key: 3, bytes: 4096 },
        ];
        let mut s = RankSource::new(Direction::Save, files, 4096, 7, 3);
        let now = Instant::now();
        let a: Vec<Request> = (0..3).map(|_| op(s.next(now))).collect();
        let lens: Vec<(u64, u32)> = a
            .iter()
            .map(|r| match r.op {
                Op::Write { offset, len, .. } => (offset, len),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lens, vec![(0, 4096), (4096, 4096), (8192, 1808)]);
        assert!(matches!(a[0].data, Data::Fill { object: 1, seed: 7, generation: 3 }));
        // File 0 still has writes in flight: no commit for it; file 1 (0
        // bytes) is committed at once, then file 2's write is issued.
        let c1 = op(s.next(now));
        assert_eq!(c1.op, Op::Commit { obj: ObjectHandle(1), size: 0 });
        let w2 = op(s.next(now));
        assert_eq!(w2.op, Op::Write { obj: ObjectHandle(2), offset: 0, len: 4096 });
        assert!(matches!(s.next(now), Next::Wait));
        s.completed(&a[0], &done(&a[0]));
        s.completed(&a[2], &done(&a[2]));
        assert!(matches!(s.next(now), Next::Wait), "a write of file 0 is still in flight");
        s.completed(&a[1], &done(&a[1]));
        let c0 = op(s.next(now));
        assert_eq!(c0.op, Op::Commit { obj: ObjectHandle(0), size: 10_000 });
        s.completed(&w2, &done(&w2));
        let c2 = op(s.next(now));
        assert_eq!(c2.op, Op::Commit { obj: ObjectHandle(2), size: 4096 });
        assert!(!s.finished());
        for c in [&c1, &c0, &c2] {
            s.completed(c, &done(c));
        }
        assert!(matches!(s.next(now), Next::Done));
        assert!(s.finished());
    }

    #[test]
    fn loads_read_every_byte_and_verify_the_generation() {
        let files = vec![FileJob { handle: ObjectHandle(4), key: 9, bytes: 5000 }];
        let mut s = RankSource::new(Direction::Load, files, 4096, 1, 2);
        let now = Instant::now();
        let r: Vec<Request> = (0..2).map(|_| op(s.next(now))).collect();
        assert_eq!(r[1].op, Op::Read { obj: ObjectHandle(4), offset: 4096, len: 904 });
        assert!(matches!(r[0].data, Data::Verify(Expect { seed: 1, object: 9, generation: Some(2) })));
        assert!(r.iter().all(|x| x.exact));
        assert!(matches!(s.next(now), Next::Wait));
        for x in &r {
            s.completed(x, &done(x));
        }
        assert!(matches!(s.next(now), Next::Done));
        assert!(s.finished());
    }
}
