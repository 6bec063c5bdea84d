//! `mlpdrive suite mlperf`: the whole MLPerf sequence at smoke scale on a
//! real file target (O_DIRECT, io_uring), its step directories, suite.json,
//! the rules verdict (smoke is never a submission) and the combined report;
//! and bad input, refused with exit 2 before anything is written.

use std::path::Path;

use crate::common::{mlpdrive, read_json, scratch, tree};

/// The step directories of the smoke sequence, in order.
const SMOKE_STEPS: [&str; 9] = [
    "01-training-datagen",
    "02-training-warmup",
    "03-training-run-1",
    "04-checkpoint",
    "05-kvcache-option1-trial-1",
    "06-kvcache-option2-trial-1",
    "07-kvcache-option3-trial-1",
    "08-vdb-run-1",
    // The ninth entry is the manifest, checked separately.
    "suite.json",
];

fn run_dir(step: &Path) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(step)
        .expect("step dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("results.json").is_file())
        .collect();
    assert_eq!(dirs.len(), 1, "one run in {}: {dirs:?}", step.display());
    dirs[0].clone()
}

#[test]
fn smoke_suite_runs_every_workload_checks_the_rules_and_reports_them_all() {
    let tmp = scratch();
    let target = format!("file://{}", tmp.path().join("data").display());
    let out = tmp.path().join("suite");
    let r = mlpdrive(
        tmp.path(),
        &["suite", "mlperf", "--scale", "smoke", "--quiet", "--target", &target, "--out", out.to_str().unwrap()],
    );
    // Every run passes, but the rules check fails (a smoke suite is no submission): exit 1.
    assert_eq!(r.code, 1, "{}", r.show());
    for step in &SMOKE_STEPS[..8] {
        assert!(r.stderr.contains(&format!("→ {step}")), "progress line for {step}: {}", r.show());
    }
    assert!(r.stdout.contains("steps:   8 ok, 0 not ok, of 8"), "{}", r.show());
    assert!(r.stdout.contains("NOT A VALID MLPERF SUBMISSION"), "{}", r.show());

    // One subdirectory per step, each run step with its run directory.
    for step in &SMOKE_STEPS {
        assert!(out.join(step).exists(), "{step} missing in {:?}", tree(&out));
    }
    assert_eq!(read_json(&out.join("01-training-datagen/datagen.json"))["exit_code"], 0);
    for (step, workload) in [
        ("02-training-warmup", "training"),
        ("03-training-run-1", "training"),
        ("04-checkpoint", "checkpoint"),
        ("05-kvcache-option1-trial-1", "kvcache"),
        ("06-kvcache-option2-trial-1", "kvcache"),
        ("07-kvcache-option3-trial-1", "kvcache"),
        ("08-vdb-run-1", "vdb"),
    ] {
        let res = read_json(&run_dir(&out.join(step)).join("results.json"));
        assert_eq!(res["workload"], workload, "{step}");
        assert_eq!(res["status"], "ok", "{step}: {res:#}");
        let d = res["description"].as_str().expect("description");
        assert!(d.starts_with("NOT A VALID MLPERF SUBMISSION"), "{step}: the run says it is smoke: {d}");
    }
    // The option-shaped KV runs really ran with the option's settings.
    let kv3 = read_json(&run_dir(&out.join("07-kvcache-option3-trial-1")).join("results.json"));
    assert_eq!(kv3["config"]["max_concurrent_allocs"], 4, "{:#}", kv3["config"]);

    // suite.json: every step ok, scale smoke, the rules failed.
    let m = read_json(&out.join("suite.json"));
    assert_eq!(m["scale"], "smoke");
    assert_eq!(m["submission_candidate"], false);
    let steps = m["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 8);
    assert!(steps.iter().all(|s| s["status"] == "ok"), "{m:#}");
    assert_eq!(steps[5]["delay_before_s"], 0.2, "the inter-option pause before option 2");
    assert_eq!(m["rules"]["passed"], false);

    // The rules findings: the smoke scale is named as the reason, in CLOSED.
    let rules = read_json(&out.join("rules.json"));
    assert_eq!(rules["division"], "closed");
    assert_eq!(rules["runs"], 7);
    let findings = rules["findings"].as_array().expect("findings");
    let scale = findings.iter().find(|f| f["rule"] == "suite.scale").expect("suite.scale finding");
    assert_eq!(scale["verdict"], "fail");
    assert!(scale["found"].as_str().unwrap().contains("NOT A VALID MLPERF SUBMISSION"), "{scale}");
    let text = std::fs::read_to_string(out.join("rules.txt")).expect("rules.txt");
    assert!(text.contains("FAIL        suite.scale"), "{text}");
    // `rules check` on the suite directory finds the same runs and says the same.
    let again = mlpdrive(tmp.path(), &["rules", "check", out.to_str().unwrap()]);
    assert_eq!(again.code, 1, "{}", again.show());
    assert!(again.stdout.contains("7 run(s)") && again.stdout.contains("suite.scale"), "{}", again.show());

    // One combined report with every workload.
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("data-suite-scale=\"smoke\""), "the scale banner");
    assert!(html.contains("NOT A VALID MLPERF SUBMISSION"));
    assert!(html.contains("7 run(s)"), "one report over all runs");
    for workload in ["training", "checkpoint", "kvcache", "vdb"] {
        assert!(html.contains(&format!("<tr><th>workload</th><td>{workload} (")), "{workload} in the HTML report");
    }
    assert!(html.contains("data-plot=\"au-per-epoch\"") && html.contains("data-plot=\"checkpoint-ranks\""));
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.starts_with("# mlpdrive suite: mlperf"), "{md}");
    for workload in ["training", "checkpoint", "kvcache", "vdb"] {
        assert!(md.contains(&format!("| workload | {workload} (")), "{workload} in the Markdown report");
    }
}

