//! Keys of the `training` workload: the sections of a DLIO workload YAML
//! (`model`, `framework`, `workflow`, `dataset`, `reader`, `train`,
//! `checkpoint`, `metric`) plus mlpdrive's own keys (`accelerators`,
//! `shuffle_mode`, `reader_queue_depth`, `allow_short_epochs`,
//! `dlio_v2_throughput`).
//!
//! A DLIO workload YAML as shipped by MLPerf Storage has no `workload` key;
//! [`import_dlio`] recognises it by its shape, adds `workload: training`,
//! and moves every key mlpdrive does not use into `dlio_unused_keys`, which
//! the run reports in its notes and on stderr (never silently ignored).

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use super::errors::key_error;
use super::{RunConfig, workload_config};
use crate::error::Error;
use crate::units::ByteSize;

/// Minimum steps per epoch (the rules' `STEPS_PER_EPOCH`): fewer let the
/// excluded step 0 absorb most of the I/O, so AU means nothing.
pub const MIN_STEPS_PER_EPOCH: u64 = 500;
/// Default request size of whole-file formats (npz, npy, jpeg).
pub const DEFAULT_WHOLE_FILE_REQUEST_BYTES: u64 = 4 << 20;
/// Default request size of tfrecord reads (TF's 256 KiB read buffer).
pub const DEFAULT_TFRECORD_REQUEST_BYTES: u64 = 256 << 10;
/// Largest request size (one I/O buffer per reader slot).
pub const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// The on-disk formats of `dataset.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Npz,
    Npy,
    Tfrecord,
    Jpeg,
    Png,
    Parquet,
}

impl Format {
    pub const NAMES: &'static [&'static str] = &["npz", "npy", "tfrecord", "jpeg", "png", "parquet"];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Npz => "npz",
            Format::Npy => "npy",
            Format::Tfrecord => "tfrecord",
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Parquet => "parquet",
        }
    }

    /// File name extension (DLIO names files `img_<i>_of_<N>.<format>`).
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    /// Whole-file formats are read start to end per sample file.
    pub fn is_whole_file(self) -> bool {
        !matches!(self, Format::Tfrecord | Format::Parquet)
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Ok(match s {
            "npz" => Format::Npz,
            "npy" => Format::Npy,
            "tfrecord" => Format::Tfrecord,
            "jpeg" | "jpg" => Format::Jpeg,
            "png" => Format::Png,
            "parquet" => Format::Parquet,
            other => return Err(format!("expected one of {}, got '{other}'", Format::NAMES.join(", "))),
        })
    }
}

impl Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        super::deserialize_from_str(d, Format::NAMES)
    }
}

/// How samples are assigned to accelerators across epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShuffleMode {
    /// A seeded permutation of the files every epoch (seed + epoch), split
    /// into contiguous per-accelerator shards: each epoch really reads in a
    /// new order and reshards (what `file_shuffle: seed` promises).
    Epoch,
    /// DLIO v2.0's measured behaviour: accelerator r reads the same
    /// contiguous block of files in ascending order every epoch.
    Fixed,
}

/// `train.computation_time`: seconds per batch, fixed or a distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ComputeTime {
    Fixed(f64),
    MeanStdev {
        mean: f64,
        #[serde(default)]
        stdev: f64,
    },
    Dist(ComputeDist),
}

/// `{type: normal|uniform|exponential, …}` (DLIO's dict form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ComputeDist {
    Normal {
        mean: f64,
        #[serde(default)]
        stdev: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    Exponential {
        mean: f64,
    },
}

impl ComputeTime {
    /// Mean seconds per batch.
    pub fn mean_s(&self) -> f64 {
        match self {
            ComputeTime::Fixed(s) => *s,
            ComputeTime::MeanStdev { mean, .. } => *mean,
            ComputeTime::Dist(ComputeDist::Normal { mean, .. } | ComputeDist::Exponential { mean }) => *mean,
            ComputeTime::Dist(ComputeDist::Uniform { min, max }) => (min + max) / 2.0,
        }
    }

