//! Latency distributions: how long one operation's base latency is.
//!
//! A profile gives each op kind one distribution, written as a one-key map:
//!
//! ```yaml
//! read: {fixed: 80us}
//! read: {uniform: {min: 50us, max: 120us}}
//! read: {lognormal: {p50: 80us, p99: 400us}}
//! read: {table: [[50, 80us], [99, 400us], [99.99, 2ms]]}
//! ```
//!
//! - `fixed`: always the same value (what latency-injection experiments use).
//! - `uniform`: equally likely anywhere in `[min, max]`.
//! - `lognormal`: the usual shape of storage latency (a body plus a long
//!   right tail), given by the two numbers people quote: the median and the
//!   99th percentile. With `ln X ~ N(mu, sigma²)`, `mu = ln p50` and
//!   `sigma = ln(p99/p50) / z₀.₉₉` where `z₀.₉₉ = 2.326348` is the standard
//!   normal 99th percentile.
//! - `table`: an empirical distribution from measured percentiles. Sampling
//!   draws a uniform percentile and interpolates the inverse CDF linearly
//!   between the two nearest given points. Below the first point the first
//!   value is used and above the last point the last value: give `[0, min]`
//!   and `[100, max]` to shape the tails explicitly.
//!
//! Samples are whole nanoseconds. Invalid parameters are rejected when the
//! profile is parsed, with a message saying what to change.

use serde::{Deserialize, Serialize};

use crate::prng::Prng;
use crate::units::Nanos;

/// The standard normal distribution's 99th percentile.
pub const Z_P99: f64 = 2.326_348;

/// Samples above this are clamped (about 11.6 days): keeps a badly chosen
/// lognormal tail from overflowing time arithmetic.
const SAMPLE_NS_MAX: f64 = 1.0e15;

/// A validated latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LatencyMap", into = "LatencyMap")]
pub struct Latency {
    spec: LatencySpec,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Fixed {
        ns: u64,
    },
    Uniform {
        min_ns: u64,
        max_ns: u64,
    },
    LogNormal {
        mu: f64,
        sigma: f64,
    },
    /// (percentile in [0, 100], nanoseconds), percentiles strictly rising.
    Table {
        points: Vec<(f64, f64)>,
    },
}

/// A latency distribution as written (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum LatencySpec {
    /// Always this value.
    Fixed(Nanos),
    /// Equally likely in `[min, max]`.
    Uniform {
        /// Smallest value.
        min: Nanos,
        /// Largest value.
        max: Nanos,
    },
    /// Log-normal with this median and 99th percentile.
    LogNormal {
        /// Median.
        p50: Nanos,
        /// 99th percentile (at least the median).
        p99: Nanos,
    },
    /// Piecewise-linear inverse CDF through `[percentile, value]` points.
    Table(Vec<(f64, Nanos)>),
}

/// The YAML shape: a map with exactly one of these keys. (A plain serde
/// enum would want YAML tags like `!fixed 80us`, which few people write.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyMap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fixed: Option<Nanos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uniform: Option<UniformMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lognormal: Option<LogNormalMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<Vec<(f64, Nanos)>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UniformMap {
    min: Nanos,
    max: Nanos,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogNormalMap {
    p50: Nanos,
    p99: Nanos,
}

const ONE_OF: &str = "give exactly one of `fixed`, `uniform`, `lognormal`, `table` (like {fixed: 80us})";

impl TryFrom<LatencyMap> for Latency {
    type Error = String;

    fn try_from(map: LatencyMap) -> Result<Latency, String> {
        let mut specs = Vec::with_capacity(1);
        specs.extend(map.fixed.map(LatencySpec::Fixed));
        specs.extend(map.uniform.map(|u| LatencySpec::Uniform { min: u.min, max: u.max }));
        specs.extend(map.lognormal.map(|l| LatencySpec::LogNormal { p50: l.p50, p99: l.p99 }));
        specs.extend(map.table.map(LatencySpec::Table));
        match specs.len() {
            1 => Latency::new(specs.remove(0)),
            0 => Err(format!("no distribution: {ONE_OF}")),
            _ => Err(format!("more than one distribution: {ONE_OF}")),
        }
    }
}

impl From<Latency> for LatencyMap {
    fn from(latency: Latency) -> LatencyMap {
        let mut map = LatencyMap::default();
        match latency.spec {
            LatencySpec::Fixed(ns) => map.fixed = Some(ns),
            LatencySpec::Uniform { min, max } => map.uniform = Some(UniformMap { min, max }),
            LatencySpec::LogNormal { p50, p99 } => map.lognormal = Some(LogNormalMap { p50, p99 }),
            LatencySpec::Table(points) => map.table = Some(points),
        }
        map
    }
}

