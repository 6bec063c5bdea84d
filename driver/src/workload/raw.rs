//! `raw`: fio-like calibration of a target.
//!
//! Each job (worker thread, own io_uring) drives its own file `raw/jobN.dat`
//! of `size` bytes with `rw` = read | write | randread | randwrite | randrw
//! at `block_size` and `queue_depth`, for `duration` and/or `bytes`. Every
//! write carries generated, verifiable data; every read is verified (unless
//! `verify: false`). Reading or random-writing modes need the file laid out
//! first: that layout is done before the measured window (not timed), and
//! skipped when the file already holds this seed's data.
//!
//! Layout writes block 0 last, after every other chunk completed, so a file
//! whose size and block 0 are right was completely written.

use std::time::Instant;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::json;

use super::{RunEnv, WorkloadOutput, merge_reports};
use crate::buf::BufPool;
use crate::config::raw::{RawConfig, Rw};
use crate::datagen::{self, Expect, Verifier};
use crate::engine::{self, Data, Next, OpSource, Request, WorkerReport};
use crate::error::Error;
use crate::recorder::{Recorder, SeriesKey};
use crate::results::raw_op_summary;
use crate::target::{Completion, IoMode, ObjectHandle, Op, OpKind, Target};

const TIER: &str = "storage";
/// Layout writes: large sequential chunks at a modest depth.
const LAYOUT_CHUNK: u64 = 1 << 20;
const LAYOUT_DEPTH: usize = 8;

struct JobFile {
    key: u64,
    handle: ObjectHandle,
}

pub fn run(env: &RunEnv, cfg: &RawConfig) -> Result<WorkloadOutput, Error> {
    if cfg.rw.is_object() {
        return super::raw_objects::run(env, cfg);
    }
    let align = env.target.info().caps.align as u64;
    if !env.target.info().caps.ranged_writes && cfg.read_percent() < 100 {
        return Err(Error::usage(format!(
            "config key `rw`: {} writes blocks into the middle of a file, which {} targets cannot do (objects are \
             written once, front to back); to measure writes use rw=put (whole-object PUTs; see object_size, \
             objects, concurrency), or rw=read or rw=randread for reads of a laid-out object",
            cfg.rw,
            env.target.info().kind
        )));
    }
    let bs = cfg.block_size.0;
    if !bs.is_multiple_of(align) {
        return Err(Error::usage(format!(
            "config key `block_size`: {bs} bytes is not a multiple of the target's direct-I/O alignment ({align} bytes)"
        )));
    }
    // block_size is a multiple of 4 KiB, not necessarily a power of two
    // (12 MiB is fine), so round by division, not by mask.
    let size = whole_blocks(cfg.size.0, bs);
    let mut notes = Vec::new();
    if size != cfg.size.0 {
        notes.push(format!("size rounded down to a multiple of block_size: {size} bytes"));
    }
    let seed = env.common.seed;
    // Untimed phases (layout check, layout) are recorded under their own
    // phase names, outside the summary's measured figures.
    let mut untimed = Recorder::new();
    let mut files = Vec::new();
    for j in 0..cfg.jobs {
        let name = job_file(env, j);
        let key = datagen::object_key(&name);
        let handle = match cfg.rw {
            Rw::Write => create(env.target, &name, size)?,
            _ => {
                env.phase.set("layout");
                ensure_layout(env, &name, key, size, seed, &mut untimed)?
            }
        };
        files.push(JobFile { key, handle });
    }

    // The measured window.
    let start = env.begin_measure()?;
    let deadline = env.common.duration.map(|d| start + d);
    let ctl = env.control(deadline, env.verifier());
    let budget = cfg.bytes.map(|b| b.0.div_ceil(u64::from(cfg.jobs)));
    let qd = cfg.queue_depth as usize;
    let results: Vec<Result<(WorkerReport, IoMode, RawSource), Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let ctl = ctl.clone();
                let mut src = RawSource::new(cfg, j as u32, f, size, seed, budget);
                s.spawn(move || -> Result<_, Error> {
                    let mut pool = BufPool::new(qd, bs as usize, align as usize);
                    let mut queue = env
                        .target
                        .queue(qd, &mut pool)
                        .map_err(|e| Error::failed(format!("job {j}: cannot set up its queue: {e}")))?;
                    let mut report = WorkerReport::default();
                    engine::run_worker(&mut src, queue.as_mut(), &mut pool, &ctl, &mut report);
                    let mode = queue.io_mode();
                    drop(queue);
                    Ok((report, mode, src))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("raw job thread panicked")).collect()
    });
    let mut reports = Vec::new();
    let mut io_mode = None;
    let mut sources = Vec::new();
    for r in results {
        let (rep, mode, src) = r?;
        reports.push(rep);
        io_mode.get_or_insert(mode);
        sources.push(src);
    }
    let (mut recorder, verify, mut errors, last) = merge_reports(&reports);
    recorder.merge(&untimed);
    let window_s = last.map_or(0.0, |l| l.saturating_duration_since(start).as_secs_f64());

    // Durability point after writes (not in the measured window, like fio
    // without end_fsync): fixes the logical size a later read run checks.
    if cfg.read_percent() < 100 && errors.count == 0 {
        env.phase.set("commit");
        for (f, src) in files.iter().zip(&sources) {
            let commit_size = src.committed_size(size);
            let mut rep = run_single(env, Op::Commit { obj: f.handle, size: commit_size }, Data::None, "commit", 1)?;
            recorder.merge(&rep.recorder);
            errors.merge(&std::mem::take(&mut rep.errors));
        }
    }

    let read = raw_op_summary(recorder.get(&key("measure", OpKind::Read)), window_s);
    let write = raw_op_summary(recorder.get(&key("measure", OpKind::Write)), window_s);
    let summary = json!({
        "rw": cfg.rw.as_str(),
        "block_size": bs,
        "queue_depth": cfg.queue_depth,
        "jobs": cfg.jobs,
        "size": size,
        "rwmix_read": cfg.read_percent(),
        "read": read,
        "write": write,
    });
    Ok(WorkloadOutput {
        summary,
        recorder,
        verify,
        errors,
        window_s,
        io_mode: io_mode.expect("at least one job"),
        notes,
    })
}

