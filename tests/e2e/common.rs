//! Shared helpers: run the binary in a scratch directory and read what it
//! wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_mlpdrive");

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn show(&self) -> String {
        format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `mlpdrive ARGS` with `cwd` as working directory.
pub fn mlpdrive(cwd: &Path, args: &[&str]) -> Run {
    Run::from(Command::new(BIN).args(args).current_dir(cwd).output().expect("run mlpdrive"))
}

/// A scratch directory that is removed afterwards.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("mlpdrive-e2e-").tempdir().expect("tempdir")
}

/// Every path under `dir`, relative, sorted (to prove nothing was created).
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
                if p.is_dir() {
                    walk(base, &p, out);
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The single run directory under a results root.
pub fn only_run_dir(results: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(results)
        .expect("results root exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "expected one run dir in {}: {dirs:?}", results.display());
    dirs[0].clone()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Runs a preset against `file://<dir>/data` with results in `<dir>/res`,
/// quietly, plus extra args.
pub fn run_in(dir: &Path, preset: &str, extra: &[&str]) -> Run {
    let target = format!("file://{}", dir.join("data").display());
    let results = dir.join("res");
    let mut args = vec!["run", preset, "--quiet", "--target", &target, "--results", results.to_str().unwrap()];
    args.extend_from_slice(extra);
    mlpdrive(dir, &args)
}

/// Runs `mlpdrive run PRESET --quiet --target TARGET` in `dir` with results
/// under `dir/res` and a copy at `dir/out.json`; returns the run and that
/// results.json (when one was written).
pub fn run_preset_on(dir: &Path, preset: &str, target: &str, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
    let res = dir.join("res");
    let out = dir.join("out.json");
    let mut args = vec![
        "run",
        preset,
        "--quiet",
        "--target",
        target,
        "--results",
        res.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = mlpdrive(dir, &args);
    let j = out.is_file().then(|| read_json(&out));
    (r, j)
}
