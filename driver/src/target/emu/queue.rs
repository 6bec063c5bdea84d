//! The `emu://` queue: ops wait in a heap ordered by the completion time the
//! device model gave them, and are handed back when that time has come.
//!
//! Who moves time:
//! - real clock: the host. `reap` sleeps most of the way to the next due
//!   completion and yields through the last stretch.
//! - virtual clock: `reap` itself. When nothing is due yet it jumps the clock
//!   to the earliest pending completion, or by the reap timeout if that comes
//!   first (so an op hung for longer than `io.timeout` still ends in the
//!   engine's stall check, after `io.timeout` of virtual time and no wall
//!   time). Completions are stamped with the exact due time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlpdrive_emu::DeviceOp;

use super::{Object, State};
use crate::buf::AlignedBuf;
use crate::target::{Completion, IoMode, Op, Queue, QueueFull, TargetError};

/// Real clock: the last stretch before a completion is due is spent
/// yielding, not sleeping: a sleeping thread on a busy 2-core VM wakes up to
/// a few hundred microseconds late, which would inflate the tail latencies
/// the profile asks for.
const SPIN_NS: u64 = 300_000;

struct Pending {
    tag: u64,
    op: Op,
    buf: Option<AlignedBuf>,
    submitted: Instant,
    outcome: mlpdrive_emu::Outcome,
    obj: Option<Arc<Object>>,
    /// Refused before reaching the device (a write beyond the object's extent).
    refused: Option<TargetError>,
}

pub(super) struct EmuQueue {
    state: Arc<State>,
    depth: usize,
    /// Ops by completion time (then submission order).
    pending: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// The ops themselves, indexed by the heap's slot numbers.
    slots: Vec<Option<Pending>>,
    seq: u64,
}

impl EmuQueue {
    pub(super) fn new(state: Arc<State>, depth: usize) -> EmuQueue {
        EmuQueue { state, depth, pending: BinaryHeap::new(), slots: Vec::with_capacity(depth), seq: 0 }
    }

    fn store(&mut self, p: Pending) -> usize {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(p);
                i
            }
            None => {
                self.slots.push(Some(p));
                self.slots.len() - 1
            }
        }
    }

    fn take(&mut self, i: usize) -> Pending {
        self.slots[i].take().expect("pending op")
    }

    /// Hands back every op due by `now_ns`; returns how many.
    fn pop_due(&mut self, now_ns: u64, out: &mut Vec<Completion>) -> usize {
        let virtual_time = self.state.clock.is_virtual();
        let mut n = 0;
        while let Some(&Reverse((due, _, slot))) = self.pending.peek() {
            if due > now_ns {
                break;
            }
            self.pending.pop();
            let p = self.take(slot);
            // Virtual time: stamped with the exact due time (deterministic).
            // Real time: when the completion was really handed back.
            let completed = if virtual_time { self.state.instant_of(due) } else { self.state.clock.now() };
            out.push(finish(p, completed));
            n += 1;
        }
        n
    }

    fn next_due(&self) -> Option<u64> {
        self.pending.peek().map(|Reverse((due, _, _))| *due)
    }

    fn reap_virtual(&mut self, min_complete: usize, timeout: Duration, out: &mut Vec<Completion>) -> usize {
        let now_ns = self.state.ns_of(self.state.clock.now());
        let mut n = self.pop_due(now_ns, out);
        if n < min_complete
            && let Some(due) = self.next_due()
        {
            let limit_ns = now_ns.saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
            self.state.clock.sleep_until(self.state.instant_of(due.min(limit_ns)));
            n += self.pop_due(self.state.ns_of(self.state.clock.now()), out);
        }
        n
    }

    fn reap_real(&mut self, min_complete: usize, timeout: Duration, out: &mut Vec<Completion>) -> usize {
        let clock = &self.state.clock;
        let deadline_ns = self.state.ns_of(clock.now()).saturating_add(timeout.as_nanos() as u64);
        let mut n = 0;
        loop {
            let now_ns = self.state.ns_of(self.state.clock.now());
            n += self.pop_due(now_ns, out);
            let Some(due) = self.next_due() else { break };
            if n >= min_complete || now_ns >= deadline_ns {
                break;
            }
            // Sleep most of the way, then yield until due: thread sleeps
            // overshoot by tens of microseconds, which would distort
            // sub-millisecond latencies.
            let wake = due.min(deadline_ns);
            let left = wake.saturating_sub(now_ns);
            if left > SPIN_NS + 50_000 {
                self.state.clock.sleep_until(self.state.instant_of(wake - SPIN_NS));
            } else {
                std::thread::yield_now();
            }
        }
        n
    }
}

