//! `mlpdrive check` through the real binary, on op logs and journals the
//! tests write: a clean log passes; a planted duplicate block, a planted
//! corrupt block and a planted tier violation each fail it (exit 1) with the
//! offending line in the verdicts; malformed input exits 2 naming the line
//! and column and writes nothing.

use std::path::Path;

use crate::common::*;

const OPLOG_HEADER: &str =
    "start_ns,op,path,path2,offset,length,latency_ns,result,block_hashes,zstd_in_bytes,zstd_out_bytes\n";
const JOURNAL_HEADER: &str = "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase\n";

/// An op-log line: `op path offset length result hashes`, zstd sample off.
fn op(t: u64, op: &str, path: &str, offset: u64, length: u64, hashes: &[u64]) -> String {
    let h: Vec<String> = hashes.iter().map(|h| format!("{h:016x}")).collect();
    format!("{t},{op},{path},,{offset},{length},1500,ok,{},0,0\n", h.join(";"))
}

/// The file target's way of storing object `key` (create, 4 KiB-aligned
/// writes hashing every block, truncate to the exact size), then reading it
/// back. `first_hash` makes the blocks' hashes distinct across objects.
fn store_and_read(t: u64, key: &str, size: u64, first_hash: u64) -> String {
    let path = format!("mlpdrive/{key}.npy");
    let aligned = size.next_multiple_of(4096);
    let hashes: Vec<u64> = (0..aligned / 4096).map(|i| first_hash + i).collect();
    let full_blocks = (size / 4096) as usize;
    let mut s = op(t, "create", &path, 0, 0, &[]);
    s += &format!("{},write,{path},,0,{aligned},9000,ok,{},{aligned},{}\n", t + 1, hex(&hashes), aligned + 16);
    s += &op(t + 2, "truncate", &path, size, 0, &[]);
    s += &op(t + 3, "read", &path, 0, size, &hashes[..full_blocks]);
    s
}

fn hex(hashes: &[u64]) -> String {
    hashes.iter().map(|h| format!("{h:016x}")).collect::<Vec<_>>().join(";")
}

fn journal_row(t: u64, op: &str, size: u64, tier: &str, key: &str, phase: &str) -> String {
    format!("{t}.000000,{op},{size},{tier},{key},{phase}\n")
}

/// A journal that matches [`clean_oplog`]: k1 went GPU → storage and was
/// read back from storage; k2 stayed in the CPU tier.
fn clean_journal() -> String {
    let mut j = JOURNAL_HEADER.to_string();
    j += &journal_row(1, "Write", 10_000, "Tier-0", "k1", "Prefill");
    j += &journal_row(3, "Write", 10_000, "Tier-2", "k1", "Evict");
    j += &journal_row(2, "Read", 10_000, "Tier-0", "k1", "Evict"); // out of order, as kv-cache.py writes
    j += &journal_row(4, "Read", 10_000, "Tier-2", "k1", "Decode");
    j += &journal_row(5, "Write", 8192, "Tier-1", "k2", "Prefill");
    j += &journal_row(6, "Write", 16_384, "Tier-2", "k3", "Prefill");
    j += &journal_row(7, "Read", 16_384, "Tier-2", "k3", "Decode");
    j
}

fn clean_oplog() -> String {
    let mut s = OPLOG_HEADER.to_string();
    s += &op(5, "mkdir", "mlpdrive", 0, 0, &[]);
    s += &store_and_read(10, "k1", 10_000, 0x1000);
    s += &store_and_read(20, "k3", 16_384, 0x2000);
    s
}

