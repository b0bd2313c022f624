//! Mechanism tests on real memory: exact write sets, stale refusals (by sequence number and by
//! the exact apply-time check), reclaim to zram and fault-back with intact bytes, promotion,
//! collapse with its tracking lease, hostile decisions.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use wave_policy::mem::{MemDecision, OutcomeKind, RegionId, RegionRecord, Tier};
use wave_policy::{Seq, TxnId};

use super::*;

const MIB: usize = 1 << 20;

/// zram0 and the swap list are machine-wide: one test at a time uses them.
pub(super) static SWAP: Mutex<()> = Mutex::new(());

pub(super) fn swap_lock() -> MutexGuard<'static, ()> {
    SWAP.lock().unwrap_or_else(|e| e.into_inner())
}

/// A zram far tier for the test, or `None` with the reason printed (not root, zram busy).
pub(super) fn zram(bytes: u64) -> Option<ZramSwap> {
    match ZramSwap::setup(bytes) {
        Ok(z) => Some(z),
        Err(e) => {
            eprintln!("SKIPPED (no far tier): {e}");
            None
        }
    }
}
/// An area without read sampling (these tests check exact write sets and residency).
fn area(mib: usize) -> (AreaMemory, Mechanism) {
    let cfg = AreaConfig {
        bytes: mib * MIB,
        collapse_lease: 2,
        read_samples: 0,
        ..AreaConfig::default()
    };
    managed_area(cfg).expect("managed area (userfaultfd WP_ASYNC + PAGEMAP_SCAN)")
}

fn scan(m: &mut Mechanism) -> Vec<RegionRecord> {
    let mut out = Vec::new();
    m.scan(&mut out).unwrap();
    out
}

fn fill(mem: &mut AreaMemory, salt: u64) {
    for (i, w) in mem.as_mut_slice().chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(i as u64 ^ salt).to_le_bytes());
    }
}

fn check(mem: &AreaMemory, salt: u64) -> usize {
    let bad = mem.as_slice().chunks_exact(8).enumerate();
    bad.filter(|(i, w)| u64::from_le_bytes((*w).try_into().unwrap()) != (*i as u64 ^ salt))
        .count()
}

fn dec(m: &Mechanism, r: u32, f: fn(TxnId, RegionId, Seq) -> MemDecision) -> MemDecision {
    f(TxnId(1), RegionId(r), m.region_seq(RegionId(r)).unwrap())
}

fn reclaim(t: TxnId, region: RegionId, seq: Seq) -> MemDecision {
    MemDecision::Reclaim {
        txn: t,
        region,
        seq,
    }
}
fn promote(t: TxnId, region: RegionId, seq: Seq) -> MemDecision {
    MemDecision::Promote {
        txn: t,
        region,
        seq,
    }
}
fn collapse(t: TxnId, region: RegionId, seq: Seq) -> MemDecision {
    MemDecision::Collapse {
        txn: t,
        region,
        seq,
    }
}

#[test]
fn write_tracking_sees_exactly_the_written_regions() {
    let (mut mem, mut m) = area(16);
    assert_eq!(m.n_regions(), 8);
    assert!(scan(&mut m).is_empty(), "nothing touched yet");
    let s = mem.as_mut_slice();
    s[MIB * 2 + 17] = 1; // region 1
    s[MIB * 10] = 2; // region 5
    s[MIB * 14..MIB * 14 + 8192].fill(3); // region 7, two pages
    let _ = std::hint::black_box(mem.as_slice()[MIB * 6 + 5]); // a read of region 3
    let recs = scan(&mut m);
    let got: Vec<(u32, bool, bool, u32)> = recs
        .iter()
        .map(|r| (r.region.0, r.read, r.written, r.seq.0))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, false, true, 1),
            (5, false, true, 1),
            (7, false, true, 1)
        ]
    );
    assert_eq!(m.stats().written_pages, 4);
    assert!(scan(&mut m).is_empty(), "re-protected: nothing new");
    mem.as_mut_slice()[MIB * 14 + 4096] = 9;
    let recs = scan(&mut m);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].region.0, recs[0].seq.0), (7, 2));
}

#[test]
fn decision_is_stale_once_its_region_was_written() {
    let (mut mem, mut m) = area(8);
    fill(&mut mem, 1);
    scan(&mut m);
    // (a) the write was scanned: the sequence number moved
    let d = dec(&m, 1, reclaim);
    mem.as_mut_slice()[MIB * 2] = 7;
    scan(&mut m);
    assert_eq!(m.apply(d).kind, OutcomeKind::Stale);
    // (b) the write is not scanned yet: the exact apply-time check catches it, and the write
    // still reaches the next record
    let d = dec(&m, 2, collapse);
    mem.as_mut_slice()[MIB * 4 + 100] = 7;
    let o = m.apply(d);
    assert_eq!(o.kind, OutcomeKind::Stale);
    let recs = scan(&mut m);
    assert!(recs
        .iter()
        .any(|r| r.region.0 == 2 && r.written && r.seq.is_newer_than(o.seq)));
    assert_eq!(m.stats().outcomes[1], 2);
}

