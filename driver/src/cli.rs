//! The command line as typed (clap), and `main`'s mapping of outcomes to
//! exit codes: 0 success, 1 the run ran but failed, 2 usage or config error.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::{EXIT_OK, EXIT_USAGE, Error};

#[derive(Parser, Debug)]
#[command(
    name = "mlpdrive",
    version,
    about = "Storage load driver for AI workloads (MLPerf Storage at the storage interface)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a workload (a built-in preset name or a YAML file) against a target.
    Run(RunArgs),
    /// List the built-in presets.
    Workloads,
    /// List the built-in device profiles for emu://PROFILE targets.
    Devices,
    /// Report finished runs: text, Markdown, CSV, JSON or HTML with plots; --compare; --fio-job.
    Report(ReportArgs),
    /// Check a FUSE shim op log (and a KV journal, a results.json) for
    /// duplicate or compressible data, corrupt reads and tier violations.
    Check(CheckArgs),
    /// Replay a KV cache I/O trace (kv-cache.py's --io-trace-log CSV, or mlpdrive's) against a target.
    Replay(ReplayArgs),
    /// The device emulator outside the driver (`emu serve`: an NBD export).
    #[command(subcommand)]
    Emu(EmuCommand),
    /// Generate a workload's data set on a target (training presets).
    Datagen(DatagenArgs),
    /// How big a workload's data must be: a training data set under the MLPerf Storage
    /// rules, or a checkpoint's bytes and files in total and per rank.
    Datasize(DatasizeArgs),
    /// Mount or unmount the FUSE shim (a directory with emulated-device latency and faults).
    Shim(ShimArgs),
    /// MLPerf Storage run rules (`rules check RESULTS_DIR`).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run a whole benchmark sequence (`suite mlperf`: every MLPerf Storage run, the rules check, one report).
    #[command(subcommand)]
    Suite(SuiteCommand),
}