/// Job `j`'s file: `raw/jobJ.dat`, or `raw/rankR/jobJ.dat` for MPI rank R
/// of a job with more than one rank (each rank has its own files, as each
/// fio job has).
fn job_file(env: &RunEnv, j: u32) -> String {
    if env.world.is_multi() { format!("raw/rank{}/job{j}.dat", env.world.rank()) } else { format!("raw/job{j}.dat") }
}

/// The summary of an MPI job (rank 0, after the gather): rank 0's keys,
/// with `jobs` counting every rank's jobs, and `read`/`write` recomputed
/// from the merged histograms over the longest rank's window (total bytes
/// and ops over the job's window, as fio's group reporting does).
pub fn merge_summary(summaries: &[serde_json::Value], recorder: &Recorder, window_s: f64) -> serde_json::Value {
    let Some(mut out) = summaries.iter().find(|s| s.is_object()).cloned() else { return serde_json::Value::Null };
    let jobs: u64 = summaries.iter().filter_map(|s| s["jobs"].as_u64()).sum();
    out["jobs"] = jobs.into();
    out["ranks"] = summaries.len().into();
    if out.get("put").is_some() {
        // The object mode: whole-object figures (jobs is not one of its keys).
        out.as_object_mut().map(|o| o.remove("jobs"));
        let objects: u64 = summaries.iter().filter_map(|s| s["objects"].as_u64()).sum();
        out["objects"] = objects.into();
        out["put"] = raw_op_summary(recorder.get(&super::raw_objects::object_key(OpKind::Write)), window_s);
        out["get"] = raw_op_summary(recorder.get(&super::raw_objects::object_key(OpKind::Read)), window_s);
        return out;
    }
    out["read"] = raw_op_summary(recorder.get(&key("measure", OpKind::Read)), window_s);
    out["write"] = raw_op_summary(recorder.get(&key("measure", OpKind::Write)), window_s);
    out
}

fn key(phase: &'static str, op: OpKind) -> SeriesKey {
    SeriesKey { phase, op, tier: TIER }
}

fn create(target: &dyn Target, name: &str, size: u64) -> Result<ObjectHandle, Error> {
    target.create(name, size).map_err(|e| Error::failed(format!("cannot create {name}: {e}")))
}

/// Makes sure `name` holds `size` bytes of this seed's data; writes it if
/// not (untimed).
fn ensure_layout(
    env: &RunEnv,
    name: &str,
    key: u64,
    size: u64,
    seed: u64,
    untimed: &mut Recorder,
) -> Result<ObjectHandle, Error> {
    let opened = env.target.open(name).map_err(|e| Error::failed(format!("cannot open {name}: {e}")))?;
    if let Some((h, have)) = opened
        && have == size
        && env.target.info().caps.stores_data
    {
        let probe = Op::Read { obj: h, offset: 0, len: datagen::BLOCK_BYTES as u32 };
        let expect = Expect { seed, object: key, generation: None };
        let rep = run_single(env, probe, Data::Verify(expect), "layout-check", datagen::BLOCK_BYTES)?;
        untimed.merge(&rep.recorder);
        if rep.errors.count == 0 && rep.verify.is_ok() && rep.verify.verified_bytes == datagen::BLOCK_BYTES as u64 {
            return Ok(h);
        }
    }
    let h = create(env.target, name, size)?;
    let align = env.target.info().caps.align;
    let chunk = LAYOUT_CHUNK.min(size) as usize;
    let mut pool = BufPool::new(LAYOUT_DEPTH, chunk, align);
    let mut queue = env
        .target
        .queue(LAYOUT_DEPTH, &mut pool)
        .map_err(|e| Error::failed(format!("cannot set up the layout queue: {e}")))?;
    let mut src = LayoutSource::new(h, key, seed, size, chunk as u64);
    let mut rep = WorkerReport::default();
    engine::run_worker(&mut src, queue.as_mut(), &mut pool, &env.control(None, Verifier::OFF), &mut rep);
    untimed.merge(&rep.recorder);
    if rep.errors.count > 0 || !src.finished() {
        return Err(Error::failed(format!(
            "laying out {name} ({size} bytes) failed: {}",
            rep.errors.first.unwrap_or_else(|| "interrupted".into())
        )));
    }
    Ok(h)
}

