//! `cargo wave demo --subsystem all`: the whole split OS at once: scheduling, memory
//! management and the network control plane offloaded together, one IPU core each, each on
//! its own workload at the same time; then one table per subsystem and the host CPU the
//! policies would have taken had they run on the host. Also the live stats view that
//! `cargo wave demo --stats` prints while a run goes (the same sampler and table as
//! `wave-host stats`).
//!
//! Subsystems plug in through [`DEMOS`]: one entry each (name, doorbell vectors, host-side
//! driver, on-host baseline, and optionally a step before any driver starts and a check of the
//! firmware's console). The first entry owns the host's status block (the primary endpoint);
//! every other runs as a lane of it (docs/abi.md, "Lanes"). IPU core `i + 1` runs entry `i`
//! (core 0 boots the image). The echo link probe is not an entry: it has no policy to move,
//! and on a 2-core machine its extra QEMU core and its doorbell flood would only take CPU from
//! the three workloads (`cargo wave link-test` runs it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wave_abi::Side;
use wave_host_shim::engine::{self, EngineConfig, EngineResults};
use wave_host_shim::ivshmem::IvshmemServer;
use wave_host_shim::link::stop_side;
use wave_host_shim::mem::run::{self as mem_run, MemMode, MemRunConfig};
use wave_host_shim::net::control::{self as net_control, NetRunConfig};
use wave_host_shim::stats::{render, Sampler};
use wave_host_shim::Link;

use crate::boot::{BootConfig, BootOutcome, BootStatus};
use crate::demo::DemoRun;
use crate::demo_net::{NetDemo, NetDemoRun};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ipu::{with_ipu, LinkSettings};

/// Settings of an all-subsystems run.
#[derive(Clone, Debug)]
pub struct AllOptions {
    /// The scheduling workload and policy.
    pub engine: EngineConfig,
    /// The memory workload and policy (run as a lane; `lane` is set by the run).
    pub mem: MemRunConfig,
    /// The RPC server, its load and the allocator (run as a lane; `lane` is set by the run).
    pub net: NetRunConfig,
    /// `wave.spin_us=` for the IPU cores.
    pub spin_us: Option<u64>,
    /// GIC version.
    pub gic: u8,
    /// Wall-clock limit of the IPU run.
    pub timeout: Duration,
    /// Show the firmware console.
    pub console: bool,
    /// Print the live stats view every second while the subsystems run.
    pub stats: bool,
}

/// What one subsystem's host side reports.
#[derive(Debug)]
pub struct Report {
    /// Subsystem name.
    pub name: &'static str,
    /// Its own table.
    pub table: String,
    /// Its own pass criteria, each named (every request completed, no invariant broken, ...)
    /// with whether it held.
    pub checks: Vec<(&'static str, bool)>,
    /// Share of a host core its policy took when run on the host (`None`: no policy to move).
    pub on_host_cpu: Option<f64>,
    /// The host mechanism it used where there is a choice (a far tier, eBPF steering) and, for
    /// a fallback, why.
    pub mechanism: Option<String>,
}

impl Report {
    /// True if every check held.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|(_, ok)| *ok)
    }
}

/// A subsystem's on-host baseline: the share of a host core its policy takes there.
pub type OnHost = fn(&AllOptions) -> std::result::Result<Option<f64>, String>;

/// A step on the link before any driver starts (`Err`: why the run cannot go on).
pub type Prepare = fn(&IvshmemServer, &AllOptions) -> std::result::Result<(), String>;

/// One subsystem's demo: the entry each subsystem adds to [`DEMOS`].
pub struct SubsystemDemo {
    /// Subsystem and firmware service name (`wave.services=NAME@CORE`).
    pub name: &'static str,
    /// Doorbell vectors it needs.
    pub vectors: fn(&AllOptions) -> u16,
    /// Run on the link before any entry's driver starts (e.g. state the IPU reads when the
    /// primary brings the session up).
    pub prepare: Option<Prepare>,
    /// Its host side against the IPU (`primary`: it owns the host status block).
    pub run: fn(&IvshmemServer, &AllOptions, bool) -> std::result::Result<Report, String>,
    /// Its policy run on the host instead, for the CPU it would cost there (share of a core);
    /// `None` for a subsystem with no policy to move.
    pub on_host: Option<OnHost>,
    /// For a driver with a long setup (building a table): hands it a flag (through the options)
    /// that it sets once set up; the other drivers start then, so the workloads overlap.
    pub gate: Option<fn(&mut AllOptions, Arc<AtomicBool>)>,
    /// Whether the firmware's console shows its policy's invariants held (`None`: nothing to
    /// check).
    pub firmware_ok: Option<fn(&str) -> bool>,
}

