//! Tests of the whole config layer through its public entry points: presets
//! and files in, `RunConfig`/`RawConfig` or a usage error naming the key out.

use std::time::Duration;

use serde_yaml_ng::Value;

use super::*;
use crate::datagen::VerifyMode;
use crate::units::ByteSize;

fn sets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn raw_with(list: &[&str]) -> Result<RawConfig, Error> {
    let cfg = load("raw", &sets(list), None, None)?;
    RawConfig::from_run_config(&cfg)
}

/// The usage error message for `raw` with these overrides (panics if it loads).
fn raw_err(list: &[&str]) -> String {
    match raw_with(list) {
        Ok(raw) => panic!("{list:?} loaded: {raw:?}"),
        Err(Error::Usage(message)) => message,
        Err(other) => panic!("{list:?}: not a usage error: {other}"),
    }
}

/// Writes `text` to a temporary YAML file and loads it.
fn load_text(text: &str) -> (tempfile::TempDir, String, Result<RunConfig, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    let result = load(&path, &[], None, None);
    (dir, path, result)
}

fn text_err(text: &str) -> (String, String) {
    let (_dir, path, result) = load_text(text);
    match result {
        Ok(cfg) => panic!("{text:?} loaded: {cfg:?}"),
        Err(Error::Usage(message)) => (path, message),
        Err(other) => panic!("{text:?}: not a usage error: {other}"),
    }
}

#[test]
fn raw_preset_loads_with_defaults() {
    let cfg = load("raw", &[], None, None).unwrap();
    assert_eq!(cfg.source, "preset raw");
    assert_eq!(
        cfg.common,
        Common {
            workload: "raw".into(),
            description: Some("fio-like calibration: 4 KiB random reads, QD 32, on a 256 MiB file for 10 s".into()),
            seed: 1,
            duration: Some(Duration::from_secs(10)),
            verify: VerifyMode::Full,
            verify_sample_every: crate::datagen::DEFAULT_SAMPLE_EVERY,
            verify_sample_key: crate::datagen::SampleKey::Seed,
            verify_sample_secret: 0,
            continue_on_error: false,
            io: IoConfig { direct: true, engine: EngineKind::IoUring, timeout: Duration::from_secs(30) },
            progress_interval: Duration::from_secs(5),
            s3: None,
        }
    );
    let keys: Vec<&str> = cfg.workload_keys.keys().filter_map(Value::as_str).collect();
    assert_eq!(keys, ["rw"], "the block and object keys are at their defaults");
    let raw = RawConfig::from_run_config(&cfg).unwrap();
    assert_eq!(
        raw,
        RawConfig {
            rw: Rw::RandRead,
            rwmix_read: None,
            block_size: ByteSize(4096),
            queue_depth: 32,
            jobs: 1,
            size: ByteSize(256 << 20),
            bytes: None,
            object_size: None,
            objects: None,
            concurrency: None,
        }
    );
    assert_eq!(raw.read_percent(), 100);
}

#[test]
fn raw_smoke_preset_is_ci_sized() {
    let cfg = load("raw-smoke", &[], None, None).unwrap();
    assert_eq!(cfg.common.duration, Some(Duration::from_secs(2)));
    let raw = RawConfig::from_run_config(&cfg).unwrap();
    assert_eq!(raw.rw, Rw::RandRw);
    assert_eq!(raw.rwmix_read, Some(50));
    assert_eq!(raw.read_percent(), 50);
    assert_eq!(raw.block_size, ByteSize::kib(4));
    assert_eq!(raw.queue_depth, 16);
    assert_eq!(raw.size, ByteSize::mib(16));
}

#[test]
fn every_preset_loads_and_validates() {
    for preset in presets() {
        let cfg = load(&preset.name, &[], None, None).unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
        assert_eq!(cfg.common.workload, preset.workload);
        match preset.workload.as_str() {
            "raw" => {
                RawConfig::from_run_config(&cfg).unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
            }
            "kvcache" => {
                crate::workload::kvcache::config::KvConfig::from_run_config(&cfg)
                    .unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
            }
            "checkpoint" => {
                super::checkpoint::CheckpointConfig::from_run_config(&cfg)
                    .unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
            }
            "training" => {
                super::training::TrainingConfig::from_run_config(&cfg)
                    .unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
            }
            "vdb" => {
                super::vdb::VdbConfig::from_run_config(&cfg).unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
            }
            other => panic!("preset {}: no validation test for workload {other}", preset.name),
        }
    }
}

