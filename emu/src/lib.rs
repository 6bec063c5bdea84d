//! `mlpdrive-emu`: the device model behind the `emu://` target, the FUSE shim
//! and the NBD export.
//!
//! A [`Device`] turns an operation (read, write, flush or trim of a byte
//! range, submitted at a time) into a completion time or an error, from a
//! named [`Profile`]: internal channels (queueing emerges from them), base
//! latency distributions ([`Latency`]), per-channel and device-wide
//! bandwidth, a write-back cache, stalls, capacity and injected faults
//! ([`FaultPlan`]). It is a pure function of its inputs and one seed
//! ([`Prng`]); time comes from a [`Clock`] owned by the caller, real or
//! virtual. docs/devices.md describes the model and every built-in profile.
//!
//! [`nbd`] serves a device over the NBD protocol (`mlpdrive emu serve`).
//!
//! Dependencies point one way: the driver and the shim use this crate; it
//! uses neither.

#![warn(missing_docs, unreachable_pub)]

mod clock;
mod dist;
mod fault;
mod model;
pub mod nbd;
mod prng;
mod profile;
mod units;

#[cfg(test)]
mod tidy;

pub use clock::Clock;
pub use clock::RealClock;
pub use clock::VirtualClock;
pub use dist::Latency;
pub use dist::LatencySpec;
pub use dist::Z_P99;
pub use fault::Corruption;
pub use fault::CrashedWrite;
pub use fault::Extent;
pub use fault::FaultDecision;
pub use fault::FaultInjector;
pub use fault::FaultPlan;
pub use fault::FlushTicket;
pub use fault::Hang;
pub use fault::PerKind;
pub use fault::Spike;
pub use fault::UnsyncedWrites;
pub use model::Device;
pub use model::DeviceError;
pub use model::DeviceOp;
pub use model::OpKind;
pub use model::Outcome;
pub use prng::Prng;
pub use profile::BUILTIN_PROFILES;
pub use profile::CHANNELS_MAX;
pub use profile::ChannelBandwidth;
pub use profile::DeviceBandwidth;
pub use profile::LatencyByKind;
pub use profile::Profile;
pub use profile::ProfileError;
pub use profile::Stall;
pub use profile::WriteCache;
pub use units::Bandwidth;
pub use units::Bytes;
pub use units::Capacity;
pub use units::Nanos;
pub use units::Probability;
