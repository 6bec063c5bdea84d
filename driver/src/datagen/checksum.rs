//! Block checksum: XXH3-64 with an mlpdrive secret over bytes `[8, 4096)`.
//!
//! XXH3 with a custom 192-byte secret is the standard keyed form of XXH3
//! (`XXH3_64bits_withSecret` in the reference library,
//! `xxhash_rust::xxh3::xxh3_64_with_secret` here), so the checksum is as
//! strong as plain XXH3-64 and any XXH3 implementation can recompute it. The
//! secret is the first 24 outputs of SplitMix64 seeded with [`SECRET_SEED`],
//! little-endian: random-looking, as XXH3 requires, and reproducible from
//! this sentence.
//!
//! A library computes it: `twox_hash`, which picks AVX2 or SSE2 at run time.
//! (`xxhash_rust`, used elsewhere and by the tests below as the reference,
//! picks its SIMD width at compile time, so a baseline x86-64 build hashes
//! with SSE2 only, about 23 GiB/s per core here. Every byte written or
//! verified is hashed, so on a busy simulated device the checksum was a
//! quarter of the run's CPU.)

use twox_hash::XxHash3_64;

use super::BLOCK_BYTES;
use super::payload::mix64;

/// Bytes covered by the checksum (everything after the checksum field).
#[cfg(test)]
pub(super) const INPUT_BYTES: usize = BLOCK_BYTES - 8;
/// SplitMix64 seed of the secret (ASCII "mlpdchks").
pub(super) const SECRET_SEED: u64 = u64::from_le_bytes(*b"mlpdchks");
const SECRET_WORDS: usize = 24;
/// The XXH3 secret (192 bytes, the size of the library's default secret).
pub(super) const SECRET: [u8; 8 * SECRET_WORDS] = secret();

const fn secret() -> [u8; 8 * SECRET_WORDS] {
    let mut out = [0u8; 8 * SECRET_WORDS];
    let mut state = SECRET_SEED;
    let mut word = 0;
    while word < SECRET_WORDS {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let bytes = mix64(state).to_le_bytes();
        let mut i = 0;
        while i < 8 {
            out[8 * word + i] = bytes[i];
            i += 1;
        }
        word += 1;
    }
    out
}

/// Checksum of a block: XXH3-64 with [`SECRET`] of bytes `[8, 4096)`.
pub(super) fn checksum(block: &[u8; BLOCK_BYTES]) -> u64 {
    XxHash3_64::oneshot_with_secret(&SECRET, &block[8..]).expect("a 192-byte secret is long enough for XXH3")
}

#[cfg(test)]
mod tests {
    use xxhash_rust::xxh3::xxh3_64_with_secret;

    use super::*;
    use crate::datagen::{BlockId, fill_block};

    /// Inputs of every kind: generated blocks, constant bytes, a counter
    /// pattern, and blocks with single flipped bits.
    fn inputs() -> Vec<[u8; INPUT_BYTES]> {
        let mut out = Vec::new();
        for n in 0..200u64 {
            let mut block = [0u8; BLOCK_BYTES];
            let id = BlockId { seed: n, object: n * 31, block: n / 3, generation: n % 5 };
            fill_block(&mut block, id);
            let mut input: [u8; INPUT_BYTES] = block[8..].try_into().unwrap();
            out.push(input);
            input[(n as usize * 97) % INPUT_BYTES] ^= 1 << (n % 8);
            out.push(input);
        }
        out.push([0; INPUT_BYTES]);
        out.push([0xff; INPUT_BYTES]);
        out.push(std::array::from_fn(|i| i as u8));
        out
    }

    #[test]
    fn secret_is_the_documented_splitmix64_stream() {
        let mut state = SECRET_SEED;
        for chunk in SECRET.chunks_exact(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            assert_eq!(chunk, mix64(state).to_le_bytes());
        }
        assert_eq!(SECRET.len(), 192);
    }

    #[test]
    fn checksum_equals_the_other_librarys_xxh3_with_secret() {
        for input in inputs() {
            let mut block = [0u8; BLOCK_BYTES];
            block[8..].copy_from_slice(&input);
            assert_eq!(checksum(&block), xxh3_64_with_secret(&input, &SECRET));
        }
    }
}
