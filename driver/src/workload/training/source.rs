//! The training op source: every simulated accelerator of the host, its
//! readers and its step loop, driven by one engine worker.
//!
//! Per accelerator: `read_threads` readers take whole batches round-robin
//! (batch k → reader k mod W) as a PyTorch DataLoader does, at most
//! `read_threads × ceil(prefetch_size / read_threads)` batches ahead of the
//! step being computed. A reader reads its batch's samples one after
//! another, each from its file front to back in `transfer_size` requests
//! (`reader_queue_depth` in flight), finishing a file before it opens the
//! next. Step i: wait for batch i (load), wait `computation_time`
//! (compute, via `Next::WaitUntil`), then a barrier across all
//! accelerators — of this process and, in an MPI job, of every rank
//! (a nonblocking sync polled while the readers keep prefetching, as
//! DLIO's loader workers read on while the rank waits in `MPI_Barrier`).
//! Epochs start and end with a barrier.
//!
//! In an MPI job the epoch's sample plan is the job's (every accelerator
//! of every rank, one seeded shuffle); this process runs the accelerators
//! `hosted`, so together the ranks read each file once per epoch.
//!
//! Time comes only from the engine's `now` and completion timestamps.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlpdrive_emu::Prng;

use super::plan::{SampleRef, epoch_samples};
use crate::buf::{align_down, align_up};
use crate::config::training::{ComputeTime, ShuffleMode};
use crate::datagen::{Verifier, VerifyOutcome};
use crate::datasets::compose::Layout;
use crate::datasets::{DatasetSpec, Split};
use crate::engine::{Data, Next, OpSource, Request};
use crate::mpi::{PendingSync, World};
use crate::recorder::SeriesKey;
use crate::target::{Completion, ObjectHandle, Op, OpKind};

use super::metrics::EpochTimeline;

pub const READ_KEY: SeriesKey = SeriesKey { phase: "measure", op: OpKind::Read, tier: "storage" };

/// How often a step barrier across MPI ranks is polled while it waits.
const RANK_BARRIER_POLL: Duration = Duration::from_micros(200);

/// Everything the source needs that does not change during the run.
pub struct SourceParams {
    pub spec: Arc<DatasetSpec>,
    /// Handle of every training file, by index.
    pub handles: Vec<ObjectHandle>,
    /// Accelerators of the whole job (every MPI rank's).
    pub accelerators: u32,
    /// The ones this process runs (all of them alone).
    pub hosted: Range<u32>,
    /// This process's MPI job (a world of one alone): the step barrier
    /// spans its ranks.
    pub world: World,
    pub read_threads: u32,
    pub reader_depth: u32,
    pub batches_in_flight: u64,
    pub batch: u64,
    pub steps: u64,
    pub epochs: u32,
    pub request_bytes: u64,
    pub align: u64,
    pub compute: ComputeTime,
    pub shuffle: ShuffleMode,
    pub seed: u64,
    /// How reads are checked (the run's policy; off when the target stores nothing).
    pub verify: Verifier,
}

/// A reader's open file.
struct Cursor {
    file: u64,
    layout: Layout,
    /// Next byte to request.
    read_upto: u64,
    /// Everything below this has arrived.
    done_upto: u64,
    /// Requests in flight, in issue order: (start, end, done).
    pending: VecDeque<(u64, u64, bool)>,
}

#[derive(Default)]
struct Reader {
    /// Batch being read and the index of its next sample to finish.
    batch: Option<u64>,
    next_sample: usize,
    issue_sample: usize,
    /// The next batch this reader will take.
    next_batch: u64,
    cursor: Option<Cursor>,
    in_flight: u32,
}

enum Phase {
    /// Waiting for batch `step` since this time.
    Loading(Instant),
    /// Computing from `start` until `until`.
    Computing { start: Instant, until: Instant, load: Duration },
    /// Step done, waiting at the barrier.
    Barrier,
    /// All steps of the epoch done.
    EpochDone,
}

struct Accel {
    samples: Vec<SampleRef>,
    readers: Vec<Reader>,
    /// Completion time of each finished batch not yet consumed.
    ready: HashMap<u64, Instant>,
    step: u64,
    phase: Phase,
    timeline: EpochTimeline,
    batch_load_ns: Vec<u64>,
    bytes: u64,
}

/// What the run measured per epoch.
pub struct EpochRecord {
    pub accelerators: Vec<EpochTimeline>,
    pub bytes_read: u64,
    pub wall_s: f64,
}

