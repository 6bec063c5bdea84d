//! The device model: an op submitted at time *t* becomes a completion time
//! (or an error).
//!
//! What a request sees on a real device, and how each piece is modelled:
//!
//! - **Internal parallelism.** A device serves up to `channels` ops at once
//!   (NAND dies and planes, an HDD's one actuator, S3's parallel streams).
//!   Each op takes the channel that frees up first and holds it until it
//!   completes, so queueing delay is not a parameter: it emerges when more
//!   ops are in flight than there are channels.
//! - **Service time** on a channel = a base latency sampled from the kind's
//!   distribution (spiked or stalled now and then) + `len ÷ per-channel
//!   bandwidth`. A read or write that starts where the previous one ended can
//!   use a separate `sequential_*` latency (an HDD skips the seek).
//! - **Device-wide bandwidth caps** (read, write, total) are pipes: each op
//!   reserves `len ÷ cap` of pipe time from when it starts (or from when the
//!   pipe frees up) and cannot complete before its reservation ends. Bytes
//!   completed by any time *T* never exceed `cap × T` (plus one op), however
//!   many channels there are. There is no burst credit.
//! - **Write-back cache.** With a `write_cache`, writes do not take a
//!   channel: they complete after the write latency once the cache has room
//!   for them. Dirty bytes drain to the media at `drain_bandwidth`, so a
//!   burst is fast until the cache is full and then proceeds at media speed.
//!   A flush completes when the bytes dirty at its submission have drained,
//!   plus the flush latency. Without a cache, writes use a channel like
//!   reads, and a flush costs only its latency.
//! - **Capacity.** A write ending beyond the capacity fails at once with
//!   ENOSPC; a read or trim beyond it with EINVAL.
//! - **Faults** ([`FaultInjector`]): EIO after the normal latency, hangs
//!   that hold their channel and then fail with ETIMEDOUT, latency spikes,
//!   and read corruption carried in the [`Outcome`].
//!
//! The model is a pure function of the profile, the seed and the sequence of
//! `(op, submit time)` it is given: it never reads a clock. The caller owns
//! time (real or virtual, see `clock.rs`) and decides when to deliver each
//! completion. Per op the work is O(log channels) (a heap of channel free
//! times) and the state is O(channels).
//!
//! Simplifications, on purpose: draining the write cache does not compete
//! with reads for channels; random-write IOPS limits of the media are not
//! modelled separately from bandwidth; a stall delays one op (and its
//! channel), not the whole device.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::fault::{Corruption, FaultInjector};
use crate::prng::Prng;
use crate::profile::Profile;
use crate::units::{Bandwidth, Capacity};

/// What an op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Read `len` bytes at `offset`.
    Read,
    /// Write `len` bytes at `offset`.
    Write,
    /// Make completed writes durable (`offset`/`len` are ignored).
    Flush,
    /// Discard a range (no data moves).
    Trim,
}

/// One operation on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceOp {
    /// Read, write, flush or trim.
    pub kind: OpKind,
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

impl DeviceOp {
    /// A read of `len` bytes at `offset`.
    pub fn read(offset: u64, len: u64) -> DeviceOp {
        DeviceOp { kind: OpKind::Read, offset, len }
    }

    /// A write of `len` bytes at `offset`.
    pub fn write(offset: u64, len: u64) -> DeviceOp {
        DeviceOp { kind: OpKind::Write, offset, len }
    }

    /// A flush.
    pub fn flush() -> DeviceOp {
        DeviceOp { kind: OpKind::Flush, offset: 0, len: 0 }
    }

    /// A trim of `len` bytes at `offset`.
    pub fn trim(offset: u64, len: u64) -> DeviceOp {
        DeviceOp { kind: OpKind::Trim, offset, len }
    }
}

/// Why an op failed; [`DeviceError::errno`] gives the code a kernel would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DeviceError {
    /// Injected I/O error.
    #[error("I/O error (injected by the device profile)")]
    Io,
    /// The write ends beyond the device's capacity.
    #[error("no space left on the emulated device")]
    NoSpace,
    /// Injected hang: the op did not complete in time.
    #[error("operation timed out (injected hang)")]
    TimedOut,
    /// The range lies beyond the device's capacity.
    #[error("range beyond the end of the emulated device")]
    OutOfRange,
}

