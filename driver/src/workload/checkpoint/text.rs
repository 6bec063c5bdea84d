//! The checkpoint workload's part of the human summary: one line for the
//! job, a table of the save and load phases, and one line per checkpoint
//! (the per-rank durations stay in results.json).

use std::fmt::Write as _;

use serde_json::Value;

const GIB: f64 = (1u64 << 30) as f64;

/// Renders `summary`, or `None` when it is not a complete checkpoint
/// summary (a partial flush), so the caller falls back to the generic form.
pub fn render_summary(s: &Value) -> Option<String> {
    let mut out = String::new();
    let bytes = s.get("checkpoint_bytes")?.as_u64()?;
    let _ = writeln!(
        out,
        "checkpoint: {}, {} ranks (TP {} × PP {} × DP {}, ZeRO {}, {} mode), {} files, {} bytes ({:.2} GiB) per checkpoint",
        s.get("model")?.as_str()?,
        s.get("ranks")?,
        s.get("tensor_parallelism")?,
        s.get("pipeline_parallelism")?,
        s.get("data_parallelism")?,
        s.get("zero_stage")?,
        s.get("mode")?.as_str()?,
        s.get("files_per_checkpoint")?,
        bytes,
        bytes as f64 / GIB,
    );
    let _ = writeln!(
        out,
        "{:<6} {:>11} {:>22} {:>20} {:>9} {:>13}",
        "phase", "checkpoints", "duration s (mean±sd)", "GiB/s (mean±sd)", "GB/s", "rank-0 GiB/s"
    );
    let num = |p: &Value, k: &str| p.get(k).and_then(Value::as_f64);
    for phase in ["save", "load"] {
        let p = s.get(phase)?;
        let _ = writeln!(
            out,
            "{:<6} {:>11} {:>22} {:>20} {:>9.3} {:>13.3}",
            phase,
            p.get("checkpoints")?.as_u64()?,
            format!("{:.3} ± {:.3}", num(p, "duration_mean_s")?, num(p, "duration_stdev_s")?),
            format!("{:.3} ± {:.3}", num(p, "throughput_mean_GiB_per_s")?, num(p, "throughput_stdev_GiB_per_s")?),
            num(p, "throughput_mean_GB_per_s")?,
            num(p, "rank0_throughput_mean_GiB_per_s")?,
        );
    }
    let _ = writeln!(out, "per checkpoint (duration = slowest rank; per-rank durations in results.json):");
    for phase in ["save", "load"] {
        for c in s.get(phase)?.get("per_checkpoint")?.as_array()? {
            let ranks: Vec<f64> = c.get("rank_duration_s")?.as_array()?.iter().filter_map(Value::as_f64).collect();
            let fastest = ranks.iter().copied().fold(f64::INFINITY, f64::min);
            let _ = writeln!(
                out,
                "  {phase} {:>3}  {:>9.3} s  {:>8.3} GiB/s  {:>8.3} GB/s  (fastest rank {:.3} s)",
                c.get("step")?.as_u64()?,
                num(c, "duration_s")?,
                num(c, "throughput_GiB_per_s")?,
                num(c, "throughput_GB_per_s")?,
                if fastest.is_finite() { fastest } else { 0.0 },
            );
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_phases_and_checkpoints_and_refuses_partial_summaries() {
        let phase = |n: u64| {
            json!({
                "checkpoints": n, "duration_mean_s": 2.0, "duration_stdev_s": 0.5,
                "throughput_mean_GiB_per_s": 1.5, "throughput_stdev_GiB_per_s": 0.25,
                "throughput_mean_GB_per_s": 1.61, "rank0_throughput_mean_GiB_per_s": 1.7,
                "per_checkpoint": (1..=n).map(|k| json!({
                    "step": k, "duration_s": 2.0, "throughput_GiB_per_s": 1.5, "throughput_GB_per_s": 1.61,
                    "rank_duration_s": [1.5, 2.0],
                })).collect::<Vec<_>>(),
            })
        };
        let s = json!({
            "model": "smoke", "ranks": 2, "tensor_parallelism": 1, "pipeline_parallelism": 1,
            "data_parallelism": 2, "zero_stage": 3, "mode": "default", "files_per_checkpoint": 4,
            "checkpoint_bytes": 3u64 << 30, "save": phase(2), "load": phase(1),
        });
        let t = render_summary(&s).unwrap();
        assert!(t.contains("smoke, 2 ranks (TP 1 × PP 1 × DP 2, ZeRO 3, default mode), 4 files"), "{t}");
        assert!(t.contains("(3.00 GiB) per checkpoint"), "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("save ") && l.contains("2.000 ± 0.500") && l.contains("1.500 ± 0.250")),
            "{t}"
        );
        assert!(t.contains("  save   2      2.000 s"), "{t}");
        assert!(t.lines().any(|l| l.starts_with("save             2 ")), "{t}");
        assert!(t.contains("  load   1") && t.contains("fastest rank 1.500 s"), "{t}");
        assert!(render_summary(&json!({ "partial": { "read_ops": 1 } })).is_none());
    }
}
