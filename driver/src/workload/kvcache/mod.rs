//! `kvcache`: the MLPerf Storage v3 KV-cache workload (kv-cache.py) at the
//! storage interface. See docs/workloads/kvcache.md.
//!
//! One engine worker thread runs the whole workload: the simulation
//! ([`sim::Sim`]) multiplexes every user, the priority queue and the
//! W = min(users, 500) request pipelines as state machines and hands the
//! storage tier's chunked I/O to the engine. That keeps it deterministic
//! for a seed (on a virtual clock, byte for byte) and cheap on CPU.

pub mod cache;
pub mod config;
pub mod feed;
pub mod inputs;
pub mod models;
mod npy;
pub mod output;
mod pipeline;
pub mod rng;
pub mod scheduler;
pub mod sim;
pub mod source;
pub mod stats;
mod tier_io;
pub mod users;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{RunEnv, WorkloadOutput, merge_reports};
use crate::buf::BufPool;
use crate::engine::{self, WorkerReport};
use crate::error::Error;
use crate::kvtrace::TraceWriter;
use crate::recorder::Recorder;
use crate::target::IoMode;
use config::KvConfig;
use sim::{NullBackend, Params, Sim};
use source::{KvSource, TargetBackend, TraceSink};

const GIB: f64 = (1u64 << 30) as f64;

/// The storage tier's capacity: `storage_capacity_gb`, else 95 % of the
/// target's free space (`free_bytes`), else unbounded (trace-only mode, or
/// a target that cannot say).
pub fn storage_capacity(cfg: &KvConfig, free_bytes: Option<u64>) -> Option<u64> {
    if cfg.storage_capacity_gb > 0.0 {
        Some((cfg.storage_capacity_gb * GIB) as u64)
    } else if cfg.trace.only {
        None
    } else {
        free_bytes.map(|f| (f as f64 * 0.95) as u64)
    }
}

/// Simulation parameters for a run.
pub fn params(
    cfg: &KvConfig,
    seed: u64,
    storage_bytes: Option<u64>,
    clock: crate::clock::Clock,
) -> Result<Params, Error> {
    let model = cfg.model_spec()?;
    Ok(Params {
        sizing: cfg.sizing(),
        model,
        seed,
        null_io: cfg.trace.only,
        // On a virtual clock a real copy would take no simulated time: the
        // CPU tier is modelled there (`cpu.*`), like the GPU tier.
        cpu_copy: !cfg.trace.only && !clock.is_virtual(),
        storage_bytes,
        write_npy_header: cfg.kvcache.npy_header,
        io_size: cfg.kvcache.io_size.bytes(),
        entry_queue_depth: cfg.kvcache.entry_queue_depth,
        trace: cfg.trace.path.is_some(),
        trace_deletes: cfg.trace.deletes,
        continue_on_error: false,
        clock,
        cfg: cfg.clone(),
    })
}

