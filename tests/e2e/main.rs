//! End-to-end tests: they run the real `mlpdrive` binary (and, for the
//! target round trip, the library's real targets) against real files with
//! O_DIRECT and io_uring. One test binary, several modules, so the crate is
//! linked once.

mod bad_input;
mod check;
mod check_shim;
mod checkpoint;
mod cli;
mod common;
mod emu_target;
mod kvcache;
mod mpi;
mod nbd;
mod raw_runs;
mod replay;
mod report;
mod roundtrip;
mod s3;
mod s3_server;
mod shim;
mod suite;
mod training;
mod vdb;
mod verify_modes;
mod virtual_clock;
