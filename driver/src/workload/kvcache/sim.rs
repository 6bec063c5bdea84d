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

use super::cache::{Alloc, Cache, EntryId, EntryState, Move, Tier};
use super::config::KvConfig;
use super::models::{ModelSpec, Sizing};
use super::rng::Stream;
use super::scheduler::{self, Doc, Generator, KvRequest, ReqPhase, UserState};
use super::stats::Stats;
use super::users::build_users;
use crate::clock::Clock;
use crate::datagen::{self, Expect};
use crate::engine::{Data, Next, Request};
use crate::kvtrace::{TraceOp, TracePhase, TraceRow, TraceTier};
use crate::recorder::SeriesKey;
use crate::target::{ObjectHandle, Op, OpKind};

/// Bytes copied per step of a CPU-tier operation.
const CPU_CHUNK: usize = 4 << 20;
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
    pub io_size: u64,
    pub entry_queue_depth: u32,
    pub trace: bool,
    pub trace_deletes: bool,
    pub clock: Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadKind {
    System,
    MultiTurn,
    Rag,
    Decode,
}

#[derive(Debug, Clone)]
enum Act {
    Read { key: String, kind: ReadKind, probe_gen: Option<u64>, miss_alloc: Option<u64> },
    Alloc { key: String, tokens: u64, prefill: bool },
    Sleep(Duration),
    DocDone(usize),
}

#[derive(Debug, Clone)]
enum Phys {
    Gpu { bytes: u64 },
    CpuWrite { id: EntryId, bytes: u64 },
    CpuRead { id: EntryId, bytes: u64 },
    CpuFree { id: EntryId },
    StorageWrite { id: EntryId, bytes: u64 },
    StorageRead { id: EntryId, bytes: u64 },
    StorageDelete { key: String },
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    /// A request's read of an entry in `tier`.
    Read(Tier),
    /// The allocation's own write into `tier`.
    EntryWrite(Tier),
    DemoteRead {
        mv: usize,
    },
    DemoteWrite {
        mv: usize,
    },
    Other,
}

struct Step {
    phys: Phys,
    tag: Tag,
    trace: Option<(TraceOp, Tier, TracePhase, String, u64)>,
}

struct Transfer {
    handle: ObjectHandle,
    write: bool,
    size: u64,
    next_off: u64,
    in_flight: u32,
    commit_issued: bool,
    failed: bool,
    object: u64,
    generation: u64,
    phase: &'static str,
    first_submit: Option<Instant>,
}

struct Running {
    step: Step,
    start: Instant,
    /// CPU copy progress.
    pos: u64,
    xfer: Option<Transfer>,
    done: Option<(Instant, bool)>,
}

struct MoveRec {
    id: EntryId,
    from: Tier,
    to: Tier,
    size: u64,
    start: Option<Instant>,
    ok: bool,
}

enum JobKind {
    Read { id: EntryId, kind: ReadKind, probe_gen: Option<u64> },
    Alloc { id: EntryId, prefill: bool },
    Sleep,
}

struct Job {
    kind: JobKind,
    steps: VecDeque<Step>,
    cur: Option<Running>,
    moves: Vec<MoveRec>,
    ok: bool,
    lat_s: f64,
    device_s: Option<f64>,
}

#[derive(Default)]
struct Pipe {
    req: Option<KvRequest>,
    acts: VecDeque<Act>,
    job: Option<Job>,
    storage_s: f64,
    decode_s: f64,
    gen_s: f64,
    had_decode: bool,
    /// A setup or ingestion pipe (not a worker; no request record).
    service: bool,
    holds_sem: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Arrival(u32),
    Wake(usize),
    Tick,
}

/// Run state of the measured phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Setup,
    Measure,
}

