//! `checkpoint`: MLPerf Storage LLM checkpointing (llama3 8B/70B/405B/1T
//! sharded over ranks, as DLIO writes it), at the storage interface.
//!
//! Every rank is a thread with its own queue and bounded buffer pool
//! ([`rank`]); this module is the coordinator: it hands each checkpoint to
//! every rank with a common start time (after `time_between_checkpoints` on
//! the run clock), gathers each rank's duration, and builds the summary
//! ([`metrics`]). File names and sizes come from [`model`]; the op stream of
//! one rank from [`source`]. `num_checkpoints_write` saves come first, then
//! `num_checkpoints_read` loads of checkpoints 1..n, verified byte for byte.

pub mod metrics;
pub mod model;
mod rank;
mod source;
pub mod text;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Instant;

use serde_json::json;

use self::metrics::StepTiming;
use self::model::{CheckpointPlan, step_dir};
use self::rank::{RankJob, RankOutcome, RankParams};
use self::source::Direction;
use super::{RunEnv, WorkloadOutput, merge_reports};
use crate::config::checkpoint::{CheckpointConfig, Mode};
use crate::engine::WorkerReport;
use crate::error::Error;
use crate::units::ByteSize;

const GIB: f64 = (1u64 << 30) as f64;

/// Runs the workload.
pub fn run(env: &RunEnv, cfg: &CheckpointConfig) -> Result<WorkloadOutput, Error> {
    let plan = CheckpointPlan::from_config(cfg);
    let align = env.target.info().caps.align as u64;
    let transfer = cfg.transfer_size.bytes();
    if !transfer.is_multiple_of(align) {
        return Err(Error::usage(format!(
            "config key `transfer_size`: {transfer} bytes is not a multiple of the target's direct-I/O alignment ({align} bytes)"
        )));
    }
    let folder = cfg.folder();
    let writes = cfg.checkpoint.num_checkpoints_write;
    let reads = cfg.checkpoint.num_checkpoints_read;
    if writes == 0 {
        // A read-only run reads what an earlier run wrote: check it is all
        // there before starting (one listing, not one per rank).
        env.world.sync("listing the checkpoints")?;
        check_present(env, &plan, &folder, reads)?;
    }
    let params = RankParams { queue_depth: cfg.queue_depth as usize, transfer_bytes: transfer, seed: env.common.seed };
    let ctl = env.control(None, env.verifier());
    let between = cfg.checkpoint.time_between_checkpoints.0;
    // MPI ranks are checkpoint ranks: this process runs its share of them
    // (all of them alone), each as a thread.
    let hosted = env.world.share(plan.ranks());
    if hosted.is_empty() {
        return Err(Error::usage(format!(
            "config key `ranks`: {} checkpoint ranks cannot be shared by {} MPI processes; set --set ranks={} \
             or more, or start fewer processes",
            plan.ranks(),
            env.world.size(),
            env.world.size()
        )));
    }
    let rank_bytes: Vec<u64> = hosted.clone().map(|r| plan.rank_bytes(r)).collect();

    let mut saves = Vec::new();
    let mut loads = Vec::new();
    let mut reports: Vec<WorkerReport> = Vec::new();
    let mut list_error = None;
    let mut start = None;
    let modes = std::thread::scope(|s| {
        let (out_tx, out_rx) = mpsc::channel::<RankOutcome>();
        let mut job_txs = Vec::new();
        let mut handles = Vec::new();
        for r in hosted.clone() {
            let (tx, rx) = mpsc::channel::<RankJob>();
            job_txs.push(tx);
            let out = out_tx.clone();
            let ctl = &ctl;
            let target = env.target;
            handles.push(s.spawn(move || rank::serve(r, target, ctl, params, rx, out)));
        }
        drop(out_tx);
        let mut run_phase = |dir: Direction, step: u32| -> Result<Option<StepTiming>, Error> {
            // Every MPI rank starts each checkpoint together (DLIO: sleep,
            // barrier, save).
            env.world.sync(&format!("checkpoint {} {step}", dir.phase()))?;
            env.phase.set(dir.phase());
            let start_at = env.clock.now() + between;
            for (i, tx) in job_txs.iter().enumerate() {
                let r = hosted.start + i;
                let files = plan.files[r]
                    .iter()
                    .map(|f| (format!("{}/{}", step_dir(&folder, step), f.name), f.bytes))
                    .collect();
                // A rank thread only goes away after a panic, which the
                // join below reports.
                let _ = tx.send(RankJob { dir, step, start_at, files });
            }
            let mut durations = vec![None; hosted.len()];
            for _ in 0..hosted.len() {
                let Ok(o) = out_rx.recv() else { break };
                durations[o.rank - hosted.start] = o.duration_s;
                reports.push(o.report);
            }
            let all: Option<Vec<f64>> = durations.into_iter().collect();
            Ok(all.map(|rank_duration_s| StepTiming { step, rank_duration_s }))
        };
        let mut phases = || -> Result<(), Error> {
            let measure_start = env.begin_measure()?;
            start = Some(measure_start);
            for step in 1..=writes {
                match run_phase(Direction::Save, step)? {
                    Some(t) => saves.push(t),
                    None => return Ok(()),
                }
            }
            if reads > 0 && writes > 0 {
                // Every rank's files are written before any rank lists them.
                env.world.sync("listing the checkpoints")?;
                if let Err(e) = check_present(env, &plan, &folder, reads) {
                    list_error = Some(e.to_string());
                    return Ok(());
                }
            }
            for step in 1..=reads {
                match run_phase(Direction::Load, step)? {
                    Some(t) => loads.push(t),
                    None => return Ok(()),
                }
            }
            Ok(())
        };
        if let Err(e) = phases() {
            list_error = Some(e.to_string());
        }
        drop(job_txs);
        handles.into_iter().map(|h| h.join().expect("checkpoint rank thread panicked")).collect::<Vec<_>>()
    });
    let (recorder, verify_outcome, mut errors, last) = merge_reports(&reports);
    if let Some(msg) = list_error {
        errors.add(|| msg);
    }
    let io_mode = modes.into_iter().flatten().next().ok_or_else(|| {
        Error::failed(format!(
            "no rank could set up its I/O queue: {}",
            errors.first.clone().unwrap_or_else(|| "unknown error".into())
        ))
    })?;
    let window_s = match start {
        Some(start) => last.map_or(0.0, |l: Instant| l.saturating_duration_since(start).as_secs_f64()),
        None => 0.0,
    };

    // Alone, the figures are the job's; under MPI they are this rank's
    // share (its checkpoint ranks' bytes and durations), and rank 0 merges
    // the shares with `merge_summary`.
    let summary = summary_of(cfg, &plan, &folder, &saves, &loads, &rank_bytes, hosted.clone());
    let mut notes = Vec::new();
    if saves.len() < writes as usize || loads.len() < reads as usize {
        notes.push(format!("only {} of {writes} saves and {} of {reads} loads completed", saves.len(), loads.len()));
    }
    notes.push(
        "checkpoint files hold the reference's tensor bytes exactly, as raw generated data (no torch zip framing)"
            .into(),
    );
    Ok(WorkloadOutput { summary, recorder, verify: verify_outcome, errors, window_s, io_mode, notes })
}

