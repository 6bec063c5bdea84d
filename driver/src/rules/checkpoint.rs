//! Checkpoint rules (specs/checkpoint.md §6): the CLOSED process count per
//! model or 8 ranks in subset mode (never for 8B); only the checkpoint
//! folder (and the two checkpoint counts) changed; fsync on; the
//! checkpoint's bytes are the model's; aggregate accelerator memory (80 GB
//! each) holds it; 10 saves and 10 loads over a model's runs.
//!
//! Corrections to the reference (§1, §6): checkpoint sizes are DLIO's own
//! computation (what mlpdrive writes: 1T is 15,426.59 GiB, not the rules
//! table's 18 TB, which is mlpstorage's hard-coded `LLM_SIZE_BY_RANK`), and
//! subset sizes follow the real shard layout (ZeRO-1 for 405B and 1T, ZeRO-3
//! for 8B and 70B), not v2.0 mlpstorage's datasize, which swaps the ZeRO
//! levels and ignores subset mode.

use std::collections::BTreeMap;

use serde_json::Value;

use super::reference::{self, HARNESS_KEYS};
use super::{Division, Finding, Run, Verdict};
use crate::report::metrics::at;

/// MPI processes of the CLOSED job, per model.
pub const CLOSED_PROCESSES: &[(&str, u64)] =
    &[("llama3-8b", 8), ("llama3-70b", 64), ("llama3-405b", 512), ("llama3-1t", 1024)];

/// Ranks in subset mode.
pub const SUBSET_PROCESSES: u64 = 8;

/// Saves and loads a submission has, over all runs of a model.
pub const CHECKPOINTS_PER_PHASE: u64 = 10;

/// Accelerator memory the reference checker assumes, bytes (80 GB).
pub const ACCELERATOR_MEMORY_BYTES: u64 = 80_000_000_000;

/// Keys that may differ from the reference preset: the folder and counts
/// (checkpoint.md §6), the rank count (its own rule), mlpdrive's streaming
/// knobs (transfer size and depth, which have no reference counterpart) and
/// the data seed.
pub const ALLOWED: &[&str] = &[
    "checkpoint.checkpoint_folder",
    "checkpoint.num_checkpoints_write",
    "checkpoint.num_checkpoints_read",
    "ranks",
    "transfer_size",
    "queue_depth",
    "seed",
];

fn is_subset(config: &Value) -> bool {
    at(config, "checkpoint.mode").and_then(Value::as_str) == Some("subset")
}

fn preset_name(model: &str, subset: bool) -> String {
    if subset { format!("checkpoint/{model}-subset") } else { format!("checkpoint/{model}") }
}

/// Bytes of one checkpoint of a preset, by the DLIO formula.
pub fn reference_bytes(preset: &str) -> Option<u64> {
    let cfg = crate::config::load(preset, &[], None, None).ok()?;
    let ck = crate::config::checkpoint::CheckpointConfig::from_run_config(&cfg).ok()?;
    Some(crate::workload::checkpoint::model::CheckpointPlan::from_config(&ck).total_bytes())
}