pub struct Sim<'a> {
    p: Params,
    backend: Box<dyn Backend + Send + 'a>,
    pub cache: Cache,
    pub stats: Stats,
    users: Vec<UserState>,
    generator: Generator,
    pub docs: Vec<Doc>,
    all_docs: Vec<Doc>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    queue: BinaryHeap<(u8, Reverse<u64>)>,
    queued: BTreeMap<u64, KvRequest>,
    queue_seq: u64,
    pipes: Vec<Pipe>,
    workers: usize,
    idle: Vec<usize>,
    ready: VecDeque<usize>,
    xfer_active: VecDeque<usize>,
    by_handle: BTreeMap<u32, usize>,
    handles: BTreeMap<EntryId, ObjectHandle>,
    cpu_store: BTreeMap<EntryId, Vec<u8>>,
    cpu_active: VecDeque<usize>,
    pattern: Vec<u8>,
    scratch: Vec<u8>,
    lock_waiters: BTreeMap<EntryId, Vec<usize>>,
    sem_waiters: VecDeque<usize>,
    allocs_running: u32,
    setup_items: VecDeque<(String, u64)>,
    setup_phase: &'static str,
    setup_failures: u32,
    mode: Mode,
    accepting: bool,
    pub start: Option<Instant>,
    pub end: Option<Instant>,
    drain_until: Option<Instant>,
    pub abandoned: bool,
    /// When new work stopped (end of the window or `max_requests`).
    pub stopped_at: Option<Instant>,
    /// When the last request finished.
    pub last_done: Option<Instant>,
    trace_t0: Option<Instant>,
    last_ts: f64,
    pub trace_rows: Vec<TraceRow>,
    in_flight: u32,
    last_now: Option<Instant>,
    decode_only_keys: Vec<String>,
}

