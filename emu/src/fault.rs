//! Injected faults: errors, hangs, latency spikes, read corruption, and
//! writes lost on a crash.
//!
//! Real storage fails in a few recurring ways, and a load driver (and
//! anything measured through the shim) should be exercised against each:
//!
//! - **errors** (`EIO`): an op of a given kind fails after its normal latency,
//!   with a per-kind probability ([`FaultPlan::error_probability`]);
//! - **hangs**: an op does not complete for a set duration and then fails
//!   with `ETIMEDOUT` (a stuck command the host eventually aborts);
//! - **latency spikes**: an op's base latency is multiplied and/or lengthened
//!   (firmware hiccups, a neighbour's burst, a slow replica);
//! - **read corruption**: a read returns altered bytes (silent data
//!   corruption); the [`Corruption`] carries a seed so the same bytes are
//!   altered on every replay;
//! - **lost unsynced writes**: on a crash, writes not yet covered by a
//!   completed flush may be gone ([`UnsyncedWrites`]), as on a device with a
//!   volatile cache.
//!
//! Every choice comes from a stream forked from the run's seed, one stream
//! per fault type, so turning one fault on does not move another's choices.
//! Faults are off unless a profile turns them on.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::OpKind;
use crate::prng::Prng;
use crate::units::{Nanos, Probability};

/// One value per op kind.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerKind<T> {
    /// For reads.
    pub read: T,
    /// For writes.
    pub write: T,
    /// For flushes.
    pub flush: T,
    /// For trims.
    pub trim: T,
}

impl<T: Copy> PerKind<T> {
    /// The value for `kind`.
    pub fn get(&self, kind: OpKind) -> T {
        match kind {
            OpKind::Read => self.read,
            OpKind::Write => self.write,
            OpKind::Flush => self.flush,
            OpKind::Trim => self.trim,
        }
    }
}

/// An op that does not complete for `duration`, then fails with ETIMEDOUT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hang {
    /// Chance that an op (of any kind) hangs.
    pub probability: Probability,
    /// How long a hung op takes before it fails.
    pub duration: Nanos,
}

/// A latency spike: the op's base latency becomes `latency × multiplier + add`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spike {
    /// Chance that an op (of any kind) spikes.
    pub probability: Probability,
    /// Factor on the sampled base latency (at least 1; default 1).
    #[serde(default = "one")]
    pub multiplier: f64,
    /// Extra time added after the multiplier (default 0).
    #[serde(default)]
    pub add: Nanos,
}

fn one() -> f64 {
    1.0
}

impl Spike {
    /// The spiked latency for a base latency of `latency_ns`.
    pub fn apply(&self, latency_ns: u64) -> u64 {
        let multiplied = (latency_ns as f64 * self.multiplier).round();
        // Clamp to ~11.6 days so the sum below never overflows.
        (multiplied.min(1.0e15) as u64).saturating_add(self.add.0)
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(format!(
                "spike.multiplier is {}: use a number of at least 1 (1 means only `add` applies)",
                self.multiplier
            ));
        }
        Ok(())
    }
}

/// Which faults to inject and how often (the `faults:` section of a
/// profile). Everything defaults to off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    /// Chance that an op fails with EIO, per op kind.
    pub error_probability: PerKind<Probability>,
    /// Ops that hang, then time out.
    pub hang: Option<Hang>,
    /// Ops whose latency spikes.
    pub spike: Option<Spike>,
    /// Chance that a successful read returns corrupted bytes.
    pub read_corruption_probability: Probability,
    /// On a crash, the chance that each write not covered by a completed
    /// flush is lost (1 = every unsynced write is lost).
    #[serde(default = "always")]
    pub unsynced_write_loss_probability: Probability,
}

fn always() -> Probability {
    Probability::ALWAYS
}

impl Default for FaultPlan {
    /// No faults; a crash loses every unsynced write.
    fn default() -> FaultPlan {
        FaultPlan {
            error_probability: PerKind::default(),
            hang: None,
            spike: None,
            read_corruption_probability: Probability::NEVER,
            unsynced_write_loss_probability: Probability::ALWAYS,
        }
    }
}

impl FaultPlan {
    /// Checks what serde cannot (the spike multiplier).
    pub fn validate(&self) -> Result<(), String> {
        self.spike.as_ref().map_or(Ok(()), Spike::validate)
    }
}

/// The faults chosen for one op.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultDecision {
    /// Fail with EIO (after the op's normal latency).
    pub error: bool,
    /// Hang for this long, then fail with ETIMEDOUT (takes precedence over
    /// `error`).
    pub hang_ns: Option<u64>,
    /// Spike the base latency.
    pub spike: Option<Spike>,
    /// Corrupt the bytes a successful read returns.
    pub corruption: Option<Corruption>,
}