    /// One draw in seconds (never negative).
    pub fn sample_s(&self, rng: &mut mlpdrive_emu::Prng) -> f64 {
        let s = match self {
            ComputeTime::Fixed(s) => *s,
            ComputeTime::MeanStdev { mean, stdev } | ComputeTime::Dist(ComputeDist::Normal { mean, stdev }) => {
                mean + stdev * rng.standard_normal()
            }
            ComputeTime::Dist(ComputeDist::Uniform { min, max }) => min + (max - min) * rng.next_f64(),
            ComputeTime::Dist(ComputeDist::Exponential { mean }) => -mean * rng.next_f64_open().ln(),
        };
        s.max(0.0)
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |what: &str| {
            Err(key_error(
                "train.computation_time",
                format!(
                    "{what}; give seconds per batch like 0.323, {{mean: 0.3, stdev: 0.01}} or {{type: uniform, min: 0.2, max: 0.4}}"
                ),
            ))
        };
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        match self {
            ComputeTime::Fixed(s) if !ok(*s) => bad("must be a finite number of seconds ≥ 0"),
            ComputeTime::MeanStdev { mean, stdev } | ComputeTime::Dist(ComputeDist::Normal { mean, stdev })
                if !ok(*mean) || !ok(*stdev) =>
            {
                bad("mean and stdev must be finite and ≥ 0")
            }
            ComputeTime::Dist(ComputeDist::Uniform { min, max }) if !ok(*min) || !ok(*max) || min > max => {
                bad("uniform needs 0 ≤ min ≤ max")
            }
            ComputeTime::Dist(ComputeDist::Exponential { mean }) if !ok(*mean) => bad("mean must be finite and ≥ 0"),
            _ => Ok(()),
        }
    }
}

/// `model`: recorded; `model_size_bytes` is what DLIO reads (see docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_size_bytes: Option<u64>,
}

/// `workflow`: which phases DLIO would run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowKeys {
    #[serde(default)]
    pub generate_data: bool,
    #[serde(default = "yes")]
    pub train: bool,
    #[serde(default)]
    pub checkpoint: bool,
}

fn yes() -> bool {
    true
}

/// `dataset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetKeys {
    /// Object prefix of the dataset inside the target.
    #[serde(default = "default_data_folder")]
    pub data_folder: String,
    pub format: Format,
    pub num_files_train: u64,
    #[serde(default)]
    pub num_files_eval: u64,
    #[serde(default = "one")]
    pub num_samples_per_file: u64,
    pub record_length_bytes: f64,
    #[serde(default)]
    pub record_length_bytes_stdev: f64,
    /// Size of the tensor DLIO hands to the "GPU" (recorded, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_length_bytes_resize: Option<f64>,
    #[serde(default)]
    pub num_subfolders_train: u64,
    #[serde(default)]
    pub num_subfolders_eval: u64,
}

fn default_data_folder() -> String {
    "data".into()
}

fn one() -> u64 {
    1
}

/// `reader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loader: Option<String>,
    pub batch_size: u64,
    #[serde(default = "one_u32")]
    pub read_threads: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computation_threads: Option<u32>,
    #[serde(default = "two")]
    pub prefetch_size: u32,
    /// Bytes per read request (default: 256 KiB for tfrecord, 4 MiB for
    /// whole-file formats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_size: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_shuffle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_shuffle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_size: Option<u64>,
    /// DLIO's O_DIRECT switch; mlpdrive always follows `io.direct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odirect: Option<bool>,
}

fn one_u32() -> u32 {
    1
}

fn two() -> u32 {
    2
}

/// `train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainKeys {
    #[serde(default = "one_u32")]
    pub epochs: u32,
    pub computation_time: ComputeTime,
}

/// `metric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricKeys {
    /// AU pass threshold as a fraction (0.90 = 90 %).
    #[serde(default = "default_au")]
    pub au: f64,
}

fn default_au() -> f64 {
    0.9
}

/// `checkpoint`: accepted and recorded; a training run writes no
/// checkpoint (the `checkpoint` workload does that).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_after_epoch: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_between_checkpoints: Option<u32>,
}

