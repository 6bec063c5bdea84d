//! `mlpdrive check`: compares what reached storage (the FUSE shim's op log)
//! with what the driver meant to do (the KV cache journal, the results) and
//! gives verdicts: dedup, compressibility, content, tier placement, deletes
//! and byte totals. Format of the inputs and of the verdicts JSON:
//! docs/check.md.
//!
//! The op log is read whole and replayed in start order (see [`run`]); each
//! verdict keeps only what it needs (the set of written block hashes, the
//! known blocks of live files).

pub mod content;
pub mod dedup;
pub mod files;
pub mod input;
pub mod oplog;
pub mod report;
pub mod summary;
pub mod tier;
pub mod totals;
pub mod verdict;

use std::path::{Path, PathBuf};

use crate::error::{EXIT_FAILED, EXIT_OK, Error};
use report::{Inputs, Report};
use verdict::Verdict;

/// Verdict names, in report order (`--require` accepts these).
pub const VERDICTS: [&str; 8] =
    ["dedup", "compressibility", "content", "tier_placement", "tier_deletes", "results_bytes", "tier_bytes", "errors"];

/// What to check, as the CLI resolved it.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub oplog: PathBuf,
    pub journal: Option<PathBuf>,
    /// results.json files (or run directories) of the runs the op log
    /// covers; their byte totals add up.
    pub results: Vec<PathBuf>,
    /// Where the verdicts JSON goes; default `<oplog>.verdicts.json`.
    pub json: Option<PathBuf>,
    /// Verdicts that must pass (not_checked fails them).
    pub require: Vec<String>,
    pub quiet: bool,
}

/// Default verdicts path: next to the op log, `<oplog>.verdicts.json`.
pub fn default_json_path(oplog: &Path) -> PathBuf {
    let mut name = oplog.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".verdicts.json");
    oplog.with_file_name(name)
}

/// Runs the check; returns the exit code (0 pass, 1 a violation). Input
/// that cannot be judged is an `Error::Usage` (exit 2) naming file, line and
/// column.
pub fn run(opts: &CheckOptions) -> Result<i32, Error> {
    for r in &opts.require {
        if !VERDICTS.contains(&r.as_str()) {
            return Err(Error::usage(format!("--require {r}: no such verdict; one of {}", VERDICTS.join(", "))));
        }
    }
    let json_path = opts.json.clone().unwrap_or_else(|| default_json_path(&opts.oplog));
    let parent = json_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::usage(format!(
            "--json {}: directory {} does not exist",
            json_path.display(),
            parent.display()
        )));
    }
    let mut results = Vec::new();
    let mut results_paths = Vec::new();
    for p in &opts.results {
        let (r, path) = crate::results::load(p)?;
        results.push(r);
        results_paths.push(path.display().to_string());
    }
    let journal = match &opts.journal {
        Some(p) => Some(read_journal(p)?),
        None => None,
    };
    let mut reader = oplog::OpLogReader::open(&opts.oplog)?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row()? {
        rows.push(row);
    }
    // The shim logs an op once it has replied (and hashed its data), so a
    // slow op's row can land after rows of ops that started later, even of
    // ops that depended on it. An op that waited for another's reply started
    // after it, so start order is causal order; ties keep file order.
    rows.sort_by_key(|r| (r.start_ns, r.line));
    let mut files = files::Files::default();
    let mut summary = summary::SummaryAcc::default();
    let mut dedup = dedup::Dedup::default();
    let mut content = content::Content::default();
    let mut bytes = totals::OpLogBytes::default();
    for row in rows {
        summary.observe(&row);
        dedup.observe(&row);
        content.observe(&row, &files);
        bytes.observe(&row);
        files.apply(&row);
    }
    let mut warnings = reader.warnings().to_vec();
    let versions = files.finish();
    let summary = summary.finish();
    if summary.rows == 0 {
        warnings.push("the op log has no operations: did the workload run through the mount?".into());
    }

    let mut verdicts: Vec<Verdict> = Vec::new();
    verdicts.extend(dedup.verdicts());
    verdicts.push(content.verdict());
    match &journal {
        Some(rows) => {
            // A run with trace.deletes=true journals every delete, so even a
            // journal without Delete rows says no file may be deleted.
            let deletes_recorded = results.iter().any(|r| r.config.pointer("/trace/deletes") == Some(&true.into()));
            verdicts.extend(tier::verdicts(&tier::TierInput { journal: rows, versions: &versions, deletes_recorded }))
        }
        None => {
            verdicts.push(Verdict::not_checked("tier_placement", "no --journal given"));
            verdicts.push(Verdict::not_checked("tier_deletes", "no --journal given"));
        }
    }
    if results.is_empty() {
        verdicts.push(Verdict::not_checked("results_bytes", "no --results given"));
    } else {
        verdicts.push(totals::results_bytes(&results, &bytes, &versions));
    }
    match &journal {
        _ if results.is_empty() => verdicts.push(Verdict::not_checked("tier_bytes", "no --results given")),
        Some(rows) => verdicts.push(totals::tier_bytes(&results, &tier::journal_bytes(rows))),
        None => verdicts.push(Verdict::not_checked("tier_bytes", "no --journal given")),
    }
    verdicts.push(errors_verdict(&summary));

    let inputs = Inputs {
        oplog: opts.oplog.display().to_string(),
        journal: opts.journal.as_ref().map(|p| p.display().to_string()),
        results: results_paths,
    };
    let report = Report::new(inputs, opts.require.clone(), warnings, summary, verdicts);
    crate::results::write_json_atomic(&json_path, &report)
        .map_err(|e| Error::failed(format!("cannot write the verdicts to {}: {e}", json_path.display())))?;
    if !opts.quiet {
        print!("{}", report.render_text());
    }
    eprintln!("mlpdrive: verdicts written to {}", json_path.display());
    Ok(if report.failures().is_empty() { EXIT_OK } else { EXIT_FAILED })
}

