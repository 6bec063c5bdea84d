//! `mlpdrive datagen PRESET --target URI`: writes a training data set in
//! its real format through the target (O_DIRECT when `io.direct`).
//!
//! Files are spread over `--jobs` writer threads (file i → job i mod jobs),
//! each with its own queue. A file is written in 1 MiB chunks, chunk 0
//! last (after every other chunk completed), then committed (truncated to
//! its size and fsynced). So a file whose size is right and whose first
//! block holds the expected bytes was completely written: a rerun keeps it
//! (resumable generation) and rewrites anything else.
//!
//! As the ranks of an MPI job (`mpirun -np N mlpdrive datagen …`) the files
//! are shared out as DLIO's datagen does: rank r of N writes files r, r+N,
//! r+2N, … (train files, then valid files, in one list); rank 0 gathers
//! the counts and prints the job's line. See docs/scale.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::buf::{BufPool, align_up};
use crate::cli::DatagenArgs;
use crate::config::{self, training::TrainingConfig};
use crate::datasets::compose::Composer;
use crate::datasets::{DatasetSpec, Split};
use crate::engine::{self, Control, Data, Next, OpSource, Request, WorkerReport};
use crate::error::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Error};
use crate::mpi::World;
use crate::recorder::{LiveCounters, SeriesKey};
use crate::target::uri;
use crate::target::{Completion, ObjectHandle, Op, OpKind, OpenOptions, Target};

/// Bytes per write request.
pub const CHUNK_BYTES: u64 = 1 << 20;
/// Writes in flight per job.
const DEPTH: usize = 8;
/// Bytes compared to decide whether an existing file can be kept.
const PROBE_BYTES: u64 = 4096;

/// Counters shared with the progress printer.
#[derive(Default)]
struct Tally {
    written: AtomicU64,
    kept: AtomicU64,
    bytes: AtomicU64,
}

/// What one process's generation did.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Outcome {
    folder: String,
    written: u64,
    kept: u64,
    bytes: u64,
    secs: f64,
    errors: u64,
    first_error: Option<String>,
    interrupted: bool,
    /// A usage error (exit 2) stopped it before it wrote anything.
    usage_error: Option<String>,
}

pub fn run(args: &DatagenArgs) -> Result<i32, Error> {
    let world = World::init()?;
    if !world.is_multi() {
        let out = generate(args, &world)?;
        world.finalize();
        println!("{}", line(&out, 1));
        return Ok(exit_code(&out));
    }
    // An MPI job: every rank takes part in the gather, whatever happened.
    let out = generate(args, &world).unwrap_or_else(|e| match e {
        Error::Usage(m) => Outcome { usage_error: Some(m), ..Outcome::default() },
        Error::Failed(m) => Outcome { errors: 1, first_error: Some(m), ..Outcome::default() },
    });
    let bytes = serde_json::to_vec(&out).expect("a datagen outcome is plain data and always serialises");
    let failed = out.usage_error.is_some() || exit_code(&out) != EXIT_OK;
    let gathered = match world.finish(failed, &bytes) {
        Ok(g) => g,
        Err(e) => {
            // MPI itself failed: end the job rather than risk a hang.
            world.abort(EXIT_FAILED);
            return Err(e);
        }
    };
    let released = world.release();
    world.finalize();
    released?;
    let Some(all) = gathered else {
        // Not rank 0: this rank's own outcome, as it would be alone.
        if let Some(m) = out.usage_error {
            return Err(Error::usage(format!("rank {}: {m}", world.rank())));
        }
        if let Some(e) = &out.first_error {
            eprintln!("mlpdrive datagen: rank {}: error: {e}", world.rank());
        }
        return Ok(exit_code(&out));
    };
    let outs: Vec<Outcome> = all
        .iter()
        .enumerate()
        .map(|(r, b)| serde_json::from_slice(b).map_err(|e| Error::failed(format!("rank {r}: bad report: {e}"))))
        .collect::<Result<_, _>>()?;
    if let Some((r, m)) = outs.iter().enumerate().find_map(|(r, o)| o.usage_error.as_ref().map(|m| (r, m))) {
        return Err(Error::usage(format!("rank {r}: {m}")));
    }
    let mut job = Outcome { folder: outs[0].folder.clone(), ..Outcome::default() };
    for (r, o) in outs.iter().enumerate() {
        job.written += o.written;
        job.kept += o.kept;
        job.bytes += o.bytes;
        job.secs = job.secs.max(o.secs);
        job.errors += o.errors;
        job.interrupted |= o.interrupted;
        if job.first_error.is_none() {
            job.first_error = o.first_error.as_ref().map(|e| format!("rank {r}: {e}"));
        }
    }
    println!("{}", line(&job, outs.len()));
    Ok(exit_code(&job))
}

