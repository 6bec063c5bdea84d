//! `vdb`: the vector database workload (MLPerf Storage VDB at the storage
//! interface, spec vdb.md). Steps:
//!
//! 1. `prepare` (untimed, CPU only): seeded synthetic vectors and queries,
//!    or vectors read from files ([`files`]), exact ground truth by brute
//!    force (or from its cache), a two-pass Vamana graph built on all
//!    cores ([`graph`]), the PQ (or SQ8) codes kept in RAM ([`quant`],
//!    [`pq`]) and the `_disk.index` bytes in DiskANN's layout ([`layout`]).
//! 2. `index-write` (recorded, not in the measured window): the index file
//!    (and with PQ, DiskANN's pivot, code and metadata files next to it,
//!    so diskannpy can open the directory) is written through the target
//!    by the engine, then committed.
//! 3. `measure`: beam search ([`search`]) on one engine worker with many
//!    queries in flight, once per sweep point; QPS, per-query latency and
//!    recall@1/@10/@100/@k per point.

pub mod data;
pub mod files;
pub mod graph;
pub mod layout;
mod par;
pub mod pq;
pub mod quant;
pub mod ranks;
pub mod search;
mod write;

use std::time::Instant;

use serde_json::json;

use super::{RunEnv, WorkloadOutput, merge_reports};
use crate::buf::BufPool;
use crate::config::vdb::VdbConfig;
use crate::engine::{self, WorkerReport};
use crate::error::Error;
use crate::recorder::Recorder;
use layout::Layout;
use search::{Answer, BeamSearch, SearchParams};

/// The index files' common prefix inside the target (diskannpy's
/// `index_prefix` is `index`).
pub const INDEX_PREFIX: &str = "vdb/index";
/// The index file's name inside the target.
pub const INDEX_NAME: &str = "vdb/index_disk.index";

/// Everything built in memory before any I/O.
pub struct Prepared {
    pub queries: data::Matrix,
    pub truth: Vec<Vec<u32>>,
    pub truth_source: TruthSource,
    /// Things to tell the user (a cache that could not be written).
    pub notes: Vec<String>,
    pub codes: quant::Codes,
    pub layout: Layout,
    pub file: Vec<u8>,
    pub gt_s: f64,
    pub build_s: f64,
    /// CPU seconds (user + system, every thread of the process) spent in
    /// the build (graph and codes), from getrusage.
    pub build_cpu_s: f64,
    /// Of `build_s`: training and encoding the codes.
    pub codes_s: f64,
    pub mean_degree: f64,
    pub build_threads: usize,
}

/// Where the exact ground truth came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruthSource {
    Computed,
    /// Computed and written to the cache next to the base file.
    Cached,
    /// Read from the cache (and checked).
    FromCache,
}

impl TruthSource {
    fn name(self) -> &'static str {
        match self {
            TruthSource::Computed => "computed",
            TruthSource::Cached => "computed, cached",
            TruthSource::FromCache => "cache",
        }
    }
}

/// The base and query vectors: read from files or generated.
fn vectors(cfg: &VdbConfig, seed: u64) -> Result<(data::Matrix, data::Matrix), Error> {
    let normalised = cfg.metric == "cosine";
    let (n, dim) = (cfg.num_vectors as usize, cfg.dim as usize);
    let base = match &cfg.base_file {
        Some(path) => {
            let mut m = files::load(std::path::Path::new(path), Some(n), Some(dim))?;
            if normalised {
                files::normalise_rows(&mut m);
            }
            m
        }
        None => data::base_vectors(seed, n, dim, normalised),
    };
    let nq = cfg.num_query_vectors as usize;
    let queries = match &cfg.query_file {
        Some(path) => {
            let mut m = files::load(std::path::Path::new(path), Some(nq), Some(dim))?;
            if normalised {
                files::normalise_rows(&mut m);
            }
            m
        }
        None => data::queries(seed, &base, nq, cfg.query_mode == "planted", cfg.query_noise as f32, normalised),
    };
    Ok((base, queries))
}

