//! Results on disk: run ids, atomic writes, the per-run directory, and
//! finding a result again for `mlpdrive report`.
//!
//! Every file is written to a temporary name in the same directory, fsynced
//! and renamed over the final name, so a reader (or a run killed mid-write)
//! sees either the previous complete file or the new complete file, never a
//! torn one. That is what makes the periodic partial flush safe.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CONFIG_FILE, RESULTS_FILE, RunResult, SCHEMA_VERSION, SUMMARY_FILE};
use crate::error::Error;

/// Distinguishes temporary files and run ids made by one process.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A run id: `<UTC start, basic ISO 8601>-<workload>-<4 hex>`, e.g.
/// `20261122T073700Z-raw-3f9c`. Sorting ids sorts runs by start time. The
/// hex tag mixes the process id, the sub-second time and a per-process
/// sequence number, so two runs started in the same second get different
/// ids (a 1 in 65 536 clash between processes remains, and is caught:
/// [`ResultsDir`] refuses to reuse an existing run directory).
pub fn new_run_id(workload: &str, now: jiff::Timestamp) -> String {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let seed = (u64::from(std::process::id()) << 32)
        ^ u64::from(now.subsec_nanosecond().unsigned_abs())
        ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let tag = splitmix64(seed) & 0xFFFF;
    let name: String =
        workload.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    format!("{}-{name}-{tag:04x}", now.strftime("%Y%m%dT%H%M%SZ"))
}

/// The splitmix64 finaliser: spreads every input bit over the output.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_bytes_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically: temporary file in the same
/// directory, fsync, rename over `path`, fsync of the directory. On failure
/// the temporary file is removed and `path` is untouched.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.tmp-{}-{seq}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Makes the rename itself durable. Some filesystems refuse to fsync a
    // directory; the file's content is already safe, so that is not an error.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `<root>/<run_id>/`: results.json, summary.txt and config.yaml of one run.
///
/// Nothing is created until the first write. The first write creates the
/// root (and its missing parents) and then the run directory itself, which
/// must not exist yet: a run never writes into another run's directory.
/// Methods take `&self` so a sampler thread can flush partial results while
/// the main thread holds the same `ResultsDir`.
#[derive(Debug)]
pub struct ResultsDir {
    root: PathBuf,
    dir: PathBuf,
    created: Mutex<bool>,
}

impl ResultsDir {
    pub fn new(root: &Path, run_id: &str) -> ResultsDir {
        ResultsDir { root: root.to_path_buf(), dir: root.join(run_id), created: Mutex::new(false) }
    }

    /// The run directory (which may not exist yet).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes results.json; returns its path.
    pub fn write_results(&self, r: &RunResult) -> io::Result<PathBuf> {
        let p = self.file(RESULTS_FILE)?;
        write_json_atomic(&p, r)?;
        Ok(p)
    }

    /// A periodic flush while the run goes on (status `running`): the same
    /// results.json, so a killed run leaves its latest state behind.
    pub fn write_partial(&self, r: &RunResult) -> io::Result<PathBuf> {
        self.write_results(r)
    }

    /// Writes summary.txt (the rendering of `r`); returns its path.
    pub fn write_summary(&self, r: &RunResult) -> io::Result<PathBuf> {
        let p = self.file(SUMMARY_FILE)?;
        write_bytes_atomic(&p, super::summary::render_text(r).as_bytes())?;
        Ok(p)
    }

    /// Writes config.yaml, the effective config as YAML; returns its path.
    pub fn write_config(&self, config_yaml: &str) -> io::Result<PathBuf> {
        let p = self.file(CONFIG_FILE)?;
        write_bytes_atomic(&p, config_yaml.as_bytes())?;
        Ok(p)
    }

    /// Writes rank `rank`'s own result of an MPI job (`rank-<r>.json`).
    pub fn write_rank(&self, rank: usize, r: &RunResult) -> io::Result<PathBuf> {
        let p = self.file(&super::ranks::rank_file(rank))?;
        write_json_atomic(&p, r)?;
        Ok(p)
    }

    /// The final write of a run: config.yaml, summary.txt, then results.json
    /// last (a results.json with a final status means the rest is there).
    /// Returns the run directory.
    pub fn write_all(&self, r: &RunResult, config_yaml: &str) -> io::Result<PathBuf> {
        self.write_config(config_yaml)?;
        self.write_summary(r)?;
        self.write_results(r)?;
        Ok(self.dir.clone())
    }

    fn file(&self, name: &str) -> io::Result<PathBuf> {
        self.create()?;
        Ok(self.dir.join(name))
    }

    fn create(&self) -> io::Result<()> {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        if *created {
            return Ok(());
        }
        fs::create_dir_all(&self.root)?;
        fs::create_dir(&self.dir).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    e.kind(),
                    format!(
                        "run directory {} already exists; not writing into another run's results",
                        self.dir.display()
                    ),
                )
            } else {
                e
            }
        })?;
        *created = true;
        Ok(())
    }
}

