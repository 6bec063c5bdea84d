//! Training as an MPI job: the keys a rank adds to its own summary, and
//! rank 0's merge of every rank's summary into the job's (DLIO's
//! aggregation, spec §5 and §6.3).
//!
//! Per epoch, AU is the mean over the job's accelerators (each rank's AU
//! is the mean over its own, and every rank runs the same number, so this
//! is DLIO's mean over ranks) and throughput the sum over ranks. Bytes,
//! samples and CPU seconds add up; an epoch's wall time is the slowest
//! rank's (the ranks step together through the per-step barrier). Batch
//! load latency comes from the ranks' HDR histograms added together,
//! never from their percentiles.

use std::collections::BTreeSet;
use std::ops::Range;

use serde_json::{Value, json};

use super::metrics::{MetricParams, mean_stdev, metrics_from_epochs};
use super::source::READ_KEY;
use crate::mpi::World;
use crate::recorder::{Recorder, RecorderWire, SeriesKey};
use crate::results::raw_op_summary;
use crate::target::OpKind;

/// The batch-load "series" carried (as a histogram) in a rank's summary.
const BATCH_LOAD_KEY: SeriesKey = SeriesKey { phase: "batch-load", op: OpKind::Read, tier: "storage" };

/// A rank's own summary in an MPI job: which of the job's accelerators it
/// ran, the job's size, and its batch load times as a histogram rank 0
/// can merge.
pub fn add_rank_keys(summary: &mut Value, world: &World, hosted: &Range<u32>, batch_load_ns: &[u64]) {
    let mut rec = Recorder::new();
    for &ns in batch_load_ns {
        rec.record(&BATCH_LOAD_KEY, ns.max(1), 0);
    }
    summary["mpi_ranks"] = world.size().into();
    summary["hosted_accelerators"] = json!([hosted.start, hosted.end]);
    summary["measured"]["batch_load_wire"] = serde_json::to_value(rec.to_wire()).unwrap_or(Value::Null);
}

/// The job's training summary from every rank's (rank order; Null for a
/// rank without a result). `recorder` and `window_s` are the job's merged
/// ones; `hosts` every rank's host name.
pub fn merge_summary(summaries: &[Value], recorder: &Recorder, hosts: &[String], window_s: f64) -> Value {
    let ranks: Vec<&Value> = summaries.iter().filter(|s| s.is_object()).collect();
    let Some(base) = ranks.first() else { return Value::Null };
    let mut out = (*base).clone();
    let hosted = |s: &Value| -> u32 {
        let a = &s["hosted_accelerators"];
        match (a[0].as_u64(), a[1].as_u64()) {
            (Some(lo), Some(hi)) => (hi - lo) as u32,
            _ => s["num_accelerators"].as_u64().unwrap_or(1) as u32,
        }
    };
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let epochs = ranks.iter().map(|s| s["epochs_completed"].as_u64().unwrap_or(0)).min().unwrap_or(0) as usize;

    // DLIO's metric: per epoch, AU = mean over accelerators, throughput = sum.
    let mut au = Vec::with_capacity(epochs);
    let mut thr = Vec::with_capacity(epochs);
    for e in 0..epochs {
        let weight: u32 = ranks.iter().map(|s| hosted(s)).sum();
        let au_sum: f64 =
            ranks.iter().map(|s| num(&s["metric"]["train_au_percentage"][e]) * f64::from(hosted(s))).sum();
        au.push(if weight > 0 { au_sum / f64::from(weight) } else { 0.0 });
        thr.push(ranks.iter().map(|s| num(&s["metric"]["train_throughput_samples_per_second"][e])).sum());
    }
    let params = MetricParams {
        batch_size: base["batch_size"].as_u64().unwrap_or(1),
        record_length_bytes: num(&base["record_length_bytes"]),
        au_threshold: num(&base["au_threshold_percentage"]) / 100.0,
        dlio_v2_throughput: false,
    };
    // (DLIO v2.0's N − 2 quirk, if asked for, is in each rank's throughput.)
    out["metric"] = metrics_from_epochs(au, thr, &params);

    // What was measured: sums, and the slowest rank's wall time per epoch.
    let per_epoch: Vec<Value> = (0..epochs)
        .map(|e| {
            let at = |k: &'static str| ranks.iter().map(move |s| &s["measured"]["per_epoch"][e][k]);
            let wall_s = at("wall_s").map(num).fold(0.0, f64::max);
            let bytes: u64 = at("bytes_read").filter_map(Value::as_u64).sum();
            let samples: u64 = at("samples").filter_map(Value::as_u64).sum();
            let rate = |x: f64| if wall_s > 0.0 { x / wall_s } else { 0.0 };
            json!({
                "epoch": e + 1,
                "wall_s": wall_s,
                "bytes_read": bytes,
                "read_bytes_per_s": rate(bytes as f64),
                "samples": samples,
                "samples_per_s": rate(samples as f64),
            })
        })
        .collect();
    let walls: Vec<f64> = per_epoch.iter().map(|e| num(&e["wall_s"])).collect();
    let wall: f64 = walls.iter().sum();
    let bytes: u64 = per_epoch.iter().filter_map(|e| e["bytes_read"].as_u64()).sum();
    let samples: u64 = per_epoch.iter().filter_map(|e| e["samples"].as_u64()).sum();
    let cpu_s: f64 = ranks.iter().map(|s| num(&s["measured"]["cpu_s"])).sum();
    let mut batch = Recorder::new();
    for s in &ranks {
        if let Some(rec) = serde_json::from_value::<RecorderWire>(s["measured"]["batch_load_wire"].clone())
            .ok()
            .and_then(|w| Recorder::from_wire(&w).ok())
        {
            batch.merge(&rec);
        }
    }
    let rate = |x: f64| if wall > 0.0 { x / wall } else { 0.0 };
    out["measured"] = json!({
        "per_epoch": per_epoch,
        "epoch_wall_mean_s": mean_stdev(&walls).0,
        "bytes_read": bytes,
        "read_bytes_per_s": rate(bytes as f64),
        "samples_per_s": rate(samples as f64),
        "batch_load_latency_us": batch_latency_us(&batch),
        "read": raw_op_summary(recorder.get(&READ_KEY), window_s),
        "cpu_s": cpu_s,
        "cpu_s_per_GB_read": if bytes > 0 { cpu_s / (bytes as f64 / 1e9) } else { 0.0 },
    });

    out["epochs_completed"] = epochs.into();
    let mut reasons: Vec<Value> = Vec::new();
    for s in &ranks {
        for r in s["invalid_reasons"].as_array().into_iter().flatten() {
            if !reasons.contains(r) {
                reasons.push(r.clone());
            }
        }
    }
    out["valid"] = reasons.is_empty().into();
    out["invalid_reasons"] = Value::Array(reasons);
    out["num_hosts"] = hosts.iter().collect::<BTreeSet<_>>().len().max(1).into();
    out["mpi_ranks"] = summaries.len().into();
    if let Some(o) = out.as_object_mut() {
        o.remove("hosted_accelerators");
    }
    out
}

