//! What an emulated object holds.
//!
//! - `store=mem` ([`ObjectData::Mem`]): the bytes, in pooled chunks
//!   ([`super::chunks`]).
//! - `store=none` ([`ObjectData::Ids`]): no bytes. mlpdrive's data is a pure
//!   function of a block's identity (seed, object key, block index,
//!   generation; see `datagen`), and every 4 KiB block carries that identity
//!   in its header. So the store keeps, per 4 KiB block of the object, only
//!   the 32-byte identity of the block written there and its 8-byte checksum
//!   (checked when the block was written), and a read regenerates the bytes
//!   from them (without hashing them again). Verification therefore still sees exactly what was
//!   written, including misplaced blocks (a valid block written to another
//!   place is kept and returned as is).
//!
//! `store=none` memory: 40 bytes per 4 KiB block up to the object's highest
//! written block (a `Vec` of sealed identities, 1 % of the data size: 1 TiB
//! of written data costs 10 GiB, 256 MiB costs 2.5 MiB), plus a small map entry
//! for each block that is only partly valid (a write that ended inside it, or
//! a truncation inside it): their bytes beyond that point read as zeros.
//!
//! What `store=none` cannot hold, it refuses with an error on that write
//! (never silently): bytes that are not mlpdrive blocks, and a write that
//! would leave one 4 KiB block holding parts of two different blocks (a
//! partial write of a new block over an old one, as 512-byte random writes
//! would). Those need `store=mem`.

use std::collections::BTreeMap;

use std::sync::Arc;

use super::chunks::{ChunkPool, ChunkedBytes};
use super::span::spans;
use crate::datagen::{self, BLOCK_BYTES, BlockId, SealedBlock};

/// Which store an `emu://` target keeps its objects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// Bytes in memory.
    #[default]
    Mem,
    /// Only block identities; reads regenerate the data.
    None,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Mem => "mem",
            StoreKind::None => "none",
        }
    }
}

/// One object's content.
pub(super) enum ObjectData {
    Mem(ChunkedBytes),
    Ids(IdStore),
}

impl ObjectData {
    /// An empty object; `store=mem` objects draw their chunks from `pool`.
    pub(super) fn new(kind: StoreKind, pool: &Arc<ChunkPool>) -> ObjectData {
        match kind {
            StoreKind::Mem => ObjectData::Mem(ChunkedBytes::new(pool.clone())),
            StoreKind::None => ObjectData::Ids(IdStore::default()),
        }
    }

    /// Logical size in bytes.
    pub(super) fn len(&self) -> u64 {
        match self {
            ObjectData::Mem(c) => c.len(),
            ObjectData::Ids(s) => s.len,
        }
    }

    /// Stores `bytes` at `offset`, growing the object (with zeros up to
    /// `offset`). `Err` explains why `store=none` cannot keep these bytes;
    /// nothing is changed then.
    pub(super) fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        match self {
            ObjectData::Mem(c) => {
                c.write(offset, bytes);
                Ok(())
            }
            ObjectData::Ids(s) => s.write(offset, bytes),
        }
    }

    /// Reads from `offset` into `out`; returns the bytes available (short at
    /// the end of the object).
    pub(super) fn read(&self, offset: u64, out: &mut [u8]) -> usize {
        match self {
            ObjectData::Mem(c) => c.read(offset, out),
            ObjectData::Ids(s) => s.read(offset, out),
        }
    }

    /// Sets the logical size: cuts the object or extends it with zeros.
    pub(super) fn set_len(&mut self, size: u64) {
        match self {
            ObjectData::Mem(c) => c.set_len(size),
            ObjectData::Ids(s) => s.set_len(size),
        }
    }
}

const BLOCK: u64 = BLOCK_BYTES as u64;
/// Valid bytes of a fully valid block (fits the `u16` of the short map).
const WHOLE: u16 = BLOCK_BYTES as u16;
/// Marks a block never written (reads as zeros). mlpdrive never generates
/// block index `u64::MAX` (it would be byte offset 2^76), and a write that
/// claims it is refused.
const UNWRITTEN: BlockId = BlockId { seed: 0, object: 0, block: u64::MAX, generation: 0 };
/// The slot of a block never written.
const HOLE: SealedBlock = SealedBlock { id: UNWRITTEN, checksum: 0 };