pub fn check_run(run: &Run, division: Division) -> Vec<Finding> {
    let r = &run.result;
    let id = r.run_id.as_str();
    let c = &r.config;
    let model = at(c, "model.name").and_then(Value::as_str).unwrap_or("(none)");
    let subset = is_subset(c);
    let ranks = at(c, "ranks").and_then(Value::as_u64).unwrap_or(0);
    let mut out = Vec::new();

    let closed = CLOSED_PROCESSES.iter().find(|(m, _)| *m == model).map(|(_, n)| *n);
    let preset = preset_name(model, subset);
    let reference = closed.and_then(|_| reference::effective_config(&preset).ok());
    let Some(reference) = reference else {
        out.push(Finding::new(
            "checkpoint.reference",
            id,
            false,
            format!("model {model}{}", if subset { " (subset mode)" } else { "" }),
            "an MLPerf checkpoint model: llama3-8b, llama3-70b, llama3-405b or llama3-1t (subset mode not for 8b)",
        ));
        return out;
    };
    out.push(Finding::new("checkpoint.reference", id, true, format!("checked against preset {preset}"), ""));

    let allowed: Vec<&str> = HARNESS_KEYS.iter().chain(ALLOWED).copied().collect();
    let o = reference::overrides(c, &reference, &allowed);
    let overrides_ok = o.is_empty() || division == Division::Open;
    out.push(Finding::new(
        "checkpoint.overrides",
        id,
        overrides_ok,
        if o.is_empty() {
            "no override outside the allowed keys".to_string()
        } else {
            o.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        },
        format!("CLOSED: only these keys changed from {preset}: {}", allowed.join(", ")),
    ));

    let closed = closed.unwrap_or(0);
    let (ok, want) = match (division, subset) {
        (Division::Closed, false) => (ranks == closed, format!("exactly {closed} processes for {model} (CLOSED)")),
        (Division::Closed, true) => (
            ranks == SUBSET_PROCESSES && model != "llama3-8b",
            format!("exactly {SUBSET_PROCESSES} processes in subset mode, and not for llama3-8b"),
        ),
        (Division::Open, _) => {
            let tp = at(c, "model.parallelism.tensor").and_then(Value::as_u64).unwrap_or(1);
            let pp = at(c, "model.parallelism.pipeline").and_then(Value::as_u64).unwrap_or(1);
            let unit = (tp * pp).max(1);
            (ranks > 0 && ranks.is_multiple_of(unit), format!("a multiple of TP x PP = {unit} (OPEN)"))
        }
    };
    out.push(Finding::new(
        "checkpoint.processes",
        id,
        ok,
        format!("{ranks} ranks{}", if subset { ", subset mode" } else { "" }),
        want,
    ));

    let fsync = at(c, "checkpoint.fsync").and_then(Value::as_bool);
    out.push(Finding::new(
        "checkpoint.fsync",
        id,
        fsync == Some(true),
        format!("checkpoint.fsync = {}", fsync.map_or("(absent)".into(), |b| b.to_string())),
        "checkpoint.fsync true",
    ));

    let bytes = at(&r.summary, "checkpoint_bytes").and_then(Value::as_u64);
    let want_bytes = reference_bytes(&preset);
    out.push(match (bytes, want_bytes) {
        (Some(b), Some(w)) => Finding::new(
            "checkpoint.size",
            id,
            b == w || division == Division::Open,
            format!("{b} bytes per checkpoint ({:.2} GiB)", b as f64 / (1u64 << 30) as f64),
            format!("{w} bytes ({:.2} GiB), DLIO's computed size for {preset}", w as f64 / (1u64 << 30) as f64),
        ),
        _ => Finding::new("checkpoint.size", id, false, "no checkpoint_bytes in the summary", "the model's size")
            .with(Verdict::NotChecked),
    });

    if let Some(b) = bytes {
        let memory = ranks.max(1) * ACCELERATOR_MEMORY_BYTES;
        out.push(Finding::new(
            "checkpoint.accelerator-memory",
            id,
            b <= memory,
            format!("{b} bytes per checkpoint over {ranks} ranks"),
            format!("at most {ranks} x 80 GB = {memory} bytes (the checker's accelerator memory)"),
        ));
    }
    out
}

