//! Keys of the `checkpoint` workload (MLPerf Storage LLM checkpointing):
//! the model's architecture numbers and parallelism (named as in DLIO's
//! `llama3_*.yaml`), the number of ranks, the `checkpoint.*` block, and
//! how each rank streams its files (`transfer_size`, `queue_depth`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::errors::{check_int_range, key_error};
use super::{RunConfig, workload_config};
use crate::error::Error;
use crate::units::{ByteSize, Dur};

/// Most ranks one process runs (each is a thread with its own io_uring).
pub const MAX_RANKS: u32 = 4096;
/// Largest `queue_depth` per rank.
pub const MAX_QUEUE_DEPTH: u32 = 256;
/// Largest `transfer_size` (one I/O; lengths are 32-bit).
pub const MAX_TRANSFER_BYTES: u64 = 1 << 30;
/// Ceiling on the I/O buffers of all ranks together
/// (`ranks × queue_depth × transfer_size`): memory stays bounded whatever the
/// checkpoint size, and a typo cannot ask for tens of GiB of buffers.
pub const MAX_BUFFER_BYTES: u64 = 4 << 30;

/// `checkpoint.mode`: the whole job, or the first ranks of it (subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every rank of the job runs; data parallelism = ranks / (TP × PP).
    #[default]
    Default,
    /// `ranks` processes act as ranks 0..ranks of a job whose data
    /// parallelism is `model.parallelism.data` (MLPerf's single-host mode).
    Subset,
}

impl Mode {
    pub const NAMES: &'static [&'static str] = &["default", "subset"];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Subset => "subset",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "default" => Ok(Mode::Default),
            "subset" => Ok(Mode::Subset),
            other => Err(format!("expected one of {}, got '{other}'", Mode::NAMES.join(", "))),
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        super::deserialize_from_str(deserializer, Mode::NAMES)
    }
}

/// `model.parallelism`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Parallelism {
    /// Tensor parallelism (TP).
    #[serde(default = "one")]
    pub tensor: u32,
    /// Pipeline parallelism (PP).
    #[serde(default = "one")]
    pub pipeline: u32,
    /// Data parallelism (DP) of the full job; only in subset mode (in default
    /// mode it is ranks / (TP × PP)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<u32>,
    /// DeepSpeed ZeRO stage (0–3).
    pub zero_stage: u8,
}

fn one() -> u32 {
    1
}

/// `model`: the transformer's architecture numbers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model name (used in the default checkpoint folder).
    pub name: String,
    pub num_layers: u64,
    pub hidden_size: u64,
    pub ffn_hidden_size: u64,
    pub num_attention_heads: u64,
    pub num_kv_heads: u64,
    pub vocab_size: u64,
    pub parallelism: Parallelism,
}

/// `checkpoint`: what to write and read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointKeys {
    #[serde(default)]
    pub mode: Mode,
    /// Folder (inside the target) holding `global_epoch1_step<k>/`;
    /// default `checkpoints/<model.name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_folder: Option<String>,
    /// Simulated compute before each save and each load.
    #[serde(default = "default_between")]
    pub time_between_checkpoints: Dur,
    #[serde(default = "ten")]
    pub num_checkpoints_write: u32,
    #[serde(default = "ten")]
    pub num_checkpoints_read: u32,
    /// Make every file durable at close. mlpdrive always does (O_DIRECT
    /// writes, then fdatasync); `false` is refused rather than ignored.
    #[serde(default = "yes")]
    pub fsync: bool,
}

impl Default for CheckpointKeys {
    fn default() -> Self {
        CheckpointKeys {
            mode: Mode::Default,
            checkpoint_folder: None,
            time_between_checkpoints: default_between(),
            num_checkpoints_write: 10,
            num_checkpoints_read: 10,
            fsync: true,
        }
    }
}

fn default_between() -> Dur {
    Dur(Duration::from_secs(5))
}

fn ten() -> u32 {
    10
}

fn yes() -> bool {
    true
}

