//! The HTML report's plots, drawn with `plotters` into SVG strings (its SVG
//! backend only: no fonts or bitmaps, text stays `<text>` for the browser).
//!
//! Each plot is a [`Plot`] with a stable id; a plot whose data the result
//! does not hold is a [`Plot`] with the reason instead of an SVG, so the
//! page says what is missing rather than leaving a hole. Per run:
//! - `latency-cdf`: per (phase, op, tier) series, the CDF through the
//!   recorded percentiles (min, p50, p90, p99, p99.9, p99.99, max) — the
//!   results hold percentiles, not histogram buckets, so the curve is those
//!   seven points joined by straight lines;
//! - `throughput`: read and write MB/s per time-series interval;
//! - `queue-depth`: not recorded in results.json (always the reason);
//! - `au-per-epoch` (training): AU per epoch against the pass threshold;
//! - `checkpoint-ranks` (checkpoint): each rank's save and load duration per checkpoint.
//!
//! Across the runs of a report: `recall-qps` (vdb runs): recall@k against QPS,
//! one point per run, so a sweep of `search_list` draws the curve.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::ReportRun;
use super::metrics::at;
use crate::results::RunResult;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 420;

/// One plot of the page: an SVG, or why it could not be drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// Stable id, e.g. `latency-cdf`.
    pub id: &'static str,
    pub title: String,
    pub content: Result<String, String>,
}

impl Plot {
    fn missing(id: &'static str, title: &str, reason: impl Into<String>) -> Plot {
        Plot { id, title: title.into(), content: Err(reason.into()) }
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), String>;

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Draws into a fresh SVG document of the page's plot size.
fn svg(draw: impl FnOnce(&Area) -> DrawResult) -> Result<String, String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(e2s)?;
        draw(&root)?;
        root.present().map_err(e2s)?;
    }
    Ok(s)
}

fn color(i: usize) -> RGBColor {
    // Palette99's first colours, as RGB so they compare and copy.
    let (r, g, b) = Palette99::pick(i).rgb();
    RGBColor(r, g, b)
}

/// The plots of one run, in page order.
pub fn run_plots(run: &ReportRun) -> Vec<Plot> {
    let r = &run.result;
    let mut out = vec![latency_cdf(r), throughput(r), queue_depth(r)];
    if r.workload == "training" {
        out.push(au_per_epoch(r));
    }
    if r.workload == "checkpoint" {
        out.push(checkpoint_ranks(r));
    }
    out
}

/// Plots drawn across all runs of the report.
pub fn report_plots(runs: &[ReportRun]) -> Vec<Plot> {
    let vdb: Vec<&RunResult> = runs.iter().map(|r| &r.result).filter(|r| r.workload == "vdb").collect();
    if vdb.is_empty() { Vec::new() } else { vec![recall_qps(&vdb)] }
}

fn latency_cdf(r: &RunResult) -> Plot {
    const ID: &str = "latency-cdf";
    let title = "Latency CDF per phase, op and tier (through the recorded percentiles)";
    let series: Vec<_> = r.series.iter().filter(|s| s.ops > 0).collect();
    if series.is_empty() {
        return Plot::missing(ID, title, "no completed operations in this result");
    }
    let positive = |v: f64| if v > 0.0 { Some(v) } else { None };
    let lo = series.iter().filter_map(|s| positive(s.latency_us.min)).fold(f64::INFINITY, f64::min);
    let hi = series.iter().map(|s| s.latency_us.max).fold(0.0, f64::max);
    let lo = if lo.is_finite() { lo * 0.8 } else { 0.1 };
    let hi = if hi > lo { hi * 1.25 } else { lo * 10.0 };
    let content = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("latency CDF", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("latency, µs (log scale)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("fraction of ops at or below")
            .draw()
            .map_err(e2s)?;
        for (i, s) in series.iter().enumerate() {
            let l = &s.latency_us;
            let pts: Vec<(f64, f64)> = [
                (l.min, 0.0),
                (l.p50, 0.5),
                (l.p90, 0.9),
                (l.p99, 0.99),
                (l.p999, 0.999),
                (l.p9999, 0.9999),
                (l.max, 1.0),
            ]
            .into_iter()
            .map(|(x, y)| (x.max(lo), y))
            .collect();
            let c = color(i);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(e2s)?
                .label(format!("{} {} {}", s.phase, s.op, s.tier))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled()))).map_err(e2s)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e2s)
    });
    Plot { id: ID, title: title.into(), content }
}

fn throughput(r: &RunResult) -> Plot {
    const ID: &str = "throughput";
    let title = "Throughput over time (MB/s per interval)";
    if r.timeseries.is_empty() {
        return Plot::missing(
            ID,
            title,
            format!("no time series in this result (the {} workload records none)", r.workload),
        );
    }
    let mut read = Vec::new();
    let mut write = Vec::new();
    let mut prev = 0.0;
    for p in &r.timeseries {
        let dt = p.t_s - prev;
        if dt > 0.0 {
            read.push((p.t_s, p.read_bytes as f64 / dt / 1e6));
            write.push((p.t_s, p.write_bytes as f64 / dt / 1e6));
        }
        prev = p.t_s;
    }
    let content = timeline(r, "throughput", "MB/s", vec![("read", read), ("write", write)]);
    Plot { id: ID, title: title.into(), content }
}

