//! `cargo wave demo --subsystem all` through the library: scheduling, memory management and
//! the network control plane offloaded at once, one IPU core each, in one firmware boot, on
//! small workloads. Each must pass on its own terms (sched: every request completed, 0
//! invariant violations; mem: 0 checksum failures, 0 invariant violations, the IPU policy's
//! invariants intact; net: every request answered), the firmware must exit 0 with each service
//! on its own core, and the host-CPU table must carry each policy's measured on-host cost.
//! Bounded: the firmware run has a wall-clock limit, each driver its link-up timeout and
//! deadline; nothing here depends on timing.

use std::time::Duration;

use wave_host_shim::engine::{EngineConfig, PolicyChoice};
use wave_host_shim::mem::kv::KvLoadConfig;
use wave_host_shim::mem::run::MemRunConfig;
use wave_host_shim::net::control::NetRunConfig;
use wave_qemu::demo_all::{measure_on_host, passed, run_all, tables, AllOptions, Report, DEMOS};

fn options() -> AllOptions {
    let duration = Duration::from_millis(2000);
    let mut net = NetRunConfig {
        workers: 2,
        link_up_timeout: Duration::from_secs(60),
        ..NetRunConfig::default()
    };
    net.load.phase_s = duration.as_secs_f64() / 4.0;
    net.load.capacity_rps = net.load.capacity_of(net.workers);
    AllOptions {
        engine: EngineConfig {
            policy: PolicyChoice::named("fifo").expect("registered"),
            rate: 2_000.0,
            duration,
            cpus: 2,
            handlers: 32,
            table_keys: 1 << 16,
            // A starved QEMU on a loaded machine must not fail the scheduling over (a
            // hand-back's new host epoch would cut the mem and net lanes off): liveness is
            // the lifecycle tests' business, not this one's.
            peer_timeout: Duration::from_secs(30),
            ..EngineConfig::default()
        },
        mem: MemRunConfig {
            table_bytes: 64 << 20,
            duration,
            interval: Duration::from_millis(50),
            load: KvLoadConfig {
                rate_per_s: 5_000.0,
                ..KvLoadConfig::default()
            },
            link_up_timeout: Duration::from_secs(60),
            ..MemRunConfig::default()
        },
        net,
        spin_us: None,
        gic: 3,
        timeout: Duration::from_secs(240),
        console: false,
        stats: true,
    }
}

/// The report of `name`, with each of `checks` present and held.
fn assert_passed(reports: &[Report], name: &str, checks: &[&str], console: &str) {
    let r = reports
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name} report"));
    for want in checks {
        let held = r.checks.iter().find(|(what, _)| what == want).map(|c| c.1);
        assert_eq!(
            held,
            Some(true),
            "{name}: `{want}` did not hold:\n{}\n{console}",
            r.table
        );
    }
    assert!(r.ok(), "{name} failed: {:?}\n{}", r.checks, r.table);
}

#[test]
fn sched_mem_and_net_run_at_once_each_on_its_own_ipu_core() {
    let image = wave_qemu::image().expect("firmware image");
    let opts = options();
    let (mut reports, fw) = run_all(&opts, &image).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = reports.iter().map(|r| r.name).collect();
    assert_eq!(names, ["sched", "mem", "net"]);
    let c = &fw.console;
    assert_passed(
        &reports,
        "sched",
        &["every request completed", "0 invariant violations"],
        c,
    );
    assert_passed(
        &reports,
        "mem",
        &[
            "0 checksum failures",
            "0 invariant violations",
            "IPU policy invariants intact",
        ],
        c,
    );
    assert_passed(&reports, "net", &["every request answered"], c);
    for (i, d) in DEMOS.iter().enumerate() {
        let line = format!("core {} runs {}", i + 1, d.name);
        assert!(c.contains(&line), "no `{line}`:\n{c}");
        let end = format!("{}: host stopped; core {}", d.name, i + 1);
        assert!(c.contains(&end), "no `{end}`:\n{c}");
    }
    // The IPU's memory lane built its policy from the configuration the host published before
    // any driver started (64 MiB at 2 MiB regions).
    assert!(c.contains("regions") && c.contains(": 32 regions"), "{c}");
    measure_on_host(&opts, &mut reports).unwrap_or_else(|e| panic!("{e}"));
    for r in &reports {
        assert!(
            r.on_host_cpu.is_some_and(|s| s.is_finite() && s >= 0.0),
            "{}: no on-host cost: {r:?}",
            r.name
        );
    }
    let t = tables(&reports, &fw);
    assert!(passed(&reports, &fw), "{t}");
    for want in [
        "== sched (IPU core 1): passed ==",
        "== mem (IPU core 2): passed ==",
        "== net (IPU core 3): passed ==",
        "host mechanism: far tier",
        "host mechanism: steering",
        "== host CPU the policies take ==",
    ] {
        assert!(t.contains(want), "no `{want}` in:\n{t}");
    }
}
