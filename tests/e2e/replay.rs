//! `mlpdrive replay`: a hand-written kv-cache.py-format trace (out-of-order
//! timestamps, all three tiers, a key read before it is written) replayed on
//! a real O_DIRECT file target and on the emulated device, plain and `.zst`;
//! bad rows; delete inference.

use std::path::Path;

use mlpdrive::kvtrace::{self, TraceOp, TraceTier};

use crate::common::*;

/// Sizes are odd on purpose (not multiples of 512 or 1 MiB); `k3` is read
/// before it is written (pre-created); rows are out of order as in
/// kv-cache.py's traces.
const TRACE: &str = "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase
1700000000.300000,Read,1310720,Tier-2,k1,Decode
1700000000.100000,Write,1310720,Tier-2,k1,Prefill
1700000000.150000,Write,131200,Tier-0,g1,Prefill
1700000000.200000,Write,2500000,Tier-2,k2,Prefill
1700000000.250000,Read,131200,Tier-0,g1,Decode
1700000000.400000,Read,2500000,Tier-2,k2,Decode
1700000000.350000,Read,700001,Tier-2,k3,Decode
1700000000.450000,Read,131200,Tier-0,g1,Evict
1700000000.450001,Write,131200,Tier-1,g1,Evict
1700000000.500000,Write,900000,Tier-2,k3,Prefill
1700000000.600000,Read,900000,Tier-2,k3,Decode
1700000000.650000,Write,4096,Tier-2,k1,Evict
1700000000.700000,Read,4096,Tier-2,k1,Decode
";

