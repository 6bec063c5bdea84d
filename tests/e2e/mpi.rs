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

/// A small training set for MPI jobs: 40 one-sample files of ~64 KiB,
/// batch 1, so `accelerators` accelerators take 40 / accelerators steps.
fn training_set(accelerators: u32, compute_s: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "dataset.num_files_train=40",
        "dataset.record_length_bytes=65536",
        "dataset.record_length_bytes_stdev=16384",
        "allow_short_epochs=true",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("train.computation_time={compute_s}"));
    v.push(format!("accelerators={accelerators}"));
    v.into_iter().flat_map(|kv| ["--set".to_string(), kv]).collect()
}

/// `mpirun -np N mlpdrive datagen training-smoke` of the small set.
fn datagen_on_ranks(dir: &Path, target: &str, n: u32, set: &[String]) -> Run {
    let mut a: Vec<String> = ["datagen", "training-smoke", "--quiet", "--target", target].map(String::from).to_vec();
    a.extend(set.iter().cloned());
    mpirun(dir, &[(n, a)])
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Training on `n` ranks of one accelerator each: datagen shared by rank,
/// every file read once per epoch by the ranks together, DLIO's
/// aggregation (AU mean, throughput sum), merged histograms.
fn training_on(n: u32) {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let target = format!("file://{}", data.display());
    let set = training_set(n, "0.002");
    let g = datagen_on_ranks(tmp.path(), &target, n, &set);
    assert_eq!(g.code, 0, "{}", g.show());
    assert!(g.stdout.contains("40 files written, 0 kept (already valid)"), "{}", g.show());
    assert!(g.stdout.contains(&format!("by {n} MPI ranks")), "{}", g.show());
    assert_eq!(g.stdout.matches("datagen ").count(), 1, "one line, rank 0's: {}", g.show());
    let train = data.join("mlpdrive/data/training-smoke/train");
    assert_eq!(std::fs::read_dir(&train).map(|d| d.count()).ok(), Some(40), "{}", g.show());

    let mut a = args(tmp.path(), "training-smoke", &target, &[]);
    a.extend(set);
    let run = mpirun(tmp.path(), &[(n, a)]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(run.stdout.matches("status:").count(), 1, "{}", run.show());
    let dir = run_dir(tmp.path());
    let merged = read_json(&dir.join("results.json"));
    let ranks: Vec<serde_json::Value> = (0..n).map(|r| read_json(&dir.join(format!("rank-{r}.json")))).collect();
    let s = &merged["summary"];
    assert_eq!(merged["status"], "ok", "{}", run.show());
    assert_eq!((s["mpi_ranks"].as_u64(), s["num_accelerators"].as_u64()), (Some(n as u64), Some(n as u64)));
    assert_eq!(s["epochs_completed"], 2);
    assert!(s.get("hosted_accelerators").is_none(), "the merged summary covers every rank");
    let dataset = s["dataset_bytes"].as_u64().unwrap();
    for (r, own) in ranks.iter().enumerate() {
        let r = r as u64;
        assert_eq!(own["summary"]["hosted_accelerators"], serde_json::json!([r, r + 1]));
        assert_eq!(own["summary"]["epochs_completed"], 2, "rank {r}");
    }
    for e in 0..2 {
        // Each rank read its own shard; together, every byte once.
        let per: Vec<u64> =
            ranks.iter().map(|r| r["summary"]["measured"]["per_epoch"][e]["bytes_read"].as_u64().unwrap()).collect();
        assert!(per.iter().all(|b| *b > 0 && *b < dataset), "epoch {e}: {per:?} of {dataset}");
        assert_eq!(per.iter().sum::<u64>(), dataset, "epoch {e}: the ranks' shards cover the data set once");
        assert_eq!(s["measured"]["per_epoch"][e]["bytes_read"].as_u64(), Some(dataset));
        assert_eq!(s["measured"]["per_epoch"][e]["samples"], 40);
        // DLIO: AU is the mean over ranks, throughput the sum.
        let au: Vec<f64> = ranks.iter().map(|r| f(&r["summary"]["metric"]["train_au_percentage"][e])).collect();
        let thr: Vec<f64> =
            ranks.iter().map(|r| f(&r["summary"]["metric"]["train_throughput_samples_per_second"][e])).collect();
        let got_au = f(&s["metric"]["train_au_percentage"][e]);
        let got_thr = f(&s["metric"]["train_throughput_samples_per_second"][e]);
        assert!((got_au - au.iter().sum::<f64>() / n as f64).abs() < 1e-9, "epoch {e}: AU {got_au} vs {au:?}");
        assert!((got_thr - thr.iter().sum::<f64>()).abs() < 1e-9, "epoch {e}: throughput {got_thr} vs {thr:?}");
    }
    // Reads: the sum of the ranks', pooled histograms.
    let reads: u64 = ranks.iter().map(|r| series(r, "measure", "read")["ops"].as_u64().unwrap()).sum();
    assert_eq!(series(&merged, "measure", "read")["ops"].as_u64(), Some(reads));
    assert_eq!(s["measured"]["read"]["ops"].as_u64(), Some(reads));
    let loads: u64 =
        ranks.iter().map(|r| r["summary"]["measured"]["batch_load_latency_us"]["count"].as_u64().unwrap()).sum();
    assert_eq!(s["measured"]["batch_load_latency_us"]["count"].as_u64(), Some(loads));
    assert_eq!(loads, 2 * 40, "one batch load per step per accelerator");
    assert!(merged["verify"]["verified_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn training_on_two_ranks_shards_files_by_rank_and_aggregates_as_dlio() {
    if !have_mpirun("training_on_two_ranks_shards_files_by_rank_and_aggregates_as_dlio") {
        return;
    }
    training_on(2);
}

#[test]
fn training_on_four_ranks_shards_files_by_rank_and_aggregates_as_dlio() {
    if !have_mpirun("training_on_four_ranks_shards_files_by_rank_and_aggregates_as_dlio") {
        return;
    }
    training_on(4);
}

#[test]
fn training_ranks_step_together_so_the_slowest_rank_paces_everyone() {
    if !have_mpirun("training_ranks_step_together_so_the_slowest_rank_paces_everyone") {
        return;
    }
    let tmp = scratch();
    let data = tmp.path().join("data");
    let target = format!("file://{}", data.display());
    let g = datagen_on_ranks(tmp.path(), &target, 2, &training_set(2, "0.002"));
    assert_eq!(g.code, 0, "{}", g.show());
    // Rank 1 computes 20 ms per step, rank 0 1 ms: 20 steps per epoch.
    let mut fast = args(tmp.path(), "training-smoke", &target, &["--set", "train.epochs=1"]);
    fast.extend(training_set(2, "0.001"));
    let mut slow = args(tmp.path(), "training-smoke", &target, &["--set", "train.epochs=1"]);
    slow.extend(training_set(2, "0.020"));
    let run = mpirun(tmp.path(), &[(1, fast), (1, slow)]);
    assert_eq!(run.code, 0, "{}", run.show());
    let dir = run_dir(tmp.path());
    let r0 = read_json(&dir.join("rank-0.json"));
    let r1 = read_json(&dir.join("rank-1.json"));
    let wall0 = f(&r0["summary"]["measured"]["per_epoch"][0]["wall_s"]);
    let compute1 = 20.0 * 0.020;
    // With a barrier every step, rank 0 cannot end its epoch before rank 1
    // has computed all 20 steps (alone it would take about 20 × 1 ms).
    assert!(wall0 >= 0.9 * compute1, "rank 0's epoch took {wall0} s, rank 1 computed {compute1} s");
    // So rank 0 mostly waited: its AU is low, rank 1's high.
    let au0 = f(&r0["summary"]["metric"]["train_au_percentage"][0]);
    let au1 = f(&r1["summary"]["metric"]["train_au_percentage"][0]);
    assert!(au0 < au1, "AU rank 0 {au0} vs rank 1 {au1}");
}

#[test]
fn a_training_rank_without_its_data_fails_the_job_and_nobody_hangs() {
    if !have_mpirun("a_training_rank_without_its_data_fails_the_job_and_nobody_hangs") {
        return;
    }
    let tmp = scratch();
    let data = tmp.path().join("data");
    let target = format!("file://{}", data.display());
    let set = training_set(4, "0.002");
    let g = datagen_on_ranks(tmp.path(), &target, 4, &set);
    assert_eq!(g.code, 0, "{}", g.show());
    // Rank 2 of 4 points at an empty directory.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut good = args(tmp.path(), "training-smoke", &target, &[]);
    good.extend(set.clone());
    let mut bad = args(tmp.path(), "training-smoke", &format!("file://{}", empty.display()), &[]);
    bad.extend(set);
    let started = std::time::Instant::now();
    let run = mpirun(tmp.path(), &[(2, good.clone()), (1, bad), (1, good)]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
    assert_eq!(run.code, 1, "{}", run.show());
    let merged = read_json(&run_dir(tmp.path()).join("results.json"));
    assert_eq!(merged["status"], "failed");
    let first = merged["errors"]["first"].as_str().unwrap();
    assert!(first.starts_with("rank 2: ") && first.contains("is missing: generate the data set first"), "{first}");
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
fn training_accelerators_must_be_shared_evenly_by_the_ranks() {
    if !have_mpirun("training_accelerators_must_be_shared_evenly_by_the_ranks") {
        return;
    }
    let tmp = scratch();
    let mut a = args(tmp.path(), "training-smoke", "null://", &[]);
    a.extend(training_set(3, "0.002"));
    let run = mpirun(tmp.path(), &[(2, a)]);
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(
        run.stderr.contains("config key `accelerators`: 3 accelerators cannot be shared evenly by 2"),
        "{}",
        run.show()
    );
    assert!(!tmp.path().join("res").exists(), "a usage error writes no results");
}

/// vdb on `n` ranks: rank 0 writes the index, every rank searches that
/// file with its share of the queries; QPS adds up, recall covers all
/// queries, latency percentiles pool.
fn vdb_on(n: u32) {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let target = format!("file://{}", data.display());
    let mut a = args(tmp.path(), "vdb/vdb-smoke", &target, &["--set", "query_passes=2"]);
    a.extend(crate::vdb::SMALL.iter().map(|s| s.to_string()));
    // Each rank builds the index (a debug build is slow at it): keep it small.
    a.extend(["--set", "num_vectors=1000", "--set", "build_passes=1"].map(String::from));
    let run = mpirun(tmp.path(), &[(n, a)]);
    assert_eq!(run.code, 0, "{}", run.show());
    let dir = run_dir(tmp.path());
    let merged = read_json(&dir.join("results.json"));
    let ranks: Vec<serde_json::Value> = (0..n).map(|r| read_json(&dir.join(format!("rank-{r}.json")))).collect();
    let s = &merged["summary"];
    assert_eq!(merged["status"], "ok", "{}", run.show());
    assert_eq!(s["mpi_ranks"].as_u64(), Some(n as u64));
    // 100 queries × 2 passes, shared out in contiguous blocks.
    assert_eq!(s["queries"], 200);
    let mut next = 0;
    for (r, own) in ranks.iter().enumerate() {
        let q = &own["summary"]["hosted_queries"];
        assert_eq!(q[0].as_u64(), Some(next), "rank {r}");
        next = q[1].as_u64().unwrap();
        assert_eq!(own["summary"]["queries"].as_u64(), Some(next - q[0].as_u64().unwrap()), "rank {r}");
        assert!(f(&own["summary"]["recall_at_k"]) >= 0.8, "rank {r}: {}", own["summary"]);
    }
    assert_eq!(next, 200);
    let qps: f64 = ranks.iter().map(|r| f(&r["summary"]["throughput_qps"])).sum();
    assert!((f(&s["throughput_qps"]) - qps).abs() < 1e-6 * qps, "QPS is the ranks' sum");
    let recall: f64 =
        ranks.iter().map(|r| f(&r["summary"]["recall_at_k"]) * f(&r["summary"]["queries"])).sum::<f64>() / 200.0;
    assert!((f(&s["recall_at_k"]) - recall).abs() < 1e-12, "recall over all queries");
    let p99: Vec<f64> = ranks.iter().map(|r| f(&r["summary"]["p99_latency_ms"])).collect();
    let (lo, hi) = (p99.iter().copied().fold(f64::MAX, f64::min), p99.iter().copied().fold(0.0, f64::max));
    let got = f(&s["p99_latency_ms"]);
    assert!(got >= lo * 0.99 && got <= hi * 1.01, "pooled p99 {got} outside the ranks' [{lo}, {hi}]");
    // One index file, written once (by rank 0), read by every rank.
    assert!(data.join("mlpdrive/vdb/index_disk.index").is_file());
    let written = |r: &serde_json::Value| {
        r["series"].as_array().unwrap().iter().any(|x| x["phase"] == "index-write" && x["op"] == "write")
    };
    assert!(written(&ranks[0]) && ranks[1..].iter().all(|r| !written(r)), "only rank 0 writes the index");
    let reads: u64 = ranks.iter().map(|r| series(r, "measure", "read")["ops"].as_u64().unwrap()).sum();
    assert!(ranks.iter().all(|r| series(r, "measure", "read")["ops"].as_u64().unwrap() > 0));
    assert_eq!(series(&merged, "measure", "read")["ops"].as_u64(), Some(reads));
}

#[test]
fn vdb_on_two_ranks_splits_the_queries_over_one_index() {
    if !have_mpirun("vdb_on_two_ranks_splits_the_queries_over_one_index") {
        return;
    }
    vdb_on(2);
}

#[test]
fn vdb_on_four_ranks_splits_the_queries_over_one_index() {
    if !have_mpirun("vdb_on_four_ranks_splits_the_queries_over_one_index") {
        return;
    }
    vdb_on(4);
}

#[test]
fn replay_is_refused_under_mpirun_on_every_rank() {
    if !have_mpirun("replay_is_refused_under_mpirun_on_every_rank") {
        return;
    }
    let tmp = scratch();
    let trace = tmp.path().join("trace.csv");
    std::fs::write(&trace, "").unwrap();
    let res = tmp.path().join("res");
    let a: Vec<String> = ["replay", trace.to_str().unwrap(), "--target", "null://", "--no-delete", "--results"]
        .iter()
        .map(|s| s.to_string())
        .chain([res.to_str().unwrap().to_string()])
        .collect();
    let run = mpirun(tmp.path(), &[(2, a)]);
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(run.stderr.contains("mlpdrive replay does not run as an MPI job"), "{}", run.show());
    assert!(!res.exists(), "a usage error writes no results");
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
        // A rank whose short run did no storage op of that kind (a loaded
        // machine) has no P95; the aggregate is the max over those that do.
        let have: Vec<f64> = ranks.iter().filter_map(|r| r["summary"]["summary"]["cache_stats"][k].as_f64()).collect();
        match have.iter().copied().reduce(f64::max) {
            Some(want) => assert_eq!(s[k].as_f64(), Some(want), "{k} is the max over ranks"),
            None => assert!(s[k].is_null(), "{k}: no rank measured one, yet the aggregate is {}", s[k]),
        }
    }
    let reqs: u64 = ranks.iter().map(|r| r["summary"]["requests_completed"].as_u64().unwrap()).sum();
    assert_eq!(s["requests_completed"].as_u64().unwrap(), reqs);
}
