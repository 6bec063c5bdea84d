//! The `s3://` target against a real S3 server (s3s-fs, in-process on a
//! loopback socket, SigV4): the library round trip (single PUT, multipart,
//! ranged and split GETs, list, batched delete), every workload's smoke run
//! on S3, setup errors (bad endpoint, missing bucket, wrong credentials)
//! with exit 2 and a clear message, credentials absent from every
//! output, and raw's object mode (whole-object PUT, verified GET, mixed).

use std::path::Path;
use std::process::Output;

use mlpdrive::datagen::{self, Expect};
use mlpdrive::engine::{Data, Request};
use mlpdrive::target::s3::{S3Target, StaticCredentials};
use mlpdrive::target::uri::S3Spec;
use mlpdrive::target::{Op, OpKind, Target};

use crate::common::*;
use crate::roundtrip::{CHUNK, SEED, drive, key, read_ranges, write_object};
use crate::s3_server::*;

const BUCKET: &str = "mlpdrive-test";

fn keys(server: &S3Server, part: &str) -> mlpdrive::config::s3::S3Keys {
    mlpdrive::config::s3::S3Keys {
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        part_size: Some(part.parse().unwrap()),
        ..Default::default()
    }
}

fn open_lib(server: &S3Server, prefix: &str) -> S3Target {
    let creds = StaticCredentials { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into() };
    let spec = S3Spec { bucket: BUCKET.into(), prefix: prefix.into() };
    S3Target::open_with(&spec, &format!("s3://{BUCKET}/{prefix}"), Some(&keys(server, "5MiB")), Some(&creds))
        .unwrap_or_else(|e| panic!("open: {e}"))
}

/// Runs `mlpdrive ARGS` with the test's AWS environment plus `env`.
fn run_s3(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = aws_command(BIN, dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out: Output = c.output().expect("run mlpdrive");
    let r = Run::from(out);
    assert_no_secrets(dir, &r);
    r
}

/// Neither key appears in stdout, stderr or any file the run wrote.
fn assert_no_secrets(dir: &Path, r: &Run) {
    for s in [ACCESS_KEY, SECRET_KEY] {
        assert!(!r.stdout.contains(s) && !r.stderr.contains(s), "a credential leaked to the terminal:\n{}", r.show());
    }
    for rel in tree(dir) {
        let p = dir.join(&rel);
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for s in [ACCESS_KEY, SECRET_KEY] {
                assert!(!text.contains(s), "a credential leaked into {}", p.display());
            }
        }
    }
}

/// `mlpdrive run PRESET` on the server's bucket, results under `dir/res`.
fn run_on(server: &S3Server, dir: &Path, preset: &str, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
    let res = dir.join("res");
    let out = dir.join("out.json");
    let endpoint = format!("s3.endpoint={}", server.endpoint());
    let target = format!("s3://{BUCKET}/e2e");
    let mut args = vec![
        "run",
        preset,
        "--quiet",
        "--target",
        &target,
        "--results",
        res.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--set",
        &endpoint,
    ];
    args.extend_from_slice(extra);
    let r = run_s3(dir, &args, &[]);
    let j = out.is_file().then(|| read_json(&out));
    (r, j)
}

#[test]
fn library_round_trip_put_multipart_ranges_list_delete() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let t = open_lib(&server, "rt");
    assert_eq!(t.info().kind, "s3");
    assert!(!t.info().caps.ranged_writes);
    // Single PUTs (≤ one 5 MiB part) and multipart uploads (12 MiB + 5: three parts).
    let sizes: [u64; 5] = [0, 1, 4097, (1 << 20) + 7, (12 << 20) + 5];
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("objs/obj{i}");
        let h = write_object(&t, &name, size);
        let (h2, len) = t.open(&name).unwrap().expect("object exists");
        assert_eq!((h2, len), (h, size), "{name}: logical size");
        let file = server.root().join(BUCKET).join("rt/mlpdrive").join(&name);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), size, "{name}: stored size on the server");
        if size == 0 {
            continue;
        }
        let mut whole = Vec::new();
        let mut off = 0;
        while off < size {
            let len = CHUNK.min(size - off) as u32;
            whole.push((off, len));
            off += u64::from(len);
        }
        let rep = read_ranges(&t, h, &name, &whole);
        assert_eq!(rep.errors.count, 0, "{name}: {:?}", rep.errors.first);
        assert!(rep.verify.is_ok(), "{name}: {:?}", rep.verify.first_error);
        assert_eq!(rep.verify.verified_bytes, size, "{name}: every byte verified");
        let mut ranges = vec![(size - 1, 1), (0, 1)];
        if size > 100 {
            ranges.push((13, (size - 13).min(70_000) as u32));
        }
        let want: u64 = ranges.iter().map(|r| u64::from(r.1)).sum();
        let rep = read_ranges(&t, h, &name, &ranges);
        assert_eq!(rep.errors.count, 0, "{name}: {:?}", rep.errors.first);
        assert_eq!(rep.verify.verified_bytes, want, "{name}: ranged bytes verified");
    }
    // One read larger than a part: split into concurrent ranged GETs.
    let big = "objs/obj4";
    let (h, size) = t.open(big).unwrap().unwrap();
    let align = t.info().caps.align;
    let req = Request {
        op: Op::Read { obj: h, offset: 0, len: size as u32 },
        data: Data::Verify(Expect { seed: SEED, object: datagen::object_key(big), generation: Some(0) }),
        key: key(OpKind::Read),
        exact: true,
    };
    let rep = crate::roundtrip::drive_with_buf(&t, vec![req], size as usize + align);
    assert_eq!(rep.errors.count, 0, "{:?}", rep.errors.first);
    assert_eq!(rep.verify.verified_bytes, size, "split GET verified");

    let listed = t.list("objs/").unwrap();
    assert_eq!(listed.len(), sizes.len(), "{listed:?}");
    for (i, &size) in sizes.iter().enumerate() {
        assert!(listed.contains(&(format!("objs/obj{i}"), size)), "{listed:?}");
    }
    let rec = t.record();
    assert_eq!(rec.multipart_uploads, 1, "{rec:?}");
    assert_eq!(rec.single_puts, 4, "{rec:?}");
    assert_eq!(rec.failed_requests, 0, "{rec:?}");
    let names: Vec<String> = (0..sizes.len()).map(|i| format!("objs/obj{i}")).collect();
    t.delete_many(&names).unwrap();
    assert!(t.list("objs/").unwrap().is_empty());
    assert!(t.open("objs/obj3").unwrap().is_none());
    assert!(server.open_uploads().is_empty(), "{:?}", server.open_uploads());
}