/// Every subsystem that exists, in IPU core order. Append one entry per new subsystem.
pub const DEMOS: &[SubsystemDemo] = &[
    SubsystemDemo {
        name: "sched",
        vectors: sched_vectors,
        prepare: None,
        run: sched_run,
        on_host: Some(sched_on_host),
        gate: None,
        firmware_ok: None,
    },
    SubsystemDemo {
        name: "mem",
        vectors: min_vectors,
        prepare: Some(mem_prepare),
        run: mem_run,
        on_host: Some(mem_on_host),
        gate: Some(|o, flag| o.mem.set_up = Some(flag)),
        firmware_ok: Some(crate::demo_mem::firmware_invariants_ok),
    },
    SubsystemDemo {
        name: "net",
        vectors: min_vectors,
        prepare: None,
        run: net_run,
        on_host: Some(net_on_host),
        gate: None,
        firmware_ok: None,
    },
];

fn sched_vectors(o: &AllOptions) -> u16 {
    (wave_abi::sched::CPU_VECTOR_BASE as u32 + o.engine.cpus).max(4) as u16
}

/// A subsystem that needs only its channel vector (every channel's is below the minimum).
fn min_vectors(_: &AllOptions) -> u16 {
    wave_abi::layout::MIN_VECTORS as u16
}

fn sched_engine(o: &AllOptions) -> EngineConfig {
    EngineConfig {
        stop_link_at_end: false,
        progress: false,
        ..o.engine.clone()
    }
}

