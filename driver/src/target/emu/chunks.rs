//! `store=mem` bytes: an object's content in chunks of up to 1 MiB, full
//! chunks drawn from and returned to a pool the whole target shares.
//!
//! Why: a simulated KV cache run writes, reads and deletes hundreds of GiB
//! of objects on the virtual clock, where nothing waits and the run's wall
//! time is its CPU time. With one growing `Vec` per object every stored byte
//! was zeroed by `resize` before it was copied, the kernel faulted in and
//! cleared each fresh page, the `Vec`'s doubling moved the bytes again, and
//! a deleted object's memory went back to the kernel only to be faulted in
//! again for the next object (about half of a profiled run). Now a byte is
//! copied once, and a deleted object's chunks serve the next one.
//!
//! Layout: chunk `i` holds object bytes `[i MiB, (i + 1) MiB)`; its `Vec`'s
//! length is how far into the chunk bytes have been stored. Everything the
//! object's logical size covers beyond that (holes, a size extended by a
//! commit) reads as zeros, and a chunk never written holds no memory. So a
//! chunk taken from the pool is an empty `Vec` with 1 MiB of capacity: its
//! old bytes are out of reach, no zeroing needed.
//!
//! Memory: an object's first chunk grows to the size it needs (as a `Vec`
//! would), so small objects stay small; every later chunk is a full one, so
//! an object above 1 MiB wastes at most half; only full-capacity chunks are
//! pooled. The pool holds only
//! chunks of deleted or cut objects, so the target's chunk memory never
//! exceeds its high-water mark of stored bytes (rounded up to whole chunks).

use std::sync::{Arc, Mutex};

use super::span::spans;

/// Bytes per chunk.
pub(super) const CHUNK_BYTES: usize = 1 << 20;

/// Full-size chunks no object uses, for the next one to take.
#[derive(Default)]
pub(super) struct ChunkPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    /// An empty chunk with [`CHUNK_BYTES`] of capacity.
    fn take(&self) -> Vec<u8> {
        self.free.lock().expect("chunk pool poisoned").pop().unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES))
    }

    /// Keeps the full-size chunks among `chunks`; frees the others.
    fn give(&self, chunks: impl Iterator<Item = Vec<u8>>) {
        let mut free = self.free.lock().expect("chunk pool poisoned");
        for mut c in chunks.filter(|c| c.capacity() == CHUNK_BYTES) {
            c.clear();
            free.push(c);
        }
    }

    /// Chunks waiting in the pool (for tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.free.lock().unwrap().len()
    }
}

/// One object's bytes.
pub(super) struct ChunkedBytes {
    /// Logical size, bytes.
    len: u64,
    chunks: Vec<Vec<u8>>,
    pool: Arc<ChunkPool>,
}

