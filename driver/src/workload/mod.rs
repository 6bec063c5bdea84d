//! Workloads: op generators that speak only to the target trait, the data
//! generator, the engine and the recorder.
//!
//! Each workload takes the run environment ([`RunEnv`]) and its own typed
//! config, and returns a [`WorkloadOutput`]: its `summary` object (the part
//! of results.json it owns) plus the recorder, verification and error
//! tallies the run-level results are built from.

pub mod checkpoint;
pub mod kvcache;
pub mod raw;
pub mod raw_objects;
pub mod training;
pub mod vdb;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::clock::Clock;
use crate::config::Common;
use crate::datagen::{Verifier, VerifyOutcome};
use crate::engine::{Control, ErrorTally, WorkerReport};
use crate::error::Error;
use crate::mpi::World;
use crate::recorder::{LiveCounters, Recorder};
use crate::target::{IoMode, Target};

/// Built-in workload names with one line each (for `mlpdrive workloads`).
pub const WORKLOADS: &[(&str, &str)] = &[
    ("kvcache", "MLPerf Storage v3 KV cache (kv-cache.py): users, multi-tier cache, waterfall eviction"),
    ("raw", "fio-like calibration: seq/rand read/write at a block size and queue depth"),
    ("checkpoint", "MLPerf Storage LLM checkpointing: llama3 shards saved and loaded by every rank"),
    ("training", "MLPerf Storage training reads (DLIO): accelerators, batches, compute waits, AU"),
    ("vdb", "MLPerf Storage vector database: DiskANN-layout graph index, beam search reads, QPS and recall"),
];

/// What a workload gets to run.
pub struct RunEnv<'a> {
    pub target: &'a dyn Target,
    pub common: &'a Common,
    pub live: Arc<LiveCounters>,
    pub stop: Arc<AtomicBool>,
    pub phase: Arc<PhaseState>,
    /// The run's clock: workloads read time only through it (or the engine's
    /// `now`), never from the host directly.
    pub clock: Clock,
    /// This process's place in an MPI job (a world of one without mpirun):
    /// workloads split their work by rank and call `world.sync` before the
    /// measured phase (see [`RunEnv::begin_measure`]).
    pub world: &'a World,
}

/// Called once, in the thread that starts the measured window, with its
/// start time.
type MeasureHook = Box<dyn Fn(Instant) + Send + Sync>;

/// The current phase, shared with the progress/sampler thread.
#[derive(Default)]
pub struct PhaseState {
    name: Mutex<&'static str>,
    /// The phase does CPU work only (no I/O is expected): the stall
    /// watchdog does not count its time.
    cpu_only: AtomicBool,
    measure_start: OnceLock<Instant>,
    on_measure_start: OnceLock<MeasureHook>,
}

impl PhaseState {
    pub fn set(&self, name: &'static str) {
        *self.name.lock().expect("phase poisoned") = name;
        self.cpu_only.store(false, Ordering::SeqCst);
    }

    /// Enters a phase of CPU work that issues no I/O (building an index):
    /// the stall watchdog waits for it however long it takes.
    pub fn set_cpu_only(&self, name: &'static str) {
        self.set(name);
        self.cpu_only.store(true, Ordering::SeqCst);
    }

    pub fn is_cpu_only(&self) -> bool {
        self.cpu_only.load(Ordering::SeqCst)
    }

    pub fn name(&self) -> &'static str {
        *self.name.lock().expect("phase poisoned")
    }

    /// Marks the start of the measured window (once), at `now` on the run's
    /// clock.
    pub fn begin_measure(&self, now: Instant) -> Instant {
        self.set("measure");
        let mut first = false;
        let start = *self.measure_start.get_or_init(|| {
            first = true;
            now
        });
        if first && let Some(hook) = self.on_measure_start.get() {
            hook(start);
        }
        start
    }

    /// Runs `hook` when the measured window starts, in the thread that
    /// starts it (the virtual-clock time series takes its baseline there).
    /// Only the first hook is kept.
    pub fn on_measure_start(&self, hook: impl Fn(Instant) + Send + Sync + 'static) {
        let _ = self.on_measure_start.set(Box::new(hook));
    }

    pub fn measure_start(&self) -> Option<Instant> {
        self.measure_start.get().copied()
    }
}

impl RunEnv<'_> {
    /// Waits for every MPI rank (a no-op alone), then starts the measured
    /// window: the ranks' windows start together. Fails if another rank
    /// failed before getting here.
    pub fn begin_measure(&self) -> Result<Instant, Error> {
        self.world.sync("the measured phase")?;
        Ok(self.phase.begin_measure(self.clock.now()))
    }

    /// The run's verification policy for reads of this target: the
    /// `verify` key's, or off when the target stores nothing.
    pub fn verifier(&self) -> Verifier {
        if self.target.info().caps.stores_data { self.common.verifier() } else { Verifier::OFF }
    }

    /// Engine control for a phase: `deadline` bounds it (None: until the
    /// sources are done); `verify` checks the reads that ask for it.
    pub fn control(&self, deadline: Option<Instant>, verify: Verifier) -> Control {
        Control {
            stop: self.stop.clone(),
            deadline,
            live: self.live.clone(),
            verify,
            continue_on_error: self.common.continue_on_error,
            stall_timeout: self.common.io.timeout,
            clock: self.clock.clone(),
        }
    }
}

/// What a workload hands back.
pub struct WorkloadOutput {
    /// The workload-owned `summary` object of results.json.
    pub summary: serde_json::Value,
    pub recorder: Recorder,
    pub verify: VerifyOutcome,
    pub errors: ErrorTally,
    /// Seconds from the start of the measured phase to its last completion.
    pub window_s: f64,
    pub io_mode: IoMode,
    pub notes: Vec<String>,
}

/// Merges worker reports into one recorder / verify / error tally and the
/// time of the last completion.
pub fn merge_reports(reports: &[WorkerReport]) -> (Recorder, VerifyOutcome, ErrorTally, Option<Instant>) {
    let mut rec = Recorder::new();
    let mut ver = VerifyOutcome::default();
    let mut err = ErrorTally::default();
    let mut last = None;
    for r in reports {
        rec.merge(&r.recorder);
        ver.merge(&r.verify);
        err.merge(&r.errors);
        last = last.max(r.last_completion);
    }
    (rec, ver, err, last)
}
