//! Several services at once, one per IPU core: one firmware boot runs the scheduling agent on
//! core 1 and the echo agent on core 2 (`wave.services=sched@1,echo@2`), while the host runs
//! the scheduling engine and the link test over the same region at the same time (the engine
//! owns the host's status block, the link test is a lane of it). Both must pass their own
//! checks: every request completed with no invariant violation, every echo answered with the
//! right transform and none corrupt; the firmware reports each core's service and exits 0.

use std::time::Duration;

use wave_abi::sched::CPU_VECTOR_BASE;
use wave_abi::Side;
use wave_host_shim::engine::{self, EngineConfig};
use wave_host_shim::link::stop_side;
use wave_host_shim::link_test::{self, LinkTestConfig};
use wave_qemu::ipu::{with_ipu, LinkSettings};
use wave_qemu::{BootConfig, BootStatus};

#[test]
fn sched_and_echo_on_two_ipu_cores_at_once() {
    let image = wave_qemu::image().expect("firmware image");
    let engine_cfg = EngineConfig {
        policy: engine::PolicyChoice::named("fifo").expect("a registered policy"),
        rate: 2_000.0,
        duration: Duration::from_millis(1500),
        cpus: 2,
        handlers: 32,
        table_keys: 1 << 16,
        progress: false,
        stop_link_at_end: false,
        ..EngineConfig::default()
    };
    let echo_cfg = LinkTestConfig {
        messages: 20_000,
        lane: true,
        stop_at_end: false,
        timeout: Duration::from_secs(60),
        ..LinkTestConfig::default()
    };
    let boot = BootConfig {
        smp: 3,
        timeout: Duration::from_secs(120),
        append: vec!["wave.services=sched@1,echo@2".into()],
        ..BootConfig::default()
    };
    let link = LinkSettings {
        vectors: (CPU_VECTOR_BASE as u32 + engine_cfg.cpus) as u16,
        ..LinkSettings::default()
    };
    let ((sched, echo), fw) = with_ipu(&boot, &image, link, |server, _left| {
        let server = &*server;
        let (sched, echo) = std::thread::scope(|s| {
            let echo = s.spawn(|| link_test::run(server, echo_cfg.clone()));
            let sched = engine::run_ipu(server, &engine_cfg);
            (sched, echo.join().expect("link test thread"))
        });
        stop_side(server, Side::Host).expect("stop the host side");
        (sched, echo)
    })
    .unwrap_or_else(|e| panic!("the run failed: {e}"));
    let console = &fw.console;
    assert_eq!(fw.status, BootStatus::Exited(0), "{console}");
    for line in [
        "service sched",
        "service echo",
        "core 1 runs sched",
        "core 2 runs echo",
    ] {
        assert!(console.contains(line), "no `{line}`:\n{console}");
    }

    let r = sched.unwrap_or_else(|e| panic!("sched engine: {e}\n{console}"));
    assert!(r.offered > 0);
    assert_eq!(
        r.completed, r.offered,
        "every request completes\n{r}\n{console}"
    );
    assert_eq!(r.invariant_violations, 0, "{:?}\n{r}", r.first_violation);
    assert!(r.txn_committed > 0, "{r}");

    let e = echo.unwrap_or_else(|e| panic!("link test: {e}\n{console}"));
    assert_eq!((e.sent, e.received), (20_000, 20_000), "{e}\n{console}");
    assert_eq!((e.lost, e.corrupt), (0, 0), "{e}\n{console}");
    assert!(console.contains("sched: host stopped; core 1"), "{console}");
    assert!(
        console.contains("link: host stopped; core 2 echoed 20000 invalid 0"),
        "{console}"
    );
}

/// A service assignment the firmware cannot honour ends the boot with exit code 1 and says
/// why, before any core waits for a host.
#[test]
fn a_bad_service_assignment_is_a_clear_boot_error() {
    let image = wave_qemu::image().expect("firmware image");
    for (append, says) in [
        ("wave.services=nosuch@1", "unknown service name"),
        ("wave.services=sched@1,echo@1", "each core runs one service"),
        ("wave.services=sched@1", "needs the ivshmem-doorbell device"),
    ] {
        let boot = BootConfig {
            smp: 2,
            timeout: Duration::from_secs(60),
            append: vec![append.into()],
            ..BootConfig::default()
        };
        let o = wave_qemu::run_boot_with_image(&boot, &image).expect("qemu runs");
        assert_eq!(o.status, BootStatus::Exited(1), "{append}\n{}", o.console);
        assert!(
            o.console.contains(says),
            "{append}: no `{says}`\n{}",
            o.console
        );
    }
}
