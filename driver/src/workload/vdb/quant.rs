//! The compressed vectors kept in RAM to steer the search: DiskANN's
//! product quantiser ([`Pq`], `quantizer: pq`, the default) or an 8-bit
//! scalar quantiser ([`Sq8`], `quantizer: sq8`: per dimension,
//! `min + code × step` over that dimension's range, one byte per
//! dimension). The search asks [`Codes`] for a per-query table once, then
//! for one approximate distance per candidate.

use super::data::Matrix;
pub use super::pq::Pq;

/// The codes of every vector, by quantiser.
pub enum Codes {
    Sq8(Sq8),
    Pq(Pq),
}

impl Codes {
    /// What a query needs to score candidates: its PQ distance table, or
    /// (SQ8) the query itself.
    pub fn query_table(&self, q: &[f32]) -> Vec<f32> {
        match self {
            Codes::Sq8(_) => q.to_vec(),
            Codes::Pq(pq) => pq.table(q),
        }
    }

    /// Approximate squared L2 distance of vector `id` from the query whose
    /// table is `t`.
    pub fn distance(&self, t: &[f32], id: u32) -> f32 {
        match self {
            Codes::Sq8(sq) => sq.distance(t, id),
            Codes::Pq(pq) => pq.distance(t, id),
        }
    }

    /// Bytes of codes held in RAM.
    pub fn bytes(&self) -> usize {
        match self {
            Codes::Sq8(sq) => sq.bytes(),
            Codes::Pq(pq) => pq.bytes(),
        }
    }

    /// Bytes per vector's code.
    pub fn bytes_per_vector(&self) -> usize {
        match self {
            Codes::Sq8(sq) => sq.dim,
            Codes::Pq(pq) => pq.chunks,
        }
    }
}

pub struct Sq8 {
    dim: usize,
    min: Vec<f32>,
    step: Vec<f32>,
    codes: Vec<u8>,
}

impl Sq8 {
    /// Trains on and encodes every row of `m`.
    pub fn encode(m: &Matrix) -> Sq8 {
        let dim = m.dim;
        let mut min = vec![f32::INFINITY; dim];
        let mut max = vec![f32::NEG_INFINITY; dim];
        for row in m.data.chunks_exact(dim) {
            for (j, &x) in row.iter().enumerate() {
                min[j] = min[j].min(x);
                max[j] = max[j].max(x);
            }
        }
        let step: Vec<f32> = min.iter().zip(&max).map(|(lo, hi)| ((hi - lo) / 255.0).max(f32::MIN_POSITIVE)).collect();
        let codes = m
            .data
            .chunks_exact(dim)
            .flat_map(|row| {
                row.iter().enumerate().map(|(j, &x)| ((x - min[j]) / step[j]).round().clamp(0.0, 255.0) as u8)
            })
            .collect();
        Sq8 { dim, min, step, codes }
    }

    /// Bytes of compressed codes held in RAM.
    pub fn bytes(&self) -> usize {
        self.codes.len()
    }

    /// Approximate squared L2 distance from `q` to vector `id`.
    pub fn distance(&self, q: &[f32], id: u32) -> f32 {
        let code = &self.codes[id as usize * self.dim..(id as usize + 1) * self.dim];
        let mut sum = 0f32;
        for j in 0..self.dim {
            let x = self.min[j] + f32::from(code[j]) * self.step[j];
            let d = q[j] - x;
            sum += d * d;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::super::data::{base_vectors, l2_sq};
    use super::*;

    #[test]
    fn sq8_distances_are_close_to_exact() {
        let m = base_vectors(5, 100, 32, true);
        let sq = Sq8::encode(&m);
        assert_eq!(sq.bytes(), 100 * 32);
        for i in 0..100u32 {
            let exact = l2_sq(m.row(0), m.row(i as usize));
            let approx = sq.distance(m.row(0), i);
            assert!((exact - approx).abs() < 0.01, "{i}: {exact} vs {approx}");
        }
    }
}
