//! Pipeline-level conformance tests (spec §14) on the simulation, in
//! logical time: decode read counts, the prefill-only rule, accounting
//! under hundreds of concurrent pipelines, and determinism per seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::config::KvConfig;
use super::rng::Stream;
use super::sim::{NullBackend, Sim};
use super::source::{TraceSink, run_logical};
use crate::clock::Clock;
use crate::engine::{Next, Request};
use crate::kvtrace::{TraceOp, TracePhase, TraceRow, TraceTier};
use crate::target::Op;

fn cfg(yaml: &str) -> KvConfig {
    let c: KvConfig = serde_yaml_ng::from_str(yaml).unwrap();
    c.validate().unwrap();
    c
}

pub(crate) fn sim(c: &KvConfig, seed: u64, null_io: bool, storage: Option<u64>) -> Sim<'static> {
    let mut p = super::params(c, seed, storage, Clock::real()).unwrap();
    p.null_io = null_io;
    p.cpu_copy = false;
    p.trace = true;
    Sim::new(p, Box::new(NullBackend::default()))
}

/// Runs a trace-only simulation; returns its rows.
fn trace_run(c: &KvConfig, seed: u64, secs: u64) -> (Sim<'static>, Vec<TraceRow>) {
    let mut s = sim(c, seed, true, None);
    let t0 = Instant::now();
    s.begin_measure(t0, Some(Duration::from_secs(secs)), Duration::from_secs(60));
    let mut sink = TraceSink { writer: None, rows: 0, error: None };
    run_logical(&mut s, &mut sink, t0, &|| false);
    let rows = std::mem::take(&mut s.trace_rows);
    (s, rows)
}

#[test]
fn a_prefill_decode_request_writes_once_and_reads_the_whole_entry_one_plus_gen_over_32_times() {
    let c = cfg(
        "{users: 1, max_requests: 1, gpu_mem_gb: 0, cpu_mem_gb: 0, generation_mode: none, disable_prefix_caching: true, \
         user_templates: {chatbot: {context_range: [1000, 1000], generation_range: [200, 200], think_time_range: [0.1, 0.1]}, \
         coding: {context_range: [1000, 1000], generation_range: [200, 200], think_time_range: [0.1, 0.1]}, \
         document: {context_range: [1000, 1000], generation_range: [200, 200], think_time_range: [0.1, 0.1]}}}",
    );
    let (s, rows) = trace_run(&c, 5, 60);
    assert_eq!(s.stats.requests_completed, 1);
    let gen_tokens = s.stats.total_tokens_generated;
    let first_key = rows[0].key.clone();
    let mine: Vec<&TraceRow> = rows.iter().filter(|r| r.key == first_key).collect();
    let writes = mine.iter().filter(|r| r.op == TraceOp::Write).count();
    let reads = mine.iter().filter(|r| r.op == TraceOp::Read).count() as u64;
    assert_eq!(writes, 1);
    assert_eq!(reads, 1 + gen_tokens.div_ceil(32), "probe + ⌈gen/32⌉ batches (gen {gen_tokens})");
    let size = c.sizing().entry_bytes(s.cache.get(s.cache.lookup(&first_key).unwrap()).unwrap().tokens);
    assert!(mine.iter().all(|r| r.size_bytes == size && r.tier == TraceTier::Storage), "whole-entry ops on storage");
    assert!(mine[0].op == TraceOp::Write && mine[0].phase == TracePhase::Prefill);
    assert!(mine[1..].iter().all(|r| r.phase == TracePhase::Decode));
}

#[test]
fn requests_of_ten_thousand_tokens_or_more_only_write() {
    let c = cfg(
        "{users: 3, gpu_mem_gb: 0, cpu_mem_gb: 0, generation_mode: none, disable_prefix_caching: true, disable_multi_turn: true, \
         user_templates: {chatbot: {context_range: [40000, 40000], generation_range: [200, 200], think_time_range: [0.1, 0.1]}, \
         coding: {context_range: [40000, 40000], generation_range: [200, 200], think_time_range: [0.1, 0.1]}, \
         document: {context_range: [40000, 40000], generation_range: [200, 200], think_time_range: [0.1, 0.1]}}}",
    );
    // Contexts are drawn from [10000, 40000]: every request is prefill-only.
    let (s, rows) = trace_run(&c, 1, 5);
    assert!(s.stats.requests_completed > 20);
    assert!(rows.iter().all(|r| r.op == TraceOp::Write), "no reads for prefill-only requests");
}

