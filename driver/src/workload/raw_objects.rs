//! `raw` object mode (`rw` = put | get | mixed): whole-object PUTs and
//! GETs, so an object store — or a file system, one file per object — can
//! be calibrated like a disk.
//!
//! The run works on `objects` objects, `raw/objects/objNNNNNNNN`, each of
//! `object_size` bytes, with `concurrency` of them in flight at once on one
//! engine worker. An object moves in I/Os of `block_size` bytes, at most
//! [`crate::config::raw::OBJECT_IOS_IN_FLIGHT`] of them in flight per object
//! and about [`crate::config::raw::OBJECT_IOS_IN_FLIGHT_TOTAL`] in all.
//! - A **PUT** is `create`, the writes and the commit: every payload comes
//!   from the data generator with a new generation per PUT, and on S3 the
//!   target's write path sends one PutObject, or a multipart upload above
//!   `s3.part_size`. Its latency runs from the create to the commit's
//!   completion. The first I/O of an object is written last, after all the
//!   others completed, so an object whose size and first block are right
//!   was written completely (the prepare check relies on it).
//! - A **GET** reads the whole object (ranged GETs on S3, split into
//!   concurrent ranges above the part size), and every byte is verified
//!   (unless `verify: false`). Its latency runs from its first read's
//!   submission to its last read's completion.
//!
//! `put` cycles over the objects; `get` and `mixed` need them first: the
//! prepare phase (untimed) opens each object, checks its size and its first
//! block for this seed, and PUTs the ones missing or different. `mixed`
//! picks GET with `rwmix_read` percent probability, never touching an object
//! another op is working on. Objects still in flight at the deadline are
//! not counted (an uncommitted PUT leaves no new object; S3 aborts its
//! multipart upload when the run finishes).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::json;

use super::{RunEnv, WorkloadOutput};
use crate::buf::BufPool;
use crate::config::raw::{RawConfig, Rw};
use crate::datagen::{self, Expect, Verifier};
use crate::engine::{self, Data, Next, OpSource, Request, WorkerReport};
use crate::error::Error;
use crate::recorder::{NO_TIER, Recorder, SeriesKey};
use crate::results::raw_op_summary;
use crate::target::{Completion, ObjectHandle, Op, OpKind, Target};

/// Phase of the whole-object latency series (`put` = write, `get` = read).
pub const OBJECT_PHASE: &str = "object";
/// Tier of the I/O series the objects were moved in.
const TIER: &str = "storage";
/// Objects probed at once by the prepare check.
const PROBE_DEPTH: usize = 16;

/// One object of the run.
struct Obj {
    name: String,
    key: u64,
    /// Present once the object exists with the run's size.
    handle: Option<ObjectHandle>,
    /// An op is working on it.
    busy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Get,
}

/// An object in flight.
struct Active {
    obj: usize,
    kind: Kind,
    handle: ObjectHandle,
    generation: u64,
    /// How many I/Os were issued (a PUT issues I/O 0 last).
    next_io: u64,
    ios_done: u64,
    in_flight: u64,
    committing: bool,
    failed: bool,
    started: Instant,
}

/// Which object comes next.
enum Order {
    /// Round robin over all objects, forever (the measured phase).
    Cycle { next: usize },
    /// Each listed object once (the prepare phase's PUTs).
    Once(VecDeque<usize>),
}

/// Op generator for whole objects.
struct ObjectSource<'a> {
    target: &'a dyn Target,
    objs: Vec<Obj>,
    slots: Vec<Option<Active>>,
    by_handle: HashMap<ObjectHandle, usize>,
    active: usize,
    concurrency: usize,
    per_object: u64,
    object_bytes: u64,
    io_bytes: u64,
    ios: u64,
    seed: u64,
    rng: Xoshiro256PlusPlus,
    rw: Rw,
    read_percent: u64,
    order: Order,
    budget: Option<u64>,
    started_bytes: u64,
    no_more: bool,
    puts: u64,
    /// Fixed generation (prepare) or None (a new one per PUT).
    generation: Option<u64>,
    io_phase: &'static str,
    /// Record whole-object latencies (the measured phase only).
    record_objects: bool,
    recorder: Recorder,
    /// A create that failed (the engine never saw it).
    error: Option<String>,
    errors: u64,
    rr: usize,
    completed_objects: u64,
}

