//! `mlpdrive suite mlperf --target URI`: the MLPerf Storage sequence in one
//! command — training datagen, a warm-up and 5 measured training runs, a
//! checkpoint run of 10 saves + 10 loads, KV cache options 1–3 × 3 trials
//! with 90 s between options, 5 vdb runs — then the rules check over all of
//! them and one combined report (docs/suite.md).
//!
//! The steps run in this process through the same entry points as
//! `mlpdrive datagen` and `mlpdrive run`, each into its own subdirectory of
//! the suite's output directory ([`plan`] lists them). Everything is
//! validated first — the target, every step's config, the output directory
//! — so bad input exits 2 with nothing run or written. `suite.json`
//! ([`manifest`]) records every step as it finishes.

pub mod manifest;
pub mod plan;
pub mod render;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::cli::{DatagenArgs, ResultsArgs, RunArgs, SafetyArgs};
use crate::error::{EXIT_FAILED, EXIT_OK, Error};
use crate::results::RESULTS_FILE;
use crate::rules::{Division, Inputs};
use crate::target::uri::{self, SafetyFlags, TargetUri};
use manifest::{RulesOutcome, StepRecord, StepStatus, SuiteManifest};
use plan::{Choice, Plan, Scale, StepKind};

/// What `mlpdrive suite mlperf` was asked (the CLI's flags, typed).
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    pub target: String,
    pub division: Division,
    /// `--out` (None: a new `./mlpdrive-suite-<time>` directory).
    pub out: Option<PathBuf>,
    pub choice: Choice,
    pub inputs: Inputs,
    pub safety: SafetyFlags,
    pub quiet: bool,
}

/// Rules findings and reports, relative to the suite directory.
const RULES_TEXT: &str = "rules.txt";
const RULES_JSON: &str = "rules.json";
const REPORT_HTML: &str = "report.html";
const REPORT_MD: &str = "report.md";

pub fn run(opts: &SuiteOptions) -> Result<i32, Error> {
    let world = crate::mpi::World::init()?;
    if world.is_multi() {
        world.finalize();
        return Err(Error::usage(
            "suite mlperf runs its steps one after another in one process and does not run under mpirun \
             (not available yet); run it without mpirun, or run the steps as `mpirun … mlpdrive run` (docs/scale.md)",
        ));
    }
    // 1. Validate everything; nothing is created before this passes.
    let spec = uri::check(&uri::parse(&opts.target)?, &opts.safety)?;
    if matches!(spec.uri, TargetUri::Emu(_)) {
        return Err(Error::usage(format!(
            "--target {}: an emu:// target keeps its objects only for the run that opened it, and the suite's \
             training runs read the data set its datagen step wrote; use file://DIR (a temporary directory for a \
             smoke suite), dev://, nbd:// or s3://",
            spec.display
        )));
    }
    opts.inputs.validate()?;
    let mut plan = plan::build(&opts.choice)?;
    plan::validate(&plan)?;
    if plan.scale != Scale::Full {
        plan::mark_not_a_submission(&mut plan)?;
    }
    let out = resolve_out(opts.out.as_deref())?;

    // 2. The suite directory and its manifest.
    if !out.is_dir() {
        std::fs::create_dir(&out).map_err(|e| Error::failed(format!("cannot create {}: {e}", out.display())))?;
    }
    let mut m = SuiteManifest {
        suite_version: manifest::SUITE_VERSION,
        mlpdrive_version: env!("CARGO_PKG_VERSION").to_string(),
        suite: "mlperf".into(),
        scale: plan.scale,
        submission_candidate: plan.scale == Scale::Full,
        division: opts.division,
        target: spec.display.clone(),
        started_at: jiff::Timestamp::now().to_string(),
        finished_at: None,
        notes: plan.notes.clone(),
        steps: plan.steps.iter().map(StepRecord::pending).collect(),
        rules: None,
        reports: Vec::new(),
    };
    m.write(&out)?;
    let total = plan.steps.len();
    say(&format!(
        "mlpdrive suite: mlperf, scale {}, {} division, {total} steps on {} → {}",
        plan.scale.as_str(),
        division_name(opts.division),
        spec.display,
        out.display()
    ));
    for n in &plan.notes {
        say(&format!("mlpdrive suite: note: {n}"));
    }

    // 3. The steps, in order.
    let stop = Arc::new(AtomicBool::new(false));
    crate::signal::install(&stop);
    run_steps(opts, &plan, &out, &mut m);

    // 4. The rules check over every run, 5. one combined report.
    let runs = crate::rules::load_runs(&out).ok().unwrap_or_default();
    let report = crate::rules::check(&runs, opts.division, &opts.inputs);
    let rules_text = report.render_text();
    write_file(&out.join(RULES_TEXT), rules_text.as_bytes())?;
    crate::results::write_json_atomic(&out.join(RULES_JSON), &report)
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", out.join(RULES_JSON).display())))?;
    m.rules = Some(RulesOutcome {
        passed: report.passed(),
        failed: report.failed(),
        not_checked: report.not_checked(),
        text: RULES_TEXT.into(),
        json: RULES_JSON.into(),
    });
    m.finished_at = Some(jiff::Timestamp::now().to_string());
    let loaded: Vec<(PathBuf, crate::results::RunResult)> =
        runs.iter().map(|r| (r.dir.join(RESULTS_FILE), r.result.clone())).collect();
    if !loaded.is_empty() {
        let combined = crate::report::Report::new(loaded, false);
        let html = crate::report::html::render_with_preface(&combined, &render::html_preface(&m, &report));
        write_file(&out.join(REPORT_HTML), html.as_bytes())?;
        let md =
            format!("{}\n{}", render::markdown_preface(&m, &report), crate::report::text::render_markdown(&combined));
        write_file(&out.join(REPORT_MD), md.as_bytes())?;
        m.reports = vec![REPORT_HTML.into(), REPORT_MD.into()];
    }
    m.write(&out)?;

    print!("{}", render::summary_text(&m, &report, &out));
    let ok = m.runs_not_ok() == 0 && report.passed();
    Ok(if ok { EXIT_OK } else { EXIT_FAILED })
}

