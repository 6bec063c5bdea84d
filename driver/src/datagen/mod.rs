//! Self-verifying, incompressible, deduplication-proof data.
//!
//! Storage under test may compress or deduplicate what it stores, so every
//! 4 KiB block mlpdrive writes is unique and random. It is also a pure
//! function of `(seed, object key, block index, generation)`, so any run can
//! regenerate it, and it carries a header (the fio "verify" idea), so a reader
//! can check what it got back without a stored copy and tell *misplaced*
//! data (a valid block of another place, object, seed or generation: a
//! misdirected or lost write, stale data) from *corrupt* data (bytes that
//! no writer produced).
//!
//! # Block format (version 2)
//!
//! All integers are little-endian `u64`.
//!
//! | bytes          | content                                              |
//! | -------------- | ---------------------------------------------------- |
//! | `[0, 8)`       | checksum of bytes `[8, 4096)` (see below)            |
//! | `[8, 16)`      | magic and format version: ASCII `MLPDBLK` then `0x02`|
//! | `[16, 24)`     | seed                                                 |
//! | `[24, 32)`     | object key ([`object_key`])                          |
//! | `[32, 40)`     | block index within the object                        |
//! | `[40, 48)`     | generation (which write of the object this is)       |
//! | `[48, 4096)`   | payload: 506 words from eight Xoshiro256++ lanes     |
//!
//! The payload comes from eight Xoshiro256++ generators stepped side by side:
//! viewing the block as 64 rows of eight words, word `l` of row `r` is
//! output `r` of lane `l`, and the header replaces words 0 to 5 of row 0. The
//! lanes are seeded from `xxh3_128` of the magic and the four fields, widened
//! to eight 256-bit states by the bijective SplitMix64 finaliser, so two
//! distinct blocks share a lane state only through a 128-bit hash collision
//! (details and the reason for eight lanes: `payload.rs`).
//!
//! The checksum is XXH3-64 keyed with a fixed 192-byte secret derived from
//! SplitMix64 (`xxh3_64_with_secret` from `xxhash-rust`; details:
//! `checksum.rs`). Version 1 (two Xoshiro256++ streams, unkeyed
//! `xxh3_64`) is not readable by this version: its blocks fail the checksum.
//!
//! An object's byte stream is the concatenation of its blocks 0, 1, 2, ...;
//! an object whose size is not a multiple of 4 KiB ends with a prefix of its
//! last block.
//!
//! # Verification
//!
//! A whole block is checked by its checksum and header alone, which is as fast
//! as hashing: checksum and fields as expected ⇒ verified; checksum valid but
//! another block's fields ⇒ [`VerifyErrorKind::Misplaced`]; checksum invalid
//! ⇒ [`VerifyErrorKind::Corrupt`], located by regenerating the expected block.
//! A partial block (a read that covers only part of it) is checked by
//! regenerating the block and comparing the covered bytes; that needs the
//! generation, taken from [`Expect`] or, when that is `None`, from the
//! block's own header if the read covers it (`[0, 48)`). A partial block with
//! neither is counted as unverified. A partial read whose covered header
//! names another block, and whose bytes match that block, is misplaced.
//!
//! That is the `full` policy. [`Verifier`] also offers `sampled` (every
//! whole block's header and first [`PREFIX_BYTES`] checked, the checksum on
//! a seeded 1-in-N subset; unsampled blocks count as header-checked, not
//! verified) and `off`; see `verifier.rs`.

use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

mod checksum;
mod payload;
mod verifier;

pub use verifier::{
    DEFAULT_SAMPLE_EVERY, PREFIX_BYTES, SAMPLE_EVERY_MAX, SAMPLE_EVERY_MIN, SampleKey, Verifier, VerifyMode,
};

/// Size of one generated block; the unit of uniqueness and verification.
pub const BLOCK_BYTES: usize = 4096;
/// Size of the block header (checksum, magic, seed, object, block, generation).
pub const HEADER_BYTES: usize = 48;
/// Magic and format version, bytes `[8, 16)` of every block.
pub const BLOCK_MAGIC: u64 = u64::from_le_bytes(*b"MLPDBLK\x02");

const BLOCK_BYTES_U64: u64 = BLOCK_BYTES as u64;
const CHECKSUM_AT: usize = 0;
const MAGIC_AT: usize = 8;
const SEED_AT: usize = 16;
const OBJECT_AT: usize = 24;
const BLOCK_AT: usize = 32;
const GEN_AT: usize = 40;

/// Stable 64-bit key for an object name (xxh3 of the UTF-8 name); same on
/// every run and machine, so a later run can verify what an earlier one wrote.
pub fn object_key(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// Everything that determines the bytes of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockId {
    /// Run seed (the same seed regenerates the same data).
    pub seed: u64,
    /// Object key, see [`object_key`].
    pub object: u64,
    /// Block index within the object (object byte offset / 4096).
    pub block: u64,
    /// Generation: which write of the object this is. (`gen` is a reserved
    /// word in edition 2024, hence the raw identifier.)
    pub generation: u64,
}

/// A block's identity with its checksum: enough to regenerate its exact bytes
/// without hashing them again (see [`fill_sealed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedBlock {
    /// Which block.
    pub id: BlockId,
    /// Its checksum (bytes `[0, 8)` of the block), computed over its bytes.
    pub checksum: u64,
}

/// Writes the exact bytes of one block; returns its checksum.
pub fn fill_block(dst: &mut [u8; BLOCK_BYTES], id: BlockId) -> SealedBlock {
    write_unsealed(dst, id);
    let checksum = checksum::checksum(dst);
    put_u64(dst, CHECKSUM_AT, checksum);
    SealedBlock { id, checksum }
}

