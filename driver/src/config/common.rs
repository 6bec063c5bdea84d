//! The keys every workload shares (`workload`, `seed`, `duration`, `io`, …):
//! taken out of the top-level mapping, checked, and given their defaults.
//! Whatever is left belongs to the workload.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::{Mapping, Value};

use super::KNOWN_WORKLOADS;
use super::errors::{self, Scope, key_error};
use crate::datagen::{self, SampleKey, Verifier, VerifyMode};
use crate::error::Error;
use crate::units::Dur;

/// The top-level keys this layer owns, in the order the effective config
/// lists them.
pub const COMMON_KEYS: &[&str] = &[
    "workload",
    "description",
    "seed",
    "duration",
    "verify",
    "verify_sample_every",
    "verify_sample_key",
    "continue_on_error",
    "io",
    "progress_interval",
    "s3",
];

/// Default `seed`.
pub const DEFAULT_SEED: u64 = 1;
/// Default `io.timeout`: an op outstanding this long fails the run as stalled.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `progress_interval` (plain progress lines when stderr is not a terminal).
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The common keys, resolved (defaults applied, values checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// Which workload module runs the config (one of [`KNOWN_WORKLOADS`]).
    pub workload: String,
    /// One line saying what the config measures.
    pub description: Option<String>,
    /// Seed of all data and randomness of the run.
    pub seed: u64,
    /// How long the measured phase runs; `None` if the workload stops otherwise.
    pub duration: Option<Duration>,
    /// How reads are checked against the data generator (full, sampled, off).
    pub verify: VerifyMode,
    /// Sampled mode: 1 in this many blocks gets the full payload checksum.
    pub verify_sample_every: u64,
    /// Sampled mode: what keys the subset (the seed, or a random secret).
    pub verify_sample_key: SampleKey,
    /// The secret of `verify_sample_key: random`, drawn when the config is
    /// loaded (0 otherwise). Never written to results or logs.
    pub verify_sample_secret: u64,
    /// Keep going after an I/O error (counted) instead of stopping the run.
    pub continue_on_error: bool,
    /// How I/O is issued.
    pub io: IoConfig,
    /// Interval of the plain progress line when stderr is not a terminal.
    pub progress_interval: Duration,
    /// The `s3` keys as written (checked); only `s3://` targets accept them.
    pub s3: Option<super::s3::S3Keys>,
}

impl Common {
    /// The run's verification policy (the subset of sampled mode is keyed
    /// by the seed or by the run's secret).
    pub fn verifier(&self) -> Verifier {
        let key = match self.verify_sample_key {
            SampleKey::Seed => self.seed,
            SampleKey::Random => self.verify_sample_secret,
        };
        Verifier::new(self.verify, key, self.verify_sample_every)
    }
}

/// The `io` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoConfig {
    /// Open data files with O_DIRECT (bypass the page cache).
    pub direct: bool,
    /// Which engine issues the I/O.
    pub engine: EngineKind,
    /// An op not completing within this time fails the run as stalled.
    pub timeout: Duration,
}

/// The I/O engine asked for in `io.engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// io_uring, one ring per worker thread.
    IoUring,
    /// Blocking pread/pwrite, one op at a time per worker.
    Sync,
}

impl EngineKind {
    /// Every engine, in the spelling configs use.
    pub const NAMES: &'static [&'static str] = &["io_uring", "sync"];

    /// The config spelling: "io_uring" or "sync".
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::IoUring => "io_uring",
            EngineKind::Sync => "sync",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<EngineKind, String> {
        match s {
            "io_uring" => Ok(EngineKind::IoUring),
            "sync" => Ok(EngineKind::Sync),
            other => Err(format!("expected one of {}, got '{other}'", EngineKind::NAMES.join(", "))),
        }
    }
}

impl Serialize for EngineKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EngineKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EngineKind, D::Error> {
        super::deserialize_from_str(deserializer, EngineKind::NAMES)
    }
}

/// The common keys as written: everything optional so defaults and the
/// missing-`workload` message are ours, not serde's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonKeys {
    workload: Option<String>,
    description: Option<String>,
    seed: Option<u64>,
    duration: Option<Dur>,
    verify: Option<VerifyMode>,
    verify_sample_every: Option<u64>,
    verify_sample_key: Option<SampleKey>,
    continue_on_error: Option<bool>,
    io: Option<IoKeys>,
    progress_interval: Option<Dur>,
    s3: Option<super::s3::S3Keys>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IoKeys {
    direct: Option<bool>,
    engine: Option<EngineKind>,
    timeout: Option<Dur>,
}

/// Splits a top-level mapping into the resolved common keys and the rest
/// (the workload's keys, in their original order).
pub(crate) fn split(mut doc: Mapping, source: &str) -> Result<(Common, Mapping), Error> {
    let mut common = Mapping::new();
    for key in COMMON_KEYS {
        if let Some(value) = doc.shift_remove(*key) {
            common.insert(Value::from(*key), value);
        }
    }
    let keys: CommonKeys =
        serde_path_to_error::deserialize(Value::Mapping(common)).map_err(|e| errors::from_serde(e, Scope::Common))?;
    let common = resolve(keys, source)?;
    Ok((common, doc))
}

