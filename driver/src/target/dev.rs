//! `dev:///dev/X`: a raw block device (or a regular file used as a device
//! image). Objects map to extents carved from the start of the device in
//! 1 MiB-aligned steps ([`super::extents`], shared with `nbd://`). The
//! extent table lives in memory for the run only: a device has no namespace
//! of ours, so every run lays out what it reads.
//! Refused unless the user passes `--allow-raw-device` (checked in
//! `target::uri`).

use std::fs::{File, OpenOptions as FsOpen};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use super::extents::ExtentTable;
use super::{Capabilities, ObjectHandle, OpenOptions, Queue, Target, TargetError, TargetInfo};
use crate::buf::BufPool;
use crate::error::Error;
use crate::io::{self, Resolved, Resolver};

pub struct DevTarget {
    info: TargetInfo,
    opts: OpenOptions,
    state: Arc<DevState>,
}

struct DevState {
    file: Arc<File>,
    extents: ExtentTable,
}

impl Resolver for DevState {
    fn resolve(&self, obj: ObjectHandle) -> Option<Resolved> {
        let e = self.extents.get(obj)?;
        Some(Resolved { file: self.file.clone(), base: e.base, limit: Some(e.limit), name: e.name })
    }

    fn set_logical_size(&self, obj: ObjectHandle, size: u64) -> Result<(), TargetError> {
        self.extents.set_logical_size(obj, size)
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
        let state = Arc::new(DevState { file: Arc::new(file), extents: ExtentTable::new(device_bytes, "device") });
        Ok(DevTarget { info, opts, state })
    }
}

impl Target for DevTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn create(&self, name: &str, size_hint: u64) -> Result<ObjectHandle, TargetError> {
        self.state.extents.create(name, size_hint)
    }

    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        Ok(self.state.extents.open(name))
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        self.state.extents.delete(name);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        Ok(self.state.extents.list(prefix))
    }

    fn queue(&self, depth: usize, pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        Ok(io::make_queue(depth, self.state.clone(), self.info.caps.align, self.opts, pool))
    }
}
