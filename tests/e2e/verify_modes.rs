//! `verify: full | sampled | off` end to end: what sampled mode catches in
//! every block (headers), what it catches only in its subset (payload), that
//! its byte accounting is exact, and that the training reads honour it.

use std::os::unix::fs::FileExt;

use crate::common::*;

const FILE_BYTES: u64 = 16 << 20;
const BLOCKS: u64 = FILE_BYTES / 4096;

/// Lays out the raw-smoke file (16 MiB), damages it, then reads it all back
/// once per mode in `modes`; returns each run's exit code and results.
fn read_back_after(damage: impl FnOnce(&std::fs::File), modes: &[&str]) -> Vec<(i32, serde_json::Value, String)> {
    let d = scratch();
    let r = run_in(d.path(), "raw-smoke", &["--set", "rw=write", "--set", "bytes=16MiB", "--set", "duration=null"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let file = d.path().join("data/mlpdrive/raw/job0.dat");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), FILE_BYTES);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
    damage(&f);
    f.sync_all().unwrap();
    drop(f);
    modes
        .iter()
        .map(|mode| {
            let res = d.path().join("res");
            std::fs::remove_dir_all(&res).unwrap();
            // "MODE[,KEY=VALUE…]": the mode, then more `--set`s.
            let mut parts = mode.split(',');
            let set = format!("verify={}", parts.next().unwrap());
            let extra: Vec<String> = parts.flat_map(|kv| ["--set".to_string(), kv.to_string()]).collect();
            let mut args = vec![
                "--set",
                "rw=read",
                "--set",
                "bytes=16MiB",
                "--set",
                "duration=null",
                "--set",
                "block_size=64KiB",
                "--set",
                &set,
            ];
            args.extend(extra.iter().map(String::as_str));
            let r = run_in(d.path(), "raw-smoke", &args);
            let run = only_run_dir(&res);
            let summary = std::fs::read_to_string(run.join("summary.txt")).unwrap();
            (r.code, read_json(&run.join("results.json")), summary)
        })
        .collect()
}

fn flip(f: &std::fs::File, at: u64) {
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x21;
    f.write_all_at(&b, at).unwrap();
}

/// A flipped payload byte past the checked prefix in every block but
/// block 0 (which the read run probes, in full, to decide whether the
/// layout is still valid: damage there makes it lay the file out again).
fn damage_every_payload_but_block_0(f: &std::fs::File) {
    for block in 1..BLOCKS {
        flip(f, block * 4096 + 2000);
    }
}

fn bytes(j: &serde_json::Value, field: &str) -> u64 {
    j["verify"][field].as_u64().unwrap_or_else(|| panic!("verify.{field} missing: {j}"))
}

#[test]
fn clean_data_in_sampled_mode_is_split_exactly_and_labelled() {
    let runs = read_back_after(|_| {}, &["sampled", "full", "off"]);
    let (code, j, summary) = &runs[0];
    assert_eq!(*code, 0, "{j}");
    assert_eq!(j["verify"]["enabled"], true);
    assert_eq!(j["verify"]["mode"], "sampled");
    assert_eq!(j["verify"]["sample_every"], 16);
    let (full, header) = (bytes(j, "verified_bytes"), bytes(j, "header_checked_bytes"));
    assert_eq!(full + header, FILE_BYTES, "every byte in exactly one count: {j}");
    assert_eq!(bytes(j, "unverified_bytes"), 0);
    assert!(full > 0 && full < FILE_BYTES / 8, "about 1 in 16 blocks fully verified: {j}");
    assert_eq!(j["config"]["verify"], "sampled");
    assert!(j["notes"].to_string().contains("verify=sampled: payload checked in 1 of 16 blocks"), "{}", j["notes"]);
    let line = summary.lines().find(|l| l.starts_with("verify:")).unwrap();
    assert!(line.contains("sampled") && line.contains("header-checked only"), "{line}");

    let (code, j, summary) = &runs[1];
    assert_eq!(*code, 0);
    assert_eq!(j["verify"]["mode"], "full");
    assert_eq!(j["verify"]["sample_every"], serde_json::Value::Null);
    assert_eq!((bytes(j, "verified_bytes"), bytes(j, "header_checked_bytes")), (FILE_BYTES, 0));
    assert!(!j["notes"].to_string().contains("verify="), "{}", j["notes"]);
    assert!(!summary.contains("sampled"), "{summary}");

    let (code, j, _) = &runs[2];
    assert_eq!(*code, 0);
    assert_eq!((j["verify"]["enabled"].clone(), j["verify"]["mode"].clone()), (false.into(), "off".into()));
    assert!(j["notes"].to_string().contains("verify=off"), "{}", j["notes"]);
}

