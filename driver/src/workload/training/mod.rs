//! `training`: MLPerf Storage training reads (what DLIO does for unet3d,
//! resnet50, cosmoflow, retinanet), at the storage interface.
//!
//! The data set is generated beforehand by `mlpdrive datagen` in its real
//! format ([`crate::datasets`]); a run opens every training file, checks
//! its size against the layout the config implies, then drives all
//! simulated accelerators of the host from one engine worker
//! ([`source::TrainSource`]) and reports DLIO's metrics ([`metrics`]) plus
//! what DLIO cannot: real bytes read per second, per-batch load latency and
//! per-read latency percentiles, client CPU per GB.

pub mod datagen;
pub mod metrics;
pub mod plan;
pub mod ranks;
pub mod source;

use std::ops::Range;
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{RunEnv, WorkloadOutput};
use crate::buf::{BufPool, align_up};
use crate::config::training::{MIN_STEPS_PER_EPOCH, TrainingConfig};
use crate::datasets::{DatasetSpec, Split};
use crate::engine::{self, WorkerReport};
use crate::error::Error;
use crate::mpi::World;
use crate::results::raw_op_summary;
use metrics::{MetricParams, mean_stdev, reference_metrics};
use source::{EpochRecord, READ_KEY, SourceParams, TrainSource};

/// Checks made before anything is opened: the format is supported and
/// epochs are long enough for AU to mean something. Returns the reasons
/// the results will be marked invalid (only with `allow_short_epochs`).
pub fn check(t: &TrainingConfig) -> Result<Vec<String>, Error> {
    let spec = DatasetSpec::from_config(t, 0);
    spec.layout(Split::Train, 0).map_err(|e| Error::usage(format!("config key `dataset.format`: {e}")))?;
    let steps = t.steps_per_epoch();
    if steps == 0 {
        return Err(Error::usage(format!(
            "config key `dataset.num_files_train`: {} files × {} samples give less than one batch of {} per \
             accelerator for {} accelerators; use more files (see `mlpdrive datasize`)",
            t.dataset.num_files_train, t.dataset.num_samples_per_file, t.reader.batch_size, t.accelerators
        )));
    }
    let mut invalid = Vec::new();
    if steps < MIN_STEPS_PER_EPOCH {
        let msg = format!(
            "{steps} steps per epoch is below the rules' minimum of {MIN_STEPS_PER_EPOCH}: step 0 (excluded from AU) \
             can absorb most of the I/O, so AU would be meaningless"
        );
        if !t.allow_short_epochs {
            return Err(Error::usage(format!(
                "{msg}; size the data set with `mlpdrive datasize` (and --set dataset.num_files_train=N), or \
                 --set allow_short_epochs=true to run anyway with the results marked invalid"
            )));
        }
        invalid.push(msg);
    }
    Ok(invalid)
}

/// In an MPI job every rank runs the same number of the job's
/// `accelerators` (the rules: every host runs the same number of simulated
/// accelerators). Returns the ones this process runs.
pub fn hosted_accelerators(t: &TrainingConfig, world: &World) -> Result<Range<u32>, Error> {
    let n = world.size() as u32;
    if !t.accelerators.is_multiple_of(n) {
        return Err(Error::usage(format!(
            "config key `accelerators`: {} accelerators cannot be shared evenly by {n} MPI ranks (every rank runs the \
             same number, as every MLPerf host does); set --set accelerators={} (a multiple of {n}) or start a \
             number of ranks that divides {}",
            t.accelerators,
            n * t.accelerators.div_ceil(n),
            t.accelerators
        )));
    }
    let r = world.share(t.accelerators as usize);
    Ok(r.start as u32..r.end as u32)
}

