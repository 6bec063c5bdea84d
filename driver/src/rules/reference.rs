//! The reference configs the rules compare runs against, and the override
//! diff: which keys of a run's effective config (results.json `config`)
//! differ from the built-in MLPerf preset's, resolved the same way a run
//! resolves its config (every default filled in).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config;
use crate::error::Error;

/// mlpdrive's own keys that change how the harness runs, not the workload's
/// I/O: allowed in both divisions.
pub const HARNESS_KEYS: &[&str] = &[
    "description",
    "progress_interval",
    "verify",
    "verify_sample_every",
    "verify_sample_key",
    "continue_on_error",
    "io",
];

/// The effective config of a built-in preset, as a run of it records it.
pub fn effective_config(preset: &str) -> Result<Value, Error> {
    let mut cfg = config::load(preset, &[], None, None)?;
    match cfg.common.workload.as_str() {
        "training" => {
            let t = config::training::TrainingConfig::from_run_config(&cfg)?;
            cfg.record_workload(&t)?;
        }
        "checkpoint" => {
            let c = config::checkpoint::CheckpointConfig::from_run_config(&cfg)?;
            cfg.record_workload(&c)?;
        }
        "kvcache" => {
            let k = crate::workload::kvcache::config::KvConfig::from_run_config(&cfg)?;
            cfg.record_workload(&k)?;
        }
        "vdb" => {
            let v = config::vdb::VdbConfig::from_run_config(&cfg)?;
            cfg.record_workload(&v)?;
        }
        "raw" => {
            let r = config::raw::RawConfig::from_run_config(&cfg)?;
            cfg.record_workload(&r)?;
        }
        other => return Err(Error::failed(format!("preset {preset}: unknown workload {other}"))),
    }
    serde_json::to_value(&cfg.effective).map_err(|e| Error::failed(format!("preset {preset}: {e}")))
}

/// Leaves of `v` by dotted key (arrays are leaves).
pub fn flatten(v: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(o) if !o.is_empty() => {
                for (k, c) in o {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, c, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}

/// One key that differs from the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub key: String,
    /// The run's value (None: the run does not have the key).
    pub run: Option<Value>,
    /// The reference's value (None: the reference does not have the key).
    pub reference: Option<Value>,
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or_else(|| "(absent)".to_string(), Value::to_string);
        write!(f, "{}={} (reference {})", self.key, show(&self.run), show(&self.reference))
    }
}

/// Keys whose values differ between `run` and `reference`, except those
/// covered by `ignore` (a key matches an entry equal to it or starting with
/// it and a dot).
pub fn overrides(run: &Value, reference: &Value, ignore: &[&str]) -> Vec<Override> {
    let (a, b) = (flatten(run), flatten(reference));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !covered(k, ignore))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| Override { key: k.clone(), run: a.get(k).cloned(), reference: b.get(k).cloned() })
        .collect()
}

/// True when `key` is one of `list` or below one of them.
pub fn covered(key: &str, list: &[&str]) -> bool {
    list.iter().any(|p| key == *p || key.strip_prefix(p).is_some_and(|rest| rest.starts_with('.')))
}

/// The built-in presets of `workload`, by name.
pub fn presets_of(workload: &str) -> Vec<String> {
    config::presets().into_iter().filter(|p| p.workload == workload).map(|p| p.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_against_itself_has_no_overrides() {
        for p in ["training/unet3d_h100", "checkpoint/llama3-70b-subset", "kvcache/mlperf-option2", "vdb/vdb-smoke"] {
            let c = effective_config(p).expect(p);
            assert!(overrides(&c, &c, &[]).is_empty(), "{p}");
            assert!(c.get("workload").is_some(), "{p}: {c}");
        }
    }

    #[test]
    fn overrides_name_changed_added_and_removed_keys_except_ignored_ones() {
        let reference = serde_json::json!({ "a": 1, "io": { "direct": true }, "d": { "x": [1, 2] }, "gone": 1 });
        let run = serde_json::json!({ "a": 2, "io": { "direct": false }, "d": { "x": [1, 3] }, "new": "v" });
        let o = overrides(&run, &reference, &["io"]);
        let keys: Vec<&str> = o.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a", "d.x", "gone", "new"]);
        assert_eq!(o[0].to_string(), "a=2 (reference 1)");
        assert_eq!(o[2].to_string(), "gone=(absent) (reference 1)");
        assert!(covered("io.direct", &["io"]) && !covered("iox", &["io"]));
    }
}