#[test]
fn an_unfinished_multipart_upload_is_aborted_when_the_target_finishes() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let t = open_lib(&server, "abort");
    // Two full 5 MiB parts go up; the object is never committed.
    let h = t.create("never-committed", 20 << 20).unwrap();
    let object = datagen::object_key("never-committed");
    let reqs: Vec<Request> = (0..10u64)
        .map(|i| Request {
            op: Op::Write { obj: h, offset: i * CHUNK, len: CHUNK as u32 },
            data: Data::Fill { object, seed: SEED, generation: 0 },
            key: key(OpKind::Write),
            exact: false,
        })
        .collect();
    let rep = drive(&t, reqs, None, false);
    assert_eq!(rep.errors.count, 0, "{:?}", rep.errors.first);
    // The part uploads are asynchronous: wait until the server holds the upload.
    let t0 = std::time::Instant::now();
    while server.open_uploads().is_empty() && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!server.open_uploads().is_empty(), "the multipart upload was started");
    let notes = t.finish();
    assert!(notes.iter().any(|n| n.contains("1 of 1 unfinished multipart upload(s) aborted")), "{notes:?}");
    assert_eq!(t.record().aborted_uploads, 1);
    assert!(server.open_uploads().is_empty(), "left behind: {:?}", server.open_uploads());
    assert!(!server.root().join(BUCKET).join("abort/mlpdrive/never-committed").exists(), "never committed");
}

#[test]
fn raw_reads_lay_out_a_multipart_object_and_verify_ranged_and_split_gets() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let common = ["--set", "s3.part_size=5MiB", "--set", "size=16MiB", "--set", "jobs=1", "--set", "queue_depth=8"];
    let mut args = common.to_vec();
    args.extend(["--set", "rw=randread", "--set", "block_size=4KiB", "--duration", "1s"]);
    let (r, j) = run_on(&server, d.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["target"]["kind"], "s3");
    assert_eq!(j["io_mode"]["engine"], "s3");
    let s3 = &j["target"]["s3"];
    assert_eq!(s3["multipart_uploads"], 1, "the 12 MiB layout went up as a multipart upload: {s3}");
    assert_eq!(s3["failed_requests"], 0, "{s3}");
    assert!(s3["requests"].as_u64().unwrap() > 10, "{s3}");
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["verify_errors"], 0);
    let stored = server.root().join(BUCKET).join("e2e/mlpdrive/raw/job0.dat");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), 16 << 20);

    // Reads larger than a part (split into concurrent ranged GETs), on the same object.
    let d2 = scratch();
    let mut args = common.to_vec();
    args.extend(["--set", "rw=read", "--set", "block_size=8MiB", "--set", "queue_depth=2", "--duration", "1s"]);
    let (r, j) = run_on(&server, d2.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["target"]["s3"]["multipart_uploads"], 0, "the laid-out object was reused: {j}");
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() >= 16 << 20, "{j}");

    // Writes into the middle of an object are refused before any request.
    let d3 = scratch();
    let (r, _) = run_on(&server, d3.path(), "raw-smoke", &[]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("config key `rw`") && r.stderr.contains("s3"), "{}", r.show());
    assert!(r.stderr.contains("rw=put"), "the error points to the object mode: {}", r.show());
    assert!(server.open_uploads().is_empty());
}

