//! Device profiles: the model's parameters as YAML, and the built-in set.
//!
//! A profile names a device class (`nvme-gen4`, `hdd`, `s3-standard`, …)
//! and gives every parameter of the [`crate::Device`] model with its unit in
//! the value (`80us`, `7GB/s`, `3.84TB`). The built-in profiles live in
//! `configs/devices/*.yaml` and are compiled into the crate, so a binary
//! needs no files to use them; docs/devices.md explains where each number
//! comes from. [`Profile::load`] takes a built-in name or a path to a YAML
//! file of the same shape.
//!
//! Parsing is strict: an unknown or misspelt key is an error that names the
//! key and where it is (`faults.hang: unknown field `duraton``), because a
//! silently ignored parameter would make an experiment measure something
//! other than what its author wrote.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dist::Latency;
use crate::fault::FaultPlan;
use crate::units::{Bandwidth, Bytes, Capacity, Nanos, Probability};

/// Built-in profiles: `(name, YAML text)`.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("ideal", include_str!("../../configs/devices/ideal.yaml")),
    ("ci-fast", include_str!("../../configs/devices/ci-fast.yaml")),
    ("nvme-gen4", include_str!("../../configs/devices/nvme-gen4.yaml")),
    ("nvme-gen5", include_str!("../../configs/devices/nvme-gen5.yaml")),
    ("sata-ssd", include_str!("../../configs/devices/sata-ssd.yaml")),
    ("hdd", include_str!("../../configs/devices/hdd.yaml")),
    ("s3-standard", include_str!("../../configs/devices/s3-standard.yaml")),
];

/// Most channels a profile may ask for (the model keeps one entry each).
pub const CHANNELS_MAX: u32 = 1 << 20;

/// Base latency per op kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyByKind {
    /// A read.
    pub read: Latency,
    /// A write (with a write cache: the time to land in the cache).
    pub write: Latency,
    /// A flush, on top of draining the write cache.
    pub flush: Latency,
    /// A trim.
    pub trim: Latency,
    /// A read that starts where the previous read or write ended (default:
    /// same as `read`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_read: Option<Latency>,
    /// A write that starts where the previous read or write ended (default:
    /// same as `write`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_write: Option<Latency>,
}

/// Transfer rate of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBandwidth {
    /// Read bytes per second on one channel.
    pub read: Bandwidth,
    /// Write bytes per second on one channel (without a write cache).
    pub write: Bandwidth,
}

/// Device-wide bandwidth caps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBandwidth {
    /// All reads together.
    pub read: Bandwidth,
    /// All writes together.
    pub write: Bandwidth,
    /// Reads and writes together (default `unlimited`).
    #[serde(default = "unlimited")]
    pub total: Bandwidth,
}

fn unlimited() -> Bandwidth {
    Bandwidth::Unlimited
}

/// A volatile write-back cache in front of the media.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteCache {
    /// Dirty bytes the cache holds before writes must wait.
    pub size: Bytes,
    /// Rate at which dirty bytes reach the media.
    pub drain_bandwidth: Bandwidth,
}

/// Occasional stalls (garbage collection, retries, throttling).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stall {
    /// Chance that an op stalls.
    pub probability: Probability,
    /// Extra time a stalled op takes.
    pub duration: Nanos,
}

/// A device profile (see the module docs and docs/devices.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The built-in name or the file's stem; not part of the YAML.
    #[serde(skip)]
    pub name: String,
    /// One line saying what device class this is.
    pub description: String,
    /// Bytes the device holds; writes beyond fail with ENOSPC.
    pub capacity: Capacity,
    /// Ops the device serves at once.
    pub channels: u32,
    /// Base latency per op kind.
    pub latency: LatencyByKind,
    /// Per-channel transfer rate.
    pub channel_bandwidth: ChannelBandwidth,
    /// Device-wide caps.
    pub device_bandwidth: DeviceBandwidth,
    /// Write-back cache (none: writes go to the media through channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_cache: Option<WriteCache>,
    /// Occasional stalls (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<Stall>,
    /// Injected faults (all off by default).
    #[serde(default)]
    pub faults: FaultPlan,
}

/// A profile that could not be found, read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Neither a built-in name nor an existing file.
    #[error("unknown device profile `{name}`: use one of {}, or a path to a YAML file", builtin_names().join(", "))]
    Unknown {
        /// What was asked for.
        name: String,
    },
    /// The file exists but could not be read.
    #[error("cannot read device profile {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or a value is invalid; `key` is the path to it.
    #[error("device profile `{name}`: {key}: {message}")]
    Invalid {
        /// Profile name or path.
        name: String,
        /// Dotted path to the offending key (`.` for the top level).
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// serde_yaml_ng starts some messages with (part of) the path that
/// `serde_path_to_error` already gives in full; drop it so the key is not
/// printed twice.
fn strip_path_prefix(key: &str, message: String) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && key.starts_with(head) && !head.contains(' ') => rest.to_owned(),
        _ => message,
    }
}

fn builtin_names() -> Vec<&'static str> {
    BUILTIN_PROFILES.iter().map(|(name, _)| *name).collect()
}