/// The `training` workload's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default)]
    pub model: ModelKeys,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    #[serde(default)]
    pub workflow: WorkflowKeys,
    pub dataset: DatasetKeys,
    pub reader: ReaderKeys,
    pub train: TrainKeys,
    #[serde(default = "default_metric")]
    pub metric: MetricKeys,
    #[serde(default)]
    pub checkpoint: CheckpointKeys,
    /// Simulated accelerators on this host (DLIO: MPI ranks).
    #[serde(default = "one_u32")]
    pub accelerators: u32,
    #[serde(default = "default_shuffle_mode")]
    pub shuffle_mode: ShuffleMode,
    /// Read requests in flight per reader (DLIO's buffered and TF readers
    /// have one).
    #[serde(default = "one_u32")]
    pub reader_queue_depth: u32,
    /// Run epochs shorter than 500 steps; the results are marked invalid.
    #[serde(default)]
    pub allow_short_epochs: bool,
    /// Throughput with DLIO v2.0's `(N - 2) × batch` count instead of the
    /// `(N - 1) × batch` samples really timed.
    #[serde(default)]
    pub dlio_v2_throughput: bool,
    /// Keys of an imported DLIO YAML that mlpdrive does not use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dlio_unused_keys: Vec<String>,
}

fn default_metric() -> MetricKeys {
    MetricKeys { au: default_au() }
}

fn default_shuffle_mode() -> ShuffleMode {
    ShuffleMode::Epoch
}

