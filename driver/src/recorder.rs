//! Metrics accounting: per-worker latency histograms, live counters and the
//! 1 s time series.
//!
//! Three pieces, because they have three different readers:
//! - [`Recorder`]: one per worker thread, owned (no locks, no atomics on the
//!   hot path), holding an HDR histogram plus op and byte counts per
//!   [`SeriesKey`] (phase, op, tier). Workers' recorders are merged at the end
//!   of a run by adding histograms, so every percentile in a result is read
//!   from the merged distribution, never averaged across workers.
//! - [`LiveCounters`]: a handful of shared atomics that every worker bumps
//!   (Relaxed) so the progress line and the sampler can see throughput while
//!   the run is going.
//! - [`TimeSeries`]: the sampler's once-a-second deltas of those counters.
//!
//! Latency is recorded in nanoseconds and reported in microseconds
//! ([`LatencyUs`]). Percentiles come from the histogram (3 significant
//! digits: at most 0.1 % relative error) and are clamped to the exactly
//! tracked minimum and maximum; the mean is exact (sum / count).

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::target::OpKind;

/// Tier name for workloads that have no storage tiers (raw, training, ...).
pub const NO_TIER: &str = "-";

/// Histogram significant digits: 3 gives ≤ 0.1 % relative error per value.
const SIGFIG: u8 = 3;

/// The histogram is pre-sized to track latencies up to 60 s, so recording
/// never allocates on the hot path; longer latencies still record (the
/// histogram auto-resizes), they just allocate once.
const PRESIZED_MAX_NS: u64 = 60_000_000_000;

/// What a latency sample belongs to: the workload phase (e.g. "layout",
/// "measure"), the operation and the storage tier ([`NO_TIER`] if none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub phase: &'static str,
    pub op: OpKind,
    pub tier: &'static str,
}

/// Latency statistics of one series, in microseconds.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LatencyUs {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub min: f64,
}

/// Totals of one series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesStats {
    /// Completed operations.
    pub ops: u64,
    /// Bytes transferred by those operations.
    pub bytes: u64,
    pub latency_us: LatencyUs,
}

