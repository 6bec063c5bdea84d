//! Byte totals: what the run's results.json says it moved against what the
//! op log saw.
//!
//! - `results_bytes`: the storage target's read and write bytes (all phases
//!   of the `series`, storage-tier or tier-less series only) against the op
//!   log's successful reads and writes of data files. The op log must not
//!   see fewer bytes than the results claim, nor more, apart from padding:
//!   the file target writes an object's last chunk padded to the alignment
//!   and the kernel ends reads at end of file, so each object end that is not
//!   a multiple of 4 KiB may differ by less than 4 KiB.
//! - `tier_bytes`: per-tier totals of the journal against the per-tier
//!   totals of a kvcache result (`summary.extras.tiers`), when it has them.

use super::files::{Version, is_housekeeping};
use super::oplog::{BLOCK_BYTES, OpKind, OpRow};
use super::tier::TierBytes;
use super::verdict::{Offenders, Verdict};
use crate::kvtrace::TraceTier as Tier;
use crate::results::RunResult;

/// The op log's data bytes and the padding slack they allow.
#[derive(Default, Debug)]
pub struct OpLogBytes {
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Successful data reads ending off a 4 KiB boundary (end-of-file reads).
    unaligned_read_ends: u64,
}

impl OpLogBytes {
    pub fn observe(&mut self, row: &OpRow) {
        if !row.ok() || is_housekeeping(&row.path) {
            return;
        }
        match row.op {
            OpKind::Read => {
                self.read_bytes += row.length;
                if !(row.offset + row.length).is_multiple_of(BLOCK_BYTES) {
                    self.unaligned_read_ends += 1;
                }
            }
            OpKind::Write => self.write_bytes += row.length,
            _ => {}
        }
    }
}

/// Maps a results series' `tier` to a journal tier; `None` for tier-less
/// series (`-`) and names it does not know.
pub fn series_tier(name: &str) -> Option<Tier> {
    match name.to_ascii_lowercase().as_str() {
        "gpu" | "tier-0" | "tier0" => Some(Tier::Gpu),
        "cpu" | "tier-1" | "tier1" => Some(Tier::Cpu),
        "storage" | "nvme" | "tier-2" | "tier2" => Some(Tier::Storage),
        _ => None,
    }
}

/// `results` may be several runs through the same mount: their bytes add up.
pub fn results_bytes(results: &[RunResult], oplog: &OpLogBytes, versions: &[Version]) -> Verdict {
    let mut claimed_read = 0u64;
    let mut claimed_write = 0u64;
    for s in results.iter().flat_map(|r| &r.series) {
        if s.tier != "-" && series_tier(&s.tier) != Some(Tier::Storage) {
            continue;
        }
        match s.op.as_str() {
            "read" => claimed_read += s.bytes,
            "write" => claimed_write += s.bytes,
            _ => {}
        }
    }
    let unaligned_objects =
        versions.iter().filter(|v| !is_housekeeping(&v.path) && !v.size_bytes.is_multiple_of(BLOCK_BYTES)).count()
            as u64;
    let write_slack = unaligned_objects * (BLOCK_BYTES - 1);
    let read_slack = oplog.unaligned_read_ends * (BLOCK_BYTES - 1);
    let mut v = Verdict::new("results_bytes");
    v.number("results_read_bytes", claimed_read)
        .number("oplog_read_bytes", oplog.read_bytes)
        .number("read_slack_bytes", read_slack)
        .number("results_write_bytes", claimed_write)
        .number("oplog_write_bytes", oplog.write_bytes)
        .number("write_slack_bytes", write_slack);
    let mut bad = Offenders::default();
    for (what, claimed, seen, slack) in
        [("read", claimed_read, oplog.read_bytes, read_slack), ("write", claimed_write, oplog.write_bytes, write_slack)]
    {
        if claimed.abs_diff(seen) > slack {
            bad.push(|| {
                format!(
                    "{what}: results.json counts {claimed} bytes, the op log saw {seen} bytes (allowed padding {slack} bytes)"
                )
            });
        }
    }
    v.decide(
        bad.total > 0,
        if bad.total > 0 {
            "results.json and the op log disagree on the bytes moved".to_string()
        } else {
            format!(
                "results.json and the op log agree: {claimed_read} bytes read, {claimed_write} bytes written (within padding)"
            )
        },
    );
    bad.into_verdict(&mut v);
    v
}

/// Per-tier totals of a kvcache result: `summary.extras.tiers.<tier>`, where
/// `write_bytes`/`read_bytes` are allocation writes and request reads and
/// `demoted_in_bytes`/`demoted_out_bytes` the demotions into and out of the
/// tier. The journal logs a demotion as a Read on the source tier and a
/// Write on the destination, so its totals are the sums.
fn result_tier_bytes(r: &RunResult) -> Option<TierBytes> {
    let tiers = r.summary.get("extras")?.get("tiers")?.as_object()?;
    let mut t = TierBytes::new();
    for (name, tier) in [("gpu", Tier::Gpu), ("cpu", Tier::Cpu), ("storage", Tier::Storage)] {
        let Some(v) = tiers.get(name) else { continue };
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        *t.entry((tier, "write")).or_default() += field("write_bytes") + field("demoted_in_bytes");
        *t.entry((tier, "read")).or_default() += field("read_bytes") + field("demoted_out_bytes");
    }
    Some(t)
}

