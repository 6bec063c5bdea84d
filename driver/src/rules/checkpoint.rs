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
use super::{Division, Finding, Inputs, Run, Verdict};
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

pub fn check_run(run: &Run, division: Division, inputs: &Inputs) -> Vec<Finding> {
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
    out.push(phase_pause(r));
    let hosts = ranks_per_host(r, ranks);
    out.push(processes_per_host(id, &hosts));
    out.push(cache_flush(r, inputs, bytes, hosts.len() as u64));
    out
}

/// The v3 validator's longest pause between the save phase and the load phase.
pub const MAX_PHASE_PAUSE_S: f64 = 30.0;

/// The rules ask for more than this many processes per host.
pub const MIN_PROCESSES_PER_HOST_EXCLUSIVE: u64 = 4;

/// Below this many times the client's RAM of data written per host, the
/// page cache could hold the checkpoints, so the rules want a flush
/// between saves and loads (`checkpointDataSizeRatio`).
pub const CACHE_FLUSH_RATIO: f64 = 3.0;

/// `checkpoint.phase-pause`: in a run of both phases, the first load starts
/// `time_between_checkpoints` after the last save (every checkpoint does),
/// which must be at most 30 s. Separate save and load runs: their gap is not
/// in the results (a run records its start, not its end).
fn phase_pause(r: &crate::results::RunResult) -> Finding {
    let c = &r.config;
    let n = |k: &str| at(c, k).and_then(Value::as_u64).unwrap_or(0);
    let (writes, reads) = (n("checkpoint.num_checkpoints_write"), n("checkpoint.num_checkpoints_read"));
    let id = r.run_id.as_str();
    let want = format!("at most {MAX_PHASE_PAUSE_S} s between the last save and the first load");
    if writes == 0 || reads == 0 {
        return Finding::new(
            "checkpoint.phase-pause",
            id,
            false,
            format!(
                "a run of one phase ({writes} saves, {reads} loads): the pause to the other run is not in the results"
            ),
            format!("{want}; run saves and loads in one run to have it checked"),
        )
        .with(Verdict::NotChecked);
    }
    let pause = at(c, "checkpoint.time_between_checkpoints")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_duration(t).ok());
    match pause {
        Some(p) => Finding::new(
            "checkpoint.phase-pause",
            id,
            p.as_secs_f64() <= MAX_PHASE_PAUSE_S,
            format!(
                "the loads started {} after the saves (checkpoint.time_between_checkpoints, in one run)",
                humantime::format_duration(p)
            ),
            want,
        ),
        None => Finding::new("checkpoint.phase-pause", id, false, "no checkpoint.time_between_checkpoints", want)
            .with(Verdict::NotChecked),
    }
}

/// Checkpoint ranks per host: an MPI job's processes each run their share
/// of the ranks (`World::share`) on the host each reported; a run without
/// MPI runs every rank on its own host.
fn ranks_per_host(r: &crate::results::RunResult, ranks: u64) -> BTreeMap<String, u64> {
    let mut hosts = BTreeMap::new();
    match &r.ranks {
        Some(job) if job.size > 0 => {
            let (n, s) = (ranks as u128, job.size as u128);
            for line in &job.per_rank {
                let i = line.rank as u128;
                let share = ((i + 1) * n / s - i * n / s) as u64;
                *hosts.entry(line.host.clone()).or_insert(0) += share;
            }
        }
        _ => {
            hosts.insert(r.host.clone(), ranks);
        }
    }
    hosts
}

/// `checkpoint.processes-per-host`: more than 4 checkpoint processes on
/// every host (specs/checkpoint.md §6).
fn processes_per_host(id: &str, hosts: &BTreeMap<String, u64>) -> Finding {
    let min = hosts.values().copied().min().unwrap_or(0);
    let found = hosts.iter().map(|(h, n)| format!("{n} on {h}")).collect::<Vec<_>>().join(", ");
    Finding::new(
        "checkpoint.processes-per-host",
        id,
        min > MIN_PROCESSES_PER_HOST_EXCLUSIVE,
        format!("{found} (ranks per host)"),
        format!("more than {MIN_PROCESSES_PER_HOST_EXCLUSIVE} processes on every host"),
    )
}

