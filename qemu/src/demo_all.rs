//! `cargo wave demo --subsystem all`: every offloaded subsystem at once, one IPU core each, on
//! its own workload at the same time, then one table per subsystem and the host CPU the
//! policies would have taken had they run on the host. Also the live stats view that
//! `cargo wave demo --stats` prints while a run goes (the same sampler and table as
//! `wave-host stats`).
//!
//! Subsystems plug in through [`DEMOS`]: one line each (name, doorbell vectors, host-side
//! driver, on-host baseline). The first entry owns the host's status block (the primary
//! endpoint); every other runs as a lane of it (docs/abi.md, "Lanes"). IPU core `i + 1` runs
//! entry `i` (core 0 boots the image).

use std::time::{Duration, Instant};

use wave_abi::Side;
use wave_host_shim::engine::{self, EngineConfig, EngineResults};
use wave_host_shim::ivshmem::IvshmemServer;
use wave_host_shim::link::stop_side;
use wave_host_shim::link_test::{self, LinkTestConfig};
use wave_host_shim::stats::{render, Sampler};
use wave_host_shim::Link;

use crate::boot::{BootConfig, BootOutcome, BootStatus};
use crate::demo::DemoRun;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ipu::{with_ipu, LinkSettings};

/// Settings of an all-subsystems run.
#[derive(Clone, Debug)]
pub struct AllOptions {
    /// The scheduling workload and policy.
    pub engine: EngineConfig,
    /// Echo requests the link probe sends (as fast as the IPU answers).
    pub echo_messages: u64,
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
    /// Every request completed, nothing lost or corrupt, no invariant broken.
    pub ok: bool,
    /// Share of a host core its policy took when run on the host (`None`: no policy to move).
    pub on_host_cpu: Option<f64>,
}

/// A subsystem's on-host baseline: the share of a host core its policy takes there.
pub type OnHost = fn(&AllOptions) -> std::result::Result<Option<f64>, String>;

/// One subsystem's demo: the line each subsystem adds to [`DEMOS`].
pub struct SubsystemDemo {
    /// Subsystem and firmware service name (`wave.services=NAME@CORE`).
    pub name: &'static str,
    /// Doorbell vectors it needs.
    pub vectors: fn(&AllOptions) -> u16,
    /// Its host side against the IPU (`primary`: it owns the host status block).
    pub run: fn(&IvshmemServer, &AllOptions, bool) -> std::result::Result<Report, String>,
    /// Its policy run on the host instead, for the CPU it would cost there (share of a core);
    /// `None` for a subsystem with no policy to move (the echo probe).
    pub on_host: Option<OnHost>,
}

/// Every subsystem that exists, in IPU core order. Append one line per new subsystem.
pub const DEMOS: &[SubsystemDemo] = &[
    SubsystemDemo {
        name: "sched",
        vectors: sched_vectors,
        run: sched_run,
        on_host: Some(sched_on_host),
    },
    SubsystemDemo {
        name: "echo",
        vectors: echo_vectors,
        run: echo_run,
        on_host: None,
    },
];

fn sched_vectors(o: &AllOptions) -> u16 {
    (wave_abi::sched::CPU_VECTOR_BASE as u32 + o.engine.cpus).max(4) as u16
}

fn sched_engine(o: &AllOptions) -> EngineConfig {
    EngineConfig {
        stop_link_at_end: false,
        progress: false,
        ..o.engine.clone()
    }
}

fn sched_table(r: EngineResults) -> (String, bool) {
    let run = DemoRun {
        results: r,
        firmware: None,
        emulator_cpu_s: None,
        ipu_cost: None,
    };
    let ok = run.ok();
    (crate::demo::table(std::slice::from_ref(&run)), ok)
}

fn sched_run(
    server: &IvshmemServer,
    o: &AllOptions,
    _primary: bool,
) -> std::result::Result<Report, String> {
    let r = engine::run_ipu(server, &sched_engine(o)).map_err(|e| e.to_string())?;
    let (table, ok) = sched_table(r);
    Ok(Report {
        name: "sched",
        table,
        ok,
        on_host_cpu: None,
    })
}

fn sched_on_host(o: &AllOptions) -> std::result::Result<Option<f64>, String> {
    let r = engine::run_host(&sched_engine(o)).map_err(|e| e.to_string())?;
    Ok(r.agent_cpu_share)
}

