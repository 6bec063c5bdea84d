//! Runs against the in-process emulated device (`emu://`): timing and faults
//! come from the device model, and every fault must surface as a counted
//! error or a verify error with exit code 1 — never a hang, never success.

use std::path::Path;

use crate::common::*;

const BASE_PROFILE: &str = "description: test device\ncapacity: 1GiB\nchannels: 8\nlatency:\n  read: {fixed: 20us}\n  write: {fixed: 20us}\n  flush: {fixed: 20us}\n  trim: {fixed: 5us}\nchannel_bandwidth: {read: 2GB/s, write: 2GB/s}\ndevice_bandwidth: {read: 8GB/s, write: 8GB/s}\n";

fn run_emu(dir: &Path, target: &str, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
    run_preset_on(dir, "raw-smoke", target, extra)
}

fn profile_with(dir: &Path, faults: &str) -> String {
    let p = dir.join("dev.yaml");
    std::fs::write(&p, format!("{BASE_PROFILE}{faults}")).unwrap();
    format!("emu://{}", p.display())
}

#[test]
fn builtin_profile_runs_and_verifies() {
    let d = scratch();
    let (r, j) = run_emu(d.path(), "emu://ci-fast?seed=7", &["--duration", "1s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["target"]["kind"], "emu");
    assert_eq!(j["io_mode"]["engine"], "emu");
    assert_eq!(j["verify_errors"], 0);
    assert!(j["summary"]["read"]["ops"].as_u64().unwrap() > 0);
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0);
    // Latency comes from the model: ci-fast reads have a 20 µs median.
    let p50 = j["summary"]["read"]["latency_us"]["p50"].as_f64().unwrap();
    assert!(p50 >= 15.0, "p50 {p50} µs is below the profile's latency");
    assert!(tree(d.path()).iter().all(|p| p.starts_with("res") || p.starts_with("out.json")), "{:?}", tree(d.path()));
}

#[test]
fn injected_read_errors_fail_the_run_with_a_count() {
    let d = scratch();
    let t = profile_with(d.path(), "faults:\n  error_probability: {read: 0.05, write: 0, flush: 0, trim: 0}\n");
    let (r, j) = run_emu(d.path(), &t, &["--duration", "1s", "--set", "continue_on_error=true"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "failed");
    assert!(j["errors"]["count"].as_u64().unwrap() > 10, "{j}");
    assert!(j["errors"]["first"].as_str().unwrap().contains("Input/output error"), "{j}");
    // --quiet (run_emu passes it) still says on stderr why the run failed.
    assert!(r.stderr.contains("mlpdrive: run failed: "), "{}", r.show());
    assert!(r.stderr.contains("I/O errors (first: ") && r.stderr.contains("Input/output error"), "{}", r.show());
}

#[test]
fn injected_read_corruption_is_caught_by_verification() {
    let d = scratch();
    let t = profile_with(d.path(), "faults:\n  read_corruption_probability: 0.01\n");
    let (r, j) = run_emu(d.path(), &t, &["--duration", "1s"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert!(j["verify_errors"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["errors"]["count"], 0, "corruption is not an I/O error: {j}");
    assert!(r.stderr.contains("mlpdrive: run failed: 0 I/O errors, "), "{}", r.show());
    assert!(r.stderr.contains("verify errors (first: "), "{}", r.show());
}

#[test]
fn a_hanging_device_fails_as_stalled_instead_of_hanging() {
    let d = scratch();
    let t = profile_with(d.path(), "faults:\n  hang: {probability: 0.5, duration: 600s}\n");
    let t0 = std::time::Instant::now();
    let (r, j) = run_emu(d.path(), &t, &["--duration", "30s", "--set", "io.timeout=1s", "--set", "rw=randread"]);
    assert!(t0.elapsed().as_secs() < 20, "took {:?}", t0.elapsed());
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert!(j["errors"]["first"].as_str().unwrap().contains("stalled"), "{j}");
}

#[test]
fn bad_emu_uris_are_usage_errors() {
    for (t, needle) in [
        ("emu://no-such-profile", "ideal"),
        ("emu://", "nvme-gen4"),
        ("emu://ci-fast?clock=sometimes", "clock=real or clock=virtual"),
        ("emu://ci-fast?store=disk", "store=mem or store=none"),
        ("emu://ci-fast?speed=11", "unknown emu:// parameter"),
        ("emu://ci-fast?seed=x", "seed"),
    ] {
        let d = scratch();
        let (r, _) = run_emu(d.path(), t, &["--duration", "1s"]);
        assert_eq!(r.code, 2, "{t}\n{}", r.show());
        assert!(r.stderr.contains(needle), "{t}: {needle}\n{}", r.show());
        assert!(tree(d.path()).is_empty(), "{t} created files");
    }
}

#[test]
fn a_full_device_is_a_clear_failure() {
    let d = scratch();
    let (r, j) = run_emu(d.path(), "emu://ci-fast?size=8MiB", &["--duration", "1s"]);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "failed");
    let first = j["errors"]["first"].as_str().unwrap();
    assert!(first.contains("No space left on device") && first.contains("raw/job0.dat"), "{first}");
}