pub fn tier_bytes(results: &[RunResult], journal: &TierBytes) -> Verdict {
    let mut claimed = TierBytes::new();
    let mut with_tiers = 0usize;
    for r in results {
        if let Some(t) = result_tier_bytes(r) {
            with_tiers += 1;
            for (k, v) in t {
                *claimed.entry(k).or_default() += v;
            }
        }
    }
    if with_tiers == 0 {
        return Verdict::not_checked(
            "tier_bytes",
            "results have no per-tier totals (no summary.extras.tiers: not a kvcache run)",
        );
    }
    let mut bad = Offenders::default();
    let mut v = Verdict::new("tier_bytes");
    for tier in [Tier::Gpu, Tier::Cpu, Tier::Storage] {
        for op in ["read", "write"] {
            let c = claimed.get(&(tier, op)).copied().unwrap_or(0);
            let j = journal.get(&(tier, op)).copied().unwrap_or(0);
            let label = tier.as_str().to_ascii_lowercase().replace('-', "");
            v.number(&format!("{label}_{op}_bytes_results"), c).number(&format!("{label}_{op}_bytes_journal"), j);
            if c != j {
                bad.push(|| format!("{} {op}: results.json {c} bytes, journal {j} bytes", tier.as_str()));
            }
        }
    }
    v.decide(
        bad.total > 0,
        if bad.total > 0 {
            "per-tier byte totals of results.json and the journal disagree".to_string()
        } else {
            "per-tier byte totals of results.json and the journal agree".to_string()
        },
    );
    bad.into_verdict(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::files::Files;
    use crate::check::testutil::row;
    use crate::check::verdict::Status;
    use crate::results::SeriesRecord;
    use crate::results::testutil::sample_result;

    fn result(series: &[(&str, &str, &str, u64)]) -> RunResult {
        let mut r = sample_result();
        let lat = r.series[0].latency_us.clone();
        r.series = series
            .iter()
            .map(|&(phase, op, tier, bytes)| SeriesRecord {
                phase: phase.into(),
                op: op.into(),
                tier: tier.into(),
                ops: 1,
                bytes,
                latency_us: lat.clone(),
            })
            .collect();
        r
    }

    fn replay(rows: &[OpRow]) -> (OpLogBytes, Vec<Version>) {
        let mut b = OpLogBytes::default();
        let mut f = Files::default();
        for r in rows {
            b.observe(r);
            f.apply(r);
        }
        (b, f.finish())
    }

    #[test]
    fn results_bytes_add_up_over_runs_and_allow_tail_padding() {
        let (b, v) = replay(&[
            row(2, "write", "mlpdrive/.direct-probe", "", 0, 4096, "ok", &[]),
            row(3, "write", "mlpdrive/a.npy", "", 0, 12288, "ok", &[]),
            row(4, "truncate", "mlpdrive/a.npy", "", 10_000, 0, "ok", &[]),
            row(5, "read", "mlpdrive/a.npy", "", 0, 10_000, "ok", &[]),
            row(6, "read", "mlpdrive/a.npy", "", 0, 4096, "EIO", &[]),
        ]);
        let runs = [
            result(&[("measure", "write", "storage", 10_000), ("commit", "commit", "storage", 0)]),
            result(&[("measure", "read", "-", 12_288), ("measure", "read", "GPU", 99)]),
        ];
        let verdict = results_bytes(&runs, &b, &v);
        assert_eq!(verdict.status, Status::Pass, "{verdict:#?}");
        assert_eq!(verdict.numbers["oplog_write_bytes"], 12_288);
        assert_eq!(verdict.numbers["write_slack_bytes"], 4095);
        // Twice the reads in the results: storage never saw half of them.
        let runs = [result(&[("measure", "write", "storage", 12_288), ("measure", "read", "storage", 20_000)])];
        let verdict = results_bytes(&runs, &b, &v);
        assert_eq!(verdict.status, Status::Fail, "{verdict:#?}");
        assert_eq!(verdict.offending_total, 1);
        assert!(verdict.offending[0].starts_with("read: results.json counts 20000 bytes"), "{verdict:#?}");
    }

    #[test]
    fn tier_bytes_compare_when_results_split_tiers() {
        use crate::kvtrace::{TraceOp, TracePhase, TraceRow};
        let j = |op, tier, size_bytes| {
            (1, TraceRow { timestamp_s: 0.0, op, size_bytes, tier, key: "k".into(), phase: TracePhase::Prefill })
        };
        // GPU write 100, demoted to storage (GPU read 100, storage write
        // 100), then read from storage.
        let journal = crate::check::tier::journal_bytes(&[
            j(TraceOp::Write, Tier::Gpu, 100),
            j(TraceOp::Read, Tier::Gpu, 100),
            j(TraceOp::Write, Tier::Storage, 100),
            j(TraceOp::Read, Tier::Storage, 100),
        ]);
        let raw = [result(&[("measure", "read", "storage", 100)])];
        let v = tier_bytes(&raw, &journal);
        assert_eq!(v.status, Status::NotChecked);
        assert!(v.reason.starts_with("results have no per-tier totals"), "{v:?}");
        let kv = |storage_read: u64| {
            let mut r = result(&[]);
            r.summary = serde_json::json!({"extras": {"tiers": {
                "gpu": {"write_bytes": 100, "read_bytes": 0, "demoted_in_bytes": 0, "demoted_out_bytes": 100},
                "cpu": {"write_bytes": 0, "read_bytes": 0, "demoted_in_bytes": 0, "demoted_out_bytes": 0},
                "storage": {"write_bytes": 0, "read_bytes": storage_read, "demoted_in_bytes": 100, "demoted_out_bytes": 0},
            }}});
            [r]
        };
        let v = tier_bytes(&kv(100), &journal);
        assert_eq!(v.status, Status::Pass, "{v:#?}");
        let v = tier_bytes(&kv(0), &journal);
        assert_eq!(v.status, Status::Fail);
        assert_eq!(v.offending, vec!["Tier-2 read: results.json 0 bytes, journal 100 bytes".to_string()]);
    }
}
