//! vdb as an MPI job: rank 0 writes the index, every rank opens that one
//! file and runs its share of the queries (vdbbench: one collection, N
//! worker processes querying it); rank 0 merges the ranks' figures.
//!
//! Per sweep point: queries and QPS are sums over ranks (each rank's QPS is
//! its queries over its window; the ranks start each point together),
//! recall and reads/bytes/hops per query are means over all queries
//! (weighted by each rank's count), and the latency percentiles come from
//! the ranks' per-query HDR histograms added together (never from their
//! percentiles).

use std::ops::Range;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde_json::{Value, json};

use super::Point;
use crate::error::Error;
use crate::mpi::World;
use crate::target::ObjectHandle;
use crate::workload::RunEnv;

/// Opens the index rank 0 wrote and checks its size.
pub fn open_index(env: &RunEnv, name: &str, bytes: u64) -> Result<ObjectHandle, Error> {
    match env.target.open(name).map_err(|e| Error::failed(format!("cannot open {name}: {e}")))? {
        Some((h, size)) if size == bytes => Ok(h),
        Some((_, size)) => Err(Error::failed(format!(
            "{name} holds {size} bytes, but the index this config builds is {bytes} bytes: rank 0 wrote another \
             index (are the ranks' configs and seeds the same?)"
        ))),
        None => Err(Error::failed(format!(
            "{name}, which rank 0 wrote, is not visible on this rank's target {}: a vdb MPI job searches one index, \
             so every rank needs the same shared storage (the same file:// directory on a shared file system)",
            env.target.info().location
        ))),
    }
}

/// Per-query latencies in ns: sized for a minute, growing beyond.
fn histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid");
    h.auto(true);
    h
}

/// A histogram of per-query latencies (ns), as base64 of HDR's V2 encoding.
fn latency_wire(point: &Point) -> String {
    let mut h = histogram();
    for a in &point.answers {
        let _ = h.record(a.latency_ns.max(1));
    }
    let mut buf = Vec::new();
    V2Serializer::new().serialize(&h, &mut buf).expect("serialising a histogram into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(&buf)
}

fn latency_from_wire(s: &str) -> Option<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).ok()
}

/// A rank's own summary in an MPI job: the job's size, its share of the
/// queries, and each point's latencies as a histogram rank 0 can merge.
pub fn add_rank_keys(summary: &mut Value, world: &World, queries: &Range<usize>, points: &[Point]) {
    summary["mpi_ranks"] = world.size().into();
    summary["hosted_queries"] = json!([queries.start, queries.end]);
    if let Some(sweep) = summary["sweep"].as_array_mut() {
        for (s, p) in sweep.iter_mut().zip(points) {
            s["latency_wire"] = latency_wire(p).into();
        }
    }
}

/// The keys of a point that the merge recomputes; the rest are rank 0's.
const LATENCY_KEYS: [(&str, f64); 6] = [
    ("p50_latency_ms", 50.0),
    ("p95_latency_ms", 95.0),
    ("p99_latency_ms", 99.0),
    ("p999_latency_ms", 99.9),
    ("p9999_latency_ms", 99.99),
    ("max_latency_ms", 100.0),
];
const PER_QUERY_KEYS: [&str; 7] = [
    "recall_at_k",
    "recall_at_1",
    "recall_at_10",
    "recall_at_100",
    "reads_per_query",
    "bytes_per_query",
    "hops_per_query",
];

