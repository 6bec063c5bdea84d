//! Whole runs of the `raw` workload against real targets: what they write,
//! and that corruption and misplaced blocks are caught.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::common::*;

fn results_of(dir: &Path) -> serde_json::Value {
    read_json(&only_run_dir(&dir.join("res")).join("results.json"))
}

#[test]
fn smoke_run_on_a_direct_file_target() {
    let d = scratch();
    let out = d.path().join("exact.json");
    let r = run_in(d.path(), "raw-smoke", &["--duration", "1s", "--output", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.show());
    let run_dir = only_run_dir(&d.path().join("res"));
    for f in ["results.json", "summary.txt", "config.yaml"] {
        assert!(run_dir.join(f).is_file(), "missing {f} in {}", run_dir.display());
    }
    let j = read_json(&run_dir.join("results.json"));
    assert_eq!(read_json(&out), j, "--output must hold the same results");
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["workload"], "raw");
    assert_eq!(j["status"], "ok");
    assert_eq!(j["io_mode"]["direct"], true, "{j}");
    assert_eq!(j["io_mode"]["engine"], "io_uring", "{j}");
    assert_eq!(j["verify_errors"], 0);
    assert_eq!(j["errors"]["count"], 0);
    assert!(j["duration_s"].as_f64().unwrap() > 0.5, "{j}");
    assert!(j["cpu_user_s"].as_f64().is_some() && j["peak_rss_bytes"].as_u64().unwrap() > 0);
    let s = &j["summary"];
    assert!(s["read"]["ops"].as_u64().unwrap() > 0, "{s}");
    assert!(s["write"]["ops"].as_u64().unwrap() > 0, "{s}");
    assert!(s["read"]["latency_us"]["p99"].as_f64().unwrap() > 0.0, "{s}");
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{j}");
    // The run wrote only inside the marked work directory.
    let data = d.path().join("data");
    let top: Vec<_> = std::fs::read_dir(&data).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(top, vec![std::ffi::OsString::from("mlpdrive")], "{top:?}");
    assert!(data.join("mlpdrive/raw/job0.dat").is_file());
    // stdout carries the human summary.
    assert!(r.stdout.contains("read"), "{}", r.show());
}

