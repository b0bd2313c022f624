//! Offloaded memory management end to end: the real firmware in QEMU runs the memory policy
//! (`wave.services=mem@0`) for the host mechanism, through `wave_qemu::demo_mem::run_ipu`, on a
//! small key-value table whose hot set moves halfway. Asserts counts, never timings: every
//! value read back intact (0 checksum failures), no invariant violation (one outcome per
//! decision, the firmware's policy invariants, nothing rejected on the link), the firmware
//! exits cleanly, memory is saved net of the far tier, and the promotion rate stays within
//! the SLO before the move and once settled after it. Without root there is no far tier: the
//! test then checks the fallback (reclaims fail as "no far tier", nothing saved, said why).

use std::time::Duration;

use wave_host_shim::mem::kv::KvLoadConfig;
use wave_host_shim::mem::run::MemRunConfig;
use wave_qemu::demo_mem::{run_ipu, MemDemoOptions, MemMode};
use wave_qemu::BootStatus;

#[test]
fn the_memory_policy_on_the_ipu_saves_memory_within_the_slo() {
    let image = wave_qemu::image().expect("firmware image");
    let opts = MemDemoOptions {
        modes: vec![MemMode::Ipu],
        run: MemRunConfig {
            table_bytes: 64 << 20,
            duration: Duration::from_secs(8),
            load: KvLoadConfig {
                rate_per_s: 20_000.0,
                ..KvLoadConfig::default()
            },
            ..MemRunConfig::default()
        },
        echo: true,
        ..MemDemoOptions::default()
    };
    let run = run_ipu(&opts, &image).unwrap_or_else(|e| panic!("ipu run failed: {e}"));
    let r = &run.results;
    let fw = run.firmware.as_ref().expect("the firmware ran");
    let w = r.wire.expect("link counters");
    println!("{}", wave_qemu::demo_mem::table(std::slice::from_ref(&run)));
    assert_eq!(fw.status, BootStatus::Exited(0), "{}", fw.console);
    assert!(
        fw.console.contains("core 0 runs mem") && fw.console.contains("invariants ok"),
        "{}",
        fw.console
    );
    assert_eq!(r.checksum_failures, 0);
    assert_eq!(r.invariant_violations, 0);
    assert_eq!(r.invalid_entries, 0);
    assert!(
        w.intervals >= 20 && w.dones >= 20,
        "the IPU answered: {w:?}"
    );
    assert!(w.decisions[0] > 0, "reclaims decided on the IPU: {w:?}");
    match &r.note {
        None => {
            assert!(w.outcomes[0] > 0, "decisions committed: {w:?}");
            assert!(
                r.saved[1].max(r.saved[2]) > 0,
                "memory saved net of zram: {:?}",
                r.saved
            );
            assert!(
                r.within_slo(),
                "promoted pages/min {:?} vs SLO {:?}",
                r.promotions_per_min(),
                r.slo_per_min()
            );
        }
        Some(why) => {
            println!("no far tier: {why}");
            assert!(r.mech.expect("mechanism counters").no_far_tier > 0);
            assert!(r.saved[1] <= 0, "nothing can be saved without a far tier");
        }
    }
}
