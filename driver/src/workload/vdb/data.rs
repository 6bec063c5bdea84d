//! Seeded synthetic vectors, query sets and exact ground truth.
//!
//! Base vectors are U[0,1) per coordinate, L2-normalised when the metric is
//! cosine (as the reference's `load_vdb` does). Planted queries are a random
//! base vector plus Gaussian noise of a given norm, normalised again;
//! independent queries are drawn like base vectors from another stream.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Row-major `n × dim` f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Lanes of the distance loop: 16 independent partial sums, so the
/// compiler can keep them in vector registers (floating-point sums are
/// never reordered by the compiler and the order below is fixed, so the
/// result is the same on every CPU).
const LANES: usize = 16;

/// Brings the cache lines of `v` towards the core before it is read (a
/// hint; it has no effect on results).
#[inline(always)]
pub fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: SSE is part of the x86-64 baseline, so the instruction
        // exists; a prefetch never faults and reads nothing (the pointer
        // is into a live slice anyway).
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Squared L2 distance. Compiled for AVX-512 and AVX2 as well as the
/// baseline; `multiversion` picks the widest the CPU has at run time. The
/// summation order is fixed, so every build returns the same bits.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    l2_sq_inline(a, b)
}

/// [`l2_sq`]'s loop, inlined into callers that are themselves compiled
/// per CPU (the build's hot loops), so no dispatch per distance.
#[inline(always)]
pub fn l2_sq_inline(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let body = n / LANES * LANES;
    let mut acc = [0f32; LANES];
    // Fixed-size arrays and separate difference / accumulate loops: the
    // shape LLVM turns into one full-width vector per 16 values.
    let mut c = 0;
    while c < body {
        let x: &[f32; LANES] = a[c..c + LANES].try_into().expect("a lane");
        let y: &[f32; LANES] = b[c..c + LANES].try_into().expect("a lane");
        let mut d = [0f32; LANES];
        for i in 0..LANES {
            d[i] = x[i] - y[i];
        }
        for i in 0..LANES {
            acc[i] += d[i] * d[i];
        }
        c += LANES;
    }
    // The lanes summed as a tree (8 + 8, 4 + 4, 2 + 2, 1 + 1), not one
    // after another: a sequential sum was 16 dependent scalar adds and 15
    // shuffles per distance, more than the whole vector loop at 128
    // dimensions (the build's profile). The order is fixed, so still the
    // same bits everywhere. `black_box` keeps LLVM's SLP vectoriser from
    // fusing the tree into the loop above: with the tree visible it
    // rewrote the loop 2 lanes wide (checked in the generated code); with
    // it, the loop stays one 16-lane vector and the tree costs a store
    // and eight adds.
    let acc = std::hint::black_box(acc);
    let mut half = [0f32; LANES / 2];
    for i in 0..LANES / 2 {
        half[i] = acc[i] + acc[i + LANES / 2];
    }
    let mut quarter = [0f32; LANES / 4];
    for i in 0..LANES / 4 {
        quarter[i] = half[i] + half[i + LANES / 4];
    }
    let mut sum = (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]);
    for i in body..n {
        let d = a[i] - b[i];
        sum += d * d;
    }
    sum
}

fn unit_f32(rng: &mut Xoshiro256PlusPlus) -> f32 {
    // 24 random bits → [0, 1).
    (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut Xoshiro256PlusPlus) -> f32 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Stream ids so base and query vectors never share random numbers.
const BASE_STREAM: u64 = 0x7664_625f_6261_7365;
const QUERY_STREAM: u64 = 0x7664_625f_7175_6572;

/// `n` base vectors of `dim` coordinates for `seed`.
pub fn base_vectors(seed: u64, n: usize, dim: usize, normalised: bool) -> Matrix {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ BASE_STREAM);
    let mut data = vec![0f32; n * dim];
    for row in data.chunks_exact_mut(dim) {
        row.iter_mut().for_each(|x| *x = unit_f32(&mut rng));
        if normalised {
            normalise(row);
        }
    }
    Matrix { dim, data }
}

