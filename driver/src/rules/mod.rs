//! `mlpdrive rules check RESULTS_DIR [--division closed|open]`: checks a
//! directory of runs against the MLPerf Storage run rules that a storage
//! driver's results can show (docs/rules.md lists every rule, its source in
//! the specs, and the corrections applied to the reference).
//!
//! Every rule gives a [`Finding`] per run (or per group of runs, for counts
//! of trials and checkpoints) with a [`Verdict`], the rule's id, what was
//! found and what the rule wants. A rule whose input the results do not hold
//! (client memory, say) is `not-checked` and names the flag that supplies it.
//! The check passes (exit 0) only when nothing failed and nothing was left
//! unchecked; otherwise it exits 1. Bad input (no runs, a damaged
//! results.json) is a usage error (exit 2).
//!
//! Rules per workload are in [`training`], [`checkpoint`], [`kvcache`] and
//! [`vdb`]; rules for every run in [`common`]; the reference configs and the
//! override diff in [`reference`].

pub mod checkpoint;
pub mod common;
pub mod kvcache;
pub mod reference;
pub mod suite;
pub mod training;
pub mod vdb;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{EXIT_FAILED, EXIT_OK, Error};
use crate::results::{RESULTS_FILE, RunResult};

/// The MLPerf division whose rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Division {
    Closed,
    Open,
}

/// The outcome of one rule for one run or group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The results lack an input the rule needs; the finding says which.
    NotChecked,
    /// Shown for the record; does not affect the outcome.
    Info,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotChecked => "NOT CHECKED",
            Verdict::Info => "INFO",
        }
    }
}

/// One rule's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `training.dataset-size` (docs/rules.md).
    pub rule: &'static str,
    /// The run (run_id) or group (e.g. `kvcache option 2`) it is about.
    pub subject: String,
    pub verdict: Verdict,
    /// What was found.
    pub found: String,
    /// What the rule wants.
    pub expected: String,
}

impl Finding {
    pub fn new(
        rule: &'static str,
        subject: impl Into<String>,
        ok: bool,
        found: impl Into<String>,
        expected: impl Into<String>,
    ) -> Finding {
        Finding {
            rule,
            subject: subject.into(),
            verdict: if ok { Verdict::Pass } else { Verdict::Fail },
            found: found.into(),
            expected: expected.into(),
        }
    }

    pub fn with(mut self, verdict: Verdict) -> Finding {
        self.verdict = verdict;
        self
    }

    /// Names the flag that supplies a missing input (for `NOT CHECKED`).
    pub fn expected_flag(mut self, flag: &str) -> Finding {
        self.expected = format!("{} (give {flag})", self.expected);
        self
    }
}

/// Inputs the results do not hold, from the command line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Memory of each client host, GiB (training data set size rule).
    pub client_memory_gib: Option<f64>,
    /// The minimum recall@k the vdb rules ask for.
    pub vdb_min_recall: Option<f64>,
}

impl Inputs {
    /// Checks the values given on the command line (exit 2 when out of range).
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(m) = self.client_memory_gib
            && !(m.is_finite() && m > 0.0)
        {
            return Err(Error::usage("--client-memory-gib must be a number of GiB greater than 0"));
        }
        if let Some(r) = self.vdb_min_recall
            && !(0.0..=1.0).contains(&r)
        {
            return Err(Error::usage("--vdb-min-recall must be a fraction between 0 and 1, e.g. 0.9"));
        }
        Ok(())
    }
}

/// One loaded run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Its run directory (or the file's directory).
    pub dir: PathBuf,
    pub result: RunResult,
}

/// Every finding of a check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RulesReport {
    pub division: Division,
    pub runs: usize,
    pub findings: Vec<Finding>,
}

impl RulesReport {
    pub fn failed(&self) -> usize {
        self.findings.iter().filter(|f| f.verdict == Verdict::Fail).count()
    }

    pub fn not_checked(&self) -> usize {
        self.findings.iter().filter(|f| f.verdict == Verdict::NotChecked).count()
    }

    pub fn passed(&self) -> bool {
        self.failed() == 0 && self.not_checked() == 0
    }

