//! `emu://…?clock=virtual` (a deterministic discrete-event simulation) and
//! `store=none` (no data bytes kept; reads regenerated from block
//! identities), through the real binary.

use std::path::Path;

use crate::common::*;

/// The results.json fields that describe the host and the moment, not the
/// simulation: they are the only ones allowed to differ between two runs
/// with the same seed (docs/devices.md lists the same set).
const RUN_METADATA: &[&str] = &["run_id", "started_at", "host", "command", "cpu_user_s", "cpu_sys_s", "peak_rss_bytes"];

/// Runs `mlpdrive run raw` in `dir` with the given target and extra args;
/// returns the run and its results.json (when one was written).
fn run_raw(dir: &Path, target: &str, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
    run_preset_on(dir, "raw", target, extra)
}

fn without_metadata(mut j: serde_json::Value) -> serde_json::Value {
    let o = j.as_object_mut().expect("results.json is an object");
    for k in RUN_METADATA {
        assert!(o.remove(*k).is_some(), "results.json has no `{k}` any more: update RUN_METADATA and the docs");
    }
    j
}

/// Two runs of the same simulation in separate directories; returns both
/// results with the run metadata removed.
fn twice(target: &str, extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let mut out = Vec::new();
    for _ in 0..2 {
        let d = scratch();
        let (r, j) = run_raw(d.path(), target, extra);
        assert_eq!(r.code, 0, "{target} {extra:?}\n{}", r.show());
        out.push(without_metadata(j.expect("results written")));
    }
    let b = out.pop().unwrap();
    (out.pop().unwrap(), b)
}