/// Applies a completed op to the object's store and builds its completion.
fn finish(p: Pending, completed: Instant) -> Completion {
    let Pending { tag, op, mut buf, submitted, outcome, obj, refused } = p;
    let done = |result, buf| Completion { tag, op, result, buf, data_start: 0, submitted, completed };
    if let Some(e) = refused {
        return done(Err(e), buf);
    }
    let Some(obj) = obj else {
        let e = TargetError::namespace(format!("unknown object handle {}", op.obj().0));
        return done(Err(e), buf);
    };
    if let Err(e) = outcome.result {
        let (what, offset) = match op {
            Op::Read { offset, .. } => ("read", offset),
            Op::Write { offset, .. } => ("write", offset),
            Op::Commit { size, .. } => ("flush", size),
        };
        return done(Err(TargetError::io(what, obj.name.to_string(), offset, e.errno())), buf);
    }
    let mut data = obj.data.lock().expect("object poisoned");
    let result = match op {
        Op::Write { offset, len, .. } => {
            let b = buf.as_ref().expect("write carries a buffer");
            data.write(offset, &b.as_slice()[..len as usize])
                .map(|()| len)
                .map_err(|msg| TargetError::namespace(format!("write {} at offset {offset}: {msg}", obj.name)))
        }
        Op::Read { offset, len, .. } => {
            let b = buf.as_mut().expect("read carries a buffer");
            let n = data.read(offset, &mut b.as_mut_slice()[..len as usize]);
            if let Some(c) = outcome.corruption {
                c.apply(&mut b.as_mut_slice()[..n]);
            }
            Ok(n as u32)
        }
        Op::Commit { size, .. } => {
            data.set_len(size);
            Ok(0)
        }
    };
    drop(data);
    done(result, buf)
}

