//! KV cache rules (specs/kvcache.md §13.2): each run is one of the three
//! MLPerf options with its immutable parameters (model, users, duration
//! 300 s, GPU 0, CPU 0 / 4 / 0 GiB, max concurrent allocations 16 / 16 / 4,
//! generation mode none), seed 42, nothing else changed in CLOSED
//! (autoscaling, GPUs, tensor parallelism, RAG, BurstGPT and tracing are
//! OPEN-only); 3 trials of each option, and all three options.

use std::collections::BTreeMap;

use serde_json::Value;

use super::reference::{self, HARNESS_KEYS};
use super::{Division, Finding, Run, Verdict};

/// The options' presets.
pub const OPTIONS: &[&str] = &["kvcache/mlperf-option1", "kvcache/mlperf-option2", "kvcache/mlperf-option3"];

/// The parameters fixed per option.
pub const IMMUTABLE: &[&str] =
    &["model", "users", "duration", "gpu_mem_gb", "cpu_mem_gb", "max_concurrent_allocs", "generation_mode"];

/// The seed of every trial (rank r of a multi-client run: 42 + r).
pub const SEED: u64 = 42;

/// Trials per option.
pub const TRIALS: usize = 3;

/// The measured window the options run, seconds.
pub const DURATION_S: f64 = 300.0;

/// Keys besides the immutable ones that may differ in CLOSED: mlpdrive's
/// own storage-path knobs (`kvcache.*`: chunk size, depth, .npy header) and
/// its tier models (`gpu`, `cpu`: bandwidth and latency of the emulated
/// memory tiers, which move no storage bytes).
pub const ALLOWED: &[&str] = &["kvcache", "gpu", "cpu"];

/// The option a run is checked against: the one whose model and users
/// match, else the first with its model.
fn option_for(config: &Value) -> Option<(&'static str, Value)> {
    let refs: Vec<(&str, Value)> =
        OPTIONS.iter().filter_map(|p| reference::effective_config(p).ok().map(|c| (*p, c))).collect();
    let same = |c: &Value, k: &str| config.get(k) == c.get(k);
    let i = refs
        .iter()
        .position(|(_, c)| same(c, "model") && same(c, "users"))
        .or_else(|| refs.iter().position(|(_, c)| same(c, "model")))?;
    refs.into_iter().nth(i)
}

