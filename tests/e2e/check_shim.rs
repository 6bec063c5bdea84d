//! `mlpdrive check` on a real op log: the FUSE shim mounted on `ci-fast`
//! with an op log, `mlpdrive run raw` writing and then reading back (with
//! verification) through it, unmount, check. A clean run passes every data
//! verdict; a backing file corrupted between the write and the read runs
//! fails `content` (and the read run itself). Needs /dev/fuse and root:
//! without /dev/fuse the tests say so loudly and return.

use std::path::{Path, PathBuf};

use crate::common::*;

const SEED: &str = "7";

/// A shim mount that is always taken down.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn new(base: &Path, oplog: &Path) -> Mount {
        let dir = base.join("mnt");
        let backing = base.join("backing");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&backing).unwrap();
        let r = mlpdrive(
            base,
            &[
                "shim",
                "mount",
                "--mountpoint",
                dir.to_str().unwrap(),
                "--backing",
                backing.to_str().unwrap(),
                "--profile",
                "ci-fast",
                "--oplog",
                oplog.to_str().unwrap(),
                "--seed",
                SEED,
                "--daemon",
            ],
        );
        assert_eq!(r.code, 0, "shim mount\n{}", r.show());
        Mount { dir }
    }

    fn unmount(&mut self) {
        if is_mounted(&self.dir) {
            let r = mlpdrive(Path::new("/"), &["shim", "unmount", self.dir.to_str().unwrap()]);
            assert_eq!(r.code, 0, "shim unmount\n{}", r.show());
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = mlpdrive(Path::new("/"), &["shim", "unmount", self.dir.to_str().unwrap()]);
            if is_mounted(&self.dir) {
                let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
    }
}

fn is_mounted(dir: &Path) -> bool {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap_or("")))
}

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    eprintln!("!!! SKIPPED: /dev/fuse is missing, so the FUSE shim cannot mount here (CI has it)");
    false
}

/// raw write (16 MiB, every block once) or read (every block once, verified)
/// through the mount, results under `base/res`.
fn raw(base: &Path, mnt: &Path, rw: &str) -> Run {
    let target = format!("file://{}", mnt.display());
    let res = base.join("res");
    mlpdrive(
        base,
        &[
            "run",
            "raw-smoke",
            "--quiet",
            "--target",
            &target,
            "--results",
            res.to_str().unwrap(),
            "--seed",
            SEED,
            "--duration",
            "60s",
            "--set",
            &format!("rw={rw}"),
            "--set",
            "block_size=128KiB",
            "--set",
            "size=16MiB",
            "--set",
            "bytes=16MiB",
            "--set",
            "queue_depth=8",
        ],
    )
}

fn check(base: &Path, oplog: &Path) -> (Run, serde_json::Value) {
    let mut args = vec!["check".to_string(), "--oplog".into(), oplog.display().to_string()];
    for e in std::fs::read_dir(base.join("res")).unwrap().flatten() {
        args.extend(["--results".into(), e.path().display().to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = mlpdrive(base, &refs);
    let json = base.join("oplog.csv.verdicts.json");
    let v = if json.exists() { read_json(&json) } else { serde_json::Value::Null };
    (r, v)
}

fn verdict<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["verdicts"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap()
}

#[test]
fn raw_write_then_read_through_the_shim_passes_check() {
    if !fuse_available() {
        return;
    }
    let d = scratch();
    let oplog = d.path().join("oplog.csv");
    let mut m = Mount::new(d.path(), &oplog);
    let w = raw(d.path(), &m.dir, "write");
    assert_eq!(w.code, 0, "write run\n{}", w.show());
    let r = raw(d.path(), &m.dir, "read");
    assert_eq!(r.code, 0, "read run\n{}", r.show());
    m.unmount();
    let (c, v) = check(d.path(), &oplog);
    assert_eq!(c.code, 0, "{}", c.show());
    for (name, status) in [
        ("dedup", "pass"),
        ("compressibility", "pass"),
        ("content", "pass"),
        ("results_bytes", "pass"),
        ("errors", "pass"),
    ] {
        assert_eq!(verdict(&v, name)["status"], status, "{name}: {:#}", verdict(&v, name));
    }
    // 16 MiB written once and read back once, 4 KiB blocks; the read run
    // first checks block 0 (its layout check), then reads every block.
    assert_eq!(verdict(&v, "dedup")["numbers"]["blocks_written"], 4096);
    assert_eq!(verdict(&v, "content")["numbers"]["blocks_verified"], 4097);
    assert_eq!(verdict(&v, "content")["numbers"]["blocks_unverifiable"], 0);
    assert_eq!(verdict(&v, "results_bytes")["numbers"]["oplog_write_bytes"], 16 << 20);
}

#[test]
fn a_backing_file_corrupted_between_write_and_read_fails_check() {
    if !fuse_available() {
        return;
    }
    let d = scratch();
    let oplog = d.path().join("oplog.csv");
    let mut m = Mount::new(d.path(), &oplog);
    let w = raw(d.path(), &m.dir, "write");
    assert_eq!(w.code, 0, "write run\n{}", w.show());
    // Behind the shim's back: flip a byte of block 5 in the backing file.
    let file = d.path().join("backing/mlpdrive/raw/job0.dat");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[5 * 4096 + 100] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let r = raw(d.path(), &m.dir, "read");
    assert_eq!(r.code, 1, "the read run verifies and must fail\n{}", r.show());
    m.unmount();
    let (c, v) = check(d.path(), &oplog);
    assert_eq!(c.code, 1, "{}", c.show());
    let content = verdict(&v, "content");
    assert_eq!(content["status"], "fail", "{content:#}");
    assert_eq!(content["numbers"]["blocks_mismatched"], 1, "{content:#}");
    assert!(content["offending"][0].as_str().unwrap().contains("mlpdrive/raw/job0.dat offset 20480"), "{content:#}");
}
