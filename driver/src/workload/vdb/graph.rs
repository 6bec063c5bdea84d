//! The in-memory Vamana graph (DiskANN's build, the paper's two passes,
//! all cores).
//!
//! Points are visited in a seeded random order, once per pass: pass 1
//! prunes with α = 1, pass 2 with the configured α (one pass with α is
//! also available). Each point is searched for greedily from the medoid
//! with a candidate list of `build_list`; the nodes it expanded, plus its
//! current neighbours, are robust-pruned to at most `max_degree`
//! (DiskANN's occlusion rounds: α grows from 1 by ×1.2 up to the pass's α
//! while slots are free); reverse edges are added, and a list that grows
//! past 1.3 R is pruned back to R (DiskANN's slack). Every list is pruned
//! to R at the end.
//!
//! Parallelism: points are processed in batches. Every point of a batch is
//! searched and pruned against the graph as it was before the batch (on
//! all threads), then the new lists are installed and the reverse edges
//! are merged per target node (again on all threads). The batch sizes
//! depend only on the number of points, so the graph is the same for any
//! thread count. The first pass's batches start at one point and double
//! (an empty graph cannot serve many concurrent insertions); later batches
//! are capped at 2 % of the points.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::data::{Matrix, l2_sq, l2_sq_inline, prefetch};
use super::par;

/// Largest candidate pool handed to robust prune (DiskANN's cap).
const MAX_PRUNE_POOL: usize = 750;
/// A list may grow this many times R by reverse edges before it is pruned.
const DEGREE_SLACK: f64 = 1.3;
/// DiskANN's occlusion rounds raise α by this factor each round.
const ALPHA_STEP: f32 = 1.2;
/// Largest batch, as a fraction of the points, and its floor in points.
const MAX_BATCH_FRACTION: f64 = 0.02;
const MIN_MAX_BATCH: usize = 16;
/// How many neighbours ahead the greedy search prefetches vectors.
const PREFETCH_AHEAD: usize = 6;

pub struct Graph {
    pub medoid: u32,
    pub adj: Vec<Vec<u32>>,
}

pub struct BuildParams {
    pub max_degree: usize,
    pub build_list: usize,
    pub alpha: f32,
    pub seed: u64,
    /// 2: the paper's α = 1 pass then the α pass; 1: the α pass only.
    pub passes: usize,
    /// Worker threads (≥ 1); the graph does not depend on it.
    pub threads: usize,
}

/// The vector nearest the data's centroid.
pub fn medoid(m: &Matrix) -> u32 {
    let mut centroid = vec![0f32; m.dim];
    for row in m.data.chunks_exact(m.dim) {
        centroid.iter_mut().zip(row).for_each(|(c, x)| *c += x);
    }
    let n = m.rows() as f32;
    centroid.iter_mut().for_each(|c| *c /= n);
    (0..m.rows()).map(|i| (l2_sq(&centroid, m.row(i)), i as u32)).min_by(|a, b| a.0.total_cmp(&b.0)).map_or(0, |p| p.1)
}

/// Per-thread buffers: visited marks (a stamp per node, bumped per search)
/// and the candidate list.
pub struct Scratch {
    stamp: Vec<u32>,
    current: u32,
    list: CandidateList,
    fresh: Vec<u32>,
}

impl Scratch {
    pub fn new(n: usize) -> Scratch {
        Scratch { stamp: vec![0; n], current: 0, list: CandidateList::default(), fresh: Vec::new() }
    }

    /// Starts a new search: nothing visited.
    fn reset(&mut self) {
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.current = 1;
        }
    }

    /// Marks `id` visited; false if it already was.
    fn visit(&mut self, id: u32) -> bool {
        let s = &mut self.stamp[id as usize];
        if *s == self.current {
            return false;
        }
        *s = self.current;
        true
    }
}

/// A sorted candidate list of bounded length with a cursor at the nearest
/// unexpanded entry (DiskANN's neighbour priority queue).
#[derive(Default)]
struct CandidateList {
    /// (distance, id, expanded), nearest first; ties by id.
    items: Vec<(f32, u32, bool)>,
    cursor: usize,
    cap: usize,
}

