//! Block payload: eight Xoshiro256++ generators stepped side by side.
//!
//! Xoshiro256++ (Blackman and Vigna, "Scrambled linear pseudorandom number
//! generators", ACM TOMS 2021; reference code at prng.di.unimi.it) passes
//! BigCrush and PractRand, but one generator is a serial chain of about ten
//! dependent operations per 8 bytes. Eight independent generators
//! ("lanes"), kept as structure-of-arrays (`[u64; 8]` per state word), turn
//! that chain into plain array arithmetic the compiler vectorises: with
//! AVX-512 one instruction steps all eight lanes, including the rotations.
//!
//! A block is 64 rows of eight 64-bit words; word `l` of row `r` is output
//! `r` of lane `l` (little-endian). The block header later overwrites words
//! 0 to 5 of row 0, so those six outputs are discarded.
//!
//! Each lane's 256-bit state comes from `xxh3_128` of the magic and the four
//! block fields (128 well-mixed bits, `(lo, hi)`): state word `w` of lane `l`
//! is `mix64(h ^ (4l + w + 1) * 0x9e3779b97f4a7c15)` with `h = lo` for even
//! `w` and `hi` for odd `w`, and `mix64` the SplitMix64 finaliser (a
//! bijection). So two distinct blocks share a lane state only through a
//! 128-bit hash collision, and the eight lanes of one block always start from
//! eight different states.

use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::{BLOCK_BYTES, BLOCK_MAGIC, BlockId};

/// Number of generators stepped together; fixed by the block format.
pub(super) const LANES: usize = 8;
/// Bytes of one row: one output of every lane.
const ROW_BYTES: usize = 8 * LANES;
/// Domain separator for the seed hash, so it can never equal a checksum or
/// object key computed from the same bytes.
const PAYLOAD_SEED_DOMAIN: u64 = 0x6d6c_7064_7061_796c;
/// 2^64 / golden ratio: spreads the per-word constants over all 64 bits.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The eight lane states, structure-of-arrays: `words[w][l]` is state word
/// `w` of lane `l` (word order as in the reference code, `s[0]..s[3]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LaneStates {
    pub(super) words: [[u64; LANES]; 4],
}

