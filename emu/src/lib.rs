//! `mlpdrive-emu`: the device model behind the `emu://` target, the FUSE shim
//! and the NBD export.
//!
//! This crate is intentionally empty in the foundation: the device model
//! (latency distributions, channels, bandwidth cap, faults, virtual clock)
//! arrives with its own issue. It exists now so the workspace layout and the
//! dependency direction (`emu` ← `driver`, `emu` ← `shim`) are fixed from the
//! start.