/// One series' accumulators.
#[derive(Clone, Debug)]
struct Series {
    hist: Histogram<u64>,
    ops: u64,
    bytes: u64,
    /// Exact sum, min and max of the recorded latencies (ns): the histogram
    /// only knows bucket edges.
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Series {
    fn new() -> Series {
        let mut hist =
            Histogram::new_with_bounds(1, PRESIZED_MAX_NS, SIGFIG).expect("constant histogram bounds are valid");
        hist.auto(true);
        Series { hist, ops: 0, bytes: 0, sum_ns: 0, min_ns: u64::MAX, max_ns: 0 }
    }

    fn record(&mut self, latency_ns: u64, bytes: u64) {
        if self.hist.record(latency_ns).is_err() {
            // Beyond what even an auto-resizing histogram tracks (~146 years):
            // keep the sample, clamped, rather than lose the count.
            self.hist.saturating_record(latency_ns);
        }
        self.ops += 1;
        self.bytes += bytes;
        self.sum_ns += u128::from(latency_ns);
        self.min_ns = self.min_ns.min(latency_ns);
        self.max_ns = self.max_ns.max(latency_ns);
    }

    fn merge(&mut self, other: &Series) {
        if self.hist.add(&other.hist).is_err() {
            // Only possible if the other histogram holds values beyond the
            // auto-resize limit; fold them in value by value, clamped.
            for v in other.hist.iter_recorded() {
                self.hist.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    fn stats(&self) -> SeriesStats {
        if self.ops == 0 {
            return SeriesStats::default();
        }
        let (min, max) = (self.min_ns, self.max_ns);
        let at = |q: f64| self.hist.value_at_quantile(q).clamp(min, max);
        let us = |ns: u64| ns as f64 / 1_000.0;
        SeriesStats {
            ops: self.ops,
            bytes: self.bytes,
            latency_us: LatencyUs {
                mean: self.sum_ns as f64 / self.ops as f64 / 1_000.0,
                p50: us(at(0.50)),
                p90: us(at(0.90)),
                p99: us(at(0.99)),
                p999: us(at(0.999)),
                p9999: us(at(0.9999)),
                max: us(max),
                min: us(min),
            },
        }
    }
}

/// Per-worker accounting. Not shared: each worker owns one and the run
/// merges them at the end with [`Recorder::merge`].
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// Sorted by key, so [`Recorder::series`] is in a stable order.
    series: Vec<(SeriesKey, Series)>,
    /// Index of the last key recorded: consecutive samples usually share it.
    last: usize,
    errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder::default()
    }

    /// Records one completed operation. Allocates only the first time a key
    /// is seen.
    pub fn record(&mut self, key: &SeriesKey, latency_ns: u64, bytes: u64) {
        let i = self.index_of(key);
        self.series[i].1.record(latency_ns, bytes);
    }

    /// Counts a failed operation; the first message is kept.
    pub fn record_error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Failed operations counted with [`Recorder::record_error`].
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The first error message this recorder saw (after a merge: this
    /// recorder's own first, else the other's).
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Adds another recorder's samples (histograms are added bucket by
    /// bucket, so merged percentiles are exact percentiles of the union).
    pub fn merge(&mut self, other: &Recorder) {
        for (key, s) in &other.series {
            let i = self.index_of(key);
            self.series[i].1.merge(s);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Every series with its statistics, sorted by (phase, op, tier).
    pub fn series(&self) -> impl Iterator<Item = (&SeriesKey, SeriesStats)> {
        self.series.iter().map(|(k, s)| (k, s.stats()))
    }

    pub fn get(&self, key: &SeriesKey) -> Option<SeriesStats> {
        self.find(key).ok().map(|i| self.series[i].1.stats())
    }

    fn find(&self, key: &SeriesKey) -> Result<usize, usize> {
        self.series.binary_search_by(|(k, _)| k.cmp(key))
    }

    fn index_of(&mut self, key: &SeriesKey) -> usize {
        if let Some((k, _)) = self.series.get(self.last)
            && k == key
        {
            return self.last;
        }
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                self.series.insert(i, (*key, Series::new()));
                i
            }
        };
        self.last = i;
        i
    }
}

/// A [`Recorder`] in a form that crosses process boundaries (the MPI
/// gather of every rank's result): each series' exact totals plus its
/// histogram in HDR's V2 encoding (base64), so rank 0 merges the ranks'
/// histograms bucket by bucket, never their percentiles.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RecorderWire {
    series: Vec<SeriesWire>,
    errors: u64,
    first_error: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct SeriesWire {
    phase: String,
    op: String,
    tier: String,
    ops: u64,
    bytes: u64,
    /// As a decimal string: JSON numbers do not hold a u128 everywhere.
    sum_ns: String,
    min_ns: u64,
    max_ns: u64,
    hdr_v2_base64: String,
}

impl Recorder {
    /// Encodes every series for [`Recorder::from_wire`].
    pub fn to_wire(&self) -> RecorderWire {
        use base64::Engine as _;
        let series = self
            .series
            .iter()
            .map(|(k, s)| {
                let mut buf = Vec::new();
                hdrhistogram::serialization::Serializer::serialize(
                    &mut hdrhistogram::serialization::V2Serializer::new(),
                    &s.hist,
                    &mut buf,
                )
                .expect("serialising a histogram into memory cannot fail");
                SeriesWire {
                    phase: k.phase.to_string(),
                    op: k.op.as_str().to_string(),
                    tier: k.tier.to_string(),
                    ops: s.ops,
                    bytes: s.bytes,
                    sum_ns: s.sum_ns.to_string(),
                    min_ns: s.min_ns,
                    max_ns: s.max_ns,
                    hdr_v2_base64: base64::engine::general_purpose::STANDARD.encode(&buf),
                }
            })
            .collect();
        RecorderWire { series, errors: self.errors, first_error: self.first_error.clone() }
    }

    /// Decodes what [`Recorder::to_wire`] encoded.
    pub fn from_wire(w: &RecorderWire) -> Result<Recorder, String> {
        use base64::Engine as _;
        let mut rec = Recorder::new();
        for sw in &w.series {
            let op = match sw.op.as_str() {
                "read" => OpKind::Read,
                "write" => OpKind::Write,
                "commit" => OpKind::Commit,
                other => return Err(format!("unknown op {other:?} in a recorder")),
            };
            let key = SeriesKey { phase: intern(&sw.phase), op, tier: intern(&sw.tier) };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&sw.hdr_v2_base64)
                .map_err(|e| format!("series {}/{}/{}: bad base64: {e}", sw.phase, sw.op, sw.tier))?;
            let hist: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| format!("series {}/{}/{}: bad histogram: {e:?}", sw.phase, sw.op, sw.tier))?;
            let sum_ns = sw.sum_ns.parse().map_err(|e| format!("bad sum_ns {:?}: {e}", sw.sum_ns))?;
            let mut series = Series::new();
            series.hist.add(&hist).map_err(|e| format!("series {}: {e:?}", sw.phase))?;
            series.ops = sw.ops;
            series.bytes = sw.bytes;
            series.sum_ns = sum_ns;
            series.min_ns = sw.min_ns;
            series.max_ns = sw.max_ns;
            let i = rec.index_of(&key);
            rec.series[i].1 = series;
        }
        rec.errors = w.errors;
        rec.first_error.clone_from(&w.first_error);
        Ok(rec)
    }
}

/// Phase and tier names are `&'static str` in a [`SeriesKey`]; names read
/// back from another rank are leaked once each (a handful per run).
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

/// Live counters shared by all workers, for the progress line and the 1 s
/// time series. Commits move no bytes and are not counted here (they are in
/// the recorder's series).
#[derive(Debug, Default)]
pub struct LiveCounters {
    read_ops: AtomicU64,
    read_bytes: AtomicU64,
    write_ops: AtomicU64,
    write_bytes: AtomicU64,
    errors: AtomicU64,
    latency_ns_sum: AtomicU64,
}

impl LiveCounters {
    /// Counts one completed operation of `bytes` bytes that took
    /// `latency_ns` from submission to completion.
    pub fn add(&self, op: OpKind, bytes: u64, latency_ns: u64) {
        let (ops, b) = match op {
            OpKind::Read => (&self.read_ops, &self.read_bytes),
            OpKind::Write => (&self.write_ops, &self.write_bytes),
            OpKind::Commit => return,
        };
        ops.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes, Ordering::Relaxed);
        self.latency_ns_sum.fetch_add(latency_ns, Ordering::Relaxed);
    }

