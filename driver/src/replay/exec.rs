//! Running a planned replay on the run environment: the untimed setup
//! (pre-creating keys the trace reads before writing), then the replay
//! itself on one worker (one queue; per-key order needs one issuer, and one
//! core generates and verifies data far faster than a device moves it).

use serde_json::json;

use super::load::Loaded;
use super::plan::{Plan, Step};
use super::source::{Pacing, ReplaySource, Tally};
use crate::buf::{BufPool, align_up};
use crate::datagen::Verifier;
use crate::engine::{self, WorkerReport};
use crate::error::Error;
use crate::recorder::Recorder;
use crate::target::IoMode;
use crate::workload::{RunEnv, WorkloadOutput};

/// Bytes per chunk op of an object (rounded up to the target's alignment).
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Replay options that shape the I/O.
#[derive(Debug, Clone, Copy)]
pub struct ExecOptions {
    pub queue_depth: usize,
    /// `None`: as fast as the target allows.
    pub speedup: Option<f64>,
    /// "storage" or "all".
    pub tiers: &'static str,
    /// `None`: `--no-delete`.
    pub capacity_bytes: Option<u64>,
}

struct Ran {
    report: WorkerReport,
    tally: Tally,
    io_mode: IoMode,
    issued: usize,
}

fn run_steps(
    env: &RunEnv,
    names: &[String],
    steps: &[Step],
    opts: ExecOptions,
    pacing: Option<Pacing>,
    verify: Verifier,
    existing: &[Step],
) -> Result<Ran, Error> {
    let align = env.target.info().caps.align;
    let chunk = align_up(CHUNK_BYTES, align as u64);
    let mut pool = BufPool::new(opts.queue_depth, chunk as usize, align);
    let mut queue = env
        .target
        .queue(opts.queue_depth, &mut pool)
        .map_err(|e| Error::failed(format!("cannot set up the replay queue: {e}")))?;
    let mut src = ReplaySource::new(env.target, names, steps, chunk, env.common.seed, env.common.continue_on_error)
        .paced(pacing)
        .lookahead(opts.queue_depth)
        .counting_errors_in(env.live.clone());
    src.adopt(existing.iter().map(|s| s.key)).map_err(Error::failed)?;
    let mut report = WorkerReport::default();
    engine::run_worker(&mut src, queue.as_mut(), &mut pool, &env.control(None, verify), &mut report);
    report.errors.merge(&src.errors);
    let io_mode = queue.io_mode();
    Ok(Ran { report, tally: src.tally.clone(), io_mode, issued: src.issued() })
}

pub fn execute(env: &RunEnv, loaded: &Loaded, plan: &Plan, opts: ExecOptions) -> Result<WorkloadOutput, Error> {
    let verify = env.verifier();
    let mut recorder = Recorder::new();
    let mut notes = Vec::new();
    if !plan.setup.is_empty() {
        env.phase.set("setup");
        let ran = run_steps(env, &loaded.keys, &plan.setup, opts, None, Verifier::OFF, &[])?;
        recorder.merge(&ran.report.recorder);
        if ran.report.errors.count > 0 || ran.tally.write_rows as usize != plan.setup.len() {
            return Err(Error::failed(format!(
                "setup: pre-creating {} keys the trace reads before writing failed: {}",
                plan.setup.len(),
                ran.report.errors.first.unwrap_or_else(|| "interrupted".into())
            )));
        }
        notes.push(format!(
            "{} keys read by the trace before any write were pre-created in an untimed setup ({} bytes)",
            plan.setup.len(),
            plan.precreated_bytes()
        ));
    }

    let start = env.phase.begin_measure(env.clock.now());
    let pacing = opts.speedup.map(|speedup| Pacing { start, speedup });
    let ran = run_steps(env, &loaded.keys, &plan.steps, opts, pacing, verify, &plan.setup)?;
    let end = ran.report.last_completion.unwrap_or(start).max(start);
    let window_s = end.saturating_duration_since(start).as_secs_f64();
    recorder.merge(&ran.report.recorder);
    if ran.issued < plan.steps.len() {
        notes.push(format!(
            "the replay stopped early: {} of {} planned steps were issued",
            ran.issued,
            plan.steps.len()
        ));
    }
    if loaded.rows_skipped_gpu_tier + loaded.rows_skipped_cpu_tier > 0 {
        notes.push(format!(
            "{} Tier-0 and {} Tier-1 rows were not replayed (only Tier-2 rows are; --tiers all maps every row onto the target)",
            loaded.rows_skipped_gpu_tier, loaded.rows_skipped_cpu_tier
        ));
    }
    if loaded.rows_bad > 0 {
        notes.push(format!("{} malformed trace rows were skipped (--skip-bad-rows)", loaded.rows_bad));
    }
    if plan.reads_missed > 0 {
        notes.push(format!(
            "{} read rows named keys already deleted (by the capacity LRU or a Delete row) and were not issued",
            plan.reads_missed
        ));
    }
    let summary = summary(loaded, plan, opts, &ran.tally, window_s);
    Ok(WorkloadOutput {
        summary,
        recorder,
        verify: ran.report.verify,
        errors: ran.report.errors,
        window_s,
        io_mode: ran.io_mode,
        notes,
    })
}

