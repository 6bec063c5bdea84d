//! How much of each block a read checks: the `verify` config key.
//!
//! - **full** (the default): every whole block by its keyed checksum and
//!   header, every partial block by regeneration. Every byte read is checked.
//! - **sampled**: every whole block's header (magic, seed, object, block
//!   index, generation) and the first [`PREFIX_BYTES`] of the block (bytes
//!   `[8, 128)`: the header fields and the first 80 payload bytes) are
//!   compared with the regenerated block, so misplaced, stale, zeroed or
//!   foreign blocks are caught in every block; the full checksum runs on a
//!   seeded 1-in-`sample_every` subset of blocks only. Payload corruption
//!   past the prefix of an unsampled block is not detected: those bytes are
//!   counted as `header_checked_bytes`, never as verified. Partial blocks
//!   are small and rare (the ends of unaligned reads) and are still checked
//!   in full.
//! - **off**: nothing is checked.
//!
//! The subset is a keyed hash of (object key, block index). By default the
//! key is derived from the run's seed: the same seed checks the same blocks,
//! another seed other blocks. The data seed is in every block's header, so
//! a device built to cheat mlpdrive could compute that subset;
//! `verify_sample_key: random` keys it with a secret drawn for the run and
//! written nowhere, which no storage can predict (the split between
//! verified and header-checked bytes then varies from run to run).
//!
//! Why: hashing every 4 KiB block read costs about 0.15 CPU-s per GB on our
//! VMs, bound by memory bandwidth (O_DIRECT buffers are cold when hashed);
//! the sampled check touches two cache lines of an unsampled block.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::payload::mix64;
use super::{Expect, VerifyOutcome};

/// Bytes at the start of every whole block the sampled mode compares with
/// the regenerated block (two 64-byte rows: the header and 80 payload
/// bytes; the 8-byte checksum field is not checkable without the whole
/// block).
pub const PREFIX_BYTES: usize = 128;

/// Default `verify_sample_every`.
pub const DEFAULT_SAMPLE_EVERY: u64 = 16;
/// Accepted range of `verify_sample_every`.
pub const SAMPLE_EVERY_MIN: u64 = 2;
pub const SAMPLE_EVERY_MAX: u64 = 1 << 20;

/// Domain separator of the sampling key (ASCII "mlpdsamp").
const SAMPLE_DOMAIN: u64 = u64::from_le_bytes(*b"mlpdsamp");

/// What keys sampled mode's subset: the `verify_sample_key` config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SampleKey {
    /// The run's seed: the same seed checks the same blocks (reproducible,
    /// and the default). The seed is in every block's header, so storage
    /// built to cheat could compute the subset.
    #[default]
    Seed,
    /// A key drawn from the OS's randomness when the config is loaded and
    /// never written anywhere: storage cannot tell which blocks will be
    /// checked; another run checks other blocks.
    Random,
}

impl SampleKey {
    /// Every choice, in the spelling configs use.
    pub const NAMES: &'static [&'static str] = &["seed", "random"];

    pub fn as_str(self) -> &'static str {
        match self {
            SampleKey::Seed => "seed",
            SampleKey::Random => "random",
        }
    }

    /// A fresh secret for [`SampleKey::Random`]: std's per-process hash
    /// keys (taken from the OS's randomness) hashing the time and the pid.
    pub fn random_secret() -> u64 {
        use std::hash::BuildHasher;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
    }
}

impl fmt::Display for SampleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SampleKey {
    type Err = String;

    fn from_str(s: &str) -> Result<SampleKey, String> {
        match s {
            "seed" => Ok(SampleKey::Seed),
            "random" => Ok(SampleKey::Random),
            other => Err(format!("expected one of {}, got '{other}'", SampleKey::NAMES.join(", "))),
        }
    }
}

impl Serialize for SampleKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SampleKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SampleKey, D::Error> {
        crate::config::deserialize_from_str(deserializer, SampleKey::NAMES)
    }
}

/// What the `verify` key asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VerifyMode {
    #[default]
    Full,
    Sampled,
    Off,
}

