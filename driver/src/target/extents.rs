//! Objects as extents of one flat byte space (a block device, a device
//! image, an NBD export): the allocation, name and logical-size table that
//! `dev://` and `nbd://` share.
//!
//! Extents are carved from the start of the space in 1 MiB-aligned steps
//! (erase-block and RAID-stripe friendly). The table lives in memory for the
//! run only: the space has no namespace of ours, so every run lays out what
//! it reads. Re-creating an object reuses its extent when it is big enough.

use std::sync::{Arc, Mutex};

use super::table::HandleTable;
use super::{ObjectHandle, TargetError};
use crate::buf::align_up;

/// Extents start on 1 MiB boundaries.
pub const EXTENT_ALIGN: u64 = 1 << 20;

/// Where an object lives in the space.
#[derive(Debug, Clone)]
pub struct Extent {
    /// First byte of the extent.
    pub base: u64,
    /// Bytes reserved for the object.
    pub limit: u64,
    /// For error messages.
    pub name: Arc<str>,
}

/// Name → extent, handle → extent, and logical sizes.
pub struct ExtentTable {
    handles: HandleTable<Extent>,
    alloc: Mutex<Alloc>,
    space_bytes: u64,
    /// What the space is, for "full" messages (`device`, `export`).
    noun: &'static str,
}

#[derive(Default)]
struct Alloc {
    next_free: u64,
    sizes: Vec<u64>,
}

impl ExtentTable {
    /// An empty table over `space_bytes` bytes.
    pub fn new(space_bytes: u64, noun: &'static str) -> ExtentTable {
        ExtentTable { handles: HandleTable::default(), alloc: Mutex::new(Alloc::default()), space_bytes, noun }
    }

    fn alloc(&self) -> std::sync::MutexGuard<'_, Alloc> {
        self.alloc.lock().expect("extent table poisoned")
    }

    /// Creates (or re-creates, with logical size 0) the object `name` with
    /// room for `size_hint` bytes.
    pub fn create(&self, name: &str, size_hint: u64) -> Result<ObjectHandle, TargetError> {
        let need = align_up(size_hint.max(1), EXTENT_ALIGN);
        if let Some((h, e)) = self.handles.lookup(name)
            && e.limit >= need
        {
            self.set_logical_size(h, 0)?;
            return Ok(h);
        }
        let base = {
            let mut a = self.alloc();
            if a.next_free + need > self.space_bytes {
                return Err(TargetError::namespace(format!(
                    "{noun} full: object {name} needs {need} bytes at {}, {noun} has {} bytes",
                    a.next_free,
                    self.space_bytes,
                    noun = self.noun
                )));
            }
            let b = a.next_free;
            a.next_free += need;
            b
        };
        let h = self.handles.insert(name, Extent { base, limit: need, name: Arc::from(name) });
        self.set_logical_size(h, 0)?;
        Ok(h)
    }

    /// The extent of a live handle.
    pub fn get(&self, h: ObjectHandle) -> Option<Extent> {
        self.handles.get(h)
    }

    /// An object's handle and logical size.
    pub fn open(&self, name: &str) -> Option<(ObjectHandle, u64)> {
        let (h, _) = self.handles.lookup(name)?;
        Some((h, self.alloc().sizes.get(h.0 as usize).copied().unwrap_or(0)))
    }

    /// Forgets `name` (its extent is not reused within the run).
    pub fn delete(&self, name: &str) {
        self.handles.remove(name);
    }

    /// Names and logical sizes of objects starting with `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let a = self.alloc();
        let mut out: Vec<(String, u64)> = self
            .handles
            .all()
            .into_iter()
            .filter(|(_, e)| e.name.starts_with(prefix))
            .map(|(h, e)| (e.name.to_string(), a.sizes.get(h.0 as usize).copied().unwrap_or(0)))
            .collect();
        out.sort();
        out
    }

    /// Records an object's logical size (at a commit); EFBIG beyond its extent.
    pub fn set_logical_size(&self, h: ObjectHandle, size: u64) -> Result<(), TargetError> {
        let e = self.handles.get(h).ok_or_else(|| TargetError::namespace("unknown object handle"))?;
        if size > e.limit {
            return Err(TargetError::io("commit", e.name.to_string(), size, libc::EFBIG));
        }
        let mut a = self.alloc();
        let i = h.0 as usize;
        if a.sizes.len() <= i {
            a.sizes.resize(i + 1, 0);
        }
        a.sizes[i] = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_are_aligned_reused_and_bounded() {
        let t = ExtentTable::new(4 * EXTENT_ALIGN, "device");
        let a = t.create("a", 100).unwrap();
        let b = t.create("b", EXTENT_ALIGN + 1).unwrap();
        assert_eq!(t.get(a).unwrap().base, 0);
        assert_eq!((t.get(b).unwrap().base, t.get(b).unwrap().limit), (EXTENT_ALIGN, 2 * EXTENT_ALIGN));
        t.set_logical_size(a, 100).unwrap();
        assert_eq!(t.open("a"), Some((a, 100)));
        assert!(t.set_logical_size(a, EXTENT_ALIGN + 1).is_err());
        // Re-creating with a size that fits reuses the extent, size reset.
        assert_eq!(t.create("a", 4096).unwrap(), a);
        assert_eq!(t.open("a"), Some((a, 0)));
        assert_eq!(t.list(""), vec![("a".to_string(), 0), ("b".to_string(), 0)]);
        let e = t.create("c", 2 * EXTENT_ALIGN).unwrap_err().to_string();
        assert!(e.contains("device full: object c"), "{e}");
        t.delete("b");
        assert_eq!(t.open("b"), None);
    }
}
