//! The suite's own text: the summary printed at the end, and the section
//! that leads the combined HTML and Markdown reports (scale, validity, the
//! steps, the rules verdict). The runs themselves are rendered by
//! `crate::report`.

use std::fmt::Write as _;
use std::path::Path;

use super::division_name;
use super::manifest::{StepStatus, SuiteManifest};
use super::plan::Scale;
use crate::report::html::esc;
use crate::rules::{RulesReport, Verdict};

fn status_text(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "not run",
        StepStatus::Ok => "ok",
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "skipped",
    }
}

/// The one-line validity statement of the suite.
pub fn validity(m: &SuiteManifest, rules: &RulesReport) -> String {
    if m.scale != Scale::Full {
        return format!(
            "scale {}: NOT A VALID MLPERF SUBMISSION (reduced presets, repetitions and pauses; tests the harness only)",
            m.scale.as_str()
        );
    }
    if rules.passed() && m.runs_not_ok() == 0 {
        format!("every run ok and every {} rule passed", division_name(m.division))
    } else {
        format!(
            "NOT a valid {} submission as run: {} step(s) not ok, {} rule(s) failed, {} not checked",
            division_name(m.division),
            m.runs_not_ok(),
            rules.failed(),
            rules.not_checked()
        )
    }
}

fn failed_rules(rules: &RulesReport) -> Vec<String> {
    let mut ids: Vec<String> =
        rules.findings.iter().filter(|f| f.verdict == Verdict::Fail).map(|f| f.rule.to_string()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The summary printed when the suite ends.
pub fn summary_text(m: &SuiteManifest, rules: &RulesReport, out: &Path) -> String {
    let mut s = format!(
        "\nmlpdrive suite mlperf: scale {}, {} division, target {}\n",
        m.scale.as_str(),
        division_name(m.division),
        m.target
    );
    for st in &m.steps {
        let _ = writeln!(
            s,
            "  [{:>2}] {:<7} {:<34} {:>8.1} s  {}{}",
            st.index,
            status_text(st.status),
            st.label,
            st.elapsed_s,
            st.dir,
            st.error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default()
        );
    }
    let _ = writeln!(s, "steps:   {} ok, {} not ok, of {}", m.runs_ok(), m.runs_not_ok(), m.steps.len());
    let fails = failed_rules(rules);
    let _ = writeln!(
        s,
        "rules:   {}: {} failed, {} not checked{}",
        if rules.passed() { "PASS" } else { "FAIL" },
        rules.failed(),
        rules.not_checked(),
        if fails.is_empty() { String::new() } else { format!(" ({})", fails.join(", ")) }
    );
    let _ = writeln!(s, "verdict: {}", validity(m, rules));
    for r in &m.reports {
        let _ = writeln!(s, "report:  {}", out.join(r).display());
    }
    let _ = writeln!(s, "rules:   {}", out.join(super::RULES_TEXT).display());
    s
}

/// The section leading the combined HTML report.
pub fn html_preface(m: &SuiteManifest, rules: &RulesReport) -> String {
    let mut s = String::from("<section id=\"suite\">\n<h2>Suite: mlperf</h2>\n");
    let class = if m.scale == Scale::Full && rules.passed() && m.runs_not_ok() == 0 { "" } else { " class=\"warn\"" };
    let _ = writeln!(s, "<p{class} data-suite-scale=\"{}\">{}</p>", m.scale.as_str(), esc(&validity(m, rules)));
    let _ = writeln!(
        s,
        "<p>{} division, target <code>{}</code>, started {}. Rules check: <b>{}</b> ({} failed, {} not checked).</p>",
        division_name(m.division),
        esc(&m.target),
        esc(&m.started_at),
        if rules.passed() { "PASS" } else { "FAIL" },
        rules.failed(),
        rules.not_checked()
    );
    for n in &m.notes {
        let _ = writeln!(s, "<p class=\"warn\">{}</p>", esc(n));
    }
    s.push_str("<table>\n<tr><th>#</th><th>step</th><th>preset</th><th>status</th><th>s</th><th>run</th></tr>\n");
    for st in &m.steps {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"num\">{:.1}</td><td><code>{}</code></td></tr>",
            st.index,
            esc(&st.label),
            esc(&st.preset),
            status_text(st.status),
            st.elapsed_s,
            esc(st.run_id.as_deref().unwrap_or("-"))
        );
    }
    s.push_str("</table>\n<h3>Rules that did not pass</h3>\n<table>\n<tr><th>verdict</th><th>rule</th><th>subject</th><th>found</th><th>expected</th></tr>\n");
    for f in rules.findings.iter().filter(|f| matches!(f.verdict, Verdict::Fail | Verdict::NotChecked)) {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.verdict.as_str(),
            f.rule,
            esc(&f.subject),
            esc(&f.found),
            esc(&f.expected)
        );
    }
    s.push_str("</table>\n</section>\n");
    s
}

/// The section leading the combined Markdown report.
pub fn markdown_preface(m: &SuiteManifest, rules: &RulesReport) -> String {
    let mut s = String::from("# mlpdrive suite: mlperf\n\n");
    let _ = writeln!(s, "**{}**\n", validity(m, rules));
    let _ = writeln!(
        s,
        "{} division, target `{}`, started {}. Rules check: **{}** ({} failed, {} not checked).\n",
        division_name(m.division),
        m.target,
        m.started_at,
        if rules.passed() { "PASS" } else { "FAIL" },
        rules.failed(),
        rules.not_checked()
    );
    for n in &m.notes {
        let _ = writeln!(s, "> {n}\n");
    }
    s.push_str("| # | step | preset | status | s | run |\n| --- | --- | --- | --- | --- | --- |\n");
    for st in &m.steps {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {:.1} | `{}` |",
            st.index,
            st.label,
            st.preset,
            status_text(st.status),
            st.elapsed_s,
            st.run_id.as_deref().unwrap_or("-")
        );
    }
    s.push_str("\n## Rules that did not pass\n\n| verdict | rule | subject | found | expected |\n| --- | --- | --- | --- | --- |\n");
    for f in rules.findings.iter().filter(|f| matches!(f.verdict, Verdict::Fail | Verdict::NotChecked)) {
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} | {} |",
            f.verdict.as_str(),
            f.rule,
            f.subject,
            f.found.replace('|', "\\|"),
            f.expected.replace('|', "\\|")
        );
    }
    s
}