fn sched_table(r: EngineResults) -> (String, Vec<(&'static str, bool)>) {
    let checks = vec![
        ("every request completed", r.completed == r.offered),
        ("0 invariant violations", r.invariant_violations == 0),
    ];
    let run = DemoRun {
        results: r,
        firmware: None,
        emulator_cpu_s: None,
        ipu_cost: None,
    };
    (crate::demo::table(std::slice::from_ref(&run)), checks)
}

fn sched_run(
    server: &IvshmemServer,
    o: &AllOptions,
    _primary: bool,
) -> std::result::Result<Report, String> {
    let r = engine::run_ipu(server, &sched_engine(o)).map_err(|e| e.to_string())?;
    let mechanism = (r.failovers > 0).then(|| {
        format!(
            "failed over to the host's agent {} time(s) (IPU heartbeat older than {} ms); each hand-back restarts the host's primary endpoint, which the mem and net lanes do not follow",
            r.failovers,
            sched_engine(o).peer_timeout.as_millis()
        )
    });
    let (table, checks) = sched_table(r);
    Ok(Report {
        name: "sched",
        table,
        checks,
        on_host_cpu: None,
        mechanism,
    })
}

fn sched_on_host(o: &AllOptions) -> std::result::Result<Option<f64>, String> {
    let r = engine::run_host(&sched_engine(o)).map_err(|e| e.to_string())?;
    Ok(r.agent_cpu_share)
}

/// The memory run of the demo: quiet, and a lane unless it is the primary.
fn mem_config(o: &AllOptions, lane: bool) -> MemRunConfig {
    MemRunConfig {
        lane,
        progress: false,
        // No subsystem takes a CPU to itself here: the three workloads share the machine.
        pin: false,
        ..o.mem.clone()
    }
}

/// Publishes the memory policy's configuration before any driver starts. The IPU's memory
/// lane reads it when its session comes up, which the primary (the scheduling engine) may
/// bring about before the memory driver has built its table; the driver publishes the same
/// values again later.
fn mem_prepare(server: &IvshmemServer, o: &AllOptions) -> std::result::Result<(), String> {
    mem_run::publish_config(&server.region(), &o.mem)
}

fn mem_run(
    server: &IvshmemServer,
    o: &AllOptions,
    primary: bool,
) -> std::result::Result<Report, String> {
    let r = mem_run::run_managed(server, MemMode::Ipu, &mem_config(o, !primary))?;
    Ok(Report {
        name: "mem",
        checks: vec![
            ("0 checksum failures", r.checksum_failures == 0),
            ("0 invariant violations", r.invariant_violations == 0),
        ],
        mechanism: Some(match &r.note {
            Some(n) => format!("far tier {} ({n})", r.far_tier),
            None => format!("far tier {}", r.far_tier),
        }),
        table: crate::demo_mem::results_table(std::slice::from_ref(&r)),
        on_host_cpu: None,
    })
}

fn mem_on_host(o: &AllOptions) -> std::result::Result<Option<f64>, String> {
    let r = mem_run::run_host(&mem_config(o, false))?;
    let secs = o.mem.duration.as_secs_f64().max(1e-9);
    Ok(r.policy_cpu_s.map(|s| s / secs))
}

/// The net run of the demo: quiet, and a lane unless it is the primary.
fn net_config(o: &AllOptions, lane: bool) -> NetRunConfig {
    NetRunConfig {
        lane,
        progress: false,
        ..o.net.clone()
    }
}

fn net_run(
    server: &IvshmemServer,
    o: &AllOptions,
    primary: bool,
) -> std::result::Result<Report, String> {
    let result = net_control::run_ipu(server, &net_config(o, !primary))?;
    let checks = vec![("every request answered", result.all_answered())];
    let mechanism = Some(format!("steering {}", result.steering));
    let demo = NetDemo {
        runs: vec![NetDemoRun {
            result,
            firmware: None,
            emulator_cpu_s: None,
        }],
        // The static allocation for the peak here is every worker.
        static_min: o.net.workers,
        // No search here: the all-demo runs only the offloaded loop.
        search: Vec::new(),
        static_min_met: false,
    };
    Ok(Report {
        name: "net",
        table: crate::demo_net::table(&demo, o.net.slo_us),
        checks,
        on_host_cpu: None,
        mechanism,
    })
}

fn net_on_host(o: &AllOptions) -> std::result::Result<Option<f64>, String> {
    let r = net_control::run_host(&net_config(o, false))?;
    Ok(r.policy_cpu_s.map(|s| s / r.duration_s.max(1e-9)))
}

/// The IPU core of each channel, for the stats view, given `wave.services` placements.
pub fn placement(services: &[(&str, u32)]) -> Vec<Option<u32>> {
    wave_abi::subsystem::SUBSYSTEMS
        .iter()
        .map(|s| services.iter().find(|(n, _)| *n == s.name).map(|(_, c)| *c))
        .collect()
}

/// Runs `work`; if `show`, prints the live stats table of `server`'s region on stderr every
/// second meanwhile.
pub fn with_live_stats<T>(
    show: bool,
    server: &IvshmemServer,
    placement: Vec<Option<u32>>,
    work: impl FnOnce() -> T,
) -> T {
    if !show {
        return work();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let region = server.region();
            let mut sampler = Sampler::new(*server.layout(), placement, Duration::from_secs(1));
            // In the demos the scheduling engine is the host's primary endpoint.
            sampler.txns_from_host_status();
            let mut next = Instant::now() + Duration::from_secs(1);
            while !done.load(Ordering::Acquire) {
                sampler.sample_awake(&region);
                std::thread::sleep(Duration::from_millis(10));
                if Instant::now() >= next {
                    next += Duration::from_secs(1);
                    let c = server.counters();
                    sampler.set_transport_doorbells(c.doorbells_out, c.doorbells_in);
                    eprintln!("\n{}", render::table(sampler.update(&region)));
                }
            }
        });
        let out = work();
        done.store(true, Ordering::Release);
        out
    })
}

/// `wave.services=` placement: entry `i` on IPU core `i + 1`.
fn services() -> Vec<(&'static str, u32)> {
    DEMOS
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name, i as u32 + 1))
        .collect()
}

/// The firmware boot of an all-subsystems run: one core per entry plus the boot core.
pub fn boot_config(o: &AllOptions) -> BootConfig {
    let arg: Vec<String> = services().iter().map(|(n, c)| format!("{n}@{c}")).collect();
    BootConfig {
        smp: DEMOS.len() as u32 + 1,
        gic: o.gic,
        timeout: o.timeout,
        append: std::iter::once(format!("wave.services={}", arg.join(",")))
            .chain(o.spin_us.map(|us| format!("wave.spin_us={us}")))
            .collect(),
        echo: o.console,
        ..BootConfig::default()
    }
}