#[test]
fn kvcache_smoke_with_its_storage_tier_on_s3_lists_pages_and_deletes_in_batches() {
    let server = S3Server::start();
    let b = server.bucket(BUCKET);
    // 1005 stale entries: more than one LIST page and one DeleteObjects batch.
    let stale = b.join("e2e/mlpdrive/kvcache");
    std::fs::create_dir_all(&stale).unwrap();
    for i in 0..1005 {
        std::fs::write(stale.join(format!("stale{i:04}.npy")), b"x").unwrap();
    }
    let d = scratch();
    let (r, j) = run_on(&server, d.path(), "kvcache", &["--duration", "3s"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{}", j["errors"]);
    let notes = j["notes"].to_string();
    assert!(notes.contains("removed 1005 cache entries"), "{notes}");
    let left: Vec<_> = std::fs::read_dir(&stale)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stale"))
        .collect();
    assert!(left.is_empty(), "{} stale entries left", left.len());
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > 0, "storage-tier reads were verified: {j}");
    assert!(j["summary"]["requests_completed"].as_u64().unwrap() > 0);
}

#[test]
fn training_smoke_datagen_and_one_epoch_on_s3() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let endpoint = format!("s3.endpoint={}", server.endpoint());
    let target = format!("s3://{BUCKET}/e2e");
    let mut args = vec!["datagen", "training-smoke", "--quiet", "--target", &target, "--set", &endpoint];
    args.extend_from_slice(crate::training::SMALL);
    let g = run_s3(d.path(), &args, &[]);
    assert_eq!(g.code, 0, "{}", g.show());
    assert!(g.stdout.contains("40 files written, 0 kept"), "{}", g.show());
    let train = server.root().join(BUCKET).join("e2e/mlpdrive/data/training-smoke/train");
    let n = std::fs::read_dir(&train).map(|r| r.count()).unwrap_or(0);
    assert_eq!(n, 40, "train objects on the server");

    let mut args = vec!["--set", "train.epochs=1"];
    args.extend_from_slice(crate::training::SMALL);
    let (r, j) = run_on(&server, d.path(), "training-smoke", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    let set_bytes: u64 = std::fs::read_dir(&train).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    // Payload bytes are verified, container headers are counted unverified.
    let seen = j["verify"]["verified_bytes"].as_u64().unwrap() + j["verify"]["unverified_bytes"].as_u64().unwrap();
    assert_eq!(seen, set_bytes, "the epoch read the whole set: {j}");
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() > set_bytes * 9 / 10, "{j}");
    assert_eq!(j["verify_errors"], 0);
}

#[test]
fn checkpoint_smoke_writes_and_reads_back_on_s3() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let args = [
        "--set",
        "checkpoint.num_checkpoints_write=1",
        "--set",
        "checkpoint.num_checkpoints_read=1",
        "--set",
        "checkpoint.time_between_checkpoints=100ms",
    ];
    let (r, j) = run_on(&server, d.path(), "checkpoint", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    let bytes = j["summary"]["checkpoint_bytes"].as_u64().unwrap();
    assert_eq!(j["verify"]["verified_bytes"].as_u64().unwrap(), bytes, "every byte of the load verified: {j}");
    assert_eq!(j["verify"]["unverified_bytes"], 0);
    let s3 = &j["target"]["s3"];
    assert!(s3["multipart_uploads"].as_u64().unwrap() >= 4, "each shard is larger than a part: {s3}");
    let step = server.root().join(BUCKET).join("e2e/mlpdrive/checkpoints/smoke/global_epoch1_step1");
    let on_server: u64 = std::fs::read_dir(&step).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert_eq!(on_server, bytes);
    assert!(server.open_uploads().is_empty());
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn setup_errors_are_clear_usage_errors_without_credentials() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let res = d.path().join("res");
    let base = |target: &str, endpoint: &str| -> Vec<String> {
        vec![
            "run".into(),
            "raw".into(),
            "--quiet".into(),
            "--target".into(),
            target.into(),
            "--results".into(),
            res.display().to_string(),
            "--set".into(),
            format!("s3.endpoint={endpoint}"),
            "--set".into(),
            "rw=randread".into(),
        ]
    };
    let ok_target = format!("s3://{BUCKET}");

    // Nothing listens on port 1.
    let r = run_s3(d.path(), &argv(&base(&ok_target, "http://127.0.0.1:1")), &[]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("cannot connect to the S3 endpoint http://127.0.0.1:1"), "{}", r.show());

    let r = run_s3(d.path(), &argv(&base("s3://no-such-bucket", &server.endpoint())), &[]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("NoSuchBucket") && r.stderr.contains("s3.create_bucket=true"), "{}", r.show());

    let r = run_s3(
        d.path(),
        &argv(&base(&ok_target, &server.endpoint())),
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret-key-wrong-secret-key")],
    );
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("SignatureDoesNotMatch"), "{}", r.show());
    assert!(!r.stderr.contains("wrong-secret-key-wrong-secret-key"), "{}", r.show());

    let r = run_s3(
        d.path(),
        &argv(&base(&ok_target, &server.endpoint())),
        &[("AWS_ACCESS_KEY_ID", "UNKNOWNACCESSKEY0001")],
    );
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("access key") || r.stderr.contains("AccessDenied"), "{}", r.show());
    assert!(!r.stderr.contains("UNKNOWNACCESSKEY0001"), "the access key id is redacted:\n{}", r.show());
    assert!(!res.exists(), "a setup error writes no results");
}

