//! The `kvcache` workload end to end: the smoke preset on a real O_DIRECT
//! file target (reference JSON names with plausible values, objects named
//! `<key>.npy`, verified reads), trace export, trace-only mode and bad
//! input.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn results_of(dir: &Path) -> serde_json::Value {
    read_json(&only_run_dir(&dir.join("res")).join("results.json"))
}

fn trace_lines(path: &Path) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dec = zstd::stream::read::Decoder::new(f).expect("zstd trace");
    BufReader::new(dec).lines().map(|l| l.unwrap()).collect()
}

/// numpy loads each entry file: the header is 128 bytes, and its dtype and
/// shape account for every payload byte (shape × itemsize + 128 = file size).
fn npy_files_load_with_numpy(files: &[std::path::PathBuf]) {
    let has_numpy = Command::new("python3").args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success());
    if !has_numpy {
        eprintln!("SKIPPED: loading kvcache .npy files needs python3 with numpy (.ci/run installs it)");
        return;
    }
    let script = "import sys, numpy\n\
                  for f in sys.argv[1:]:\n\
                  \x20   with open(f, 'rb') as h:\n\
                  \x20       v = numpy.lib.format.read_magic(h)\n\
                  \x20       numpy.lib.format.read_array_header_1_0(h)\n\
                  \x20       at = h.tell()\n\
                  \x20   a = numpy.load(f)\n\
                  \x20   print(v[0], at, a.dtype.str, a.shape, a.size * a.itemsize)\n";
    let o = Command::new("python3").arg("-c").arg(script).args(files).output().expect("python3");
    assert!(o.status.success(), "numpy could not load the entries:\n{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), files.len(), "{out}");
    for (f, l) in files.iter().zip(&lines) {
        let len = std::fs::metadata(f).unwrap().len();
        let w: Vec<&str> = l.split(' ').collect();
        assert_eq!((w[0], w[1], w[2]), ("1", "128", "<f2"), "{f:?}: {l}");
        let payload: u64 = w.last().unwrap().parse().unwrap();
        assert_eq!(payload + 128, len, "{f:?}: shape × itemsize + 128 = file size ({l})");
    }
}