/// Exact ground truth: from the cache next to `base_file` when it matches,
/// else by brute force (then cached when asked).
fn truth(
    cfg: &VdbConfig,
    base: &data::Matrix,
    queries: &data::Matrix,
    threads: usize,
    notes: &mut Vec<String>,
) -> Result<(Vec<Vec<u32>>, TruthSource), Error> {
    let k = cfg.k as usize;
    let cache = cfg
        .base_file
        .as_ref()
        .filter(|_| cfg.ground_truth_cache)
        .map(|f| files::truth_path(std::path::Path::new(f), k, files::truth_key(base, queries, k)));
    if let Some(path) = &cache
        && let Some(t) = files::read_truth(path, base, queries, k)?
    {
        return Ok((t, TruthSource::FromCache));
    }
    let t = data::ground_truth(base, queries, k, threads);
    let Some(path) = cache else { return Ok((t, TruthSource::Computed)) };
    match files::write_truth(&path, base, queries, &t, k) {
        Ok(()) => Ok((t, TruthSource::Cached)),
        Err(e) => {
            notes.push(format!("vdb: could not cache the ground truth at {}: {e}", path.display()));
            Ok((t, TruthSource::Computed))
        }
    }
}

/// Builds the data set, ground truth, graph, codes and file bytes.
/// `clock` gives the time for the reported build and ground-truth seconds.
pub fn prepare(cfg: &VdbConfig, seed: u64, clock: &dyn Fn() -> Instant) -> Result<Prepared, Error> {
    let (base, queries) = vectors(cfg, seed)?;
    let n = base.rows();
    let threads = build_threads(cfg);
    let mut notes = Vec::new();
    let t0 = clock();
    let (truth, truth_source) = truth(cfg, &base, &queries, threads, &mut notes)?;
    let t1 = clock();
    let cpu0 = crate::rusage::self_usage();
    let params = graph::BuildParams {
        max_degree: cfg.max_degree as usize,
        build_list: cfg.build_list as usize,
        alpha: cfg.alpha as f32,
        seed,
        passes: cfg.build_passes as usize,
        threads,
    };
    let g = graph::build(&base, &params);
    let t_codes = clock();
    let codes = match cfg.effective_pq_chunks() {
        Some(chunks) => quant::Codes::Pq(quant::Pq::train_and_encode(&base, chunks as usize, seed, threads)),
        None => quant::Codes::Sq8(quant::Sq8::encode(&base)),
    };
    let t2 = clock();
    let cpu = crate::rusage::self_usage().since(&cpu0);
    let mean_degree = g.adj.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    let (layout, file) = layout::encode(&base, &g, cfg.max_degree as usize);
    Ok(Prepared {
        queries,
        truth,
        truth_source,
        notes,
        codes,
        layout,
        file,
        gt_s: (t1 - t0).as_secs_f64(),
        build_s: (t2 - t1).as_secs_f64(),
        build_cpu_s: cpu.cpu_user_s + cpu.cpu_sys_s,
        codes_s: (t2 - t_codes).as_secs_f64(),
        mean_degree,
        build_threads: threads,
    })
}

/// The files DiskANN keeps next to `_disk.index` (with PQ codes): the
/// pivots, the codes, and diskannpy's metadata (u64 dtype 0 = f32, metric
/// 0 = L2, points, dimension; cosine is searched as L2 on normalised
/// vectors). Empty with SQ8 codes (DiskANN has no such file).
pub fn companion_files(p: &Prepared) -> Vec<(String, Vec<u8>)> {
    let quant::Codes::Pq(pq) = &p.codes else { return Vec::new() };
    let meta: Vec<u8> = [0u64, 0, p.layout.npts, p.layout.dim].iter().flat_map(|v| v.to_le_bytes()).collect();
    companion_names(&p.codes).into_iter().zip([pq.pivots_file(), pq.compressed_file(), meta]).collect()
}

