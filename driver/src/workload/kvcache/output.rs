//! The results: kv-cache.py's JSON (spec §11, same names, GiB units,
//! numpy-style percentiles) as the workload's `summary`, plus mlpdrive's
//! honest extras under `extras`. docs/workloads/kvcache.md explains every
//! field and which accounting it follows.

use serde_json::{Map, Value, json};

use super::cache::Tier;
use super::config::{KvConfig, PerformanceProfile};
use super::sim::Sim;
use super::stats::{Stats, mean, percentile, sorted};
use super::users::QosClass;

const GIB: f64 = (1u64 << 30) as f64;

/// Time facts of the measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// The reference's `elapsed_time`: from the start of the window to the
    /// moment new work stopped (duration, or earlier at `max_requests`).
    pub elapsed_s: f64,
    /// From the start of the window to the last completion (includes the
    /// requests that finished after the window).
    pub spanned_s: f64,
}

/// What the run was, for the extras.
pub struct RunFacts<'a> {
    pub mode: &'static str,
    pub trace_path: Option<&'a str>,
    pub trace_rows: u64,
    pub storage_capacity_bytes: Option<u64>,
}

fn ms_stats(v: &[f64]) -> Value {
    let s = sorted(v);
    let ms = |x: f64| x * 1000.0;
    json!({
        "mean": ms(mean(&s)),
        "p50": ms(percentile(&s, 50.0)),
        "p95": ms(percentile(&s, 95.0)),
        "p99": ms(percentile(&s, 99.0)),
        "p999": ms(percentile(&s, 99.9)),
        "p9999": ms(percentile(&s, 99.99)),
    })
}

fn put_percentiles(m: &mut Map<String, Value>, prefix: &str, v: &[f64]) {
    if v.is_empty() {
        return;
    }
    let s = sorted(v);
    for (name, q) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99)] {
        m.insert(format!("{prefix}_{name}_ms"), json!(percentile(&s, q) * 1000.0));
    }
}

