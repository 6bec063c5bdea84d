//! `dev:///dev/X`: a raw block device (or a regular file used as a device
//! image). Objects map to extents carved from the start of the device in
//! 1 MiB-aligned steps. The extent table lives in memory for the run only:
//! a device has no namespace of ours, so every run lays out what it reads.
//! Refused unless the user passes `--allow-raw-device` (checked in
//! `target::uri`).

use std::fs::{File, OpenOptions as FsOpen};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::table::HandleTable;
use super::{Capabilities, ObjectHandle, OpenOptions, Queue, Target, TargetError, TargetInfo};
use crate::buf::{BufPool, align_up};
use crate::error::Error;
use crate::io::{self, Resolved, Resolver};

/// Extents start on 1 MiB boundaries (erase-block and RAID-stripe friendly).
const EXTENT_ALIGN: u64 = 1 << 20;

pub struct DevTarget {
    info: TargetInfo,
    file: Arc<File>,
    device_bytes: u64,
    opts: OpenOptions,
    state: Arc<DevState>,
}

struct DevState {
    handles: HandleTable,
    /// Logical sizes by handle, and the next free byte.
    alloc: Mutex<Alloc>,
}

#[derive(Default)]
struct Alloc {
    next_free: u64,
    sizes: Vec<u64>,
}

impl Resolver for DevState {
    fn resolve(&self, obj: ObjectHandle) -> Option<Resolved> {
        self.handles.get(obj)
    }

    fn set_logical_size(&self, obj: ObjectHandle, size: u64) -> Result<(), TargetError> {
        let r = self.handles.get(obj).ok_or_else(|| TargetError::namespace("unknown object handle"))?;
        if r.limit.is_some_and(|l| size > l) {
            return Err(TargetError::io("commit", r.name.to_string(), size, libc::EFBIG));
        }
        let mut a = self.alloc.lock().expect("dev alloc poisoned");
        let i = obj.0 as usize;
        if a.sizes.len() <= i {
            a.sizes.resize(i + 1, 0);
        }
        a.sizes[i] = size;
        Ok(())
    }
}

impl DevTarget {
    pub fn open(path: &Path, display: &str, opts: OpenOptions) -> Result<DevTarget, Error> {
        let mut o = FsOpen::new();
        o.read(true).write(true);
        let mut flags = 0;
        if opts.direct {
            flags |= libc::O_DIRECT;
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        let is_block = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
        if is_block {
            // O_EXCL on a block device fails if it is mounted or claimed.
            flags |= libc::O_EXCL;
        }
        o.custom_flags(flags);
        let file = o.open(path).map_err(|e| {
            Error::usage(format!(
                "cannot open {} for direct read/write: {e}{}",
                path.display(),
                if e.raw_os_error() == Some(libc::EBUSY) { " (device is in use or mounted)" } else { "" }
            ))
        })?;
        let (device_bytes, align) = if is_block {
            let bytes = io::align::block_device_bytes(&file)
                .ok_or_else(|| Error::usage(format!("cannot read the size of {}", path.display())))?;
            (bytes, io::align::block_device_sector(&file).unwrap_or(io::align::FALLBACK_ALIGN))
        } else {
            (meta.len(), io::align::dio_align_for_path(path).unwrap_or(io::align::FALLBACK_ALIGN))
        };
        if device_bytes == 0 {
            return Err(Error::usage(format!("{} has size 0; nothing can be written to it", path.display())));
        }
        let info = TargetInfo {
            kind: "dev",
            location: display.to_string(),
            caps: Capabilities { align, ranged_writes: true, stores_data: true, max_object_bytes: Some(device_bytes) },
        };
        let state = Arc::new(DevState { handles: HandleTable::default(), alloc: Mutex::new(Alloc::default()) });
        Ok(DevTarget { info, file: Arc::new(file), device_bytes, opts, state })
    }
}

impl Target for DevTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn create(&self, name: &str, size_hint: u64) -> Result<ObjectHandle, TargetError> {
        let need = align_up(size_hint.max(1), EXTENT_ALIGN);
        if let Some((h, r)) = self.state.handles.lookup(name)
            && r.limit.is_some_and(|l| l >= need)
        {
            self.state.set_logical_size(h, 0)?;
            return Ok(h);
        }
        let start = {
            let mut a = self.state.alloc.lock().expect("dev alloc poisoned");
            if a.next_free + need > self.device_bytes {
                return Err(TargetError::namespace(format!(
                    "device full: object {name} needs {need} bytes at {}, device has {} bytes",
                    a.next_free, self.device_bytes
                )));
            }
            let s = a.next_free;
            a.next_free += need;
            s
        };
        let r = Resolved { file: self.file.clone(), base: start, limit: Some(need), name: Arc::from(name) };
        let h = self.state.handles.insert(name, r);
        self.state.set_logical_size(h, 0)?;
        Ok(h)
    }

    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        let Some((h, _)) = self.state.handles.lookup(name) else { return Ok(None) };
        let a = self.state.alloc.lock().expect("dev alloc poisoned");
        Ok(Some((h, a.sizes.get(h.0 as usize).copied().unwrap_or(0))))
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        self.state.handles.remove(name);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let a = self.state.alloc.lock().expect("dev alloc poisoned");
        let mut out: Vec<(String, u64)> = self
            .state
            .handles
            .all()
            .into_iter()
            .filter(|(_, r)| r.name.starts_with(prefix))
            .map(|(h, r)| (r.name.to_string(), a.sizes.get(h.0 as usize).copied().unwrap_or(0)))
            .collect();
        out.sort();
        Ok(out)
    }

    fn queue(&self, depth: usize, pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        Ok(io::make_queue(depth, self.state.clone(), self.info.caps.align, self.opts, pool))
    }
}
