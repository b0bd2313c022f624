//! The demo's runs, small: the baseline, and the on-host mode end to end over an in-process
//! link (records out, decisions applied as transactions, outcomes back), and the memory driver
//! as a host lane whose primary restarts mid-run. Counts, never timings.

use std::time::Duration;

use super::kv::KvLoadConfig;
use super::run::{policy_thread, run_host, run_managed, run_none, MemMode, MemRunConfig};
use super::tests::swap_lock;
use std::sync::atomic::{AtomicBool, Ordering::*};

use wave_abi::layout::MIN_VECTORS;
use wave_abi::status::next_epoch;
use wave_abi::{Channel, Endpoint, Layout, Side};
use wave_policy::mem::MemConfig;
use wave_policy::mem_service::wire_config;

use crate::link::Link;
use crate::local::LocalLink;

fn small() -> MemRunConfig {
    MemRunConfig {
        table_bytes: 64 << 20,
        duration: Duration::from_secs(3),
        interval: Duration::from_millis(50),
        load: KvLoadConfig {
            rate_per_s: 20_000.0,
            ..KvLoadConfig::default()
        },
        // Reclaim from the smallest threshold on, so a short run on a loaded machine still
        // moves memory out.
        policy: MemConfig {
            intervals_per_minute: 1,
            ..MemConfig::default()
        },
        ..MemRunConfig::default()
    }
}

#[test]
fn the_baseline_serves_every_value_intact() {
    let r = run_none(&small()).unwrap();
    assert!(r.ops > 0);
    assert_eq!(r.checksum_failures, 0);
    assert_eq!(r.resident, [64 << 20; 3]);
}

#[test]
fn the_on_host_policy_manages_the_table_over_the_link() {
    let _g = swap_lock();
    let r = run_host(&small()).unwrap();
    let w = r.wire.expect("link counters");
    assert_eq!(r.checksum_failures, 0);
    assert_eq!(r.invariant_violations, 0);
    assert_eq!(r.invalid_entries, 0);
    assert!(w.intervals >= 20 && w.dones >= w.intervals - 2, "{w:?}");
    assert!(w.decisions[0] > 0, "reclaims decided: {w:?}");
    assert_eq!(
        w.decisions.iter().sum::<u64>(),
        w.outcomes.iter().sum::<u64>(),
        "one outcome per decision"
    );
    assert!(r.policy_cpu_s.is_some_and(|c| c > 0.0));
    if r.note.is_none() {
        assert!(w.outcomes[0] > 0, "committed with a far tier: {w:?}");
        assert!(
            r.saved[1].max(r.saved[2]) > 0,
            "memory saved net of zram: {:?}",
            r.saved
        );
    } else {
        assert!(
            r.mech.unwrap().no_far_tier > 0,
            "reclaims failed as 'no far tier'"
        );
    }
}

/// Plays the host's scheduling primary: restarts it once under a new epoch as soon as the IPU
/// has published a few entries to the memory lane, and runs until `done`. True if it restarted.
fn restart_primary_once(host: &LocalLink, done: &AtomicBool) -> bool {
    let layout = Layout::read(&host.region()).unwrap();
    let start = |epoch| {
        Endpoint::primary(host.region(), &layout, Side::Host, epoch, &[Channel::Sched]).unwrap()
    };
    let mut ep = start(host.epoch());
    let mut restarted = false;
    while !done.load(Acquire) {
        ep.poll_link();
        ep.tick(0, 0);
        if !restarted && ep.peer_status().counters[2] >= 5 {
            ep = start(next_epoch(ep.epoch()));
            restarted = true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    ep.stop();
    restarted
}

#[test]
fn the_memory_lane_keeps_working_when_its_primary_restarts() {
    let _g = swap_lock();
    let (host, ipu) = LocalLink::pair(1 << 20, MIN_VECTORS as u16, 512).unwrap();
    let cfg = MemRunConfig {
        lane: true,
        ..small()
    };
    // As the all-demo does: the configuration is there before the primary brings the IPU's
    // session up (the lane publishes it only after the primary started).
    let region_bytes = super::AreaConfig::default().region_bytes;
    let policy = MemConfig {
        n_regions: cfg.table_bytes.div_ceil(region_bytes) as u32,
        region_pages: (region_bytes / super::PAGE) as u32,
        ..cfg.policy
    };
    let region = host.region();
    let layout = Layout::read(&region).unwrap();
    wire_config(&policy).publish(&region, &layout, 1).unwrap();
    let (stop, done) = (AtomicBool::new(false), AtomicBool::new(false));
    let (r, restarted, policy) = std::thread::scope(|s| {
        let agent = std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn_scoped(s, || policy_thread(&ipu, &stop))
            .unwrap();
        let sched = s.spawn(|| restart_primary_once(&host, &done));
        let r = run_managed(&host, MemMode::Host, &cfg);
        done.store(true, Release);
        stop.store(true, Release);
        (r, sched.join().unwrap(), agent.join().unwrap())
    });
    let r = r.unwrap();
    let w = r.wire.expect("link counters");
    assert!(restarted, "the primary restarted mid-run: {w:?}");
    assert_eq!(r.checksum_failures, 0);
    assert_eq!(r.invariant_violations + policy.violations, 0);
    assert_eq!(r.invalid_entries + policy.invalid, 0);
    assert!(w.intervals >= 20, "{w:?}");
    // Cut off, the lane would see no Done after the restart (a few entries in); following
    // the primary, at most the intervals in flight at the restart go unanswered.
    assert!(w.dones + 4 >= w.intervals, "Dones resumed: {w:?}");
    assert_eq!(
        w.decisions.iter().sum::<u64>(),
        w.outcomes.iter().sum::<u64>(),
        "one outcome per decision"
    );
}