impl TryFrom<LatencySpec> for Latency {
    type Error = String;

    fn try_from(spec: LatencySpec) -> Result<Latency, String> {
        let shape = match &spec {
            LatencySpec::Fixed(ns) => Shape::Fixed { ns: ns.0 },
            LatencySpec::Uniform { min, max } => {
                if min > max {
                    return Err(format!("uniform: min ({min}) is above max ({max}); swap them"));
                }
                Shape::Uniform { min_ns: min.0, max_ns: max.0 }
            }
            LatencySpec::LogNormal { p50, p99 } => {
                if p50.0 == 0 {
                    return Err("lognormal: p50 must be above 0 (for zero latency use {fixed: 0})".to_owned());
                }
                if p99 < p50 {
                    return Err(format!("lognormal: p99 ({p99}) is below p50 ({p50}); p99 must be at least p50"));
                }
                let mu = (p50.0 as f64).ln();
                let sigma = (p99.0 as f64 / p50.0 as f64).ln() / Z_P99;
                Shape::LogNormal { mu, sigma }
            }
            LatencySpec::Table(points) => {
                if points.is_empty() {
                    return Err("table: give at least one [percentile, duration] point".to_owned());
                }
                for (i, (pct, ns)) in points.iter().enumerate() {
                    if !(0.0..=100.0).contains(pct) {
                        return Err(format!("table: percentile {pct} is outside 0..=100"));
                    }
                    if let Some((prev_pct, prev_ns)) = i.checked_sub(1).map(|j| points[j]) {
                        if *pct <= prev_pct {
                            return Err(format!("table: percentiles must rise; {pct} follows {prev_pct}"));
                        }
                        if *ns < prev_ns {
                            return Err(format!(
                                "table: durations must not fall; p{pct} = {ns} is below p{prev_pct} = {prev_ns}"
                            ));
                        }
                    }
                }
                Shape::Table { points: points.iter().map(|(pct, ns)| (*pct, ns.0 as f64)).collect() }
            }
        };
        Ok(Latency { spec, shape })
    }
}

impl Latency {
    /// A distribution that always gives `ns`.
    pub fn fixed(ns: u64) -> Latency {
        Latency { spec: LatencySpec::Fixed(Nanos(ns)), shape: Shape::Fixed { ns } }
    }

    /// Validates a spec (the same checks as parsing a profile).
    pub fn new(spec: LatencySpec) -> Result<Latency, String> {
        Latency::try_from(spec)
    }

    /// The spec this distribution was built from.
    pub fn spec(&self) -> &LatencySpec {
        &self.spec
    }

    /// True if every sample is 0 (no random numbers needed).
    pub fn is_zero(&self) -> bool {
        matches!(self.shape, Shape::Fixed { ns: 0 })
    }

    /// One sample in nanoseconds.
    pub fn sample_ns(&self, rng: &mut Prng) -> u64 {
        match &self.shape {
            Shape::Fixed { ns } => *ns,
            Shape::Uniform { min_ns, max_ns } => {
                let span = max_ns - min_ns;
                if span == u64::MAX { rng.next_u64() } else { min_ns + rng.below(span + 1) }
            }
            Shape::LogNormal { mu, sigma } => {
                let x = (mu + sigma * rng.standard_normal()).exp();
                x.clamp(0.0, SAMPLE_NS_MAX).round() as u64
            }
            Shape::Table { points } => {
                let pct = rng.next_f64() * 100.0;
                table_inverse_cdf(points, pct).round() as u64
            }
        }
    }
}