/// Reads a result for `mlpdrive report`. `path` may be a results.json, a run
/// directory holding one, or a results root holding run directories (the
/// newest run is chosen, by `started_at`, then by name). Returns the result
/// and the results.json actually read, so the caller can say which it was.
///
/// Every failure is a usage error (exit 2) naming the path and what to do.
pub fn load(path: &Path) -> Result<(RunResult, PathBuf), Error> {
    let meta = fs::metadata(path).map_err(|e| {
        Error::usage(format!(
            "{}: {e}; give a results.json, a run directory, or a results directory (default ./mlpdrive-results)",
            path.display()
        ))
    })?;
    let file = if meta.is_dir() {
        let direct = path.join(RESULTS_FILE);
        if direct.is_file() { direct } else { newest_run(path)? }
    } else {
        path.to_path_buf()
    };
    let result = read_result(&file)?;
    Ok((result, file))
}

/// Just the fields needed to pick the newest run of a results root.
#[derive(serde::Deserialize)]
struct Header {
    schema_version: Option<u64>,
    mlpdrive_version: Option<String>,
    started_at: Option<String>,
}

fn newest_run(root: &Path) -> Result<PathBuf, Error> {
    let entries =
        fs::read_dir(root).map_err(|e| Error::usage(format!("{}: cannot list directory: {e}", root.display())))?;
    let mut best: Option<(Option<jiff::Timestamp>, String, PathBuf)> = None;
    let mut skipped = 0usize;
    for entry in entries.flatten() {
        let file = entry.path().join(RESULTS_FILE);
        if !file.is_file() {
            continue;
        }
        let header = fs::read(&file).ok().and_then(|b| serde_json::from_slice::<Header>(&b).ok());
        let Some(h) = header.filter(|h| h.schema_version.is_some() && h.mlpdrive_version.is_some()) else {
            skipped += 1;
            continue;
        };
        let started = h.started_at.and_then(|s| s.parse::<jiff::Timestamp>().ok());
        let name = entry.file_name().to_string_lossy().into_owned();
        let candidate = (started, name, file);
        if best.as_ref().is_none_or(|b| (&candidate.0, &candidate.1) > (&b.0, &b.1)) {
            best = Some(candidate);
        }
    }
    match best {
        Some((_, _, file)) => Ok(file),
        None if skipped > 0 => Err(Error::usage(format!(
            "{}: no readable mlpdrive result: {skipped} run director{} with a results.json that is not an mlpdrive result; give a results.json path",
            root.display(),
            if skipped == 1 { "y" } else { "ies" }
        ))),
        None => Err(Error::usage(format!(
            "{}: no {RESULTS_FILE} here and no run directory with one inside; give a results.json, a run directory, or the --results directory of a run",
            root.display()
        ))),
    }
}

