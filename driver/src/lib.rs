//! mlpdrive: a storage load driver for AI workloads.
//!
//! Data path: CLI ([`cli`]) → config ([`config`]) → workload ([`workload`])
//! → engine ([`engine`]) → target ([`target`], queues in [`io`]) →
//! recorder ([`recorder`]) → results ([`results`]). See
//! docs/ARCHITECTURE.md.

pub mod buf;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datagen;
pub mod datasets;
pub mod datasize;
pub mod engine;
pub mod error;
pub mod io;
pub mod job;
pub mod kvtrace;
pub mod mpi;
pub mod progress;
pub mod recorder;
pub mod replay;
pub mod report;
pub mod results;
pub mod rules;
pub mod run;
pub mod rusage;
pub mod serve;
pub mod shim_cmd;
pub mod shim_verify;
pub mod signal;
pub mod suite;
pub mod target;
pub mod units;
pub mod workload;
