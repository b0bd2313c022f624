//! The memory service over a real region and two endpoints: records and a tick in, decisions
//! and a Done out; outcomes reach the policy; hostile entries are counted and skipped; a full
//! decisions ring holds the service back instead of losing decisions.

use super::*;
use crate::runtime::NoLog;
use crate::test_link::up;
use core::sync::atomic::AtomicU64;
use wave_abi::layout::{DEFAULT_RING_ENTRIES, MIN_VECTORS};
use wave_abi::mem::{decode_to_host, encode_to_ipu};
use wave_abi::sched::{Seq, TxnId};

const SIZE: usize = 0x80000;

fn drain(host: &mut Endpoint<'_>) -> std::vec::Vec<ToHost> {
    let (rx, _) = host.channel(MEM_CHANNEL);
    let mut out = std::vec::Vec::new();
    while let Some(b) = rx.poll() {
        out.push(decode_to_host(&b).unwrap());
    }
    out
}

fn setup(mem: &[AtomicU64], n_regions: u32, entries: u32) -> (SharedRegion<'_>, Layout) {
    let region = SharedRegion::from_words(mem);
    let layout = Layout::v1(entries, SIZE, MIN_VECTORS).unwrap();
    layout.write(&region).unwrap();
    let cfg = MemConfig {
        n_regions,
        min_threshold: 1,
        ..MemConfig::default()
    };
    wire_config(&cfg).publish(&region, &layout, 2).unwrap();
    (region, layout)
}

#[test]
fn records_and_a_tick_in_decisions_and_done_out() {
    let mem: std::vec::Vec<AtomicU64> = (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect();
    let (region, layout) = setup(&mem, 4, DEFAULT_RING_ENTRIES);
    let (mut host, mut ipu) = up(region, &layout);
    let mut svc: MemService<'_, 8> = MemService::new(region, layout);

    // Interval 1: region 0 written; a hostile entry (region out of the wire's range) and a
    // torn one; then the tick.
    let rec = RegionRecord::touched(RegionId(0), Seq(1), false, true);
    let mut torn = encode_to_ipu(&record_msg(&rec));
    torn.payload[2] ^= 0x10;
    let hostile = encode_to_ipu(&ToIpu::Record {
        region: 1 << 24,
        seq: Seq(1),
        flags: 0,
        faulted: 0,
    });
    let tick = |i| encode_to_ipu(&ToIpu::Tick { interval: i });
    let bodies = [encode_to_ipu(&record_msg(&rec)), torn, hostile, tick(1)];
    assert_eq!(host.send(MEM_CHANNEL, &bodies).0, 4);
    svc.step(&mut ipu, 0, &mut NoLog);
    let first = drain(&mut host);
    assert!(matches!(
        first.last(),
        Some(ToHost::Done { interval: 1, .. })
    ));
    assert_eq!(svc.stats().invalid, 2);
    assert_eq!(
        svc.decode_stats().checksum + svc.decode_stats().bad_value,
        2
    );
    // The three idle regions are reclaimed at once (threshold 1); region 0 was written.
    let reclaims: std::vec::Vec<_> = first.iter().filter_map(decision_from_wire).collect();
    let regions: std::vec::Vec<u32> = reclaims.iter().map(|d| d.parts().2 .0).collect();
    assert_eq!(regions, [1, 2, 3], "{first:?}");
    let Some(ToHost::Done { decisions, .. }) = first.last() else {
        unreachable!()
    };
    assert_eq!(*decisions, 3);

    // Interval 2: nothing touched: region 0 follows.
    host.send(MEM_CHANNEL, &[tick(2)]);
    svc.step(&mut ipu, 0, &mut NoLog);
    let out = drain(&mut host);
    let more: std::vec::Vec<_> = out.iter().filter_map(decision_from_wire).collect();
    assert_eq!(more.len(), 1, "{out:?}");
    assert_eq!(more[0].parts().2, RegionId(0));

    // The host commits one: the policy learns it (far regions counted).
    let (_, txn, region_id, seq) = reclaims[0].parts();
    let o = MemOutcome {
        txn,
        region: region_id,
        seq: seq.next(),
        kind: OutcomeKind::Committed,
    };
    host.send(MEM_CHANNEL, &[encode_to_ipu(&outcome_msg(&o))]);
    svc.step(&mut ipu, 0, &mut NoLog);
    let p = svc.policy().unwrap();
    assert_eq!(p.far_regions(), 1);
    assert_eq!(p.stats().outcomes[0], 1);
    assert!(p.check_invariants().is_ok());
    // An outcome for a transaction never issued: counted by the policy, ignored.
    let bogus = MemOutcome {
        txn: TxnId(999),
        ..o
    };
    host.send(MEM_CHANNEL, &[encode_to_ipu(&outcome_msg(&bogus))]);
    svc.step(&mut ipu, 0, &mut NoLog);
    assert_eq!(svc.policy().unwrap().stats().unknown_outcomes, 1);
}

#[test]
fn a_full_decisions_ring_holds_the_service_back() {
    let mem: std::vec::Vec<AtomicU64> = (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect();
    // Rings of 4 entries: 6 reclaims + Done cannot go out in one step.
    let (region, layout) = setup(&mem, 6, 4);
    let (mut host, mut ipu) = up(region, &layout);
    let mut svc: MemService<'_, 8> = MemService::new(region, layout);
    let tick = |i| encode_to_ipu(&ToIpu::Tick { interval: i });
    host.send(MEM_CHANNEL, &[tick(1), tick(2), tick(3)]);
    let mut got = std::vec::Vec::new();
    for _ in 0..16 {
        svc.step(&mut ipu, 0, &mut NoLog);
        got.extend(drain(&mut host));
    }
    let n = got.iter().filter_map(decision_from_wire).count();
    let dones: std::vec::Vec<u64> = got
        .iter()
        .filter_map(|m| match m {
            ToHost::Done { interval, .. } => Some(*interval),
            _ => None,
        })
        .collect();
    assert_eq!(n, 6, "every decision arrives: {got:?}");
    assert_eq!(dones, [1, 2, 3], "one Done per tick, in order");
    assert_eq!(svc.stats().decisions, 6);
}

#[test]
fn a_refused_configuration_leaves_the_service_idle() {
    let mem: std::vec::Vec<AtomicU64> = (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect();
    // 16 regions do not fit a service of capacity 8.
    let (region, layout) = setup(&mem, 16, DEFAULT_RING_ENTRIES);
    let (mut host, mut ipu) = up(region, &layout);
    let mut svc: MemService<'_, 8> = MemService::new(region, layout);
    host.send(MEM_CHANNEL, &[encode_to_ipu(&ToIpu::Tick { interval: 1 })]);
    svc.step(&mut ipu, 0, &mut NoLog);
    assert!(svc.policy().is_none());
    assert_eq!(svc.stats().config_errors, 1);
    assert!(drain(&mut host).is_empty());
}