pub fn run(env: &RunEnv, t: &TrainingConfig) -> Result<WorkloadOutput, Error> {
    let invalid = check(t)?;
    let hosted = hosted_accelerators(t, env.world)?;
    let seed = env.common.seed;
    let spec = Arc::new(DatasetSpec::from_config(t, seed));
    let mut notes = notes_for(t);
    for n in &notes {
        eprintln!("mlpdrive: note: {n}");
    }

    // Setup: every training file present with the size its layout implies.
    env.phase.set("setup");
    let mut handles = Vec::with_capacity(spec.num_files_train as usize);
    let mut dataset_bytes = 0u64;
    for i in 0..spec.num_files_train {
        let name = spec.name(Split::Train, i);
        let len = spec.layout(Split::Train, i).map_err(Error::usage)?.len;
        match env.target.open(&name).map_err(|e| Error::failed(format!("cannot open {name}: {e}")))? {
            Some((h, size)) if size == len || !env.target.info().caps.stores_data => {
                handles.push(h);
                dataset_bytes += len;
            }
            Some((_, size)) => {
                return Err(Error::failed(format!(
                    "{name} holds {size} bytes, but this config and seed {seed} make it {len} bytes: the data set was \
                     generated with other parameters; rerun `mlpdrive datagen` with this config"
                )));
            }
            None => {
                return Err(Error::failed(format!(
                    "{name} is missing: generate the data set first with `mlpdrive datagen <this preset or file> \
                     --target <this target>` (same --set overrides)"
                )));
            }
        }
    }

    let align = env.target.info().caps.align as u64;
    let request_bytes = align_up(t.request_bytes(), align);
    let readers = hosted.len() * t.reader.read_threads as usize;
    // One spare slot so the engine can always ask the source for its next
    // move (a compute end) while every reader has a request in flight.
    let depth = readers * t.reader_queue_depth as usize + 1;
    let verify = env.verifier();
    let params = SourceParams {
        spec: spec.clone(),
        handles,
        accelerators: t.accelerators,
        hosted: hosted.clone(),
        world: *env.world,
        read_threads: t.reader.read_threads,
        reader_depth: t.reader_queue_depth,
        batches_in_flight: t.batches_in_flight(),
        batch: t.reader.batch_size,
        steps: t.steps_per_epoch(),
        epochs: t.train.epochs,
        request_bytes,
        align,
        compute: t.train.computation_time.clone(),
        shuffle: t.shuffle_mode,
        seed,
        verify,
    };
    let mut pool = BufPool::new(depth, request_bytes as usize, align as usize);
    let mut queue =
        env.target.queue(depth, &mut pool).map_err(|e| Error::failed(format!("cannot set up the read queue: {e}")))?;
    let mut src = TrainSource::new(params);
    let usage0 = crate::rusage::self_usage();
    // Every MPI rank starts reading together (alone: at once).
    let start = env.begin_measure()?;
    let deadline = env.common.duration.map(|d| start + d);
    // The source checks its reads itself (container formats), through `verify`.
    let ctl = env.control(deadline, crate::datagen::Verifier::OFF);
    let mut report = WorkerReport::default();
    engine::run_worker(&mut src, queue.as_mut(), &mut pool, &ctl, &mut report);
    let io_mode = queue.io_mode();
    drop(queue);
    let usage = crate::rusage::self_usage().since(&usage0);
    let window_s = report.last_completion.max(Some(env.clock.now())).map_or(0.0, |l| (l - start).as_secs_f64());

    let mut errors = report.errors;
    if let Some(e) = src.error.take() {
        errors.add(|| e);
    }
    if src.peer_finished && deadline.is_none() {
        errors.add(|| {
            "another MPI rank finished its run while this one had steps left (was it given a shorter --duration or \
             fewer epochs?)"
                .into()
        });
    }
    if errors.count == 0 && !src.finished && !crate::signal::interrupted() && deadline.is_none() {
        errors.add(|| "internal: the training loop stopped before its last epoch".into());
    }
    if !src.finished {
        notes.push(format!(
            "the run stopped after {} of {} epochs; metrics cover complete epochs only",
            src.epochs_done.len(),
            t.train.epochs
        ));
    }
    let mut verify_outcome = std::mem::take(&mut src.verify);
    verify_outcome.merge(&report.verify);
    let cpu_s = usage.cpu_user_s + usage.cpu_sys_s;
    let mut summary = build_summary(
        t,
        &src.epochs_done,
        &src.batch_load_ns,
        &report.recorder,
        window_s,
        cpu_s,
        &invalid,
        dataset_bytes,
        hosted.len() as u32,
    );
    if env.world.is_multi() {
        ranks::add_rank_keys(&mut summary, env.world, &hosted, &src.batch_load_ns);
    }
    if !invalid.is_empty() {
        notes.push(format!("results INVALID for submission: {}", invalid.join("; ")));
    }
    Ok(WorkloadOutput { summary, recorder: report.recorder, verify: verify_outcome, errors, window_s, io_mode, notes })
}

