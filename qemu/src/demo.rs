//! `cargo wave demo`: offloaded thread scheduling end to end, against its baselines.
//!
//! The same RocksDB-like workload (open-loop Poisson arrivals of ~10 µs GETs and 0.5% ~5 ms
//! RANGEs, served by handler threads on pinned host CPUs) runs three times at the same offered
//! load: with the policy on the IPU (`ipu`: the firmware in QEMU runs `wave-policy` over the
//! ivshmem link; the runner is the ivshmem server and the host shim), with the same policy code
//! in a host thread (`host`, the on-host baseline, which costs a host core), and with no shim
//! at all (`linux`, the kernel's scheduler). It then prints the results side by side.

use std::fmt::Write as _;
use std::time::Duration;

use wave_host_shim::engine::{self, AgentMode, EngineConfig, EngineResults};

use crate::boot::{BootConfig, BootOutcome, BootStatus};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ipu::{with_ipu, with_ipu_restarts, LinkSettings};

/// Most host CPUs the firmware's scheduling agent takes (`firmware/src/link.rs`
/// `AGENT_CPUS`); the firmware refuses a larger configuration in its status block.
pub const IPU_MAX_CPUS: u32 = 16;

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Agents to compare, in order.
    pub agents: Vec<AgentMode>,
    /// Workload and policy settings (shared by every agent).
    pub engine: EngineConfig,
    /// IPU cores (`-smp`); the agent runs on core 0.
    pub ipu_cores: u32,
    /// `wave.spin_us=` for the IPU agent (firmware default if `None`).
    pub spin_us: Option<u64>,
    /// GIC version of the board.
    pub gic: u8,
    /// Wall-clock limit for the IPU run (QEMU is killed after it).
    pub timeout: Duration,
    /// Show the firmware console.
    pub echo: bool,
    /// `ipu` agent: kill QEMU this often and boot a new one (the host fails over to its
    /// fallback agent and hands back to each new IPU).
    pub kill_ipu_every: Option<Duration>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            agents: vec![AgentMode::Ipu, AgentMode::Host, AgentMode::Linux],
            engine: EngineConfig {
                progress: true,
                ..EngineConfig::default()
            },
            ipu_cores: 1,
            spin_us: None,
            gic: 3,
            timeout: Duration::from_secs(180),
            echo: false,
            kill_ipu_every: None,
        }
    }
}

/// One agent's run.
#[derive(Debug)]
pub struct DemoRun {
    /// The engine's measurements.
    pub results: EngineResults,
    /// For `ipu`: how the firmware run ended.
    pub firmware: Option<BootOutcome>,
    /// For `ipu`: host CPU seconds QEMU used emulating the IPU (on real hardware this is the
    /// IPU's own cores, not the host's; on this machine it competes with the host CPUs).
    pub emulator_cpu_s: Option<f64>,
}

impl DemoRun {
    /// True if the run completed every request with no invariant violation (and, for `ipu`,
    /// the firmware exited cleanly).
    pub fn ok(&self) -> bool {
        self.results.invariant_violations == 0
            && self.results.completed == self.results.offered
            && self
                .firmware
                .as_ref()
                .is_none_or(|f| f.status == BootStatus::Exited(0))
    }
}

/// CPU seconds (user + system) of this process's reaped children.
fn children_cpu_s() -> Option<f64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