/// `store=none`: the identity of each 4 KiB block, nothing else.
#[derive(Default)]
pub(super) struct IdStore {
    /// Logical size, bytes.
    len: u64,
    /// Identity and checksum of the block written at each block index
    /// ([`HOLE`] for holes).
    blocks: Vec<SealedBlock>,
    /// Blocks valid only up to a byte within the block (zeros after it).
    /// Blocks not listed are valid throughout.
    short: BTreeMap<u64, u16>,
}

fn not_mlpdrive_data(at: u64) -> String {
    format!(
        "emu:// store=none keeps only the identity of each 4 KiB block and regenerates reads from it, so it needs \
         mlpdrive's generated data; the bytes written at object offset {at} are not an mlpdrive data block (use \
         store=mem to keep arbitrary bytes)"
    )
}

fn mixed_block(at: u64) -> String {
    format!(
        "emu:// store=none keeps one block identity per 4 KiB block; this write would leave the 4 KiB block at \
         object offset {at} holding parts of two different blocks (write whole 4 KiB blocks, or use store=mem)"
    )
}

impl IdStore {
    /// The identity written at `block` and how many of its bytes are valid
    /// (`None`, 0 for a hole).
    fn state(&self, block: u64) -> (Option<SealedBlock>, u16) {
        match self.blocks.get(block as usize).copied().filter(|b| b.id != UNWRITTEN) {
            Some(b) => (Some(b), self.short.get(&block).copied().unwrap_or(WHOLE)),
            None => (None, 0),
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        // Check every block first, then apply: a refused write changes nothing.
        let mut plan = Vec::new();
        let mut scratch = [0u8; BLOCK_BYTES];
        for (pos, span) in spans(offset, bytes.len(), BLOCK_BYTES) {
            let chunk = &bytes[pos..pos + (span.hi - span.lo)];
            let at = span.unit * BLOCK;
            let (current, valid) = self.state(span.unit);
            let current = current.map(|c| c.id);
            let hi = span.hi as u16;
            // The block `id` regenerated, sealed, if the written bytes are
            // its bytes at this place.
            let matching = |id: BlockId, scratch: &mut [u8; BLOCK_BYTES]| {
                let sealed = datagen::fill_block(scratch, id);
                (scratch[span.lo..span.hi] == *chunk).then_some(sealed)
            };
            let (sealed, new_valid) = if let Ok(whole) = <&[u8; BLOCK_BYTES]>::try_from(chunk) {
                (datagen::whole_block_sealed(whole).ok_or_else(|| not_mlpdrive_data(at))?, WHOLE)
            } else if span.lo == 0 {
                // A block's start: its header names it, unless the write is
                // too short to hold one and continues the block already there.
                let id = match datagen::header_block_id(chunk) {
                    Some(id) => id,
                    None => {
                        current.filter(|c| matching(*c, &mut scratch).is_some()).ok_or_else(|| not_mlpdrive_data(at))?
                    }
                };
                let Some(sealed) = matching(id, &mut scratch) else {
                    return Err(not_mlpdrive_data(at));
                };
                match current {
                    Some(c) if c == id => (sealed, valid.max(hi)),
                    Some(_) if hi < valid => return Err(mixed_block(at)),
                    _ => (sealed, hi),
                }
            } else {
                // Inside a block: it must continue the block already there,
                // with no hole before it.
                let Some(c) = current.filter(|_| span.lo as u16 <= valid) else {
                    return Err(mixed_block(at));
                };
                let Some(sealed) = matching(c, &mut scratch) else {
                    return Err(if datagen::header_block_id(&scratch).is_some() {
                        mixed_block(at)
                    } else {
                        not_mlpdrive_data(at)
                    });
                };
                (sealed, valid.max(hi))
            };
            if sealed.id == UNWRITTEN {
                return Err(not_mlpdrive_data(at));
            }
            plan.push((span.unit, sealed, new_valid));
        }
        for (block, sealed, valid) in plan {
            let i = block as usize;
            if self.blocks.len() <= i {
                self.blocks.resize(i + 1, HOLE);
            }
            self.blocks[i] = sealed;
            if valid == WHOLE {
                self.short.remove(&block);
            } else {
                self.short.insert(block, valid);
            }
        }
        self.len = self.len.max(offset + bytes.len() as u64);
        Ok(())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = out.len().min((self.len - offset) as usize);
        let mut scratch = [0u8; BLOCK_BYTES];
        for (pos, span) in spans(offset, n, BLOCK_BYTES) {
            let dst = &mut out[pos..pos + (span.hi - span.lo)];
            let (sealed, valid) = self.state(span.unit);
            let Some(sealed) = sealed else {
                dst.fill(0);
                continue;
            };
            match <&mut [u8; BLOCK_BYTES]>::try_from(&mut *dst) {
                Ok(whole) if valid == WHOLE => datagen::fill_sealed(whole, sealed),
                _ => {
                    datagen::fill_sealed(&mut scratch, sealed);
                    let end = span.hi.min(usize::from(valid)).max(span.lo);
                    dst[..end - span.lo].copy_from_slice(&scratch[span.lo..end]);
                    dst[end - span.lo..].fill(0);
                }
            }
        }
        n
    }

    fn set_len(&mut self, size: u64) {
        if size < self.len {
            let keep = size.div_ceil(BLOCK);
            self.blocks.truncate(keep as usize);
            self.short.split_off(&keep);
            let cut = (size % BLOCK) as u16;
            let last = size / BLOCK;
            if let (Some(_), valid) = self.state(last)
                && cut != 0
            {
                self.short.insert(last, valid.min(cut));
            }
        }
        // Growing needs nothing: bytes past the old size are holes or lie
        // beyond a short block's valid part, and both read as zeros.
        self.len = size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 11;

    fn gen_bytes(object: u64, generation: u64, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        datagen::fill(&mut v, SEED, object, generation, offset);
        v
    }

    /// Applies the same ops to a byte store and an identity store and checks
    /// that they read back the same.
    struct Pair {
        mem: ObjectData,
        ids: ObjectData,
    }

    impl Pair {
        fn new() -> Pair {
            let pool = Arc::default();
            Pair { mem: ObjectData::new(StoreKind::Mem, &pool), ids: ObjectData::new(StoreKind::None, &pool) }
        }

        fn write(&mut self, offset: u64, bytes: &[u8]) {
            self.ids.write(offset, bytes).expect("store=none accepts mlpdrive data");
            self.mem.write(offset, bytes).unwrap();
        }

        fn set_len(&mut self, size: u64) {
            self.mem.set_len(size);
            self.ids.set_len(size);
        }

        fn assert_same(&self) {
            assert_eq!(self.mem.len(), self.ids.len());
            let len = self.mem.len() as usize;
            let (mut a, mut b) = (vec![1u8; len + 100], vec![2u8; len + 100]);
            assert_eq!(self.mem.read(0, &mut a), len);
            assert_eq!(self.ids.read(0, &mut b), len);
            assert!(a[..len] == b[..len], "whole object differs");
            // Unaligned windows too.
            for (off, l) in [(1u64, 10usize), (4000, 200), (4096, 4096), (5000, 9000), (len as u64 / 2, 77)] {
                let (mut a, mut b) = (vec![1u8; l], vec![2u8; l]);
                let (na, nb) = (self.mem.read(off, &mut a), self.ids.read(off, &mut b));
                assert_eq!(na, nb, "length at {off}");
                assert_eq!(a[..na], b[..nb], "bytes at {off}+{l}");
            }
        }
    }

    #[test]
    fn identities_are_40_bytes_per_block() {
        assert_eq!(std::mem::size_of::<SealedBlock>(), 40);
    }

    #[test]
    fn store_none_reads_back_exactly_what_store_mem_would() {
        let mut p = Pair::new();
        let obj = datagen::object_key("o");
        p.write(0, &gen_bytes(obj, 1, 0, 64 << 10));
        p.assert_same();
        // Overwrite some blocks with a new generation, leave a hole, extend.
        p.write(8192, &gen_bytes(obj, 2, 8192, 3 * 4096));
        p.write(100 << 10, &gen_bytes(obj, 3, 100 << 10, 4096));
        p.assert_same();
        // A short final chunk, then continued by a write of the same block.
        p.write(200 << 10, &gen_bytes(obj, 4, 200 << 10, 1000));
        p.assert_same();
        p.write((200 << 10) + 1000, &gen_bytes(obj, 4, (200 << 10) + 1000, 500));
        p.assert_same();
        // Truncate inside a block, then grow past it: the cut tail is zeros.
        p.set_len((8192 + 100) as u64);
        p.assert_same();
        p.write(300 << 10, &gen_bytes(obj, 5, 300 << 10, 4096));
        p.assert_same();
        p.set_len(400 << 10);
        p.assert_same();
        p.set_len(0);
        p.assert_same();
    }

    #[test]
    fn a_misplaced_block_is_kept_as_written() {
        let mut s = ObjectData::new(StoreKind::None, &Arc::default());
        let obj = datagen::object_key("o");
        // Block 3's data written at block 0.
        let b3 = gen_bytes(obj, 1, 3 * 4096, 4096);
        s.write(0, &b3).unwrap();
        let mut back = vec![0u8; 4096];
        assert_eq!(s.read(0, &mut back), 4096);
        assert_eq!(back, b3);
        let v = datagen::verify(&back, 0, &datagen::Expect { seed: SEED, object: obj, generation: None });
        assert!(matches!(v.first_error.unwrap().kind, datagen::VerifyErrorKind::Misplaced { .. }));
    }

    #[test]
    fn foreign_bytes_are_refused_and_change_nothing() {
        let mut s = ObjectData::new(StoreKind::None, &Arc::default());
        let obj = datagen::object_key("o");
        let good = gen_bytes(obj, 1, 0, 8192);
        s.write(0, &good).unwrap();
        let mut bad = gen_bytes(obj, 2, 0, 8192);
        bad[5000] ^= 0xff; // the second block is damaged
        let e = s.write(0, &bad).unwrap_err();
        assert!(e.contains("store=none") && e.contains("offset 4096") && e.contains("store=mem"), "{e}");
        let mut back = vec![0u8; 8192];
        s.read(0, &mut back);
        assert_eq!(back, good, "the refused write left the first block alone too");
        for (off, bytes) in [(0u64, vec![0u8; 4096]), (0, vec![0xabu8; 100]), (4096 * 5, vec![9u8; 10])] {
            let e = s.write(off, &bytes).unwrap_err();
            assert!(e.contains("not an mlpdrive data block"), "{e}");
        }
    }

    #[test]
    fn a_block_holding_two_blocks_is_refused() {
        let mut s = ObjectData::new(StoreKind::None, &Arc::default());
        let obj = datagen::object_key("o");
        s.write(0, &gen_bytes(obj, 1, 0, 4096)).unwrap();
        // First 512 bytes of generation 2 over generation 1: the rest of the
        // block would still be generation 1.
        let e = s.write(0, &gen_bytes(obj, 2, 0, 512)).unwrap_err();
        assert!(e.contains("two different blocks"), "{e}");
        // 512 bytes in the middle of a block from another generation.
        let e = s.write(1024, &gen_bytes(obj, 2, 1024, 512)).unwrap_err();
        assert!(e.contains("two different blocks"), "{e}");
        // Inside a block never written.
        let e = s.write(8192 + 512, &gen_bytes(obj, 2, 8192 + 512, 512)).unwrap_err();
        assert!(e.contains("two different blocks"), "{e}");
        // The same generation's bytes continue the block fine.
        s.write(1024, &gen_bytes(obj, 1, 1024, 512)).unwrap();
    }

    #[test]
    fn tiny_writes_continue_a_block_or_are_refused() {
        let mut s = ObjectData::new(StoreKind::None, &Arc::default());
        let obj = datagen::object_key("o");
        let e = s.write(0, &gen_bytes(obj, 1, 0, 20)).unwrap_err();
        assert!(e.contains("not an mlpdrive data block"), "{e}");
        s.write(0, &gen_bytes(obj, 1, 0, 100)).unwrap();
        s.write(0, &gen_bytes(obj, 1, 0, 20)).unwrap();
        assert_eq!(s.len(), 100);
    }
}