impl CandidateList {
    fn reset(&mut self, cap: usize) {
        self.items.clear();
        self.cursor = 0;
        self.cap = cap;
    }

    fn insert(&mut self, d: f32, id: u32) {
        if self.items.len() >= self.cap && self.items.last().is_some_and(|l| (d, id) >= (l.0, l.1)) {
            return;
        }
        let at = self.items.partition_point(|c| (c.0, c.1) < (d, id));
        self.items.insert(at, (d, id, false));
        self.items.truncate(self.cap);
        self.cursor = self.cursor.min(at);
    }

    /// The nearest unexpanded candidate, now marked expanded.
    fn pop_nearest(&mut self) -> Option<(f32, u32)> {
        while self.cursor < self.items.len() && self.items[self.cursor].2 {
            self.cursor += 1;
        }
        let c = self.items.get_mut(self.cursor)?;
        c.2 = true;
        Some((c.0, c.1))
    }
}

pub fn build(m: &Matrix, p: &BuildParams) -> Graph {
    let n = m.rows();
    let medoid = medoid(m);
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(p.seed ^ 0x7661_6d61_6e61);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut scratch: Vec<Scratch> = (0..p.threads.clamp(1, n.max(1))).map(|_| Scratch::new(n)).collect();
    let alphas: Vec<f32> = if p.passes >= 2 { vec![1.0, p.alpha] } else { vec![p.alpha] };
    let max_batch = ((n as f64 * MAX_BATCH_FRACTION) as usize).max(MIN_MAX_BATCH);
    for (pass, &alpha) in alphas.iter().enumerate() {
        let mut done = 0;
        while done < n {
            let size = if pass == 0 { done.clamp(1, max_batch) } else { max_batch };
            let batch = &order[done..(done + size).min(n)];
            insert_batch(m, &mut adj, medoid, batch, p, alpha, &mut scratch);
            done += batch.len();
        }
    }
    // Lists may exceed R by the slack: prune them to R.
    let last_alpha = *alphas.last().expect("one pass at least");
    let over: Vec<u32> = (0..n as u32).filter(|&v| adj[v as usize].len() > p.max_degree).collect();
    let pruned = par::map_with(&mut scratch, over.len(), |_, i| {
        let v = over[i];
        let pool = with_distances(m, v, &adj[v as usize]);
        robust_prune(m, v, pool, last_alpha, p.max_degree)
    });
    for (v, list) in over.into_iter().zip(pruned) {
        adj[v as usize] = list;
    }
    Graph { medoid, adj }
}

/// Searches and prunes every point of `batch` against the graph as it is,
/// installs the new lists, then adds the reverse edges.
fn insert_batch(
    m: &Matrix,
    adj: &mut [Vec<u32>],
    medoid: u32,
    batch: &[u32],
    p: &BuildParams,
    alpha: f32,
    scratch: &mut [Scratch],
) {
    let frozen: &[Vec<u32>] = adj;
    let lists = par::map_with(scratch, batch.len(), |s, i| {
        let v = batch[i];
        let mut pool = greedy_visited(m, frozen, medoid, m.row(v as usize), p.build_list, s);
        pool.extend(with_distances(m, v, &frozen[v as usize]));
        robust_prune(m, v, pool, alpha, p.max_degree)
    });
    let mut reverse: Vec<(u32, u32)> = Vec::new();
    for (&v, list) in batch.iter().zip(lists) {
        reverse.extend(list.iter().map(|&nb| (nb, v)));
        adj[v as usize] = list;
    }
    reverse.sort_unstable();
    reverse.dedup();
    let groups: Vec<&[(u32, u32)]> = reverse.chunk_by(|a, b| a.0 == b.0).collect();
    let slack = (p.max_degree as f64 * DEGREE_SLACK).ceil() as usize;
    let current: &[Vec<u32>] = adj;
    let updates = par::map_with(scratch, groups.len(), |_, gi| {
        let t = groups[gi][0].0;
        let old = &current[t as usize];
        let added: Vec<u32> = groups[gi].iter().map(|e| e.1).filter(|src| !old.contains(src)).collect();
        if added.is_empty() {
            return None;
        }
        let mut list = old.clone();
        list.extend(added);
        if list.len() > slack {
            list = robust_prune(m, t, with_distances(m, t, &list), alpha, p.max_degree);
        }
        Some(list)
    });
    for (g, update) in groups.iter().zip(updates) {
        if let Some(list) = update {
            adj[g[0].0 as usize] = list;
        }
    }
}