#[test]
fn create_bucket_and_credentials_from_a_profile_of_the_shared_files() {
    let server = S3Server::start();
    let d = scratch();
    let creds = d.path().join("credentials");
    std::fs::write(
        &creds,
        format!("[bench]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    let mut c = aws_command(BIN, d.path());
    c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
    c.env("AWS_SHARED_CREDENTIALS_FILE", &creds).env("AWS_PROFILE", "bench");
    let endpoint = format!("s3.endpoint={}", server.endpoint());
    let res = d.path().join("res");
    c.args([
        "run",
        "raw",
        "--quiet",
        "--target",
        "s3://fresh-bucket/p",
        "--results",
        res.to_str().unwrap(),
        "--set",
        &endpoint,
        "--set",
        "s3.create_bucket=true",
        "--set",
        "rw=randread",
        "--set",
        "size=1MiB",
        "--duration",
        "1s",
    ]);
    let r = Run::from(c.output().unwrap());
    std::fs::remove_file(&creds).unwrap();
    assert_no_secrets(d.path(), &r);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(server.root().join("fresh-bucket/p/mlpdrive/raw/job0.dat").is_file());
    let j = read_json(&only_run_dir(&res).join("results.json"));
    assert_eq!(j["target"]["s3"]["credentials_source"], "default chain, profile bench", "{j}");
}

/// IAM Identity Center (SSO) profiles, both the `sso_session` form and the
/// legacy one, with no cached token (no `aws sso login` ran): a usage error
/// that names the profile and the command, before any request is sent.
#[test]
fn sso_profile_without_a_cached_token_says_to_run_aws_sso_login() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let config = d.path().join("config");
    std::fs::write(
        &config,
        "[profile modern]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = Bench\n\
         region = us-east-1\n\n[sso-session corp]\nsso_start_url = https://corp.awsapps.example/start\n\
         sso_region = us-east-1\nsso_registration_scopes = sso:account:access\n\n\
         [profile legacy]\nsso_start_url = https://corp.awsapps.example/start\nsso_region = us-east-1\n\
         sso_account_id = 111122223333\nsso_role_name = Bench\nregion = us-east-1\n",
    )
    .unwrap();
    let endpoint = format!("s3.endpoint={}", server.endpoint());
    let target = format!("s3://{BUCKET}");
    for (profile, how) in [("modern", "AWS_PROFILE"), ("legacy", "s3.profile")] {
        let res = d.path().join(format!("res-{profile}"));
        let mut c = aws_command(BIN, d.path());
        c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
        // An empty home: no ~/.aws/sso/cache.
        c.env("AWS_CONFIG_FILE", &config).env("HOME", d.path());
        c.args(["run", "raw", "--quiet", "--target", &target, "--results", res.to_str().unwrap()]);
        c.args(["--set", &endpoint, "--set", "rw=randread", "--set", "size=1MiB", "--duration", "1s"]);
        let profile_key = format!("s3.profile={profile}");
        if how == "AWS_PROFILE" {
            c.env("AWS_PROFILE", profile);
        } else {
            c.args(["--set", &profile_key]);
        }
        let t0 = std::time::Instant::now();
        let r = Run::from(c.output().unwrap());
        assert_eq!(r.code, 2, "{profile}: {}", r.show());
        assert!(r.stderr.contains(&format!("profile `{profile}`")), "{profile}: {}", r.show());
        assert!(r.stderr.contains(&format!("aws sso login --profile {profile}")), "{profile}: {}", r.show());
        assert!(r.stderr.contains("IAM Identity Center (SSO)"), "{profile}: {}", r.show());
        assert!(!res.exists(), "a setup error writes no results");
        assert!(t0.elapsed().as_secs() < 20, "{profile}: the error came only after {:?}", t0.elapsed());
        assert_no_secrets(d.path(), &r);
    }
}

#[test]
fn s3_keys_are_refused_for_other_targets_and_bad_values_name_the_key() {
    let d = scratch();
    let r = run_in(d.path(), "raw-smoke", &["--set", "s3.region=us-east-1"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("apply only to s3:// targets"), "{}", r.show());
    assert!(!d.path().join("data").exists() && !d.path().join("res").exists());
    let r = run_in(d.path(), "raw-smoke", &["--set", "s3.part_size=1MiB"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("s3.part_size"), "{}", r.show());
    let r = mlpdrive(d.path(), &["run", "raw", "--target", "s3://Bad_Bucket"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("not a valid bucket name"), "{}", r.show());
}

#[test]
fn throttled_requests_are_retried_and_counted() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let throttling = server.throttling_endpoint(5);
    let d = scratch();
    let args = [
        "--set",
        "rw=randread",
        "--set",
        "size=1MiB",
        "--set",
        "bytes=256KiB",
        "--set",
        "queue_depth=4",
        "--set",
        &format!("s3.endpoint={throttling}"),
    ];
    // run_on sets s3.endpoint first; the later --set wins.
    let (r, j) = run_on(&server, d.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    let s3 = &j["target"]["s3"];
    assert!(s3["throttled"].as_u64().unwrap() > 0, "{s3}");
    assert!(s3["retries"].as_u64().unwrap() >= s3["throttled"].as_u64().unwrap(), "{s3}");
    assert_eq!(s3["failed_requests"], 0, "every throttled request succeeded on a retry: {s3}");
    assert_eq!(j["verify_errors"], 0);
}

#[test]
fn requests_spread_over_several_endpoints() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    for select in ["round_robin", "least_connections"] {
        let d = scratch();
        let list = format!("s3.endpoints=[{},{}]", server.endpoint(), server.another_endpoint());
        let sel = format!("s3.endpoint_select={select}");
        let mut c = aws_command(BIN, d.path());
        let res = d.path().join("res");
        let out = d.path().join("out.json");
        c.args(["run", "raw", "--quiet", "--target", &format!("s3://{BUCKET}/multi"), "--results"])
            .arg(&res)
            .arg("--output")
            .arg(&out)
            .args(["--set", &list, "--set", &sel, "--set", "rw=randread", "--set", "size=1MiB"])
            .args(["--set", "bytes=400KiB", "--set", "queue_depth=8"]);
        let r = Run::from(c.output().unwrap());
        assert_no_secrets(d.path(), &r);
        assert_eq!(r.code, 0, "{}", r.show());
        let j = read_json(&out);
        let eps = j["target"]["s3"]["endpoints"].as_array().unwrap().clone();
        assert_eq!(eps.len(), 2, "{j}");
        let n: Vec<u64> = eps.iter().map(|e| e["requests"].as_u64().unwrap()).collect();
        assert!(n[0] > 10 && n[1] > 10, "{select}: {n:?}");
        if select == "round_robin" {
            assert!(n[0].abs_diff(n[1]) <= 2, "{select}: {n:?}");
        }
        assert_eq!(j["target"]["s3"]["endpoint_select"], select);
    }
}

#[test]
fn ctrl_c_during_a_multipart_upload_aborts_it() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let endpoint = format!("s3.endpoint={}", server.endpoint());
    let out = d.path().join("out.json");
    let mut c = aws_command(BIN, d.path());
    c.args(["run", "checkpoint", "--quiet", "--target", &format!("s3://{BUCKET}/int"), "--results"])
        .arg(d.path().join("res"))
        .arg("--output")
        .arg(&out)
        .args(["--set", &endpoint, "--set", "checkpoint.num_checkpoints_read=0"])
        .args(["--set", "checkpoint.num_checkpoints_write=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let t0 = std::time::Instant::now();
    while server.open_uploads().is_empty() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!server.open_uploads().is_empty(), "no multipart upload started");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let r = Run::from(child.wait_with_output().unwrap());
    assert_no_secrets(d.path(), &r);
    assert!(server.open_uploads().is_empty(), "left behind: {:?}\n{}", server.open_uploads(), r.show());
    let j = read_json(&out);
    assert_eq!(j["status"], "interrupted", "{j}");
    assert!(j["target"]["s3"]["aborted_uploads"].as_u64().unwrap() >= 1, "{}", j["target"]);
    assert!(j["notes"].to_string().contains("aborted"), "{}", j["notes"]);
}

/// The same S3 semantics on moto, a second implementation: a library round
/// trip (single PUTs, a multipart upload, ranges, a split GET, list,
/// batched delete), an unfinished upload aborted (checked with
/// ListMultipartUploads), a raw run with its bucket created, and a missing
/// bucket's error.
#[test]
fn moto_round_trip_abort_raw_run_and_missing_bucket() {
    let Some(moto) = Moto::start() else { return };
    let creds = StaticCredentials { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into() };
    let k = mlpdrive::config::s3::S3Keys {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        part_size: Some("5MiB".parse().unwrap()),
        create_bucket: Some(true),
        ..Default::default()
    };
    let spec = S3Spec { bucket: BUCKET.into(), prefix: "moto".into() };
    let t = S3Target::open_with(&spec, "s3://mlpdrive-test/moto", Some(&k), Some(&creds)).unwrap();
    let sizes: [u64; 3] = [1, (1 << 20) + 7, (11 << 20) + 3];
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("m/obj{i}");
        let h = write_object(&t, &name, size);
        let ranges = [(0, 1), (size - 1, 1), (size / 3, ((size - size / 3) as u32).min(100_000))];
        let rep = read_ranges(&t, h, &name, &ranges);
        assert_eq!(rep.errors.count, 0, "{name}: {:?}", rep.errors.first);
        assert!(rep.verify.is_ok() && rep.verify.verified_bytes > 0, "{name}: {:?}", rep.verify.first_error);
    }
    let (h, size) = t.open("m/obj2").unwrap().unwrap();
    assert_eq!(size, (11 << 20) + 3);
    let req = Request {
        op: Op::Read { obj: h, offset: 0, len: size as u32 },
        data: Data::Verify(Expect { seed: SEED, object: datagen::object_key("m/obj2"), generation: Some(0) }),
        key: key(OpKind::Read),
        exact: true,
    };
    let rep = crate::roundtrip::drive_with_buf(&t, vec![req], size as usize + 4096);
    assert_eq!(rep.verify.verified_bytes, size, "{:?}", rep.errors.first);
    assert_eq!(t.list("m/").unwrap().len(), 3);
    assert_eq!(t.record().multipart_uploads, 1);

    // An upload that is never committed is aborted at finish.
    let h = t.create("m/never", 20 << 20).unwrap();
    let object = datagen::object_key("m/never");
    let reqs: Vec<Request> = (0..10u64)
        .map(|i| Request {
            op: Op::Write { obj: h, offset: i * CHUNK, len: CHUNK as u32 },
            data: Data::Fill { object, seed: SEED, generation: 0 },
            key: key(OpKind::Write),
            exact: false,
        })
        .collect();
    assert_eq!(drive(&t, reqs, None, false).errors.count, 0);
    let notes = t.finish();
    assert!(notes.iter().any(|n| n.contains("1 of 1 unfinished multipart upload(s) aborted")), "{notes:?}");
    assert_eq!(moto_open_uploads(&moto), 0, "moto still lists the upload");
    let names: Vec<String> = (0..3).map(|i| format!("m/obj{i}")).collect();
    t.delete_many(&names).unwrap();
    assert!(t.list("m/").unwrap().is_empty());
    drop(t);

    // The CLI on moto: a raw run whose bucket it creates, then a missing bucket.
    let d = scratch();
    let endpoint = format!("s3.endpoint={}", moto.endpoint());
    let r = run_s3(
        d.path(),
        &["run", "raw", "--quiet", "--target", "s3://moto-raw/x", "--results", "res", "--set", &endpoint]
            .into_iter()
            .chain(["--set", "s3.create_bucket=true", "--set", "rw=randread", "--set", "size=6MiB"])
            .chain(["--set", "s3.part_size=5MiB", "--duration", "1s"])
            .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let j = read_json(&only_run_dir(&d.path().join("res")).join("results.json"));
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["target"]["s3"]["multipart_uploads"], 1, "{}", j["target"]);
    let r = run_s3(d.path(), &["run", "raw", "--quiet", "--target", "s3://moto-missing", "--set", &endpoint], &[]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("NoSuchBucket"), "{}", r.show());
}

/// ListMultipartUploads on moto's test bucket, with the SDK directly.
fn moto_open_uploads(moto: &Moto) -> usize {
    moto_open_uploads_in(moto, BUCKET)
}

/// ListMultipartUploads on one of moto's buckets.
fn moto_open_uploads_in(moto: &Moto, bucket: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let creds = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .force_path_style(true)
            .credentials_provider(creds)
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        let c = aws_sdk_s3::Client::from_conf(conf);
        let out = c.list_multipart_uploads().bucket(bucket).send().await.expect("ListMultipartUploads");
        out.uploads().len()
    })
}

