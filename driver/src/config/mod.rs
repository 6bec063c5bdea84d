//! Run configs: a YAML mapping from a built-in preset or a file, with
//! `--set` overrides and the `--seed`/`--duration` shortcuts applied.
//!
//! The layer owns the keys every workload shares ([`Common`]: `workload`,
//! `seed`, `duration`, `verify`, `io`, …) and hands the rest of the top level
//! to the workload, which deserializes it into its own struct with
//! `#[serde(deny_unknown_fields)]` through [`workload_config`]. Every
//! problem is an [`Error::Usage`] (exit 2) whose message names the key path
//! and the accepted form; docs/configuration.md lists every key.
//!
//! Overrides are applied to the YAML tree before anything is deserialized,
//! so a `--set` value is checked exactly like the same key in the file.

pub mod checkpoint;
mod common;
pub mod errors;
mod overrides;
mod presets;
pub mod raw;
pub mod s3;
pub mod training;
pub mod vdb;

#[cfg(test)]
mod tests;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

pub use common::{
    COMMON_KEYS, Common, DEFAULT_IO_TIMEOUT, DEFAULT_PROGRESS_INTERVAL, DEFAULT_SEED, EngineKind, IoConfig,
};
pub use errors::{check_int_range, key_error};
pub use presets::{PresetInfo, preset_yaml, presets};
pub use raw::{RawConfig, Rw};

use crate::error::Error;
use crate::units::Dur;
use errors::Scope;

/// Workloads this build can run (the `workload` key must name one).
pub const KNOWN_WORKLOADS: &[&str] = &["raw", "checkpoint", "kvcache", "training", "vdb"];

/// A loaded run config: where it came from, the resolved common keys, the
/// workload's keys (not yet deserialized), and the effective config.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// "preset NAME" or the config file's path.
    pub source: String,
    /// The common keys with defaults applied.
    pub common: Common,
    /// The remaining top-level keys, for the workload to deserialize.
    pub workload_keys: Mapping,
    /// The whole config after overrides, common keys with their defaults
    /// filled in, for the copy in the results directory. Workload defaults
    /// join it through [`RunConfig::record_workload`].
    pub effective: Value,
}

impl RunConfig {
    /// Replaces the workload part of [`RunConfig::effective`] with the
    /// workload's resolved config (every default filled in), so the results
    /// copy shows exactly what ran.
    pub fn record_workload<T: Serialize>(&mut self, resolved: &T) -> Result<(), Error> {
        let value = serde_yaml_ng::to_value(resolved)
            .map_err(|e| Error::failed(format!("cannot record the workload config: {e}")))?;
        let Value::Mapping(workload) = value else {
            return Err(Error::failed("cannot record the workload config: it is not a mapping"));
        };
        let mut map = common::to_mapping(&self.common);
        map.extend(workload);
        self.effective = Value::Mapping(map);
        Ok(())
    }

    /// The effective config as YAML text.
    pub fn effective_yaml(&self) -> Result<String, Error> {
        serde_yaml_ng::to_string(&self.effective)
            .map_err(|e| Error::failed(format!("cannot write the effective config: {e}")))
    }
}

/// Loads a preset (by name) or a config file (by path), applies the `--set
/// KEY=VALUE` overrides in order, then the CLI shortcuts `--seed` and
/// `--duration`, and resolves the common keys.
pub fn load(source: &str, sets: &[String], seed: Option<u64>, duration: Option<&str>) -> Result<RunConfig, Error> {
    let (label, text) = presets::resolve(source)?;
    let mut doc = parse_document(&label, &text)?;
    if training::is_dlio_shape(&doc) {
        // A DLIO workload YAML: its unused keys are kept in
        // `dlio_unused_keys` and reported by the run.
        training::import_dlio(&mut doc);
    }
    for set in sets {
        overrides::apply(&mut doc, set)?;
    }
    if let Some(seed) = seed {
        doc.insert("seed".into(), seed.into());
    }
    if let Some(text) = duration {
        let dur: Dur = text.parse().map_err(|e| Error::usage(format!("--duration: {e}")))?;
        doc.insert("duration".into(), dur.to_string().into());
    }
    if let Some(key) = doc.keys().find(|k| !k.is_string()) {
        return Err(Error::usage(format!(
            "{label}: config keys must be names, got {}",
            serde_yaml_ng::to_string(key).unwrap_or_default().trim_end()
        )));
    }
    let (common, workload_keys) = common::split(doc, &label)?;
    let mut effective = common::to_mapping(&common);
    effective.extend(workload_keys.clone());
    Ok(RunConfig { source: label, common, workload_keys, effective: Value::Mapping(effective) })
}

/// Deserializes the workload keys into `T` (which should use
/// `#[serde(deny_unknown_fields)]`); errors name the key path.
/// Deserializes a config enum spelled as a string through its `FromStr`
/// (whose error already lists the accepted names), so every such key reports
/// bad values the same way.
pub(crate) fn deserialize_from_str<'de, D, T>(deserializer: D, names: &'static [&'static str]) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    struct NameVisitor<T>(&'static [&'static str], std::marker::PhantomData<T>);
    impl<T: std::str::FromStr<Err = String>> serde::de::Visitor<'_> for NameVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "one of {}", self.0.join(", "))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_any(NameVisitor(names, std::marker::PhantomData))
}

pub fn workload_config<T: DeserializeOwned>(cfg: &RunConfig) -> Result<T, Error> {
    let scope = Scope::Workload { name: &cfg.common.workload, common: COMMON_KEYS };
    serde_path_to_error::deserialize(Value::Mapping(cfg.workload_keys.clone()))
        .map_err(|e| errors::from_serde(e, scope))
}

/// Parses YAML text into the top-level mapping, with messages that name the
/// source and the line and column of a syntax error.
fn parse_document(label: &str, text: &str) -> Result<Mapping, Error> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let message = e.to_string();
        let at = match e.location() {
            Some(loc) if !message.contains(" at line ") => {
                format!(" at line {}, column {}", loc.line(), loc.column())
            }
            _ => String::new(),
        };
        Error::usage(format!("{label}: malformed YAML{at}: {message}"))
    })?;
    match value {
        Value::Mapping(map) => Ok(map),
        Value::Null => Err(Error::usage(format!(
            "{label}: the config is empty; it needs at least `workload: NAME` (known workloads: {})",
            KNOWN_WORKLOADS.join(", ")
        ))),
        other => {
            let kind = match other {
                Value::Sequence(_) => "a list",
                Value::Tagged(_) => "a tagged value",
                _ => "a single value",
            };
            Err(Error::usage(format!(
                "{label}: the top level must be a mapping of keys to values \
                 (like `workload: raw`), not {kind}"
            )))
        }
    }
}
