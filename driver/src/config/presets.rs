//! Built-in presets: the YAML files under the repository's `configs/`
//! folder, compiled into the binary so `mlpdrive run raw` works from any
//! directory. A preset's name is its path under `configs/` without `.yaml`
//! (`raw`, later `kvcache/…`). `configs/devices/` holds device profiles, not
//! workloads, and is not listed here.
//!
//! Adding a preset is one line in [`PRESETS`]; a unit test fails if a YAML
//! file under `configs/` is missing from the table or vice versa.

use std::io::Read;
use std::path::Path;

use serde_yaml_ng::Value;

use crate::error::Error;

/// `(name, YAML text)` for one preset file under `configs/`.
macro_rules! preset_table {
    ($($name:literal),* $(,)?) => {
        &[$((
            $name,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/", $name, ".yaml")),
        )),*]
    };
}

/// Every built-in preset, one line per file under `configs/` (sorted by name).
static PRESETS: &[(&str, &str)] = preset_table![
    "checkpoint",
    "checkpoint-smoke",
    "checkpoint/llama3-1t",
    "checkpoint/llama3-1t-subset",
    "checkpoint/llama3-405b",
    "checkpoint/llama3-405b-subset",
    "checkpoint/llama3-70b",
    "checkpoint/llama3-70b-subset",
    "checkpoint/llama3-8b",
    "kvcache/kvcache-smoke",
    "kvcache/mlperf-option1",
    "kvcache/mlperf-option2",
    "kvcache/mlperf-option3",
    "raw",
    "raw-smoke",
    "training",
    "training-smoke",
    "training/cosmoflow_a100",
    "training/cosmoflow_h100",
    "training/dlrm_b200",
    "training/dlrm_mi355",
    "training/flux_b200",
    "training/flux_mi355",
    "training/resnet50_a100",
    "training/resnet50_h100",
    "training/retinanet_b200",
    "training/retinanet_mi355",
    "training/unet3d_a100",
    "training/unet3d_b200",
    "training/unet3d_h100",
    "vdb/vdb-10m-1536",
    "vdb/vdb-1m-1536",
    "vdb/vdb-smoke",
];

/// Short names for presets: `mlpdrive run kvcache` runs the smoke preset.
static ALIASES: &[(&str, &str)] = &[("kvcache", "kvcache/kvcache-smoke"), ("vdb", "vdb/vdb-smoke")];

/// Config files larger than this are refused (configs are a few KiB; this
/// keeps `mlpdrive run /dev/zero` from eating memory).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One built-in preset, as `mlpdrive workloads` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetInfo {
    /// Name to pass to `mlpdrive run`.
    pub name: String,
    /// The workload that runs it (its `workload` key).
    pub workload: String,
    /// Its one-line `description`.
    pub description: String,
}

