//! The replay's op source: walks the planned steps in order and turns each
//! into target calls and queued ops, keeping per-key order.
//!
//! - A write creates (or re-creates) `kvcache/<key>.npy`, writes it in chunks of
//!   unique data (the step's generation), then commits it. Reads of the key
//!   wait until that commit completed; a write or delete of a key waits until
//!   nothing of that key is in flight.
//! - A read reads the object in chunks and verifies every byte against the
//!   generation the plan says is live.
//! - Steps are issued in trace order, except that a step that must wait may
//!   be passed by later steps of other keys, within a bounded lookahead
//!   (`lookahead`): reads may pass anything of other keys; writes and deletes
//!   never pass a waiting write or delete, so live bytes never exceed what
//!   the plan allows. With a lookahead of 0 or 1, the order is strict.
//! - Paced (`--speedup X`), a step is not issued before
//!   `start + offset_s / X` on the run's clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::plan::{Step, StepKind};
use crate::datagen::{self, Expect};
use crate::engine::{Data, ErrorTally, Next, OpSource, Request};
use crate::recorder::{LiveCounters, SeriesKey};
use crate::target::{Completion, ObjectHandle, Op, OpKind, Target};

/// Pacing by trace time.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub start: Instant,
    pub speedup: f64,
}

impl Pacing {
    /// When a step `offset_s` into the trace is due.
    pub fn due(&self, offset_s: f64) -> Instant {
        self.start + Duration::from_secs_f64((offset_s / self.speedup).max(0.0))
    }
}

/// What the source counted (whole rows; bytes from completed chunks).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub write_rows: u64,
    pub write_bytes: u64,
    pub write_rows_failed: u64,
    pub read_rows: u64,
    pub read_bytes: u64,
    pub read_rows_failed: u64,
    pub deletes: u64,
    /// Paced only: the latest a step was issued after its due time, seconds.
    pub pacing_lag_s_max: f64,
}

#[derive(Default)]
struct KeyState {
    handle: Option<ObjectHandle>,
    /// The last write of the key failed: its object holds no valid data.
    broken: bool,
    /// Ops of this key in flight (chunks and commits).
    in_flight: u32,
    /// From create until the commit completed.
    writing: bool,
    write_size: u64,
    /// Series of the write in progress (its commit is recorded there too).
    write_series: (&'static str, &'static str),
    write_chunks_left: u64,
    write_failed: bool,
    /// Read rows in progress (several reads of a key may overlap).
    read_rows: u64,
    read_chunks_left: u64,
    read_failures: u64,
}

/// A step being expanded into chunk ops.
struct Active {
    step: usize,
    handle: ObjectHandle,
    next_offset: u64,
}

pub struct ReplaySource<'a> {
    target: &'a dyn Target,
    names: &'a [String],
    objects: Vec<u64>,
    steps: &'a [Step],
    next: usize,
    pacing: Option<Pacing>,
    chunk_bytes: u64,
    seed: u64,
    continue_on_error: bool,
    live: Option<Arc<LiveCounters>>,
    keys: Vec<KeyState>,
    by_handle: HashMap<ObjectHandle, u32>,
    active: Option<Active>,
    /// Steps taken from the trace that wait for an op in flight, oldest
    /// first (at most `lookahead_steps`).
    waiting: std::collections::VecDeque<usize>,
    lookahead_steps: usize,
    commits: Vec<u32>,
    writes_open: usize,
    stopped: bool,
    pub tally: Tally,
    /// Failures of namespace calls (create, delete) and rows that could not
    /// be issued; the engine counts failed ops itself.
    pub errors: ErrorTally,
    /// (step index, issue time), when asked for (tests).
    pub issue_log: Option<Vec<(usize, Instant)>>,
}

/// Directory of the replayed objects in the target: the KV cache
/// workload's, so a replayed trace lays out the same files a KV run would.
pub const OBJECT_PREFIX: &str = "kvcache/";

/// Object name of a cache key: kv-cache.py's file name, `<key>.npy`, in
/// [`OBJECT_PREFIX`].
pub fn object_name(key: &str) -> String {
    format!("{OBJECT_PREFIX}{key}.npy")
}

fn chunks(size: u64, chunk: u64) -> u64 {
    size.div_ceil(chunk)
}

