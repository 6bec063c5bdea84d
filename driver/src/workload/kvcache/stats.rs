//! What a run counts: the reference's counters (spec §11) and mlpdrive's
//! honest extras (bytes inside the measured window, work after it, demotion
//! bytes and latencies, errors). Only operations that completed are counted
//! (the reference counts read bytes before the I/O, §16 item 1).

use std::collections::BTreeMap;
use std::time::Instant;

use super::cache::Tier;
use super::users::QosClass;

/// One tier's operations.
#[derive(Debug, Default, Clone)]
pub struct TierStats {
    pub read_ops: u64,
    pub write_ops: u64,
    /// Bytes of completed reads / writes (direct placements; demotions are
    /// counted in `demoted_in_bytes` / `demoted_out_bytes` too).
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Bytes read / written (demotions included) that completed at or
    /// before the end of the measured window.
    pub read_bytes_window: u64,
    pub write_bytes_window: u64,
    /// Entry-level latencies (s) of request reads and writes.
    pub read_lat_s: Vec<f64>,
    pub write_lat_s: Vec<f64>,
    /// Storage only: device part (first I/O submitted → last completed) and
    /// host part (total − device: waiting for queue slots).
    pub read_device_s: Vec<f64>,
    pub read_host_s: Vec<f64>,
    pub write_device_s: Vec<f64>,
    pub write_host_s: Vec<f64>,
    /// Bytes that reached this tier by demotion / left it by demotion.
    pub demoted_in_bytes: u64,
    pub demoted_out_bytes: u64,
}

/// Demotions from one tier to the next.
#[derive(Debug, Default, Clone)]
pub struct DemotionStats {
    pub count: u64,
    pub bytes: u64,
    /// Read from the source plus write to the destination (s).
    pub lat_s: Vec<f64>,
}

/// Everything counted over a phase.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub tiers: [TierStats; 3],
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub system_prompt_hits: u64,
    pub multi_turn_hits: u64,
    pub user_cache_hits: u64,
    pub prefill_writes: u64,
    pub decode_reads: u64,
    pub read_operations: u64,
    pub write_operations: u64,
    pub total_read_bytes: u64,
    pub total_write_bytes: u64,
    pub offloads_cpu: u64,
    pub offloads_storage: u64,
    pub evictions: u64,
    /// Entries deleted from the last tier (files removed).
    pub storage_deletes: u64,
    pub storage_tokens_processed: u64,
    pub multi_turn_cache_hits: u64,
    pub multi_turn_cache_misses: u64,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub prefix_bytes_saved: u64,
    pub requests_completed: u64,
    pub total_tokens_generated: u64,
    pub e2e_s: Vec<f64>,
    pub storage_s: Vec<f64>,
    pub generation_s: Vec<f64>,
    pub prefill_s: Vec<f64>,
    pub decode_s: Vec<f64>,
    pub qos_e2e_s: BTreeMap<QosClass, Vec<f64>>,
    /// Requests that completed after the end of the measured window.
    pub late_requests: u64,
    pub late_tokens: u64,
    pub demotions: BTreeMap<(Tier, Tier), DemotionStats>,
    pub io_errors: u64,
    pub first_error: Option<String>,
    /// Of those, errors outside the engine's I/O (create, delete, CPU-tier
    /// allocation), which the engine's tally does not include.
    pub local_errors: u64,
    pub first_local_error: Option<String>,
    /// Allocations that found room in no tier and were forced onto storage.
    pub forced_writes: u64,
    pub rag_docs_ingested: u64,
    pub rag_docs_evicted: u64,
    pub requests_enqueued: u64,
    /// Requests still queued or in progress when the run ended.
    pub requests_unfinished: u64,
    /// Highest number of queued (not yet started) requests.
    pub queue_depth_max: u64,
    /// Most allocations in progress at once (with `max_concurrent_allocs`).
    pub concurrent_allocs_max: u32,
}

impl Stats {
    pub fn tier(&mut self, t: Tier) -> &mut TierStats {
        &mut self.tiers[t as usize]
    }

    pub fn error(&mut self, msg: impl FnOnce() -> String) {
        self.io_errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }

    /// An error of an operation the engine did not run.
    pub fn local_error(&mut self, msg: impl FnOnce() -> String) {
        let m = msg();
        self.local_errors += 1;
        if self.first_local_error.is_none() {
            self.first_local_error = Some(m.clone());
        }
        self.error(|| m);
    }

    /// Counts a completed tier read of `bytes` finishing at `at`.
    /// `lat_s` None: no latency was measured (trace-only mode).
    pub fn tier_read(&mut self, t: Tier, bytes: u64, lat_s: Option<f64>, at: Instant, end: Option<Instant>) {
        let ts = self.tier(t);
        ts.read_ops += 1;
        ts.read_bytes += bytes;
        if end.is_none_or(|e| at <= e) {
            ts.read_bytes_window += bytes;
        }
        ts.read_lat_s.extend(lat_s);
    }

    pub fn tier_write(&mut self, t: Tier, bytes: u64, lat_s: Option<f64>, at: Instant, end: Option<Instant>) {
        let ts = self.tier(t);
        ts.write_ops += 1;
        ts.write_bytes += bytes;
        if end.is_none_or(|e| at <= e) {
            ts.write_bytes_window += bytes;
        }
        ts.write_lat_s.extend(lat_s);
    }
}

/// Percentile of `v` (sorted ascending) with numpy's default linear
/// interpolation; 0 for an empty list.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let pos = q / 100.0 * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_linearly_like_numpy() {
        let v = sorted(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!((percentile(&v, 95.0) - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[], 99.0), 0.0);
        assert_eq!(mean(&[1.0, 2.0]), 1.5);
    }
}