#[test]
fn sampled_mode_catches_damaged_headers_in_any_block() {
    // The block index of block 3, the object key of block 77, the
    // generation of block 1000 (raw reads accept any generation: caught by
    // the prefix check against the generation the header claims), and the
    // payload prefix of block 4000.
    let damaged = [(3, 32), (77, 24), (1000, 40), (4000, 100)];
    let runs = read_back_after(
        |f| {
            for (block, at) in damaged {
                flip(f, block * 4096 + at);
            }
        },
        &["sampled"],
    );
    let (code, j, _) = &runs[0];
    assert_eq!(*code, 1, "{j}");
    assert_eq!(j["status"], "failed");
    assert_eq!(j["verify_errors"], damaged.len() as u64, "{j}");
    let good = FILE_BYTES - damaged.len() as u64 * 4096;
    assert_eq!(bytes(j, "verified_bytes") + bytes(j, "header_checked_bytes"), good, "{j}");
}

#[test]
fn sampled_mode_catches_payload_damage_only_in_its_subset_and_never_claims_the_rest() {
    let runs = read_back_after(damage_every_payload_but_block_0, &["sampled", "full"]);
    let (code, j, _) = &runs[0];
    assert_eq!(*code, 1, "{j}");
    let caught = j["verify_errors"].as_u64().unwrap();
    assert!(caught > 0 && caught < BLOCKS / 8, "about 1 in 16 blocks caught: {j}");
    // None of the damaged blocks is counted as verified: the sampled ones
    // failed, the others are header-checked only. Only block 0 is intact.
    let full = bytes(j, "verified_bytes");
    assert!(full == 0 || full == 4096, "{j}");
    assert_eq!(full + bytes(j, "header_checked_bytes"), FILE_BYTES - caught * 4096, "{j}");
    assert!(j["verify"]["first"].as_str().unwrap().contains("corrupt"), "{j}");
    // Full mode catches every one.
    let (code, j, _) = &runs[1];
    assert_eq!(*code, 1);
    assert_eq!(j["verify_errors"], BLOCKS - 1, "{j}");
}

#[test]
fn a_random_sample_key_still_catches_payload_damage_and_says_how_it_was_keyed() {
    let runs = read_back_after(damage_every_payload_but_block_0, &["sampled", "sampled,verify_sample_key=random"]);
    for (i, (code, j, _)) in runs.iter().enumerate() {
        assert_eq!(*code, 1, "{j}");
        let caught = j["verify_errors"].as_u64().unwrap();
        assert!(caught > 0 && caught < BLOCKS / 8, "about 1 in 16 blocks caught: {j}");
        assert_eq!(bytes(j, "verified_bytes") + bytes(j, "header_checked_bytes"), FILE_BYTES - caught * 4096, "{j}");
        let (key, note) = if i == 0 { ("seed", "keyed by the seed") } else { ("random", "keyed by a random key") };
        assert_eq!(j["config"]["verify_sample_key"], key, "{}", j["config"]);
        assert!(j["notes"].to_string().contains(note), "{}", j["notes"]);
    }
}

#[test]
fn a_bad_verify_value_is_a_usage_error_naming_the_key_and_the_values() {
    let d = scratch();
    for (sets, want) in [
        (
            &["verify=sometimes"][..],
            "config key `verify`: expected one of full, sampled, off (or true = full, false = off), got 'sometimes'",
        ),
        (
            &["verify=sampled", "verify_sample_every=0"][..],
            "config key `verify_sample_every`: expected an integer ≥ 2, got 0",
        ),
        (&["verify_sample_every=8"][..], "config key `verify_sample_every`: applies only with `verify: sampled`"),
    ] {
        let mut args = Vec::new();
        for s in sets {
            args.extend(["--set", s]);
        }
        let r = run_in(d.path(), "raw-smoke", &args);
        assert_eq!(r.code, 2, "{}", r.show());
        assert!(r.stderr.contains(want), "{}", r.show());
        assert!(!d.path().join("res").exists() && !d.path().join("data").exists(), "nothing written");
    }
}

#[test]
fn training_reads_honour_sampled_mode() {
    let d = scratch();
    let target = format!("file://{}", d.path().join("data").display());
    let mut datagen = vec!["datagen", "training-smoke", "--quiet", "--target", &target];
    datagen.extend_from_slice(crate::training::SMALL);
    let g = mlpdrive(d.path(), &datagen);
    assert_eq!(g.code, 0, "{}", g.show());
    let mut args = vec!["--set", "verify=sampled", "--set", "verify_sample_every=4"];
    args.extend_from_slice(crate::training::SMALL);
    let r = run_in(d.path(), "training-smoke", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = read_json(&only_run_dir(&d.path().join("res")).join("results.json"));
    assert_eq!(j["verify"]["mode"], "sampled");
    assert_eq!(j["verify"]["sample_every"], 4);
    let (full, header) = (bytes(&j, "verified_bytes"), bytes(&j, "header_checked_bytes"));
    assert!(header > full && full > 0, "about 1 in 4 payload blocks fully checked: {j}");
    let read: u64 = j["summary"]["measured"]["per_epoch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["bytes_read"].as_u64().unwrap())
        .sum();
    // Zip and npy framing is counted unverified; the payload in the other two.
    assert_eq!(full + header + bytes(&j, "unverified_bytes"), read, "{j}");
    assert_eq!(j["verify_errors"], 0);
}
