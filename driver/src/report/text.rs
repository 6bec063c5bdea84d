//! The text and Markdown renderings of a [`Report`].
//!
//! Text for one run is exactly the human summary (summary.txt); for several
//! runs, their summaries one after the other; with `--compare`, a table of
//! every metric with each run's value and its ratio to the first run.
//! Markdown has the same content as tables.

use std::fmt::Write as _;

use super::{Comparison, Report, ReportRun};
use crate::results::summary::{io_mode_text, io_mode_warnings, render_text as summary_text, verify_text};

/// A number for people: integers as integers, others with a precision that
/// fits their size.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if v == v.trunc() && a < 1e15 {
        format!("{v:.0}")
    } else if a >= 1000.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// A ratio to the baseline, e.g. `1.25x`.
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.3}x"))
}

/// One line per run for the legend of a comparison: `[1] run_id (workload, path)`.
fn legend(runs: &[ReportRun]) -> Vec<String> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| format!("[{}] {} ({}, {})", i + 1, r.result.run_id, r.result.workload, r.path.display()))
        .collect()
}

pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    match &report.comparison {
        None => {
            for (i, run) in report.runs.iter().enumerate() {
                if i > 0 {
                    out.push_str("\n\n");
                }
                out.push_str(&summary_text(&run.result));
            }
        }
        Some(c) => compare_text(&mut out, report, c),
    }
    out
}

fn compare_text(out: &mut String, report: &Report, c: &Comparison) {
    let _ = writeln!(out, "comparison of {} runs (ratios to [1]):", report.runs.len());
    if let Some(w) = report.mixed_workloads() {
        let _ = writeln!(out, "!!! {w}");
    }
    for l in legend(&report.runs) {
        let _ = writeln!(out, "  {l}");
    }
    out.push('\n');
    let key_w = c.rows.iter().map(|r| r.key.len()).max().unwrap_or(6).max(6);
    let unit_w = c.rows.iter().map(|r| r.unit.len()).max().unwrap_or(4).max(4);
    let _ = write!(out, "{:<key_w$}  {:<unit_w$}", "metric", "unit");
    for i in 0..report.runs.len() {
        let _ = write!(out, "  {:>14}", format!("[{}]", i + 1));
        if i > 0 {
            let _ = write!(out, "  {:>9}", "ratio");
        }
    }
    out.push('\n');
    for row in &c.rows {
        let _ = write!(out, "{:<key_w$}  {:<unit_w$}", row.key, row.unit);
        for (i, v) in row.values.iter().enumerate() {
            let _ = write!(out, "  {:>14}", v.map_or_else(|| "-".into(), fmt_num));
            if i > 0 {
                let _ = write!(out, "  {:>9}", fmt_ratio(row.ratios[i]));
            }
        }
        out.push('\n');
    }
    out.push_str("\nratio > 1 is better for throughput-like metrics, < 1 is better for latency and duration.\n");
}