/// (distance from `v`, id) of each id in `ids`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn with_distances(m: &Matrix, v: u32, ids: &[u32]) -> Vec<(f32, u32)> {
    let row = m.row(v as usize);
    ids.iter().map(|&x| (l2_sq_inline(row, m.row(x as usize)), x)).collect()
}

/// Greedy search from `start` with a list of `l`; returns every node
/// expanded, with its distance to `q`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn greedy_visited(m: &Matrix, adj: &[Vec<u32>], start: u32, q: &[f32], l: usize, s: &mut Scratch) -> Vec<(f32, u32)> {
    s.reset();
    s.list.reset(l);
    s.visit(start);
    s.list.insert(l2_sq(q, m.row(start as usize)), start);
    let mut expanded = Vec::with_capacity(2 * l);
    let mut fresh = std::mem::take(&mut s.fresh);
    while let Some((d, id)) = s.list.pop_nearest() {
        expanded.push((d, id));
        // Unvisited neighbours first, then their distances with the vector
        // PREFETCH_AHEAD places ahead prefetched: the loads overlap with
        // the arithmetic instead of stalling one by one (prefetching all of
        // them at once stalled on the full line-fill buffers instead).
        fresh.clear();
        fresh.extend(adj[id as usize].iter().copied().filter(|&nb| s.visit(nb)));
        for &nb in fresh.iter().take(PREFETCH_AHEAD) {
            prefetch(m.row(nb as usize));
        }
        for (i, &nb) in fresh.iter().enumerate() {
            if let Some(&ahead) = fresh.get(i + PREFETCH_AHEAD) {
                prefetch(m.row(ahead as usize));
            }
            s.list.insert(l2_sq_inline(q, m.row(nb as usize)), nb);
        }
    }
    s.fresh = fresh;
    expanded
}

/// The `k` nearest nodes to `q` found by a greedy search with a list of
/// `l` over exact distances (no I/O): a yardstick for the graph alone.
pub fn search_in_memory(m: &Matrix, g: &Graph, q: &[f32], l: usize, k: usize) -> Vec<u32> {
    let mut s = Scratch::new(m.rows());
    let mut found = greedy_visited(m, &g.adj, g.medoid, q, l, &mut s);
    found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    found.into_iter().take(k).map(|c| c.1).collect()
}

