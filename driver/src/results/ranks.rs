//! One result for an MPI job: every rank sends its own [`RunResult`] and
//! its recorder ([`RankReport`]) to rank 0, which merges them here into the
//! job's results.json; each rank's own result is kept as `rank-<r>.json`.
//!
//! Merging rules (docs/scale.md): byte, op, error and verification counts
//! and CPU seconds are sums; latency series come from the ranks' HDR
//! histograms added together (never from averaged percentiles); the
//! measured window and peak RSS are the maximum over ranks; the 1 s time
//! series is summed point by point (the ranks start their measured windows
//! together, after a barrier); the workload's `summary` is merged by the
//! workload. The job is `ok` only if every rank is.

use crate::recorder::{Recorder, RecorderWire, TimePoint};
use crate::results::{ErrorRecord, RunResult, RunStatus, series_records};

/// What one rank sends to rank 0.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct RankReport {
    pub rank: usize,
    pub host: String,
    /// The rank's own result; `None` if it stopped before producing one
    /// (a usage error, or a failure before its results were built).
    pub result: Option<RunResult>,
    pub recorder: RecorderWire,
    /// The error the rank stopped with when it has no result.
    pub error: Option<String>,
    /// Its exit code had it run alone (2: usage error).
    pub exit_code: i32,
    /// The rank only stopped because another rank had failed.
    pub stopped_by_peer: bool,
}

/// The `ranks` section of a merged results.json.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct RanksRecord {
    /// MPI processes in the job.
    pub size: usize,
    pub per_rank: Vec<RankLine>,
}

/// One rank, in the merged result.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct RankLine {
    pub rank: usize,
    pub host: String,
    pub status: RunStatus,
    /// The rank's measured window, seconds.
    pub duration_s: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The rank's own results file in the run directory (None if it had
    /// no result).
    pub file: Option<String>,
}

/// The name of rank `r`'s own results file inside the run directory.
pub fn rank_file(rank: usize) -> String {
    format!("rank-{rank}.json")
}

/// Merges the ranks' reports (in rank order; rank 0's result is the
/// skeleton). `merge_summary` gets every rank's summary (Null for a rank
/// without a result), the merged recorder and the merged window.
pub fn merge(
    reports: &[RankReport],
    merge_summary: impl FnOnce(&[serde_json::Value], &Recorder, f64) -> serde_json::Value,
) -> Result<RunResult, String> {
    let base = reports
        .iter()
        .find_map(|r| r.result.as_ref())
        .ok_or_else(|| first_error(reports).unwrap_or_else(|| "no rank produced a result".into()))?;
    let mut out = base.clone();
    let mut recorder = Recorder::new();
    for r in reports {
        let rec = Recorder::from_wire(&r.recorder).map_err(|e| format!("rank {}: {e}", r.rank))?;
        recorder.merge(&rec);
    }
    let results: Vec<&RunResult> = reports.iter().filter_map(|r| r.result.as_ref()).collect();
    out.duration_s = results.iter().map(|r| r.duration_s).fold(0.0, f64::max);
    out.cpu_user_s = results.iter().map(|r| r.cpu_user_s).sum();
    out.cpu_sys_s = results.iter().map(|r| r.cpu_sys_s).sum();
    out.peak_rss_bytes = results.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0);
    out.verify.verified_bytes = results.iter().map(|r| r.verify.verified_bytes).sum();
    out.verify.header_checked_bytes = results.iter().map(|r| r.verify.header_checked_bytes).sum();
    out.verify.unverified_bytes = results.iter().map(|r| r.verify.unverified_bytes).sum();
    out.verify.errors = results.iter().map(|r| r.verify.errors).sum();
    out.verify.first = reports
        .iter()
        .find_map(|r| r.result.as_ref().and_then(|x| x.verify.first.as_ref()).map(|m| format!("rank {}: {m}", r.rank)));
    out.verify_errors = out.verify.errors;
    let no_result = reports.iter().filter(|r| r.result.is_none()).count() as u64;
    out.errors = ErrorRecord {
        count: results.iter().map(|r| r.errors.count).sum::<u64>() + no_result,
        first: first_error(reports),
    };
    out.series = series_records(&recorder);
    out.timeseries = sum_timeseries(results.iter().map(|r| r.timeseries.as_slice()));
    let mut notes = vec![format!(
        "{} MPI ranks: counts and rates are the ranks' totals, latency percentiles come from their merged \
         histograms; each rank's own result is in rank-<r>.json",
        reports.len()
    )];
    for r in &results {
        for n in &r.notes {
            if !notes.contains(n) {
                notes.push(n.clone());
            }
        }
    }
    out.notes = notes;
    let summaries: Vec<serde_json::Value> =
        reports.iter().map(|r| r.result.as_ref().map_or(serde_json::Value::Null, |x| x.summary.clone())).collect();
    out.summary = merge_summary(&summaries, &recorder, out.duration_s);
    out.status = if reports.iter().any(|r| r.result.as_ref().is_some_and(|x| x.status == RunStatus::Interrupted)) {
        RunStatus::Interrupted
    } else if out.errors.count > 0
        || out.verify_errors > 0
        || reports.iter().any(|r| r.result.as_ref().is_none_or(|x| x.status != RunStatus::Ok))
    {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
    out.ranks = Some(RanksRecord {
        size: reports.len(),
        per_rank: reports
            .iter()
            .map(|r| match &r.result {
                Some(x) => RankLine {
                    rank: r.rank,
                    host: r.host.clone(),
                    status: x.status,
                    duration_s: x.duration_s,
                    errors: x.errors.count + x.verify_errors,
                    first_error: x.errors.first.clone().or_else(|| x.verify.first.clone()),
                    file: Some(rank_file(r.rank)),
                },
                None => RankLine {
                    rank: r.rank,
                    host: r.host.clone(),
                    status: RunStatus::Failed,
                    duration_s: 0.0,
                    errors: 1,
                    first_error: r.error.clone(),
                    file: None,
                },
            })
            .collect(),
    });
    Ok(out)
}