/// Notes about keys that are accepted but change nothing, and about an
/// imported DLIO YAML's unused keys.
fn notes_for(t: &TrainingConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if !t.dlio_unused_keys.is_empty() {
        notes.push(format!("DLIO keys not used by mlpdrive: {}", t.dlio_unused_keys.join(", ")));
    }
    if t.workflow.checkpoint {
        notes.push(
            "workflow.checkpoint: the training workload writes no checkpoints (run the checkpoint workload for that)"
                .into(),
        );
    }
    if t.dataset.num_files_eval > 0 {
        notes.push("dataset.num_files_eval: evaluation files are generated but not read by a run".into());
    }
    if t.reader.odirect.is_some() {
        notes.push("reader.odirect: mlpdrive follows io.direct (default true) instead".into());
    }
    notes
}

/// Percentiles of a list of nanosecond values, in microseconds.
fn latency_us(ns: &[u64]) -> Value {
    // `saturating_record` would clamp to the initial 2 ns bound instead of
    // growing the histogram: size it for a minute and let it grow beyond.
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid");
    h.auto(true);
    for &v in ns {
        let _ = h.record(v.max(1));
    }
    let us = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e3 };
    json!({
        "count": h.len(),
        "mean": if h.is_empty() { 0.0 } else { h.mean() / 1e3 },
        "p50": us(0.5),
        "p90": us(0.9),
        "p99": us(0.99),
        "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1e3 },
    })
}