#[test]
fn same_seed_same_keys_sizes_and_tier_decisions_row_by_row() {
    let c = cfg(
        "{users: 20, gpu_mem_gb: 0.25, cpu_mem_gb: 0.25, storage_capacity_gb: 2, generation_mode: fast, enable_rag: true, model: tiny-1b, trace: {only: true, path: x.csv}}",
    );
    let strip = |rows: &[TraceRow]| {
        rows.iter().map(|r| (r.op, r.size_bytes, r.tier, r.key.clone(), r.phase)).collect::<Vec<_>>()
    };
    let mut c2 = c.clone();
    c2.storage_capacity_gb = 2.0;
    let (a, ra) = trace_run(&c, 42, 20);
    let (_, rb) = trace_run(&c, 42, 20);
    assert!(ra.len() > 1000, "{} rows", ra.len());
    assert_eq!(strip(&ra), strip(&rb));
    let (_, rc) = trace_run(&c, 43, 20);
    assert_ne!(strip(&ra), strip(&rc), "another seed gives another stream");
    // All three tiers and the waterfall took part.
    for t in [TraceTier::Gpu, TraceTier::Cpu, TraceTier::Storage] {
        assert!(ra.iter().any(|r| r.tier == t && r.phase == TracePhase::Decode), "{t:?} reads");
    }
    assert!(ra.iter().any(|r| r.phase == TracePhase::Evict && r.tier == TraceTier::Storage));
    assert!(ra.windows(2).all(|w| w[0].timestamp_s <= w[1].timestamp_s), "rows in timestamp order");
    assert!(
        ra.iter().all(|r| r.key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))),
        "keys are file-name safe"
    );
    a.cache.check_accounting().unwrap();
    let _ = c2;
}

/// Hundreds of pipelines with small tiers against a fake device whose
/// ops complete after random delays: tier usage equals the sum of the
/// live entries after every step, and every request finishes.
#[test]
fn accounting_never_leaks_under_hundreds_of_concurrent_pipelines() {
    let c = cfg(
        "{users: 300, gpu_mem_gb: 0.0625, cpu_mem_gb: 0.0625, storage_capacity_gb: 0.25, generation_mode: fast, model: tiny-1b, \
         max_concurrent_allocs: 0, enable_rag: true, rag: {max_documents: 3, small_model_doc_tokens_min: 200, small_model_doc_tokens_max: 400}, \
         user_templates: {chatbot: {context_range: [16, 256], generation_range: [10, 100], think_time_range: [0.1, 0.5]}, \
         coding: {context_range: [64, 1024], generation_range: [10, 100], think_time_range: [0.1, 0.5]}, \
         document: {context_range: [64, 512], generation_range: [10, 100], think_time_range: [0.1, 0.5]}}, \
         kvcache: {io_size: 64KiB, entry_queue_depth: 4}}",
    );
    let mut s = sim(&c, 7, false, Some(256 << 20));
    let t0 = Instant::now();
    s.begin_measure(t0, Some(Duration::from_secs(5)), Duration::from_secs(600));
    let max_in_flight = run_fake_device(&mut s, t0, 7);
    assert_eq!(s.in_flight(), 0);
    assert!(max_in_flight > 100, "ops really overlapped: {max_in_flight}");
    assert!(s.stats.requests_completed > 500, "{}", s.stats.requests_completed);
    assert_eq!(s.stats.io_errors, 0);
    assert!(
        s.stats.evictions > 100 && s.stats.storage_deletes > 10,
        "{} {}",
        s.stats.evictions,
        s.stats.storage_deletes
    );
    assert!(s.stats.rag_docs_evicted > 0);
    assert!(!s.abandoned);
    s.cache.check_accounting().unwrap();
}

