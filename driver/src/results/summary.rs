//! The human summary (`summary.txt`, `mlpdrive report`, end of `mlpdrive
//! run`), rendered from a [`RunResult`] only, so it shows exactly what
//! results.json holds.
//!
//! Layout, like hyperfine or fio: a header saying what ran where and how
//! (with a loud line when the I/O mode is not the real thing), the
//! workload's figures (a table for `raw`, flattened `key: value` lines for
//! other workloads), then verification, errors, notes and the client's own
//! cost.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{RunResult, RunStatus, VerifyRecord};
use crate::datagen::VerifyMode;
use crate::recorder::SeriesStats;

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// The `{ops, bytes, iops, bytes_per_s, latency_us}` object of one op kind
/// in the `raw` workload's summary (all zeros when there is no series).
/// `window_s` is the measured window in seconds; rates are totals divided by
/// it.
pub fn raw_op_summary(stats: Option<SeriesStats>, window_s: f64) -> Value {
    let s = stats.unwrap_or_default();
    let per_s = |x: u64| if window_s > 0.0 { x as f64 / window_s } else { 0.0 };
    json!({
        "ops": s.ops,
        "bytes": s.bytes,
        "iops": per_s(s.ops),
        "bytes_per_s": per_s(s.bytes),
        "latency_us": s.latency_us,
    })
}

/// The human summary of a run.
pub fn render_text(r: &RunResult) -> String {
    let mut out = String::new();
    header(&mut out, r);
    out.push('\n');
    let workload_text = match r.workload.as_str() {
        "checkpoint" => crate::workload::checkpoint::text::render_summary(&r.summary),
        "kvcache" if r.summary.get("summary").is_some() => {
            Some(crate::workload::kvcache::output::text(&r.summary, &r.series))
        }
        _ => None,
    };
    match (raw_rows(r), workload_text) {
        (Some(rows), _) => raw_table(&mut out, r, &rows),
        (None, Some(text)) => out.push_str(&text),
        (None, None) => generic_summary(&mut out, &r.summary),
    }
    out.push('\n');
    footer(&mut out, r);
    out
}

/// Appends one `label: value` line with aligned values.
fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<10} {value}", format!("{label}:"));
}

fn header(out: &mut String, r: &RunResult) {
    let _ = writeln!(out, "mlpdrive {} · run {}", r.mlpdrive_version, r.run_id);
    match r.status {
        RunStatus::Ok => line(out, "status", "ok"),
        RunStatus::Failed => line(out, "status", "FAILED (see errors and verify below)"),
        RunStatus::Interrupted => line(out, "status", "INTERRUPTED (figures cover only the part that ran)"),
        RunStatus::Running => {
            line(out, "status", "RUNNING (partial results: the run had not finished when this was written)")
        }
    }
    let mut workload = format!("{} ({})", r.workload, r.source);
    if let Some(d) = &r.description {
        let _ = write!(workload, " — {d}");
    }
    line(out, "workload", workload);
    line(out, "target", format!("{} ({})", r.target.location, r.target.kind));
    line(out, "io mode", io_mode_text(r));
    for warning in io_mode_warnings(r) {
        let _ = writeln!(out, "!!! {warning}");
    }
    line(out, "seed", r.seed);
    line(out, "started", &r.started_at);
    line(out, "duration", format!("{:.3} s (measured window)", r.duration_s));
}

pub(crate) fn io_mode_text(r: &RunResult) -> String {
    let m = &r.io_mode;
    let storage = match (m.engine.as_str(), m.direct) {
        ("null", _) => "no storage",
        ("emu", _) => "in memory",
        ("nbd", _) => "over NBD (TCP)",
        ("s3", _) => "object storage over HTTP",
        (_, true) => "O_DIRECT",
        (_, false) => "buffered (page cache)",
    };
    let mut parts = vec![storage.to_string()];
    parts.push(m.engine.clone());
    if m.registered_buffers {
        parts.push("registered buffers".into());
    }
    let mut s = parts.join(", ");
    if let Some(n) = &m.note {
        let _ = write!(s, " ({n})");
    }
    s
}

