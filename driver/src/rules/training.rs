//! Training rules (specs/training.md §3): the data set is at least 5 × the
//! client hosts' memory and gives at least 500 steps per epoch; AU meets the
//! model's threshold; only the overrides the division allows; every epoch
//! of the reference ran; 1 warm-up plus 5 measured runs.

use std::collections::BTreeMap;

use serde_json::Value;

use super::reference::{self, HARNESS_KEYS};
use super::{Division, Finding, Inputs, Run, Verdict};
use crate::report::metrics::at;

/// Keys CLOSED may override (training.md §3), plus the simulated
/// accelerator count (what a submission scales) and the data seed.
pub const CLOSED_ALLOWED: &[&str] = &[
    "dataset.num_files_train",
    "dataset.num_subfolders_train",
    "dataset.data_folder",
    "reader.read_threads",
    "reader.computation_threads",
    "reader.transfer_size",
    "reader.prefetch_size",
    "reader.odirect",
    "checkpoint.checkpoint_folder",
    "storage",
    "accelerators",
    "seed",
];

/// Keys OPEN may change on top of CLOSED's.
pub const OPEN_ALLOWED: &[&str] =
    &["framework", "dataset.format", "dataset.num_samples_per_file", "reader.data_loader"];

/// The reference's minimum steps per epoch (`STEPS_PER_EPOCH`).
pub const MIN_STEPS_PER_EPOCH: u64 = 500;

/// Runs of one (model, accelerators) a submission has: 1 warm-up + 5 measured.
pub const RUNS_PER_SUBMISSION: usize = 6;

/// The built-in preset a run's model is checked against: same model name,
/// and the accelerator whose computation time the run used when one matches.
fn reference_for(r: &Value) -> Option<(String, Value)> {
    let name = at(r, "model.name")?.as_str()?;
    let compute = at(r, "train.computation_time").and_then(Value::as_f64);
    let mut candidates: Vec<(String, Value)> = reference::presets_of("training")
        .into_iter()
        .filter(|p| !p.ends_with("-smoke") && p.as_str() != "training")
        .filter_map(|p| reference::effective_config(&p).ok().map(|c| (p, c)))
        .filter(|(_, c)| at(c, "model.name").and_then(Value::as_str) == Some(name))
        .collect();
    let exact = candidates.iter().position(|(_, c)| at(c, "train.computation_time").and_then(Value::as_f64) == compute);
    match exact {
        Some(i) => Some(candidates.swap_remove(i)),
        None => candidates.into_iter().next(),
    }
}

