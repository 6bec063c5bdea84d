//! DiskANN's product quantiser (spec §3.5, §4.1): the global centroid is
//! subtracted, the dimensions are cut into `chunks` contiguous ranges whose
//! sizes differ by at most one, and each range gets 256 centres by k-means
//! (k-means++ seeding, then Lloyd iterations) on a seeded sample. A vector's
//! code is one byte per chunk: its nearest centre in that range. At query
//! time one table of `chunks × 256` partial squared distances is built, and
//! a candidate's distance is `chunks` table lookups (asymmetric distance).
//!
//! Training is bounded: at most [`TRAIN_MAX_POINTS`] sampled vectors and
//! [`TRAIN_ITERS`] Lloyd iterations, chunks trained in parallel; every
//! chunk has its own random stream, so the codes do not depend on the
//! thread count.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::data::Matrix;
use super::par;

/// Centres per chunk (one byte per code).
pub const CENTRES: usize = 256;
/// Most sampled vectors k-means trains on.
pub const TRAIN_MAX_POINTS: usize = 10_000;
/// Lloyd iterations after seeding.
pub const TRAIN_ITERS: usize = 10;
/// Most chunks (DiskANN's limit).
pub const MAX_CHUNKS: usize = 512;

/// The default chunk count (bytes per code): `dim / 2` capped at 512, at
/// least 1 — Milvus's `pq_code_budget_gb_ratio` 0.125 of the f32 vectors.
pub fn default_chunks(dim: usize) -> usize {
    (dim / 2).clamp(1, MAX_CHUNKS)
}

/// Stream id so PQ training shares no random numbers with the data.
const PQ_STREAM: u64 = 0x7664_625f_7071_5f5f;

pub struct Pq {
    pub dim: usize,
    pub chunks: usize,
    /// First dimension of each chunk, then `dim` (`chunks + 1` values).
    pub offsets: Vec<u32>,
    /// Subtracted from every vector before encoding.
    pub centroid: Vec<f32>,
    /// `CENTRES × dim`: row c holds centre c of every chunk, each in its
    /// chunk's dimension range (DiskANN's pivot table).
    pub pivots: Vec<f32>,
    /// `n × chunks`, row-major.
    pub codes: Vec<u8>,
}

