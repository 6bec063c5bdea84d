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
//! Why not the library call alone: `xxhash_rust` picks its SIMD width at
//! compile time, so a baseline x86-64 build hashes with SSE2 only, which
//! would cost as much as generating the payload. On CPUs with AVX2 the
//! kernel below computes the same function twice as wide (chosen at run
//! time); elsewhere the library computes it. A test checks that both give
//! identical results. (An AVX-512 kernel measured no faster: the loop is
//! bound by the vector ports, of which 512-bit code gets fewer.)

use xxhash_rust::xxh3::xxh3_64_with_secret;

use super::BLOCK_BYTES;
use super::payload::mix64;

/// Bytes covered by the checksum: everything after the checksum field.
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
    let input: &[u8; INPUT_BYTES] = block[8..].try_into().expect("block minus checksum field");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the kernel only needs AVX2, detected at run time just above.
        return unsafe { avx2::xxh3_64(input) };
    }
    checksum_portable(input)
}

/// The library implementation (SSE2 on a baseline x86-64 build).
pub(super) fn checksum_portable(input: &[u8; INPUT_BYTES]) -> u64 {
    xxh3_64_with_secret(input, &SECRET)
}

/// XXH3-64 "long input" algorithm (inputs over 240 bytes) for exactly
/// `INPUT_BYTES` with [`SECRET`], written from the XXH3 specification: eight
/// 64-bit accumulators absorb 64-byte stripes, each keyed by the secret from
/// 8 bytes further on than the previous stripe's key; after every block of
/// 16 stripes they are scrambled; a last stripe (the final 64 input bytes)
/// uses its own key; then the accumulators are merged and avalanched. The
/// accumulators live in two 256-bit vectors.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi64, _mm256_extract_epi64, _mm256_mul_epu32, _mm256_set_epi64x,
        _mm256_set1_epi64x, _mm256_shuffle_epi32, _mm256_slli_epi64, _mm256_srli_epi64,
        _mm256_xor_si256,
    };

    use super::{INPUT_BYTES, SECRET, SECRET_WORDS};

    const STRIPE_BYTES: usize = 64;
    const STRIPES_PER_BLOCK: usize = (8 * SECRET_WORDS - STRIPE_BYTES) / 8;
    const BLOCK_LEN: usize = STRIPE_BYTES * STRIPES_PER_BLOCK;
    const FULL_BLOCKS: usize = (INPUT_BYTES - 1) / BLOCK_LEN;
    const TAIL_STRIPES: usize = (INPUT_BYTES - 1 - FULL_BLOCKS * BLOCK_LEN) / STRIPE_BYTES;
    /// Secret offsets of the scramble key, the last stripe's key and the
    /// merge key.
    const SCRAMBLE_AT: usize = 8 * SECRET_WORDS - STRIPE_BYTES;
    const LAST_STRIPE_AT: usize = 8 * SECRET_WORDS - STRIPE_BYTES - 7;
    const MERGE_AT: usize = 11;

    const PRIME32_1: u64 = 0x9e37_79b1;
    const PRIME32_2: u64 = 0x85eb_ca77;
    const PRIME32_3: u64 = 0xc2b2_ae3d;
    const PRIME64_1: u64 = 0x9e37_79b1_85eb_ca87;
    const PRIME64_2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    const PRIME64_3: u64 = 0x1656_67b1_9e37_79f9;
    const PRIME64_4: u64 = 0x85eb_ca77_c2b2_ae63;
    const PRIME64_5: u64 = 0x27d4_eb2f_1656_67c5;
    const ACC_INIT: [u64; 8] = [
        PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3, PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1,
    ];

    #[target_feature(enable = "avx2")]
    pub(crate) fn xxh3_64(input: &[u8; INPUT_BYTES]) -> u64 {
        let init = |at: usize| {
            let w = |i: usize| ACC_INIT[at + i] as i64;
            _mm256_set_epi64x(w(3), w(2), w(1), w(0))
        };
        let mut acc = [init(0), init(4)];
        for block in input[..FULL_BLOCKS * BLOCK_LEN].chunks_exact(BLOCK_LEN) {
            for (s, stripe) in block.chunks_exact(STRIPE_BYTES).enumerate() {
                accumulate(&mut acc, stripe, &SECRET[8 * s..]);
            }
            scramble(&mut acc);
        }
        let tail = &input[FULL_BLOCKS * BLOCK_LEN..];
        for (s, stripe) in tail
            .chunks_exact(STRIPE_BYTES)
            .take(TAIL_STRIPES)
            .enumerate()
        {
            accumulate(&mut acc, stripe, &SECRET[8 * s..]);
        }
        let last = &input[INPUT_BYTES - STRIPE_BYTES..];
        accumulate(&mut acc, last, &SECRET[LAST_STRIPE_AT..]);
        let [low, high] = acc;
        let words = [
            _mm256_extract_epi64::<0>(low),
            _mm256_extract_epi64::<1>(low),
            _mm256_extract_epi64::<2>(low),
            _mm256_extract_epi64::<3>(low),
            _mm256_extract_epi64::<0>(high),
            _mm256_extract_epi64::<1>(high),
            _mm256_extract_epi64::<2>(high),
            _mm256_extract_epi64::<3>(high),
        ];
        merge(&words.map(|word| word as u64))
    }

    /// Little-endian word of `bytes` at byte offset `at`.
    fn word(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Bytes `[at, at + 32)` as four little-endian words (one unaligned load
    /// once optimised).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(bytes: &[u8], at: usize) -> __m256i {
        let w = |i: usize| word(bytes, at + 8 * i) as i64;
        _mm256_set_epi64x(w(3), w(2), w(1), w(0))
    }

    /// Absorbs one stripe; `key` is the secret from the stripe's offset on:
    /// `acc[i] += data[i ^ 1] + lo32(k) * hi32(k)` with `k = data[i] ^ key[i]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn accumulate(acc: &mut [__m256i; 2], stripe: &[u8], key: &[u8]) {
        let (stripe, key) = (&stripe[..STRIPE_BYTES], &key[..STRIPE_BYTES]);
        for (half, acc) in acc.iter_mut().enumerate() {
            let data = load(stripe, 32 * half);
            let keyed = _mm256_xor_si256(data, load(key, 32 * half));
            // 0x31 moves each word's high half down; 0x4e swaps word pairs.
            let product = _mm256_mul_epu32(keyed, _mm256_shuffle_epi32::<0x31>(keyed));
            let swapped = _mm256_shuffle_epi32::<0x4e>(data);
            *acc = _mm256_add_epi64(*acc, _mm256_add_epi64(swapped, product));
        }
    }

    /// `acc = (acc ^ (acc >> 47) ^ key) * PRIME32_1` per word.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn scramble(acc: &mut [__m256i; 2]) {
        let prime = _mm256_set1_epi64x(PRIME32_1 as i64);
        for (half, acc) in acc.iter_mut().enumerate() {
            let mixed = _mm256_xor_si256(*acc, _mm256_srli_epi64::<47>(*acc));
            let keyed = _mm256_xor_si256(mixed, load(&SECRET, SCRAMBLE_AT + 32 * half));
            let low = _mm256_mul_epu32(keyed, prime);
            let high = _mm256_mul_epu32(_mm256_srli_epi64::<32>(keyed), prime);
            *acc = _mm256_add_epi64(low, _mm256_slli_epi64::<32>(high));
        }
    }

    /// Folds the accumulators into the final 64-bit hash.
    fn merge(acc: &[u64; 8]) -> u64 {
        let mut h = (INPUT_BYTES as u64).wrapping_mul(PRIME64_1);
        for i in 0..4 {
            let key = |j: usize| word(&SECRET, MERGE_AT + 8 * j);
            let product =
                u128::from(acc[2 * i] ^ key(2 * i)) * u128::from(acc[2 * i + 1] ^ key(2 * i + 1));
            h = h.wrapping_add(product as u64 ^ (product >> 64) as u64);
        }
        h ^= h >> 37;
        h = h.wrapping_mul(0x1656_6791_9e37_79f9);
        h ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagen::{BlockId, fill_block};

    /// Inputs of every kind: generated blocks, constant bytes, a counter
    /// pattern, and blocks with single flipped bits.
    fn inputs() -> Vec<[u8; INPUT_BYTES]> {
        let mut out = Vec::new();
        for n in 0..200u64 {
            let mut block = [0u8; BLOCK_BYTES];
            let id = BlockId {
                seed: n,
                object: n * 31,
                block: n / 3,
                generation: n % 5,
            };
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
    fn dispatched_checksum_equals_library_xxh3_with_secret() {
        for input in inputs() {
            let mut block = [0u8; BLOCK_BYTES];
            block[8..].copy_from_slice(&input);
            assert_eq!(checksum(&block), xxh3_64_with_secret(&input, &SECRET));
        }
    }

    #[test]
    fn avx2_kernel_equals_library_xxh3_with_secret() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx2") {
                eprintln!("no AVX2 on this CPU: only the library implementation runs here");
                return;
            }
            for input in inputs() {
                // SAFETY: AVX2 support was detected above.
                let got = unsafe { avx2::xxh3_64(&input) };
                assert_eq!(got, checksum_portable(&input));
            }
        }
    }
}
