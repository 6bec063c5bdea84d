//! Many hosts: mlpdrive as the ranks of an MPI job
//! (`mpirun -np N mlpdrive run …`), the way MLPerf Storage runs DLIO and
//! kv-cache.py. See docs/scale.md.
//!
//! [`World`] is this process's place in the job: rank and size, the
//! status-carrying barrier workloads call before their measured phase (and
//! per step), and the final gather of every rank's result at rank 0. Run
//! outside `mpirun`, it is a world of one and nothing is loaded.
//!
//! **No rank waits forever for a rank that failed.** Every collective is an
//! allreduce (max, always as `MPI_Iallreduce`, see [`ffi`]) of a small
//! status vector followed, at the end, by one gather:
//! - [`World::sync`] (a barrier: no rank leaves before every rank entered)
//!   says "I am at a sync point, healthy" ([`World::start_sync`] is the
//!   same without blocking the caller);
//! - [`World::finish`] says "I am done (ok or failed)" and repeats the
//!   allreduce until every rank says so, then gathers.
//!
//! A rank that fails leaves its workload early and enters `finish`; its
//! allreduce meets the others' next `sync`, which then returns an error
//! naming the rank, so they leave their workload too and meet it in
//! `finish`. A panic calls `MPI_Abort`, and mpirun ends the job.

pub mod ffi;

use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use ffi::Mpi;

/// The process's MPI library, once initialised.
static MPI: OnceLock<Mpi> = OnceLock::new();

/// Set when a [`World::sync`] found another rank failed or finished: this
/// rank's own error is then only a consequence.
static STOPPED_BY_PEER: AtomicBool = AtomicBool::new(false);

/// How the process was started.
#[derive(Debug, PartialEq, Eq)]
pub enum Launch {
    /// Not under an MPI launcher.
    Single,
    /// Under Open MPI's mpirun (it sets `OMPI_COMM_WORLD_SIZE`).
    OpenMpi,
    /// Under another MPI's launcher (MPICH/Intel MPI/Slurm PMI): named by
    /// the variable that gave it away.
    Other(&'static str),
}

/// Looks at the environment the launcher sets.
pub fn detect() -> Launch {
    detect_from(|k| std::env::var_os(k).is_some())
}

/// The number of processes the MPI launcher started, read from its
/// environment without loading MPI (1 outside a launcher).
pub fn launched_size() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
        .unwrap_or(1)
}

fn detect_from(has: impl Fn(&str) -> bool) -> Launch {
    if has("OMPI_COMM_WORLD_SIZE") {
        return Launch::OpenMpi;
    }
    for k in ["PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS"] {
        if has(k) {
            return Launch::Other(k);
        }
    }
    Launch::Single
}

/// This process's place in the job.
#[derive(Clone, Copy)]
pub struct World {
    rank: usize,
    size: usize,
    mpi: Option<&'static Mpi>,
}

/// Slots of the status vector every collective reduces with MPI_MAX.
const FAILED_RANK: usize = 0; // rank + 1 of a rank that failed, else 0
const DONE_RANK: usize = 1; // rank + 1 of a rank in `finish`, else 0
const AT_SYNC: usize = 2; // 1 if this rank is in `sync`
const SLOTS: usize = 3;

impl World {
    /// A world of one process (no MPI).
    pub fn single() -> World {
        World { rank: 0, size: 1, mpi: None }
    }