fn div(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn storage_health(cfg: &KvConfig, st: &Stats, hit_rate: f64) -> Value {
    let mut criteria = Vec::new();
    let storage = &st.tiers[Tier::Storage as usize];
    let cpu = &st.tiers[Tier::Cpu as usize];
    match cfg.performance_profile {
        PerformanceProfile::Latency => {
            let p95 = |dev: &[f64], tot: &[f64]| {
                let v = if dev.is_empty() { tot } else { dev };
                (!v.is_empty()).then(|| percentile(&sorted(v), 95.0) * 1000.0)
            };
            if let Some(w) = p95(&storage.write_device_s, &storage.write_lat_s) {
                criteria.push(("Storage Tier Write Device P95 < 500ms", 500.0, w, "ms", w < 500.0));
            }
            if let Some(r) = p95(&storage.read_device_s, &storage.read_lat_s) {
                criteria.push(("Storage Tier Read Device P95 < 200ms", 200.0, r, "ms", r < 200.0));
            }
            let cpu_all: Vec<f64> = cpu.read_lat_s.iter().chain(&cpu.write_lat_s).copied().collect();
            if !cpu_all.is_empty() {
                let p = percentile(&sorted(&cpu_all), 95.0) * 1000.0;
                criteria.push(("CPU RAM P95 < 150ms", 150.0, p, "ms", p < 150.0));
            }
            if st.cache_hits + st.cache_misses > 0 {
                criteria.push(("Cache Hit Rate > 30%", 0.30, hit_rate, "ratio", hit_rate > 0.30));
            }
        }
        PerformanceProfile::Throughput => {
            let rd = storage.read_bytes as f64 / GIB;
            let wr = storage.write_bytes as f64 / GIB;
            if storage.read_bytes > 0 || storage.write_bytes == 0 {
                criteria.push(("Storage Read Bytes > 0", 0.0, rd, "GB", rd > 0.0));
            }
            if storage.write_bytes > 0 || storage.read_bytes == 0 {
                criteria.push(("Storage Write Bytes > 0", 0.0, wr, "GB", wr > 0.0));
            }
        }
    }
    let passed = criteria.iter().filter(|c| c.4).count();
    let list: Vec<Value> = criteria
        .iter()
        .map(|c| json!({"name": c.0, "target": c.1, "actual": c.2, "unit": c.3, "passed": c.4}))
        .collect();
    json!({
        "overall_status": if passed == criteria.len() { "PASS" } else { "FAIL" },
        "criteria": list,
        "passed_count": passed,
        "total_count": criteria.len(),
    })
}

fn qos_metrics(cfg: &KvConfig, st: &Stats) -> Value {
    if st.qos_e2e_s.values().all(Vec::is_empty) {
        return json!({"no_data": true});
    }
    let mut m = Map::new();
    for q in QosClass::ALL {
        let Some(v) = st.qos_e2e_s.get(&q).filter(|v| !v.is_empty()) else { continue };
        let s = sorted(v);
        let target = q.profile(cfg).target_latency_p95_ms;
        let violations = s.iter().filter(|&&x| x * 1000.0 > target).count();
        let compliance = 1.0 - violations as f64 / s.len() as f64;
        let p95 = percentile(&s, 95.0) * 1000.0;
        m.insert(
            q.name().into(),
            json!({
                "total_requests": s.len(),
                "latency_ms": {
                    "mean": mean(&s) * 1000.0,
                    "p50": percentile(&s, 50.0) * 1000.0,
                    "p95": p95,
                    "p99": percentile(&s, 99.0) * 1000.0,
                    "max": s.last().copied().unwrap_or(0.0) * 1000.0,
                },
                "sla": {"target_p95_ms": target, "actual_p95_ms": p95, "compliance": compliance, "met": compliance >= 0.95},
            }),
        );
    }
    Value::Object(m)
}

/// The workload's `summary` object for results.json.
pub fn summary(sim: &Sim, cfg: &KvConfig, seed: u64, t: Times, facts: &RunFacts) -> Value {
    let st = &sim.stats;
    let cache = &sim.cache;
    let elapsed = t.elapsed_s;
    let total_storage: f64 = st.storage_s.iter().sum();
    let total_gen: f64 = st.generation_s.iter().sum();
    let lookups = st.cache_hits + st.cache_misses;
    let hit_rate = div(st.cache_hits as f64, lookups as f64);

    let mut cs = Map::new();
    cs.insert("cache_hit_rate".into(), json!(hit_rate));
    cs.insert("cache_hits".into(), json!(st.cache_hits));
    cs.insert("cache_misses".into(), json!(st.cache_misses));
    for tier in Tier::ALL {
        cs.insert(format!("{}_entries", tier.name()), json!(cache.entry_count(tier)));
    }
    cs.insert("gpu_memory_used_gb".into(), json!(cache.usage(Tier::Gpu) as f64 / GIB));
    cs.insert("cpu_memory_used_gb".into(), json!(cache.usage(Tier::Cpu) as f64 / GIB));
    cs.insert("offloads_cpu".into(), json!(st.offloads_cpu));
    cs.insert("offloads_storage".into(), json!(st.offloads_storage));
    cs.insert("prefill_writes".into(), json!(st.prefill_writes));
    cs.insert("decode_reads".into(), json!(st.decode_reads));
    for tier in Tier::ALL {
        let ts = &st.tiers[tier as usize];
        let n = tier.name();
        let written = (ts.write_bytes + ts.demoted_in_bytes) as f64 / GIB;
        let read = (ts.read_bytes + ts.demoted_out_bytes) as f64 / GIB;
        cs.insert(format!("tier_{n}_kv_bytes_written_gb"), json!(written));
        cs.insert(format!("tier_{n}_kv_bytes_read_gb"), json!(read));
        cs.insert(format!("tier_{n}_read_bandwidth_gbps"), json!(div(read, elapsed)));
        cs.insert(format!("tier_{n}_write_bandwidth_gbps"), json!(div(written, elapsed)));
    }
    cs.insert("system_prompt_hits".into(), json!(st.system_prompt_hits));
    cs.insert("common_phrase_hits".into(), json!(0));
    cs.insert("user_cache_hits".into(), json!(st.user_cache_hits));
    cs.insert("multi_turn_hits".into(), json!(st.multi_turn_hits));
    cs.insert("total_read_bytes".into(), json!(st.total_read_bytes));
    cs.insert("total_write_bytes".into(), json!(st.total_write_bytes));
    cs.insert("total_read_gb".into(), json!(st.total_read_bytes as f64 / GIB));
    cs.insert("total_write_gb".into(), json!(st.total_write_bytes as f64 / GIB));
    cs.insert("read_write_ratio".into(), json!(st.total_read_bytes as f64 / st.total_write_bytes.max(1) as f64));
    cs.insert("read_iops".into(), json!(st.read_operations));
    cs.insert("write_iops".into(), json!(st.write_operations));
    cs.insert("storage_tokens_processed".into(), json!(st.storage_tokens_processed));
    for tier in Tier::ALL {
        let ts = &st.tiers[tier as usize];
        put_percentiles(&mut cs, &format!("{}_read", tier.name()), &ts.read_lat_s);
        put_percentiles(&mut cs, &format!("{}_write", tier.name()), &ts.write_lat_s);
    }
    let sto = &st.tiers[Tier::Storage as usize];
    put_percentiles(&mut cs, "storage_read_device", &sto.read_device_s);
    put_percentiles(&mut cs, "storage_write_device", &sto.write_device_s);
    put_percentiles(&mut cs, "storage_read_host", &sto.read_host_s);
    put_percentiles(&mut cs, "storage_write_host", &sto.write_host_s);
    cs.insert("storage_health".into(), storage_health(cfg, st, hit_rate));

    let mt = st.multi_turn_cache_hits + st.multi_turn_cache_misses;
    let inner = json!({
        "total_requests": st.requests_completed,
        "total_tokens": st.total_tokens_generated,
        "elapsed_time": elapsed,
        "avg_throughput_tokens_per_sec": div(st.total_tokens_generated as f64, elapsed),
        "total_storage_io_time": total_storage,
        "storage_throughput_tokens_per_sec": div(st.total_tokens_generated as f64, total_storage),
        "requests_per_second": div(st.requests_completed as f64, elapsed),
        "end_to_end_latency_ms": ms_stats(&st.e2e_s),
        "storage_io_latency_ms": ms_stats(&st.storage_s),
        "generation_latency_ms": ms_stats(&st.generation_s),
        "cache_stats": Value::Object(cs),
        "qos_metrics": qos_metrics(cfg, st),
        "prefix_cache_stats": {
            "prefix_hits": st.prefix_hits,
            "prefix_misses": st.prefix_misses,
            "system_prompt_reuse": st.system_prompt_hits,
            "common_phrase_reuse": 0,
            "bytes_saved": st.prefix_bytes_saved,
        },
        "autoscaling_stats": [],
        "autoscaling_summary": Value::Null,
        "multi_turn_stats": {
            "cache_hits": st.multi_turn_cache_hits,
            "cache_misses": st.multi_turn_cache_misses,
            "hit_rate": div(st.multi_turn_cache_hits as f64, mt as f64),
        },
    });

    json!({
        "requests_completed": st.requests_completed,
        "total_tokens_generated": st.total_tokens_generated,
        "total_storage_io_latency": total_storage,
        "total_generation_latency": total_gen,
        "end_to_end_latencies": st.e2e_s,
        "storage_latencies": st.storage_s,
        "generation_latencies": st.generation_s,
        "prefill_latencies": st.prefill_s,
        "decode_latencies": st.decode_s,
        "throughput_timeline": [],
        "multi_turn_cache_hits": st.multi_turn_cache_hits,
        "multi_turn_cache_misses": st.multi_turn_cache_misses,
        "seed": seed,
        "summary": inner,
        "extras": extras(sim, cfg, t, facts),
    })
}

fn extras(sim: &Sim, cfg: &KvConfig, t: Times, facts: &RunFacts) -> Value {
    let st = &sim.stats;
    let cache = &sim.cache;
    let mut tiers = Map::new();
    for tier in Tier::ALL {
        let ts = &st.tiers[tier as usize];
        tiers.insert(
            tier.name().into(),
            json!({
                "present": cache.present(tier),
                "capacity_bytes": if cache.present(tier) { cache.capacity(tier).map_or(Value::Null, |c| json!(c)) } else { json!(0) },
                "used_bytes": cache.usage(tier),
                "entries": cache.entry_count(tier),
                "read_ops": ts.read_ops,
                "write_ops": ts.write_ops,
                "read_bytes": ts.read_bytes,
                "write_bytes": ts.write_bytes,
                "read_bytes_window": ts.read_bytes_window,
                "write_bytes_window": ts.write_bytes_window,
                "read_bytes_late": (ts.read_bytes + ts.demoted_out_bytes).saturating_sub(ts.read_bytes_window),
                "write_bytes_late": (ts.write_bytes + ts.demoted_in_bytes).saturating_sub(ts.write_bytes_window),
                "read_bandwidth_window_gbps": div(ts.read_bytes_window as f64 / GIB, t.elapsed_s),
                "write_bandwidth_window_gbps": div(ts.write_bytes_window as f64 / GIB, t.elapsed_s),
                "demoted_in_bytes": ts.demoted_in_bytes,
                "demoted_out_bytes": ts.demoted_out_bytes,
                "moved_bandwidth_spanned_gbps": div(
                    (ts.read_bytes + ts.write_bytes + ts.demoted_in_bytes + ts.demoted_out_bytes) as f64 / GIB,
                    t.spanned_s
                ),
            }),
        );
    }
    let demotions: Vec<Value> = st
        .demotions
        .iter()
        .map(|((from, to), d)| {
            let s = sorted(&d.lat_s);
            json!({
                "from": from.name(),
                "to": to.name(),
                "count": d.count,
                "bytes": d.bytes,
                "latency_ms": {
                    "mean": mean(&s) * 1000.0,
                    "p50": percentile(&s, 50.0) * 1000.0,
                    "p95": percentile(&s, 95.0) * 1000.0,
                    "p99": percentile(&s, 99.0) * 1000.0,
                    "max": s.last().copied().unwrap_or(0.0) * 1000.0,
                },
            })
        })
        .collect();
    let accounting = cache.check_accounting();
    json!({
        "mode": facts.mode,
        "model": cfg.model,
        "bytes_per_token": sim.params().sizing.bytes_per_token,
        "tensor_parallel": cfg.tensor_parallel,
        "npy_header": cfg.kvcache.npy_header,
        "workers": cfg.workers(),
        "window_s": t.elapsed_s,
        "spanned_s": t.spanned_s,
        "storage_capacity_bytes": facts.storage_capacity_bytes,
        "tiers": Value::Object(tiers),
        "late": {
            "requests_completed": st.late_requests,
            "tokens": st.late_tokens,
        },
        "requests_enqueued": st.requests_enqueued,
        "requests_unfinished": st.requests_unfinished,
        "queue_depth_max": st.queue_depth_max,
        "demotions": demotions,
        "evictions": st.evictions,
        "storage_deletes": st.storage_deletes,
        "forced_writes": st.forced_writes,
        "rag_docs_ingested": st.rag_docs_ingested,
        "rag_docs_evicted": st.rag_docs_evicted,
        "io_errors": st.io_errors,
        "first_error": st.first_error,
        "accounting_ok": accounting.is_ok(),
        "cpu_tier_bytes_held": sim.cpu_bytes_held(),
        "gpu_model": {"bandwidth_gbs": cfg.gpu.bandwidth_gbs, "latency_us": cfg.gpu.latency_us},
        "cpu_model": {
            "modelled": !sim.params().cpu_copy,
            "bandwidth_gbs": cfg.cpu.bandwidth_gbs,
            "latency_us": cfg.cpu.latency_us,
        },
        "trace": {"path": facts.trace_path, "rows": facts.trace_rows},
        "input": sim.feed.as_ref().map_or(Value::Null, |f| json!({
            "kind": f.kind,
            "path": f.path,
            "requests_per_pass": f.items_per_pass,
            "requests_fed": f.seq,
            "rows_skipped": f.rows_skipped,
        })),
    })
}

/// The human summary of a kvcache result (summary.txt): the figures
/// MLPerf reports, per-tier bytes and latencies, and the honest extras.
pub fn text(s: &Value, series: &[crate::results::SeriesRecord]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let inner = &s["summary"];
    let cs = &inner["cache_stats"];
    let x = &s["extras"];
    let _ = writeln!(
        out,
        "kvcache:  {} ({} mode), {} requests in {:.1} s window ({} finished after it), {} unfinished",
        x["model"].as_str().unwrap_or("?"),
        x["mode"].as_str().unwrap_or("?"),
        f(s, "requests_completed"),
        f(x, "window_s"),
        f(&x["late"], "requests_completed"),
        f(x, "requests_unfinished"),
    );
    let _ = writeln!(
        out,
        "tokens:   {:.0} generated; wall-clock {:.1} tok/s; storage {:.1} tok/s; {:.2} req/s",
        f(inner, "total_tokens"),
        f(inner, "avg_throughput_tokens_per_sec"),
        f(inner, "storage_throughput_tokens_per_sec"),
        f(inner, "requests_per_second"),
    );
    let _ = writeln!(
        out,
        "cache:    hit rate {:.3} ({} hits, {} misses); multi-turn hit rate {:.3}; {} evictions, {} deleted",
        f(cs, "cache_hit_rate"),
        f(cs, "cache_hits"),
        f(cs, "cache_misses"),
        f(&inner["multi_turn_stats"], "hit_rate"),
        f(x, "evictions"),
        f(x, "storage_deletes"),
    );
    let _ = writeln!(
        out,
        "\ntier      read GiB  write GiB  read GiB/s  write GiB/s  read p50/p95/p99 ms        write p50/p95/p99 ms"
    );
    for t in ["gpu", "cpu", "storage"] {
        let _ = writeln!(
            out,
            "{t:<8} {:>9.3} {:>10.3} {:>11.3} {:>12.3}  {:>8.1} {:>8.1} {:>8.1}  {:>8.1} {:>8.1} {:>8.1}",
            f(cs, &format!("tier_{t}_kv_bytes_read_gb")),
            f(cs, &format!("tier_{t}_kv_bytes_written_gb")),
            f(cs, &format!("tier_{t}_read_bandwidth_gbps")),
            f(cs, &format!("tier_{t}_write_bandwidth_gbps")),
            f(cs, &format!("{t}_read_p50_ms")),
            f(cs, &format!("{t}_read_p95_ms")),
            f(cs, &format!("{t}_read_p99_ms")),
            f(cs, &format!("{t}_write_p50_ms")),
            f(cs, &format!("{t}_write_p95_ms")),
            f(cs, &format!("{t}_write_p99_ms")),
        );
    }
    let _ = writeln!(
        out,
        "storage device p95: read {:.1} ms, write {:.1} ms; end-to-end p50/p95 {:.1}/{:.1} ms",
        f(cs, "storage_read_device_p95_ms"),
        f(cs, "storage_write_device_p95_ms"),
        f(&inner["end_to_end_latency_ms"], "p50"),
        f(&inner["end_to_end_latency_ms"], "p95"),
    );
    let sto = &x["tiers"]["storage"];
    let _ = writeln!(
        out,
        "window:   storage read {:.3} GiB/s, write {:.3} GiB/s counting only I/O that completed inside the window",
        f(sto, "read_bandwidth_window_gbps"),
        f(sto, "write_bandwidth_window_gbps"),
    );
    if !series.is_empty() {
        let _ = writeln!(out, "\nstorage I/O (per chunk)   ops        GiB     mean_ms   p50_ms   p99_ms   max_ms");
        for r in series {
            let l = &r.latency_us;
            let _ = writeln!(
                out,
                "{:<13} {:<7} {:>8} {:>10.3} {:>11.2} {:>8.2} {:>8.2} {:>8.2}",
                r.phase,
                r.op,
                r.ops,
                r.bytes as f64 / GIB,
                l.mean / 1000.0,
                l.p50 / 1000.0,
                l.p99 / 1000.0,
                l.max / 1000.0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Normalises generated names to the patterns the doc uses.
    fn pattern(leaf: &str) -> String {
        let tiers = ["gpu", "cpu", "storage"];
        if let Some(rest) = leaf.strip_prefix("tier_") {
            for t in tiers {
                if let Some(tail) = rest.strip_prefix(&format!("{t}_")) {
                    return format!("tier_{{gpu,cpu,storage}}_{tail}");
                }
            }
        }
        for pct in ["p50", "p95", "p99", "p999", "p9999"] {
            if let Some(head) = leaf.strip_suffix(&format!("_{pct}_ms")) {
                for kind in ["device", "host"] {
                    for rw in ["read", "write"] {
                        if head == format!("storage_{rw}_{kind}") {
                            return format!("storage_{{read,write}}_{kind}_{{p50,p95,p99,p999,p9999}}_ms");
                        }
                    }
                }
                for t in tiers {
                    for rw in ["read", "write"] {
                        if head == format!("{t}_{rw}") {
                            return "{gpu,cpu,storage}_{read,write}_{p50,p95,p99,p999,p9999}_ms".into();
                        }
                    }
                }
            }
        }
        leaf.to_string()
    }

    #[test]
    fn results_schema_doc_names_every_kvcache_field() {
        const DOC: &str = include_str!("../../../../docs/results-schema.md");
        let c: KvConfig = serde_yaml_ng::from_str(
            "{users: 10, gpu_mem_gb: 0.25, cpu_mem_gb: 0.25, storage_capacity_gb: 1, model: tiny-1b, enable_rag: true, generation_mode: fast, \
             kvcache: {io_size: 1MiB}, rag: {small_model_doc_tokens_min: 100, small_model_doc_tokens_max: 200}}",
        )
        .unwrap();
        let mut sim = crate::workload::kvcache::tests::sim(&c, 1, false, Some(1 << 30));
        let t0 = Instant::now();
        sim.begin_measure(t0, Some(Duration::from_secs(10)), Duration::from_secs(60));
        crate::workload::kvcache::tests::run_fake_device(&mut sim, t0, 1);
        let facts =
            RunFacts { mode: "trace-only", trace_path: Some("x.csv"), trace_rows: 1, storage_capacity_bytes: Some(1) };
        let v = summary(&sim, &c, 1, Times { elapsed_s: 10.0, spanned_s: 10.0 }, &facts);
        fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    for (k, child) in o {
                        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        out.push(path.clone());
                        keys(&path, child, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|c| keys(prefix, c, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        keys("", &v, &mut all);
        assert!(all.iter().any(|k| k.ends_with("storage_read_device_p95_ms")), "sample run exercised storage");
        assert!(all.iter().any(|k| k.ends_with("gpu_read_p50_ms")), "sample run exercised the GPU tier");
        assert!(all.iter().any(|k| k.contains("demotions.latency_ms")), "sample run demoted");
        let missing: Vec<&String> = all
            .iter()
            .filter(|path| {
                let leaf = path.rsplit('.').next().unwrap_or(path);
                !DOC.contains(&format!("`{path}`"))
                    && !DOC.contains(&format!("`{leaf}`"))
                    && !DOC.contains(&format!("`{}`", pattern(leaf)))
                    && !["interactive", "responsive", "batch", "gpu", "cpu", "storage"].contains(&leaf)
            })
            .collect();
        assert!(missing.is_empty(), "fields missing from docs/results-schema.md: {missing:?}");
    }
}