pub fn check_run(run: &Run, division: Division) -> Vec<Finding> {
    let r = &run.result;
    let id = r.run_id.as_str();
    let c = &r.config;
    let mut out = Vec::new();
    let Some((option, reference)) = option_for(c) else {
        let model = c.get("model").and_then(Value::as_str).unwrap_or("(none)");
        out.push(Finding::new(
            "kvcache.option",
            id,
            false,
            format!("model {model}, users {}", c.get("users").map(Value::to_string).unwrap_or_default()),
            "one of the MLPerf options: llama3.1-8b (options 1, 2) or llama3.1-70b-instruct (option 3)",
        ));
        return out;
    };
    out.push(Finding::new("kvcache.option", id, true, format!("checked against {option}"), ""));
    let closed = division == Division::Closed;

    let changed: Vec<String> = IMMUTABLE
        .iter()
        .filter(|k| c.get(**k) != reference.get(**k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(absent)".into(), Value::to_string);
            format!("{k}={} (option: {})", show(c.get(*k)), show(reference.get(*k)))
        })
        .collect();
    out.push(
        Finding::new(
            "kvcache.immutable",
            id,
            changed.is_empty(),
            if changed.is_empty() { "as the option".to_string() } else { changed.join("; ") },
            format!("{} as in {option}", IMMUTABLE.join(", ")),
        )
        .with(if changed.is_empty() || closed { verdict(changed.is_empty()) } else { Verdict::Info }),
    );

    let mut allowed: Vec<&str> = HARNESS_KEYS.iter().chain(ALLOWED).chain(IMMUTABLE).copied().collect();
    allowed.push("seed");
    let o = reference::overrides(c, &reference, &allowed);
    out.push(
        Finding::new(
            "kvcache.overrides",
            id,
            o.is_empty(),
            if o.is_empty() {
                "nothing else changed".to_string()
            } else {
                o.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            },
            format!("CLOSED: nothing else changed from {option} (autoscaling, num_gpus, tensor_parallel, RAG, BurstGPT, tracing are OPEN only)"),
        )
        .with(if o.is_empty() || closed { verdict(o.is_empty()) } else { Verdict::Info }),
    );

    out.push(
        Finding::new("kvcache.seed", id, r.seed == SEED, format!("seed {}", r.seed), format!("seed {SEED}"))
            .with(if r.seed == SEED || closed { verdict(r.seed == SEED) } else { Verdict::Info }),
    );

    // Several clients (MPI ranks): rank r ran with seed + r (the merged
    // summary lists the seed each rank's run used).
    if let Some(seeds) = r.summary.get("seeds").and_then(serde_json::Value::as_array) {
        let got: Vec<Option<u64>> = seeds.iter().map(serde_json::Value::as_u64).collect();
        let want: Vec<u64> = (0..seeds.len() as u64).map(|i| SEED + i).collect();
        let ok = got.iter().zip(&want).all(|(g, w)| *g == Some(*w));
        let shown = |v: &[Option<u64>]| {
            v.iter().map(|s| s.map_or("?".to_string(), |s| s.to_string())).collect::<Vec<_>>().join(", ")
        };
        out.push(
            Finding::new(
                "kvcache.rank-seeds",
                id,
                ok,
                format!("rank seeds {}", shown(&got)),
                format!(
                    "rank r with seed {SEED} + r: {}",
                    want.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
            )
            .with(if ok || closed { verdict(ok) } else { Verdict::Info }),
        );
    }

    let long_enough = r.duration_s >= DURATION_S * 0.999;
    out.push(
        Finding::new(
            "kvcache.duration",
            id,
            long_enough,
            format!("measured window {:.3} s", r.duration_s),
            format!("{DURATION_S:.0} s"),
        )
        .with(if long_enough || closed { verdict(long_enough) } else { Verdict::Info }),
    );
    out
}

fn verdict(ok: bool) -> Verdict {
    if ok { Verdict::Pass } else { Verdict::Fail }
}

/// `kvcache.trials` (3 per option) and, in CLOSED, `kvcache.options` (all three).
pub fn check_group(runs: &[Run], division: Division) -> Vec<Finding> {
    let kv: Vec<&Run> = runs.iter().filter(|r| r.result.workload == "kvcache").collect();
    if kv.is_empty() {
        return Vec::new();
    }
    let mut per_option: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &kv {
        if let Some((option, _)) = option_for(&run.result.config) {
            *per_option.entry(option).or_default() += 1;
        }
    }
    let mut out: Vec<Finding> = per_option
        .iter()
        .map(|(option, n)| {
            Finding::new(
                "kvcache.trials",
                option.to_string(),
                *n == TRIALS || (division == Division::Open && *n >= 1),
                format!("{n} trial(s)"),
                format!("{TRIALS} trials (OPEN may change the count)"),
            )
        })
        .collect();
    if division == Division::Closed {
        let missing: Vec<&str> = OPTIONS.iter().filter(|o| !per_option.contains_key(*o)).copied().collect();
        out.push(Finding::new(
            "kvcache.options",
            "kvcache",
            missing.is_empty(),
            if missing.is_empty() {
                "all three options ran".to_string()
            } else {
                format!("missing: {}", missing.join(", "))
            },
            "options 1, 2 and 3",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{finding, run_of, verdict as v};

    fn trial(option: &str) -> Run {
        let mut run = run_of(option, serde_json::json!({}));
        run.result.duration_s = 300.0;
        run
    }

    #[test]
    fn three_trials_of_three_options_pass() {
        let runs: Vec<Run> = OPTIONS.iter().flat_map(|o| (0..3).map(|_| trial(o))).collect();
        for run in &runs {
            let f = check_run(run, Division::Closed);
            for rule in ["kvcache.option", "kvcache.immutable", "kvcache.overrides", "kvcache.seed", "kvcache.duration"]
            {
                assert_eq!(v(&f, rule), Verdict::Pass, "{rule}: {f:#?}");
            }
        }
        let g = check_group(&runs, Division::Closed);
        assert_eq!(v(&g, "kvcache.trials"), Verdict::Pass);
        assert_eq!(v(&g, "kvcache.options"), Verdict::Pass);
    }

    #[test]
    fn changed_immutables_seed_duration_and_forbidden_keys_fail() {
        let mut run = trial("kvcache/mlperf-option2");
        run.result.config["cpu_mem_gb"] = 8.0.into();
        run.result.config["num_gpus"] = 2.into();
        run.result.seed = 7;
        run.result.duration_s = 60.0;
        let f = check_run(&run, Division::Closed);
        assert!(finding(&f, "kvcache.option").found.contains("option2"), "users pick the option");
        assert_eq!(v(&f, "kvcache.immutable"), Verdict::Fail);
        assert!(finding(&f, "kvcache.immutable").found.contains("cpu_mem_gb=8.0 (option: 4"), "{f:#?}");
        assert_eq!(v(&f, "kvcache.overrides"), Verdict::Fail);
        assert!(finding(&f, "kvcache.overrides").found.contains("num_gpus=2 (reference 1)"));
        assert_eq!(v(&f, "kvcache.seed"), Verdict::Fail);
        assert_eq!(v(&f, "kvcache.duration"), Verdict::Fail);
        // OPEN records the same as information.
        let f = check_run(&run, Division::Open);
        assert_eq!(v(&f, "kvcache.immutable"), Verdict::Info);
        assert_eq!(v(&f, "kvcache.seed"), Verdict::Info);
    }

    #[test]
    fn wrong_trial_counts_missing_options_and_other_models_fail() {
        let runs = vec![trial("kvcache/mlperf-option3"), trial("kvcache/mlperf-option3")];
        let g = check_group(&runs, Division::Closed);
        assert_eq!(v(&g, "kvcache.trials"), Verdict::Fail);
        assert!(finding(&g, "kvcache.options").found.contains("mlperf-option1"));
        let smoke = run_of("kvcache/kvcache-smoke", serde_json::json!({}));
        assert_eq!(v(&check_run(&smoke, Division::Open), "kvcache.option"), Verdict::Fail);
    }

    #[test]
    fn rank_seeds_of_a_multi_client_run_are_42_plus_rank() {
        let mut run = trial("kvcache/mlperf-option1");
        let f = check_run(&run, Division::Closed);
        assert!(f.iter().all(|f| f.rule != "kvcache.rank-seeds"), "one client: the seed rule covers it");
        run.result.summary["seeds"] = serde_json::json!([42, 43, 44]);
        assert_eq!(v(&check_run(&run, Division::Closed), "kvcache.rank-seeds"), Verdict::Pass);
        run.result.summary["seeds"] = serde_json::json!([42, 42]);
        let f = check_run(&run, Division::Closed);
        assert_eq!(v(&f, "kvcache.rank-seeds"), Verdict::Fail);
        assert_eq!(finding(&f, "kvcache.rank-seeds").found, "rank seeds 42, 42");
        assert_eq!(v(&check_run(&run, Division::Open), "kvcache.rank-seeds"), Verdict::Info);
    }
}