/// The job's first error, prefixed with its rank: a rank's own failure
/// before one that only stopped because of it, then rank order.
fn first_error(reports: &[RankReport]) -> Option<String> {
    let own = |r: &RankReport| -> Option<String> {
        r.error
            .clone()
            .or_else(|| r.result.as_ref().and_then(|x| x.errors.first.clone().or_else(|| x.verify.first.clone())))
    };
    let pick = |peer: bool| {
        reports
            .iter()
            .filter(|r| r.stopped_by_peer == peer)
            .find_map(|r| own(r).map(|m| format!("rank {}: {m}", r.rank)))
    };
    pick(false).or_else(|| pick(true))
}

/// Point-by-point sums; the series of the longest rank sets the times.
fn sum_timeseries<'a>(all: impl Iterator<Item = &'a [TimePoint]>) -> Vec<TimePoint> {
    let mut out: Vec<TimePoint> = Vec::new();
    for series in all {
        for (i, p) in series.iter().enumerate() {
            match out.get_mut(i) {
                Some(o) => {
                    o.t_s = o.t_s.max(p.t_s);
                    o.read_ops += p.read_ops;
                    o.read_bytes += p.read_bytes;
                    o.write_ops += p.write_ops;
                    o.write_bytes += p.write_bytes;
                    o.errors += p.errors;
                    o.latency_ns_sum += p.latency_ns_sum;
                }
                None => out.push(p.clone()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{NO_TIER, SeriesKey};
    use crate::results::testutil::sample_result;
    use crate::target::OpKind;

    fn report(rank: usize, latency_ns: u64, errors: Option<&str>, peer: bool) -> RankReport {
        let mut rec = Recorder::new();
        let k = SeriesKey { phase: "measure", op: OpKind::Read, tier: NO_TIER };
        for i in 0..100 {
            rec.record(&k, latency_ns + i, 4096);
        }
        let mut r = sample_result();
        r.duration_s = 10.0 + rank as f64;
        r.verify.verified_bytes = 100;
        if let Some(e) = errors {
            r.status = RunStatus::Failed;
            r.errors = ErrorRecord { count: 1, first: Some(e.into()) };
        }
        RankReport {
            rank,
            host: format!("h{rank}"),
            result: Some(r),
            recorder: rec.to_wire(),
            error: None,
            exit_code: 0,
            stopped_by_peer: peer,
        }
    }

    #[test]
    fn counts_add_windows_take_the_max_and_percentiles_come_from_merged_histograms() {
        let reports = vec![report(0, 1_000_000, None, false), report(1, 3_000_000, None, false)];
        let m = merge(&reports, |s, _, _| serde_json::json!({ "n": s.len() })).unwrap();
        assert_eq!(m.status, RunStatus::Ok);
        assert_eq!(m.duration_s, 11.0);
        assert_eq!(m.verify.verified_bytes, 200);
        assert_eq!(m.series.len(), 1);
        assert_eq!((m.series[0].ops, m.series[0].bytes), (200, 200 * 4096));
        // Half the samples near 1 ms, half near 3 ms: the pooled p90 is in
        // the slow half, which averaging the ranks' p90s (≈2 ms) would miss.
        assert!(m.series[0].latency_us.p90 > 2_900.0, "{:?}", m.series[0].latency_us);
        assert_eq!(m.timeseries[0].read_ops, 2 * 104_857);
        assert_eq!(m.summary["n"], 2);
        let ranks = m.ranks.unwrap();
        assert_eq!(ranks.size, 2);
        assert_eq!(ranks.per_rank[1].file.as_deref(), Some("rank-1.json"));
    }

    #[test]
    fn a_failed_rank_fails_the_job_with_its_own_error_first() {
        let reports = vec![
            report(0, 1_000, Some("rank 0: stopped before the measured phase: rank 1 failed"), true),
            report(1, 1_000, Some("laying out raw/rank1/job0.dat failed: EIO"), false),
        ];
        let m = merge(&reports, |_, _, _| serde_json::Value::Null).unwrap();
        assert_eq!(m.status, RunStatus::Failed);
        assert_eq!(m.errors.count, 2);
        assert_eq!(m.errors.first.as_deref(), Some("rank 1: laying out raw/rank1/job0.dat failed: EIO"));
    }

    #[test]
    fn a_rank_without_a_result_counts_as_an_error() {
        let mut bad = report(1, 1_000, None, false);
        bad.result = None;
        bad.error = Some("config key `block_size`: not a multiple".into());
        let m = merge(&[report(0, 1_000, None, false), bad], |_, _, _| serde_json::Value::Null).unwrap();
        assert_eq!(m.status, RunStatus::Failed);
        assert_eq!(m.errors.first.as_deref(), Some("rank 1: config key `block_size`: not a multiple"));
        assert_eq!(m.ranks.unwrap().per_rank[1].file, None);
    }
}
