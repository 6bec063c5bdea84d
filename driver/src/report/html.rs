//! `--format html`: one self-contained page (inline CSS and inline SVG plots;
//! no scripts, no external files or URLs), so it can be mailed or archived
//! as one file and opens offline.
//!
//! Each plot is a `<figure class="plot" data-plot="ID">` holding one `<svg>`,
//! or, when the result lacks its data, `<figure class="plot missing">` with
//! the reason (see [`super::plots`]).

use std::fmt::Write as _;

use super::plots::{Plot, report_plots, run_plots};
use super::text::{fmt_num, fmt_ratio};
use super::{Report, ReportRun};
use crate::results::summary::{io_mode_text, io_mode_warnings, verify_text};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
table{border-collapse:collapse;margin:0.5em 0 1em}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
th{background:#f2f2f2}\
.warn{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px;font-weight:bold}\
.status-ok{color:#137333}.status-failed,.status-interrupted,.status-running{color:#b00020;font-weight:bold}\
figure.plot{margin:1em 0;display:inline-block;vertical-align:top}\
figure.missing p{color:#666;font-style:italic;max-width:700px}\
figcaption{font-weight:bold;margin-bottom:4px}\
code{background:#f6f6f6;padding:0 3px}";

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(report: &Report) -> String {
    render_with_preface(report, "")
}

/// The page with `preface` (trusted HTML, e.g. the suite's summary from
/// `mlpdrive suite`) placed after the heading, before the runs.
pub fn render_with_preface(report: &Report, preface: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>mlpdrive report</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>mlpdrive report</h1>\n<p>{} run(s), mlpdrive {}.</p>\n",
        report.runs.len(),
        esc(&report.mlpdrive_version)
    );
    out.push_str(preface);
    if let Some(c) = &report.comparison {
        out.push_str("<section id=\"comparison\">\n<h2>Comparison (ratios to [1])</h2>\n");
        if let Some(w) = report.mixed_workloads() {
            let _ = writeln!(out, "<p class=\"warn\">{}</p>", esc(&w));
        }
        out.push_str("<ul>\n");
        for (i, run) in report.runs.iter().enumerate() {
            let _ = writeln!(
                out,
                "<li>[{}] <a href=\"#run-{}\"><code>{}</code></a> ({})</li>",
                i + 1,
                i + 1,
                esc(&run.result.run_id),
                esc(&run.result.workload)
            );
        }
        out.push_str("</ul>\n<table>\n<tr><th>metric</th><th>unit</th>");
        for i in 0..report.runs.len() {
            let _ = write!(out, "<th>[{}]</th>", i + 1);
            if i > 0 {
                out.push_str("<th>ratio</th>");
            }
        }
        out.push_str("</tr>\n");
        for row in &c.rows {
            let _ = write!(out, "<tr><td><code>{}</code></td><td>{}</td>", esc(&row.key), esc(&row.unit));
            for (i, v) in row.values.iter().enumerate() {
                let _ = write!(out, "<td class=\"num\">{}</td>", v.map_or_else(|| "-".into(), fmt_num));
                if i > 0 {
                    let _ = write!(out, "<td class=\"num\">{}</td>", fmt_ratio(row.ratios[i]));
                }
            }
            out.push_str("</tr>\n");
        }
        out.push_str(
            "</table>\n<p>A ratio above 1 is better for throughput-like metrics, below 1 for latency and \
             duration.</p>\n</section>\n",
        );
    }
    for (i, run) in report.runs.iter().enumerate() {
        run_section(&mut out, i + 1, run);
    }
    let across = report_plots(&report.runs);
    if !across.is_empty() {
        out.push_str("<section id=\"across-runs\">\n<h2>Across runs</h2>\n");
        for p in &across {
            plot(&mut out, p);
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn run_section(out: &mut String, n: usize, run: &ReportRun) {
    let r = &run.result;
    let _ = writeln!(out, "<section class=\"run\" id=\"run-{n}\">\n<h2>[{n}] Run <code>{}</code></h2>", esc(&r.run_id));
    out.push_str("<table>\n");
    let verify = verify_text(&r.verify);
    let errors = match &r.errors.first {
        Some(f) => format!("{} (first: {f})", r.errors.count),
        None => r.errors.count.to_string(),
    };
    let _ = writeln!(out, "<tr><th>status</th><td class=\"status-{0}\">{0}</td></tr>", esc(r.status.as_str()));
    let mut workload = format!("{} ({})", r.workload, r.source);
    if let Some(d) = &r.description {
        let _ = write!(workload, " — {d}");
    }
    for (k, v) in [
        ("workload", workload),
        ("target", format!("{} ({})", r.target.location, r.target.kind)),
        ("io mode", io_mode_text(r)),
        ("seed", r.seed.to_string()),
        ("started", r.started_at.clone()),
        ("duration", format!("{:.3} s (measured window)", r.duration_s)),
        ("verify", verify),
        ("errors", errors),
        ("host", r.host.clone()),
        ("results", run.path.display().to_string()),
    ] {
        let _ = writeln!(out, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    out.push_str("</table>\n");
    for w in io_mode_warnings(r) {
        let _ = writeln!(out, "<p class=\"warn\">{}</p>", esc(&w));
    }
    out.push_str("<h3>Metrics</h3>\n<table>\n<tr><th>metric</th><th>unit</th><th>value</th></tr>\n");
    for m in run.metrics.iter().filter(|m| !m.key.starts_with("series.")) {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&m.key),
            esc(&m.unit),
            fmt_num(m.value)
        );
    }
    out.push_str("</table>\n");
    series_table(out, run);
    if !r.notes.is_empty() {
        out.push_str("<h3>Notes</h3>\n<ul>\n");
        for note in &r.notes {
            let _ = writeln!(out, "<li>{}</li>", esc(note));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h3>Plots</h3>\n");
    for p in run_plots(run) {
        plot(out, &p);
    }
    out.push_str("</section>\n");
}

/// The `series.*` metrics as one row per (phase, op, tier).
fn series_table(out: &mut String, run: &ReportRun) {
    if run.result.series.is_empty() {
        return;
    }
    out.push_str(
        "<h3>Latency series</h3>\n<table>\n<tr><th>phase</th><th>op</th><th>tier</th><th>ops</th><th>bytes</th>\
         <th>mean, µs</th><th>p50, µs</th><th>p99, µs</th><th>p99.9, µs</th><th>max, µs</th></tr>\n",
    );
    for s in &run.result.series {
        let l = &s.latency_us;
        let _ = write!(out, "<tr><td>{}</td><td>{}</td><td>{}</td>", esc(&s.phase), esc(&s.op), esc(&s.tier));
        let _ = write!(out, "<td class=\"num\">{}</td><td class=\"num\">{}</td>", s.ops, s.bytes);
        for v in [l.mean, l.p50, l.p99, l.p999, l.max] {
            let _ = write!(out, "<td class=\"num\">{}</td>", fmt_num(v));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn plot(out: &mut String, p: &Plot) {
    match &p.content {
        Ok(svg) => {
            let _ = writeln!(
                out,
                "<figure class=\"plot\" data-plot=\"{}\">\n<figcaption>{}</figcaption>\n{}\n</figure>",
                p.id,
                esc(&p.title),
                svg.trim()
            );
        }
        Err(reason) => {
            let _ = writeln!(
                out,
                "<figure class=\"plot missing\" data-plot=\"{}\">\n<figcaption>{}</figcaption>\n<p>{}</p>\n</figure>",
                p.id,
                esc(&p.title),
                esc(reason)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testutil::sample_result;

    /// The `data-plot` ids of the figures that hold an SVG, in page order.
    fn drawn(html: &str) -> Vec<String> {
        html.split("<figure class=\"plot\" data-plot=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn page_is_self_contained_with_one_svg_per_drawn_plot() {
        let mut r = sample_result();
        r.notes = vec!["<script>alert(1)</script>".into()];
        let report = Report::new(vec![("a.json".into(), r)], false);
        let html = render(&report);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert_eq!(drawn(&html), ["latency-cdf", "throughput", "queue-depth"]);
        assert_eq!(html.matches("<svg").count(), 3, "one <svg> per drawn plot");
        assert!(!html.contains("<script"), "no scripts (and notes are escaped)");
        assert!(html.contains("&lt;script&gt;"));
        for external in ["src=", "href=\"http", "<link", "url("] {
            assert!(!html.contains(external), "{external} makes the page depend on another file");
        }
    }

    #[test]
    fn compare_page_has_the_ratio_table_and_every_run() {
        let a = sample_result();
        let mut b = sample_result();
        b.run_id = "b".into();
        let report = Report::new(vec![("a".into(), a), ("b".into(), b)], true);
        let html = render(&report);
        assert!(html.contains("<section id=\"comparison\">"));
        assert!(html.contains("<td class=\"num\">1.000x</td>"), "ratios shown");
        assert_eq!(html.matches("<section class=\"run\"").count(), 2);
        assert_eq!(drawn(&html).len(), 6, "latency, throughput and queue depth per run");
    }
}