/// The summary line (the job's totals under MPI).
fn line(o: &Outcome, ranks: usize) -> String {
    let by = if ranks > 1 { format!(" by {ranks} MPI ranks") } else { String::new() };
    format!(
        "datagen {}: {} files written, {} kept (already valid), {} bytes in {:.1} s ({:.1} MB/s){by}",
        o.folder,
        o.written,
        o.kept,
        o.bytes,
        o.secs,
        o.bytes as f64 / 1e6 / o.secs.max(1e-9)
    )
}

/// Prints the error, if any, and gives the exit code.
fn exit_code(o: &Outcome) -> i32 {
    if o.usage_error.is_some() {
        return EXIT_USAGE;
    }
    if o.errors > 0 || o.interrupted {
        let why = o.first_error.clone().unwrap_or_else(|| "interrupted".into());
        eprintln!("mlpdrive datagen: error: {why} ({} errors); rerun to resume", o.errors);
        return EXIT_FAILED;
    }
    EXIT_OK
}

/// This process's share of the data set (all of it alone).
fn generate(args: &DatagenArgs, world: &World) -> Result<Outcome, Error> {
    let cfg = config::load(&args.workload, &args.set, None, None)?;
    if cfg.common.workload != "training" {
        return Err(Error::usage(format!(
            "datagen: workload '{}' has no data set to generate (training presets do)",
            cfg.common.workload
        )));
    }
    let t = TrainingConfig::from_run_config(&cfg)?;
    let spec = DatasetSpec::from_config(&t, cfg.common.seed);
    spec.layout(Split::Train, 0).map_err(|e| Error::usage(format!("config key `dataset.format`: {e}")))?;
    let jobs = match args.jobs {
        Some(0) => return Err(Error::usage("--jobs must be at least 1")),
        Some(j) => j.min(256),
        None => std::thread::available_parallelism().map_or(2, |n| n.get() as u32).min(8),
    };
    let target_str = args.target.as_deref().unwrap_or(uri::DEFAULT_TARGET);
    let parsed = uri::parse(target_str)?;
    let tspec = uri::check(&parsed, &args.safety.flags())?;
    let opts =
        OpenOptions { direct: cfg.common.io.direct, use_uring: cfg.common.io.engine == config::EngineKind::IoUring };
    let target = crate::run::open_target(&tspec, opts, &cfg.common)?;
    let all: Vec<(Split, u64)> =
        [Split::Train, Split::Valid].into_iter().flat_map(|s| (0..spec.count(s)).map(move |i| (s, i))).collect();
    // Rank r of N: files r, r+N, r+2N, … (alone: all of them).
    let files: Vec<(Split, u64)> = all.into_iter().skip(world.rank()).step_by(world.size()).collect();
    let total = files.len() as u64;
    let quiet = args.quiet || !world.is_root();
    if world.is_multi() && !quiet {
        let n = world.size();
        eprintln!(
            "mlpdrive datagen: {n} MPI ranks: rank r writes files r, r+{n}, r+{}, … (progress is rank 0's)",
            2 * n
        );
    }
    if !quiet {
        eprintln!(
            "mlpdrive datagen: {} files ({} train, {} valid) of {} under {} in {}, {jobs} jobs",
            spec.num_files_train + spec.num_files_eval,
            spec.num_files_train,
            spec.num_files_eval,
            spec.format.as_str(),
            spec.folder,
            tspec.display
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    crate::signal::install(&stop);
    let tally = Tally::default();
    let done = AtomicBool::new(false);
    let clock = crate::clock::Clock::real();
    let started = clock.now();
    let ctl = Control {
        stop: stop.clone(),
        deadline: None,
        live: Arc::new(LiveCounters::default()),
        verify: crate::datagen::Verifier::OFF,
        continue_on_error: false,
        stall_timeout: cfg.common.io.timeout,
        clock: clock.clone(),
    };
    let reports: Vec<Result<WorkerReport, Error>> = std::thread::scope(|s| {
        let printer = (!quiet).then(|| s.spawn(|| progress(&tally, &done, total)));
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                let mine: Vec<(Split, u64)> = files.iter().copied().skip(j as usize).step_by(jobs as usize).collect();
                let (ctl, spec, target, tally) = (ctl.clone(), &spec, target.as_ref(), &tally);
                s.spawn(move || -> Result<WorkerReport, Error> {
                    let align = target.info().caps.align;
                    let mut pool = BufPool::new(DEPTH, CHUNK_BYTES as usize, align);
                    let mut queue = target
                        .queue(DEPTH, &mut pool)
                        .map_err(|e| Error::failed(format!("datagen job {j}: cannot set up its queue: {e}")))?;
                    let mut src = WriterSource::new(spec, target, mine, tally);
                    let mut rep = WorkerReport::default();
                    engine::run_worker(&mut src, queue.as_mut(), &mut pool, &ctl, &mut rep);
                    if let Some(e) = src.error.take() {
                        rep.errors.add(|| e);
                    }
                    if rep.errors.count == 0 && !src.finished && !ctl.stop.load(Ordering::Relaxed) {
                        rep.errors.add(|| "datagen job ended before its last file".into());
                    }
                    Ok(rep)
                })
            })
            .collect();
        let out = handles.into_iter().map(|h| h.join().expect("datagen job panicked")).collect();
        done.store(true, Ordering::SeqCst);
        if let Some(p) = printer {
            p.join().expect("progress thread panicked");
        }
        out
    });
    let mut errors = crate::engine::ErrorTally::default();
    for r in reports {
        errors.merge(&r?.errors);
    }
    let secs = clock.now().saturating_duration_since(started).as_secs_f64();
    Ok(Outcome {
        folder: spec.folder.clone(),
        written: tally.written.load(Ordering::SeqCst),
        kept: tally.kept.load(Ordering::SeqCst),
        bytes: tally.bytes.load(Ordering::SeqCst),
        secs,
        errors: errors.count,
        first_error: errors.first,
        interrupted: crate::signal::interrupted(),
        usage_error: None,
    })
}