/// Chunk boundaries: contiguous, sizes differing by at most one (the
/// larger ones first).
pub fn chunk_offsets(dim: usize, chunks: usize) -> Vec<u32> {
    let (low, extra) = (dim / chunks, dim % chunks);
    let mut v = vec![0u32];
    let mut at = 0;
    for c in 0..chunks {
        at += low + usize::from(c < extra);
        v.push(at as u32);
    }
    v
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// k-means on `points` (`n × sub` row-major): `CENTRES × sub` centres.
fn kmeans(points: &[f32], sub: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
    let n = points.len() / sub;
    let row = |i: usize| &points[i * sub..(i + 1) * sub];
    let mut centres = Vec::with_capacity(CENTRES * sub);
    // k-means++ seeding: each next centre drawn with probability ∝ the
    // squared distance to the nearest centre so far.
    let first = (rng.next_u64() % n as u64) as usize;
    centres.extend_from_slice(row(first));
    // The points dimension-major, so the distance update per new centre
    // runs over contiguous columns (vectorised).
    let by_dim: Vec<f32> = (0..sub).flat_map(|d| (0..n).map(move |i| points[i * sub + d])).collect();
    let mut nearest_d = vec![f32::INFINITY; n];
    let mut dist = vec![0f32; n];
    lower_nearest(&by_dim, row(first), &mut dist, &mut nearest_d);
    for _ in 1..CENTRES {
        let total: f64 = nearest_d.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut target = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let mut chosen = n - 1;
            for (i, &d) in nearest_d.iter().enumerate() {
                target -= f64::from(d);
                if target <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            (rng.next_u64() % n as u64) as usize
        };
        let c = row(pick).to_vec();
        lower_nearest(&by_dim, &c, &mut dist, &mut nearest_d);
        centres.extend_from_slice(&c);
    }
    let mut assign = vec![0u8; n];
    let mut dist = [0f32; CENTRES];
    for _ in 0..TRAIN_ITERS {
        let by_dim = transpose(&centres, sub);
        for (i, a) in assign.iter_mut().enumerate() {
            *a = nearest(&by_dim, row(i), &mut dist);
        }
        let mut sums = vec![0f64; CENTRES * sub];
        let mut counts = vec![0usize; CENTRES];
        for (i, &a) in assign.iter().enumerate() {
            counts[a as usize] += 1;
            for (s, &x) in sums[a as usize * sub..(a as usize + 1) * sub].iter_mut().zip(row(i)) {
                *s += f64::from(x);
            }
        }
        for c in 0..CENTRES {
            let dst = &mut centres[c * sub..(c + 1) * sub];
            if counts[c] == 0 {
                // An empty centre restarts at a random point.
                let p = (rng.next_u64() % n as u64) as usize;
                dst.copy_from_slice(row(p));
            } else {
                for (d, s) in dst.iter_mut().zip(&sums[c * sub..(c + 1) * sub]) {
                    *d = (*s / counts[c] as f64) as f32;
                }
            }
        }
    }
    centres
}

/// `nearest_d[i] = min(nearest_d[i], |point i − c|²)` for the points given
/// dimension-major (`by_dim`: `c.len()` columns of `nearest_d.len()`
/// values); `dist` is scratch of the same length. Each distance sums its
/// dimensions in order, the same bits as [`sq_dist`].
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn lower_nearest(by_dim: &[f32], c: &[f32], dist: &mut [f32], nearest_d: &mut [f32]) {
    let n = nearest_d.len();
    dist.fill(0.0);
    for (col, &cd) in by_dim.chunks_exact(n).zip(c) {
        for (t, &x) in dist.iter_mut().zip(col) {
            let e = x - cd;
            *t += e * e;
        }
    }
    for (d, &t) in nearest_d.iter_mut().zip(dist.iter()) {
        *d = d.min(t);
    }
}

/// `CENTRES × sub` centres (row-major) as `sub × CENTRES` (one row of 256
/// values per dimension), the layout [`distances`] vectorises over.
fn transpose(centres: &[f32], sub: usize) -> Vec<f32> {
    let mut t = vec![0f32; sub * CENTRES];
    for (k, centre) in centres.chunks_exact(sub).enumerate() {
        for (d, &x) in centre.iter().enumerate() {
            t[d * CENTRES + k] = x;
        }
    }
    t
}

/// Squared distances from `x` to all 256 centres given dimension-major
/// (`by_dim`: `x.len()` rows of 256). Each distance sums its dimensions in
/// order, so it equals [`sq_dist`] bit for bit; compiled for AVX-512 and
/// AVX2 too (no fused multiply-add: the same bits everywhere).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn distances(by_dim: &[f32], x: &[f32], out: &mut [f32; CENTRES]) {
    out.fill(0.0);
    for (col, &xd) in by_dim.chunks_exact(CENTRES).zip(x) {
        let col: &[f32; CENTRES] = col.try_into().expect("a row of 256");
        for k in 0..CENTRES {
            let t = xd - col[k];
            out[k] += t * t;
        }
    }
}

/// Index of the centre nearest to `x` (lowest index on ties).
fn nearest(by_dim: &[f32], x: &[f32], dist: &mut [f32; CENTRES]) -> u8 {
    distances(by_dim, x, dist);
    let mut best = (f32::INFINITY, 0usize);
    for (k, &d) in dist.iter().enumerate() {
        if d < best.0 {
            best = (d, k);
        }
    }
    best.1 as u8
}

