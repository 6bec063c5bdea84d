//! The in-memory Vamana graph (DiskANN's build, single pass, one thread):
//! points are inserted in a seeded random order; each is searched for
//! greedily from the medoid with a candidate list of `build_list`, its
//! visited set is robust-pruned with `alpha` to at most `max_degree`
//! out-neighbours, and reverse edges are added (a node over `max_degree`
//! is pruned again once it exceeds 1.3 R, as DiskANN does; every list is
//! pruned to R at the end). Not built: the paper's second pass (α = 1 then
//! α), and parallel insertion.

use std::collections::HashSet;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::data::{Matrix, l2_sq};

/// Largest candidate pool handed to robust prune (DiskANN's cap).
const MAX_PRUNE_POOL: usize = 750;
/// A list may grow this many times R by reverse edges before it is pruned.
const DEGREE_SLACK: f64 = 1.3;

pub struct Graph {
    pub medoid: u32,
    pub adj: Vec<Vec<u32>>,
}

pub struct BuildParams {
    pub max_degree: usize,
    pub build_list: usize,
    pub alpha: f32,
    pub seed: u64,
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

pub fn build(m: &Matrix, p: &BuildParams) -> Graph {
    let n = m.rows();
    let start = medoid(m);
    let mut g = Graph { medoid: start, adj: vec![Vec::new(); n] };
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(p.seed ^ 0x7661_6d61_6e61);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    // DiskANN lets a list grow 1.3× past R before pruning it while building.
    let slack = (p.max_degree as f64 * DEGREE_SLACK).ceil() as usize;
    for &v in &order {
        let mut pool = greedy_visited(m, &g, m.row(v as usize), p.build_list);
        pool.retain(|&(_, id)| id != v);
        for &nb in &g.adj[v as usize] {
            pool.push((l2_sq(m.row(v as usize), m.row(nb as usize)), nb));
        }
        g.adj[v as usize] = robust_prune(m, v, pool, p.alpha, p.max_degree);
        let out = g.adj[v as usize].clone();
        for nb in out {
            let list = &mut g.adj[nb as usize];
            if list.contains(&v) {
                continue;
            }
            list.push(v);
            if list.len() > slack {
                prune_node(m, &mut g, nb, p);
            }
        }
    }
    // Lists may exceed R by the slack: prune them to R.
    for v in 0..n as u32 {
        if g.adj[v as usize].len() > p.max_degree {
            prune_node(m, &mut g, v, p);
        }
    }
    g
}

/// Re-prunes node `v`'s own list to at most R.
fn prune_node(m: &Matrix, g: &mut Graph, v: u32, p: &BuildParams) {
    let pool = g.adj[v as usize].iter().map(|&x| (l2_sq(m.row(v as usize), m.row(x as usize)), x)).collect();
    g.adj[v as usize] = robust_prune(m, v, pool, p.alpha, p.max_degree);
}

/// Greedy search from the medoid with a list of `l`; returns every node
/// expanded, with its distance to `q`.
fn greedy_visited(m: &Matrix, g: &Graph, q: &[f32], l: usize) -> Vec<(f32, u32)> {
    let mut list: Vec<(f32, u32, bool)> = vec![(l2_sq(q, m.row(g.medoid as usize)), g.medoid, false)];
    let mut seen: HashSet<u32> = HashSet::from([g.medoid]);
    let mut expanded = Vec::new();
    while let Some(pos) = list.iter().position(|c| !c.2) {
        list[pos].2 = true;
        let (d, id, _) = list[pos];
        expanded.push((d, id));
        for &nb in &g.adj[id as usize] {
            if !seen.insert(nb) {
                continue;
            }
            let dn = l2_sq(q, m.row(nb as usize));
            if list.len() >= l && dn >= list[list.len() - 1].0 {
                continue;
            }
            let at = list.partition_point(|c| c.0 <= dn);
            list.insert(at, (dn, nb, false));
            list.truncate(l);
        }
    }
    expanded
}

/// DiskANN's robust prune: keep the closest candidate c, drop every v with
/// α·d(c, v) ≤ d(p, v), repeat until `r` are kept.
fn robust_prune(m: &Matrix, p: u32, mut pool: Vec<(f32, u32)>, alpha: f32, r: usize) -> Vec<u32> {
    pool.retain(|&(_, id)| id != p);
    pool.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    pool.dedup_by_key(|c| c.1);
    pool.truncate(MAX_PRUNE_POOL);
    let mut kept: Vec<u32> = Vec::with_capacity(r);
    let mut alive = vec![true; pool.len()];
    for i in 0..pool.len() {
        if kept.len() >= r {
            break;
        }
        if !alive[i] {
            continue;
        }
        let c = pool[i].1;
        kept.push(c);
        for j in i + 1..pool.len() {
            if alive[j] && alpha * l2_sq(m.row(c as usize), m.row(pool[j].1 as usize)) <= pool[j].0 {
                alive[j] = false;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::super::data::base_vectors;
    use super::*;

    #[test]
    fn graph_respects_degree_and_has_no_self_loops() {
        let m = base_vectors(2, 600, 16, true);
        let g = build(&m, &BuildParams { max_degree: 12, build_list: 24, alpha: 1.2, seed: 2 });
        let mut total = 0;
        for (i, list) in g.adj.iter().enumerate() {
            assert!(list.len() <= 12 && !list.is_empty(), "node {i}: degree {}", list.len());
            assert!(list.iter().all(|&x| x as usize != i && (x as usize) < 600));
            total += list.len();
        }
        // Pruned lists on uniform data fill up (spec §6.1): mostly full.
        assert!(total as f64 / 600.0 > 8.0, "mean degree {}", total as f64 / 600.0);
    }
}