fn trace_tier(t: Tier) -> TraceTier {
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

    fn feed_setup(&mut self, i: usize) {
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
        for u in 0..self.users.len() {
            let t = start + self.users[u].think();
            self.push_timer(t, Timer::Arrival(u as u32));
        }
        if let Some(e) = self.end {
            self.push_timer(e, Timer::Tick);
        }
        if let Some(d) = self.drain_until {
            self.push_timer(d, Timer::Tick);
        }
        if !self.all_docs.is_empty() {
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

    fn push_timer(&mut self, t: Instant, ev: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((t, self.timer_seq, ev)));
    }

    /// Storage I/Os issued and not completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    fn busy(&self) -> bool {
        self.pipes.iter().any(|p| p.req.is_some() || p.job.is_some() || !p.acts.is_empty())
    }

    /// True when the phase has nothing left to do.
    fn finished(&self) -> bool {
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

    fn abandon(&mut self) {
        self.abandoned = true;
        self.stats.requests_unfinished +=
            self.queued.len() as u64 + self.pipes.iter().filter(|p| p.req.is_some()).count() as u64;
        self.queue.clear();
        self.queued.clear();
    }

    fn fire(&mut self, ev: Timer, t: Instant, now: Instant) {
        match ev {
            Timer::Tick => {
                if self.end.is_some_and(|e| now >= e) && self.accepting {
                    self.stop_accepting(t);
                }
            }
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

    fn stop_accepting(&mut self, at: Instant) {
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

    fn dispatch(&mut self, now: Instant) {
        let Some((_, Reverse(seq))) = self.queue.pop() else { return };
        let Some(req) = self.queued.remove(&seq) else { return };
        let i = self.idle.pop().expect("an idle worker");
        let acts = self.plan_request(&req);
        let pipe = &mut self.pipes[i];
        *pipe = Pipe { req: Some(req), acts, ..Pipe::default() };
        let _ = now;
        self.ready.push_back(i);
    }

    /// The steps of one request (spec §4).
    fn plan_request(&mut self, r: &KvRequest) -> VecDeque<Act> {
        let cfg = &self.p.cfg;
        let mut acts = VecDeque::new();
        if let Some(p) = r.prefix_prompt {
            let (key, ntok) = scheduler::system_prompt_entry(p);
            // Decode-only runs write nothing during the window.
            let miss_alloc = (!cfg.decode_only).then_some(ntok);
            acts.push_back(Act::Read { key, kind: ReadKind::System, probe_gen: None, miss_alloc });
        }
        if r.turn > 1
            && !cfg.decode_only
            && let Some(c) = r.conv
            && let Some(keys) = self.generator.conversations.other_keys(c, &r.key)
        {
            for key in keys {
                acts.push_back(Act::Read { key, kind: ReadKind::MultiTurn, probe_gen: None, miss_alloc: None });
            }
        }
        if !cfg.decode_only && r.phase != ReqPhase::Decode {
            acts.push_back(Act::Alloc { key: r.key.clone(), tokens: r.context_tokens, prefill: true });
        }
        let exec = &mut self.users[r.user as usize].exec;
        if r.rag_read && !self.docs.is_empty() {
            let d = &self.docs[exec.below(self.docs.len() as u64) as usize];
            for i in
                scheduler::top_k(d.chunks.len(), cfg.rag.top_k_chunks as usize, cfg.rag.retrieval_distribution, exec)
            {
                acts.push_back(Act::Read {
                    key: d.chunks[i].0.clone(),
                    kind: ReadKind::Rag,
                    probe_gen: None,
                    miss_alloc: None,
                });
            }
        }
        if !cfg.prefill_only && r.phase != ReqPhase::Prefill {
            let key = if cfg.decode_only {
                if self.decode_only_keys.is_empty() {
                    None
                } else {
                    Some(self.decode_only_keys[exec.below(self.decode_only_keys.len() as u64) as usize].clone())
                }
            } else {
                Some(r.key.clone())
            };
            if let Some(key) = key {
                let miss_alloc = if cfg.decode_only { None } else { Some(r.context_tokens) };
                acts.push_back(Act::Read { key, kind: ReadKind::Decode, probe_gen: Some(r.gen_tokens), miss_alloc });
            }
        }
        let gen_s = r.gen_tokens as f64 * cfg.seconds_per_token();
        if gen_s > 0.0 {
            acts.push_back(Act::Sleep(Duration::from_secs_f64(gen_s)));
        }
        acts
    }

    /// Advances pipe `i` until it waits for something.
    fn run_pipe(&mut self, i: usize, now: Instant) {
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

    /// Starts an act; false when the pipe must wait (lock, semaphore).
    fn start_act(&mut self, i: usize, act: Act, now: Instant) -> bool {
        match act {
            Act::Sleep(d) => {
                self.pipes[i].gen_s += d.as_secs_f64();
                self.pipes[i].job = Some(Job {
                    kind: JobKind::Sleep,
                    steps: VecDeque::new(),
                    cur: Some(Running {
                        step: Step { phys: Phys::Gpu { bytes: 0 }, tag: Tag::Other, trace: None },
                        start: now,
                        pos: 0,
                        xfer: None,
                        done: None,
                    }),
                    moves: Vec::new(),
                    ok: true,
                    lat_s: 0.0,
                    device_s: None,
                });
                self.push_timer(now + d, Timer::Wake(i));
                true
            }
            Act::DocDone(d) => {
                self.doc_ingested(d);
                true
            }
            Act::Read { key, kind, probe_gen, miss_alloc } => {
                let found = self.cache.lookup(&key).map(|id| (id, self.cache.get(id).expect("entry").state));
                match found {
                    Some((id, EntryState::Reading | EntryState::Moving { .. })) => {
                        self.lock_waiters.entry(id).or_default().push(i);
                        self.pipes[i].acts.push_front(Act::Read { key, kind, probe_gen, miss_alloc });
                        false
                    }
                    Some((id, EntryState::Idle)) => {
                        self.begin_read(i, id, kind, probe_gen);
                        true
                    }
                    None | Some((_, EntryState::Writing)) => {
                        self.stats.cache_misses += 1;
                        match kind {
                            ReadKind::MultiTurn => self.stats.multi_turn_cache_misses += 1,
                            ReadKind::System => self.stats.prefix_misses += 1,
                            _ => {}
                        }
                        if let Some(tokens) = miss_alloc {
                            self.pipes[i].acts.push_front(Act::Alloc {
                                key,
                                tokens,
                                prefill: kind == ReadKind::Decode,
                            });
                        }
                        if kind == ReadKind::Decode {
                            self.pipes[i].had_decode = true;
                        }
                        true
                    }
                }
            }
            Act::Alloc { key, tokens, prefill } => {
                let limit = self.p.cfg.max_concurrent_allocs;
                if limit > 0 && !self.pipes[i].holds_sem {
                    if self.allocs_running >= limit {
                        self.sem_waiters.push_back(i);
                        self.pipes[i].acts.push_front(Act::Alloc { key, tokens, prefill });
                        return false;
                    }
                    self.allocs_running += 1;
                    self.stats.concurrent_allocs_max = self.stats.concurrent_allocs_max.max(self.allocs_running);
                    self.pipes[i].holds_sem = true;
                }
                self.begin_alloc(i, &key, tokens, prefill);
                true
            }
        }
    }

    fn begin_read(&mut self, i: usize, id: EntryId, kind: ReadKind, probe_gen: Option<u64>) {
        self.cache.begin_read(id);
        let e = self.cache.get(id).expect("entry");
        let (tier, size, key) = (e.tier, e.size_bytes, e.key.clone());
        self.stats.cache_hits += 1;
        match kind {
            ReadKind::System => {
                self.stats.system_prompt_hits += 1;
                self.stats.prefix_hits += 1;
                self.stats.prefix_bytes_saved += e.tokens * self.p.sizing.bytes_per_token;
            }
            ReadKind::MultiTurn => {
                self.stats.multi_turn_hits += 1;
                self.stats.multi_turn_cache_hits += 1;
            }
            ReadKind::Rag | ReadKind::Decode => self.stats.user_cache_hits += 1,
        }
        if kind == ReadKind::Decode {
            self.pipes[i].had_decode = true;
        }
        let phys = self.read_phys(tier, id, size);
        let step =
            Step { phys, tag: Tag::Read(tier), trace: Some((TraceOp::Read, tier, TracePhase::Decode, key, size)) };
        self.pipes[i].job = Some(Job {
            kind: JobKind::Read { id, kind, probe_gen },
            steps: VecDeque::from([step]),
            cur: None,
            moves: Vec::new(),
            ok: true,
            lat_s: 0.0,
            device_s: None,
        });
    }

    fn read_phys(&self, tier: Tier, id: EntryId, bytes: u64) -> Phys {
        match tier {
            Tier::Gpu => Phys::Gpu { bytes },
            Tier::Cpu => Phys::CpuRead { id, bytes },
            Tier::Storage => Phys::StorageRead { id, bytes },
        }
    }

    fn write_phys(&self, tier: Tier, id: EntryId, bytes: u64) -> Phys {
        match tier {
            Tier::Gpu => Phys::Gpu { bytes },
            Tier::Cpu => Phys::CpuWrite { id, bytes },
            Tier::Storage => Phys::StorageWrite { id, bytes },
        }
    }

    fn begin_alloc(&mut self, i: usize, key: &str, tokens: u64, prefill: bool) {
        let size = self.p.sizing.entry_bytes(tokens);
        match self.cache.allocate(key, tokens, size) {
            Alloc::Exists(_) => {
                if prefill {
                    self.stats.prefill_s.push(0.0);
                }
                self.release_sem(i);
            }
            Alloc::Placed { id, tier, plan, forced } => {
                if forced {
                    self.stats.forced_writes += 1;
                }
                let mut steps = VecDeque::new();
                let mut moves = Vec::new();
                for m in plan {
                    match m {
                        Move::Demote { id: vid, key: vkey, size_bytes, from, to } => {
                            let mv = moves.len();
                            moves.push(MoveRec { id: vid, from, to, size: size_bytes, start: None, ok: true });
                            steps.push_back(Step {
                                phys: self.read_phys(from, vid, size_bytes),
                                tag: Tag::DemoteRead { mv },
                                trace: Some((TraceOp::Read, from, TracePhase::Evict, vkey.clone(), size_bytes)),
                            });
                            steps.push_back(Step {
                                phys: self.write_phys(to, vid, size_bytes),
                                tag: Tag::DemoteWrite { mv },
                                trace: Some((TraceOp::Write, to, TracePhase::Evict, vkey, size_bytes)),
                            });
                            if from == Tier::Cpu {
                                steps.push_back(Step { phys: Phys::CpuFree { id: vid }, tag: Tag::Other, trace: None });
                            }
                        }
                        Move::Delete { id: did, key: dkey, size_bytes, tier: dt, .. } => {
                            self.handles.remove(&did);
                            self.stats.evictions += 1;
                            self.stats.storage_deletes += 1;
                            let trace = self
                                .p
                                .trace_deletes
                                .then(|| (TraceOp::Delete, dt, TracePhase::Evict, dkey.clone(), size_bytes));
                            steps.push_back(Step { phys: Phys::StorageDelete { key: dkey }, tag: Tag::Other, trace });
                        }
                    }
                }
                steps.push_back(Step {
                    phys: self.write_phys(tier, id, size),
                    tag: Tag::EntryWrite(tier),
                    trace: Some((TraceOp::Write, tier, TracePhase::Prefill, key.to_string(), size)),
                });
                self.pipes[i].job = Some(Job {
                    kind: JobKind::Alloc { id, prefill },
                    steps,
                    cur: None,
                    moves,
                    ok: true,
                    lat_s: 0.0,
                    device_s: None,
                });
            }
        }
    }

    fn release_sem(&mut self, i: usize) {
        if self.pipes[i].holds_sem {
            self.pipes[i].holds_sem = false;
            self.allocs_running -= 1;
            if let Some(w) = self.sem_waiters.pop_front() {
                self.ready.push_back(w);
            }
        }
    }

    /// Advances the current job; false when it waits for a completion.
    fn advance_job(&mut self, i: usize, now: Instant) -> bool {
        loop {
            let job = self.pipes[i].job.as_mut().expect("job");
            if let Some(r) = &job.cur {
                let Some((at, ok)) = r.done else { return false };
                let r = job.cur.take().expect("running");
                self.phys_done(i, r, at, ok);
                continue;
            }
            if let Some(step) = job.steps.pop_front() {
                self.start_phys(i, step, now);
                continue;
            }
            let job = self.pipes[i].job.take().expect("job");
            self.job_done(i, job, now);
            return true;
        }
    }

    fn trace(&mut self, at: Instant, t: &(TraceOp, Tier, TracePhase, String, u64)) {
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

    fn start_phys(&mut self, i: usize, step: Step, now: Instant) {
        if let Some(t) = &step.trace {
            self.trace(now, t);
        }
        let job = self.pipes[i].job.as_mut().expect("job");
        if let Tag::DemoteRead { mv } = step.tag {
            job.moves[mv].start = Some(now);
        }
        let mut run = Running { step, start: now, pos: 0, xfer: None, done: None };
        let null = self.p.null_io;
        match &run.step.phys {
            Phys::Gpu { bytes } => {
                if null {
                    run.done = Some((now, true));
                } else {
                    let g = &self.p.cfg.gpu;
                    let secs = g.latency_us / 1e6 + *bytes as f64 / (g.bandwidth_gbs * (1u64 << 30) as f64);
                    self.push_timer(now + Duration::from_secs_f64(secs), Timer::Wake(i));
                }
            }
            Phys::CpuWrite { id, bytes } => {
                if self.p.cpu_copy {
                    let mut v = Vec::new();
                    if v.try_reserve_exact(*bytes as usize).is_err() {
                        let b = *bytes;
                        self.stats.error(|| format!("CPU tier: cannot allocate {b} bytes of memory"));
                        run.done = Some((now, false));
                    } else {
                        self.cpu_store.insert(*id, v);
                        self.cpu_active.push_back(i);
                    }
                } else {
                    run.done = Some((now, true));
                }
            }
            Phys::CpuRead { .. } => {
                if self.p.cpu_copy {
                    self.cpu_active.push_back(i);
                } else {
                    run.done = Some((now, true));
                }
            }
            Phys::CpuFree { id } => {
                self.cpu_store.remove(id);
                run.done = Some((now, true));
            }
            Phys::StorageDelete { key } => {
                if !null {
                    let name = object_name(key);
                    if let Err(e) = self.backend_delete(&name) {
                        self.stats.error(|| format!("delete {name}: {e}"));
                    }
                }
                run.done = Some((now, true));
            }
            Phys::StorageWrite { id, bytes } | Phys::StorageRead { id, bytes } => {
                let write = matches!(run.step.phys, Phys::StorageWrite { .. });
                if null {
                    run.done = Some((now, true));
                } else {
                    let e = self.cache.get(*id).expect("entry");
                    let name = object_name(&e.key);
                    let generation = e.generation;
                    let phase = match run.step.tag {
                        Tag::DemoteWrite { .. } | Tag::DemoteRead { .. } => "evict",
                        Tag::Read(_) => "decode",
                        _ if self.mode == Mode::Setup => self.setup_phase,
                        _ => "prefill",
                    };
                    let handle = if write {
                        match self.backend_create(&name, *bytes) {
                            Ok(h) => {
                                self.handles.insert(*id, h);
                                Some(h)
                            }
                            Err(e) => {
                                self.stats.error(|| format!("create {name}: {e}"));
                                None
                            }
                        }
                    } else {
                        let h = self.handles.get(id).copied();
                        if h.is_none() {
                            self.stats.error(|| format!("read {name}: the entry has no storage object"));
                        }
                        h
                    };
                    match handle {
                        Some(h) => {
                            run.xfer = Some(Transfer {
                                handle: h,
                                write,
                                size: *bytes,
                                next_off: 0,
                                in_flight: 0,
                                commit_issued: false,
                                failed: false,
                                object: datagen::object_key(&name),
                                generation,
                                phase,
                                first_submit: None,
                            });
                            self.by_handle.insert(h.0, i);
                            self.xfer_active.push_back(i);
                        }
                        None => run.done = Some((now, false)),
                    }
                }
            }
        }
        self.pipes[i].job.as_mut().expect("job").cur = Some(run);
    }

    /// Storage namespace calls go through the backend set for the phase.
    fn backend_create(&mut self, name: &str, size: u64) -> Result<ObjectHandle, String> {
        self.backend.create(name, size)
    }

    fn backend_delete(&mut self, name: &str) -> Result<(), String> {
        self.backend.delete(name)
    }

    /// Copies up to a chunk for each CPU op in turn; returns bytes copied.
    fn pump_cpu(&mut self) -> usize {
        let mut copied = 0;
        let n = self.cpu_active.len();
        for _ in 0..n {
            let Some(i) = self.cpu_active.pop_front() else { break };
            let job = self.pipes[i].job.as_mut().expect("job");
            let run = job.cur.as_mut().expect("running");
            let (id, bytes, write) = match run.step.phys {
                Phys::CpuWrite { id, bytes } => (id, bytes, true),
                Phys::CpuRead { id, bytes } => (id, bytes, false),
                _ => unreachable!("cpu_active holds CPU ops"),
            };
            let len = ((bytes - run.pos) as usize).min(CPU_CHUNK);
            let ok = match self.cpu_store.get_mut(&id) {
                Some(v) if write => {
                    v.extend_from_slice(&self.pattern[..len]);
                    true
                }
                Some(v) => {
                    let at = run.pos as usize;
                    self.scratch[..len].copy_from_slice(&v[at..at + len]);
                    std::hint::black_box(&self.scratch);
                    true
                }
                None => false,
            };
            copied += len;
            run.pos += len as u64;
            if !ok {
                run.done = Some((self.p.clock.now(), false));
                self.ready.push_back(i);
            } else if run.pos >= bytes {
                run.done = Some((self.p.clock.now(), true));
                self.ready.push_back(i);
            } else {
                self.cpu_active.push_back(i);
            }
        }
        copied
    }

    /// The next storage chunk (or commit) of an active transfer.
    fn pick_chunk(&mut self, now: Instant) -> Option<Request> {
        let n = self.xfer_active.len();
        for _ in 0..n {
            let i = self.xfer_active.pop_front()?;
            let Some(job) = self.pipes[i].job.as_mut() else { continue };
            let Some(run) = job.cur.as_mut() else { continue };
            let Some(x) = run.xfer.as_mut() else { continue };
            let more = !x.failed && (x.next_off < x.size || (x.write && !x.commit_issued));
            if !more {
                continue; // waits for its in-flight ops only
            }
            if x.in_flight >= self.p.entry_queue_depth {
                self.xfer_active.push_back(i);
                continue;
            }
            let req = if x.next_off < x.size {
                let len = (x.size - x.next_off).min(self.p.io_size) as u32;
                let off = x.next_off;
                x.next_off += u64::from(len);
                let (op, data, kind) = if x.write {
                    (
                        Op::Write { obj: x.handle, offset: off, len },
                        Data::Fill { object: x.object, seed: self.p.seed, generation: x.generation },
                        OpKind::Write,
                    )
                } else {
                    (
                        Op::Read { obj: x.handle, offset: off, len },
                        Data::Verify(Expect { seed: self.p.seed, object: x.object, generation: Some(x.generation) }),
                        OpKind::Read,
                    )
                };
                Request { op, data, key: SeriesKey { phase: x.phase, op: kind, tier: "storage" }, exact: !x.write }
            } else if x.in_flight == 0 {
                x.commit_issued = true;
                Request {
                    op: Op::Commit { obj: x.handle, size: x.size },
                    data: Data::None,
                    key: SeriesKey { phase: x.phase, op: OpKind::Commit, tier: "storage" },
                    exact: false,
                }
            } else {
                // All chunks issued: the commit follows their completion.
                self.xfer_active.push_back(i);
                continue;
            };
            x.in_flight += 1;
            x.first_submit.get_or_insert(now);
            self.in_flight += 1;
            self.xfer_active.push_back(i);
            return Some(req);
        }
        None
    }

    /// A storage op completed (`Err` = failed with that message).
    pub fn completed(&mut self, req: &Request, result: Result<u32, String>, at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let h = req.op.obj().0;
        let Some(&i) = self.by_handle.get(&h) else { return };
        let Some(job) = self.pipes[i].job.as_mut() else { return };
        let Some(run) = job.cur.as_mut() else { return };
        let Some(x) = run.xfer.as_mut() else { return };
        x.in_flight -= 1;
        if let Err(e) = result {
            x.failed = true;
            self.stats.error(|| e);
        }
        let finished = x.in_flight == 0 && (x.failed || (x.next_off >= x.size && (!x.write || x.commit_issued)));
        if finished {
            let ok = !x.failed;
            let first = x.first_submit.unwrap_or(at);
            job.device_s = Some(at.saturating_duration_since(first).as_secs_f64());
            run.done = Some((at, ok));
            self.by_handle.remove(&h);
            self.xfer_active.retain(|&p| p != i);
            self.ready.push_back(i);
        }
    }

    /// Accounts a finished physical step.
    fn phys_done(&mut self, i: usize, r: Running, at: Instant, ok: bool) {
        let lat = at.saturating_duration_since(r.start).as_secs_f64();
        let end = self.end;
        let job = self.pipes[i].job.as_mut().expect("job");
        if !ok {
            job.ok = false;
        }
        let device = job.device_s.take();
        match r.step.tag {
            Tag::Read(tier) | Tag::EntryWrite(tier) => {
                job.lat_s = lat;
                let is_read = matches!(r.step.tag, Tag::Read(_));
                let bytes = match r.step.phys {
                    Phys::Gpu { bytes }
                    | Phys::CpuRead { bytes, .. }
                    | Phys::CpuWrite { bytes, .. }
                    | Phys::StorageRead { bytes, .. }
                    | Phys::StorageWrite { bytes, .. } => bytes,
                    _ => 0,
                };
                if !ok {
                    return;
                }
                if is_read {
                    self.stats.tier_read(tier, bytes, (!self.p.null_io).then_some(lat), at, end);
                    self.stats.read_operations += 1;
                    self.stats.total_read_bytes += bytes;
                } else {
                    self.stats.tier_write(tier, bytes, (!self.p.null_io).then_some(lat), at, end);
                    self.stats.write_operations += 1;
                    self.stats.total_write_bytes += bytes;
                    match tier {
                        Tier::Cpu => self.stats.offloads_cpu += 1,
                        Tier::Storage => self.stats.offloads_storage += 1,
                        Tier::Gpu => {}
                    }
                }
                if tier == Tier::Storage && !self.p.null_io {
                    let dev = device.unwrap_or(lat).min(lat);
                    let ts = self.stats.tier(Tier::Storage);
                    if is_read {
                        ts.read_device_s.push(dev);
                        ts.read_host_s.push(lat - dev);
                    } else {
                        ts.write_device_s.push(dev);
                        ts.write_host_s.push(lat - dev);
                    }
                }
                if tier == Tier::Storage {
                    let tokens = bytes / self.p.sizing.bytes_per_token.max(1) * self.p.sizing.tensor_parallel;
                    self.stats.storage_tokens_processed += tokens;
                }
            }
            Tag::DemoteRead { mv } => {
                if !ok {
                    job.moves[mv].ok = false;
                    // Skip the write of a move whose read failed.
                    if let Some(s) = job.steps.front()
                        && matches!(s.tag, Tag::DemoteWrite { mv: m } if m == mv)
                    {
                        job.steps.pop_front();
                        self.finish_move(i, mv, at);
                    }
                }
            }
            Tag::DemoteWrite { mv } => {
                if !ok {
                    job.moves[mv].ok = false;
                }
                self.finish_move(i, mv, at);
            }
            Tag::Other => {}
        }
    }

    fn finish_move(&mut self, i: usize, mv: usize, at: Instant) {
        let job = self.pipes[i].job.as_mut().expect("job");
        let m = &job.moves[mv];
        let (id, from, to, size, ok) = (m.id, m.from, m.to, m.size, m.ok);
        let lat = m.start.map_or(0.0, |s| at.saturating_duration_since(s).as_secs_f64());
        self.stats.evictions += 1;
        if ok {
            match to {
                Tier::Cpu => self.stats.offloads_cpu += 1,
                Tier::Storage => {
                    self.stats.offloads_storage += 1;
                    let bpt = (self.p.sizing.bytes_per_token / self.p.sizing.tensor_parallel.max(1)).max(1);
                    self.stats.storage_tokens_processed += size / bpt;
                }
                Tier::Gpu => {}
            }
            let in_window = self.end.is_none_or(|e| at <= e);
            let src = self.stats.tier(from);
            src.demoted_out_bytes += size;
            if in_window {
                src.read_bytes_window += size;
            }
            let dst = self.stats.tier(to);
            dst.demoted_in_bytes += size;
            if in_window {
                dst.write_bytes_window += size;
            }
            let d = self.stats.demotions.entry((from, to)).or_default();
            d.count += 1;
            d.bytes += size;
            if !self.p.null_io {
                d.lat_s.push(lat);
            }
        } else {
            if from == Tier::Cpu {
                self.cpu_store.remove(&id);
            }
        }
        if !ok && to == Tier::Storage {
            self.handles.remove(&id);
        }
        self.cache.end_io(id, ok);
        self.wake_lock(id);
    }

    fn wake_lock(&mut self, id: EntryId) {
        if let Some(ws) = self.lock_waiters.remove(&id) {
            self.ready.extend(ws);
        }
    }

    fn job_done(&mut self, i: usize, job: Job, _now: Instant) {
        match job.kind {
            JobKind::Sleep => {}
            JobKind::Read { id, kind, probe_gen } => {
                self.cache.end_io(id, job.ok);
                self.wake_lock(id);
                let pipe = &mut self.pipes[i];
                pipe.storage_s += job.lat_s;
                if kind == ReadKind::Decode {
                    pipe.decode_s += job.lat_s;
                    if job.ok {
                        self.stats.decode_reads += 1;
                    }
                }
                if job.ok
                    && let Some(gen_tokens) = probe_gen
                {
                    let key = self.cache.get(id).map(|e| e.key.clone());
                    if let Some(key) = key {
                        let n = gen_tokens.div_ceil(self.p.cfg.decode.batch_size).max(1);
                        for _ in 0..n {
                            self.pipes[i].acts.push_front(Act::Read {
                                key: key.clone(),
                                kind: ReadKind::Decode,
                                probe_gen: None,
                                miss_alloc: None,
                            });
                        }
                    }
                }
            }
            JobKind::Alloc { id, prefill } => {
                if !job.ok {
                    let tier = self.cache.get(id).map(|e| e.tier);
                    if tier == Some(Tier::Cpu) {
                        self.cpu_store.remove(&id);
                    }
                    self.handles.remove(&id);
                    if self.mode == Mode::Setup {
                        self.setup_failures += 1;
                    }
                } else if self.mode == Mode::Setup {
                    self.setup_failures = 0;
                }
                self.cache.end_io(id, job.ok);
                self.wake_lock(id);
                if prefill {
                    self.stats.prefill_writes += 1;
                    self.stats.prefill_s.push(job.lat_s);
                }
                self.pipes[i].storage_s += job.lat_s;
                self.release_sem(i);
            }
        }
    }

    fn doc_ingested(&mut self, d: usize) {
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
                            self.stats.error(|| format!("delete {name}: {err}"));
                        }
                    }
                }
            }
        }
    }

    fn finish_pipe(&mut self, i: usize, now: Instant) {
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
