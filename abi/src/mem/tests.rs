//! Tests of the memory subsystem's wire format: round trips, one counter per rejection,
//! arbitrary bytes never panic and are always counted, the configuration block.

extern crate std;

use super::*;
use proptest::prelude::*;

fn record(region: u32, seq: u32, flags: u32) -> ToIpu {
    ToIpu::Record {
        region,
        seq: Seq(seq),
        flags,
        faulted: 0,
    }
}

#[test]
fn every_message_round_trips() {
    let to_ipu = [
        record(7, 3, FLAG_READ | FLAG_FAR),
        ToIpu::Outcome {
            txn: TxnId(9),
            region: 1,
            seq: Seq(u32::MAX),
            kind: WireOutcome::Stale,
        },
        ToIpu::Tick { interval: 42 },
    ];
    for m in to_ipu {
        assert_eq!(decode_to_ipu(&encode_to_ipu(&m)), Ok(m));
        assert!(decode_to_host(&encode_to_ipu(&m)).is_err(), "wrong ring");
    }
    let to_host = [
        ToHost::Decision {
            txn: TxnId(1),
            region: MAX_REGIONS - 1,
            seq: Seq(5),
            action: WireAction::Collapse,
        },
        ToHost::Done {
            interval: 3,
            decisions: 64,
            threshold: 16,
        },
    ];
    for m in to_host {
        assert_eq!(decode_to_host(&encode_to_host(&m)), Ok(m));
        assert!(decode_to_ipu(&encode_to_host(&m)).is_err(), "wrong ring");
    }
}

