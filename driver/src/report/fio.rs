//! `mlpdrive report --fio-job`: a fio job file that reproduces a run's
//! observed I/O mix, so the storage can be cross-checked with fio.
//!
//! What comes from the run's measured figures (its latency series):
//! - the read/write mix (`rwmixread`, from op counts),
//! - block sizes (`bs=READ,WRITE`: each kind's mean op size, rounded up to
//!   4 KiB because O_DIRECT needs aligned sizes),
//! - queue depth (`iodepth`: the mean number of ops in flight, by Little's
//!   law Σ ops × mean latency ÷ measured window, per job),
//! - durability (`fsync=N`: writes per commit, when the run committed).
//!
//! Series of the `measure` phase are used when there are any (raw, training
//! and vdb runs measure there; earlier phases lay data out); otherwise every
//! series of the run (checkpoint save/load, KV cache prefill/decode/evict all
//! run inside the window).
//!
//! What comes from the run's config or the workload's design, not from
//! observation, and is said so in the file: sequential or random access
//! (raw: its `rw`; vdb: random; the others read and write whole objects in
//! order), the data footprint (`size`), the engine (`ioengine`, `direct` as
//! the run used them) and the place (`directory` of a `file://` target).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::metrics::at;
use crate::error::Error;
use crate::results::RunResult;

const ALIGN: u64 = 4096;
const MIB: u64 = 1 << 20;

/// Observed totals of the series the job reproduces.
#[derive(Debug, Default, Clone, PartialEq)]
struct Mix {
    phase: String,
    read_ops: u64,
    read_bytes: u64,
    write_ops: u64,
    write_bytes: u64,
    commit_ops: u64,
    /// Σ ops × mean latency over reads and writes, seconds.
    busy_s: f64,
}

fn observed_mix(r: &RunResult) -> Mix {
    let measure = r.series.iter().any(|s| s.phase == "measure");
    let mut m = Mix { phase: if measure { "measure".into() } else { "all phases".into() }, ..Mix::default() };
    for s in r.series.iter().filter(|s| !measure || s.phase == "measure") {
        match s.op.as_str() {
            "read" => {
                m.read_ops += s.ops;
                m.read_bytes += s.bytes;
            }
            "write" => {
                m.write_ops += s.ops;
                m.write_bytes += s.bytes;
            }
            _ => {
                m.commit_ops += s.ops;
                continue;
            }
        }
        m.busy_s += s.ops as f64 * s.latency_us.mean / 1e6;
    }
    m
}

fn mean_size(bytes: u64, ops: u64) -> u64 {
    bytes.checked_div(ops).map_or(0, |mean| mean.div_ceil(ALIGN).max(1) * ALIGN)
}

/// Sequential or random, and where that came from.
fn pattern(r: &RunResult) -> (bool, String) {
    if r.workload == "raw" {
        let rw = at(&r.summary, "rw").and_then(Value::as_str).unwrap_or("");
        return (rw.starts_with("rand"), format!("the run's rw={rw}"));
    }
    match r.workload.as_str() {
        "vdb" => (true, "vdb beam search reads index sectors at random".into()),
        w => (false, format!("the {w} workload reads and writes whole objects in order")),
    }
}

/// The data footprint to lay out, and where it came from.
fn footprint(r: &RunResult, mix: &Mix) -> (u64, String) {
    let from_summary = match r.workload.as_str() {
        "raw" => Some("size"),
        "training" => Some("dataset_bytes"),
        "checkpoint" => Some("checkpoint_bytes"),
        "vdb" => Some("index_bytes"),
        "kvcache" => Some("extras.storage_capacity_bytes"),
        _ => None,
    };
    if let Some(key) = from_summary
        && let Some(b) = at(&r.summary, key).and_then(Value::as_u64).filter(|b| *b > 0)
    {
        return (b.div_ceil(MIB) * MIB, format!("the run's {key}"));
    }
    let moved = mix.read_bytes.max(mix.write_bytes).max(MIB);
    (moved.div_ceil(MIB) * MIB, "bytes moved by the run".into())
}

