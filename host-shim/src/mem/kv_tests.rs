//! Tests of the key-value workload, and of the whole host-side loop on real memory: workload,
//! mechanism (write sets, zram reclaim, fault-back) and the memory policy together.

use std::time::Instant;

use wave_policy::mem::{MemConfig, RegionId, Tier};

use super::kv::{KvLoad, KvLoadConfig, KvStore, Zipf, SLOT};
use super::on_host::OnHostLoop;
use super::tests::{swap_lock, zram};
use super::{managed_area, AreaConfig, DEFAULT_REGION_BYTES};
use crate::engine::workload::Rng;

const MIB: usize = 1 << 20;

#[test]
fn values_round_trip_and_corruption_is_counted() {
    let mut kv = KvStore::new(vec![0u8; 64 * SLOT]);
    assert_eq!(kv.keys(), 64);
    assert_eq!(kv.get(3), Some(0));
    assert_eq!(kv.put(3), Some(1));
    assert_eq!(kv.put(3), Some(2));
    assert_eq!(kv.get(3), Some(2));
    assert_eq!(kv.get(64), None, "out of range: not a checksum failure");
    assert_eq!(kv.checksum_failures, 0);
    kv.storage_mut()[5 * SLOT + 77] ^= 1; // one flipped bit in a value
    assert_eq!(kv.get(5), None);
    kv.storage_mut()[6 * SLOT] ^= 1; // the key field
    assert_eq!(kv.get(6), None);
    assert_eq!(kv.put(5), None, "a put does not paper over corruption");
    assert_eq!(kv.checksum_failures, 3);
}

#[test]
fn zipf_is_skewed_and_in_range() {
    let z = Zipf::new(100_000, 0.99);
    let mut rng = Rng::new(7);
    let mut top = 0;
    let mut counts = [0u32; 4];
    for _ in 0..100_000 {
        let r = z.sample(&mut rng);
        assert!(r < 100_000);
        top += (r < 1000) as u32;
        if r < 4 {
            counts[r as usize] += 1;
        }
    }
    // theta 0.99 over 1e5 ranks: the top 1% of ranks get about 58% of samples
    assert!((50_000..66_000).contains(&top), "top 1% got {top}");
    assert!(counts[0] > counts[1] && counts[1] > counts[3], "{counts:?}");
}

/// Regions (of 2 MiB) that `n` operations touch.
fn touched_regions(load: &mut KvLoad, n: usize) -> Vec<usize> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (k, _) = load.next_op();
        seen.insert(KvStore::<Vec<u8>>::offset(k) / DEFAULT_REGION_BYTES);
    }
    seen.into_iter().collect()
}

#[test]
fn hot_set_is_laid_out_in_whole_regions_and_moves() {
    let keys = (32 * MIB / SLOT) as u64; // 16 regions
    let cfg = KvLoadConfig {
        cold_fraction: 0.0,
        ..KvLoadConfig::default()
    };
    let mut load = KvLoad::new(cfg, keys);
    assert_eq!(load.hot_keys(), keys / 4);
    assert_eq!(touched_regions(&mut load, 50_000), vec![12, 13, 14, 15]);
    load.move_hot_set();
    assert_eq!(load.hot_window(), (keys / 2, keys * 3 / 4 - 1));
    assert_eq!(touched_regions(&mut load, 50_000), vec![8, 9, 10, 11]);
    // cold reads reach the rest of the table, rarely
    let cfg = KvLoadConfig {
        cold_fraction: 0.01,
        put_fraction: 0.0,
        ..cfg
    };
    let mut load = KvLoad::new(cfg, keys);
    assert_eq!(touched_regions(&mut load, 50_000).len(), 16);
}

#[test]
fn open_loop_serves_on_schedule_and_records_latency() {
    let mut kv = KvStore::new(vec![0u8; 4096 * SLOT]);
    let cfg = KvLoadConfig {
        rate_per_s: 1e6,
        ..KvLoadConfig::default()
    };
    let mut load = KvLoad::new(cfg, kv.keys());
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let n = load.serve_until(&mut kv, 20_000_000, now); // 20 ms at 1 M/s
    assert!(
        (18_000..22_000).contains(&n),
        "{n} arrivals in 20 ms at 1 M/s"
    );
    assert!(
        t0.elapsed().as_millis() >= 19,
        "open loop waits for arrivals"
    );
    assert_eq!(load.get_latency.count() + load.put_latency.count(), n);
    assert!(load.put_latency.count() > 0);
    assert_eq!(kv.checksum_failures, 0);
}