impl DeviceError {
    /// The errno a real device or file system returns for this failure.
    pub fn errno(self) -> i32 {
        match self {
            DeviceError::Io => libc::EIO,
            DeviceError::NoSpace => libc::ENOSPC,
            DeviceError::TimedOut => libc::ETIMEDOUT,
            DeviceError::OutOfRange => libc::EINVAL,
        }
    }
}

/// When and how an op completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// Completion time, on the same clock as the submit time.
    pub complete_ns: u64,
    /// Success, or the error to report at `complete_ns`.
    pub result: Result<(), DeviceError>,
    /// For a successful read: damage to apply to the returned bytes.
    pub corruption: Option<Corruption>,
}

/// A bandwidth cap as a pipe reserved in order (see the module docs).
#[derive(Debug, Clone)]
struct Pipe {
    rate: Bandwidth,
    free_ns: u64,
}

impl Pipe {
    fn new(rate: Bandwidth) -> Pipe {
        Pipe { rate, free_ns: 0 }
    }

    /// Reserves `len` bytes starting no earlier than `start_ns`; returns when
    /// the reservation ends.
    fn reserve(&mut self, start_ns: u64, len: u64) -> u64 {
        if self.rate == Bandwidth::Unlimited {
            return start_ns;
        }
        self.free_ns = self.free_ns.max(start_ns).saturating_add(self.rate.transfer_ns(len));
        self.free_ns
    }
}

/// Write-back cache state: dirty bytes as of a time, draining at a rate.
#[derive(Debug, Clone)]
struct Cache {
    size_bytes: u64,
    drain: Bandwidth,
    dirty_bytes: u64,
    /// Time `dirty_bytes` refers to; ahead of submissions only while writes
    /// are waiting for room (they are admitted in order).
    as_of_ns: u64,
}

impl Cache {
    fn dirty_at(&self, t_ns: u64) -> u64 {
        let drained = self.drain.bytes_in(t_ns.saturating_sub(self.as_of_ns));
        self.dirty_bytes.saturating_sub(drained)
    }

    /// Admits a write of `len` bytes submitted at `t_ns`; returns when it is
    /// in the cache (at once if there is room, else once enough has drained).
    fn admit(&mut self, t_ns: u64, len: u64) -> u64 {
        let start_ns = t_ns.max(self.as_of_ns);
        let dirty = self.dirty_at(start_ns);
        let wanted = dirty.saturating_add(len);
        if wanted <= self.size_bytes {
            self.dirty_bytes = wanted;
            self.as_of_ns = start_ns;
            return start_ns;
        }
        // Wait until the excess has drained; a write larger than the cache
        // leaves it full.
        let admitted_ns = start_ns.saturating_add(self.drain.transfer_ns(wanted - self.size_bytes));
        self.dirty_bytes = self.size_bytes;
        self.as_of_ns = admitted_ns;
        admitted_ns
    }

    /// When everything dirty at `t_ns` has reached the media.
    fn drained_by(&self, t_ns: u64) -> u64 {
        let start_ns = t_ns.max(self.as_of_ns);
        start_ns.saturating_add(self.drain.transfer_ns(self.dirty_at(start_ns)))
    }
}

/// An emulated device built from a [`Profile`] and a seed.
#[derive(Debug, Clone)]
pub struct Device {
    profile: Profile,
    seed: u64,
    capacity: Capacity,
    /// Min-heap of the times each channel becomes free.
    channel_free_ns: BinaryHeap<Reverse<u64>>,
    read_pipe: Pipe,
    write_pipe: Pipe,
    total_pipe: Pipe,
    cache: Option<Cache>,
    /// Where the last read or write ended (for sequential latency).
    last_end: Option<u64>,
    latency_rng: Prng,
    stall_rng: Prng,
    faults: FaultInjector,
}