fn resolve(keys: CommonKeys, source: &str) -> Result<Common, Error> {
    let known = KNOWN_WORKLOADS.join(", ");
    let Some(workload) = keys.workload else {
        return Err(Error::usage(format!(
            "{source}: missing config key `workload`: add `workload: NAME` naming the workload \
             that runs this config (known workloads: {known})"
        )));
    };
    if !KNOWN_WORKLOADS.contains(&workload.as_str()) {
        return Err(key_error("workload", format!("unknown workload '{workload}'; known workloads: {known}")));
    }
    let description = match keys.description {
        Some(text) if text.trim().contains('\n') => {
            return Err(key_error("description", "must be a single line"));
        }
        Some(text) => Some(text.trim().to_string()),
        None => None,
    };
    let duration = keys.duration.map(|d| d.0);
    if duration == Some(Duration::ZERO) {
        return Err(key_error(
            "duration",
            "must be greater than 0 (remove it to stop by other means, such as `bytes`)",
        ));
    }
    let io = keys.io.unwrap_or(IoKeys { direct: None, engine: None, timeout: None });
    let timeout = io.timeout.map_or(DEFAULT_IO_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        return Err(key_error("io.timeout", "must be greater than 0, like 30s"));
    }
    let progress_interval = keys.progress_interval.map_or(DEFAULT_PROGRESS_INTERVAL, |d| d.0);
    if progress_interval.is_zero() {
        return Err(key_error("progress_interval", "must be greater than 0, like 5s"));
    }
    if let Some(s3) = &keys.s3 {
        s3.resolve()?;
    }
    let verify = keys.verify.unwrap_or(VerifyMode::Full);
    let verify_sample_every = match keys.verify_sample_every {
        Some(_) if verify != VerifyMode::Sampled => {
            return Err(key_error(
                "verify_sample_every",
                format!("applies only with `verify: sampled` (verify is {verify}); remove it or set verify=sampled"),
            ));
        }
        Some(n) => {
            errors::check_int_range("verify_sample_every", n, datagen::SAMPLE_EVERY_MIN, datagen::SAMPLE_EVERY_MAX)?;
            n
        }
        None => datagen::DEFAULT_SAMPLE_EVERY,
    };
    let verify_sample_key = match keys.verify_sample_key {
        Some(_) if verify != VerifyMode::Sampled => {
            return Err(key_error(
                "verify_sample_key",
                format!("applies only with `verify: sampled` (verify is {verify}); remove it or set verify=sampled"),
            ));
        }
        Some(key) => key,
        None => SampleKey::Seed,
    };
    let verify_sample_secret = match verify_sample_key {
        SampleKey::Random => SampleKey::random_secret(),
        SampleKey::Seed => 0,
    };
    Ok(Common {
        workload,
        description,
        seed: keys.seed.unwrap_or(DEFAULT_SEED),
        duration,
        verify,
        verify_sample_every,
        verify_sample_key,
        verify_sample_secret,
        continue_on_error: keys.continue_on_error.unwrap_or(false),
        io: IoConfig { direct: io.direct.unwrap_or(true), engine: io.engine.unwrap_or(EngineKind::IoUring), timeout },
        progress_interval,
        s3: keys.s3,
    })
}

/// The common keys with every default filled in, as the effective config
/// shows them (durations as canonical strings).
pub(crate) fn to_mapping(common: &Common) -> Mapping {
    let mut map = Mapping::new();
    let dur = |d: Duration| Value::from(Dur(d).to_string());
    map.insert("workload".into(), common.workload.clone().into());
    if let Some(description) = &common.description {
        map.insert("description".into(), description.clone().into());
    }
    map.insert("seed".into(), common.seed.into());
    if let Some(duration) = common.duration {
        map.insert("duration".into(), dur(duration));
    }
    map.insert("verify".into(), common.verify.as_str().into());
    if common.verify == VerifyMode::Sampled {
        map.insert("verify_sample_every".into(), common.verify_sample_every.into());
        map.insert("verify_sample_key".into(), common.verify_sample_key.as_str().into());
    }
    map.insert("continue_on_error".into(), common.continue_on_error.into());
    let mut io = Mapping::new();
    io.insert("direct".into(), common.io.direct.into());
    io.insert("engine".into(), common.io.engine.as_str().into());
    io.insert("timeout".into(), dur(common.io.timeout));
    map.insert("io".into(), Value::Mapping(io));
    map.insert("progress_interval".into(), dur(common.progress_interval));
    if let Some(s3) = &common.s3
        && let Ok(value) = serde_yaml_ng::to_value(s3)
    {
        map.insert("s3".into(), value);
    }
    map
}
