//! Many hosts, on one machine: the real binary as the ranks of a real
//! Open MPI job (`mpirun --allow-run-as-root --oversubscribe -np N`), with
//! 2 and 4 ranks. Each job carries mpirun's own `--timeout`, so a rank that
//! hangs fails the test instead of hanging it.
//!
//! Needs `mpirun` (Debian: openmpi-bin, with libopenmpi-dev for libmpi.so;
//! `.ci/run` installs them). Without it the tests skip loudly, or fail when
//! `MLPDRIVE_CI` is set.

use std::path::Path;
use std::process::Command;

use crate::common::{BIN, Run, read_json, scratch};

/// Whether mpirun is on PATH; if not, skips loudly (or fails under CI).
fn have_mpirun(test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("mpirun").is_file()));
    if !found {
        let msg = format!(
            "SKIPPED {test}: `mpirun` is not installed (apt-get install openmpi-bin libopenmpi-dev; .ci/run installs them)"
        );
        assert!(std::env::var_os("MLPDRIVE_CI").is_none(), "{msg}, and MLPDRIVE_CI is set: CI must not skip");
        eprintln!("{msg}");
    }
    found
}

/// `mpirun … -np N mlpdrive ARGS` for each (N, ARGS) app context (several
/// contexts are joined with `:`, Open MPI's MPMD syntax, so ranks can get
/// different arguments).
fn mpirun(cwd: &Path, apps: &[(u32, Vec<String>)]) -> Run {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "--timeout", "90"]).current_dir(cwd);
    for (i, (n, args)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", &n.to_string(), BIN]).args(args);
    }
    Run::from(cmd.output().expect("run mpirun"))
}