/// Runs one op to completion on a fresh queue (probes, commits).
fn run_single(env: &RunEnv, op: Op, data: Data, phase: &'static str, buf_bytes: usize) -> Result<WorkerReport, Error> {
    let align = env.target.info().caps.align;
    let mut pool = BufPool::new(1, buf_bytes.max(align), align);
    let mut queue = env.target.queue(1, &mut pool).map_err(|e| Error::failed(format!("cannot set up a queue: {e}")))?;
    let mut src = Single(Some(Request { op, data, key: key(phase, op.kind()), exact: true }));
    let mut rep = WorkerReport::default();
    // The layout probe must check the whole block, whatever the run's mode.
    let verify = if matches!(data, Data::Verify(_)) { Verifier::FULL } else { Verifier::OFF };
    engine::run_worker(&mut src, queue.as_mut(), &mut pool, &env.control(None, verify), &mut rep);
    Ok(rep)
}

struct Single(Option<Request>);

impl OpSource for Single {
    fn next(&mut self, _now: Instant) -> Next {
        self.0.take().map_or(Next::Done, Next::Op)
    }
}

/// Sequential layout: chunks 1.. first, chunk 0 after all of them, then the
/// commit.
struct LayoutSource {
    obj: ObjectHandle,
    key: u64,
    seed: u64,
    size: u64,
    chunk: u64,
    next: u64,
    in_flight: usize,
    stage: u8,
}

impl LayoutSource {
    fn new(obj: ObjectHandle, key: u64, seed: u64, size: u64, chunk: u64) -> LayoutSource {
        let next = if size > chunk { chunk } else { size };
        LayoutSource { obj, key, seed, size, chunk, next, in_flight: 0, stage: 0 }
    }

    fn write(&mut self, offset: u64) -> Next {
        let len = self.chunk.min(self.size - offset) as u32;
        self.in_flight += 1;
        Next::Op(Request {
            op: Op::Write { obj: self.obj, offset, len },
            data: Data::Fill { object: self.key, seed: self.seed, generation: 0 },
            key: key("layout", OpKind::Write),
            exact: false,
        })
    }

    fn finished(&self) -> bool {
        self.stage == 4
    }
}

impl OpSource for LayoutSource {
    fn next(&mut self, _now: Instant) -> Next {
        match self.stage {
            0 if self.next < self.size => {
                let off = self.next;
                self.next += self.chunk;
                self.write(off)
            }
            0 | 1 if self.in_flight > 0 => {
                self.stage = 1;
                Next::Wait
            }
            0 | 1 => {
                self.stage = 2;
                self.write(0)
            }
            2 if self.in_flight > 0 => Next::Wait,
            2 => {
                self.stage = 3;
                self.in_flight += 1;
                Next::Op(Request {
                    op: Op::Commit { obj: self.obj, size: self.size },
                    data: Data::None,
                    key: key("layout", OpKind::Commit),
                    exact: false,
                })
            }
            3 if self.in_flight > 0 => Next::Wait,
            _ => {
                self.stage = 4;
                Next::Done
            }
        }
    }

    fn completed(&mut self, _req: &Request, c: &Completion) {
        self.in_flight -= 1;
        if c.result.is_err() {
            self.stage = 5;
        }
    }
}

/// One job's op stream in the measured window.
struct RawSource {
    rng: Xoshiro256PlusPlus,
    rw: Rw,
    rwmix_read: u32,
    obj: ObjectHandle,
    key: u64,
    seed: u64,
    job: u32,
    bs: u64,
    blocks: u64,
    seq_next: u64,
    wrapped: bool,
    budget: Option<u64>,
    issued: u64,
    writes: u64,
    /// Blocks with a write in flight: reads avoid them so a torn block is
    /// never mistaken for corruption.
    writing: Vec<u64>,
}