/// The job file for `r`, read from `path`.
pub fn job_file(r: &RunResult, path: &Path) -> Result<String, Error> {
    let mix = observed_mix(r);
    let ops = mix.read_ops + mix.write_ops;
    if ops == 0 {
        return Err(Error::usage(format!(
            "{}: the run completed no reads or writes; there is no I/O mix to reproduce",
            path.display()
        )));
    }
    if r.duration_s <= 0.0 {
        return Err(Error::usage(format!("{}: the run has no measured window (duration_s 0)", path.display())));
    }
    let jobs = if r.workload == "raw" { at(&r.summary, "jobs").and_then(Value::as_u64).unwrap_or(1).max(1) } else { 1 };
    let depth_total = mix.busy_s / r.duration_s;
    let iodepth = ((depth_total / jobs as f64).round() as u64).clamp(1, 4096);
    let rwmixread = (100.0 * mix.read_ops as f64 / ops as f64).round() as u64;
    let (random, pattern_why) = pattern(r);
    let rw = match (mix.read_ops > 0, mix.write_ops > 0, random) {
        (true, false, true) => "randread",
        (true, false, false) => "read",
        (false, true, true) => "randwrite",
        (false, true, false) => "write",
        (_, _, true) => "randrw",
        (_, _, false) => "rw",
    };
    let (read_bs, write_bs) = (mean_size(mix.read_bytes, mix.read_ops), mean_size(mix.write_bytes, mix.write_ops));
    let bs = match (read_bs, write_bs) {
        (r, 0) => r.to_string(),
        (0, w) => format!("{ALIGN},{w}"),
        (r, w) => format!("{r},{w}"),
    };
    let (size, size_why) = footprint(r, &mix);
    let ioengine = match r.io_mode.engine.as_str() {
        "sync" => "psync",
        _ => "io_uring",
    };
    let runtime_s = r.duration_s.round().max(1.0) as u64;

    let mut s = String::new();
    let _ = writeln!(s, "; fio job written by mlpdrive {} report --fio-job", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "; from run {} ({}, {}), {}", r.run_id, r.workload, r.source, path.display());
    let _ = writeln!(s, "; observed in {} over {:.3} s:", mix.phase, r.duration_s);
    let _ = writeln!(
        s,
        ";   reads  {} ops, {} bytes (mean {} bytes/op)",
        mix.read_ops,
        mix.read_bytes,
        mix.read_bytes.checked_div(mix.read_ops).unwrap_or(0)
    );
    let _ = writeln!(
        s,
        ";   writes {} ops, {} bytes (mean {} bytes/op)",
        mix.write_ops,
        mix.write_bytes,
        mix.write_bytes.checked_div(mix.write_ops).unwrap_or(0)
    );
    let _ = writeln!(
        s,
        ";   commits {}; mean ops in flight {depth_total:.2} (ops x mean latency / window)",
        mix.commit_ops
    );
    let _ = writeln!(s, "; block sizes are the mean op sizes rounded up to {ALIGN} bytes (O_DIRECT alignment)");
    let _ = writeln!(s, "; not observed: access order ({pattern_why}); size ({size_why})");
    if !matches!(r.io_mode.engine.as_str(), "io_uring" | "sync") {
        let _ = writeln!(
            s,
            "; the run used the {} engine (not a local file or device): point directory= at real storage",
            r.io_mode.engine
        );
    }
    s.push_str("\n[global]\n");
    let _ = writeln!(s, "ioengine={ioengine}");
    let _ = writeln!(s, "direct={}", u8::from(r.io_mode.direct));
    s.push_str("time_based=1\n");
    let _ = writeln!(s, "runtime={runtime_s}");
    s.push_str("group_reporting=1\n");
    match r.target.kind.as_str() {
        "file" => {
            let dir = r.target.location.strip_prefix("file://").unwrap_or(&r.target.location);
            let _ = writeln!(s, "; the run's target directory (fio lays out its own file there)\ndirectory={dir}");
        }
        "dev" => {
            let dev = r.target.location.strip_prefix("dev://").unwrap_or(&r.target.location);
            let _ = writeln!(
                s,
                "; the run's device; fio OVERWRITES it: uncomment only if that is intended\n;filename={dev}"
            );
        }
        _ => s.push_str("; set directory= to the storage under test\n"),
    }
    let _ = writeln!(s, "\n[mlpdrive-{}]", r.workload);
    let _ = writeln!(s, "rw={rw}");
    if rw.ends_with("rw") {
        let _ = writeln!(s, "rwmixread={rwmixread}");
    }
    let _ = writeln!(s, "bs={bs}");
    let _ = writeln!(s, "iodepth={iodepth}");
    let _ = writeln!(s, "numjobs={jobs}");
    let _ = writeln!(s, "size={size}");
    if mix.commit_ops > 0 && mix.write_ops > 0 {
        let _ = writeln!(s, "fsync={}", (mix.write_ops as f64 / mix.commit_ops as f64).round().max(1.0) as u64);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::SeriesRecord;
    use crate::results::testutil::sample_result;

    fn line<'a>(job: &'a str, key: &str) -> Option<&'a str> {
        job.lines().find_map(|l| l.strip_prefix(&format!("{key}=")))
    }

    #[test]
    fn raw_randread_job_has_the_observed_mix() {
        let r = sample_result();
        let job = job_file(&r, Path::new("r.json")).expect("job");
        assert_eq!(line(&job, "rw"), Some("randread"));
        assert_eq!(line(&job, "bs"), Some("4096"));
        // 1,048,576 ops x 95.5 us mean over 10 s = 10.01 in flight.
        assert_eq!(line(&job, "iodepth"), Some("10"));
        assert_eq!(line(&job, "ioengine"), Some("io_uring"));
        assert_eq!(line(&job, "direct"), Some("1"));
        assert_eq!(line(&job, "runtime"), Some("10"));
        assert_eq!(line(&job, "directory"), Some("/mnt/nvme"));
        assert_eq!(line(&job, "rwmixread"), None, "no mix for a read-only job");
        assert_eq!(line(&job, "fsync"), None);
    }

    #[test]
    fn mixed_writes_with_commits_get_rwmix_bs_pair_and_fsync() {
        let mut r = sample_result();
        r.workload = "checkpoint".into();
        r.summary = serde_json::json!({ "checkpoint_bytes": 3u64 << 30 });
        r.target.kind = "emu".into();
        r.io_mode.engine = "emu".into();
        let s = |phase: &str, op: &str, ops: u64, bytes: u64, mean: f64| SeriesRecord {
            phase: phase.into(),
            op: op.into(),
            tier: "storage".into(),
            ops,
            bytes,
            latency_us: crate::recorder::LatencyUs { mean, ..Default::default() },
        };
        r.series = vec![
            s("save", "write", 300, 300 * 4 * MIB, 10_000.0),
            s("save", "commit", 10, 0, 500.0),
            s("load", "read", 100, 100 * 4 * MIB - 100, 5_000.0),
        ];
        let job = job_file(&r, Path::new("r.json")).expect("job");
        assert_eq!(line(&job, "rw"), Some("rw"), "sequential for checkpoint");
        assert_eq!(line(&job, "rwmixread"), Some("25"));
        assert_eq!(line(&job, "bs"), Some("4194304,4194304"), "read mean rounded up to 4 KiB");
        assert_eq!(line(&job, "fsync"), Some("30"));
        assert_eq!(line(&job, "size"), Some(&*(3u64 << 30).to_string()));
        // (300 x 10 ms + 100 x 5 ms) / 10 s = 0.35 -> at least 1.
        assert_eq!(line(&job, "iodepth"), Some("1"));
        assert!(job.contains("; set directory= to the storage under test"), "{job}");
        assert!(job.contains("the run used the emu engine"), "{job}");
    }

    #[test]
    fn a_run_without_reads_or_writes_is_refused() {
        let mut r = sample_result();
        r.series.clear();
        let e = job_file(&r, Path::new("x/results.json")).expect_err("nothing to reproduce");
        assert!(e.to_string().contains("no reads or writes"), "{e}");
    }
}
