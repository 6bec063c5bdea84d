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