#[test]
fn overrides_apply_in_order_then_shortcuts() {
    let list = sets(&[
        "queue_depth=64",
        "io.direct=false",
        "io.engine=sync",
        "rw=randrw",
        "rwmix_read=70",
        "block_size=1MiB",
        "size=2GiB",
        "jobs=4",
        "bytes=10GiB",
        "seed=5",
        "verify=false",
        "continue_on_error=true",
        "io.timeout=2m",
        "progress_interval=1s",
        "description=tuned",
        "queue_depth=128",
    ]);
    let cfg = load("raw", &list, Some(42), Some("1m 30s")).unwrap();
    assert_eq!(cfg.common.seed, 42, "--seed wins over --set seed");
    assert_eq!(cfg.common.duration, Some(Duration::from_secs(90)));
    assert_eq!(cfg.common.verify, VerifyMode::Off);
    assert!(cfg.common.continue_on_error);
    assert_eq!(cfg.common.io, IoConfig { direct: false, engine: EngineKind::Sync, timeout: Duration::from_secs(120) });
    assert_eq!(cfg.common.progress_interval, Duration::from_secs(1));
    assert_eq!(cfg.common.description.as_deref(), Some("tuned"));
    let raw = RawConfig::from_run_config(&cfg).unwrap();
    assert_eq!(raw.queue_depth, 128, "the later --set wins");
    assert_eq!(raw.rw, Rw::RandRw);
    assert_eq!(raw.read_percent(), 70);
    assert_eq!(raw.block_size, ByteSize::mib(1));
    assert_eq!(raw.size, ByteSize::gib(2));
    assert_eq!(raw.jobs, 4);
    assert_eq!(raw.bytes, Some(ByteSize::gib(10)));
}

#[test]
fn duration_can_be_replaced_by_bytes() {
    let cfg = load("raw", &sets(&["duration=", "bytes=1GiB"]), None, None).unwrap();
    assert_eq!(cfg.common.duration, None);
    let raw = RawConfig::from_run_config(&cfg).unwrap();
    assert_eq!(raw.bytes, Some(ByteSize::gib(1)));
    assert!(cfg.effective.get("duration").is_none());
}

#[test]
fn file_with_only_required_keys_gets_every_default() {
    let (_dir, path, result) = load_text("workload: raw\nrw: write\nduration: 3\n");
    let cfg = result.unwrap();
    assert_eq!(cfg.source, path);
    assert_eq!(cfg.common.seed, DEFAULT_SEED);
    assert_eq!(cfg.common.description, None);
    assert_eq!(cfg.common.verify, VerifyMode::Full);
    assert!(!cfg.common.continue_on_error);
    assert!(cfg.common.io.direct);
    assert_eq!(cfg.common.io.engine, EngineKind::IoUring);
    assert_eq!(cfg.common.io.timeout, DEFAULT_IO_TIMEOUT);
    assert_eq!(cfg.common.progress_interval, DEFAULT_PROGRESS_INTERVAL);
    assert_eq!(cfg.common.duration, Some(Duration::from_secs(3)));
    let raw = RawConfig::from_run_config(&cfg).unwrap();
    assert_eq!(raw.block_size, ByteSize::kib(4));
    assert_eq!(raw.queue_depth, 32);
    assert_eq!(raw.jobs, 1);
    assert_eq!(raw.size, ByteSize::mib(256));
    assert_eq!(raw.rwmix_read, None);
    assert_eq!(raw.read_percent(), 0);
}

#[test]
fn yml_extension_and_nested_io_in_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yml");
    std::fs::write(&path, "workload: raw\nrw: read\nbytes: 1MiB\nio:\n  direct: false\n").unwrap();
    let cfg = load(path.to_str().unwrap(), &[], None, None).unwrap();
    assert!(!cfg.common.io.direct);
    assert_eq!(cfg.common.io.engine, EngineKind::IoUring);
    RawConfig::from_run_config(&cfg).unwrap();
}

