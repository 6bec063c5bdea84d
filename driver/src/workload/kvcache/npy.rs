//! The NumPy `.npy` v1.0 header in front of every storage entry (spec §2.1)
//! when `kvcache.npy_header` is on: 128 bytes that describe the payload
//! behind them, so an entry file loads with `numpy.load`.
//!
//! dtype: float16 and bfloat16 models store `<f2` (the reference also writes
//! float16 for bfloat16), float32 `<f4`, int8 `|i1` (the reference writes
//! float32 data for int8, 4× its computed size; mlpdrive keeps the computed
//! size). A payload that is not a whole number of elements (an odd
//! `tokens × bytes_per_token ÷ TP` for a 2-byte dtype) is described as bytes,
//! `|u1`. Shape: with `tensor_parallel` 1 the reference's logical tensor
//! (MHA/GQA `(layers, 2, tokens, kv_heads, head_dim)`, MLA `(layers, tokens,
//! kv_lora_rank + qk_rope_head_dim)`); with TP > 1 the flat `(n,)` the
//! reference writes.

use super::models::{Attention, ModelSpec, NPY_HEADER_BYTES, Sizing};
use crate::datagen::{self, Expect, Verifier, VerifyError, VerifyErrorKind, VerifyOutcome};
use crate::datasets::formats::npy_header;

/// The numpy dtype and its item size for a model dtype.
fn descr(dtype: &str) -> (&'static str, u64) {
    match dtype {
        "float32" => ("<f4", 4),
        "int8" => ("|i1", 1),
        _ => ("<f2", 2),
    }
}

/// The reference's logical shape for an entry of `payload_bytes`, if the
/// payload is exactly that tensor.
fn logical_shape(model: &ModelSpec, sizing: &Sizing, payload_bytes: u64, elements: u64) -> Option<Vec<u64>> {
    let bpt = sizing.bytes_per_token;
    if sizing.tensor_parallel > 1 || bpt == 0 || !payload_bytes.is_multiple_of(bpt) {
        return None;
    }
    let tokens = payload_bytes / bpt;
    let dims = match model.attention_type {
        Attention::Mla => {
            vec![model.num_layers, tokens, model.kv_lora_rank.unwrap_or(512) + model.qk_rope_head_dim.unwrap_or(64)]
        }
        Attention::Mha | Attention::Gqa => vec![model.num_layers, 2, tokens, model.kv_heads, model.head_dim()],
    };
    let product = dims.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d));
    (product == Some(elements)).then_some(dims)
}

/// The exactly [`NPY_HEADER_BYTES`]-byte header of an entry whose payload
/// (the bytes after the header) is `payload_bytes` long.
pub fn entry_header(model: &ModelSpec, sizing: &Sizing, payload_bytes: u64) -> Vec<u8> {
    let (descr, item) = descr(&model.dtype);
    if !payload_bytes.is_multiple_of(item) {
        return npy_header("|u1", &[payload_bytes]);
    }
    let elements = payload_bytes / item;
    if let Some(dims) = logical_shape(model, sizing, payload_bytes, elements) {
        let h = npy_header(descr, &dims);
        if h.len() as u64 == NPY_HEADER_BYTES {
            return h;
        }
    }
    // A 1-D dict is at most 87 bytes with its prefix: numpy's 64-byte
    // alignment pads it to exactly 128.
    npy_header(descr, &[elements])
}

/// Fills a write chunk at object offset `offset`: the generator's bytes for
/// the object (exactly what `Data::Fill` writes there), with `header`
/// (object bytes `[0, header.len())`) over the part of the chunk it covers.
pub fn fill_chunk(header: &[u8], offset: u64, dst: &mut [u8], expect: &Expect) {
    datagen::fill(dst, expect.seed, expect.object, expect.generation.unwrap_or(0), offset);
    let start = (offset as usize).min(header.len());
    let n = (header.len() - start).min(dst.len());
    dst[..n].copy_from_slice(&header[start..start + n]);
}

