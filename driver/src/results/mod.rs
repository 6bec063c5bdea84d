//! The result of a run: one versioned record ([`RunResult`]) that feeds
//! every output — `results.json`, `summary.txt` and every format of
//! `mlpdrive report` (driver/src/report/) — so they can never disagree.
//!
//! The JSON shape is documented field by field, with units, in
//! docs/results-schema.md; any change to it bumps [`SCHEMA_VERSION`].
//! Writing and finding results on disk is in [`store`], the human summary in
//! [`summary`].

pub mod ranks;
pub mod store;
pub mod summary;

pub use store::{ResultsDir, load, new_run_id, write_bytes_atomic, write_json_atomic};
pub use summary::{raw_op_summary, render_text};

use crate::datagen::VerifyMode;
use crate::recorder::{LatencyUs, Recorder, TimePoint};
use crate::target::IoMode;

/// Version of the results.json layout. Readers refuse newer versions.
pub const SCHEMA_VERSION: u32 = 1;

/// File names inside a run directory.
pub const RESULTS_FILE: &str = "results.json";
pub const SUMMARY_FILE: &str = "summary.txt";
pub const CONFIG_FILE: &str = "config.yaml";

/// Where a run stands.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// A partial flush written while the run is going (or left behind by a
    /// killed run).
    Running,
    /// Finished with no I/O errors and no verification errors.
    Ok,
    /// Finished (or stopped) with I/O or verification errors.
    Failed,
    /// Stopped early by a signal; the figures cover the part that ran.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// The storage a run talked to. Never holds credentials.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TargetRecord {
    /// "file", "dev", "null", ...
    pub kind: String,
    /// The target as the user named it (a path or URI without secrets).
    pub location: String,
    /// S3 targets: settings in force and request counters (never
    /// credentials); see docs/results-schema.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<serde_json::Value>,
}

/// Read-back verification.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(from = "VerifyRecordIn")]
pub struct VerifyRecord {
    /// Verification was on for this run (mode full or sampled).
    pub enabled: bool,
    /// How reads were checked: full, sampled or off.
    pub mode: VerifyMode,
    /// Sampled mode: 1 in this many blocks got the full checksum; else null.
    pub sample_every: Option<u64>,
    /// Bytes read and checked completely against the generator, bytes.
    pub verified_bytes: u64,
    /// Bytes read whose blocks' headers and first 128 bytes were checked
    /// but not the rest of the payload (sampled mode), bytes.
    pub header_checked_bytes: u64,
    /// Bytes read but not checked, bytes.
    pub unverified_bytes: u64,
    /// Blocks that failed verification.
    pub errors: u64,
    /// Description of the first failure.
    pub first: Option<String>,
}

/// [`VerifyRecord`] as read: results written before `mode` existed were
/// full or off, and had no header-checked bytes.
#[derive(serde::Deserialize)]
struct VerifyRecordIn {
    enabled: bool,
    #[serde(default)]
    mode: Option<VerifyMode>,
    #[serde(default)]
    sample_every: Option<u64>,
    verified_bytes: u64,
    #[serde(default)]
    header_checked_bytes: u64,
    unverified_bytes: u64,
    errors: u64,
    first: Option<String>,
}

impl From<VerifyRecordIn> for VerifyRecord {
    fn from(r: VerifyRecordIn) -> VerifyRecord {
        let fallback = if r.enabled { VerifyMode::Full } else { VerifyMode::Off };
        VerifyRecord {
            enabled: r.enabled,
            mode: r.mode.unwrap_or(fallback),
            sample_every: r.sample_every,
            verified_bytes: r.verified_bytes,
            header_checked_bytes: r.header_checked_bytes,
            unverified_bytes: r.unverified_bytes,
            errors: r.errors,
            first: r.first,
        }
    }
}

/// Failed operations (I/O errors, timeouts).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ErrorRecord {
    pub count: u64,
    pub first: Option<String>,
}

/// One latency series: a (phase, op, tier) with its totals.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SeriesRecord {
    pub phase: String,
    /// "read", "write" or "commit".
    pub op: String,
    pub tier: String,
    pub ops: u64,
    /// Bytes moved, bytes.
    pub bytes: u64,
    pub latency_us: LatencyUs,
}

/// Everything a run produced. See docs/results-schema.md.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct RunResult {
    pub schema_version: u32,
    pub mlpdrive_version: String,
    pub run_id: String,
    pub status: RunStatus,
    pub workload: String,
    pub description: Option<String>,
    /// Where the config came from: a preset name or a file path.
    pub source: String,
    pub target: TargetRecord,
    pub io_mode: IoMode,
    pub seed: u64,
    pub host: String,
    /// The command line, argv as given.
    pub command: Vec<String>,
    /// Run start, RFC 3339 UTC.
    pub started_at: String,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub peak_rss_bytes: u64,
    pub verify: VerifyRecord,
    /// Same as `verify.errors`, at top level.
    pub verify_errors: u64,
    pub errors: ErrorRecord,
    /// Warnings for the user.
    pub notes: Vec<String>,
    pub series: Vec<SeriesRecord>,
    pub timeseries: Vec<TimePoint>,
    /// Owned by the workload.
    pub summary: serde_json::Value,
    /// The effective config.
    pub config: serde_json::Value,
    /// An MPI job's ranks (absent for a run of one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<ranks::RanksRecord>,
}

