//! Sample sizes as the reference draws them: per file, two side lengths
//! from Normal(μ = √L, σ = s / (2√L)) truncated to integers ≥ 1, where L is
//! `record_length_bytes` and s `record_length_bytes_stdev`. A sample is a
//! dim1 × dim2 uint8 array, so sizes have mean ≈ L but follow the
//! distribution of a product of two normals, whose standard deviation is
//! √(s²/2 + s⁴/(16 L²)) ≈ 0.71 s (not s; the reference measures the same).

use mlpdrive_emu::Prng;

use super::Split;

/// Side lengths of file `i`'s samples (each file's draw has its own
/// stream, so files can be generated in any order and in parallel).
pub fn draw_dims(seed: u64, split: Split, i: u64, record_length: f64, stdev: f64) -> (u64, u64) {
    let mu = record_length.sqrt();
    let sigma = stdev / (2.0 * mu);
    let mut rng = Prng::new(seed).fork(&format!("training-dims/{}/{i}", split.folder()));
    let mut side = || {
        let v = if sigma > 0.0 { mu + sigma * rng.standard_normal() } else { mu };
        (v.trunc() as i64).max(1) as u64
    };
    let d1 = side();
    let d2 = side();
    (d1, d2)
}

/// The analytic mean and standard deviation of dim1 × dim2 (before
/// truncation to integers).
pub fn expected_mean_stdev(record_length: f64, stdev: f64) -> (f64, f64) {
    let var = stdev * stdev / 2.0 + stdev.powi(4) / (16.0 * record_length * record_length);
    (record_length, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    /// unet3d and cosmoflow parameters, 1,000 files: mean and stdev within
    /// 2% of the reference distribution's.
    #[test]
    fn size_distribution_matches_the_reference_on_1000_files() {
        for (l, s) in [(146_600_628.0, 68_341_808.0), (2_828_486.0, 71_311.0), (262_144.0, 65_536.0)] {
            let sizes: Vec<f64> = (0..1000)
                .map(|i| {
                    let (a, b) = draw_dims(1, Split::Train, i, l, s);
                    (a * b) as f64
                })
                .collect();
            let (mean, sd) = stats(&sizes);
            let (em, esd) = expected_mean_stdev(l, s);
            assert!((mean / em - 1.0).abs() < 0.02, "L={l}: mean {mean} vs {em}");
            assert!((sd / esd - 1.0).abs() < 0.02, "L={l}: stdev {sd} vs {esd}");
        }
    }

    #[test]
    fn zero_stdev_gives_the_reference_square() {
        // resnet50: 114,660.07 B → 338 × 338 = 114,244 B (measured in the spec).
        assert_eq!(draw_dims(7, Split::Train, 3, 114_660.07, 0.0), (338, 338));
    }

    #[test]
    fn draws_are_per_file_and_reproducible() {
        let a = draw_dims(1, Split::Train, 5, 1e6, 1e5);
        assert_eq!(a, draw_dims(1, Split::Train, 5, 1e6, 1e5));
        assert_ne!(a, draw_dims(1, Split::Train, 6, 1e6, 1e5));
        assert_ne!(a, draw_dims(2, Split::Train, 5, 1e6, 1e5));
    }
}