/// Writes the exact bytes of a block whose checksum is already known (taken
/// from [`fill_block`] or [`whole_block_sealed`] of the same block): the
/// same bytes as [`fill_block`] without the hash, which is most of a block's
/// cost. A store that keeps no bytes uses it to serve reads.
pub fn fill_sealed(dst: &mut [u8; BLOCK_BYTES], block: SealedBlock) {
    write_unsealed(dst, block.id);
    put_u64(dst, CHECKSUM_AT, block.checksum);
}

/// Payload rows and header, everything but the checksum.
fn write_unsealed(dst: &mut [u8; BLOCK_BYTES], id: BlockId) {
    payload::write_rows(dst, id);
    put_u64(dst, MAGIC_AT, BLOCK_MAGIC);
    put_u64(dst, SEED_AT, id.seed);
    put_u64(dst, OBJECT_AT, id.object);
    put_u64(dst, BLOCK_AT, id.block);
    put_u64(dst, GEN_AT, id.generation);
}

/// The identity of a whole generated block, read from its header: `Some`
/// only if the block's checksum is valid and the magic is this format's. A
/// block whose identity is known can be regenerated exactly with
/// [`fill_block`], which is how a store that keeps no bytes (`emu://…?store=none`)
/// serves reads.
pub fn whole_block_id(bytes: &[u8; BLOCK_BYTES]) -> Option<BlockId> {
    whole_block_sealed(bytes).map(|sealed| sealed.id)
}

/// [`whole_block_id`] with the block's (checked) checksum, for
/// [`fill_sealed`].
pub fn whole_block_sealed(bytes: &[u8; BLOCK_BYTES]) -> Option<SealedBlock> {
    let header = Header::parse(bytes);
    let checksum = get_u64(bytes, CHECKSUM_AT);
    (header.magic == BLOCK_MAGIC && checksum::checksum(bytes) == checksum)
        .then_some(SealedBlock { id: header.id, checksum })
}

/// The identity a block's header claims, from a buffer that starts at the
/// block's first byte and holds at least [`HEADER_BYTES`]: `Some` if the magic
/// is this format's (the checksum cannot be checked without the whole block;
/// compare the bytes against [`fill_block`] of the id to confirm).
pub fn header_block_id(bytes: &[u8]) -> Option<BlockId> {
    if bytes.len() < HEADER_BYTES {
        return None;
    }
    let header = Header::parse(bytes);
    (header.magic == BLOCK_MAGIC).then_some(header.id)
}

/// Fills `dst` with the object's byte stream starting at byte `offset` of the
/// object (any offset and length; the stream is the concatenation of blocks
/// 0, 1, 2, ... of `(seed, object, gen)`). Whole aligned blocks are generated
/// in place; only a partial first or last block goes through a stack copy.
///
/// Panics if `offset + dst.len()` overflows `u64` (no object is that large).
pub fn fill(dst: &mut [u8], seed: u64, object: u64, generation: u64, offset: u64) {
    assert_range_fits(offset, dst.len());
    let mut scratch = [0u8; BLOCK_BYTES];
    let mut pos = 0;
    while pos < dst.len() {
        let span = Span::at(offset, pos, dst.len());
        let id = BlockId { seed, object, block: span.block, generation };
        let out = &mut dst[pos..pos + span.len()];
        match <&mut [u8; BLOCK_BYTES]>::try_from(&mut *out) {
            Ok(whole) => {
                fill_block(whole, id);
            }
            Err(_) => {
                fill_block(&mut scratch, id);
                out.copy_from_slice(&scratch[span.lo..span.hi]);
            }
        }
        pos += span.len();
    }
}

/// What a reader expects. `gen = None` means "any generation" (the object may
/// have been overwritten by later runs): whole blocks are still fully
/// verifiable through header and checksum; partial blocks are verifiable only
/// when the read covers their header (which names the generation), and are
/// otherwise counted as unverified.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub seed: u64,
    pub object: u64,
    /// Expected generation, or `None` for any.
    pub generation: Option<u64>,
}

/// How a block failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyErrorKind {
    /// Bytes differ from what was written there; `byte_offset` = object offset
    /// of the first bad byte. When the generation is unknown it is taken from
    /// the block's own header, so a damaged generation field shows up as a
    /// bad checksum, i.e. at the block's first byte.
    Corrupt { byte_offset: u64 },
    /// A valid block (checksum OK, or for a partial read, the covered bytes
    /// match the block its header names) of another place, object, seed or
    /// generation was found where the expected block should be.
    Misplaced { found: BlockId },
}

/// One failed block: the expected object and block index, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub object: u64,
    pub block: u64,
    pub kind: VerifyErrorKind,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let block_offset = self.block.saturating_mul(BLOCK_BYTES_U64);
        write!(f, "object {:#018x} block {} (byte offset {}): ", self.object, self.block, block_offset)?;
        match &self.kind {
            VerifyErrorKind::Corrupt { byte_offset } => write!(
                f,
                "corrupt data, first bad byte at object offset {} (byte {} of the block)",
                byte_offset,
                byte_offset.wrapping_sub(block_offset)
            ),
            VerifyErrorKind::Misplaced { found } => write!(
                f,
                "misplaced data, found a valid block of seed {:#018x} object {:#018x} \
                 block {} generation {}",
                found.seed, found.object, found.block, found.generation
            ),
        }
    }
}

/// Result of verifying one or more reads. Bytes of bad blocks count as
/// none of verified, header-checked or unverified.
#[derive(Debug, Default, Clone)]
pub struct VerifyOutcome {
    /// Bytes checked completely (checksum, or compared with the regenerated block).
    pub verified_bytes: u64,
    /// Bytes of whole blocks whose header and first [`PREFIX_BYTES`] were
    /// checked but whose payload checksum was not (sampled mode's
    /// unsampled blocks).
    pub header_checked_bytes: u64,
    pub unverified_bytes: u64,
    pub bad_blocks: u64,
    pub first_error: Option<VerifyError>,
}

