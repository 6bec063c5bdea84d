//! mlpdrive: a storage load driver for AI workloads.
//!
//! Data path: CLI ([`cli`]) → config ([`config`]) → workload ([`workload`])
//! → target ([`target`]) → I/O queue ([`io`]) → recorder ([`recorder`]) →
//! results ([`results`]). See docs/ARCHITECTURE.md.

pub mod buf;
pub mod error;
pub mod recorder;
pub mod results;
pub mod rusage;
pub mod target;
