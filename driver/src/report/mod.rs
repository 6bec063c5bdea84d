//! `mlpdrive report`: one or more finished runs rendered as text, Markdown,
//! CSV, JSON or a self-contained HTML page with plots, optionally side by
//! side with ratios (`--compare`), or turned into a fio job file
//! (`--fio-job`).
//!
//! Every format is rendered from one [`Report`]: the loaded
//! [`RunResult`]s, the headline metrics picked from each (the same list for
//! every format, [`metrics`]), and with `--compare` the ratios of every run
//! to the first ([`Comparison`]). The formats are in their own modules
//! ([`text`], [`csv`], [`html`] with its plots in [`plots`]); the JSON
//! export is the `Report` itself, serialized. docs/reports.md describes
//! each format.

pub mod csv;
pub mod fio;
pub mod html;
pub mod metrics;
pub mod plots;
pub mod text;

use std::path::{Path, PathBuf};

use crate::error::{EXIT_OK, Error};
use crate::results::{RunResult, write_bytes_atomic};

pub use metrics::Metric;

/// Version of the `--format json` layout (not of results.json).
pub const REPORT_VERSION: u32 = 1;

/// The output formats of `mlpdrive report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The human summary (the default; the same text as summary.txt).
    Text,
    /// Markdown tables.
    Md,
    /// One row per (run, metric), unit-suffixed metric names.
    Csv,
    /// The report as JSON: every run's full results.json plus the headline metrics.
    Json,
    /// One self-contained HTML file with inline SVG plots.
    Html,
}

/// One run in a report.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct ReportRun {
    /// The results.json that was read.
    pub path: PathBuf,
    /// The headline metrics of this run, in display order.
    pub metrics: Vec<Metric>,
    /// The run's results.json, unchanged.
    pub result: RunResult,
}

/// `--compare`: every metric of any run, with each run's value and its
/// ratio to the first run (the baseline).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Comparison {
    /// run_id of the baseline (the first run given).
    pub baseline: String,
    pub rows: Vec<CompareRow>,
}

/// One metric across the compared runs.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct CompareRow {
    pub key: String,
    pub unit: String,
    /// True when a larger value is better (throughput), false when smaller is
    /// (latency, duration).
    pub higher_is_better: bool,
    /// One value per run, in the order given (None: the run has no such metric).
    pub values: Vec<Option<f64>>,
    /// value / baseline value, per run (None when either is missing or the
    /// baseline is 0).
    pub ratios: Vec<Option<f64>>,
}

/// Everything every format renders.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub report_version: u32,
    pub mlpdrive_version: String,
    pub runs: Vec<ReportRun>,
    /// Present with `--compare`.
    pub comparison: Option<Comparison>,
}

impl Report {
    /// Builds the report of `runs` (path and result each), comparing them
    /// when `compare` is set.
    pub fn new(runs: Vec<(PathBuf, RunResult)>, compare: bool) -> Report {
        let runs: Vec<ReportRun> = runs
            .into_iter()
            .map(|(path, result)| ReportRun { metrics: metrics::headline(&result), path, result })
            .collect();
        let comparison = compare.then(|| compare_runs(&runs));
        Report { report_version: REPORT_VERSION, mlpdrive_version: env!("CARGO_PKG_VERSION").into(), runs, comparison }
    }
}

fn compare_runs(runs: &[ReportRun]) -> Comparison {
    // Every key in first-seen order, so the baseline's order leads.
    let mut rows: Vec<CompareRow> = Vec::new();
    for run in runs {
        for m in &run.metrics {
            if !rows.iter().any(|r| r.key == m.key) {
                rows.push(CompareRow {
                    key: m.key.clone(),
                    unit: m.unit.clone(),
                    higher_is_better: m.higher_is_better,
                    values: Vec::new(),
                    ratios: Vec::new(),
                });
            }
        }
    }
    for row in &mut rows {
        row.values = runs.iter().map(|r| r.metrics.iter().find(|m| m.key == row.key).map(|m| m.value)).collect();
        let base = row.values.first().copied().flatten();
        row.ratios = row
            .values
            .iter()
            .map(|v| match (base, v) {
                (Some(b), Some(v)) if b != 0.0 && b.is_finite() && v.is_finite() => Some(v / b),
                _ => None,
            })
            .collect();
    }
    Comparison { baseline: runs.first().map(|r| r.result.run_id.clone()).unwrap_or_default(), rows }
}

impl Report {
    /// A warning for a comparison of runs of different workloads (their
    /// workload metrics never line up; only series with the same phase, op
    /// and tier do).
    pub fn mixed_workloads(&self) -> Option<String> {
        let mut w: Vec<&str> = self.runs.iter().map(|r| r.result.workload.as_str()).collect();
        w.sort_unstable();
        w.dedup();
        (self.comparison.is_some() && w.len() > 1).then(|| {
            format!(
                "these runs are of different workloads ({}): only their series with the same phase, op and tier compare",
                w.join(", ")
            )
        })
    }
}

