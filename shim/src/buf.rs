//! Page-aligned byte buffers for reads and direct writes, recycled through a
//! small pool so 1 MiB requests do not map and fault in fresh memory each
//! time.

use std::sync::Mutex;

/// Alignment of every buffer: enough for O_DIRECT on any device.
pub(crate) const ALIGN: usize = 4096;
/// Buffers kept for reuse at most (the rest are freed).
const POOL_MAX: usize = 64;

/// A buffer whose usable part starts at a 4096-byte boundary.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn with_capacity(cap: usize) -> AlignedBuf {
        let raw = vec![0u8; cap + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start, len: 0 }
    }

    fn capacity(&self) -> usize {
        self.raw.len() - ALIGN
    }

    /// The first `len` bytes (len as set by [`AlignedBuf::set_len`]).
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity());
        self.len = len;
    }
}

/// A pool of buffers shared by all FUSE threads.
#[derive(Default)]
pub(crate) struct BufPool {
    free: Mutex<Vec<AlignedBuf>>,
}

impl BufPool {
    /// A buffer of exactly `len` usable bytes (contents unspecified).
    pub(crate) fn get(&self, len: usize) -> AlignedBuf {
        let reused = {
            let mut free = self.free.lock().expect("buffer pool poisoned");
            free.iter().position(|b| b.capacity() >= len).map(|i| free.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_else(|| AlignedBuf::with_capacity(len.next_multiple_of(ALIGN).max(ALIGN)));
        buf.set_len(len);
        buf
    }

    /// Returns a buffer for reuse.
    pub(crate) fn put(&self, buf: AlignedBuf) {
        let mut free = self.free.lock().expect("buffer pool poisoned");
        if free.len() < POOL_MAX {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_reused() {
        let pool = BufPool::default();
        let b = pool.get(10_000);
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.as_slice().len(), 10_000);
        pool.put(b);
        let c = pool.get(4096);
        assert_eq!(c.as_slice().len(), 4096);
        assert!(c.capacity() >= 10_000, "reused the larger buffer");
    }
}