fn queue_depth(r: &RunResult) -> Plot {
    const ID: &str = "queue-depth";
    let title = "Queue depth over time (mean reads and writes in flight per interval)";
    if r.timeseries.iter().all(|p| p.latency_ns_sum == 0) {
        return Plot::missing(
            ID,
            title,
            format!(
                "no queue depth over time in this result (no time series, or written by a version that did not \
                 record op latencies per interval; the {} run's configured depth is in its config)",
                r.workload
            ),
        );
    }
    let mut depth = Vec::new();
    let mut prev = 0.0;
    for p in &r.timeseries {
        if let Some(d) = p.mean_in_flight(prev) {
            depth.push((p.t_s, d));
        }
        prev = p.t_s;
    }
    let content = timeline(r, "queue depth (Little's law)", "ops in flight", vec![("in flight", depth)]);
    Plot { id: ID, title: title.into(), content }
}

/// A line chart over the measured window: one line per named series,
/// series that stay at zero left out.
fn timeline(r: &RunResult, caption: &str, y_desc: &str, lines: Vec<(&str, Vec<(f64, f64)>)>) -> Result<String, String> {
    let t_max = r.timeseries.last().map_or(1.0, |p| p.t_s).max(1e-3);
    let y_max = lines.iter().flat_map(|l| &l.1).map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(e2s)?;
        chart.configure_mesh().x_desc("time in the measured window, s").y_desc(y_desc).draw().map_err(e2s)?;
        for (i, (name, pts)) in lines.into_iter().enumerate() {
            if pts.iter().all(|p| p.1 == 0.0) {
                continue;
            }
            let c = color(i);
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(e2s)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(e2s)
    })
}

fn f64s(v: Option<&Value>) -> Vec<f64> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

fn au_per_epoch(r: &RunResult) -> Plot {
    const ID: &str = "au-per-epoch";
    let title = "Accelerator utilisation (AU) per epoch";
    let au = f64s(at(&r.summary, "metric.train_au_percentage"));
    if au.is_empty() {
        return Plot::missing(ID, title, "the summary has no metric.train_au_percentage (no epoch completed?)");
    }
    let threshold = at(&r.summary, "au_threshold_percentage").and_then(Value::as_f64);
    let n = au.len() as f64;
    let content = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("AU per epoch", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5..n + 0.5, 0.0..105.0)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("AU, %")
            .x_labels(au.len().min(20))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e2s)?;
        let pts: Vec<(f64, f64)> = au.iter().enumerate().map(|(i, v)| (i as f64 + 1.0, *v)).collect();
        let c = color(0);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(e2s)?
            .label("AU")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled()))).map_err(e2s)?;
        if let Some(t) = threshold {
            chart
                .draw_series(LineSeries::new(vec![(0.5, t), (n + 0.5, t)], RED.stroke_width(1)))
                .map_err(e2s)?
                .label(format!("pass threshold {t:.0} %"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e2s)
    });
    Plot { id: ID, title: title.into(), content }
}

fn checkpoint_ranks(r: &RunResult) -> Plot {
    const ID: &str = "checkpoint-ranks";
    let title = "Checkpoint duration per rank (each save and load)";
    let mut lines: Vec<(String, Vec<f64>)> = Vec::new();
    for phase in ["save", "load"] {
        let Some(list) = at(&r.summary, &format!("{phase}.per_checkpoint")).and_then(Value::as_array) else {
            continue;
        };
        for c in list {
            let step = c.get("step").and_then(Value::as_u64).unwrap_or(0);
            let d = f64s(c.get("rank_duration_s"));
            if !d.is_empty() {
                lines.push((format!("{phase} {step}"), d));
            }
        }
    }
    if lines.is_empty() {
        return Plot::missing(ID, title, "the summary has no per-checkpoint rank durations");
    }
    let ranks = lines.iter().map(|l| l.1.len()).max().unwrap_or(1);
    let y_max = lines.iter().flat_map(|l| l.1.iter().copied()).fold(0.0, f64::max).max(1e-6) * 1.15;
    let content = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("checkpoint duration per rank", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5..ranks as f64 - 0.5, 0.0..y_max)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("rank")
            .y_desc("duration, s")
            .x_labels(ranks.min(16))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e2s)?;
        for (i, (name, d)) in lines.into_iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = d.into_iter().enumerate().map(|(rank, s)| (rank as f64, s)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(1)))
                .map_err(e2s)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled()))).map_err(e2s)?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(e2s)
    });
    Plot { id: ID, title: title.into(), content }
}

