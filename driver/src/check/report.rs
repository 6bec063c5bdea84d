//! The verdicts together: the JSON record `check` writes (documented in
//! docs/check.md) and its text rendering.

use std::fmt::Write as _;

use serde::Serialize;

use super::summary::Summary;
use super::verdict::{Status, Verdict};

/// Layout version of the verdicts JSON; bumped on any incompatible change.
pub const CHECK_VERSION: u32 = 1;

#[derive(Serialize, Debug, Clone)]
pub struct Inputs {
    pub oplog: String,
    pub journal: Option<String>,
    /// The results.json files read (empty without --results).
    pub results: Vec<String>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub check_version: u32,
    pub mlpdrive_version: &'static str,
    /// `pass` when no verdict failed (and every `--require`d verdict
    /// passed), else `fail`.
    pub status: Status,
    pub inputs: Inputs,
    /// Verdicts `--require` asked to pass.
    pub required: Vec<String>,
    pub warnings: Vec<String>,
    pub summary: Summary,
    pub verdicts: Vec<Verdict>,
}

impl Report {
    pub fn new(
        inputs: Inputs,
        required: Vec<String>,
        warnings: Vec<String>,
        summary: Summary,
        verdicts: Vec<Verdict>,
    ) -> Report {
        let mut r = Report {
            check_version: CHECK_VERSION,
            mlpdrive_version: env!("CARGO_PKG_VERSION"),
            status: Status::Pass,
            inputs,
            required,
            warnings,
            summary,
            verdicts,
        };
        if !r.failures().is_empty() {
            r.status = Status::Fail;
        }
        r
    }

    /// Why the report fails: failed verdicts, and required verdicts that
    /// did not pass.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in &self.verdicts {
            if v.status == Status::Fail {
                out.push(format!("{} failed", v.name));
            } else if v.status == Status::NotChecked && self.required.iter().any(|r| r == v.name) {
                out.push(format!("{} was required but not checked", v.name));
            }
        }
        out
    }

    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "op log: {} ({} rows, {:.3} s)", self.inputs.oplog, self.summary.rows, self.summary.span_s);
        if let Some(j) = &self.inputs.journal {
            let _ = writeln!(s, "journal: {j}");
        }
        for r in &self.inputs.results {
            let _ = writeln!(s, "results: {r}");
        }
        if !self.summary.ops.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<9} {:>10} {:>8} {:>14} {:>12} {:>12}",
                "OP", "OPS", "ERRORS", "BYTES", "P50 µs", "P99 µs"
            );
            for (op, st) in &self.summary.ops {
                let _ = writeln!(
                    s,
                    "{op:<9} {:>10} {:>8} {:>14} {:>12.1} {:>12.1}",
                    st.ops, st.errors, st.bytes, st.latency_us_p50, st.latency_us_p99
                );
            }
        }
        if !self.summary.errors_by_errno.is_empty() {
            let list: Vec<_> = self.summary.errors_by_errno.iter().map(|(e, n)| format!("{e} {n}")).collect();
            let _ = writeln!(s, "failed ops by errno: {}", list.join(", "));
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(s);
        for v in &self.verdicts {
            let label = match v.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::NotChecked => "NOT CHECKED",
            };
            let _ = writeln!(s, "{label:<11}  {:<16} {}", v.name, v.reason);
            for item in &v.offending {
                let _ = writeln!(s, "{:<13}  - {item}", "");
            }
            if v.offending_total > v.offending.len() as u64 {
                let _ = writeln!(s, "{:<13}  … {} more", "", v.offending_total - v.offending.len() as u64);
            }
        }
        let failures = self.failures();
        if failures.is_empty() {
            let _ = writeln!(s, "\ncheck: PASS");
        } else {
            let _ = writeln!(s, "\ncheck: FAIL ({})", failures.join("; "));
        }
        s
    }
}