/// The names of [`companion_files`].
fn companion_names(codes: &quant::Codes) -> Vec<String> {
    match codes {
        quant::Codes::Pq(_) => ["pq_pivots.bin", "pq_compressed.bin", "metadata.bin"]
            .iter()
            .map(|f| format!("{INDEX_PREFIX}_{f}"))
            .collect(),
        quant::Codes::Sq8(_) => Vec::new(),
    }
}

/// RAM a run needs, estimated: the vectors, the index file's bytes (built
/// in memory before they are written), the graph's lists (with DiskANN's
/// 1.3 × R slack during the build), the codes and the queries.
pub fn memory_bytes(cfg: &VdbConfig) -> u64 {
    let (n, dim, r) = (cfg.num_vectors, cfg.dim, cfg.max_degree);
    let vectors = n * dim * 4;
    let file = Layout::new(n, dim, r, 0).file_size;
    let graph = n * ((r * 13 / 10 + 1) * 4 + 24);
    let code_bytes = n * cfg.effective_pq_chunks().unwrap_or(dim);
    let queries = cfg.num_query_vectors * (dim * 4 + cfg.k * 4);
    vectors + file + graph + code_bytes + queries
}

/// Refuses a run the machine's available memory obviously cannot hold
/// (before anything is generated or written).
pub fn check_memory(cfg: &VdbConfig) -> Result<(), Error> {
    let need = memory_bytes(cfg);
    let Some(avail) = crate::workload::kvcache::mem_available() else { return Ok(()) };
    if need <= avail {
        return Ok(());
    }
    const GIB: f64 = (1u64 << 30) as f64;
    Err(crate::config::key_error(
        "num_vectors",
        format!(
            "{} vectors of {} dimensions need about {:.1} GiB of RAM (vectors {:.1} GiB, the index file {:.1} GiB, \
             graph and codes) to build in memory, more than the {:.1} GiB available; lower num_vectors or run on a \
             machine with more memory (partitioned builds are not available yet)",
            cfg.num_vectors,
            cfg.dim,
            need as f64 / GIB,
            (cfg.num_vectors * cfg.dim * 4) as f64 / GIB,
            Layout::new(cfg.num_vectors, cfg.dim, cfg.max_degree, 0).file_size as f64 / GIB,
            avail as f64 / GIB
        ),
    ))
}

/// Threads of the build and ground truth: `build_threads`, 0 = all cores.
pub fn build_threads(cfg: &VdbConfig) -> usize {
    if cfg.build_threads == 0 { par::all_cores() } else { cfg.build_threads as usize }
}

