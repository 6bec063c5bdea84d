//! Turning sorted trace rows into the ops to issue: which keys must exist
//! before the replay starts, where deletes go (the trace's own `Delete` rows
//! and, with a capacity, the ones a least-recently-used cache of that size
//! would make), which generation of its key each write creates and each read
//! expects.
//!
//! The plan is computed before any I/O, in trace order, so the deletes a
//! replay makes do not depend on how fast the target is.

use std::collections::{BTreeMap, HashMap};

use super::load::Loaded;
use crate::kvtrace::{TraceOp, TracePhase, TraceTier};

/// What a replay does about deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletes {
    /// Keep live bytes at or under this many bytes: before a write that
    /// would exceed it, delete least-recently-used keys (reads and writes
    /// both count as use). The trace's `Delete` rows are applied too.
    Capacity(u64),
    /// Never delete anything (the trace's `Delete` rows are counted and
    /// ignored).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Create the key's object and write `size_bytes` of generation
    /// `generation`, then commit.
    Write,
    /// Read `size_bytes` from the start of the object and verify them
    /// against generation `generation`.
    Read,
    /// Delete the key's object.
    Delete,
}

/// One op on one object, in issue order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub key: u32,
    pub size_bytes: u64,
    pub generation: u64,
    /// Seconds after the first replayed row's timestamp.
    pub offset_s: f64,
    /// Series names: the trace phase and tier, lowercased.
    pub phase: &'static str,
    pub tier: &'static str,
}

/// Everything the replay will do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Keys written before the timed replay (untimed setup), as write steps.
    pub setup: Vec<Step>,
    pub steps: Vec<Step>,
    /// Seconds between the first and the last replayed row.
    pub trace_duration_s: f64,
    pub deletes_inferred: u64,
    pub deletes_from_trace: u64,
    /// Delete rows not applied: `--no-delete`, or the key was not live.
    pub deletes_ignored: u64,
    /// Read rows whose key had been deleted before them: a cache miss, no
    /// I/O (possible when the capacity is smaller than the traced run's).
    pub reads_missed: u64,
    /// Read rows asking more bytes than the live object has: read the
    /// object's size instead.
    pub reads_resized: u64,
    /// Writes bigger than the capacity on their own (written anyway).
    pub writes_over_capacity: u64,
    /// Most bytes live at once.
    pub peak_live_bytes: u64,
}

impl Plan {
    pub fn precreated_bytes(&self) -> u64 {
        self.setup.iter().map(|s| s.size_bytes).sum()
    }
}

/// Setup would need more than the capacity for keys the trace reads before
/// writing them.
#[derive(Debug, PartialEq, Eq)]
pub struct PrecreateTooBig {
    pub keys: usize,
    pub bytes: u64,
    pub capacity: u64,
}

pub fn phase_name(p: TracePhase) -> &'static str {
    match p {
        TracePhase::Prefill => "prefill",
        TracePhase::Decode => "decode",
        TracePhase::Evict => "evict",
    }
}

pub fn tier_name(t: TraceTier) -> &'static str {
    match t {
        TraceTier::Gpu => "gpu",
        TraceTier::Cpu => "cpu",
        TraceTier::Storage => "storage",
    }
}

/// Least-recently-used set of live keys with their sizes.
#[derive(Default)]
struct Lru {
    /// key → (last use tick, size)
    live: HashMap<u32, (u64, u64)>,
    /// last use tick → key
    order: BTreeMap<u64, u32>,
    tick: u64,
    bytes: u64,
}

impl Lru {
    fn touch(&mut self, key: u32) {
        if let Some((t, _)) = self.live.get_mut(&key) {
            self.order.remove(t);
            self.tick += 1;
            *t = self.tick;
            self.order.insert(self.tick, key);
        }
    }

    fn insert(&mut self, key: u32, size: u64) {
        self.remove(key);
        self.tick += 1;
        self.live.insert(key, (self.tick, size));
        self.order.insert(self.tick, key);
        self.bytes += size;
    }

    fn remove(&mut self, key: u32) -> bool {
        match self.live.remove(&key) {
            Some((t, size)) => {
                self.order.remove(&t);
                self.bytes -= size;
                true
            }
            None => false,
        }
    }

    fn size(&self, key: u32) -> Option<u64> {
        self.live.get(&key).map(|&(_, s)| s)
    }