#[test]
fn effective_config_has_common_defaults_and_workload_keys() {
    let mut cfg = load("raw", &sets(&["queue_depth=8"]), Some(3), None).unwrap();
    let eff = &cfg.effective;
    assert_eq!(eff["workload"], Value::from("raw"));
    assert_eq!(eff["seed"], Value::from(3));
    assert_eq!(eff["duration"], Value::from("10s"));
    assert_eq!(eff["verify"], Value::from("full"));
    assert!(eff.get("verify_sample_every").is_none(), "only sampled mode has a rate");
    assert_eq!(eff["continue_on_error"], Value::from(false));
    assert_eq!(eff["io"]["direct"], Value::from(true));
    assert_eq!(eff["io"]["engine"], Value::from("io_uring"));
    assert_eq!(eff["io"]["timeout"], Value::from("30s"));
    assert_eq!(eff["progress_interval"], Value::from("5s"));
    assert_eq!(eff["queue_depth"], Value::from(8));
    assert!(eff.get("block_size").is_none(), "the preset leaves it at its default");
    assert!(eff.get("bytes").is_none());

    let raw = RawConfig::from_run_config(&cfg).unwrap();
    cfg.record_workload(&raw).unwrap();
    assert_eq!(cfg.effective["rw"], Value::from("randread"));
    assert_eq!(cfg.effective["size"], Value::from("256MiB"));
    assert_eq!(cfg.effective["block_size"], Value::from("4KiB"));
    assert_eq!(cfg.effective["queue_depth"], Value::from(8));
    assert_eq!(cfg.effective["seed"], Value::from(3));
    let first_keys: Vec<&str> = cfg.effective.as_mapping().unwrap().keys().filter_map(Value::as_str).take(3).collect();
    assert_eq!(first_keys, ["workload", "description", "seed"]);
}

#[test]
fn effective_config_loads_back_to_the_same_run() {
    let mut cfg = load("raw-smoke", &sets(&["io.engine=sync", "rwmix_read=30"]), Some(9), None).unwrap();
    let raw = RawConfig::from_run_config(&cfg).unwrap();
    cfg.record_workload(&raw).unwrap();
    let yaml = cfg.effective_yaml().unwrap();
    let (_dir, _path, again) = load_text(&yaml);
    let again = again.unwrap();
    assert_eq!(again.common, cfg.common);
    assert_eq!(RawConfig::from_run_config(&again).unwrap(), raw);
    assert_eq!(again.effective, cfg.effective);
}

// ---- errors: every class names the key ----

#[test]
fn bad_units_name_the_key() {
    assert_eq!(
        raw_err(&["block_size=4KX"]),
        "config key `block_size`: invalid size '4KX': use a number with an optional unit, \
         like 4096, 4KiB, 1MiB, 2GiB"
    );
    let e = raw_err(&["size=-1MiB"]);
    assert!(e.starts_with("config key `size`: invalid size '-1MiB'") && e.contains("negative"), "{e}");
    let e = raw_err(&["size=-5"]);
    assert!(e.starts_with("config key `size`:") && e.contains("negative"), "{e}");
    let e = raw_err(&["bytes=0.5"]);
    assert!(e.starts_with("config key `bytes`:") && e.contains("whole number of bytes"), "{e}");
    let e = raw_err(&["duration=10 parsecs"]);
    assert!(e.starts_with("config key `duration`: invalid duration '10 parsecs'"), "{e}");
    let e = raw_err(&["io.timeout=soon"]);
    assert!(e.starts_with("config key `io.timeout`: invalid duration 'soon'"), "{e}");
    let e = raw_err(&["progress_interval=[1]"]);
    assert!(e.starts_with("config key `progress_interval`: expected a duration"), "{e}");
    let e = raw_err(&["block_size=true"]);
    assert!(e.starts_with("config key `block_size`: expected a size") && e.ends_with("got true"), "{e}");
}

#[test]
fn cli_duration_errors_name_the_flag() {
    let e = load("raw", &[], None, Some("fast")).unwrap_err();
    assert!(matches!(e, Error::Usage(_)));
    let e = e.to_string();
    assert!(e.starts_with("--duration: invalid duration 'fast'"), "{e}");
    let e = load("raw", &[], None, Some("-1s")).unwrap_err().to_string();
    assert!(e.contains("--duration") && e.contains("negative"), "{e}");
}