fn write_trace(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    if name.ends_with(".zst") {
        std::fs::write(&p, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
    } else {
        std::fs::write(&p, text).unwrap();
    }
    p
}

fn replay(dir: &Path, trace: &Path, target: &str, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
    let out = dir.join("out.json");
    let _ = std::fs::remove_file(&out);
    let res = dir.join("res");
    let mut args =
        vec!["replay", trace.to_str().unwrap(), "--quiet", "--target", target, "--results", res.to_str().unwrap()];
    args.extend_from_slice(&["--output", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let r = mlpdrive(dir, &args);
    let j = out.is_file().then(|| read_json(&out));
    (r, j)
}

/// What the trace asks of the storage tier (or of every tier): write and
/// read rows and their bytes.
fn expected(trace: &Path, all_tiers: bool) -> [u64; 4] {
    let mut e = [0; 4];
    for row in kvtrace::read_all(trace).unwrap() {
        if !all_tiers && row.tier != TraceTier::Storage {
            continue;
        }
        match row.op {
            TraceOp::Write => {
                e[0] += 1;
                e[1] += row.size_bytes;
            }
            TraceOp::Read => {
                e[2] += 1;
                e[3] += row.size_bytes;
            }
            TraceOp::Delete => {}
        }
    }
    e
}

/// Replays any trace with --no-delete and checks that the replayed op counts
/// and bytes equal the trace's (the export → replay round trip uses this on
/// an exported trace).
pub fn assert_replays_exactly(dir: &Path, trace: &Path, target: &str, all_tiers: bool) -> serde_json::Value {
    let mut extra = vec!["--no-delete"];
    if all_tiers {
        extra.extend(["--tiers", "all"]);
    }
    let (r, j) = replay(dir, trace, target, &extra);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.expect("results json");
    let s = &j["summary"];
    let [w, wb, rd, rb] = expected(trace, all_tiers);
    assert_eq!(s["writes"]["rows"], w, "{s}");
    assert_eq!(s["writes"]["bytes"], wb, "{s}");
    assert_eq!(s["reads"]["rows"], rd, "{s}");
    assert_eq!(s["reads"]["bytes"], rb, "{s}");
    assert_eq!(j["workload"], "replay");
    assert_eq!(j["errors"]["count"], 0);
    assert_eq!(j["verify_errors"], 0);
    // Every byte the measured replay read was checked (the setup writes
    // are not reads).
    if j["target"]["kind"] != "null" {
        assert_eq!(j["verify"]["verified_bytes"], rb, "{}", j["verify"]);
    }
    j
}

#[test]
fn a_kv_cache_trace_replays_on_a_file_target_plain_and_zst() {
    let d = scratch();
    let target = format!("file://{}", d.path().join("data").display());
    for name in ["t.csv", "t.csv.zst"] {
        let trace = write_trace(d.path(), name, TRACE);
        let j = assert_replays_exactly(d.path(), &trace, &target, false);
        let s = &j["summary"];
        assert_eq!(s["rows_total"], 13);
        assert_eq!(s["rows_replayed"], 9);
        assert_eq!((s["rows_skipped_gpu_tier"].as_u64(), s["rows_skipped_cpu_tier"].as_u64()), (Some(3), Some(1)));
        assert_eq!(s["precreated_keys"], 1, "k3 is read before it is written");
        assert_eq!(s["precreated_bytes"], 700_001);
        assert!((s["trace_duration_s"].as_f64().unwrap() - 0.6).abs() < 1e-6, "{s}");
        assert_eq!(j["io_mode"]["direct"], true);
        // Series per (trace phase, op, tier).
        let series: Vec<(String, String, String)> = j["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["phase"].as_str().unwrap().into(),
                    x["op"].as_str().unwrap().into(),
                    x["tier"].as_str().unwrap().into(),
                )
            })
            .collect();
        for want in [("decode", "read"), ("prefill", "write"), ("evict", "write"), ("setup", "write")] {
            assert!(
                series.iter().any(|(p, o, t)| (p.as_str(), o.as_str()) == want && t == "storage"),
                "{want:?} not in {series:?}"
            );
        }
        // The files are kv-cache.py's names and sizes, inside the work dir.
        let work = d.path().join("data/mlpdrive/kvcache");
        assert_eq!(std::fs::metadata(work.join("k1.npy")).unwrap().len(), 4096);
        assert_eq!(std::fs::metadata(work.join("k2.npy")).unwrap().len(), 2_500_000);
        assert_eq!(std::fs::metadata(work.join("k3.npy")).unwrap().len(), 900_000);
        std::fs::remove_dir_all(d.path().join("res")).unwrap();
    }
}

#[test]
fn every_tier_replays_on_the_emulated_device() {
    let d = scratch();
    let trace = write_trace(d.path(), "t.csv", TRACE);
    let j = assert_replays_exactly(d.path(), &trace, "emu://ci-fast", true);
    assert_eq!(j["target"]["kind"], "emu");
    assert_eq!(j["summary"]["tiers"], "all");
    assert_eq!(j["summary"]["rows_replayed"], 13);
    let tiers: Vec<&str> = j["series"].as_array().unwrap().iter().map(|x| x["tier"].as_str().unwrap()).collect();
    for t in ["gpu", "cpu", "storage"] {
        assert!(tiers.contains(&t), "{tiers:?}");
    }
}

#[test]
fn a_small_capacity_deletes_least_recently_used_keys() {
    let d = scratch();
    let trace = write_trace(d.path(), "t.csv", TRACE);
    let target = format!("file://{}", d.path().join("data").display());
    // 3 MiB: k3 (700,001, pre-created) and k1 (1,310,720) fit; k2
    // (2,500,000) needs both gone (k3 is the least recently used), so the
    // reads of k1 and k3 that follow are misses; k3's rewrite then needs k2
    // gone.
    let (r, j) = replay(d.path(), &trace, &target, &["--capacity", "3MiB"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let s = &j.unwrap()["summary"];
    assert_eq!(s["capacity_bytes"], 3 << 20);
    assert_eq!(s["deletes_inferred"], 3, "{s}");
    assert_eq!(s["deletes_done"], 3, "{s}");
    assert_eq!(s["reads_missed"], 2, "{s}");
    assert_eq!(s["reads"]["rows"], 3, "{s}");
    assert!(s["peak_live_bytes"].as_u64().unwrap() <= 3 << 20, "{s}");
    let work = d.path().join("data/mlpdrive/kvcache");
    assert!(!work.join("k2.npy").exists());
    assert!(work.join("k1.npy").exists() && work.join("k3.npy").exists());
}

#[test]
fn speedup_paces_the_replay_and_reports_the_lag() {
    let d = scratch();
    let trace = write_trace(d.path(), "t.csv", TRACE);
    let (r, j) = replay(d.path(), &trace, "emu://ci-fast", &["--no-delete", "--speedup", "4"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let s = &j.unwrap()["summary"];
    assert_eq!(s["speedup"], 4.0);
    // The last row is 0.6 s into the trace: at 4× it is issued no earlier
    // than 0.15 s after the start, so the replay lasted at least that long.
    assert!(s["achieved_duration_s"].as_f64().unwrap() >= 0.15, "{s}");
    assert!(s["pacing_lag_s_max"].as_f64().is_some(), "{s}");
}

#[test]
fn a_bad_row_stops_with_its_line_number_or_is_skipped_and_counted() {
    let d = scratch();
    let bad = TRACE.replace("1700000000.200000,Write,2500000", "1700000000.200000,Write,2.5MB");
    let bad =
        bad.replace("1700000000.600000,Read,900000,Tier-2,k3,Decode", "1700000000.600000,Copy,900000,Tier-2,k3,Decode");
    let trace = write_trace(d.path(), "bad.csv", &bad);
    let target = format!("file://{}", d.path().join("data").display());
    let (r, j) = replay(d.path(), &trace, &target, &["--no-delete"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("line 5") && r.stderr.contains("Object_Size_Bytes"), "{}", r.show());
    assert!(j.is_none());
    assert!(tree(d.path()).iter().all(|p| p.starts_with("bad.csv")), "nothing written: {:?}", tree(d.path()));

    let (r, j) = replay(d.path(), &trace, &target, &["--no-delete", "--skip-bad-rows"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let s = &j.unwrap()["summary"];
    assert_eq!(s["rows_bad"], 2);
    let quoted = s["bad_rows_first"].as_array().unwrap();
    assert!(quoted[0].as_str().unwrap().contains("line 5"), "{quoted:?}");
    assert!(quoted[1].as_str().unwrap().contains("line 12") && quoted[1].as_str().unwrap().contains("Operation"));
    // k2's write was skipped, so its read is a read of a never-written key:
    // pre-created.
    assert_eq!(s["precreated_keys"], 2, "{s}");
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let d = scratch();
    let trace = write_trace(d.path(), "t.csv", TRACE);
    let t = trace.to_str().unwrap();
    let target = format!("file://{}", d.path().join("data").display());
    for (args, want) in [
        (vec!["replay", t, "--target", &target], "--capacity"),
        (vec!["replay", t, "--target", &target, "--no-delete", "--capacity", "1GiB"], "cannot be used with"),
        (vec!["replay", t, "--target", &target, "--capacity", "lots"], "--capacity"),
        (vec!["replay", t, "--target", &target, "--no-delete", "--speedup", "0"], "--speedup"),
        (vec!["replay", t, "--target", &target, "--no-delete", "--tiers", "gpu"], "storage"),
        (vec!["replay", "missing.csv", "--target", &target, "--no-delete"], "missing.csv"),
        (vec!["replay", t, "--target", &target, "--capacity", "600000"], "pre-creating"),
    ] {
        let r = mlpdrive(d.path(), &args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(want), "{args:?}: {}", r.show());
    }
    let only_gpu = write_trace(
        d.path(),
        "g.csv",
        "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase\n1,Write,10,Tier-0,a,Prefill\n",
    );
    let r = mlpdrive(d.path(), &["replay", only_gpu.to_str().unwrap(), "--target", &target, "--no-delete"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("nothing to replay") && r.stderr.contains("--tiers all"), "{}", r.show());
    assert!(tree(d.path()).iter().all(|p| p.ends_with("t.csv") || p.ends_with("g.csv")), "{:?}", tree(d.path()));
}

#[test]
fn io_errors_are_counted_and_exit_1() {
    let d = scratch();
    let trace = write_trace(d.path(), "t.csv", TRACE);
    let p = d.path().join("dev.yaml");
    std::fs::write(
        &p,
        "description: failing reads\ncapacity: 1GiB\nchannels: 4\nlatency:\n  read: {fixed: 20us}\n  write: {fixed: 20us}\n  flush: {fixed: 20us}\n  trim: {fixed: 5us}\nchannel_bandwidth: {read: 2GB/s, write: 2GB/s}\ndevice_bandwidth: {read: 8GB/s, write: 8GB/s}\nfaults:\n  error_probability: {read: 1.0, write: 0, flush: 0, trim: 0}\n",
    )
    .unwrap();
    let target = format!("emu://{}", p.display());
    let (r, j) = replay(d.path(), &trace, &target, &["--no-delete", "--continue-on-error"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "failed");
    let reads = j["summary"]["reads"].clone();
    assert!(j["errors"]["count"].as_u64().unwrap() >= 4, "{}", j["errors"]);
    assert_eq!(reads["rows"], 0, "{reads}");
    assert_eq!(reads["rows_failed"], 5, "{reads}");
}

#[test]
fn the_null_target_replays_the_same_counts_without_verification() {
    let d = scratch();
    let trace = write_trace(d.path(), "t.csv.zst", TRACE);
    let j = assert_replays_exactly(d.path(), &trace, "null://", false);
    assert_eq!(j["verify"]["enabled"], false);
    assert!(j["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("null://")), "{}", j["notes"]);
}