#[test]
fn a_failed_storage_read_is_counted_and_its_bytes_are_not() {
    let c = cfg(
        "{users: 1, max_requests: 1, gpu_mem_gb: 0, cpu_mem_gb: 0, generation_mode: none, disable_prefix_caching: true, model: tiny-1b}",
    );
    let mut s = sim(&c, 3, false, None);
    let t0 = Instant::now();
    s.begin_measure(t0, None, Duration::from_secs(60));
    let mut now = t0;
    let mut failed = 0;
    for _ in 0..100_000 {
        match s.next(now) {
            Next::Op(r) => {
                let res = match r.op {
                    Op::Read { .. } if failed == 0 => {
                        failed += 1;
                        Err("read kvcache/x.npy at offset 0: Input/output error".to_string())
                    }
                    Op::Read { len, .. } | Op::Write { len, .. } => Ok(len),
                    Op::Commit { .. } => Ok(0),
                };
                s.completed(&r, res, now);
            }
            Next::WaitUntil(t) => now = now.max(t),
            Next::Wait | Next::Done => break,
        }
    }
    assert_eq!(s.stats.io_errors, 1);
    assert!(s.stats.first_error.as_deref().unwrap().contains("Input/output error"));
    let st = &s.stats.tiers[2];
    assert_eq!(st.read_ops as usize + 1, s.stats.cache_hits as usize, "the failed read is a hit without bytes");
    assert_eq!(st.read_lat_s.len() as u64, st.read_ops);
    s.cache.check_accounting().unwrap();
}

/// Drives `s` against a fake device whose ops complete after random delays
/// (simulated time), checking the accounting after every step. Returns the
/// most ops that were in flight at once.
pub(crate) fn run_fake_device(s: &mut Sim<'static>, t0: Instant, seed: u64) -> usize {
    let mut rng = Stream::new(seed, "fake-device", 0);
    let mut pending: BinaryHeap<Reverse<(Instant, u64, usize)>> = BinaryHeap::new();
    let mut reqs: Vec<Option<Request>> = Vec::new();
    let mut now = t0;
    let mut max_in_flight = 0;
    let mut steps = 0u64;
    loop {
        let mut wake = None;
        let mut done = false;
        while pending.len() < 256 {
            match s.next(now) {
                Next::Op(r) => {
                    let delay = Duration::from_micros(rng.int_in(10, 20_000));
                    reqs.push(Some(r));
                    pending.push(Reverse((now + delay, reqs.len() as u64, reqs.len() - 1)));
                }
                Next::WaitUntil(t) => {
                    wake = Some(t);
                    break;
                }
                Next::Wait => break,
                Next::Done => {
                    done = true;
                    break;
                }
            }
        }
        max_in_flight = max_in_flight.max(pending.len());
        if done && pending.is_empty() {
            break;
        }
        let next_done = pending.peek().map(|Reverse((t, _, _))| *t);
        let t = match (next_done, wake) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        now = now.max(t);
        while let Some(Reverse((t, _, i))) = pending.peek().copied() {
            if t > now {
                break;
            }
            pending.pop();
            let r = reqs[i].take().unwrap();
            let n = match r.op {
                Op::Read { len, .. } | Op::Write { len, .. } => len,
                Op::Commit { .. } => 0,
            };
            s.completed(&r, Ok(n), t);
        }
        s.cache.check_accounting().unwrap_or_else(|e| panic!("step {steps}: {e}"));
        steps += 1;
        assert!(steps < 5_000_000, "the run must end");
    }
    max_in_flight
}