impl Pq {
    /// Trains on a seeded sample of `m` and encodes every row, on
    /// `threads` threads (the result does not depend on it).
    pub fn train_and_encode(m: &Matrix, chunks: usize, seed: u64, threads: usize) -> Pq {
        let (n, dim) = (m.rows(), m.dim);
        assert!((1..=dim.min(MAX_CHUNKS)).contains(&chunks), "pq chunks {chunks} for dim {dim}");
        let offsets = chunk_offsets(dim, chunks);
        // The sample: every row when small enough, else a seeded draw.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ PQ_STREAM);
        let sample: Vec<usize> = if n <= TRAIN_MAX_POINTS {
            (0..n).collect()
        } else {
            (0..TRAIN_MAX_POINTS).map(|_| (rng.next_u64() % n as u64) as usize).collect()
        };
        let mut centroid = vec![0f64; dim];
        for &i in &sample {
            for (c, &x) in centroid.iter_mut().zip(m.row(i)) {
                *c += f64::from(x);
            }
        }
        let centroid: Vec<f32> = centroid.iter().map(|c| (c / sample.len() as f64) as f32).collect();
        let mut states = vec![(); threads.max(1)];
        let per_chunk: Vec<Vec<f32>> = par::map_with(&mut states, chunks, |(), c| {
            let (lo, hi) = (offsets[c] as usize, offsets[c + 1] as usize);
            let sub = hi - lo;
            let mut pts = Vec::with_capacity(sample.len() * sub);
            for &i in &sample {
                pts.extend(m.row(i)[lo..hi].iter().zip(&centroid[lo..hi]).map(|(x, c)| x - c));
            }
            let mut rng =
                Xoshiro256PlusPlus::seed_from_u64(seed ^ PQ_STREAM ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9));
            kmeans(&pts, sub, &mut rng)
        });
        let mut pivots = vec![0f32; CENTRES * dim];
        for (c, centres) in per_chunk.iter().enumerate() {
            let (lo, hi) = (offsets[c] as usize, offsets[c + 1] as usize);
            for (k, centre) in centres.chunks_exact(hi - lo).enumerate() {
                pivots[k * dim + lo..k * dim + hi].copy_from_slice(centre);
            }
        }
        let mut pq = Pq { dim, chunks, offsets, centroid, pivots, codes: Vec::new() };
        let by_dim = pq.by_dim();
        let block = 256;
        let blocks = n.div_ceil(block);
        let coded: Vec<Vec<u8>> = par::map_with(&mut states, blocks, |(), b| {
            (b * block..((b + 1) * block).min(n)).flat_map(|i| pq.encode_with(&by_dim, m.row(i))).collect()
        });
        pq.codes = coded.concat();
        pq
    }

    /// The pivots dimension-major: `dim × 256` (row d: every centre's
    /// coordinate d), so a chunk's rows are `lo × 256 .. hi × 256`.
    fn by_dim(&self) -> Vec<f32> {
        transpose(&self.pivots, self.dim)
    }

    /// The code of one vector (`by_dim` from [`Pq::by_dim`]).
    fn encode_with(&self, by_dim: &[f32], v: &[f32]) -> Vec<u8> {
        let mut dist = [0f32; CENTRES];
        let mut x = vec![0f32; self.dim];
        for ((t, a), b) in x.iter_mut().zip(v).zip(&self.centroid) {
            *t = a - b;
        }
        (0..self.chunks)
            .map(|c| {
                let (lo, hi) = (self.offsets[c] as usize, self.offsets[c + 1] as usize);
                nearest(&by_dim[lo * CENTRES..hi * CENTRES], &x[lo..hi], &mut dist)
            })
            .collect()
    }

    /// The code of one vector.
    pub fn encode(&self, v: &[f32]) -> Vec<u8> {
        self.encode_with(&self.by_dim(), v)
    }

    /// The vector code `id` stands for (centroid + its centres).
    pub fn decode(&self, id: u32) -> Vec<f32> {
        let code = self.code(id);
        let mut v = self.centroid.clone();
        for (bounds, &k) in self.offsets.windows(2).zip(code) {
            let (lo, hi, k) = (bounds[0] as usize, bounds[1] as usize, k as usize);
            for (x, p) in v[lo..hi].iter_mut().zip(&self.pivots[k * self.dim + lo..k * self.dim + hi]) {
                *x += p;
            }
        }
        v
    }

    fn code(&self, id: u32) -> &[u8] {
        &self.codes[id as usize * self.chunks..(id as usize + 1) * self.chunks]
    }

    /// The query's distance table: `chunks × 256` partial squared
    /// distances from `q − centroid` to every centre.
    pub fn table(&self, q: &[f32]) -> Vec<f32> {
        let mut t = vec![0f32; self.chunks * CENTRES];
        for c in 0..self.chunks {
            let (lo, hi) = (self.offsets[c] as usize, self.offsets[c + 1] as usize);
            let x: Vec<f32> = q[lo..hi].iter().zip(&self.centroid[lo..hi]).map(|(a, b)| a - b).collect();
            let row = &mut t[c * CENTRES..(c + 1) * CENTRES];
            for (k, d) in row.iter_mut().enumerate() {
                *d = sq_dist(&x, &self.pivots[k * self.dim + lo..k * self.dim + hi]);
            }
        }
        t
    }

    /// Approximate squared L2 distance of vector `id` from the query whose
    /// [`table`](Pq::table) is `t`.
    pub fn distance(&self, t: &[f32], id: u32) -> f32 {
        self.code(id).iter().enumerate().map(|(c, &k)| t[c * CENTRES + k as usize]).sum()
    }

    /// Bytes of codes held in RAM.
    pub fn bytes(&self) -> usize {
        self.codes.len()
    }

    /// DiskANN's `_pq_pivots.bin`: a bin of four u64 offsets (4 × 1), then
    /// at 4096 the pivots (`256 × dim` f32), the centroid (`dim × 1` f32)
    /// and the chunk offsets (`chunks + 1 × 1` u32), each a bin.
    pub fn pivots_file(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut offs = [0u64; 4];
        offs[0] = 4096;
        bin_header(&mut body, CENTRES, self.dim);
        body.extend(self.pivots.iter().flat_map(|x| x.to_le_bytes()));
        offs[1] = 4096 + body.len() as u64;
        bin_header(&mut body, self.dim, 1);
        body.extend(self.centroid.iter().flat_map(|x| x.to_le_bytes()));
        offs[2] = 4096 + body.len() as u64;
        bin_header(&mut body, self.chunks + 1, 1);
        body.extend(self.offsets.iter().flat_map(|x| x.to_le_bytes()));
        offs[3] = 4096 + body.len() as u64;
        let mut out = Vec::with_capacity(offs[3] as usize);
        bin_header(&mut out, 4, 1);
        out.extend(offs.iter().flat_map(|x| x.to_le_bytes()));
        out.resize(4096, 0);
        out.extend_from_slice(&body);
        out
    }

    /// DiskANN's `_pq_compressed.bin`: a bin of `n × chunks` u8.
    pub fn compressed_file(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.codes.len());
        bin_header(&mut out, self.codes.len() / self.chunks, self.chunks);
        out.extend_from_slice(&self.codes);
        out
    }

    /// Reads back [`pivots_file`](Pq::pivots_file) and
    /// [`compressed_file`](Pq::compressed_file); `None` if malformed.
    pub fn parse_files(pivots: &[u8], compressed: &[u8]) -> Option<Pq> {
        let u32_at = |b: &[u8], o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4")));
        let u64_at = |b: &[u8], o: usize| b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8")));
        if (u32_at(pivots, 0)?, u32_at(pivots, 4)?) != (4, 1) {
            return None;
        }
        let offs: Vec<usize> = (0..4).map(|i| u64_at(pivots, 8 + i * 8).map(|v| v as usize)).collect::<Option<_>>()?;
        if offs[3] != pivots.len() {
            return None;
        }
        let bin = |o: usize| -> Option<(usize, usize, &[u8])> {
            let (r, c) = (u32_at(pivots, o)? as usize, u32_at(pivots, o + 4)? as usize);
            Some((r, c, pivots.get(o + 8..o + 8 + r * c * 4)?))
        };
        let f32s = |b: &[u8]| b.chunks_exact(4).map(|s| f32::from_le_bytes(s.try_into().expect("4"))).collect();
        let (pr, dim, p) = bin(offs[0])?;
        let (cr, cc, c) = bin(offs[1])?;
        let (or, oc, o) = bin(offs[2])?;
        if pr != CENTRES || cr != dim || cc != 1 || oc != 1 || or < 2 {
            return None;
        }
        let offsets: Vec<u32> = o.chunks_exact(4).map(|s| u32::from_le_bytes(s.try_into().expect("4"))).collect();
        let chunks = or - 1;
        let (n, nc) = (u32_at(compressed, 0)? as usize, u32_at(compressed, 4)? as usize);
        if nc != chunks || compressed.len() != 8 + n * chunks || offsets.last() != Some(&(dim as u32)) {
            return None;
        }
        Some(Pq { dim, chunks, offsets, centroid: f32s(c), pivots: f32s(p), codes: compressed[8..].to_vec() })
    }
}