/// The recorder's series in results form, sorted by (phase, op, tier).
pub fn series_records(rec: &Recorder) -> Vec<SeriesRecord> {
    rec.series()
        .map(|(k, s)| SeriesRecord {
            phase: k.phase.to_string(),
            op: k.op.as_str().to_string(),
            tier: k.tier.to_string(),
            ops: s.ops,
            bytes: s.bytes,
            latency_us: s.latency_us,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::recorder::TimePoint;

    /// A complete, plausible result of a raw randread run.
    pub(crate) fn sample_result() -> RunResult {
        let lat = LatencyUs {
            mean: 95.5,
            p50: 90.1,
            p90: 120.0,
            p99: 210.5,
            p999: 480.0,
            p9999: 900.0,
            max: 1500.25,
            min: 40.0,
        };
        RunResult {
            schema_version: SCHEMA_VERSION,
            mlpdrive_version: "0.1.0".into(),
            run_id: "20261122T073700Z-raw-1a2b".into(),
            status: RunStatus::Ok,
            workload: "raw".into(),
            description: Some("fio-like calibration".into()),
            source: "preset raw".into(),
            target: TargetRecord { kind: "file".into(), location: "file:///mnt/nvme".into(), s3: None },
            io_mode: IoMode { direct: true, engine: "io_uring".into(), registered_buffers: true, note: None },
            seed: 42,
            host: "bench1".into(),
            command: vec!["mlpdrive".into(), "run".into(), "raw".into()],
            started_at: "2026-11-22T07:37:00.5Z".into(),
            duration_s: 10.0,
            cpu_user_s: 1.5,
            cpu_sys_s: 2.5,
            peak_rss_bytes: 48 << 20,
            verify: VerifyRecord {
                enabled: true,
                mode: VerifyMode::Full,
                sample_every: None,
                verified_bytes: 4 << 30,
                header_checked_bytes: 0,
                unverified_bytes: 0,
                errors: 0,
                first: None,
            },
            verify_errors: 0,
            errors: ErrorRecord { count: 0, first: None },
            notes: vec![],
            series: vec![SeriesRecord {
                phase: "measure".into(),
                op: "read".into(),
                tier: "-".into(),
                ops: 1_048_576,
                bytes: 4 << 30,
                latency_us: lat.clone(),
            }],
            timeseries: vec![TimePoint {
                t_s: 1.0,
                read_ops: 104_857,
                read_bytes: 104_857 * 4096,
                write_ops: 0,
                write_bytes: 0,
                errors: 0,
                // 32 in flight over the second.
                latency_ns_sum: 32_000_000_000,
            }],
            summary: serde_json::json!({
                "rw": "randread",
                "block_size": 4096,
                "queue_depth": 32,
                "read": {
                    "ops": 1_048_576u64,
                    "bytes": 4u64 << 30,
                    "iops": 104_857.6,
                    "bytes_per_s": 429_496_729.6,
                    "latency_us": lat,
                },
                "write": {
                    "ops": 0, "bytes": 0, "iops": 0.0, "bytes_per_s": 0.0,
                    "latency_us": LatencyUs::default(),
                },
            }),
            config: serde_json::json!({ "workload": "raw", "rw": "randread", "block_size": "4KiB" }),
            ranks: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{NO_TIER, SeriesKey};
    use crate::target::OpKind;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let r = testutil::sample_result();
        let text = serde_json::to_string(&r).expect("serialize");
        let back: RunResult = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["status"], "ok");
        assert_eq!(v["io_mode"]["direct"], true);
        assert_eq!(v["verify_errors"], 0);
        assert_eq!(v["errors"]["count"], 0);
        assert_eq!(v["series"][0]["op"], "read");
    }

    /// docs/results-schema.md must name every field a result can hold.
    #[test]
    fn schema_doc_names_every_field() {
        const DOC: &str = include_str!("../../../docs/results-schema.md");
        fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(o) => {
                    for (k, child) in o {
                        // The config is the user's input, documented with the workloads.
                        if prefix.is_empty() && k == "config" {
                            out.push(k.clone());
                            continue;
                        }
                        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        out.push(path.clone());
                        keys(&path, child, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|c| keys(prefix, c, out)),
                _ => {}
            }
        }
        let mut r = testutil::sample_result();
        r.io_mode.note = Some("fallback".into());
        r.summary["jobs"] = 1.into();
        r.summary["size"] = 1.into();
        r.summary["rwmix_read"] = serde_json::Value::Null;
        r.ranks = Some(ranks::RanksRecord {
            size: 1,
            per_rank: vec![ranks::RankLine {
                rank: 0,
                host: "h".into(),
                status: RunStatus::Ok,
                duration_s: 1.0,
                errors: 0,
                first_error: Some("e".into()),
                file: Some("rank-0.json".into()),
            }],
        });
        let mut all = Vec::new();
        keys("", &serde_json::to_value(&r).expect("value"), &mut all);
        let missing: Vec<&String> = all
            .iter()
            .filter(|path| {
                // Documented either by full path or, inside a table for its
                // parent, by its own name.
                let leaf = path.rsplit('.').next().unwrap_or(path);
                !DOC.contains(&format!("`{path}`")) && !DOC.contains(&format!("`{leaf}`"))
            })
            .collect();
        assert!(missing.is_empty(), "fields missing from docs/results-schema.md: {missing:?}");
    }

    #[test]
    fn series_records_come_from_the_recorder() {
        let mut rec = Recorder::new();
        let k = SeriesKey { phase: "measure", op: OpKind::Write, tier: NO_TIER };
        rec.record(&k, 2_000, 4096);
        rec.record(&k, 4_000, 4096);
        let s = series_records(&rec);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].phase.as_str(), s[0].op.as_str(), s[0].tier.as_str()), ("measure", "write", "-"));
        assert_eq!((s[0].ops, s[0].bytes), (2, 8192));
        assert_eq!(s[0].latency_us.mean, 3.0);
        assert_eq!(s[0].latency_us.max, 4.0);
    }
}