fn echo_vectors(_: &AllOptions) -> u16 {
    wave_abi::layout::MIN_VECTORS as u16
}

fn echo_run(
    server: &IvshmemServer,
    o: &AllOptions,
    primary: bool,
) -> std::result::Result<Report, String> {
    let cfg = LinkTestConfig {
        messages: o.echo_messages,
        lane: !primary,
        stop_at_end: false,
        timeout: Duration::from_secs(120),
        ..LinkTestConfig::default()
    };
    let s = link_test::run(server, cfg).map_err(|e| format!("{e:?}"))?;
    let table = format!(
        "sent / received        {} / {}\nlost / corrupt         {} / {}\nmessages/s             {:.0}\n\
         round trip p50 / p99   {:?} / {:?}\ndoorbells to the IPU   {}\n",
        s.sent, s.received, s.lost, s.corrupt, s.msgs_per_sec, s.rtt_p50, s.rtt_p99, s.doorbells_sent
    );
    Ok(Report {
        name: "echo",
        table,
        ok: s.received == o.echo_messages && s.lost == 0 && s.corrupt == 0,
        on_host_cpu: None,
    })
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
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let region = server.region();
            let mut sampler = Sampler::new(*server.layout(), placement, Duration::from_secs(1));
            // In the demos the scheduling engine is the host's primary endpoint.
            sampler.txns_from_host_status();
            let mut next = Instant::now() + Duration::from_secs(1);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
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
        done.store(true, std::sync::atomic::Ordering::Release);
        out
    })
}

/// Boots one IPU core per subsystem and runs every subsystem's host side at once.
pub fn run_all(o: &AllOptions, image: &Image) -> Result<(Vec<Report>, BootOutcome)> {
    let services: Vec<(&str, u32)> = DEMOS
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name, i as u32 + 1))
        .collect();
    let arg: Vec<String> = services.iter().map(|(n, c)| format!("{n}@{c}")).collect();
    let boot = BootConfig {
        smp: DEMOS.len() as u32 + 1,
        gic: o.gic,
        timeout: o.timeout,
        append: std::iter::once(format!("wave.services={}", arg.join(",")))
            .chain(o.spin_us.map(|us| format!("wave.spin_us={us}")))
            .collect(),
        echo: o.console,
        ..BootConfig::default()
    };
    let link = LinkSettings {
        vectors: DEMOS.iter().map(|d| (d.vectors)(o)).max().unwrap_or(4),
        ..LinkSettings::default()
    };
    let (reports, fw) = with_ipu(&boot, image, link, |server, _left| {
        let server = &*server;
        let reports = with_live_stats(o.stats, server, placement(&services), || {
            std::thread::scope(|s| {
                let handles: Vec<_> = DEMOS
                    .iter()
                    .enumerate()
                    .map(|(i, d)| s.spawn(move || (d.run)(server, o, i == 0)))
                    .collect();
                handles
                    .into_iter()
                    .zip(DEMOS)
                    .map(|(h, d)| {
                        h.join()
                            .unwrap_or_else(|_| Err("its host side panicked".into()))
                            .map_err(|e| format!("{}: {e}", d.name))
                    })
                    .collect::<Vec<_>>()
            })
        });
        let _ = stop_side(server, Side::Host);
        reports
    })?;
    let mut out = Vec::new();
    for r in reports {
        out.push(
            r.map_err(|e| Error::Qemu(format!("{e}\n--- firmware console ---\n{}", fw.console)))?,
        );
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
        let _ = writeln!(o, "== {} (IPU core {}) ==", r.name, core_of(r.name));
        o.push_str(&r.table);
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
    reports.iter().all(|r| r.ok) && fw.status == BootStatus::Exited(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_subsystems_the_firmware_knows() {
        let known: Vec<&str> = wave_abi::subsystem::SUBSYSTEMS
            .iter()
            .map(|s| s.name)
            .collect();
        for d in DEMOS {
            assert!(known.contains(&d.name), "{} is not in SUBSYSTEMS", d.name);
        }
        assert_eq!(
            DEMOS[0].name, "sched",
            "the scheduling engine is the primary endpoint"
        );
        let p = placement(&[("sched", 1), ("echo", 2)]);
        assert_eq!(p.iter().flatten().count(), 2);
    }
}
