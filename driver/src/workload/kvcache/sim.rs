//! The request pipelines (spec §4) on one thread: users' arrivals, the
//! priority queue, W workers each running one request at a time as a state
//! machine, and the tier operations those requests cause.
//!
//! [`Sim::next`] answers the engine's "what next?": it fires due timers
//! (arrivals, think and generation times, modelled GPU transfers), hands
//! queued requests to idle workers, advances every runnable pipeline, and
//! returns the next storage I/O (entries are written and read in
//! `kvcache.io_size` chunks, a few in flight per entry) or the time at
//! which something will next happen. Time comes only from the `now` the
//! engine passes, from completions and from the run's [`Clock`] (for the
//! real memory copies of the CPU tier), so a virtual clock drives the same
//! code.
//!
//! Storage: an entry is the object `kvcache/<key>.npy` (created, written
//! with generated data, committed = fsync; read back whole and verified;
//! deleted at terminal eviction). CPU tier: real DRAM, a real copy of the
//! entry's size on every write, read and demotion. GPU tier: no GPU; each
//! access waits `gpu.latency_us + bytes / gpu.bandwidth_gbs`. In trace-only
//! mode (`null_io`) every tier operation completes at once and moves no
//! bytes, like the reference's `--io-trace-log`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use super::cache::{Cache, EntryId, EntryState, Tier};
use super::config::KvConfig;
use super::feed::{Feed, MAX_WAITING};
use super::models::{ModelSpec, Sizing};
use super::pipeline::{Act, Pipe};
use super::rng::Stream;
use super::scheduler::{self, Doc, Generator, KvRequest, UserState};
use super::stats::Stats;
use super::users::build_users;
use crate::clock::Clock;
use crate::datagen;
use crate::engine::Next;
use crate::kvtrace::{TraceOp, TracePhase, TraceRow, TraceTier};
use crate::target::ObjectHandle;

/// Bytes copied per step of a CPU-tier operation.
pub(super) const CPU_CHUNK: usize = 4 << 20;
/// CPU-tier bytes copied per call before yielding to the engine, so storage
/// completions are reaped while large entries are copied.
const CPU_BUDGET: usize = 64 << 20;
/// Keys under which storage entries are stored.
pub const STORAGE_PREFIX: &str = "kvcache/";
/// Entries written by decode-only pre-population and preconditioning.
pub const SETUP_TOKENS: u64 = 2048;

/// The storage tier's namespace operations (the I/O itself goes through
/// the engine).
pub trait Backend {
    fn create(&mut self, name: &str, size_bytes: u64) -> Result<ObjectHandle, String>;
    fn delete(&mut self, name: &str) -> Result<(), String>;
}

/// A backend for trace-only mode and tests: names only.
#[derive(Default)]
pub struct NullBackend {
    next: u32,
}

impl Backend for NullBackend {
    fn create(&mut self, _name: &str, _size: u64) -> Result<ObjectHandle, String> {
        self.next += 1;
        Ok(ObjectHandle(self.next))
    }
    fn delete(&mut self, _name: &str) -> Result<(), String> {
        Ok(())
    }
}

/// The object name of a cache key.
pub fn object_name(key: &str) -> String {
    format!("{STORAGE_PREFIX}{key}.npy")
}

/// How the simulation is run.
#[derive(Clone)]
pub struct Params {
    pub cfg: KvConfig,
    pub model: ModelSpec,
    pub sizing: Sizing,
    pub seed: u64,
    /// No real I/O: every tier op completes at once (trace-only mode, tests).
    pub null_io: bool,
    /// Really copy CPU-tier bytes (false in trace-only mode and tests).
    pub cpu_copy: bool,
    pub storage_bytes: Option<u64>,
    /// Write a real `.npy` header in the first 128 bytes of each storage
    /// entry (else, with `sizing.npy_header`, those bytes are generated
    /// data: the target keeps only generated blocks).
    pub write_npy_header: bool,
    pub io_size: u64,
    pub entry_queue_depth: u32,
    pub trace: bool,
    pub trace_deletes: bool,
    /// Keep going after an error (`continue_on_error`) instead of ending.
    pub continue_on_error: bool,
    pub clock: Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Arrival(u32),
    Wake(usize),
    Tick,
    /// The input feed's next request is due.
    Input,
}

