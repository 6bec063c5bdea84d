//! `suite.json`: the record of one `mlpdrive suite mlperf`, at the top of
//! its output directory. It says what ran (every step, its directory, its
//! outcome), at which scale, and the rules verdict; `mlpdrive rules check`
//! reads it to find the runs of a suite directory and to know that a
//! smoke-scale suite is not a submission. Written atomically after every
//! step, so an interrupted suite leaves a record of how far it got.

use std::path::{Path, PathBuf};

use super::plan::{Scale, Step, StepKind};
use crate::error::Error;

/// File name of the manifest in a suite's output directory.
pub const SUITE_FILE: &str = "suite.json";
/// Version of the suite.json layout.
pub const SUITE_VERSION: u32 = 1;

/// What happened to one step.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started (yet, or because the suite stopped).
    Pending,
    /// Finished with exit code 0.
    Ok,
    /// Ran and failed (exit code 1, or an error before its results).
    Failed,
    /// Not run because a step it needs failed.
    Skipped,
}

/// One step, as run.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct StepRecord {
    pub index: usize,
    /// Its subdirectory of the suite directory.
    pub dir: String,
    pub workload: String,
    pub kind: StepKind,
    pub label: String,
    pub preset: String,
    /// The `--set` overrides it ran with.
    pub sets: Vec<String>,
    /// The pause taken before it, seconds.
    pub delay_before_s: f64,
    pub status: StepStatus,
    /// Its exit code (None: it did not run).
    pub exit_code: Option<i32>,
    /// Its run directory, relative to the suite directory (run steps).
    pub run_dir: Option<String>,
    pub run_id: Option<String>,
    /// Wall time of the step, seconds.
    pub elapsed_s: f64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

impl StepRecord {
    pub fn pending(step: &Step) -> StepRecord {
        StepRecord {
            index: step.index,
            dir: step.dir.clone(),
            workload: step.workload.to_string(),
            kind: step.kind.clone(),
            label: step.label.clone(),
            preset: step.preset.clone(),
            sets: step.sets.clone(),
            delay_before_s: step.delay_before.as_secs_f64(),
            status: StepStatus::Pending,
            exit_code: None,
            run_dir: None,
            run_id: None,
            elapsed_s: 0.0,
            error: None,
        }
    }
}

/// The rules check's outcome over all the suite's runs.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct RulesOutcome {
    pub passed: bool,
    pub failed: usize,
    pub not_checked: usize,
    /// The findings as text and JSON, relative to the suite directory.
    pub text: String,
    pub json: String,
}

/// The whole suite.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct SuiteManifest {
    pub suite_version: u32,
    pub mlpdrive_version: String,
    /// `mlperf`.
    pub suite: String,
    pub scale: Scale,
    /// False at every scale but full (and full says only that the sequence
    /// was the rules'; the rules check decides the rest).
    pub submission_candidate: bool,
    pub division: crate::rules::Division,
    pub target: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub notes: Vec<String>,
    pub steps: Vec<StepRecord>,
    pub rules: Option<RulesOutcome>,
    /// The combined reports, relative to the suite directory.
    pub reports: Vec<String>,
}

impl SuiteManifest {
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(SUITE_FILE);
        crate::results::write_json_atomic(&path, self)
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
    }

    pub fn runs_ok(&self) -> usize {
        self.steps.iter().filter(|s| s.status == StepStatus::Ok).count()
    }

    pub fn runs_not_ok(&self) -> usize {
        self.steps.iter().filter(|s| s.status != StepStatus::Ok).count()
    }
}

/// The manifest of the suite directory `dir`, if it is one.
pub fn load(dir: &Path) -> Option<SuiteManifest> {
    let text = std::fs::read_to_string(dir.join(SUITE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The suite directory a run directory belongs to (its grandparent, when
/// that holds a suite.json): `SUITE/NN-step/RUN_ID/`.
pub fn suite_dir_of(run_dir: &Path) -> Option<PathBuf> {
    let d = run_dir.parent()?.parent()?;
    d.join(SUITE_FILE).is_file().then(|| d.to_path_buf())
}