/// Runs every step, recording each in the manifest as it ends. A failed
/// datagen skips the training runs (they would read a missing data set);
/// any other failure lets the suite go on; Ctrl-C stops it.
fn run_steps(opts: &SuiteOptions, plan: &Plan, out: &Path, m: &mut SuiteManifest) {
    let total = plan.steps.len();
    let mut datagen_failed = false;
    for (i, step) in plan.steps.iter().enumerate() {
        if crate::signal::interrupted() {
            say("mlpdrive suite: interrupted; the remaining steps did not run");
            break;
        }
        if datagen_failed && step.workload == "training" {
            let rec = &mut m.steps[i];
            rec.status = StepStatus::Skipped;
            rec.error = Some("the training datagen step failed".into());
            say(&format!("mlpdrive suite: [{}/{total}] {}: skipped (datagen failed)", step.index, step.label));
            continue;
        }
        if !step.delay_before.is_zero() {
            say(&format!(
                "mlpdrive suite: pausing {} before {} (inter-option delay)",
                humantime::format_duration(step.delay_before),
                step.label
            ));
            if !pause(step.delay_before) {
                say("mlpdrive suite: interrupted; the remaining steps did not run");
                break;
            }
        }
        say(&format!("mlpdrive suite: [{}/{total}] {}: {} → {}", step.index, step.label, step.preset, step.dir));
        let dir = out.join(&step.dir);
        let t0 = Instant::now();
        let outcome = std::fs::create_dir(&dir)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", dir.display())))
            .and_then(|()| run_step(opts, step, &dir));
        let rec = &mut m.steps[i];
        rec.elapsed_s = t0.elapsed().as_secs_f64();
        match outcome {
            Ok(code) => {
                rec.exit_code = Some(code);
                rec.status = if code == EXIT_OK { StepStatus::Ok } else { StepStatus::Failed };
            }
            Err(e) => {
                rec.exit_code = Some(e.exit_code());
                rec.status = StepStatus::Failed;
                rec.error = Some(e.to_string());
            }
        }
        if step.kind == StepKind::Run {
            match run_dir_in(&dir) {
                Some(run) => {
                    rec.run_id = crate::results::load(&run.join(RESULTS_FILE)).ok().map(|(r, _)| r.run_id);
                    rec.run_dir = run.strip_prefix(out).ok().map(|p| p.display().to_string());
                }
                None if rec.status == StepStatus::Ok => {
                    rec.status = StepStatus::Failed;
                    rec.error = Some(format!("no {RESULTS_FILE} in {}", dir.display()));
                }
                None => {}
            }
        }
        if step.kind == StepKind::Datagen && rec.status != StepStatus::Ok {
            datagen_failed = true;
        }
        say(&format!(
            "mlpdrive suite: [{}/{total}] {}: {} in {:.1} s{}",
            step.index,
            step.label,
            match rec.status {
                StepStatus::Ok => "ok",
                _ => "FAILED",
            },
            rec.elapsed_s,
            rec.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
        if let Err(e) = m.write(out) {
            say(&format!("mlpdrive suite: warning: {e}"));
        }
    }
}

/// One step through the `datagen` or `run` entry point, into `dir`.
fn run_step(opts: &SuiteOptions, step: &plan::Step, dir: &Path) -> Result<i32, Error> {
    match step.kind {
        StepKind::Datagen => {
            let code = crate::workload::training::datagen::run(&DatagenArgs {
                workload: step.preset.clone(),
                target: Some(opts.target.clone()),
                set: step.sets.clone(),
                jobs: None,
                quiet: opts.quiet,
                safety: SafetyArgs { allow_raw_device: opts.safety.allow_raw_device, force: opts.safety.force },
            })?;
            let record = serde_json::json!({
                "step": step.label, "preset": step.preset, "sets": step.sets,
                "target": opts.target, "exit_code": code,
            });
            crate::results::write_json_atomic(&dir.join("datagen.json"), &record)
                .map_err(|e| Error::failed(format!("cannot write {}: {e}", dir.join("datagen.json").display())))?;
            Ok(code)
        }
        StepKind::Run => crate::run::run(&RunArgs {
            workload: step.preset.clone(),
            target: Some(opts.target.clone()),
            set: step.sets.clone(),
            seed: None,
            duration: None,
            out: ResultsArgs { output: None, results: dir.to_path_buf(), quiet: opts.quiet },
            allow_raw_device: opts.safety.allow_raw_device,
            force: opts.safety.force,
        }),
    }
}

/// The run directory a step wrote (the one subdirectory with a results.json).
fn run_dir_in(dir: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.join(RESULTS_FILE).is_file()).collect();
    dirs.sort();
    dirs.pop()
}

/// Sleeps `d`, waking every 100 ms for Ctrl-C; false when interrupted.
fn pause(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if crate::signal::interrupted() {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    !crate::signal::interrupted()
}

/// `--out DIR`: a new directory (its parent must exist) or an existing
/// empty one; without it, a new `./mlpdrive-suite-<time>`.
fn resolve_out(out: Option<&Path>) -> Result<PathBuf, Error> {
    let (path, flag) = match out {
        Some(p) => (p.to_path_buf(), "--out"),
        None => {
            let ts = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
            (PathBuf::from(format!("mlpdrive-suite-{ts}")), "the default --out")
        }
    };
    if path.exists() {
        let empty = path.is_dir() && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if !empty {
            return Err(Error::usage(format!(
                "{flag} {}: exists and is not an empty directory; give a new directory (the suite's rules check \
                 reads every run under it)",
                path.display()
            )));
        }
        return Ok(path);
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::usage(format!(
            "{flag} {}: directory {} does not exist; create it first",
            path.display(),
            parent.display()
        )));
    }
    Ok(path)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::results::write_bytes_atomic(path, bytes)
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
}

fn say(line: &str) {
    eprintln!("{line}");
}

pub(crate) fn division_name(d: Division) -> &'static str {
    match d {
        Division::Closed => "CLOSED",
        Division::Open => "OPEN",
    }
}