/// DiskANN's robust prune: candidates nearest first; a candidate v is
/// occluded by a kept c when `α · d(c, v) ≤ d(p, v)` (squared distances,
/// as DiskANN compares them). Rounds run at α = 1, 1.2, 1.44, … up to
/// `alpha` while fewer than `r` are kept; each round may keep candidates
/// the stricter round occluded.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn robust_prune(m: &Matrix, p: u32, mut pool: Vec<(f32, u32)>, alpha: f32, r: usize) -> Vec<u32> {
    pool.retain(|&(_, id)| id != p);
    pool.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    pool.dedup_by_key(|c| c.1);
    pool.truncate(MAX_PRUNE_POOL);
    let mut kept: Vec<u32> = Vec::with_capacity(r);
    // Largest d(p, v) / d(c, v) over kept c; KEPT marks the kept ones.
    const KEPT: f32 = f32::MAX;
    let mut occlusion = vec![0f32; pool.len()];
    let mut round_alpha = 1.0f32;
    loop {
        for i in 0..pool.len() {
            if kept.len() >= r {
                break;
            }
            if occlusion[i] > round_alpha {
                continue;
            }
            occlusion[i] = KEPT;
            let c = pool[i].1;
            kept.push(c);
            let crow = m.row(c as usize);
            for j in i + 1..pool.len() {
                if occlusion[j] > alpha {
                    continue;
                }
                let d_cv = l2_sq_inline(crow, m.row(pool[j].1 as usize));
                occlusion[j] = if d_cv > 0.0 { occlusion[j].max(pool[j].0 / d_cv) } else { KEPT };
            }
        }
        if kept.len() >= r || round_alpha >= alpha {
            break;
        }
        round_alpha = (round_alpha * ALPHA_STEP).min(alpha);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::super::data::{base_vectors, ground_truth, queries, recall};
    use super::*;

    fn params(r: usize, l: usize, passes: usize, threads: usize) -> BuildParams {
        BuildParams { max_degree: r, build_list: l, alpha: 1.2, seed: 2, passes, threads }
    }

    #[test]
    fn graph_respects_degree_and_has_no_self_loops() {
        let m = base_vectors(2, 600, 16, true);
        let g = build(&m, &params(12, 24, 2, 2));
        let mut total = 0;
        for (i, list) in g.adj.iter().enumerate() {
            assert!(list.len() <= 12 && !list.is_empty(), "node {i}: degree {}", list.len());
            assert!(list.iter().all(|&x| x as usize != i && (x as usize) < 600));
            let mut sorted = list.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len(), "node {i}: duplicate neighbours");
            total += list.len();
        }
        // Pruned lists on uniform data fill up (spec §6.1): mostly full.
        assert!(total as f64 / 600.0 > 10.0, "mean degree {}", total as f64 / 600.0);
    }

    #[test]
    fn the_graph_does_not_depend_on_the_thread_count() {
        let m = base_vectors(4, 1500, 24, true);
        let one = build(&m, &params(16, 32, 2, 1));
        let three = build(&m, &params(16, 32, 2, 3));
        assert_eq!(one.medoid, three.medoid);
        assert_eq!(one.adj, three.adj);
    }

    /// Mean planted recall@1 and recall@10 of an in-memory search.
    fn planted_recall(m: &Matrix, g: &Graph, l: usize) -> (f64, f64) {
        let q = queries(6, m, 100, true, 0.05, true);
        let truth = ground_truth(m, &q, 10, 2);
        let (mut r1, mut r10) = (0.0, 0.0);
        for (qi, t) in truth.iter().enumerate() {
            let found = search_in_memory(m, g, q.row(qi), l, 10);
            r1 += recall(&found, t, 1);
            r10 += recall(&found, t, 10);
        }
        (r1 / 100.0, r10 / 100.0)
    }

    #[test]
    fn two_passes_find_planted_neighbours() {
        // 5000 × 64 uniform (a hard, high-intrinsic-dimension set): the
        // planted base vector is found for nearly every query.
        let m = base_vectors(6, 5000, 64, true);
        let g = build(&m, &params(32, 64, 2, 2));
        let (r1, r10) = planted_recall(&m, &g, 48);
        assert!(r1 >= 0.97, "recall@1 {r1}");
        assert!(r10 >= 0.85, "recall@10 {r10}");
        let mean_degree = g.adj.iter().map(Vec::len).sum::<usize>() as f64 / 5000.0;
        assert!(mean_degree > 28.0, "mean degree {mean_degree}");
    }

    #[test]
    fn robust_prune_keeps_the_nearest_and_drops_occluded() {
        // On a line: 1 occludes 2 and 3 for α = 1 (they lie behind it).
        let m = Matrix { dim: 1, data: vec![0.0, 1.0, 2.0, 3.0, -1.0] };
        let pool = with_distances(&m, 0, &[1, 2, 3, 4]);
        assert_eq!(robust_prune(&m, 0, pool.clone(), 1.0, 4), vec![1, 4]);
        // 3 is occluded by 1 at ratio d(0,3)/d(1,3) = 9/4, 2 at 4/1: α 3
        // keeps 3 in a later round, α 4 keeps both.
        assert_eq!(robust_prune(&m, 0, pool.clone(), 3.0, 4), vec![1, 4, 3]);
        assert_eq!(robust_prune(&m, 0, pool.clone(), 4.0, 4), vec![1, 4, 3, 2]);
        // Never more than r.
        assert_eq!(robust_prune(&m, 0, pool, 4.0, 2), vec![1, 4]);
    }
}