/// `|` would end a Markdown table cell.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render_markdown(report: &Report) -> String {
    let mut out = String::from("# mlpdrive report\n\n");
    for run in &report.runs {
        run_markdown(&mut out, run);
    }
    if let Some(c) = &report.comparison {
        let _ = writeln!(out, "## Comparison (ratios to [1])\n");
        if let Some(w) = report.mixed_workloads() {
            let _ = writeln!(out, "> **{}**\n", md_cell(&w));
        }
        for l in legend(&report.runs) {
            let _ = writeln!(out, "- {}", md_cell(&l));
        }
        out.push('\n');
        out.push_str("| metric | unit |");
        for i in 0..report.runs.len() {
            let _ = write!(out, " [{}] |", i + 1);
            if i > 0 {
                out.push_str(" ratio |");
            }
        }
        out.push_str("\n| --- | --- |");
        for i in 0..report.runs.len() {
            out.push_str(" ---: |");
            if i > 0 {
                out.push_str(" ---: |");
            }
        }
        out.push('\n');
        for row in &c.rows {
            let _ = write!(out, "| `{}` | {} |", row.key, row.unit);
            for (i, v) in row.values.iter().enumerate() {
                let _ = write!(out, " {} |", v.map_or_else(|| "-".into(), fmt_num));
                if i > 0 {
                    let _ = write!(out, " {} |", fmt_ratio(row.ratios[i]));
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

fn run_markdown(out: &mut String, run: &ReportRun) {
    let r = &run.result;
    let _ = writeln!(out, "## Run `{}`\n", md_cell(&r.run_id));
    out.push_str("| field | value |\n| --- | --- |\n");
    let verify = verify_text(&r.verify);
    let errors = match &r.errors.first {
        Some(f) => format!("{} (first: {f})", r.errors.count),
        None => r.errors.count.to_string(),
    };
    let rows = [
        ("status", r.status.as_str().to_string()),
        ("workload", format!("{} ({})", r.workload, r.source)),
        ("target", format!("{} ({})", r.target.location, r.target.kind)),
        ("io mode", io_mode_text(r)),
        ("seed", r.seed.to_string()),
        ("started", r.started_at.clone()),
        ("duration", format!("{:.3} s", r.duration_s)),
        ("verify", verify),
        ("errors", errors),
        ("results", run.path.display().to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", md_cell(&v));
    }
    out.push('\n');
    for w in io_mode_warnings(r) {
        let _ = writeln!(out, "> **{}**\n", md_cell(&w));
    }
    out.push_str("| metric | unit | value |\n| --- | --- | ---: |\n");
    for m in &run.metrics {
        let _ = writeln!(out, "| `{}` | {} | {} |", m.key, m.unit, fmt_num(m.value));
    }
    out.push('\n');
    if !r.notes.is_empty() {
        out.push_str("Notes:\n\n");
        for n in &r.notes {
            let _ = writeln!(out, "- {}", md_cell(n));
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testutil::sample_result;

    #[test]
    fn one_run_text_is_the_summary() {
        let r = sample_result();
        let report = Report::new(vec![("x/results.json".into(), r.clone())], false);
        assert_eq!(render_text(&report), summary_text(&r));
    }

    #[test]
    fn compare_text_has_values_and_ratios() {
        let a = sample_result();
        let mut b = sample_result();
        b.run_id = "second".into();
        b.summary["read"]["iops"] = 52_428.8.into();
        let report = Report::new(vec![("a".into(), a), ("b".into(), b)], true);
        let t = render_text(&report);
        assert!(t.contains("[2] second (raw, b)"), "{t}");
        let row = t.lines().find(|l| l.starts_with("read.iops ")).expect("read.iops row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["read.iops", "ops/s", "104857.6", "52428.8", "0.500x"]);
        assert!(!t.contains("!!!"), "same workload: no warning\n{t}");
        let mut c = sample_result();
        c.workload = "vdb".into();
        let mixed = Report::new(vec![("a".into(), sample_result()), ("c".into(), c)], true);
        assert!(render_text(&mixed).contains("!!! these runs are of different workloads (raw, vdb)"));
        assert!(render_markdown(&mixed).contains("> **these runs are of different workloads"));
    }

    #[test]
    fn markdown_has_a_table_per_run_and_escapes_pipes() {
        let mut r = sample_result();
        r.notes = vec!["a | b".into()];
        let report = Report::new(vec![("p".into(), r)], false);
        let md = render_markdown(&report);
        assert!(md.contains("## Run `20261122T073700Z-raw-1a2b`"), "{md}");
        assert!(md.contains("| `read.iops` | ops/s | 104857.6 |"), "{md}");
        assert!(md.contains("- a \\| b"), "{md}");
        assert!(md.contains("| io mode | O_DIRECT, io_uring, registered buffers |"), "{md}");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(1234.567), "1234.6");
        assert_eq!(fmt_num(12.34567), "12.346");
        assert_eq!(fmt_num(0.123456), "0.1235");
        assert_eq!(fmt_ratio(Some(2.0)), "2.000x");
        assert_eq!(fmt_ratio(None), "-");
    }
}