/// Loud lines for an I/O mode that is not O_DIRECT + io_uring.
pub(crate) fn io_mode_warnings(r: &RunResult) -> Vec<String> {
    let m = &r.io_mode;
    if m.engine == "null" {
        return vec!["NULL ENGINE: no storage I/O was done; the figures are mlpdrive's own ceiling".into()];
    }
    if m.engine == "emu" {
        let note = m.note.as_deref().unwrap_or_default();
        let bytes = if note.contains("store=none") {
            "no bytes were kept (reads regenerated)"
        } else {
            "bytes were kept in memory"
        };
        let clock = if note.contains("virtual clock") { " in simulated time (virtual clock)" } else { "" };
        return vec![format!(
            "EMULATED DEVICE: {bytes} and timing came from the device profile{clock}, not real storage"
        )];
    }
    if m.engine == "nbd" {
        return vec![
            "NBD TARGET: I/O went over TCP to an NBD server; caching and durability are the server's (O_DIRECT does \
             not apply)"
                .into(),
        ];
    }
    if m.engine == "s3" {
        return Vec::new();
    }
    let mut w = Vec::new();
    if !m.direct {
        w.push("O_DIRECT NOT USED: the page cache was in the path; figures may measure memory, not storage".into());
    }
    if m.engine == "sync" {
        w.push(
            "io_uring NOT USED: synchronous pread/pwrite fallback; throughput and CPU cost differ from io_uring".into(),
        );
    } else if m.engine != "io_uring" {
        w.push(format!("io_uring NOT USED: engine is '{}'", m.engine));
    }
    w
}

/// One row of the raw table.
struct RawRow {
    op: &'static str,
    ops: u64,
    iops: f64,
    bytes_per_s: f64,
    lat: [f64; 5],
}

const RAW_BLOCK_OPS: &[&str] = &["read", "write"];
const RAW_OBJECT_OPS: &[&str] = &["put", "get"];

/// The read and write (or put and get) rows of a `raw` summary, or None when the summary is
/// not that shape (another workload, or a partial flush).
fn raw_rows(r: &RunResult) -> Option<Vec<RawRow>> {
    if r.workload != "raw" {
        return None;
    }
    let mut rows = Vec::new();
    // The object mode's rows are whole objects (put, get), the block mode's I/Os.
    let ops = if r.summary.get("put").is_some() { RAW_OBJECT_OPS } else { RAW_BLOCK_OPS };
    for &op in ops {
        let o = r.summary.get(op)?;
        let num = |key: &str| o.get(key).and_then(Value::as_f64);
        let lat = o.get("latency_us")?;
        let l = |key: &str| lat.get(key).and_then(Value::as_f64);
        let ops = o.get("ops").and_then(Value::as_u64)?;
        let row = RawRow {
            op,
            ops,
            iops: num("iops")?,
            bytes_per_s: num("bytes_per_s")?,
            lat: [l("mean")?, l("p50")?, l("p99")?, l("p999")?, l("max")?],
        };
        if ops > 0 {
            rows.push(row);
        }
    }
    Some(rows)
}

fn raw_table(out: &mut String, r: &RunResult, rows: &[RawRow]) {
    // The workload's parameters (rw, block_size, ...) first.
    let params: Vec<String> = r
        .summary
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !RAW_BLOCK_OPS.contains(&k.as_str()) && !RAW_OBJECT_OPS.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={}", scalar_text(v)))
                .collect()
        })
        .unwrap_or_default();
    if !params.is_empty() {
        line(out, "params", params.join(" "));
        out.push('\n');
    }
    if rows.is_empty() {
        let _ = writeln!(out, "no operations completed in the measured window");
        return;
    }
    let _ = writeln!(
        out,
        "{:<6} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "op", "ops", "IOPS", "MB/s", "MiB/s", "mean_us", "p50_us", "p99_us", "p99.9_us", "max_us"
    );
    for row in rows {
        let [mean, p50, p99, p999, max] = row.lat;
        let _ = writeln!(
            out,
            "{:<6} {:>12} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            row.op,
            row.ops,
            row.iops,
            row.bytes_per_s / 1e6,
            row.bytes_per_s / MIB,
            mean,
            p50,
            p99,
            p999,
            max
        );
    }
}