#[test]
fn smoke_preset_on_a_direct_file_target_writes_the_reference_json_and_a_trace() {
    let d = scratch();
    let trace = d.path().join("kv.csv.zst");
    let r = run_in(
        d.path(),
        "kvcache",
        &["--duration", "4s", "--set", &format!("trace.path={}", trace.display()), "--set", "trace.deletes=true"],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["workload"], "kvcache");
    assert_eq!(j["status"], "ok", "{}", j["errors"]);
    assert_eq!(j["io_mode"]["direct"], true);
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "storage reads were verified");
    let s = &j["summary"];
    // kv-cache.py's top-level names.
    for k in [
        "requests_completed",
        "total_tokens_generated",
        "total_storage_io_latency",
        "total_generation_latency",
        "end_to_end_latencies",
        "storage_latencies",
        "generation_latencies",
        "prefill_latencies",
        "decode_latencies",
        "throughput_timeline",
        "multi_turn_cache_hits",
        "multi_turn_cache_misses",
        "seed",
        "summary",
    ] {
        assert!(s.get(k).is_some(), "missing {k}");
    }
    assert_eq!(s["seed"], 42);
    let n = s["requests_completed"].as_u64().unwrap();
    assert!(n > 5, "{n} requests in 4 s");
    assert_eq!(s["end_to_end_latencies"].as_array().unwrap().len() as u64, n);
    let inner = &s["summary"];
    for k in [
        "total_requests",
        "total_tokens",
        "elapsed_time",
        "avg_throughput_tokens_per_sec",
        "total_storage_io_time",
        "storage_throughput_tokens_per_sec",
        "requests_per_second",
        "qos_metrics",
        "prefix_cache_stats",
        "multi_turn_stats",
    ] {
        assert!(inner.get(k).is_some(), "missing summary.{k}");
    }
    for p in ["mean", "p50", "p95", "p99", "p999", "p9999"] {
        assert!(inner["end_to_end_latency_ms"][p].as_f64().is_some(), "end_to_end_latency_ms.{p}");
    }
    let elapsed = inner["elapsed_time"].as_f64().unwrap();
    assert!((3.9..4.5).contains(&elapsed), "elapsed {elapsed}");
    assert!(inner["storage_throughput_tokens_per_sec"].as_f64().unwrap() > 0.0);
    let cs = &inner["cache_stats"];
    for t in ["gpu", "cpu", "storage"] {
        for k in ["kv_bytes_written_gb", "kv_bytes_read_gb", "read_bandwidth_gbps", "write_bandwidth_gbps"] {
            assert!(cs[format!("tier_{t}_{k}")].as_f64().is_some(), "tier_{t}_{k}");
        }
    }
    assert!(cs["tier_storage_kv_bytes_written_gb"].as_f64().unwrap() > 0.0, "{cs}");
    assert!(cs["tier_cpu_kv_bytes_read_gb"].as_f64().unwrap() > 0.0, "{cs}");
    for k in [
        "cpu_read_p95_ms",
        "storage_write_p50_ms",
        "storage_write_p9999_ms",
        "storage_read_device_p95_ms",
        "storage_write_device_p99_ms",
        "storage_read_host_p50_ms",
    ] {
        let v = cs[k].as_f64().unwrap_or_else(|| panic!("missing cache_stats.{k}: {cs}"));
        assert!((0.0..60_000.0).contains(&v), "{k} = {v}");
    }
    assert!(cs["storage_read_device_p95_ms"].as_f64().unwrap() > 0.0);
    let hit = cs["cache_hit_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hit));
    assert!(["PASS", "FAIL"].contains(&cs["storage_health"]["overall_status"].as_str().unwrap()));
    assert!(cs["read_iops"].as_u64().unwrap() > 0 && cs["write_iops"].as_u64().unwrap() > 0);
    let x = &s["extras"];
    assert_eq!(x["accounting_ok"], true);
    assert_eq!(x["io_errors"], 0);
    // The storage series reach the standard results.
    let series = j["series"].as_array().unwrap();
    assert!(series.iter().any(|e| e["tier"] == "storage" && e["op"] == "read" && e["phase"] == "decode"), "{series:?}");
    assert!(series.iter().any(|e| e["tier"] == "storage" && e["op"] == "write"), "{series:?}");
    // Objects are `<key>.npy` files of the exact entry size.
    let dir = d.path().join("data/mlpdrive/kvcache");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(!files.is_empty());
    for f in &files {
        let name = f.file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".npy"), "{name}");
        let len = f.metadata().unwrap().len();
        assert_eq!((len - 128) % (24_576), 0, "{name}: tokens × 24 KiB + 128-byte header, got {len}");
    }
    npy_files_load_with_numpy(&files.iter().take(3).map(|f| f.path()).collect::<Vec<_>>());
    // The trace: the reference's header, rows in time order, the count the results give.
    let lines = trace_lines(&trace);
    assert_eq!(lines[0], "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase");
    assert_eq!((lines.len() - 1) as u64, x["trace"]["rows"].as_u64().unwrap());
    let mut last = 0.0;
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 6, "{l}");
        let ts: f64 = f[0].parse().unwrap();
        assert!(ts >= last, "rows in timestamp order: {l}");
        last = ts;
        assert!(["Read", "Write", "Delete"].contains(&f[1]), "{l}");
        assert!(["Tier-0", "Tier-1", "Tier-2"].contains(&f[3]), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains(",Write,") && l.contains(",Tier-2,") && l.ends_with(",Evict")));
    let summary = std::fs::read_to_string(only_run_dir(&d.path().join("res")).join("summary.txt")).unwrap();
    assert!(summary.contains("kvcache:") && summary.contains("storage"), "{summary}");
}