#[test]
fn the_op_log_has_one_row_per_request() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let log = d.path().join("ops.csv");
    let set_log = format!("s3.op_log={}", log.display());
    let args = ["--set", "rw=randread", "--set", "size=1MiB", "--set", "bytes=64KiB", "--set", &set_log];
    let (r, j) = run_on(&server, d.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(mlpdrive::target::s3::stats::OP_LOG_HEADER));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // Every request but the setup check (one LIST before the run) is logged.
    let requests = j["target"]["s3"]["requests"].as_u64().unwrap();
    assert_eq!(rows.len() as u64, requests - 1, "{text}");
    let gets: Vec<_> = rows.iter().filter(|r| r[1] == "GET").collect();
    assert_eq!(gets.len(), 16, "64 KiB of 4 KiB reads: {text}");
    for r in &rows {
        assert_eq!(r.len(), 7, "{r:?}");
        assert!(r[0].parse::<u64>().unwrap() > 1_700_000_000_000_000, "start is Unix µs: {r:?}");
        assert!(r[4].parse::<u64>().is_ok() && r[5] == "ok" && r[6] == "0", "{r:?}");
    }
    assert!(gets.iter().all(|r| r[2] == "e2e/mlpdrive/raw/job0.dat" && r[3] == "4096"), "{gets:?}");
    assert!(rows.iter().any(|r| r[1] == "PUT" && r[3] == "1048576"), "the layout PUT: {text}");

    assert!(rows.iter().all(|r| r[1] != "PUT" || r[2] == "e2e/mlpdrive/raw/job0.dat"), "{text}");
}

