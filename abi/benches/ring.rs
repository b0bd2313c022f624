//! Ring throughput: 64-byte messages between two threads, our consumer-homed ring (one at a
//! time and in batches of 16) against `rtrb` and crossbeam's `ArrayQueue`, same run, same
//! capacity (512). Run: `cargo bench -p wave-abi --bench ring`.

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wave_abi::ring::{Consumer, EntryBody, Producer, ENTRY_WORDS};

const CAP: u32 = 512;
const MSGS: u64 = 200_000;

type Msg = [u64; 8]; // 64 bytes, the same size as one ring entry

fn body(i: u64) -> EntryBody {
    let mut p = [0u8; 48];
    p[..8].copy_from_slice(&i.to_le_bytes());
    EntryBody::new(1, i as u32, &p)
}

fn wave_ring(batch: usize, iters: u64) -> Duration {
    let slots: Vec<AtomicU64> = (0..CAP as usize * ENTRY_WORDS)
        .map(|_| AtomicU64::new(0))
        .collect();
    let credit = AtomicU64::new(0);
    let mut total = Duration::ZERO;
    for round in 0..iters {
        let session = round as u32 + 1;
        let mut p = Producer::new(&slots, &credit, CAP, session).unwrap();
        let mut c = Consumer::new(&slots, &credit, CAP, session).unwrap();
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut got = 0u64;
                let mut buf = [EntryBody::ZERO; 16];
                while got < MSGS {
                    let n = c.poll_batch(&mut buf[..batch]);
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    for b in &buf[..n] {
                        black_box(b);
                    }
                    got += n as u64;
                }
            });
            let mut sent = 0u64;
            let mut out = [EntryBody::ZERO; 16];
            while sent < MSGS {
                let k = batch.min((MSGS - sent) as usize);
                for (i, o) in out[..k].iter_mut().enumerate() {
                    *o = body(sent + i as u64);
                }
                let n = p.push_batch(&out[..k]);
                if n == 0 {
                    std::thread::yield_now();
                }
                sent += n as u64;
            }
        });
        total += start.elapsed();
    }
    total
}

fn rtrb_ring(iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (mut p, mut c) = rtrb::RingBuffer::<Msg>::new(CAP as usize);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut got = 0u64;
                while got < MSGS {
                    match c.pop() {
                        Ok(m) => {
                            black_box(m);
                            got += 1;
                        }
                        Err(_) => std::thread::yield_now(),
                    }
                }
            });
            let mut i = 0u64;
            while i < MSGS {
                let m: Msg = [i, 0, 0, 0, 0, 0, 0, 1];
                if p.push(m).is_ok() {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        total += start.elapsed();
    }
    total
}

fn crossbeam_ring(iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let q = crossbeam_queue::ArrayQueue::<Msg>::new(CAP as usize);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut got = 0u64;
                while got < MSGS {
                    match q.pop() {
                        Some(m) => {
                            black_box(m);
                            got += 1;
                        }
                        None => std::thread::yield_now(),
                    }
                }
            });
            let mut i = 0u64;
            while i < MSGS {
                let m: Msg = [i, 0, 0, 0, 0, 0, 0, 1];
                if q.push(m).is_ok() {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        total += start.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_64B");
    g.throughput(Throughput::Elements(MSGS));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("wave_ring_single", |b| b.iter_custom(|n| wave_ring(1, n)));
    g.bench_function("wave_ring_batch16", |b| b.iter_custom(|n| wave_ring(16, n)));
    g.bench_function("rtrb", |b| b.iter_custom(rtrb_ring));
    g.bench_function("crossbeam_array_queue", |b| b.iter_custom(crossbeam_ring));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
