//! `emu://PROFILE`: an emulated device in this process.
//!
//! Bytes live in memory (`store=mem`); timing and faults come from the
//! device model in `mlpdrive-emu` driven by the real clock: each op is handed
//! to the model at submission, which says when it completes and how (EIO,
//! ENOSPC, a hang that ends in ETIMEDOUT, corrupted read data); the queue
//! delivers the completion at that time. Objects are laid out on the
//! emulated device as 1 MiB-aligned extents, so capacity and sequential
//! detection see realistic offsets. The virtual clock and `store=none` are
//! not available yet (the URI parser says so).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mlpdrive_emu::{Capacity, Clock, Device, DeviceOp, Profile, RealClock};

use super::uri::EmuSpec;
use super::{Capabilities, Completion, IoMode, ObjectHandle, Op, Queue, QueueFull, Target, TargetError, TargetInfo};
use crate::buf::{AlignedBuf, BufPool, align_up};
use crate::error::Error;

/// Extents start on 1 MiB boundaries of the emulated device.
const EXTENT_ALIGN: u64 = 1 << 20;
/// The last stretch before a completion is due is spent yielding, not
/// sleeping: a sleeping thread on a busy 2-core VM wakes up to a few hundred
/// microseconds late, which would inflate the tail latencies the profile
/// asks for.
const SPIN_NS: u64 = 300_000;
/// Buffer alignment the emulated device asks for (like a 512 B-sector disk).
const ALIGN: usize = 512;

struct Object {
    name: Arc<str>,
    /// Offset of the object's extent on the emulated device.
    base: u64,
    /// Bytes reserved for the object on the device.
    limit: u64,
    data: Mutex<Vec<u8>>,
}

struct State {
    objects: RwLock<Vec<Option<Arc<Object>>>>,
    next_free: Mutex<u64>,
    device: Mutex<Device>,
    clock: RealClock,
    capacity: Option<u64>,
}

pub struct EmuTarget {
    info: TargetInfo,
    state: Arc<State>,
}

impl EmuTarget {
    /// Loads the profile and builds the device (seed: the URI's, else the
    /// run's).
    pub fn open(spec: &EmuSpec, display: &str, run_seed: u64) -> Result<EmuTarget, Error> {
        let profile = Profile::load(&spec.profile).map_err(|e| Error::usage(format!("target {display}: {e}")))?;
        let mut device = Device::new(&profile, spec.seed.unwrap_or(run_seed));
        if let Some(size) = spec.size {
            device = device.with_capacity(Capacity::Bytes(size));
        }
        let capacity = device.capacity().bytes();
        let info = TargetInfo {
            kind: "emu",
            location: display.to_string(),
            caps: Capabilities { align: ALIGN, ranged_writes: true, stores_data: true, max_object_bytes: capacity },
        };
        let state = State {
            objects: RwLock::new(Vec::new()),
            next_free: Mutex::new(0),
            device: Mutex::new(device),
            clock: RealClock::new(),
            capacity,
        };
        Ok(EmuTarget { info, state: Arc::new(state) })
    }

    /// The seed the device model uses.
    pub fn device_seed(&self) -> u64 {
        self.state.device.lock().expect("device poisoned").seed()
    }
}

impl State {
    fn get(&self, h: ObjectHandle) -> Option<Arc<Object>> {
        self.objects.read().expect("objects poisoned").get(h.0 as usize).cloned().flatten()
    }

    fn find(&self, name: &str) -> Option<(ObjectHandle, Arc<Object>)> {
        let objects = self.objects.read().expect("objects poisoned");
        objects
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, o)| o.as_ref().filter(|o| &*o.name == name).map(|o| (ObjectHandle(i as u32), o.clone())))
    }
}