fn summary(loaded: &Loaded, plan: &Plan, opts: ExecOptions, t: &Tally, window_s: f64) -> serde_json::Value {
    json!({
        "rows_total": loaded.rows_total,
        "rows_bad": loaded.rows_bad,
        "bad_rows_first": loaded.bad_rows_first,
        "rows_replayed": loaded.rows.len(),
        "rows_skipped_gpu_tier": loaded.rows_skipped_gpu_tier,
        "rows_skipped_cpu_tier": loaded.rows_skipped_cpu_tier,
        "tiers": opts.tiers,
        "capacity_bytes": opts.capacity_bytes,
        "queue_depth": opts.queue_depth,
        "chunk_bytes": CHUNK_BYTES,
        "speedup": opts.speedup,
        "writes": { "rows": t.write_rows, "bytes": t.write_bytes, "rows_failed": t.write_rows_failed },
        "reads": { "rows": t.read_rows, "bytes": t.read_bytes, "rows_failed": t.read_rows_failed },
        "reads_missed": plan.reads_missed,
        "reads_resized": plan.reads_resized,
        "deletes_inferred": plan.deletes_inferred,
        "deletes_from_trace": plan.deletes_from_trace,
        "deletes_ignored": plan.deletes_ignored,
        "deletes_done": t.deletes,
        "writes_over_capacity": plan.writes_over_capacity,
        "precreated_keys": plan.setup.len(),
        "precreated_bytes": plan.precreated_bytes(),
        "peak_live_bytes": plan.peak_live_bytes,
        "trace_duration_s": plan.trace_duration_s,
        "achieved_duration_s": window_s,
        "pacing_lag_s_max": opts.speedup.map(|_| t.pacing_lag_s_max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/results-schema.md names every field of the replay summary.
    #[test]
    fn schema_doc_names_every_replay_summary_field() {
        const DOC: &str = include_str!("../../../docs/results-schema.md");
        let l = super::super::plan::loaded(&[(0.0, crate::kvtrace::TraceOp::Write, "a", 1)]);
        let p = super::super::plan::plan(&l, super::super::plan::Deletes::Never).unwrap();
        let opts = ExecOptions { queue_depth: 1, speedup: Some(1.0), tiers: "storage", capacity_bytes: Some(1) };
        let v = summary(&l, &p, opts, &Tally::default(), 1.0);
        let mut missing = Vec::new();
        for (k, child) in v.as_object().unwrap() {
            let mut names = vec![format!("summary.{k}")];
            if let Some(o) = child.as_object() {
                names.extend(o.keys().map(|c| format!("summary.{k}.{c}")));
            }
            missing.extend(names.into_iter().filter(|n| !DOC.contains(&format!("`{n}`"))));
        }
        assert!(missing.is_empty(), "replay summary fields missing from docs/results-schema.md: {missing:?}");
    }
}
