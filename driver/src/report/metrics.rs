//! The headline metrics of a run: the workload's own figures (picked from
//! its `summary` by path, per workload) followed by every latency series'
//! counts and percentiles. Every format and `--compare` use this one list,
//! so a figure means the same thing in all of them.
//!
//! Keys carry their unit (`read.latency_us_p99`, `save.throughput_GiB_per_s`)
//! and are stable: docs/reports.md lists them.

use serde_json::Value;

use crate::results::RunResult;

/// One figure of a run.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Metric {
    /// Stable key with its unit, e.g. `read.iops`, `series.measure.read.-.latency_us_p99`.
    pub key: String,
    /// Unit as shown to people: "ops/s", "bytes/s", "us", "%", ...
    pub unit: String,
    pub value: f64,
    /// True when a larger value is better.
    pub higher_is_better: bool,
}

/// A workload figure: (key, path into `summary`, unit, higher is better).
type Pick = (&'static str, &'static str, &'static str, bool);

const RAW: &[Pick] = &[
    ("read.iops", "read.iops", "ops/s", true),
    ("read.bytes_per_s", "read.bytes_per_s", "bytes/s", true),
    ("read.latency_us_mean", "read.latency_us.mean", "us", false),
    ("read.latency_us_p99", "read.latency_us.p99", "us", false),
    ("write.iops", "write.iops", "ops/s", true),
    ("write.bytes_per_s", "write.bytes_per_s", "bytes/s", true),
    ("write.latency_us_mean", "write.latency_us.mean", "us", false),
    ("write.latency_us_p99", "write.latency_us.p99", "us", false),
];

const TRAINING: &[Pick] = &[
    ("train_au_mean_percentage", "metric.train_au_mean_percentage", "%", true),
    ("train_throughput_mean_samples_per_second", "metric.train_throughput_mean_samples_per_second", "samples/s", true),
    ("read_bytes_per_s", "measured.read_bytes_per_s", "bytes/s", true),
    ("read.latency_us_p99", "measured.read.latency_us.p99", "us", false),
    ("epoch_wall_mean_s", "measured.epoch_wall_mean_s", "s", false),
];

const CHECKPOINT: &[Pick] = &[
    ("save.throughput_GiB_per_s", "save.throughput_mean_GiB_per_s", "GiB/s", true),
    ("save.duration_mean_s", "save.duration_mean_s", "s", false),
    ("load.throughput_GiB_per_s", "load.throughput_mean_GiB_per_s", "GiB/s", true),
    ("load.duration_mean_s", "load.duration_mean_s", "s", false),
    ("checkpoint_bytes", "checkpoint_bytes", "bytes", true),
];

const VDB: &[Pick] = &[
    ("throughput_qps", "throughput_qps", "queries/s", true),
    ("recall_at_k", "recall_at_k", "fraction", true),
    ("recall_at_1", "recall_at_1", "fraction", true),
    ("mean_latency_ms", "mean_latency_ms", "ms", false),
    ("p99_latency_ms", "p99_latency_ms", "ms", false),
    ("reads_per_query", "reads_per_query", "reads", false),
];

const KVCACHE: &[Pick] = &[
    ("storage_throughput_tokens_per_sec", "summary.storage_throughput_tokens_per_sec", "tokens/s", true),
    ("avg_throughput_tokens_per_sec", "summary.avg_throughput_tokens_per_sec", "tokens/s", true),
    ("tier_storage_read_bandwidth_gbps", "summary.cache_stats.tier_storage_read_bandwidth_gbps", "GB/s", true),
    ("tier_storage_write_bandwidth_gbps", "summary.cache_stats.tier_storage_write_bandwidth_gbps", "GB/s", true),
    ("storage_read_device_p95_ms", "summary.cache_stats.storage_read_device_p95_ms", "ms", false),
    ("storage_write_device_p95_ms", "summary.cache_stats.storage_write_device_p95_ms", "ms", false),
    ("requests_per_second", "summary.requests_per_second", "requests/s", true),
];

fn picks(workload: &str) -> &'static [Pick] {
    match workload {
        "raw" => RAW,
        "training" => TRAINING,
        "checkpoint" => CHECKPOINT,
        "vdb" => VDB,
        "kvcache" => KVCACHE,
        _ => &[],
    }
}

/// The value at a dotted path in `v` (object keys only).
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, k| cur.get(k))
}

/// The run's headline metrics: the workload's figures that its summary
/// holds (raw: only op kinds that ran), then every series' figures.
pub fn headline(r: &RunResult) -> Vec<Metric> {
    let mut out = Vec::new();
    for (key, path, unit, higher) in picks(&r.workload) {
        if r.workload == "raw" {
            // Skip the op kind that did not run (its zeros are not figures).
            let op = path.split('.').next().unwrap_or("");
            if at(&r.summary, &format!("{op}.ops")).and_then(Value::as_u64).unwrap_or(0) == 0 {
                continue;
            }
        }
        if let Some(value) = at(&r.summary, path).and_then(Value::as_f64).filter(|v| v.is_finite()) {
            out.push(Metric { key: (*key).into(), unit: (*unit).into(), value, higher_is_better: *higher });
        }
    }
    for s in &r.series {
        let base = format!("series.{}.{}.{}", s.phase, s.op, s.tier);
        let mut push = |name: &str, unit: &str, value: f64, higher: bool| {
            out.push(Metric { key: format!("{base}.{name}"), unit: unit.into(), value, higher_is_better: higher });
        };
        push("ops", "ops", s.ops as f64, true);
        push("bytes", "bytes", s.bytes as f64, true);
        if s.ops > 0 {
            let l = &s.latency_us;
            push("latency_us_mean", "us", l.mean, false);
            push("latency_us_p50", "us", l.p50, false);
            push("latency_us_p99", "us", l.p99, false);
            push("latency_us_p999", "us", l.p999, false);
            push("latency_us_max", "us", l.max, false);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testutil::sample_result;

    #[test]
    fn raw_headline_skips_the_op_kind_that_did_not_run() {
        let m = headline(&sample_result());
        let keys: Vec<&str> = m.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(&keys[..4], ["read.iops", "read.bytes_per_s", "read.latency_us_mean", "read.latency_us_p99"]);
        assert!(!keys.iter().any(|k| k.starts_with("write.")), "{keys:?}");
        let p99 = m.iter().find(|m| m.key == "series.measure.read.-.latency_us_p99").expect("series p99");
        assert_eq!((p99.value, p99.unit.as_str(), p99.higher_is_better), (210.5, "us", false));
        let ops = m.iter().find(|m| m.key == "series.measure.read.-.ops").expect("series ops");
        assert_eq!(ops.value, 1_048_576.0);
    }

    #[test]
    fn workload_figures_come_from_the_summary_by_path() {
        let mut r = sample_result();
        r.workload = "vdb".into();
        r.summary = serde_json::json!({ "throughput_qps": 1000.5, "recall_at_k": 0.9, "p99_latency_ms": "n/a" });
        let m = headline(&r);
        assert_eq!(
            m[0],
            Metric { key: "throughput_qps".into(), unit: "queries/s".into(), value: 1000.5, higher_is_better: true }
        );
        assert_eq!(m[1].key, "recall_at_k");
        assert!(!m.iter().any(|m| m.key == "p99_latency_ms"), "a non-number is not a figure");
        r.workload = "something-else".into();
        assert!(headline(&r).iter().all(|m| m.key.starts_with("series.")));
    }
}