#[test]
fn trace_only_mode_runs_in_logical_time_and_writes_no_entries() {
    let d = scratch();
    let trace = d.path().join("kv.csv");
    let r = run_in(
        d.path(),
        "kvcache/mlperf-option1",
        &[
            "--set",
            "trace.only=true",
            "--set",
            &format!("trace.path={}", trace.display()),
            "--set",
            "users=50",
            "--duration",
            "20s",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    let s = &j["summary"];
    assert_eq!(s["extras"]["mode"], "trace-only");
    let cs = &s["summary"]["cache_stats"];
    assert!(cs.get("storage_read_p95_ms").is_none(), "no latencies are made up in trace-only mode: {cs}");
    assert!(cs["tier_storage_kv_bytes_read_gb"].as_f64().unwrap() > 0.0);
    assert_eq!(s["summary"]["storage_throughput_tokens_per_sec"], 0.0);
    assert!(s["requests_completed"].as_u64().unwrap() > 100);
    let rows = std::fs::read_to_string(&trace).unwrap();
    assert!(rows.lines().count() > 1000);
    assert!(rows.contains(",Tier-2,"));
    assert!(!d.path().join("data/mlpdrive/kvcache").exists(), "no entries written");
}

#[test]
fn bad_kvcache_keys_are_usage_errors_that_name_the_key() {
    let d = scratch();
    for (set, needle) in [
        ("users=0", "`users`"),
        ("model=gpt-9", "unknown model 'gpt-9'"),
        ("num_users=4", "num_users"),
        ("decode_only=true", "mutually exclusive"),
        ("cpu_mem_gb=100000", "holds real memory"),
    ] {
        let mut extra = vec!["--set", set];
        if set == "decode_only=true" {
            extra.extend(["--set", "prefill_only=true"]);
        }
        let r = run_in(d.path(), "kvcache", &extra);
        assert_eq!(r.code, 2, "{set}: {}", r.show());
        assert!(r.stderr.contains(needle), "{set}: {}", r.stderr);
    }
    assert!(!d.path().join("res").exists() && !d.path().join("data").exists(), "nothing written");
}

#[test]
fn a_full_device_fails_the_run_naming_the_entry() {
    let d = scratch();
    let results = d.path().join("res");
    let r = mlpdrive(
        d.path(),
        &[
            "run",
            "kvcache",
            "--quiet",
            "--target",
            "emu://ci-fast?size=64MiB",
            "--duration",
            "3s",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["status"], "failed");
    let first = j["errors"]["first"].as_str().unwrap();
    assert!(
        first.contains("No space left on device") && first.contains("kvcache/") && first.contains(".npy"),
        "{first}"
    );
    assert!(j["summary"]["extras"]["io_errors"].as_u64().unwrap() >= 1);
}

#[test]
fn a_burstgpt_input_drives_the_run_and_a_bad_one_is_a_usage_error() {
    let d = scratch();
    let csv = d.path().join("b.csv");
    std::fs::write(
        &csv,
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n0,ChatGPT,100,20,120,Conversation log\n1,ChatGPT,200,40,240,Conversation log\n",
    )
    .unwrap();
    let set = format!("burst_trace_path={}", csv.display());
    let r = run_in(
        d.path(),
        "kvcache",
        &[
            "--set",
            "use_burst_trace=true",
            "--set",
            &set,
            "--set",
            "replay_cycles=3",
            "--set",
            "trace_speedup=0",
            "--duration",
            "30s",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["summary"]["requests_completed"], 6, "3 complete passes of 2 rows");
    assert!(j["summary"]["summary"]["elapsed_time"].as_f64().unwrap() < 30.0, "ended with the last pass");

    let bad = d.path().join("bad.csv");
    std::fs::write(&bad, "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n0,x,ten,1,1,y\n")
        .unwrap();
    let e = scratch();
    let set = format!("burst_trace_path={}", bad.display());
    let r = run_in(e.path(), "kvcache", &["--set", "use_burst_trace=true", "--set", &set]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("line 2") && r.stderr.contains("Request tokens"), "{}", r.stderr);
    assert!(tree(e.path()).is_empty(), "nothing written");
}

#[test]
fn trace_only_runs_with_the_same_seed_write_byte_identical_traces() {
    let d = scratch();
    let run = |name: &str, seed: &str| {
        let trace = d.path().join(name);
        let results = d.path().join(format!("res-{name}"));
        let r = mlpdrive(
            d.path(),
            &[
                "run",
                "kvcache",
                "--quiet",
                "--target",
                "null://",
                "--results",
                results.to_str().unwrap(),
                "--seed",
                seed,
                "--duration",
                "60s",
                "--set",
                "trace.only=true",
                "--set",
                &format!("trace.path={}", trace.display()),
                "--set",
                "users=30",
                "--set",
                "enable_rag=true",
            ],
        );
        assert_eq!(r.code, 0, "{}", r.show());
        std::fs::read(&trace).unwrap()
    };
    let a = run("a.csv", "7");
    let b = run("b.csv", "7");
    let c = run("c.csv", "8");
    assert!(a.len() > 10_000, "{} bytes", a.len());
    assert!(a == b, "same seed, same trace, timestamps included (logical time)");
    assert!(a != c, "another seed, another trace");
}

#[test]
fn on_a_virtual_clock_the_same_seed_gives_identical_results_and_traces() {
    let d = scratch();
    let run = |n: u32| {
        let trace = d.path().join(format!("t{n}.csv"));
        let results = d.path().join(format!("res{n}"));
        let r = mlpdrive(
            d.path(),
            &[
                "run",
                "kvcache",
                "--quiet",
                "--target",
                "emu://nvme-gen4?clock=virtual&store=none",
                "--results",
                results.to_str().unwrap(),
                "--seed",
                "5",
                "--duration",
                "8s",
                "--set",
                &format!("trace.path={}", trace.display()),
            ],
        );
        assert_eq!(r.code, 0, "{}", r.show());
        let mut j = read_json(&only_run_dir(&results).join("results.json"));
        j["summary"]["extras"]["trace"]["path"] = serde_json::Value::Null;
        (j, std::fs::read(&trace).unwrap())
    };
    let (a, ta) = run(1);
    let (b, tb) = run(2);
    assert_eq!(a["summary"]["extras"]["cpu_model"]["modelled"], true, "no real copies on a virtual clock");
    // store=none keeps only generated blocks: no NumPy header there, and the results say so.
    let notes = a["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap().contains("kvcache.npy_header")), "{notes:?}");
    assert!(a["summary"]["requests_completed"].as_u64().unwrap() > 30);
    assert_eq!(a["summary"], b["summary"], "simulated runs are deterministic");
    assert_eq!(a["series"], b["series"]);
    assert!(ta == tb && ta.len() > 1000, "byte-identical traces");
}

/// Issue 3's round trip: a trace exported by a real run replays with the
/// same storage op counts and bytes (reads verified on the replay's target).
#[test]
fn an_exported_trace_replays_with_the_same_storage_ops_and_bytes() {
    let d = scratch();
    let trace = d.path().join("kv.csv");
    let r = run_in(
        d.path(),
        "kvcache",
        &["--duration", "3s", "--set", &format!("trace.path={}", trace.display()), "--set", "users=4"],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let rows = std::fs::read_to_string(&trace).unwrap();
    assert!(rows.contains(",Write,") && rows.contains(",Tier-2,"), "the run reached storage");
    let e = scratch();
    let target = format!("file://{}", e.path().join("replay-data").display());
    crate::replay::assert_replays_exactly(e.path(), &trace, &target, false);
}