impl RawSource {
    fn new(cfg: &RawConfig, job: u32, f: &JobFile, size: u64, seed: u64, budget: Option<u64>) -> RawSource {
        let bs = cfg.block_size.0;
        RawSource {
            rng: Xoshiro256PlusPlus::seed_from_u64(splitmix(seed ^ splitmix(u64::from(job) + 1))),
            rw: cfg.rw,
            rwmix_read: u32::from(cfg.read_percent()),
            obj: f.handle,
            key: f.key,
            seed,
            job,
            bs,
            blocks: size / bs,
            seq_next: 0,
            wrapped: false,
            budget,
            issued: 0,
            writes: 0,
            writing: Vec::new(),
        }
    }

    /// The logical size to commit after the run: the whole file, except a
    /// sequential write run that did not get round it once.
    fn committed_size(&self, size: u64) -> u64 {
        if self.rw == Rw::Write && !self.wrapped { self.seq_next * self.bs } else { size }
    }

    fn seq_block(&mut self) -> u64 {
        let b = self.seq_next;
        self.seq_next += 1;
        if self.seq_next == self.blocks {
            self.seq_next = 0;
            self.wrapped = true;
        }
        b
    }

    fn rand_block(&mut self) -> u64 {
        self.rng.next_u64() % self.blocks
    }

    /// A random block with no write in flight (so neither a read nor a
    /// second write races a write of the same block); `None` if several
    /// draws all hit busy blocks (tiny files at high depth).
    fn free_block(&mut self) -> Option<u64> {
        for _ in 0..16 {
            let b = self.rand_block();
            if !self.writing.contains(&b) {
                return Some(b);
            }
        }
        None
    }

    fn read(&self, block: u64) -> Request {
        Request {
            op: Op::Read { obj: self.obj, offset: block * self.bs, len: self.bs as u32 },
            data: Data::Verify(Expect { seed: self.seed, object: self.key, generation: None }),
            key: key("measure", OpKind::Read),
            exact: true,
        }
    }

    fn write(&mut self, block: u64) -> Request {
        self.writes += 1;
        // Unique per (seed, job, write): overwrites never repeat old bytes.
        let generation = splitmix(self.seed ^ (u64::from(self.job) << 40) ^ self.writes) | 1;
        self.writing.push(block);
        Request {
            op: Op::Write { obj: self.obj, offset: block * self.bs, len: self.bs as u32 },
            data: Data::Fill { object: self.key, seed: self.seed, generation },
            key: key("measure", OpKind::Write),
            exact: false,
        }
    }
}

impl OpSource for RawSource {
    fn next(&mut self, _now: Instant) -> Next {
        if self.budget.is_some_and(|b| self.issued >= b) {
            return Next::Done;
        }
        self.issued += self.bs;
        let req = match self.rw {
            Rw::Read => {
                let b = self.seq_block();
                self.read(b)
            }
            Rw::Write => {
                let b = self.seq_block();
                self.write(b)
            }
            Rw::RandRead => {
                let b = self.rand_block();
                self.read(b)
            }
            Rw::RandWrite | Rw::RandRw => {
                let is_read = self.rw == Rw::RandRw && (self.rng.next_u64() % 100) < u64::from(self.rwmix_read);
                let Some(b) = self.free_block() else {
                    self.issued -= self.bs;
                    return Next::Wait;
                };
                if is_read { self.read(b) } else { self.write(b) }
            }
            Rw::Put | Rw::Get | Rw::Mixed => unreachable!("the object mode has its own source (raw_objects)"),
        };
        Next::Op(req)
    }

    fn completed(&mut self, req: &Request, _c: &Completion) {
        if let Op::Write { offset, .. } = req.op {
            let b = offset / self.bs;
            if let Some(i) = self.writing.iter().position(|&x| x == b) {
                self.writing.swap_remove(i);
            }
        }
    }
}

/// SplitMix64 finaliser: decorrelates seeds.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `bytes` rounded down to whole blocks of `block_bytes` (any non-zero size).
fn whole_blocks(bytes: u64, block_bytes: u64) -> u64 {
    bytes / block_bytes * block_bytes
}

#[cfg(test)]
mod tests {
    use super::whole_blocks;

    #[test]
    fn sizes_round_down_to_whole_blocks_of_any_size() {
        const MIB: u64 = 1 << 20;
        // 12 MiB is a multiple of 4 KiB but not a power of two: a mask would
        // have turned a 12 MiB file into 4 MiB.
        assert_eq!(whole_blocks(12 * MIB, 12 * MIB), 12 * MIB);
        assert_eq!(whole_blocks(30 * MIB, 12 * MIB), 24 * MIB);
        assert_eq!(whole_blocks(256 * MIB + 4096, MIB), 256 * MIB);
        assert_eq!(whole_blocks(5 * 4096, 3 * 4096), 3 * 4096);
    }
}