/// Runs the engine with the agent on the IPU: the firmware in QEMU with `wave.services=sched@0`.
pub fn run_ipu(opts: &DemoOptions, image: &Image) -> Result<DemoRun> {
    let cfg = &opts.engine;
    let vectors = (wave_abi::sched::CPU_VECTOR_BASE as u32 + cfg.cpus).max(4) as u16;
    let boot = BootConfig {
        smp: opts.ipu_cores,
        gic: opts.gic,
        timeout: opts.timeout,
        append: std::iter::once("wave.services=sched@0".to_string())
            .chain(opts.spin_us.map(|us| format!("wave.spin_us={us}")))
            .collect(),
        echo: opts.echo,
        ..BootConfig::default()
    };
    let before = children_cpu_s();
    let link = LinkSettings {
        vectors,
        ..LinkSettings::default()
    };
    let (results, fw) = match opts.kill_ipu_every {
        None => with_ipu(&boot, image, link, |server, _left| {
            engine::run_ipu(server, cfg)
        })?,
        Some(every) => {
            let (r, mut runs) = with_ipu_restarts(&boot, image, link, every, |server| {
                engine::run_ipu(server, cfg)
            })?;
            let r = r.map(|mut r| {
                r.ipu_restarts = runs.len().saturating_sub(1) as u64;
                r
            });
            let last = runs
                .pop()
                .ok_or_else(|| Error::Qemu("no QEMU run".into()))?;
            (r, last)
        }
    };
    // QEMU is this process's only child during the run, and has been reaped.
    let emulator_cpu_s = children_cpu_s().map(|after| after - before.unwrap_or(0.0));
    match results {
        Ok(r) => Ok(DemoRun {
            results: r,
            firmware: Some(fw),
            emulator_cpu_s,
        }),
        Err(e) => Err(Error::Qemu(format!(
            "ipu run failed: {e}\n--- firmware console ---\n{}",
            fw.console
        ))),
    }
}

/// Runs every agent of `opts` in turn (`image` is needed only for the `ipu` agent).
pub fn run_demo(opts: &DemoOptions, image: Option<&Image>) -> Result<Vec<DemoRun>> {
    let mut runs = Vec::new();
    for &mode in &opts.agents {
        eprintln!(
            "wave: demo: agent {} ({} policy, {} req/s for {:.0} s on {} host CPUs)",
            mode.name(),
            policy_name(opts),
            opts.engine.rate,
            opts.engine.duration.as_secs_f64(),
            opts.engine.cpus
        );
        let run = match mode {
            AgentMode::Ipu => {
                let image = image
                    .ok_or_else(|| Error::Qemu("the ipu agent needs the firmware image".into()))?;
                run_ipu(opts, image)?
            }
            m => DemoRun {
                results: engine::run(m, &opts.engine)
                    .map_err(|e| Error::Qemu(format!("{} run failed: {e}", m.name())))?,
                firmware: None,
                emulator_cpu_s: None,
            },
        };
        runs.push(run);
    }
    Ok(runs)
}

fn policy_name(opts: &DemoOptions) -> &'static str {
    opts.engine.policy.info.name
}