impl TrainingConfig {
    /// Deserializes and validates the workload keys.
    pub fn from_run_config(cfg: &RunConfig) -> Result<TrainingConfig, Error> {
        let t: TrainingConfig = workload_config(cfg)?;
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<(), Error> {
        let d = &self.dataset;
        if d.num_files_train == 0 {
            return Err(key_error("dataset.num_files_train", "must be at least 1"));
        }
        if d.num_samples_per_file == 0 {
            return Err(key_error("dataset.num_samples_per_file", "must be at least 1"));
        }
        if !(d.record_length_bytes.is_finite() && d.record_length_bytes >= 1.0) {
            return Err(key_error("dataset.record_length_bytes", "must be a number of bytes ≥ 1"));
        }
        if !(d.record_length_bytes_stdev.is_finite() && d.record_length_bytes_stdev >= 0.0) {
            return Err(key_error("dataset.record_length_bytes_stdev", "must be a number of bytes ≥ 0"));
        }
        check_folder(&d.data_folder)?;
        if self.reader.batch_size == 0 {
            return Err(key_error("reader.batch_size", "must be at least 1"));
        }
        if self.reader.read_threads == 0 || self.reader.read_threads > 256 {
            return Err(key_error("reader.read_threads", "must be between 1 and 256"));
        }
        if self.reader.prefetch_size == 0 {
            return Err(key_error("reader.prefetch_size", "must be at least 1"));
        }
        if self.accelerators == 0 || self.accelerators > 1024 {
            return Err(key_error("accelerators", "must be between 1 and 1024"));
        }
        if self.reader_queue_depth == 0 || self.reader_queue_depth > 64 {
            return Err(key_error("reader_queue_depth", "must be between 1 and 64"));
        }
        if let Some(t) = self.reader.transfer_size
            && (t.0 == 0 || t.0 > MAX_REQUEST_BYTES)
        {
            return Err(key_error("reader.transfer_size", "must be between 1 byte and 64 MiB"));
        }
        if self.train.epochs == 0 {
            return Err(key_error("train.epochs", "must be at least 1"));
        }
        self.train.computation_time.check()?;
        if !(self.metric.au > 0.0 && self.metric.au <= 1.0) {
            return Err(key_error("metric.au", "is a fraction in (0, 1], like 0.90"));
        }
        Ok(())
    }

    /// Samples in the training set.
    pub fn total_samples(&self) -> u64 {
        self.dataset.num_files_train * self.dataset.num_samples_per_file
    }

    /// Steps per epoch per accelerator (`drop_last`).
    pub fn steps_per_epoch(&self) -> u64 {
        self.total_samples() / self.reader.batch_size / u64::from(self.accelerators)
    }

    /// Bytes per read request.
    pub fn request_bytes(&self) -> u64 {
        self.reader.transfer_size.map_or(
            if self.dataset.format.is_whole_file() {
                DEFAULT_WHOLE_FILE_REQUEST_BYTES
            } else {
                DEFAULT_TFRECORD_REQUEST_BYTES
            },
            |t| t.0,
        )
    }

    /// Batches a DataLoader has in flight: `read_threads × ceil(prefetch_size / read_threads)`.
    pub fn batches_in_flight(&self) -> u64 {
        let w = u64::from(self.reader.read_threads);
        w * u64::from(self.reader.prefetch_size).div_ceil(w)
    }
}

/// `dataset.data_folder` is an object prefix inside the target: relative,
/// no `..`.
fn check_folder(folder: &str) -> Result<(), Error> {
    let trimmed = folder.trim_matches('/');
    if folder.starts_with('/') || trimmed.is_empty() || trimmed.split('/').any(|p| p.is_empty() || p == "..") {
        return Err(key_error(
            "dataset.data_folder",
            format!("'{folder}' must be a relative path inside the target without '..', like data/unet3d"),
        ));
    }
    Ok(())
}

/// Keys mlpdrive uses, per section (a DLIO YAML's other keys are moved to
/// `dlio_unused_keys`).
const USED_KEYS: &[(&str, &[&str])] = &[
    ("model", &["name", "type", "model_size", "model_size_bytes"]),
    ("framework", &[]),
    ("workflow", &["generate_data", "train", "checkpoint"]),
    (
        "dataset",
        &[
            "data_folder",
            "format",
            "num_files_train",
            "num_files_eval",
            "num_samples_per_file",
            "record_length_bytes",
            "record_length_bytes_stdev",
            "record_length_bytes_resize",
            "num_subfolders_train",
            "num_subfolders_eval",
        ],
    ),
    (
        "reader",
        &[
            "data_loader",
            "batch_size",
            "read_threads",
            "computation_threads",
            "prefetch_size",
            "transfer_size",
            "file_shuffle",
            "sample_shuffle",
            "shuffle_size",
            "odirect",
        ],
    ),
    ("train", &["epochs", "computation_time"]),
    ("metric", &["au"]),
    ("checkpoint", &["checkpoint_folder", "checkpoint_after_epoch", "epochs_between_checkpoints"]),
];

/// True when `doc` looks like a DLIO workload YAML: no `workload` key and
/// DLIO's `dataset` plus `reader` or `train` sections.
pub fn is_dlio_shape(doc: &Mapping) -> bool {
    !doc.contains_key("workload")
        && doc.contains_key("dataset")
        && (doc.contains_key("reader") || doc.contains_key("train") || doc.contains_key("workflow"))
}

/// Turns a DLIO workload YAML into a `training` config: adds `workload:
/// training`, moves every key mlpdrive does not use into
/// `dlio_unused_keys` (as `section.key`), and returns them.
pub fn import_dlio(doc: &mut Mapping) -> Vec<String> {
    let mut unused = Vec::new();
    let keys: Vec<Value> = doc.keys().cloned().collect();
    for key in keys {
        let Some(name) = key.as_str().map(str::to_string) else { continue };
        if super::COMMON_KEYS.contains(&name.as_str()) || MLPDRIVE_KEYS.contains(&name.as_str()) {
            continue;
        }
        match USED_KEYS.iter().find(|(s, _)| *s == name) {
            Some((_, used)) => {
                if let Some(Value::Mapping(section)) = doc.get_mut(&key) {
                    let inner: Vec<Value> = section.keys().cloned().collect();
                    for k in inner {
                        let kname = k.as_str().unwrap_or("?").to_string();
                        if !used.contains(&kname.as_str()) {
                            section.shift_remove(&k);
                            unused.push(format!("{name}.{kname}"));
                        }
                    }
                }
            }
            None => {
                doc.shift_remove(&key);
                unused.push(name);
            }
        }
    }
    doc.insert("workload".into(), "training".into());
    if !unused.is_empty() {
        doc.insert(
            "dlio_unused_keys".into(),
            Value::Sequence(unused.iter().map(|k| Value::from(k.as_str())).collect()),
        );
    }
    unused
}

/// mlpdrive's own top-level keys of this workload.
const MLPDRIVE_KEYS: &[&str] = &[
    "accelerators",
    "shuffle_mode",
    "reader_queue_depth",
    "allow_short_epochs",
    "dlio_v2_throughput",
    "dlio_unused_keys",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<TrainingConfig, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(&path, text).unwrap();
        let cfg = super::super::load(path.to_str().unwrap(), &[], None, None)?;
        assert_eq!(cfg.common.workload, "training");
        TrainingConfig::from_run_config(&cfg)
    }