#[test]
fn hostile_decisions_fail_counted() {
    let (_mem, mut m) = area(4);
    let o = m.apply(MemDecision::Reclaim {
        txn: TxnId(5),
        region: RegionId(99),
        seq: Seq(0),
    });
    assert_eq!(o.kind, OutcomeKind::Failed);
    assert_eq!(m.stats().bad_region, 1);
    let o = m.apply(MemDecision::Promote {
        txn: TxnId(6),
        region: RegionId(0),
        seq: Seq(0),
    });
    assert_eq!(o.kind, OutcomeKind::Failed, "promoting a resident region");
    let o = m.apply(MemDecision::Reclaim {
        txn: TxnId(7),
        region: RegionId(0),
        seq: Seq(42),
    });
    assert_eq!(o.kind, OutcomeKind::Stale);
}

#[test]
fn reclaim_without_a_far_tier_fails_with_a_count() {
    let _g = swap_lock();
    if far_tier_available() {
        eprintln!("SKIPPED: a swap device is active on this machine, so a far tier exists");
        return;
    }
    let (mut mem, mut m) = area(4);
    fill(&mut mem, 2);
    scan(&mut m);
    assert_eq!(m.apply(dec(&m, 0, reclaim)).kind, OutcomeKind::Failed);
    assert_eq!(m.stats().no_far_tier, 1);
    assert_eq!(m.region_tier(RegionId(0)), Some(Tier::Near));
}

#[test]
fn reclaimed_regions_fault_back_with_the_right_bytes() {
    let _g = swap_lock();
    let Some(z) = zram(64 << 20) else { return };
    let (mut mem, mut m) = area(8);
    fill(&mut mem, 0xfeed);
    scan(&mut m);
    for r in 0..3 {
        let o = m.apply(dec(&m, r, reclaim));
        assert_eq!(o.kind, OutcomeKind::Committed, "region {r}");
        assert_eq!(m.region_tier(RegionId(r)), Some(Tier::Far));
    }
    let (present, swapped) = m.residency().unwrap();
    assert!(swapped >= 3 * 512 * 9 / 10, "swapped {swapped} pages");
    assert!(present <= 4 * 512 + 64, "present {present} pages");
    assert!(z.stat().unwrap().orig > 0);
    assert!(scan(&mut m).is_empty(), "paging out is not an access");
    // fault back by reading: every byte intact, and the far regions are reported accessed
    let t0 = Instant::now();
    assert_eq!(check(&mem, 0xfeed), 0);
    eprintln!("fault-back read of 6 MiB from zram: {:?}", t0.elapsed());
    let recs = scan(&mut m);
    let far: Vec<u32> = recs
        .iter()
        .filter(|r| r.read && r.tier == Tier::Far)
        .map(|r| r.region.0)
        .collect();
    assert_eq!(far, vec![0, 1, 2]);
    // promote one back explicitly
    let o = m.apply(dec(&m, 1, promote));
    assert_eq!(o.kind, OutcomeKind::Committed);
    assert_eq!(m.region_tier(RegionId(1)), Some(Tier::Near));
    // writes after a round trip are still tracked exactly
    mem.as_mut_slice()[MIB * 2 + 3] ^= 0xff;
    let recs = scan(&mut m);
    assert_eq!(
        recs.iter()
            .map(|r| (r.region.0, r.written))
            .collect::<Vec<_>>(),
        vec![(1, true)]
    );
    assert_eq!(m.stats().committed, [3, 1, 0]);
}

#[test]
fn reclaim_refused_when_written_after_the_decision() {
    let _g = swap_lock();
    let Some(_z) = zram(32 << 20) else { return };
    let (mut mem, mut m) = area(4);
    fill(&mut mem, 3);
    scan(&mut m);
    let d = dec(&m, 0, reclaim);
    mem.as_mut_slice()[5] = 0;
    assert_eq!(m.apply(d).kind, OutcomeKind::Stale);
    assert_eq!(m.region_tier(RegionId(0)), Some(Tier::Near));
    let (_, swapped) = m.residency().unwrap();
    assert_eq!(swapped, 0, "a stale reclaim moved nothing");
}