impl ChunkedBytes {
    pub(super) fn new(pool: Arc<ChunkPool>) -> ChunkedBytes {
        ChunkedBytes { len: 0, chunks: Vec::new(), pool }
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Stores `bytes` at `offset`, growing the object (zeros up to `offset`).
    pub(super) fn write(&mut self, offset: u64, bytes: &[u8]) {
        for (pos, span) in spans(offset, bytes.len(), CHUNK_BYTES) {
            let src = &bytes[pos..pos + (span.hi - span.lo)];
            let unit = span.unit as usize;
            if self.chunks.len() <= unit {
                self.chunks.resize_with(unit + 1, Vec::new);
            }
            let chunk = &mut self.chunks[unit];
            if chunk.capacity() < span.hi {
                let want = span.hi.max(2 * chunk.capacity()).min(CHUNK_BYTES);
                // Past the first chunk the object is big already: a whole
                // chunk wastes at most half, and comes from the pool.
                if want == CHUNK_BYTES || unit > 0 {
                    let mut full = self.pool.take();
                    full.extend_from_slice(chunk);
                    let old = std::mem::replace(chunk, full);
                    self.pool.give(std::iter::once(old));
                } else {
                    chunk.reserve_exact(want - chunk.len());
                }
            }
            if chunk.len() < span.lo {
                chunk.resize(span.lo, 0);
            }
            let overlap = chunk.len().min(span.hi) - span.lo;
            chunk[span.lo..span.lo + overlap].copy_from_slice(&src[..overlap]);
            chunk.extend_from_slice(&src[overlap..]);
        }
        self.len = self.len.max(offset + bytes.len() as u64);
    }

    /// Reads from `offset` into `out`; returns the bytes available (short at
    /// the end of the object).
    pub(super) fn read(&self, offset: u64, out: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = out.len().min((self.len - offset) as usize);
        for (pos, span) in spans(offset, n, CHUNK_BYTES) {
            let dst = &mut out[pos..pos + (span.hi - span.lo)];
            let stored = self.chunks.get(span.unit as usize).map_or(&[][..], Vec::as_slice);
            let have = stored.len().clamp(span.lo, span.hi) - span.lo;
            if have > 0 {
                dst[..have].copy_from_slice(&stored[span.lo..span.lo + have]);
            }
            dst[have..].fill(0);
        }
        n
    }

    /// Sets the logical size: cuts the object or extends it with zeros.
    pub(super) fn set_len(&mut self, size: u64) {
        if size < self.len {
            let keep = size.div_ceil(CHUNK_BYTES as u64) as usize;
            if self.chunks.len() > keep {
                self.pool.give(self.chunks.drain(keep..));
            }
            let cut = (size % CHUNK_BYTES as u64) as usize;
            if cut != 0
                && let Some(last) = self.chunks.get_mut(keep - 1)
            {
                last.truncate(cut);
            }
        }
        // Growing needs nothing: bytes past a chunk's stored length read as zeros.
        self.len = size;
    }
}

impl Drop for ChunkedBytes {
    fn drop(&mut self) {
        self.pool.give(self.chunks.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlpdrive_emu::Prng;

    /// The plain model: one `Vec`, zero-extended.
    #[derive(Default)]
    struct Plain(Vec<u8>);

    impl Plain {
        fn write(&mut self, offset: u64, bytes: &[u8]) {
            let (o, l) = (offset as usize, bytes.len());
            if self.0.len() < o + l {
                self.0.resize(o + l, 0);
            }
            self.0[o..o + l].copy_from_slice(bytes);
        }
    }

    fn assert_same(c: &ChunkedBytes, p: &Plain, what: &str) {
        assert_eq!(c.len(), p.0.len() as u64, "{what}: length");
        let mut all = vec![0xeeu8; p.0.len() + 10];
        assert_eq!(c.read(0, &mut all), p.0.len(), "{what}: whole read length");
        assert!(all[..p.0.len()] == p.0[..], "{what}: whole object differs");
        for off in [0u64, 1, 4095, CHUNK_BYTES as u64 - 3, CHUNK_BYTES as u64 + 7, p.0.len() as u64 / 2] {
            let mut w = vec![0xddu8; 3 * CHUNK_BYTES / 2];
            let n = c.read(off, &mut w);
            let want = p.0.get(off as usize..).unwrap_or(&[]);
            let want = &want[..want.len().min(w.len())];
            assert_eq!(n, want.len(), "{what}: length at {off}");
            assert!(w[..n] == *want, "{what}: bytes at {off}");
        }
    }

    /// Random writes (appends, overwrites, holes, chunk-crossing), cuts and
    /// extensions, and objects dropped and re-created from the pool's
    /// recycled chunks, all read back exactly as one zero-extended `Vec`.
    #[test]
    fn chunked_bytes_read_back_exactly_what_a_plain_vec_would() {
        let pool = Arc::new(ChunkPool::default());
        let mut rng = Prng::new(7);
        for round in 0..6 {
            let mut c = ChunkedBytes::new(pool.clone());
            let mut p = Plain::default();
            for step in 0..60 {
                let what = format!("round {round} step {step}");
                let max = 5 * CHUNK_BYTES as u64;
                match rng.below(10) {
                    0 => {
                        let size = rng.below(max);
                        c.set_len(size);
                        p.0.resize(size as usize, 0);
                    }
                    k => {
                        let offset = if k < 5 { p.0.len() as u64 } else { rng.below(max) };
                        let len = match rng.below(3) {
                            0 => rng.below(5000) as usize + 1,
                            1 => CHUNK_BYTES,
                            _ => rng.below(3 * CHUNK_BYTES as u64) as usize + 1,
                        };
                        let bytes: Vec<u8> = (0..len).map(|i| (i as u64 ^ rng.next_u64()) as u8 | 1).collect();
                        c.write(offset, &bytes);
                        p.write(offset, &bytes);
                    }
                }
                assert_same(&c, &p, &what);
            }
        }
        assert!(pool.idle() > 0, "dropped objects returned their chunks");
    }

    #[test]
    fn deleted_objects_chunks_are_reused_and_small_objects_stay_small() {
        let pool = Arc::new(ChunkPool::default());
        let mut a = ChunkedBytes::new(pool.clone());
        a.write(0, &vec![9u8; 3 * CHUNK_BYTES]);
        drop(a);
        assert_eq!(pool.idle(), 3);
        let mut b = ChunkedBytes::new(pool.clone());
        b.write(0, &vec![1u8; 2 * CHUNK_BYTES + 10]);
        assert_eq!(pool.idle(), 0, "all three chunks taken again, none allocated");
        let mut small = ChunkedBytes::new(pool.clone());
        small.write(0, &[5u8; 4096]);
        assert!(small.chunks[0].capacity() < CHUNK_BYTES);
        // A recycled chunk's old bytes never show: a hole after them reads as zeros.
        let mut back = vec![7u8; 20];
        b.set_len(2 * CHUNK_BYTES as u64 + 20);
        assert_eq!(b.read(2 * CHUNK_BYTES as u64, &mut back), 20);
        assert_eq!(&back[..10], &[1u8; 10]);
        assert_eq!(&back[10..], &[0u8; 10]);
    }
}