pub struct TrainSource {
    p: SourceParams,
    rng: Prng,
    accels: Vec<Accel>,
    epoch: u32,
    epoch_start: Option<Instant>,
    origin: Option<Instant>,
    /// In-flight reads: (object, offset) → (accelerator, reader).
    inflight: HashMap<(u32, u64), Vec<(usize, usize)>>,
    pub epochs_done: Vec<EpochRecord>,
    pub batch_load_ns: Vec<u64>,
    pub verify: VerifyOutcome,
    pub error: Option<String>,
    pub finished: bool,
    /// Steps completed over all epochs.
    pub steps_done: u64,
    /// The step barrier across MPI ranks, while it waits.
    rank_sync: Option<PendingSync>,
    /// Another rank finished (without failing) while this one waited at a
    /// step barrier: the end of a timed run.
    pub peer_finished: bool,
}

/// Where the step barrier across MPI ranks stands.
enum RankBarrier {
    Waiting,
    Passed,
    Stopped,
}

impl TrainSource {
    pub fn new(p: SourceParams) -> TrainSource {
        let rng = Prng::new(p.seed).fork("training-compute");
        TrainSource {
            p,
            rng,
            accels: Vec::new(),
            epoch: 0,
            epoch_start: None,
            origin: None,
            inflight: HashMap::new(),
            epochs_done: Vec::new(),
            batch_load_ns: Vec::new(),
            verify: VerifyOutcome::default(),
            error: None,
            finished: false,
            steps_done: 0,
            rank_sync: None,
            peer_finished: false,
        }
    }