/// Renders the report in `format`.
pub fn render(report: &Report, format: Format) -> Result<String, Error> {
    Ok(match format {
        Format::Text => text::render_text(report),
        Format::Md => text::render_markdown(report),
        Format::Csv => csv::render(report)?,
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report)
                .map_err(|e| Error::failed(format!("cannot serialize the report: {e}")))?;
            s.push('\n');
            s
        }
        Format::Html => html::render(report),
    })
}

/// What `mlpdrive report` was asked to do (the CLI's `ReportArgs`, checked).
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub paths: Vec<PathBuf>,
    pub format: Format,
    pub out: Option<PathBuf>,
    pub compare: bool,
    pub fio_job: bool,
}

/// `mlpdrive report`: loads every path (a results.json, a run directory, or
/// a results root's newest run), renders, and prints or writes `--out`.
pub fn run(opts: &ReportOptions) -> Result<i32, Error> {
    if opts.paths.is_empty() {
        return Err(Error::usage("report: give at least one results.json, run directory or results directory"));
    }
    if opts.compare && opts.paths.len() < 2 {
        return Err(Error::usage("report --compare needs at least two runs (give two or more paths)"));
    }
    if opts.fio_job && (opts.paths.len() != 1 || opts.compare) {
        return Err(Error::usage("report --fio-job describes one run: give exactly one path and no --compare"));
    }
    if opts.fio_job && opts.format != Format::Text {
        return Err(Error::usage("report --fio-job writes a fio job file; leave out --format"));
    }
    if let Some(out) = &opts.out {
        check_out_path(out)?;
    }
    let mut runs = Vec::with_capacity(opts.paths.len());
    for p in &opts.paths {
        let (result, file) = crate::results::load(p)?;
        eprintln!("mlpdrive: {}", file.display());
        runs.push((file, result));
    }
    let text = if opts.fio_job {
        let (file, result) = &runs[0];
        fio::job_file(result, file)?
    } else {
        render(&Report::new(runs, opts.compare), opts.format)?
    };
    match &opts.out {
        Some(out) => {
            write_bytes_atomic(out, text.as_bytes())
                .map_err(|e| Error::failed(format!("cannot write {}: {e}", out.display())))?;
            eprintln!("mlpdrive: wrote {}", out.display());
        }
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}

/// `--out` must name a file whose directory exists (nothing else is created).
fn check_out_path(out: &Path) -> Result<(), Error> {
    if out.is_dir() {
        return Err(Error::usage(format!("--out {}: is a directory; give a file name", out.display())));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::usage(format!(
            "--out {}: directory {} does not exist; create it first",
            out.display(),
            parent.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testutil::sample_result;

    fn two_runs() -> Report {
        let a = sample_result();
        let mut b = sample_result();
        b.run_id = "b".into();
        b.summary["read"]["iops"] = 209_715.2.into();
        b.summary["read"]["latency_us"]["p99"] = 105.25.into();
        Report::new(vec![("a.json".into(), a), ("b.json".into(), b)], true)
    }

    #[test]
    fn compare_gives_ratios_to_the_first_run() {
        let r = two_runs();
        let c = r.comparison.as_ref().expect("comparison");
        assert_eq!(c.baseline, "20261122T073700Z-raw-1a2b");
        let iops = c.rows.iter().find(|r| r.key == "read.iops").expect("read.iops row");
        assert_eq!(iops.values, [Some(104_857.6), Some(209_715.2)]);
        assert_eq!(iops.ratios, [Some(1.0), Some(2.0)]);
        assert!(iops.higher_is_better);
        let p99 = c.rows.iter().find(|r| r.key == "read.latency_us_p99").expect("p99 row");
        assert_eq!(p99.ratios, [Some(1.0), Some(0.5)]);
        assert!(!p99.higher_is_better);
    }

    #[test]
    fn compare_keeps_metrics_only_one_run_has() {
        let a = sample_result();
        let mut b = sample_result();
        b.summary["write"]["ops"] = 10.into();
        b.summary["write"]["iops"] = 1.0.into();
        let r = Report::new(vec![("a".into(), a), ("b".into(), b)], true);
        let c = r.comparison.expect("comparison");
        let w = c.rows.iter().find(|r| r.key == "write.iops").expect("write.iops row");
        assert_eq!(w.values, [None, Some(1.0)]);
        assert_eq!(w.ratios, [None, None]);
    }

    #[test]
    fn json_export_parses_back_into_the_same_report() {
        let r = two_runs();
        let text = render(&r, Format::Json).expect("json");
        let back: Report = serde_json::from_str(&text).expect("parse back");
        assert_eq!(back, r);
        assert_eq!(back.runs[1].result.run_id, "b");
    }

    #[test]
    fn out_path_must_be_a_file_in_an_existing_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = check_out_path(tmp.path()).expect_err("a directory");
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = check_out_path(&tmp.path().join("no/such/report.html")).expect_err("missing dir");
        assert!(e.to_string().contains("does not exist"), "{e}");
        check_out_path(&tmp.path().join("report.html")).expect("fine");
        check_out_path(Path::new("report.html")).expect("relative to cwd");
    }
}
