//! `nbd://HOST:PORT[/EXPORT]`: an export of an NBD server (`mlpdrive emu
//! serve`, qemu-nbd, nbdkit, nbd-server) as a target.
//!
//! Objects map to 1 MiB-aligned extents of the export exactly as `dev://`
//! maps them onto a device ([`super::extents`]). Each worker's queue is its
//! own TCP connection; requests are pipelined on it (NBD handles are the
//! queue's slots) and a reader thread per connection turns replies into
//! completions, so the queue depth the workload asks for is the depth the
//! server sees.
//!
//! Overwriting an export is overwriting a device: an export that describes
//! itself as an mlpdrive emu export (the `NBD_INFO_DESCRIPTION` that
//! `mlpdrive emu serve` sends) is used as is; any other export needs
//! `--allow-raw-device`.

mod handshake;
mod queue;

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use super::extents::ExtentTable;
use super::uri::NbdSpec;
use super::{Capabilities, ObjectHandle, Queue, Target, TargetError, TargetInfo};
use crate::buf::BufPool;
use crate::error::Error;
pub use handshake::ExportInfo;
use mlpdrive_emu::nbd::DESCRIPTION_PREFIX;

/// Smallest alignment offered to workloads (a 512-byte sector).
const ALIGN_MIN: usize = 512;

pub struct NbdTarget {
    info: TargetInfo,
    spec: NbdSpec,
    export: ExportInfo,
    extents: Arc<ExtentTable>,
    /// The connection opened to learn about the export; the first queue
    /// takes it over, so a one-job run needs one connection only.
    first: Mutex<Option<TcpStream>>,
}

impl NbdTarget {
    /// Connects, negotiates, and applies the overwrite rule.
    pub fn open(spec: &NbdSpec, display: &str) -> Result<NbdTarget, Error> {
        let (stream, export) = handshake::connect(&spec.host, spec.port, &spec.export)
            .map_err(|e| Error::usage(format!("target {display}: {e}")))?;
        let ours = export.description.as_deref().is_some_and(|d| d.starts_with(DESCRIPTION_PREFIX));
        if !ours && !spec.allow_overwrite {
            let described =
                export.description.as_deref().map(|d| format!(" (it describes itself as {d:?})")).unwrap_or_default();
            return Err(Error::usage(format!(
                "target {display}: refused without --allow-raw-device: this export is not an mlpdrive emu export{described}, \
                 and mlpdrive overwrites it from byte 0 like a raw device. Pass --allow-raw-device if that is what you want"
            )));
        }
        if export.read_only() {
            return Err(Error::usage(format!(
                "target {display}: the export is read-only; mlpdrive needs to write to it"
            )));
        }
        if export.size_bytes == 0 {
            return Err(Error::usage(format!("target {display}: the export has size 0")));
        }
        let align = (export.min_block as usize).max(ALIGN_MIN).next_power_of_two();
        let info = TargetInfo {
            kind: "nbd",
            location: display.to_string(),
            caps: Capabilities {
                align,
                ranged_writes: true,
                stores_data: true,
                max_object_bytes: Some(export.size_bytes),
            },
        };
        let extents = Arc::new(ExtentTable::new(export.size_bytes, "export"));
        Ok(NbdTarget { info, spec: spec.clone(), export, extents, first: Mutex::new(Some(stream)) })
    }

    /// What the server said about the export.
    pub fn export(&self) -> &ExportInfo {
        &self.export
    }
}

impl Target for NbdTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn create(&self, name: &str, size_hint: u64) -> Result<ObjectHandle, TargetError> {
        self.extents.create(name, size_hint)
    }

    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        Ok(self.extents.open(name))
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        self.extents.delete(name);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        Ok(self.extents.list(prefix))
    }

    fn queue(&self, depth: usize, _pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        let taken = self.first.lock().expect("nbd target poisoned").take();
        let stream = match taken {
            Some(s) => s,
            None => {
                let (s, info) =
                    handshake::connect(&self.spec.host, self.spec.port, &self.spec.export).map_err(|e| {
                        TargetError::namespace(format!(
                            "{}: opening another connection (one per job): {e}; if the server limits its clients \
                             (qemu-nbd -e N), allow at least one per job",
                            self.info.location
                        ))
                    })?;
                if info.size_bytes != self.export.size_bytes {
                    return Err(TargetError::namespace(format!(
                        "{}: the export's size changed between connections ({} then {} bytes)",
                        self.info.location, self.export.size_bytes, info.size_bytes
                    )));
                }
                s
            }
        };
        let q = queue::NbdQueue::new(
            stream,
            depth,
            self.extents.clone(),
            &self.export,
            self.info.caps.align,
            &self.info.location,
        )
        .map_err(|e| TargetError::namespace(format!("{}: {e}", self.info.location)))?;
        Ok(Box::new(q))
    }
}