    const DLIO_UNET3D: &str = "model:\n  name: unet3d\n  type: cnn\n  model_size: 499153191\n\
        framework: pytorch\nworkflow:\n  generate_data: False\n  train: True\n  checkpoint: True\n\
        dataset:\n  data_folder: data/unet3d/\n  format: npz\n  num_files_train: 168\n  num_samples_per_file: 1\n\
        \x20 record_length_bytes: 146600628\n  record_length_bytes_stdev: 68341808\n  record_length_bytes_resize: 2097152\n\
        reader:\n  data_loader: pytorch\n  batch_size: 7\n  read_threads: 4\n  file_shuffle: seed\n  sample_shuffle: seed\n\
        \x20 multiprocessing_context: spawn\n\
        train:\n  epochs: 5\n  computation_time: 0.323\n\
        checkpoint:\n  checkpoint_folder: checkpoints/unet3d\n  checkpoint_after_epoch: 5\n  epochs_between_checkpoints: 2\n\
        metric:\n  au: 0.90\nprofiling:\n  profiler: iostat\n";

    #[test]
    fn a_dlio_workload_yaml_loads_and_reports_unused_keys() {
        let t = load_text(DLIO_UNET3D).unwrap();
        assert_eq!(t.dataset.format, Format::Npz);
        assert_eq!(t.reader.batch_size, 7);
        assert_eq!(t.train.computation_time, ComputeTime::Fixed(0.323));
        assert_eq!(t.model.model_size, Some(499_153_191));
        assert!(t.workflow.checkpoint);
        assert_eq!(t.dlio_unused_keys, ["reader.multiprocessing_context", "profiling"]);
        assert_eq!(t.batches_in_flight(), 4, "prefetch_factor ceil(2 / 4) = 1 per worker");
    }

    #[test]
    fn native_configs_still_refuse_unknown_keys() {
        let text = format!("workload: training\n{}", DLIO_UNET3D);
        let e = load_text(&text).unwrap_err().to_string();
        assert!(e.contains("multiprocessing_context"), "{e}");
    }

    #[test]
    fn computation_time_forms() {
        let with = |ct: &str| load_text(&DLIO_UNET3D.replace("computation_time: 0.323", ct));
        assert_eq!(
            with("computation_time: {mean: 0.3, stdev: 0.01}").unwrap().train.computation_time,
            ComputeTime::MeanStdev { mean: 0.3, stdev: 0.01 }
        );
        let u = with("computation_time: {type: uniform, min: 0.1, max: 0.3}").unwrap().train.computation_time;
        assert!((u.mean_s() - 0.2).abs() < 1e-12);
        let mut rng = mlpdrive_emu::Prng::new(1);
        assert!((0..100).map(|_| u.sample_s(&mut rng)).all(|s| (0.1..=0.3).contains(&s)));
        let e = with("computation_time: -1").unwrap_err().to_string();
        assert!(e.contains("train.computation_time"), "{e}");
        let e = with("computation_time: {type: gamma, k: 2}").unwrap_err().to_string();
        assert!(e.contains("computation_time"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load_text(&DLIO_UNET3D.replace("batch_size: 7", "batch_size: 0")).unwrap_err().to_string();
        assert!(e.contains("reader.batch_size"), "{e}");
        let e = load_text(&DLIO_UNET3D.replace("format: npz", "format: hdf5")).unwrap_err().to_string();
        assert!(e.contains("dataset.format") && e.contains("tfrecord"), "{e}");
        let e = load_text(&DLIO_UNET3D.replace("data/unet3d/", "../x")).unwrap_err().to_string();
        assert!(e.contains("dataset.data_folder"), "{e}");
    }
}