    /// The step barrier across MPI ranks (passed at once alone). A rank
    /// that failed or finished stops this one: a failure as an error, a
    /// peer that finished (its `--duration` ran out) as the end of the run.
    fn rank_barrier(&mut self) -> RankBarrier {
        if !self.p.world.is_multi() {
            return RankBarrier::Passed;
        }
        if self.rank_sync.is_none() {
            let step = self.accels.first().map_or(0, |a| a.step) + 2;
            let what = format!("step {step} of epoch {}", self.epoch + 1);
            match self.p.world.start_sync(&what) {
                Ok(s) => self.rank_sync = Some(s),
                Err(e) => {
                    self.error.get_or_insert_with(|| e.to_string());
                    return RankBarrier::Stopped;
                }
            }
        }
        match self.rank_sync.as_mut().and_then(PendingSync::poll) {
            None => RankBarrier::Waiting,
            Some(Ok(())) => {
                self.rank_sync = None;
                RankBarrier::Passed
            }
            Some(Err(stop)) => {
                self.rank_sync = None;
                if stop.peer_failed {
                    self.error.get_or_insert_with(|| stop.error.to_string());
                } else {
                    self.peer_finished = true;
                }
                RankBarrier::Stopped
            }
        }
    }

    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.origin.expect("started")).as_secs_f64()
    }

    fn start_epoch(&mut self, now: Instant) {
        let all = epoch_samples(
            self.p.shuffle,
            self.p.seed,
            self.epoch,
            self.p.spec.num_files_train,
            self.p.spec.samples_per_file,
            self.p.accelerators,
            self.p.steps,
            self.p.batch,
        );
        let plans = all.into_iter().skip(self.p.hosted.start as usize).take(self.p.hosted.len());
        let w = self.p.read_threads as usize;
        let start_s = self.secs(now);
        self.accels = plans
            .into_iter()
            .map(|samples| Accel {
                samples,
                readers: (0..w).map(|i| Reader { next_batch: i as u64, ..Reader::default() }).collect(),
                ready: HashMap::new(),
                step: 0,
                phase: Phase::Loading(now),
                timeline: EpochTimeline { start_s, end_s: start_s, ..EpochTimeline::default() },
                batch_load_ns: Vec::new(),
                bytes: 0,
            })
            .collect();
        self.epoch_start = Some(now);
    }

    /// Advances step loops; returns the earliest compute end still ahead.
    fn advance(&mut self, now: Instant) -> (Option<Instant>, bool) {
        let mut wake: Option<Instant> = None;
        let mut changed = false;
        for a in &mut self.accels {
            loop {
                match a.phase {
                    Phase::Loading(since) => {
                        let Some(t) = a.ready.remove(&a.step) else { break };
                        let available = t.max(since);
                        let load = available - since;
                        a.batch_load_ns.push(load.as_nanos() as u64);
                        let secs = self.p.compute.sample_s(&mut self.rng);
                        let until = available + Duration::from_secs_f64(secs);
                        a.phase = Phase::Computing { start: available, until, load };
                        changed = true;
                    }
                    Phase::Computing { start, until, load } => {
                        if now < until {
                            wake = Some(wake.map_or(until, |w| w.min(until)));
                            break;
                        }
                        a.timeline.load_s.push(load.as_secs_f64());
                        a.timeline.compute_s.push((until - start).as_secs_f64());
                        a.phase = Phase::Barrier;
                        changed = true;
                    }
                    Phase::Barrier | Phase::EpochDone => break,
                }
            }
        }
        // The barrier: everyone's step done → the next step (or epoch end).
        if !self.accels.is_empty() && self.accels.iter().all(|a| matches!(a.phase, Phase::Barrier)) {
            match self.rank_barrier() {
                RankBarrier::Passed => {}
                RankBarrier::Waiting => {
                    let poll = now + RANK_BARRIER_POLL;
                    return (Some(wake.map_or(poll, |w| w.min(poll))), changed);
                }
                RankBarrier::Stopped => return (None, true),
            }
            self.steps_done += 1;
            for a in &mut self.accels {
                a.step += 1;
                a.phase = if a.step == self.p.steps { Phase::EpochDone } else { Phase::Loading(now) };
            }
            if self.accels.iter().all(|a| matches!(a.phase, Phase::EpochDone)) {
                self.finish_epoch(now);
                return (None, true);
            }
            let (w, _) = self.advance(now);
            return (w, true);
        }
        (wake, changed)
    }

    fn finish_epoch(&mut self, now: Instant) {
        let end_s = self.secs(now);
        let wall_s = now.saturating_duration_since(self.epoch_start.expect("epoch started")).as_secs_f64();
        let mut bytes = 0;
        let mut timelines = Vec::new();
        for a in &mut self.accels {
            a.timeline.end_s = end_s;
            bytes += a.bytes;
            self.batch_load_ns.append(&mut a.batch_load_ns);
            timelines.push(std::mem::take(&mut a.timeline));
        }
        self.epochs_done.push(EpochRecord { accelerators: timelines, bytes_read: bytes, wall_s });
        self.epoch += 1;
        self.accels.clear();
        if self.epoch < self.p.epochs {
            self.start_epoch(now);
        } else {
            self.finished = true;
        }
    }

    /// The next read any reader wants to issue.
    fn next_read(&mut self) -> Option<Request> {
        let p = &self.p;
        for (ai, a) in self.accels.iter_mut().enumerate() {
            let consumed = a.step + u64::from(!matches!(a.phase, Phase::Loading(_)));
            for ri in 0..a.readers.len() {
                let r = &mut a.readers[ri];
                if r.batch.is_none() {
                    let k = r.next_batch;
                    if k >= p.steps || k >= consumed + p.batches_in_flight {
                        continue;
                    }
                    r.batch = Some(k);
                    r.next_sample = 0;
                    r.issue_sample = 0;
                }
                if let Some((obj, offset, len)) = reader_issue(p, &a.samples, r) {
                    r.in_flight += 1;
                    self.inflight.entry((obj.0, offset)).or_default().push((ai, ri));
                    return Some(Request {
                        op: Op::Read { obj, offset, len: len as u32 },
                        data: Data::None,
                        key: READ_KEY,
                        exact: false,
                    });
                }
            }
        }
        None
    }
}

/// The samples of batch `k`.
fn batch_of(samples: &[SampleRef], batch: u64, k: u64) -> &[SampleRef] {
    &samples[(k * batch) as usize..((k + 1) * batch) as usize]
}