    pub fn render_text(&self) -> String {
        let mut s = format!(
            "MLPerf rules check ({} division), {} run(s)\n\n",
            match self.division {
                Division::Closed => "CLOSED",
                Division::Open => "OPEN",
            },
            self.runs
        );
        for f in &self.findings {
            let _ = writeln!(s, "{:<11} {:<32} {}", f.verdict.as_str(), f.rule, f.subject);
            let _ = writeln!(s, "            found:    {}", f.found);
            if f.verdict != Verdict::Pass {
                let _ = writeln!(s, "            expected: {}", f.expected);
            }
        }
        let passes = self.findings.iter().filter(|f| f.verdict == Verdict::Pass).count();
        let _ = writeln!(
            s,
            "\n{}: {passes} passed, {} failed, {} not checked",
            if self.passed() { "PASS" } else { "FAIL" },
            self.failed(),
            self.not_checked()
        );
        s
    }
}

/// Loads every run under `dir`: `dir` itself when it holds a results.json,
/// the run directories of every step when it is a suite directory
/// (`mlpdrive suite`: a suite.json and `STEP/RUN_ID/results.json`), else
/// each subdirectory that does. A results.json that does not load is a
/// usage error naming it.
pub fn load_runs(dir: &Path) -> Result<Vec<Run>, Error> {
    if !dir.is_dir() {
        return Err(Error::usage(format!(
            "{}: not a directory; give the --results directory of the runs",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    if dir.join(RESULTS_FILE).is_file() {
        files.push(dir.join(RESULTS_FILE));
    } else if dir.join(crate::suite::manifest::SUITE_FILE).is_file() {
        for step in subdirs(dir)? {
            for run in subdirs(&step)? {
                let f = run.join(RESULTS_FILE);
                if f.is_file() {
                    files.push(f);
                }
            }
        }
    } else {
        let entries =
            fs::read_dir(dir).map_err(|e| Error::usage(format!("{}: cannot list directory: {e}", dir.display())))?;
        for e in entries.flatten() {
            let f = e.path().join(RESULTS_FILE);
            if f.is_file() {
                files.push(f);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::usage(format!(
            "{}: no run directory with a {RESULTS_FILE} here; give the --results directory of the runs",
            dir.display()
        )));
    }
    let mut runs = Vec::with_capacity(files.len());
    for f in files {
        let (result, _) = crate::results::load(&f)?;
        let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
        runs.push(Run { dir, result });
    }
    runs.sort_by(|a, b| (&a.result.started_at, &a.result.run_id).cmp(&(&b.result.started_at, &b.result.run_id)));
    Ok(runs)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::usage(format!("{}: cannot list directory: {e}", dir.display())))?;
    Ok(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
}

/// Applies every rule to `runs`.
pub fn check(runs: &[Run], division: Division, inputs: &Inputs) -> RulesReport {
    let mut findings = Vec::new();
    for run in runs {
        findings.extend(common::check_run(run, division));
        match run.result.workload.as_str() {
            "training" => findings.extend(training::check_run(run, division, inputs)),
            "checkpoint" => findings.extend(checkpoint::check_run(run, division, inputs)),
            "kvcache" => findings.extend(kvcache::check_run(run, division)),
            "vdb" => findings.extend(vdb::check_run(run, division, inputs)),
            _ => {}
        }
    }
    findings.extend(training::check_group(runs));
    findings.extend(checkpoint::check_group(runs));
    findings.extend(kvcache::check_group(runs, division));
    findings.extend(vdb::check_group(runs));
    findings.extend(suite::check_group(runs));
    RulesReport { division, runs: runs.len(), findings }
}

/// What `mlpdrive rules check` was asked.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub dir: PathBuf,
    pub division: Division,
    pub inputs: Inputs,
    pub json: Option<PathBuf>,
}

/// `mlpdrive rules check`: prints the findings; exit 0 only if every rule passed.
pub fn run(opts: &CheckOptions) -> Result<i32, Error> {
    opts.inputs.validate()?;
    let runs = load_runs(&opts.dir)?;
    let report = check(&runs, opts.division, &opts.inputs);
    print!("{}", report.render_text());
    if let Some(path) = &opts.json {
        crate::results::write_json_atomic(path, &report)
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(if report.passed() { EXIT_OK } else { EXIT_FAILED })
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A run of `preset` with its reference effective config, status ok, on a
    /// file target in `dir`.
    pub(crate) fn run_of(preset: &str, summary: serde_json::Value) -> Run {
        let mut r = crate::results::testutil::sample_result();
        let config = reference::effective_config(preset).expect("reference preset");
        r.workload = config["workload"].as_str().expect("workload").to_string();
        r.source = format!("preset {preset}");
        r.seed = config["seed"].as_u64().unwrap_or(1);
        r.config = config;
        r.summary = summary;
        r.run_id = format!("run-{preset}");
        Run { dir: PathBuf::from("/nonexistent"), result: r }
    }

    pub(crate) fn verdict(findings: &[Finding], rule: &str) -> Verdict {
        let hits: Vec<&Finding> = findings.iter().filter(|f| f.rule == rule).collect();
        assert!(!hits.is_empty(), "no finding for {rule} in {findings:#?}");
        if hits.iter().any(|f| f.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if hits.iter().any(|f| f.verdict == Verdict::NotChecked) {
            Verdict::NotChecked
        } else {
            hits[0].verdict
        }
    }

    pub(crate) fn finding<'a>(findings: &'a [Finding], rule: &str) -> &'a Finding {
        findings.iter().find(|f| f.rule == rule).unwrap_or_else(|| panic!("no {rule} in {findings:#?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_runs_reads_a_root_or_a_run_dir_and_refuses_empty_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = load_runs(tmp.path()).expect_err("empty");
        assert!(e.to_string().contains("no run directory"), "{e}");
        let mut a = crate::results::testutil::sample_result();
        a.run_id = "a".into();
        let mut b = a.clone();
        b.run_id = "b".into();
        b.started_at = "2026-11-22T07:00:00Z".into();
        for r in [&a, &b] {
            crate::results::ResultsDir::new(tmp.path(), &r.run_id).write_results(r).expect("write");
        }
        let runs = load_runs(tmp.path()).expect("root");
        let ids: Vec<&str> = runs.iter().map(|r| r.result.run_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"], "in start order");
        assert_eq!(load_runs(&tmp.path().join("a")).expect("run dir").len(), 1);
        let e = load_runs(&tmp.path().join("a/results.json")).expect_err("a file");
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    /// A results directory holding the three KV cache options' three
    /// trials each (results built from the option presets; their data
    /// "directory" is /proc, which is always another filesystem).
    fn write_kv_dir(root: &Path, skip_last: bool) {
        let mut n = 0;
        for option in kvcache::OPTIONS {
            for trial in 0..kvcache::TRIALS {
                if skip_last && *option == kvcache::OPTIONS[2] && trial == 2 {
                    continue;
                }
                let mut run = testutil::run_of(option, serde_json::json!({}));
                run.result.run_id = format!("kv-{n}");
                n += 1;
                run.result.duration_s = 300.0;
                run.result.target.location = "file:///proc".into();
                crate::results::ResultsDir::new(root, &run.result.run_id).write_results(&run.result).expect("write");
            }
        }
    }

    #[test]
    fn a_passing_and_a_failing_results_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (good, bad) = (tmp.path().join("good"), tmp.path().join("bad"));
        write_kv_dir(&good, false);
        write_kv_dir(&bad, true);
        let report = check(&load_runs(&good).expect("load"), Division::Closed, &Inputs::default());
        assert!(report.passed(), "{}", report.render_text());
        assert_eq!(report.runs, 9);
        let report = check(&load_runs(&bad).expect("load"), Division::Closed, &Inputs::default());
        assert!(!report.passed());
        let failed: Vec<(&str, &str)> =
            report.findings.iter().filter(|f| f.verdict == Verdict::Fail).map(|f| (f.rule, f.found.as_str())).collect();
        assert_eq!(failed, [("kvcache.trials", "2 trial(s)")], "{}", report.render_text());
    }

    #[test]
    fn report_passes_only_without_failures_and_unchecked_rules() {
        let pass = Finding::new("x", "r", true, "a", "b");
        let mut rep = RulesReport { division: Division::Closed, runs: 1, findings: vec![pass.clone()] };
        assert!(rep.passed());
        rep.findings.push(pass.clone().with(Verdict::Info));
        assert!(rep.passed(), "info does not fail");
        rep.findings.push(pass.clone().with(Verdict::NotChecked));
        assert!(!rep.passed());
        rep.findings.push(Finding::new("y.rule", "run-1", false, "found 3", "want 5"));
        let t = rep.render_text();
        assert!(t.contains("FAIL        y.rule"), "{t}");
        assert!(t.contains("found:    found 3") && t.contains("expected: want 5"), "{t}");
        assert!(t.trim_end().ends_with("FAIL: 1 passed, 1 failed, 1 not checked"), "{t}");
    }
}