fn progress(tally: &Tally, done: &AtomicBool, total: u64) {
    let mut last = Instant::now();
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            let n = tally.written.load(Ordering::Relaxed) + tally.kept.load(Ordering::Relaxed);
            eprintln!("datagen: {n}/{total} files, {:.1} GB written", tally.bytes.load(Ordering::Relaxed) as f64 / 1e9);
        }
    }
}

fn key(op: OpKind) -> SeriesKey {
    SeriesKey { phase: "datagen", op, tier: "storage" }
}

/// Where the current file is.
enum Stage {
    /// Start the next file.
    Next,
    /// Probe read of an existing file in flight.
    Probing,
    /// Chunks 1.. being written.
    Writing,
    /// Chunk 0 in flight.
    Chunk0,
    /// Commit in flight.
    Commit,
}

/// One job's files, one at a time.
struct WriterSource<'a> {
    spec: &'a DatasetSpec,
    target: &'a dyn Target,
    files: Vec<(Split, u64)>,
    next_file: usize,
    stage: Stage,
    name: String,
    obj: ObjectHandle,
    composer: Option<Composer>,
    chunk0: Vec<u8>,
    next_offset: u64,
    in_flight: usize,
    probe_ok: Option<bool>,
    tally: &'a Tally,
    error: Option<String>,
    finished: bool,
}

impl<'a> WriterSource<'a> {
    fn new(spec: &'a DatasetSpec, target: &'a dyn Target, files: Vec<(Split, u64)>, tally: &'a Tally) -> Self {
        WriterSource {
            spec,
            target,
            files,
            next_file: 0,
            stage: Stage::Next,
            name: String::new(),
            obj: ObjectHandle(0),
            composer: None,
            chunk0: Vec::new(),
            next_offset: 0,
            in_flight: 0,
            probe_ok: None,
            tally,
            error: None,
            finished: false,
        }
    }

    fn len(&self) -> u64 {
        self.composer.as_ref().map_or(0, |c| c.layout().len)
    }

    fn fail(&mut self, msg: String) -> Next {
        self.error.get_or_insert(msg);
        Next::Done
    }

