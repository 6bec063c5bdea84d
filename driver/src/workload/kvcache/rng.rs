//! Seeded random streams: one Xoshiro256++ per purpose (and per user), so a
//! decision never depends on how other streams were consumed, and the same
//! seed gives the same keys, sizes and choices.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A purpose-specific stream.
pub struct Stream(Xoshiro256PlusPlus);

/// SplitMix64 finaliser: decorrelates seeds.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Stream {
    /// The stream for (`seed`, `purpose`, `index`).
    pub fn new(seed: u64, purpose: &str, index: u64) -> Stream {
        let p = xxhash_rust::xxh3::xxh3_64(purpose.as_bytes());
        Stream(Xoshiro256PlusPlus::seed_from_u64(splitmix(seed ^ splitmix(p ^ splitmix(index)))))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `lo..=hi` (like Python's `randint`).
    pub fn int_in(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        lo + ((u128::from(self.0.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// Uniform in [lo, hi).
    pub fn float_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Index below `n` (n ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.int_in(0, n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Stream::new(42, "users", 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Stream::new(42, "users", 0).next_u64(), Stream::new(42, "users", 1).next_u64());
        assert_ne!(Stream::new(42, "users", 0).next_u64(), Stream::new(43, "users", 0).next_u64());
        let mut s = Stream::new(1, "x", 0);
        for _ in 0..10_000 {
            let v = s.int_in(3, 7);
            assert!((3..=7).contains(&v));
            let f = s.float_in(0.8, 1.2);
            assert!((0.8..1.2).contains(&f));
        }
    }
}