/// Draws [`FaultDecision`]s from a [`FaultPlan`] and the run's seed.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    plan: FaultPlan,
    error_rng: Prng,
    hang_rng: Prng,
    spike_rng: Prng,
    corruption_rng: Prng,
}

impl FaultInjector {
    /// An injector whose streams are forked from `rng`.
    pub fn new(plan: &FaultPlan, rng: &Prng) -> FaultInjector {
        FaultInjector {
            plan: plan.clone(),
            error_rng: rng.fork("faults.error"),
            hang_rng: rng.fork("faults.hang"),
            spike_rng: rng.fork("faults.spike"),
            corruption_rng: rng.fork("faults.corruption"),
        }
    }

    /// The faults for the next op of `kind`. Each stream draws exactly one
    /// number per op (two for a corrupted read) whatever the probabilities, so
    /// the choices of op *n* do not depend on which faults are enabled.
    pub fn decide(&mut self, kind: OpKind) -> FaultDecision {
        let error = self.error_rng.chance(self.plan.error_probability.get(kind).get());
        let hang_p = self.plan.hang.map_or(0.0, |h| h.probability.get());
        let hang_ns = self.hang_rng.chance(hang_p).then(|| self.plan.hang.map_or(0, |h| h.duration.0));
        let spike_p = self.plan.spike.map_or(0.0, |s| s.probability.get());
        let spike = if self.spike_rng.chance(spike_p) { self.plan.spike } else { None };
        let corrupt = self.corruption_rng.chance(self.plan.read_corruption_probability.get());
        let corruption = (kind == OpKind::Read && corrupt).then(|| Corruption { seed: self.corruption_rng.next_u64() });
        FaultDecision { error, hang_ns, spike, corruption }
    }
}

/// Deterministic damage to a read's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Corruption {
    /// Chooses which bytes change and how.
    pub seed: u64,
}

impl Corruption {
    /// Most bytes one corruption alters.
    pub const BYTES_MAX: usize = 8;

    /// Alters between 1 and [`Corruption::BYTES_MAX`] distinct bytes of `buf`
    /// (every altered byte differs from before); the same seed and length
    /// always alter the same positions in the same way. Returns how many
    /// bytes changed (0 only for an empty buffer).
    pub fn apply(&self, buf: &mut [u8]) -> usize {
        if buf.is_empty() {
            return 0;
        }
        let mut rng = Prng::new(self.seed);
        let len = buf.len() as u64;
        let count = 1 + rng.below(len.min(Self::BYTES_MAX as u64)) as usize;
        let mut chosen = [usize::MAX; Self::BYTES_MAX];
        let mut altered = 0;
        while altered < count {
            let position = rng.below(len) as usize;
            if chosen[..altered].contains(&position) {
                continue;
            }
            chosen[altered] = position;
            // XOR with a non-zero mask always changes the byte.
            buf[position] ^= 1 + rng.below(255) as u8;
            altered += 1;
        }
        count
    }
}

/// A byte range on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// A flush in progress; see [`UnsyncedWrites::flush_started`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushTicket(u64);

/// Tracks writes not yet made durable by a flush, to decide what a crash
/// loses.
///
/// The caller reports events in the order it observes them: each completed
/// write, and each flush's start and completion. A flush makes durable the
/// writes that had completed *when it was submitted* (fsync semantics);
/// writes completing while it runs stay unsynced. Memory is one entry per
/// write since the last completed flush, plus the caller's payload `T` for
/// each (the FUSE shim keeps the bytes a write replaced, to undo it).
#[derive(Debug, Clone)]
pub struct UnsyncedWrites<T = ()> {
    next_seq: u64,
    pending: VecDeque<(u64, Extent, T)>,
    loss_probability: Probability,
    rng: Prng,
}

/// One unsynced write at a crash: what it covered, the caller's payload,
/// and whether the crash lost it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashedWrite<T> {
    /// The bytes the write covered.
    pub extent: Extent,
    /// What the caller recorded with it.
    pub payload: T,
    /// The crash lost it (drawn with the plan's loss probability).
    pub lost: bool,
}

impl UnsyncedWrites<()> {
    /// A write of `len` bytes at `offset` completed.
    pub fn record_write(&mut self, offset: u64, len: u64) {
        self.record(offset, len, ());
    }
}

impl<T> UnsyncedWrites<T> {
    /// A tracker using the plan's loss probability and a stream forked from `rng`.
    pub fn new(plan: &FaultPlan, rng: &Prng) -> UnsyncedWrites<T> {
        UnsyncedWrites {
            next_seq: 0,
            pending: VecDeque::new(),
            loss_probability: plan.unsynced_write_loss_probability,
            rng: rng.fork("faults.crash"),
        }
    }

