//! `emu://PROFILE`: an emulated device in this process.
//!
//! Timing and faults come from the device model in `mlpdrive-emu`: each op is
//! handed to the model at submission, which says when it completes and how
//! (EIO, ENOSPC, a hang that ends in ETIMEDOUT, corrupted read data); the
//! queue ([`queue`]) delivers the completion at that time. Objects are laid
//! out on the emulated device as 1 MiB-aligned extents, so capacity and
//! sequential detection see realistic offsets.
//!
//! Two choices in the URI:
//! - `clock=real` (default): completions are delivered at that time on the
//!   host's clock. `clock=virtual`: the target owns a virtual clock
//!   ([`crate::clock::Clock::new_virtual`]) that the run adopts
//!   ([`Target::clock`]); the queue jumps it to the next completion instead
//!   of waiting, so the run is a deterministic discrete-event simulation.
//! - `store=mem` (default): objects' bytes in memory. `store=none`: only the
//!   identity and checksum of each 4 KiB block (40 bytes), reads regenerate the data
//!   ([`store`]).

mod chunks;
mod queue;
mod span;
mod store;

pub use store::StoreKind;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mlpdrive_emu::{Bandwidth, Capacity, Device, Profile};

use super::uri::EmuSpec;
use super::{Capabilities, ObjectHandle, Queue, Target, TargetError, TargetInfo};
use crate::buf::{BufPool, align_up};
use crate::clock::Clock;
use crate::error::Error;
use chunks::ChunkPool;
use store::ObjectData;

/// Extents start on 1 MiB boundaries of the emulated device.
const EXTENT_ALIGN: u64 = 1 << 20;
/// Buffer alignment the emulated device asks for (like a 512 B-sector disk).
const ALIGN: usize = 512;

struct Object {
    name: Arc<str>,
    /// Offset of the object's extent on the emulated device.
    base: u64,
    /// Bytes reserved for the object on the device.
    limit: u64,
    data: Mutex<ObjectData>,
}

struct State {
    objects: RwLock<Vec<Option<Arc<Object>>>>,
    next_free: Mutex<u64>,
    device: Mutex<Device>,
    /// The run's clock (the target's own when virtual).
    clock: Clock,
    /// The device model's time 0 on `clock`.
    epoch: Instant,
    capacity: Option<u64>,
    store: StoreKind,
    /// Chunks of deleted `store=mem` objects, for new ones.
    chunks: Arc<ChunkPool>,
}

impl State {
    /// Device-model nanoseconds of an instant on the clock.
    fn ns_of(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant of a device-model time.
    fn instant_of(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
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
        if spec.virtual_clock
            && let Some(kind) = costless_op(&profile)
        {
            return Err(Error::usage(format!(
                "target {display}: on profile `{}` a {kind} takes no time (zero latency, unlimited bandwidth), so \
                 virtual time would never advance and a timed run would never end; use clock=real, or a profile \
                 whose reads and writes take time",
                profile.name
            )));
        }
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
        let clock = if spec.virtual_clock { Clock::new_virtual() } else { Clock::real() };
        let state = State {
            objects: RwLock::new(Vec::new()),
            next_free: Mutex::new(0),
            device: Mutex::new(device),
            epoch: clock.now(),
            clock,
            capacity,
            store: spec.store,
            chunks: Arc::default(),
        };
        Ok(EmuTarget { info, state: Arc::new(state) })
    }

    /// The seed the device model uses.
    pub fn device_seed(&self) -> u64 {
        self.state.device.lock().expect("device poisoned").seed()
    }
}

/// The op kind ("read" or "write") that costs no time on this profile, if
/// any: no latency and no bandwidth limit on its path.
fn costless_op(p: &Profile) -> Option<&'static str> {
    let unlimited = |b: Bandwidth| b == Bandwidth::Unlimited;
    let total_free = unlimited(p.device_bandwidth.total);
    if p.latency.read.is_zero()
        && unlimited(p.channel_bandwidth.read)
        && unlimited(p.device_bandwidth.read)
        && total_free
    {
        return Some("read");
    }
    if p.latency.write.is_zero()
        && unlimited(p.channel_bandwidth.write)
        && unlimited(p.device_bandwidth.write)
        && total_free
    {
        return Some("write");
    }
    None
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

    fn keeps_any_bytes(&self) -> bool {
        self.state.store != StoreKind::None
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
        let data = Mutex::new(ObjectData::new(self.state.store, &self.state.chunks));
        let obj = Arc::new(Object { name: Arc::from(name), base, limit, data });
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
        Ok(self.state.find(name).map(|(h, o)| (h, o.data.lock().expect("object poisoned").len())))
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
            .map(|o| (o.name.to_string(), o.data.lock().expect("object poisoned").len()))
            .collect();
        out.sort();
        Ok(out)
    }

    fn queue(&self, depth: usize, _pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        Ok(Box::new(queue::EmuQueue::new(self.state.clone(), depth)))
    }

    fn clock(&self) -> Option<Clock> {
        self.state.clock.is_virtual().then(|| self.state.clock.clone())
    }
}
