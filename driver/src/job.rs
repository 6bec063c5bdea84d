//! `mlpdrive run` as one rank of an MPI job (`mpirun -np N mlpdrive run …`,
//! N > 1): every rank validates, opens its target and runs its share of the
//! workload; then every rank — whether it succeeded, failed, or stopped
//! with a usage error — takes part in the final gather of its result at
//! rank 0 ([`World::finish`]), which merges them ([`results::ranks`]) and
//! writes one results.json plus each rank's own `rank-<r>.json`.
//!
//! Exit codes: rank 0 exits with the job's (0 ok, 1 any rank failed, 2 any
//! rank had a usage error, in which case nothing is written); every other
//! rank with its own. See docs/scale.md.

use crate::cli::{ResultsArgs, RunArgs};
use crate::error::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Error};
use crate::mpi::World;
use crate::recorder::RecorderWire;
use crate::results::ranks::{self, RankReport};
use crate::results::{self, RunStatus};
use crate::run;

pub fn run(world: &World, args: &RunArgs) -> Result<i32, Error> {
    let outcome = root_or_rank(world, args);
    if world.is_root() {
        // Rank 0 releases the others once it is done (written or not).
        let released = world.release();
        world.finalize();
        released?;
    }
    outcome
}

fn root_or_rank(world: &World, args: &RunArgs) -> Result<i32, Error> {
    let mut prepared = None;
    let executed = run::prepare(args, world).and_then(|p| {
        let p = prepared.insert(p);
        p.execute(&args.out, world)
    });
    let report = match &executed {
        Ok(ex) => RankReport {
            rank: world.rank(),
            host: ex.result.host.clone(),
            result: Some(ex.result.clone()),
            recorder: ex.recorder.to_wire(),
            error: None,
            exit_code: if ex.result.status == RunStatus::Ok { EXIT_OK } else { EXIT_FAILED },
            stopped_by_peer: world.stopped_by_peer(),
        },
        Err(e) => RankReport {
            rank: world.rank(),
            host: hostname(),
            result: None,
            recorder: RecorderWire::default(),
            error: Some(e.to_string()),
            exit_code: e.exit_code(),
            stopped_by_peer: world.stopped_by_peer(),
        },
    };
    // A panic here would MPI_Abort the job; returning early instead would
    // leave the other ranks waiting in `finish`.
    let bytes = serde_json::to_vec(&report).expect("a rank report is plain data and always serialises");
    let gathered = match world.finish(report.exit_code != EXIT_OK, &bytes) {
        Ok(g) => g,
        Err(e) => {
            world.abort(EXIT_FAILED);
            return Err(e);
        }
    };
    let Some(all) = gathered else {
        // Not rank 0: wait until rank 0 has written the results, then this
        // rank's own outcome, as it would be alone.
        let released = world.release();
        world.finalize();
        released?;
        return match executed {
            Ok(ex) => {
                if report.exit_code != EXIT_OK {
                    let first = ex.result.errors.first.as_deref().or(ex.result.verify.first.as_deref());
                    eprintln!(
                        "mlpdrive: rank {}: run {}: {} (rank 0 has the job's results)",
                        world.rank(),
                        ex.result.status.as_str(),
                        first.unwrap_or("see rank-<r>.json")
                    );
                }
                Ok(report.exit_code)
            }
            Err(Error::Usage(m)) => Err(Error::Usage(format!("rank {}: {m}", world.rank()))),
            Err(Error::Failed(m)) => Err(Error::Failed(format!("rank {}: {m}", world.rank()))),
        };
    };
    let reports: Vec<RankReport> = all
        .iter()
        .enumerate()
        .map(|(r, b)| serde_json::from_slice(b).map_err(|e| Error::failed(format!("rank {r}: bad report: {e}"))))
        .collect::<Result<_, _>>()?;
    // A usage error anywhere: say so, write nothing (as a run alone would).
    if let Some(bad) = reports.iter().find(|r| r.exit_code == EXIT_USAGE) {
        return Err(Error::usage(format!("rank {}: {}", bad.rank, bad.error.as_deref().unwrap_or("usage error"))));
    }
    let (Some(p), Ok(ex)) = (prepared.as_ref(), executed.as_ref()) else {
        let msg = reports.iter().find_map(|r| r.error.clone().map(|m| format!("rank {}: {m}", r.rank)));
        return Err(Error::failed(msg.unwrap_or_else(|| "rank 0 did not run".into())));
    };
    let hosts: Vec<String> = reports.iter().map(|r| r.host.clone()).collect();
    let merged = ranks::merge(&reports, |s, rec, w| p.merge_summaries(s, rec, w, &hosts)).map_err(Error::failed)?;
    write(&args.out, ex, &merged, &reports)
}

/// Rank 0: config.yaml, summary.txt, every rank's `rank-<r>.json`, then the
/// merged results.json last; `--output` gets the merged result.
fn write(
    out: &ResultsArgs,
    ex: &run::Executed,
    merged: &results::RunResult,
    reports: &[RankReport],
) -> Result<i32, Error> {
    let fail = |e: std::io::Error| Error::failed(format!("cannot write results under {}: {e}", out.results.display()));
    for r in reports {
        if let Some(res) = &r.result {
            ex.dir.write_rank(r.rank, res).map_err(fail)?;
        }
    }
    let written = ex.dir.write_all(merged, &ex.config_yaml).map_err(fail)?;
    if let Some(path) = &out.output {
        results::write_json_atomic(path, merged)
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
    }
    let where_line = format!("mlpdrive: results of {} ranks in {}", reports.len(), written.display());
    Ok(run::finish(out, merged, &written, &where_line))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