fn recall_qps(runs: &[&RunResult]) -> Plot {
    const ID: &str = "recall-qps";
    let title = "Recall@k against QPS (one point per vdb run)";
    let mut pts: Vec<(f64, f64, String)> = runs
        .iter()
        .filter_map(|r| {
            let recall = at(&r.summary, "recall_at_k").and_then(Value::as_f64)?;
            let qps = at(&r.summary, "throughput_qps").and_then(Value::as_f64)?;
            let l = at(&r.summary, "search_list").and_then(Value::as_u64);
            Some((recall, qps, l.map_or_else(|| r.run_id.clone(), |l| format!("L={l}"))))
        })
        .collect();
    if pts.is_empty() {
        return Plot::missing(ID, title, "no vdb run here has recall_at_k and throughput_qps");
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
    let content = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("recall@k vs QPS", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.02, 0.0..y_max)
            .map_err(e2s)?;
        chart.configure_mesh().x_desc("recall@k").y_desc("queries/s").draw().map_err(e2s)?;
        let c = color(0);
        chart.draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(2))).map_err(e2s)?;
        chart
            .draw_series(pts.iter().map(|p| {
                EmptyElement::at((p.0, p.1))
                    + Circle::new((0, 0), 4, c.filled())
                    + Text::new(p.2.clone(), (6, -14), ("sans-serif", 12))
            }))
            .map_err(e2s)?;
        Ok(())
    });
    Plot { id: ID, title: title.into(), content }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;
    use crate::results::testutil::sample_result;

    fn plots(r: RunResult) -> Vec<Plot> {
        let report = Report::new(vec![("p".into(), r)], false);
        run_plots(&report.runs[0])
    }

    #[test]
    fn raw_run_draws_latency_throughput_and_queue_depth() {
        let p = plots(sample_result());
        let ids: Vec<&str> = p.iter().map(|p| p.id).collect();
        assert_eq!(ids, ["latency-cdf", "throughput", "queue-depth"]);
        let cdf = p[0].content.as_ref().expect("cdf svg");
        assert!(cdf.starts_with("<svg") && cdf.trim_end().ends_with("</svg>"), "{cdf}");
        assert!(cdf.contains("measure read -"), "legend names the series");
        assert!(cdf.contains("<polyline") || cdf.contains("<path"), "a line is drawn");
        assert!(p[1].content.as_ref().expect("throughput svg").contains("MB/s"));
        let qd = p[2].content.as_ref().expect("queue depth svg");
        assert!(qd.contains("ops in flight") && qd.contains("<polyline"), "{qd}");
        let mut old = sample_result();
        old.timeseries[0].latency_ns_sum = 0;
        let p = plots(old);
        assert!(p[2].content.as_ref().expect_err("no depth recorded").contains("did not"));
    }

    #[test]
    fn training_and_checkpoint_get_their_plots() {
        let mut t = sample_result();
        t.workload = "training".into();
        t.summary = serde_json::json!({
            "au_threshold_percentage": 90.0,
            "metric": { "train_au_percentage": [95.0, 91.5, 88.0] },
        });
        let p = plots(t);
        let au = p.iter().find(|p| p.id == "au-per-epoch").expect("au plot");
        assert!(au.content.as_ref().expect("svg").contains("pass threshold 90 %"));

        let mut c = sample_result();
        c.workload = "checkpoint".into();
        c.summary = serde_json::json!({
            "save": { "per_checkpoint": [ { "step": 1, "rank_duration_s": [0.3, 0.2] } ] },
            "load": { "per_checkpoint": [ { "step": 1, "rank_duration_s": [0.1, 0.15] } ] },
        });
        let p = plots(c);
        let ck = p.iter().find(|p| p.id == "checkpoint-ranks").expect("rank plot");
        let svg = ck.content.as_ref().expect("svg");
        assert!(svg.contains("save 1") && svg.contains("load 1"), "{svg}");
    }

    #[test]
    fn empty_results_explain_instead_of_drawing() {
        let mut r = sample_result();
        r.series.clear();
        r.timeseries.clear();
        let p = plots(r);
        assert!(p.iter().all(|p| p.content.is_err()), "{p:?}");
    }

    #[test]
    fn recall_qps_has_a_point_per_vdb_run() {
        let runs: Vec<(std::path::PathBuf, RunResult)> = [(32, 0.7, 2000.0), (64, 0.8, 1000.0), (128, 0.9, 500.0)]
            .into_iter()
            .map(|(l, recall, qps)| {
                let mut r = sample_result();
                r.workload = "vdb".into();
                r.summary = serde_json::json!({ "search_list": l, "recall_at_k": recall, "throughput_qps": qps });
                ("p".into(), r)
            })
            .collect();
        let report = Report::new(runs, false);
        let p = report_plots(&report.runs);
        assert_eq!(p.len(), 1);
        let svg = p[0].content.as_ref().expect("svg");
        for l in ["L=32", "L=64", "L=128"] {
            assert!(svg.contains(l), "{l} in {svg}");
        }
        assert!(report_plots(&Report::new(vec![("p".into(), sample_result())], false).runs).is_empty());
    }
}