/// The flag of each entry with a long setup (its [`SubsystemDemo::gate`]), handed to its
/// driver through the returned options.
fn gates(o: &AllOptions) -> (AllOptions, Vec<Option<Arc<AtomicBool>>>) {
    let mut o = o.clone();
    let flags = DEMOS
        .iter()
        .map(|d| {
            d.gate.map(|g| {
                let flag = Arc::new(AtomicBool::new(false));
                g(&mut o, flag.clone());
                flag
            })
        })
        .collect();
    (o, flags)
}

/// Every entry's prepare step, then the drivers with a long setup, then (once they are set
/// up, or have ended, or `o.timeout` has passed) every other: so the workloads run at the same
/// time. Each driver runs in its own thread. Then the host side is stopped (STOPPED on behalf
/// of the primary and its lanes).
fn run_drivers(server: &IvshmemServer, o: &AllOptions) -> Vec<std::result::Result<Report, String>> {
    for d in DEMOS {
        if let Some(Err(e)) = d.prepare.map(|p| p(server, o)) {
            let _ = stop_side(server, Side::Host);
            return vec![Err(format!("{}: {e}", d.name))];
        }
    }
    let (o, flags) = gates(o);
    let o = &o;
    let reports = std::thread::scope(|s| {
        let spawn = |i: usize| {
            let d = &DEMOS[i];
            s.spawn(move || (d.run)(server, o, i == 0))
        };
        let mut handles: Vec<_> = (0..DEMOS.len())
            .map(|i| flags[i].as_ref().map(|_| spawn(i)))
            .collect();
        let start = Instant::now();
        while start.elapsed() < o.timeout
            && flags.iter().zip(&handles).any(|(f, h)| {
                f.as_ref().is_some_and(|f| !f.load(Ordering::Acquire))
                    && h.as_ref().is_some_and(|h| !h.is_finished())
            })
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        for (i, h) in handles.iter_mut().enumerate() {
            if h.is_none() {
                *h = Some(spawn(i));
            }
        }
        handles
            .into_iter()
            .zip(DEMOS)
            .map(|(h, d)| {
                h.and_then(|h| h.join().ok())
                    .unwrap_or_else(|| Err("its host side panicked".into()))
                    .map_err(|e| format!("{}: {e}", d.name))
            })
            .collect::<Vec<_>>()
    });
    let _ = stop_side(server, Side::Host);
    reports
}

/// Boots one IPU core per subsystem and runs every subsystem's host side at once. A report
/// whose firmware service did not end sound (its console check) is marked failed.
pub fn run_all(o: &AllOptions, image: &Image) -> Result<(Vec<Report>, BootOutcome)> {
    let link = LinkSettings {
        vectors: DEMOS.iter().map(|d| (d.vectors)(o)).max().unwrap_or(4),
        ..LinkSettings::default()
    };
    let (reports, fw) = with_ipu(&boot_config(o), image, link, |server, _left| {
        let server = &*server;
        with_live_stats(o.stats, server, placement(&services()), || {
            run_drivers(server, o)
        })
    })?;
    let mut out = Vec::new();
    for r in reports {
        let mut r =
            r.map_err(|e| Error::Qemu(format!("{e}\n--- firmware console ---\n{}", fw.console)))?;
        let check = DEMOS
            .iter()
            .find(|d| d.name == r.name)
            .and_then(|d| d.firmware_ok);
        if let Some(ok) = check {
            r.checks
                .push(("IPU policy invariants intact", ok(&fw.console)));
        }
        out.push(r);
    }
    Ok((out, fw))
}

/// Measures each subsystem's policy on the host (the CPU the offload saves).
pub fn measure_on_host(o: &AllOptions, reports: &mut [Report]) -> Result<()> {
    for (r, d) in reports.iter_mut().zip(DEMOS) {
        let Some(on_host) = d.on_host else { continue };
        eprintln!(
            "wave: demo: {}: the same policy on a host core, for the CPU it takes there",
            d.name
        );
        r.on_host_cpu = on_host(o).map_err(|e| Error::Qemu(format!("{}: on host: {e}", d.name)))?;
    }
    Ok(())
}

