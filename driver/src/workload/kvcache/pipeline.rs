//! One request's pipeline (spec §4) as a state machine: the steps of a
//! request (prefix lookup, multi-turn reloads, prefill allocation with its
//! waterfall plan, RAG reads, decode probe and batches, generation time),
//! each carried out as physical tier operations ([`Phys`]) whose
//! completions update the counters.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::cache::{Alloc, EntryId, EntryState, Move, Tier};
use super::scheduler::{self, KvRequest, ReqPhase};
use super::sim::{Mode, Sim, Timer};
use super::tier_io::Running;
use crate::kvtrace::{TraceOp, TracePhase};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadKind {
    System,
    MultiTurn,
    Rag,
    Decode,
}

#[derive(Debug, Clone)]
pub(super) enum Act {
    Read { key: String, kind: ReadKind, probe_gen: Option<u64>, miss_alloc: Option<u64> },
    Alloc { key: String, tokens: u64, prefill: bool },
    Sleep(Duration),
    DocDone(usize),
}

#[derive(Debug, Clone)]
pub(super) enum Phys {
    Gpu { bytes: u64 },
    CpuWrite { id: EntryId, bytes: u64 },
    CpuRead { id: EntryId, bytes: u64 },
    CpuFree { id: EntryId },
    StorageWrite { id: EntryId, bytes: u64 },
    StorageRead { id: EntryId, bytes: u64 },
    StorageDelete { key: String },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Tag {
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

pub(super) struct Step {
    pub(super) phys: Phys,
    pub(super) tag: Tag,
    pub(super) trace: Option<(TraceOp, Tier, TracePhase, String, u64)>,
}

pub(super) struct MoveRec {
    pub(super) id: EntryId,
    pub(super) from: Tier,
    pub(super) to: Tier,
    pub(super) size: u64,
    pub(super) start: Option<Instant>,
    pub(super) ok: bool,
}

pub(super) enum JobKind {
    Read { id: EntryId, kind: ReadKind, probe_gen: Option<u64> },
    Alloc { id: EntryId, prefill: bool },
    Sleep,
}

pub(super) struct Job {
    pub(super) kind: JobKind,
    pub(super) steps: VecDeque<Step>,
    pub(super) cur: Option<Running>,
    pub(super) moves: Vec<MoveRec>,
    pub(super) ok: bool,
    pub(super) lat_s: f64,
    pub(super) device_s: Option<f64>,
}

#[derive(Default)]
pub(super) struct Pipe {
    pub(super) req: Option<KvRequest>,
    pub(super) acts: VecDeque<Act>,
    pub(super) job: Option<Job>,
    pub(super) storage_s: f64,
    pub(super) decode_s: f64,
    pub(super) gen_s: f64,
    pub(super) had_decode: bool,
    /// A setup or ingestion pipe (not a worker; no request record).
    pub(super) service: bool,
    pub(super) holds_sem: bool,
}

impl Sim<'_> {
    /// The steps of one request (spec §4).
    pub(super) fn plan_request(&mut self, r: &KvRequest) -> VecDeque<Act> {
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

    /// Starts an act; false when the pipe must wait (lock, semaphore).
    pub(super) fn start_act(&mut self, i: usize, act: Act, now: Instant) -> bool {
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

    pub(super) fn begin_read(&mut self, i: usize, id: EntryId, kind: ReadKind, probe_gen: Option<u64>) {
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

    pub(super) fn read_phys(&self, tier: Tier, id: EntryId, bytes: u64) -> Phys {
        match tier {
            Tier::Gpu => Phys::Gpu { bytes },
            Tier::Cpu => Phys::CpuRead { id, bytes },
            Tier::Storage => Phys::StorageRead { id, bytes },
        }
    }

    pub(super) fn write_phys(&self, tier: Tier, id: EntryId, bytes: u64) -> Phys {
        match tier {
            Tier::Gpu => Phys::Gpu { bytes },
            Tier::Cpu => Phys::CpuWrite { id, bytes },
            Tier::Storage => Phys::StorageWrite { id, bytes },
        }
    }

    pub(super) fn begin_alloc(&mut self, i: usize, key: &str, tokens: u64, prefill: bool) {
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

    pub(super) fn release_sem(&mut self, i: usize) {
        if self.pipes[i].holds_sem {
            self.pipes[i].holds_sem = false;
            self.allocs_running -= 1;
            if let Some(w) = self.sem_waiters.pop_front() {
                self.ready.push_back(w);
            }
        }
    }

    /// Advances the current job; false when it waits for a completion.
    pub(super) fn advance_job(&mut self, i: usize, now: Instant) -> bool {
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

    /// Accounts a finished physical step.
    pub(super) fn phys_done(&mut self, i: usize, r: Running, at: Instant, ok: bool) {
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

    pub(super) fn finish_move(&mut self, i: usize, mv: usize, at: Instant) {
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

    pub(super) fn wake_lock(&mut self, id: EntryId) {
        if let Some(ws) = self.lock_waiters.remove(&id) {
            self.ready.extend(ws);
        }
    }

    pub(super) fn job_done(&mut self, i: usize, job: Job, _now: Instant) {
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
}