impl VerifyOutcome {
    /// Adds `other`'s counts; keeps the earlier first error.
    pub fn merge(&mut self, other: &VerifyOutcome) {
        self.verified_bytes += other.verified_bytes;
        self.header_checked_bytes += other.header_checked_bytes;
        self.unverified_bytes += other.unverified_bytes;
        self.bad_blocks += other.bad_blocks;
        if self.first_error.is_none() {
            self.first_error = other.first_error.clone();
        }
    }

    /// True when no block failed (unverified bytes are not failures).
    pub fn is_ok(&self) -> bool {
        self.bad_blocks == 0 && self.first_error.is_none()
    }
}

/// Verifies every byte of `data`, which was read from the object at byte
/// `offset` (any offset and length; short reads are fine). Never allocates.
/// Workloads check reads through their run's [`Verifier`] instead.
///
/// Panics if `offset + data.len()` overflows `u64`.
pub fn verify(data: &[u8], offset: u64, expect: &Expect) -> VerifyOutcome {
    verify_blocks(data, offset, expect, &Verifier::FULL)
}

/// The block loop of every policy: whole blocks the policy samples get the
/// full check, the others the header-and-prefix check; partial blocks are
/// always checked in full.
fn verify_blocks(data: &[u8], offset: u64, expect: &Expect, policy: &Verifier) -> VerifyOutcome {
    assert_range_fits(offset, data.len());
    let mut outcome = VerifyOutcome::default();
    let mut pos = 0;
    while pos < data.len() {
        let span = Span::at(offset, pos, data.len());
        let bytes = &data[pos..pos + span.len()];
        let check = match <&[u8; BLOCK_BYTES]>::try_from(bytes) {
            Ok(whole) if policy.samples(expect.object, span.block) => check_whole(whole, span.block, expect),
            Ok(whole) => check_header_prefix(whole, span.block, expect),
            Err(_) => check_partial(bytes, &span, expect),
        };
        match check {
            Check::Verified => outcome.verified_bytes += bytes.len() as u64,
            Check::HeaderChecked => outcome.header_checked_bytes += bytes.len() as u64,
            Check::Unverified => outcome.unverified_bytes += bytes.len() as u64,
            Check::Bad(kind) => {
                outcome.bad_blocks += 1;
                if outcome.first_error.is_none() {
                    outcome.first_error = Some(VerifyError { object: expect.object, block: span.block, kind });
                }
            }
        }
        pos += span.len();
    }
    outcome
}

/// Verdict on the covered part of one block.
enum Check {
    Verified,
    /// Header and prefix as expected; the rest of the payload not checked.
    HeaderChecked,
    Unverified,
    Bad(VerifyErrorKind),
}

/// The part of one block covered by a buffer: block index and byte range
/// `[lo, hi)` within the block.
struct Span {
    block: u64,
    lo: usize,
    hi: usize,
}

impl Span {
    /// The block span starting at buffer position `pos` of a buffer of
    /// `buf_len` bytes that maps to object offset `offset`.
    fn at(offset: u64, pos: usize, buf_len: usize) -> Span {
        let object_offset = offset + pos as u64;
        let block = object_offset / BLOCK_BYTES_U64;
        let lo = (object_offset % BLOCK_BYTES_U64) as usize;
        let hi = BLOCK_BYTES.min(lo + (buf_len - pos));
        Span { block, lo, hi }
    }

    fn len(&self) -> usize {
        self.hi - self.lo
    }

    fn covers_header(&self) -> bool {
        self.lo == 0 && self.hi >= HEADER_BYTES
    }

    /// Object offset of byte `index` of the covered range.
    fn object_offset(&self, index: usize) -> u64 {
        self.block * BLOCK_BYTES_U64 + (self.lo + index) as u64
    }
}

/// The header fields of a block (or of a buffer holding at least its header).
struct Header {
    magic: u64,
    id: BlockId,
}

impl Header {
    fn parse(bytes: &[u8]) -> Header {
        Header {
            magic: get_u64(bytes, MAGIC_AT),
            id: BlockId {
                seed: get_u64(bytes, SEED_AT),
                object: get_u64(bytes, OBJECT_AT),
                block: get_u64(bytes, BLOCK_AT),
                generation: get_u64(bytes, GEN_AT),
            },
        }
    }

    /// True if the header is ours and names the expected place (the
    /// generation is compared only when known).
    fn names(&self, expect: &Expect, block: u64) -> bool {
        self.magic == BLOCK_MAGIC
            && self.id.seed == expect.seed
            && self.id.object == expect.object
            && self.id.block == block
            && expect.generation.is_none_or(|generation| generation == self.id.generation)
    }
}

/// Whole block: checksum and header decide; regenerate only to locate damage.
fn check_whole(bytes: &[u8; BLOCK_BYTES], block: u64, expect: &Expect) -> Check {
    let header = Header::parse(bytes);
    let checksum_ok = checksum::checksum(bytes) == get_u64(bytes, CHECKSUM_AT);
    if checksum_ok && header.names(expect, block) {
        return Check::Verified;
    }
    if checksum_ok && header.magic == BLOCK_MAGIC {
        return Check::Bad(VerifyErrorKind::Misplaced { found: header.id });
    }
    // Corrupt: locate the first bad byte against the expected block. With the
    // generation unknown, the header's claim is the best candidate (exact
    // unless the generation field itself is damaged).
    let generation = expect.generation.unwrap_or(header.id.generation);
    let mut scratch = [0u8; BLOCK_BYTES];
    fill_block(&mut scratch, expected_id(expect, block, generation));
    let index = first_difference(bytes, &scratch);
    Check::Bad(VerifyErrorKind::Corrupt { byte_offset: block * BLOCK_BYTES_U64 + index as u64 })
}