#[derive(Subcommand, Debug)]
pub enum SuiteCommand {
    /// The MLPerf Storage sequence: training datagen + warm-up + 5 runs, checkpoint 10 + 10,
    /// KV cache options 1-3 x 3 trials, vdb x 5; then `rules check` and one report (docs/suite.md).
    Mlperf(SuiteArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Where every step's I/O goes: file://DIR, dev:///dev/X, nbd://HOST:PORT/EXPORT, s3://BUCKET[/PREFIX].
    #[arg(long, short = 't', value_name = "URI")]
    pub target: String,
    /// The division whose rules the check applies.
    #[arg(long, value_enum, default_value = "closed")]
    pub division: crate::rules::Division,
    /// The suite's directory (new, or empty): one subdirectory per step, suite.json, rules and reports
    /// [default: a new ./mlpdrive-suite-<time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// full: the MLPerf-sized presets, repetitions and pauses (hours); smoke: CI-sized, one
    /// repetition each, near-zero pauses (seconds), NOT a valid submission.
    #[arg(long, value_enum, default_value = "full")]
    pub scale: crate::suite::plan::Scale,
    /// Training preset or YAML file [default: training/unet3d_h100; smoke: training-smoke].
    #[arg(long, value_name = "PRESET")]
    pub training: Option<String>,
    /// Checkpoint preset or YAML file [default: checkpoint/llama3-8b; smoke: checkpoint-smoke].
    #[arg(long, value_name = "PRESET")]
    pub checkpoint: Option<String>,
    /// Vector database preset or YAML file [default: vdb/vdb-smoke, the only one there is].
    #[arg(long, value_name = "PRESET")]
    pub vdb: Option<String>,
    /// Override a key of one workload's runs, e.g. --set training:dataset.num_files_train=28000 (repeatable).
    #[arg(long = "set", short = 's', value_name = "WORKLOAD:KEY=VALUE")]
    pub set: Vec<String>,
    /// Pause between the KV cache options [default: 90s; smoke: 200ms].
    #[arg(long, value_name = "D")]
    pub kv_option_delay: Option<String>,
    /// Memory of each client host in GiB (the rules check's training data set size rule).
    #[arg(long, value_name = "GIB")]
    pub client_memory_gib: Option<f64>,
    /// The minimum recall@k the vdb runs must reach (the rules check).
    #[arg(long, value_name = "R")]
    pub vdb_min_recall: Option<f64>,
    /// No progress bars of the runs on stderr (the suite's step lines stay).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub safety: SafetyArgs,
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Check a directory of runs against the MLPerf Storage rules (docs/rules.md); exit 1 if any rule fails.
    Check(RulesCheckArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RulesCheckArgs {
    /// The results root of the runs (each run directory with its results.json), or one run directory.
    #[arg(value_name = "RESULTS_DIR")]
    pub dir: PathBuf,
    /// The division whose rules apply.
    #[arg(long, value_enum, default_value = "closed")]
    pub division: crate::rules::Division,
    /// Memory of each client host in GiB (the training data set size rule; results.json does not record it).
    #[arg(long, value_name = "GIB")]
    pub client_memory_gib: Option<f64>,
    /// The minimum recall@k the vdb submission must reach (not given in the specs).
    #[arg(long, value_name = "R")]
    pub vdb_min_recall: Option<f64>,
    /// Also write the findings as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum EmuCommand {
    /// Serve an emulated device over NBD (docs/nbd.md); runs until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:10809 (port 0 picks a free port; the real one is printed).
    #[arg(long, value_name = "ADDR:PORT")]
    pub nbd: String,
    /// Export size, e.g. 1GiB (required with --backing mem; defaults to the file's size with a FILE).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Device profile: a built-in name (see `mlpdrive devices`) or a profile YAML path.
    #[arg(long, value_name = "PROFILE")]
    pub profile: String,
    /// Where the bytes live: `mem` (sparse, in memory) or a file path (created with --size if missing).
    #[arg(long, value_name = "mem|FILE", default_value = "mem")]
    pub backing: String,
    /// Seed of the device model's random choices (latency draws, faults).
    #[arg(long, default_value_t = crate::config::DEFAULT_SEED)]
    pub seed: u64,
    /// Name of the export clients ask for (the empty default name is accepted too).
    #[arg(long, value_name = "NAME", default_value = "mlpdrive")]
    pub export_name: String,
    /// Refuse writes, trims and write-zeroes (EPERM).
    #[arg(long)]
    pub read_only: bool,
    /// Allow a block device as --backing (clients overwrite its contents).
    #[arg(long)]
    pub allow_raw_device: bool,
    /// Threads that complete requests when the model says they are due.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub completion_threads: usize,
    /// No per-connection messages on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DatagenArgs {
    /// Preset name or path to a YAML config (a DLIO workload YAML works too).
    pub workload: String,
    /// Where the data set goes: file://DIR, dev:///dev/X, null://  [default: file://./mlpdrive-data]
    #[arg(long, short = 't', value_name = "URI")]
    pub target: Option<String>,
    /// Override a config key, e.g. --set dataset.num_files_train=28000 (repeatable).
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Parallel writer threads (each with its own queue) [default: CPU count, at most 8].
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// No progress output on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub safety: SafetyArgs,
}

/// `--allow-raw-device` and `--force`, as `datagen` and `replay` take them.
#[derive(Args, Debug, Clone)]
pub struct SafetyArgs {
    /// Allow dev:// targets (a raw block device: its data is overwritten).
    #[arg(long)]
    pub allow_raw_device: bool,
    /// Allow targets under system directories or mounted devices.
    #[arg(long)]
    pub force: bool,
}

impl SafetyArgs {
    pub fn flags(&self) -> crate::target::uri::SafetyFlags {
        crate::target::uri::SafetyFlags { allow_raw_device: self.allow_raw_device, force: self.force }
    }
}

/// Where a run's results go, and how loud it is: `run` and `replay`.
#[derive(Args, Debug, Clone)]
pub struct ResultsArgs {
    /// Also write results.json to this exact path.
    #[arg(long, short = 'o', value_name = "FILE.json")]
    pub output: Option<PathBuf>,
    /// Results root; each run writes <DIR>/<run-id>/.
    #[arg(long, value_name = "DIR", default_value = "./mlpdrive-results")]
    pub results: PathBuf,
    /// No progress output on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DatasizeArgs {
    /// Preset name (like training/unet3d_h100 or checkpoint/llama3-70b) or path to a YAML config.
    pub workload: String,
    /// Override a config key (repeatable).
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Memory of each client host in GiB (training).
    #[arg(long, value_name = "GIB")]
    pub client_memory_gib: Option<f64>,
    /// Number of client hosts (training).
    #[arg(long, value_name = "H")]
    pub hosts: Option<u64>,
    /// Simulated accelerators in total over all hosts (training).
    #[arg(long, value_name = "A")]
    pub accelerators: Option<u64>,
    /// Ranks to size for (checkpoint) [default: the config's `ranks`].
    #[arg(long, value_name = "R")]
    pub ranks: Option<u32>,
    /// Subset mode (checkpoint): the ranks (default 8) act as ranks 0.. of the config's full job.
    #[arg(long)]
    pub subset: bool,
}

#[derive(Args, Debug)]
pub struct ShimArgs {
    #[command(subcommand)]
    pub command: ShimCommand,
}

#[derive(Subcommand, Debug)]
pub enum ShimCommand {
    /// Mount the shim over a backing directory (or memory); foreground unless --daemon.
    Mount(ShimMountArgs),
    /// Unmount a shim mount and wait for its daemon to write its op log and verdicts.
    Unmount(ShimUnmountArgs),
    /// Crash the emulated device: lose every write not covered by a completed fsync (needs --crash-tracking).
    Crash(ShimCrashArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ShimMountArgs {
    /// Existing empty directory to mount on.
    #[arg(long, value_name = "DIR")]
    pub mountpoint: PathBuf,
    /// Where files live: an existing directory, or `mem` for in-memory files.
    #[arg(long, value_name = "DIR|mem")]
    pub backing: String,
    /// Device profile: a built-in name (see `mlpdrive devices`) or a YAML file.
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: String,
    /// Write one CSV row per operation to FILE (format: docs/shim.md).
    #[arg(long, value_name = "FILE")]
    pub oplog: Option<PathBuf>,
    /// Seed of the device model's random choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Detach once the mount is ready (stop it with `mlpdrive shim unmount`).
    #[arg(long)]
    pub daemon: bool,
    /// With --daemon: append the daemon's messages to FILE (default: discarded).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Check written and read data live (dedup and content verdicts at unmount).
    #[arg(long)]
    pub verify: bool,
    /// Where --verify writes its verdicts as JSON [default: next to --oplog].
    #[arg(long, value_name = "FILE")]
    pub verdict: Option<PathBuf>,
    /// Let other users access the mount (FUSE allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// Keep the daemon in the data path even when the kernel passthrough could be used.
    #[arg(long)]
    pub no_passthrough: bool,
    /// FUSE request threads.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub threads: usize,
    /// Track unsynced writes (saving the bytes each replaces) so `mlpdrive shim crash` can drop them.
    #[arg(long)]
    pub crash_tracking: bool,
    /// Do not send delayed replies early by the FUSE round trip measured at mount.
    #[arg(long)]
    pub no_rtt_compensation: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ShimCrashArgs {
    /// The mount point (mounted with --crash-tracking).
    pub mountpoint: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ShimUnmountArgs {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// How long to wait for the daemon to finish after the unmount, e.g. 60s.
    #[arg(long, default_value = "60s", value_name = "D")]
    pub wait: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Preset name (see `mlpdrive workloads`) or path to a YAML config.
    pub workload: String,
    /// Where I/O goes: file://DIR, dev:///dev/X, null://, emu://PROFILE, nbd://HOST:PORT/EXPORT  [default: file://./mlpdrive-data]
    #[arg(long, short = 't', value_name = "URI")]
    pub target: Option<String>,
    /// Override a config key, e.g. --set queue_depth=64 --set io.direct=false (repeatable).
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Seed for op order and data (same as --set seed=N).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Length of the measured phase, e.g. 30s, 5m (same as --set duration=D).
    #[arg(long, value_name = "D")]
    pub duration: Option<String>,
    #[command(flatten)]
    pub out: ResultsArgs,
    /// Allow dev:// targets and nbd:// exports not served by mlpdrive (their data is overwritten).
    #[arg(long)]
    pub allow_raw_device: bool,
    /// Allow targets under system directories or mounted devices.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("deletes").required(true).args(["capacity", "no_delete"])))]
pub struct ReplayArgs {
    /// The trace: FILE.csv or FILE.csv.zst (columns Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase).
    pub trace: PathBuf,
    /// Where I/O goes: file://DIR, dev:///dev/X, emu://PROFILE, null://
    #[arg(long, short = 't', value_name = "URI")]
    pub target: String,
    /// Keep live bytes under SIZE (e.g. 100GiB): before a write that would exceed it, delete least-recently-used keys.
    #[arg(long, value_name = "SIZE")]
    pub capacity: Option<String>,
    /// Never delete (the target must hold every key the trace writes).
    #[arg(long)]
    pub no_delete: bool,
    /// Ops (chunks of objects) in flight.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub queue_depth: u32,
    /// Pace by trace time: a row at t is issued at (t - t0) / X after the start [default: as fast as possible].
    #[arg(long, value_name = "X")]
    pub speedup: Option<f64>,
    /// Which trace tiers to replay: storage (Tier-2 rows only) or all (every row onto the target).
    #[arg(long, value_name = "TIERS", default_value = "storage", value_parser = ["storage", "all"])]
    pub tiers: String,
    /// Skip malformed rows (counted, the first few quoted) instead of stopping with an error.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Keep going after an I/O error (every error is counted; the exit code is still 1).
    #[arg(long)]
    pub continue_on_error: bool,
    /// Buffered I/O instead of O_DIRECT (for filesystems that refuse O_DIRECT, e.g. tmpfs).
    #[arg(long)]
    pub buffered: bool,
    /// Seed of the written data [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub out: ResultsArgs,
    #[command(flatten)]
    pub safety: SafetyArgs,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Results to report: each a results.json, a run directory, or a results root (its newest run).
    #[arg(required = true, value_name = "DIR|FILE")]
    pub paths: Vec<PathBuf>,
    /// Output format (docs/reports.md).
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::report::Format,
    /// Write the report to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Put the runs side by side with ratios to the first.
    #[arg(long)]
    pub compare: bool,
    /// Write a fio job file reproducing the run's observed I/O mix instead of a report.
    #[arg(long)]
    pub fio_job: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The shim's op log (`mlpdrive shim mount --oplog FILE`).
    #[arg(long, value_name = "FILE")]
    pub oplog: PathBuf,
    /// The KV cache workload's trace (CSV, or zstd-compressed .zst).
    #[arg(long, value_name = "TRACE.csv")]
    pub journal: Option<PathBuf>,
    /// The run's results.json (or its run directory); repeat for several runs through one mount.
    #[arg(long, value_name = "FILE")]
    pub results: Vec<PathBuf>,
    /// Write the verdicts JSON here [default: <oplog>.verdicts.json].
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
    /// Fail unless this verdict passes (not_checked counts as a failure); repeatable.
    #[arg(long, value_name = "VERDICT")]
    pub require: Vec<String>,
    /// Print only the verdicts file's path, not the verdicts.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Parses arguments, runs, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mlpdrive: error: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Run(args) => crate::run::run(&args),
        Command::Workloads => {
            print!("{}", workloads_text());
            Ok(EXIT_OK)
        }
        Command::Devices => {
            print!("{}", devices_text()?);
            Ok(EXIT_OK)
        }
        Command::Datagen(args) => crate::workload::training::datagen::run(&args),
        Command::Datasize(args) => crate::datasize::run(&args),
        Command::Emu(EmuCommand::Serve(args)) => crate::serve::serve(&args),
        Command::Replay(args) => crate::replay::replay(&args),
        Command::Shim(args) => match &args.command {
            ShimCommand::Mount(a) => crate::shim_cmd::mount(a),
            ShimCommand::Unmount(a) => crate::shim_cmd::unmount(a),
            ShimCommand::Crash(a) => crate::shim_cmd::crash(a),
        },
        Command::Report(args) => crate::report::run(&crate::report::ReportOptions {
            paths: args.paths,
            format: args.format,
            out: args.out,
            compare: args.compare,
            fio_job: args.fio_job,
        }),
        Command::Rules(RulesCommand::Check(args)) => crate::rules::run(&crate::rules::CheckOptions {
            dir: args.dir,
            division: args.division,
            inputs: crate::rules::Inputs {
                client_memory_gib: args.client_memory_gib,
                vdb_min_recall: args.vdb_min_recall,
            },
            json: args.json,
        }),
        Command::Suite(SuiteCommand::Mlperf(args)) => crate::suite::run(&suite_options(&args)?),
        Command::Check(args) => crate::check::run(&crate::check::CheckOptions {
            oplog: args.oplog,
            journal: args.journal,
            results: args.results,
            json: args.json,
            require: args.require,
            quiet: args.quiet,
        }),
    }
}

fn suite_options(args: &SuiteArgs) -> Result<crate::suite::SuiteOptions, Error> {
    let sets = args.set.iter().map(|s| crate::suite::plan::parse_set(s)).collect::<Result<Vec<_>, _>>()?;
    let kv_option_delay = args
        .kv_option_delay
        .as_deref()
        .map(|d| {
            humantime::parse_duration(d)
                .map_err(|e| Error::usage(format!("--kv-option-delay '{d}': {e}; give a duration like 90s or 200ms")))
        })
        .transpose()?;
    Ok(crate::suite::SuiteOptions {
        target: args.target.clone(),
        division: args.division,
        out: args.out.clone(),
        choice: crate::suite::plan::Choice {
            scale: args.scale,
            training: args.training.clone(),
            checkpoint: args.checkpoint.clone(),
            vdb: args.vdb.clone(),
            sets,
            kv_option_delay,
        },
        inputs: crate::rules::Inputs { client_memory_gib: args.client_memory_gib, vdb_min_recall: args.vdb_min_recall },
        safety: args.safety.flags(),
        quiet: args.quiet,
    })
}

fn workloads_text() -> String {
    let presets = crate::config::presets();
    let width = presets.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
    let mut s = format!("{:<width$}  {:<8}  DESCRIPTION\n", "NAME", "WORKLOAD");
    for p in presets {
        s.push_str(&format!("{:<width$}  {:<8}  {}\n", p.name, p.workload, p.description));
    }
    s.push_str("\nRun one with `mlpdrive run NAME`, or pass a YAML file path; override keys with --set KEY=VALUE.\n");
    s
}

fn devices_text() -> Result<String, Error> {
    let mut rows = Vec::new();
    for (name, _) in mlpdrive_emu::BUILTIN_PROFILES {
        let p = mlpdrive_emu::Profile::load(name)
            .map_err(|e| Error::failed(format!("built-in device profile {name} does not load: {e}")))?;
        rows.push((name.to_string(), p.description.clone()));
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
    let mut s = format!("{:<width$}  DESCRIPTION\n", "NAME");
    for (n, d) in rows {
        s.push_str(&format!("{n:<width$}  {d}\n"));
    }
    s.push_str(
        "\nRun on one with `--target emu://NAME` (or emu:///path/to/profile.yaml); parameters: docs/devices.md.\n",
    );
    Ok(s)
}