/// All built-in presets, sorted by name.
pub fn presets() -> Vec<PresetInfo> {
    let mut list: Vec<PresetInfo> = PRESETS
        .iter()
        .map(|(name, text)| {
            let doc: Value = serde_yaml_ng::from_str(text).unwrap_or(Value::Null);
            let field = |key: &str| doc.get(key).and_then(Value::as_str).unwrap_or("").to_string();
            PresetInfo { name: (*name).to_string(), workload: field("workload"), description: field("description") }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

/// The YAML text of a built-in preset.
pub fn preset_yaml(name: &str) -> Option<&'static str> {
    let name = ALIASES.iter().find(|(a, _)| *a == name).map_or(name, |(_, target)| *target);
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

fn preset_names() -> String {
    presets().into_iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// Resolves the `run` argument to a label for messages ("preset raw" or
/// the file path) and the YAML text.
///
/// A name ending in `.yaml`/`.yml` is a file; otherwise an exact preset name
/// is the preset (preset names may contain `/`, like `kvcache/x`); otherwise
/// a name with a `/` is a file; anything else is an unknown preset.
pub(crate) fn resolve(source: &str) -> Result<(String, String), Error> {
    let is_yaml_file = source.ends_with(".yaml") || source.ends_with(".yml");
    if !is_yaml_file {
        if let Some(text) = preset_yaml(source) {
            return Ok((format!("preset {source}"), text.to_string()));
        }
        if !source.contains('/') {
            return Err(Error::usage(format!(
                "unknown workload preset '{source}'; available presets: {} \
                 (or give the path of a .yaml config file)",
                preset_names()
            )));
        }
    }
    let text = read_config_file(Path::new(source)).map_err(|why| {
        let hint = if is_yaml_file {
            String::new()
        } else {
            format!(" (no preset has this name either; available presets: {})", preset_names())
        };
        Error::usage(format!("config file `{source}`: {why}{hint}"))
    })?;
    Ok((source.to_string(), text))
}

fn read_config_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "not found".to_string(),
        _ => format!("cannot open: {e}"),
    })?;
    let metadata = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if metadata.is_dir() {
        return Err("is a directory, not a config file".to_string());
    }
    let mut text = String::new();
    let read = file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text);
    match read {
        Ok(n) if n as u64 > MAX_CONFIG_BYTES => {
            Err(format!("larger than {MAX_CONFIG_BYTES} bytes; a config is a small YAML file"))
        }
        Ok(_) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err("is not UTF-8 text; a config is a YAML file".to_string())
        }
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn configs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
    }

    /// Preset names of every YAML file under `dir` (recursively), skipping
    /// `configs/devices/`.
    fn yaml_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("configs/ is readable") {
            let entry = entry.expect("configs/ entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                if prefix.is_empty() && name == "devices" {
                    continue;
                }
                yaml_files(&path, &format!("{prefix}{name}/"), out);
            } else if let Some(stem) = name.strip_suffix(".yaml") {
                out.push(format!("{prefix}{stem}"));
            } else {
                assert!(!name.ends_with(".yml"), "{prefix}{name}: presets use the .yaml extension");
            }
        }
    }

    #[test]
    fn table_matches_configs_folder() {
        let mut on_disk = Vec::new();
        yaml_files(&configs_dir(), "", &mut on_disk);
        on_disk.sort();
        let table: Vec<String> = presets().into_iter().map(|p| p.name).collect();
        assert_eq!(table, on_disk, "add each configs/ file to PRESETS in presets.rs");
    }

    #[test]
    fn every_preset_has_workload_and_one_line_description() {
        for preset in presets() {
            assert!(!preset.workload.is_empty(), "{}: no workload", preset.name);
            assert!(!preset.description.is_empty(), "{}: no description", preset.name);
            assert!(!preset.description.contains('\n'), "{}", preset.name);
        }
        let raw = presets().into_iter().find(|p| p.name == "raw").expect("raw preset");
        assert_eq!(raw.workload, "raw");
        assert_eq!(raw.description, "fio-like calibration: 4 KiB random reads, QD 32, on a 256 MiB file for 10 s");
    }

    #[test]
    fn resolves_presets_and_files() {
        let (label, text) = resolve("raw").unwrap();
        assert_eq!(label, "preset raw");
        assert!(text.contains("workload: raw"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.yaml");
        std::fs::write(&file, "workload: raw\n").unwrap();
        let path = file.to_str().unwrap();
        let (label, text) = resolve(path).unwrap();
        assert_eq!(label, path);
        assert_eq!(text, "workload: raw\n");
    }

    #[test]
    fn unknown_preset_lists_available() {
        let e = resolve("nope").unwrap_err().to_string();
        assert!(e.contains("unknown workload preset 'nope'"), "{e}");
        assert!(e.contains("raw, raw-smoke"), "{e}");
        assert!(e.contains("checkpoint-smoke"), "{e}");
        let e = resolve("").unwrap_err().to_string();
        assert!(e.contains("available presets"), "{e}");
    }

    #[test]
    fn file_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let missing = missing.to_str().unwrap();
        let e = resolve(missing).unwrap_err();
        assert!(matches!(e, Error::Usage(_)));
        assert_eq!(e.to_string(), format!("config file `{missing}`: not found"));

        let e = resolve("no/such/thing").unwrap_err().to_string();
        assert!(e.contains("`no/such/thing`: not found"), "{e}");
        assert!(e.contains("available presets"), "{e}");

        let as_dir = format!("{}/", dir.path().display());
        let e = resolve(&as_dir).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");

        let binary = dir.path().join("bin.yaml");
        std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
        let e = resolve(binary.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");

        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 10) as usize]).unwrap();
        let e = resolve(big.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }
}
