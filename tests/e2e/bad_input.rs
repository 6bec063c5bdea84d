//! Bad input: every case exits 2, names the problem, does not panic, and
//! creates nothing on disk.

use std::path::Path;

use crate::common::*;

/// Runs `mlpdrive ARGS` in a fresh scratch dir (after `prepare`), and checks
/// exit code 2, that stderr contains every needle, and that the dir holds
/// exactly what `prepare` put there.
fn expect_usage_with(args: &[&str], needles: &[&str], prepare: impl FnOnce(&Path)) {
    let d = scratch();
    prepare(d.path());
    let before = tree(d.path());
    let r = mlpdrive(d.path(), args);
    assert_eq!(r.code, 2, "args {args:?}\n{}", r.show());
    for n in needles {
        assert!(r.stderr.contains(n), "args {args:?}: stderr lacks {n:?}\n{}", r.show());
    }
    assert!(!r.stderr.contains("panicked"), "panic on {args:?}\n{}", r.show());
    assert_eq!(tree(d.path()), before, "args {args:?} created files\n{}", r.show());
}

fn expect_usage(args: &[&str], needles: &[&str]) {
    expect_usage_with(args, needles, |_| {});
}

fn run_raw(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["run", "raw", "--quiet"].iter().map(|s| s.to_string()).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn check(extra: &[&str], needles: &[&str]) {
    let args = run_raw(extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_usage(&refs, needles);
}

#[test]
fn unknown_key() {
    check(&["--set", "blok_size=4KiB"], &["blok_size"]);
}

#[test]
fn unknown_nested_key() {
    check(&["--set", "io.directt=true"], &["directt"]);
}

#[test]
fn bad_unit() {
    check(&["--set", "block_size=4KX"], &["block_size", "4KX"]);
}

#[test]
fn negative_size() {
    check(&["--set", "size=-1GiB"], &["size"]);
}

#[test]
fn queue_depth_zero() {
    check(&["--set", "queue_depth=0"], &["queue_depth"]);
}

#[test]
fn jobs_zero() {
    check(&["--set", "jobs=0"], &["jobs"]);
}

#[test]
fn rwmix_out_of_range() {
    check(&["--set", "rw=randrw", "--set", "rwmix_read=150"], &["rwmix_read"]);
}

#[test]
fn unknown_rw_mode() {
    check(&["--set", "rw=sideways"], &["rw", "sideways"]);
}

#[test]
fn block_size_not_multiple_of_4k() {
    check(&["--set", "block_size=1000"], &["block_size"]);
}

#[test]
fn size_below_block_size() {
    check(&["--set", "block_size=1MiB", "--set", "size=64KiB"], &["size"]);
}

#[test]
fn wrong_type() {
    check(&["--set", "io.direct=maybe"], &["io.direct"]);
}

#[test]
fn set_without_equals() {
    check(&["--set", "queue_depth"], &["KEY=VALUE"]);
}

#[test]
fn bad_duration() {
    check(&["--duration", "10parsecs"], &["duration", "10parsecs"]);
}

#[test]
fn neither_duration_nor_bytes() {
    check(&["--set", "duration=null"], &["duration", "bytes"]);
}

#[test]
fn non_existent_preset() {
    expect_usage(&["run", "nosuch-preset"], &["nosuch-preset", "raw"]);
}

#[test]
fn missing_config_file() {
    expect_usage(&["run", "./missing.yaml"], &["missing.yaml"]);
}

#[test]
fn malformed_yaml() {
    expect_usage_with(&["run", "bad.yaml"], &["bad.yaml"], |d| {
        std::fs::write(d.join("bad.yaml"), "workload: raw\nrw: [randread\n").unwrap();
    });
}

#[test]
fn yaml_not_a_mapping() {
    expect_usage_with(&["run", "list.yaml"], &["list.yaml"], |d| {
        std::fs::write(d.join("list.yaml"), "- a\n- b\n").unwrap();
    });
}

#[test]
fn unknown_workload_in_file() {
    expect_usage_with(&["run", "w.yaml"], &["workload", "teleport"], |d| {
        std::fs::write(d.join("w.yaml"), "workload: teleport\nduration: 1s\n").unwrap();
    });
}

#[test]
fn missing_target_parent() {
    check(&["--target", "file://./nope/deeper/data"], &["nope", "does not exist"]);
}

#[test]
fn target_is_a_regular_file() {
    expect_usage_with(&["run", "raw", "--target", "file://./afile"], &["afile"], |d| {
        std::fs::write(d.join("afile"), "x").unwrap();
    });
}

#[test]
fn etc_target_refused() {
    check(&["--target", "file:///etc/mlpdrive-test"], &["/etc", "--force"]);
}

#[test]
fn root_target_refused() {
    check(&["--target", "file:///"], &["--force"]);
}

#[test]
fn device_node_behind_file_scheme() {
    check(&["--target", "file:///dev/null"], &["character device"]);
}

#[test]
fn raw_device_without_flag() {
    // Any block device will do: it is refused before it is opened.
    let dev = ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda", "/dev/loop0"]
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type())));
    let Some(dev) = dev else {
        eprintln!("SKIPPED raw_device_without_flag: no block device node found on this machine");
        return;
    };
    let t = format!("dev://{dev}");
    check(&["--target", &t], &["--allow-raw-device"]);
}

#[test]
fn unknown_scheme() {
    check(&["--target", "ftp://host/x"], &["ftp"]);
}

#[test]
fn planned_scheme_not_yet_available() {
    check(&["--target", "s3://bucket/prefix"], &["s3"]);
}

#[test]
fn bare_path_target_suggests_file_scheme() {
    check(&["--target", "/tmp/x"], &["file://"]);
}

#[test]
fn output_into_missing_directory() {
    check(&["--output", "no/such/dir/r.json"], &["--output"]);
}

#[test]
fn unknown_cli_flag() {
    check(&["--frobnicate"], &["frobnicate"]);
}

#[test]
fn non_numeric_seed() {
    check(&["--seed", "abc"], &["seed"]);
}

#[test]
fn unwritable_target_directory() {
    // Root passes permission checks, so when the tests run as root (CI) the
    // binary runs as the unprivileged user 65534 for this case.
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = scratch();
    let locked = d.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let target = format!("file://{}", locked.join("data").display());
    // A copy of the binary the unprivileged user can reach (the build tree
    // may sit under a private home directory).
    let bin = d.path().join("mlpdrive");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["run", "raw", "--quiet", "--target", &target, "--results", "res"]).current_dir(&locked);
    // SAFETY: getuid has no preconditions and cannot fail.
    if unsafe { libc::getuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    // exec of a just-copied binary fails with ETXTBSY while a child forked by
    // a parallel test still holds the copy's write descriptor: retry briefly.
    let mut tries = 0;
    let out = loop {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    let r = Run::from(out);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("locked"), "{}", r.show());
    assert!(tree(&locked).is_empty(), "created files in a read-only dir: {:?}", tree(&locked));
}