/// The shape of a single run's `batch_load_latency_us`, from a histogram.
fn batch_latency_us(rec: &Recorder) -> Value {
    let s = rec.get(&BATCH_LOAD_KEY).unwrap_or_default();
    let l = &s.latency_us;
    json!({ "count": s.ops, "mean": l.mean, "p50": l.p50, "p90": l.p90, "p99": l.p99, "max": l.max })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(au: [f64; 2], thr: [f64; 2], wall: [f64; 2], loads_ns: &[u64], hosted: Range<u32>) -> Value {
        let mut s = json!({
            "num_accelerators": 4,
            "batch_size": 1,
            "record_length_bytes": 1048576.0,
            "au_threshold_percentage": 90.0,
            "epochs_completed": 2,
            "valid": true,
            "invalid_reasons": [],
            "metric": { "train_au_percentage": au, "train_throughput_samples_per_second": thr },
            "measured": {
                "per_epoch": [
                    { "wall_s": wall[0], "bytes_read": 100, "samples": 10 },
                    { "wall_s": wall[1], "bytes_read": 100, "samples": 10 },
                ],
                "cpu_s": 1.0,
            },
        });
        let w = World::single();
        add_rank_keys(&mut s, &w, &hosted, loads_ns);
        s
    }

    #[test]
    fn au_is_the_mean_over_ranks_throughput_the_sum_and_latencies_pool() {
        let a = rank([80.0, 90.0], [10.0, 12.0], [2.0, 2.0], &[1_000_000; 99], 0..2);
        let b = rank([100.0, 96.0], [14.0, 12.0], [2.5, 1.5], &[9_000_000], 2..4);
        let m = merge_summary(&[a, b], &Recorder::new(), &["h1".into(), "h2".into()], 4.0);
        let au: Vec<f64> = m["metric"]["train_au_percentage"].as_array().unwrap().iter().map(num).collect();
        assert_eq!(au, vec![90.0, 93.0]);
        assert_eq!(m["metric"]["train_au_mean_percentage"], 91.5);
        assert_eq!(m["metric"]["train_au_meet_expectation"], "success");
        assert_eq!(m["metric"]["train_throughput_samples_per_second"], json!([24.0, 24.0]));
        assert_eq!(m["measured"]["per_epoch"][0]["wall_s"], 2.5, "the slowest rank's");
        assert_eq!(m["measured"]["per_epoch"][1]["bytes_read"], 200);
        assert_eq!(m["measured"]["bytes_read"], 400);
        assert_eq!(m["measured"]["cpu_s"], 2.0);
        // 99 loads of 1 ms and one of 9 ms: the pooled p99 is 1 ms, the max 9 ms.
        let lat = &m["measured"]["batch_load_latency_us"];
        assert_eq!(lat["count"], 100);
        assert!((num(&lat["p99"]) - 1000.0).abs() < 2.0, "{lat}");
        assert!((num(&lat["max"]) - 9000.0).abs() < 10.0, "{lat}");
        assert_eq!((m["num_hosts"].as_u64(), m["mpi_ranks"].as_u64()), (Some(2), Some(2)));
        assert!(m.get("hosted_accelerators").is_none());
    }

    fn num(v: &Value) -> f64 {
        v.as_f64().unwrap()
    }
}