impl<'a> ReplaySource<'a> {
    pub fn new(
        target: &'a dyn Target,
        names: &'a [String],
        steps: &'a [Step],
        chunk_bytes: u64,
        seed: u64,
        continue_on_error: bool,
    ) -> Self {
        ReplaySource {
            target,
            names,
            objects: names.iter().map(|k| datagen::object_key(&object_name(k))).collect(),
            steps,
            next: 0,
            pacing: None,
            chunk_bytes,
            seed,
            continue_on_error,
            live: None,
            keys: (0..names.len()).map(|_| KeyState::default()).collect(),
            by_handle: HashMap::new(),
            active: None,
            waiting: std::collections::VecDeque::new(),
            lookahead_steps: 0,
            commits: Vec::new(),
            writes_open: 0,
            stopped: false,
            tally: Tally::default(),
            errors: ErrorTally::default(),
            issue_log: None,
        }
    }

    pub fn paced(mut self, pacing: Option<Pacing>) -> Self {
        self.pacing = pacing;
        self
    }

    /// At most `n` steps wait (for their key's in-flight ops) at once while
    /// later steps of other keys pass them; with `n` ≤ 1 steps are issued
    /// strictly in order.
    pub fn lookahead(mut self, n: usize) -> Self {
        self.lookahead_steps = n;
        self
    }

    pub fn counting_errors_in(mut self, live: Arc<LiveCounters>) -> Self {
        self.live = Some(live);
        self
    }

    /// Takes over keys written earlier (the setup's pre-created keys): their
    /// objects are opened by name.
    pub fn adopt(&mut self, keys: impl IntoIterator<Item = u32>) -> Result<(), String> {
        for k in keys {
            let name = object_name(&self.names[k as usize]);
            match self.target.open(&name) {
                Ok(Some((h, _))) => {
                    self.keys[k as usize].handle = Some(h);
                    self.by_handle.insert(h, k);
                }
                Ok(None) => return Err(format!("{name} was written in setup but does not exist")),
                Err(e) => return Err(format!("open {name}: {e}")),
            }
        }
        Ok(())
    }

    /// Steps issued so far.
    pub fn issued(&self) -> usize {
        self.next - self.waiting.len()
    }

    fn fail(&mut self, msg: impl FnOnce() -> String) {
        self.errors.add(msg);
        if let Some(l) = &self.live {
            l.add_error();
        }
        if !self.continue_on_error {
            self.stopped = true;
        }
    }

    fn chunk_op(&mut self) -> Next {
        let a = self.active.as_mut().expect("active step");
        let s = self.steps[a.step];
        let offset = a.next_offset;
        let len = self.chunk_bytes.min(s.size_bytes - offset);
        a.next_offset += len;
        let handle = a.handle;
        if a.next_offset >= s.size_bytes {
            self.active = None;
        }
        self.keys[s.key as usize].in_flight += 1;
        let object = self.objects[s.key as usize];
        let (op, data, kind, exact) = match s.kind {
            StepKind::Write => (
                Op::Write { obj: handle, offset, len: len as u32 },
                Data::Fill { object, seed: self.seed, generation: s.generation },
                OpKind::Write,
                false,
            ),
            _ => (
                Op::Read { obj: handle, offset, len: len as u32 },
                Data::Verify(Expect { seed: self.seed, object, generation: Some(s.generation) }),
                OpKind::Read,
                true,
            ),
        };
        Next::Op(Request { op, data, key: SeriesKey { phase: s.phase, op: kind, tier: s.tier }, exact })
    }

    fn commit_op(&mut self, k: u32) -> Next {
        let st = &mut self.keys[k as usize];
        st.in_flight += 1;
        let handle = st.handle.expect("a committed key has an object");
        let (phase, tier) = st.write_series;
        Next::Op(Request {
            op: Op::Commit { obj: handle, size: st.write_size },
            data: Data::None,
            key: SeriesKey { phase, op: OpKind::Commit, tier },
            exact: false,
        })
    }
}

