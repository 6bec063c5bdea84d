//! `mlpdrive replay TRACE --target URI`: replays a KV cache I/O trace
//! (kv-cache.py's `--io-trace-log` CSV, or one mlpdrive wrote) against any
//! target. Docs: docs/workloads/replay.md.
//!
//! load (read, filter tiers, sort by time) → plan (deletes, pre-created
//! keys, generations; no I/O) → open the target → setup (untimed) → replay
//! (timed, as fast as possible or paced) → the usual results directory with
//! workload `replay`.
//!
//! Everything the user typed, and the whole trace, is checked before the
//! target is opened: a bad row (exit 2) leaves nothing behind.

pub mod exec;
pub mod load;
pub mod plan;
pub mod source;

use serde_yaml_ng::{Mapping, Value};

use crate::cli::ReplayArgs;
use crate::config::{self, Common, EngineKind, IoConfig, RunConfig};
use crate::error::Error;
use crate::run;
use crate::target::OpenOptions;
use crate::target::uri;
use exec::ExecOptions;
use load::Tiers;
use plan::Deletes;

/// Largest `--queue-depth`.
const MAX_QUEUE_DEPTH: u32 = 1024;

pub fn replay(args: &ReplayArgs) -> Result<i32, Error> {
    // Every rank would replay the whole trace into the same place and
    // write its own results: refused until replay splits a trace by rank.
    let ranks = crate::mpi::launched_size();
    if ranks > 1 {
        return Err(Error::usage(format!(
            "mlpdrive replay does not run as an MPI job (not available yet; see docs/scale.md), and this is one of \
             {ranks} ranks: run it without mpirun (one process replays the whole trace)"
        )));
    }
    // 1. Validate all input, read and plan the trace; create nothing.
    let deletes = match (&args.capacity, args.no_delete) {
        (Some(text), false) => {
            let bytes = crate::units::parse_bytes(text).map_err(|e| Error::usage(format!("--capacity: {e}")))?;
            if bytes == 0 {
                return Err(Error::usage("--capacity: must be more than 0 bytes (or use --no-delete)"));
            }
            Deletes::Capacity(bytes)
        }
        (None, true) => Deletes::Never,
        _ => {
            return Err(Error::usage(
                "give exactly one of --capacity SIZE (delete least-recently-used keys) or --no-delete",
            ));
        }
    };
    if !(1..=MAX_QUEUE_DEPTH).contains(&args.queue_depth) {
        return Err(Error::usage(format!("--queue-depth: {} is out of range 1..={MAX_QUEUE_DEPTH}", args.queue_depth)));
    }
    if let Some(x) = args.speedup
        && !(x.is_finite() && x > 0.0)
    {
        return Err(Error::usage(format!(
            "--speedup: {x} is not a positive number (1 = trace time, 10 = ten times faster)"
        )));
    }
    let tiers = if args.tiers == "all" { Tiers::All } else { Tiers::Storage };
    let parsed = uri::parse(&args.target)?;
    let spec = uri::check(&parsed, &args.safety.flags())?;
    run::check_output_path(args.out.output.as_deref())?;
    run::check_results_root(&args.out.results)?;
    let loaded = load::load(&args.trace, tiers, args.skip_bad_rows)?;
    if loaded.rows.is_empty() {
        return Err(Error::usage(format!(
            "{}: nothing to replay: {} data rows, {} malformed, {} Tier-0 and {} Tier-1 rows not replayed{}",
            args.trace.display(),
            loaded.rows_total,
            loaded.rows_bad,
            loaded.rows_skipped_gpu_tier,
            loaded.rows_skipped_cpu_tier,
            if tiers == Tiers::Storage { " (--tiers all replays every tier)" } else { "" }
        )));
    }
    let plan = plan::plan(&loaded, deletes).map_err(|e| {
        Error::usage(format!(
            "--capacity {}: the trace reads {} keys before writing them; pre-creating them needs {} bytes, more than the capacity",
            e.capacity, e.keys, e.bytes
        ))
    })?;
    let cfg = run_config(args, deletes, tiers);
    let opts = ExecOptions {
        queue_depth: args.queue_depth as usize,
        speedup: args.speedup,
        tiers: tiers.as_str(),
        capacity_bytes: match deletes {
            Deletes::Capacity(c) => Some(c),
            Deletes::Never => None,
        },
    };

    // 2. Open the target.
    let open =
        OpenOptions { direct: cfg.common.io.direct, use_uring: cfg.common.io.engine == config::EngineKind::IoUring };
    let target = run::open_target(&spec, open, &cfg.common).map_err(|e| match e {
        // The target's advice names `mlpdrive run`'s override; replay's is a flag.
        Error::Usage(m) if m.contains("--set io.direct=false") => {
            Error::Usage(m.replace("--set io.direct=false", "--buffered"))
        }
        e => e,
    })?;
    if !args.out.quiet {
        eprintln!(
            "mlpdrive: replay of {} ({} rows, {} keys) → {}",
            args.trace.display(),
            loaded.rows.len(),
            loaded.keys.len(),
            run::where_it_writes(&spec, target.as_ref())
        );
    }

    // 3. Run with the sampler alongside (progress, time series, partial
    //    results) and write the results, as `mlpdrive run` does.
    run::execute(&cfg, &spec, target.as_ref(), &args.out, |env| exec::execute(env, &loaded, &plan, opts))
}

/// The replay's settings in the shape every result carries: the common keys
/// (seed, verify, io) plus the replay options, recorded as `config`.
fn run_config(args: &ReplayArgs, deletes: Deletes, tiers: Tiers) -> RunConfig {
    let common = Common {
        workload: "replay".into(),
        description: None,
        seed: args.seed.unwrap_or(config::DEFAULT_SEED),
        duration: None,
        verify: crate::datagen::VerifyMode::Full,
        verify_sample_every: crate::datagen::DEFAULT_SAMPLE_EVERY,
        verify_sample_key: crate::datagen::SampleKey::Seed,
        verify_sample_secret: 0,
        continue_on_error: args.continue_on_error,
        io: IoConfig { direct: !args.buffered, engine: EngineKind::IoUring, timeout: config::DEFAULT_IO_TIMEOUT },
        progress_interval: config::DEFAULT_PROGRESS_INTERVAL,
        s3: None,
    };
    let mut m = Mapping::new();
    m.insert("workload".into(), "replay".into());
    m.insert("trace".into(), args.trace.display().to_string().into());
    m.insert("seed".into(), common.seed.into());
    m.insert("io".into(), {
        let mut io = Mapping::new();
        io.insert("direct".into(), common.io.direct.into());
        Value::Mapping(io)
    });
    match deletes {
        Deletes::Capacity(c) => m.insert("capacity".into(), crate::units::format_bytes(c).into()),
        Deletes::Never => m.insert("no_delete".into(), true.into()),
    };
    m.insert("queue_depth".into(), args.queue_depth.into());
    if let Some(x) = args.speedup {
        m.insert("speedup".into(), x.into());
    }
    m.insert("tiers".into(), tiers.as_str().into());
    m.insert("skip_bad_rows".into(), args.skip_bad_rows.into());
    m.insert("continue_on_error".into(), args.continue_on_error.into());
    RunConfig {
        source: format!("trace {}", args.trace.display()),
        common,
        workload_keys: Mapping::new(),
        effective: Value::Mapping(m),
    }
}