#[test]
fn suite_bad_input_exits_2_before_anything_is_written() {
    let tmp = scratch();
    let target = format!("file://{}", tmp.path().join("data").display());
    let out = tmp.path().join("suite");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--training", "training/no-such-model"], "no-such-model"),
        (&["--checkpoint", "training/unet3d_h100"], "--checkpoint training/unet3d_h100: is a training preset"),
        (&["--set", "training:no_such_key=1"], "no_such_key"),
        (&["--set", "raw:queue_depth=4"], "not a suite workload"),
        (&["--set", "queue_depth=4"], "WORKLOAD:KEY=VALUE"),
        (&["--kv-option-delay", "soon"], "--kv-option-delay"),
        (&["--vdb-min-recall", "2"], "--vdb-min-recall"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["suite", "mlperf", "--scale", "smoke", "--target", &target, "--out", o];
        args.extend_from_slice(extra);
        let r = mlpdrive(tmp.path(), &args);
        assert_eq!(r.code, 2, "{extra:?}: {}", r.show());
        assert!(r.stderr.contains(want), "{extra:?}: want {want:?} in {}", r.show());
    }
    for (t, want) in [("emu://ci-fast", "emu:// target keeps its objects"), ("ftp://x", "ftp")] {
        let r = mlpdrive(tmp.path(), &["suite", "mlperf", "--scale", "smoke", "--target", t, "--out", o]);
        assert_eq!(r.code, 2, "{t}: {}", r.show());
        assert!(r.stderr.contains(want), "{t}: {}", r.show());
    }
    let missing = tmp.path().join("no/such/dir");
    let r = mlpdrive(
        tmp.path(),
        &["suite", "mlperf", "--scale", "smoke", "--target", &target, "--out", missing.to_str().unwrap()],
    );
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("does not exist"), "{}", r.show());
    assert!(tree(tmp.path()).is_empty(), "nothing written: {:?}", tree(tmp.path()));

    // An --out that already holds something is refused, and left as it was.
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "mine").expect("write");
    let r = mlpdrive(tmp.path(), &["suite", "mlperf", "--scale", "smoke", "--target", &target, "--out", o]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("not an empty directory"), "{}", r.show());
    assert_eq!(tree(tmp.path()).len(), 2, "{:?}", tree(tmp.path()));
}