impl ReplaySource<'_> {
    /// True while step `s` must wait for its key's in-flight ops.
    fn busy(&self, s: &Step) -> bool {
        let st = &self.keys[s.key as usize];
        match s.kind {
            StepKind::Read => st.writing,
            StepKind::Write | StepKind::Delete => st.writing || st.in_flight > 0,
        }
    }

    /// The oldest waiting step that may go now: its key is not busy, no
    /// earlier waiting step is of its key, and, for a write or delete, no
    /// earlier waiting step is a write or delete.
    fn ready_waiting(&self) -> Option<usize> {
        let mut seen_keys = std::collections::HashSet::new();
        let mut seen_mutation = false;
        for (pos, &i) in self.waiting.iter().enumerate() {
            let s = &self.steps[i];
            let mutation = s.kind != StepKind::Read;
            let held_back = seen_keys.contains(&s.key) || (mutation && seen_mutation);
            if !held_back && !self.busy(s) {
                return Some(pos);
            }
            seen_keys.insert(s.key);
            seen_mutation |= mutation;
        }
        None
    }

    /// Issues step `i`: a delete or create at once; reads and writes start
    /// their chunks (issued by the following calls).
    fn start_step(&mut self, i: usize, now: Instant) {
        let s = self.steps[i];
        if let Some(p) = self.pacing {
            let lag = now.saturating_duration_since(p.due(s.offset_s)).as_secs_f64();
            self.tally.pacing_lag_s_max = self.tally.pacing_lag_s_max.max(lag);
        }
        if let Some(log) = &mut self.issue_log {
            log.push((i, now));
        }
        let k = s.key as usize;
        let name = object_name(&self.names[k]);
        match s.kind {
            StepKind::Delete => {
                if let Some(h) = self.keys[k].handle.take() {
                    self.by_handle.remove(&h);
                }
                match self.target.delete(&name) {
                    Ok(()) => self.tally.deletes += 1,
                    Err(e) => self.fail(|| format!("delete {name}: {e}")),
                }
            }
            StepKind::Write => {
                if let Some(h) = self.keys[k].handle.take() {
                    self.by_handle.remove(&h);
                }
                let h = match self.target.create(&name, s.size_bytes) {
                    Ok(h) => h,
                    Err(e) => {
                        self.keys[k].broken = true;
                        self.tally.write_rows_failed += 1;
                        self.fail(|| format!("create {name}: {e}"));
                        return;
                    }
                };
                self.by_handle.insert(h, s.key);
                let st = &mut self.keys[k];
                st.handle = Some(h);
                st.broken = false;
                st.writing = true;
                st.write_size = s.size_bytes;
                st.write_series = (s.phase, s.tier);
                st.write_chunks_left = chunks(s.size_bytes, self.chunk_bytes);
                st.write_failed = false;
                self.writes_open += 1;
                if s.size_bytes == 0 {
                    self.commits.push(s.key);
                } else {
                    self.active = Some(Active { step: i, handle: h, next_offset: 0 });
                }
            }
            StepKind::Read => {
                let st = &mut self.keys[k];
                let handle = match st.handle {
                    Some(h) if !st.broken => h,
                    _ => {
                        self.tally.read_rows_failed += 1;
                        self.fail(|| format!("read {name}: its last write failed, there is nothing valid to read"));
                        return;
                    }
                };
                if s.size_bytes == 0 {
                    self.tally.read_rows += 1;
                    return;
                }
                st.read_rows += 1;
                st.read_chunks_left += chunks(s.size_bytes, self.chunk_bytes);
                self.active = Some(Active { step: i, handle, next_offset: 0 });
            }
        }
    }
}