impl<'a> ObjectSource<'a> {
    fn new(target: &'a dyn Target, cfg: &RawConfig, objs: Vec<Obj>, seed: u64, order: Order) -> ObjectSource<'a> {
        let concurrency = cfg.concurrency.unwrap_or(1) as usize;
        ObjectSource {
            target,
            objs,
            slots: (0..concurrency).map(|_| None).collect(),
            by_handle: HashMap::new(),
            active: 0,
            concurrency,
            per_object: cfg.ios_in_flight_per_object(),
            object_bytes: cfg.object_bytes(),
            io_bytes: cfg.block_size.bytes(),
            ios: cfg.ios_per_object(),
            seed,
            rng: Xoshiro256PlusPlus::seed_from_u64(splitmix(seed ^ 0x6f62_6a65_6374)),
            rw: cfg.rw,
            read_percent: u64::from(cfg.read_percent()),
            order,
            budget: None,
            started_bytes: 0,
            no_more: false,
            puts: 0,
            generation: None,
            io_phase: "measure",
            record_objects: true,
            recorder: Recorder::new(),
            error: None,
            errors: 0,
            rr: 0,
            completed_objects: 0,
        }
    }

    /// The next I/O of the object in slot `s`, if it may go now.
    fn issue(&mut self, s: usize) -> Option<Request> {
        let (ios, per_object, phase, seed) = (self.ios, self.per_object, self.io_phase, self.seed);
        let (io_bytes, object_bytes) = (self.io_bytes, self.object_bytes);
        let a = self.slots[s].as_mut()?;
        if a.failed || a.committing || a.in_flight >= per_object {
            return None;
        }
        let key = self.objs[a.obj].key;
        let k = a.next_io;
        let range = |i: u64| {
            let offset = i * io_bytes;
            (offset, io_bytes.min(object_bytes - offset) as u32)
        };
        match a.kind {
            Kind::Put if k < ios => {
                // I/Os 1.. in order, then I/O 0 once all of them completed.
                let i = if k + 1 < ios { k + 1 } else { 0 };
                if ios > 1 && i == 0 && (a.ios_done < ios - 1 || a.in_flight > 0) {
                    return None;
                }
                a.next_io += 1;
                a.in_flight += 1;
                let (offset, len) = range(i);
                Some(Request {
                    op: Op::Write { obj: a.handle, offset, len },
                    data: Data::Fill { object: key, seed, generation: a.generation },
                    key: SeriesKey { phase, op: OpKind::Write, tier: TIER },
                    exact: false,
                })
            }
            Kind::Put => {
                if a.ios_done < ios || a.in_flight > 0 {
                    return None;
                }
                a.committing = true;
                a.in_flight += 1;
                Some(Request {
                    op: Op::Commit { obj: a.handle, size: object_bytes },
                    data: Data::None,
                    key: SeriesKey { phase, op: OpKind::Commit, tier: TIER },
                    exact: false,
                })
            }
            Kind::Get if k < ios => {
                a.next_io += 1;
                a.in_flight += 1;
                let (offset, len) = range(k);
                Some(Request {
                    op: Op::Read { obj: a.handle, offset, len },
                    data: Data::Verify(Expect { seed, object: key, generation: None }),
                    key: SeriesKey { phase, op: OpKind::Read, tier: TIER },
                    exact: true,
                })
            }
            Kind::Get => None,
        }
    }

    /// Starts the next object in a free slot; false if none may start.
    fn start(&mut self, now: Instant) -> bool {
        if self.no_more || self.active >= self.concurrency {
            return false;
        }
        if self.budget.is_some_and(|b| self.started_bytes >= b) {
            self.no_more = true;
            return false;
        }
        let kind = match self.rw {
            Rw::Get => Kind::Get,
            Rw::Mixed if self.rng.next_u64() % 100 < self.read_percent => Kind::Get,
            _ => Kind::Put,
        };
        let Some(obj) = self.pick(kind) else { return false };
        let handle = match kind {
            Kind::Get => self.objs[obj].handle.expect("picked objects exist"),
            Kind::Put => match self.target.create(&self.objs[obj].name, self.object_bytes) {
                Ok(h) => h,
                Err(e) => {
                    self.errors += 1;
                    self.error.get_or_insert_with(|| format!("cannot create {}: {e}", self.objs[obj].name));
                    self.no_more = true;
                    return false;
                }
            },
        };
        let generation = match (kind, self.generation) {
            (Kind::Get, _) => 0,
            (Kind::Put, Some(g)) => g,
            (Kind::Put, None) => {
                self.puts += 1;
                splitmix(self.seed ^ self.puts.rotate_left(17)) | 1
            }
        };
        self.started_bytes += self.object_bytes;
        let o = &mut self.objs[obj];
        o.busy = true;
        if kind == Kind::Put {
            o.handle = None;
        }
        let slot = self.slots.iter().position(Option::is_none).expect("a free slot below concurrency");
        self.slots[slot] = Some(Active {
            obj,
            kind,
            handle,
            generation,
            next_io: 0,
            ios_done: 0,
            in_flight: 0,
            committing: false,
            failed: false,
            started: now,
        });
        self.by_handle.insert(handle, slot);
        self.active += 1;
        true
    }

    /// The next object for an op of `kind`: not busy, and existing for a GET.
    fn pick(&mut self, kind: Kind) -> Option<usize> {
        let n = self.objs.len();
        match &mut self.order {
            Order::Once(list) => {
                let o = list.pop_front();
                if o.is_none() {
                    self.no_more = true;
                }
                o
            }
            Order::Cycle { next } => {
                for k in 0..n {
                    let i = (*next + k) % n;
                    let o = &self.objs[i];
                    if !o.busy && (kind == Kind::Put || o.handle.is_some()) {
                        *next = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
        }
    }

    fn retire(&mut self, slot: usize, done_at: Instant) {
        let a = self.slots[slot].take().expect("active slot");
        self.by_handle.remove(&a.handle);
        self.active -= 1;
        let o = &mut self.objs[a.obj];
        o.busy = false;
        if a.failed {
            if a.kind == Kind::Put {
                o.handle = None;
            }
            return;
        }
        if a.kind == Kind::Put {
            o.handle = Some(a.handle);
        }
        self.completed_objects += 1;
        if self.record_objects {
            let op = if a.kind == Kind::Put { OpKind::Write } else { OpKind::Read };
            let latency_ns = done_at.saturating_duration_since(a.started).as_nanos() as u64;
            self.recorder.record(&SeriesKey { phase: OBJECT_PHASE, op, tier: NO_TIER }, latency_ns, self.object_bytes);
        }
    }
}

impl OpSource for ObjectSource<'_> {
    fn next(&mut self, now: Instant) -> Next {
        loop {
            let n = self.slots.len();
            for k in 0..n {
                let s = (self.rr + k) % n;
                if let Some(req) = self.issue(s) {
                    self.rr = (s + 1) % n;
                    return Next::Op(req);
                }
            }
            if !self.start(now) {
                break;
            }
        }
        if self.active > 0 { Next::Wait } else { Next::Done }
    }

    fn completed(&mut self, req: &Request, c: &Completion) {
        let Some(&slot) = self.by_handle.get(&req.op.obj()) else { return };
        let ios = self.ios;
        let a = self.slots[slot].as_mut().expect("active slot");
        a.in_flight -= 1;
        let ok = match (&c.result, req.op) {
            (Ok(n), Op::Read { len, .. }) => *n == len,
            (Ok(_), _) => true,
            (Err(_), _) => false,
        };
        if !ok {
            a.failed = true;
        } else if !matches!(req.op, Op::Commit { .. }) {
            a.ios_done += 1;
        }
        let finished = match a.kind {
            _ if a.failed => a.in_flight == 0,
            Kind::Put => a.committing && a.in_flight == 0,
            Kind::Get => a.ios_done == ios,
        };
        if finished {
            self.retire(slot, c.completed);
        }
    }
}

/// Reads the first block of existing objects and keeps only those that are
/// this seed's data at the run's size.
struct ProbeSource {
    queue: VecDeque<(usize, ObjectHandle, u64)>,
    len: u32,
    seed: u64,
    in_flight: HashMap<ObjectHandle, usize>,
    good: Vec<usize>,
}

impl OpSource for ProbeSource {
    fn next(&mut self, _now: Instant) -> Next {
        let Some((i, h, key)) = self.queue.pop_front() else {
            return if self.in_flight.is_empty() { Next::Done } else { Next::Wait };
        };
        self.in_flight.insert(h, i);
        Next::Op(Request {
            op: Op::Read { obj: h, offset: 0, len: self.len },
            data: Data::Verify(Expect { seed: self.seed, object: key, generation: None }),
            key: SeriesKey { phase: "prepare-check", op: OpKind::Read, tier: TIER },
            exact: false,
        })
    }

    fn completed(&mut self, req: &Request, c: &Completion) {
        let Some(i) = self.in_flight.remove(&req.op.obj()) else { return };
        if let (Ok(n), Data::Verify(expect)) = (&c.result, req.data)
            && *n == self.len
        {
            let v = datagen::verify(c.data(), 0, &expect);
            if v.is_ok() && v.verified_bytes == u64::from(self.len) {
                self.good.push(i);
            }
        }
    }
}

/// The object mode's run: prepare (get, mixed), then the measured window.
pub fn run(env: &RunEnv, cfg: &RawConfig) -> Result<WorkloadOutput, Error> {
    let target = env.target;
    let align = target.info().caps.align as u64;
    let io_bytes = cfg.block_size.bytes();
    if !io_bytes.is_multiple_of(align) {
        return Err(Error::usage(format!(
            "config key `block_size`: {io_bytes} bytes is not a multiple of the target's direct-I/O alignment \
             ({align} bytes)"
        )));
    }
    let seed = env.common.seed;
    let n = cfg.objects.unwrap_or(1) as usize;
    let dir = if env.world.is_multi() { format!("raw/rank{}/objects", env.world.rank()) } else { "raw/objects".into() };
    let mut objs: Vec<Obj> = (0..n)
        .map(|i| {
            let name = format!("{dir}/obj{i:08}");
            Obj { key: datagen::object_key(&name), name, handle: None, busy: false }
        })
        .collect();

    let mut untimed = Recorder::new();
    let mut prepared = 0u64;
    if cfg.rw != Rw::Put {
        env.phase.set("prepare");
        prepared = prepare(env, cfg, &mut objs, &mut untimed)?;
    }

    let start = env.begin_measure()?;
    let deadline = env.common.duration.map(|d| start + d);
    let ctl = env.control(deadline, env.verifier());
    let mut src = ObjectSource::new(target, cfg, objs, seed, Order::Cycle { next: 0 });
    src.budget = cfg.bytes.map(|b| b.bytes());
    let (mut report, io_mode) = drive(env, cfg, &mut src, &ctl)?;
    let window_s = report.last_completion.map_or(0.0, |l| l.saturating_duration_since(start).as_secs_f64());
    let mut recorder = std::mem::take(&mut report.recorder);
    recorder.merge(&src.recorder);
    recorder.merge(&untimed);

    let mut notes = Vec::new();
    let abandoned = src.active;
    if abandoned > 0 {
        notes.push(format!(
            "{abandoned} object(s) still in flight when the run stopped were not counted (a PUT that was not \
             committed left no new object)"
        ));
    }
    if prepared > 0 {
        notes.push(format!("prepare: {prepared} object(s) were PUT before the measured window (untimed)"));
    }
    let put = raw_op_summary(recorder.get(&object_key(OpKind::Write)), window_s);
    let get = raw_op_summary(recorder.get(&object_key(OpKind::Read)), window_s);
    let summary = json!({
        "rw": cfg.rw.as_str(),
        "object_size": cfg.object_bytes(),
        "objects": n,
        "concurrency": cfg.concurrency.unwrap_or(1),
        "block_size": io_bytes,
        "rwmix_read": cfg.read_percent(),
        "prepared_objects": prepared,
        "put": put,
        "get": get,
    });
    Ok(WorkloadOutput { summary, recorder, verify: report.verify, errors: report.errors, window_s, io_mode, notes })
}

/// The whole-object latency series of `op` (write = PUT, read = GET).
pub fn object_key(op: OpKind) -> SeriesKey {
    SeriesKey { phase: OBJECT_PHASE, op, tier: NO_TIER }
}

/// Runs `src` on one engine worker; folds the source's own errors (failed
/// creates) into the report.
fn drive(
    env: &RunEnv,
    cfg: &RawConfig,
    src: &mut ObjectSource,
    ctl: &engine::Control,
) -> Result<(WorkerReport, crate::target::IoMode), Error> {
    let align = env.target.info().caps.align;
    let depth = src.concurrency * cfg.ios_in_flight_per_object() as usize;
    // An I/O is never larger than the object: no 8 MiB buffers for 1 MiB objects.
    let io_bytes = cfg.block_size.bytes().min(cfg.object_bytes().max(1));
    let mut pool = BufPool::new(depth, io_bytes as usize, align);
    let mut queue =
        env.target.queue(depth, &mut pool).map_err(|e| Error::failed(format!("cannot set up the queue: {e}")))?;
    let mut report = WorkerReport::default();
    engine::run_worker(src, queue.as_mut(), &mut pool, ctl, &mut report);
    let mode = queue.io_mode();
    drop(queue);
    if let Some(e) = src.error.take() {
        report.errors.merge(&engine::ErrorTally { count: src.errors, first: Some(e) });
        env.live.add_error();
    }
    Ok((report, mode))
}

/// Makes every object exist with this seed's data at the run's size: lists
/// and opens each, probes the first block of those of the right size, PUTs the rest
/// (untimed). Returns how many it PUT.
fn prepare(env: &RunEnv, cfg: &RawConfig, objs: &mut Vec<Obj>, untimed: &mut Recorder) -> Result<u64, Error> {
    let target = env.target;
    let size = cfg.object_bytes();
    // One listing gives the sizes (S3: one LIST per 1000 objects instead of
    // a HEAD per object); objects it does not show are opened one by one.
    let dir = objs.first().and_then(|o| o.name.rsplit_once('/')).map_or(String::new(), |(d, _)| format!("{d}/"));
    let listed: HashMap<String, u64> = target.list(&dir).map(|v| v.into_iter().collect()).unwrap_or_default();
    let mut candidates = VecDeque::new();
    for (i, o) in objs.iter().enumerate() {
        let opened = match listed.get(&o.name) {
            Some(&have) => target.open_listed(&o.name, have),
            None => target.open(&o.name),
        };
        let opened = opened.map_err(|e| Error::failed(format!("cannot open {}: {e}", o.name)))?;
        if let Some((h, have)) = opened
            && have == size
        {
            candidates.push_back((i, h, o.key));
        }
    }
    let good: Vec<(usize, ObjectHandle)> = if target.info().caps.stores_data && !candidates.is_empty() {
        let handles: HashMap<usize, ObjectHandle> = candidates.iter().map(|&(i, h, _)| (i, h)).collect();
        let len = size.min(datagen::BLOCK_BYTES as u64) as u32;
        let mut probe =
            ProbeSource { queue: candidates, len, seed: env.common.seed, in_flight: HashMap::new(), good: Vec::new() };
        let align = target.info().caps.align;
        let depth = PROBE_DEPTH.min(objs.len());
        let mut pool = BufPool::new(depth, datagen::BLOCK_BYTES.max(align), align);
        let mut queue = target
            .queue(depth, &mut pool)
            .map_err(|e| Error::failed(format!("cannot set up the prepare queue: {e}")))?;
        let mut rep = WorkerReport::default();
        engine::run_worker(&mut probe, queue.as_mut(), &mut pool, &env.control(None, Verifier::OFF), &mut rep);
        untimed.merge(&rep.recorder);
        probe.good.iter().map(|i| (*i, handles[i])).collect()
    } else {
        candidates.iter().map(|&(i, h, _)| (i, h)).collect()
    };
    for (i, h) in good {
        objs[i].handle = Some(h);
    }
    let missing: VecDeque<usize> = (0..objs.len()).filter(|&i| objs[i].handle.is_none()).collect();
    let count = missing.len() as u64;
    if count == 0 {
        return Ok(0);
    }
    let mut src = ObjectSource::new(target, cfg, std::mem::take(objs), env.common.seed, Order::Once(missing));
    src.rw = Rw::Put;
    src.generation = Some(0);
    src.io_phase = "prepare";
    src.record_objects = false;
    let (rep, _) = drive(env, cfg, &mut src, &env.control(None, Verifier::OFF))?;
    untimed.merge(&rep.recorder);
    *objs = std::mem::take(&mut src.objs);
    if rep.errors.count > 0 || src.completed_objects != count {
        return Err(Error::failed(format!(
            "prepare: PUT {} of {count} object(s) of {size} bytes; the first error: {}",
            src.completed_objects,
            rep.errors.first.unwrap_or_else(|| "interrupted".into())
        )));
    }
    Ok(count)
}

/// SplitMix64 finaliser: decorrelates seeds.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