#[test]
fn null_target_reports_the_harness_ceiling() {
    let d = scratch();
    let res = d.path().join("res");
    let r = mlpdrive(
        d.path(),
        &["run", "raw", "--quiet", "--target", "null://", "--duration", "1s", "--results", res.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["io_mode"]["engine"], "null");
    assert!(j["summary"]["read"]["iops"].as_f64().unwrap() > 1000.0, "{j}");
    assert!(j["notes"].to_string().contains("verification was skipped"), "{j}");
    // Nothing but results in the scratch dir.
    assert!(!d.path().join("mlpdrive-data").exists());
}

#[test]
fn every_rw_mode_runs_and_verifies() {
    for rw in ["read", "write", "randread", "randwrite", "randrw"] {
        let d = scratch();
        let r = run_in(d.path(), "raw-smoke", &["--set", &format!("rw={rw}"), "--duration", "1s"]);
        assert_eq!(r.code, 0, "rw={rw}\n{}", r.show());
        let j = results_of(d.path());
        let s = &j["summary"];
        let reads = s["read"]["ops"].as_u64().unwrap();
        let writes = s["write"]["ops"].as_u64().unwrap();
        match rw {
            "read" | "randread" => assert!(reads > 0 && writes == 0, "rw={rw}: {s}"),
            "write" | "randwrite" => assert!(writes > 0 && reads == 0, "rw={rw}: {s}"),
            _ => assert!(reads > 0 && writes > 0, "rw={rw}: {s}"),
        }
        assert_eq!(j["verify_errors"], 0, "rw={rw}: {j}");
    }
}

#[test]
fn sync_engine_and_buffered_io_are_reported() {
    let d = scratch();
    let r = run_in(d.path(), "raw-smoke", &["--duration", "1s", "--set", "io.engine=sync", "--set", "io.direct=false"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["io_mode"]["engine"], "sync", "{j}");
    assert_eq!(j["io_mode"]["direct"], false, "{j}");
    assert!(j["notes"].to_string().contains("O_DIRECT was NOT used"), "{j}");
    assert!(r.stdout.contains("NOT"), "summary must say so loudly\n{}", r.show());
}

#[test]
fn a_read_run_reuses_a_valid_layout() {
    let d = scratch();
    let r = run_in(d.path(), "raw-smoke", &["--set", "rw=write", "--set", "bytes=16MiB", "--set", "duration=null"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let file = d.path().join("data/mlpdrive/raw/job0.dat");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let r = run_in(d.path(), "raw-smoke", &["--set", "rw=read", "--duration", "1s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime, "layout was redone");
}

/// Writes the whole file, damages it with `damage`, reads it all back.
fn read_after(damage: impl FnOnce(&std::fs::File)) -> (Run, serde_json::Value) {
    let d = scratch();
    let r = run_in(d.path(), "raw-smoke", &["--set", "rw=write", "--set", "bytes=16MiB", "--set", "duration=null"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let file = d.path().join("data/mlpdrive/raw/job0.dat");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 16 << 20);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
    damage(&f);
    f.sync_all().unwrap();
    drop(f);
    // Drop the page cache copy so O_DIRECT reads see the disk.
    std::fs::remove_dir_all(d.path().join("res")).unwrap();
    let r = run_in(
        d.path(),
        "raw-smoke",
        &["--set", "rw=read", "--set", "bytes=16MiB", "--set", "duration=null", "--set", "block_size=64KiB"],
    );
    let j = results_of(d.path());
    (r, j)
}

#[test]
fn a_flipped_byte_is_a_verify_error_with_object_and_offset() {
    let offset = 5 * 4096 + 100;
    let (r, j) = read_after(|f| {
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).unwrap();
        b[0] ^= 0x5a;
        f.write_all_at(&b, offset).unwrap();
    });
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(j["status"], "failed");
    assert_eq!(j["verify_errors"], 1, "{j}");
    let first = j["verify"]["first"].as_str().unwrap();
    assert!(first.contains(&offset.to_string()), "offset missing: {first}");
    assert!(first.contains("corrupt"), "{first}");
    assert!(r.stdout.to_lowercase().contains("verify"), "{}", r.show());
}

#[test]
fn swapped_blocks_are_misplaced_not_corrupt() {
    let (r, j) = read_after(|f| {
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        f.read_exact_at(&mut a, 3 * 4096).unwrap();
        f.read_exact_at(&mut b, 7 * 4096).unwrap();
        f.write_all_at(&b, 3 * 4096).unwrap();
        f.write_all_at(&a, 7 * 4096).unwrap();
    });
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(j["verify_errors"], 2, "{j}");
    let first = j["verify"]["first"].as_str().unwrap();
    assert!(first.contains("misplaced"), "{first}");
    assert!(!first.contains("corrupt"), "{first}");
}

#[test]
fn dev_target_on_a_device_image() {
    let d = scratch();
    let img = d.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let t = format!("dev://{}", img.display());
    let res = d.path().join("res");
    let base = ["run", "raw-smoke", "--quiet", "--target", &t, "--results", res.to_str().unwrap(), "--duration", "1s"];
    let refused = mlpdrive(d.path(), &base);
    assert_eq!(refused.code, 2, "{}", refused.show());
    let mut args = base.to_vec();
    args.push("--allow-raw-device");
    let r = mlpdrive(d.path(), &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["target"]["kind"], "dev");
    assert!(j["summary"]["read"]["ops"].as_u64().unwrap() > 0);
    assert_eq!(j["verify_errors"], 0);
}

#[test]
fn interrupt_writes_results_with_status_interrupted() {
    let d = scratch();
    let target = format!("file://{}", d.path().join("data").display());
    let res = d.path().join("res");
    let child = std::process::Command::new(BIN)
        .args([
            "run",
            "raw-smoke",
            "--quiet",
            "--target",
            &target,
            "--results",
            res.to_str().unwrap(),
            "--duration",
            "60s",
        ])
        .current_dir(d.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A partial results.json is flushed while the run goes on (every
    // progress_interval); wait for it, bounded.
    let t_wait = std::time::Instant::now();
    let partial = loop {
        let found = std::fs::read_dir(&res)
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("results.json"))
            .filter(|p| p.is_file());
        if let Some(p) = found {
            break read_json(&p);
        }
        assert!(t_wait.elapsed().as_secs() < 30, "no partial results.json after 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(partial["status"], "running", "{partial}");
    let ops = |k: &str| partial["summary"]["partial"][k].as_u64().unwrap();
    assert!(ops("read_ops") + ops("write_ops") > 0, "{partial}");
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t0 = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed().as_secs() < 20, "run did not stop promptly");
    let r = Run::from(out);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = read_json(&only_run_dir(&res).join("results.json"));
    assert_eq!(j["status"], "interrupted", "{j}");
    assert!(j["duration_s"].as_f64().unwrap() < 30.0);
}

#[test]
fn several_jobs_each_drive_their_own_file() {
    let d = scratch();
    // 3 s: the sampler takes a time-series point each second of the
    // measured window, and a 1 s window could end before its first tick on
    // a loaded machine.
    let r = run_in(d.path(), "raw-smoke", &["--set", "jobs=3", "--duration", "3s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["summary"]["jobs"], 3);
    for n in 0..3 {
        assert!(d.path().join(format!("data/mlpdrive/raw/job{n}.dat")).is_file(), "job{n}.dat missing");
    }
    assert!(j["summary"]["read"]["ops"].as_u64().unwrap() > 0);
    assert_eq!(j["verify_errors"], 0);
    assert!(!j["timeseries"].as_array().unwrap().is_empty(), "{j}");
}

/// A loop device over a scratch file, detached on drop (also used by nbd.rs).
pub(crate) struct Loop {
    pub(crate) dev: String,
}

impl Loop {
    pub(crate) fn attach(img: &Path) -> Result<Loop, String> {
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(img)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!("losetup failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Loop { dev: String::from_utf8_lossy(&out.stdout).trim().to_string() })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn dev_target_on_a_real_block_device() {
    let d = scratch();
    let img = d.path().join("loop.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let lo = match Loop::attach(&img) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("SKIPPED dev_target_on_a_real_block_device: no loop device here ({why}); needs root and losetup");
            return;
        }
    };
    let t = format!("dev://{}", lo.dev);
    let res = d.path().join("res");
    let r = mlpdrive(
        d.path(),
        &[
            "run",
            "raw-smoke",
            "--quiet",
            "--target",
            &t,
            "--allow-raw-device",
            "--duration",
            "1s",
            "--results",
            res.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["target"]["kind"], "dev");
    assert_eq!(j["io_mode"]["direct"], true);
    assert_eq!(j["verify_errors"], 0);
    assert!(j["summary"]["read"]["ops"].as_u64().unwrap() > 0);
    // The bytes reached the block device: its first block is one of ours.
    let mut head = [0u8; 16];
    std::fs::File::open(&img).unwrap().read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head[8..15], b"MLPDBLK", "first block: {head:?}");
}

#[test]
fn object_mode_on_files_and_emu_puts_one_file_per_object_and_verifies_gets() {
    let d = scratch();
    let objs =
        ["--set", "object_size=1MiB", "--set", "objects=5", "--set", "concurrency=2", "--set", "block_size=256KiB"];
    let mut args = objs.to_vec();
    args.extend(["--set", "rw=put", "--set", "bytes=5MiB", "--set", "duration=null"]);
    let r = run_in(d.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["summary"]["put"]["ops"], 5, "{}", j["summary"]);
    for i in 0..5 {
        let f = d.path().join(format!("data/mlpdrive/raw/objects/obj{i:08}"));
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 1 << 20, "{}", f.display());
    }
    std::fs::remove_dir_all(d.path().join("res")).unwrap();
    let mut args = objs.to_vec();
    args.extend(["--set", "rw=get", "--set", "bytes=10MiB", "--set", "duration=null"]);
    let r = run_in(d.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results_of(d.path());
    assert_eq!(j["summary"]["prepared_objects"], 0, "{j}");
    assert_eq!(j["summary"]["get"]["ops"], 10);
    assert_eq!(j["verify"]["verified_bytes"], 10u64 << 20, "{j}");
    assert!(r.stdout.contains("get"), "{}", r.show());

    // The in-process emulator: mixed on objects prepared in memory.
    let e = scratch();
    let mut args = objs.to_vec();
    args.extend(["--set", "rw=mixed", "--duration", "1s"]);
    let (r, j) = run_preset_on(e.path(), "raw", "emu://ci-fast", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["summary"]["prepared_objects"], 5, "{j}");
    let (puts, gets) = (j["summary"]["put"]["ops"].as_u64().unwrap(), j["summary"]["get"]["ops"].as_u64().unwrap());
    assert!(puts > 0 && gets > 0, "{}", j["summary"]);
    assert_eq!(j["verify_errors"], 0);
}