/// Checks a read chunk at object offset `offset`: the header bytes it
/// covers exactly against `header` (counted verified, or one bad block at
/// the first differing byte), the rest against the generator by `policy`.
pub fn verify_chunk(header: &[u8], offset: u64, data: &[u8], expect: &Expect, policy: &Verifier) -> VerifyOutcome {
    let mut outcome = VerifyOutcome::default();
    let start = (offset as usize).min(header.len());
    let n = (header.len() - start).min(data.len());
    match data[..n].iter().zip(&header[start..start + n]).position(|(got, want)| got != want) {
        None => outcome.verified_bytes += n as u64,
        Some(k) => {
            outcome.bad_blocks += 1;
            outcome.first_error = Some(VerifyError {
                object: expect.object,
                block: offset / datagen::BLOCK_BYTES as u64,
                kind: VerifyErrorKind::Corrupt { byte_offset: offset + k as u64 },
            });
        }
    }
    if n < data.len() {
        outcome.merge(&policy.verify(&data[n..], offset + n as u64, expect));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::kvcache::models::builtin;

    /// A minimal npy v1.0 parser: (descr, fortran_order, shape, data offset).
    fn parse(h: &[u8]) -> (String, bool, Vec<u64>, usize) {
        assert_eq!(&h[..6], b"\x93NUMPY", "magic");
        assert_eq!(&h[6..8], &[1, 0], "version 1.0");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        let dict = std::str::from_utf8(&h[10..10 + len]).expect("ASCII dict");
        assert!(dict.ends_with('\n'), "{dict:?}");
        let dict = dict.trim_end();
        assert!(dict.starts_with('{') && dict.ends_with('}'), "{dict:?}");
        let field = |name: &str| {
            let at = dict.find(&format!("'{name}': ")).unwrap_or_else(|| panic!("{name} in {dict}"));
            &dict[at + name.len() + 4..]
        };
        let d = field("descr");
        let descr = d[1..].split('\'').next().unwrap().to_string();
        let fortran = field("fortran_order").starts_with("True");
        let s = field("shape");
        let inner = &s[1..s.find(')').unwrap()];
        let shape = inner.split(',').map(str::trim).filter(|t| !t.is_empty()).map(|t| t.parse().unwrap()).collect();
        (descr, fortran, shape, 10 + len)
    }

    fn itemsize(descr: &str) -> u64 {
        descr[2..].parse().unwrap()
    }

    #[test]
    fn headers_are_128_bytes_and_describe_the_payload() {
        let tiny = builtin("tiny-1b").unwrap();
        let bpt = tiny.bytes_per_token();
        let tp1 = Sizing { bytes_per_token: bpt, tensor_parallel: 1, npy_header: true };
        let tp3 = Sizing { bytes_per_token: bpt, tensor_parallel: 3, npy_header: true };
        let cases = [
            (&tp1, 3019 * bpt, "<f2", vec![tiny.num_layers, 2, 3019, tiny.kv_heads, tiny.head_dim()]),
            (&tp3, tp3.payload_bytes(1001), "<f2", vec![tp3.payload_bytes(1001) / 2]),
            (&tp3, 1001, "|u1", vec![1001]),
            (&tp1, u64::MAX - 1, "<f2", vec![u64::MAX / 2]),
        ];
        for (sizing, payload, want_descr, want_shape) in cases {
            let h = entry_header(&tiny, sizing, payload);
            assert_eq!(h.len() as u64, NPY_HEADER_BYTES, "{payload}");
            let (descr, fortran, shape, data_at) = parse(&h);
            assert_eq!(data_at as u64, NPY_HEADER_BYTES);
            assert_eq!((descr.as_str(), fortran, &shape), (want_descr, false, &want_shape));
            assert_eq!(shape.iter().product::<u64>() * itemsize(&descr), payload, "shape × itemsize = payload");
        }
    }

    #[test]
    fn mla_and_other_dtypes_get_their_shape_and_descr() {
        let ds = builtin("deepseek-v3").unwrap();
        let s = Sizing { bytes_per_token: ds.bytes_per_token(), tensor_parallel: 1, npy_header: true };
        let (descr, _, shape, _) = parse(&entry_header(&ds, &s, s.payload_bytes(77)));
        assert_eq!(descr, "<f2");
        assert_eq!(shape, vec![ds.num_layers, 77, 576]);
        let mut m = builtin("tiny-1b").unwrap();
        for (dtype, want) in [("float32", "<f4"), ("int8", "|i1"), ("bfloat16", "<f2")] {
            m.dtype = dtype.into();
            let s = Sizing { bytes_per_token: m.bytes_per_token(), tensor_parallel: 1, npy_header: true };
            let h = entry_header(&m, &s, s.payload_bytes(5));
            assert_eq!(h.len() as u64, NPY_HEADER_BYTES);
            let (descr, _, shape, _) = parse(&h);
            assert_eq!(descr, want, "{dtype}");
            assert_eq!(shape.iter().product::<u64>() * itemsize(&descr), s.payload_bytes(5), "{dtype}");
        }
    }

    #[test]
    fn a_header_chunk_verifies_whole_and_a_damaged_header_or_payload_byte_is_caught() {
        let tiny = builtin("tiny-1b").unwrap();
        let s = Sizing { bytes_per_token: tiny.bytes_per_token(), tensor_parallel: 1, npy_header: true };
        let h = entry_header(&tiny, &s, s.payload_bytes(10));
        let expect = Expect { seed: 7, object: 99, generation: Some(3) };
        let mut chunk = vec![0u8; 3 * 4096];
        fill_chunk(&h, 0, &mut chunk, &expect);
        assert_eq!(&chunk[..128], &h[..]);
        // Past the header the bytes are exactly the generator's.
        let mut plain = vec![0u8; chunk.len()];
        datagen::fill(&mut plain, 7, 99, 3, 0);
        assert_eq!(&chunk[128..], &plain[128..]);
        let ok = verify_chunk(&h, 0, &chunk, &expect, &Verifier::FULL);
        assert!(ok.is_ok(), "{:?}", ok.first_error);
        assert_eq!((ok.verified_bytes, ok.unverified_bytes), (chunk.len() as u64, 0));
        for at in [9usize, 127, 128, 5000] {
            let mut bad = chunk.clone();
            bad[at] ^= 1;
            let v = verify_chunk(&h, 0, &bad, &expect, &Verifier::FULL);
            assert_eq!(v.bad_blocks, 1, "byte {at}");
            let e = v.first_error.expect("first error");
            assert_eq!(e.kind, VerifyErrorKind::Corrupt { byte_offset: at as u64 }, "byte {at}");
        }
        // Another entry's header is not accepted.
        let other = entry_header(&tiny, &s, s.payload_bytes(11));
        assert_eq!(verify_chunk(&other, 0, &chunk, &expect, &Verifier::FULL).bad_blocks, 1);
    }
}
