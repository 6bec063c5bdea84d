//! `mlpdrive run`: validate everything → open the target → run the
//! workload with a sampler thread (progress, 1 s time series, partial
//! results) → write results → exit code.
//!
//! Everything the user typed is validated before anything is created on
//! disk, so a usage error (exit 2) never leaves a directory behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{ResultsArgs, RunArgs};
use crate::clock::Clock;
use crate::config::{self, RunConfig};
use crate::datagen::{SampleKey, VerifyMode};
use crate::error::{EXIT_FAILED, EXIT_OK, Error};
use crate::mpi::World;
use crate::progress::{Progress, Rates};
use crate::recorder::{CounterSnapshot, LiveCounters, Recorder, TimeSeries};
use crate::results::{self, ErrorRecord, ResultsDir, RunResult, RunStatus, TargetRecord, VerifyRecord};
use crate::rusage;
use crate::target::uri::{self, SafetyFlags, TargetSpec, TargetUri};
use crate::target::{IoMode, OpenOptions, Target};
use crate::workload::{self, PhaseState, RunEnv, WorkloadOutput};

/// A workload's config, validated.
enum Plan {
    Raw(config::raw::RawConfig),
    Kvcache(Box<crate::workload::kvcache::config::KvConfig>, Option<Box<crate::workload::kvcache::feed::Feed>>),
    Checkpoint(config::checkpoint::CheckpointConfig),
    Training(Box<config::training::TrainingConfig>),
    Vdb(Box<config::vdb::VdbConfig>),
}

pub fn run(args: &RunArgs) -> Result<i32, Error> {
    let world = World::init()?;
    if world.is_multi() {
        // Ranks of an MPI job: every rank runs, rank 0 merges (job.rs).
        return crate::job::run(&world, args);
    }
    let outcome = prepare(args, &world).and_then(|mut p| {
        let ex = p.execute(&args.out, &world)?;
        write_outputs(&args.out, &ex)
    });
    world.finalize();
    outcome
}

/// A validated run with its target open, ready to execute.
pub(crate) struct Prepared {
    pub(crate) cfg: RunConfig,
    plan: Plan,
    spec: TargetSpec,
    target: Box<dyn Target>,
}

/// Steps 1 and 2: validate all input (creating nothing), then open the
/// target (which creates the work directory).
pub(crate) fn prepare(args: &RunArgs, world: &World) -> Result<Prepared, Error> {
    let mut cfg = config::load(&args.workload, &args.set, args.seed, args.duration.as_deref())?;
    let plan = plan(&mut cfg, world)?;
    let target_str = args.target.as_deref().unwrap_or(uri::DEFAULT_TARGET);
    let parsed = uri::parse(target_str)?;
    let spec = uri::check(&parsed, &SafetyFlags { allow_raw_device: args.allow_raw_device, force: args.force })?;
    check_virtual_clock(&spec, &plan, world)?;
    check_output_path(args.out.output.as_deref())?;
    check_results_root(&args.out.results)?;

    let opts =
        OpenOptions { direct: cfg.common.io.direct, use_uring: cfg.common.io.engine == config::EngineKind::IoUring };
    let target = open_target(&spec, opts, &cfg.common)?;
    if !args.out.quiet && world.is_root() {
        eprintln!("mlpdrive: {} → {}", describe(&cfg), where_it_writes(&spec, target.as_ref()));
    }
    Ok(Prepared { cfg, plan, spec, target })
}

impl Prepared {
    /// Steps 3 and 4: run the workload and build this process's result.
    pub(crate) fn execute(&mut self, out: &ResultsArgs, world: &World) -> Result<Executed, Error> {
        let (cfg, spec, plan) = (&self.cfg, &self.spec, &mut self.plan);
        execute_rank(cfg, spec, self.target.as_ref(), out, world, |env| match plan {
            Plan::Raw(raw) => workload::raw::run(env, raw),
            Plan::Kvcache(kv, feed) => {
                let free = match &spec.uri {
                    TargetUri::File { dir } => workload::kvcache::free_bytes(dir),
                    _ => None,
                };
                workload::kvcache::run(env, kv, free, feed.take().map(|f| *f))
            }
            Plan::Checkpoint(ck) => workload::checkpoint::run(env, ck),
            Plan::Training(t) => workload::training::run(env, t),
            Plan::Vdb(v) => workload::vdb::run(env, v),
        })
    }

