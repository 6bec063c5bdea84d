//! The training workload end to end: datagen of a small smoke set on a real
//! O_DIRECT file target, the files read by numpy, a resumed datagen that
//! keeps them, a run with DLIO's metrics, and a DLIO workload YAML run
//! as is.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// A small smoke set: 40 files of ~64 KiB, 2 accelerators, 20 steps.
pub(crate) const SMALL: &[&str] = &[
    "--set",
    "dataset.num_files_train=40",
    "--set",
    "dataset.record_length_bytes=65536",
    "--set",
    "dataset.record_length_bytes_stdev=16384",
    "--set",
    "train.computation_time=0.002",
    "--set",
    "allow_short_epochs=true",
];

fn datagen(dir: &Path, preset: &str, extra: &[&str]) -> Run {
    let target = format!("file://{}", dir.join("data").display());
    let mut args = vec!["datagen", preset, "--quiet", "--target", &target];
    args.extend_from_slice(extra);
    mlpdrive(dir, &args)
}

fn train_files(dir: &Path, folder: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("data/mlpdrive").join(folder).join("train"))
        .expect("train folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

#[test]
fn smoke_datagen_numpy_resume_and_run() {
    let d = scratch();
    let g = datagen(d.path(), "training-smoke", SMALL);
    assert_eq!(g.code, 0, "{}", g.show());
    assert!(g.stdout.contains("40 files written, 0 kept"), "{}", g.show());
    let files = train_files(d.path(), "data/training-smoke");
    assert_eq!(files.len(), 40);
    assert!(files[0].ends_with("img_00_of_40.npz"), "{files:?}");

    // numpy reads the files with the expected shape (uint8 (dim1, dim2, 1)),
    // and zipfile's CRC check passes.
    let script = "import sys, zipfile, numpy\n\
                  for f in sys.argv[1:]:\n\
                  \x20   assert zipfile.ZipFile(f).testzip() is None, f\n\
                  \x20   d = numpy.load(f)\n\
                  \x20   x = d['x']\n\
                  \x20   assert x.dtype == numpy.uint8 and x.ndim == 3 and x.shape[2] == 1, x.shape\n\
                  \x20   assert d['y'].shape == (1,)\n\
                  \x20   print(x.shape[0] * x.shape[1])\n";
    let out = Command::new("python3").arg("-c").arg(script).args(&files[..5]).output();
    match out {
        Ok(o) if o.status.success() => {
            let sizes: Vec<u64> =
                String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().parse().unwrap()).collect();
            assert_eq!(sizes.len(), 5);
            // The samples fill the file apart from ~400 bytes of zip and npy headers.
            for (f, s) in files.iter().zip(&sizes) {
                let len = std::fs::metadata(f).unwrap().len();
                assert!(len > *s && len - s < 600, "{f:?}: {len} vs {s}");
            }
        }
        Ok(o) => panic!("numpy could not load the npz files:\n{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("python3 is needed for this test (.ci/run installs numpy): {e}"),
    }

    // A second datagen keeps every file; a damaged one is rewritten.
    let f3 = &files[3];
    let mut bytes = std::fs::read(f3).unwrap();
    bytes[2] ^= 0xff;
    std::fs::write(f3, &bytes).unwrap();
    let g = datagen(d.path(), "training-smoke", SMALL);
    assert_eq!(g.code, 0, "{}", g.show());
    assert!(g.stdout.contains("1 files written, 39 kept"), "{}", g.show());

    // The run: 2 accelerators × 20 steps × 2 epochs, every byte verified.
    let mut args = vec!["--set", "train.epochs=2"];
    args.extend_from_slice(SMALL);
    let r = run_in(d.path(), "training-smoke", &args);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = read_json(&only_run_dir(&d.path().join("res")).join("results.json"));
    assert_eq!(j["workload"], "training");
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["io_mode"]["direct"], true);
    let s = &j["summary"];
    assert_eq!(s["steps_per_epoch"], 20);
    assert_eq!(s["valid"], false, "20 steps per epoch is below the rules' 500");
    let m = &s["metric"];
    assert_eq!(m["train_au_percentage"].as_array().unwrap().len(), 2);
    assert!(m["train_au_mean_percentage"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["train_throughput_mean_samples_per_second"].as_f64().unwrap() > 0.0, "{m}");
    assert!(["success", "fail"].contains(&m["train_au_meet_expectation"].as_str().unwrap()));
    // Every epoch read the whole set (40 files, each read whole once).
    let set_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    for e in s["measured"]["per_epoch"].as_array().unwrap() {
        let read = e["bytes_read"].as_u64().unwrap();
        assert!(read >= set_bytes && read < set_bytes + 40 * 4096, "{read} vs {set_bytes}");
    }
    assert!(j["verify"]["verified_bytes"].as_u64().unwrap() >= set_bytes, "{j}");
    assert_eq!(j["verify_errors"], 0);
    assert!(s["measured"]["batch_load_latency_us"]["count"].as_u64().unwrap() == 80);
    assert!(s["measured"]["read"]["latency_us"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn short_epochs_are_refused_unless_allowed() {
    let d = scratch();
    let r = run_in(d.path(), "training-smoke", &["--set", "dataset.num_files_train=40"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("below the rules' minimum of 500"), "{}", r.show());
    assert!(r.stderr.contains("allow_short_epochs"), "{}", r.show());
}

#[test]
fn a_missing_data_set_names_the_file_and_the_fix() {
    let d = scratch();
    let r = run_in(d.path(), "training-smoke", SMALL);
    assert_eq!(r.code, 1, "{}", r.show());
    assert!(r.stdout.contains("is missing") || r.stderr.contains("is missing"), "{}", r.show());
    assert!(r.stdout.contains("mlpdrive datagen") || r.stderr.contains("mlpdrive datagen"), "{}", r.show());
}

/// A DLIO workload YAML in MLPerf Storage's shape, with keys mlpdrive does
/// not use: it runs as is, and the unused keys are reported.
#[test]
fn dlio_workload_yaml_runs_as_is() {
    let d = scratch();
    let yaml = d.path().join("tiny_resnet.yaml");
    std::fs::write(
        &yaml,
        "model:\n  name: resnet50\n  type: cnn\nframework: tensorflow\n\
         workflow:\n  generate_data: False\n  train: True\n\
         dataset:\n  num_files_train: 4\n  num_samples_per_file: 20\n  record_length_bytes: 16384\n\
         \x20 data_folder: data/resnet50\n  format: tfrecord\n\
         train:\n  computation_time: 0.001\n  epochs: 1\n\
         reader:\n  data_loader: tensorflow\n  read_threads: 2\n  computation_threads: 2\n  batch_size: 4\n\
         \x20 dont_use_mmap: True\n\
         metric:\n  au: 0.90\nprofiling:\n  profiler: none\n",
    )
    .unwrap();
    let y = yaml.to_str().unwrap();
    let g = datagen(d.path(), y, &[]);
    assert_eq!(g.code, 0, "{}", g.show());
    let files = train_files(d.path(), "data/resnet50");
    assert_eq!(files.len(), 4);
    // TFRecord framing: 16 bytes around each 128 × 128 Example.
    let rec = std::fs::read(&files[0]).unwrap();
    let n = u64::from_le_bytes(rec[..8].try_into().unwrap());
    assert_eq!(rec.len() as u64, 20 * (n + 16));
    let r = run_in(d.path(), y, &["--set", "allow_short_epochs=true"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = read_json(&only_run_dir(&d.path().join("res")).join("results.json"));
    let notes = j["notes"].to_string();
    assert!(notes.contains("reader.dont_use_mmap") && notes.contains("profiling"), "{notes}");
    assert_eq!(j["summary"]["format"], "tfrecord");
    assert_eq!(j["verify_errors"], 0);
}

#[test]
fn datasize_prints_the_rule() {
    let d = scratch();
    let r = mlpdrive(
        d.path(),
        &["datasize", "training/unet3d_h100", "--client-memory-gib", "256", "--hosts", "1", "--accelerators", "8"],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("num_files_train: 28000"), "{}", r.show());
    let r = mlpdrive(d.path(), &["datasize", "training/unet3d_h100"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("--client-memory-gib"), "{}", r.show());
}
