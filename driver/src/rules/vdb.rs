//! Vector database rules (specs/vdb.md §1.2, Rules.md §5): an allowed index
//! type; at least 30 s of queries; recall at the submission's target;
//! ground truth over every vector; the summary fields a submission carries;
//! exactly 5 runs. The rules' backend (Milvus in CLOSED) does not apply to
//! mlpdrive, which reproduces the index's storage I/O itself; that finding is
//! information only.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Division, Finding, Inputs, Run, Verdict};
use crate::report::metrics::at;

pub const CLOSED_INDEXES: &[&str] = &["diskann", "hnsw", "aisaq"];
pub const OPEN_INDEXES: &[&str] = &["diskann", "hnsw", "aisaq", "ivf", "flat"];
pub const MIN_DURATION_S: f64 = 30.0;
pub const RUNS: usize = 5;
/// Fields a submission's summary must carry (mlpdrive's names for
/// `throughput_qps`, `mean/p95/p99/p999_latency_ms`).
pub const SUMMARY_FIELDS: &[&str] =
    &["throughput_qps", "mean_latency_ms", "p95_latency_ms", "p99_latency_ms", "p999_latency_ms"];

pub fn check_run(run: &Run, division: Division, inputs: &Inputs) -> Vec<Finding> {
    let r = &run.result;
    let id = r.run_id.as_str();
    let s = &r.summary;
    let mut out = vec![
        Finding::new(
            "vdb.backend",
            id,
            true,
            "mlpdrive's DiskANN-layout index on the target (no database server)",
            "CLOSED names Milvus; the rule is about the database, not the storage",
        )
        .with(Verdict::Info),
    ];

    let index = at(&r.config, "index").and_then(Value::as_str).unwrap_or("(none)");
    let list = if division == Division::Closed { CLOSED_INDEXES } else { OPEN_INDEXES };
    out.push(Finding::new(
        "vdb.index",
        id,
        list.contains(&index),
        format!("index {index}"),
        format!("one of {}", list.join(", ")),
    ));

    out.push(Finding::new(
        "vdb.duration",
        id,
        r.duration_s >= MIN_DURATION_S,
        format!("measured window {:.3} s", r.duration_s),
        format!("at least {MIN_DURATION_S:.0} s of queries"),
    ));

    let recall = at(s, "recall_at_k").and_then(Value::as_f64);
    out.push(match (recall, inputs.vdb_min_recall) {
        (Some(got), Some(min)) => {
            Finding::new("vdb.recall", id, got >= min, format!("recall@k {got:.4}"), format!("at least {min}"))
        }
        (None, _) => Finding::new("vdb.recall", id, false, "no recall_at_k in the summary", "a recall figure"),
        (Some(got), None) => Finding::new(
            "vdb.recall",
            id,
            false,
            format!("recall@k {got:.4}; the minimum target is not in the specs"),
            "the submission's recall target: pass --vdb-min-recall R",
        )
        .with(Verdict::NotChecked),
    });

    let gt = at(s, "ground_truth_s").is_some();
    let n = at(s, "num_vectors").and_then(Value::as_u64).unwrap_or(0);
    out.push(Finding::new(
        "vdb.ground-truth",
        id,
        gt && n > 0,
        if gt {
            format!("exact ground truth by brute force over all {n} vectors")
        } else {
            "no ground truth recorded".into()
        },
        "ground truth over every vector",
    ));

    let missing: Vec<&str> =
        SUMMARY_FIELDS.iter().filter(|k| at(s, k).and_then(Value::as_f64).is_none()).copied().collect();
    out.push(Finding::new(
        "vdb.summary-fields",
        id,
        missing.is_empty(),
        if missing.is_empty() { "all present".to_string() } else { format!("missing: {}", missing.join(", ")) },
        SUMMARY_FIELDS.join(", "),
    ));
    out
}

/// `vdb.runs`: exactly 5 runs per (index, vectors, dimension).
pub fn check_group(runs: &[Run]) -> Vec<Finding> {
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.result.workload == "vdb") {
        let c = &run.result.config;
        let text = |k: &str| c.get(k).map(Value::to_string).unwrap_or_default();
        let key = format!("vdb {} {} x {}", text("index").trim_matches('"'), text("num_vectors"), text("dim"));
        *groups.entry(key).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|(key, n)| Finding::new("vdb.runs", key, n == RUNS, format!("{n} run(s)"), format!("exactly {RUNS} runs")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{finding, run_of, verdict};

    fn good() -> Run {
        let mut run = run_of(
            "vdb/vdb-smoke",
            serde_json::json!({
                "recall_at_k": 0.95, "num_vectors": 20000, "ground_truth_s": 0.3, "throughput_qps": 1000.0,
                "mean_latency_ms": 1.0, "p95_latency_ms": 2.0, "p99_latency_ms": 3.0, "p999_latency_ms": 4.0,
            }),
        );
        run.result.duration_s = 31.0;
        run
    }

    #[test]
    fn a_conforming_vdb_series_passes() {
        let inputs = Inputs { vdb_min_recall: Some(0.9), ..Inputs::default() };
        let f = check_run(&good(), Division::Closed, &inputs);
        for rule in ["vdb.index", "vdb.duration", "vdb.recall", "vdb.ground-truth", "vdb.summary-fields"] {
            assert_eq!(verdict(&f, rule), Verdict::Pass, "{rule}: {f:#?}");
        }
        assert_eq!(verdict(&f, "vdb.backend"), Verdict::Info);
        let runs: Vec<Run> = (0..5).map(|_| good()).collect();
        assert_eq!(verdict(&check_group(&runs), "vdb.runs"), Verdict::Pass);
    }

    #[test]
    fn short_low_recall_incomplete_runs_fail() {
        let mut run = good();
        run.result.duration_s = 0.5;
        run.result.summary["recall_at_k"] = 0.5.into();
        run.result.summary.as_object_mut().expect("object").remove("p95_latency_ms");
        let f = check_run(&run, Division::Closed, &Inputs { vdb_min_recall: Some(0.9), ..Inputs::default() });
        assert_eq!(verdict(&f, "vdb.duration"), Verdict::Fail);
        assert_eq!(verdict(&f, "vdb.recall"), Verdict::Fail);
        assert_eq!(verdict(&f, "vdb.summary-fields"), Verdict::Fail);
        assert!(finding(&f, "vdb.summary-fields").found.contains("p95_latency_ms"));
        let f = check_run(&run, Division::Closed, &Inputs::default());
        assert_eq!(verdict(&f, "vdb.recall"), Verdict::NotChecked);
        assert_eq!(verdict(&check_group(&[good(), good()]), "vdb.runs"), Verdict::Fail);
    }
}