fn bin_header(out: &mut Vec<u8>, rows: usize, cols: usize) {
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(cols as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::data::{base_vectors, l2_sq};
    use super::*;

    #[test]
    fn chunks_are_contiguous_and_even() {
        assert_eq!(chunk_offsets(10, 4), vec![0, 3, 6, 8, 10]);
        assert_eq!(chunk_offsets(64, 16).windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(), vec![4; 16]);
        assert_eq!(default_chunks(128), 64);
        assert_eq!(default_chunks(1536), 512);
        assert_eq!(default_chunks(1), 1);
    }

    #[test]
    fn decoding_error_is_bounded_and_falls_with_more_chunks() {
        let m = base_vectors(3, 3000, 32, true);
        let err = |chunks: usize| {
            let pq = Pq::train_and_encode(&m, chunks, 3, 2);
            assert_eq!(pq.bytes(), 3000 * chunks);
            let mean: f64 =
                (0..3000u32).map(|i| f64::from(l2_sq(m.row(i as usize), &pq.decode(i)))).sum::<f64>() / 3000.0;
            mean
        };
        // The vectors are unit length with squared distances around 0.5
        // between them; the codes must be far closer than that.
        let (coarse, fine) = (err(4), err(16));
        assert!(coarse < 0.1, "mean squared error with 4 chunks {coarse}");
        assert!(fine < coarse / 2.0, "16 chunks {fine} vs 4 chunks {coarse}");
        // 16 chunks of 2 dims with 256 centres: each vector close to its code.
        assert!(fine < 0.02, "mean squared error with 16 chunks {fine}");
    }

    #[test]
    fn table_distance_is_the_distance_to_the_decoded_vector() {
        let m = base_vectors(4, 1500, 24, true);
        let pq = Pq::train_and_encode(&m, 5, 4, 3);
        let q = base_vectors(99, 3, 24, true);
        for qi in 0..3 {
            let t = pq.table(q.row(qi));
            for id in (0..1500u32).step_by(37) {
                let (adc, exact) = (pq.distance(&t, id), l2_sq(q.row(qi), &pq.decode(id)));
                assert!((adc - exact).abs() < 1e-4, "query {qi} id {id}: {adc} vs {exact}");
            }
        }
    }

    #[test]
    fn each_code_is_the_nearest_centre_of_its_chunk() {
        let m = base_vectors(8, 700, 12, true);
        let pq = Pq::train_and_encode(&m, 5, 8, 2);
        for id in (0..700u32).step_by(13) {
            let v = m.row(id as usize);
            for c in 0..pq.chunks {
                let (lo, hi) = (pq.offsets[c] as usize, pq.offsets[c + 1] as usize);
                let x: Vec<f32> = v[lo..hi].iter().zip(&pq.centroid[lo..hi]).map(|(a, b)| a - b).collect();
                let d = |k: usize| sq_dist(&x, &pq.pivots[k * 12 + lo..k * 12 + hi]);
                let best = (0..CENTRES).min_by(|&a, &b| d(a).total_cmp(&d(b)).then(a.cmp(&b))).unwrap();
                assert_eq!(pq.code(id)[c] as usize, best, "id {id} chunk {c}");
            }
        }
    }

    #[test]
    fn codes_depend_on_the_seed_not_the_threads() {
        let m = base_vectors(5, 2000, 16, true);
        let a = Pq::train_and_encode(&m, 8, 7, 1);
        let b = Pq::train_and_encode(&m, 8, 7, 3);
        let c = Pq::train_and_encode(&m, 8, 8, 1);
        assert_eq!((&a.codes, &a.pivots), (&b.codes, &b.pivots));
        assert_ne!(a.pivots, c.pivots);
    }

    #[test]
    fn files_have_diskanns_layout_and_round_trip() {
        let m = base_vectors(6, 600, 20, true);
        let pq = Pq::train_and_encode(&m, 6, 1, 2);
        let piv = pq.pivots_file();
        let u64_at = |o: usize| u64::from_le_bytes(piv[o..o + 8].try_into().unwrap());
        // Offsets: 4096, then each bin (8-byte header + payload) in turn.
        let o1 = 4096 + 8 + 256 * 20 * 4;
        let o2 = o1 + 8 + 20 * 4;
        let o3 = o2 + 8 + 7 * 4;
        assert_eq!(&piv[0..8], &[4, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!([u64_at(8), u64_at(16), u64_at(24), u64_at(32)], [4096, o1 as u64, o2 as u64, o3 as u64]);
        assert_eq!(piv.len(), o3);
        assert_eq!(&piv[4096..4104], &[0, 1, 0, 0, 20, 0, 0, 0]);
        let comp = pq.compressed_file();
        assert_eq!(comp.len(), 8 + 600 * 6);
        let back = Pq::parse_files(&piv, &comp).expect("parses");
        assert_eq!(
            (back.offsets, back.centroid, back.pivots, back.codes),
            (pq.offsets, pq.centroid, pq.pivots, pq.codes)
        );
        assert!(Pq::parse_files(&piv[..piv.len() - 4], &comp).is_none());
        assert!(Pq::parse_files(&piv, &comp[..comp.len() - 1]).is_none());
    }
}