    /// The job's `summary` from every rank's (rank order) at MPI rank 0.
    /// `hosts` are every rank's host names.
    pub(crate) fn merge_summaries(
        &self,
        summaries: &[serde_json::Value],
        recorder: &crate::recorder::Recorder,
        window_s: f64,
        hosts: &[String],
    ) -> serde_json::Value {
        match &self.plan {
            Plan::Raw(_) => workload::raw::merge_summary(summaries, recorder, window_s),
            Plan::Checkpoint(ck) => workload::checkpoint::merge_summary(ck, summaries),
            Plan::Kvcache(..) => workload::kvcache::merge_summary(summaries),
            Plan::Training(_) => workload::training::ranks::merge_summary(summaries, recorder, hosts, window_s),
            Plan::Vdb(_) => workload::vdb::ranks::merge_summary(summaries),
        }
    }
}

/// One process's finished run: its result (not yet written) and the
/// recorder behind its series (which an MPI job's rank 0 merges).
pub(crate) struct Executed {
    pub(crate) result: RunResult,
    pub(crate) recorder: Recorder,
    pub(crate) dir: ResultsDir,
    pub(crate) config_yaml: String,
}

/// Runs `work` on the opened target with a sampler thread alongside
/// (progress, 1 s time series, partial results), then writes the results
/// directory (and `--output`), prints the summary and returns the exit code.
/// `mlpdrive replay` ends here.
pub(crate) fn execute(
    cfg: &RunConfig,
    spec: &TargetSpec,
    target: &dyn Target,
    out: &ResultsArgs,
    work: impl FnOnce(&RunEnv) -> Result<WorkloadOutput, Error>,
) -> Result<i32, Error> {
    let ex = execute_rank(cfg, spec, target, out, &World::single(), work)?;
    write_outputs(out, &ex)
}

