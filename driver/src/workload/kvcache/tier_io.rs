//! The physical tier operations: the modelled GPU wait, the CPU tier's
//! real memory copies (in steps, interleaved with storage completions) and
//! the storage tier's chunked I/O through the engine (create, write chunks,
//! commit; read chunks with verification; delete).

use std::time::{Duration, Instant};

use super::models::NPY_HEADER_BYTES;
use super::npy;
use super::pipeline::{Phys, Step, Tag};
use super::sim::{CPU_CHUNK, Mode, Sim, Timer, object_name};
use crate::datagen::{self, Expect, Verifier, VerifyOutcome};
use crate::engine::{Data, Request};
use crate::recorder::SeriesKey;
use crate::target::{ObjectHandle, Op, OpKind};

pub(super) struct Transfer {
    pub(super) handle: ObjectHandle,
    pub(super) write: bool,
    pub(super) size: u64,
    pub(super) next_off: u64,
    pub(super) in_flight: u32,
    pub(super) commit_issued: bool,
    pub(super) failed: bool,
    pub(super) object: u64,
    pub(super) generation: u64,
    pub(super) phase: &'static str,
    pub(super) first_submit: Option<Instant>,
    /// The entry's `.npy` header (the object's first bytes), when on.
    pub(super) npy_header: Option<Vec<u8>>,
}

pub(super) struct Running {
    pub(super) step: Step,
    pub(super) start: Instant,
    /// CPU copy progress.
    pub(super) pos: u64,
    pub(super) xfer: Option<Transfer>,
    pub(super) done: Option<(Instant, bool)>,
}

impl Sim<'_> {
    /// A modelled transfer: pipe `i` wakes after `latency_us + bytes /
    /// bandwidth` (GiB/s).
    fn model_wait(&mut self, i: usize, now: Instant, bytes: u64, latency_us: f64, bandwidth_gbs: f64) {
        let secs = latency_us / 1e6 + bytes as f64 / (bandwidth_gbs * (1u64 << 30) as f64);
        self.push_timer(now + Duration::from_secs_f64(secs), Timer::Wake(i));
    }

    pub(super) fn start_phys(&mut self, i: usize, step: Step, now: Instant) {
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
                    self.model_wait(i, now, *bytes, g.latency_us, g.bandwidth_gbs);
                }
            }
            Phys::CpuWrite { id, bytes } => {
                if self.p.cpu_copy {
                    let mut v = Vec::new();
                    if v.try_reserve_exact(*bytes as usize).is_err() {
                        let b = *bytes;
                        self.stats.local_error(|| format!("CPU tier: cannot allocate {b} bytes of memory"));
                        run.done = Some((now, false));
                    } else {
                        self.cpu_store.insert(*id, v);
                        self.cpu_active.push_back(i);
                    }
                } else if null {
                    run.done = Some((now, true));
                } else {
                    let c = &self.p.cfg.cpu;
                    self.model_wait(i, now, *bytes, c.latency_us, c.bandwidth_gbs);
                }
            }
            Phys::CpuRead { bytes, .. } => {
                if self.p.cpu_copy {
                    self.cpu_active.push_back(i);
                } else if !null {
                    let c = &self.p.cfg.cpu;
                    self.model_wait(i, now, *bytes, c.latency_us, c.bandwidth_gbs);
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
                        self.stats.local_error(|| e.clone());
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
                                self.stats.local_error(|| e.clone());
                                None
                            }
                        }
                    } else {
                        let h = self.handles.get(id).copied();
                        if h.is_none() {
                            self.stats.local_error(|| format!("read {name}: the entry has no storage object"));
                        }
                        h
                    };
                    let npy_header = (self.p.write_npy_header && *bytes >= NPY_HEADER_BYTES)
                        .then(|| npy::entry_header(&self.p.model, &self.p.sizing, *bytes - NPY_HEADER_BYTES));
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
                                npy_header,
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
    pub(super) fn backend_create(&mut self, name: &str, size: u64) -> Result<ObjectHandle, String> {
        self.backend.create(name, size)
    }

    pub(super) fn backend_delete(&mut self, name: &str) -> Result<(), String> {
        self.backend.delete(name)
    }

    /// Copies up to a chunk for each CPU op in turn; returns bytes copied.
    pub(super) fn pump_cpu(&mut self) -> usize {
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
    pub(super) fn pick_chunk(&mut self, now: Instant) -> Option<Request> {
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
                // Chunks over the `.npy` header: the source fills them
                // (header + generated bytes) and checks them on read.
                let in_header = x.npy_header.as_ref().is_some_and(|h| off < h.len() as u64);
                let (op, data, kind) = if x.write {
                    let data = if in_header {
                        Data::Source
                    } else {
                        Data::Fill { object: x.object, seed: self.p.seed, generation: x.generation }
                    };
                    (Op::Write { obj: x.handle, offset: off, len }, data, OpKind::Write)
                } else {
                    let data = if in_header {
                        Data::None
                    } else {
                        Data::Verify(Expect { seed: self.p.seed, object: x.object, generation: Some(x.generation) })
                    };
                    (Op::Read { obj: x.handle, offset: off, len }, data, OpKind::Read)
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

    /// The transfer a storage op belongs to.
    fn transfer_of(&self, req: &Request) -> Option<&Transfer> {
        let &i = self.by_handle.get(&req.op.obj().0)?;
        self.pipes[i].job.as_ref()?.cur.as_ref()?.xfer.as_ref()
    }

    /// Fills a write chunk that covers the `.npy` header ([`Data::Source`]).
    pub fn fill_chunk(&self, req: &Request, dst: &mut [u8]) {
        let (Some(x), Op::Write { offset, .. }) = (self.transfer_of(req), req.op) else { return };
        let expect = Expect { seed: self.p.seed, object: x.object, generation: Some(x.generation) };
        npy::fill_chunk(x.npy_header.as_deref().unwrap_or_default(), offset, dst, &expect);
    }

    /// Checks a read chunk that covers the `.npy` header.
    pub fn check_header_chunk(&self, req: &Request, data: &[u8], policy: &Verifier) -> VerifyOutcome {
        let (Some(x), Op::Read { offset, .. }) = (self.transfer_of(req), req.op) else {
            return VerifyOutcome::default();
        };
        let expect = Expect { seed: self.p.seed, object: x.object, generation: Some(x.generation) };
        npy::verify_chunk(x.npy_header.as_deref().unwrap_or_default(), offset, data, &expect, policy)
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
}
