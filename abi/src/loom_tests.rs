//! Loom models of the ring's memory ordering, run against the real `Producer`, `Consumer` and
//! wake-up handshake through the `sync` shim.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p wave-abi --release --lib loom`
//! (add `LOOM_MAX_PREEMPTIONS=3` to bound a bigger model).

extern crate std;

use std::vec::Vec;

use loom::sync::Arc;
use loom::thread;

use crate::endpoint::{lane_sleep_announce, lane_wake_check, sleep_announce, wake_check};
use crate::ring::{Consumer, EntryBody, Producer, RingWords, ENTRY_WORDS};
use crate::status::{StatusView, STATUS_USED};
use crate::sync::AtomicU64;

const ENTRIES: u32 = 2;
const SESSION: u32 = 0x0001_0001;

fn words(n: usize) -> Arc<Vec<AtomicU64>> {
    Arc::new((0..n).map(|_| AtomicU64::new(0)).collect())
}

/// Ring memory: slots, then the credit word, then the published word.
fn ring() -> Arc<Vec<AtomicU64>> {
    words(ENTRIES as usize * ENTRY_WORDS + 2)
}

fn ring_words(m: &[AtomicU64]) -> RingWords<'_> {
    let n = ENTRIES as usize * ENTRY_WORDS;
    RingWords {
        slots: &m[..n],
        credit: &m[n],
        published: &m[n + 1],
    }
}

/// Three messages through a 2-entry ring with credit return after every entry: every message
/// arrives once, in order, with its full body (no torn or stale payload), across wraparound.
#[test]
fn loom_ring_delivers_in_order_across_wrap() {
    loom::model(|| {
        let mem = ring();
        let pm = mem.clone();
        let producer = thread::spawn(move || {
            let mut p = Producer::new(ring_words(&pm), ENTRIES, SESSION).unwrap();
            for i in 1..=3u32 {
                let body = EntryBody::new(7, i, &[i as u8; 48]);
                while !p.push(&body) {
                    thread::yield_now();
                }
            }
        });
        let mut c = Consumer::new(ring_words(&mem), ENTRIES, SESSION).unwrap();
        c.set_credit_batch(1);
        let mut next = 1u32;
        while next <= 3 {
            match c.poll() {
                Some(b) => {
                    assert_eq!(b.aux.get(), next);
                    assert_eq!(b.payload, [next as u8; 48]);
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.stats().bad_stamp + c.stats().bad_published, 0);
    });
}

/// Two batches of two through a 2-entry ring, written in place (reserve / write / commit, one
/// published-word store per batch) and taken with `consume`: both batches arrive whole, in
/// order, never torn, and the second batch waits for the credit of the first.
#[test]
fn loom_ring_batches_in_place() {
    loom::model(|| {
        let mem = ring();
        let pm = mem.clone();
        let producer = thread::spawn(move || {
            let mut p = Producer::new(ring_words(&pm), ENTRIES, SESSION).unwrap();
            let mut i = 1u32;
            while i <= 4 {
                let mut r = p.reserve(2);
                while r.remaining() > 0 {
                    r.write_words(&EntryBody::new(7, i, &[i as u8; 48]).to_words());
                    i += 1;
                }
                if r.commit() == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut c = Consumer::new(ring_words(&mem), ENTRIES, SESSION).unwrap();
        c.set_credit_batch(2);
        let mut next = 1u32;
        while next <= 4 {
            let n = c.consume(2, |b| {
                assert_eq!(b.aux.get(), next);
                assert_eq!(b.payload, [next as u8; 48]);
                next += 1;
            });
            if n == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(c.stats().bad_stamp + c.stats().bad_published, 0);
    });
}

/// The sleep/wake handshake: if the consumer decides to sleep (it announced, re-checked and
/// found nothing), the producer that published must see the announcement and ring.
#[test]
fn loom_no_lost_wakeup() {
    loom::model(|| {
        let mem = ring();
        let status = words(STATUS_USED / 8);
        let (pm, pst) = (mem.clone(), status.clone());
        let producer = thread::spawn(move || {
            let mut p = Producer::new(ring_words(&pm), ENTRIES, SESSION).unwrap();
            assert!(p.push(&EntryBody::new(7, 1, &[])));
            let peer = StatusView::from_words(&pst).unwrap();
            let mut last = 0;
            wake_check(&peer, &mut last)
        });
        let own = StatusView::from_words(&status).unwrap();
        let c = Consumer::new(ring_words(&mem), ENTRIES, SESSION).unwrap();
        let slept = if c.has_entry() {
            false
        } else {
            sleep_announce(&own, 0);
            !c.has_entry()
        };
        let rang = producer.join().unwrap();
        assert!(!slept || rang, "consumer slept and nobody rang");
    });
}

/// The same handshake on a lane (1.2): a consumer core that announces sleep in its lane word
/// while another core of its side stays busy is rung by a producer that checks that lane.
#[test]
fn loom_no_lost_wakeup_on_a_lane() {
    loom::model(|| {
        let mem = ring();
        let status = words(STATUS_USED / 8);
        let (pm, pst) = (mem.clone(), status.clone());
        let producer = thread::spawn(move || {
            let mut p = Producer::new(ring_words(&pm), ENTRIES, SESSION).unwrap();
            assert!(p.push(&EntryBody::new(7, 1, &[])));
            let peer = StatusView::from_words(&pst).unwrap();
            let mut last = 0;
            lane_wake_check(&peer, 1, &mut last)
        });
        let own = StatusView::from_words(&status).unwrap();
        let c = Consumer::new(ring_words(&mem), ENTRIES, SESSION).unwrap();
        let slept = if c.has_entry() {
            false
        } else {
            lane_sleep_announce(&own, 1, 1);
            !c.has_entry()
        };
        let rang = producer.join().unwrap();
        assert!(!slept || rang, "lane consumer slept and nobody rang");
    });
}
