//! Property tests of the network control plane's messages (`wave_abi::net`, `docs/abi.md`
//! §8.4): every message round-trips; arbitrary bytes never panic a decoder and are counted
//! exactly once; the steering table always has 128 entries naming only weighted workers, in
//! proportion to the weights.

#![cfg(not(loom))]

use proptest::prelude::*;
use wave_abi::net::*;
use wave_abi::ring::EntryBody;
use zerocopy::FromBytes;

fn kind(k: u8) -> NetDecisionKind {
    [
        NetDecisionKind::Grant,
        NetDecisionKind::Revoke,
        NetDecisionKind::Rebalance,
    ][k as usize % 3]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn samples_and_decisions_roundtrip(
        worker in 0u8..64, active: bool, entries in 0u8..=128, q: u32, age: u32,
        busy: u64, idle: u64, done: u64, interval: u32,
        txn: u64, epoch: u32, k: u8, ws in proptest::collection::vec(0..=MAX_WEIGHT, MAX_WORKERS),
    ) {
        let weights: [u8; MAX_WORKERS] = ws.try_into().unwrap();
        let s = WorkerSample { worker, active, queued: q, oldest_age_us: age, busy_ns: busy,
            idle_ns: idle, completions: done, table_entries: entries };
        prop_assert_eq!(decode_to_ipu(&encode_sample(&s, interval)),
            Ok(ToIpu::Sample { sample: s, interval }));
        let d = NetDecision { txn, table_epoch: epoch, kind: kind(k), worker, weights };
        prop_assert_eq!(decode_decision(&encode_decision(&d)), Ok(d));
    }

    #[test]
    fn arbitrary_entries_are_counted_once(raw in proptest::collection::vec(any::<u8>(), 56)) {
        let body = EntryBody::read_from_bytes(&raw).unwrap();
        let mut d = NetDecoder::default();
        let _ = d.to_ipu(&body);
        let _ = d.decision(&body);
        prop_assert_eq!(d.stats.ok + d.stats.invalid(), 2);
    }

    #[test]
    fn the_table_follows_the_weights(ws in proptest::collection::vec(0u8..20, MAX_WORKERS)) {
        let weights: [u8; MAX_WORKERS] = ws.try_into().unwrap();
        let total: u32 = weights.iter().map(|w| *w as u32).sum();
        match build_table(&weights) {
            None => prop_assert_eq!(total, 0),
            Some(t) => {
                for (w, x) in weights.iter().enumerate() {
                    let n = t.iter().filter(|e| **e as usize == w).count() as f64;
                    let share = *x as f64 * 128.0 / total as f64;
                    prop_assert!((n - share).abs() < 1.0, "worker {} has {} entries for share {}", w, n, share);
                }
            }
        }
    }
}
