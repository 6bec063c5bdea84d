//! A rank: one thread with its own queue and buffer pool that runs the
//! checkpoints the coordinator hands it, one at a time.
//!
//! For each job the rank waits (on the run clock) until the common start
//! time, creates or opens its files (part of the timed checkpoint, as the
//! reference's `torch.save`/`torch.load` open them), streams them through
//! the engine, and reports its duration: from the common start to its last
//! completion (the fsync of its last file, for saves).

use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use super::source::{Direction, FileJob, RankSource};
use crate::buf::BufPool;
use crate::datagen;
use crate::engine::{self, Control, WorkerReport};
use crate::target::{IoMode, Target};

/// Longest single sleep while waiting for a checkpoint's start.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// One checkpoint for one rank.
pub struct RankJob {
    pub dir: Direction,
    /// Checkpoint number (1-based); also the data generation.
    pub step: u32,
    /// Common start of the checkpoint on the run clock (t0).
    pub start_at: Instant,
    /// Full object names and sizes, in write order.
    pub files: Vec<(String, u64)>,
}

/// What a rank did with one job.
pub struct RankOutcome {
    pub rank: usize,
    pub report: WorkerReport,
    /// Seconds from t0 to the rank's last completion; `None` if the rank
    /// did not finish its part (error or stop).
    pub duration_s: Option<f64>,
}

/// How every rank streams.
#[derive(Clone, Copy)]
pub struct RankParams {
    pub queue_depth: usize,
    pub transfer_bytes: u64,
    pub seed: u64,
}

/// The rank thread's body: answers every job on `jobs` with one outcome on
/// `out` until the coordinator closes the channel. Returns the queue's I/O
/// mode.
pub fn serve(
    rank: usize,
    target: &dyn Target,
    ctl: &Control,
    params: RankParams,
    jobs: Receiver<RankJob>,
    out: Sender<RankOutcome>,
) -> Option<IoMode> {
    let align = target.info().caps.align;
    let mut pool = BufPool::new(params.queue_depth, params.transfer_bytes as usize, align);
    let mut queue = target.queue(params.queue_depth, &mut pool);
    let mode = queue.as_ref().ok().map(|q| q.io_mode());
    for job in jobs {
        let mut report = WorkerReport::default();
        let duration_s = match &mut queue {
            Err(e) => {
                report.errors.add(|| format!("rank {rank}: cannot set up its queue: {e}"));
                None
            }
            Ok(q) => run_job(rank, target, ctl, params, &job, q.as_mut(), &mut pool, &mut report),
        };
        if duration_s.is_none() && report.errors.count == 0 && !ctl.stop.load(std::sync::atomic::Ordering::Relaxed) {
            report.errors.add(|| format!("rank {rank}: checkpoint {} did not complete", job.step));
        }
        if out.send(RankOutcome { rank, report, duration_s }).is_err() {
            break;
        }
    }
    mode
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    rank: usize,
    target: &dyn Target,
    ctl: &Control,
    params: RankParams,
    job: &RankJob,
    queue: &mut dyn crate::target::Queue,
    pool: &mut BufPool,
    report: &mut WorkerReport,
) -> Option<f64> {
    // The simulated compute between checkpoints ends at the same time for
    // every rank: that is the barrier before t0. Slept in slices so Ctrl-C
    // is noticed.
    loop {
        if ctl.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let now = ctl.clock.now();
        if now >= job.start_at {
            break;
        }
        ctl.clock.sleep_until(job.start_at.min(now + WAIT_SLICE));
    }
    let mut files = Vec::with_capacity(job.files.len());
    for (name, bytes) in &job.files {
        let handle = match job.dir {
            Direction::Save => target.create(name, *bytes).map_err(|e| format!("cannot create {name}: {e}")),
            Direction::Load => match target.open(name) {
                Ok(Some((h, size))) if size == *bytes => Ok(h),
                Ok(Some((_, size))) => Err(format!(
                    "checkpoint file {name} is {size} bytes, expected {bytes}: it was not written by this \
                     configuration, or it was truncated"
                )),
                Ok(None) => Err(format!("checkpoint file {name} is missing")),
                Err(e) => Err(format!("cannot open {name}: {e}")),
            },
        };
        match handle {
            Ok(handle) => files.push(FileJob { handle, key: datagen::object_key(name), bytes: *bytes }),
            Err(msg) => {
                report.errors.add(|| format!("rank {rank}: {msg}"));
                ctl.live.add_error();
                ctl.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        }
    }
    let mut src = RankSource::new(job.dir, files, params.transfer_bytes, params.seed, u64::from(job.step));
    engine::run_worker(&mut src, queue, pool, ctl, report);
    if !src.finished() || report.errors.count > 0 {
        return None;
    }
    let end = report.last_completion.unwrap_or(job.start_at);
    Some(end.saturating_duration_since(job.start_at).as_secs_f64())
}