/// The policy's parameters in force, as a JSON object.
fn policy_params_json(opts: &DemoOptions) -> String {
    let p = &opts.engine.policy;
    let fields: Vec<String> = p
        .info
        .params
        .iter()
        .map(|d| format!("\"{}\":{}", d.name, p.get(d.name).unwrap_or(0)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The side-by-side table.
pub fn table(runs: &[DemoRun]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&EngineResults) -> String| {
        rows.push((
            name.to_string(),
            runs.iter().map(|r| f(&r.results)).collect(),
        ));
    };
    let us = |v: f64| {
        if v >= 10_000.0 {
            format!("{:.1} ms", v / 1000.0)
        } else {
            format!("{v:.0} us")
        }
    };
    row("policy", &|r| r.policy.clone());
    row("completed / offered", &|r| {
        format!("{} / {}", r.completed, r.offered)
    });
    row("throughput (req/s)", &|r| {
        format!("{:.0}", r.throughput_rps)
    });
    row("GET p50", &|r| us(r.get.p50_us));
    row("GET p99", &|r| us(r.get.p99_us));
    row("GET p99.9", &|r| us(r.get.p999_us));
    row("RANGE p50", &|r| us(r.range.p50_us));
    row("RANGE p99", &|r| us(r.range.p99_us));
    row("RANGE p99.9", &|r| us(r.range.p999_us));
    let shim = |r: &EngineResults, v: String| {
        if r.mode == "linux" {
            "-".to_string()
        } else {
            v
        }
    };
    row("txns committed", &|r| shim(r, r.txn_committed.to_string()));
    row("txns stale / failed", &|r| {
        shim(r, format!("{} / {}", r.txn_failed_stale, r.txn_failed()))
    });
    row("txns aborted", &|r| shim(r, r.txn_aborted.to_string()));
    row("preemptions", &|r| shim(r, r.preemptions.to_string()));
    row("preempt to yield p50/p99", &|r| {
        shim(
            r,
            format!(
                "{} / {}",
                us(r.preempt_seen_to_yield.p50_us),
                us(r.preempt_seen_to_yield.p99_us)
            ),
        )
    });
    row("decision latency p50", &|r| {
        shim(r, us(r.decision_latency.p50_us))
    });
    row("decision latency p99", &|r| {
        shim(r, us(r.decision_latency.p99_us))
    });
    row(
        "host CPU on the policy",
        &|r| match (r.mode.as_str(), r.agent_cpu_share) {
            ("linux", _) => "- (in kernel)".into(),
            ("ipu", _) => "0 (on the IPU)".into(),
            (_, Some(s)) => format!("{:.1}% of a core", s * 100.0),
            _ => "?".into(),
        },
    );
    row("invariant violations", &|r| {
        r.invariant_violations.to_string()
    });
    let ipu = |r: &EngineResults, v: String| if r.mode == "ipu" { v } else { "-".into() };
    row("IPU restarts / failovers", &|r| {
        ipu(r, format!("{} / {}", r.ipu_restarts, r.failovers))
    });
    row("hand-backs", &|r| ipu(r, r.handbacks.to_string()));
    row("time in fallback", &|r| {
        ipu(r, format!("{:.2} s", r.fallback_s))
    });
    row("worst stall / detection", &|r| {
        ipu(
            r,
            format!("{:.1} / {:.1} ms", r.worst_stall_ms, r.worst_detection_ms),
        )
    });
    rows.push((
        "IPU emulation (QEMU CPU)".to_string(),
        runs.iter()
            .map(|r| {
                r.emulator_cpu_s
                    .map_or("-".to_string(), |s| format!("{s:.1} s"))
            })
            .collect(),
    ));
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1[i].chars().count())
                .chain([runs[i].results.mode.len()])
                .max()
                .unwrap_or(4)
                .max(8)
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:w0$}", "agent");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(out, "  {:>w$}", r.results.mode, w = widths[i]);
    }
    out.push('\n');
    for (name, cells) in &rows {
        let _ = write!(out, "{name:w0$}");
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(out, "  {c:>w$}", w = widths[i]);
        }
        out.push('\n');
    }
    out
}

/// All runs as one JSON document.
pub fn json(opts: &DemoOptions, runs: &[DemoRun]) -> String {
    let c = &opts.engine;
    let mut o = format!(
        "{{\"config\":{{\"policy\":\"{}\",\"params\":{},\"rate\":{},\"duration_s\":{:.3},\"cpus\":{},\"handlers\":{},\"get_us\":{},\"range_ms\":{},\"range_pct\":{},\"ipu_cores\":{}}},\"runs\":[",
        policy_name(opts),
        policy_params_json(opts),
        c.rate,
        c.duration.as_secs_f64(),
        c.cpus,
        c.handlers,
        c.get_us,
        c.range_ms,
        c.range_pct,
        opts.ipu_cores
    );
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let run = r.results.to_json();
        match r.emulator_cpu_s {
            // Splice the emulator's CPU time into the run's object.
            Some(cpu) => {
                let _ = write!(o, "{},\"emulator_cpu_s\":{cpu:.3}}}", &run[..run.len() - 1]);
            }
            None => o.push_str(&run),
        }
    }
    o.push_str("]}");
    o
}