pub fn check_run(run: &Run, division: Division, inputs: &Inputs) -> Vec<Finding> {
    let r = &run.result;
    let id = r.run_id.as_str();
    let s = &r.summary;
    let num = |path: &str| at(s, path).and_then(Value::as_f64);
    let mut out = Vec::new();

    let Some((preset, reference)) = reference_for(&r.config) else {
        let name = at(&r.config, "model.name").and_then(Value::as_str).unwrap_or("(none)");
        out.push(Finding::new(
            "training.reference",
            id,
            false,
            format!("model {name}"),
            "an MLPerf training model with a built-in preset (unet3d, resnet50, cosmoflow, dlrm, flux, retinanet)",
        ));
        return out;
    };
    out.push(Finding::new("training.reference", id, true, format!("checked against preset {preset}"), ""));

    let mut allowed: Vec<&str> = HARNESS_KEYS.iter().chain(CLOSED_ALLOWED).copied().collect();
    if division == Division::Open {
        allowed.extend(OPEN_ALLOWED);
    }
    let o = reference::overrides(&r.config, &reference, &allowed);
    out.push(Finding::new(
        "training.overrides",
        id,
        o.is_empty(),
        if o.is_empty() {
            "no override outside the allowed keys".to_string()
        } else {
            o.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        },
        format!("only these keys changed from {preset}: {}", allowed.join(", ")),
    ));

    if let Some(false) = at(s, "valid").and_then(Value::as_bool) {
        let reasons = at(s, "invalid_reasons").map(Value::to_string).unwrap_or_default();
        out.push(Finding::new(
            "training.valid",
            id,
            false,
            format!("the run marked itself invalid: {reasons}"),
            "a valid run",
        ));
    }

    let dataset = at(s, "dataset_bytes").and_then(Value::as_u64);
    let hosts = at(s, "num_hosts").and_then(Value::as_u64).unwrap_or(1).max(1);
    out.push(match (dataset, inputs.client_memory_gib) {
        (Some(bytes), Some(mem)) => {
            let need = 5.0 * hosts as f64 * mem * (1u64 << 30) as f64;
            Finding::new(
                "training.dataset-size",
                id,
                bytes as f64 >= need,
                format!("data set {bytes} bytes ({:.1} GiB)", bytes as f64 / (1u64 << 30) as f64),
                format!("at least 5 x {hosts} host(s) x {mem} GiB = {:.1} GiB", need / (1u64 << 30) as f64),
            )
        }
        (None, _) => {
            Finding::new("training.dataset-size", id, false, "the summary has no dataset_bytes", "a data set size")
                .with(Verdict::NotChecked)
        }
        (Some(bytes), None) => Finding::new(
            "training.dataset-size",
            id,
            false,
            format!("data set {bytes} bytes; client memory not known (results.json does not record it)"),
            "at least 5 x the client hosts' memory: pass --client-memory-gib GIB",
        )
        .with(Verdict::NotChecked),
    });

    let steps = at(s, "steps_per_epoch").and_then(Value::as_u64);
    out.push(match steps {
        Some(n) => Finding::new(
            "training.steps-per-epoch",
            id,
            n >= MIN_STEPS_PER_EPOCH,
            format!("{n} steps per epoch"),
            format!("at least {MIN_STEPS_PER_EPOCH} steps per epoch"),
        ),
        None => Finding::new("training.steps-per-epoch", id, false, "the summary has no steps_per_epoch", "")
            .with(Verdict::NotChecked),
    });

    let threshold = at(&reference, "metric.au").and_then(Value::as_f64).map(|a| a * 100.0);
    let au = num("metric.train_au_mean_percentage");
    out.push(match (au, threshold) {
        (Some(au), Some(t)) => Finding::new(
            "training.au",
            id,
            au >= t,
            format!("mean AU {au:.2} %"),
            format!("at least {t:.0} % (metric.au of {preset})"),
        ),
        _ => Finding::new("training.au", id, false, "no train_au_mean_percentage in the summary", "an AU figure")
            .with(Verdict::NotChecked),
    });

    let want_epochs = at(&reference, "train.epochs").and_then(Value::as_u64);
    let done = at(s, "epochs_completed").and_then(Value::as_u64);
    if let (Some(want), Some(done)) = (want_epochs, done) {
        out.push(Finding::new(
            "training.epochs",
            id,
            done >= want,
            format!("{done} epochs completed"),
            format!("{want} epochs (train.epochs of {preset})"),
        ));
    }
    out
}

