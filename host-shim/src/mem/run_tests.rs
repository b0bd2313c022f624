//! The demo's runs, small: the baseline, and the on-host mode end to end over an in-process
//! link (records out, decisions applied as transactions, outcomes back). Counts, never timings.

use std::time::Duration;

use super::kv::KvLoadConfig;
use super::run::{run_host, run_none, MemRunConfig};
use super::tests::swap_lock;
use wave_policy::mem::MemConfig;

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