impl Device {
    /// A device with the profile's parameters; every random choice comes
    /// from `seed`.
    pub fn new(profile: &Profile, seed: u64) -> Device {
        let rng = Prng::new(seed);
        let channels = profile.channels.max(1) as usize;
        Device {
            profile: profile.clone(),
            seed,
            capacity: profile.capacity,
            channel_free_ns: std::iter::repeat_n(Reverse(0), channels).collect(),
            read_pipe: Pipe::new(profile.device_bandwidth.read),
            write_pipe: Pipe::new(profile.device_bandwidth.write),
            total_pipe: Pipe::new(profile.device_bandwidth.total),
            cache: profile.write_cache.map(|c| Cache {
                size_bytes: c.size.0,
                drain: c.drain_bandwidth,
                dirty_bytes: 0,
                as_of_ns: 0,
            }),
            last_end: None,
            latency_rng: rng.fork("latency"),
            stall_rng: rng.fork("stall"),
            faults: FaultInjector::new(&profile.faults, &rng),
        }
    }

    /// Replaces the profile's capacity (an `emu://…?size=` override).
    pub fn with_capacity(mut self, capacity: Capacity) -> Device {
        self.capacity = capacity;
        self
    }

    /// The profile this device was built from.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The seed of every random choice.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The capacity in force.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Bytes in the write-back cache not yet on the media at `t_ns` (0
    /// without a cache).
    pub fn dirty_bytes_at(&self, t_ns: u64) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.dirty_at(t_ns))
    }

    /// Submits `op` at `submit_ns` and returns when and how it completes.
    /// Submit ops in the order they are issued; times should not go
    /// backwards by much (an op never completes before it is submitted).
    pub fn submit(&mut self, op: DeviceOp, submit_ns: u64) -> Outcome {
        let fail_now = |error| Outcome { complete_ns: submit_ns, result: Err(error), corruption: None };
        if op.kind != OpKind::Flush {
            let Some(end) = op.offset.checked_add(op.len) else {
                return fail_now(DeviceError::OutOfRange);
            };
            if let Some(capacity_bytes) = self.capacity.bytes()
                && end > capacity_bytes
            {
                let error = if op.kind == OpKind::Write { DeviceError::NoSpace } else { DeviceError::OutOfRange };
                return fail_now(error);
            }
        }

        let faults = self.faults.decide(op.kind);
        let latency_ns = self.base_latency_ns(op);
        let latency_ns = faults.spike.map_or(latency_ns, |spike| spike.apply(latency_ns));
        let stall_ns = self.stall_ns();
        let busy_ns = latency_ns.saturating_add(stall_ns);
        if matches!(op.kind, OpKind::Read | OpKind::Write) {
            self.last_end = Some(op.offset + op.len);
        }

        let complete_ns = match (op.kind, faults.hang_ns) {
            (OpKind::Flush, Some(hang_ns)) => submit_ns.saturating_add(hang_ns),
            (OpKind::Flush, None) => {
                let drained_ns = self.cache.as_ref().map_or(submit_ns, |c| c.drained_by(submit_ns));
                drained_ns.saturating_add(busy_ns)
            }
            (OpKind::Write, None) if self.cache.is_some() => {
                let admitted_ns = self.cache.as_mut().map_or(submit_ns, |c| c.admit(submit_ns, op.len));
                let moved_ns = self.reserve_pipes(op, admitted_ns);
                admitted_ns.saturating_add(busy_ns).max(moved_ns)
            }
            (OpKind::Write, Some(hang_ns)) if self.cache.is_some() => submit_ns.saturating_add(hang_ns),
            (_, hang) => {
                let start_ns = self.take_channel(submit_ns);
                let done_ns = match hang {
                    Some(hang_ns) => start_ns.saturating_add(hang_ns),
                    None => {
                        let channel_rate = match op.kind {
                            OpKind::Read => self.profile.channel_bandwidth.read,
                            OpKind::Write => self.profile.channel_bandwidth.write,
                            OpKind::Flush | OpKind::Trim => Bandwidth::Unlimited,
                        };
                        let served_ns =
                            start_ns.saturating_add(busy_ns).saturating_add(channel_rate.transfer_ns(op.len));
                        served_ns.max(self.reserve_pipes(op, start_ns))
                    }
                };
                self.channel_free_ns.push(Reverse(done_ns));
                done_ns
            }
        };

        let result = if faults.hang_ns.is_some() {
            Err(DeviceError::TimedOut)
        } else if faults.error {
            Err(DeviceError::Io)
        } else {
            Ok(())
        };
        let corruption = if result.is_ok() { faults.corruption } else { None };
        Outcome { complete_ns, result, corruption }
    }

    /// Pops the channel that frees first; returns when the op starts on it.
    /// The caller pushes the channel back with its new free time.
    fn take_channel(&mut self, submit_ns: u64) -> u64 {
        let Reverse(free_ns) = self.channel_free_ns.pop().unwrap_or(Reverse(submit_ns));
        free_ns.max(submit_ns)
    }

    /// Reserves the device-wide pipes an op's bytes pass through; returns
    /// when the last reservation ends.
    fn reserve_pipes(&mut self, op: DeviceOp, start_ns: u64) -> u64 {
        let direction_ns = match op.kind {
            OpKind::Read => self.read_pipe.reserve(start_ns, op.len),
            OpKind::Write => self.write_pipe.reserve(start_ns, op.len),
            OpKind::Flush | OpKind::Trim => return start_ns,
        };
        direction_ns.max(self.total_pipe.reserve(start_ns, op.len))
    }

    fn base_latency_ns(&mut self, op: DeviceOp) -> u64 {
        let latency = &self.profile.latency;
        let sequential = self.last_end == Some(op.offset);
        let distribution = match op.kind {
            OpKind::Read => latency.sequential_read.as_ref().filter(|_| sequential).unwrap_or(&latency.read),
            OpKind::Write => latency.sequential_write.as_ref().filter(|_| sequential).unwrap_or(&latency.write),
            OpKind::Flush => &latency.flush,
            OpKind::Trim => &latency.trim,
        };
        distribution.sample_ns(&mut self.latency_rng)
    }

    fn stall_ns(&mut self) -> u64 {
        match self.profile.stall {
            Some(stall) if self.stall_rng.chance(stall.probability.get()) => stall.duration.0,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// A profile from YAML fragments on top of a zero-latency base.
    fn profile(extra: &str) -> Profile {
        let base = "description: test\ncapacity: unlimited\nchannels: 1\n\
                    latency: {read: {fixed: 0}, write: {fixed: 0}, flush: {fixed: 0}, trim: {fixed: 0}}\n\
                    channel_bandwidth: {read: unlimited, write: unlimited}\n\
                    device_bandwidth: {read: unlimited, write: unlimited}\n";
        // Later keys replace the base's (a YAML mapping with a repeated key is
        // an error, so merge by hand).
        let mut merged: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(base).unwrap();
        let extra: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(extra).unwrap();
        for (k, v) in extra {
            merged.insert(k, v);
        }
        Profile::from_yaml("test", &serde_yaml_ng::to_string(&merged).unwrap()).unwrap()
    }

    #[test]
    fn one_channel_serialises_ops() {
        let p = profile(
            "channels: 1\nlatency: {read: {fixed: 100us}, write: {fixed: 0}, flush: {fixed: 0}, trim: {fixed: 0}}",
        );
        let mut device = Device::new(&p, 1);
        let done: Vec<u64> = (0..10).map(|i| device.submit(DeviceOp::read(i * 4096, 4096), 0).complete_ns).collect();
        let expected: Vec<u64> = (1..=10).map(|k| k * 100 * US).collect();
        assert_eq!(done, expected);
    }

    #[test]
    fn channels_give_parallel_throughput() {
        let p = profile(
            "channels: 4\nlatency: {read: {fixed: 100us}, write: {fixed: 0}, flush: {fixed: 0}, trim: {fixed: 0}}",
        );
        let mut device = Device::new(&p, 1);
        let ops = 1_000u64;
        let done: Vec<u64> = (0..ops).map(|i| device.submit(DeviceOp::read(i * 4096, 4096), 0).complete_ns).collect();
        for (k, &t) in done.iter().enumerate() {
            assert_eq!(t, (k as u64 / 4 + 1) * 100 * US, "op {k}");
        }
        // Throughput = channels / latency = 40,000 ops/s.
        let ops_per_s = ops as f64 / (done[done.len() - 1] as f64 / S as f64);
        assert!((ops_per_s - 40_000.0).abs() < 1.0, "{ops_per_s}");
        // An idle device starts an op at once.
        assert_eq!(device.submit(DeviceOp::read(0, 4096), 10 * S).complete_ns, 10 * S + 100 * US);
    }

    #[test]
    fn a_large_op_takes_len_over_bandwidth() {
        let p = profile("channel_bandwidth: {read: 100MB/s, write: 50MB/s}\nchannels: 1");
        let mut device = Device::new(&p, 1);
        assert_eq!(device.submit(DeviceOp::read(0, 100_000_000), 0).complete_ns, S);
        assert_eq!(device.submit(DeviceOp::write(0, 100_000_000), S).complete_ns, 3 * S);
    }

    #[test]
    fn device_cap_bounds_aggregate_throughput() {
        let p = profile(
            "channels: 8\nchannel_bandwidth: {read: 1GB/s, write: 1GB/s}\n\
             device_bandwidth: {read: 2GB/s, write: unlimited, total: unlimited}",
        );
        let mut device = Device::new(&p, 1);
        let len = 1u64 << 20;
        let last = (0..1_000).map(|i| device.submit(DeviceOp::read(i * len, len), 0).complete_ns).max().unwrap();
        let bytes_per_s = (1_000 * len) as f64 / (last as f64 / S as f64);
        assert!((bytes_per_s - 2.0e9).abs() / 2.0e9 < 0.001, "{bytes_per_s}");

        // The total cap applies to reads and writes together.
        let p = profile(
            "channels: 8\nchannel_bandwidth: {read: 1GB/s, write: 1GB/s}\n\
             device_bandwidth: {read: unlimited, write: unlimited, total: 1GB/s}",
        );
        let mut device = Device::new(&p, 1);
        let mut last = 0;
        for i in 0..1_000 {
            let op = if i % 2 == 0 { DeviceOp::read(i * len, len) } else { DeviceOp::write(i * len, len) };
            last = last.max(device.submit(op, 0).complete_ns);
        }
        let bytes_per_s = (1_000 * len) as f64 / (last as f64 / S as f64);
        assert!((bytes_per_s - 1.0e9).abs() / 1.0e9 < 0.001, "{bytes_per_s}");
    }

    #[test]
    fn write_cache_is_fast_until_full_then_media_speed() {
        let p = profile(
            "latency: {read: {fixed: 0}, write: {fixed: 10us}, flush: {fixed: 50us}, trim: {fixed: 0}}\n\
             write_cache: {size: 64MiB, drain_bandwidth: 100MB/s}",
        );
        let mut device = Device::new(&p, 1);
        let len = 4u64 << 20;
        // Queue depth 1: each write is submitted when the previous completes.
        let mut t = 0;
        let mut latencies = Vec::new();
        for i in 0..40 {
            let done = device.submit(DeviceOp::write(i * len, len), t).complete_ns;
            latencies.push(done - t);
            t = done;
        }
        assert!(latencies[..16].iter().all(|&l| l == 10 * US), "{latencies:?}");
        // Full: each further write waits for 4 MiB to drain at 100 MB/s.
        let media_ns = len * S / 100_000_000;
        for &l in &latencies[20..] {
            assert!(l.abs_diff(media_ns + 10 * US) < 20 * US, "{l} vs {media_ns}");
        }
        // A flush waits for the whole cache to drain.
        let dirty = device.dirty_bytes_at(t);
        assert!(dirty > 60 << 20, "cache should be nearly full: {dirty}");
        let flush = device.submit(DeviceOp::flush(), t).complete_ns;
        let expected = t + dirty * S / 100_000_000 + 50 * US;
        assert!(flush.abs_diff(expected) < 10 * US, "flush {flush} vs {expected}");
        assert_eq!(device.dirty_bytes_at(flush), 0);
    }

    #[test]
    fn flush_on_a_clean_cache_costs_only_its_latency() {
        let p = profile(
            "latency: {read: {fixed: 0}, write: {fixed: 0}, flush: {fixed: 1ms}, trim: {fixed: 0}}\n\
             write_cache: {size: 1MiB, drain_bandwidth: 1MB/s}",
        );
        let mut device = Device::new(&p, 1);
        assert_eq!(device.submit(DeviceOp::flush(), 5 * MS).complete_ns, 6 * MS);
        device.submit(DeviceOp::write(0, 500_000), 10 * MS);
        // 500 KB at 1 MB/s = 0.5 s to drain, then 1 ms.
        assert_eq!(device.submit(DeviceOp::flush(), 10 * MS).complete_ns, 10 * MS + S / 2 + MS);
        // After it has drained, flush is cheap again.
        assert_eq!(device.submit(DeviceOp::flush(), 2 * S).complete_ns, 2 * S + MS);
    }

    #[test]
    fn capacity_gives_enospc_for_writes_and_einval_beyond_the_end() {
        let p = profile("capacity: 1MiB");
        let mut device = Device::new(&p, 1);
        assert_eq!(device.submit(DeviceOp::write(0, 1 << 20), 0).result, Ok(()));
        let full = device.submit(DeviceOp::write((1 << 20) - 4096, 8192), 7);
        assert_eq!(full.result, Err(DeviceError::NoSpace));
        assert_eq!(full.complete_ns, 7, "ENOSPC is immediate");
        assert_eq!(DeviceError::NoSpace.errno(), libc::ENOSPC);
        assert_eq!(device.submit(DeviceOp::read(1 << 20, 1), 0).result, Err(DeviceError::OutOfRange));
        assert_eq!(device.submit(DeviceOp::read(u64::MAX, 2), 0).result, Err(DeviceError::OutOfRange));
        let mut bigger = Device::new(&p, 1).with_capacity(Capacity::Bytes(2 << 20));
        assert_eq!(bigger.submit(DeviceOp::write(1 << 20, 1 << 20), 0).result, Ok(()));
    }

    #[test]
    fn stalls_delay_a_share_of_ops() {
        let p = profile(
            "channels: 100000\nlatency: {read: {fixed: 10us}, write: {fixed: 0}, flush: {fixed: 0}, trim: {fixed: 0}}\n\
             stall: {probability: 0.01, duration: 5ms}",
        );
        let mut device = Device::new(&p, 3);
        let done: Vec<u64> =
            (0..100_000).map(|i| device.submit(DeviceOp::read(i * 4096, 4096), 0).complete_ns).collect();
        let stalled = done.iter().filter(|&&t| t == 10 * US + 5 * MS).count();
        let normal = done.iter().filter(|&&t| t == 10 * US).count();
        assert_eq!(stalled + normal, done.len());
        assert!((900..=1_100).contains(&stalled), "stalled {stalled}");
    }

    #[test]
    fn sequential_ops_use_the_sequential_latency() {
        let p = profile(
            "latency: {read: {fixed: 8ms}, write: {fixed: 8ms}, flush: {fixed: 0}, trim: {fixed: 0}, \
             sequential_read: {fixed: 0}}",
        );
        let mut device = Device::new(&p, 1);
        assert_eq!(device.submit(DeviceOp::read(0, 4096), 0).complete_ns, 8 * MS);
        assert_eq!(device.submit(DeviceOp::read(4096, 4096), 8 * MS).complete_ns, 8 * MS, "continues: no seek");
        assert_eq!(device.submit(DeviceOp::read(1 << 30, 4096), 8 * MS).complete_ns, 16 * MS, "jumps: seeks");
        assert_eq!(device.submit(DeviceOp::write((1 << 30) + 4096, 4096), 16 * MS).complete_ns, 24 * MS);
    }

    #[test]
    fn injected_faults_surface_in_outcomes() {
        let p = profile(
            "channels: 2\nlatency: {read: {fixed: 100us}, write: {fixed: 100us}, flush: {fixed: 0}, trim: {fixed: 0}}\n\
             faults: {error_probability: {read: 0.1}, hang: {probability: 0.01, duration: 1s}, \
             read_corruption_probability: 0.05}",
        );
        let mut device = Device::new(&p, 9);
        let n = 100_000;
        let outcomes: Vec<(u64, Outcome)> = (0..n)
            .map(|i| {
                let t = i * 10 * S; // far apart: no queueing
                (t, device.submit(DeviceOp::read(0, 4096), t))
            })
            .collect();
        let eio = outcomes.iter().filter(|(_, o)| o.result == Err(DeviceError::Io)).count();
        let hung: Vec<_> = outcomes.iter().filter(|(_, o)| o.result == Err(DeviceError::TimedOut)).collect();
        let corrupt = outcomes.iter().filter(|(_, o)| o.corruption.is_some()).count();
        // EIO is drawn independently of hangs; a hang wins when both fire.
        let eio_expected = n as f64 * 0.1 * 0.99;
        assert!((eio as f64 - eio_expected).abs() / eio_expected < 0.1, "EIO {eio} vs {eio_expected}");
        assert!((850..=1_150).contains(&hung.len()), "hangs {}", hung.len());
        assert!(hung.iter().all(|(t, o)| o.complete_ns == t + S));
        let corrupt_expected = n as f64 * 0.05 * 0.9 * 0.99;
        assert!((corrupt as f64 - corrupt_expected).abs() / corrupt_expected < 0.1, "corrupt {corrupt}");
        assert!(outcomes.iter().all(|(_, o)| o.result.is_ok() || o.corruption.is_none()));
    }

    /// Runs a mixed workload and returns every outcome.
    fn mixed_run(p: &Profile, seed: u64) -> Vec<Outcome> {
        let mut device = Device::new(p, seed);
        let mut pick = Prng::new(1_000); // the *workload* is the same in every run
        (0..20_000u64)
            .map(|i| {
                let t = i * 20 * US;
                let offset = pick.below(1 << 20) * 4096;
                let op = match pick.below(10) {
                    0..=5 => DeviceOp::read(offset, 4096 << pick.below(5)),
                    6..=8 => DeviceOp::write(offset, 4096 << pick.below(5)),
                    _ => DeviceOp::flush(),
                };
                device.submit(op, t)
            })
            .collect()
    }

    #[test]
    fn same_seed_same_outcomes_different_seed_different() {
        let p = profile(
            "channels: 8\ncapacity: 8GiB\n\
             latency: {read: {lognormal: {p50: 80us, p99: 400us}}, write: {uniform: {min: 10us, max: 30us}}, \
             flush: {table: [[50, 20us], [100, 1ms]]}, trim: {fixed: 5us}}\n\
             channel_bandwidth: {read: 500MB/s, write: 300MB/s}\n\
             device_bandwidth: {read: 3GB/s, write: 2GB/s, total: 4GB/s}\n\
             write_cache: {size: 256MiB, drain_bandwidth: 1GB/s}\n\
             stall: {probability: 0.001, duration: 2ms}\n\
             faults: {error_probability: {read: 0.01, write: 0.01, flush: 0.01}, \
             hang: {probability: 0.001, duration: 100ms}, spike: {probability: 0.01, multiplier: 5}, \
             read_corruption_probability: 0.01}",
        );
        let a = mixed_run(&p, 77);
        assert_eq!(a, mixed_run(&p, 77));
        let b = mixed_run(&p, 78);
        assert_ne!(a, b);
        let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(differing > a.len() / 2, "only {differing} outcomes differ");
        // The run exercised every path.
        assert!(a.iter().any(|o| o.result == Err(DeviceError::Io)));
        assert!(a.iter().any(|o| o.result == Err(DeviceError::TimedOut)));
        assert!(a.iter().any(|o| o.corruption.is_some()));
    }

    #[test]
    fn ideal_device_completes_everything_at_submission() {
        let p = Profile::load("ideal").unwrap();
        let mut device = Device::new(&p, 1);
        for i in 0..1_000u64 {
            let t = i * 3;
            for op in [DeviceOp::read(i << 30, 1 << 30), DeviceOp::write(i << 20, 1 << 20), DeviceOp::flush()] {
                let outcome = device.submit(op, t);
                assert_eq!((outcome.complete_ns, outcome.result), (t, Ok(())));
            }
        }
    }
}
