//! The NBD export: the device model behind a Network Block Device server,
//! so any NBD client (`nbdinfo`, `nbdcopy`, `qemu-img`, `qemu-io`, the
//! kernel's `nbd-client`, the driver's `nbd://` target) sees an emulated
//! device's latency, bandwidth, queueing and faults.
//!
//! - [`protocol`]: the wire format (constants, messages, bounded parsing);
//! - [`export`]: where the bytes live (sparse memory or a file);
//! - [`server`]: the listener, the per-connection threads and the pool that
//!   completes requests at the model's completion times.
//!
//! docs/nbd.md describes what is implemented and how to run it.

pub mod export;
pub mod protocol;
pub mod server;

/// How `mlpdrive emu serve` exports begin their `NBD_INFO_DESCRIPTION`; the
/// driver's `nbd://` target recognises mlpdrive exports by it.
pub const DESCRIPTION_PREFIX: &str = "mlpdrive emu export";

pub use export::{BackingError, FileStore, MemStore, Store};
pub use server::{ExportConfig, Server, Stats};
