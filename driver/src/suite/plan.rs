//! The MLPerf Storage sequence as a list of steps: which preset runs, with
//! which overrides, how often, and after which pause. Pure (nothing runs,
//! nothing is written), so the sequence of each scale is unit-tested.
//!
//! Full scale is the sequence the rules require (specs: training.md §3,
//! checkpoint.md §6, kvcache.md §13.2, vdb.md §1.2): training datagen, a
//! warm-up and 5 measured runs; one checkpoint run of 10 saves + 10 loads;
//! KV cache options 1–3 × 3 trials with 90 s between options; 5 vdb runs.
//! Smoke scale runs the same sequence shape on the CI-sized presets with
//! fewer repetitions, shorter runs and near-zero pauses: it tests the
//! harness, and is never a valid submission.

use std::time::Duration;

use crate::config;
use crate::error::Error;

/// How big the suite's runs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// The MLPerf-sized presets and the rules' repetitions and pauses (hours).
    Full,
    /// CI-sized presets, one repetition each, near-zero pauses (seconds). NOT a valid submission.
    Smoke,
}

impl Scale {
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Smoke => "smoke",
        }
    }
}

/// The suite's workloads, in the order they run.
pub const WORKLOADS: [&str; 4] = ["training", "checkpoint", "kvcache", "vdb"];

/// The default preset of each selectable workload at full scale.
pub const FULL_TRAINING: &str = "training/unet3d_h100";
pub const FULL_CHECKPOINT: &str = "checkpoint/llama3-8b";
/// The MLPerf-sized vdb presets (`vdb/vdb-1m-1536`, `vdb/vdb-10m-1536`)
/// build their index in RAM in every run (hours at 1M), so the default is
/// the smoke index, and the suite says so (docs/suite.md).
pub const FULL_VDB: &str = "vdb/vdb-smoke";
/// The KV cache options: fixed by the rules, not selectable.
pub const KV_OPTIONS: [&str; 3] = ["kvcache/mlperf-option1", "kvcache/mlperf-option2", "kvcache/mlperf-option3"];

/// The rules' repetitions and pauses.
pub const TRAINING_MEASURED_RUNS: u32 = 5;
pub const KV_TRIALS: u32 = 3;
pub const VDB_RUNS: u32 = 5;
/// Rules.md §6.3 (kvcache.md §13.2): 90 s between the options.
pub const KV_OPTION_DELAY: Duration = Duration::from_secs(90);
/// Smoke scale's pause between options: long enough to exercise the pause.
pub const SMOKE_KV_OPTION_DELAY: Duration = Duration::from_millis(200);

/// The KV smoke run shaped like each option (its CPU tier and concurrent
/// allocations), on the CI model: option i → overrides.
const SMOKE_KV_OPTION_SETS: [&[&str]; 3] = [
    &["cpu_mem_gb=0", "max_concurrent_allocs=16"],
    &["cpu_mem_gb=0.0625", "max_concurrent_allocs=16"],
    &["cpu_mem_gb=0", "max_concurrent_allocs=4"],
];

/// What the user chose (the CLI's `suite mlperf` flags, typed).
#[derive(Clone, Debug)]
pub struct Choice {
    pub scale: Scale,
    /// `--training`, `--checkpoint`, `--vdb` (None: the scale's default).
    pub training: Option<String>,
    pub checkpoint: Option<String>,
    pub vdb: Option<String>,
    /// `--set WORKLOAD:KEY=VALUE`, split: (workload, KEY=VALUE).
    pub sets: Vec<(String, String)>,
    /// `--kv-option-delay` (None: the scale's default).
    pub kv_option_delay: Option<Duration>,
}

/// What one step does.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// `mlpdrive datagen` (writes a data set, no results.json).
    Datagen,
    /// `mlpdrive run` (one run directory with a results.json).
    Run,
}

/// One step of the sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// 1-based position.
    pub index: usize,
    /// Its subdirectory of the suite's output, e.g. `03-training-run-1`.
    pub dir: String,
    pub workload: &'static str,
    pub kind: StepKind,
    /// What it is, e.g. `training measured run 1 of 5`.
    pub label: String,
    pub preset: String,
    /// `--set` overrides, in order: the scale's, then the user's.
    pub sets: Vec<String>,
    /// Pause before the step starts.
    pub delay_before: Duration,
}

/// The whole sequence, resolved.
#[derive(Clone, Debug)]
pub struct Plan {
    pub scale: Scale,
    pub steps: Vec<Step>,
    /// Things the user should know before hours of running (printed, and in suite.json).
    pub notes: Vec<String>,
}