#[test]
fn unknown_keys_list_the_known_ones() {
    let e = raw_err(&["blok_size=4KiB"]);
    assert!(
        e.starts_with(
            "unknown config key `blok_size` for workload raw; known keys: rw, rwmix_read, \
             block_size, queue_depth, jobs, size, bytes, object_size, objects, concurrency (and the common \
             keys: workload, \
             description, seed, duration, verify, verify_sample_every, verify_sample_key, continue_on_error, io, \
             progress_interval, s3)"
        ),
        "{e}"
    );
    assert!(e.ends_with("did you mean `block_size`?"), "{e}");
    let e = raw_err(&["durration=5s"]);
    assert!(e.contains("`durration`") && e.contains("did you mean `duration`?"), "{e}");
    let e = raw_err(&["io.directt=false"]);
    assert_eq!(
        e,
        "unknown config key `io.directt`; known keys under `io`: direct, engine, timeout; \
         did you mean `io.direct`?"
    );
    let e = raw_err(&["completely_unrelated=1"]);
    assert!(e.contains("`completely_unrelated`") && !e.contains("did you mean"), "{e}");
}

#[test]
fn wrong_types_name_the_key() {
    assert_eq!(raw_err(&["io.direct=maybe"]), "config key `io.direct`: expected true or false, got 'maybe'");
    assert_eq!(
        raw_err(&["verify=yes"]),
        "config key `verify`: expected one of full, sampled, off (or true = full, false = off), got 'yes'"
    );
    assert_eq!(raw_err(&["continue_on_error=1"]), "config key `continue_on_error`: expected true or false, got 1");
    assert_eq!(raw_err(&["seed=abc"]), "config key `seed`: expected an integer, got 'abc'");
    assert_eq!(raw_err(&["seed=-1"]), "config key `seed`: expected an integer from 0 to 18446744073709551615, got -1");
    assert_eq!(raw_err(&["queue_depth=lots"]), "config key `queue_depth`: expected an integer, got 'lots'");
    assert_eq!(raw_err(&["queue_depth=2.5"]), "config key `queue_depth`: expected an integer, got 2.5");
    assert_eq!(
        raw_err(&["rwmix_read=300", "rw=randrw"]),
        "config key `rwmix_read`: expected an integer from 0 to 255, got 300"
    );
    assert_eq!(raw_err(&["io.engine=spdk"]), "config key `io.engine`: expected one of io_uring, sync, got 'spdk'");
    assert_eq!(
        raw_err(&["rw=sideways"]),
        "config key `rw`: expected one of read, write, randread, randwrite, randrw, put, get, mixed, got 'sideways'"
    );
    assert_eq!(
        raw_err(&["rw=5"]),
        "config key `rw`: expected one of read, write, randread, randwrite, randrw, put, get, mixed, got 5"
    );
    assert_eq!(raw_err(&["io=5"]), "config key `io`: expected a mapping (key: value pairs), got 5");
    assert_eq!(raw_err(&["description=[a]"]), "config key `description`: expected a string, got a list");
    assert_eq!(raw_err(&["workload=7"]), "config key `workload`: expected a string, got 7");
}

#[test]
fn range_errors_name_the_key() {
    assert_eq!(raw_err(&["queue_depth=0"]), "config key `queue_depth`: expected an integer ≥ 1, got 0");
    assert_eq!(raw_err(&["queue_depth=5000"]), "config key `queue_depth`: expected an integer ≤ 4096, got 5000");
    assert_eq!(raw_err(&["jobs=0"]), "config key `jobs`: expected an integer ≥ 1, got 0");
    assert_eq!(raw_err(&["jobs=257"]), "config key `jobs`: expected an integer ≤ 256, got 257");
    assert_eq!(
        raw_err(&["rw=randrw", "rwmix_read=101"]),
        "config key `rwmix_read`: expected a percentage from 0 to 100, got 101"
    );
    let e = raw_err(&["rwmix_read=30"]);
    assert!(e.starts_with("config key `rwmix_read`: only applies to `rw: randrw`"), "{e}");
    assert!(e.contains("rw is randread"), "{e}");
    assert!(raw_with(&["queue_depth=4096", "jobs=256", "size=4KiB"]).is_ok());
    assert!(raw_with(&["rw=randrw", "rwmix_read=0"]).is_ok());
    assert!(raw_with(&["rw=randrw", "rwmix_read=100"]).is_ok());
}