fn run_check(dir: &Path, oplog: &str, journal: Option<(&str, &str)>, extra: &[&str]) -> (Run, serde_json::Value) {
    std::fs::write(dir.join("op.csv"), oplog).unwrap();
    let mut args = vec!["check".to_string(), "--oplog".into(), "op.csv".into()];
    if let Some((name, text)) = journal {
        let path = dir.join(name);
        if name.ends_with(".zst") {
            std::fs::write(&path, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        } else {
            std::fs::write(&path, text).unwrap();
        }
        args.extend(["--journal".into(), name.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = mlpdrive(dir, &refs);
    let json_path = dir.join("op.csv.verdicts.json");
    let v = if json_path.exists() { read_json(&json_path) } else { serde_json::Value::Null };
    (r, v)
}

fn verdict<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["verdicts"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn a_clean_log_and_journal_pass() {
    let d = scratch();
    let (r, v) = run_check(d.path(), &clean_oplog(), Some(("trace.csv.zst", &clean_journal())), &[]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("check: PASS"), "{}", r.show());
    assert_eq!(v["status"], "pass");
    assert_eq!(v["check_version"], 1);
    for (name, status) in [
        ("dedup", "pass"),
        ("compressibility", "pass"),
        ("content", "pass"),
        ("tier_placement", "pass"),
        ("tier_deletes", "not_checked"),
        ("results_bytes", "not_checked"),
        ("tier_bytes", "not_checked"),
        ("errors", "pass"),
    ] {
        assert_eq!(verdict(&v, name)["status"], status, "{name}: {:#}", verdict(&v, name));
    }
    assert_eq!(verdict(&v, "dedup")["numbers"]["blocks_written"], 3 + 4);
    assert_eq!(verdict(&v, "dedup")["numbers"]["unique_ratio"], 1.0);
    assert_eq!(verdict(&v, "content")["numbers"]["blocks_verified"], 2 + 4);
    assert_eq!(verdict(&v, "tier_placement")["numbers"]["tier2_writes_matched"], 2);
    assert_eq!(v["summary"]["ops"]["write"]["ops"], 2);
    assert_eq!(v["summary"]["ops"]["read"]["bytes"], 10_000 + 16_384);
}

#[test]
fn rows_are_replayed_in_start_order_not_file_order() {
    // The shim logs an op after replying, so a slow write's row can follow
    // the row of a truncate the client issued after the write returned.
    let d = scratch();
    let path = "mlpdrive/k3.npy";
    let mut log = OPLOG_HEADER.to_string();
    log += &op(20, "create", path, 0, 0, &[]);
    log += &op(21, "write", path, 0, 8192, &[0x2000, 0x2001]);
    log += &op(30, "truncate", path, 10_000, 0, &[]);
    log += &op(22, "write", path, 8192, 4096, &[0x2002]);
    log += &op(40, "read", path, 0, 10_000, &[0x2000, 0x2001]);
    let mut journal = JOURNAL_HEADER.to_string();
    journal += &journal_row(1, "Write", 10_000, "Tier-2", "k3", "Prefill");
    let (r, v) = run_check(d.path(), &log, Some(("trace.csv", &journal)), &[]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(verdict(&v, "tier_placement")["numbers"]["tier2_writes_matched"], 1);
}

#[test]
fn a_planted_duplicate_block_fails_dedup() {
    let d = scratch();
    let mut log = clean_oplog();
    // A second object whose third block repeats k1's first block.
    log += &op(40, "write", "mlpdrive/dup.dat", 0, 12288, &[0x5000, 0x5001, 0x1000]);
    let (r, v) = run_check(d.path(), &log, None, &[]);
    assert_eq!(r.code, 1, "{}", r.show());
    let dedup = verdict(&v, "dedup");
    assert_eq!(dedup["status"], "fail", "{dedup:#}");
    assert_eq!(dedup["offending_total"], 1);
    assert_eq!(dedup["numbers"]["blocks_written"], 10);
    assert_eq!(dedup["numbers"]["blocks_unique"], 9);
    let item = dedup["offending"][0].as_str().unwrap();
    assert!(
        item.starts_with("line 11:")
            && item.contains("mlpdrive/dup.dat at offset 8192")
            && item.contains("line 4's block"),
        "{item}"
    );
    assert!(r.stdout.contains("FAIL") && r.stdout.contains("check: FAIL (dedup failed)"), "{}", r.show());
}

#[test]
fn a_planted_corrupt_block_fails_content() {
    let d = scratch();
    // k3's second block reads back with another hash.
    let log = clean_oplog().replace(
        "0000000000002001;0000000000002002;0000000000002003,0,0",
        "00000000deadbeef;0000000000002002;0000000000002003,0,0",
    );
    assert_ne!(log, clean_oplog(), "the corruption was planted");
    let (r, v) = run_check(d.path(), &log, Some(("trace.csv", &clean_journal())), &[]);
    assert_eq!(r.code, 1, "{}", r.show());
    let content = verdict(&v, "content");
    assert_eq!(content["status"], "fail", "{content:#}");
    assert_eq!(content["numbers"]["blocks_mismatched"], 1);
    let item = content["offending"][0].as_str().unwrap();
    assert!(item.starts_with("line 10: mlpdrive/k3.npy offset 4096"), "{item}");
    assert_eq!(verdict(&v, "dedup")["status"], "pass");
}

#[test]
fn a_planted_tier_violation_fails_tier_placement() {
    let d = scratch();
    // k2 only ever lived in the CPU tier, yet it reached storage.
    let mut log = clean_oplog();
    log += &store_and_read(40, "k2", 8192, 0x3000);
    let (r, v) = run_check(d.path(), &log, Some(("trace.csv", &clean_journal())), &[]);
    assert_eq!(r.code, 1, "{}", r.show());
    let t = verdict(&v, "tier_placement");
    assert_eq!(t["status"], "fail", "{t:#}");
    assert_eq!(t["numbers"]["tier01_key_on_storage"], 1);
    assert_eq!(t["offending_total"], 1);
    assert!(t["offending"][0].as_str().unwrap().contains("key k2"), "{t:#}");
    // The data itself is fine.
    assert_eq!(verdict(&v, "content")["status"], "pass");
}

#[test]
fn deletes_are_judged_against_journal_delete_rows() {
    let d = scratch();
    let mut log = clean_oplog();
    log += &op(50, "unlink", "mlpdrive/k1.npy", 0, 0, &[]);
    log += &op(51, "unlink", "mlpdrive/k3.npy", 0, 0, &[]);
    let mut journal = clean_journal();
    journal += &journal_row(8, "Delete", 10_000, "Tier-2", "k1", "Evict");
    let (r, v) = run_check(d.path(), &log, Some(("trace.csv", &journal)), &[]);
    assert_eq!(r.code, 1, "{}", r.show());
    let del = verdict(&v, "tier_deletes");
    assert_eq!(del["status"], "fail", "{del:#}");
    assert_eq!(del["numbers"]["unlinks_matched"], 1);
    assert_eq!(del["numbers"]["unlink_without_delete"], 1);
    assert!(del["offending"][0].as_str().unwrap().contains("mlpdrive/k3.npy unlinked"), "{del:#}");
}

#[test]
fn require_turns_not_checked_into_a_failure() {
    let d = scratch();
    let (r, v) = run_check(d.path(), &clean_oplog(), None, &["--require", "tier_placement", "--json", "out.json"]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert!(r.stdout.contains("tier_placement was required but not checked"), "{}", r.show());
    assert_eq!(v, serde_json::Value::Null, "--json moves the verdicts file");
    assert_eq!(read_json(&d.path().join("out.json"))["status"], "fail");
}

#[test]
fn results_that_claim_bytes_storage_never_saw_fail() {
    let d = scratch();
    // A real run on null:// moves no bytes to any storage; the op log
    // (of some other mount) cannot account for them.
    let res = d.path().join("res");
    let run = mlpdrive(
        d.path(),
        &[
            "run",
            "raw-smoke",
            "--quiet",
            "--target",
            "null://",
            "--duration",
            "200ms",
            "--results",
            res.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.show());
    let run_dir = only_run_dir(&res);
    let journal = clean_journal();
    let (r, v) =
        run_check(d.path(), &clean_oplog(), Some(("trace.csv", &journal)), &["--results", run_dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.show());
    let b = verdict(&v, "results_bytes");
    assert_eq!(b["status"], "fail", "{b:#}");
    assert!(b["numbers"]["results_read_bytes"].as_u64().unwrap() > 0, "{b:#}");
    assert_eq!(b["numbers"]["oplog_read_bytes"], 10_000 + 16_384);
    assert_eq!(verdict(&v, "tier_bytes")["status"], "not_checked");
    assert!(verdict(&v, "tier_bytes")["reason"].as_str().unwrap().contains("results have no per-tier totals"));
}

#[test]
fn a_log_cut_short_at_the_last_line_is_judged_with_a_warning() {
    let d = scratch();
    let mut log = clean_oplog();
    log += "60,write,mlpdrive/k9.npy,,0,40";
    let (r, v) = run_check(d.path(), &log, None, &[]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("warning: op.csv line 11: the last line has no line end"), "{}", r.show());
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn malformed_input_exits_2_naming_line_and_column_and_writes_nothing() {
    let cases: Vec<(String, Option<String>, &str)> = vec![
        (
            clean_oplog().replacen(",1500,ok,", ",15x0,ok,", 1),
            None,
            "op.csv line 2, column 7 (latency_ns): `15x0` is not a non-negative integer",
        ),
        (format!("{OPLOG_HEADER}1,write,a,,0,4096,1,ok,00ff,0,0\n"), None, "op.csv line 2, column 9 (block_hashes)"),
        ("start_ns,op,path\n".into(), None, "op.csv line 1: the header has no `path2` column"),
        (
            clean_oplog(),
            Some(format!("{JOURNAL_HEADER}1.0,Write,100,Tier-9,k,Prefill\n")),
            "line 2: column 4 `Tier`: expected Tier-0, Tier-1 or Tier-2",
        ),
    ];
    for (log, journal, needle) in cases {
        let d = scratch();
        std::fs::write(d.path().join("op.csv"), &log).unwrap();
        let mut args = vec!["check", "--oplog", "op.csv"];
        if let Some(j) = &journal {
            std::fs::write(d.path().join("trace.csv"), j).unwrap();
            args.extend(["--journal", "trace.csv"]);
        }
        let before = tree(d.path());
        let r = mlpdrive(d.path(), &args);
        assert_eq!(r.code, 2, "{needle}\n{}", r.show());
        assert!(r.stderr.contains(needle), "stderr lacks {needle:?}\n{}", r.show());
        assert_eq!(tree(d.path()), before, "wrote something\n{}", r.show());
    }
    let d = scratch();
    let r = mlpdrive(d.path(), &["check", "--oplog", "missing.csv"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("missing.csv: cannot open the op log"), "{}", r.show());
    let r = mlpdrive(d.path(), &["check", "--oplog", "missing.csv", "--require", "speed"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("--require speed: no such verdict"), "{}", r.show());
    assert!(tree(d.path()).is_empty());
}
