//! The tier verdicts: the KV cache journal (what the driver believed it put
//! in each tier) against the op log (what reached storage).
//!
//! A storage-tier (Tier-2) entry with key K is the object `K.npy`, so its
//! file in the op log is any path whose last component is `K.npy`. Each
//! file version (creation to unlink or replacement) is one stored object;
//! its final size must equal the journal's `Object_Size_Bytes`.
//!
//! - `tier_placement`: every Tier-2 Write has a stored version of that size
//!   (matched per key by size), every Tier-2 Read is covered by bytes read
//!   from the key's file, and nothing else reached storage: no version
//!   without a Tier-2 Write, no file for a key that only lived in Tier-0/1,
//!   no `.npy` file for a key the journal never names.
//! - `tier_deletes`: unlinks of a key's file only where the journal has a
//!   Tier-2 `Delete` row for it, and each such row has its unlink.

use std::collections::{BTreeMap, HashMap};

use super::files::{Version, VersionEnd};
use super::verdict::{Offenders, Verdict};
use crate::kvtrace::{TraceOp as Operation, TraceRow, TraceTier as Tier};

/// The journal's figures for one key.
#[derive(Default, Debug)]
struct KeyJournal {
    /// Tier-2 writes: (line, size).
    writes: Vec<(u64, u64)>,
    /// Tier-2 reads: bytes the driver read.
    read_bytes: u64,
    reads: u64,
    first_read_line: u64,
    /// Tier-2 Delete rows.
    deletes: u64,
    /// Rows on any tier other than Tier-2.
    upper_tier_rows: u64,
    first_line: u64,
}

/// Per (tier, operation) byte totals of the journal.
pub type TierBytes = BTreeMap<(Tier, &'static str), u64>;

/// A journal row with its 1-based line in the trace file.
pub type JournalRow = (u64, TraceRow);

pub struct TierInput<'a> {
    pub journal: &'a [JournalRow],
    pub versions: &'a [Version],
    /// The run journaled its deletes (`trace.deletes=true` in its results'
    /// config), so no Delete rows means no deletes.
    pub deletes_recorded: bool,
}

/// The key an op-log path stores, if it is a KV object (`…/K.npy`).
pub fn key_of(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    name.strip_suffix(".npy").filter(|k| !k.is_empty())
}

/// Journal byte totals per (tier, "read" | "write").
pub fn journal_bytes(journal: &[JournalRow]) -> TierBytes {
    let mut t = TierBytes::new();
    for (_, r) in journal {
        let op = match r.op {
            Operation::Write => "write",
            Operation::Read => "read",
            Operation::Delete => continue,
        };
        *t.entry((r.tier, op)).or_default() += r.size_bytes;
    }
    t
}

pub fn verdicts(input: &TierInput<'_>) -> [Verdict; 2] {
    let mut keys: BTreeMap<&str, KeyJournal> = BTreeMap::new();
    let mut delete_rows = 0u64;
    for (line, r) in input.journal {
        let line = *line;
        let k = keys.entry(r.key.as_str()).or_default();
        if k.first_line == 0 {
            k.first_line = line;
        }
        if r.tier != Tier::Storage {
            k.upper_tier_rows += 1;
            if r.op == Operation::Delete {
                delete_rows += 1;
            }
            continue;
        }
        match r.op {
            Operation::Write => k.writes.push((line, r.size_bytes)),
            Operation::Read => {
                if k.reads == 0 {
                    k.first_read_line = line;
                }
                k.reads += 1;
                k.read_bytes += r.size_bytes;
            }
            Operation::Delete => {
                k.deletes += 1;
                delete_rows += 1;
            }
        }
    }
    let mut stored: BTreeMap<&str, Vec<&Version>> = BTreeMap::new();
    for v in input.versions {
        if let Some(k) = key_of(&v.path) {
            stored.entry(k).or_default().push(v);
        }
    }
    [placement(&keys, &stored, input.journal), deletes(&keys, &stored, delete_rows, input.deletes_recorded)]
}