/// The `checkpoint` workload's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    pub model: ModelConfig,
    /// Ranks (MPI processes in the reference) run by this process, one
    /// thread each.
    pub ranks: u32,
    #[serde(default)]
    pub checkpoint: CheckpointKeys,
    /// Bytes per I/O of each rank's stream.
    #[serde(default = "default_transfer")]
    pub transfer_size: ByteSize,
    /// I/Os in flight per rank (= its number of buffers).
    #[serde(default = "default_queue_depth")]
    pub queue_depth: u32,
}

fn default_transfer() -> ByteSize {
    ByteSize::mib(4)
}

fn default_queue_depth() -> u32 {
    4
}

impl CheckpointConfig {
    /// Deserializes and validates the workload keys of `cfg`.
    pub fn from_run_config(cfg: &RunConfig) -> Result<CheckpointConfig, Error> {
        let ck: CheckpointConfig = workload_config(cfg)?;
        ck.validate()?;
        if cfg.common.duration.is_some() {
            return Err(key_error(
                "duration",
                "does not apply to the checkpoint workload (it runs num_checkpoints_write saves and \
                 num_checkpoints_read loads); remove it",
            ));
        }
        Ok(ck)
    }

    /// The checkpoint folder inside the target.
    pub fn folder(&self) -> String {
        self.checkpoint.checkpoint_folder.clone().unwrap_or_else(|| format!("checkpoints/{}", self.model.name))
    }

    /// TP × PP.
    pub fn model_parallelism(&self) -> u32 {
        self.model.parallelism.tensor * self.model.parallelism.pipeline
    }