/// The fields of `a` that differ from `b` (top level), for a readable failure.
fn differing(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
    a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

const MINUTE: &[&str] = &["--duration", "60s", "--set", "size=16MiB"];

#[test]
fn a_simulated_minute_of_mixed_reads_and_writes_is_identical_on_every_run() {
    let target = "emu://nvme-gen4?clock=virtual&seed=7";
    let extra = [MINUTE, &["--set", "rw=randrw", "--set", "queue_depth=1"]].concat();
    let (a, b) = twice(target, &extra);
    assert!(a == b, "two runs differ in {:?}", differing(&a, &b));
    // And it is a real minute of verified I/O, not an empty result.
    assert_eq!(a["status"], "ok", "{a}");
    let window_s = a["duration_s"].as_f64().unwrap();
    assert!((60.0..60.1).contains(&window_s), "measured window {window_s} s");
    let points = a["timeseries"].as_array().unwrap();
    assert_eq!(points.len(), 60, "one point per simulated second");
    assert_eq!(points[59]["t_s"], 60.0);
    assert!(points.iter().all(|p| p["read_ops"].as_u64().unwrap() > 0 && p["write_ops"].as_u64().unwrap() > 0));
    let (reads, writes) = (&a["summary"]["read"], &a["summary"]["write"]);
    // The series covers whole seconds; the ops still in flight at the
    // deadline (at most the queue depth) complete after its last point.
    let in_series: u64 = points.iter().map(|p| p["read_ops"].as_u64().unwrap()).sum();
    let read_ops = reads["ops"].as_u64().unwrap();
    assert!(in_series <= read_ops && read_ops - in_series <= 1, "series {in_series} vs measured {read_ops} reads");
    assert!(a["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{a}");
    // Latencies are the profile's (nvme-gen4: reads p50 75 µs, writes 15 µs).
    let read_p50 = reads["latency_us"]["p50"].as_f64().unwrap();
    let write_p50 = writes["latency_us"]["p50"].as_f64().unwrap();
    assert!((65.0..90.0).contains(&read_p50), "read p50 {read_p50} µs");
    assert!((10.0..25.0).contains(&write_p50), "write p50 {write_p50} µs");
    assert!(a["io_mode"]["note"].as_str().unwrap().contains("virtual clock"), "{a}");

    // The comparison can fail: the same run on another device seed gives
    // other numbers (10 simulated seconds are enough to show it).
    let short = ["--duration", "10s", "--set", "size=16MiB", "--set", "rw=randrw", "--set", "queue_depth=1"];
    let by_seed: Vec<serde_json::Value> = ["7", "8"]
        .iter()
        .map(|seed| {
            let d = scratch();
            let (r, j) = run_raw(d.path(), &format!("emu://nvme-gen4?clock=virtual&seed={seed}"), &short);
            assert_eq!(r.code, 0, "{}", r.show());
            without_metadata(j.unwrap())
        })
        .collect();
    let diff = differing(&by_seed[0], &by_seed[1]);
    assert!(diff.contains(&"summary".to_string()), "seeds 7 and 8 gave the same summary: {diff:?}");
}

#[test]
fn a_simulated_minute_of_laid_out_sequential_reads_with_store_none_is_identical_on_every_run() {
    // rw=read lays the file out (writes) first, then reads and verifies it.
    let target = "emu://nvme-gen4?clock=virtual&seed=7&store=none";
    let extra = [MINUTE, &["--set", "rw=read", "--set", "queue_depth=2"]].concat();
    let (a, b) = twice(target, &extra);
    assert!(a == b, "two runs differ in {:?}", differing(&a, &b));
    assert_eq!(a["status"], "ok", "{a}");
    assert_eq!(a["timeseries"].as_array().unwrap().len(), 60);
    let series = a["series"].as_array().unwrap();
    assert!(series.iter().any(|s| s["phase"] == "layout" && s["op"] == "write"), "{a}");
    let read_bytes = a["summary"]["read"]["bytes"].as_u64().unwrap();
    assert!(read_bytes > 16 << 20, "read the file at least once: {read_bytes}");
    assert_eq!(a["verify"]["verified_bytes"].as_u64().unwrap(), read_bytes, "every byte read was verified");
}

#[test]
fn store_none_keeps_no_data_bytes() {
    // 1 GiB laid out and read back with verification: store=mem would hold
    // the whole GiB; store=none holds 40 bytes per 4 KiB block (10 MiB).
    let d = scratch();
    let target = "emu://nvme-gen4?clock=virtual&store=none";
    let (r, j) = run_raw(
        d.path(),
        target,
        &["--duration", "2s", "--set", "size=1GiB", "--set", "rw=randread", "--set", "queue_depth=4"],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["verify_errors"], 0);
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{j}");
    let rss = j["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss < 512 << 20, "peak RSS {rss} bytes for a 1 GiB object: the data was kept");
    assert!(r.stdout.contains("no bytes were kept"), "{}", r.show());
}

#[test]
fn store_none_still_catches_corrupted_reads() {
    let d = scratch();
    let profile = d.path().join("corrupting.yaml");
    std::fs::write(
        &profile,
        "description: corrupting test device\ncapacity: 1GiB\nchannels: 8\nlatency:\n  read: {fixed: 20us}\n  \
         write: {fixed: 20us}\n  flush: {fixed: 20us}\n  trim: {fixed: 5us}\n\
         channel_bandwidth: {read: 2GB/s, write: 2GB/s}\ndevice_bandwidth: {read: 8GB/s, write: 8GB/s}\n\
         faults:\n  read_corruption_probability: 0.01\n",
    )
    .unwrap();
    for clock in ["real", "virtual"] {
        let target = format!("emu://{}?store=none&clock={clock}", profile.display());
        let (r, j) = run_raw(d.path(), &target, &["--duration", "1s", "--set", "size=16MiB"]);
        assert_eq!(r.code, 1, "{clock}\n{}", r.show());
        let j = j.unwrap();
        assert!(j["verify_errors"].as_u64().unwrap() > 0, "{clock}: {j}");
        assert!(j["verify"]["first"].as_str().unwrap().contains("corrupt"), "{clock}: {j}");
        assert_eq!(j["errors"]["count"], 0, "corruption is not an I/O error: {j}");
    }
}

#[test]
fn a_hang_in_virtual_time_fails_the_run_as_stalled() {
    let d = scratch();
    let profile = d.path().join("hanging.yaml");
    std::fs::write(
        &profile,
        "description: hanging test device\ncapacity: 1GiB\nchannels: 8\nlatency:\n  read: {fixed: 20us}\n  \
         write: {fixed: 20us}\n  flush: {fixed: 20us}\n  trim: {fixed: 5us}\n\
         channel_bandwidth: {read: 2GB/s, write: 2GB/s}\ndevice_bandwidth: {read: 8GB/s, write: 8GB/s}\n\
         faults:\n  hang: {probability: 0.001, duration: 60min}\n",
    )
    .unwrap();
    // One op in flight: the first hang stops all progress. Without stall
    // detection in virtual time this run would wait an hour of simulated
    // time per hung op (and never end in wall time for the full 1 h run).
    let target = format!("emu://{}?clock=virtual&seed=3", profile.display());
    let (r, j) = run_raw(
        d.path(),
        &target,
        &[
            "--duration",
            "1h",
            "--set",
            "size=16MiB",
            "--set",
            "rw=randread",
            "--set",
            "queue_depth=1",
            "--set",
            "io.timeout=2s",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "failed");
    let first = j["errors"]["first"].as_str().unwrap();
    assert!(first.contains("stalled") && first.contains("2.0 s"), "{first}");
    // It stalled in the measured window, after some reads, long before 1 h.
    assert!(j["summary"]["read"]["ops"].as_u64().unwrap() > 0, "{j}");
    assert!(j["duration_s"].as_f64().unwrap() < 60.0, "{j}");
}

#[test]
fn several_jobs_on_a_virtual_clock_are_a_usage_error() {
    let d = scratch();
    let (r, j) = run_raw(d.path(), "emu://nvme-gen4?clock=virtual", &["--set", "jobs=2"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("config key `jobs`") && r.stderr.contains("jobs=1"), "{}", r.show());
    assert!(j.is_none() && tree(d.path()).is_empty(), "{:?}", tree(d.path()));
}

#[test]
fn a_zero_cost_profile_on_a_virtual_clock_is_a_usage_error() {
    let d = scratch();
    let (r, _) = run_raw(d.path(), "emu://ideal?clock=virtual", &["--duration", "1s"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("virtual time would never advance"), "{}", r.show());
    assert!(tree(d.path()).is_empty(), "{:?}", tree(d.path()));
}

#[test]
fn a_paced_replay_on_a_virtual_clock_is_exact_and_identical_on_every_run() {
    // Odd sizes (short final blocks) on store=none; pacing at trace time.
    let trace = "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase\n\
                 1700000000.100000,Write,1310720,Tier-2,k1,Prefill\n\
                 1700000000.200000,Write,700001,Tier-2,k2,Prefill\n\
                 1700000000.300000,Read,1310720,Tier-2,k1,Decode\n\
                 1700000000.600000,Read,700001,Tier-2,k2,Decode\n\
                 1700000002.000000,Read,1310720,Tier-2,k1,Decode\n";
    let mut runs = Vec::new();
    for _ in 0..2 {
        let d = scratch();
        std::fs::write(d.path().join("t.csv"), trace).unwrap();
        // Relative paths: the trace's path is part of the result (`source`,
        // `config`), so both runs name it the same way.
        let r = mlpdrive(
            d.path(),
            &[
                "replay",
                "t.csv",
                "--quiet",
                "--no-delete",
                "--speedup",
                "1",
                "--target",
                "emu://nvme-gen4?clock=virtual&store=none&seed=5",
                "--results",
                "res",
                "--output",
                "out.json",
            ],
        );
        assert_eq!(r.code, 0, "{}", r.show());
        runs.push(without_metadata(read_json(&d.path().join("out.json"))));
    }
    assert!(runs[0] == runs[1], "two replays differ in {:?}", differing(&runs[0], &runs[1]));
    let s = &runs[0]["summary"];
    assert_eq!(runs[0]["verify"]["verified_bytes"], 2 * 1310720 + 700001, "{}", runs[0]);
    // The last row is 1.9 s after the first: in simulated time the replay
    // issues it exactly then (no lag) and ends one read latency later.
    let achieved = s["achieved_duration_s"].as_f64().unwrap();
    assert!((1.9..1.91).contains(&achieved), "{s}");
    assert_eq!(s["pacing_lag_s_max"], 0.0, "{s}");
}