#[test]
fn block_and_file_sizes_are_checked() {
    let e = raw_err(&["block_size=5000"]);
    assert!(e.starts_with("config key `block_size`: must be a non-zero multiple of 4KiB"), "{e}");
    assert!(e.contains("data generator") && e.contains("got 5000B; try 4KiB or 8KiB"), "{e}");
    let e = raw_err(&["block_size=0"]);
    assert!(e.contains("config key `block_size`") && e.contains("got 0B; try 4KiB"), "{e}");
    let e = raw_err(&["block_size=512"]);
    assert!(e.contains("config key `block_size`") && e.contains("try 4KiB"), "{e}");
    let e = raw_err(&["size=0"]);
    assert!(e.starts_with("config key `size`:") && e.contains("smaller than block_size 4KiB"), "{e}");
    let e = raw_err(&["block_size=1MiB", "size=512KiB"]);
    assert!(e.starts_with("config key `size`:"), "{e}");
    let e = raw_err(&["size=8EiB", "jobs=4"]);
    assert!(e.starts_with("config key `size`:") && e.contains("16 EiB"), "{e}");
    let e = raw_err(&["bytes=0"]);
    assert!(e.starts_with("config key `bytes`: must be at least one block"), "{e}");
    assert!(raw_with(&["block_size=8k", "size=1m"]).is_ok());
}

#[test]
fn durations_must_be_positive() {
    let e = raw_err(&["duration=0s"]);
    assert!(e.starts_with("config key `duration`: must be greater than 0"), "{e}");
    let e = raw_err(&["io.timeout=0"]);
    assert!(e.starts_with("config key `io.timeout`: must be greater than 0"), "{e}");
    let e = raw_err(&["progress_interval=0ms"]);
    assert!(e.starts_with("config key `progress_interval`: must be greater than 0"), "{e}");
}

#[test]
fn raw_needs_duration_or_bytes() {
    let e = raw_err(&["duration="]);
    assert!(e.contains("`duration`") && e.contains("`bytes`") && e.contains("whichever"), "{e}");
    let (_dir, _path, cfg) = load_text("workload: raw\nrw: read\n");
    let e = RawConfig::from_run_config(&cfg.unwrap()).unwrap_err().to_string();
    assert!(e.contains("needs a way to stop"), "{e}");
}

#[test]
fn raw_needs_rw() {
    let (_dir, _path, cfg) = load_text("workload: raw\nduration: 1s\n");
    let e = RawConfig::from_run_config(&cfg.unwrap()).unwrap_err().to_string();
    assert!(e.starts_with("missing config key `rw` for workload raw"), "{e}");
    assert!(e.contains("randread"), "{e}");
}

#[test]
fn malformed_yaml_names_file_and_position() {
    let (path, e) = text_err("workload: raw\nrw: [read\nqueue_depth: 4\n");
    assert!(e.starts_with(&format!("{path}: malformed YAML")), "{e}");
    assert!(e.contains("line 3 column 12"), "{e}");
    let (path, e) = text_err("workload: raw\nworkload: raw\n");
    assert!(e.starts_with(&format!("{path}: malformed YAML at line 1, column 1")), "{e}");
    assert!(e.contains("duplicate"), "{e}");
    let (_, e) = text_err("\tworkload: raw\n");
    assert!(e.contains("malformed YAML at line 1, column 1"), "{e}");
}

#[test]
fn top_level_must_be_a_mapping() {
    let (path, e) = text_err("- workload: raw\n");
    assert_eq!(
        e,
        format!("{path}: the top level must be a mapping of keys to values (like `workload: raw`), not a list")
    );
    let (_, e) = text_err("just a string\n");
    assert!(e.contains("not a single value"), "{e}");
    let (path, e) = text_err("");
    assert!(e.starts_with(&format!("{path}: the config is empty")), "{e}");
    let (_, e) = text_err("# only a comment\n");
    assert!(e.contains("the config is empty"), "{e}");
    let (_, e) = text_err("1: x\nworkload: raw\n");
    assert!(e.contains("config keys must be names, got 1"), "{e}");
}