/// The summary over the checkpoint ranks `hosted` (all of them alone),
/// whose bytes per rank are `rank_bytes` and whose durations the steps hold.
fn summary_of(
    cfg: &CheckpointConfig,
    plan: &CheckpointPlan,
    folder: &str,
    saves: &[StepTiming],
    loads: &[StepTiming],
    rank_bytes: &[u64],
    hosted: std::ops::Range<usize>,
) -> serde_json::Value {
    let transfer = cfg.transfer_size.bytes();
    let total: u64 = rank_bytes.iter().sum();
    let save = metrics::phase(saves, total, rank_bytes);
    let load = metrics::phase(loads, total, rank_bytes);
    let metric = metrics::reference_metric(&save, &load, saves.len(), loads.len(), total);
    let mut summary = json!({
        "model": plan.model,
        "parameters": plan.shape.parameters(),
        "tensor_parallelism": plan.parallel.tp,
        "pipeline_parallelism": plan.parallel.pp,
        "data_parallelism": plan.parallel.dp,
        "zero_stage": plan.parallel.zero_stage,
        "mode": plan.mode.as_str(),
        "ranks": plan.ranks(),
        "files_per_checkpoint": plan.file_count(),
        "checkpoint_bytes": plan.total_bytes(),
        "rank_bytes_min": plan.rank_bytes_min(),
        "rank_bytes_max": plan.rank_bytes_max(),
        "checkpoint_folder": folder,
        "durability": "fdatasync per file after its O_DIRECT writes completed (timed)",
        "transfer_size": transfer,
        "queue_depth": cfg.queue_depth,
        "buffer_bytes": transfer * u64::from(cfg.queue_depth) * hosted.len() as u64,
        "save": save.json,
        "load": load.json,
        "metric": metric,
    });
    if hosted.len() != plan.ranks() {
        summary["hosted_ranks"] = json!([hosted.start, hosted.end]);
        summary["hosted_bytes"] = total.into();
    }
    summary
}