/// `checkpoint.count`: 10 saves and 10 loads over all runs of a model (and mode).
pub fn check_group(runs: &[Run]) -> Vec<Finding> {
    let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.result.workload == "checkpoint") {
        let c = &run.result.config;
        let model = at(c, "model.name").and_then(Value::as_str).unwrap_or("?");
        let key = format!("checkpoint {model}{}", if is_subset(c) { " subset" } else { "" });
        let n = |p: &str| at(&run.result.summary, p).and_then(Value::as_u64).unwrap_or(0);
        let e = groups.entry(key).or_default();
        e.0 += n("save.checkpoints");
        e.1 += n("load.checkpoints");
    }
    groups
        .into_iter()
        .map(|(key, (saves, loads))| {
            Finding::new(
                "checkpoint.count",
                key,
                saves == CHECKPOINTS_PER_PHASE && loads == CHECKPOINTS_PER_PHASE,
                format!("{saves} saves and {loads} loads over the runs"),
                format!("exactly {CHECKPOINTS_PER_PHASE} saves and {CHECKPOINTS_PER_PHASE} loads"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{finding, run_of, verdict};

    fn summary(preset: &str, saves: u64, loads: u64) -> Value {
        serde_json::json!({
            "checkpoint_bytes": reference_bytes(preset).expect("size"),
            "save": { "checkpoints": saves },
            "load": { "checkpoints": loads },
        })
    }

    /// The corrected reference sizes (checkpoint.md §1).
    #[test]
    fn reference_sizes_are_dlios_not_the_rules_table() {
        let gib = |p: &str| reference_bytes(p).expect(p) as f64 / (1u64 << 30) as f64;
        assert!((gib("checkpoint/llama3-1t") - 15_426.59).abs() < 0.01, "{}", gib("checkpoint/llama3-1t"));
        assert!((gib("checkpoint/llama3-1t-subset") - 143.72).abs() < 0.01);
        assert!((gib("checkpoint/llama3-405b-subset") - 98.54).abs() < 0.01);
        assert!((gib("checkpoint/llama3-70b") - 911.21).abs() < 0.01);
    }

    #[test]
    fn closed_subset_run_passes() {
        let p = "checkpoint/llama3-70b-subset";
        let mut run = run_of(p, summary(p, 10, 10));
        run.result.config["checkpoint"]["checkpoint_folder"] = "elsewhere".into();
        let f = check_run(&run, Division::Closed);
        for rule in [
            "checkpoint.reference",
            "checkpoint.overrides",
            "checkpoint.processes",
            "checkpoint.fsync",
            "checkpoint.size",
            "checkpoint.accelerator-memory",
        ] {
            assert_eq!(verdict(&f, rule), Verdict::Pass, "{rule}: {f:#?}");
        }
        assert_eq!(verdict(&check_group(&[run]), "checkpoint.count"), Verdict::Pass);
    }

    #[test]
    fn wrong_process_count_overrides_and_counts_fail() {
        let p = "checkpoint/llama3-70b";
        let mut run = run_of(p, summary(p, 5, 0));
        run.result.config["ranks"] = 16.into();
        run.result.config["checkpoint"]["time_between_checkpoints"] = "0s".into();
        let f = check_run(&run, Division::Closed);
        assert_eq!(verdict(&f, "checkpoint.processes"), Verdict::Fail);
        assert!(finding(&f, "checkpoint.processes").expected.contains("exactly 64 processes"));
        assert_eq!(verdict(&f, "checkpoint.overrides"), Verdict::Fail);
        assert!(finding(&f, "checkpoint.overrides").found.contains("checkpoint.time_between_checkpoints"));
        let g = check_group(&[run.clone()]);
        assert_eq!(verdict(&g, "checkpoint.count"), Verdict::Fail);
        assert!(finding(&g, "checkpoint.count").found.contains("5 saves and 0 loads"));
        // OPEN: 16 ranks is a multiple of TP x PP = 8.
        assert_eq!(verdict(&check_run(&run, Division::Open), "checkpoint.processes"), Verdict::Pass);
        run.result.config["ranks"] = 12.into();
        assert_eq!(verdict(&check_run(&run, Division::Open), "checkpoint.processes"), Verdict::Fail);
    }

    #[test]
    fn subset_8b_and_wrong_sizes_and_unknown_models_fail() {
        let p = "checkpoint/llama3-8b";
        let mut run = run_of(p, summary(p, 10, 10));
        run.result.summary["checkpoint_bytes"] = 18_000_000_000_000u64.into();
        let f = check_run(&run, Division::Closed);
        assert_eq!(verdict(&f, "checkpoint.size"), Verdict::Fail);
        assert_eq!(verdict(&f, "checkpoint.accelerator-memory"), Verdict::Fail);
        run.result.config["checkpoint"]["mode"] = "subset".into();
        let f = check_run(&run, Division::Closed);
        assert_eq!(verdict(&f, "checkpoint.reference"), Verdict::Fail, "there is no 8b subset");
        let smoke = run_of("checkpoint-smoke", summary("checkpoint-smoke", 2, 2));
        assert_eq!(verdict(&check_run(&smoke, Division::Open), "checkpoint.reference"), Verdict::Fail);
    }
}
