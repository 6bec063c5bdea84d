//! Micro benchmarks of the submit paths: buffer pool take/give, and one
//! worker's engine loop (fill/verify off) against the null target and
//! against an io_uring O_DIRECT file on a tmpfs (/dev/shm), where the CPU
//! and not a disk is the limit. Run: `cargo bench -p mlpdrive --bench engine`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mlpdrive::buf::BufPool;
use mlpdrive::engine::{Control, Data, Next, OpSource, Request, WorkerReport, run_worker};
use mlpdrive::recorder::{LiveCounters, SeriesKey};
use mlpdrive::target::file::FileTarget;
use mlpdrive::target::null::NullTarget;
use mlpdrive::target::{ObjectHandle, Op, OpKind, OpenOptions, Target};

const OPS: u64 = 20_000;
const BS: u32 = 4096;

struct Reads {
    obj: ObjectHandle,
    left: u64,
    blocks: u64,
    x: u64,
}

impl OpSource for Reads {
    fn next(&mut self, _now: Instant) -> Next {
        if self.left == 0 {
            return Next::Done;
        }
        self.left -= 1;
        self.x = self.x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let block = (self.x >> 33) % self.blocks;
        Next::Op(Request {
            op: Op::Read { obj: self.obj, offset: block * u64::from(BS), len: BS },
            data: Data::None,
            key: SeriesKey { phase: "bench", op: OpKind::Read, tier: "storage" },
            exact: false,
        })
    }
}

fn control() -> Control {
    Control {
        stop: Arc::new(AtomicBool::new(false)),
        deadline: None,
        live: Arc::new(LiveCounters::default()),
        verify: mlpdrive::datagen::Verifier::OFF,
        continue_on_error: false,
        stall_timeout: Duration::from_secs(30),
        clock: mlpdrive::clock::Clock::real(),
    }
}

fn drive(target: &dyn Target, obj: ObjectHandle, blocks: u64, depth: usize) {
    let mut pool = BufPool::new(depth, BS as usize, target.info().caps.align);
    let mut queue = target.queue(depth, &mut pool).expect("queue");
    let mut src = Reads { obj, left: OPS, blocks, x: 1 };
    let mut rep = WorkerReport::default();
    run_worker(&mut src, queue.as_mut(), &mut pool, &control(), &mut rep);
    assert_eq!(rep.errors.count, 0, "{:?}", rep.errors.first);
    black_box(rep);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    let mut pool = BufPool::new(32, 4096, 4096);
    g.bench_function("take_give", |b| {
        b.iter(|| {
            let buf = pool.take().unwrap();
            pool.give(black_box(buf));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("engine_4k_randread_qd32");
    g.throughput(Throughput::Elements(OPS));
    let null = NullTarget::new();
    let h = null.create("bench", 0).unwrap();
    g.bench_function("null", |b| b.iter(|| drive(&null, h, 1 << 16, 32)));

    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        let dir = tempfile::tempdir_in(shm).unwrap();
        let opts = OpenOptions { direct: true, use_uring: true };
        match FileTarget::open(dir.path(), "bench", opts) {
            Ok(t) => {
                let blocks = 16_384u64;
                let h = t.create("bench", blocks * u64::from(BS)).unwrap();
                let f = std::fs::OpenOptions::new().write(true).open(t.workdir().join("bench")).unwrap();
                f.set_len(blocks * u64::from(BS)).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &vec![7u8; (blocks * u64::from(BS)) as usize], 0).unwrap();
                g.bench_function("io_uring_tmpfs", |b| b.iter(|| drive(&t, h, blocks, 32)));
            }
            Err(e) => eprintln!("SKIPPED io_uring_tmpfs: {e}"),
        }
    } else {
        eprintln!("SKIPPED io_uring_tmpfs: /dev/shm is not a directory here");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