/// One sweep point of the job from every rank's.
fn merge_point(points: &[&Value]) -> Value {
    let mut out = points[0].clone();
    let queries: Vec<f64> = points.iter().map(|p| p["queries"].as_f64().unwrap_or(0.0)).collect();
    let total: f64 = queries.iter().sum();
    out["queries"] = (total as u64).into();
    out["throughput_qps"] = points.iter().map(|p| p["throughput_qps"].as_f64().unwrap_or(0.0)).sum::<f64>().into();
    for k in PER_QUERY_KEYS {
        // Null (recall@100 with k < 100) on one rank is null on all.
        let vals: Option<Vec<f64>> = points.iter().map(|p| p[k].as_f64()).collect();
        out[k] = match vals {
            Some(v) if total > 0.0 => (v.iter().zip(&queries).map(|(x, q)| x * q).sum::<f64>() / total).into(),
            Some(_) => 0.0.into(),
            None => Value::Null,
        };
    }
    let mut h = histogram();
    for p in points {
        if let Some(x) = p["latency_wire"].as_str().and_then(latency_from_wire) {
            let _ = h.add(&x);
        }
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    out["mean_latency_ms"] = if h.is_empty() { 0.0 } else { h.mean() / 1e6 }.into();
    for (k, q) in LATENCY_KEYS {
        out[k] = if h.is_empty() {
            0.0
        } else if q >= 100.0 {
            ms(h.max())
        } else {
            ms(h.value_at_quantile(q / 100.0))
        }
        .into();
    }
    if let Some(o) = out.as_object_mut() {
        o.remove("latency_wire");
    }
    out
}

/// The job's vdb summary from every rank's (rank order; Null for a rank
/// without a result).
pub fn merge_summary(summaries: &[Value]) -> Value {
    let ranks: Vec<&Value> = summaries.iter().filter(|s| s.is_object()).collect();
    let Some(base) = ranks.first() else { return Value::Null };
    let mut out = (*base).clone();
    let n_points = ranks.iter().map(|s| s["sweep"].as_array().map_or(0, Vec::len)).min().unwrap_or(0);
    let sweep: Vec<Value> =
        (0..n_points).map(|i| merge_point(&ranks.iter().map(|s| &s["sweep"][i]).collect::<Vec<_>>())).collect();
    // The first point's figures at the top level, as in a single run.
    if let (Some(first), Some(o)) = (sweep.first().and_then(Value::as_object), out.as_object_mut()) {
        for (k, v) in first {
            o.insert(k.clone(), v.clone());
        }
    }
    out["sweep"] = Value::Array(sweep);
    out["mpi_ranks"] = summaries.len().into();
    if let Some(o) = out.as_object_mut() {
        o.remove("hosted_queries");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::vdb::search::Answer;

    fn point(latencies_ms: &[u64]) -> Point {
        let answers = latencies_ms
            .iter()
            .enumerate()
            .map(|(qi, &ms)| Answer { qi, latency_ns: ms * 1_000_000, ..Answer::default() })
            .collect();
        Point { beam_width: 4, search_list: 50, answers, window_s: 1.0 }
    }

    fn rank_summary(p: &Point, recall: f64, qps: f64, queries: Range<usize>) -> Value {
        let mut s = json!({
            "sweep": [{
                "queries": p.answers.len(), "throughput_qps": qps, "recall_at_k": recall, "recall_at_1": recall,
                "recall_at_10": recall, "recall_at_100": null, "reads_per_query": 10.0, "bytes_per_query": 40960.0,
                "hops_per_query": 5.0, "p50_latency_ms": 0.0,
            }],
        });
        add_rank_keys(&mut s, &World::single(), &queries, std::slice::from_ref(p));
        s
    }

    #[test]
    fn qps_adds_up_recall_is_over_all_queries_and_latencies_pool() {
        // Rank 0: 90 queries of 1 ms, recall 1.0; rank 1: 10 of 20 ms, recall 0.5.
        let a = rank_summary(&point(&[1; 90]), 1.0, 900.0, 0..90);
        let b = rank_summary(&point(&[20; 10]), 0.5, 100.0, 90..100);
        let m = merge_summary(&[a, b]);
        assert_eq!(m["queries"], 100);
        assert_eq!(m["throughput_qps"], 1000.0);
        assert!((m["recall_at_k"].as_f64().unwrap() - 0.95).abs() < 1e-12);
        assert_eq!(m["recall_at_100"], Value::Null);
        // p50 is rank 0's 1 ms, p95 rank 1's 20 ms: pooled, not averaged.
        assert!((m["p50_latency_ms"].as_f64().unwrap() - 1.0).abs() < 0.01, "{m}");
        assert!((m["p95_latency_ms"].as_f64().unwrap() - 20.0).abs() < 0.05, "{m}");
        assert_eq!(m["mpi_ranks"], 2);
        assert!(m.get("hosted_queries").is_none() && m["sweep"][0].get("latency_wire").is_none());
    }
}
