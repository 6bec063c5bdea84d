//! Data generator throughput: one core must generate and verify faster than
//! the storage it drives (target: ≥ 5 GB/s each), or the driver measures
//! itself instead of the storage.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mlpdrive::datagen::{Expect, Verifier, VerifyMode, fill, object_key, verify};

const BUF_BYTES: usize = 1 << 20;
const SEED: u64 = 42;
const GEN: u64 = 3;

fn datagen(c: &mut Criterion) {
    let object = object_key("bench/object-0");
    let mut buf = vec![0u8; BUF_BYTES];
    let mut offset = 0u64;

    let mut group = c.benchmark_group("fill");
    group.throughput(Throughput::Bytes(BUF_BYTES as u64));
    group.bench_function("1MiB", |b| {
        b.iter(|| {
            // A new offset each time, so no iteration reuses a block.
            fill(black_box(&mut buf), SEED, object, GEN, offset);
            offset += BUF_BYTES as u64;
        })
    });
    group.finish();

    fill(&mut buf, SEED, object, GEN, 0);
    for (name, generation) in [("1MiB_gen_some", Some(GEN)), ("1MiB_gen_none", None)] {
        let expect = Expect { seed: SEED, object, generation };
        let mut group = c.benchmark_group("verify");
        group.throughput(Throughput::Bytes(BUF_BYTES as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let outcome = verify(black_box(&buf), 0, &expect);
                assert!(outcome.is_ok());
                outcome
            })
        });
        group.finish();
    }

    // Sampled mode (1 in 16): the header and prefix of every block, the
    // checksum of a few. The buffer is cache-resident here, so this is the
    // CPU cost alone; on cold O_DIRECT buffers full mode is memory-bound
    // (docs/performance.md), which the sampled check mostly avoids.
    let expect = Expect { seed: SEED, object, generation: Some(GEN) };
    let sampled = Verifier::new(VerifyMode::Sampled, SEED, 16);
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Bytes(BUF_BYTES as u64));
    group.bench_function("1MiB_sampled_16", |b| {
        b.iter(|| {
            let outcome = sampled.verify(black_box(&buf), 0, &expect);
            assert!(outcome.is_ok());
            outcome
        })
    });
    group.finish();
}

criterion_group!(benches, datagen);
criterion_main!(benches);
