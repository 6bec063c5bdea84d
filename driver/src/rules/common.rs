//! Rules for every run: an MLPerf workload, finished without errors, on real
//! storage, with its results on another filesystem than its data.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use super::{Division, Finding, Run, Verdict};

/// Workloads the MLPerf Storage rules cover.
pub const MLPERF_WORKLOADS: &[&str] = &["training", "checkpoint", "kvcache", "vdb"];

pub fn check_run(run: &Run, _division: Division) -> Vec<Finding> {
    let r = &run.result;
    let id = r.run_id.as_str();
    let mut out = vec![Finding::new(
        "common.mlperf-workload",
        id,
        MLPERF_WORKLOADS.contains(&r.workload.as_str()),
        format!("workload {}", r.workload),
        format!("one of {} (raw is calibration, not an MLPerf benchmark)", MLPERF_WORKLOADS.join(", ")),
    )];
    let mut status = format!("status {}", r.status.as_str());
    if r.errors.count > 0 || r.verify_errors > 0 {
        status.push_str(&format!(", {} I/O errors, {} verify errors", r.errors.count, r.verify_errors));
    }
    out.push(Finding::new(
        "common.status",
        id,
        r.status == crate::results::RunStatus::Ok,
        status,
        "status ok: the run finished with no I/O or verification errors",
    ));
    let real = matches!(r.target.kind.as_str(), "file" | "dev" | "nbd" | "s3");
    out.push(Finding::new(
        "common.real-storage",
        id,
        real,
        format!("target {} ({})", r.target.location, r.target.kind),
        "a file://, dev://, nbd:// or s3:// target (emu:// and null:// measure no storage)",
    ));
    out.push(separate_filesystems(run));
    out
}

/// `common.separate-filesystems`: the results directory and the data must
/// be on different filesystems (training, checkpoint, KV cache and vdb rules
/// all ask it). Checked by comparing the device numbers of the run directory
/// and the target directory, which must still exist where the check runs.
fn separate_filesystems(run: &Run) -> Finding {
    const RULE: &str = "common.separate-filesystems";
    const WANT: &str = "results and data on different filesystems";
    let r = &run.result;
    let id = r.run_id.as_str();
    match r.target.kind.as_str() {
        "dev" | "nbd" | "s3" => {
            return Finding::new(
                RULE,
                id,
                true,
                format!("data on {} (not a local filesystem)", r.target.location),
                WANT,
            );
        }
        "file" => {}
        _ => {
            return Finding::new(RULE, id, false, format!("data on {} (no storage)", r.target.location), WANT);
        }
    }
    let data = r.target.location.strip_prefix("file://").unwrap_or(&r.target.location);
    let data = Path::new(data);
    let (Ok(d), Ok(res)) = (std::fs::metadata(data), std::fs::metadata(&run.dir)) else {
        return Finding::new(
            RULE,
            id,
            false,
            format!("cannot stat the data directory {} or the run directory {}", data.display(), run.dir.display()),
            format!("{WANT}; run the check where the run ran, with its data directory in place"),
        )
        .with(Verdict::NotChecked);
    };
    let same = d.dev() == res.dev();
    Finding::new(
        RULE,
        id,
        !same,
        format!(
            "data {} on device {:#x}, results {} on device {:#x}",
            data.display(),
            d.dev(),
            run.dir.display(),
            res.dev()
        ),
        WANT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{finding, verdict};

    fn run_in(dir: &Path, data: &Path) -> Run {
        let mut r = crate::results::testutil::sample_result();
        r.workload = "vdb".into();
        r.target.location = format!("file://{}", data.display());
        Run { dir: dir.to_path_buf(), result: r }
    }

    #[test]
    fn same_filesystem_fails_and_a_missing_data_dir_is_not_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (res, data) = (tmp.path().join("res"), tmp.path().join("data"));
        std::fs::create_dir(&res).expect("mkdir");
        std::fs::create_dir(&data).expect("mkdir");
        let f = check_run(&run_in(&res, &data), Division::Closed);
        assert_eq!(verdict(&f, "common.separate-filesystems"), Verdict::Fail);
        assert!(finding(&f, "common.separate-filesystems").found.contains("on device"));
        let f = check_run(&run_in(&res, &tmp.path().join("gone")), Division::Closed);
        assert_eq!(verdict(&f, "common.separate-filesystems"), Verdict::NotChecked);
    }

    #[test]
    fn different_filesystems_pass() {
        // /proc is its own filesystem on every Linux host.
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = check_run(&run_in(tmp.path(), Path::new("/proc")), Division::Closed);
        assert_eq!(verdict(&f, "common.separate-filesystems"), Verdict::Pass, "{f:#?}");
    }

    #[test]
    fn raw_emulated_and_failed_runs_fail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut run = run_in(tmp.path(), Path::new("/proc"));
        assert_eq!(verdict(&check_run(&run, Division::Open), "common.mlperf-workload"), Verdict::Pass);
        run.result.workload = "raw".into();
        run.result.status = crate::results::RunStatus::Failed;
        run.result.errors.count = 3;
        run.result.target.kind = "emu".into();
        let f = check_run(&run, Division::Open);
        assert_eq!(verdict(&f, "common.mlperf-workload"), Verdict::Fail);
        assert_eq!(verdict(&f, "common.status"), Verdict::Fail);
        assert!(finding(&f, "common.status").found.contains("3 I/O errors"));
        assert_eq!(verdict(&f, "common.real-storage"), Verdict::Fail);
        assert_eq!(verdict(&f, "common.separate-filesystems"), Verdict::Fail);
    }
}