/// Builds the sequence for `choice`. Checks that each chosen preset is of
/// its workload and that every `--set` names a suite workload; the configs
/// themselves are checked by [`validate`].
pub fn build(choice: &Choice) -> Result<Plan, Error> {
    for (w, kv) in &choice.sets {
        if !WORKLOADS.contains(&w.as_str()) {
            return Err(Error::usage(format!(
                "--set {w}:{kv}: `{w}` is not a suite workload; use one of {} (like --set training:dataset.num_files_train=28000)",
                WORKLOADS.join(", ")
            )));
        }
    }
    let smoke = choice.scale == Scale::Smoke;
    let user_sets =
        |w: &str| -> Vec<String> { choice.sets.iter().filter(|(sw, _)| sw == w).map(|(_, kv)| kv.clone()).collect() };
    let with_user = |mut sets: Vec<String>, w: &str| {
        sets.extend(user_sets(w));
        sets
    };
    let mut notes = Vec::new();
    let mut steps = Vec::new();
    let mut push = |dir: String, workload: &'static str, kind, label: String, preset: &str, sets, delay| {
        let index = steps.len() + 1;
        steps.push(Step {
            index,
            dir: format!("{index:02}-{dir}"),
            workload,
            kind,
            label,
            preset: preset.to_string(),
            sets,
            delay_before: delay,
        });
    };

    // Training: the data set once, then a warm-up and the measured runs.
    let training =
        choice.training.clone().unwrap_or_else(|| if smoke { "training-smoke" } else { FULL_TRAINING }.into());
    let mut t_sets: Vec<String> = Vec::new();
    if smoke {
        t_sets.extend(["train.epochs=1".into(), "train.computation_time=0.001".into()]);
    }
    let t_sets = with_user(t_sets, "training");
    let measured = if smoke { 1 } else { TRAINING_MEASURED_RUNS };
    push(
        "training-datagen".into(),
        "training",
        StepKind::Datagen,
        "training datagen".into(),
        &training,
        t_sets.clone(),
        Duration::ZERO,
    );
    push(
        "training-warmup".into(),
        "training",
        StepKind::Run,
        "training warm-up run".into(),
        &training,
        t_sets.clone(),
        Duration::ZERO,
    );
    for i in 1..=measured {
        push(
            format!("training-run-{i}"),
            "training",
            StepKind::Run,
            format!("training measured run {i} of {measured}"),
            &training,
            t_sets.clone(),
            Duration::ZERO,
        );
    }

    // Checkpoint: one run of all saves then all loads (the preset's counts:
    // 10 + 10 for the MLPerf models).
    let checkpoint =
        choice.checkpoint.clone().unwrap_or_else(|| if smoke { "checkpoint-smoke" } else { FULL_CHECKPOINT }.into());
    let mut c_sets: Vec<String> = Vec::new();
    if smoke {
        c_sets.push("checkpoint.time_between_checkpoints=0s".into());
    }
    push(
        "checkpoint".into(),
        "checkpoint",
        StepKind::Run,
        "checkpoint saves then loads".into(),
        &checkpoint,
        with_user(c_sets, "checkpoint"),
        Duration::ZERO,
    );

    // KV cache: options 1-3, trials each, a pause between options.
    let delay = choice.kv_option_delay.unwrap_or(if smoke { SMOKE_KV_OPTION_DELAY } else { KV_OPTION_DELAY });
    let trials = if smoke { 1 } else { KV_TRIALS };
    for (o, option) in KV_OPTIONS.iter().enumerate() {
        let (preset, mut sets): (&str, Vec<String>) = if smoke {
            let mut s = vec!["duration=2s".to_string()];
            s.extend(SMOKE_KV_OPTION_SETS[o].iter().map(|s| s.to_string()));
            ("kvcache/kvcache-smoke", s)
        } else {
            (option, Vec::new())
        };
        sets = with_user(sets, "kvcache");
        for t in 1..=trials {
            let pause = if o > 0 && t == 1 { delay } else { Duration::ZERO };
            push(
                format!("kvcache-option{}-trial-{t}", o + 1),
                "kvcache",
                StepKind::Run,
                format!("kvcache option {} trial {t} of {trials}", o + 1),
                preset,
                sets.clone(),
                pause,
            );
        }
    }

    // Vector database: the runs the rules count.
    let vdb = choice.vdb.clone().unwrap_or_else(|| FULL_VDB.into());
    if !smoke && choice.vdb.is_none() {
        notes.push(format!(
            "vdb: the default {FULL_VDB} is a small index, not an MLPerf-sized one: every vdb run builds its index \
             in RAM, which takes hours for vdb/vdb-1m-1536 (pass --vdb vdb/vdb-1m-1536, or --vdb FILE.yaml with \
             your data set's num_vectors and dim)"
        ));
    }
    let mut v_sets: Vec<String> = Vec::new();
    if smoke {
        // A small index builds in about a second even in a debug build.
        v_sets.extend(
            ["num_vectors=2000", "dim=32", "num_query_vectors=50", "build_passes=1", "max_degree=16", "build_list=32"]
                .map(String::from),
        );
    }
    let v_sets = with_user(v_sets, "vdb");
    let runs = if smoke { 1 } else { VDB_RUNS };
    for i in 1..=runs {
        push(
            format!("vdb-run-{i}"),
            "vdb",
            StepKind::Run,
            format!("vdb run {i} of {runs}"),
            &vdb,
            v_sets.clone(),
            Duration::ZERO,
        );
    }
    if smoke {
        notes.push(
            "scale smoke: CI-sized presets, fewer repetitions, shorter runs and near-zero pauses; \
             NOT a valid MLPerf submission"
                .into(),
        );
    }
    Ok(Plan { scale: choice.scale, steps, notes })
}