#[test]
fn workload_key_is_required_and_known() {
    let (path, e) = text_err("rw: read\nduration: 1s\n");
    assert!(e.starts_with(&format!("{path}: missing config key `workload`")), "{e}");
    assert!(e.contains("known workloads: raw"), "{e}");
    let (_, e) = text_err("workload: nosuch\n");
    assert_eq!(
        e,
        format!(
            "config key `workload`: unknown workload 'nosuch'; known workloads: {}",
            super::KNOWN_WORKLOADS.join(", ")
        )
    );
    let e = raw_err(&["workload="]);
    assert!(e.contains("missing config key `workload`"), "{e}");
}

#[test]
fn description_is_one_line() {
    let e = raw_err(&["description=\"two\\nlines\""]);
    assert_eq!(e, "config key `description`: must be a single line");
    let cfg = load("raw", &sets(&["description=\"  padded  \""]), None, None).unwrap();
    assert_eq!(cfg.common.description.as_deref(), Some("padded"));
}

#[test]
fn source_errors_are_usage_errors() {
    for source in ["nope", "nope.yaml", "/no/such/dir/x.yaml", "./missing", ""] {
        let e = load(source, &[], None, None).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{source}: {e}");
    }
    let e = load("rw", &[], None, None).unwrap_err().to_string();
    assert!(e.contains("available presets: ") && e.contains("raw, raw-smoke"), "{e}");
    let e = load("raw", &sets(&["queue_depth"]), None, None).unwrap_err().to_string();
    assert!(e.contains("--set KEY=VALUE"), "{e}");
}

#[test]
fn workload_config_errors_name_nested_paths() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tier {
        capacity: ByteSize,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        tiers: Vec<Tier>,
    }
    let (_dir, _path, cfg) = load_text("workload: raw\ntiers:\n  - capacity: 1GiB\n  - capacity: 1GX\n");
    let e = workload_config::<Nested>(&cfg.unwrap()).unwrap_err().to_string();
    assert!(e.starts_with("config key `tiers[1].capacity`: invalid size '1GX'"), "{e}");
    let (_dir, _path, cfg) = load_text("workload: raw\ntiers:\n  - capasity: 1GiB\n");
    let e = workload_config::<Nested>(&cfg.unwrap()).unwrap_err().to_string();
    assert!(e.starts_with("unknown config key `tiers[0].capasity`"), "{e}");
    let (_dir, _path, cfg) = load_text("workload: raw\ntiers:\n  - {}\n");
    let e = workload_config::<Nested>(&cfg.unwrap()).unwrap_err().to_string();
    assert_eq!(e, "missing config key `tiers[0].capacity`");
}

/// Throws odd values at every key: each load must end in Ok or a usage
/// error, never a panic or another error kind.
#[test]
fn odd_values_never_panic() {
    let keys = [
        "workload",
        "description",
        "seed",
        "duration",
        "verify",
        "verify_sample_every",
        "verify_sample_key",
        "continue_on_error",
        "io",
        "io.direct",
        "io.engine",
        "io.timeout",
        "progress_interval",
        "rw",
        "rwmix_read",
        "block_size",
        "queue_depth",
        "jobs",
        "size",
        "bytes",
        "a.b.c",
    ];
    let values = [
        "",
        "~",
        "0",
        "-1",
        "1",
        "18446744073709551615",
        "18446744073709551616",
        "-9e999",
        "1e999",
        ".nan",
        ".inf",
        "true",
        "[]",
        "{}",
        "[1, [2, {a: b}]]",
        "!tag x",
        "'quoted'",
        "4KiB",
        "16EiB",
        "18446744073709551615B",
        "1.5",
        "0.1",
        "10s",
        "-10s",
        "99999999999999999999y",
        "\"\\u0000\"",
        "&a 1",
        "*a",
        "é",
        "🙂",
        "'",
        "{",
        "a: b",
    ];
    for key in keys {
        for value in values {
            let set = format!("{key}={value}");
            match load("raw", std::slice::from_ref(&set), None, None) {
                Ok(cfg) => match RawConfig::from_run_config(&cfg) {
                    Ok(_) | Err(Error::Usage(_)) => {}
                    Err(e) => panic!("{set}: {e}"),
                },
                Err(Error::Usage(_)) => {}
                Err(e) => panic!("{set}: {e}"),
            }
        }
    }
}