/// The object mode's figures of `rw` from a results.json, checked for the
/// shape every object run has.
fn object_figures<'a>(j: &'a serde_json::Value, op: &str) -> &'a serde_json::Value {
    let o = &j["summary"][op];
    assert!(o["ops"].is_u64() && o["bytes_per_s"].is_f64() && o["latency_us"]["p99"].is_f64(), "{o}");
    o
}

const OBJ6: u64 = 6 << 20;

#[test]
fn raw_object_mode_puts_gets_verified_and_mixes_whole_objects_on_s3s() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    // Six-MiB objects with 5 MiB parts: each PUT is a multipart upload, each
    // GET two ranged GETs.
    let base = ["--set", "s3.part_size=5MiB", "--set", "object_size=6MiB", "--set", "objects=4"];
    let mut args = base.to_vec();
    args.extend(["--set", "rw=put", "--set", "concurrency=2", "--set", "bytes=24MiB", "--duration", "60s"]);
    let (r, j) = run_on(&server, d.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    let put = object_figures(&j, "put");
    assert_eq!(put["ops"], 4, "each object PUT once: {put}");
    assert_eq!(put["bytes"], 4 * OBJ6);
    assert_eq!(j["summary"]["get"]["ops"], 0);
    let s3 = &j["target"]["s3"];
    assert_eq!(s3["multipart_uploads"], 4, "{s3}");
    assert_eq!((s3["retries"].as_u64(), s3["failed_requests"].as_u64()), (Some(0), Some(0)), "{s3}");
    let series: Vec<(&str, &str, u64)> = j["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["phase"].as_str().unwrap(), s["op"].as_str().unwrap(), s["ops"].as_u64().unwrap()))
        .collect();
    assert!(series.contains(&("object", "write", 4)), "{series:?}");
    assert!(series.contains(&("measure", "commit", 4)), "{series:?}");
    for i in 0..4 {
        let f = server.root().join(BUCKET).join(format!("e2e/mlpdrive/raw/objects/obj{i:08}"));
        assert_eq!(std::fs::metadata(&f).unwrap().len(), OBJ6, "{}", f.display());
    }
    assert!(j["config"]["queue_depth"].is_null() && j["config"]["concurrency"] == 2, "{}", j["config"]);
    let schema = include_str!("../../docs/results-schema.md");
    for k in j["summary"].as_object().unwrap().keys() {
        assert!(schema.contains(&format!("`summary.{k}`")), "summary.{k} is not in docs/results-schema.md");
    }

    // GETs reuse the PUT objects (nothing prepared) and verify every byte.
    let d2 = scratch();
    let mut args = base.to_vec();
    args.extend(["--set", "rw=get", "--set", "concurrency=3", "--set", "bytes=48MiB", "--duration", "60s"]);
    let (r, j) = run_on(&server, d2.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["summary"]["prepared_objects"], 0, "{j}");
    let get = object_figures(&j, "get");
    assert_eq!(get["ops"], 8, "{get}");
    assert_eq!(j["verify"]["verified_bytes"], 8 * OBJ6, "every GET byte verified: {j}");
    assert_eq!(j["verify_errors"], 0);
    assert_eq!(j["target"]["s3"]["multipart_uploads"], 0);

    // A mix of both on the same objects.
    let d3 = scratch();
    let mut args = base.to_vec();
    args.extend(["--set", "rw=mixed", "--set", "rwmix_read=50", "--set", "concurrency=4", "--duration", "1s"]);
    let (r, j) = run_on(&server, d3.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    let (puts, gets) =
        (object_figures(&j, "put")["ops"].as_u64().unwrap(), object_figures(&j, "get")["ops"].as_u64().unwrap());
    assert!(puts > 0 && gets > 0, "both ops ran: {}", j["summary"]);
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() >= gets * OBJ6, "{j}");
    assert_eq!(j["verify_errors"], 0);
    assert!(server.open_uploads().is_empty(), "{:?}", server.open_uploads());

    // A damaged byte in the middle of an object (the prepare check reads
    // only the first block) is a verification error, and the run fails.
    let f = server.root().join(BUCKET).join("e2e/mlpdrive/raw/objects/obj00000001");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[(5 << 20) + 77] ^= 0x40;
    std::fs::write(&f, &bytes).unwrap();
    let d5 = scratch();
    let mut args = base.to_vec();
    args.extend(["--set", "rw=get", "--set", "concurrency=1", "--set", "bytes=12MiB"]);
    let (r, j) = run_on(&server, d5.path(), "raw", &args);
    assert_eq!(r.code, 1, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "failed", "{j}");
    assert!(j["verify_errors"].as_u64().unwrap() >= 1, "{j}");
    assert!(j["verify"]["first"].as_str().unwrap().contains("corrupt"), "{}", j["verify"]);
    // Objects of an odd size, missing at first: the prepare phase PUTs them
    // (one PutObject each), then every GET is verified.
    let d4 = scratch();
    let args = ["--set", "rw=get", "--set", "object_size=1000003", "--set", "objects=3", "--set", "bytes=6000018"];
    let (r, j) = run_on(&server, d4.path(), "raw", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["summary"]["prepared_objects"], 3, "{j}");
    assert_eq!(j["target"]["s3"]["single_puts"], 3, "{}", j["target"]["s3"]);
    assert_eq!(object_figures(&j, "get")["ops"], 6);
    assert_eq!(j["verify"]["verified_bytes"], 6 * 1_000_003u64, "{j}");
}

#[test]
fn raw_object_mode_bad_input_is_refused_before_any_request() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let cases: &[(&[&str], &[&str])] = &[
        (&["rw=put", "queue_depth=8"], &["config key `queue_depth`", "concurrency"]),
        (&["rw=get", "size=1GiB"], &["config key `size`", "object_size"]),
        (&["rw=put", "concurrency=0"], &["config key `concurrency`", "≥ 1"]),
        (&["rw=put", "object_size=0"], &["config key `object_size`"]),
        (&["rw=put", "objects=0"], &["config key `objects`"]),
        (&["rw=put", "rwmix_read=30"], &["config key `rwmix_read`", "mixed"]),
        (&["rw=put", "object_size=1GiB", "block_size=1GiB", "concurrency=64"], &["config key `concurrency`", "8GiB"]),
        (&["rw=randread", "objects=4"], &["config key `objects`", "object mode"]),
        (&["rw=put", "bytes=1KiB"], &["config key `bytes`", "one object"]),
        (&["rw=randwrite"], &["config key `rw`", "rw=put"]),
        (&["rw=write"], &["config key `rw`", "rw=put"]),
    ];
    for (sets, want) in cases {
        let mut args = Vec::new();
        for s in *sets {
            args.extend(["--set", s]);
        }
        let (r, j) = run_on(&server, d.path(), "raw", &args);
        assert_eq!(r.code, 2, "{sets:?}: {}", r.show());
        if !sets[0].ends_with("write") {
            assert!(j.is_none(), "{sets:?}: a config error writes no results");
        }
        for w in *want {
            assert!(r.stderr.contains(w), "{sets:?}: expected {w:?} in: {}", r.show());
        }
    }
    assert!(!server.root().join(BUCKET).join("e2e").exists(), "nothing was written");
}

