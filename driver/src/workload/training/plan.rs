//! Which samples each accelerator reads in an epoch, in order.
//!
//! `epoch` mode: the files are permuted with a stream seeded by (seed,
//! epoch), their samples follow in file order, and accelerator r takes the
//! r-th contiguous block of `S / n` samples: every epoch reads in a new
//! order and reshards. `fixed` mode reproduces DLIO v2.0 as measured:
//! ascending sample ids, block `[r·ceil(S/n), (r+1)·ceil(S/n))`, the same
//! every epoch. Each accelerator reads `steps × batch` samples (`drop_last`).

use mlpdrive_emu::Prng;

use crate::config::training::ShuffleMode;

/// (file index, sample index in the file).
pub type SampleRef = (u64, u64);

/// The epoch's per-accelerator sample order.
#[allow(clippy::too_many_arguments)]
pub fn epoch_samples(
    mode: ShuffleMode,
    seed: u64,
    epoch: u32,
    files: u64,
    samples_per_file: u64,
    accelerators: u32,
    steps: u64,
    batch: u64,
) -> Vec<Vec<SampleRef>> {
    let n = u64::from(accelerators);
    let total = files * samples_per_file;
    let take = steps * batch;
    let order: Vec<u64> = match mode {
        ShuffleMode::Fixed => (0..files).collect(),
        ShuffleMode::Epoch => {
            let mut order: Vec<u64> = (0..files).collect();
            let mut rng = Prng::new(seed).fork(&format!("training-shuffle/{epoch}"));
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
            order
        }
    };
    let block = match mode {
        ShuffleMode::Fixed => total.div_ceil(n),
        ShuffleMode::Epoch => total / n,
    };
    (0..n)
        .map(|r| {
            (r * block..(r * block + take).min(total))
                .map(|g| (order[(g / samples_per_file) as usize], g % samples_per_file))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_differs_between_epochs_and_repeats_for_the_same_seed() {
        let e0 = epoch_samples(ShuffleMode::Epoch, 42, 0, 1000, 1, 4, 50, 5);
        let e1 = epoch_samples(ShuffleMode::Epoch, 42, 1, 1000, 1, 4, 50, 5);
        assert_eq!(e0, epoch_samples(ShuffleMode::Epoch, 42, 0, 1000, 1, 4, 50, 5), "same seed, same order");
        assert_ne!(e0, e1, "a new order every epoch");
        assert_ne!(e0, epoch_samples(ShuffleMode::Epoch, 43, 0, 1000, 1, 4, 50, 5), "another seed");
        // Accelerator 0 reads other files in epoch 1 (reshard), and no
        // file is read twice within an epoch.
        assert_ne!(e0[0], e1[0]);
        let mut all: Vec<u64> = e0.iter().flatten().map(|s| s.0).collect();
        assert_eq!(all.len(), 1000);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn fixed_mode_is_dlio_v2_contiguous_blocks() {
        let e0 = epoch_samples(ShuffleMode::Fixed, 1, 0, 28, 1, 2, 7, 2);
        assert_eq!(e0[0].iter().map(|s| s.0).collect::<Vec<_>>(), (0..14).collect::<Vec<_>>());
        assert_eq!(e0[1].iter().map(|s| s.0).collect::<Vec<_>>(), (14..28).collect::<Vec<_>>());
        assert_eq!(e0, epoch_samples(ShuffleMode::Fixed, 1, 3, 28, 1, 2, 7, 2), "identical every epoch");
    }

    #[test]
    fn multi_sample_files_keep_records_in_file_order() {
        let e = epoch_samples(ShuffleMode::Epoch, 9, 0, 4, 3, 1, 4, 3);
        for w in e[0].chunks(3) {
            assert_eq!(w.iter().map(|s| s.1).collect::<Vec<_>>(), vec![0, 1, 2]);
            assert!(w.iter().all(|s| s.0 == w[0].0));
        }
    }
}