/// `training.runs`: 1 warm-up + 5 measured runs per (model, accelerators).
pub fn check_group(runs: &[Run]) -> Vec<Finding> {
    let mut groups: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.result.workload == "training") {
        let c = &run.result.config;
        let model = at(c, "model.name").and_then(Value::as_str).unwrap_or("?").to_string();
        let acc = at(c, "accelerators").and_then(Value::as_u64).unwrap_or(0);
        *groups.entry((model, acc)).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((model, acc), n)| {
            Finding::new(
                "training.runs",
                format!("training {model}, {acc} accelerators"),
                n >= RUNS_PER_SUBMISSION,
                format!("{n} run(s)"),
                format!("at least {RUNS_PER_SUBMISSION}: 1 warm-up plus 5 measured runs"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{finding, run_of, verdict};

    fn summary(au: f64, steps: u64, dataset_bytes: u64) -> Value {
        serde_json::json!({
            "dataset_bytes": dataset_bytes,
            "num_hosts": 1,
            "steps_per_epoch": steps,
            "epochs_completed": 5,
            "valid": true,
            "invalid_reasons": [],
            "metric": { "train_au_mean_percentage": au },
        })
    }

    fn with_mem(gib: f64) -> Inputs {
        Inputs { client_memory_gib: Some(gib), ..Inputs::default() }
    }

    #[test]
    fn a_conforming_unet3d_run_passes_every_rule() {
        let mut run = run_of("training/unet3d_h100", summary(93.0, 500, 3_823 << 30));
        run.result.config["dataset"]["num_files_train"] = 28_000.into();
        run.result.config["accelerators"] = 8.into();
        let f = check_run(&run, Division::Closed, &with_mem(256.0));
        for rule in [
            "training.reference",
            "training.overrides",
            "training.dataset-size",
            "training.steps-per-epoch",
            "training.au",
            "training.epochs",
        ] {
            assert_eq!(verdict(&f, rule), Verdict::Pass, "{rule}: {f:#?}");
        }
        assert!(finding(&f, "training.reference").found.contains("training/unet3d_h100"));
    }

    #[test]
    fn closed_runs_may_verify_sampled_or_not_at_all() {
        // MLPerf's reference checks nothing it reads, so mlpdrive's verify
        // modes are harness keys in both divisions.
        for sets in [&[("verify", "sampled"), ("verify_sample_every", "64")][..], &[("verify", "off")][..]] {
            let mut run = run_of("training/unet3d_h100", summary(93.0, 500, 3_823 << 30));
            run.result.config["dataset"]["num_files_train"] = 28_000.into();
            for (key, value) in sets {
                run.result.config[*key] = (*value).into();
            }
            let f = check_run(&run, Division::Closed, &with_mem(256.0));
            assert_eq!(verdict(&f, "training.overrides"), Verdict::Pass, "{sets:?}: {f:#?}");
        }
    }

    #[test]
    fn each_training_rule_fails_with_what_it_found() {
        let mut run = run_of("training/unet3d_a100", summary(85.0, 499, 100 << 30));
        run.result.config["train"]["epochs"] = 1.into();
        run.result.summary["epochs_completed"] = 1.into();
        let f = check_run(&run, Division::Closed, &with_mem(256.0));
        assert!(finding(&f, "training.reference").found.contains("unet3d_a100"), "a100 computation time picks a100");
        assert_eq!(verdict(&f, "training.overrides"), Verdict::Fail);
        assert!(finding(&f, "training.overrides").found.contains("train.epochs=1 (reference 5)"), "{f:#?}");
        assert_eq!(verdict(&f, "training.dataset-size"), Verdict::Fail);
        assert!(finding(&f, "training.dataset-size").expected.contains("1280.0 GiB"), "{f:#?}");
        assert_eq!(verdict(&f, "training.steps-per-epoch"), Verdict::Fail);
        assert_eq!(verdict(&f, "training.au"), Verdict::Fail);
        assert!(finding(&f, "training.au").expected.contains("at least 90 %"));
        assert_eq!(verdict(&f, "training.epochs"), Verdict::Fail);
    }

    #[test]
    fn open_allows_format_changes_and_missing_memory_is_not_checked() {
        let mut run = run_of("training/resnet50_h100", summary(95.0, 600, 2_000 << 30));
        run.result.config["dataset"]["format"] = "npz".into();
        let f = check_run(&run, Division::Closed, &Inputs::default());
        assert_eq!(verdict(&f, "training.overrides"), Verdict::Fail);
        assert_eq!(verdict(&f, "training.dataset-size"), Verdict::NotChecked);
        assert!(finding(&f, "training.dataset-size").expected.contains("--client-memory-gib"));
        let f = check_run(&run, Division::Open, &Inputs::default());
        assert_eq!(verdict(&f, "training.overrides"), Verdict::Pass, "{f:#?}");
    }

    #[test]
    fn a_model_without_a_reference_fails() {
        let run = run_of("training-smoke", summary(95.0, 500, 1));
        let f = check_run(&run, Division::Open, &with_mem(1.0));
        assert_eq!(verdict(&f, "training.reference"), Verdict::Fail);
        assert!(finding(&f, "training.reference").found.contains("unet3d-smoke"));
    }

    #[test]
    fn six_runs_per_model_and_accelerator_count() {
        let runs: Vec<Run> = (0..6).map(|_| run_of("training/unet3d_h100", summary(95.0, 500, 1))).collect();
        assert_eq!(verdict(&check_group(&runs), "training.runs"), Verdict::Pass);
        assert_eq!(verdict(&check_group(&runs[..5]), "training.runs"), Verdict::Fail);
    }
}