    /// A write of `len` bytes at `offset` completed; `payload` is kept
    /// with it until a flush covers it or a crash hands it back.
    pub fn record(&mut self, offset: u64, len: u64, payload: T) {
        self.pending.push_back((self.next_seq, Extent { offset, len }, payload));
        self.next_seq += 1;
    }

    /// Forgets the most recent write (it failed after all); returns its payload.
    pub fn unrecord_last(&mut self) -> Option<T> {
        self.pending.pop_back().map(|(_, _, p)| p)
    }

    /// A flush was submitted; pass the ticket to [`Self::flush_completed`].
    pub fn flush_started(&self) -> FlushTicket {
        FlushTicket(self.next_seq)
    }

    /// The flush from `ticket` completed: writes recorded before it started
    /// are durable. Returns their payloads.
    pub fn flush_completed(&mut self, ticket: FlushTicket) -> Vec<T> {
        let mut done = Vec::new();
        while self.pending.front().is_some_and(|(seq, _, _)| *seq < ticket.0) {
            if let Some((_, _, p)) = self.pending.pop_front() {
                done.push(p);
            }
        }
        done
    }

    /// Bytes written but not yet durable (overlaps counted twice).
    pub fn unsynced_bytes(&self) -> u64 {
        self.pending.iter().map(|(_, e, _)| e.len).sum()
    }

    /// Unsynced writes, oldest first, for a caller that must adjust them
    /// (a truncate shortens what a crash can lose).
    pub fn pending_mut(&mut self) -> impl Iterator<Item = (&mut Extent, &mut T)> {
        self.pending.iter_mut().map(|(_, e, p)| (e, p))
    }

    /// True if no write is waiting for a flush.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The device crashed: every unsynced write, oldest first, each lost
    /// with the plan's `unsynced_write_loss_probability` (one draw per
    /// write, in order). Forgets everything pending.
    pub fn crash_each(&mut self) -> Vec<CrashedWrite<T>> {
        let p = self.loss_probability.get();
        let pending = std::mem::take(&mut self.pending);
        pending
            .into_iter()
            .map(|(_, extent, payload)| {
                let lost = self.rng.chance(p) && extent.len > 0;
                CrashedWrite { extent, payload, lost }
            })
            .collect()
    }