/// The reader's next request, if it may issue one now.
fn reader_issue(p: &SourceParams, samples: &[SampleRef], r: &mut Reader) -> Option<(ObjectHandle, u64, u64)> {
    let k = r.batch?;
    let mine = batch_of(samples, p.batch, k);
    while r.in_flight < p.reader_depth && r.issue_sample < mine.len() {
        let (file, sample) = mine[r.issue_sample];
        let same = r.cursor.as_ref().is_some_and(|c| c.file == file);
        if !same {
            if r.in_flight > 0 {
                return None;
            }
            let layout = p.spec.layout(Split::Train, file).ok()?;
            let (a, _) = layout.sample_range(sample);
            let at = align_down(a, p.align);
            r.cursor = Some(Cursor { file, layout, read_upto: at, done_upto: at, pending: VecDeque::new() });
        }
        let c = r.cursor.as_mut().expect("cursor");
        let (a, b) = c.layout.sample_range(sample);
        if align_down(a, p.align) > c.read_upto {
            // Not contiguous with what this reader has read: seek.
            if r.in_flight > 0 {
                return None;
            }
            c.read_upto = align_down(a, p.align);
            c.done_upto = c.read_upto;
        }
        if c.read_upto >= b {
            r.issue_sample += 1;
            continue;
        }
        let end = (c.read_upto + p.request_bytes).min(align_up(c.layout.len, p.align));
        let start = c.read_upto;
        c.read_upto = end;
        c.pending.push_back((start, end, false));
        return Some((p.handles[file as usize], start, end - start));
    }
    None
}

impl TrainSource {
    /// Marks finished samples and batches of reader `ri` of accelerator `ai`.
    fn settle(&mut self, ai: usize, ri: usize, at: Instant) -> bool {
        let batch = self.p.batch;
        let w = self.p.read_threads as u64;
        let a = &mut self.accels[ai];
        let r = &mut a.readers[ri];
        let Some(k) = r.batch else { return false };
        let mine = batch_of(&a.samples, batch, k);
        while r.next_sample < mine.len() {
            let (file, sample) = mine[r.next_sample];
            let Some(c) = r.cursor.as_ref().filter(|c| c.file == file) else { break };
            let (_, b) = c.layout.sample_range(sample);
            if c.done_upto < b.min(c.layout.len) {
                break;
            }
            r.next_sample += 1;
        }
        if r.next_sample == mine.len() {
            a.ready.insert(k, at);
            r.batch = None;
            r.next_batch = k + w;
            return true;
        }
        false
    }
}

impl OpSource for TrainSource {
    fn next(&mut self, now: Instant) -> Next {
        if self.error.is_some() || self.finished || self.peer_finished {
            return Next::Done;
        }
        if self.origin.is_none() {
            self.origin = Some(now);
            self.start_epoch(now);
        }
        // Loop until nothing changes: a batch already covered by a reader's
        // earlier reads finishes without I/O, which can start a step, which
        // can let a reader take a new batch.
        loop {
            let mut changed = false;
            for ai in 0..self.accels.len() {
                for ri in 0..self.accels[ai].readers.len() {
                    if self.accels[ai].readers[ri].in_flight == 0 {
                        changed |= self.settle(ai, ri, now);
                    }
                }
            }
            let (wake, advanced) = self.advance(now);
            if self.finished || self.error.is_some() || self.peer_finished {
                return Next::Done;
            }
            if let Some(req) = self.next_read() {
                return Next::Op(req);
            }
            if !(changed || advanced) {
                return match wake {
                    Some(t) => Next::WaitUntil(t),
                    None => Next::Wait,
                };
            }
        }
    }

    fn completed(&mut self, req: &Request, c: &Completion) {
        let Op::Read { obj, offset, .. } = req.op else { return };
        let Some((ai, ri)) = self.inflight.get_mut(&(obj.0, offset)).and_then(Vec::pop) else {
            self.error.get_or_insert_with(|| format!("internal: completion of an unknown read at {offset}"));
            return;
        };
        if self.inflight.get(&(obj.0, offset)).is_some_and(Vec::is_empty) {
            self.inflight.remove(&(obj.0, offset));
        }
        if let Err(e) = &c.result {
            self.error.get_or_insert_with(|| e.to_string());
            return;
        }
        let verify = self.p.verify;
        let Some(a) = self.accels.get_mut(ai) else {
            self.error.get_or_insert_with(|| "internal: a read completed after its epoch ended".into());
            return;
        };
        a.bytes += c.data().len() as u64;
        let r = &mut a.readers[ri];
        r.in_flight -= 1;
        if let Some(cur) = r.cursor.as_mut() {
            if verify.is_on() {
                self.verify.merge(&cur.layout.verify(c.data(), offset, &verify));
            }
            if let Some(slot) = cur.pending.iter_mut().find(|p| p.0 == offset && !p.2) {
                slot.2 = true;
            }
            while let Some(&(_, end, true)) = cur.pending.front() {
                cur.done_upto = end;
                cur.pending.pop_front();
            }
        }
        self.settle(ai, ri, c.completed);
    }
}
