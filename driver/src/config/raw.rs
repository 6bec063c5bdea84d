//! Keys of the `raw` workload (fio-like calibration): access pattern, block
//! size, queue depth, jobs, file size and an optional byte budget.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::errors::{check_int_range, key_error};
use super::{Common, RunConfig, workload_config};
use crate::error::Error;
use crate::units::ByteSize;

/// The data generator's block: every I/O covers whole generated blocks.
pub const GENERATOR_BLOCK_BYTES: u64 = 4096;
/// Largest `queue_depth`.
pub const MAX_QUEUE_DEPTH: u32 = 4096;
/// Largest `jobs`.
pub const MAX_JOBS: u32 = 256;
/// `rwmix_read` when `rw: randrw` does not set it.
pub const DEFAULT_RWMIX_READ: u8 = 50;

/// The access pattern (`rw`), named as in fio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rw {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Uniformly random reads.
    RandRead,
    /// Uniformly random writes.
    RandWrite,
    /// Uniformly random reads and writes, `rwmix_read` percent reads.
    RandRw,
}

impl Rw {
    /// Every pattern, in the spelling configs use.
    pub const NAMES: &'static [&'static str] = &["read", "write", "randread", "randwrite", "randrw"];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::RandRead => "randread",
            Rw::RandWrite => "randwrite",
            Rw::RandRw => "randrw",
        }
    }

    /// Offsets are drawn at random (not sequential).
    pub fn is_random(self) -> bool {
        matches!(self, Rw::RandRead | Rw::RandWrite | Rw::RandRw)
    }
}

impl fmt::Display for Rw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Rw {
    type Err = String;

    fn from_str(s: &str) -> Result<Rw, String> {
        match s {
            "read" => Ok(Rw::Read),
            "write" => Ok(Rw::Write),
            "randread" => Ok(Rw::RandRead),
            "randwrite" => Ok(Rw::RandWrite),
            "randrw" => Ok(Rw::RandRw),
            "put" | "get" | "mixed" => Err(format!(
                "'{s}' belongs to the object mode of raw (whole-object PUT/GET), which is not available yet in this \
                 version; on s3:// targets use rw=read or rw=randread (ranged GETs of a laid-out object)"
            )),
            other => Err(format!("expected one of {}, got '{other}'", Rw::NAMES.join(", "))),
        }
    }
}

impl Serialize for Rw {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Rw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rw, D::Error> {
        super::deserialize_from_str(deserializer, Rw::NAMES)
    }
}

/// The `raw` workload's keys. Load it with [`RawConfig::from_run_config`],
/// which also validates it and fills in `rwmix_read` for `randrw`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Access pattern.
    pub rw: Rw,
    /// Percent of ops that are reads; only with `rw: randrw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rwmix_read: Option<u8>,
    /// Bytes per I/O.
    #[serde(default = "default_block_size")]
    pub block_size: ByteSize,
    /// I/Os in flight per job.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: u32,
    /// Worker threads, each with its own file.
    #[serde(default = "default_jobs")]
    pub jobs: u32,
    /// Size of each job's file.
    #[serde(default = "default_size")]
    pub size: ByteSize,
    /// Stop after this many bytes in total (all jobs, reads and writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<ByteSize>,
}

fn default_block_size() -> ByteSize {
    ByteSize::kib(4)
}

fn default_queue_depth() -> u32 {
    32
}

fn default_jobs() -> u32 {
    1
}

fn default_size() -> ByteSize {
    ByteSize::mib(256)
}

impl RawConfig {
    /// Deserializes the workload keys of `cfg`, validates them against the
    /// common keys, and fills in `rwmix_read` (default 50) for `randrw`.
    pub fn from_run_config(cfg: &RunConfig) -> Result<RawConfig, Error> {
        if !cfg.workload_keys.contains_key("rw") {
            return Err(Error::usage(format!(
                "missing config key `rw` for workload raw: set it to one of {} \
                 (for example --set rw=randread)",
                Rw::NAMES.join(", ")
            )));
        }
        let mut raw: RawConfig = workload_config(cfg)?;
        raw.validate(&cfg.common)?;
        if raw.rw == Rw::RandRw && raw.rwmix_read.is_none() {
            raw.rwmix_read = Some(DEFAULT_RWMIX_READ);
        }
        Ok(raw)
    }

    /// Checks values serde cannot: ranges, block alignment, and that the run
    /// has a way to stop (`duration`, `bytes` or both).
    pub fn validate(&self, common: &Common) -> Result<(), Error> {
        if let Some(percent) = self.rwmix_read {
            if self.rw != Rw::RandRw {
                return Err(key_error(
                    "rwmix_read",
                    format!(
                        "only applies to `rw: randrw`, but rw is {}; remove rwmix_read \
                         or set rw to randrw",
                        self.rw
                    ),
                ));
            }
            if percent > 100 {
                return Err(key_error("rwmix_read", format!("expected a percentage from 0 to 100, got {percent}")));
            }
        }
        let block = self.block_size.bytes();
        if block == 0 || !block.is_multiple_of(GENERATOR_BLOCK_BYTES) {
            let lower = block / GENERATOR_BLOCK_BYTES * GENERATOR_BLOCK_BYTES;
            let upper = lower.checked_add(GENERATOR_BLOCK_BYTES);
            let nearby = match (lower, upper) {
                (0, Some(upper)) => format!("{}", ByteSize(upper)),
                (lower, Some(upper)) => format!("{} or {}", ByteSize(lower), ByteSize(upper)),
                (lower, None) => format!("{}", ByteSize(lower)),
            };
            return Err(key_error(
                "block_size",
                format!(
                    "must be a non-zero multiple of 4KiB (the data generator's block), got {}; \
                     try {nearby}",
                    self.block_size
                ),
            ));
        }
        check_int_range("queue_depth", self.queue_depth.into(), 1, MAX_QUEUE_DEPTH.into())?;
        check_int_range("jobs", self.jobs.into(), 1, MAX_JOBS.into())?;
        if self.size.bytes() < block {
            return Err(key_error(
                "size",
                format!(
                    "each job's file must hold at least one block: size {} is smaller than \
                     block_size {}",
                    self.size, self.block_size
                ),
            ));
        }
        if self.size.bytes().checked_mul(self.jobs.into()).is_none() {
            return Err(key_error("size", format!("{} per job × {} jobs is more than 16 EiB", self.size, self.jobs)));
        }
        if let Some(bytes) = self.bytes
            && bytes.bytes() < block
        {
            return Err(key_error(
                "bytes",
                format!("must be at least one block (block_size {}), got {bytes}", self.block_size),
            ));
        }
        if common.duration.is_none() && self.bytes.is_none() {
            return Err(Error::usage(
                "workload raw needs a way to stop: set `duration` (how long to run, like \
                 --duration 10s or --set duration=10s) or `bytes` (how much to transfer in \
                 total, like --set bytes=1GiB), or both (the run stops at whichever comes first)",
            ));
        }
        Ok(())
    }

    /// Percent of ops that are reads: 100 for read/randread, 0 for
    /// write/randwrite, `rwmix_read` (default 50) for randrw.
    pub fn read_percent(&self) -> u8 {
        match self.rw {
            Rw::Read | Rw::RandRead => 100,
            Rw::Write | Rw::RandWrite => 0,
            Rw::RandRw => self.rwmix_read.unwrap_or(DEFAULT_RWMIX_READ),
        }
    }
}