/// Whole block, sampled mode's cheap check: the header must name the
/// expected block and bytes `[8, PREFIX_BYTES)` must equal the regenerated
/// block's (only the first two rows are generated). Any mismatch goes to
/// the full check, which classifies it exactly as full mode would.
fn check_header_prefix(bytes: &[u8; BLOCK_BYTES], block: u64, expect: &Expect) -> Check {
    let header = Header::parse(bytes);
    if header.names(expect, block) {
        let mut want = [0u8; PREFIX_BYTES];
        payload::write_prefix_rows(&mut want, header.id);
        if bytes[HEADER_BYTES..PREFIX_BYTES] == want[HEADER_BYTES..] {
            return Check::HeaderChecked;
        }
    }
    check_whole(bytes, block, expect)
}

/// Partial block: regenerate and compare the covered bytes. Without an
/// expected generation, the covered header supplies it; without either, the
/// bytes cannot be checked.
fn check_partial(bytes: &[u8], span: &Span, expect: &Expect) -> Check {
    let header = span.covers_header().then(|| Header::parse(bytes));
    let Some(generation) = expect.generation.or(header.as_ref().map(|h| h.id.generation)) else {
        return Check::Unverified;
    };
    let id = expected_id(expect, span.block, generation);
    let mut scratch = [0u8; BLOCK_BYTES];
    fill_block(&mut scratch, id);
    let want = &scratch[span.lo..span.hi];
    if bytes == want {
        return Check::Verified;
    }
    if let Some(found) = misplaced(bytes, span, header.as_ref().filter(|h| h.id != id)) {
        return Check::Bad(VerifyErrorKind::Misplaced { found });
    }
    let index = first_difference(bytes, want);
    Check::Bad(VerifyErrorKind::Corrupt { byte_offset: span.object_offset(index) })
}

/// If `header` (the covered header of a partial read) is ours and the
/// covered bytes equal the block it names, returns that block's id.
fn misplaced(bytes: &[u8], span: &Span, header: Option<&Header>) -> Option<BlockId> {
    let header = header.filter(|h| h.magic == BLOCK_MAGIC)?;
    let mut scratch = [0u8; BLOCK_BYTES];
    fill_block(&mut scratch, header.id);
    (bytes == &scratch[span.lo..span.hi]).then_some(header.id)
}

/// Index of the first byte where `got` differs from `want` (0 if none; only
/// called once they are known to differ).
fn first_difference(got: &[u8], want: &[u8]) -> usize {
    got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(0)
}

fn expected_id(expect: &Expect, block: u64, generation: u64) -> BlockId {
    BlockId { seed: expect.seed, object: expect.object, block, generation }
}