/// Any workload's summary as flattened `key: value` lines.
fn generic_summary(out: &mut String, summary: &Value) {
    let mut lines = Vec::new();
    flatten("", summary, &mut lines);
    if lines.is_empty() {
        let _ = writeln!(out, "summary: (empty)");
        return;
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let label = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                flatten(&label(k), child, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, child) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), child, out);
            }
        }
        Value::Null if prefix.is_empty() => {}
        other => out.push((format!("{prefix}:"), scalar_text(other))),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line on read verification, shared by the summary and every report
/// format: the mode, then what was checked how much, or the failure.
pub fn verify_text(v: &VerifyRecord) -> String {
    if !v.enabled {
        return "OFF (data read back was not checked)".to_string();
    }
    let (mode, checked) = match v.mode {
        VerifyMode::Sampled => (
            format!(" (sampled: payload checked in 1 of {} blocks)", v.sample_every.unwrap_or(0)),
            format!(
                "{} fully verified, {} header-checked only",
                bytes_text(v.verified_bytes),
                bytes_text(v.header_checked_bytes)
            ),
        ),
        _ => (String::new(), format!("{} verified", bytes_text(v.verified_bytes))),
    };
    if v.errors > 0 {
        let first = v.first.as_deref().unwrap_or("no description");
        format!("FAILED{mode}: {} bad blocks in {checked} (first: {first})", v.errors)
    } else {
        format!("ok{mode}: {checked}, {} read unverified, 0 errors", bytes_text(v.unverified_bytes))
    }
}

fn footer(out: &mut String, r: &RunResult) {
    line(out, "verify", verify_text(&r.verify));
    match (&r.errors.count, &r.errors.first) {
        (0, _) => line(out, "errors", "0"),
        (n, Some(first)) => line(out, "errors", format!("{n} (first: {first})")),
        (n, None) => line(out, "errors", n),
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "notes:");
        for n in &r.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    let cpu_s = r.cpu_user_s + r.cpu_sys_s;
    let moved: u64 = r.series.iter().map(|s| s.bytes).sum();
    let per_gib = if moved > 0 {
        format!("{:.3} CPU-s per GiB moved ({} in all phases)", cpu_s / (moved as f64 / GIB), bytes_text(moved))
    } else {
        "CPU-s per GiB: n/a (no bytes moved)".to_string()
    };
    line(out, "cpu", format!("user {:.2} s, sys {:.2} s; {per_gib}", r.cpu_user_s, r.cpu_sys_s));
    line(out, "peak rss", bytes_text(r.peak_rss_bytes));
}

