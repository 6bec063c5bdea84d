//! The built-in profiles reproduce the headline figures docs/devices.md
//! quotes for them, measured the way a load driver would: a closed loop that
//! keeps a fixed number of ops in flight, on simulated time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use mlpdrive_emu::{Device, DeviceOp, OpKind, Prng, Profile};

struct Measured {
    ops_per_s: f64,
    bytes_per_s: f64,
    latency_us_mean: f64,
}

/// Keeps `queue_depth` ops of `len` bytes in flight until `ops` complete.
fn closed_loop(profile: &str, kind: OpKind, len: u64, queue_depth: usize, ops: u64, sequential: bool) -> Measured {
    let mut device = Device::new(&Profile::load(profile).unwrap(), 1);
    let mut offsets = Prng::new(5);
    let mut issued = 0u64;
    let mut latency_ns_sum = 0u128;
    let mut in_flight = BinaryHeap::new();
    let mut submit = |device: &mut Device, t: u64| {
        // Random 4 KiB-aligned offsets within the first 16 GiB.
        let offset = if sequential { issued * len } else { offsets.below(1 << 22) * 4096 };
        issued += 1;
        let outcome = device.submit(DeviceOp { kind, offset, len }, t);
        assert_eq!(outcome.result, Ok(()), "{profile}: built-in profiles inject no errors");
        latency_ns_sum += u128::from(outcome.complete_ns - t);
        outcome.complete_ns
    };
    for _ in 0..queue_depth {
        in_flight.push(Reverse(submit(&mut device, 0)));
    }
    let mut now_ns = 0;
    for _ in 0..ops {
        let Reverse(done_ns) = in_flight.pop().unwrap();
        now_ns = done_ns;
        in_flight.push(Reverse(submit(&mut device, now_ns)));
    }
    let seconds = now_ns as f64 / 1e9;
    Measured {
        ops_per_s: ops as f64 / seconds,
        bytes_per_s: (ops * len) as f64 / seconds,
        latency_us_mean: latency_ns_sum as f64 / issued as f64 / 1e3,
    }
}

fn assert_between(value: f64, low: f64, high: f64, what: &str) {
    assert!((low..=high).contains(&value), "{what}: {value:.1} not in [{low}, {high}]");
}

#[test]
fn nvme_gen4_headline_figures() {
    let qd1 = closed_loop("nvme-gen4", OpKind::Read, 4096, 1, 20_000, false);
    assert_between(qd1.latency_us_mean, 75.0, 100.0, "QD1 4K read latency (us)");
    let random = closed_loop("nvme-gen4", OpKind::Read, 4096, 256, 200_000, false);
    assert_between(random.ops_per_s, 0.9e6, 1.2e6, "QD256 4K random read IOPS");
    let sequential = closed_loop("nvme-gen4", OpKind::Read, 1 << 20, 32, 10_000, true);
    assert_between(sequential.bytes_per_s / 1e9, 6.9, 7.0, "1M sequential read GB/s");
    // 40 GiB of writes overflow the 2 GiB cache: sustained rate = drain rate.
    let writes = closed_loop("nvme-gen4", OpKind::Write, 1 << 20, 32, 40_000, true);
    assert_between(writes.bytes_per_s / 1e9, 3.5, 3.9, "sustained 1M write GB/s");
}

#[test]
fn nvme_gen5_headline_figures() {
    let random = closed_loop("nvme-gen5", OpKind::Read, 4096, 512, 300_000, false);
    assert_between(random.ops_per_s, 1.8e6, 2.5e6, "QD512 4K random read IOPS");
    let sequential = closed_loop("nvme-gen5", OpKind::Read, 1 << 20, 64, 10_000, true);
    assert_between(sequential.bytes_per_s / 1e9, 13.9, 14.0, "1M sequential read GB/s");
}

#[test]
fn sata_ssd_headline_figures() {
    let random = closed_loop("sata-ssd", OpKind::Read, 4096, 32, 50_000, false);
    assert_between(random.ops_per_s, 75e3, 100e3, "QD32 4K random read IOPS");
    let sequential = closed_loop("sata-ssd", OpKind::Read, 1 << 20, 32, 2_000, true);
    assert_between(sequential.bytes_per_s / 1e6, 540.0, 550.0, "1M sequential read MB/s");
}

#[test]
fn hdd_headline_figures() {
    let random = closed_loop("hdd", OpKind::Read, 4096, 32, 2_000, false);
    assert_between(random.ops_per_s, 70.0, 95.0, "4K random read IOPS");
    let sequential = closed_loop("hdd", OpKind::Read, 1 << 20, 2, 2_000, true);
    assert_between(sequential.bytes_per_s / 1e6, 190.0, 200.0, "1M sequential read MB/s");
}

#[test]
fn s3_standard_headline_figures() {
    let first_byte = closed_loop("s3-standard", OpKind::Read, 4096, 1, 5_000, false);
    assert_between(first_byte.latency_us_mean / 1e3, 34.0, 43.0, "small GET mean latency (ms)");
    let stream = closed_loop("s3-standard", OpKind::Read, 64 << 20, 1, 200, true);
    assert_between(stream.bytes_per_s / 1e6, 80.0, 90.0, "one stream of 64 MiB GETs, MB/s");
    let parallel = closed_loop("s3-standard", OpKind::Read, 64 << 20, 256, 5_000, true);
    assert_between(parallel.bytes_per_s / 1e9, 12.0, 12.5, "256 streams of 64 MiB GETs, GB/s");
}

#[test]
fn ci_fast_is_fast() {
    let qd1 = closed_loop("ci-fast", OpKind::Read, 4096, 1, 20_000, false);
    assert_between(qd1.latency_us_mean, 15.0, 40.0, "QD1 4K read latency (us)");
}