/// Linear interpolation of the inverse CDF at `pct`, clamped to the end points.
fn table_inverse_cdf(points: &[(f64, f64)], pct: f64) -> f64 {
    let first = points[0];
    let last = points[points.len() - 1];
    if pct <= first.0 {
        return first.1;
    }
    if pct >= last.0 {
        return last.1;
    }
    // `points` is short (a handful of percentiles): a partition point is
    // O(log n) and needs no allocation.
    let upper = points.partition_point(|(p, _)| *p <= pct);
    let (p0, v0) = points[upper - 1];
    let (p1, v1) = points[upper];
    v0 + (v1 - v0) * (pct - p0) / (p1 - p0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 100_000;

    fn parse(yaml: &str) -> Latency {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn sorted_samples(latency: &Latency, seed: u64) -> Vec<u64> {
        let mut rng = Prng::new(seed).fork("latency");
        let mut samples: Vec<u64> = (0..N).map(|_| latency.sample_ns(&mut rng)).collect();
        samples.sort_unstable();
        samples
    }

    /// The empirical `pct` percentile (nearest rank).
    fn percentile(sorted: &[u64], pct: f64) -> f64 {
        let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64
    }

    fn assert_within(actual: f64, expected: f64, tolerance: f64, what: &str) {
        let error = (actual - expected).abs() / expected;
        assert!(error <= tolerance, "{what}: got {actual}, expected {expected} (error {:.2}%)", error * 100.0);
    }

    #[test]
    fn fixed_is_exact() {
        let latency = parse("{fixed: 80us}");
        assert!(sorted_samples(&latency, 1).iter().all(|&ns| ns == 80_000));
        assert!(parse("{fixed: 0}").is_zero());
    }

    #[test]
    fn uniform_stays_in_bounds_with_the_right_mean() {
        let latency = parse("{uniform: {min: 50us, max: 150us}}");
        let samples = sorted_samples(&latency, 2);
        assert!(*samples.first().unwrap() >= 50_000);
        assert!(*samples.last().unwrap() <= 150_000);
        let mean = samples.iter().sum::<u64>() as f64 / N as f64;
        assert_within(mean, 100_000.0, 0.01, "uniform mean");
        // Both ends are reached (within 0.1% of the span).
        assert!(samples[0] < 50_100 && samples[N - 1] > 149_900);
    }

    #[test]
    fn lognormal_matches_p50_and_p99() {
        for (seed, yaml, p50, p99) in [
            (3, "{lognormal: {p50: 80us, p99: 400us}}", 80_000.0, 400_000.0),
            (4, "{lognormal: {p50: 200us, p99: 2ms}}", 200_000.0, 2_000_000.0),
            (5, "{lognormal: {p50: 30ms, p99: 150ms}}", 30_000_000.0, 150_000_000.0),
        ] {
            let samples = sorted_samples(&parse(yaml), seed);
            assert_within(percentile(&samples, 50.0), p50, 0.03, &format!("{yaml} p50"));
            assert_within(percentile(&samples, 99.0), p99, 0.03, &format!("{yaml} p99"));
        }
        // p50 == p99 degenerates to a fixed value.
        let flat = sorted_samples(&parse("{lognormal: {p50: 1ms, p99: 1ms}}"), 6);
        assert!(flat.iter().all(|&ns| ns == 1_000_000));
    }

    #[test]
    fn table_matches_its_percentiles_and_interpolates() {
        let latency = parse("{table: [[50, 80us], [99, 400us], [99.99, 2ms]]}");
        let samples = sorted_samples(&latency, 7);
        assert_within(percentile(&samples, 50.0), 80_000.0, 0.03, "table p50");
        assert_within(percentile(&samples, 99.0), 400_000.0, 0.03, "table p99");
        assert_within(percentile(&samples, 99.99), 2_000_000.0, 0.03, "table p99.99");
        // Between points the inverse CDF is linear: p74.5 is halfway from p50 to p99.
        assert_within(percentile(&samples, 74.5), 240_000.0, 0.03, "table p74.5");
        // Below the first point the first value, above the last the last value.
        assert_eq!(samples[0], 80_000);
        assert_eq!(samples[N - 1], 2_000_000);
    }

    #[test]
    fn bad_parameters_are_rejected_with_a_fix() {
        for (yaml, needle) in [
            ("{uniform: {min: 2ms, max: 1ms}}", "swap"),
            ("{lognormal: {p50: 0, p99: 1ms}}", "fixed: 0"),
            ("{lognormal: {p50: 2ms, p99: 1ms}}", "at least p50"),
            ("{table: []}", "at least one"),
            ("{table: [[99, 1ms], [50, 2ms]]}", "must rise"),
            ("{table: [[50, 2ms], [99, 1ms]]}", "must not fall"),
            ("{table: [[150, 1ms]]}", "outside"),
            ("{gaussian: {p50: 1ms}}", "unknown field `gaussian`"),
            ("{}", "exactly one of"),
            ("{fixed: 1ms, uniform: {min: 0, max: 1ms}}", "more than one"),
            ("{lognormal: {p50: 1ms, p90: 2ms}}", "unknown field `p90`"),
            ("{fixed: 80}", "bad duration"),
        ] {
            let err = serde_yaml_ng::from_str::<Latency>(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let latency = parse("{lognormal: {p50: 80us, p99: 400us}}");
        let text = serde_yaml_ng::to_string(&latency).unwrap();
        assert_eq!(parse(&text), latency);
    }
}
