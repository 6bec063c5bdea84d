//! The non-run commands and the shape of a successful run's output.

use crate::common::*;

#[test]
fn workloads_lists_presets() {
    let d = scratch();
    let r = mlpdrive(d.path(), &["workloads"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("raw "), "{}", r.show());
    assert!(r.stdout.contains("raw-smoke"), "{}", r.show());
    assert!(tree(d.path()).is_empty(), "workloads must not write anything");
}

#[test]
fn help_and_version_exit_zero() {
    let d = scratch();
    assert_eq!(mlpdrive(d.path(), &["--help"]).code, 0);
    assert_eq!(mlpdrive(d.path(), &["run", "--help"]).code, 0);
    let v = mlpdrive(d.path(), &["--version"]);
    assert_eq!(v.code, 0);
    assert!(v.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn report_prints_summary_of_file_dir_and_root() {
    let d = scratch();
    let r = run_in(d.path(), "raw-smoke", &["--duration", "1s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let root = d.path().join("res");
    let run_dir = only_run_dir(&root);
    for p in [run_dir.join("results.json"), run_dir.clone(), root.clone()] {
        let rep = mlpdrive(d.path(), &["report", p.to_str().unwrap()]);
        assert_eq!(rep.code, 0, "{}", rep.show());
        assert!(rep.stdout.contains("raw"), "{}", rep.show());
        assert!(rep.stdout.to_lowercase().contains("read"), "{}", rep.show());
    }
    let missing = mlpdrive(d.path(), &["report", "nope"]);
    assert_eq!(missing.code, 2, "{}", missing.show());
}

#[test]
fn devices_lists_the_builtin_profiles() {
    let d = scratch();
    let r = mlpdrive(d.path(), &["devices"]);
    assert_eq!(r.code, 0, "{}", r.show());
    for name in ["ideal", "ci-fast", "nvme-gen4", "nvme-gen5", "sata-ssd", "hdd", "s3-standard"] {
        assert!(r.stdout.lines().any(|l| l.starts_with(name)), "{name} missing\n{}", r.show());
    }
    assert!(tree(d.path()).is_empty(), "devices must not write anything");
}