#[test]
fn collapse_leaves_tracking_for_a_lease_then_resumes() {
    let (mut mem, mut m) = area(8);
    fill(&mut mem, 4);
    scan(&mut m);
    let o = m.apply(dec(&m, 1, collapse));
    assert_eq!(
        o.kind,
        OutcomeKind::Committed,
        "MADV_COLLAPSE on an untracked region"
    );
    assert_eq!(m.huge_bytes(RegionId(1)).unwrap(), (2 * MIB) as u64);
    assert_eq!(check(&mem, 4), 0);
    // leased (2 intervals): reported as accessed, out of write tracking
    let recs = scan(&mut m);
    assert_eq!(
        recs.iter()
            .map(|r| (r.region.0, r.read))
            .collect::<Vec<_>>(),
        vec![(1, true)]
    );
    scan(&mut m);
    // lease over: tracked again, exact writes
    assert!(scan(&mut m).is_empty());
    mem.as_mut_slice()[MIB * 2 + 1] = 1;
    let recs = scan(&mut m);
    assert_eq!(
        recs.iter()
            .map(|r| (r.region.0, r.written))
            .collect::<Vec<_>>(),
        vec![(1, true)]
    );
}

/// Measures the write-set scan of a populated 1 GiB area (`cargo test -p wave-host-shim
/// --release mem::tests::measure -- --ignored --nocapture`). Prints, never gates.
#[test]
#[ignore]
fn measure_scan_cost_per_gib() {
    let cfg = AreaConfig {
        bytes: 1024 * MIB,
        read_samples: 1,
        ..AreaConfig::default()
    };
    let (mut mem, mut m) = managed_area(cfg).unwrap();
    fill(&mut mem, 5);
    scan(&mut m);
    let t0 = Instant::now();
    for _ in 0..20 {
        scan(&mut m);
    }
    eprintln!(
        "quiescent scan with 1 read sample per region (restore + arm 512): {:?} per GiB",
        t0.elapsed() / 20
    );
    let mut lat: Vec<u64> = Vec::with_capacity(262_144);
    let s = mem.as_slice();
    for i in (0..1024 * MIB).step_by(PAGE) {
        let t = Instant::now();
        std::hint::black_box(s[i]);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let faults = m.stats().sample_faults;
    scan(&mut m);
    let faults = m.stats().sample_faults - faults;
    lat.sort_unstable();
    let slow = &lat[lat.len() - faults as usize..];
    let (p50, p99) = (slow[slow.len() / 2], slow[slow.len() * 99 / 100]);
    eprintln!("{faults} sample faults (slowest {faults} of 262144 page reads): p50 {p50} ns, p99 {p99} ns");
    drop((mem, m));
    let (mut mem, mut m) = area(1024);
    fill(&mut mem, 5);
    let t0 = Instant::now();
    scan(&mut m);
    eprintln!("first scan (1 GiB, all written): {:?}", t0.elapsed());
    let n = 20;
    let t0 = Instant::now();
    for _ in 0..n {
        scan(&mut m);
    }
    eprintln!("quiescent scan: {:?} per GiB", t0.elapsed() / n);
    for round in 0..3 {
        let t0 = Instant::now();
        for r in 0..512 {
            mem.as_mut_slice()[r * 2 * MIB + 4096 * ((r + round) % 512)] = 1;
        }
        let w = t0.elapsed() / 512;
        let t0 = Instant::now();
        let recs = scan(&mut m);
        let n = recs.len();
        eprintln!(
            "512 first writes: {w:?} each; the scan finding them: {:?} ({n} records)",
            t0.elapsed()
        );
    }
}

/// Measures the fault-in latency of pages reclaimed to zram, one read per page (`-- --ignored
/// --nocapture`). Prints, never gates.
#[test]
#[ignore]
fn measure_fault_in_latency() {
    let _g = swap_lock();
    let Some(_z) = zram(128 << 20) else { return };
    let (mut mem, mut m) = area(64);
    fill(&mut mem, 6);
    scan(&mut m);
    let t0 = Instant::now();
    for r in 0..32 {
        assert_eq!(m.apply(dec(&m, r, reclaim)).kind, OutcomeKind::Committed);
    }
    eprintln!(
        "reclaim of 64 MiB: {:?} ({:?} per page)",
        t0.elapsed(),
        t0.elapsed() / (32 * 512)
    );
    let mut lat: Vec<u64> = Vec::with_capacity(32 * 512);
    for p in (0..64 * MIB).step_by(PAGE) {
        let t = Instant::now();
        std::hint::black_box(mem.as_slice()[p]);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    let q = |f: f64| lat[((lat.len() - 1) as f64 * f) as usize];
    eprintln!(
        "fault-in per page: p50 {} ns, p99 {} ns, max {} ns",
        q(0.5),
        q(0.99),
        q(1.0)
    );
    assert_eq!(check(&mem, 6), 0);
}