    /// Counts one failed operation.
    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals so far. Fields are read one by one, so a snapshot taken
    /// during a run may be off by the few ops completing meanwhile.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            read_ops: self.read_ops.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_ops: self.write_ops.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_ns_sum: self.latency_ns_sum.load(Ordering::Relaxed),
        }
    }
}

/// Totals of [`LiveCounters`] at one instant.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CounterSnapshot {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub errors: u64,
    /// Sum of the latencies of the completed reads and writes, ns.
    pub latency_ns_sum: u64,
}

/// One time-series point: what happened in the interval that ends at `t_s`
/// and starts at the previous point's `t_s` (or at 0 for the first point).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct TimePoint {
    /// End of the interval, seconds since the start of the measured window.
    pub t_s: f64,
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub errors: u64,
    /// Sum of the latencies of the reads and writes completed in the
    /// interval, ns. Divided by the interval's length it is the mean
    /// number of ops in flight (Little's law): the queue depth over time.
    /// Absent (0) in results written before it was recorded.
    #[serde(default)]
    pub latency_ns_sum: u64,
}

impl TimePoint {
    /// Mean ops in flight over the interval that started at `prev_t_s`
    /// (Little's law), or None for an empty interval.
    pub fn mean_in_flight(&self, prev_t_s: f64) -> Option<f64> {
        let dt_s = self.t_s - prev_t_s;
        (dt_s > 0.0).then(|| self.latency_ns_sum as f64 / 1e9 / dt_s)
    }
}

/// Per-interval deltas of the live counters, one point per sample.
#[derive(Clone, Debug, Default)]
pub struct TimeSeries {
    /// Counter totals at the previous sample (the baseline before the first).
    prev: CounterSnapshot,
    points: Vec<TimePoint>,
}

impl TimeSeries {
    /// A series whose first interval counts from zero.
    pub fn new() -> Self {
        TimeSeries::default()
    }

    /// A series whose first interval counts from `baseline` (the counters at
    /// the start of the measured window, when earlier phases already moved
    /// bytes).
    pub fn with_baseline(baseline: CounterSnapshot) -> Self {
        TimeSeries { prev: baseline, points: Vec::new() }
    }

    /// Adds the point for the interval ending at `t_s`, given the counter
    /// totals at that time.
    pub fn sample(&mut self, t_s: f64, snap: CounterSnapshot) {
        let p = &self.prev;
        self.points.push(TimePoint {
            t_s,
            read_ops: snap.read_ops.saturating_sub(p.read_ops),
            read_bytes: snap.read_bytes.saturating_sub(p.read_bytes),
            write_ops: snap.write_ops.saturating_sub(p.write_ops),
            write_bytes: snap.write_bytes.saturating_sub(p.write_bytes),
            errors: snap.errors.saturating_sub(p.errors),
            latency_ns_sum: snap.latency_ns_sum.saturating_sub(p.latency_ns_sum),
        });
        self.prev = snap;
    }