impl Target for EmuTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn create(&self, name: &str, size_hint: u64) -> Result<ObjectHandle, TargetError> {
        let limit = align_up(size_hint.max(1), EXTENT_ALIGN);
        let base = {
            let mut next = self.state.next_free.lock().expect("alloc poisoned");
            if let Some(cap) = self.state.capacity
                && *next + limit > cap
            {
                return Err(TargetError::io("create", name, *next, libc::ENOSPC));
            }
            let b = *next;
            *next += limit;
            b
        };
        let obj = Arc::new(Object { name: Arc::from(name), base, limit, data: Mutex::new(Vec::new()) });
        let mut objects = self.state.objects.write().expect("objects poisoned");
        for o in objects.iter_mut() {
            if o.as_ref().is_some_and(|o| &*o.name == name) {
                *o = None;
            }
        }
        objects.push(Some(obj));
        Ok(ObjectHandle(objects.len() as u32 - 1))
    }

    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        Ok(self.state.find(name).map(|(h, o)| (h, o.data.lock().expect("object poisoned").len() as u64)))
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        if let Some((h, _)) = self.state.find(name) {
            self.state.objects.write().expect("objects poisoned")[h.0 as usize] = None;
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let objects = self.state.objects.read().expect("objects poisoned");
        let mut out: Vec<(String, u64)> = objects
            .iter()
            .flatten()
            .filter(|o| o.name.starts_with(prefix))
            .map(|o| (o.name.to_string(), o.data.lock().expect("object poisoned").len() as u64))
            .collect();
        out.sort();
        Ok(out)
    }

    fn queue(&self, depth: usize, _pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        Ok(Box::new(EmuQueue {
            state: self.state.clone(),
            depth,
            pending: BinaryHeap::new(),
            slots: Vec::with_capacity(depth),
            seq: 0,
        }))
    }
}

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

struct EmuQueue {
    state: Arc<State>,
    depth: usize,
    /// Ops by completion time (then submission order).
    pending: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// The ops themselves, indexed by the heap's slot numbers.
    slots: Vec<Option<Pending>>,
    seq: u64,
}

impl EmuQueue {
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

    /// Applies a completed op to memory and builds its completion.
    fn finish(&self, p: Pending, now: Instant) -> Completion {
        let Pending { tag, op, mut buf, submitted, outcome, obj, refused } = p;
        let done = |result, buf| Completion { tag, op, result, buf, data_start: 0, submitted, completed: now };
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
                let (o, l) = (offset as usize, len as usize);
                if data.len() < o + l {
                    data.resize(o + l, 0);
                }
                let b = buf.as_ref().expect("write carries a buffer");
                data[o..o + l].copy_from_slice(&b.as_slice()[..l]);
                Ok(len)
            }
            Op::Read { offset, len, .. } => {
                let o = (offset as usize).min(data.len());
                let n = (len as usize).min(data.len() - o);
                let b = buf.as_mut().expect("read carries a buffer");
                b.as_mut_slice()[..n].copy_from_slice(&data[o..o + n]);
                if let Some(c) = outcome.corruption {
                    c.apply(&mut b.as_mut_slice()[..n]);
                }
                Ok(n as u32)
            }
            Op::Commit { size, .. } => {
                data.resize(size as usize, 0);
                Ok(0)
            }
        };
        drop(data);
        done(result, buf)
    }
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
        let now_ns = self.state.clock.now_ns();
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
        let p = Pending { tag, op, buf, submitted: Instant::now(), outcome, obj, refused };
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
        let deadline_ns = self.state.clock.now_ns().saturating_add(timeout.as_nanos() as u64);
        let mut n = 0;
        loop {
            let now_ns = self.state.clock.now_ns();
            while let Some(&Reverse((due, _, slot))) = self.pending.peek() {
                if due > now_ns {
                    break;
                }
                self.pending.pop();
                let p = self.take(slot);
                out.push(self.finish(p, Instant::now()));
                n += 1;
            }
            let Some(&Reverse((due, _, _))) = self.pending.peek() else { break };
            if n >= min_complete || now_ns >= deadline_ns {
                break;
            }
            // Sleep most of the way, then yield until due: thread sleeps
            // overshoot by tens of microseconds, which would distort
            // sub-millisecond latencies.
            let wake = due.min(deadline_ns);
            let left = wake.saturating_sub(now_ns);
            if left > SPIN_NS + 50_000 {
                self.state.clock.sleep_until(wake - SPIN_NS);
            } else {
                std::thread::yield_now();
            }
        }
        Ok(n)
    }

    fn io_mode(&self) -> IoMode {
        IoMode {
            direct: false,
            engine: "emu".into(),
            registered_buffers: false,
            note: Some("emu:// target: in-memory store, timing from the device model on the real clock".into()),
        }
    }
}