#[test]
fn moto_raw_object_mode_put_get_and_mixed() {
    let Some(moto) = Moto::start() else { return };
    let d = scratch();
    let endpoint = format!("s3.endpoint={}", moto.endpoint());
    let run = |dir: &Path, rw: &str, extra: &[&str]| {
        std::fs::create_dir_all(dir).unwrap();
        let res = dir.join("res");
        let mut args = vec!["run", "raw", "--quiet", "--target", "s3://moto-obj/p", "--results", res.to_str().unwrap()];
        args.extend(["--set", &endpoint, "--set", "s3.create_bucket=true", "--set", "s3.part_size=5MiB"]);
        args.extend(["--set", "object_size=6MiB", "--set", "objects=3", "--set", "concurrency=3"]);
        let rw = format!("rw={rw}");
        args.extend(["--set", &rw]);
        args.extend_from_slice(extra);
        let r = run_s3(dir, &args, &[]);
        assert_eq!(r.code, 0, "{rw}: {}", r.show());
        let j = read_json(&only_run_dir(&res).join("results.json"));
        assert_eq!(j["status"], "ok", "{rw}: {j}");
        j
    };
    let j = run(&d.path().join("put"), "put", &["--set", "bytes=18MiB", "--duration", "60s"]);
    assert_eq!(object_figures(&j, "put")["ops"], 3, "{}", j["summary"]);
    assert_eq!(j["target"]["s3"]["multipart_uploads"], 3);
    let j = run(&d.path().join("get"), "get", &["--set", "bytes=36MiB", "--duration", "60s"]);
    assert_eq!(j["summary"]["prepared_objects"], 0, "the PUT objects are reused: {j}");
    assert_eq!(object_figures(&j, "get")["ops"], 6);
    assert_eq!(j["verify"]["verified_bytes"], 6 * OBJ6, "{j}");
    let j = run(&d.path().join("mixed"), "mixed", &["--duration", "1s"]);
    let (puts, gets) =
        (object_figures(&j, "put")["ops"].as_u64().unwrap(), object_figures(&j, "get")["ops"].as_u64().unwrap());
    assert!(puts + gets > 0, "{}", j["summary"]);
    assert_eq!(j["verify_errors"], 0);
    assert_eq!(moto_open_uploads_in(&moto, "moto-obj"), 0);
}

#[test]
fn vdb_smoke_writes_its_index_and_searches_it_on_s3() {
    let server = S3Server::start();
    server.bucket(BUCKET);
    let d = scratch();
    let (r, j) = run_on(&server, d.path(), "vdb/vdb-smoke", crate::vdb::SMALL);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = j.unwrap();
    assert_eq!(j["status"], "ok", "{j}");
    let s = &j["summary"];
    assert_eq!(s["queries"], 100);
    assert!(s["recall_at_k"].as_f64().unwrap() >= 0.8, "{s}");
    let index = server.root().join(BUCKET).join("e2e/mlpdrive/vdb/index_disk.index");
    assert_eq!(std::fs::metadata(&index).unwrap().len(), s["index_bytes"].as_u64().unwrap());
    assert!(server.open_uploads().is_empty());
}
