//! DiskANN-style beam search over the engine: one [`OpSource`] runs many
//! queries at once, each a state machine. A query keeps a candidate list of
//! `search_list` nodes ordered by compressed (PQ or SQ8) distance; each hop issues
//! reads for up to `beam_width` of the closest unexpanded candidates and
//! waits for all of them (DiskANN's synchronous beam). A read's node record
//! gives the exact distance (full vector) and the neighbours, which join
//! the list by compressed distance. When no candidate is left unexpanded,
//! the `k` nearest expanded nodes by exact distance are the answer.
//!
//! Time comes only from the engine: a query starts at the `now` of the
//! `next` call that starts it and ends at the completion time of its last
//! read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use super::data::{Matrix, l2_sq};
use super::layout::{Layout, parse_node};
use super::quant::Codes;
use crate::engine::{Data, Next, OpSource, Request};
use crate::recorder::SeriesKey;
use crate::target::{Completion, ObjectHandle, Op, OpKind};

pub struct SearchParams {
    pub beam_width: usize,
    pub search_list: usize,
    pub k: usize,
    pub queries_in_flight: usize,
    /// Queries to run: the query set cycled this many times in total.
    pub total_queries: usize,
    /// The serial number of the first (an MPI rank runs its share of the
    /// job's queries, `first_query..first_query + total_queries`).
    pub first_query: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    InFlight,
    Expanded,
}

struct Query {
    /// Serial number of this query (reads of an abandoned query that
    /// complete later must not reach a new query in the same slot).
    serial: usize,
    qi: usize,
    /// The query's distance table (PQ) or the query itself (SQ8).
    table: Vec<f32>,
    started: Instant,
    /// (compressed distance, id, state), nearest first, at most L long.
    list: Vec<(f32, u32, State)>,
    visited: HashSet<u32>,
    /// (exact distance, id) of every node read.
    exact: Vec<(f32, u32)>,
    pending: usize,
    reads: u64,
    hops: u64,
}

/// One finished query.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub qi: usize,
    pub ids: Vec<u32>,
    pub latency_ns: u64,
    pub reads: u64,
    pub hops: u64,
}

pub struct BeamSearch<'a> {
    layout: Layout,
    obj: ObjectHandle,
    codes: &'a Codes,
    queries: &'a Matrix,
    p: SearchParams,
    key: SeriesKey,
    slots: Vec<Option<Query>>,
    started: usize,
    /// Reads to issue: (slot, query serial, node).
    ready: VecDeque<(usize, usize, u32)>,
    /// Issued reads by offset: who waits for them, in issue order.
    waiting: HashMap<u64, VecDeque<(usize, usize, u32)>>,
    pub answers: Vec<Answer>,
    /// Node records that did not parse (count, first message).
    pub bad_records: u64,
    pub first_bad: Option<String>,
    /// Queries abandoned because one of their reads failed.
    pub failed_queries: u64,
}