/// The tables: one per subsystem, then the host CPU the policies take on the IPU vs on the host.
pub fn tables(reports: &[Report], fw: &BootOutcome) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for r in reports {
        let verdict = if r.ok() { "passed" } else { "FAILED" };
        let _ = writeln!(
            o,
            "== {} (IPU core {}): {verdict} ==",
            r.name,
            core_of(r.name)
        );
        o.push_str(&r.table);
        let checks: Vec<String> = r
            .checks
            .iter()
            .map(|(what, ok)| format!("{what}: {}", if *ok { "yes" } else { "NO" }))
            .collect();
        let _ = writeln!(o, "checks: {}", checks.join("; "));
        if let Some(m) = &r.mechanism {
            let _ = writeln!(o, "host mechanism: {m}");
        }
        o.push('\n');
    }
    let _ = writeln!(o, "== host CPU the policies take ==");
    let _ = writeln!(
        o,
        "{:<10} {:>20} {:>26}",
        "subsystem", "offloaded to the IPU", "run on a host core instead"
    );
    let mut total = 0.0;
    for r in reports {
        let host = match r.on_host_cpu {
            Some(s) => {
                total += s;
                format!("{:.1}% of a core", s * 100.0)
            }
            None => "- (no policy)".into(),
        };
        let _ = writeln!(o, "{:<10} {:>20} {:>26}", r.name, "0", host);
    }
    let _ = writeln!(
        o,
        "{:<10} {:>20} {:>26}",
        "total",
        "0",
        format!("{:.1}% of a core", total * 100.0)
    );
    let _ = writeln!(
        o,
        "firmware: {}",
        match fw.status {
            BootStatus::Exited(c) => format!("exited {c} after {:.1} s", fw.wall.as_secs_f64()),
            s => format!("{s:?}"),
        }
    );
    o
}

fn core_of(name: &str) -> String {
    DEMOS
        .iter()
        .position(|d| d.name == name)
        .map_or("-".into(), |i| (i + 1).to_string())
}

