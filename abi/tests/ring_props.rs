//! Property tests of the ring: random interleavings of produce (push, batch, reserve/commit) /
//! consume / credit flush against a reference queue (wraparound, full and empty edges,
//! batching), and hostile writes into the ring, published and credit memory (no panic, no
//! entry of another session or position accepted, corrupt slots and words counted).

#![cfg(not(loom))]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use wave_abi::ring::{published, stamp, Consumer, EntryBody, Producer, RingWords, ENTRY_WORDS};

#[derive(Clone, Debug)]
enum Op {
    Produce(usize),
    /// Reserve this many, write the first `.1` of them, commit.
    Reserve(usize, usize),
    Consume(usize),
    /// `Consumer::consume` with this maximum.
    ConsumeBatch(usize),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20).prop_map(Op::Produce),
        (0usize..20, 0usize..20).prop_map(|(a, b)| Op::Reserve(a, b)),
        (1usize..20).prop_map(Op::Consume),
        (0usize..20).prop_map(Op::ConsumeBatch),
        Just(Op::Flush),
    ]
}

/// Ring memory on the heap: slots, credit word, published word.
struct Mem {
    slots: Vec<AtomicU64>,
    credit: AtomicU64,
    published: AtomicU64,
}

impl Mem {
    fn new(entries: u32) -> Self {
        Mem {
            slots: (0..entries as usize * ENTRY_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            credit: AtomicU64::new(0),
            published: AtomicU64::new(0),
        }
    }
    fn words(&self) -> RingWords<'_> {
        RingWords {
            slots: &self.slots,
            credit: &self.credit,
            published: &self.published,
        }
    }
}

fn body(n: u64) -> EntryBody {
    let mut payload = [0u8; 48];
    payload[..8].copy_from_slice(&n.to_le_bytes());
    payload[40..].copy_from_slice(&(!n).to_le_bytes());
    EntryBody::new(3, n as u32, &payload)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ring_matches_reference_queue(
        log2 in 1u32..7,
        batch in 1u32..70,
        session in 1u32..,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let entries = 1u32 << log2;
        let mem = Mem::new(entries);
        let mut p = Producer::new(mem.words(), entries, session).unwrap();
        let mut c = Consumer::new(mem.words(), entries, session).unwrap();
        c.set_credit_batch(batch);
        let batch = batch.clamp(1, entries);

        let mut queue: VecDeque<u64> = VecDeque::new();
        let mut next = 0u64;
        let mut returned = 0u64; // consumer position last written as credit
        let mut consumed = 0u64;
        let mut fulls = 0u64;

        for op in ops {
            match op {
                Op::Produce(k) => {
                    let bodies: Vec<EntryBody> = (0..k as u64).map(|i| body(next + i)).collect();
                    let room = entries as u64 - (next - returned);
                    let expect = (k as u64).min(room);
                    let n = p.push_batch(&bodies) as u64;
                    prop_assert_eq!(n, expect);
                    if n < k as u64 { fulls += 1; }
                    for i in 0..n { queue.push_back(next + i); }
                    next += n;
                }
                Op::Reserve(k, w) => {
                    let room = entries as u64 - (next - returned);
                    let mut r = p.reserve(k);
                    prop_assert_eq!(r.len() as u64, (k as u64).min(room));
                    if (r.len()) < k { fulls += 1; }
                    let mut n = 0u64;
                    while (n as usize) < w && r.write_words(&body(next + n).to_words()) { n += 1; }
                    prop_assert_eq!(n, (w as u64).min(r.len() as u64));
                    prop_assert_eq!(r.commit() as u64, n);
                    for i in 0..n { queue.push_back(next + i); }
                    next += n;
                }
                Op::Consume(k) => {
                    for _ in 0..k {
                        match c.poll() {
                            Some(b) => {
                                let want = queue.pop_front();
                                prop_assert_eq!(Some(b), want.map(body));
                                consumed += 1;
                                if consumed - returned >= batch as u64 { returned = consumed; }
                            }
                            None => {
                                prop_assert!(queue.is_empty());
                                returned = consumed; // empty ring flushes credits
                                break;
                            }
                        }
                    }
                }
                Op::ConsumeBatch(k) => {
                    let avail = queue.len();
                    let mut got = Vec::new();
                    let n = c.consume(k, |b| got.push(*b));
                    prop_assert_eq!(n, got.len());
                    prop_assert!(n <= k.min(avail));
                    if k > 0 && avail > 0 { prop_assert!(n > 0); }
                    for b in got {
                        prop_assert_eq!(Some(b), queue.pop_front().map(body));
                    }
                    consumed += n as u64;
                    if n == 0 || consumed - returned >= batch as u64 { returned = consumed; }
                }
                Op::Flush => {
                    c.flush_credits();
                    returned = consumed;
                }
            }
            prop_assert_eq!(p.free_slots() as u64, entries as u64 - (next - returned));
        }
        prop_assert_eq!(p.stats().published, next);
        prop_assert_eq!(p.stats().full, fulls);
        prop_assert_eq!(p.stats().bad_credit, 0);
        prop_assert_eq!(c.stats().consumed, consumed);
        prop_assert_eq!(c.stats().bad_stamp, 0);
    }

    #[test]
    fn hostile_memory_never_panics_and_is_counted(
        log2 in 1u32..5,
        session in 1u32..,
        ops in proptest::collection::vec((0u8..5, any::<u64>(), any::<usize>()), 1..300),
    ) {
        let entries = 1u32 << log2;
        let mem = Mem::new(entries);
        let mut p = Producer::new(mem.words(), entries, session).unwrap();
        let mut c = Consumer::new(mem.words(), entries, session).unwrap();
        let start = c.position();
        for (kind, value, at) in ops {
            match kind {
                0 => { p.push(&body(value)); }
                1 => {
                    if c.poll().is_some() {
                        // Whatever the hostile wrote, an accepted entry's slot carries this
                        // session's stamp for its position (a body overwritten with garbage
                        // is for the decoders to reject, not the ring).
                        let pos = c.position().wrapping_sub(1);
                        let w = (pos & (entries - 1)) as usize * ENTRY_WORDS + ENTRY_WORDS - 1;
                        prop_assert_eq!(u64::from_le(mem.slots[w].load(Ordering::Relaxed)), stamp(session, pos));
                    }
                }
                2 => {
                    // A hostile write anywhere in the ring: garbage, or a plausible stamp.
                    let w = &mem.slots[at % mem.slots.len()];
                    let v = if value & 1 == 0 { value } else { stamp(session, (value >> 1) as u32) };
                    w.store(v.to_le(), Ordering::Relaxed);
                }
                3 => {
                    // A hostile published word: garbage, or this session's tag with any position.
                    let v = if value & 1 == 0 { value } else { published(session, (value >> 1) as u32) };
                    mem.published.store(v.to_le(), Ordering::Relaxed);
                }
                _ => mem.credit.store(value, Ordering::Relaxed),
            }
            let free = p.free_slots();
            prop_assert!(free <= entries);
        }
        let s = c.stats();
        prop_assert_eq!(c.position().wrapping_sub(start) as u64, s.consumed + s.bad_stamp);
    }
}