pub fn run(env: &RunEnv, cfg: &VdbConfig) -> Result<WorkloadOutput, Error> {
    let align = env.target.info().caps.align as u64;
    if !layout::SECTOR_BYTES.is_multiple_of(align) {
        return Err(Error::failed(format!(
            "the target's direct-I/O alignment ({align} bytes) does not divide DiskANN's 4096-byte sectors"
        )));
    }
    env.phase.set_cpu_only("prepare");
    let clock = env.clock.clone();
    let p = prepare(cfg, env.common.seed, &|| clock.now())?;
    // On a virtual clock CPU work takes no simulated time: no build figures.
    let cpu_timed = !env.clock.is_virtual();

    env.phase.set("index-write");
    let mut untimed = Recorder::new();
    let t_write = env.clock.now();
    // In an MPI job rank 0 writes the index and every rank searches that
    // one file (vdbbench: one collection, every worker queries it); each
    // rank built the same index in RAM (same seed) for its codes.
    let obj = if env.world.is_root() {
        let obj = write::write_index(env, INDEX_NAME, &p.file, &mut untimed)?;
        for (name, bytes) in companion_files(&p) {
            write::write_index(env, &name, &bytes, &mut untimed)?;
        }
        env.world.sync("opening the index")?;
        obj
    } else {
        env.world.sync("opening the index")?;
        ranks::open_index(env, INDEX_NAME, p.layout.file_size)?
    };
    // Only rank 0 wrote: another rank's wait for it is not a write time.
    let write_s =
        if env.world.is_root() { env.clock.now().saturating_duration_since(t_write).as_secs_f64() } else { 0.0 };
    // This rank's share of the queries (all of them alone).
    let queries = env.world.share((cfg.num_query_vectors * cfg.query_passes) as usize);

    // The measured window: queries by beam search, one sweep point after
    // another (one point without a sweep); every rank starts each together.
    let start = env.begin_measure()?;
    let mut recorder = Recorder::new();
    let mut errors = crate::engine::ErrorTally::default();
    let mut verify = None;
    let mut io_mode = None;
    let mut points = Vec::new();
    let mut last_end = start;
    let mut failed_queries = 0;
    for (i, (beam_width, search_list)) in cfg.sweep_points().into_iter().enumerate() {
        if i > 0 {
            env.world.sync(&format!("sweep point {}", i + 1))?;
        }
        let point_start = env.clock.now();
        let deadline = env.common.duration.map(|d| point_start + d);
        let ctl = env.control(deadline, crate::datagen::Verifier::OFF);
        let qd = (cfg.queries_in_flight * beam_width) as usize;
        let params = SearchParams {
            beam_width: beam_width as usize,
            search_list: search_list as usize,
            k: cfg.k as usize,
            queries_in_flight: cfg.queries_in_flight as usize,
            total_queries: queries.len(),
            first_query: queries.start,
        };
        let mut src = BeamSearch::new(p.layout, obj, &p.codes, &p.queries, params, search::read_key());
        let mut pool = BufPool::new(qd, p.layout.read_len() as usize, align as usize);
        let mut queue = env
            .target
            .queue(qd, &mut pool)
            .map_err(|e| Error::failed(format!("cannot set up the search queue: {e}")))?;
        let mut report = WorkerReport::default();
        engine::run_worker(&mut src, queue.as_mut(), &mut pool, &ctl, &mut report);
        io_mode.get_or_insert(queue.io_mode());
        drop(queue);
        let (rec, ver, errs, last) = merge_reports(std::slice::from_ref(&report));
        recorder.merge(&rec);
        errors.merge(&errs);
        match &mut verify {
            None => verify = Some(ver),
            Some(v) => v.merge(&ver),
        }
        if src.bad_records > 0 {
            errors.count += src.bad_records;
            if errors.first.is_none() {
                errors.first = src.first_bad.clone();
            }
        }
        failed_queries += src.failed_queries;
        let window_s = last.map_or(0.0, |l| l.saturating_duration_since(point_start).as_secs_f64());
        last_end = last_end.max(last.unwrap_or(point_start));
        points.push(Point { beam_width, search_list, answers: src.answers, window_s });
        let stop = env.stop.load(std::sync::atomic::Ordering::SeqCst);
        if errors.count > 0 && !env.common.continue_on_error || stop {
            break;
        }
    }
    recorder.merge(&untimed);
    let window_s = last_end.saturating_duration_since(start).as_secs_f64();
    let mut notes = vec![
        match &p.codes {
            quant::Codes::Pq(pq) => format!(
                "vdb: PQ codes of {} bytes per vector steer the search; {INDEX_PREFIX}_* is a DiskANN index set \
                 (diskannpy opens it with index_prefix \"index\")",
                pq.chunks
            ),
            quant::Codes::Sq8(_) => {
                "vdb: the in-RAM codes are SQ8 (not DiskANN's PQ): no PQ files are written; see docs/workloads/vdb.md"
                    .to_string()
            }
        },
        "vdb: index reads are checked by parsing each node record (datagen verification does not apply)".to_string(),
    ];
    notes.extend(p.notes.iter().cloned());
    if failed_queries > 0 {
        notes.push(format!("vdb: {failed_queries} queries abandoned after a failed read (not counted)"));
    }
    let mut summary = summary(cfg, &p, &points, write_s, cpu_timed);
    if env.world.is_multi() {
        ranks::add_rank_keys(&mut summary, env.world, &queries, &points);
    }
    if points.len() > 1 {
        notes.extend(sweep_lines(cfg, &summary));
    }
    let io_mode = io_mode.expect("one sweep point at least");
    let verify = verify.unwrap_or_default();
    Ok(WorkloadOutput { summary, recorder, verify, errors, window_s, io_mode, notes })
}

