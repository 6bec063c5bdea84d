//! The op log at a glance: operations and bytes per op kind, latency p50
//! and p99 per op kind, and failed operations by errno.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::oplog::{OpKind, OpRow};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct OpStats {
    pub ops: u64,
    /// Operations whose result was not `ok`.
    pub errors: u64,
    /// Bytes of successful reads and writes (length column), bytes.
    pub bytes: u64,
    pub latency_us_p50: f64,
    pub latency_us_p99: f64,
    pub latency_us_max: f64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Summary {
    pub rows: u64,
    /// From the first op's start to the last op's start, seconds.
    pub span_s: f64,
    pub ops: BTreeMap<&'static str, OpStats>,
    /// Failed operations per errno name.
    pub errors_by_errno: BTreeMap<String, u64>,
    /// Failed ops per (op, errno), for telling probes from failures.
    #[serde(skip)]
    pub probe_errors: BTreeMap<(String, String), u64>,
}

struct Acc {
    ops: u64,
    errors: u64,
    bytes: u64,
    latency_ns: Histogram<u64>,
}

#[derive(Default)]
pub struct SummaryAcc {
    rows: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    per_op: BTreeMap<OpKind, Acc>,
    errors: BTreeMap<String, u64>,
    by_op_errno: BTreeMap<(String, String), u64>,
}

impl SummaryAcc {
    pub fn observe(&mut self, row: &OpRow) {
        self.rows += 1;
        self.first_ns = Some(self.first_ns.map_or(row.start_ns, |f| f.min(row.start_ns)));
        self.last_ns = self.last_ns.max(row.start_ns);
        let acc = self.per_op.entry(row.op).or_insert_with(|| {
            // 3 significant digits: percentiles within 0.1 %; grows as needed.
            let mut latency_ns = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid");
            latency_ns.auto(true);
            Acc { ops: 0, errors: 0, bytes: 0, latency_ns }
        });
        acc.ops += 1;
        if acc.latency_ns.record(row.latency_ns).is_err() {
            acc.latency_ns.saturating_record(row.latency_ns);
        }
        match &row.errno {
            None if matches!(row.op, OpKind::Read | OpKind::Write) => acc.bytes += row.length,
            None => {}
            Some(e) => {
                acc.errors += 1;
                *self.errors.entry(e.clone()).or_default() += 1;
                *self.by_op_errno.entry((row.op.as_str().to_string(), e.clone())).or_default() += 1;
            }
        }
    }

    pub fn finish(self) -> Summary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let ops = self
            .per_op
            .into_iter()
            .map(|(k, a)| {
                let h = &a.latency_ns;
                let stats = OpStats {
                    ops: a.ops,
                    errors: a.errors,
                    bytes: a.bytes,
                    latency_us_p50: us(h.value_at_quantile(0.50).clamp(h.min(), h.max())),
                    latency_us_p99: us(h.value_at_quantile(0.99).clamp(h.min(), h.max())),
                    latency_us_max: us(h.max()),
                };
                (k.as_str(), stats)
            })
            .collect();
        let span_ns = self.first_ns.map_or(0, |f| self.last_ns - f);
        Summary {
            rows: self.rows,
            span_s: span_ns as f64 / 1e9,
            ops,
            errors_by_errno: self.errors,
            probe_errors: self.by_op_errno,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testutil::row;

    #[test]
    fn counts_bytes_errors_and_latency() {
        let mut s = SummaryAcc::default();
        for i in 0..100u64 {
            let mut r = row(i + 2, "read", "a", "", 0, 4096, "ok", &[]);
            r.latency_ns = (i + 1) * 1000;
            r.start_ns = 1_000_000_000 + i;
            s.observe(&r);
        }
        s.observe(&row(200, "write", "a", "", 0, 4096, "EIO", &[]));
        let sum = s.finish();
        assert_eq!(sum.rows, 101);
        let read = &sum.ops["read"];
        assert_eq!((read.ops, read.errors, read.bytes), (100, 0, 409_600));
        assert!((read.latency_us_p50 - 50.0).abs() < 0.1, "{read:?}");
        assert!((read.latency_us_p99 - 99.0).abs() < 0.1, "{read:?}");
        assert_eq!(sum.ops["write"].bytes, 0);
        assert_eq!(sum.errors_by_errno["EIO"], 1);
    }
}
