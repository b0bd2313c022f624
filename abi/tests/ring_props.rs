//! Property tests of the ring: random interleavings of produce / consume / credit flush against
//! a reference queue (wraparound, full and empty edges, batching), and hostile writes into the
//! ring and credit memory (no panic, corrupt slots counted and skipped).

#![cfg(not(loom))]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use wave_abi::ring::{stamp, Consumer, EntryBody, Producer, ENTRY_WORDS};

#[derive(Clone, Debug)]
enum Op {
    Produce(usize),
    Consume(usize),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20).prop_map(Op::Produce),
        (1usize..20).prop_map(Op::Consume),
        Just(Op::Flush),
    ]
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
        let slots: Vec<AtomicU64> = (0..entries as usize * ENTRY_WORDS).map(|_| AtomicU64::new(0)).collect();
        let credit = AtomicU64::new(0);
        let mut p = Producer::new(&slots, &credit, entries, session).unwrap();
        let mut c = Consumer::new(&slots, &credit, entries, session).unwrap();
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
        ops in proptest::collection::vec((0u8..4, any::<u64>(), any::<usize>()), 1..300),
    ) {
        let entries = 1u32 << log2;
        let slots: Vec<AtomicU64> = (0..entries as usize * ENTRY_WORDS).map(|_| AtomicU64::new(0)).collect();
        let credit = AtomicU64::new(0);
        let mut p = Producer::new(&slots, &credit, entries, session).unwrap();
        let mut c = Consumer::new(&slots, &credit, entries, session).unwrap();
        let start = c.position();
        for (kind, value, at) in ops {
            match kind {
                0 => { p.push(&body(value)); }
                1 => { c.poll(); }
                2 => {
                    // A hostile write anywhere in the ring: garbage, or a plausible stamp.
                    let w = &slots[at % slots.len()];
                    let v = if value & 1 == 0 { value } else { stamp(session, (value >> 1) as u32) };
                    w.store(v.to_le(), Ordering::Relaxed);
                }
                _ => credit.store(value, Ordering::Relaxed),
            }
            let free = p.free_slots();
            prop_assert!(free <= entries);
        }
        let s = c.stats();
        prop_assert_eq!(c.position().wrapping_sub(start) as u64, s.consumed + s.bad_stamp);
    }
}
