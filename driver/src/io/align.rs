//! Direct-I/O alignment: asked of the kernel, never assumed.
//!
//! statx(STATX_DIOALIGN) reports the memory and offset alignment O_DIRECT
//! needs on a file (Linux 6.1+). Block devices answer BLKSSZGET (logical
//! block size). When neither answers, 4096 is used: it satisfies every
//! device in practice, at the cost of rounding small requests up.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Fallback alignment when the kernel does not say.
pub const FALLBACK_ALIGN: usize = 4096;

/// O_DIRECT alignment for `path` (a file or directory on the filesystem).
pub fn dio_align_for_path(path: &Path) -> Option<usize> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statx is a valid "nothing filled in" value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and stx a valid out pointer.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_DIOALIGN, &mut stx) };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let a = stx.stx_dio_mem_align.max(stx.stx_dio_offset_align) as usize;
    (a > 0 && a.is_power_of_two()).then_some(a)
}

/// Logical block size of a block device.
pub fn block_device_sector(file: &File) -> Option<usize> {
    let mut sz: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut sz) };
    (rc == 0 && sz > 0 && (sz as usize).is_power_of_two()).then_some(sz as usize)
}

/// Size in bytes of a block device.
pub fn block_device_bytes(file: &File) -> Option<u64> {
    // _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut sz: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut sz) };
    (rc == 0).then_some(sz)
}