impl<'a> BeamSearch<'a> {
    pub fn new(
        layout: Layout,
        obj: ObjectHandle,
        codes: &'a Codes,
        queries: &'a Matrix,
        p: SearchParams,
        key: SeriesKey,
    ) -> BeamSearch<'a> {
        let slots = (0..p.queries_in_flight).map(|_| None).collect();
        BeamSearch {
            layout,
            obj,
            codes,
            queries,
            p,
            key,
            slots,
            started: 0,
            ready: VecDeque::new(),
            waiting: HashMap::new(),
            answers: Vec::new(),
            bad_records: 0,
            first_bad: None,
            failed_queries: 0,
        }
    }

    fn start(&mut self, slot: usize, now: Instant) {
        let serial = self.p.first_query + self.started;
        let qi = serial % self.queries.rows();
        self.started += 1;
        let m = self.layout.medoid as u32;
        let table = self.codes.query_table(self.queries.row(qi));
        let d = self.codes.distance(&table, m);
        self.slots[slot] = Some(Query {
            serial,
            qi,
            table,
            started: now,
            list: vec![(d, m, State::New)],
            visited: HashSet::from([m]),
            exact: Vec::new(),
            pending: 0,
            reads: 0,
            hops: 0,
        });
        self.next_beam(slot, now);
    }

    /// Queues the next hop's reads, or finishes the query at `at`.
    fn next_beam(&mut self, slot: usize, at: Instant) {
        let q = self.slots[slot].as_mut().expect("active query");
        let mut picked = 0;
        let serial = q.serial;
        for c in q.list.iter_mut() {
            if picked == self.p.beam_width {
                break;
            }
            if c.2 == State::New {
                c.2 = State::InFlight;
                self.ready.push_back((slot, serial, c.1));
                picked += 1;
            }
        }
        if picked > 0 {
            q.pending = picked;
            q.hops += 1;
            q.reads += picked as u64;
            return;
        }
        let mut q = self.slots[slot].take().expect("active query");
        q.exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.answers.push(Answer {
            qi: q.qi,
            ids: q.exact.iter().take(self.p.k).map(|e| e.1).collect(),
            latency_ns: at.saturating_duration_since(q.started).as_nanos() as u64,
            reads: q.reads,
            hops: q.hops,
        });
    }

    fn expand(&mut self, slot: usize, node: u32, data: Option<&[u8]>) {
        let l = self.search_list();
        let q = self.slots[slot].as_mut().expect("active query");
        let qv = self.queries.row(q.qi);
        let parsed = data.and_then(|d| parse_node(&self.layout, u64::from(node), d));
        if let Some(c) = q.list.iter_mut().find(|c| c.1 == node) {
            c.2 = State::Expanded;
        }
        let Some(rec) = parsed else {
            if data.is_some() {
                self.bad_records += 1;
                self.first_bad.get_or_insert_with(|| format!("node {node}: malformed record in the index file"));
            }
            return;
        };
        q.exact.push((l2_sq(qv, &rec.vector), node));
        for nb in rec.neighbours {
            if !q.visited.insert(nb) {
                continue;
            }
            let d = self.codes.distance(&q.table, nb);
            if q.list.len() >= l && d >= q.list[q.list.len() - 1].0 {
                continue;
            }
            let at = q.list.partition_point(|c| c.0 <= d);
            q.list.insert(at, (d, nb, State::New));
            q.list.truncate(l);
        }
    }

    fn search_list(&self) -> usize {
        self.p.search_list
    }
}

impl OpSource for BeamSearch<'_> {
    fn next(&mut self, now: Instant) -> Next {
        loop {
            if let Some((slot, serial, node)) = self.ready.pop_front() {
                let (offset, _) = self.layout.locate(u64::from(node));
                self.waiting.entry(offset).or_default().push_back((slot, serial, node));
                let len = self.layout.read_len() as u32;
                return Next::Op(Request {
                    op: Op::Read { obj: self.obj, offset, len },
                    data: Data::None,
                    key: self.key,
                    exact: true,
                });
            }
            if self.started < self.p.total_queries
                && let Some(free) = self.slots.iter().position(Option::is_none)
            {
                self.start(free, now);
                continue;
            }
            return if self.slots.iter().any(Option::is_some) { Next::Wait } else { Next::Done };
        }
    }

    fn completed(&mut self, req: &Request, c: &Completion) {
        let Op::Read { offset, .. } = req.op else { return };
        let Some((slot, serial, node)) = self.waiting.get_mut(&offset).and_then(VecDeque::pop_front) else { return };
        if self.slots[slot].as_ref().is_none_or(|q| q.serial != serial) {
            return;
        }
        if c.result.is_err() {
            // The engine counts the error; the query cannot finish honestly.
            self.slots[slot] = None;
            self.ready.retain(|r| r.0 != slot);
            self.failed_queries += 1;
            return;
        }
        self.expand(slot, node, Some(c.data()));
        let q = self.slots[slot].as_mut().expect("active query");
        q.pending -= 1;
        if q.pending == 0 {
            self.next_beam(slot, c.completed);
        }
    }
}

/// The `key` every search read is recorded under.
pub fn read_key() -> SeriesKey {
    SeriesKey { phase: "measure", op: OpKind::Read, tier: "storage" }
}
