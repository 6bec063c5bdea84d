//! Whole runs of the `checkpoint` workload on a real O_DIRECT file target:
//! the files it writes, verified loads, a corrupted shard caught by a later
//! load, and `mlpdrive datasize`.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::common::*;

/// The smoke model's bytes per checkpoint (2 ranks, ZeRO-3): each rank a
/// 20,451,840-byte model shard and a 122,741,760-byte optimizer shard.
const SMOKE_MODEL_BYTES: u64 = 20_451_840;
const SMOKE_OPTIM_BYTES: u64 = 122_741_760;
const SMOKE_CHECKPOINT_BYTES: u64 = 2 * (SMOKE_MODEL_BYTES + SMOKE_OPTIM_BYTES);

fn results(dir: &Path, res: &str) -> serde_json::Value {
    read_json(&only_run_dir(&dir.join(res)).join("results.json"))
}

fn step_dir(dir: &Path, step: u32) -> std::path::PathBuf {
    dir.join(format!("data/mlpdrive/checkpoints/smoke/global_epoch1_step{step}"))
}

#[test]
fn smoke_preset_saves_and_loads_every_byte_verified() {
    let d = scratch();
    let r = run_in(d.path(), "checkpoint", &["--set", "checkpoint.time_between_checkpoints=100ms"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results(d.path(), "res");
    assert_eq!(j["workload"], "checkpoint");
    assert_eq!(j["status"], "ok");
    assert_eq!(j["io_mode"]["direct"], true, "{j}");
    // Every byte of both loads was checked against the generator.
    assert_eq!(j["verify"]["verified_bytes"], 2 * SMOKE_CHECKPOINT_BYTES, "{j}");
    assert_eq!(j["verify"]["unverified_bytes"], 0);
    assert_eq!(j["verify_errors"], 0);
    let s = &j["summary"];
    assert_eq!(s["checkpoint_bytes"], SMOKE_CHECKPOINT_BYTES);
    assert_eq!(s["files_per_checkpoint"], 4);
    for phase in ["save", "load"] {
        let p = &s[phase];
        assert_eq!(p["checkpoints"], 2, "{p}");
        for c in p["per_checkpoint"].as_array().unwrap() {
            let ranks: Vec<f64> =
                c["rank_duration_s"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(ranks.len(), 2);
            let max = ranks.iter().copied().fold(0.0, f64::max);
            assert_eq!(c["duration_s"].as_f64().unwrap(), max, "checkpoint duration = slowest rank");
            let gib = SMOKE_CHECKPOINT_BYTES as f64 / (1u64 << 30) as f64 / max;
            assert!((c["throughput_GiB_per_s"].as_f64().unwrap() - gib).abs() < 1e-9 * gib, "{c}");
        }
        assert!(s["metric"][format!("{phase}_checkpoint_io_mean_GB_per_second")].as_f64().unwrap() > 0.0, "{s}");
    }
    // Writes, one fsync per file per save, and reads, all in the series.
    let series = j["series"].as_array().unwrap();
    let ops = |phase: &str, op: &str| {
        series.iter().find(|x| x["phase"] == phase && x["op"] == op).map_or(0, |x| x["ops"].as_u64().unwrap())
    };
    assert_eq!(ops("save", "commit"), 8, "{series:?}");
    assert!(ops("save", "write") > 0 && ops("load", "read") > 0);
    // The files, with the reference's names and exact sizes.
    for step in 1..=2 {
        for rank in 0..2 {
            for (kind, bytes) in [("model", SMOKE_MODEL_BYTES), ("optim", SMOKE_OPTIM_BYTES)] {
                let f = step_dir(d.path(), step).join(format!("zero_pp_rank_{rank}_mp_rank_0_{kind}_states.pt"));
                assert_eq!(std::fs::metadata(&f).unwrap().len(), bytes, "{}", f.display());
            }
        }
    }
}

#[test]
fn a_corrupted_shard_fails_the_load_that_reads_it() {
    let d = scratch();
    let quick = ["--set", "checkpoint.time_between_checkpoints=0s", "--set", "checkpoint.num_checkpoints_write=1"];
    let mut args = quick.to_vec();
    args.extend(["--set", "checkpoint.num_checkpoints_read=0"]);
    let r = run_in(d.path(), "checkpoint-smoke", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    // Flip bytes in the middle of rank 1's optimizer shard.
    let f = step_dir(d.path(), 1).join("zero_pp_rank_1_mp_rank_0_optim_states.pt");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&f).unwrap();
    let mut b = [0u8; 2];
    file.read_exact_at(&mut b, 50_000_001).unwrap();
    file.write_all_at(&[!b[0], !b[1]], 50_000_001).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let target = format!("file://{}", d.path().join("data").display());
    let res2 = d.path().join("res2");
    let r = mlpdrive(
        d.path(),
        &[
            "run",
            "checkpoint-smoke",
            "--quiet",
            "--target",
            &target,
            "--results",
            res2.to_str().unwrap(),
            "--set",
            "checkpoint.time_between_checkpoints=0s",
            "--set",
            "checkpoint.num_checkpoints_write=0",
            "--set",
            "checkpoint.num_checkpoints_read=1",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let j = results(d.path(), "res2");
    assert_eq!(j["status"], "failed");
    assert_eq!(j["verify_errors"], 1, "{j}");
    let first = j["verify"]["first"].as_str().unwrap();
    assert!(first.contains("corrupt data, first bad byte at object offset 50000001"), "{first}");
    // Everything else was verified.
    assert_eq!(j["verify"]["verified_bytes"], SMOKE_CHECKPOINT_BYTES - 4096, "{j}");
}

#[test]
fn loading_checkpoints_that_were_never_written_fails_clearly() {
    let d = scratch();
    let r = run_in(
        d.path(),
        "checkpoint-smoke",
        &["--set", "checkpoint.num_checkpoints_write=0", "--set", "checkpoint.num_checkpoints_read=1"],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let j = results(d.path(), "res");
    let first = j["errors"]["first"].as_str().unwrap();
    assert!(first.contains("checkpoint 1 is not complete in checkpoints/smoke"), "{first}");
}

#[test]
fn bad_checkpoint_configs_are_usage_errors_that_write_nothing() {
    for (set, expect) in [
        ("checkpoint.fsync=false", "checkpoint.fsync"),
        ("checkpoint.num_checkpoints_read=3", "more than the 2 checkpoints"),
        ("model.parallelism.tensor=4", "multiple of tensor × pipeline"),
        ("model.parallelism.data=2", "only applies to checkpoint.mode: subset"),
        ("checkpoint.mode=subset", "model.parallelism.data"),
        ("duration=10s", "does not apply"),
        ("transfer_size=1000", "transfer_size"),
        ("checkpoint.checkpoint_folder=../x", "checkpoint_folder"),
        ("model.nmu_layers=2", "nmu_layers"),
    ] {
        let d = scratch();
        let r = run_in(d.path(), "checkpoint-smoke", &["--set", set]);
        assert_eq!(r.code, 2, "{set}: {}", r.show());
        assert!(r.stderr.contains(expect), "{set}: {}", r.show());
        assert!(tree(d.path()).is_empty(), "{set}: wrote {:?}", tree(d.path()));
    }
}

#[test]
fn datasize_prints_the_reference_sizes() {
    let d = scratch();
    let r = mlpdrive(d.path(), &["datasize", "checkpoint/llama3-405b"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("files per checkpoint       1544"), "{}", r.stdout);
    assert!(r.stdout.contains("5682508791808 (5292.25 GiB"), "{}", r.stdout);
    let r = mlpdrive(d.path(), &["datasize", "checkpoint/llama3-1t", "--subset"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("subset (8 ranks acting as ranks 0–7 of 1024)"), "{}", r.stdout);
    assert!(r.stdout.contains("(143.72 GiB"), "{}", r.stdout);
    let r = mlpdrive(d.path(), &["datasize", "checkpoint/llama3-70b", "--ranks", "12"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("multiple of tensor × pipeline"), "{}", r.show());
    assert!(tree(d.path()).is_empty());
}

/// A tiny llama-shaped model (1,114,880 parameters, 15,639,040 bytes per
/// checkpoint) for runs on the in-memory emulated device.
const TINY_CHECKPOINT_BYTES: u64 = 15_639_040;
const TINY: &[&str] = &[
    "--set",
    "model.num_layers=1",
    "--set",
    "model.hidden_size=256",
    "--set",
    "model.ffn_hidden_size=512",
    "--set",
    "model.num_attention_heads=4",
    "--set",
    "model.num_kv_heads=2",
    "--set",
    "model.vocab_size=1024",
    "--set",
    "checkpoint.time_between_checkpoints=0s",
    "--set",
    "transfer_size=256KiB",
];

#[test]
fn corrupted_reads_from_an_emulated_device_fail_the_load() {
    let d = scratch();
    let profile = d.path().join("dev.yaml");
    std::fs::write(
        &profile,
        "description: corrupting device\ncapacity: 1GiB\nchannels: 8\nlatency:\n  read: {fixed: 20us}\n  \
         write: {fixed: 20us}\n  flush: {fixed: 20us}\n  trim: {fixed: 5us}\nchannel_bandwidth: {read: 2GB/s, \
         write: 2GB/s}\ndevice_bandwidth: {read: 8GB/s, write: 8GB/s}\nfaults:\n  read_corruption_probability: 0.05\n",
    )
    .unwrap();
    let target = format!("emu://{}", profile.display());
    let res = d.path().join("res");
    let mut args = vec!["run", "checkpoint-smoke", "--quiet", "--target", &target, "--results", res.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let r = mlpdrive(d.path(), &args);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = results(d.path(), "res");
    assert_eq!(j["status"], "failed");
    assert!(j["verify_errors"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["errors"]["count"], 0, "corruption is caught by verification, not as an I/O error: {j}");
    assert_eq!(j["summary"]["checkpoint_bytes"], TINY_CHECKPOINT_BYTES, "{j}");
}

#[test]
fn a_clean_emulated_device_loads_every_byte() {
    let d = scratch();
    let res = d.path().join("res");
    let mut args =
        vec!["run", "checkpoint-smoke", "--quiet", "--target", "emu://ci-fast", "--results", res.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let r = mlpdrive(d.path(), &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = results(d.path(), "res");
    assert_eq!(j["summary"]["checkpoint_bytes"], TINY_CHECKPOINT_BYTES, "{j}");
    assert_eq!(j["verify"]["verified_bytes"], 2 * TINY_CHECKPOINT_BYTES, "{j}");
}
