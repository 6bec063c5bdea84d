//! The target round trip through the library's real file target and
//! engine, with O_DIRECT and io_uring: objects of awkward sizes written,
//! committed, read whole and by ranges, verified, listed and deleted.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mlpdrive::buf::BufPool;
use mlpdrive::datagen::{self, Expect};
use mlpdrive::engine::{Control, Data, Next, OpSource, Request, WorkerReport, run_worker};
use mlpdrive::recorder::{LiveCounters, SeriesKey};
use mlpdrive::target::file::FileTarget;
use mlpdrive::target::{ObjectHandle, Op, OpKind, OpenOptions, Target};

pub(crate) const CHUNK: u64 = 1 << 20;
pub(crate) const SEED: u64 = 77;

pub(crate) fn key(op: OpKind) -> SeriesKey {
    SeriesKey { phase: "test", op, tier: "storage" }
}

/// Issues a fixed list of requests, then a commit once they are done.
struct Script {
    reqs: Vec<Request>,
    commit: Option<Request>,
    in_flight: usize,
}

impl OpSource for Script {
    fn next(&mut self, _now: Instant) -> Next {
        if let Some(r) = self.reqs.pop() {
            self.in_flight += 1;
            return Next::Op(r);
        }
        if self.in_flight > 0 {
            return Next::Wait;
        }
        match self.commit.take() {
            Some(c) => {
                self.in_flight += 1;
                Next::Op(c)
            }
            None => Next::Done,
        }
    }

    fn completed(&mut self, _r: &Request, _c: &mlpdrive::target::Completion) {
        self.in_flight -= 1;
    }
}

fn control(verify: bool) -> Control {
    Control {
        stop: Arc::new(AtomicBool::new(false)),
        deadline: None,
        live: Arc::new(LiveCounters::default()),
        verify: if verify { mlpdrive::datagen::Verifier::FULL } else { mlpdrive::datagen::Verifier::OFF },
        continue_on_error: true,
        stall_timeout: Duration::from_secs(30),
        clock: mlpdrive::clock::Clock::real(),
    }
}

pub(crate) fn drive(t: &dyn Target, reqs: Vec<Request>, commit: Option<Request>, verify: bool) -> WorkerReport {
    let align = t.info().caps.align;
    let mut pool = BufPool::new(8, (CHUNK as usize) + 2 * align, align);
    let mut q = t.queue(8, &mut pool).unwrap();
    let mut s = Script { reqs, commit, in_flight: 0 };
    let mut rep = WorkerReport::default();
    run_worker(&mut s, q.as_mut(), &mut pool, &control(verify), &mut rep);
    rep
}

/// Runs reads (verified) one at a time with buffers of `buf_bytes`.
pub(crate) fn drive_with_buf(t: &dyn Target, reqs: Vec<Request>, buf_bytes: usize) -> WorkerReport {
    let align = t.info().caps.align;
    let mut pool = BufPool::new(1, buf_bytes, align);
    let mut q = t.queue(1, &mut pool).unwrap();
    let mut s = Script { reqs, commit: None, in_flight: 0 };
    let mut rep = WorkerReport::default();
    run_worker(&mut s, q.as_mut(), &mut pool, &control(true), &mut rep);
    rep
}

pub(crate) fn write_object(t: &dyn Target, name: &str, size: u64) -> ObjectHandle {
    let h = t.create(name, size).unwrap();
    let object = datagen::object_key(name);
    let mut reqs = Vec::new();
    let mut off = 0;
    while off < size {
        let len = CHUNK.min(size - off) as u32;
        reqs.push(Request {
            op: Op::Write { obj: h, offset: off, len },
            data: Data::Fill { object, seed: SEED, generation: 0 },
            key: key(OpKind::Write),
            exact: false,
        });
        off += u64::from(len);
    }
    let commit = Request { op: Op::Commit { obj: h, size }, data: Data::None, key: key(OpKind::Commit), exact: false };
    let rep = drive(t, reqs, Some(commit), false);
    assert_eq!(rep.errors.count, 0, "{name}: {:?}", rep.errors.first);
    h
}

pub(crate) fn read_ranges(t: &dyn Target, h: ObjectHandle, name: &str, ranges: &[(u64, u32)]) -> WorkerReport {
    let object = datagen::object_key(name);
    let reqs = ranges
        .iter()
        .map(|&(offset, len)| Request {
            op: Op::Read { obj: h, offset, len },
            data: Data::Verify(Expect { seed: SEED, object, generation: Some(0) }),
            key: key(OpKind::Read),
            exact: true,
        })
        .collect();
    drive(t, reqs, None, true)
}

#[test]
fn objects_of_awkward_sizes_round_trip_with_o_direct() {
    let d = tempfile::tempdir().unwrap();
    let t = FileTarget::open(d.path(), "test", OpenOptions { direct: true, use_uring: true }).unwrap();
    let sizes: [u64; 7] = [0, 1, 4095, 4096, 4097, (1 << 20) + 7, 64 << 20];
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("rt/obj{i}");
        let h = write_object(&t, &name, size);
        let (h2, len) = t.open(&name).unwrap().expect("object exists");
        assert_eq!((h2, len), (h, size), "{name}: logical size");
        if size == 0 {
            continue;
        }
        // Whole object in chunks.
        let mut whole = Vec::new();
        let mut off = 0;
        while off < size {
            let len = CHUNK.min(size - off) as u32;
            whole.push((off, len));
            off += u64::from(len);
        }
        let rep = read_ranges(&t, h, &name, &whole);
        assert_eq!(rep.errors.count, 0, "{name}: {:?}", rep.errors.first);
        assert!(rep.verify.is_ok(), "{name}: {:?}", rep.verify.first_error);
        assert_eq!(rep.verify.verified_bytes, size, "{name}: every byte verified");
        // Ranges: unaligned starts, the tail, a single byte.
        let mut ranges = vec![(size - 1, 1), (0, 1)];
        if size > 100 {
            ranges.push((13, (size - 13).min(70_000) as u32));
            ranges.push((size / 2, ((size - size / 2) as u32).min(5000)));
        }
        let want: u64 = ranges.iter().map(|r| u64::from(r.1)).sum();
        let rep = read_ranges(&t, h, &name, &ranges);
        assert_eq!(rep.errors.count, 0, "{name}: {:?}", rep.errors.first);
        assert!(rep.verify.is_ok(), "{name}: {:?}", rep.verify.first_error);
        assert_eq!(rep.verify.verified_bytes, want, "{name}: ranged bytes verified");
    }
    let listed = t.list("rt/").unwrap();
    assert_eq!(listed.len(), sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        assert!(listed.contains(&(format!("rt/obj{i}"), size)), "{listed:?}");
    }
    for i in 0..sizes.len() {
        t.delete(&format!("rt/obj{i}")).unwrap();
    }
    assert!(t.list("rt/").unwrap().is_empty());
    assert!(t.open("rt/obj3").unwrap().is_none());
}

#[test]
fn reading_past_the_end_is_a_short_read_error_when_exact() {
    let d = tempfile::tempdir().unwrap();
    let t = FileTarget::open(d.path(), "test", OpenOptions { direct: true, use_uring: true }).unwrap();
    let h = write_object(&t, "short", 5000);
    let rep = read_ranges(&t, h, "short", &[(4096, 4096)]);
    assert_eq!(rep.errors.count, 1, "{:?}", rep.errors.first);
    assert!(rep.errors.first.unwrap().contains("short read"));
}
