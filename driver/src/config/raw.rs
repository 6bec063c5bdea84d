//! Keys of the `raw` workload (fio-like calibration): access pattern, block
//! size, queue depth, jobs, file size and an optional byte budget; or, in
//! the object mode (`rw: put | get | mixed`), object size, object count and
//! concurrency.

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
/// `rwmix_read` when `rw: randrw` or `rw: mixed` does not set it.
pub const DEFAULT_RWMIX_READ: u8 = 50;
/// Object mode: `object_size` when not set.
pub const DEFAULT_OBJECT_BYTES: u64 = 1 << 20;
/// Object mode: `objects` when not set.
pub const DEFAULT_OBJECTS: u32 = 64;
/// Object mode: `concurrency` when not set.
pub const DEFAULT_CONCURRENCY: u32 = 8;
/// Object mode: largest `objects`.
pub const MAX_OBJECTS: u32 = 10_000_000;
/// Object mode: largest `concurrency`.
pub const MAX_CONCURRENCY: u32 = 4096;
/// Object mode: the I/O size (`block_size`) when not set is the object
/// size rounded up to whole generator blocks, at most this.
pub const DEFAULT_OBJECT_IO_BYTES: u64 = 8 << 20;
/// Object mode: largest `block_size` (one op's length is a u32).
pub const MAX_OBJECT_IO_BYTES: u64 = 1 << 30;
/// Object mode: I/Os in flight per object at most.
pub const OBJECT_IOS_IN_FLIGHT: u64 = 8;
/// Object mode: I/Os in flight in all, about (at least one per object):
/// more only cost buffer memory, as an S3 target sends at most
/// `s3.max_concurrency` (default 32) requests at once.
pub const OBJECT_IOS_IN_FLIGHT_TOTAL: u64 = 32;
/// Object mode: largest total of I/O buffers (concurrency × I/Os in flight
/// per object × block_size).
pub const MAX_OBJECT_BUFFER_BYTES: u64 = 8 << 30;
/// Keys only the block mode uses (refused in the object mode).
const BLOCK_KEYS: &[(&str, &str)] = &[("queue_depth", "concurrency"), ("size", "object_size"), ("jobs", "concurrency")];
/// Keys only the object mode uses (refused in the block mode).
const OBJECT_KEYS: &[&str] = &["object_size", "objects", "concurrency"];

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
    /// Object mode: whole-object writes (PUT), cycling over `objects`.
    Put,
    /// Object mode: whole-object verified reads (GET) of prepared objects.
    Get,
    /// Object mode: PUTs and GETs, `rwmix_read` percent GETs.
    Mixed,
}