#[test]
fn max_concurrent_allocs_bounds_allocations_in_progress() {
    let c = cfg(
        "{users: 100, gpu_mem_gb: 0, cpu_mem_gb: 0, generation_mode: none, model: tiny-1b, max_concurrent_allocs: 3, \
         kvcache: {io_size: 64KiB}}",
    );
    let mut s = sim(&c, 2, false, Some(1 << 30));
    let t0 = Instant::now();
    s.begin_measure(t0, Some(Duration::from_secs(2)), Duration::from_secs(600));
    run_fake_device(&mut s, t0, 2);
    assert_eq!(s.stats.concurrent_allocs_max, 3, "the bound was reached and never exceeded");
    assert!(s.stats.requests_completed > 10);
}

#[test]
fn generation_time_follows_the_mode_and_counts_in_end_to_end_latency() {
    let c =
        cfg("{users: 5, max_requests: 40, gpu_mem_gb: 0, cpu_mem_gb: 0, generation_mode: realistic, model: tiny-1b}");
    let (s, _) = trace_run(&c, 4, 600);
    let tokens = s.stats.total_tokens_generated as f64;
    let gen_s: f64 = s.stats.generation_s.iter().sum();
    assert!((gen_s - tokens * 0.030).abs() < 1e-6, "{gen_s} vs {tokens} × 0.030");
    for (e2e, g) in s.stats.e2e_s.iter().zip(&s.stats.generation_s) {
        assert!(e2e + 1e-9 >= *g, "end-to-end {e2e} includes generation {g}");
    }
    assert!(s.stats.requests_completed >= 40);
}

#[test]
fn decode_only_prepopulates_then_only_reads_prepopulated_entries() {
    let c = cfg("{users: 4, decode_only: true, gpu_mem_gb: 0, cpu_mem_gb: 0, generation_mode: none, model: tiny-1b}");
    let mut s = sim(&c, 6, true, None);
    let t0 = Instant::now();
    let mut sink = TraceSink { writer: None, rows: 0, error: None };
    s.begin_setup("prepop_", 40, "prepop", t0);
    let (t1, _) = run_logical(&mut s, &mut sink, t0, &|| false);
    let setup_rows = std::mem::take(&mut s.trace_rows);
    assert_eq!(setup_rows.len(), 40);
    let size = c.sizing().entry_bytes(super::sim::SETUP_TOKENS);
    assert!(setup_rows.iter().all(|r| r.op == TraceOp::Write && r.key.starts_with("prepop_") && r.size_bytes == size));
    s.begin_measure(t1, Some(Duration::from_secs(10)), Duration::from_secs(60));
    run_logical(&mut s, &mut sink, t1, &|| false);
    assert_eq!(s.stats.write_operations, 0, "no writes in the window");
    assert!(s.stats.decode_reads > 50);
    assert!(s.trace_rows.iter().all(|r| r.op == TraceOp::Read && r.key.starts_with("prepop_")));
}

#[test]
fn preconditioning_fills_twice_the_storage_capacity_and_ages_entries_out() {
    let c = cfg("{users: 2, precondition: true, gpu_mem_gb: 0, cpu_mem_gb: 0, storage_capacity_gb: 1, model: tiny-1b}");
    let cap = 1u64 << 30;
    let mut notes = Vec::new();
    let plan = super::setup_plan(&c, &c.sizing(), Some(cap), &mut notes);
    let entry = c.sizing().entry_bytes(super::sim::SETUP_TOKENS);
    assert_eq!(plan, vec![("precond_", (2 * cap).div_ceil(entry), "precondition")]);
    let mut s = sim(&c, 8, true, Some(cap));
    let t0 = Instant::now();
    let mut sink = TraceSink { writer: None, rows: 0, error: None };
    s.begin_setup("precond_", plan[0].1, "precondition", t0);
    run_logical(&mut s, &mut sink, t0, &|| false);
    assert!(s.cache.usage(super::cache::Tier::Storage) <= cap);
    assert!(s.stats.storage_deletes as f64 >= plan[0].1 as f64 / 2.0 - 2.0, "{}", s.stats.storage_deletes);
    s.cache.check_accounting().unwrap();
    // Unknown capacity: skipped with a note.
    let plan = super::setup_plan(&c, &c.sizing(), None, &mut notes);
    assert!(plan.is_empty() && notes[0].contains("precondition skipped"));
}