impl VerifyMode {
    /// Every mode, in the spelling configs and results use.
    pub const NAMES: &'static [&'static str] = &["full", "sampled", "off"];

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Full => "full",
            VerifyMode::Sampled => "sampled",
            VerifyMode::Off => "off",
        }
    }

    /// The results note for a mode that does not check every byte
    /// (`sample_every`: sampled mode's rate).
    pub fn note(self, sample_every: Option<u64>, sample_key: SampleKey) -> Option<String> {
        let keyed = match sample_key {
            SampleKey::Seed => "subset keyed by the seed, which storage can read in the headers",
            SampleKey::Random => "subset keyed by a random key of this run",
        };
        match self {
            VerifyMode::Full => None,
            VerifyMode::Sampled => Some(format!(
                "verify=sampled: payload checked in 1 of {} blocks ({keyed}; every block's header and \
                 first {PREFIX_BYTES} bytes checked); corruption elsewhere is not detected",
                sample_every.unwrap_or(DEFAULT_SAMPLE_EVERY)
            )),
            VerifyMode::Off => Some("verify=off: read data was not checked".into()),
        }
    }

    fn expected() -> String {
        format!("{} (or true = full, false = off)", VerifyMode::NAMES.join(", "))
    }
}

impl fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VerifyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<VerifyMode, String> {
        match s {
            "full" | "true" => Ok(VerifyMode::Full),
            "sampled" => Ok(VerifyMode::Sampled),
            "off" | "false" => Ok(VerifyMode::Off),
            other => Err(format!("expected one of {}, got '{other}'", VerifyMode::expected())),
        }
    }
}

impl Serialize for VerifyMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Accepts the mode names and the booleans of the key's first form
/// (`true` = full, `false` = off), so older configs keep working.
impl<'de> Deserialize<'de> for VerifyMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<VerifyMode, D::Error> {
        struct ModeVisitor;
        impl serde::de::Visitor<'_> for ModeVisitor {
            type Value = VerifyMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {}", VerifyMode::expected())
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<VerifyMode, E> {
                Ok(if v { VerifyMode::Full } else { VerifyMode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<VerifyMode, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(ModeVisitor)
    }
}

/// The verification policy of a run: one value, copied into every place
/// that checks reads, so every workload checks the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verifier {
    mode: VerifyMode,
    /// 1 in this many whole blocks gets the full checksum (sampled mode).
    sample_every: u64,
    /// Key of the subset hash, from the run's seed or a random secret.
    sample_key: u64,
}

impl Verifier {
    /// Every byte checked.
    pub const FULL: Verifier = Verifier { mode: VerifyMode::Full, sample_every: 1, sample_key: 0 };
    /// Nothing checked.
    pub const OFF: Verifier = Verifier { mode: VerifyMode::Off, sample_every: 1, sample_key: 0 };

    /// The policy for `mode`; `key` (the run's seed, or a secret) keys the
    /// subset and `sample_every` (≥ 1) is its 1-in-N rate, both used only by
    /// `sampled`.
    pub fn new(mode: VerifyMode, key: u64, sample_every: u64) -> Verifier {
        match mode {
            VerifyMode::Full => Verifier::FULL,
            VerifyMode::Off => Verifier::OFF,
            VerifyMode::Sampled => {
                Verifier { mode, sample_every: sample_every.max(1), sample_key: mix64(key ^ SAMPLE_DOMAIN) }
            }
        }
    }

    pub fn mode(&self) -> VerifyMode {
        self.mode
    }

    /// Reads are checked at all (full or sampled).
    pub fn is_on(&self) -> bool {
        self.mode != VerifyMode::Off
    }

    /// The 1-in-N rate of the full check, in sampled mode only.
    pub fn sample_every(&self) -> Option<u64> {
        (self.mode == VerifyMode::Sampled).then_some(self.sample_every)
    }

    /// True if whole block `block` of `object` gets the full checksum:
    /// always in full mode, never when off, and in sampled mode for the
    /// blocks whose keyed hash of (object, block) is 0 modulo `sample_every`.
    pub fn samples(&self, object: u64, block: u64) -> bool {
        match self.mode {
            VerifyMode::Full => true,
            VerifyMode::Off => false,
            VerifyMode::Sampled => {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&object.to_le_bytes());
                key[8..].copy_from_slice(&block.to_le_bytes());
                xxh3_64_with_seed(&key, self.sample_key).is_multiple_of(self.sample_every)
            }
        }
    }

    /// Checks `data`, read from the object at byte `offset`, by this policy
    /// (see [`super::verify`] for full mode). Off: every byte is unverified.
    pub fn verify(&self, data: &[u8], offset: u64, expect: &Expect) -> VerifyOutcome {
        if !self.is_on() {
            return VerifyOutcome { unverified_bytes: data.len() as u64, ..VerifyOutcome::default() };
        }
        super::verify_blocks(data, offset, expect, self)
    }
}