/// Bytes in binary units, e.g. `1.50 GiB`.
pub(crate) fn bytes_text(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{x:.2} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::LatencyUs;
    use crate::results::testutil::sample_result;

    fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
    }

    #[test]
    fn raw_summary_renders_header_table_and_footer() {
        let r = sample_result();
        let t = render_text(&r);
        assert!(t.starts_with("mlpdrive 0.1.0 · run 20261122T073700Z-raw-1a2b\n"), "{t}");
        assert_eq!(line_starting(&t, "status:"), "status:    ok");
        assert_eq!(line_starting(&t, "workload:"), "workload:  raw (preset raw) — fio-like calibration");
        assert_eq!(line_starting(&t, "target:"), "target:    file:///mnt/nvme (file)");
        assert_eq!(line_starting(&t, "io mode:"), "io mode:   O_DIRECT, io_uring, registered buffers");
        assert!(!t.contains("!!!"), "no warnings for O_DIRECT + io_uring:\n{t}");
        assert_eq!(line_starting(&t, "seed:"), "seed:      42");
        assert_eq!(line_starting(&t, "duration:"), "duration:  10.000 s (measured window)");
        assert!(line_starting(&t, "params:").contains("rw=randread"), "{t}");
        assert!(line_starting(&t, "params:").contains("block_size=4096"), "{t}");

        let header: Vec<&str> = line_starting(&t, "op ").split_whitespace().collect();
        assert_eq!(header, ["op", "ops", "IOPS", "MB/s", "MiB/s", "mean_us", "p50_us", "p99_us", "p99.9_us", "max_us"]);
        let read: Vec<&str> = line_starting(&t, "read ").split_whitespace().collect();
        // 4 GiB in 10 s = 429.5 MB/s = 409.6 MiB/s.
        assert_eq!(read, ["read", "1048576", "104858", "429.5", "409.6", "95.5", "90.1", "210.5", "480.0", "1500.2"]);
        assert!(!t.lines().any(|l| l.starts_with("write ")), "write row skipped when ops == 0:\n{t}");

        assert_eq!(line_starting(&t, "verify:"), "verify:    ok: 4.00 GiB verified, 0 B read unverified, 0 errors");
        assert_eq!(line_starting(&t, "errors:"), "errors:    0");
        // 4 CPU-s over 4 GiB of series bytes.
        assert_eq!(
            line_starting(&t, "cpu:"),
            "cpu:       user 1.50 s, sys 2.50 s; 1.000 CPU-s per GiB moved (4.00 GiB in all phases)"
        );
        assert_eq!(line_starting(&t, "peak rss:"), "peak rss:  48.00 MiB");
    }

    #[test]
    fn degraded_io_modes_are_loud() {
        let mut r = sample_result();
        r.io_mode.direct = false;
        r.io_mode.engine = "sync".into();
        r.io_mode.registered_buffers = false;
        r.io_mode.note = Some("io_uring setup failed: ENOSYS".into());
        let t = render_text(&r);
        assert!(line_starting(&t, "io mode:").contains("buffered (page cache), sync (io_uring setup failed: ENOSYS)"));
        assert!(line_starting(&t, "!!! O_DIRECT NOT USED").contains("page cache"), "{t}");
        assert!(line_starting(&t, "!!! io_uring NOT USED").contains("pread/pwrite"), "{t}");

        r.io_mode.engine = "null".into();
        let t = render_text(&r);
        let warnings: Vec<&str> = t.lines().filter(|l| l.starts_with("!!!")).collect();
        assert_eq!(warnings.len(), 1, "{t}");
        assert!(warnings[0].contains("NULL ENGINE"), "{t}");
    }

    #[test]
    fn sampled_verification_shows_its_mode_and_both_byte_counts() {
        let mut r = sample_result();
        r.verify.mode = VerifyMode::Sampled;
        r.verify.sample_every = Some(16);
        r.verify.verified_bytes = 256 << 20;
        r.verify.header_checked_bytes = (4 << 30) - (256 << 20);
        let t = render_text(&r);
        assert_eq!(
            line_starting(&t, "verify:"),
            "verify:    ok (sampled: payload checked in 1 of 16 blocks): 256.00 MiB fully verified, 3.75 GiB \
             header-checked only, 0 B read unverified, 0 errors"
        );
        r.verify.errors = 1;
        r.verify.first = Some("object 7 block 2: misplaced".into());
        let t = render_text(&r);
        assert!(
            line_starting(&t, "verify:").starts_with("verify:    FAILED (sampled: payload checked in 1 of 16"),
            "{t}"
        );
        // The report formats use the same line.
        assert!(verify_text(&r.verify).contains("header-checked only"));
    }

    #[test]
    fn failures_show_in_status_verify_errors_and_notes() {
        let mut r = sample_result();
        r.status = RunStatus::Failed;
        r.verify.errors = 3;
        r.verify_errors = 3;
        r.verify.first = Some("object 7 offset 8192: corrupt block".into());
        r.errors = crate::results::ErrorRecord { count: 2, first: Some("read obj 1: EIO".into()) };
        r.notes = vec!["verify found errors".into()];
        let t = render_text(&r);
        assert!(line_starting(&t, "status:").contains("FAILED"));
        assert_eq!(
            line_starting(&t, "verify:"),
            "verify:    FAILED: 3 bad blocks in 4.00 GiB verified (first: object 7 offset 8192: corrupt block)"
        );
        assert_eq!(line_starting(&t, "errors:"), "errors:    2 (first: read obj 1: EIO)");
        assert!(t.contains("notes:\n  - verify found errors\n"), "{t}");

        r.verify.enabled = false;
        r.status = RunStatus::Interrupted;
        let t = render_text(&r);
        assert!(line_starting(&t, "verify:").contains("OFF"));
        assert!(line_starting(&t, "status:").contains("INTERRUPTED"));
    }

    #[test]
    fn other_workloads_and_partial_raw_results_render_generically() {
        let mut r = sample_result();
        r.workload = "checkpoint".into();
        r.summary = json!({
            "write": { "gb_per_s": 2.5, "checkpoints": 3 },
            "ranks": [ { "id": 0 }, { "id": 1 } ],
            "model": "llama3-8b",
        });
        let t = render_text(&r);
        assert!(t.lines().any(|l| l.starts_with("write.gb_per_s:") && l.ends_with(" 2.5")), "{t}");
        assert!(t.lines().any(|l| l.starts_with("ranks[1].id:") && l.ends_with(" 1")), "{t}");
        assert!(t.lines().any(|l| l.starts_with("model:") && l.ends_with(" llama3-8b")), "{t}");
        assert!(!t.contains("IOPS"), "{t}");

        let mut partial = sample_result();
        partial.status = RunStatus::Running;
        partial.summary = json!({ "partial": { "read_ops": 12 } });
        let t = render_text(&partial);
        assert!(line_starting(&t, "status:").contains("RUNNING"));
        assert!(t.lines().any(|l| l.starts_with("partial.read_ops:") && l.ends_with(" 12")), "{t}");
    }

    #[test]
    fn raw_summary_with_no_ops_and_no_bytes() {
        let mut r = sample_result();
        r.summary["read"] = raw_op_summary(None, 10.0);
        r.series.clear();
        let t = render_text(&r);
        assert!(t.contains("no operations completed in the measured window"), "{t}");
        assert!(line_starting(&t, "cpu:").contains("n/a (no bytes moved)"), "{t}");
    }

    #[test]
    fn raw_op_summary_shape_and_rates() {
        let stats = SeriesStats {
            ops: 1000,
            bytes: 4_096_000,
            latency_us: LatencyUs { mean: 10.0, p50: 9.0, max: 50.0, ..LatencyUs::default() },
        };
        let v = raw_op_summary(Some(stats), 2.0);
        assert_eq!(v["ops"], 1000);
        assert_eq!(v["bytes"], 4_096_000);
        assert_eq!(v["iops"], 500.0);
        assert_eq!(v["bytes_per_s"], 2_048_000.0);
        for k in ["mean", "p50", "p90", "p99", "p999", "p9999", "max", "min"] {
            assert!(v["latency_us"][k].is_f64(), "latency_us.{k} in {v}");
        }
        assert_eq!(v["latency_us"]["p50"], 9.0);
        let zero = raw_op_summary(None, 0.0);
        assert_eq!((zero["ops"].as_u64(), zero["iops"].as_f64()), (Some(0), Some(0.0)));
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1023), "1023 B");
        assert_eq!(bytes_text(1536), "1.50 KiB");
        assert_eq!(bytes_text(3 << 30), "3.00 GiB");
    }
}