    pub fn points(&self) -> &[TimePoint] {
        &self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(phase: &'static str, op: OpKind) -> SeriesKey {
        SeriesKey { phase, op, tier: NO_TIER }
    }

    /// Relative error allowed by a 3-significant-digit histogram.
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        // Latencies 1..=100_000 µs, once each: pN is N % of 100_000 µs.
        let mut r = Recorder::new();
        let k = key("measure", OpKind::Read);
        for us in 1..=100_000u64 {
            r.record(&k, us * 1_000, 4096);
        }
        let s = r.get(&k).expect("series exists");
        assert_eq!(s.ops, 100_000);
        assert_eq!(s.bytes, 100_000 * 4096);
        let l = &s.latency_us;
        assert!(close(l.p50, 50_000.0), "p50 {}", l.p50);
        assert!(close(l.p90, 90_000.0), "p90 {}", l.p90);
        assert!(close(l.p99, 99_000.0), "p99 {}", l.p99);
        assert!(close(l.p999, 99_900.0), "p999 {}", l.p999);
        assert!(close(l.p9999, 99_990.0), "p9999 {}", l.p9999);
        assert_eq!(l.min, 1.0);
        assert_eq!(l.max, 100_000.0);
        assert!((l.mean - 50_000.5).abs() < 1e-6, "mean {}", l.mean);
    }

    #[test]
    fn tail_is_found_and_percentiles_stay_within_min_max() {
        // 99 % at 100 µs, 1 % at 10 ms: p50/p90 at 100 µs, p99.9 at 10 ms.
        let mut r = Recorder::new();
        let k = key("measure", OpKind::Write);
        for i in 0..10_000u64 {
            r.record(&k, if i % 100 == 0 { 10_000_000 } else { 100_000 }, 1);
        }
        let l = r.get(&k).expect("series").latency_us;
        assert!(close(l.p50, 100.0) && close(l.p90, 100.0), "{l:?}");
        assert!(close(l.p99, 100.0), "p99 {}", l.p99);
        assert!(close(l.p999, 10_000.0), "p999 {}", l.p999);
        assert!(l.p9999 <= l.max && l.p50 >= l.min);
        assert_eq!(l.max, 10_000.0);
        assert!((l.mean - (0.99 * 100.0 + 0.01 * 10_000.0)).abs() < 1e-6);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let k = key("measure", OpKind::Read);
        let (mut a, mut b, mut all) = (Recorder::new(), Recorder::new(), Recorder::new());
        for v in 1..=1_000u64 {
            a.record(&k, v * 1_000, 10);
            all.record(&k, v * 1_000, 10);
        }
        for v in 1..=1_000u64 {
            b.record(&k, 1_000_000 + v * 1_000, 20);
            all.record(&k, 1_000_000 + v * 1_000, 20);
        }
        let other = key("layout", OpKind::Write);
        b.record(&other, 5_000, 512);
        all.record(&other, 5_000, 512);
        a.merge(&b);
        assert_eq!(a.get(&k), all.get(&k));
        assert_eq!(a.get(&other), all.get(&other));
        let s = a.get(&k).expect("series");
        assert_eq!((s.ops, s.bytes), (2_000, 1_000 * 10 + 1_000 * 20));
        // The median of the union lies between the two halves, which no
        // average of the halves' percentiles would give.
        assert!(close(s.latency_us.p50, 1_000.0), "p50 {}", s.latency_us.p50);
    }

    #[test]
    fn series_are_sorted_and_absent_keys_are_none() {
        let mut r = Recorder::new();
        r.record(&key("measure", OpKind::Write), 1, 1);
        r.record(&key("layout", OpKind::Write), 1, 1);
        r.record(&key("measure", OpKind::Read), 1, 1);
        let keys: Vec<_> = r.series().map(|(k, _)| (k.phase, k.op)).collect();
        assert_eq!(keys, [("layout", OpKind::Write), ("measure", OpKind::Read), ("measure", OpKind::Write)]);
        assert!(r.get(&key("measure", OpKind::Commit)).is_none());
    }

    #[test]
    fn zero_latency_and_huge_latency_are_counted() {
        let mut r = Recorder::new();
        let k = key("measure", OpKind::Read);
        r.record(&k, 0, 0);
        r.record(&k, 120_000_000_000, 0); // 120 s, beyond the pre-sized range
        let s = r.get(&k).expect("series");
        assert_eq!(s.ops, 2);
        assert_eq!(s.latency_us.min, 0.0);
        assert_eq!(s.latency_us.max, 120_000_000.0);
    }