/// `count` queries: planted (noisy copies of base vectors, noise of norm
/// `noise`) or independent.
pub fn queries(seed: u64, base: &Matrix, count: usize, planted: bool, noise: f32, normalised: bool) -> Matrix {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ QUERY_STREAM);
    let dim = base.dim;
    let mut data = vec![0f32; count * dim];
    let mut noise_v = vec![0f32; dim];
    for row in data.chunks_exact_mut(dim) {
        if planted {
            let id = (rng.next_u64() % base.rows() as u64) as usize;
            noise_v.iter_mut().for_each(|x| *x = gaussian(&mut rng));
            normalise(&mut noise_v);
            for ((q, b), e) in row.iter_mut().zip(base.row(id)).zip(&noise_v) {
                *q = b + noise * e;
            }
        } else {
            row.iter_mut().for_each(|x| *x = unit_f32(&mut rng));
        }
        if normalised {
            normalise(row);
        }
    }
    Matrix { dim, data }
}

/// Exact top-`k` ids of every query by brute force (ties broken by id),
/// nearest first, on `threads` threads (the answer does not depend on it).
pub fn ground_truth(base: &Matrix, queries: &Matrix, k: usize, threads: usize) -> Vec<Vec<u32>> {
    let mut scratch: Vec<Vec<(f32, u32)>> = vec![Vec::new(); threads.max(1)];
    super::par::map_with(&mut scratch, queries.rows(), |d, q| {
        let qv = queries.row(q);
        d.clear();
        d.extend((0..base.rows()).map(|i| (l2_sq(qv, base.row(i)), i as u32)));
        let k = k.min(d.len());
        d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut top = d[..k].to_vec();
        top.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        top.into_iter().map(|(_, i)| i).collect()
    })
}

/// |found ∩ truth[..k]| / k.
pub fn recall(found: &[u32], truth: &[u32], k: usize) -> f64 {
    let truth = &truth[..k.min(truth.len())];
    let hits = found.iter().take(k).filter(|id| truth.contains(id)).count();
    hits as f64 / k as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_seeded_and_normalised() {
        let a = base_vectors(7, 50, 16, true);
        assert_eq!(a, base_vectors(7, 50, 16, true));
        assert_ne!(a, base_vectors(8, 50, 16, true));
        for i in 0..a.rows() {
            let n: f32 = a.row(i).iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5, "row {i} norm² {n}");
        }
    }

    #[test]
    fn the_distance_loop_matches_a_plain_sum() {
        let v = base_vectors(3, 2, 200, false);
        for dim in [1, 15, 16, 17, 31, 32, 33, 48, 128, 200] {
            let (a, b) = (&v.row(0)[..dim], &v.row(1)[..dim]);
            let plain: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
            let got = l2_sq(a, b);
            assert!((f64::from(got) - plain).abs() < 1e-5 * plain.max(1.0), "dim {dim}: {got} vs {plain}");
            assert_eq!(got, l2_sq_inline(a, b));
        }
    }

    #[test]
    fn ground_truth_matches_a_naive_sort() {
        let base = base_vectors(1, 300, 8, true);
        let q = queries(1, &base, 20, false, 0.0, true);
        let gt = ground_truth(&base, &q, 5, 3);
        for (qi, got) in gt.iter().enumerate() {
            let mut all: Vec<(f32, u32)> = (0..300).map(|i| (l2_sq(q.row(qi), base.row(i)), i as u32)).collect();
            all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            let want: Vec<u32> = all[..5].iter().map(|p| p.1).collect();
            assert_eq!(got, &want, "query {qi}");
        }
    }

    #[test]
    fn planted_queries_with_no_noise_find_their_base_vector() {
        let base = base_vectors(3, 200, 8, true);
        let q = queries(3, &base, 10, true, 0.0, true);
        let gt = ground_truth(&base, &q, 1, 1);
        for (qi, t) in gt.iter().enumerate() {
            assert!(l2_sq(q.row(qi), base.row(t[0] as usize)) < 1e-10);
        }
        assert_eq!(recall(&[1, 2, 3], &[3, 9, 1], 3), 2.0 / 3.0);
    }
}