fn feed_run(c: &KvConfig, seed: u64, secs: u64) -> (Sim<'static>, Vec<TraceRow>) {
    let mut s = sim(c, seed, true, None);
    s.feed = super::load_feed(c, seed).unwrap();
    assert!(s.feed.is_some());
    let t0 = Instant::now();
    s.begin_measure(t0, Some(Duration::from_secs(secs)), Duration::from_secs(60));
    let mut sink = TraceSink { writer: None, rows: 0, error: None };
    run_logical(&mut s, &mut sink, t0, &|| false);
    let rows = std::mem::take(&mut s.trace_rows);
    (s, rows)
}

#[test]
fn burstgpt_replay_cycles_complete_every_pass_even_without_pacing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.csv");
    std::fs::write(
        &path,
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
         0,ChatGPT,100,20,120,Conversation log\n1,GPT-4,12000,50,12050,API log\n2,ChatGPT,300,0,300,Conversation log\n",
    )
    .unwrap();
    let c = cfg(&format!(
        "{{users: 4, use_burst_trace: true, burst_trace_path: '{}', replay_cycles: 2, trace_speedup: 0, gpu_mem_gb: 0, cpu_mem_gb: 0, \
         generation_mode: none, disable_prefix_caching: true, model: tiny-1b}}",
        path.display()
    ));
    let (s, rows) = feed_run(&c, 1, 600);
    assert_eq!(s.stats.requests_completed, 6, "2 complete passes of 3 rows (the reference completed 0)");
    let writes: Vec<&str> = rows.iter().filter(|r| r.op == TraceOp::Write).map(|r| r.key.as_str()).collect();
    assert!(writes.contains(&"trace_user_0_req_0001") && writes.contains(&"trace_user_2_req_0006"), "{writes:?}");
    // Row 2 (12,000 tokens) only writes; row 3 (0 response tokens) still gets one decode batch.
    assert!(!rows.iter().any(|r| r.op == TraceOp::Read && r.key == "trace_user_1_req_0002"));
    let reads3 = rows.iter().filter(|r| r.op == TraceOp::Read && r.key == "trace_user_2_req_0003").count();
    assert_eq!(reads3, 2, "probe + max(1, ⌈0/32⌉) batch");
    assert!(s.stopped_at.is_some(), "the run ended when the last pass completed");
}

#[test]
fn sharegpt_reloads_earlier_turns_and_works_with_multi_turn_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let long = "x".repeat(4000);
    std::fs::write(
        &path,
        format!(
            r#"[{{"id": "a", "conversations": [{{"from": "human", "value": "{long}"}}, {{"from": "gpt", "value": "{long}"}},
                {{"from": "human", "value": "{long}"}}, {{"from": "gpt", "value": "{long}"}}]}},
               {{"id": "b", "conversations": [{{"from": "human", "value": "{long}"}}, {{"from": "gpt", "value": "{long}"}}]}}]"#
        ),
    )
    .unwrap();
    let base = format!(
        "users: 2, dataset_path: '{}', replay_cycles: 1, gpu_mem_gb: 0, cpu_mem_gb: 0, generation_mode: none, \
         disable_prefix_caching: true, model: tiny-1b",
        path.display()
    );
    let (s, rows) = feed_run(&cfg(&format!("{{{base}}}")), 3, 600);
    assert_eq!(s.stats.requests_completed, 3);
    assert!(rows.iter().any(|r| r.key == "a_turn_2" && r.op == TraceOp::Write));
    assert_eq!(s.stats.multi_turn_cache_hits, 1, "a_turn_2 reloads a_turn_1 (the reference never did)");
    let (s, _) = feed_run(&cfg(&format!("{{{base}, disable_multi_turn: true}}")), 3, 600);
    assert_eq!(s.stats.requests_completed, 3, "multi-turn off works (the reference crashed)");
    assert_eq!(s.stats.multi_turn_cache_hits + s.stats.multi_turn_cache_misses, 0);
}