    #[test]
    fn wire_round_trip_keeps_histograms_mergeable() {
        let (mut a, mut b) = (Recorder::new(), Recorder::new());
        let k = key("measure", OpKind::Read);
        for v in 1..=1_000u64 {
            a.record(&k, v * 1_000, 10);
            b.record(&k, 2_000_000 + v * 1_000, 10);
        }
        b.record(&key("layout", OpKind::Commit), 7, 0);
        b.record_error(|| "rank 1: EIO".into());
        let text = serde_json::to_string(&b.to_wire()).unwrap();
        let back = Recorder::from_wire(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back.get(&k), b.get(&k));
        assert_eq!(back.get(&key("layout", OpKind::Commit)), b.get(&key("layout", OpKind::Commit)));
        assert_eq!((back.errors(), back.first_error()), (1, Some("rank 1: EIO")));
        let mut direct = a.clone();
        direct.merge(&b);
        a.merge(&back);
        assert_eq!(a.get(&k), direct.get(&k));
    }

    #[test]
    fn errors_count_and_keep_the_first() {
        let mut a = Recorder::new();
        a.record_error(|| "first".into());
        a.record_error(|| panic!("message built only for the first error"));
        let mut b = Recorder::new();
        b.record_error(|| "other".into());
        a.merge(&b);
        assert_eq!(a.errors(), 3);
        assert_eq!(a.first_error(), Some("first"));
        let mut c = Recorder::new();
        c.merge(&b);
        assert_eq!(c.first_error(), Some("other"));
    }

    #[test]
    fn live_counters_ignore_commits() {
        let live = LiveCounters::default();
        live.add(OpKind::Read, 4096, 1_000);
        live.add(OpKind::Read, 4096, 2_000);
        live.add(OpKind::Write, 100, 500);
        live.add(OpKind::Commit, 0, 7_000);
        live.add_error();
        let want = CounterSnapshot {
            read_ops: 2,
            read_bytes: 8192,
            write_ops: 1,
            write_bytes: 100,
            errors: 1,
            latency_ns_sum: 3_500,
        };
        assert_eq!(live.snapshot(), want);
    }

    #[test]
    fn time_series_records_deltas() {
        // Every op took 1 ms.
        let snap = |r: u64, w: u64, e: u64| CounterSnapshot {
            read_ops: r,
            read_bytes: r * 4096,
            write_ops: w,
            write_bytes: w * 512,
            errors: e,
            latency_ns_sum: (r + w) * 1_000_000,
        };
        let mut ts = TimeSeries::with_baseline(snap(10, 0, 0));
        ts.sample(1.0, snap(110, 5, 0));
        ts.sample(2.0, snap(310, 5, 2));
        ts.sample(2.5, snap(310, 9, 2));
        let p = ts.points();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            TimePoint {
                t_s: 1.0,
                read_ops: 100,
                read_bytes: 100 * 4096,
                write_ops: 5,
                write_bytes: 5 * 512,
                errors: 0,
                latency_ns_sum: 105_000_000,
            }
        );
        assert_eq!(
            p[1],
            TimePoint {
                t_s: 2.0,
                read_ops: 200,
                read_bytes: 200 * 4096,
                write_ops: 0,
                write_bytes: 0,
                errors: 2,
                latency_ns_sum: 200_000_000,
            }
        );
        assert_eq!(
            p[2],
            TimePoint {
                t_s: 2.5,
                read_ops: 0,
                read_bytes: 0,
                write_ops: 4,
                write_bytes: 4 * 512,
                errors: 0,
                latency_ns_sum: 4_000_000,
            }
        );
        // 105 ops of 1 ms in 1 s: 0.105 in flight on average; 200 in 1 s:
        // 0.2; 4 in 0.5 s: 0.008.
        let qd: Vec<f64> = [0.0, 1.0, 2.0].iter().zip(p).map(|(t0, p)| p.mean_in_flight(*t0).unwrap()).collect();
        for (got, want) in qd.iter().zip([0.105, 0.2, 0.008]) {
            assert!((got - want).abs() < 1e-12, "{qd:?}");
        }
        assert_eq!(p[2].mean_in_flight(2.5), None, "an empty interval has no mean");
        let mut from_zero = TimeSeries::new();
        from_zero.sample(1.0, snap(3, 0, 0));
        assert_eq!(from_zero.points()[0].read_ops, 3);
    }
}