    /// The least recently used key other than `except`.
    fn oldest_except(&self, except: u32) -> Option<u32> {
        self.order.values().copied().find(|&k| k != except)
    }
}

/// Builds the plan from loaded, sorted rows.
pub fn plan(loaded: &Loaded, deletes: Deletes) -> Result<Plan, PrecreateTooBig> {
    let rows = &loaded.rows;
    let mut p = Plan::default();
    let t0 = rows.first().map_or(0.0, |r| r.timestamp_s);
    p.trace_duration_s = rows.last().map_or(0.0, |r| r.timestamp_s - t0);

    // Keys read before they are ever written (kv-cache.py traces start with
    // an empty cache, but a trace may be cut, or rows of other tiers left
    // out): written in setup, at the largest size read before their first
    // write.
    let mut first_use: HashMap<u32, (bool, u64)> = HashMap::new(); // key → (written, max read size)
    let mut precreate_order = Vec::new();
    for r in rows {
        let e = first_use.entry(r.key).or_insert_with(|| {
            if r.op == TraceOp::Read {
                precreate_order.push(r.key);
            }
            (r.op != TraceOp::Read, 0)
        });
        if !e.0 {
            match r.op {
                TraceOp::Read => e.1 = e.1.max(r.size_bytes),
                _ => e.0 = true,
            }
        }
    }
    let mut lru = Lru::default();
    let mut generation: HashMap<u32, u64> = HashMap::new();
    for &key in &precreate_order {
        let size = first_use[&key].1;
        p.setup.push(Step {
            kind: StepKind::Write,
            key,
            size_bytes: size,
            generation: 1,
            offset_s: 0.0,
            phase: "setup",
            tier: "storage",
        });
        generation.insert(key, 1);
        lru.insert(key, size);
    }
    if let Deletes::Capacity(cap) = deletes
        && lru.bytes > cap
    {
        return Err(PrecreateTooBig { keys: p.setup.len(), bytes: lru.bytes, capacity: cap });
    }
    p.peak_live_bytes = lru.bytes;

    for r in rows {
        let offset_s = r.timestamp_s - t0;
        let step = |kind, size_bytes, generation| Step {
            kind,
            key: r.key,
            size_bytes,
            generation,
            offset_s,
            phase: phase_name(r.phase),
            tier: tier_name(r.tier),
        };
        match r.op {
            TraceOp::Write => {
                lru.remove(r.key);
                if let Deletes::Capacity(cap) = deletes {
                    if r.size_bytes > cap {
                        p.writes_over_capacity += 1;
                    }
                    while lru.bytes + r.size_bytes > cap {
                        let Some(victim) = lru.oldest_except(r.key) else { break };
                        lru.remove(victim);
                        p.deletes_inferred += 1;
                        p.steps.push(Step { key: victim, ..step(StepKind::Delete, 0, 0) });
                    }
                }
                let g = generation.entry(r.key).or_insert(0);
                *g += 1;
                lru.insert(r.key, r.size_bytes);
                p.peak_live_bytes = p.peak_live_bytes.max(lru.bytes);
                p.steps.push(step(StepKind::Write, r.size_bytes, *g));
            }
            TraceOp::Read => match lru.size(r.key) {
                Some(size) => {
                    lru.touch(r.key);
                    if r.size_bytes > size {
                        p.reads_resized += 1;
                    }
                    p.steps.push(step(StepKind::Read, r.size_bytes.min(size), generation[&r.key]));
                }
                None => p.reads_missed += 1,
            },
            TraceOp::Delete => match deletes {
                Deletes::Capacity(_) if lru.remove(r.key) => {
                    p.deletes_from_trace += 1;
                    p.steps.push(step(StepKind::Delete, 0, 0));
                }
                _ => p.deletes_ignored += 1,
            },
        }
    }
    Ok(p)
}