/// One search point's queries.
pub struct Point {
    pub beam_width: u64,
    pub search_list: u64,
    pub answers: Vec<Answer>,
    /// From the point's start to its last completion.
    pub window_s: f64,
}

/// One printed line per sweep point (the curve), from the summary.
fn sweep_lines(cfg: &VdbConfig, summary: &serde_json::Value) -> Vec<String> {
    let Some(points) = summary["sweep"].as_array() else { return Vec::new() };
    points
        .iter()
        .map(|p| {
            let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
            format!(
                "vdb sweep: W {:>2} L {:>4}: recall@{} {:.4}, recall@1 {:.4}, {:.1} reads/query, {:.0} QPS, \
                 p50 {:.3} ms, p99 {:.3} ms",
                p["beam_width"],
                p["search_list"],
                cfg.k,
                f("recall_at_k"),
                f("recall_at_1"),
                f("reads_per_query"),
                f("throughput_qps"),
                f("p50_latency_ms"),
                f("p99_latency_ms"),
            )
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Mean recall@`at` of the answers against the ground truth (`None` when
/// fewer than `at` neighbours are asked for).
pub fn mean_recall(answers: &[Answer], truth: &[Vec<u32>], k: usize, at: usize) -> Option<f64> {
    if at > k {
        return None;
    }
    if answers.is_empty() {
        return Some(0.0);
    }
    Some(answers.iter().map(|a| data::recall(&a.ids, &truth[a.qi], at)).sum::<f64>() / answers.len() as f64)
}

/// Mean recall@k and recall@1 of the answers against the ground truth.
pub fn recalls(answers: &[Answer], truth: &[Vec<u32>], k: usize) -> (f64, f64) {
    (mean_recall(answers, truth, k, k).unwrap_or(0.0), mean_recall(answers, truth, k, 1).unwrap_or(0.0))
}

/// The figures of one search point.
fn point_figures(cfg: &VdbConfig, p: &Prepared, pt: &Point) -> serde_json::Map<String, serde_json::Value> {
    let answers = &pt.answers;
    let mut lat: Vec<u64> = answers.iter().map(|a| a.latency_ns).collect();
    lat.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    let n = answers.len() as f64;
    let mean = |f: &dyn Fn(&Answer) -> u64| if n > 0.0 { answers.iter().map(f).sum::<u64>() as f64 / n } else { 0.0 };
    let k = cfg.k as usize;
    let (recall_k, recall_1) = recalls(answers, &p.truth, k);
    let reads = mean(&|a| a.reads);
    let v = json!({
        "beam_width": pt.beam_width,
        "search_list": pt.search_list,
        "queries": answers.len(),
        "throughput_qps": if pt.window_s > 0.0 { n / pt.window_s } else { 0.0 },
        "mean_latency_ms": if n > 0.0 { lat.iter().sum::<u64>() as f64 / n / 1e6 } else { 0.0 },
        "p50_latency_ms": ms(percentile(&lat, 50.0)),
        "p95_latency_ms": ms(percentile(&lat, 95.0)),
        "p99_latency_ms": ms(percentile(&lat, 99.0)),
        "p999_latency_ms": ms(percentile(&lat, 99.9)),
        "p9999_latency_ms": ms(percentile(&lat, 99.99)),
        "max_latency_ms": ms(lat.last().copied().unwrap_or(0)),
        "recall_at_k": recall_k,
        "recall_at_1": recall_1,
        "recall_at_10": mean_recall(answers, &p.truth, k, 10),
        "recall_at_100": mean_recall(answers, &p.truth, k, 100),
        "reads_per_query": reads,
        "bytes_per_query": reads * p.layout.read_len() as f64,
        "hops_per_query": mean(&|a| a.hops),
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a JSON object"),
    }
}

fn summary(cfg: &VdbConfig, p: &Prepared, points: &[Point], write_s: f64, cpu_timed: bool) -> serde_json::Value {
    let empty = Point { beam_width: cfg.beam_width, search_list: cfg.search_list, answers: Vec::new(), window_s: 0.0 };
    let first = point_figures(cfg, p, points.first().unwrap_or(&empty));
    let mut s = json!({
        "num_vectors": cfg.num_vectors,
        "dim": cfg.dim,
        "metric": cfg.metric,
        "query_mode": cfg.query_mode,
        "index": cfg.index,
        "quantizer": cfg.quantizer,
        "max_degree": cfg.max_degree,
        "build_list": cfg.build_list,
        "alpha": cfg.alpha,
        "build_passes": cfg.build_passes,
        "build_threads": p.build_threads,
        "k": cfg.k,
        "queries_in_flight": cfg.queries_in_flight,
        "index_bytes": p.layout.file_size,
        "node_len_bytes": p.layout.node_len,
        "nodes_per_sector": p.layout.nodes_per_sector,
        "mean_degree": p.mean_degree,
        "codes_bytes": p.codes.bytes(),
        "pq_chunks": cfg.effective_pq_chunks(),
        "index_files": std::iter::once(INDEX_NAME.to_string())
            .chain(companion_names(&p.codes))
            .collect::<Vec<_>>(),
        "build_s": cpu_timed.then_some(p.build_s),
        "codes_build_s": cpu_timed.then_some(p.codes_s),
        "build_cpu_s": cpu_timed.then_some(p.build_cpu_s),
        "ground_truth_s": cpu_timed.then_some(p.gt_s),
        "ground_truth_source": p.truth_source.name(),
        "index_write_s": write_s,
        "sweep": points.iter().map(|pt| serde_json::Value::Object(point_figures(cfg, p, pt))).collect::<Vec<_>>(),
    });
    // The first point's figures at the top level (the only point without a sweep).
    s.as_object_mut().expect("object").extend(first);
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::buf::AlignedBuf;
    use crate::engine::{Next, OpSource};
    use crate::target::{Completion, ObjectHandle, Op};

    fn small_config() -> VdbConfig {
        let yaml = "num_vectors: 3000\ndim: 32\nnum_query_vectors: 60\nmax_degree: 24\nbuild_list: 48\n\
                    search_list: 48\nbeam_width: 4\nqueries_in_flight: 5\nquery_noise: 0.02\n";
        let cfg: VdbConfig = serde_yaml_ng::from_str(yaml).expect("config");
        cfg.validate().expect("valid");
        cfg
    }

    /// Drives a beam search against the in-memory file, completing each
    /// batch of reads in reverse order (out of order, as a device may).
    fn search_in_memory(p: &Prepared, cfg: &VdbConfig) -> (Vec<Answer>, u64) {
        let params = SearchParams {
            beam_width: cfg.beam_width as usize,
            search_list: cfg.search_list as usize,
            k: cfg.k as usize,
            queries_in_flight: cfg.queries_in_flight as usize,
            total_queries: cfg.num_query_vectors as usize,
            first_query: 0,
        };
        let mut src = BeamSearch::new(p.layout, ObjectHandle(0), &p.codes, &p.queries, params, search::read_key());
        let mut now = Instant::now();
        let mut reads = 0u64;
        loop {
            let mut batch = Vec::new();
            let finished = loop {
                match src.next(now) {
                    Next::Op(r) => batch.push(r),
                    Next::Done => break true,
                    _ => break false,
                }
            };
            if finished && batch.is_empty() {
                break;
            }
            now += Duration::from_micros(100);
            for r in batch.into_iter().rev() {
                let Op::Read { offset, len, .. } = r.op else { panic!("search issued {:?}", r.op) };
                assert!(offset % 4096 == 0 && offset >= 4096, "read at {offset}");
                assert!(offset + u64::from(len) <= p.layout.file_size, "read past the end at {offset}");
                let mut buf = AlignedBuf::new(len as usize, 4096);
                buf.as_mut_slice()[..len as usize]
                    .copy_from_slice(&p.file[offset as usize..(offset + u64::from(len)) as usize]);
                reads += 1;
                let c = Completion {
                    tag: 0,
                    op: r.op,
                    result: Ok(len),
                    buf: Some(buf),
                    data_start: 0,
                    submitted: now,
                    completed: now,
                };
                src.completed(&r, &c);
            }
        }
        assert_eq!(src.bad_records, 0);
        (src.answers, reads)
    }

    #[test]
    fn beam_search_recall_on_a_planted_set() {
        let cfg = small_config();
        let p = prepare(&cfg, 11, &Instant::now).expect("prepare");
        let (answers, reads) = search_in_memory(&p, &cfg);
        assert_eq!(answers.len(), 60);
        let (at_k, at_1) = recalls(&answers, &p.truth, 10);
        assert!(at_k >= 0.9, "recall@10 {at_k}");
        assert!(at_1 >= 0.9, "recall@1 {at_1}");
        let per_query = reads as f64 / 60.0;
        // Reads ≈ L + a few (spec §6.3): at least L, not wildly more.
        assert!((48.0..48.0 * 2.0).contains(&per_query), "reads per query {per_query}");
        assert_eq!(answers.iter().map(|a| a.reads).sum::<u64>(), reads);
        // Deterministic for a seed: the same index and answers again.
        let p2 = prepare(&cfg, 11, &Instant::now).expect("prepare");
        assert_eq!(p.file, p2.file);
        let (again, _) = search_in_memory(&p2, &cfg);
        let ids = |a: &[Answer]| {
            let mut v: Vec<(usize, Vec<u32>)> = a.iter().map(|x| (x.qi, x.ids.clone())).collect();
            v.sort();
            v
        };
        assert_eq!(ids(&answers), ids(&again));
    }

    #[test]
    fn a_wrong_graph_gives_low_recall() {
        // The recall figure can fail: search an index whose neighbour lists
        // were replaced by a chain, with a tiny list.
        let mut cfg = small_config();
        cfg.search_list = 10;
        cfg.beam_width = 1;
        let mut p = prepare(&cfg, 11, &Instant::now).expect("prepare");
        let n = cfg.num_vectors as usize;
        let mut g = graph::Graph { medoid: p.layout.medoid as u32, adj: vec![Vec::new(); n] };
        for (i, list) in g.adj.iter_mut().enumerate() {
            list.push(((i + 1) % n) as u32);
        }
        let base = data::base_vectors(11, n, cfg.dim as usize, true);
        p.file = layout::encode(&base, &g, cfg.max_degree as usize).1;
        let (answers, _) = search_in_memory(&p, &cfg);
        let (at_k, _) = recalls(&answers, &p.truth, 10);
        assert!(at_k < 0.1, "recall@10 {at_k} on a chain graph");
    }

    #[test]
    fn schema_doc_names_every_summary_field() {
        const DOC: &str = include_str!("../../../../docs/results-schema.md");
        let cfg = small_config();
        let p = prepare(&cfg, 1, &Instant::now).expect("prepare");
        let mut s = summary(&cfg, &p, &[], 0.0, true);
        // With the keys an MPI rank adds to its own.
        ranks::add_rank_keys(&mut s, &crate::mpi::World::single(), &(0..1), &[]);
        let missing: Vec<&String> =
            s.as_object().expect("object").keys().filter(|k| !DOC.contains(&format!("`summary.{k}`"))).collect();
        assert!(missing.is_empty(), "vdb summary fields missing from docs/results-schema.md: {missing:?}");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 99.0), percentile(&v, 99.9)), (50, 99, 100));
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