/// Run state of the measured phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Idle,
    Setup,
    Measure,
}

pub struct Sim<'a> {
    pub(super) p: Params,
    pub(super) backend: Box<dyn Backend + Send + 'a>,
    pub cache: Cache,
    pub stats: Stats,
    pub(super) users: Vec<UserState>,
    pub(super) generator: Generator,
    pub docs: Vec<Doc>,
    pub(super) all_docs: Vec<Doc>,
    pub(super) timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    pub(super) timer_seq: u64,
    pub(super) queue: BinaryHeap<(u8, Reverse<u64>)>,
    pub(super) queued: BTreeMap<u64, KvRequest>,
    pub(super) queue_seq: u64,
    pub(super) pipes: Vec<Pipe>,
    pub(super) workers: usize,
    pub(super) idle: Vec<usize>,
    pub(super) ready: VecDeque<usize>,
    pub(super) xfer_active: VecDeque<usize>,
    pub(super) by_handle: BTreeMap<u32, usize>,
    pub(super) handles: BTreeMap<EntryId, ObjectHandle>,
    pub(super) cpu_store: BTreeMap<EntryId, Vec<u8>>,
    pub(super) cpu_active: VecDeque<usize>,
    pub(super) pattern: Vec<u8>,
    pub(super) scratch: Vec<u8>,
    pub(super) lock_waiters: BTreeMap<EntryId, Vec<usize>>,
    pub(super) sem_waiters: VecDeque<usize>,
    pub(super) allocs_running: u32,
    pub(super) setup_items: VecDeque<(String, u64)>,
    pub(super) setup_phase: &'static str,
    pub(super) setup_failures: u32,
    pub(super) mode: Mode,
    pub(super) accepting: bool,
    pub start: Option<Instant>,
    pub end: Option<Instant>,
    pub(super) drain_until: Option<Instant>,
    pub abandoned: bool,
    /// When new work stopped (end of the window or `max_requests`).
    pub stopped_at: Option<Instant>,
    /// When the last request finished.
    pub last_done: Option<Instant>,
    pub(super) trace_t0: Option<Instant>,
    pub(super) last_ts: f64,
    pub trace_rows: Vec<TraceRow>,
    pub(super) in_flight: u32,
    pub(super) last_now: Option<Instant>,
    pub(super) decode_only_keys: Vec<String>,
    /// Trace-driven requests (BurstGPT, ShareGPT) instead of the users.
    pub feed: Option<Feed>,
    pub(super) feed_rng: Stream,
    /// The feed waits for the queue to drain below half of MAX_WAITING.
    pub(super) feed_blocked: bool,
}

pub(super) fn trace_tier(t: Tier) -> TraceTier {
    match t {
        Tier::Gpu => TraceTier::Gpu,
        Tier::Cpu => TraceTier::Cpu,
        Tier::Storage => TraceTier::Storage,
    }
}

