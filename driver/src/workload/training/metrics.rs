//! DLIO's training metrics (spec §5), computed from per-step timelines.
//!
//! Per accelerator and epoch (one block per epoch: a training run writes
//! no checkpoints), with step 0 excluded:
//! `AU = 100 × Σ compute[1..N-1] / ((end − start) − proc[0])` and
//! `throughput = (N − 1) × batch / ((end − start) − proc[0])` samples/s
//! (`N − 2` with `dlio_v2_throughput`, as DLIO v2.0 counts). Per epoch,
//! AU is the mean over accelerators and throughput their sum; the run's
//! figures are mean and (population) standard deviation over epochs.

use serde_json::{Value, json};

/// One accelerator's timeline for one epoch (seconds from any origin).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochTimeline {
    pub start_s: f64,
    pub end_s: f64,
    /// Per step: time waiting for the batch.
    pub load_s: Vec<f64>,
    /// Per step: the compute wait.
    pub compute_s: Vec<f64>,
}

impl EpochTimeline {
    pub fn steps(&self) -> usize {
        self.load_s.len()
    }

    /// Wall time minus step 0's load + compute.
    fn timed_s(&self) -> f64 {
        let proc0 = self.load_s.first().copied().unwrap_or(0.0) + self.compute_s.first().copied().unwrap_or(0.0);
        (self.end_s - self.start_s) - proc0
    }

    /// Accelerator utilisation in percent (step 0 excluded).
    pub fn au_percent(&self) -> f64 {
        let compute: f64 = self.compute_s.iter().skip(1).sum();
        let t = self.timed_s();
        if t > 0.0 { 100.0 * compute / t } else { 0.0 }
    }

    /// Samples per second over the timed part (step 0 excluded).
    pub fn throughput_samples_per_s(&self, batch: u64, dlio_v2: bool) -> f64 {
        let n = self.steps() as f64;
        let counted = if dlio_v2 { n - 2.0 } else { n - 1.0 };
        let t = self.timed_s();
        if t > 0.0 && counted > 0.0 { counted * batch as f64 / t } else { 0.0 }
    }
}

/// Mean and population standard deviation.
pub fn mean_stdev(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// What the metric keys need besides the timelines.
pub struct MetricParams {
    pub batch_size: u64,
    pub record_length_bytes: f64,
    /// Pass threshold as a fraction (`metric.au`).
    pub au_threshold: f64,
    pub dlio_v2_throughput: bool,
}

/// The reference's metric keys from `epochs[e][accelerator]` timelines.
pub fn reference_metrics(epochs: &[Vec<EpochTimeline>], p: &MetricParams) -> Value {
    let mut au = Vec::new();
    let mut thr = Vec::new();
    for accs in epochs {
        let per: Vec<f64> = accs.iter().map(EpochTimeline::au_percent).collect();
        au.push(mean_stdev(&per).0);
        thr.push(accs.iter().map(|a| a.throughput_samples_per_s(p.batch_size, p.dlio_v2_throughput)).sum::<f64>());
    }
    metrics_from_epochs(au, thr, p)
}

/// The metric keys from per-epoch AU (percent, mean over accelerators)
/// and throughput (samples/s, sum over accelerators).
pub fn metrics_from_epochs(au: Vec<f64>, thr: Vec<f64>, p: &MetricParams) -> Value {
    let (au_mean, au_sd) = mean_stdev(&au);
    let (thr_mean, thr_sd) = mean_stdev(&thr);
    let mib = (1u64 << 20) as f64;
    let io: Vec<f64> = thr.iter().map(|t| t * p.record_length_bytes / mib).collect();
    let (io_mean, io_sd) = mean_stdev(&io);
    let meets = !au.is_empty() && au_mean >= 100.0 * p.au_threshold;
    json!({
        "train_au_percentage": au,
        "train_au_mean_percentage": au_mean,
        "train_au_stdev_percentage": au_sd,
        "train_au_meet_expectation": if meets { "success" } else { "fail" },
        "train_throughput_samples_per_second": thr,
        "train_throughput_mean_samples_per_second": thr_mean,
        "train_throughput_stdev_samples_per_second": thr_sd,
        "train_io_mean_MB_per_second": io_mean,
        "train_io_stdev_MB_per_second": io_sd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted timeline: 5 steps; step 0 loads for 2 s (cold start),
    /// every later step loads 0.5 s; compute 1 s each. The epoch runs from
    /// t = 10 to t = 10 + 3 + 4 × 1.5 = 19.
    fn scripted() -> EpochTimeline {
        EpochTimeline { start_s: 10.0, end_s: 19.0, load_s: vec![2.0, 0.5, 0.5, 0.5, 0.5], compute_s: vec![1.0; 5] }
    }

    #[test]
    fn au_excludes_step_0_as_dlio_does() {
        let t = scripted();
        // Timed: 9 s − 3 s = 6 s; compute after step 0: 4 s.
        assert!((t.au_percent() - 100.0 * 4.0 / 6.0).abs() < 1e-9);
        assert!((t.throughput_samples_per_s(7, false) - 4.0 * 7.0 / 6.0).abs() < 1e-9);
        assert!((t.throughput_samples_per_s(7, true) - 3.0 * 7.0 / 6.0).abs() < 1e-9, "v2.0's N − 2");
    }

    #[test]
    fn epoch_figures_average_au_and_sum_throughput_over_accelerators() {
        let a = scripted();
        // A slower accelerator: same compute, 1 s loads, so 10 + 3 + 4 × 2 = 21.
        let b = EpochTimeline { end_s: 21.0, load_s: vec![2.0, 1.0, 1.0, 1.0, 1.0], ..scripted() };
        let p = MetricParams {
            batch_size: 1,
            record_length_bytes: (1 << 20) as f64,
            au_threshold: 0.6,
            dlio_v2_throughput: false,
        };
        let m = reference_metrics(&[vec![a.clone(), b.clone()], vec![a.clone(), a.clone()]], &p);
        let e0 = (a.au_percent() + b.au_percent()) / 2.0;
        let e1 = a.au_percent();
        let au = m["train_au_percentage"].as_array().unwrap();
        assert!((au[0].as_f64().unwrap() - e0).abs() < 1e-9);
        assert!((au[1].as_f64().unwrap() - e1).abs() < 1e-9);
        assert!((m["train_au_mean_percentage"].as_f64().unwrap() - (e0 + e1) / 2.0).abs() < 1e-9);
        let thr0 = a.throughput_samples_per_s(1, false) + b.throughput_samples_per_s(1, false);
        let thr = m["train_throughput_samples_per_second"][0].as_f64().unwrap();
        assert!((thr - thr0).abs() < 1e-9);
        // 1 MiB records: MB/s (really MiB/s) equals samples/s.
        let io = m["train_io_mean_MB_per_second"].as_f64().unwrap();
        assert!((io - m["train_throughput_mean_samples_per_second"].as_f64().unwrap()).abs() < 1e-9);
        // (57.1 + 66.7) / 2 ≥ 60: success; a 0.9 threshold fails.
        assert_eq!(m["train_au_meet_expectation"], "success");
        let strict = MetricParams { au_threshold: 0.9, ..p };
        assert_eq!(reference_metrics(&[vec![a, b]], &strict)["train_au_meet_expectation"], "fail");
    }
}
