//! Paired ring benchmark: 64-byte messages between two threads, the wave ring against `rtrb`
//! (push/pop and its chunk API) and crossbeam's `ArrayQueue`.
//!
//! Fair by construction: every contender gets the same capacity (512 entries of one cache
//! line), the same message builder ([`build`]) and the same consumer check ([`check`]); the
//! producer and consumer threads are pinned to two different CPUs when the process may use
//! two; each *trial* runs every contender once, in an order rotated trial by trial, and the
//! figures that matter are the ratios within a trial (so a machine loaded by other work slows
//! all contenders of a trial alike). Within a trial each contender runs several short passes,
//! rotated, and its fastest pass counts (interference only ever adds time). Prints per-contender median throughput, the per-trial
//! ratios and whether the ring's targets hold (median ratio: batch 16 ≥ 1.0× rtrb's chunk API,
//! single entries ≥ 0.8× rtrb push/pop).
//!
//! Run: `cargo bench -p wave-abi --bench ring` (env: `WAVE_RING_TRIALS`, default 9;
//! `WAVE_RING_MSGS`, messages per contender per trial, default 32768;
//! `WAVE_RING_PASSES`, passes per trial, default 15).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wave_abi::ring::{Consumer, EntryBody, Producer, RingWords, BODY_WORDS, ENTRY_WORDS};

const CAP: usize = 512;
const BATCH: usize = 16;

/// One message as rtrb and crossbeam carry it: a whole cache line, the seven body words the
/// wave ring carries plus one spare word (where the wave ring keeps its stamp).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Msg {
    body: [u64; BODY_WORDS],
    spare: u64,
}

/// The message builder every contender is fed by: a header word and six payload words.
#[inline(always)]
fn build(i: u64) -> Msg {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Msg {
        body: [
            EntryBody::header_word(1, 48, i as u32),
            i,
            x,
            !i,
            x ^ i,
            i << 1,
            x >> 1,
        ],
        spare: 0,
    }
}

/// What every consumer does with a message: checks its sequence number and keeps the body
/// alive. Returns false on a wrong sequence (never expected; counted as a failure).
#[inline(always)]
fn check(body: &[u64; BODY_WORDS], expect: u64) -> bool {
    black_box(body);
    body[1] == expect
}

/// The CPUs this process may run on (Linux), or none where that cannot be read.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data for which all-zero bytes are a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: `set` was filled by the kernel above; CPU_ISSET only reads it.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it unpinned).
fn pin(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: as in `allowed_cpus`, an all-zero `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` (it came from `allowed_cpus`); `set` is a valid set; pid 0
    // is the calling thread and the size is the set's own.
    unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// Producer and consumer CPUs.
#[derive(Clone, Copy)]
struct Cpus {
    producer: Option<usize>,
    consumer: Option<usize>,
}

/// Runs `produce` on this thread and `consume` on another, both pinned, and returns the time
/// from the moment both are running to the moment the consumer has everything.
fn run_pair(cpus: Cpus, produce: impl FnOnce() + Send, consume: impl FnOnce() + Send) -> Duration {
    let ready = AtomicBool::new(false);
    std::thread::scope(|s| {
        let c = s.spawn(|| {
            pin(cpus.consumer);
            ready.store(true, Ordering::Release);
            consume();
            Instant::now()
        });
        pin(cpus.producer);
        while !ready.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        produce();
        c.join().expect("consumer thread") - start
    })
}

/// The wave ring's shared memory, each block on its own cache lines as in the real layout.
#[repr(C, align(128))]
struct WaveMem {
    slots: [AtomicU64; CAP * ENTRY_WORDS],
    credit: Line,
    published: Line,
}

/// A word alone on a 128-byte pair of lines (x86 prefetches lines in pairs; rtrb pads its
/// indices the same way).
#[repr(C, align(128))]
struct Line(AtomicU64, [u64; 15]);

impl WaveMem {
    fn new() -> Box<Self> {
        Box::new(WaveMem {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            credit: Line(AtomicU64::new(0), [0; 15]),
            published: Line(AtomicU64::new(0), [0; 15]),
        })
    }
    fn words(&self) -> RingWords<'_> {
        RingWords {
            slots: &self.slots,
            credit: &self.credit.0,
            published: &self.published.0,
        }
    }
}

fn wave(cpus: Cpus, batch: usize, msgs: u64, session: u32) -> Duration {
    let mem = WaveMem::new();
    let mut p = Producer::new(mem.words(), CAP as u32, session).expect("ring geometry");
    let mut c = Consumer::new(mem.words(), CAP as u32, session).expect("ring geometry");
    let produce = move || {
        let mut sent = 0u64;
        while sent < msgs {
            let mut r = p.reserve(batch.min((msgs - sent) as usize));
            let mut i = sent;
            while r.remaining() > 0 {
                r.write_words(&build(i).body);
                i += 1;
            }
            let n = r.commit();
            if n == 0 {
                std::hint::spin_loop();
            }
            sent += n as u64;
        }
    };
    let consume = move || {
        let mut got = 0u64;
        let mut bad = 0u64;
        while got < msgs {
            let n = c.consume(batch, |b| {
                bad += !check(&b.to_words(), got) as u64;
                got += 1;
            });
            if n == 0 {
                std::hint::spin_loop();
            }
        }
        assert_eq!(
            bad + c.stats().bad_stamp,
            0,
            "wave ring delivered a wrong message"
        );
    };
    run_pair(cpus, produce, consume)
}