/// The label every run of a suite that is not full scale carries in its
/// `description` (so results.json, summary.txt and every report say it).
pub const NOT_A_SUBMISSION: &str = "NOT A VALID MLPERF SUBMISSION (mlpdrive suite --scale smoke)";

/// Appends a `description` override to every run step, prefixing the
/// preset's own description with [`NOT_A_SUBMISSION`].
pub fn mark_not_a_submission(plan: &mut Plan) -> Result<(), Error> {
    for step in plan.steps.iter_mut().filter(|s| s.kind == StepKind::Run) {
        let cfg = config::load(&step.preset, &step.sets, None, None)?;
        let text = match cfg.common.description {
            Some(d) => format!("{NOT_A_SUBMISSION}: {d}"),
            None => NOT_A_SUBMISSION.to_string(),
        };
        // JSON is YAML: the quoted string survives colons and brackets.
        let quoted = serde_json::to_string(&text).map_err(|e| Error::failed(e.to_string()))?;
        step.sets.push(format!("description={quoted}"));
    }
    Ok(())
}

/// Loads and checks every step's config (preset, overrides, the workload's
/// own keys) without running or creating anything; names the flag on error.
pub fn validate(plan: &Plan) -> Result<(), Error> {
    let mut seen: Vec<(&str, &[String])> = Vec::new();
    for step in &plan.steps {
        if seen.iter().any(|(p, s)| *p == step.preset && *s == step.sets.as_slice()) {
            continue;
        }
        seen.push((&step.preset, &step.sets));
        let flag = match step.workload {
            "kvcache" => "the kvcache options",
            w => w,
        };
        let cfg = config::load(&step.preset, &step.sets, None, None)
            .map_err(|e| Error::usage(format!("suite {} step ({}): {e}", step.workload, flag_hint(flag))))?;
        if cfg.common.workload != step.workload {
            return Err(Error::usage(format!(
                "--{flag} {}: is a {} preset, not a {} one; see `mlpdrive workloads`",
                step.preset, cfg.common.workload, step.workload
            )));
        }
        let checked = match step.workload {
            "training" => config::training::TrainingConfig::from_run_config(&cfg)
                .and_then(|t| crate::workload::training::check(&t).map(|_| ())),
            "checkpoint" => config::checkpoint::CheckpointConfig::from_run_config(&cfg).map(|_| ()),
            "kvcache" => crate::workload::kvcache::config::KvConfig::from_run_config(&cfg)
                .and_then(|kv| crate::workload::kvcache::check_memory(&kv)),
            "vdb" => config::vdb::VdbConfig::from_run_config(&cfg).map(|_| ()),
            _ => Ok(()),
        };
        checked.map_err(|e| Error::usage(format!("suite {} step ({}): {e}", step.workload, flag_hint(flag))))?;
    }
    Ok(())
}

fn flag_hint(flag: &str) -> String {
    match flag {
        "the kvcache options" => "preset of the kvcache options; --set kvcache:KEY=VALUE".into(),
        f => format!("--{f} PRESET and --set {f}:KEY=VALUE"),
    }
}

