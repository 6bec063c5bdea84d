//! One verdict: a named check's outcome, its figures and the first few
//! offending items (the JSON shape is documented in docs/check.md).

use serde::Serialize;
use serde_json::{Map, Value};

/// Offending items kept per verdict; the total is counted regardless.
pub const MAX_ITEMS: usize = 10;

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    NotChecked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotChecked => "not_checked",
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub status: Status,
    /// Why the status is what it is, in one sentence.
    pub reason: String,
    /// The figures the verdict was decided on (names carry units).
    pub numbers: Map<String, Value>,
    /// The first offending items (at most [`MAX_ITEMS`]), each naming the
    /// op-log line or journal key.
    pub offending: Vec<String>,
    /// All offending items, including those not listed.
    pub offending_total: u64,
}

impl Verdict {
    pub fn new(name: &'static str) -> Verdict {
        Verdict {
            name,
            status: Status::Pass,
            reason: String::new(),
            numbers: Map::new(),
            offending: Vec::new(),
            offending_total: 0,
        }
    }

    pub fn not_checked(name: &'static str, reason: impl Into<String>) -> Verdict {
        Verdict { status: Status::NotChecked, reason: reason.into(), ..Verdict::new(name) }
    }

    pub fn number(&mut self, key: &str, value: impl Into<Value>) -> &mut Verdict {
        self.numbers.insert(key.to_string(), value.into());
        self
    }

    /// Sets the outcome: fail when `failed`, else pass.
    pub fn decide(&mut self, failed: bool, reason: impl Into<String>) {
        self.status = if failed { Status::Fail } else { Status::Pass };
        self.reason = reason.into();
    }
}

/// Collects offending items: keeps the first [`MAX_ITEMS`], counts all.
#[derive(Debug, Default, Clone)]
pub struct Offenders {
    pub items: Vec<String>,
    pub total: u64,
}

impl Offenders {
    pub fn push(&mut self, item: impl FnOnce() -> String) {
        self.total += 1;
        if self.items.len() < MAX_ITEMS {
            self.items.push(item());
        }
    }

    pub fn into_verdict(self, v: &mut Verdict) {
        v.offending_total = self.total;
        v.offending = self.items;
    }
}

/// `part / whole`, 1.0 when there is no whole.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 1.0 } else { part as f64 / whole as f64 }
}