/// True if every subsystem passed and the firmware exited 0.
pub fn passed(reports: &[Report], fw: &BootOutcome) -> bool {
    reports.iter().all(Report::ok) && fw.status == BootStatus::Exited(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> AllOptions {
        AllOptions {
            engine: EngineConfig::default(),
            mem: MemRunConfig {
                table_bytes: 256 << 20,
                ..MemRunConfig::default()
            },
            net: NetRunConfig::default(),
            spin_us: Some(5),
            gic: 3,
            timeout: Duration::from_secs(60),
            console: false,
            stats: false,
        }
    }

    #[test]
    fn every_subsystem_is_in_the_table_and_the_firmware_knows_it() {
        let known: Vec<&str> = wave_abi::subsystem::SUBSYSTEMS
            .iter()
            .map(|s| s.name)
            .collect();
        for d in DEMOS {
            assert!(known.contains(&d.name), "{} is not in SUBSYSTEMS", d.name);
        }
        let names: Vec<&str> = DEMOS.iter().map(|d| d.name).collect();
        assert_eq!(names, ["sched", "mem", "net"], "sched first: the primary");
        let b = boot_config(&opts());
        assert_eq!(b.smp, 4);
        assert_eq!(
            b.append,
            ["wave.services=sched@1,mem@2,net@3", "wave.spin_us=5"]
        );
        // The firmware runs at most 4 services (bootargs::MAX_SERVICES).
        assert!(DEMOS.len() <= 4);
        let p = placement(&services());
        assert_eq!(p, [None, Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn the_link_has_a_doorbell_vector_for_every_channel_and_host_cpu() {
        let o = opts();
        let vectors = DEMOS.iter().map(|d| (d.vectors)(&o)).max().unwrap();
        for (ch, s) in wave_abi::subsystem::SUBSYSTEMS.iter().enumerate() {
            let v = wave_abi::subsystem::channel_vector(ch);
            assert!(v < vectors, "{}: vector {v} of {vectors}", s.name);
        }
        let last_cpu = wave_abi::sched::CPU_VECTOR_BASE as u32 + o.engine.cpus - 1;
        assert!(last_cpu < vectors as u32);
    }

    #[test]
    fn a_host_lane_waits_for_the_primary_and_takes_its_epoch() {
        use wave_abi::endpoint::EndpointError;
        use wave_abi::mem::MEM_CHANNEL;
        use wave_abi::net::NET_CHANNEL;
        use wave_abi::{Channel, Endpoint};
        use wave_host_shim::link::host_lane;
        use wave_host_shim::local::LocalLink;
        let (host, _ipu) = LocalLink::pair(1 << 20, 8, 512).unwrap();
        let layout = wave_abi::Layout::read(&host.region()).unwrap();
        let short = Duration::from_millis(20);
        let r = host_lane(&host, &layout, &[MEM_CHANNEL], short);
        assert!(
            matches!(r, Err(EndpointError::NotStarted)),
            "no primary yet"
        );
        let primary = Endpoint::primary(
            host.region(),
            &layout,
            Side::Host,
            host.epoch(),
            &[Channel::Sched],
        )
        .unwrap();
        let lane = host_lane(&host, &layout, &[MEM_CHANNEL, NET_CHANNEL], short).unwrap();
        assert!(!lane.is_primary());
        assert_eq!(lane.epoch(), primary.epoch());
    }

    #[test]
    fn the_memory_driver_gets_the_flag_the_others_wait_for() {
        let (o, flags) = gates(&opts());
        let gated: Vec<&str> = DEMOS
            .iter()
            .zip(&flags)
            .filter(|(_, f)| f.is_some())
            .map(|(d, _)| d.name)
            .collect();
        assert_eq!(gated, ["mem"]);
        let flag = o.mem.set_up.expect("the memory run carries the flag");
        assert!(Arc::ptr_eq(&flag, flags[1].as_ref().unwrap()));
        assert!(
            opts().mem.set_up.is_none(),
            "the caller's options are untouched"
        );
    }

    #[test]
    fn the_memory_config_is_published_before_the_drivers_start() {
        use wave_host_shim::local::LocalLink;
        let (host, _ipu) = LocalLink::pair(1 << 20, 8, 512).unwrap();
        let region = host.region();
        let layout = wave_abi::Layout::read(&region).unwrap();
        assert!(wave_abi::mem::MemSessionConfig::read(&region, &layout).is_err());
        mem_run::publish_config(&region, &opts().mem).unwrap();
        let (generation, c) = wave_abi::mem::MemSessionConfig::read(&region, &layout).unwrap();
        assert_eq!(
            (generation, c.n_regions),
            (1, 128),
            "256 MiB at 2 MiB regions"
        );
        let policy = wave_policy::mem_service::policy_config(&c);
        assert_eq!(policy.region_pages, 512);
        assert_eq!(
            policy.intervals_per_minute,
            opts().mem.policy.intervals_per_minute
        );
    }

    fn report(name: &'static str, ok: bool, cpu: Option<f64>, m: Option<&str>) -> Report {
        Report {
            name,
            table: format!("{name} table\n"),
            checks: vec![("every request answered", ok)],
            on_host_cpu: cpu,
            mechanism: m.map(str::to_string),
        }
    }

    #[test]
    fn the_tables_show_each_verdict_mechanism_and_the_host_cpu_total() {
        let fw = BootOutcome {
            status: BootStatus::Exited(0),
            console: String::new(),
            stderr: String::new(),
            wall: Duration::from_secs(12),
            qemu_pid: 1,
        };
        let reports = [
            report("sched", true, Some(0.25), None),
            report("mem", true, Some(0.015), Some("far tier zram")),
            report("net", false, Some(0.05), Some("steering hash (not root)")),
        ];
        let t = tables(&reports, &fw);
        for want in [
            "== sched (IPU core 1): passed ==",
            "== mem (IPU core 2): passed ==",
            "== net (IPU core 3): FAILED ==",
            "host mechanism: far tier zram",
            "host mechanism: steering hash (not root)",
            "checks: every request answered: NO",
            "31.5% of a core",
            "exited 0 after 12.0 s",
        ] {
            assert!(t.contains(want), "no `{want}` in:\n{t}");
        }
        assert!(!passed(&reports, &fw));
        assert!(passed(&reports[..2], &fw));
    }
}
