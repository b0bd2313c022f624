//! `cargo wave demo --subsystem all` through the library: every subsystem of the demo table at
//! once, one IPU core each, in one firmware boot; each must pass its own checks (every
//! scheduling request completed with no invariant violation, every echo answered, none
//! corrupt), the firmware must exit 0, and the host-CPU table must carry the scheduling
//! policy's measured on-host cost.

use std::time::Duration;

use wave_host_shim::engine::{EngineConfig, PolicyChoice};
use wave_qemu::demo_all::{measure_on_host, passed, run_all, tables, AllOptions, DEMOS};

#[test]
fn every_subsystem_runs_at_once_on_its_own_ipu_core() {
    let image = wave_qemu::image().expect("firmware image");
    let opts = AllOptions {
        engine: EngineConfig {
            policy: PolicyChoice::named("fifo").expect("registered"),
            rate: 2_000.0,
            duration: Duration::from_millis(1500),
            cpus: 2,
            handlers: 32,
            table_keys: 1 << 16,
            ..EngineConfig::default()
        },
        echo_messages: 20_000,
        spin_us: None,
        gic: 3,
        timeout: Duration::from_secs(180),
        console: false,
        stats: true,
    };
    let (mut reports, fw) = run_all(&opts, &image).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reports.len(), DEMOS.len());
    for r in &reports {
        assert!(r.ok, "{} failed:\n{}\n{}", r.name, r.table, fw.console);
    }
    for (i, d) in DEMOS.iter().enumerate() {
        let line = format!("core {} runs {}", i + 1, d.name);
        assert!(fw.console.contains(&line), "no `{line}`:\n{}", fw.console);
    }
    measure_on_host(&opts, &mut reports).unwrap_or_else(|e| panic!("{e}"));
    let sched = reports.iter().find(|r| r.name == "sched").expect("sched");
    assert!(sched.on_host_cpu.is_some_and(|s| s > 0.0), "{sched:?}");
    assert!(passed(&reports, &fw), "{}", tables(&reports, &fw));
    let t = tables(&reports, &fw);
    assert!(
        t.contains("== sched (IPU core 1) ==") && t.contains("== echo (IPU core 2) =="),
        "{t}"
    );
}