fn args(dir: &Path, preset: &str, target: &str, extra: &[&str]) -> Vec<String> {
    let results = dir.join("res");
    let mut v: Vec<String> = ["run", preset, "--quiet", "--target", target, "--results", results.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_dir(dir: &Path) -> std::path::PathBuf {
    crate::common::only_run_dir(&dir.join("res"))
}

fn series<'a>(r: &'a serde_json::Value, phase: &str, op: &str) -> &'a serde_json::Value {
    r["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["phase"] == phase && s["op"] == op)
        .unwrap_or_else(|| panic!("no {phase}/{op} series in {}", r["series"]))
}

#[test]
fn raw_on_two_ranks_gives_one_merged_result_and_a_file_per_rank() {
    if !have_mpirun("raw_on_two_ranks_gives_one_merged_result_and_a_file_per_rank") {
        return;
    }
    let tmp = scratch();
    let data = tmp.path().join("data");
    let target = format!("file://{}", data.display());
    let a = args(tmp.path(), "raw", &target, &["--set", "size=8MiB", "--set", "rw=randrw", "--duration", "1s"]);
    let run = mpirun(tmp.path(), &[(2, a)]);
    assert_eq!(run.code, 0, "{}", run.show());
    // One summary on stdout (rank 0's), not one per rank.
    assert_eq!(run.stdout.matches("status:").count(), 1, "{}", run.show());
    let dir = run_dir(tmp.path());
    let merged = read_json(&dir.join("results.json"));
    let ranks: Vec<serde_json::Value> = (0..2).map(|r| read_json(&dir.join(format!("rank-{r}.json")))).collect();
    assert_eq!(merged["status"], "ok");
    assert_eq!(merged["ranks"]["size"], 2);
    assert_eq!(merged["summary"]["jobs"], 2);
    assert_eq!(merged["summary"]["ranks"], 2);
    // Each rank drove its own file.
    for r in 0..2 {
        assert!(data.join(format!("mlpdrive/raw/rank{r}/job0.dat")).is_file(), "rank {r}'s file");
        assert_eq!(ranks[r]["summary"]["jobs"], 1);
        assert_eq!(merged["ranks"]["per_rank"][r]["file"], format!("rank-{r}.json"));
    }
    for op in ["read", "write"] {
        let m = series(&merged, "measure", op);
        let per: Vec<&serde_json::Value> = ranks.iter().map(|r| series(r, "measure", op)).collect();
        let ops: u64 = per.iter().map(|s| s["ops"].as_u64().unwrap()).sum();
        let bytes: u64 = per.iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
        assert!(ops > 0, "{op}: no ops");
        assert_eq!(m["ops"].as_u64().unwrap(), ops, "{op} ops are the ranks' sum");
        assert_eq!(m["bytes"].as_u64().unwrap(), bytes, "{op} bytes are the ranks' sum");
        assert_eq!(merged["summary"][op]["ops"].as_u64().unwrap(), ops);
        // A percentile of the pooled samples lies between the ranks' own
        // (within the histogram's 0.1 %); max is the largest max.
        let p99: Vec<f64> = per.iter().map(|s| s["latency_us"]["p99"].as_f64().unwrap()).collect();
        let got = m["latency_us"]["p99"].as_f64().unwrap();
        let (lo, hi) = (p99.iter().copied().fold(f64::MAX, f64::min), p99.iter().copied().fold(0.0, f64::max));
        assert!(got >= lo * 0.998 && got <= hi * 1.002, "{op} pooled p99 {got} outside the ranks' [{lo}, {hi}]");
        let max = per.iter().map(|s| s["latency_us"]["max"].as_f64().unwrap()).fold(0.0, f64::max);
        assert_eq!(m["latency_us"]["max"].as_f64().unwrap(), max);
    }
    let window = ranks.iter().map(|r| r["duration_s"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(merged["duration_s"].as_f64().unwrap(), window);
}

#[test]
fn checkpoint_on_four_ranks_makes_mpi_ranks_the_checkpoint_ranks() {
    if !have_mpirun("checkpoint_on_four_ranks_makes_mpi_ranks_the_checkpoint_ranks") {
        return;
    }
    let tmp = scratch();
    let data = tmp.path().join("data");
    let target = format!("file://{}", data.display());
    let a = args(tmp.path(), "checkpoint", &target, &["--set", "ranks=4"]);
    let run = mpirun(tmp.path(), &[(4, a)]);
    assert_eq!(run.code, 0, "{}", run.show());
    let dir = run_dir(tmp.path());
    let merged = read_json(&dir.join("results.json"));
    let s = &merged["summary"];
    assert_eq!(merged["status"], "ok");
    assert_eq!((s["ranks"].as_u64(), s["mpi_ranks"].as_u64()), (Some(4), Some(4)));
    assert!(s.get("hosted_ranks").is_none(), "the merged summary covers every rank");
    for phase in ["save", "load"] {
        let per = s[phase]["per_checkpoint"].as_array().unwrap();
        assert_eq!(per.len(), 2, "{phase}");
        for c in per {
            let d: Vec<f64> = c["rank_duration_s"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(d.len(), 4, "{phase}: one duration per checkpoint rank");
            assert!(d.iter().all(|x| *x > 0.0));
            // The checkpoint's duration is the slowest rank's, over all processes.
            assert_eq!(c["duration_s"].as_f64().unwrap(), d.iter().copied().fold(0.0, f64::max));
        }
    }
    // Each process ran one checkpoint rank and wrote that rank's files.
    let mut hosted = 0;
    for r in 0..4u64 {
        let own = read_json(&dir.join(format!("rank-{r}.json")));
        assert_eq!(own["summary"]["hosted_ranks"], serde_json::json!([r, r + 1]));
        hosted += own["summary"]["hosted_bytes"].as_u64().unwrap();
        assert_eq!(own["summary"]["save"]["per_checkpoint"][0]["rank_duration_s"].as_array().unwrap().len(), 1);
    }
    assert_eq!(hosted, s["checkpoint_bytes"].as_u64().unwrap(), "the shares add up to the checkpoint");
    let write_bytes: u64 = series(&merged, "save", "write")["bytes"].as_u64().unwrap();
    assert_eq!(write_bytes, 2 * hosted, "two saves of the whole checkpoint were written");
    let folder = s["checkpoint_folder"].as_str().unwrap();
    let files = std::fs::read_dir(data.join("mlpdrive").join(folder).join("global_epoch1_step1")).map(|d| d.count());
    assert_eq!(files.ok(), s["files_per_checkpoint"].as_u64().map(|n| n as usize), "{}", run.show());
}

#[test]
fn a_failing_rank_fails_the_job_with_its_own_error_and_nobody_hangs() {
    if !have_mpirun("a_failing_rank_fails_the_job_with_its_own_error_and_nobody_hangs") {
        return;
    }
    let tmp = scratch();
    // Rank 2 of 4 writes to an emulated device whose every write fails.
    let ok = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/devices/ci-fast.yaml")).unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, format!("{ok}\nfaults:\n  error_probability: {{read: 0, write: 1, flush: 0, trim: 0}}\n"))
        .unwrap();
    let extra = ["--set", "size=8MiB", "--set", "rw=randrw", "--duration", "1s"];
    let good = args(tmp.path(), "raw", "emu://ci-fast", &extra);
    let failing = args(tmp.path(), "raw", &format!("emu://{}", bad.display()), &extra);
    let started = std::time::Instant::now();
    let run = mpirun(tmp.path(), &[(2, good.clone()), (1, failing), (1, good)]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
    assert_eq!(run.code, 1, "{}", run.show());
    let merged = read_json(&run_dir(tmp.path()).join("results.json"));
    assert_eq!(merged["status"], "failed");
    let first = merged["errors"]["first"].as_str().unwrap();
    assert!(first.starts_with("rank 2: laying out raw/rank2/job0.dat"), "{first}");
    assert!(first.contains("Input/output error"), "{first}");
    let per = merged["ranks"]["per_rank"].as_array().unwrap();
    assert_eq!(per.len(), 4);
    for (r, line) in per.iter().enumerate() {
        assert_eq!(line["status"], "failed", "rank {r}: every rank stopped");
        if r != 2 {
            let e = line["first_error"].as_str().unwrap();
            assert!(e.contains("rank 2 failed"), "rank {r}: {e}");
        }
    }
}

#[test]
fn a_workload_not_split_by_rank_yet_is_refused_on_every_rank() {
    if !have_mpirun("a_workload_not_split_by_rank_yet_is_refused_on_every_rank") {
        return;
    }
    let tmp = scratch();
    let run = mpirun(tmp.path(), &[(2, args(tmp.path(), "vdb", "null://", &[]))]);
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(run.stderr.contains("does not run as an MPI job yet"), "{}", run.show());
    assert!(!tmp.path().join("res").exists(), "a usage error writes no results");
}

#[test]
fn kvcache_on_two_ranks_runs_two_clients_and_aggregates_as_mlperf_does() {
    if !have_mpirun("kvcache_on_two_ranks_runs_two_clients_and_aggregates_as_mlperf_does") {
        return;
    }
    let tmp = scratch();
    let data = tmp.path().join("data");
    let target = format!("file://{}", data.display());
    let run = mpirun(tmp.path(), &[(2, args(tmp.path(), "kvcache", &target, &["--duration", "2s"]))]);
    assert_eq!(run.code, 0, "{}", run.show());
    let dir = run_dir(tmp.path());
    let merged = read_json(&dir.join("results.json"));
    let ranks: Vec<serde_json::Value> = (0..2).map(|r| read_json(&dir.join(format!("rank-{r}.json")))).collect();
    let s = &merged["summary"];
    assert_eq!(merged["status"], "ok");
    // Rank r is client r: seed 42 + r, its own cache directory.
    assert_eq!(s["seeds"], serde_json::json!([42, 43]));
    for (r, own) in ranks.iter().enumerate() {
        assert_eq!(own["summary"]["seed"], 42 + r as u64);
        let entries = std::fs::read_dir(data.join(format!("mlpdrive/kvcache/rank_{r}"))).unwrap().count();
        assert!(entries > 0, "rank {r} stored entries under its own prefix");
    }
    let stats = |r: &serde_json::Value, k: &str| r["summary"]["summary"]["cache_stats"][k].as_f64().unwrap();
    let inner = |r: &serde_json::Value, k: &str| r["summary"]["summary"][k].as_f64().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    for k in ["tier_storage_read_bandwidth_gbps", "tier_storage_write_bandwidth_gbps"] {
        let want: f64 = ranks.iter().map(|r| stats(r, k)).sum();
        let got = s[k.trim_start_matches("tier_")].as_f64().unwrap();
        assert!(want > 0.0 && close(got, want), "{k}: {got} vs the ranks' sum {want}");
    }
    let tok: f64 = ranks.iter().map(|r| inner(r, "storage_throughput_tokens_per_sec")).sum();
    assert!(close(s["storage_throughput_tokens_per_sec"].as_f64().unwrap(), tok));
    for k in ["storage_read_device_p95_ms", "storage_write_device_p95_ms"] {
        let want = ranks.iter().map(|r| stats(r, k)).fold(0.0, f64::max);
        assert_eq!(s[k].as_f64().unwrap(), want, "{k} is the max over ranks");
    }
    let reqs: u64 = ranks.iter().map(|r| r["summary"]["requests_completed"].as_u64().unwrap()).sum();
    assert_eq!(s["requests_completed"].as_u64().unwrap(), reqs);
}