impl Rw {
    /// Every pattern, in the spelling configs use.
    pub const NAMES: &'static [&'static str] =
        &["read", "write", "randread", "randwrite", "randrw", "put", "get", "mixed"];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::RandRead => "randread",
            Rw::RandWrite => "randwrite",
            Rw::RandRw => "randrw",
            Rw::Put => "put",
            Rw::Get => "get",
            Rw::Mixed => "mixed",
        }
    }

    /// The object mode (whole objects, not blocks of a file).
    pub fn is_object(self) -> bool {
        matches!(self, Rw::Put | Rw::Get | Rw::Mixed)
    }

    /// A share of the ops are reads and the rest writes (`rwmix_read`).
    pub fn is_mix(self) -> bool {
        matches!(self, Rw::RandRw | Rw::Mixed)
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
            "put" => Ok(Rw::Put),
            "get" => Ok(Rw::Get),
            "mixed" => Ok(Rw::Mixed),
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
    /// Percent of ops that are reads; only with `rw: randrw` or `rw: mixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rwmix_read: Option<u8>,
    /// Bytes per I/O (object mode: the I/Os an object is moved in).
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
    /// Object mode: bytes per object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size: Option<ByteSize>,
    /// Object mode: how many distinct objects the run PUTs and GETs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u32>,
    /// Object mode: objects in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// The keys an object-mode run uses, as the effective config records them
/// (the block mode's `queue_depth`, `jobs` and `size` do not apply).
#[derive(Debug, Serialize)]
pub struct ObjectKeysView {
    pub rw: Rw,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rwmix_read: Option<u8>,
    pub object_size: ByteSize,
    pub objects: u32,
    pub concurrency: u32,
    pub block_size: ByteSize,
    #[serde(skip_serializing_if = "Option::is_none")]
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
        let set = |k: &str| cfg.workload_keys.contains_key(k);
        if raw.rw.is_object() {
            if let Some((k, instead)) = BLOCK_KEYS.iter().find(|(k, _)| set(k)) {
                return Err(key_error(
                    k,
                    format!(
                        "applies to raw's block mode (read, write, randread, randwrite, randrw), but rw is {} \
                         (the object mode); remove it and use `{instead}` (object mode keys: object_size, objects, \
                         concurrency, block_size, rwmix_read, bytes)",
                        raw.rw
                    ),
                ));
            }
            let object_bytes = *raw.object_size.get_or_insert(ByteSize(DEFAULT_OBJECT_BYTES));
            raw.objects.get_or_insert(DEFAULT_OBJECTS);
            raw.concurrency.get_or_insert(DEFAULT_CONCURRENCY);
            if !set("block_size") {
                let whole = object_bytes.bytes().max(1).div_ceil(GENERATOR_BLOCK_BYTES) * GENERATOR_BLOCK_BYTES;
                raw.block_size = ByteSize(whole.min(DEFAULT_OBJECT_IO_BYTES));
            }
        } else if let Some(k) = OBJECT_KEYS.iter().find(|k| set(k)) {
            return Err(key_error(
                k,
                format!(
                    "applies to raw's object mode (rw: put, get or mixed), but rw is {}; remove it or set rw to \
                     put, get or mixed",
                    raw.rw
                ),
            ));
        }
        raw.validate(&cfg.common)?;
        if raw.rw.is_mix() && raw.rwmix_read.is_none() {
            raw.rwmix_read = Some(DEFAULT_RWMIX_READ);
        }
        Ok(raw)
    }

    /// The object mode's keys for the effective config (None in the block
    /// mode). Only valid after [`RawConfig::from_run_config`].
    pub fn object_view(&self) -> Option<ObjectKeysView> {
        Some(ObjectKeysView {
            rw: self.rw,
            rwmix_read: self.rwmix_read,
            object_size: self.object_size?,
            objects: self.objects?,
            concurrency: self.concurrency?,
            block_size: self.block_size,
            bytes: self.bytes,
        })
        .filter(|_| self.rw.is_object())
    }

    /// Object mode: bytes per object.
    pub fn object_bytes(&self) -> u64 {
        self.object_size.map_or(DEFAULT_OBJECT_BYTES, ByteSize::bytes)
    }

    /// Object mode: I/Os of `block_size` one object is moved in.
    pub fn ios_per_object(&self) -> u64 {
        self.object_bytes().div_ceil(self.block_size.bytes()).max(1)
    }

    /// Object mode: I/Os in flight per object at most (8, fewer when many
    /// objects are in flight: about 32 in all, at least one per object).
    pub fn ios_in_flight_per_object(&self) -> u64 {
        let share = (OBJECT_IOS_IN_FLIGHT_TOTAL / u64::from(self.concurrency.unwrap_or(DEFAULT_CONCURRENCY))).max(1);
        self.ios_per_object().min(OBJECT_IOS_IN_FLIGHT).min(share)
    }

    /// Checks values serde cannot: ranges, block alignment, and that the run
    /// has a way to stop (`duration`, `bytes` or both).
    pub fn validate(&self, common: &Common) -> Result<(), Error> {
        if let Some(percent) = self.rwmix_read {
            if !self.rw.is_mix() {
                return Err(key_error(
                    "rwmix_read",
                    format!(
                        "only applies to `rw: randrw` and `rw: mixed`, but rw is {}; remove rwmix_read \
                         or set rw to randrw (or mixed in the object mode)",
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
        if self.rw.is_object() {
            return self.validate_object(common);
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
        check_stop(self, common)
    }

    fn validate_object(&self, common: &Common) -> Result<(), Error> {
        let object = self.object_bytes();
        if object == 0 {
            return Err(key_error("object_size", "must be at least 1 byte, got 0"));
        }
        if self.block_size.bytes() > MAX_OBJECT_IO_BYTES {
            return Err(key_error(
                "block_size",
                format!("the object mode moves objects in I/Os of at most 1GiB, got {}", self.block_size),
            ));
        }
        if let Some(n) = self.objects {
            check_int_range("objects", n.into(), 1, MAX_OBJECTS.into())?;
        }
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        check_int_range("concurrency", concurrency.into(), 1, MAX_CONCURRENCY.into())?;
        let buffers = u64::from(concurrency) * self.ios_in_flight_per_object() * self.block_size.bytes();
        if buffers > MAX_OBJECT_BUFFER_BYTES {
            return Err(key_error(
                "concurrency",
                format!(
                    "{concurrency} objects in flight × {} I/Os each × block_size {} need {} of buffers, more than \
                     the 8GiB limit; lower concurrency or block_size",
                    self.ios_in_flight_per_object(),
                    self.block_size,
                    ByteSize(buffers)
                ),
            ));
        }
        if let Some(bytes) = self.bytes
            && bytes.bytes() < object
        {
            return Err(key_error(
                "bytes",
                format!("must be at least one object (object_size {}), got {bytes}", ByteSize(object)),
            ));
        }
        check_stop(self, common)
    }

    /// Percent of ops that are reads: 100 for read/randread/get, 0 for
    /// write/randwrite/put, `rwmix_read` (default 50) for randrw and mixed.
    pub fn read_percent(&self) -> u8 {
        match self.rw {
            Rw::Read | Rw::RandRead | Rw::Get => 100,
            Rw::Write | Rw::RandWrite | Rw::Put => 0,
            Rw::RandRw | Rw::Mixed => self.rwmix_read.unwrap_or(DEFAULT_RWMIX_READ),
        }
    }
}

/// A raw run has a way to stop: `duration`, `bytes` or both.
fn check_stop(raw: &RawConfig, common: &Common) -> Result<(), Error> {
    if common.duration.is_none() && raw.bytes.is_none() {
        let example = if raw.rw.is_object() { "4GiB" } else { "1GiB" };
        return Err(Error::usage(format!(
            "workload raw needs a way to stop: set `duration` (how long to run, like \
             --duration 10s or --set duration=10s) or `bytes` (how much to transfer in \
             total, like --set bytes={example}), or both (the run stops at whichever comes first)"
        )));
    }
    Ok(())
}
