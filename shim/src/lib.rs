//! `mlpdrive-shim`: the FUSE filesystem that passes through to a backing
//! store, injects the device model's latency and faults, keeps an op log and
//! runs the verifiers.
//!
//! Empty in the foundation; it arrives with the emulator/shim issue. It
//! depends on `mlpdrive-emu` only, never on the driver.
