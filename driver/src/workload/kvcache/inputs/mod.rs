//! Trace-driven inputs of the KV cache workload (spec §7): BurstGPT request
//! logs ([`burstgpt`]) and ShareGPT conversations ([`sharegpt`]).
//!
//! Both modules are pure: they read files into plain data and expand it into
//! request schedules; they do no I/O against a target and read no clock.
//! The reference's crashes are fixed here, by construction:
//! - `--replay-cycles K` yields exactly K complete passes (the reference
//!   stopped the whole run once the K-th pass had been *enqueued*, so with
//!   `--trace-speedup 0` nothing completed);
//! - ShareGPT with multi-turn off yields single-turn requests (the reference
//!   compared a missing turn number with an integer and every worker died).
//!
//! Docs: docs/workloads/kvcache-inputs.md.

pub mod burstgpt;
pub mod sharegpt;

/// A malformed input file: the file, where in it (line, or JSON path) and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {location}: {msg}")]
pub struct InputError {
    pub path: String,
    /// `line N, field `X``, or a JSON location.
    pub location: String,
    pub msg: String,
}

impl InputError {
    pub(crate) fn new(path: &std::path::Path, location: impl Into<String>, msg: impl Into<String>) -> InputError {
        InputError { path: path.display().to_string(), location: location.into(), msg: msg.into() }
    }
}

/// How many passes over an input to make (`--replay-cycles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycles {
    /// Loop until the run's duration (or `max_requests`) ends it (`0`).
    Forever,
    /// Exactly this many complete passes; the run ends when every request
    /// of the last pass has completed.
    Exactly(u32),
}

impl Cycles {
    /// kv-cache.py's `--replay-cycles N`: 0 means forever.
    pub fn from_flag(n: u32) -> Cycles {
        if n == 0 { Cycles::Forever } else { Cycles::Exactly(n) }
    }

    fn allows(self, pass: u64) -> bool {
        match self {
            Cycles::Forever => true,
            Cycles::Exactly(k) => pass < u64::from(k),
        }
    }
}
