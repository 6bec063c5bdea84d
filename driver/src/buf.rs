//! Owned, aligned I/O buffers and a per-worker pool.
//!
//! O_DIRECT needs the buffer address, the file offset and the length to be
//! multiples of the device's DIO alignment. Buffers are allocated once, up
//! front, per worker (never on the I/O path) and handed to the target by
//! value; the target hands them back in the completion, success or not (the
//! tokio-uring `BufResult` idea), so ownership always says who may touch the
//! bytes.
//!
//! Buffers of [`MAP_MIN_BYTES`] or more are anonymous mappings of their own:
//! the kernel hands them out zeroed (no memset at allocation) and faults
//! all their pages in with one `MADV_POPULATE_WRITE` instead of one trap
//! per 4 KiB page on first use. (Transparent huge pages were measured too
//! and are not asked for: on a VM whose balloon takes free memory back,
//! zeroing each fresh 2 MiB page made a 64 MiB S3 PUT run 3× as costly.)

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

/// Buffers at least this large are mapped on their own (see the module doc).
pub const MAP_MIN_BYTES: usize = 2 << 20;
/// Page size the mapped buffers are aligned to (mmap's guarantee).
const PAGE_BYTES: usize = 4096;

/// A heap buffer whose address and capacity are multiples of `align`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Length of the buffer's own mapping, or 0 if it is on the heap.
    mapped_bytes: usize,
    /// Index of the pool slot this buffer came from (for registered buffers).
    slot: u32,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like a Box<[u8]>); moving
// it to another thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of the owned bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `capacity` zeroed bytes aligned to `align` (a power of two).
    /// `capacity` is rounded up to a multiple of `align`.
    pub fn new(capacity: usize, align: usize) -> AlignedBuf {
        let align = align.max(64).next_power_of_two();
        let capacity = capacity.max(1).div_ceil(align) * align;
        let layout = Layout::from_size_align(capacity, align).expect("buffer layout");
        if capacity >= MAP_MIN_BYTES
            && align <= PAGE_BYTES
            && let Some(ptr) = map_zeroed(capacity)
        {
            return AlignedBuf { ptr, layout, mapped_bytes: capacity, slot: u32::MAX };
        }
        // SAFETY: layout has a non-zero size (capacity >= align >= 64).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout, mapped_bytes: 0, slot: u32::MAX }
    }

    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    pub fn align(&self) -> usize {
        self.layout.align()
    }

    /// The pool slot this buffer belongs to, if it came from a pool.
    pub fn slot(&self) -> Option<u32> {
        (self.slot != u32::MAX).then_some(self.slot)
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to `capacity` initialised (zeroed at allocation)
        // bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.mapped_bytes > 0 {
            // SAFETY: ptr and mapped_bytes are exactly the mapping made in
            // `map_zeroed`, which only this buffer owns.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped_bytes) };
            return;
        }
        // SAFETY: ptr was allocated with exactly this layout in `new`.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A private anonymous mapping of `bytes` (zeroed by the kernel, page
/// aligned, faulted in); None if the kernel refuses the mapping (the caller
/// falls back to the heap).
fn map_zeroed(bytes: usize) -> Option<NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping at an address the kernel chooses
    // touches no existing memory.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    // Fault every page in now, in one call (Linux 5.14+; older kernels
    // refuse the advice and the pages come in on first use). The buffer
    // is about to be filled whole, and a batched fault costs less than one
    // trap per 4 KiB page.
    // SAFETY: [raw, raw + bytes) is the mapping just made.
    unsafe { libc::madvise(raw, bytes, libc::MADV_POPULATE_WRITE) };
    NonNull::new(raw.cast())
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("capacity", &self.capacity())
            .field("align", &self.align())
            .field("slot", &self.slot())
            .finish()
    }
}

/// A fixed set of equally sized aligned buffers owned by one worker.
///
/// `take` never allocates; when the pool is empty the caller must wait for a
/// completion to hand a buffer back. The pool size is therefore the worker's
/// queue depth bound on buffer-carrying operations.
pub struct BufPool {
    free: Vec<AlignedBuf>,
    buf_size: usize,
    align: usize,
    count: usize,
}

impl BufPool {
    pub fn new(count: usize, buf_size: usize, align: usize) -> BufPool {
        let free = (0..count)
            .map(|i| {
                let mut b = AlignedBuf::new(buf_size, align);
                b.slot = i as u32;
                b
            })
            .collect::<Vec<_>>();
        let buf_size = free.first().map_or(buf_size, AlignedBuf::capacity);
        BufPool { free, buf_size, align, count }
    }

    pub fn take(&mut self) -> Option<AlignedBuf> {
        self.free.pop()
    }

    pub fn give(&mut self, buf: AlignedBuf) {
        debug_assert_eq!(buf.capacity(), self.buf_size, "foreign buffer returned to pool");
        self.free.push(buf);
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    pub fn align(&self) -> usize {
        self.align
    }

    /// `iovec`s for every buffer, in slot order, for io_uring buffer
    /// registration. Only valid while all buffers are in the pool.
    pub fn iovecs(&mut self) -> Vec<libc::iovec> {
        let mut v: Vec<(u32, libc::iovec)> = self
            .free
            .iter_mut()
            .map(|b| (b.slot, libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.capacity() }))
            .collect();
        v.sort_by_key(|(s, _)| *s);
        v.into_iter().map(|(_, io)| io).collect()
    }
}

/// Rounds `v` down to a multiple of `align` (a power of two).
pub fn align_down(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two(), "align_down needs a power of two, got {align}");
    v & !(align - 1)
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two(), "align_up needs a power of two, got {align}");
    (v + align - 1) & !(align - 1)
}

/// "<n> KiB" for messages.
pub fn format_kib(bytes: usize) -> String {
    format!("{} KiB", bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_pooled() {
        let mut pool = BufPool::new(4, 5000, 4096);
        assert_eq!(pool.buf_size(), 8192);
        let b = pool.take().unwrap();
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        assert_eq!(b.capacity(), 8192);
        assert_eq!(pool.available(), 3);
        pool.give(b);
        assert_eq!(pool.iovecs().len(), 4);
    }

    #[test]
    fn large_buffers_are_mapped_zeroed_and_writable() {
        let mut b = AlignedBuf::new(MAP_MIN_BYTES + 1, 512);
        assert_eq!(b.capacity(), MAP_MIN_BYTES + 512);
        assert!(b.mapped_bytes > 0, "a large buffer is a mapping of its own");
        assert_eq!(b.as_ptr() as usize % PAGE_BYTES, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        let n = b.capacity();
        b.as_mut_slice()[n - 1] = 7;
        assert_eq!(b.as_slice()[n - 1], 7);
        // A larger alignment than a page stays on the heap.
        let h = AlignedBuf::new(MAP_MIN_BYTES, 2 * PAGE_BYTES);
        assert_eq!(h.mapped_bytes, 0);
        assert_eq!(h.as_ptr() as usize % (2 * PAGE_BYTES), 0);
    }

    #[test]
    fn align_helpers() {
        assert_eq!(align_down(4097, 512), 4096);
        assert_eq!(align_up(4097, 512), 4608);
        assert_eq!(align_up(0, 512), 0);
    }
}