fn put_u64(dst: &mut [u8], at: usize, value: u64) {
    dst[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u64(src: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&src[at..at + 8]);
    u64::from_le_bytes(word)
}

fn assert_range_fits(offset: u64, len: usize) {
    assert!(offset.checked_add(len as u64).is_some(), "datagen range overflows u64: offset {offset} + length {len}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Write;
    use xxhash_rust::xxh3::{xxh3_64_with_secret, xxh3_128};

    const SEED: u64 = 0x5eed;

    #[test]
    fn block_ids_are_read_back_from_generated_blocks_only() {
        let id = BlockId { seed: SEED, object: object_key("a"), block: 9, generation: 4 };
        let mut block = [0u8; BLOCK_BYTES];
        fill_block(&mut block, id);
        assert_eq!(whole_block_id(&block), Some(id));
        assert_eq!(header_block_id(&block[..HEADER_BYTES]), Some(id));
        assert_eq!(header_block_id(&block[..HEADER_BYTES - 1]), None, "too short to hold a header");
        block[100] ^= 1;
        assert_eq!(whole_block_id(&block), None, "a damaged payload fails the checksum");
        assert_eq!(header_block_id(&block), Some(id), "the header alone still names the block");
        assert_eq!(whole_block_id(&[0u8; BLOCK_BYTES]), None);
        assert_eq!(header_block_id(&[7u8; 64]), None, "not our magic");
    }

    #[test]
    fn a_sealed_block_regenerates_the_same_bytes_without_hashing() {
        for (block, generation) in [(0u64, 1u64), (9, 4), (1 << 40, u64::MAX)] {
            let id = BlockId { seed: SEED, object: object_key("sealed"), block, generation };
            let mut hashed = [0u8; BLOCK_BYTES];
            let sealed = fill_block(&mut hashed, id);
            assert_eq!(whole_block_sealed(&hashed), Some(sealed), "the seal read back is the one made");
            let mut regenerated = [1u8; BLOCK_BYTES];
            fill_sealed(&mut regenerated, sealed);
            assert!(regenerated == hashed, "block {block} gen {generation}");
        }
        let mut damaged = [0u8; BLOCK_BYTES];
        fill_block(&mut damaged, BlockId { seed: SEED, object: 1, block: 2, generation: 3 });
        damaged[4000] ^= 0x10;
        assert_eq!(whole_block_sealed(&damaged), None, "a damaged block is not sealed");
    }

    const GEN: u64 = 7;
    const B: usize = BLOCK_BYTES;
    const B64: u64 = BLOCK_BYTES_U64;

    fn obj() -> u64 {
        object_key("train/file_0001.npz")
    }

    fn block(id: BlockId) -> [u8; B] {
        let mut out = [0u8; B];
        fill_block(&mut out, id);
        out
    }

    fn stream(object: u64, generation: u64, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        fill(&mut out, SEED, object, generation, offset);
        out
    }

    fn expect(generation: Option<u64>) -> Expect {
        Expect { seed: SEED, object: obj(), generation }
    }

    fn corrupt_at(outcome: &VerifyOutcome) -> u64 {
        match outcome.first_error.as_ref().map(|e| &e.kind) {
            Some(VerifyErrorKind::Corrupt { byte_offset }) => *byte_offset,
            other => panic!("expected Corrupt, got {other:?} in {outcome:?}"),
        }
    }

    fn misplaced_found(outcome: &VerifyOutcome) -> BlockId {
        match outcome.first_error.as_ref().map(|e| &e.kind) {
            Some(VerifyErrorKind::Misplaced { found }) => *found,
            other => panic!("expected Misplaced, got {other:?} in {outcome:?}"),
        }
    }

    #[test]
    fn object_key_is_xxh3_of_name() {
        // Reference value of XXH3_64bits("") from the xxHash specification.
        assert_eq!(object_key(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(object_key("a/b"), object_key("a/b"));
        assert_ne!(object_key("a/b"), object_key("a/c"));
    }

    #[test]
    fn format_is_stable() {
        // Data written by one build must verify under the next: pin the bytes.
        let id = BlockId { seed: 1, object: 2, block: 3, generation: 4 };
        let bytes = block(id);
        assert_eq!(xxh3_64(&bytes), 0x3a90_6911_891f_b8f8, "block format changed");
    }

    #[test]
    fn header_layout_matches_doc() {
        let id = BlockId { seed: 11, object: 22, block: 33, generation: 44 };
        let bytes = block(id);
        assert_eq!(&bytes[8..16], b"MLPDBLK\x02");
        assert_eq!(get_u64(&bytes, 16), 11);
        assert_eq!(get_u64(&bytes, 24), 22);
        assert_eq!(get_u64(&bytes, 32), 33);
        assert_eq!(get_u64(&bytes, 40), 44);
        // The library's keyed XXH3, recomputed here independently.
        assert_eq!(get_u64(&bytes, 0), xxh3_64_with_secret(&bytes[8..], &checksum::SECRET));
    }

    #[test]
    fn same_inputs_same_bytes_any_field_change_differs() {
        let id = BlockId { seed: SEED, object: obj(), block: 5, generation: GEN };
        let base = block(id);
        assert_eq!(base, block(id));
        let variants = [
            BlockId { seed: SEED + 1, ..id },
            BlockId { object: object_key("train/file_0002.npz"), ..id },
            BlockId { block: 6, ..id },
            BlockId { generation: GEN + 1, ..id },
        ];
        for other in variants {
            let bytes = block(other);
            // The payload must differ, not just the header.
            assert_ne!(&bytes[HEADER_BYTES..], &base[HEADER_BYTES..], "{other:?}");
            let same_words = bytes[HEADER_BYTES..]
                .chunks_exact(8)
                .zip(base[HEADER_BYTES..].chunks_exact(8))
                .filter(|(a, b)| a == b)
                .count();
            assert!(same_words <= 1, "{other:?}: {same_words} equal payload words");
        }
    }

    #[test]
    fn aligned_fill_is_concatenation_of_blocks() {
        let data = stream(obj(), GEN, 2 * B64, 3 * B);
        for (i, chunk) in data.chunks_exact(B).enumerate() {
            let id = BlockId { seed: SEED, object: obj(), block: 2 + i as u64, generation: GEN };
            assert_eq!(chunk, &block(id)[..], "block {i}");
        }
    }

    #[test]
    fn unaligned_fill_equals_slice_of_aligned_fill() {
        let whole = stream(obj(), GEN, 0, 6 * B);
        let cases = [
            (0, 1),
            (1, 10),
            (47, 2),
            (100, 5000),
            (B - 1, 2),
            (B, B),
            (B + 3, 3 * B),
            (5 * B + 17, B - 17),
            (123, 5 * B),
            (0, 6 * B),
            (3 * B, 0),
        ];
        for (offset, len) in cases {
            let part = stream(obj(), GEN, offset as u64, len);
            assert_eq!(part, &whole[offset..offset + len], "offset {offset} len {len}");
        }
    }

    #[test]
    fn verify_ok_on_full_partial_unaligned_and_short_reads() {
        let whole = stream(obj(), GEN, 0, 8 * B);
        for generation in [Some(GEN), None] {
            let exp = expect(generation);
            let full = verify(&whole, 0, &exp);
            assert!(full.is_ok(), "{full:?}");
            assert_eq!(full.verified_bytes, 8 * B64);
            assert_eq!(full.unverified_bytes, 0);

            // Aligned read of a middle range.
            let mid = verify(&whole[2 * B..5 * B], 2 * B64, &exp);
            assert!(mid.is_ok() && mid.verified_bytes == 3 * B64, "{mid:?}");

            // Short read: 2.5 blocks of a 3-block request; the tail covers the header.
            let short = verify(&whole[B..B + 2 * B + B / 2], B64, &exp);
            assert!(short.is_ok(), "{short:?}");
            assert_eq!(short.verified_bytes, 2 * B64 + B64 / 2);

            // Last block of an object whose size is not a multiple of 4 KiB.
            let tail = verify(&whole[7 * B..7 * B + 100], 7 * B64, &exp);
            assert!(tail.is_ok() && tail.verified_bytes == 100, "{tail:?}");

            let empty = verify(&[], 12345, &exp);
            assert!(empty.is_ok() && empty.verified_bytes == 0 && empty.unverified_bytes == 0);
        }

        // Unaligned ranges: fully verified only when the generation is known.
        let exp = expect(Some(GEN));
        for (offset, len) in [(1, 10), (100, 5000), (B - 1, 2), (B + 3, 3 * B), (123, 7 * B)] {
            let got = verify(&whole[offset..offset + len], offset as u64, &exp);
            assert!(got.is_ok(), "offset {offset} len {len}: {got:?}");
            assert_eq!(got.verified_bytes, len as u64);
        }
    }

    #[test]
    fn unknown_generation_partials_without_header_are_unverified() {
        let whole = stream(obj(), GEN, 0, 4 * B);
        let exp = expect(None);
        // [100, 3B+50): head of block 0 lacks its header, blocks 1-2 whole,
        // block 3 covered from its start (header included).
        let got = verify(&whole[100..3 * B + 50], 100, &exp);
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(got.unverified_bytes, B64 - 100);
        assert_eq!(got.verified_bytes, 2 * B64 + 50);
        // A start-of-block read shorter than the header cannot be checked either.
        let got = verify(&whole[B..B + 20], B64, &exp);
        assert_eq!((got.verified_bytes, got.unverified_bytes), (0, 20));
        assert!(got.is_ok());
    }

    #[test]
    fn any_flipped_byte_is_corrupt_at_its_exact_offset() {
        let whole = stream(obj(), GEN, 0, 4 * B);
        // Checksum, magic, each field, payload start, payload end.
        let in_block = [0, 7, 8, 15, 16, 24, 32, 47, 48, 1000, B - 1];
        for generation in [Some(GEN), None] {
            for &pos in &in_block {
                let at = 2 * B + pos;
                let mut data = whole.clone();
                data[at] ^= 0x40;
                let got = verify(&data, 0, &expect(generation));
                assert_eq!(got.bad_blocks, 1, "gen {generation:?} pos {pos}");
                assert_eq!(got.verified_bytes, 3 * B64);
                let err = got.first_error.clone().unwrap();
                assert_eq!((err.object, err.block), (obj(), 2));
                // With an unknown generation a damaged generation field can
                // only be seen as a bad checksum (documented on Corrupt).
                let want = if generation.is_none() && (40..48).contains(&pos) { 2 * B } else { at };
                assert_eq!(corrupt_at(&got), want as u64, "gen {generation:?} pos {pos}");

                // The same damage seen through an unaligned partial read.
                let got = verify(&data[at - 5..at + 9], (at - 5) as u64, &expect(Some(GEN)));
                assert_eq!(corrupt_at(&got), at as u64, "partial, pos {pos}");
            }
        }
        let mut data = whole.clone();
        data[B + 40] ^= 1;
        let got = verify(&data, 0, &expect(Some(GEN)));
        assert_eq!(corrupt_at(&got), B64 + 40);
    }

    #[test]
    fn zeroed_block_is_corrupt_at_its_start() {
        let mut data = stream(obj(), GEN, 0, 2 * B);
        data[B..].fill(0);
        for generation in [Some(GEN), None] {
            let got = verify(&data, 0, &expect(generation));
            assert_eq!(corrupt_at(&got), B64);
            assert_eq!(got.verified_bytes, B64);
        }
    }

    #[test]
    fn swapped_blocks_are_misplaced_naming_the_found_block() {
        let mut data = stream(obj(), GEN, 0, 4 * B);
        let (left, right) = data.split_at_mut(3 * B);
        left[B..2 * B].swap_with_slice(&mut right[..B]);
        for generation in [Some(GEN), None] {
            let got = verify(&data, 0, &expect(generation));
            assert_eq!(got.bad_blocks, 2);
            assert_eq!(got.verified_bytes, 2 * B64);
            let err = got.first_error.clone().unwrap();
            assert_eq!(err.block, 1);
            let found = misplaced_found(&got);
            assert_eq!(found, BlockId { seed: SEED, object: obj(), block: 3, generation: GEN });
        }
        // A partial read covering the moved block's header is also misplaced.
        let got = verify(&data[B..B + 300], B64, &expect(None));
        assert_eq!(misplaced_found(&got).block, 3);
        let got = verify(&data[B..B + 300], B64, &expect(Some(GEN)));
        assert_eq!(misplaced_found(&got).block, 3);
    }

    #[test]
    fn block_of_another_seed_object_or_generation_is_misplaced() {
        let other_object = object_key("train/file_0002.npz");
        let cases = [
            BlockId { seed: SEED + 1, object: obj(), block: 0, generation: GEN },
            BlockId { seed: SEED, object: other_object, block: 0, generation: GEN },
        ];
        for found in cases {
            let data = block(found);
            for generation in [Some(GEN), None] {
                let got = verify(&data, 0, &expect(generation));
                assert_eq!(misplaced_found(&got), found);
                let got = verify(&data[..1000], 0, &expect(generation));
                assert_eq!(misplaced_found(&got), found, "partial");
            }
        }
        // Stale data: an older generation is misplaced when the generation is
        // known, and fine when any generation is accepted.
        let stale = stream(obj(), GEN - 1, 0, 2 * B);
        let got = verify(&stale, 0, &expect(Some(GEN)));
        assert_eq!(misplaced_found(&got).generation, GEN - 1);
        assert_eq!(got.bad_blocks, 2);
        assert!(verify(&stale, 0, &expect(None)).is_ok());
        // Without the header in the range, foreign data is simply corrupt.
        let foreign = block(cases[1]);
        let got = verify(&foreign[100..200], 100, &expect(Some(GEN)));
        assert_eq!(corrupt_at(&got), 100);
    }

    #[test]
    fn outcomes_merge_and_errors_display() {
        let mut data = stream(obj(), GEN, 0, 3 * B);
        data[B + 5] ^= 1;
        data[2 * B + 9] ^= 1;
        let bad = verify(&data, 0, &expect(Some(GEN)));
        assert_eq!(bad.bad_blocks, 2);
        assert_eq!(corrupt_at(&bad), B64 + 5, "first error is kept");

        let mut total = verify(&data[..B], 0, &expect(Some(GEN)));
        total.merge(&bad);
        total.merge(&VerifyOutcome { unverified_bytes: 3, ..Default::default() });
        assert_eq!(total.verified_bytes, 2 * B64);
        assert_eq!(total.unverified_bytes, 3);
        assert_eq!(total.bad_blocks, 2);
        assert_eq!(total.first_error, bad.first_error);
        assert!(!total.is_ok());

        let text = bad.first_error.unwrap().to_string();
        let key = format!("{:#018x}", obj());
        assert!(text.contains(&key) && text.contains("block 1"), "{text}");
        assert!(text.contains("corrupt") && text.contains(&(B64 + 5).to_string()), "{text}");

        let misplaced = VerifyError {
            object: obj(),
            block: 4,
            kind: VerifyErrorKind::Misplaced { found: BlockId { seed: 1, object: 2, block: 3, generation: 9 } },
        };
        let text = misplaced.to_string();
        assert!(text.contains("misplaced") && text.contains("block 3 generation 9"), "{text}");
    }

    fn sampled(seed: u64) -> Verifier {
        Verifier::new(VerifyMode::Sampled, seed, 16)
    }

    #[test]
    fn sampled_mode_catches_a_bad_header_or_prefix_in_every_block() {
        const BLOCKS: usize = 64;
        let whole = stream(obj(), GEN, 0, BLOCKS * B);
        let policy = sampled(SEED);
        let clean = policy.verify(&whole, 0, &expect(Some(GEN)));
        assert!(clean.is_ok(), "{clean:?}");
        assert_eq!(clean.verified_bytes + clean.header_checked_bytes, (BLOCKS * B) as u64);
        assert!(clean.header_checked_bytes > 0 && clean.verified_bytes > 0, "{clean:?}");
        // Magic, seed, object, block index, generation, and the payload prefix.
        for pos in [8, 15, 16, 24, 32, 40, 47, 48, 100, PREFIX_BYTES - 1] {
            for b in 0..BLOCKS {
                let mut data = whole.clone();
                data[b * B + pos] ^= 0x10;
                for generation in [Some(GEN), None] {
                    let got = policy.verify(&data, 0, &expect(generation));
                    assert_eq!(got.bad_blocks, 1, "block {b} pos {pos} gen {generation:?}");
                    let err = got.first_error.clone().unwrap();
                    assert_eq!(err.block, b as u64);
                    // Classified as full mode classifies it.
                    assert_eq!(got.first_error, verify(&data, 0, &expect(generation)).first_error);
                }
            }
        }
        // A zeroed block and two swapped blocks, wherever they are.
        for b in 0..BLOCKS - 1 {
            let mut data = whole.clone();
            data[b * B..(b + 1) * B].fill(0);
            assert_eq!(corrupt_at(&policy.verify(&data, 0, &expect(None))), (b * B) as u64);
            let mut data = whole.clone();
            let (left, right) = data.split_at_mut((b + 1) * B);
            left[b * B..].swap_with_slice(&mut right[..B]);
            let got = policy.verify(&data, 0, &expect(Some(GEN)));
            assert_eq!(got.bad_blocks, 2, "swap {b}");
            assert_eq!(misplaced_found(&got).block, b as u64 + 1);
        }
        // Stale data (an older generation) is misplaced in every block.
        let stale = stream(obj(), GEN - 1, 0, BLOCKS * B);
        assert_eq!(policy.verify(&stale, 0, &expect(Some(GEN))).bad_blocks, BLOCKS as u64);
    }

    #[test]
    fn sampled_mode_checks_payload_only_in_sampled_blocks_with_exact_accounting() {
        const BLOCKS: u64 = 256;
        let whole = stream(obj(), GEN, 0, BLOCKS as usize * B);
        let policy = sampled(SEED);
        let chosen: Vec<u64> = (0..BLOCKS).filter(|&b| policy.samples(obj(), b)).collect();
        assert!(!chosen.is_empty() && chosen.len() < BLOCKS as usize / 4, "{chosen:?}");
        let n_sampled = chosen.len() as u64;
        for b in 0..BLOCKS {
            let mut data = whole.clone();
            let at = b as usize * B + 2000;
            data[at] ^= 1;
            let got = policy.verify(&data, 0, &expect(Some(GEN)));
            if chosen.contains(&b) {
                assert_eq!(got.bad_blocks, 1, "sampled block {b}");
                assert_eq!(corrupt_at(&got), at as u64);
                assert_eq!(got.verified_bytes, (n_sampled - 1) * B64);
                assert_eq!(got.header_checked_bytes, (BLOCKS - n_sampled) * B64);
            } else {
                // Not detected, and not claimed as verified either.
                assert!(got.is_ok(), "unsampled block {b}: {got:?}");
                assert_eq!(got.verified_bytes, n_sampled * B64, "block {b}");
                assert_eq!(got.header_checked_bytes, (BLOCKS - n_sampled) * B64, "block {b}");
            }
            assert_eq!(got.unverified_bytes, 0);
        }
        // Partial blocks (the ends of an unaligned read) are always checked in full.
        let mut data = whole.clone();
        let unsampled = (0..BLOCKS).find(|b| !chosen.contains(b)).unwrap() as usize;
        data[unsampled * B + 3000] ^= 1;
        let lo = unsampled * B + 100;
        let got = policy.verify(&data[lo..lo + B], lo as u64, &expect(Some(GEN)));
        assert_eq!(corrupt_at(&got), (unsampled * B + 3000) as u64);
        // Off checks nothing and says so.
        let got = Verifier::OFF.verify(&data, 0, &expect(Some(GEN)));
        assert!(got.is_ok());
        assert_eq!((got.verified_bytes, got.header_checked_bytes, got.unverified_bytes), (0, 0, BLOCKS * B64));
        // Full is plain `verify`.
        let got = Verifier::FULL.verify(&whole, 0, &expect(Some(GEN)));
        assert_eq!((got.verified_bytes, got.header_checked_bytes), (BLOCKS * B64, 0));
    }

    #[test]
    fn sample_subset_is_deterministic_per_seed_and_differs_across_seeds() {
        const BLOCKS: u64 = 1 << 14;
        let subset = |seed: u64, every: u64| -> Vec<u64> {
            let policy = Verifier::new(VerifyMode::Sampled, seed, every);
            (0..BLOCKS).filter(|&b| policy.samples(obj(), b)).collect()
        };
        let a = subset(SEED, 16);
        assert_eq!(a, subset(SEED, 16), "same seed, same blocks");
        let b = subset(SEED + 1, 16);
        assert_ne!(a, b, "another seed, other blocks");
        let common = a.iter().filter(|x| b.binary_search(x).is_ok()).count();
        // Independent subsets of rate 1/16 share about 1/16 of their blocks.
        assert!(common < a.len() / 8, "{common} of {} shared", a.len());
        for (every, got) in [(16, a.len()), (4, subset(SEED, 4).len()), (256, subset(SEED, 256).len())] {
            let want = BLOCKS / every;
            // Binomial: within 5 standard deviations of BLOCKS / every.
            let sd = ((want as f64) * (1.0 - 1.0 / every as f64)).sqrt();
            assert!((got as f64 - want as f64).abs() < 5.0 * sd, "1 in {every}: {got} of {BLOCKS}");
        }
        // Not a stride: consecutive gaps vary.
        let gaps: HashSet<u64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() > 10, "{gaps:?}");
        // Other objects get other blocks.
        let policy = sampled(SEED);
        let other = object_key("train/file_0002.npz");
        let c: Vec<u64> = (0..BLOCKS).filter(|&b| policy.samples(other, b)).collect();
        assert_ne!(a, c);
        assert!((0..BLOCKS).all(|b| Verifier::FULL.samples(obj(), b)));
        assert_eq!(Verifier::FULL.sample_every(), None);
        assert_eq!(policy.sample_every(), Some(16));
    }

    /// Payload statistics over 16 MiB (4096 blocks, 2,072,576 payload
    /// words). Bounds are about five standard deviations, so a correct
    /// generator fails with probability under 1e-5 per check, while a broken
    /// lane (stuck, repeating another, correlated with its neighbour)
    /// fails by a wide margin. The data is deterministic, so so is the test.
    #[test]
    fn payload_passes_statistical_sanity_checks() {
        const BYTES: usize = 16 << 20;
        let data = stream(obj(), GEN, 0, BYTES);
        let mut words = Vec::with_capacity(BYTES / 8);
        let mut histogram = [0u64; 256];
        // Ones per bit position of each word, and of each word XOR the word
        // of the next lane in the same row (rows of eight words).
        let mut ones = [0u64; 64];
        let mut ones_xor_next_lane = [0u64; 64];
        let mut pairs = 0u64;
        for block in data.chunks_exact(B) {
            for (index, chunk) in block.chunks_exact(8).enumerate() {
                if index < HEADER_BYTES / 8 {
                    continue;
                }
                let word = u64::from_le_bytes(chunk.try_into().unwrap());
                words.push(word);
                for byte in word.to_le_bytes() {
                    histogram[byte as usize] += 1;
                }
                for (bit, count) in ones.iter_mut().enumerate() {
                    *count += (word >> bit) & 1;
                }
                if index % 8 != 7 {
                    let next = get_u64(block, 8 * (index + 1));
                    pairs += 1;
                    for (bit, count) in ones_xor_next_lane.iter_mut().enumerate() {
                        *count += ((word ^ next) >> bit) & 1;
                    }
                }
            }
        }
        let n_words = words.len() as f64;
        assert_eq!(words.len(), (BYTES / B) * (B - HEADER_BYTES) / 8);

        // Byte histogram: chi-square with 255 degrees of freedom has mean 255
        // and standard deviation sqrt(510) ~ 22.6.
        let expected = 8.0 * n_words / 256.0;
        let chi_square: f64 = histogram.iter().map(|&count| (count as f64 - expected).powi(2) / expected).sum();
        assert!((142.0..368.0).contains(&chi_square), "byte chi-square {chi_square:.1}");

        // Every bit position is a fair coin: |ones - n/2| within 5 sigma.
        let balanced = |count: u64, n: f64| (count as f64 - n / 2.0).abs() < 5.0 * n.sqrt() / 2.0;
        for (bit, &count) in ones.iter().enumerate() {
            assert!(balanced(count, n_words), "bit {bit}: {count} ones of {n_words}");
        }
        for (bit, &count) in ones_xor_next_lane.iter().enumerate() {
            assert!(
                balanced(count, pairs as f64),
                "adjacent lanes agree too often/rarely at bit {bit}: {count} of {pairs}"
            );
        }

        // No payload word repeats anywhere (2^21 random 64-bit words repeat
        // with probability ~2^-23): so no lane repeats another lane's stream,
        // in this block or any other, even shifted.
        words.sort_unstable();
        let repeats = words.windows(2).filter(|pair| pair[0] == pair[1]).count();
        assert_eq!(repeats, 0, "repeated payload words");
    }

    /// Counts bytes written through it (the zstd output sink).
    struct CountingSink(u64);

    impl Write for CountingSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn data_is_unique_and_incompressible() {
        const OBJECTS: u64 = 4;
        const OBJECT_BYTES: u64 = 64 << 20;
        const CHUNK_BYTES: usize = 1 << 20;
        let mut seen = HashSet::with_capacity((OBJECTS * OBJECT_BYTES / B64) as usize);
        let mut encoder = zstd::stream::write::Encoder::new(CountingSink(0), 3).unwrap();
        let mut chunk = vec![0u8; CHUNK_BYTES];
        for n in 0..OBJECTS {
            let object = object_key(&format!("train/file_{n:04}.npz"));
            for offset in (0..OBJECT_BYTES).step_by(CHUNK_BYTES) {
                fill(&mut chunk, SEED, object, GEN, offset);
                for b in chunk.chunks_exact(B) {
                    assert!(seen.insert(xxh3_128(b)), "duplicate block in object {n}");
                }
                encoder.write_all(&chunk).unwrap();
            }
        }
        let original = OBJECTS * OBJECT_BYTES;
        assert_eq!(seen.len() as u64, original / B64);
        let compressed = encoder.finish().unwrap().0;
        assert!(compressed as f64 >= original as f64 / 1.01, "compressed {compressed} of {original} bytes");
    }
}