/// `--set WORKLOAD:KEY=VALUE` → (workload, KEY=VALUE).
pub fn parse_set(arg: &str) -> Result<(String, String), Error> {
    match arg.split_once(':') {
        Some((w, kv)) if !w.is_empty() && kv.contains('=') && !w.contains('=') => {
            Ok((w.trim().to_string(), kv.to_string()))
        }
        _ => Err(Error::usage(format!(
            "--set '{arg}': give WORKLOAD:KEY=VALUE, like --set training:dataset.num_files_train=28000 \
             (WORKLOAD is one of {})",
            WORKLOADS.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(scale: Scale) -> Choice {
        Choice { scale, training: None, checkpoint: None, vdb: None, sets: Vec::new(), kv_option_delay: None }
    }

    fn count(plan: &Plan, workload: &str, kind: StepKind) -> usize {
        plan.steps.iter().filter(|s| s.workload == workload && s.kind == kind).count()
    }

    #[test]
    fn full_scale_is_the_rules_sequence() {
        let p = build(&choice(Scale::Full)).expect("plan");
        assert_eq!(count(&p, "training", StepKind::Datagen), 1);
        assert_eq!(count(&p, "training", StepKind::Run), 6, "a warm-up and 5 measured runs");
        assert_eq!(count(&p, "checkpoint", StepKind::Run), 1);
        assert_eq!(count(&p, "kvcache", StepKind::Run), 9, "3 options x 3 trials");
        assert_eq!(count(&p, "vdb", StepKind::Run), 5);
        assert_eq!(p.steps[0].kind, StepKind::Datagen, "datagen first");
        assert_eq!(p.steps[0].dir, "01-training-datagen");
        assert!(p.steps.iter().all(|s| s.sets.is_empty()), "no overrides at full scale");
        let kv: Vec<&Step> = p.steps.iter().filter(|s| s.workload == "kvcache").collect();
        let pauses: Vec<u64> = kv.iter().map(|s| s.delay_before.as_secs()).collect();
        assert_eq!(pauses, [0, 0, 0, 90, 0, 0, 90, 0, 0], "90 s before options 2 and 3");
        assert_eq!(kv[0].preset, KV_OPTIONS[0]);
        assert_eq!(kv[8].preset, KV_OPTIONS[2]);
        assert_eq!(p.steps.iter().find(|s| s.workload == "checkpoint").expect("ck").preset, FULL_CHECKPOINT);
        assert!(p.notes.iter().any(|n| n.contains("not an MLPerf-sized one")), "{:?}", p.notes);
        // The training preset must be sized for the clients first (exit 2 before anything runs) ...
        let e = validate(&p).expect_err("unsized training data set");
        assert!(e.to_string().contains("below the rules' minimum of 500"), "{e}");
        // ... and loads once it is (the count `mlpdrive datasize` gives for 1 host, 256 GiB, 8 accelerators).
        let mut c = choice(Scale::Full);
        c.sets = vec![parse_set("training:dataset.num_files_train=28000").expect("set")];
        validate(&build(&c).expect("plan")).expect("the full-scale presets load");
    }

    #[test]
    fn smoke_scale_is_short_and_says_it_is_not_a_submission() {
        let p = build(&choice(Scale::Smoke)).expect("plan");
        assert_eq!(count(&p, "training", StepKind::Run), 2);
        assert_eq!(count(&p, "kvcache", StepKind::Run), 3, "each option once");
        assert_eq!(count(&p, "vdb", StepKind::Run), 1);
        assert!(p.steps.iter().all(|s| s.delay_before <= Duration::from_secs(1)));
        assert!(p.notes.iter().any(|n| n.contains("NOT a valid MLPerf submission")));
        validate(&p).expect("the smoke presets load");
        let mut p = p;
        mark_not_a_submission(&mut p).expect("marked");
        let run = p.steps.iter().find(|s| s.kind == StepKind::Run).expect("a run");
        let cfg = config::load(&run.preset, &run.sets, None, None).expect("loads");
        let d = cfg.common.description.expect("description");
        assert!(d.starts_with(NOT_A_SUBMISSION), "{d}");
        validate(&p).expect("still valid");
    }

    #[test]
    fn user_presets_and_sets_are_checked_and_applied() {
        let mut c = choice(Scale::Smoke);
        c.sets = vec![parse_set("training:reader.read_threads=1").expect("set")];
        let p = build(&c).expect("plan");
        let t = &p.steps[1];
        assert_eq!(t.sets.last().map(String::as_str), Some("reader.read_threads=1"));
        validate(&p).expect("valid");

        c.training = Some("checkpoint/llama3-8b".into());
        let e = validate(&build(&c).expect("plan")).expect_err("wrong workload");
        assert!(e.to_string().contains("--training checkpoint/llama3-8b: is a checkpoint preset"), "{e}");

        c.training = Some("training/no-such-model".into());
        let e = validate(&build(&c).expect("plan")).expect_err("unknown preset");
        assert!(e.to_string().contains("no-such-model"), "{e}");

        let mut c = choice(Scale::Smoke);
        c.sets = vec![("raw".into(), "queue_depth=4".into())];
        assert!(build(&c).expect_err("raw").to_string().contains("not a suite workload"));
        assert!(parse_set("queue_depth=4").is_err());
        assert!(parse_set("kvcache:users").is_err());

        let mut c = choice(Scale::Smoke);
        c.sets = vec![parse_set("vdb:no_such_key=1").expect("set")];
        let e = validate(&build(&c).expect("plan")).expect_err("unknown key");
        assert!(e.to_string().contains("no_such_key"), "{e}");
    }
}