/// `checkpoint.cache-flush`: loads must not be served by the client's page
/// cache. O_DIRECT loads (and targets without a client page cache) never
/// are; buffered loads need the data written per host to be at least 3 x
/// its RAM, or a flush between the phases, which one run of both phases
/// cannot have.
fn cache_flush(r: &crate::results::RunResult, inputs: &Inputs, bytes: Option<u64>, hosts: u64) -> Finding {
    let id = r.run_id.as_str();
    let c = &r.config;
    let n = |k: &str| at(c, k).and_then(Value::as_u64).unwrap_or(0);
    let (writes, reads) = (n("checkpoint.num_checkpoints_write"), n("checkpoint.num_checkpoints_read"));
    let want = format!(
        "loads not served from the page cache: O_DIRECT, or data written per host >= {CACHE_FLUSH_RATIO} x its RAM,          or a cache flush between saves and loads"
    );
    let rule = "checkpoint.cache-flush";
    if reads == 0 {
        return Finding::new(rule, id, true, "no loads in this run", want);
    }
    let kind = r.target.kind.as_str();
    if !matches!(kind, "file" | "dev") {
        return Finding::new(rule, id, true, format!("{kind} target: no client page cache in the data path"), want);
    }
    if r.io_mode.direct {
        return Finding::new(rule, id, true, "loads used O_DIRECT: they bypass the page cache", want);
    }
    let (Some(gib), Some(b)) = (inputs.client_memory_gib, bytes) else {
        return Finding::new(rule, id, false, "buffered loads (io.direct=false); the client's memory is unknown", want)
            .with(Verdict::NotChecked)
            .expected_flag("--client-memory-gib");
    };
    if writes == 0 {
        return Finding::new(
            rule,
            id,
            false,
            "a buffered load-only run: the flush before it is done outside mlpdrive and is not in the results",
            want,
        )
        .with(Verdict::NotChecked);
    }
    let per_host = (b * writes) as f64 / hosts.max(1) as f64;
    let ratio = per_host / (gib * (1u64 << 30) as f64);
    Finding::new(
        rule,
        id,
        ratio >= CACHE_FLUSH_RATIO,
        format!(
            "buffered loads; {:.2} GiB written per host = {ratio:.2} x {gib} GiB of RAM, and no flush is possible              inside one run of saves and loads",
            per_host / (1u64 << 30) as f64
        ),
        format!("{want}; use io.direct=true, or separate save and load runs with a flush in between"),
    )
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
        let f = check_run(&run, Division::Closed, &Inputs::default());
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
        let f = check_run(&run, Division::Closed, &Inputs::default());
        assert_eq!(verdict(&f, "checkpoint.processes"), Verdict::Fail);
        assert!(finding(&f, "checkpoint.processes").expected.contains("exactly 64 processes"));
        assert_eq!(verdict(&f, "checkpoint.overrides"), Verdict::Fail);
        assert!(finding(&f, "checkpoint.overrides").found.contains("checkpoint.time_between_checkpoints"));
        let g = check_group(&[run.clone()]);
        assert_eq!(verdict(&g, "checkpoint.count"), Verdict::Fail);
        assert!(finding(&g, "checkpoint.count").found.contains("5 saves and 0 loads"));
        // OPEN: 16 ranks is a multiple of TP x PP = 8.
        assert_eq!(
            verdict(&check_run(&run, Division::Open, &Inputs::default()), "checkpoint.processes"),
            Verdict::Pass
        );
        run.result.config["ranks"] = 12.into();
        assert_eq!(
            verdict(&check_run(&run, Division::Open, &Inputs::default()), "checkpoint.processes"),
            Verdict::Fail
        );
    }

    #[test]
    fn subset_8b_and_wrong_sizes_and_unknown_models_fail() {
        let p = "checkpoint/llama3-8b";
        let mut run = run_of(p, summary(p, 10, 10));
        run.result.summary["checkpoint_bytes"] = 18_000_000_000_000u64.into();
        let f = check_run(&run, Division::Closed, &Inputs::default());
        assert_eq!(verdict(&f, "checkpoint.size"), Verdict::Fail);
        assert_eq!(verdict(&f, "checkpoint.accelerator-memory"), Verdict::Fail);
        run.result.config["checkpoint"]["mode"] = "subset".into();
        let f = check_run(&run, Division::Closed, &Inputs::default());
        assert_eq!(verdict(&f, "checkpoint.reference"), Verdict::Fail, "there is no 8b subset");
        let smoke = run_of("checkpoint-smoke", summary("checkpoint-smoke", 2, 2));
        assert_eq!(
            verdict(&check_run(&smoke, Division::Open, &Inputs::default()), "checkpoint.reference"),
            Verdict::Fail
        );
    }

    #[test]
    fn phase_pause_processes_per_host_and_cache_flush() {
        let p = "checkpoint/llama3-8b";
        let mut run = run_of(p, summary(p, 10, 10));
        let none = Inputs::default();
        let f = check_run(&run, Division::Closed, &none);
        assert_eq!(verdict(&f, "checkpoint.phase-pause"), Verdict::Pass, "5 s in the preset");
        assert_eq!(verdict(&f, "checkpoint.processes-per-host"), Verdict::Pass, "8 ranks on one host");
        assert!(finding(&f, "checkpoint.processes-per-host").found.contains("8 on bench1"));
        assert_eq!(verdict(&f, "checkpoint.cache-flush"), Verdict::Pass, "O_DIRECT loads");

        run.result.config["checkpoint"]["time_between_checkpoints"] = "45s".into();
        assert_eq!(verdict(&check_run(&run, Division::Closed, &none), "checkpoint.phase-pause"), Verdict::Fail);
        run.result.config["checkpoint"]["num_checkpoints_read"] = 0.into();
        assert_eq!(verdict(&check_run(&run, Division::Closed, &none), "checkpoint.phase-pause"), Verdict::NotChecked);

        // An MPI job of 2 processes on two hosts: 4 ranks per host is not more than 4.
        let mut mpi = run_of(p, summary(p, 10, 10));
        let line = |rank: usize, host: &str| crate::results::ranks::RankLine {
            rank,
            host: host.into(),
            status: crate::results::RunStatus::Ok,
            duration_s: 1.0,
            errors: 0,
            first_error: None,
            file: None,
        };
        mpi.result.ranks =
            Some(crate::results::ranks::RanksRecord { size: 2, per_rank: vec![line(0, "a"), line(1, "b")] });
        let f = check_run(&mpi, Division::Closed, &none);
        assert_eq!(verdict(&f, "checkpoint.processes-per-host"), Verdict::Fail);
        assert_eq!(finding(&f, "checkpoint.processes-per-host").found, "4 on a, 4 on b (ranks per host)");

        // Buffered loads: the data written per host against 3 x its RAM.
        let mut buffered = run_of(p, summary(p, 10, 10));
        buffered.result.io_mode.direct = false;
        let f = check_run(&buffered, Division::Closed, &none);
        assert_eq!(verdict(&f, "checkpoint.cache-flush"), Verdict::NotChecked);
        assert!(finding(&f, "checkpoint.cache-flush").expected.contains("--client-memory-gib"));
        // 8B is about 105 GiB per checkpoint, 10 saves: about 1 TiB written.
        let big = Inputs { client_memory_gib: Some(256.0), ..Inputs::default() };
        assert_eq!(verdict(&check_run(&buffered, Division::Closed, &big), "checkpoint.cache-flush"), Verdict::Pass);
        let small = Inputs { client_memory_gib: Some(1024.0), ..Inputs::default() };
        let f = check_run(&buffered, Division::Closed, &small);
        assert_eq!(verdict(&f, "checkpoint.cache-flush"), Verdict::Fail);
        assert!(finding(&f, "checkpoint.cache-flush").found.contains("x 1024 GiB of RAM"), "{f:#?}");
    }
}