/// Reads the whole KV journal (the workload's trace), each row with its
/// line; a bad row is a usage error naming the line and column.
fn read_journal(path: &Path) -> Result<Vec<tier::JournalRow>, Error> {
    let bad = |e: crate::kvtrace::TraceError| Error::usage(format!("--journal: {e}"));
    crate::kvtrace::TraceReader::open(path).map_err(bad)?.collect::<Result<Vec<_>, _>>().map_err(bad)
}

/// `errors`: failed operations in the op log, other than the expected
/// answers of existence probes (ENOENT from getattr/open, EEXIST from
/// mkdir). They are not violations by themselves (a fault-injecting profile
/// makes them on purpose), so with failures this verdict is not checked;
/// `--require errors` makes a CI job insist on an error-free log.
fn errors_verdict(summary: &summary::Summary) -> Verdict {
    let mut failed = 0u64;
    for (op, st) in &summary.ops {
        failed += st.errors;
        let probe_errno = match *op {
            "getattr" | "open" => Some("ENOENT"),
            "mkdir" => Some("EEXIST"),
            _ => None,
        };
        if let Some(e) = probe_errno {
            failed -= summary.probe_errors.get(&(op.to_string(), e.to_string())).copied().unwrap_or(0);
        }
    }
    let mut v = Verdict::new("errors");
    v.number("failed_ops", failed);
    if failed == 0 {
        v.decide(false, format!("no failed operations in {} ops (existence probes aside)", summary.rows));
    } else {
        let numbers = v.numbers;
        v = Verdict::not_checked(
            "errors",
            format!("{failed} operations failed (see failed ops by errno); not judged unless --require errors"),
        );
        v.numbers = numbers;
    }
    v
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::oplog::{OpKind, OpRow};

    /// A hand-written op-log row.
    #[allow(clippy::too_many_arguments)]
    pub fn row(
        line: u64,
        op: &str,
        path: &str,
        path2: &str,
        offset: u64,
        length: u64,
        result: &str,
        hashes: &[u64],
    ) -> OpRow {
        OpRow {
            line,
            start_ns: line * 1000,
            op: OpKind::ALL.into_iter().find(|k| k.as_str() == op).expect("known op"),
            path: path.into(),
            path2: path2.into(),
            offset,
            length,
            latency_ns: 1000,
            errno: (result != "ok").then(|| result.to_string()),
            block_hashes: hashes.to_vec(),
            zstd_in_bytes: 0,
            zstd_out_bytes: 0,
        }
    }

    pub fn with_zstd(mut r: OpRow, in_bytes: u64, out_bytes: u64) -> OpRow {
        r.zstd_in_bytes = in_bytes;
        r.zstd_out_bytes = out_bytes;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::row;
    use super::verdict::Status;
    use super::*;

    #[test]
    fn existence_probes_are_not_failures() {
        let mut s = summary::SummaryAcc::default();
        s.observe(&row(2, "getattr", "mlpdrive", "", 0, 0, "ENOENT", &[]));
        s.observe(&row(3, "open", "mlpdrive/a", "", 0, 0, "ENOENT", &[]));
        s.observe(&row(4, "mkdir", "mlpdrive", "", 0, 0, "EEXIST", &[]));
        let v = errors_verdict(&s.finish());
        assert_eq!(v.status, Status::Pass, "{v:?}");
        s = summary::SummaryAcc::default();
        s.observe(&row(2, "getattr", "mlpdrive", "", 0, 0, "ENOENT", &[]));
        s.observe(&row(3, "write", "mlpdrive/a", "", 0, 4096, "EIO", &[]));
        s.observe(&row(4, "open", "mlpdrive/a", "", 0, 0, "EACCES", &[]));
        let v = errors_verdict(&s.finish());
        assert_eq!(v.status, Status::NotChecked, "{v:?}");
        assert_eq!(v.numbers["failed_ops"], 2);
    }

    #[test]
    fn default_verdicts_path_sits_next_to_the_op_log() {
        assert_eq!(default_json_path(Path::new("/x/op.csv")), Path::new("/x/op.csv.verdicts.json"));
        assert_eq!(default_json_path(Path::new("op.csv")), Path::new("op.csv.verdicts.json"));
    }
}
