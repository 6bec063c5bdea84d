//! Checkpoint figures: per checkpoint, every rank's duration; the
//! checkpoint's duration is the slowest rank's and its throughput the
//! checkpoint's bytes over that duration (the MLPerf rules' definition).
//! Means and standard deviations over checkpoints go into the summary under
//! honest names (`_GiB_per_s`, `_GB_per_s`) and under the reference's
//! `metric` names, which hold GiB/s as DLIO's do.

use serde_json::{Value, json};

const GIB: f64 = (1u64 << 30) as f64;
const GB: f64 = 1e9;

/// One checkpoint (a save or a load) as every rank saw it.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// Checkpoint number (1-based).
    pub step: u32,
    /// Seconds from the common start to each rank's last completion.
    pub rank_duration_s: Vec<f64>,
}

/// Mean and population standard deviation (numpy's default, as DLIO).
pub fn mean_stdev(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn per_s(bytes: u64, secs: f64, unit: f64) -> f64 {
    if secs > 0.0 { bytes as f64 / unit / secs } else { 0.0 }
}

/// Figures of one checkpoint.
struct Step {
    duration_s: f64,
    gib_per_s: f64,
    gb_per_s: f64,
    rank0_gib_per_s: f64,
    json: Value,
}

fn step(t: &StepTiming, total_bytes: u64, rank_bytes: &[u64]) -> Step {
    let duration_s = t.rank_duration_s.iter().copied().fold(0.0, f64::max);
    let rank0 = t.rank_duration_s.first().copied().unwrap_or(0.0);
    let min_rank = t
        .rank_duration_s
        .iter()
        .zip(rank_bytes)
        .filter(|(_, b)| **b > 0)
        .map(|(d, b)| per_s(*b, *d, GIB))
        .fold(f64::INFINITY, f64::min);
    let gib_per_s = per_s(total_bytes, duration_s, GIB);
    let gb_per_s = per_s(total_bytes, duration_s, GB);
    let rank0_gib_per_s = per_s(total_bytes, rank0, GIB);
    let json = json!({
        "step": t.step,
        "bytes": total_bytes,
        "duration_s": duration_s,
        "throughput_GiB_per_s": gib_per_s,
        "throughput_GB_per_s": gb_per_s,
        "min_rank_throughput_GiB_per_s": if min_rank.is_finite() { min_rank } else { 0.0 },
        "rank0_duration_s": rank0,
        "rank_duration_s": t.rank_duration_s,
    });
    Step { duration_s, gib_per_s, gb_per_s, rank0_gib_per_s, json }
}

/// Summary of one phase (all saves or all loads).
pub struct PhaseFigures {
    pub json: Value,
    duration: (f64, f64),
    gib: (f64, f64),
}

pub fn phase(steps: &[StepTiming], total_bytes: u64, rank_bytes: &[u64]) -> PhaseFigures {
    let figs: Vec<Step> = steps.iter().map(|t| step(t, total_bytes, rank_bytes)).collect();
    let col = |f: fn(&Step) -> f64| figs.iter().map(f).collect::<Vec<f64>>();
    let duration = mean_stdev(&col(|s| s.duration_s));
    let gib = mean_stdev(&col(|s| s.gib_per_s));
    let gb = mean_stdev(&col(|s| s.gb_per_s));
    let rank0 = mean_stdev(&col(|s| s.rank0_gib_per_s));
    let json = json!({
        "checkpoints": figs.len(),
        "duration_mean_s": duration.0,
        "duration_stdev_s": duration.1,
        "throughput_mean_GiB_per_s": gib.0,
        "throughput_stdev_GiB_per_s": gib.1,
        "throughput_mean_GB_per_s": gb.0,
        "throughput_stdev_GB_per_s": gb.1,
        "rank0_throughput_mean_GiB_per_s": rank0.0,
        "per_checkpoint": figs.into_iter().map(|s| s.json).collect::<Vec<_>>(),
    });
    PhaseFigures { json, duration, gib }
}

/// The reference's `metric` keys (DLIO `summary.json`): GiB and GiB/s
/// despite the names, mean/stdev over checkpoints, but with the rules'
/// duration (slowest rank) instead of DLIO's rank 0. A phase that did not
/// run has no keys.
pub fn reference_metric(save: &PhaseFigures, load: &PhaseFigures, save_n: usize, load_n: usize, bytes: u64) -> Value {
    let mut m = serde_json::Map::new();
    for (prefix, f, n) in [("save", save, save_n), ("load", load, load_n)] {
        if n == 0 {
            continue;
        }
        m.insert(format!("{prefix}_checkpoint_io_mean_GB_per_second"), f.gib.0.into());
        m.insert(format!("{prefix}_checkpoint_io_stdev_GB_per_second"), f.gib.1.into());
        m.insert(format!("{prefix}_checkpoint_duration_mean_seconds"), f.duration.0.into());
        m.insert(format!("{prefix}_checkpoint_duration_stdev_seconds"), f.duration.1.into());
    }
    m.insert("checkpoint_size_GB".into(), (bytes as f64 / GIB).into());
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_duration_is_the_slowest_rank_and_throughput_uses_it() {
        let t = StepTiming { step: 1, rank_duration_s: vec![2.0, 4.0] };
        let s = step(&t, 8 << 30, &[4 << 30, 4 << 30]);
        assert_eq!(s.duration_s, 4.0);
        assert_eq!(s.gib_per_s, 2.0);
        assert_eq!(s.rank0_gib_per_s, 4.0, "DLIO's figure: total over rank 0's time");
        assert_eq!(s.json["min_rank_throughput_GiB_per_s"], 1.0);
        assert_eq!(s.gb_per_s, (8u64 << 30) as f64 / 1e9 / 4.0);
    }

    #[test]
    fn mean_and_population_stdev_over_checkpoints() {
        let steps = vec![
            StepTiming { step: 1, rank_duration_s: vec![1.0] },
            StepTiming { step: 2, rank_duration_s: vec![3.0] },
        ];
        let f = phase(&steps, 3 << 30, &[3 << 30]);
        assert_eq!(f.duration, (2.0, 1.0));
        assert_eq!(f.gib, (2.0, 1.0)); // 3 and 1 GiB/s
        let m = reference_metric(&f, &f, 2, 0, 3 << 30);
        assert_eq!(m["save_checkpoint_io_mean_GB_per_second"], 2.0);
        assert_eq!(m["save_checkpoint_duration_stdev_seconds"], 1.0);
        assert!(m.get("load_checkpoint_io_mean_GB_per_second").is_none());
        assert_eq!(m["checkpoint_size_GB"], 3.0);
    }
}