impl Profile {
    /// A built-in profile by name, or a YAML file by path.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        if let Some((name, text)) = BUILTIN_PROFILES.iter().find(|(name, _)| *name == name_or_path) {
            return Profile::from_yaml(name, text);
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            return Err(ProfileError::Unknown { name: name_or_path.to_owned() });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|source| ProfileError::Read { path: name_or_path.to_owned(), source })?;
        let mut profile = Profile::from_yaml(name_or_path, &text)?;
        profile.name = path.file_stem().map_or_else(|| name_or_path.to_owned(), |s| s.to_string_lossy().into_owned());
        Ok(profile)
    }

    /// Parses and validates a profile; `name` appears in errors and in
    /// [`Profile::name`].
    pub fn from_yaml(name: &str, text: &str) -> Result<Profile, ProfileError> {
        let invalid = |key: String, message: String| ProfileError::Invalid { name: name.to_owned(), key, message };
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let mut profile: Profile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let message = strip_path_prefix(&key, e.into_inner().to_string());
            invalid(key, message)
        })?;
        profile.name = name.to_owned();
        profile.validate().map_err(|(key, message)| invalid(key.to_owned(), message))?;
        Ok(profile)
    }

    /// Checks the constraints serde cannot express.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=CHANNELS_MAX).contains(&self.channels) {
            return Err(("channels", format!("is {}: use 1 to {CHANNELS_MAX}", self.channels)));
        }
        if let Some(cache) = &self.write_cache
            && cache.size.0 == 0
        {
            return Err(("write_cache.size", "is 0: use a size above 0, or remove write_cache".to_owned()));
        }
        self.faults.validate().map_err(|message| ("faults", message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_loads_and_round_trips() {
        for (name, _) in BUILTIN_PROFILES {
            let profile = Profile::load(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(profile.name, *name);
            assert!(!profile.description.is_empty());
            let text = serde_yaml_ng::to_string(&profile).unwrap();
            let again = Profile::from_yaml(name, &text).unwrap_or_else(|e| panic!("{name} re-parse: {e}\n{text}"));
            assert_eq!(again, profile, "{name} round trip");
        }
        let names = builtin_names();
        for wanted in ["ideal", "nvme-gen4", "nvme-gen5", "sata-ssd", "hdd", "s3-standard", "ci-fast"] {
            assert!(names.contains(&wanted), "{wanted} missing");
        }
    }

    #[test]
    fn builtin_profiles_have_the_documented_shape() {
        let ideal = Profile::load("ideal").unwrap();
        assert!(ideal.latency.read.is_zero() && ideal.latency.write.is_zero());
        assert_eq!(ideal.channel_bandwidth.read, Bandwidth::Unlimited);
        assert_eq!(ideal.device_bandwidth.total, Bandwidth::Unlimited);
        let hdd = Profile::load("hdd").unwrap();
        assert!(hdd.channels <= 2, "an HDD has one actuator");
        let s3 = Profile::load("s3-standard").unwrap();
        assert!(s3.channels >= 64, "S3 serves many parallel streams");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let base = Profile::load("nvme-gen4").unwrap();
        let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::to_value(&base).unwrap();
        yaml["faults"]["hang"] = serde_yaml_ng::from_str("{probability: 0.1, duraton: 1s}").unwrap();
        let err = Profile::from_yaml("typo", &serde_yaml_ng::to_string(&yaml).unwrap()).unwrap_err().to_string();
        assert!(err.contains("faults.hang") && err.contains("unknown field `duraton`"), "{err}");

        let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::to_value(&base).unwrap();
        yaml["chanels"] = 4.into();
        let err = Profile::from_yaml("typo", &serde_yaml_ng::to_string(&yaml).unwrap()).unwrap_err().to_string();
        assert!(err.contains("unknown field `chanels`"), "{err}");

        let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::to_value(&base).unwrap();
        yaml["latency"]["read"] = serde_yaml_ng::from_str("{lognormal: {p50: 2ms, p99: 1ms}}").unwrap();
        let err = Profile::from_yaml("bad", &serde_yaml_ng::to_string(&yaml).unwrap()).unwrap_err().to_string();
        assert!(err.contains("latency.read") && err.contains("at least p50"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key_and_the_fix() {
        let base = Profile::load("ci-fast").unwrap();
        for (key, value, needle) in [
            ("channels", "0", "use 1 to"),
            ("capacity", "lots", "bad size"),
            ("stall", "{probability: 3, duration: 1ms}", "from 0 to 1"),
            ("write_cache", "{size: 0, drain_bandwidth: 1GB/s}", "write_cache.size"),
        ] {
            let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::to_value(&base).unwrap();
            yaml[key] = serde_yaml_ng::from_str(value).unwrap();
            let err = Profile::from_yaml("bad", &serde_yaml_ng::to_string(&yaml).unwrap()).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(needle), "{key}: {err}");
        }
    }

    #[test]
    fn load_reads_files_and_rejects_unknown_names() {
        let err = Profile::load("nvme-gen9").unwrap_err().to_string();
        assert!(err.contains("nvme-gen9") && err.contains("nvme-gen4") && err.contains("path"), "{err}");
        let dir = std::env::temp_dir().join(format!("mlpdrive-emu-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("my-disk.yaml");
        std::fs::write(&path, BUILTIN_PROFILES[1].1).unwrap();
        let profile = Profile::load(path.to_str().unwrap()).unwrap();
        assert_eq!(profile.name, "my-disk");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