#[test]
fn record_offsets_and_checksum_vector() {
    // Known answer, also in docs/abi.md §8.3, so a second implementation can check itself.
    let b = encode_to_ipu(&record(1, 2, FLAG_WRITTEN));
    assert_eq!(
        (b.tag.get(), b.len.get(), b.aux.get()),
        (TAG_MEM_RECORD, 24, 0)
    );
    assert_eq!(
        &b.payload[..16],
        &[1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    );
    let sum = u64::from_le_bytes(b.payload[16..24].try_into().unwrap());
    assert_eq!(sum, mem_checksum(TAG_MEM_RECORD, &b.payload[..16]));
    assert_eq!(sum, KNOWN_RECORD_CHECKSUM);
}

const KNOWN_RECORD_CHECKSUM: u64 = 0xf202_b2e0_a783_85fc;

#[test]
fn decoder_counts_each_reason() {
    let good = encode_to_ipu(&record(3, 4, FLAG_READ));
    let mut bad_len = good;
    bad_len.len = 23.into();
    let mut bad_aux = good;
    bad_aux.aux = 1.into();
    let mut past_len = good;
    past_len.payload[30] = 1;
    let mut torn = good;
    torn.payload[0] ^= 1;
    let bad_flags = encode_to_ipu(&record(3, 4, 8));
    let bad_region = encode_to_ipu(&record(MAX_REGIONS, 4, 0));
    let zero_tick = encode_to_ipu(&ToIpu::Tick { interval: 0 });
    let too_many = encode_to_ipu(&ToIpu::Record {
        region: 0,
        seq: Seq(1),
        flags: FLAG_FAR,
        faulted: MAX_FAULTED + 1,
    });
    let zero_txn = encode_to_ipu(&ToIpu::Outcome {
        txn: TxnId(0),
        region: 0,
        seq: Seq(0),
        kind: WireOutcome::Committed,
    });
    let mut d = ToIpuDecoder::default();
    for b in [
        good,
        bad_len,
        bad_aux,
        past_len,
        torn,
        bad_flags,
        bad_region,
        zero_tick,
        zero_txn,
        too_many,
        EntryBody::ZERO,
    ] {
        let _ = d.decode(&b);
    }
    assert_eq!(
        d.stats,
        MemDecodeStats {
            ok: 1,
            bad_tag: 1,
            bad_length: 1,
            reserved: 2,
            checksum: 1,
            bad_value: 5,
        }
    );
    assert_eq!(d.stats.invalid(), 10);
}

#[test]
fn unknown_action_or_outcome_is_a_bad_value() {
    // A well-sealed entry whose action word is 4: only the value check can refuse it.
    let b = txn_body(TAG_MEM_DECISION, TxnId(1), 0, Seq(0), 4);
    assert_eq!(decode_to_host(&b), Err(MemDecodeError::BadValue));
    let b = txn_body(TAG_MEM_OUTCOME, TxnId(1), 0, Seq(0), 0);
    assert_eq!(decode_to_ipu(&b), Err(MemDecodeError::BadValue));
}

fn arb_body() -> impl Strategy<Value = EntryBody> {
    (
        prop_oneof![
            Just(TAG_MEM_RECORD),
            Just(TAG_MEM_OUTCOME),
            Just(TAG_MEM_TICK),
            Just(TAG_MEM_DECISION),
            Just(TAG_MEM_DONE),
            any::<u16>()
        ],
        prop_oneof![Just(24u16), Just(32u16), any::<u16>()],
        prop_oneof![Just(0u32), any::<u32>()],
        proptest::collection::vec(any::<u8>(), PAYLOAD_SIZE),
    )
        .prop_map(|(tag, len, aux, p)| {
            let mut b = EntryBody::ZERO;
            b.tag = tag.into();
            b.len = len.into();
            b.aux = aux.into();
            b.payload.copy_from_slice(&p);
            b
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_every_reject_is_counted(
        bodies in proptest::collection::vec(arb_body(), 1..64)
    ) {
        let mut a = ToIpuDecoder::default();
        let mut h = ToHostDecoder::default();
        let (mut ok_a, mut ok_h) = (0, 0);
        for b in &bodies {
            ok_a += a.decode(b).is_ok() as u64;
            ok_h += h.decode(b).is_ok() as u64;
        }
        let n = bodies.len() as u64;
        prop_assert_eq!(a.stats.ok, ok_a);
        prop_assert_eq!(a.stats.ok + a.stats.invalid(), n);
        prop_assert_eq!(h.stats.ok, ok_h);
        prop_assert_eq!(h.stats.ok + h.stats.invalid(), n);
    }

    #[test]
    fn one_flipped_bit_never_decodes_to_another_message(
        region in 0..MAX_REGIONS, seq in any::<u32>(), flags in 0u32..8, bit in 0usize..(24 * 8)
    ) {
        let m = record(region, seq, flags);
        let mut b = encode_to_ipu(&m);
        b.payload[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_to_ipu(&b).is_err());
    }

    #[test]
    fn valid_decisions_round_trip(
        txn in 1..u64::MAX, region in 0..MAX_REGIONS, seq in any::<u32>(), a in 1u32..4
    ) {
        let action = WireAction::from_u32(a).unwrap();
        let m = ToHost::Decision { txn: TxnId(txn), region, seq: Seq(seq), action };
        prop_assert_eq!(decode_to_host(&encode_to_host(&m)), Ok(m));
    }
}

#[test]
fn configuration_publishes_and_reads_back() {
    use crate::layout::DEFAULT_RING_ENTRIES;
    use crate::subsystem::MIN_VECTORS;
    const SIZE: usize = 1 << 20;
    let mem: std::vec::Vec<AtomicU64> = (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect();
    // SAFETY: `mem` is an exclusively owned, 8-byte aligned buffer of SIZE bytes that outlives
    // the region view.
    let region = unsafe { SharedRegion::from_raw(mem.as_ptr() as *mut u8, SIZE) }.unwrap();
    let layout = Layout::v1(DEFAULT_RING_ENTRIES, SIZE, MIN_VECTORS).unwrap();
    assert_eq!(
        MemSessionConfig::read(&region, &layout),
        Err(MemConfigError::NoConfig)
    );
    let cfg = MemSessionConfig {
        n_regions: 512,
        params: [2, 16384, 10, 2000, 0, 64, 64, 8, 4, 64, 512, 16, 32],
    };
    cfg.publish(&region, &layout, 7).unwrap();
    assert_eq!(MemSessionConfig::read(&region, &layout), Ok((7, cfg)));
    let bad = MemSessionConfig {
        n_regions: 0,
        ..cfg
    };
    assert_eq!(
        bad.publish(&region, &layout, 8),
        Err(MemConfigError::BadConfig("n_regions"))
    );
    // A hostile host writes a parameter that does not fit 32 bits.
    let w = config_words(&region, &layout).unwrap();
    store_le(&w[W_PARAMS + 3], 1 << 40, Ordering::Relaxed);
    assert_eq!(
        MemSessionConfig::read(&region, &layout),
        Err(MemConfigError::BadConfig("slo_ppm_per_minute"))
    );
}