    /// Opens the next file: probe it if it may be complete, else start writing.
    fn start_file(&mut self) -> Next {
        let Some(&(split, i)) = self.files.get(self.next_file) else {
            self.finished = true;
            return Next::Done;
        };
        self.next_file += 1;
        self.name = self.spec.name(split, i);
        let layout = match self.spec.layout(split, i) {
            Ok(l) => l,
            Err(e) => return self.fail(format!("{}: {e}", self.name)),
        };
        let len = layout.len;
        self.composer = Some(Composer::new(layout));
        if self.target.info().caps.stores_data {
            match self.target.open(&self.name) {
                Ok(Some((h, size))) if size == len => {
                    self.obj = h;
                    self.stage = Stage::Probing;
                    self.in_flight += 1;
                    let align = self.target.info().caps.align as u64;
                    let probe = align_up(PROBE_BYTES.min(len), align).max(align) as u32;
                    return Next::Op(Request {
                        op: Op::Read { obj: h, offset: 0, len: probe },
                        data: Data::None,
                        key: key(OpKind::Read),
                        exact: false,
                    });
                }
                Ok(_) => {}
                Err(e) => return self.fail(format!("cannot open {}: {e}", self.name)),
            }
        }
        self.begin_writing()
    }

    fn begin_writing(&mut self) -> Next {
        let len = self.len();
        match self.target.create(&self.name, len) {
            Ok(h) => self.obj = h,
            Err(e) => return self.fail(format!("cannot create {}: {e}", self.name)),
        }
        let first = CHUNK_BYTES.min(len) as usize;
        self.chunk0.resize(first, 0);
        let composer = self.composer.as_mut().expect("a file in progress");
        composer.emit(&mut self.chunk0);
        self.next_offset = first as u64;
        self.stage = Stage::Writing;
        self.next_write()
    }

    fn write(&mut self, offset: u64, len: u64) -> Next {
        self.in_flight += 1;
        Next::Op(Request {
            op: Op::Write { obj: self.obj, offset, len: len as u32 },
            data: Data::Source,
            key: key(OpKind::Write),
            exact: false,
        })
    }

    fn next_write(&mut self) -> Next {
        let len = self.len();
        if self.next_offset < len {
            let off = self.next_offset;
            let n = CHUNK_BYTES.min(len - off);
            self.next_offset += n;
            return self.write(off, n);
        }
        if self.in_flight > 0 {
            return Next::Wait;
        }
        self.stage = Stage::Chunk0;
        self.write(0, self.chunk0.len() as u64)
    }
}

impl OpSource for WriterSource<'_> {
    fn next(&mut self, _now: Instant) -> Next {
        if self.error.is_some() {
            return Next::Done;
        }
        match self.stage {
            Stage::Next => self.start_file(),
            Stage::Probing => match self.probe_ok.take() {
                None => Next::Wait,
                Some(true) => {
                    self.tally.kept.fetch_add(1, Ordering::Relaxed);
                    self.stage = Stage::Next;
                    self.start_file()
                }
                Some(false) => self.begin_writing(),
            },
            Stage::Writing => self.next_write(),
            Stage::Chunk0 if self.in_flight > 0 => Next::Wait,
            Stage::Chunk0 => {
                self.stage = Stage::Commit;
                self.in_flight += 1;
                Next::Op(Request {
                    op: Op::Commit { obj: self.obj, size: self.len() },
                    data: Data::None,
                    key: key(OpKind::Commit),
                    exact: false,
                })
            }
            Stage::Commit if self.in_flight > 0 => Next::Wait,
            Stage::Commit => {
                self.tally.written.fetch_add(1, Ordering::Relaxed);
                self.tally.bytes.fetch_add(self.len(), Ordering::Relaxed);
                self.stage = Stage::Next;
                self.start_file()
            }
        }
    }

    fn fill(&mut self, req: &Request, dst: &mut [u8]) {
        if let Op::Write { offset: 0, .. } = req.op {
            dst.copy_from_slice(&self.chunk0[..dst.len()]);
        } else if let Some(c) = self.composer.as_mut() {
            debug_assert_eq!(
                Some(c.position()),
                match req.op {
                    Op::Write { offset, .. } => Some(offset),
                    _ => None,
                }
            );
            c.emit(dst);
        }
    }

    fn completed(&mut self, req: &Request, c: &Completion) {
        self.in_flight -= 1;
        if let Err(e) = &c.result {
            self.error.get_or_insert_with(|| format!("{}: {e}", self.name));
            return;
        }
        if let (Stage::Probing, Op::Read { .. }) = (&self.stage, req.op) {
            let layout = self.composer.as_ref().expect("a file in progress").layout().clone();
            let want = PROBE_BYTES.min(layout.len) as usize;
            let mut expected = vec![0u8; want];
            Composer::new(layout).emit(&mut expected);
            let got = c.data();
            self.probe_ok = Some(got.len() >= want && got[..want] == expected[..]);
        }
    }
}
