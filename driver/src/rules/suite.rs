//! Runs made by `mlpdrive suite`: a suite at any scale but full ran reduced
//! presets, repetitions and pauses, so its runs are never a submission,
//! whatever else they pass. The suite's `suite.json` (two levels above each
//! run directory) says which scale ran.

use super::{Finding, Run};
use crate::suite::manifest;
use crate::suite::plan::Scale;

/// One `suite.scale` finding per suite directory among `runs`.
pub fn check_group(runs: &[Run]) -> Vec<Finding> {
    let mut dirs: Vec<std::path::PathBuf> = runs.iter().filter_map(|r| manifest::suite_dir_of(&r.dir)).collect();
    dirs.sort();
    dirs.dedup();
    dirs.iter()
        .map(|d| {
            let subject = format!("suite {}", d.display());
            match manifest::load(d) {
                Some(m) if m.scale == Scale::Full => {
                    Finding::new("suite.scale", subject, true, "scale full", "scale full")
                }
                Some(m) => Finding::new(
                    "suite.scale",
                    subject,
                    false,
                    format!(
                        "scale {}: reduced presets, repetitions and pauses — NOT A VALID MLPERF SUBMISSION",
                        m.scale.as_str()
                    ),
                    "a suite run with --scale full (the MLPerf-sized presets, repetitions and pauses)",
                ),
                None => Finding::new(
                    "suite.scale",
                    subject,
                    false,
                    format!("{} does not load", d.join(manifest::SUITE_FILE).display()),
                    "the suite's suite.json as mlpdrive suite wrote it",
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Verdict;
    use crate::suite::manifest::{SUITE_VERSION, SuiteManifest};

    fn suite_with_run(root: &std::path::Path, scale: Scale) -> Run {
        let m = SuiteManifest {
            suite_version: SUITE_VERSION,
            mlpdrive_version: "test".into(),
            suite: "mlperf".into(),
            scale,
            submission_candidate: scale == Scale::Full,
            division: crate::rules::Division::Closed,
            target: "file:///mnt/nvme".into(),
            started_at: "2026-12-02T07:00:00Z".into(),
            finished_at: None,
            notes: Vec::new(),
            steps: Vec::new(),
            rules: None,
            reports: Vec::new(),
        };
        std::fs::create_dir_all(root.join("02-step/run-1")).expect("mkdir");
        m.write(root).expect("write suite.json");
        let mut run = crate::rules::testutil::run_of("kvcache/mlperf-option1", serde_json::json!({}));
        run.dir = root.join("02-step/run-1");
        run
    }

    #[test]
    fn a_smoke_suite_fails_a_full_one_passes_and_other_runs_have_no_finding() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let smoke = suite_with_run(&tmp.path().join("smoke"), Scale::Smoke);
        let full = suite_with_run(&tmp.path().join("full"), Scale::Full);
        let loose = crate::rules::testutil::run_of("kvcache/mlperf-option1", serde_json::json!({}));
        let f = check_group(&[smoke.clone(), smoke, full, loose]);
        assert_eq!(f.len(), 2, "one finding per suite: {f:#?}");
        let by = |name: &str| f.iter().find(|x| x.subject.ends_with(name)).expect(name);
        assert_eq!(by("smoke").verdict, Verdict::Fail);
        assert!(by("smoke").found.contains("NOT A VALID MLPERF SUBMISSION"));
        assert_eq!(by("full").verdict, Verdict::Pass);
    }
}
