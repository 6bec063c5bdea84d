//! The one seeded random generator, and named sub-streams forked from it.
//!
//! Every random choice in the device model (latency samples, stalls, faults,
//! corruption) comes from a [`Prng`] built from the run's seed, so one printed
//! seed replays a run exactly. [`Prng::fork`] derives an independent stream
//! per purpose from the *seed and a label*, not from the parent's position:
//! drawing more numbers for latency never shifts which ops get faults, and
//! adding a new purpose later does not change existing ones.
//!
//! The generator is Xoshiro256++ (fast, 256-bit state, good statistical
//! quality; not cryptographic, which nothing here needs). This is the only
//! module of the crate that creates random numbers.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A deterministic random stream identified by a 64-bit key.
#[derive(Debug, Clone)]
pub struct Prng {
    key: u64,
    rng: Xoshiro256PlusPlus,
}

/// SplitMix64 finaliser: spreads a 64-bit value over all bits.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the label's bytes: a stable (across builds and platforms)
/// 64-bit name for a sub-stream.
fn label_hash(label: &str) -> u64 {
    label.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

impl Prng {
    /// The root stream of a run.
    pub fn new(seed: u64) -> Prng {
        Prng::from_key(mix64(seed))
    }

    fn from_key(key: u64) -> Prng {
        Prng { key, rng: Xoshiro256PlusPlus::seed_from_u64(key) }
    }

    /// An independent stream for one purpose (`"latency"`, `"faults.error"`,
    /// …). The same parent key and label always give the same stream,
    /// whatever has been drawn from the parent.
    pub fn fork(&self, label: &str) -> Prng {
        Prng::from_key(mix64(self.key ^ mix64(label_hash(label))))
    }

    /// 64 uniformly random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1)`: never 0, so safe to take a logarithm of.
    pub fn next_f64_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (`p <= 0` never, `p >= 1` always). Always
    /// draws exactly one number, so streams stay aligned whatever `p` is.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform integer in `[0, n)`; `n` must be at least 1.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values to choose from");
        // Lemire's multiply-shift with rejection: unbiased.
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A standard normal sample (Box–Muller; draws two numbers).
    pub fn standard_normal(&mut self) -> f64 {
        let radius = (-2.0 * self.next_f64_open().ln()).sqrt();
        let angle = std::f64::consts::TAU * self.next_f64();
        radius * angle.cos()
    }

    /// Fills `dst` with random bytes.
    pub fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.rng.fill_bytes(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_forks_are_independent_of_draws() {
        let mut a = Prng::new(42);
        let mut b = Prng::new(42);
        let drawn_a: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let drawn_b: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        assert_eq!(drawn_a, drawn_b);

        let fresh = Prng::new(42);
        let mut from_fresh = fresh.fork("latency");
        let mut from_used = a.fork("latency");
        assert_eq!(from_fresh.next_u64(), from_used.next_u64(), "fork depends on seed and label only");

        let mut other = fresh.fork("faults");
        let mut latency = fresh.fork("latency");
        let xs: Vec<u64> = (0..8).map(|_| other.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| latency.next_u64()).collect();
        assert_ne!(xs, ys, "different labels give different streams");

        let mut c = Prng::new(43);
        assert_ne!(Prng::new(42).next_u64(), c.next_u64(), "different seeds differ");
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut rng = Prng::new(7);
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            let y = rng.next_f64_open();
            assert!(y > 0.0 && y < 1.0);
            assert!(rng.below(3) < 3);
        }
        assert!(!rng.chance(0.0));
        assert!(rng.chance(1.0));
    }

    #[test]
    fn standard_normal_has_unit_spread() {
        let mut rng = Prng::new(9);
        let n = 100_000;
        let samples: Vec<f64> = (0..n).map(|_| rng.standard_normal()).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