#[test]
fn object_mode_fills_its_defaults_and_refuses_the_block_keys() {
    let raw = raw_with(&["rw=put"]).unwrap();
    assert_eq!(raw.object_bytes(), 1 << 20);
    assert_eq!((raw.objects, raw.concurrency), (Some(64), Some(8)));
    assert_eq!(raw.block_size, ByteSize::mib(1), "the I/O size defaults to the object size");
    assert_eq!(raw.ios_in_flight_per_object(), 1);
    let big = raw_with(&["rw=get", "object_size=64MiB", "concurrency=16"]).unwrap();
    assert_eq!(big.block_size, ByteSize::mib(8), "at most 8 MiB");
    assert_eq!((big.ios_per_object(), big.ios_in_flight_per_object()), (8, 2), "about 32 I/Os in all");
    let one = raw_with(&["rw=get", "object_size=64MiB", "concurrency=1"]).unwrap();
    assert_eq!(one.ios_in_flight_per_object(), 8);
    let odd = raw_with(&["rw=mixed", "object_size=1000003"]).unwrap();
    assert_eq!(odd.block_size.bytes(), 1000003u64.div_ceil(4096) * 4096);
    assert_eq!(odd.read_percent(), 50);
    assert!(raw_err(&["rw=put", "queue_depth=4"]).starts_with("config key `queue_depth`: applies to raw's block mode"));
    assert!(raw_err(&["rw=put", "jobs=2"]).contains("use `concurrency`"));
    assert!(raw_err(&["rw=read", "object_size=1MiB"]).starts_with("config key `object_size`: applies to raw's object"));
    assert!(raw_err(&["rw=put", "block_size=6000"]).starts_with("config key `block_size`"));
}

#[test]
fn object_mode_effective_config_loads_back_to_the_same_run() {
    let mut cfg =
        load("raw", &sets(&["rw=mixed", "object_size=3MiB", "rwmix_read=20", "bytes=1GiB"]), None, None).unwrap();
    let raw = RawConfig::from_run_config(&cfg).unwrap();
    cfg.record_workload(&raw.object_view().expect("object mode")).unwrap();
    let eff = &cfg.effective;
    assert!(eff.get("queue_depth").is_none() && eff.get("size").is_none() && eff.get("jobs").is_none(), "{eff:?}");
    let text = cfg.effective_yaml().unwrap();
    let (_dir, _path, back) = load_text(&text);
    let again = RawConfig::from_run_config(&back.unwrap()).unwrap();
    assert_eq!(again, raw);
    assert!(raw_with(&["rw=randread"]).unwrap().object_view().is_none());
}

#[test]
fn verify_accepts_modes_and_booleans_and_sampling_rates() {
    for (value, want) in [
        ("full", VerifyMode::Full),
        ("true", VerifyMode::Full),
        ("sampled", VerifyMode::Sampled),
        ("off", VerifyMode::Off),
        ("false", VerifyMode::Off),
    ] {
        let cfg = load("raw", &sets(&[&format!("verify={value}")]), None, None).unwrap();
        assert_eq!(cfg.common.verify, want, "verify={value}");
        assert_eq!(cfg.effective["verify"], Value::from(want.as_str()), "canonical spelling");
        assert_eq!(cfg.common.verifier().mode(), want);
    }
    // In a file, YAML booleans and names alike.
    for (text, want) in [("true", VerifyMode::Full), ("false", VerifyMode::Off), ("sampled", VerifyMode::Sampled)] {
        let (_dir, _path, result) = load_text(&format!("workload: raw\nrw: read\nbytes: 1MiB\nverify: {text}\n"));
        assert_eq!(result.unwrap().common.verify, want, "verify: {text}");
    }
    let cfg = load("raw", &sets(&["verify=sampled"]), None, None).unwrap();
    assert_eq!(cfg.common.verify_sample_every, crate::datagen::DEFAULT_SAMPLE_EVERY);
    assert_eq!(cfg.effective["verify_sample_every"], Value::from(16));
    assert_eq!(cfg.common.verifier().sample_every(), Some(16));
    let cfg = load("raw", &sets(&["verify=sampled", "verify_sample_every=64"]), Some(9), None).unwrap();
    assert_eq!(cfg.common.verifier().sample_every(), Some(64));
    assert_eq!(cfg.common.verifier(), crate::datagen::Verifier::new(VerifyMode::Sampled, 9, 64), "keyed by the seed");
    assert_eq!(cfg.effective["verify_sample_every"], Value::from(64));
}