fn rtrb_single(cpus: Cpus, msgs: u64) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<Msg>::new(CAP);
    let produce = move || {
        let mut i = 0u64;
        while i < msgs {
            if p.push(build(i)).is_ok() {
                i += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    };
    let consume = move || {
        let mut got = 0u64;
        while got < msgs {
            match c.pop() {
                Ok(m) => {
                    assert!(check(&m.body, got), "rtrb delivered a wrong message");
                    got += 1;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
    };
    run_pair(cpus, produce, consume)
}

fn rtrb_chunk(cpus: Cpus, batch: usize, msgs: u64) -> Duration {
    use rtrb::chunks::ChunkError::TooFewSlots;
    let (mut p, mut c) = rtrb::RingBuffer::<Msg>::new(CAP);
    let produce = move || {
        let mut sent = 0u64;
        while sent < msgs {
            // rtrb's own idiom: ask for a whole batch (cached head), fall back to what is free.
            let want = batch.min((msgs - sent) as usize);
            let chunk = match p.write_chunk_uninit(want) {
                Ok(chunk) => chunk,
                Err(TooFewSlots(0)) => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(TooFewSlots(k)) => p.write_chunk_uninit(k).expect("k slots are free"),
            };
            let i = sent;
            sent += chunk.fill_from_iter((i..).map(build)) as u64;
        }
    };
    let consume = move || {
        let mut got = 0u64;
        while got < msgs {
            let chunk = match c.read_chunk(batch) {
                Ok(chunk) => chunk,
                Err(TooFewSlots(0)) => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(TooFewSlots(k)) => c.read_chunk(k).expect("k slots are full"),
            };
            for m in chunk {
                assert!(check(&m.body, got), "rtrb delivered a wrong message");
                got += 1;
            }
        }
    };
    run_pair(cpus, produce, consume)
}

fn crossbeam(cpus: Cpus, msgs: u64) -> Duration {
    let q = crossbeam_queue::ArrayQueue::<Msg>::new(CAP);
    let q = &q;
    let produce = move || {
        let mut i = 0u64;
        while i < msgs {
            if q.push(build(i)).is_ok() {
                i += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    };
    let consume = move || {
        let mut got = 0u64;
        while got < msgs {
            match q.pop() {
                Some(m) => {
                    assert!(check(&m.body, got), "crossbeam delivered a wrong message");
                    got += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
    };
    run_pair(cpus, produce, consume)
}

const NAMES: [&str; 5] = [
    "wave_single",
    "wave_batch16",
    "rtrb_push_pop",
    "rtrb_chunk16",
    "crossbeam_array_queue",
];

fn run(which: usize, cpus: Cpus, msgs: u64, trial: u32) -> Duration {
    match which {
        0 => wave(cpus, 1, msgs, trial + 1),
        1 => wave(cpus, BATCH, msgs, trial + 1),
        2 => rtrb_single(cpus, msgs),
        3 => rtrb_chunk(cpus, BATCH, msgs),
        _ => crossbeam(cpus, msgs),
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let trials = env("WAVE_RING_TRIALS", 9).max(1) as u32;
    let msgs = env("WAVE_RING_MSGS", 1 << 15).max(BATCH as u64);
    let reps = env("WAVE_RING_PASSES", 15).max(1) as usize;
    let allowed = allowed_cpus();
    let cpus = Cpus {
        producer: allowed.first().copied().filter(|_| allowed.len() >= 2),
        consumer: allowed.get(1).copied(),
    };
    match (cpus.producer, cpus.consumer) {
        (Some(p), Some(c)) => println!("ring bench: producer on CPU {p}, consumer on CPU {c}"),
        _ => println!("ring bench: fewer than 2 CPUs allowed, threads not pinned"),
    }
    println!(
        "ring bench: {trials} trials x {reps} passes x {msgs} messages of 64 B, capacity {CAP}, batch {BATCH}"
    );
    // Warm-up: one pass of each, not counted.
    for which in 0..NAMES.len() {
        run(which, cpus, msgs / 8, 0);
    }
    let mut rate = vec![Vec::new(); NAMES.len()];
    let (mut batch_ratio, mut single_ratio) = (Vec::new(), Vec::new());
    for t in 0..trials {
        let mut r = [0f64; NAMES.len()];
        for rep in 0..reps {
            for k in 0..NAMES.len() {
                let which = (k + t as usize + rep) % NAMES.len();
                let mps = msgs as f64 / run(which, cpus, msgs, t).as_secs_f64() / 1e6;
                r[which] = r[which].max(mps);
            }
        }
        for (all, v) in rate.iter_mut().zip(r) {
            all.push(v);
        }
        batch_ratio.push(r[1] / r[3]);
        single_ratio.push(r[0] / r[2]);
        println!(
            "trial {t}: batch16 wave/rtrb_chunk {:.2}x  single wave/rtrb_push {:.2}x",
            r[1] / r[3],
            r[0] / r[2]
        );
    }
    for (name, v) in NAMES.iter().zip(&rate) {
        println!("{name:<22} median {:>7.1} Mmsg/s", median(v.clone()));
    }
    let (b, s) = (median(batch_ratio), median(single_ratio));
    println!(
        "median ratio batch16 wave/rtrb_chunk16 {b:.2}x (target >= 1.00: {})",
        if b >= 1.0 { "met" } else { "NOT met" }
    );
    println!(
        "median ratio single  wave/rtrb_push    {s:.2}x (target >= 0.80: {})",
        if s >= 0.8 { "met" } else { "NOT met" }
    );
}