/// Setup entries: decode-only pre-population (users × 10) and
/// preconditioning (to `precondition_size_gb`, or 2 × the storage
/// capacity).
pub(crate) fn setup_plan(
    cfg: &KvConfig,
    sizing: &models::Sizing,
    storage: Option<u64>,
    notes: &mut Vec<String>,
) -> Vec<(&'static str, u64, &'static str)> {
    let mut out = Vec::new();
    if cfg.precondition {
        let bytes = if cfg.precondition_size_gb > 0.0 {
            Some((cfg.precondition_size_gb * GIB) as u64)
        } else {
            storage.map(|s| s.saturating_mul(2))
        };
        match bytes {
            Some(b) => out.push(("precond_", b.div_ceil(sizing.entry_bytes(sim::SETUP_TOKENS).max(1)), "precondition")),
            None => notes.push("precondition skipped: the storage capacity is unknown; set precondition_size_gb or storage_capacity_gb".into()),
        }
    }
    if cfg.decode_only {
        out.push(("prepop_", u64::from(cfg.users) * 10, "prepop"));
    }
    out
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub(crate) fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CPU tier holds real DRAM: refuse, before anything runs, a
/// `cpu_mem_gb` that does not fit in the memory available now.
pub fn check_memory(cfg: &KvConfig) -> Result<(), Error> {
    if cfg.trace.only {
        return Ok(());
    }
    let need = cfg.cpu_bytes() + u64::from(cfg.kvcache.queue_depth) * cfg.kvcache.io_size.bytes();
    if let Some(avail) = mem_available()
        && need > avail
    {
        return Err(crate::config::key_error(
            "cpu_mem_gb",
            format!(
                "the CPU tier holds real memory: {} GiB (plus {} MiB of I/O buffers) is more than the {:.1} GiB available; \
                 lower cpu_mem_gb (the reference's default of 32 needs 32 GiB), or use trace.only=true",
                cfg.cpu_mem_gb,
                (need - cfg.cpu_bytes()) >> 20,
                avail as f64 / GIB
            ),
        ));
    }
    Ok(())
}

/// Free bytes of the filesystem holding `dir` (statvfs `f_bavail ×
/// f_frsize`), if it can be asked.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable
    // statvfs buffer that outlives the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Loads the BurstGPT or ShareGPT input the config names (before the run,
/// so a bad file is a usage error and nothing is created).
pub fn load_feed(cfg: &KvConfig, seed: u64) -> Result<Option<feed::Feed>, Error> {
    let f = feed::Feed::from_config(cfg, seed).map_err(|e| Error::usage(format!("kvcache input: {e}")))?;
    if let Some(f) = &f
        && f.items_per_pass == 0
    {
        return Err(Error::usage(format!("kvcache input {}: it holds no requests", f.path)));
    }
    Ok(f)
}

pub fn run(
    env: &RunEnv,
    cfg: &KvConfig,
    free_bytes: Option<u64>,
    feed: Option<feed::Feed>,
) -> Result<WorkloadOutput, Error> {
    let storage = storage_capacity(cfg, free_bytes);
    let mut notes = cfg.inert_key_notes();
    if storage.is_none() && !cfg.trace.only {
        notes.push(
            "storage tier unbounded: the target's free space is unknown; set storage_capacity_gb to bound it".into(),
        );
    }
    // MPI rank R is its own client with seed `seed + R` and its own storage
    // prefix, as kv-cache.py's ranks are (seed 42 + r, cache dir rank_r/).
    let seed = env.common.seed + env.world.rank() as u64;
    let prefix = source::rank_prefix(env.world.rank(), env.world.size());
    if env.world.is_multi() && cfg.trace.path.is_some() {
        return Err(Error::usage(
            "config key `trace.path`: writing an I/O trace from an MPI job is not available yet (every rank would \
             write the same file); run without mpirun to trace",
        ));
    }
    let mut p = params(cfg, seed, storage, env.clock.clone())?;
    p.continue_on_error = env.common.continue_on_error;
    if p.write_npy_header && !cfg.trace.only && !env.target.keeps_any_bytes() {
        p.write_npy_header = false;
        notes.push(
            "kvcache.npy_header: this target keeps only generated data blocks, so each entry's first 128 bytes              are generated data, not a NumPy header (entry sizes are unchanged)"
                .into(),
        );
    }
    let sizing = p.sizing;
    let writer = match &cfg.trace.path {
        Some(path) => Some(
            TraceWriter::create(Path::new(path))
                .map_err(|e| Error::failed(format!("cannot create the trace {path}: {e}")))?,
        ),
        None => None,
    };
    let mut trace = TraceSink { writer, rows: 0, error: None };
    let setups = setup_plan(cfg, &sizing, storage, &mut notes);
    let drain: Duration = cfg.kvcache.drain_timeout.0;
    let stop = || env.stop.load(Ordering::Relaxed);

    let (sim, recorder, verify, mut errors, io_mode, start, last) = if cfg.trace.only {
        let mut sim = Sim::new(p, Box::new(NullBackend::default()));
        sim.feed = feed;
        let mut now = env.clock.now();
        for (prefix, count, phase) in &setups {
            env.phase.set(phase);
            sim.begin_setup(prefix, *count, phase, now);
            now = source::run_logical(&mut sim, &mut trace, now, &stop).0;
        }
        env.world.sync("the measured phase")?;
        let start = env.phase.begin_measure(now);
        sim.begin_measure(start, env.common.duration, drain);
        let (end, _) = source::run_logical(&mut sim, &mut trace, start, &stop);
        let last = sim.last_done.unwrap_or(end);
        let mode = IoMode { direct: false, engine: "none (trace-only)".into(), registered_buffers: false, note: None };
        (sim, Recorder::new(), Default::default(), Default::default(), mode, start, Some(last))
    } else {
        let align = env.target.info().caps.align;
        let qd = cfg.kvcache.queue_depth as usize;
        let mut pool = BufPool::new(qd, cfg.kvcache.io_size.bytes() as usize, align);
        let mut queue =
            env.target.queue(qd, &mut pool).map_err(|e| Error::failed(format!("cannot set up the I/O queue: {e}")))?;
        // Like kv-cache.py, start from an empty cache: entries an earlier
        // run left behind (only mlpdrive's own kvcache/ objects) are removed.
        let stale =
            env.target.list(&prefix).map_err(|e| Error::failed(format!("cannot list earlier kvcache entries: {e}")))?;
        let names: Vec<String> = stale.iter().map(|(name, _)| name.clone()).collect();
        env.target
            .delete_many(&names)
            .map_err(|e| Error::failed(format!("cannot remove the earlier cache entries: {e}")))?;
        if !stale.is_empty() {
            notes.push(format!("removed {} cache entries left on the target by an earlier run", stale.len()));
        }
        let mut sim = Sim::new(p, Box::new(TargetBackend { target: env.target, prefix: prefix.clone() }));
        sim.feed = feed;
        let verify = env.verifier();
        let mut reports = Vec::new();
        for (prefix, count, phase) in &setups {
            env.phase.set(phase);
            sim.begin_setup(prefix, *count, phase, env.clock.now());
            let mut rep = WorkerReport::default();
            let mut src =
                KvSource { sim: &mut sim, trace: &mut trace, verify_headers: verify, verify: Default::default() };
            engine::run_worker(&mut src, queue.as_mut(), &mut pool, &env.control(None, verify), &mut rep);
            rep.verify.merge(&src.verify);
            reports.push(rep);
        }
        let start = env.begin_measure()?;
        sim.begin_measure(start, env.common.duration, drain);
        let mut rep = WorkerReport::default();
        {
            let mut src =
                KvSource { sim: &mut sim, trace: &mut trace, verify_headers: verify, verify: Default::default() };
            engine::run_worker(&mut src, queue.as_mut(), &mut pool, &env.control(None, verify), &mut rep);
            rep.verify.merge(&src.verify);
        }
        trace.flush(&mut sim, true);
        let last = rep.last_completion.max(sim.last_done);
        reports.push(rep);
        let mode = queue.io_mode();
        drop(queue);
        let (rec, ver, err, _) = merge_reports(&reports);
        (sim, rec, ver, err, mode, start, last)
    };
    if let Some(w) = trace.writer.take()
        && let Err(e) = w.finish()
    {
        trace.error.get_or_insert_with(|| format!("finishing the trace: {e}"));
    }
    if let Some(e) = &trace.error {
        errors.add(|| e.clone());
    }
    // Errors the engine did not see (create, delete, CPU-tier memory).
    if sim.stats.local_errors > 0 {
        errors.count += sim.stats.local_errors;
        if errors.first.is_none() {
            errors.first.clone_from(&sim.stats.first_local_error);
        }
    }
    if sim.abandoned {
        notes.push(format!(
            "requests still in progress {} after the window were abandoned (kvcache.drain_timeout); they are not counted",
            crate::units::Dur(drain)
        ));
    }
    if let Err(e) = sim.cache.check_accounting() {
        errors.add(|| format!("internal: tier accounting is inconsistent: {e}"));
    }
    let stopped = sim.stopped_at.or(last).unwrap_or(start);
    let spanned = last.map_or(0.0, |l: Instant| l.saturating_duration_since(start).as_secs_f64());
    let elapsed = stopped.saturating_duration_since(start).as_secs_f64();
    let times = output::Times { elapsed_s: elapsed, spanned_s: spanned.max(elapsed) };
    let facts = output::RunFacts {
        mode: if cfg.trace.only { "trace-only" } else { "real" },
        trace_path: cfg.trace.path.as_deref(),
        trace_rows: trace.rows,
        storage_capacity_bytes: storage,
    };
    let summary = output::summary(&sim, cfg, seed, times, &facts);
    if sim.stats.late_requests > 0 {
        notes.push(format!(
            "{} requests completed after the {:.1} s window; the reference-compatible rates count them (as kv-cache.py does), `extras` separates them",
            sim.stats.late_requests, elapsed
        ));
    }
    Ok(WorkloadOutput { summary, recorder, verify, errors, window_s: times.spanned_s, io_mode, notes })
}

/// The job's summary at MPI rank 0, aggregated as MLPerf's kvcache rules
/// aggregate clients: storage read and write bandwidth and tok/s are sums
/// over ranks, device P95 the maximum over the ranks that measured one
/// (null when none did: a 0 ms P95 would be a figure no operation made). Each rank's full reference summary is in its
/// `rank-<r>.json`; pooled latency percentiles are the merged `series`.
pub fn merge_summary(summaries: &[serde_json::Value]) -> serde_json::Value {
    let inner = |s: &serde_json::Value, k: &str| s["summary"][k].as_f64().unwrap_or(0.0);
    let cache = |s: &serde_json::Value, k: &str| s["summary"]["cache_stats"][k].as_f64().unwrap_or(0.0);
    let sum = |f: &dyn Fn(&serde_json::Value) -> f64| summaries.iter().map(f).sum::<f64>();
    let max = |k: &str| summaries.iter().filter_map(|s| s["summary"]["cache_stats"][k].as_f64()).reduce(f64::max);
    let count = |k: &str| summaries.iter().filter_map(|s| s[k].as_u64()).sum::<u64>();
    serde_json::json!({
        "mpi_ranks": summaries.len(),
        "ranks_with_results": summaries.iter().filter(|s| s.get("summary").is_some()).count(),
        "seeds": summaries.iter().map(|s| s["seed"].clone()).collect::<Vec<_>>(),
        "requests_completed": count("requests_completed"),
        "total_tokens_generated": count("total_tokens_generated"),
        "storage_read_bandwidth_gbps": sum(&|s| cache(s, "tier_storage_read_bandwidth_gbps")),
        "storage_write_bandwidth_gbps": sum(&|s| cache(s, "tier_storage_write_bandwidth_gbps")),
        "storage_throughput_tokens_per_sec": sum(&|s| inner(s, "storage_throughput_tokens_per_sec")),
        "avg_throughput_tokens_per_sec": sum(&|s| inner(s, "avg_throughput_tokens_per_sec")),
        "storage_read_device_p95_ms": max("storage_read_device_p95_ms"),
        "storage_write_device_p95_ms": max("storage_write_device_p95_ms"),
    })
}