/// The job's summary at MPI rank 0: every rank's per-checkpoint durations
/// (its `hosted_ranks`, in rank order) joined into one vector per
/// checkpoint, then the figures recomputed over all checkpoint ranks, so a
/// checkpoint's duration is the slowest rank's across all hosts. Needs every
/// rank's share; a missing one leaves rank 0's keys with a `merge_error`.
pub fn merge_summary(cfg: &CheckpointConfig, summaries: &[serde_json::Value]) -> serde_json::Value {
    let plan = CheckpointPlan::from_config(cfg);
    let steps = |phase: &str| -> Result<Vec<StepTiming>, String> {
        let mut out: Vec<StepTiming> = Vec::new();
        let mut next_rank = 0u64;
        for (i, s) in summaries.iter().enumerate() {
            let hosted = s["hosted_ranks"].as_array().and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?)));
            let Some((lo, hi)) = hosted else { return Err(format!("rank {i} has no checkpoint figures")) };
            if lo != next_rank {
                return Err(format!("rank {i} hosted checkpoint ranks from {lo}, expected {next_rank}"));
            }
            next_rank = hi;
            let per = s[phase]["per_checkpoint"].as_array().cloned().unwrap_or_default();
            if i > 0 && per.len() != out.len() {
                return Err(format!("rank {i} completed {} {phase} checkpoints, rank 0 {}", per.len(), out.len()));
            }
            for (k, c) in per.iter().enumerate() {
                let d: Vec<f64> = c["rank_duration_s"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                    .unwrap_or_default();
                if i == 0 {
                    out.push(StepTiming {
                        step: c["step"].as_u64().unwrap_or(k as u64 + 1) as u32,
                        rank_duration_s: d,
                    });
                } else {
                    out[k].rank_duration_s.extend(d);
                }
            }
        }
        if next_rank != plan.ranks() as u64 {
            return Err(format!("the ranks hosted {next_rank} of {} checkpoint ranks", plan.ranks()));
        }
        Ok(out)
    };
    let (saves, loads) = match (steps("save"), steps("load")) {
        (Ok(s), Ok(l)) => (s, l),
        (Err(e), _) | (_, Err(e)) => {
            let mut out = summaries.first().cloned().unwrap_or_default();
            if out.is_object() {
                out["merge_error"] = e.into();
            }
            return out;
        }
    };
    let rank_bytes: Vec<u64> = (0..plan.ranks()).map(|r| plan.rank_bytes(r)).collect();
    let folder = summaries[0]["checkpoint_folder"].as_str().unwrap_or_default().to_string();
    let mut out = summary_of(cfg, &plan, &folder, &saves, &loads, &rank_bytes, 0..plan.ranks());
    out["mpi_ranks"] = summaries.len().into();
    out
}