    /// Joins the MPI job if the process runs under Open MPI's mpirun;
    /// a world of one otherwise. Another MPI's launcher is refused (exit 2):
    /// its handles are not Open MPI's, and it is not tested.
    pub fn init() -> Result<World, Error> {
        match detect() {
            Launch::Single => Ok(World::single()),
            Launch::Other(var) => Err(Error::usage(format!(
                "this process runs under an MPI launcher that is not Open MPI ({var} is set, \
                 OMPI_COMM_WORLD_SIZE is not); mlpdrive supports Open MPI's mpirun only \
                 (Debian: apt-get install openmpi-bin)"
            ))),
            Launch::OpenMpi => {
                if MPI.get().is_some() {
                    return Err(Error::failed("MPI was already initialised in this process".to_string()));
                }
                let mpi = Mpi::load_and_init().map_err(|e| Error::failed(format!("MPI: {e}")))?;
                let mpi: &'static Mpi = MPI.get_or_init(|| mpi);
                install_abort_on_panic();
                let rank = mpi.rank().map_err(mpi_error)?;
                let size = mpi.size().map_err(mpi_error)?;
                Ok(World { rank, size, mpi: Some(mpi) })
            }
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// More than one rank: results are merged at rank 0.
    pub fn is_multi(&self) -> bool {
        self.size > 1
    }

    /// This rank's contiguous share of `n` items (files, checkpoint ranks,
    /// queries): rank r of N gets `[r·n/N, (r+1)·n/N)`, so the shares are in
    /// rank order, cover `0..n` once, and differ in length by at most one.
    pub fn share(&self, n: usize) -> Range<usize> {
        let (r, s) = (self.rank as u128, self.size as u128);
        let n = n as u128;
        (r * n / s) as usize..((r + 1) * n / s) as usize
    }

    /// A [`World::sync`] on this rank ended because another rank had
    /// failed or finished.
    pub fn stopped_by_peer(&self) -> bool {
        STOPPED_BY_PEER.load(Ordering::SeqCst)
    }

    /// Rank 0 writes results and prints the summary.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// A barrier before `what` (e.g. "the measured phase", "step 3") that
    /// also carries every rank's health: returns an error when another rank
    /// has failed or already finished, so this rank stops instead of
    /// waiting for it. No-op in a world of one.
    pub fn sync(&self, what: &str) -> Result<(), Error> {
        let Some(mpi) = self.mpi else { return Ok(()) };
        let r = mpi.allreduce_max(&at_sync_status()).map_err(mpi_error)?;
        sync_outcome(&r, what).map_err(|s| s.error)
    }

    /// [`World::sync`] without blocking: starts it, and
    /// [`PendingSync::poll`] tells when every rank got there. The caller
    /// keeps doing its work meanwhile (a training rank keeps its reads in
    /// flight at the step barrier, as DLIO's loader workers do while the
    /// main process waits in `MPI_Barrier`). In a world of one it is
    /// complete at once.
    pub fn start_sync(&self, what: &str) -> Result<PendingSync, Error> {
        let pending = match self.mpi {
            Some(mpi) => Some(mpi.start_allreduce_max(&at_sync_status()).map_err(mpi_error)?),
            None => None,
        };
        Ok(PendingSync { mpi: self.mpi, pending, what: what.to_string() })
    }

    /// Rank 0's `bytes` on every rank (`MPI_Bcast`); alone, `bytes`.
    ///
    /// Not a status-carrying collective: a rank that failed would never
    /// join it. So call it only right after a [`World::sync`] that passed,
    /// with nothing in between that can fail or stop a rank (rank 0 sends
    /// its failure as the bytes instead).
    pub fn broadcast_from_root(&self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        match self.mpi {
            Some(mpi) => mpi.broadcast_bytes(bytes, self.rank).map_err(mpi_error),
            None => Ok(bytes.to_vec()),
        }
    }

    /// The end of the run on every rank: waits (through any `sync` other
    /// ranks are still in) until every rank is here, then gathers every
    /// rank's `report` bytes at rank 0. Returns them in rank order on rank
    /// 0, `None` elsewhere (and in a world of one: the caller has its own).
    pub fn finish(&self, failed: bool, report: &[u8]) -> Result<Option<Vec<Vec<u8>>>, Error> {
        let Some(mpi) = self.mpi else { return Ok(None) };
        let me = i32::try_from(self.rank + 1).unwrap_or(i32::MAX);
        let mut v = [0i32; SLOTS];
        v[DONE_RANK] = me;
        if failed {
            v[FAILED_RANK] = me;
        }
        // Each round meets either other ranks' `finish` or their `sync`
        // (which fails them out of their workload into `finish`). Ranks
        // that sync a bounded number of times make this loop bounded.
        loop {
            let r = mpi.allreduce_max(&v).map_err(mpi_error)?;
            if r[AT_SYNC] == 0 {
                break;
            }
        }
        mpi.gather_bytes(report, self.rank, self.size).map_err(mpi_error)
    }

    /// The last collective, after [`World::finish`]: an `MPI_Barrier` that
    /// rank 0 enters once it has written the results, so no rank exits
    /// (and a failed rank's non-zero exit makes mpirun end the job) before
    /// they are on disk.
    pub fn release(&self) -> Result<(), Error> {
        match self.mpi {
            Some(mpi) => mpi.barrier().map_err(mpi_error),
            None => Ok(()),
        }
    }

    /// `MPI_Finalize`, after the last collective.
    pub fn finalize(&self) {
        if let Some(mpi) = self.mpi
            && let Err(e) = mpi.finalize()
        {
            eprintln!("mlpdrive: rank {}: {e}", self.rank);
        }
    }

    /// Ends the whole job now (every rank), with `code`.
    pub fn abort(&self, code: i32) {
        if let Some(mpi) = self.mpi {
            mpi.abort(code);
        }
    }
}

/// A sync started with [`World::start_sync`]. Dropping it unfinished
/// waits for it (MPI owns its buffers until then).
pub struct PendingSync {
    mpi: Option<&'static Mpi>,
    pending: Option<ffi::PendingAllreduce>,
    what: String,
}

impl PendingSync {
    /// `None` while some rank has not reached the sync yet; then, once,
    /// what [`World::sync`] would have returned, telling a peer's failure
    /// from a peer that finished (e.g. at the end of a timed run).
    pub fn poll(&mut self) -> Option<Result<(), PeerStop>> {
        let (Some(mpi), Some(p)) = (self.mpi, self.pending.as_mut()) else { return Some(Ok(())) };
        match mpi.test(p) {
            Ok(None) => None,
            Ok(Some(r)) => {
                self.pending = None;
                Some(sync_outcome(&r, &self.what))
            }
            Err(e) => {
                self.pending = None;
                Some(Err(PeerStop { peer_failed: true, error: mpi_error(e) }))
            }
        }
    }
}

/// The status vector of a rank at a sync point.
fn at_sync_status() -> [i32; SLOTS] {
    let mut v = [0i32; SLOTS];
    v[AT_SYNC] = 1;
    v
}

/// Why a sync ended this rank's work: another rank failed (or MPI did),
/// or another rank finished without failing.
#[derive(Debug)]
pub struct PeerStop {
    pub peer_failed: bool,
    pub error: Error,
}

/// What a completed sync means for this rank: go on, or stop because
/// another rank failed or finished.
fn sync_outcome(r: &[i32], what: &str) -> Result<(), PeerStop> {
    if r[FAILED_RANK] > 0 || r[DONE_RANK] > 0 {
        STOPPED_BY_PEER.store(true, Ordering::SeqCst);
        let who = if r[FAILED_RANK] > 0 { r[FAILED_RANK] } else { r[DONE_RANK] } - 1;
        return Err(PeerStop {
            peer_failed: r[FAILED_RANK] > 0,
            error: Error::failed(format!(
                "stopped before {what}: rank {who} failed or finished early (its error is in the results)"
            )),
        });
    }
    Ok(())
}

fn mpi_error(e: String) -> Error {
    Error::failed(format!("MPI: {e}"))
}

/// A panic on any rank would leave the others waiting in a collective:
/// after the usual panic message, end the whole job.
fn install_abort_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if let Some(mpi) = MPI.get() {
            mpi.abort(101);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launchers_are_told_apart() {
        let env = |vars: &'static [&'static str]| move |k: &str| vars.contains(&k);
        assert_eq!(detect_from(env(&[])), Launch::Single);
        assert_eq!(detect_from(env(&["OMPI_COMM_WORLD_SIZE", "PMIX_RANK"])), Launch::OpenMpi);
        assert_eq!(detect_from(env(&["PMI_RANK", "PMI_SIZE"])), Launch::Other("PMI_SIZE"));
    }

    #[test]
    fn shares_cover_everything_once_in_rank_order() {
        for (n, size) in [(8, 2), (8, 3), (3, 4), (1000, 7)] {
            let mut next = 0;
            for rank in 0..size {
                let s = World { rank, size, mpi: None }.share(n);
                assert_eq!(s.start, next, "n={n} size={size} rank={rank}");
                assert!(s.len() == n / size || s.len() == n / size + 1);
                next = s.end;
            }
            assert_eq!(next, n);
        }
        assert_eq!(World::single().share(5), 0..5);
    }

    #[test]
    fn a_world_of_one_needs_no_mpi() {
        let w = World::single();
        assert!(w.is_root() && !w.is_multi());
        w.sync("the measured phase").unwrap();
        assert!(w.start_sync("step 1").unwrap().poll().unwrap().is_ok());
        assert!(w.finish(false, b"x").unwrap().is_none());
        w.finalize();
    }
}
