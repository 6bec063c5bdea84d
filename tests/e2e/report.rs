//! `mlpdrive report` and `mlpdrive rules check` on real runs: every format
//! parses back, the HTML is self-contained with one `<svg>` per plot and
//! renders in headless Chromium, the fio job file is accepted by fio, and
//! the rules check names what failed.
//!
//! Chromium and fio come from Debian packages (`.ci/run` installs them). A
//! missing tool skips its test loudly, except under `MLPDRIVE_CI`, where it
//! fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{mlpdrive, read_json, run_in, scratch};

fn tool_present(tool: &str, package: &str, test: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        let msg = format!("SKIPPED {test}: `{tool}` is not installed (apt-get install {package}; .ci/run installs it)");
        assert!(std::env::var_os("MLPDRIVE_CI").is_none(), "{msg}, and MLPDRIVE_CI is set: CI must not skip");
        eprintln!("{msg}");
    }
    found
}

/// Run directories under `dir/res`, sorted by name (= start time).
fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join("res")).expect("res").flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

/// A raw run (2 s) and a checkpoint smoke run in `dir`.
fn two_runs(dir: &Path) -> Vec<PathBuf> {
    let r = run_in(dir, "raw", &["--duration", "2s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let r = run_in(dir, "checkpoint-smoke", &[]);
    assert_eq!(r.code, 0, "{}", r.show());
    let dirs = run_dirs(dir);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    dirs
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn every_format_renders_the_same_runs_and_parses_back() {
    let tmp = scratch();
    let dirs = two_runs(tmp.path());
    let (raw, ck) = (&dirs[0], &dirs[1]);

    // Default: the summary, as before.
    let r = mlpdrive(tmp.path(), &["report", s(raw)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.stdout, std::fs::read_to_string(raw.join("summary.txt")).expect("summary"));

    let r = mlpdrive(tmp.path(), &["report", s(raw), s(ck), "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json parses");
    assert_eq!(j["report_version"], 1);
    assert_eq!(j["runs"][0]["result"], read_json(&raw.join("results.json")), "the run's results.json, unchanged");
    assert_eq!(j["runs"][1]["result"]["workload"], "checkpoint");
    assert!(j["comparison"].is_null());
    let iops = j["runs"][0]["metrics"].as_array().expect("metrics").iter().find(|m| m["key"] == "read.iops");
    let want = read_json(&raw.join("results.json"))["summary"]["read"]["iops"].clone();
    assert_eq!(iops.expect("read.iops metric")["value"], want);

    let r = mlpdrive(tmp.path(), &["report", s(raw), s(ck), "--format", "csv", "--compare"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let mut rd = csv::Reader::from_reader(r.stdout.as_bytes());
    let rows: Vec<csv::StringRecord> = rd.records().collect::<Result<_, _>>().expect("csv parses");
    let save = rows.iter().find(|r| &r[4] == "save.throughput_GiB_per_s").expect("checkpoint save row");
    assert!(save[6].parse::<f64>().expect("value") > 0.0);
    assert_eq!(&save[7], "", "no baseline value for a raw run: no ratio");
    let base = rows.iter().find(|r| &r[4] == "read.iops").expect("raw read.iops row");
    assert_eq!(base[7].parse::<f64>().expect("ratio"), 1.0, "the baseline's ratio to itself");

    let r = mlpdrive(tmp.path(), &["report", s(raw), s(raw), "--compare", "--format", "md"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("## Comparison (ratios to [1])"), "{}", r.stdout);
    assert!(r.stdout.lines().any(|l| l.starts_with("| `read.iops` |") && l.ends_with("| 1.000x |")), "{}", r.stdout);

    let html = tmp.path().join("report.html");
    let r = mlpdrive(tmp.path(), &["report", s(raw), s(ck), "--format", "html", "--out", s(&html)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.is_empty(), "--out writes the file, not stdout");
    let page = std::fs::read_to_string(&html).expect("html written");
    // raw: latency CDF, throughput, queue depth; checkpoint: those and
    // per-rank durations.
    let drawn: Vec<&str> = page
        .split("<figure class=\"plot\" data-plot=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or(""))
        .collect();
    assert_eq!(
        drawn,
        ["latency-cdf", "throughput", "queue-depth", "latency-cdf", "throughput", "queue-depth", "checkpoint-ranks"]
    );
    assert_eq!(page.matches("<svg").count(), drawn.len(), "one <svg> per plot");
    for external in ["<script", "src=", "<link", "href=\"http", "url("] {
        assert!(!page.contains(external), "not self-contained: {external}");
    }
}

#[test]
fn html_report_renders_in_headless_chromium() {
    if !tool_present("chromium", "chromium", "html_report_renders_in_headless_chromium") {
        return;
    }
    let tmp = scratch();
    let dirs = two_runs(tmp.path());
    let html = tmp.path().join("report.html");
    let r = mlpdrive(tmp.path(), &["report", s(&dirs[0]), s(&dirs[1]), "--format", "html", "--out", s(&html)]);
    assert_eq!(r.code, 0, "{}", r.show());
    let url = format!("file://{}", html.display());
    let chromium = |extra: &[&str], profile: &str| {
        let profile = tmp.path().join(profile);
        let out = Command::new("timeout")
            .args(["120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            .args(["--disable-component-update", "--disable-sync", "--no-first-run"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    // The DOM as Chromium parsed it: the plots are SVG elements with content.
    let dom = String::from_utf8(chromium(&["--dump-dom"], "profile-dom").stdout).expect("utf-8 DOM");
    assert_eq!(dom.matches("<svg").count(), 7, "seven plots in the parsed page");
    assert!(dom.matches("<text").count() > 50, "axis labels and legends are text");
    let png = tmp.path().join("shot.png");
    chromium(&[&format!("--screenshot={}", png.display()), "--window-size=1200,3000"], "profile-shot");
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().expect("width")),
        u32::from_be_bytes(bytes[20..24].try_into().expect("height")),
    );
    assert_eq!((w, h), (1200, 3000));
    assert!(bytes.len() > 50_000, "a page with plots, not a blank one: {} bytes", bytes.len());
}

#[test]
fn fio_job_is_accepted_by_fio() {
    if !tool_present("fio", "fio", "fio_job_is_accepted_by_fio") {
        return;
    }
    let tmp = scratch();
    let dirs = two_runs(tmp.path());
    for (i, dir) in dirs.iter().enumerate() {
        let job = tmp.path().join(format!("job{i}.fio"));
        let r = mlpdrive(tmp.path(), &["report", s(dir), "--fio-job", "--out", s(&job)]);
        assert_eq!(r.code, 0, "{}", r.show());
        let text = std::fs::read_to_string(&job).expect("job file");
        assert!(text.contains("iodepth=") && text.contains("bs="), "{text}");
        let out = Command::new("fio").arg("--parse-only").arg(&job).output().expect("run fio");
        assert!(
            out.status.success(),
            "fio --parse-only refused {}:\n{text}\n{}",
            job.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let raw_job = std::fs::read_to_string(tmp.path().join("job0.fio")).expect("raw job");
    assert!(raw_job.contains("rw=randread") && raw_job.contains("bs=4096"), "{raw_job}");
}

#[test]
fn report_usage_errors_exit_2_and_write_nothing() {
    let tmp = scratch();
    let r = run_in(tmp.path(), "raw", &["--duration", "1s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let run = &run_dirs(tmp.path())[0];
    let missing = tmp.path().join("no/such/dir/report.html");
    for (args, needle) in [
        (vec!["report", s(run), "--compare"], "at least two runs"),
        (vec!["report", s(run), s(run), "--fio-job"], "exactly one path"),
        (vec!["report", s(run), "--fio-job", "--format", "csv"], "leave out --format"),
        (vec!["report", s(run), "--format", "html", "--out", s(&missing)], "does not exist"),
        (vec!["report", s(run), "--format", "pdf"], "invalid value"),
    ] {
        let r = mlpdrive(tmp.path(), &args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.show());
    }
    assert!(!tmp.path().join("no").exists());
}

#[test]
fn rules_check_names_each_failed_rule_of_real_smoke_runs() {
    let tmp = scratch();
    two_runs(tmp.path());
    let json = tmp.path().join("rules.json");
    let res = tmp.path().join("res");
    let r = mlpdrive(tmp.path(), &["rules", "check", s(&res), "--json", s(&json)]);
    assert_eq!(r.code, 1, "smoke runs are not MLPerf submissions: {}", r.show());
    let out = &r.stdout;
    assert!(out.contains("MLPerf rules check (CLOSED division), 2 run(s)"), "{out}");
    for rule in ["common.mlperf-workload", "common.separate-filesystems", "checkpoint.reference", "checkpoint.count"] {
        assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains(rule)), "{rule} fails:\n{out}");
    }
    assert!(out.contains("found:    workload raw"), "{out}");
    assert!(out.contains("found:    model smoke"), "{out}");
    assert!(out.lines().last().unwrap_or("").starts_with("FAIL: "), "{out}");
    let j = read_json(&json);
    assert_eq!(j["division"], "closed");
    assert!(j["findings"].as_array().expect("findings").iter().any(|f| f["rule"] == "checkpoint.count"
        && f["verdict"] == "fail"
        && f["found"] == "2 saves and 2 loads over the runs"));

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let r = mlpdrive(tmp.path(), &["rules", "check", s(&empty)]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("no run directory"), "{}", r.show());
    let r = mlpdrive(tmp.path(), &["rules", "check", s(&res), "--client-memory-gib", "-1"]);
    assert_eq!(r.code, 2, "{}", r.show());
}