impl OpSource for ReplaySource<'_> {
    fn next(&mut self, now: Instant) -> Next {
        loop {
            if self.stopped {
                return Next::Done;
            }
            if let Some(k) = self.commits.pop() {
                return self.commit_op(k);
            }
            if self.active.is_some() {
                return self.chunk_op();
            }
            if let Some(pos) = self.ready_waiting() {
                let i = self.waiting.remove(pos).expect("waiting step");
                self.start_step(i, now);
                continue;
            }
            if self.waiting.len() >= self.lookahead_steps.max(1) {
                // Every waiting step waits for an op in flight.
                return Next::Wait;
            }
            let Some(&s) = self.steps.get(self.next) else {
                // Waiting steps and commits follow in-flight ops.
                let pending = self.writes_open > 0 || !self.waiting.is_empty();
                return if pending { Next::Wait } else { Next::Done };
            };
            if let Some(p) = self.pacing {
                let due = p.due(s.offset_s);
                if now < due {
                    return Next::WaitUntil(due);
                }
            }
            let i = self.next;
            self.next += 1;
            // Every waiting step is earlier than this one.
            let clash = self.waiting.iter().any(|&w| {
                let ws = &self.steps[w];
                ws.key == s.key || (s.kind != StepKind::Read && ws.kind != StepKind::Read)
            });
            if clash || self.busy(&s) {
                self.waiting.push_back(i);
            } else {
                self.start_step(i, now);
            }
        }
    }

    fn completed(&mut self, req: &Request, c: &Completion) {
        let Some(&k) = self.by_handle.get(&req.op.obj()) else {
            return;
        };
        let st = &mut self.keys[k as usize];
        st.in_flight -= 1;
        match (req.op, &c.result) {
            (Op::Write { .. }, r) => {
                st.write_chunks_left -= 1;
                match r {
                    Ok(n) => self.tally.write_bytes += u64::from(*n),
                    Err(_) => st.write_failed = true,
                }
                if st.write_chunks_left == 0 {
                    if st.write_failed {
                        st.writing = false;
                        st.broken = true;
                        self.writes_open -= 1;
                        self.tally.write_rows_failed += 1;
                    } else {
                        self.commits.push(k);
                    }
                }
            }
            (Op::Commit { .. }, r) => {
                st.writing = false;
                self.writes_open -= 1;
                if r.is_ok() {
                    self.tally.write_rows += 1;
                } else {
                    st.broken = true;
                    self.tally.write_rows_failed += 1;
                }
            }
            (Op::Read { len, .. }, r) => {
                st.read_chunks_left -= 1;
                match r {
                    Ok(n) if *n == len => self.tally.read_bytes += u64::from(*n),
                    _ => st.read_failures += 1,
                }
                if st.read_chunks_left == 0 {
                    // Overlapping reads of one key finish together; failed
                    // chunks are charged to their rows one each.
                    let failed = st.read_failures.min(st.read_rows);
                    self.tally.read_rows += st.read_rows - failed;
                    self.tally.read_rows_failed += failed;
                    st.read_rows = 0;
                    st.read_failures = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::buf::{AlignedBuf, BufPool};
    use crate::clock::Clock;
    use crate::engine::{Control, WorkerReport, run_worker};
    use crate::kvtrace::TraceOp::{Read as R, Write as W};
    use crate::replay::plan::{Deletes, plan};
    use crate::target::null::NullTarget;
    use crate::target::{IoMode, Queue, QueueFull, TargetError};

    const MIB: u64 = 1 << 20;

    /// Records every submitted op, in order, around a real queue.
    struct Recording {
        inner: Box<dyn Queue>,
        ops: Vec<Op>,
    }

    impl Queue for Recording {
        fn depth(&self) -> usize {
            self.inner.depth()
        }
        fn in_flight(&self) -> usize {
            self.inner.in_flight()
        }
        fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
            self.ops.push(op);
            self.inner.submit(tag, op, buf)
        }
        fn reap(&mut self, min: usize, timeout: Duration, out: &mut Vec<Completion>) -> Result<usize, TargetError> {
            self.inner.reap(min, timeout, out)
        }
        fn io_mode(&self) -> IoMode {
            self.inner.io_mode()
        }
    }

    fn control() -> Control {
        Control {
            stop: Arc::new(AtomicBool::new(false)),
            deadline: None,
            live: Arc::new(LiveCounters::default()),
            verify: crate::datagen::Verifier::OFF,
            continue_on_error: false,
            stall_timeout: Duration::from_secs(5),
            clock: Clock::real(),
        }
    }

    fn run(target: &NullTarget, src: &mut ReplaySource, depth: usize) -> (WorkerReport, Vec<Op>) {
        let mut pool = BufPool::new(depth, MIB as usize, 512);
        let inner = target.queue(depth, &mut pool).unwrap();
        let mut q = Recording { inner, ops: Vec::new() };
        let mut rep = WorkerReport::default();
        run_worker(src, &mut q, &mut pool, &control(), &mut rep);
        (rep, q.ops)
    }

    #[test]
    fn reads_wait_for_the_commit_and_rewrites_wait_for_reads() {
        let l = crate::replay::plan::loaded(&[
            (0.0, W, "a", 3 * MIB),
            (1.0, R, "a", 3 * MIB),
            (2.0, W, "b", MIB / 2),
            (3.0, R, "a", 3 * MIB),
            (4.0, W, "a", MIB),
        ]);
        let p = plan(&l, Deletes::Never).unwrap();
        let target = NullTarget::new();
        let mut src = ReplaySource::new(&target, &l.keys, &p.steps, MIB, 7, false);
        let (rep, ops) = run(&target, &mut src, 8);
        assert_eq!(rep.errors.count, 0, "{:?}", rep.errors.first);
        let kinds: Vec<(OpKind, u32)> = ops.iter().map(|o| (o.kind(), o.obj().0)).collect();
        use OpKind::{Commit as C, Read as Rd, Write as Wr};
        // null:// hands out table positions: a = 0 (its rewrite reuses the
        // slot), b = 1.
        let first_commit_a = kinds.iter().position(|&k| k == (C, 0)).unwrap();
        let first_read_a = kinds.iter().position(|&k| k == (Rd, 0)).unwrap();
        assert!(first_commit_a < first_read_a, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|&&k| k == (Wr, 0)).count(), 3 + 1, "{kinds:?}");
        let last_read_a = kinds.iter().rposition(|&k| k == (Rd, 0)).unwrap();
        let rewrite = kinds.iter().rposition(|&k| k == (Wr, 0)).unwrap();
        assert!(last_read_a < rewrite, "{kinds:?}");
        let t = &src.tally;
        assert_eq!((t.write_rows, t.write_bytes), (3, 4 * MIB + MIB / 2));
        assert_eq!((t.read_rows, t.read_bytes), (2, 6 * MIB));
    }

    #[test]
    fn later_steps_of_other_keys_pass_a_waiting_read_but_not_a_waiting_write() {
        use OpKind::{Commit as C, Write as Wr};
        let l = crate::replay::plan::loaded(&[
            (0.0, W, "a", 2 * MIB),
            (1.0, R, "a", 2 * MIB),
            (2.0, W, "b", MIB),
            (3.0, R, "b", MIB),
        ]);
        let p = plan(&l, Deletes::Never).unwrap();
        let target = NullTarget::new();
        let order = |lookahead: usize| {
            let mut src = ReplaySource::new(&target, &l.keys, &p.steps, MIB, 7, false).lookahead(lookahead);
            let (rep, ops) = run(&target, &mut src, 8);
            assert_eq!(rep.errors.count, 0, "{:?}", rep.errors.first);
            assert_eq!((src.tally.write_rows, src.tally.read_rows), (2, 2));
            let kinds: Vec<(OpKind, u32)> = ops.iter().map(|o| (o.kind(), o.obj().0)).collect();
            let b_write = kinds.iter().position(|&k| k == (Wr, 1)).unwrap();
            let a_commit = kinds.iter().position(|&k| k == (C, 0)).unwrap();
            let a_read = kinds.iter().position(|&k| k == (OpKind::Read, 0)).unwrap();
            assert!(a_commit < a_read, "{kinds:?}");
            (b_write, a_commit, a_read)
        };
        // Strict: b's write waits behind a's read, which waits for a's commit.
        let (b_write, _, a_read) = order(0);
        assert!(b_write > a_read);
        // Lookahead: b's write goes while a's read waits.
        let (b_write, a_commit, _) = order(8);
        assert!(b_write < a_commit);

        // A write never passes a waiting write (here a's rewrite).
        let l = crate::replay::plan::loaded(&[(0.0, W, "a", 2 * MIB), (1.0, W, "a", MIB), (2.0, W, "b", MIB)]);
        let p = plan(&l, Deletes::Never).unwrap();
        let mut src = ReplaySource::new(&target, &l.keys, &p.steps, MIB, 7, false).lookahead(8);
        let (_, ops) = run(&target, &mut src, 8);
        let kinds: Vec<(OpKind, u32)> = ops.iter().map(|o| (o.kind(), o.obj().0)).collect();
        let b_write = kinds.iter().position(|&k| k.1 == 1).unwrap();
        let a_rewrite = kinds.iter().position(|&k| k == (C, 0)).unwrap() + 1;
        assert_eq!(kinds[a_rewrite], (Wr, 0), "{kinds:?}");
        assert!(b_write > a_rewrite, "{kinds:?}");
    }

    #[test]
    fn paced_steps_are_never_issued_before_their_scaled_time() {
        let l = crate::replay::plan::loaded(&[
            (100.0, W, "a", 4096),
            (100.5, R, "a", 4096),
            (101.0, W, "b", 4096),
            (101.5, R, "b", 4096),
        ]);
        let p = plan(&l, Deletes::Never).unwrap();
        let target = NullTarget::new();
        let pacing = Pacing { start: Clock::real().now(), speedup: 25.0 };
        let mut src = ReplaySource::new(&target, &l.keys, &p.steps, MIB, 7, false).paced(Some(pacing)).lookahead(4);
        src.issue_log = Some(Vec::new());
        let (rep, _) = run(&target, &mut src, 4);
        assert_eq!(rep.errors.count, 0, "{:?}", rep.errors.first);
        let log = src.issue_log.clone().unwrap();
        let mut issued: Vec<usize> = log.iter().map(|e| e.0).collect();
        issued.sort();
        assert_eq!(issued, [0, 1, 2, 3]);
        for &(i, at) in &log {
            // offsets 0, 0.5, 1, 1.5 s at 25× → due 0, 20, 40, 60 ms.
            let due = pacing.start + Duration::from_secs_f64(p.steps[i].offset_s / 25.0);
            assert!(at >= due, "step {i} issued {:?} before its due time", due - at);
        }
        assert!(src.tally.pacing_lag_s_max >= 0.0);
    }
}