/// Seeds the lanes of one block (see the module doc).
#[inline(always)]
pub(super) fn lane_states(id: BlockId) -> LaneStates {
    let mut key = [0u8; 40];
    for (chunk, word) in key.chunks_exact_mut(8).zip([BLOCK_MAGIC, id.seed, id.object, id.block, id.generation]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let hash = xxh3_128_with_seed(&key, PAYLOAD_SEED_DOMAIN);
    let halves = [hash as u64, (hash >> 64) as u64];
    // Plain loops rather than `array::from_fn`: closures are separate
    // functions that need not inline into the CPU-specific callers.
    let mut words = [[0u64; LANES]; 4];
    for (w, word) in words.iter_mut().enumerate() {
        for (lane, value) in word.iter_mut().enumerate() {
            let constant = ((4 * lane + w + 1) as u64).wrapping_mul(GOLDEN_GAMMA);
            *value = mix64(halves[w % 2] ^ constant);
        }
    }
    LaneStates { words }
}

/// Writes all 64 rows of the block's lane outputs over `block` (the caller
/// then writes the header over the start of row 0). CPUs with AVX-512 run
/// an 8-lane build (native 64-bit rotates, all lanes in one register);
/// others run the portable 2-lane build (an AVX2 build measured no faster:
/// AVX2 has no 64-bit rotate). The `multiversion` crate does the run-time
/// CPU detection and dispatch, so this module has no `unsafe`.
pub(super) fn write_rows(block: &mut [u8; BLOCK_BYTES], id: BlockId) {
    if has_avx512() {
        write_rows_wide(block, id);
    } else {
        write_rows_portable(block, id);
    }
}

/// AVX-512F/VL/DQ present (detected once by the standard library's cache).
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The portable build (x86-64 baseline: SSE2, two lanes per register).
/// Running two lanes at a time over the whole block keeps all their state
/// in registers, which is faster here than all eight at once.
pub(super) fn write_rows_portable(block: &mut [u8; BLOCK_BYTES], id: BlockId) {
    write_rows_in_passes::<2, BLOCK_BYTES>(block, id);
}

/// All eight lanes per pass, compiled for AVX-512 as well as the baseline;
/// `multiversion` picks the AVX-512 version when the CPU has it.
#[multiversion::multiversion(targets("x86_64+avx2+avx512f+avx512vl+avx512dq"))]
pub(super) fn write_rows_wide(block: &mut [u8; BLOCK_BYTES], id: BlockId) {
    write_rows_in_passes::<8, BLOCK_BYTES>(block, id);
}

/// Writes the first `N / 64` rows of the block's lane outputs over `out`
/// (the block's first `N` bytes before the header goes on): what the
/// sampled verifier compares the start of every block with, at the cost of
/// seeding the lanes and stepping each `N / 64` times.
pub(super) fn write_prefix_rows<const N: usize>(out: &mut [u8; N], id: BlockId) {
    const { assert!(N.is_multiple_of(ROW_BYTES) && N <= BLOCK_BYTES) };
    write_rows_in_passes::<2, N>(out, id);
}

/// Generates the first `N` bytes of the block (`N` a whole number of rows)
/// `GROUP` lanes at a time (`GROUP` divides `LANES`). The grouping changes
/// only the order of work, never the bytes.
#[inline(always)]
fn write_rows_in_passes<const GROUP: usize, const N: usize>(block: &mut [u8; N], id: BlockId) {
    let states = lane_states(id);
    for pass in 0..LANES / GROUP {
        write_lane_group::<GROUP, N>(block, &states, pass * GROUP);
    }
}

/// Steps lanes `first..first + GROUP` through all rows, writing each output
/// to its lane's column.
#[inline(always)]
fn write_lane_group<const GROUP: usize, const N: usize>(block: &mut [u8; N], states: &LaneStates, first: usize) {
    let mut s = [[0u64; GROUP]; 4];
    for (group, all) in s.iter_mut().zip(&states.words) {
        group.copy_from_slice(&all[first..first + GROUP]);
    }
    let [mut s0, mut s1, mut s2, mut s3] = s;
    for row in block.chunks_exact_mut(ROW_BYTES) {
        let columns = &mut row[8 * first..8 * (first + GROUP)];
        for i in 0..GROUP {
            // Xoshiro256++ step, exactly as in the reference code.
            let out = s0[i].wrapping_add(s3[i]).rotate_left(23).wrapping_add(s0[i]);
            let t = s1[i] << 17;
            s2[i] ^= s0[i];
            s3[i] ^= s1[i];
            s1[i] ^= s2[i];
            s0[i] ^= s3[i];
            s2[i] ^= t;
            s3[i] = s3[i].rotate_left(45);
            columns[8 * i..8 * i + 8].copy_from_slice(&out.to_le_bytes());
        }
    }
}

/// The SplitMix64 finaliser: a bijection on u64 with full avalanche.
#[inline(always)]
pub(super) const fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn id(n: u64) -> BlockId {
        BlockId { seed: 0x5eed ^ n.rotate_left(17), object: n.wrapping_mul(0x9e37_79b9), block: n, generation: n % 3 }
    }

    fn column(block: &[u8; BLOCK_BYTES], lane: usize) -> Vec<u64> {
        block
            .chunks_exact(ROW_BYTES)
            .map(|row| u64::from_le_bytes(row[8 * lane..8 * lane + 8].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn lane_step_matches_published_test_vector() {
        // First outputs of the reference xoshiro256plusplus.c from state
        // (1, 2, 3, 4), as listed in rand_xoshiro's tests.
        let expected = [41943041, 58720359, 3588806011781223, 3591011842654386];
        let states = LaneStates { words: [[1; LANES], [2; LANES], [3; LANES], [4; LANES]] };
        for group in [1, 2, 4, 8] {
            let mut block = [0u8; BLOCK_BYTES];
            match group {
                1 => write_lane_group::<1, BLOCK_BYTES>(&mut block, &states, 5),
                2 => write_lane_group::<2, BLOCK_BYTES>(&mut block, &states, 4),
                4 => write_lane_group::<4, BLOCK_BYTES>(&mut block, &states, 4),
                _ => write_lane_group::<8, BLOCK_BYTES>(&mut block, &states, 0),
            }
            assert_eq!(column(&block, 5)[..4], expected, "group {group}");
        }
    }

    #[test]
    fn each_lane_is_the_reference_generator_from_its_state() {
        for n in 0..20 {
            let states = lane_states(id(n));
            let mut block = [0u8; BLOCK_BYTES];
            write_rows_portable(&mut block, id(n));
            for lane in 0..LANES {
                let mut seed = [0u8; 32];
                for (w, chunk) in seed.chunks_exact_mut(8).enumerate() {
                    chunk.copy_from_slice(&states.words[w][lane].to_le_bytes());
                }
                let mut reference = Xoshiro256PlusPlus::from_seed(seed);
                let want: Vec<u64> = (0..BLOCK_BYTES / ROW_BYTES).map(|_| reference.next_u64()).collect();
                assert_eq!(column(&block, lane), want, "block {n} lane {lane}");
            }
        }
    }

    #[test]
    fn lane_grouping_never_changes_the_bytes() {
        for n in 0..50 {
            let mut want = [0u8; BLOCK_BYTES];
            write_rows_in_passes::<8, BLOCK_BYTES>(&mut want, id(n));
            for group in [1, 2, 4] {
                let mut got = [0u8; BLOCK_BYTES];
                match group {
                    1 => write_rows_in_passes::<1, BLOCK_BYTES>(&mut got, id(n)),
                    2 => write_rows_in_passes::<2, BLOCK_BYTES>(&mut got, id(n)),
                    _ => write_rows_in_passes::<4, BLOCK_BYTES>(&mut got, id(n)),
                }
                assert_eq!(got, want, "block {n} group {group}");
            }
        }
    }

    #[test]
    fn wide_build_matches_portable() {
        if !has_avx512() {
            eprintln!("no AVX-512 on this CPU: the wide build runs its baseline version here");
        }
        for n in 0..1000 {
            let (mut portable, mut wide) = ([0u8; BLOCK_BYTES], [0u8; BLOCK_BYTES]);
            write_rows_portable(&mut portable, id(n));
            write_rows_wide(&mut wide, id(n));
            assert_eq!(portable, wide, "block {n}");
        }
    }

    #[test]
    fn lane_states_differ_within_and_across_blocks() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..2000 {
            let states = lane_states(id(n));
            for lane in 0..LANES {
                let state: [u64; 4] = std::array::from_fn(|w| states.words[w][lane]);
                assert!(state != [0; 4], "all-zero state, block {n} lane {lane}");
                assert!(seen.insert(state), "repeated state, block {n} lane {lane}");
            }
        }
    }

    #[test]
    fn prefix_rows_are_the_start_of_the_block() {
        for n in 0..200 {
            let mut whole = [0u8; BLOCK_BYTES];
            write_rows_portable(&mut whole, id(n));
            let mut prefix = [0u8; 128];
            write_prefix_rows(&mut prefix, id(n));
            assert_eq!(prefix[..], whole[..128], "block {n}");
        }
    }

    #[test]
    fn mix64_is_the_splitmix64_finaliser() {
        // SplitMix64 seeded with 0: first output, from the reference code.
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }
}