    /// The device crashed: returns the lost extents, sorted and merged where
    /// they overlap or touch, and forgets everything pending. Each unsynced
    /// write is lost with the plan's `unsynced_write_loss_probability`.
    pub fn crash(&mut self) -> Vec<Extent> {
        let mut lost: Vec<Extent> = self.crash_each().into_iter().filter(|w| w.lost).map(|w| w.extent).collect();
        lost.sort_unstable();
        let mut merged: Vec<Extent> = Vec::with_capacity(lost.len());
        for extent in lost {
            match merged.last_mut() {
                Some(last) if extent.offset <= last.end() => {
                    last.len = last.len.max(extent.end() - last.offset);
                }
                _ => merged.push(extent),
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> FaultPlan {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn error_rate_matches_the_configured_probability() {
        let plan = plan("error_probability: {read: 0.01, write: 0.05}");
        let mut injector = FaultInjector::new(&plan, &Prng::new(11));
        let n = 100_000;
        let read_errors = (0..n).filter(|_| injector.decide(OpKind::Read).error).count();
        let write_errors = (0..n).filter(|_| injector.decide(OpKind::Write).error).count();
        let trim_errors = (0..n).filter(|_| injector.decide(OpKind::Trim).error).count();
        assert!((900..=1_100).contains(&read_errors), "read errors {read_errors} for expected 1000");
        assert!((4_500..=5_500).contains(&write_errors), "write errors {write_errors} for expected 5000");
        assert_eq!(trim_errors, 0);
    }

    #[test]
    fn hangs_spikes_and_corruption_are_drawn_at_their_rates() {
        let plan = plan(
            "hang: {probability: 0.002, duration: 30s}\n\
             spike: {probability: 0.01, multiplier: 10, add: 1ms}\n\
             read_corruption_probability: 0.005",
        );
        let mut injector = FaultInjector::new(&plan, &Prng::new(12));
        let decisions: Vec<FaultDecision> = (0..100_000).map(|_| injector.decide(OpKind::Read)).collect();
        let hangs = decisions.iter().filter(|d| d.hang_ns == Some(30_000_000_000)).count();
        let spikes = decisions.iter().filter(|d| d.spike.is_some()).count();
        let corrupt = decisions.iter().filter(|d| d.corruption.is_some()).count();
        assert!((180..=220).contains(&hangs), "hangs {hangs}");
        assert!((900..=1_100).contains(&spikes), "spikes {spikes}");
        assert!((450..=550).contains(&corrupt), "corruptions {corrupt}");
        assert_eq!(plan.spike.unwrap().apply(100_000), 2_000_000);
        // Writes are never "corrupted" (corruption is what a read returns).
        let mut injector = FaultInjector::new(&plan, &Prng::new(12));
        assert!((0..10_000).all(|_| injector.decide(OpKind::Write).corruption.is_none()));
    }

    #[test]
    fn corruption_is_deterministic_and_always_changes_bytes() {
        let original: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let corrupt = |seed: u64| {
            let mut buf = original.clone();
            let changed = Corruption { seed }.apply(&mut buf);
            (buf, changed)
        };
        let (a, changed_a) = corrupt(1);
        let (a_again, _) = corrupt(1);
        let (b, _) = corrupt(2);
        assert_eq!(a, a_again, "same seed, same damage");
        assert_ne!(a, b, "different seed, different damage");
        let differing = a.iter().zip(&original).filter(|(x, y)| x != y).count();
        assert_eq!(differing, changed_a);
        assert!((1..=Corruption::BYTES_MAX).contains(&differing));
        for seed in 0..1_000 {
            let mut one = [7u8];
            assert_eq!(Corruption { seed }.apply(&mut one), 1);
            assert_ne!(one[0], 7);
        }
        assert_eq!(Corruption { seed: 3 }.apply(&mut []), 0);
    }

    #[test]
    fn crash_loses_exactly_the_unflushed_extents() {
        let plan = FaultPlan::default();
        let mut tracker = UnsyncedWrites::<()>::new(&plan, &Prng::new(5));
        tracker.record_write(0, 4096);
        tracker.record_write(8192, 4096);
        let ticket = tracker.flush_started();
        // Completes while the flush is in flight: not covered by it.
        tracker.record_write(4096, 4096);
        tracker.flush_completed(ticket);
        tracker.record_write(65536, 512);
        tracker.record_write(8192, 100);
        assert_eq!(tracker.unsynced_bytes(), 4096 + 512 + 100);
        let lost = tracker.crash();
        assert_eq!(
            lost,
            vec![Extent { offset: 4096, len: 4196 }, Extent { offset: 65536, len: 512 }],
            "[4096, 8192) and [8192, 8292) touch and merge"
        );
        assert!(tracker.crash().is_empty(), "a crash forgets what it lost");

        let mut tracker = UnsyncedWrites::<()>::new(&plan, &Prng::new(5));
        tracker.record_write(0, 4096);
        let ticket = tracker.flush_started();
        tracker.flush_completed(ticket);
        assert!(tracker.crash().is_empty(), "everything was flushed");
    }

    #[test]
    fn partial_loss_probability_loses_a_seeded_subset() {
        let plan = plan("unsynced_write_loss_probability: 0.5");
        let run = |seed| {
            let mut tracker = UnsyncedWrites::<()>::new(&plan, &Prng::new(seed));
            for i in 0..1_000 {
                tracker.record_write(i * 8192, 4096);
            }
            tracker.crash()
        };
        let lost = run(1);
        assert!((400..=600).contains(&lost.len()), "lost {}", lost.len());
        assert_eq!(lost, run(1));
        assert_ne!(lost, run(2));
    }

    #[test]
    fn crash_each_hands_back_every_unsynced_write_in_order_with_its_payload() {
        let plan = plan("unsynced_write_loss_probability: 1");
        let mut tracker = UnsyncedWrites::<&str>::new(&plan, &Prng::new(5));
        tracker.record(0, 4096, "a");
        let ticket = tracker.flush_started();
        tracker.record(4096, 10, "b");
        assert_eq!(tracker.flush_completed(ticket), vec!["a"]);
        tracker.record(0, 0, "empty");
        tracker.record(100, 5, "c");
        assert_eq!(tracker.unrecord_last(), Some("c"));
        for (e, _) in tracker.pending_mut() {
            e.len = e.len.min(8);
        }
        let crashed = tracker.crash_each();
        let got: Vec<(u64, u64, &str, bool)> =
            crashed.iter().map(|w| (w.extent.offset, w.extent.len, w.payload, w.lost)).collect();
        assert_eq!(got, vec![(4096, 8, "b", true), (0, 0, "empty", false)], "an empty write loses nothing");
        assert!(tracker.is_empty());
    }

    #[test]
    fn plan_rejects_bad_values_naming_them() {
        for (yaml, needle) in [
            ("error_probability: {read: 2}", "from 0 to 1"),
            ("error_probability: {reed: 0.1}", "unknown field `reed`"),
            ("hang: {probability: 0.1}", "missing field `duration`"),
            ("spikes: {probability: 0.1}", "unknown field `spikes`"),
        ] {
            let err = serde_yaml_ng::from_str::<FaultPlan>(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
        let low = plan("spike: {probability: 0.1, multiplier: 0.5}");
        assert!(low.validate().unwrap_err().contains("at least 1"));
    }
}