impl Queue for EmuQueue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
        if self.pending.len() >= self.depth {
            return Err(QueueFull { op, buf });
        }
        let obj = self.state.get(op.obj());
        let submitted = self.state.clock.now();
        let now_ns = self.state.ns_of(submitted);
        let mut refused = None;
        let dev_op = match (&obj, op) {
            (Some(o), Op::Read { offset, len, .. }) => DeviceOp::read(o.base + offset, u64::from(len)),
            (Some(o), Op::Write { offset, len, .. }) => {
                if offset + u64::from(len) > o.limit {
                    refused = Some(TargetError::io("write", o.name.to_string(), offset, libc::EFBIG));
                }
                DeviceOp::write(o.base + offset.min(o.limit), u64::from(len).min(o.limit - offset.min(o.limit)))
            }
            _ => DeviceOp::flush(),
        };
        let outcome = self.state.device.lock().expect("device poisoned").submit(dev_op, now_ns);
        let p = Pending { tag, op, buf, submitted, outcome, obj, refused };
        let slot = self.store(p);
        self.seq += 1;
        self.pending.push(Reverse((outcome.complete_ns, self.seq, slot)));
        Ok(())
    }

    fn reap(
        &mut self,
        min_complete: usize,
        timeout: Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, TargetError> {
        Ok(if self.state.clock.is_virtual() {
            self.reap_virtual(min_complete, timeout, out)
        } else {
            self.reap_real(min_complete, timeout, out)
        })
    }

    fn io_mode(&self) -> IoMode {
        let clock = if self.state.clock.is_virtual() { "virtual" } else { "real" };
        let store = match self.state.store {
            super::StoreKind::Mem => "in-memory store",
            super::StoreKind::None => "store=none (block identities only, reads regenerated)",
        };
        IoMode {
            direct: false,
            engine: "emu".into(),
            registered_buffers: false,
            note: Some(format!("emu:// target: {store}, timing from the device model on the {clock} clock")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::{EmuTarget, StoreKind};
    use super::*;
    use crate::buf::BufPool;
    use crate::target::Target;
    use crate::target::uri::EmuSpec;

    const PROFILE: &str = "description: test\ncapacity: 1GiB\nchannels: 1\nlatency:\n  read: {fixed: 1ms}\n  \
                           write: {fixed: 2ms}\n  flush: {fixed: 0}\n  trim: {fixed: 0}\n\
                           channel_bandwidth: {read: unlimited, write: unlimited}\n\
                           device_bandwidth: {read: unlimited, write: unlimited}\n";

    fn target(extra: &str, store: StoreKind) -> (tempfile::NamedTempFile, EmuTarget) {
        let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        write!(f, "{PROFILE}{extra}").unwrap();
        let spec =
            EmuSpec { profile: f.path().display().to_string(), seed: Some(1), size: None, virtual_clock: true, store };
        let t = EmuTarget::open(&spec, "emu://test", 0).unwrap();
        (f, t)
    }

    #[test]
    fn reap_jumps_virtual_time_to_each_completion_and_stamps_it_exactly() {
        let (_f, t) = target("", StoreKind::Mem);
        let clock = t.clock().expect("a virtual target brings its clock");
        let t0 = clock.now();
        let h = t.create("o", 1 << 20).unwrap();
        let mut pool = BufPool::new(4, 4096, 512);
        let mut q = t.queue(4, &mut pool).unwrap();
        for tag in 0..3 {
            let op = Op::Read { obj: h, offset: 0, len: 4096 };
            q.submit(tag, op, pool.take()).unwrap();
        }
        // One channel, 1 ms per read: due at 1, 2 and 3 ms of virtual time.
        let mut out = Vec::new();
        for k in 1..=3u64 {
            out.clear();
            assert_eq!(q.reap(1, Duration::from_secs(1), &mut out).unwrap(), 1);
            assert_eq!(clock.now() - t0, Duration::from_millis(k));
            assert_eq!(out[0].completed - t0, Duration::from_millis(k));
            assert_eq!(out[0].submitted, t0);
            assert_eq!(out[0].latency(), Duration::from_millis(k));
        }
        assert_eq!(q.in_flight(), 0);
        // Nothing pending: reap returns at once and time stays.
        out.clear();
        assert_eq!(q.reap(1, Duration::from_secs(1), &mut out).unwrap(), 0);
        assert_eq!(clock.now() - t0, Duration::from_millis(3));
    }

    #[test]
    fn a_hung_op_moves_virtual_time_only_by_the_reap_timeout() {
        let (_f, t) = target("faults:\n  hang: {probability: 1, duration: 60min}\n", StoreKind::Mem);
        let clock = t.clock().unwrap();
        let t0 = clock.now();
        let h = t.create("o", 1 << 20).unwrap();
        let mut pool = BufPool::new(1, 4096, 512);
        let mut q = t.queue(1, &mut pool).unwrap();
        q.submit(0, Op::Read { obj: h, offset: 0, len: 4096 }, pool.take()).unwrap();
        let mut out = Vec::new();
        assert_eq!(q.reap(1, Duration::from_millis(100), &mut out).unwrap(), 0);
        assert_eq!(
            clock.now() - t0,
            Duration::from_millis(100),
            "the engine sees the time pass and can declare a stall"
        );
        // Given an hour, it completes with the injected timeout error.
        assert_eq!(q.reap(1, Duration::from_secs(7200), &mut out).unwrap(), 1);
        assert_eq!(clock.now() - t0, Duration::from_secs(3600));
        assert!(out[0].result.as_ref().unwrap_err().to_string().contains("timed out"), "{:?}", out[0].result);
    }

    #[test]
    fn store_none_round_trips_generated_data_and_refuses_other_bytes() {
        let (_f, t) = target("", StoreKind::None);
        let h = t.create("o", 1 << 20).unwrap();
        let mut pool = BufPool::new(2, 8192, 512);
        let mut q = t.queue(2, &mut pool).unwrap();
        let key = crate::datagen::object_key("o");
        let mut b = pool.take().unwrap();
        crate::datagen::fill(&mut b.as_mut_slice()[..8192], 5, key, 1, 0);
        q.submit(0, Op::Write { obj: h, offset: 0, len: 8192 }, Some(b)).unwrap();
        let mut out = Vec::new();
        q.reap(1, Duration::from_secs(1), &mut out).unwrap();
        assert_eq!(*out[0].result.as_ref().unwrap(), 8192);
        pool.give(out.pop().unwrap().buf.unwrap());
        q.submit(1, Op::Read { obj: h, offset: 0, len: 8192 }, pool.take()).unwrap();
        q.reap(1, Duration::from_secs(1), &mut out).unwrap();
        let expect = crate::datagen::Expect { seed: 5, object: key, generation: Some(1) };
        let v = crate::datagen::verify(out[0].data(), 0, &expect);
        assert!(v.is_ok() && v.verified_bytes == 8192, "{v:?}");
        pool.give(out.pop().unwrap().buf.unwrap());
        // Zeros are not mlpdrive data: the write fails with the reason.
        let mut b = pool.take().unwrap();
        b.as_mut_slice().fill(0);
        q.submit(2, Op::Write { obj: h, offset: 8192, len: 4096 }, Some(b)).unwrap();
        q.reap(1, Duration::from_secs(1), &mut out).unwrap();
        let e = out[0].result.as_ref().unwrap_err().to_string();
        assert!(e.contains("write o at offset 8192") && e.contains("store=none"), "{e}");
        assert_eq!(t.open("o").unwrap().unwrap().1, 8192, "the refused write did not grow the object");
    }
}