/// Only for tests: a loaded trace from `(t, op, key, size)` rows.
#[cfg(test)]
pub(crate) fn loaded(rows: &[(f64, TraceOp, &str, u64)]) -> Loaded {
    let mut l = Loaded::default();
    for (i, &(t, op, key, size)) in rows.iter().enumerate() {
        let k = match l.keys.iter().position(|k| k == key) {
            Some(k) => k as u32,
            None => {
                l.keys.push(key.to_string());
                l.keys.len() as u32 - 1
            }
        };
        let phase = match op {
            TraceOp::Write => TracePhase::Prefill,
            TraceOp::Read => TracePhase::Decode,
            TraceOp::Delete => TracePhase::Evict,
        };
        l.rows.push(super::load::Row {
            line: i as u64 + 2,
            timestamp_s: t,
            op,
            size_bytes: size,
            tier: TraceTier::Storage,
            phase,
            key: k,
        });
    }
    l.rows_total = rows.len() as u64;
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use TraceOp::{Delete as D, Read as R, Write as W};

    fn deleted(p: &Plan, l: &Loaded) -> Vec<String> {
        p.steps.iter().filter(|s| s.kind == StepKind::Delete).map(|s| l.keys[s.key as usize].clone()).collect()
    }

    #[test]
    fn the_capacity_lru_deletes_the_least_recently_used_keys() {
        let l = loaded(&[
            (0.0, W, "a", 40),
            (1.0, W, "b", 40),
            (2.0, R, "a", 40), // a is now more recent than b
            (3.0, W, "c", 40), // 120 > 100: b goes
            (4.0, W, "d", 50), // 130 > 100: a goes (then 90)
            (5.0, R, "b", 40), // b was deleted: a miss
            (6.0, W, "c", 60), // rewrite c (40 → 60): 110 > 100, d goes
        ]);
        let p = plan(&l, Deletes::Capacity(100)).unwrap();
        assert_eq!(deleted(&p, &l), ["b", "a", "d"]);
        assert_eq!(p.deletes_inferred, 3);
        assert_eq!(p.reads_missed, 1);
        assert!(p.peak_live_bytes <= 100, "{}", p.peak_live_bytes);
        // The delete comes right before the write that needed the space.
        let kinds: Vec<_> = p.steps.iter().map(|s| (s.kind, l.keys[s.key as usize].as_str())).collect();
        assert_eq!(&kinds[3..5], &[(StepKind::Delete, "b"), (StepKind::Write, "c")]);
        // The rewrite of c is its second generation; reads expect the live one.
        let c_writes: Vec<u64> =
            p.steps.iter().filter(|s| s.kind == StepKind::Write && s.key == 2).map(|s| s.generation).collect();
        assert_eq!(c_writes, [1, 2]);
    }

    #[test]
    fn no_delete_keeps_everything_and_ignores_delete_rows() {
        let l = loaded(&[(0.0, W, "a", 40), (1.0, W, "b", 400), (2.0, D, "a", 0), (3.0, R, "a", 40)]);
        let p = plan(&l, Deletes::Never).unwrap();
        assert!(deleted(&p, &l).is_empty());
        assert_eq!((p.deletes_ignored, p.reads_missed, p.peak_live_bytes), (1, 0, 440));
        let p = plan(&l, Deletes::Capacity(1000)).unwrap();
        assert_eq!(deleted(&p, &l), ["a"]);
        assert_eq!((p.deletes_from_trace, p.reads_missed), (1, 1));
    }

    #[test]
    fn keys_read_before_any_write_are_precreated_at_their_largest_read_size() {
        let l = loaded(&[(5.0, R, "x", 10), (6.0, R, "x", 30), (7.0, W, "x", 20), (8.0, R, "x", 20), (9.0, R, "y", 5)]);
        let p = plan(&l, Deletes::Never).unwrap();
        let setup: Vec<_> = p.setup.iter().map(|s| (l.keys[s.key as usize].as_str(), s.size_bytes)).collect();
        assert_eq!(setup, [("x", 30), ("y", 5)]);
        assert_eq!(p.precreated_bytes(), 35);
        let gens: Vec<_> = p.steps.iter().map(|s| (s.kind, s.generation, s.offset_s)).collect();
        assert_eq!(
            gens,
            [
                (StepKind::Read, 1, 0.0),
                (StepKind::Read, 1, 1.0),
                (StepKind::Write, 2, 2.0),
                (StepKind::Read, 2, 3.0),
                (StepKind::Read, 1, 4.0)
            ]
        );
        assert_eq!(p.trace_duration_s, 4.0);
        let e = plan(&l, Deletes::Capacity(20)).unwrap_err();
        assert_eq!(e, PrecreateTooBig { keys: 2, bytes: 35, capacity: 20 });
    }
}