#[test]
fn a_random_sample_key_picks_an_unpredictable_subset_that_is_never_recorded() {
    use crate::datagen::SampleKey;
    let seeded = load("raw", &sets(&["verify=sampled"]), Some(9), None).unwrap();
    assert_eq!(seeded.common.verify_sample_key, SampleKey::Seed, "the default");
    assert_eq!(seeded.effective["verify_sample_key"], Value::from("seed"));
    let random = |_| load("raw", &sets(&["verify=sampled", "verify_sample_key=random"]), Some(9), None).unwrap();
    let (a, b) = (random(0), random(1));
    assert_eq!(a.common.verify_sample_key, SampleKey::Random);
    assert_eq!(a.effective["verify_sample_key"], Value::from("random"));
    assert_ne!(a.common.verify_sample_secret, b.common.verify_sample_secret, "a fresh secret per load");
    assert_ne!(a.common.verifier(), seeded.common.verifier(), "not keyed by the seed");
    // The subsets differ (1 in 16 of 4096 blocks: the chance that two
    // independent keys pick the same subset is nil).
    let subset = |v: crate::datagen::Verifier| (0..4096u64).filter(|b| v.samples(7, *b)).collect::<Vec<_>>();
    let (sa, sb) = (subset(a.common.verifier()), subset(b.common.verifier()));
    assert!(sa.len() > 150 && sa.len() < 370, "about 1 in 16: {}", sa.len());
    assert_ne!(sa, sb);
    assert_ne!(sa, subset(seeded.common.verifier()));
    // The secret is in no output: the effective config names the choice only.
    let text = serde_json::to_string(&a.effective).unwrap();
    assert!(!text.contains(&a.common.verify_sample_secret.to_string()), "{text}");
    assert_eq!(
        raw_err(&["verify_sample_key=random"]),
        "config key `verify_sample_key`: applies only with `verify: sampled` (verify is full); remove it or set \
         verify=sampled"
    );
    assert_eq!(
        raw_err(&["verify=sampled", "verify_sample_key=secret"]),
        "config key `verify_sample_key`: expected one of seed, random, got 'secret'"
    );
}

#[test]
fn bad_verify_values_name_the_key_and_the_accepted_values() {
    let accepted = "expected one of full, sampled, off (or true = full, false = off)";
    assert_eq!(raw_err(&["verify=sample"]), format!("config key `verify`: {accepted}, got 'sample'"));
    assert_eq!(raw_err(&["verify=1"]), format!("config key `verify`: {accepted}, got 1"));
    assert_eq!(raw_err(&["verify=[full]"]), format!("config key `verify`: {accepted}, got a list"));
    assert_eq!(
        raw_err(&["verify=sampled", "verify_sample_every=1"]),
        "config key `verify_sample_every`: expected an integer ≥ 2, got 1"
    );
    assert_eq!(
        raw_err(&["verify=sampled", "verify_sample_every=2000000"]),
        "config key `verify_sample_every`: expected an integer ≤ 1048576, got 2000000"
    );
    assert_eq!(
        raw_err(&["verify=sampled", "verify_sample_every=many"]),
        "config key `verify_sample_every`: expected an integer, got 'many'"
    );
    assert_eq!(
        raw_err(&["verify_sample_every=8"]),
        "config key `verify_sample_every`: applies only with `verify: sampled` (verify is full); remove it or set \
         verify=sampled"
    );
    assert!(raw_err(&["verify=off", "verify_sample_every=8"]).contains("(verify is off)"));
}