/// The workload's `summary` object (documented in docs/results-schema.md).
#[allow(clippy::too_many_arguments)]
pub fn build_summary(
    t: &TrainingConfig,
    epochs: &[EpochRecord],
    batch_load_ns: &[u64],
    recorder: &crate::recorder::Recorder,
    window_s: f64,
    cpu_s: f64,
    invalid: &[String],
    dataset_bytes: u64,
    hosted_accelerators: u32,
) -> Value {
    let timelines: Vec<Vec<_>> = epochs.iter().map(|e| e.accelerators.clone()).collect();
    let params = MetricParams {
        batch_size: t.reader.batch_size,
        record_length_bytes: t.dataset.record_length_bytes,
        au_threshold: t.metric.au,
        dlio_v2_throughput: t.dlio_v2_throughput,
    };
    let metric = reference_metrics(&timelines, &params);
    let samples_per_epoch = t.steps_per_epoch() * t.reader.batch_size * u64::from(hosted_accelerators);
    let per_epoch: Vec<Value> = epochs
        .iter()
        .enumerate()
        .map(|(e, r)| {
            json!({
                "epoch": e + 1,
                "wall_s": r.wall_s,
                "bytes_read": r.bytes_read,
                "read_bytes_per_s": if r.wall_s > 0.0 { r.bytes_read as f64 / r.wall_s } else { 0.0 },
                "samples": samples_per_epoch,
                "samples_per_s": if r.wall_s > 0.0 { samples_per_epoch as f64 / r.wall_s } else { 0.0 },
            })
        })
        .collect();
    let bytes: u64 = epochs.iter().map(|e| e.bytes_read).sum();
    let wall: f64 = epochs.iter().map(|e| e.wall_s).sum();
    let (wall_mean, _) = mean_stdev(&epochs.iter().map(|e| e.wall_s).collect::<Vec<_>>());
    json!({
        "model": t.model.name,
        "format": t.dataset.format.as_str(),
        "num_accelerators": t.accelerators,
        "num_hosts": 1,
        "num_files_train": t.dataset.num_files_train,
        "num_samples_per_file": t.dataset.num_samples_per_file,
        "record_length_bytes": t.dataset.record_length_bytes,
        "dataset_bytes": dataset_bytes,
        "batch_size": t.reader.batch_size,
        "read_threads": t.reader.read_threads,
        "request_bytes": t.request_bytes(),
        "computation_time_mean_s": t.train.computation_time.mean_s(),
        "epochs": t.train.epochs,
        "epochs_completed": epochs.len(),
        "steps_per_epoch": t.steps_per_epoch(),
        "shuffle_mode": match t.shuffle_mode {
            crate::config::training::ShuffleMode::Epoch => "epoch",
            crate::config::training::ShuffleMode::Fixed => "fixed",
        },
        "au_threshold_percentage": 100.0 * t.metric.au,
        "valid": invalid.is_empty(),
        "invalid_reasons": invalid,
        "metric": metric,
        "measured": {
            "per_epoch": per_epoch,
            "epoch_wall_mean_s": wall_mean,
            "bytes_read": bytes,
            "read_bytes_per_s": if wall > 0.0 { bytes as f64 / wall } else { 0.0 },
            "samples_per_s": if wall > 0.0 { (samples_per_epoch * epochs.len() as u64) as f64 / wall } else { 0.0 },
            "batch_load_latency_us": latency_us(batch_load_ns),
            "read": raw_op_summary(recorder.get(&READ_KEY), window_s),
            "cpu_s": cpu_s,
            "cpu_s_per_GB_read": if bytes > 0 { cpu_s / (bytes as f64 / 1e9) } else { 0.0 },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::metrics::EpochTimeline;
    use super::*;

    #[test]
    fn batch_load_percentiles_are_of_the_real_values() {
        let v = latency_us(&[1_000_000; 99].iter().copied().chain([40_000_000]).collect::<Vec<_>>());
        assert_eq!(v["count"], 100);
        assert!((v["p50"].as_f64().unwrap() - 1000.0).abs() < 1.0, "{v}");
        assert!((v["max"].as_f64().unwrap() - 40_000.0).abs() < 40.0, "{v}");
    }

    /// docs/results-schema.md names every key of the training summary.
    #[test]
    fn schema_doc_names_every_summary_field() {
        const DOC: &str = include_str!("../../../../docs/results-schema.md");
        let cfg = crate::config::load("training-smoke", &[], None, None).unwrap();
        let t = TrainingConfig::from_run_config(&cfg).unwrap();
        let tl = EpochTimeline { start_s: 0.0, end_s: 2.0, load_s: vec![0.1; 3], compute_s: vec![0.5; 3] };
        let epochs = vec![EpochRecord { accelerators: vec![tl.clone(), tl], bytes_read: 10, wall_s: 2.0 }];
        let mut rec = crate::recorder::Recorder::new();
        rec.record(&READ_KEY, 1000, 10);
        let mut s = build_summary(&t, &epochs, &[5, 6], &rec, 2.0, 0.1, &["short".into()], 10, 2);
        // The keys an MPI rank adds to its own summary, and the merged one's.
        let w = World::single();
        ranks::add_rank_keys(&mut s, &w, &(0..2), &[5, 6]);
        let merged = ranks::merge_summary(&[s.clone(), s.clone()], &rec, &["h".into(), "h".into()], 2.0);
        for (k, v) in merged.as_object().unwrap() {
            if s.get(k).is_none() {
                s[k] = v.clone();
            }
        }
        fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    for (k, c) in o {
                        let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        out.push(p.clone());
                        keys(&p, c, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|c| keys(&format!("{prefix}[]"), c, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        keys("", &s, &mut all);
        // The histogram a rank ships to rank 0 is documented as one key.
        all.retain(|p| !p.starts_with("measured.batch_load_wire."));
        let section = DOC.split("### summary (training)").nth(1).expect("a training summary section");
        let missing: Vec<&String> = all
            .iter()
            .filter(|p| {
                let leaf = p.rsplit('.').next().unwrap();
                let inner = p.strip_prefix("metric.").or_else(|| p.strip_prefix("measured.")).unwrap_or(p);
                ![format!("`summary.{p}`"), format!("`{inner}`"), format!("`{leaf}`")]
                    .iter()
                    .any(|k| section.contains(k))
            })
            .collect();
        assert!(missing.is_empty(), "training summary fields missing from docs/results-schema.md: {missing:?}");
    }
}