impl<'a> Sim<'a> {
    pub fn new(p: Params, backend: Box<dyn Backend + Send + 'a>) -> Sim<'a> {
        let cfg = &p.cfg;
        let cache = Cache::new(cfg.gpu_bytes(), cfg.cpu_bytes(), p.storage_bytes, cfg.eviction.clone());
        let users = build_users(cfg, p.seed)
            .into_iter()
            .enumerate()
            .map(|(i, u)| UserState::new(u, p.seed, i as u32))
            .collect();
        let workers = cfg.workers() as usize;
        let mut pipes: Vec<Pipe> = (0..workers).map(|_| Pipe::default()).collect();
        // One service pipe (setup, RAG ingestion) per extra slot.
        let service = 16.min(workers.max(1));
        for _ in 0..service {
            pipes.push(Pipe { service: true, ..Pipe::default() });
        }
        let mut all_docs = Vec::new();
        if cfg.enable_rag {
            let mut rng = Stream::new(p.seed, "rag-docs", 0);
            for i in 0..cfg.rag_num_docs {
                let tokens = scheduler::doc_tokens(cfg, &p.model, &mut rng);
                all_docs.push(scheduler::make_doc(
                    i,
                    tokens,
                    cfg.rag.chunk_size_tokens,
                    cfg.rag.max_chunk_bytes,
                    p.sizing.bytes_per_token,
                ));
            }
        }
        let cpu_copy = p.cpu_copy && !p.null_io;
        let (pattern, scratch) = if cpu_copy {
            let mut pat = vec![0u8; CPU_CHUNK];
            datagen::fill(&mut pat, p.seed, datagen::object_key("kvcache-cpu-pattern"), 0, 0);
            (pat, vec![0u8; CPU_CHUNK])
        } else {
            (Vec::new(), Vec::new())
        };
        Sim {
            backend,
            cache,
            stats: Stats::default(),
            users,
            generator: Generator::new(),
            docs: Vec::new(),
            all_docs,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            queue: BinaryHeap::new(),
            queued: BTreeMap::new(),
            queue_seq: 0,
            idle: (0..workers).rev().collect(),
            pipes,
            workers,
            ready: VecDeque::new(),
            xfer_active: VecDeque::new(),
            by_handle: BTreeMap::new(),
            handles: BTreeMap::new(),
            cpu_store: BTreeMap::new(),
            cpu_active: VecDeque::new(),
            pattern,
            scratch,
            lock_waiters: BTreeMap::new(),
            sem_waiters: VecDeque::new(),
            allocs_running: 0,
            setup_items: VecDeque::new(),
            setup_phase: "setup",
            setup_failures: 0,
            mode: Mode::Idle,
            accepting: false,
            start: None,
            end: None,
            drain_until: None,
            abandoned: false,
            stopped_at: None,
            last_done: None,
            trace_t0: None,
            last_ts: 0.0,
            trace_rows: Vec::new(),
            in_flight: 0,
            last_now: None,
            decode_only_keys: Vec::new(),
            feed: None,
            feed_rng: Stream::new(p.seed, "input-prefix", 0),
            feed_blocked: false,
            p: Params { cpu_copy, ..p },
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// Queues `count` entries of 2,048 tokens named `{prefix}{n}` to be
    /// written before the measured window (preconditioning, decode-only
    /// pre-population).
    pub fn begin_setup(&mut self, prefix: &str, count: u64, phase: &'static str, now: Instant) {
        self.trace_t0.get_or_insert(now);
        self.setup_phase = phase;
        self.setup_failures = 0;
        for n in 0..count {
            self.setup_items.push_back((format!("{prefix}{n}"), SETUP_TOKENS));
        }
        self.mode = Mode::Setup;
        let n = self.pipes.iter().filter(|p| p.service).count();
        for i in self.workers..self.workers + n {
            self.feed_setup(i);
        }
    }

    pub(super) fn feed_setup(&mut self, i: usize) {
        if let Some((key, tokens)) = self.setup_items.pop_front() {
            self.pipes[i].acts.push_back(Act::Alloc { key, tokens, prefill: false });
            self.ready.push_back(i);
        }
    }

    /// Starts the measured window at `start`: resets the counters, starts
    /// the users' arrivals and RAG ingestion. `end` None: no time limit.
    pub fn begin_measure(&mut self, start: Instant, duration: Option<Duration>, drain: Duration) {
        self.trace_t0.get_or_insert(start);
        self.stats = Stats::default();
        self.setup_phase = "setup";
        self.mode = Mode::Measure;
        self.accepting = true;
        self.start = Some(start);
        self.end = duration.map(|d| start + d);
        self.drain_until = self.end.map(|e| e + drain);
        if self.p.cfg.decode_only {
            self.decode_only_keys = self.cache.keys_with_prefix("prepop_");
        }
        if self.feed.is_some() {
            self.push_timer(start, Timer::Input);
        } else {
            for u in 0..self.users.len() {
                let t = start + self.users[u].think();
                self.push_timer(t, Timer::Arrival(u as u32));
            }
        }
        if let Some(e) = self.end {
            self.push_timer(e, Timer::Tick);
        }
        if let Some(d) = self.drain_until {
            self.push_timer(d, Timer::Tick);
        }
        // RAG documents are ingested in the synthetic mode only, as in kv-cache.py.
        if !self.all_docs.is_empty() && self.feed.is_none() {
            let ingest = self.workers;
            for (i, d) in self.all_docs.iter().enumerate() {
                for (key, tokens) in &d.chunks {
                    self.pipes[ingest].acts.push_back(Act::Alloc { key: key.clone(), tokens: *tokens, prefill: false });
                }
                self.pipes[ingest].acts.push_back(Act::DocDone(i));
            }
            self.ready.push_back(ingest);
        }
    }

    pub(super) fn push_timer(&mut self, t: Instant, ev: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((t, self.timer_seq, ev)));
    }

    /// Storage I/Os issued and not completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub(super) fn busy(&self) -> bool {
        self.pipes.iter().any(|p| p.req.is_some() || p.job.is_some() || !p.acts.is_empty())
    }

    /// True when the phase has nothing left to do.
    pub(super) fn finished(&self) -> bool {
        match self.mode {
            Mode::Idle => true,
            Mode::Setup => self.setup_items.is_empty() && !self.busy(),
            Mode::Measure => !self.accepting && !self.busy(),
        }
    }

    /// The engine's "what next?".
    pub fn next(&mut self, now: Instant) -> Next {
        let now = self.last_now.map_or(now, |l| l.max(now));
        self.last_now = Some(now);
        if !self.abandoned && self.stats.local_errors > 0 && !self.p.continue_on_error {
            // The engine stops at its first I/O error; do the same for ours.
            self.abandon();
        }
        if self.abandoned {
            return if self.in_flight > 0 { Next::Wait } else { Next::Done };
        }
        let mut budget = CPU_BUDGET;
        loop {
            let mut progress = false;
            while let Some(Reverse((t, _, ev))) = self.timers.peek().copied() {
                if t > now {
                    break;
                }
                self.timers.pop();
                self.fire(ev, t, now);
                progress = true;
            }
            if self.drain_until.is_some_and(|d| now >= d) && self.busy() {
                self.abandon();
                return if self.in_flight > 0 { Next::Wait } else { Next::Done };
            }
            while self.accepting && !self.idle.is_empty() && !self.queue.is_empty() {
                self.dispatch(now);
                progress = true;
            }
            while let Some(i) = self.ready.pop_front() {
                self.run_pipe(i, now);
                progress = true;
            }
            if budget > 0 && !self.cpu_active.is_empty() {
                budget = budget.saturating_sub(self.pump_cpu());
                progress = true;
            }
            if !progress {
                break;
            }
        }
        if let Some(req) = self.pick_chunk(now) {
            return Next::Op(req);
        }
        if !self.cpu_active.is_empty() {
            return Next::WaitUntil(now);
        }
        if self.mode == Mode::Measure
            && self.accepting
            && self.feed_exhausted()
            && self.queued.is_empty()
            && self.pipes.iter().all(|p| p.req.is_none())
        {
            // Every request of the input's last pass has completed.
            self.stop_accepting(now);
        }
        if self.finished() {
            return if self.in_flight > 0 { Next::Wait } else { Next::Done };
        }
        if let Some(Reverse((t, _, _))) = self.timers.peek() {
            return Next::WaitUntil(*t);
        }
        if self.in_flight > 0 {
            return Next::Wait;
        }
        // Nothing in flight, no timer, not finished: only possible if
        // every pipe waits on something that cannot happen; end the phase.
        self.abandon();
        Next::Done
    }

    pub(super) fn abandon(&mut self) {
        self.abandoned = true;
        self.stats.requests_unfinished +=
            self.queued.len() as u64 + self.pipes.iter().filter(|p| p.req.is_some()).count() as u64;
        self.queue.clear();
        self.queued.clear();
    }

    pub(super) fn fire(&mut self, ev: Timer, t: Instant, now: Instant) {
        match ev {
            Timer::Tick => {
                if self.end.is_some_and(|e| now >= e) && self.accepting {
                    self.stop_accepting(t);
                }
            }
            Timer::Input => self.feed_input(now),
            Timer::Wake(i) => {
                if let Some(job) = self.pipes[i].job.as_mut()
                    && let Some(r) = job.cur.as_mut()
                {
                    r.done.get_or_insert((t, true));
                }
                self.ready.push_back(i);
            }
            Timer::Arrival(u) => {
                if !self.accepting || self.end.is_some_and(|e| t >= e) {
                    return;
                }
                let reqs = self.generator.arrival(&self.p.cfg, &mut self.users[u as usize], u, t, &self.docs);
                for r in reqs {
                    self.queue_seq += 1;
                    self.queue.push((r.priority, Reverse(self.queue_seq)));
                    self.queued.insert(self.queue_seq, r);
                    self.stats.requests_enqueued += 1;
                }
                self.stats.queue_depth_max = self.stats.queue_depth_max.max(self.queued.len() as u64);
                let next = t + self.users[u as usize].think();
                if self.end.is_none_or(|e| next < e) {
                    self.push_timer(next, Timer::Arrival(u));
                }
            }
        }
    }

    pub(super) fn stop_accepting(&mut self, at: Instant) {
        self.accepting = false;
        self.stopped_at.get_or_insert(at);
        // RAG ingestion stops with the window (its current write finishes).
        for p in self.pipes.iter_mut().filter(|p| p.service) {
            p.acts.clear();
        }
        self.stats.requests_unfinished += self.queued.len() as u64;
        self.queue.clear();
        self.queued.clear();
    }

    /// Enqueues the feed's requests that are due by `now` (at most
    /// MAX_WAITING waiting) and sets the timer for the next one.
    pub(super) fn feed_input(&mut self, now: Instant) {
        let Some(start) = self.start else { return };
        if !self.accepting {
            return;
        }
        self.feed_blocked = false;
        loop {
            let Some(feed) = self.feed.as_mut() else { return };
            let Some(due_s) = feed.next_due_s() else { return };
            let due = start + std::time::Duration::from_secs_f64(due_s);
            if self.end.is_some_and(|e| due >= e) {
                return;
            }
            if due > now {
                self.push_timer(due, Timer::Input);
                return;
            }
            if self.queued.len() >= MAX_WAITING {
                self.feed_blocked = true;
                return;
            }
            let Some(f) = feed.take(&self.p.cfg) else { return };
            let r = self.generator.fed(&self.p.cfg, f, due, &mut self.feed_rng);
            self.queue_seq += 1;
            self.queue.push((r.priority, Reverse(self.queue_seq)));
            self.queued.insert(self.queue_seq, r);
            self.stats.requests_enqueued += 1;
            self.stats.queue_depth_max = self.stats.queue_depth_max.max(self.queued.len() as u64);
        }
    }

    /// True when a trace-driven run has handed out every request.
    pub(super) fn feed_exhausted(&self) -> bool {
        self.feed.as_ref().is_some_and(Feed::exhausted)
    }

    pub(super) fn dispatch(&mut self, now: Instant) {
        let Some((_, Reverse(seq))) = self.queue.pop() else { return };
        let Some(req) = self.queued.remove(&seq) else { return };
        let i = self.idle.pop().expect("an idle worker");
        let acts = self.plan_request(&req);
        let pipe = &mut self.pipes[i];
        *pipe = Pipe { req: Some(req), acts, ..Pipe::default() };
        self.ready.push_back(i);
        if self.feed_blocked && self.queued.len() < MAX_WAITING / 2 {
            self.feed_blocked = false;
            self.push_timer(now, Timer::Input);
        }
    }

    /// Advances pipe `i` until it waits for something.
    pub(super) fn run_pipe(&mut self, i: usize, now: Instant) {
        loop {
            if self.pipes[i].job.is_some() {
                if !self.advance_job(i, now) {
                    return;
                }
                continue;
            }
            let Some(act) = self.pipes[i].acts.pop_front() else {
                self.finish_pipe(i, now);
                return;
            };
            if !self.start_act(i, act, now) {
                return;
            }
        }
    }

    pub(super) fn trace(&mut self, at: Instant, t: &(TraceOp, Tier, TracePhase, String, u64)) {
        if !self.p.trace {
            return;
        }
        let t0 = *self.trace_t0.get_or_insert(at);
        let ts = at.saturating_duration_since(t0).as_secs_f64().max(self.last_ts);
        self.last_ts = ts;
        self.trace_rows.push(TraceRow {
            timestamp_s: ts,
            op: t.0,
            size_bytes: t.4,
            tier: trace_tier(t.1),
            key: t.3.clone(),
            phase: t.2,
        });
    }

    pub(super) fn doc_ingested(&mut self, d: usize) {
        self.docs.push(self.all_docs[d].clone());
        self.stats.rag_docs_ingested += 1;
        let max = self.p.cfg.rag.max_documents as usize;
        if max > 0 && self.docs.len() > max {
            let old = self.docs.remove(0);
            self.stats.rag_docs_evicted += 1;
            for (key, _) in &old.chunks {
                let Some(id) = self.cache.lookup(key) else { continue };
                if self.cache.get(id).is_some_and(|e| e.state == EntryState::Idle) {
                    let e = self.cache.remove(id);
                    self.cpu_store.remove(&id);
                    if e.tier == Tier::Storage && !self.p.null_io {
                        self.handles.remove(&id);
                        let name = object_name(&e.key);
                        if let Err(err) = self.backend_delete(&name) {
                            self.stats.local_error(|| err.clone());
                        }
                    }
                }
            }
        }
    }

    pub(super) fn finish_pipe(&mut self, i: usize, now: Instant) {
        let pipe = std::mem::take(&mut self.pipes[i]);
        if pipe.service {
            self.pipes[i].service = true;
            if self.mode == Mode::Setup {
                if self.setup_failures >= 50 {
                    self.setup_items.clear();
                }
                self.feed_setup(i);
            }
            return;
        }
        let Some(r) = pipe.req else { return };
        self.last_done = Some(self.last_done.map_or(now, |l| l.max(now)));
        let s = &mut self.stats;
        s.requests_completed += 1;
        s.total_tokens_generated += r.gen_tokens;
        let e2e = now.saturating_duration_since(r.submit).as_secs_f64();
        s.e2e_s.push(e2e);
        s.storage_s.push(pipe.storage_s);
        s.generation_s.push(pipe.gen_s);
        if pipe.had_decode {
            s.decode_s.push(pipe.decode_s);
        }
        s.qos_e2e_s.entry(r.qos).or_default().push(e2e);
        if self.end.is_some_and(|e| now > e) {
            s.late_requests += 1;
            s.late_tokens += r.gen_tokens;
        }
        self.idle.push(i);
        let max = self.p.cfg.max_requests;
        if max > 0 && self.stats.requests_completed >= max && self.accepting {
            self.stop_accepting(now);
        }
    }

    /// Bytes of CPU-tier memory really held.
    pub fn cpu_bytes_held(&self) -> u64 {
        self.cpu_store.values().map(|v| v.len() as u64).sum()
    }
}