    /// Data parallelism of the full job.
    pub fn data_parallelism(&self) -> u32 {
        match self.checkpoint.mode {
            Mode::Default => self.ranks / self.model_parallelism(),
            Mode::Subset => self.model.parallelism.data.unwrap_or(1),
        }
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), Error> {
        let m = &self.model;
        let name_ok = !m.name.is_empty()
            && m.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !m.name.starts_with('.');
        if !name_ok {
            return Err(key_error(
                "model.name",
                format!("expected letters, digits, '-', '_' or '.', got '{}'", m.name),
            ));
        }
        for (key, v) in [
            ("model.num_layers", m.num_layers),
            ("model.hidden_size", m.hidden_size),
            ("model.ffn_hidden_size", m.ffn_hidden_size),
            ("model.num_attention_heads", m.num_attention_heads),
            ("model.num_kv_heads", m.num_kv_heads),
            ("model.vocab_size", m.vocab_size),
        ] {
            check_int_range(key, v, 1, 1 << 24)?;
        }
        if m.hidden_size < m.num_attention_heads {
            return Err(key_error(
                "model.num_attention_heads",
                format!("must not exceed model.hidden_size ({}), got {}", m.hidden_size, m.num_attention_heads),
            ));
        }
        let p = &m.parallelism;
        check_int_range("model.parallelism.tensor", p.tensor.into(), 1, 1024)?;
        check_int_range("model.parallelism.pipeline", p.pipeline.into(), 1, 1024)?;
        check_int_range("model.parallelism.zero_stage", p.zero_stage.into(), 0, 3)?;
        if u64::from(p.pipeline) > m.num_layers {
            return Err(key_error(
                "model.parallelism.pipeline",
                format!(
                    "{} pipeline stages need at least that many layers; model.num_layers is {}",
                    p.pipeline, m.num_layers
                ),
            ));
        }
        if p.pipeline > 1 && p.zero_stage == 3 {
            return Err(key_error(
                "model.parallelism.zero_stage",
                "ZeRO stage 3 is not compatible with pipeline parallelism (as in DeepSpeed and DLIO); \
                 use zero_stage 1 or pipeline 1",
            ));
        }
        check_int_range("ranks", self.ranks.into(), 1, MAX_RANKS.into())?;
        let mp = self.model_parallelism();
        match self.checkpoint.mode {
            Mode::Default => {
                if p.data.is_some() {
                    return Err(key_error(
                        "model.parallelism.data",
                        "only applies to checkpoint.mode: subset (in default mode data parallelism is \
                         ranks / (tensor × pipeline)); remove it or set checkpoint.mode=subset",
                    ));
                }
                if !self.ranks.is_multiple_of(mp) {
                    return Err(key_error(
                        "ranks",
                        format!(
                            "must be a multiple of tensor × pipeline parallelism ({mp}) in default mode, got {}; \
                             for fewer ranks use checkpoint.mode=subset with model.parallelism.data",
                            self.ranks
                        ),
                    ));
                }
            }
            Mode::Subset => {
                let Some(dp) = p.data else {
                    return Err(key_error(
                        "model.parallelism.data",
                        "checkpoint.mode: subset needs the full job's data parallelism, like --set model.parallelism.data=8",
                    ));
                };
                check_int_range("model.parallelism.data", dp.into(), 1, 1 << 20)?;
                let full = u64::from(dp) * u64::from(mp);
                if u64::from(self.ranks) > full {
                    return Err(key_error(
                        "ranks",
                        format!(
                            "subset mode runs at most the full job's {full} ranks (data × tensor × pipeline), got {}",
                            self.ranks
                        ),
                    ));
                }
            }
        }
        let folder = self.folder();
        if folder.is_empty()
            || folder.starts_with('/')
            || folder.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(key_error(
                "checkpoint.checkpoint_folder",
                format!("expected a relative path inside the target like checkpoints/llama3-8b, got '{folder}'"),
            ));
        }
        let ck = &self.checkpoint;
        if !ck.fsync {
            return Err(key_error(
                "checkpoint.fsync",
                "false is not available: mlpdrive always makes each checkpoint file durable (O_DIRECT \
                 writes, then fdatasync), as the MLPerf rules require; remove the key",
            ));
        }
        if ck.num_checkpoints_write == 0 && ck.num_checkpoints_read == 0 {
            return Err(key_error(
                "checkpoint.num_checkpoints_write",
                "and checkpoint.num_checkpoints_read are both 0: nothing to do",
            ));
        }
        if ck.num_checkpoints_write > 0 && ck.num_checkpoints_read > ck.num_checkpoints_write {
            return Err(key_error(
                "checkpoint.num_checkpoints_read",
                format!(
                    "{} is more than the {} checkpoints this run writes; read at most as many as are written \
                     (or set num_checkpoints_write=0 to read checkpoints an earlier run wrote)",
                    ck.num_checkpoints_read, ck.num_checkpoints_write
                ),
            ));
        }
        check_int_range("checkpoint.num_checkpoints_write", ck.num_checkpoints_write.into(), 0, 100_000)?;
        check_int_range("checkpoint.num_checkpoints_read", ck.num_checkpoints_read.into(), 0, 100_000)?;
        let ts = self.transfer_size.bytes();
        if ts == 0 || !ts.is_multiple_of(super::raw::GENERATOR_BLOCK_BYTES) || ts > MAX_TRANSFER_BYTES {
            return Err(key_error(
                "transfer_size",
                format!("must be a non-zero multiple of 4KiB up to 1GiB, got {}", self.transfer_size),
            ));
        }
        check_int_range("queue_depth", self.queue_depth.into(), 1, MAX_QUEUE_DEPTH.into())?;
        let buffers = u64::from(self.ranks) * u64::from(self.queue_depth) * ts;
        if buffers > MAX_BUFFER_BYTES {
            return Err(key_error(
                "ranks",
                format!(
                    "{} ranks × queue_depth {} × transfer_size {} = {} of I/O buffers, more than the {} limit \
                     for one host; lower transfer_size or queue_depth, or run fewer ranks (checkpoint.mode=subset)",
                    self.ranks,
                    self.queue_depth,
                    self.transfer_size,
                    ByteSize(buffers),
                    ByteSize(MAX_BUFFER_BYTES)
                ),
            ));
        }
        Ok(())
    }
}