/// Lists the checkpoint folder once and checks checkpoints 1..=`reads` are
/// all there with the sizes this configuration writes. In an MPI job rank 0
/// lists and broadcasts the listing (the spec: one listing, not one per
/// rank); call it right after a sync every rank passed.
fn check_present(env: &RunEnv, plan: &CheckpointPlan, folder: &str, reads: u32) -> Result<(), Error> {
    let listing: Result<Vec<(String, u64)>, String> = if env.world.is_root() {
        env.target.list(&format!("{folder}/")).map_err(|e| format!("cannot list the checkpoint folder {folder}: {e}"))
    } else {
        Ok(Vec::new())
    };
    let bytes = serde_json::to_vec(&listing).expect("a listing is plain data and always serialises");
    let shared = env.world.broadcast_from_root(&bytes)?;
    let listing: Result<Vec<(String, u64)>, String> = serde_json::from_slice(&shared)
        .map_err(|e| Error::failed(format!("the checkpoint listing from rank 0 is unreadable: {e}")))?;
    let listed: HashMap<String, u64> = listing.map_err(Error::failed)?.into_iter().collect();
    for step in 1..=reads {
        let dir = step_dir(folder, step);
        for f in plan.files.iter().flatten() {
            let name = format!("{dir}/{}", f.name);
            match listed.get(&name) {
                Some(&size) if size == f.bytes => {}
                Some(&size) => {
                    return Err(Error::failed(format!(
                        "checkpoint file {name} is {size} bytes, expected {}: it was written with another \
                         model or parallelism, or truncated",
                        f.bytes
                    )));
                }
                None => {
                    return Err(Error::failed(format!(
                        "checkpoint {step} is not complete in {folder} (missing {name}); write it first \
                         with checkpoint.num_checkpoints_write ≥ {reads} and the same model, ranks and seed"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The `mlpdrive datasize checkpoint/<model>` report: totals, per-rank bytes
/// and file counts of one checkpoint and of the run.
pub fn datasize_report(cfg: &CheckpointConfig) -> String {
    let plan = CheckpointPlan::from_config(cfg);
    let p = &plan.parallel;
    let total = plan.total_bytes();
    let gib = |b: u64| b as f64 / GIB;
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<26} {v}\n"));
    line("model", format!("{} ({} parameters)", plan.model, plan.shape.parameters()));
    line("parallelism", format!("TP {} × PP {} × DP {}, ZeRO stage {}", p.tp, p.pp, p.dp, p.zero_stage));
    let mode = match plan.mode {
        Mode::Default => format!("default ({} ranks = the whole job)", plan.ranks()),
        Mode::Subset => {
            format!("subset ({} ranks acting as ranks 0–{} of {})", plan.ranks(), plan.ranks() - 1, p.world())
        }
    };
    line("mode", mode);
    line("files per checkpoint", plan.file_count().to_string());
    line("bytes per checkpoint", format!("{total} ({:.2} GiB, {:.2} GB)", gib(total), total as f64 / 1e9));
    let (min, max) = (plan.rank_bytes_min(), plan.rank_bytes_max());
    line(
        "bytes per rank",
        if min == max {
            format!("{min} ({:.2} GiB)", gib(min))
        } else {
            format!("{min} … {max} ({:.2} … {:.2} GiB)", gib(min), gib(max))
        },
    );
    let files: Vec<usize> = plan.files.iter().map(Vec::len).collect();
    let (fmin, fmax) = (files.iter().min().copied().unwrap_or(0), files.iter().max().copied().unwrap_or(0));
    line("files per rank", if fmin == fmax { fmin.to_string() } else { format!("{fmin} … {fmax}") });
    let w = u64::from(cfg.checkpoint.num_checkpoints_write);
    line("written per run", format!("{} ({w} checkpoints, {:.2} GiB)", total * w, gib(total * w)));
    line(
        "I/O buffers",
        format!(
            "{} ({} ranks × queue_depth {} × transfer_size {})",
            ByteSize(u64::from(cfg.ranks) * u64::from(cfg.queue_depth) * cfg.transfer_size.bytes()),
            cfg.ranks,
            cfg.queue_depth,
            cfg.transfer_size
        ),
    );
    s.push_str("\nper rank (bytes, files):\n");
    // Consecutive ranks with the same shard size are grouped.
    let mut r = 0;
    while r < plan.ranks() {
        let (b, n) = (plan.rank_bytes(r), plan.files[r].len());
        let mut end = r;
        while end + 1 < plan.ranks() && plan.rank_bytes(end + 1) == b && plan.files[end + 1].len() == n {
            end += 1;
        }
        let ranks = if end == r { format!("rank {r}") } else { format!("ranks {r}–{end}") };
        s.push_str(&format!("  {ranks:<16} {b} bytes ({:.2} GiB), {n} files\n", gib(b)));
        r = end + 1;
    }
    s
}

/// `mlpdrive datasize` for a checkpoint config: loads `source` (preset or
/// file) with `--set` overrides, applies `--ranks` and `--subset`, validates,
/// and returns the report. `--subset` keeps the config's full-job data
/// parallelism and runs `ranks` (default 8) of its ranks.
pub fn datasize(source: &str, sets: &[String], ranks: Option<u32>, subset: bool) -> Result<String, Error> {
    let cfg = crate::config::load(source, sets, None, None)?;
    if cfg.common.workload != "checkpoint" {
        return Err(Error::usage(format!(
            "{}: datasize is not available yet for workload {} (only checkpoint presets)",
            cfg.source, cfg.common.workload
        )));
    }
    let mut ck: CheckpointConfig = crate::config::workload_config(&cfg)?;
    ck.validate()?;
    if subset && ck.checkpoint.mode == Mode::Default {
        ck.model.parallelism.data = Some(ck.data_parallelism());
        ck.checkpoint.mode = Mode::Subset;
        ck.ranks = ranks.unwrap_or(8);
    } else if let Some(r) = ranks {
        ck.ranks = r;
    }
    ck.validate().map_err(|e| Error::usage(format!("{e} (with --ranks/--subset)")))?;
    Ok(datasize_report(&ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(preset: &str) -> (CheckpointConfig, CheckpointPlan) {
        let cfg = crate::config::load(preset, &[], None, None).unwrap();
        let ck = CheckpointConfig::from_run_config(&cfg).unwrap();
        let plan = CheckpointPlan::from_config(&ck);
        (ck, plan)
    }

    fn gib2(b: u64) -> f64 {
        (b as f64 / GIB * 100.0).round() / 100.0
    }

    /// The presets carry the spec's CLOSED numbers: DLIO-computed totals,
    /// files per checkpoint, per-rank bytes, and the subset totals.
    #[test]
    fn presets_match_the_spec_table() {
        for (preset, ranks, total_gib, files, min_gib, max_gib) in [
            ("checkpoint/llama3-8b", 8, 104.70, 16, 13.09, 13.09),
            ("checkpoint/llama3-70b", 64, 911.21, 128, 14.24, 14.24),
            ("checkpoint/llama3-405b", 512, 5292.25, 1544, 8.86, 12.32),
            ("checkpoint/llama3-1t", 1024, 15426.59, 2072, 12.91, 17.97),
            ("checkpoint/llama3-70b-subset", 8, 113.90, 16, 14.24, 14.24),
            ("checkpoint/llama3-405b-subset", 8, 98.54, 48, 12.32, 12.32),
            ("checkpoint/llama3-1t-subset", 8, 143.72, 32, 17.97, 17.97),
        ] {
            let (ck, plan) = plan_of(preset);
            assert_eq!(ck.ranks, ranks, "{preset}");
            let got =
                (gib2(plan.total_bytes()), plan.file_count(), gib2(plan.rank_bytes_min()), gib2(plan.rank_bytes_max()));
            assert_eq!(got, (total_gib, files, min_gib, max_gib), "{preset}");
            assert_eq!(ck.checkpoint.num_checkpoints_write, 10, "{preset}");
            assert_eq!(ck.checkpoint.num_checkpoints_read, 10, "{preset}");
        }
    }

    #[test]
    fn the_default_preset_is_the_smoke_preset() {
        let strip = |name: &str| {
            let mut v: serde_json::Value = serde_yaml_ng::from_str(crate::config::preset_yaml(name).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("description");
            v
        };
        assert_eq!(strip("checkpoint"), strip("checkpoint-smoke"));
    }

    #[test]
    fn datasize_subset_keeps_the_full_jobs_data_parallelism() {
        let text = datasize("checkpoint/llama3-70b", &[], None, true).unwrap();
        assert!(text.contains("TP 8 × PP 1 × DP 8"), "{text}");
        assert!(text.contains("122300821504 (113.90 GiB"), "{text}");
        assert!(text.contains("ranks 0–7"), "{text}");
        let e = datasize("raw", &[], None, false).unwrap_err().to_string();
        assert!(e.contains("not available yet for workload raw"), "{e}");
    }

    /// docs/results-schema.md names every key of the checkpoint summary.
    #[test]
    fn schema_doc_names_every_summary_field() {
        const DOC: &str = include_str!("../../../../docs/results-schema.md");
        let steps = vec![StepTiming { step: 1, rank_duration_s: vec![1.0, 2.0] }];
        let f = metrics::phase(&steps, 10, &[5, 5]);
        let m = metrics::reference_metric(&f, &f, 1, 1, 10);
        let mut keys = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(o) => {
                    for (k, c) in o {
                        out.push(k.clone());
                        walk(c, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        walk(&f.json, &mut keys);
        walk(&m, &mut keys);
        // The top-level keys `run` writes.
        let src = include_str!("mod.rs");
        let top = src.split("let mut summary = json!({").nth(1).unwrap().split("});").next().unwrap();
        for line in top.lines() {
            if let Some(k) = line.trim().strip_prefix('"').and_then(|l| l.split('"').next()) {
                keys.push(format!("summary.{k}"));
            }
        }
        assert!(keys.len() > 30, "{keys:?}");
        let missing: Vec<_> = keys.iter().filter(|k| !DOC.contains(&format!("`{k}`"))).collect();
        assert!(missing.is_empty(), "checkpoint summary fields missing from docs/results-schema.md: {missing:?}");
    }
}