fn placement(
    keys: &BTreeMap<&str, KeyJournal>,
    stored: &BTreeMap<&str, Vec<&Version>>,
    journal: &[JournalRow],
) -> Verdict {
    let mut missing = Offenders::default();
    let mut size_mismatch = Offenders::default();
    let mut read_short = Offenders::default();
    let mut not_in_journal = Offenders::default();
    let mut upper_on_storage = Offenders::default();
    let mut unknown_key = Offenders::default();
    let mut writes_matched = 0u64;
    let no_versions = Vec::new();
    for (key, j) in keys {
        let versions: Vec<&Version> = stored
            .get(key)
            .unwrap_or(&no_versions)
            .iter()
            .copied()
            .filter(|v| v.written_bytes > 0 || v.size_bytes > 0)
            .collect();
        if j.writes.is_empty() && j.reads == 0 && j.deletes == 0 {
            // Only ever in Tier-0/1: must not be on storage at all.
            if let Some(v) = stored.get(key).and_then(|vs| vs.first()) {
                upper_on_storage.push(|| {
                    format!(
                        "key {key}: only in Tier-0/1 in the journal (line {}), but {} is on storage (op-log line {})",
                        j.first_line, v.path, v.first_line
                    )
                });
            }
            continue;
        }
        // Match journal writes to stored versions by size.
        let mut unmatched_versions: Vec<&Version> = Vec::new();
        let mut want: HashMap<u64, Vec<u64>> = HashMap::new();
        for &(line, size) in &j.writes {
            want.entry(size).or_default().push(line);
        }
        for v in versions {
            match want.get_mut(&v.size_bytes).and_then(|lines| lines.pop()) {
                Some(_) => writes_matched += 1,
                None => unmatched_versions.push(v),
            }
        }
        let mut unmatched_writes: Vec<(u64, u64)> =
            want.into_iter().flat_map(|(size, lines)| lines.into_iter().map(move |l| (l, size))).collect();
        unmatched_writes.sort_unstable();
        let mut extra = unmatched_versions.into_iter();
        for (line, size) in unmatched_writes {
            match extra.next() {
                Some(v) => size_mismatch.push(|| {
                    format!(
                        "key {key}: journal line {line} wrote {size} bytes to Tier-2, {} ended at {} bytes (op-log lines {}..{})",
                        v.path,
                        v.size_bytes,
                        v.first_line,
                        end_line(v)
                    )
                }),
                None => missing.push(|| {
                    format!("key {key}: journal line {line} wrote {size} bytes to Tier-2; no such object reached storage")
                }),
            }
        }
        for v in extra {
            not_in_journal.push(|| {
                format!(
                    "key {key}: {} ({} bytes, op-log line {}) has no matching Tier-2 Write in the journal",
                    v.path, v.size_bytes, v.first_line
                )
            });
        }
        let read_on_storage: u64 = stored.get(key).map_or(0, |vs| vs.iter().map(|v| v.read_bytes).sum());
        if read_on_storage < j.read_bytes {
            read_short.push(|| {
                format!(
                    "key {key}: the journal reads {} bytes from Tier-2 in {} reads (first at line {}), storage saw {read_on_storage} bytes read",
                    j.read_bytes, j.reads, j.first_read_line
                )
            });
        }
    }
    for (key, vs) in stored {
        if !keys.contains_key(key)
            && let Some(v) = vs.first()
        {
            unknown_key.push(|| format!("{} (op-log line {}): key {key} is not in the journal", v.path, v.first_line));
        }
    }

    let mut v = Verdict::new("tier_placement");
    let tier2_writes: usize = keys.values().map(|k| k.writes.len()).sum();
    let tier2_reads: u64 = keys.values().map(|k| k.reads).sum();
    v.number("journal_rows", journal.len() as u64)
        .number("journal_keys", keys.len() as u64)
        .number("tier2_writes", tier2_writes as u64)
        .number("tier2_writes_matched", writes_matched)
        .number("tier2_reads", tier2_reads)
        .number("stored_objects", stored.values().map(Vec::len).sum::<usize>() as u64);
    let kinds = [
        ("write_missing", missing),
        ("write_size_mismatch", size_mismatch),
        ("read_short", read_short),
        ("stored_write_not_in_journal", not_in_journal),
        ("tier01_key_on_storage", upper_on_storage),
        ("file_not_in_journal", unknown_key),
    ];
    let mut all = Offenders::default();
    let mut failed_kinds = Vec::new();
    let mut violations = 0u64;
    for (name, o) in kinds {
        v.number(name, o.total);
        violations += o.total;
        if o.total > 0 {
            failed_kinds.push(format!("{name} {}", o.total));
        }
        for item in o.items {
            all.push(|| format!("{name}: {item}"));
        }
    }
    all.total = violations;
    if tier2_writes == 0 && tier2_reads == 0 && stored.is_empty() {
        let mut nc = Verdict::not_checked(
            "tier_placement",
            "the journal has no Tier-2 rows and no KV object (*.npy) reached storage: nothing to compare",
        );
        nc.numbers = v.numbers;
        return nc;
    }
    v.decide(
        violations > 0,
        if violations > 0 {
            format!("tier violations: {}", failed_kinds.join(", "))
        } else {
            format!(
                "all {tier2_writes} Tier-2 writes and {tier2_reads} Tier-2 reads reached storage with their sizes; nothing else did"
            )
        },
    );
    all.into_verdict(&mut v);
    v
}