/// Writes the results directory (and `--output`), prints the summary and
/// returns the exit code.
pub(crate) fn write_outputs(out: &ResultsArgs, ex: &Executed) -> Result<i32, Error> {
    let result = &ex.result;
    let written = ex
        .dir
        .write_all(result, &ex.config_yaml)
        .map_err(|e| Error::failed(format!("cannot write results under {}: {e}", out.results.display())))?;
    if let Some(path) = &out.output {
        results::write_json_atomic(path, result)
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(finish(out, result, &written, &format!("mlpdrive: results in {}", written.display())))
}

/// The end of every run that wrote its results: the summary on stdout, the
/// `where` line on stderr unless --quiet, a failure line on stderr even with
/// --quiet (a script that discards stdout still learns why the run exited
/// non-zero), and the exit code.
pub(crate) fn finish(out: &ResultsArgs, result: &RunResult, written: &Path, where_line: &str) -> i32 {
    print!("{}", results::summary::render_text(result));
    if !out.quiet {
        eprintln!("{where_line}");
    }
    if result.status != RunStatus::Ok {
        eprintln!("{}", failure_line(result, written));
    }
    if result.status == RunStatus::Ok { EXIT_OK } else { EXIT_FAILED }
}

/// One stderr line for a run that did not end ok: its status, the I/O and
/// verification error counts with the first of each, and where the results are.
fn failure_line(result: &RunResult, written: &Path) -> String {
    let mut line = format!("mlpdrive: run {}: {} I/O errors", result.status.as_str(), result.errors.count);
    if let Some(first) = &result.errors.first {
        line.push_str(&format!(" (first: {first})"));
    }
    line.push_str(&format!(", {} verify errors", result.verify.errors));
    if let Some(first) = &result.verify.first {
        line.push_str(&format!(" (first: {first})"));
    }
    line.push_str(&format!("; results in {}", written.display()));
    line
}

/// Runs `work` with a sampler alongside and builds this process's result.
/// Only MPI rank 0 (or a process alone) shows progress and flushes partial
/// results.
fn execute_rank(
    cfg: &RunConfig,
    spec: &TargetSpec,
    target: &dyn Target,
    out: &ResultsArgs,
    world: &World,
    work: impl FnOnce(&RunEnv) -> Result<WorkloadOutput, Error>,
) -> Result<Executed, Error> {
    // A simulated device brings its own (virtual) clock; otherwise the host's.
    let clock = target.clock().unwrap_or_else(Clock::real);

    // Run with a sampler alongside.
    let run_id = results::new_run_id(&cfg.common.workload, jiff::Timestamp::now());
    let started_at = jiff::Timestamp::now();
    let usage0 = rusage::self_usage();
    let live = Arc::new(LiveCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    crate::signal::install(&stop);
    let phase = Arc::new(PhaseState::default());
    phase.set("setup");
    let dir = ResultsDir::new(&out.results, &run_id);
    let skeleton = skeleton(cfg, spec, target, &run_id, started_at);
    let sampler_done = Arc::new(AtomicBool::new(false));
    let series = Arc::new(Mutex::new(TimeSeries::new()));
    if clock.is_virtual() {
        sample_in_virtual_time(&clock, &phase, &live, &series);
    }
    let mut target_notes = Vec::new();
    let quiet = out.quiet || !world.is_root();
    let partials = world.is_root().then_some(&dir);
    let outcome = std::thread::scope(|s| {
        let sampler = {
            let (live, phase, done, series) = (live.clone(), phase.clone(), sampler_done.clone(), series.clone());
            let (common, skeleton) = (&cfg.common, &skeleton);
            let clock = clock.clone();
            s.spawn(move || sample(&live, &phase, &done, &series, common, quiet, partials, skeleton, &clock))
        };
        let env = RunEnv {
            target,
            common: &cfg.common,
            live: live.clone(),
            stop: stop.clone(),
            phase,
            clock: clock.clone(),
            world,
        };
        let result = work(&env);
        target_notes.extend(target.finish());
        sampler_done.store(true, Ordering::SeqCst);
        sampler.join().expect("sampler thread panicked");
        result
    });
    let usage = rusage::self_usage().since(&usage0);

    // Results.
    let mut result = skeleton;
    result.cpu_user_s = usage.cpu_user_s;
    result.cpu_sys_s = usage.cpu_sys_s;
    result.peak_rss_bytes = usage.peak_rss_bytes;
    result.timeseries = series.lock().expect("series poisoned").points().to_vec();
    let mut recorder = Recorder::new();
    match outcome {
        Ok(output) => {
            recorder = output.recorder.clone();
            fill_from_output(&mut result, output, crate::signal::interrupted(), cfg.common.verify_sample_key);
        }
        Err(Error::Failed(msg)) => {
            result.status = RunStatus::Failed;
            result.errors = ErrorRecord { count: 1, first: Some(msg) };
        }
        Err(e) => return Err(e),
    }
    result.notes.extend(target_notes);
    result.target.s3 = target.record().filter(|_| target.info().kind == "s3");
    Ok(Executed { result, recorder, dir, config_yaml: config_yaml(cfg) })
}

fn plan(cfg: &mut RunConfig, world: &World) -> Result<Plan, Error> {
    match cfg.common.workload.as_str() {
        "raw" => {
            let raw = config::raw::RawConfig::from_run_config(cfg)?;
            match raw.object_view() {
                Some(view) => cfg.record_workload(&view)?,
                None => cfg.record_workload(&raw)?,
            }
            Ok(Plan::Raw(raw))
        }
        "kvcache" => {
            let kv = crate::workload::kvcache::config::KvConfig::from_run_config(cfg)?;
            crate::workload::kvcache::check_memory(&kv)?;
            // Each MPI rank samples its input with its own seed (seed + rank).
            let feed = crate::workload::kvcache::load_feed(&kv, cfg.common.seed + world.rank() as u64)?;
            cfg.record_workload(&kv)?;
            Ok(Plan::Kvcache(Box::new(kv), feed.map(Box::new)))
        }
        "checkpoint" => {
            let ck = config::checkpoint::CheckpointConfig::from_run_config(cfg)?;
            cfg.record_workload(&ck)?;
            Ok(Plan::Checkpoint(ck))
        }
        "training" => {
            let t = config::training::TrainingConfig::from_run_config(cfg)?;
            workload::training::check(&t)?;
            workload::training::hosted_accelerators(&t, world)?;
            cfg.record_workload(&t)?;
            Ok(Plan::Training(Box::new(t)))
        }
        "vdb" => {
            let v = config::vdb::VdbConfig::from_run_config(cfg)?;
            workload::vdb::check_memory(&v)?;
            cfg.record_workload(&v)?;
            Ok(Plan::Vdb(Box::new(v)))
        }
        other => Err(Error::usage(format!(
            "config key `workload`: unknown workload '{other}'; known: {}",
            config::KNOWN_WORKLOADS.join(", ")
        ))),
    }
}

/// A virtual clock gives a deterministic run only when one engine worker
/// thread drives it (see clock.rs), so settings that ask for more are
/// refused rather than silently serialised.
fn check_virtual_clock(spec: &TargetSpec, plan: &Plan, world: &World) -> Result<(), Error> {
    let TargetUri::Emu(emu) = &spec.uri else { return Ok(()) };
    if !emu.virtual_clock {
        return Ok(());
    }
    match plan {
        // Each rank's simulated time is its own, so a barrier every step
        // across ranks (which waits in real time) has no meaning in it.
        Plan::Training(_) if world.is_multi() => Err(Error::usage(format!(
            "target {}: a training MPI job synchronises its ranks every step in real time, and clock=virtual gives \
             each rank its own simulated time; use clock=real (the default) under mpirun",
            spec.display
        ))),
        Plan::Raw(raw) if raw.jobs > 1 => Err(Error::usage(format!(
            "config key `jobs`: {} is a deterministic simulation driven by one worker thread, and jobs={} asks for \
             {} threads; set --set jobs=1 (raise queue_depth for more I/O in flight) or use clock=real",
            spec.display, raw.jobs, raw.jobs
        ))),
        _ => Ok(()),
    }
}

/// Virtual clock: the 1 s time series is sampled at exact virtual-second
/// boundaries, in the thread that moves time, so it is the same on every
/// run. The baseline is taken when the measured window starts; a point for
/// second k holds what completed before virtual time k.
pub(crate) fn sample_in_virtual_time(
    clock: &Clock,
    phase: &Arc<PhaseState>,
    live: &Arc<LiveCounters>,
    series: &Arc<Mutex<TimeSeries>>,
) {
    {
        let (live, series) = (live.clone(), series.clone());
        phase.on_measure_start(move |_| {
            *series.lock().expect("series poisoned") = TimeSeries::with_baseline(live.snapshot());
        });
    }
    let (live, phase, series) = (live.clone(), phase.clone(), series.clone());
    let mut next_s: u64 = 1;
    clock.observe_advances(move |_, to| {
        let Some(start) = phase.measure_start() else { return };
        while start + Duration::from_secs(next_s) <= to {
            series.lock().expect("series poisoned").sample(next_s as f64, live.snapshot());
            next_s += 1;
        }
    });
}

pub(crate) fn open_target(
    spec: &TargetSpec,
    opts: OpenOptions,
    common: &config::Common,
) -> Result<Box<dyn Target>, Error> {
    let seed = common.seed;
    if common.s3.is_some() && !matches!(spec.uri, TargetUri::S3(_)) {
        return Err(Error::usage(format!(
            "config key `s3`: the s3.* keys apply only to s3:// targets, and the target is {}; remove them or use \
             --target s3://BUCKET[/PREFIX]",
            spec.display
        )));
    }
    Ok(match &spec.uri {
        TargetUri::File { dir } => Box::new(crate::target::file::FileTarget::open(dir, &spec.display, opts)?),
        TargetUri::Dev { path } => Box::new(crate::target::dev::DevTarget::open(path, &spec.display, opts)?),
        TargetUri::Null => Box::new(crate::target::null::NullTarget::new()),
        TargetUri::Emu(emu) => Box::new(crate::target::emu::EmuTarget::open(emu, &spec.display, seed)?),
        TargetUri::Nbd(nbd) => Box::new(crate::target::nbd::NbdTarget::open(nbd, &spec.display)?),
        TargetUri::S3(s3) => Box::new(crate::target::s3::S3Target::open(s3, &spec.display, common.s3.as_ref())?),
    })
}

fn describe(cfg: &RunConfig) -> String {
    format!("{} ({})", cfg.common.workload, cfg.source)
}

pub(crate) fn where_it_writes(spec: &TargetSpec, target: &dyn Target) -> String {
    match &spec.uri {
        TargetUri::File { dir } => {
            format!("writing under {}", dir.join(crate::target::workdir::WORKDIR_NAME).display())
        }
        _ => format!("{} ({})", target.info().location, target.info().kind),
    }
}

/// `--output FILE`: its directory must exist (we don't create directories
/// the user did not name).
pub(crate) fn check_output_path(p: Option<&Path>) -> Result<(), Error> {
    let Some(p) = p else { return Ok(()) };
    require_parent_dir("--output", p)?;
    if p.is_dir() {
        return Err(Error::usage(format!(
            "--output {}: is a directory; give a file path like results.json",
            p.display()
        )));
    }
    Ok(())
}

/// `--results DIR`: may not exist yet, but its parent must, and it must not
/// be a file.
pub(crate) fn check_results_root(p: &Path) -> Result<(), Error> {
    if p.exists() {
        if !p.is_dir() {
            return Err(Error::usage(format!("--results {}: exists and is not a directory", p.display())));
        }
        return Ok(());
    }
    require_parent_dir("--results", p)
}

/// The directory `p` would be created in must exist.
fn require_parent_dir(flag: &str, p: &Path) -> Result<(), Error> {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if parent.is_dir() {
        return Ok(());
    }
    Err(Error::usage(format!("{flag} {}: directory {} does not exist; create it first", p.display(), parent.display())))
}

pub(crate) fn config_yaml(cfg: &RunConfig) -> String {
    cfg.effective_yaml().unwrap_or_default()
}

pub(crate) fn skeleton(
    cfg: &RunConfig,
    spec: &TargetSpec,
    target: &dyn Target,
    run_id: &str,
    started_at: jiff::Timestamp,
) -> RunResult {
    let info = target.info();
    RunResult {
        schema_version: results::SCHEMA_VERSION,
        mlpdrive_version: env!("CARGO_PKG_VERSION").to_string(),
        run_id: run_id.to_string(),
        status: RunStatus::Running,
        workload: cfg.common.workload.clone(),
        description: cfg.common.description.clone(),
        source: cfg.source.clone(),
        target: TargetRecord { kind: info.kind.to_string(), location: spec.display.clone(), s3: None },
        io_mode: IoMode {
            direct: cfg.common.io.direct,
            engine: "pending".into(),
            registered_buffers: false,
            note: None,
        },
        seed: cfg.common.seed,
        host: hostname(),
        command: std::env::args().collect(),
        started_at: started_at.to_string(),
        duration_s: 0.0,
        cpu_user_s: 0.0,
        cpu_sys_s: 0.0,
        peak_rss_bytes: 0,
        verify: VerifyRecord {
            enabled: cfg.common.verifier().is_on(),
            mode: cfg.common.verify,
            sample_every: cfg.common.verifier().sample_every(),
            verified_bytes: 0,
            header_checked_bytes: 0,
            unverified_bytes: 0,
            errors: 0,
            first: None,
        },
        verify_errors: 0,
        errors: ErrorRecord { count: 0, first: None },
        notes: Vec::new(),
        series: Vec::new(),
        timeseries: Vec::new(),
        summary: serde_json::Value::Null,
        config: serde_json::to_value(&cfg.effective).unwrap_or_default(),
        ranks: None,
    }
}

pub(crate) fn fill_from_output(r: &mut RunResult, out: WorkloadOutput, interrupted: bool, sample_key: SampleKey) {
    r.duration_s = out.window_s;
    r.io_mode = out.io_mode;
    r.summary = out.summary;
    r.verify.verified_bytes = out.verify.verified_bytes;
    r.verify.header_checked_bytes = out.verify.header_checked_bytes;
    r.verify.unverified_bytes = out.verify.unverified_bytes;
    r.verify.errors = out.verify.bad_blocks;
    r.verify.first = out.verify.first_error.as_ref().map(ToString::to_string);
    r.verify_errors = out.verify.bad_blocks;
    r.errors = ErrorRecord { count: out.errors.count, first: out.errors.first };
    r.series = results::series_records(&out.recorder);
    r.notes.extend(out.notes);
    if let Some(n) = &r.io_mode.note {
        r.notes.push(n.clone());
    }
    if !r.io_mode.direct && !matches!(r.io_mode.engine.as_str(), "null" | "emu" | "nbd" | "s3") {
        r.notes.push("O_DIRECT was NOT used (io.direct=false): reads and writes went through the page cache".into());
    }
    if r.target.kind == "null" && r.verify.enabled {
        r.notes.push("null:// stores nothing: read verification was skipped".into());
        r.verify.enabled = false;
        r.verify.mode = VerifyMode::Off;
        r.verify.sample_every = None;
    }
    if let Some(note) = r.verify.mode.note(r.verify.sample_every, sample_key).filter(|_| r.target.kind != "null") {
        r.notes.push(note);
    }
    r.status = if interrupted {
        RunStatus::Interrupted
    } else if r.errors.count > 0 || r.verify_errors > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The sampler: once a second, one time-series point and a progress
/// update; every `progress_interval`, a partial results.json.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample(
    live: &LiveCounters,
    phase: &PhaseState,
    done: &AtomicBool,
    series: &Mutex<TimeSeries>,
    common: &config::Common,
    quiet: bool,
    dir: Option<&ResultsDir>,
    skeleton: &RunResult,
    clock: &Clock,
) {
    // On a virtual clock the time series is sampled by the simulation itself
    // (sample_in_virtual_time); this thread only shows progress, in
    // simulated seconds, and keeps the real-time watchdog.
    let virtual_time = clock.is_virtual();
    let mut progress = Progress::new(quiet, common.progress_interval, common.duration);
    let t0 = Instant::now();
    let v0 = clock.now();
    let mut last_v = v0;
    let mut last = live.snapshot();
    let mut last_t = t0;
    let mut last_flush = t0;
    let mut measuring = false;
    // Watchdog: the engine fails a stalled io_uring op after `io.timeout`,
    // but a syscall stuck in the sync fallback (or a bug) could still hang
    // the run. Nothing completing for twice that (plus slack for a long
    // fsync) ends the process with the results marked failed.
    let watchdog = common.io.timeout * 2 + Duration::from_secs(10);
    let mut last_activity = t0;
    let mut activity = last.read_ops + last.write_ops + last.errors;
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let snap_now = live.snapshot();
        let a = snap_now.read_ops + snap_now.write_ops + snap_now.errors;
        if a != activity || phase.is_cpu_only() {
            activity = a;
            last_activity = now;
        } else if now - last_activity >= watchdog {
            progress.finish();
            let secs = (now - last_activity).as_secs();
            let msg = format!(
                "stalled: no I/O completed for {secs} s (io.timeout is {}); the target is not responding",
                humantime::format_duration(common.io.timeout)
            );
            let mut failed = skeleton.clone();
            failed.status = results::RunStatus::Failed;
            failed.errors = ErrorRecord { count: 1, first: Some(msg.clone()) };
            failed.timeseries = series.lock().expect("series poisoned").points().to_vec();
            match dir {
                Some(dir) => {
                    let _ = dir.write_partial(&failed);
                    eprintln!("mlpdrive: error: {msg}; partial results in {}", dir.path().display());
                }
                None => eprintln!("mlpdrive: error: {msg}"),
            }
            std::process::exit(EXIT_FAILED);
        }
        if !virtual_time && !measuring && phase.measure_start().is_some() {
            // The measured window began: the time series counts from here.
            measuring = true;
            last = live.snapshot();
            last_t = now;
            *series.lock().expect("series poisoned") = TimeSeries::with_baseline(last.clone());
        }
        if now - last_t < Duration::from_secs(1) {
            continue;
        }
        let snap = live.snapshot();
        let (rates, elapsed) = if virtual_time {
            let v = clock.now();
            let rates = Rates::between(&last, &snap, v.saturating_duration_since(last_v).as_secs_f64());
            last_v = v;
            (rates, v.saturating_duration_since(phase.measure_start().unwrap_or(v0)).as_secs_f64())
        } else {
            let rates = Rates::between(&last, &snap, (now - last_t).as_secs_f64());
            (rates, real_elapsed(phase, series, &snap, now, t0))
        };
        progress.update(phase.name(), elapsed, &rates);
        if now - last_flush >= common.progress_interval {
            last_flush = now;
            let mut partial = skeleton.clone();
            partial.timeseries = series.lock().expect("series poisoned").points().to_vec();
            partial.summary = serde_json::json!({ "partial": snap });
            if let Some(dir) = dir {
                let _ = dir.write_partial(&partial);
            }
        }
        last = snap;
        last_t = now;
    }
    progress.finish();
}

/// Real clock: seconds into the measured window (taking its time-series
/// point), or since the sampler started before it.
fn real_elapsed(
    phase: &PhaseState,
    series: &Mutex<TimeSeries>,
    snap: &CounterSnapshot,
    now: Instant,
    t0: Instant,
) -> f64 {
    match phase.measure_start() {
        Some(ms) => {
            let t = (now - ms).as_secs_f64();
            series.lock().expect("series poisoned").sample(t, snap.clone());
            t
        }
        None => (now - t0).as_secs_f64(),
    }
}