/// The host-side loop: workload, scan, policy, decisions, outcomes; real zram.
#[test]
fn policy_and_mechanism_manage_the_kv_table_with_intact_data() {
    let _g = swap_lock();
    let Some(_z) = zram(64 << 20) else { return };
    let (mem, mech) = managed_area(AreaConfig {
        bytes: 32 * MIB,
        ..AreaConfig::default()
    })
    .unwrap();
    let mut kv = KvStore::new(mem);
    let cfg = KvLoadConfig {
        cold_fraction: 0.0,
        rate_per_s: 2e6,
        ..KvLoadConfig::default()
    };
    let mut load = KvLoad::new(cfg, kv.keys());
    let pcfg = MemConfig {
        intervals_per_minute: 10,
        slo_ppm_per_minute: 1_000_000,
        ..MemConfig::default()
    };
    let mut lp = OnHostLoop::<16>::new(mech, pcfg).unwrap();
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let mut i = 0;
    let mut interval = |kv: &mut KvStore<_>, load: &mut KvLoad, lp: &mut OnHostLoop<16>| {
        load.serve_until(kv, (i + 1) * 2_000_000, now);
        i += 1;
        let r = lp.step().unwrap();
        lp.policy.check_invariants().unwrap();
        r
    };
    for _ in 0..20 {
        interval(&mut kv, &mut load, &mut lp);
    }
    assert_eq!(
        lp.policy.far_regions(),
        12,
        "everything but the 4 hot regions reclaimed"
    );
    load.move_hot_set();
    for _ in 0..20 {
        interval(&mut kv, &mut load, &mut lp);
    }
    let tier = |r| lp.mech.region_tier(RegionId(r)).unwrap();
    assert_eq!(
        (tier(10), tier(14)),
        (Tier::Near, Tier::Far),
        "the hot set moved and memory followed"
    );
    assert!(
        lp.policy.stats().promotions >= 4,
        "the new hot regions were promoted"
    );
    let stats = *lp.mech.stats();
    assert!(
        stats.committed[0] >= 16 && stats.committed[1] >= 4,
        "{stats:?}"
    );
    assert!(
        lp.cpu_ns.0 > 0 && lp.cpu_ns.1 > 0,
        "cpu accounted: {:?}",
        lp.cpu_ns
    );
    assert_eq!(kv.checksum_failures, 0);
    for k in (0..kv.keys()).step_by(97) {
        assert!(kv.get(k).is_some());
    }
    assert_eq!(
        kv.checksum_failures, 0,
        "every value intact after reclaim and fault-back"
    );
}

/// A small preview of the demo (not the demo): a 256 MiB table, open-loop load on its own
/// thread for 8 s with a hot-set move at 4 s; first with no memory management, then with the
/// on-host loop (100 ms intervals, read sampling, zram). Prints, never gates:
/// `cargo test -p wave-host-shim --lib mem::kv_tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_kv_with_and_without_management() {
    const RUN_NS: u64 = 8_000_000_000;
    let load_cfg = KvLoadConfig {
        rate_per_s: 100_000.0,
        ..KvLoadConfig::default()
    };
    fn drive<S: super::kv::Storage + Send + 'static>(
        kv: KvStore<S>,
        cfg: KvLoadConfig,
    ) -> std::thread::JoinHandle<(KvLoad, u64)> {
        std::thread::spawn(move || {
            let mut kv = kv;
            let mut load = KvLoad::new(cfg, kv.keys());
            let t0 = Instant::now();
            let now = || t0.elapsed().as_nanos() as u64;
            load.serve_until(&mut kv, RUN_NS / 2, now);
            load.move_hot_set();
            load.serve_until(&mut kv, RUN_NS, now);
            (load, kv.checksum_failures)
        })
    }
    let summary = |name: &str, load: &KvLoad, failures: u64| {
        let h = &load.get_latency;
        eprintln!(
            "{name:>5}: {} ops, GET p50 {} ns, p99 {} ns, p99.9 {} ns; checksum failures {failures}",
            load.ops,
            h.quantile(0.5),
            h.quantile(0.99),
            h.quantile(0.999)
        );
    };
    let table = 256 * MIB;
    let (load, failures) = drive(KvStore::new(vec![0u8; table]), load_cfg)
        .join()
        .unwrap();
    summary("none", &load, failures);

    let _g = swap_lock();
    let Some(z) = zram(512 << 20) else { return };
    let (mem, mech) = managed_area(AreaConfig {
        bytes: table,
        ..AreaConfig::default()
    })
    .unwrap();
    let kv = KvStore::new(mem);
    let pcfg = MemConfig {
        intervals_per_minute: 10,
        ..MemConfig::default()
    };
    let mut lp = OnHostLoop::<128>::new(mech, pcfg).unwrap();
    let worker = drive(kv, load_cfg);
    let t0 = Instant::now();
    let mut i = 0u64;
    while !worker.is_finished() {
        i += 1;
        let r = lp.step().unwrap();
        if i.is_multiple_of(10) {
            let (present, swapped) = lp.mech.residency().unwrap();
            eprintln!(
                "  t={:>4.1}s resident {:>3} MiB, far {:>3} MiB, threshold {:>5}, records {:>3}, decisions {:>3}",
                t0.elapsed().as_secs_f64(),
                present * 4096 / MIB as u64,
                swapped * 4096 / MIB as u64,
                r.threshold,
                r.records,
                r.decisions
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (load, failures) = worker.join().unwrap();
    summary("host", &load, failures);
    let (present, _) = lp.mech.residency().unwrap();
    let st = z.stat().unwrap();
    let saved = table as i64 - (present * 4096) as i64 - st.mem_used as i64;
    let ps = lp.policy.stats();
    eprintln!(
        "  saved net of zram ({} KiB used): {} MiB of {} MiB; promotions {} in {} intervals (SLO minute = 10 intervals, WSS now {} regions); stale {} failed {}",
        st.mem_used / 1024,
        saved / MIB as i64,
        table / MIB,
        ps.promotions,
        ps.intervals,
        lp.policy.working_set(),
        ps.outcomes[1],
        ps.outcomes[2]
    );
    eprintln!(
        "  host CPU over the run: mechanism scan {} us, policy {} us, apply {} us; sample faults {}",
        lp.cpu_ns.0 / 1000,
        lp.cpu_ns.1 / 1000,
        lp.cpu_ns.2 / 1000,
        lp.mech.stats().sample_faults
    );
}