fn end_line(v: &Version) -> String {
    if v.end == VersionEnd::Live { "end".into() } else { v.end_line.to_string() }
}

fn deletes(
    keys: &BTreeMap<&str, KeyJournal>,
    stored: &BTreeMap<&str, Vec<&Version>>,
    delete_rows: u64,
    deletes_recorded: bool,
) -> Verdict {
    let unlinks = |k: &str| -> Vec<&Version> {
        stored.get(k).map_or_else(Vec::new, |vs| vs.iter().copied().filter(|v| v.end == VersionEnd::Unlinked).collect())
    };
    let total_unlinks: usize = stored.keys().map(|k| unlinks(k).len()).sum();
    if delete_rows == 0 && !deletes_recorded {
        let mut v = Verdict::not_checked(
            "tier_deletes",
            "the journal has no Delete rows and no --results says trace.deletes=true \
             (run the KV workload with trace.deletes=true to record them)",
        );
        v.number("journal_deletes", 0).number("storage_unlinks", total_unlinks as u64);
        return v;
    }
    let mut unexpected = Offenders::default();
    let mut missing = Offenders::default();
    let mut matched = 0u64;
    for key in stored.keys() {
        let got = unlinks(key);
        let allowed = keys.get(key).map_or(0, |j| j.deletes) as usize;
        matched += got.len().min(allowed) as u64;
        for v in got.iter().skip(allowed) {
            unexpected.push(|| {
                format!(
                    "unlink_without_delete: op-log line {}: {} unlinked, but the journal has {allowed} Tier-2 Delete row(s) for key {key}",
                    v.end_line, v.path
                )
            });
        }
    }
    for (key, j) in keys {
        let got = unlinks(key).len() as u64;
        if j.deletes > got {
            missing.push(|| {
                format!(
                    "delete_missing: key {key}: the journal deletes it {} time(s), storage saw {got} unlink(s)",
                    j.deletes
                )
            });
        }
    }
    let mut v = Verdict::new("tier_deletes");
    v.number("journal_deletes", delete_rows)
        .number("storage_unlinks", total_unlinks as u64)
        .number("unlinks_matched", matched)
        .number("unlink_without_delete", unexpected.total)
        .number("delete_missing", missing.total);
    let bad = unexpected.total + missing.total;
    v.decide(
        bad > 0,
        if bad > 0 {
            format!(
                "{} unlink(s) without a journal Delete, {} Delete(s) without an unlink",
                unexpected.total, missing.total
            )
        } else {
            format!("all {total_unlinks} unlinks match the journal's Delete rows")
        },
    );
    let mut all = unexpected;
    for item in missing.items {
        all.push(|| item);
    }
    all.total = bad;
    all.into_verdict(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::files::Files;
    use crate::check::testutil::row;
    use crate::check::verdict::Status;
    use crate::kvtrace::TracePhase;

    fn j(line: u64, op: Operation, size: u64, tier: Tier, key: &str) -> JournalRow {
        let phase = if op == Operation::Delete { TracePhase::Evict } else { TracePhase::Prefill };
        (line, TraceRow { timestamp_s: line as f64, op, size_bytes: size, tier, key: key.into(), phase })
    }

    fn versions(rows: &[crate::check::oplog::OpRow]) -> Vec<Version> {
        let mut f = Files::default();
        for r in rows {
            f.apply(r);
        }
        f.finish()
    }

    /// A key stored the way the file target stores it: create, aligned
    /// writes, truncate to the exact size.
    fn store(line: u64, key: &str, size: u64) -> Vec<crate::check::oplog::OpRow> {
        let path = format!("mlpdrive/{key}.npy");
        vec![
            row(line, "create", &path, "", 0, 0, "ok", &[]),
            row(line + 1, "write", &path, "", 0, size.next_multiple_of(4096), "ok", &[]),
            row(line + 2, "truncate", &path, "", size, 0, "ok", &[]),
        ]
    }

    #[test]
    fn matching_journal_and_storage_pass() {
        let mut ops = store(2, "k1", 10_000);
        ops.push(row(5, "read", "mlpdrive/k1.npy", "", 0, 10_000, "ok", &[]));
        let journal = [
            j(2, Operation::Write, 10_000, Tier::Gpu, "k1"),
            j(3, Operation::Read, 10_000, Tier::Gpu, "k1"),
            j(4, Operation::Write, 10_000, Tier::Storage, "k1"),
            j(5, Operation::Read, 10_000, Tier::Storage, "k1"),
            j(6, Operation::Write, 500, Tier::Cpu, "k2"),
        ];
        let v = versions(&ops);
        let [placement, deletes] = verdicts(&TierInput { journal: &journal, versions: &v, deletes_recorded: false });
        assert_eq!(placement.status, Status::Pass, "{placement:?}");
        assert_eq!(placement.numbers["tier2_writes_matched"], 1);
        assert_eq!(deletes.status, Status::NotChecked);
        assert!(deletes.reason.contains("no Delete rows"));
    }

    #[test]
    fn a_planted_tier_violation_fails_by_kind() {
        // k2 lived only in Tier-1 but reached storage; k1's size is wrong;
        // k3's Tier-2 write never arrived; k1 was read less than journaled.
        let mut ops = store(2, "k1", 8192);
        ops.extend(store(10, "k2", 4096));
        ops.push(row(20, "read", "mlpdrive/k1.npy", "", 0, 4096, "ok", &[]));
        ops.extend(store(30, "stray", 4096));
        let journal = [
            j(2, Operation::Write, 10_000, Tier::Storage, "k1"),
            j(3, Operation::Read, 10_000, Tier::Storage, "k1"),
            j(4, Operation::Write, 4096, Tier::Cpu, "k2"),
            j(5, Operation::Write, 4096, Tier::Storage, "k3"),
        ];
        let v = versions(&ops);
        let [placement, _] = verdicts(&TierInput { journal: &journal, versions: &v, deletes_recorded: false });
        assert_eq!(placement.status, Status::Fail);
        for (kind, n) in [
            ("write_size_mismatch", 1),
            ("write_missing", 1),
            ("read_short", 1),
            ("tier01_key_on_storage", 1),
            ("file_not_in_journal", 1),
            ("stored_write_not_in_journal", 0),
        ] {
            assert_eq!(placement.numbers[kind], n, "{kind}: {placement:#?}");
        }
        assert_eq!(placement.offending_total, 5);
        assert!(placement.offending.iter().any(|o| o.starts_with("tier01_key_on_storage: key k2")), "{placement:#?}");
    }

    #[test]
    fn unlinks_need_journal_deletes() {
        let mut ops = store(2, "k1", 4096);
        ops.push(row(5, "unlink", "mlpdrive/k1.npy", "", 0, 0, "ok", &[]));
        ops.extend(store(6, "k2", 4096));
        ops.push(row(9, "unlink", "mlpdrive/k2.npy", "", 0, 0, "ok", &[]));
        let journal = [
            j(2, Operation::Write, 4096, Tier::Storage, "k1"),
            j(3, Operation::Delete, 4096, Tier::Storage, "k1"),
            j(4, Operation::Write, 4096, Tier::Storage, "k2"),
            j(5, Operation::Write, 4096, Tier::Storage, "k3"),
            j(6, Operation::Delete, 4096, Tier::Storage, "k3"),
        ];
        let mut v = versions(&ops);
        v.extend(versions(&store(20, "k3", 4096)));
        let [placement, deletes] = verdicts(&TierInput { journal: &journal, versions: &v, deletes_recorded: false });
        assert_eq!(placement.status, Status::Pass, "{placement:#?}");
        assert_eq!(deletes.status, Status::Fail);
        assert_eq!(deletes.numbers["unlink_without_delete"], 1);
        assert_eq!(deletes.numbers["delete_missing"], 1);
        assert!(deletes.offending[0].contains("line 9: mlpdrive/k2.npy unlinked"), "{deletes:#?}");
    }

    #[test]
    fn with_deletes_recorded_any_unlink_needs_a_delete_row() {
        let mut ops = store(2, "k1", 4096);
        ops.push(row(5, "unlink", "mlpdrive/k1.npy", "", 0, 0, "ok", &[]));
        let journal = [j(2, Operation::Write, 4096, Tier::Storage, "k1")];
        let v = versions(&ops);
        let [_, deletes] = verdicts(&TierInput { journal: &journal, versions: &v, deletes_recorded: false });
        assert_eq!(deletes.status, Status::NotChecked);
        let [_, deletes] = verdicts(&TierInput { journal: &journal, versions: &v, deletes_recorded: true });
        assert_eq!(deletes.status, Status::Fail, "{deletes:#?}");
        assert_eq!(deletes.numbers["unlink_without_delete"], 1);
    }
}