fn read_result(file: &Path) -> Result<RunResult, Error> {
    let shown = file.display();
    let text = fs::read(file).map_err(|e| Error::usage(format!("{shown}: cannot read: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::usage(format!("{shown}: not an mlpdrive results.json (not valid JSON: {e})")))?;
    let version = value.get("schema_version").and_then(serde_json::Value::as_u64);
    let is_ours = value.get("mlpdrive_version").is_some_and(serde_json::Value::is_string);
    let version = match version {
        Some(v) if is_ours => v,
        _ => {
            return Err(Error::usage(format!(
                "{shown}: not an mlpdrive results.json (no `schema_version` and `mlpdrive_version` fields)"
            )));
        }
    };
    if version > u64::from(SCHEMA_VERSION) {
        return Err(Error::usage(format!(
            "{shown}: schema_version {version} was written by a newer mlpdrive; this mlpdrive {} reads up to schema_version {SCHEMA_VERSION}; upgrade mlpdrive to read it",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if version == 0 {
        return Err(Error::usage(format!("{shown}: schema_version 0 is not a valid mlpdrive schema version")));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        Error::usage(format!("{shown}: damaged mlpdrive results.json: field `{}`: {}", e.path(), e.inner()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testutil::sample_result;

    fn usage_message(r: Result<(RunResult, PathBuf), Error>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            Err(other) => panic!("expected a usage error, got {other:?}"),
            Ok((_, p)) => panic!("expected an error, loaded {}", p.display()),
        }
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn run_id_shape_and_uniqueness_within_a_second() {
        let now: jiff::Timestamp = "2026-11-22T07:37:00.25Z".parse().expect("timestamp");
        let a = new_run_id("raw", now);
        let b = new_run_id("raw", now);
        assert!(a.starts_with("20261122T073700Z-raw-"), "{a}");
        let tag = a.rsplit('-').next().expect("tag");
        assert_eq!(tag.len(), 4);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b, "same second, same process, different ids");
        assert!(new_run_id("my/wl", now).contains("-my_wl-"));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("out.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1})).expect("first write");
        write_json_atomic(&p, &serde_json::json!({"a": 2})).expect("second write");
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).expect("read")).expect("json");
        assert_eq!(v["a"], 2);
        assert_eq!(dir_entries(tmp.path()), ["out.json"]);
    }

    #[test]
    fn failed_atomic_write_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The destination is a non-empty directory: rename must fail.
        let p = tmp.path().join("taken");
        fs::create_dir(&p).expect("mkdir");
        fs::write(p.join("x"), b"x").expect("write");
        assert!(write_bytes_atomic(&p, b"data").is_err());
        assert_eq!(dir_entries(tmp.path()), ["taken"]);
        assert!(write_bytes_atomic(Path::new("/"), b"data").is_err(), "no file name");
    }

    #[test]
    fn results_dir_creates_lazily_and_writes_three_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("nested").join("results");
        let r = sample_result();
        let dir = ResultsDir::new(&root, &r.run_id);
        assert!(!root.exists(), "nothing is created before the first write");
        let mut partial = r.clone();
        partial.status = crate::results::RunStatus::Running;
        dir.write_partial(&partial).expect("partial");
        let written = dir.write_all(&r, "workload: raw\n").expect("write_all");
        assert_eq!(written, root.join(&r.run_id));
        assert_eq!(dir_entries(&written), ["config.yaml", "results.json", "summary.txt"]);
        assert_eq!(fs::read_to_string(written.join("config.yaml")).expect("yaml"), "workload: raw\n");
        assert!(fs::read_to_string(written.join("summary.txt")).expect("summary").contains("workload"));
        let (back, from) = load(&written).expect("load dir");
        assert_eq!(back, r, "the final write replaced the partial one");
        assert_eq!(from, written.join("results.json"));
    }

    #[test]
    fn results_dir_refuses_an_existing_run_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("run-1")).expect("mkdir");
        let dir = ResultsDir::new(tmp.path(), "run-1");
        let e = dir.write_results(&sample_result()).expect_err("must refuse");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("run-1"), "{e}");
        assert_eq!(dir_entries(&tmp.path().join("run-1")), Vec::<String>::new());
    }

    #[test]
    fn load_from_file_dir_and_root_picks_the_newest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mut old = sample_result();
        old.run_id = "20261122T070000Z-raw-0001".into();
        old.started_at = "2026-11-22T07:00:00Z".into();
        let mut new = sample_result();
        // Named so it sorts first: started_at decides, not the name.
        new.run_id = "0-renamed".into();
        new.started_at = "2026-11-22T08:00:00Z".into();
        for r in [&old, &new] {
            ResultsDir::new(root, &r.run_id).write_results(r).expect("write");
        }
        // Not a run, and a run dir whose JSON is not ours: both ignored.
        fs::create_dir(root.join("empty")).expect("mkdir");
        fs::create_dir(root.join("zzz-other")).expect("mkdir");
        fs::write(root.join("zzz-other/results.json"), b"{\"hello\": 1}").expect("write");

        let (r, from) = load(root).expect("root");
        assert_eq!(r.run_id, "0-renamed");
        assert_eq!(from, root.join("0-renamed").join("results.json"));

        let (r, _) = load(&root.join(&old.run_id)).expect("dir");
        assert_eq!(r, old);
        let file = root.join(&old.run_id).join("results.json");
        let (r, from) = load(&file).expect("file");
        assert_eq!((r, from), (old, file));
    }

    #[test]
    fn load_rejects_missing_and_empty_paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = usage_message(load(&tmp.path().join("nope")));
        assert!(m.contains("nope") && m.contains("results.json"), "{m}");
        let m = usage_message(load(tmp.path()));
        assert!(m.contains("no results.json"), "{m}");
    }

    #[test]
    fn load_rejects_json_that_is_not_ours() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("fio.json");
        fs::write(&p, br#"{"fio version": "fio-3.36", "jobs": []}"#).expect("write");
        let m = usage_message(load(&p));
        assert!(m.contains("not an mlpdrive results.json"), "{m}");
        fs::write(&p, b"not json at all").expect("write");
        let m = usage_message(load(&p));
        assert!(m.contains("not an mlpdrive results.json") && m.contains("not valid JSON"), "{m}");
        // A root whose only run holds foreign JSON says so.
        fs::create_dir(tmp.path().join("run")).expect("mkdir");
        fs::write(tmp.path().join("run/results.json"), b"[]").expect("write");
        fs::remove_file(&p).expect("rm");
        let m = usage_message(load(tmp.path()));
        assert!(m.contains("not an mlpdrive result"), "{m}");
    }

    #[test]
    fn load_rejects_a_newer_schema_version() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("results.json");
        let mut v = serde_json::to_value(sample_result()).expect("value");
        v["schema_version"] = 99.into();
        fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
        let m = usage_message(load(&p));
        assert!(m.contains("schema_version 99") && m.contains("newer mlpdrive"), "{m}");
    }

    #[test]
    fn load_names_the_damaged_field() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("results.json");
        let mut v = serde_json::to_value(sample_result()).expect("value");
        v["errors"]["count"] = "many".into();
        fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
        let m = usage_message(load(&p));
        assert!(m.contains("errors.count"), "{m}");
    }
}
