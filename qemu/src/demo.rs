//! `cargo wave demo`: offloaded thread scheduling end to end, against its baselines.
//!
//! The same RocksDB-like workload (open-loop Poisson arrivals of ~10 µs GETs and 0.5% ~5 ms
//! RANGEs, served by handler threads on pinned host CPUs) runs three times at the same offered
//! load: with the policy on the IPU (`ipu`: the firmware in QEMU runs `wave-policy` over the
//! ivshmem link; the runner is the ivshmem server and the host shim), with the same policy code
//! in a host thread (`host`, the on-host baseline, which costs a host core), and with no shim
//! at all (`linux`, the kernel's scheduler). It then prints the results side by side.
//!
//! Fairness: the work per request is calibrated once per demo ([`calibrate`]) and every agent
//! runs exactly those chunks; `--repeat N` interleaves the agents N times ([`run_rounds`],
//! [`repeat_table`]: median and spread of each figure); `--sweep` repeats that per offered load
//! ([`sweep_table`]).

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
    /// Print the live stats view (as `wave-host stats`) every second during the ipu run.
    pub stats: bool,
    /// Rounds of interleaved agent runs (`--repeat`), at least 1.
    pub repeat: u32,
    /// Count the IPU agent's instructions and cycles (`wave.pmu=1` under QEMU `-icount
    /// shift=0`, which makes the IPU's time follow its instruction count: its latencies are
    /// then not the default run's).
    pub ipu_count: bool,
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
            stats: false,
            repeat: 1,
            ipu_count: false,
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
    /// For `ipu` with [`DemoOptions::ipu_count`]: what the agent cost on the IPU core.
    pub ipu_cost: Option<IpuCost>,
}

/// The IPU agent's own cost, as the firmware's PMU counted it (`sched: pmu:` console line).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IpuCost {
    /// Events counted.
    pub events: u64,
    /// Instructions per event (ring poll, decode, bookkeeping).
    pub instructions_per_event: f64,
    /// Cycles per event (emulated; not meaningful under `-icount`).
    pub cycles_per_event: f64,
    /// Decisions counted.
    pub decisions: u64,
    /// Instructions per decision (policy poll and slot writes).
    pub instructions_per_decision: f64,
    /// Cycles per decision.
    pub cycles_per_decision: f64,
}

impl IpuCost {
    /// Reads the firmware's `sched: pmu: events E instructions I cycles C decisions D
    /// instructions I cycles C` line from its console (`None` if absent or malformed).
    pub fn from_console(console: &str) -> Option<IpuCost> {
        let line = console.lines().rev().find_map(|l| {
            let i = l.find("sched: pmu: ")?;
            Some(&l[i + "sched: pmu: ".len()..])
        })?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize, name: &str| -> Option<f64> {
            (w.get(i) == Some(&name)).then_some(())?;
            w.get(i + 1)?.parse::<u64>().ok().map(|v| v as f64)
        };
        let (ev, ei, ec) = (
            num(0, "events")?,
            num(2, "instructions")?,
            num(4, "cycles")?,
        );
        let (de, di, dc) = (
            num(6, "decisions")?,
            num(8, "instructions")?,
            num(10, "cycles")?,
        );
        let per = |a: f64, n: f64| if n > 0.0 { a / n } else { 0.0 };
        Some(IpuCost {
            events: ev as u64,
            instructions_per_event: per(ei, ev),
            cycles_per_event: per(ec, ev),
            decisions: de as u64,
            instructions_per_decision: per(di, de),
            cycles_per_decision: per(dc, de),
        })
    }
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
            .chain(opts.ipu_count.then(|| "wave.pmu=1".to_string()))
            .collect(),
        extra_args: if opts.ipu_count {
            vec!["-icount".into(), "shift=0".into()]
        } else {
            Vec::new()
        },
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
            let server = &*server;
            let placement = crate::demo_all::placement(&[("sched", 0)]);
            crate::demo_all::with_live_stats(opts.stats, server, placement, || {
                engine::run_ipu(server, cfg)
            })
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
            ipu_cost: IpuCost::from_console(&fw.console),
            firmware: Some(fw),
            emulator_cpu_s,
        }),
        Err(e) => Err(Error::Qemu(format!(
            "ipu run failed: {e}\n--- firmware console ---\n{}",
            fw.console
        ))),
    }
}

/// Calibrates the work per request once (if `opts` has no calibration yet) so that every agent
/// and every round runs identical work; returns the calibration in one line.
pub fn calibrate(opts: &mut DemoOptions) -> String {
    let work = match opts.engine.work {
        Some(w) => w,
        None => engine::calibrate(&opts.engine),
    };
    opts.engine.work = Some(work);
    engine::describe_work(&work)
}

/// Runs every agent of `opts` in turn (`image` is needed only for the `ipu` agent), with the
/// calibration of `opts` (made here if it has none).
pub fn run_demo(opts: &DemoOptions, image: Option<&Image>) -> Result<Vec<DemoRun>> {
    let mut opts = opts.clone();
    calibrate(&mut opts);
    run_agents(&opts, &opts.agents, image)
}

/// `opts.repeat` rounds, the agents interleaved (round r starts r agents further along the
/// list, so no agent always runs first or last). Result: per agent (in `opts.agents` order),
/// its runs in round order.
pub fn run_rounds(opts: &DemoOptions, image: Option<&Image>) -> Result<Vec<Vec<DemoRun>>> {
    let mut opts = opts.clone();
    calibrate(&mut opts);
    let n = opts.agents.len();
    let mut per_agent: Vec<Vec<DemoRun>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..opts.repeat.max(1) as usize {
        if opts.repeat > 1 {
            eprintln!("wave: demo: round {} of {}", round + 1, opts.repeat);
        }
        let order: Vec<usize> = (0..n).map(|k| (k + round) % n.max(1)).collect();
        let modes: Vec<AgentMode> = order.iter().map(|&i| opts.agents[i]).collect();
        let runs = run_agents(&opts, &modes, image)?;
        for (i, run) in order.into_iter().zip(runs) {
            per_agent[i].push(run);
        }
    }
    Ok(per_agent)
}

fn run_agents(
    opts: &DemoOptions,
    modes: &[AgentMode],
    image: Option<&Image>,
) -> Result<Vec<DemoRun>> {
    let mut runs = Vec::new();
    for &mode in modes {
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
                ipu_cost: None,
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
    row("waited for a handler", &|r| r.queued.to_string());
    row("drain after the load", &|r| us(r.drain_s * 1e6));
    row("saturated", &|r| {
        if r.saturated { "SATURATED" } else { "no" }.to_string()
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
    let cost = |f: fn(&IpuCost) -> f64| -> Vec<String> {
        runs.iter()
            .map(|r| r.ipu_cost.map_or("-".into(), |c| format!("{:.0}", f(&c))))
            .collect()
    };
    if runs.iter().any(|r| r.ipu_cost.is_some()) {
        rows.push((
            "IPU instructions / event".into(),
            cost(|c| c.instructions_per_event),
        ));
        rows.push((
            "IPU instructions / decision".into(),
            cost(|c| c.instructions_per_decision),
        ));
    }
    rows.push((
        "IPU emulation (QEMU CPU)".to_string(),
        runs.iter()
            .map(|r| {
                r.emulator_cpu_s
                    .map_or("-".to_string(), |s| format!("{s:.1} s"))
            })
            .collect(),
    ));
    let heads: Vec<&str> = runs.iter().map(|r| r.results.mode.as_str()).collect();
    wave_host_shim::report::columns("agent", &heads, &rows, 8)
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
        // Splice the emulator's CPU time and the IPU's cost into the run's object.
        let mut extra = String::new();
        if let Some(cpu) = r.emulator_cpu_s {
            let _ = write!(extra, ",\"emulator_cpu_s\":{cpu:.3}");
        }
        if let Some(c) = r.ipu_cost {
            let _ = write!(
                extra,
                ",\"ipu_cost\":{{\"events\":{},\"instructions_per_event\":{:.1},\"cycles_per_event\":{:.1},\"decisions\":{},\"instructions_per_decision\":{:.1},\"cycles_per_decision\":{:.1}}}",
                c.events,
                c.instructions_per_event,
                c.cycles_per_event,
                c.decisions,
                c.instructions_per_decision,
                c.cycles_per_decision
            );
        }
        let _ = write!(o, "{}{extra}}}", &run[..run.len() - 1]);
    }
    o.push_str("]}");
    o
}

/// One figure of the repeat and sweep tables: its name, how to read it from a run (`None`:
/// not meaningful for that agent), and its unit.
struct Figure {
    name: &'static str,
    get: fn(&DemoRun) -> Option<f64>,
    unit: Unit,
}

#[derive(Clone, Copy)]
enum Unit {
    Us,
    Rps,
    Count,
    Pct,
}

fn shim_only(r: &DemoRun, v: f64) -> Option<f64> {
    (r.results.mode != "linux").then_some(v)
}

const FIGURES: &[Figure] = &[
    Figure {
        name: "throughput (req/s)",
        get: |r| Some(r.results.throughput_rps),
        unit: Unit::Rps,
    },
    Figure {
        name: "GET p50",
        get: |r| Some(r.results.get.p50_us),
        unit: Unit::Us,
    },
    Figure {
        name: "GET p99",
        get: |r| Some(r.results.get.p99_us),
        unit: Unit::Us,
    },
    Figure {
        name: "GET p99.9",
        get: |r| Some(r.results.get.p999_us),
        unit: Unit::Us,
    },
    Figure {
        name: "RANGE p99",
        get: |r| Some(r.results.range.p99_us),
        unit: Unit::Us,
    },
    Figure {
        name: "decision latency p50",
        get: |r| shim_only(r, r.results.decision_latency.p50_us),
        unit: Unit::Us,
    },
    Figure {
        name: "decision latency p99",
        get: |r| shim_only(r, r.results.decision_latency.p99_us),
        unit: Unit::Us,
    },
    Figure {
        name: "host CPU on the policy (%)",
        get: |r| r.results.agent_cpu_share.map(|s| s * 100.0),
        unit: Unit::Pct,
    },
    Figure {
        name: "waited for a handler",
        get: |r| Some(r.results.queued as f64),
        unit: Unit::Count,
    },
    Figure {
        name: "drain after the load",
        get: |r| Some(r.results.drain_s * 1e6),
        unit: Unit::Us,
    },
];

fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Us if v >= 10_000.0 => format!("{:.1} ms", v / 1000.0),
        Unit::Us => format!("{v:.0} us"),
        Unit::Rps | Unit::Count => format!("{v:.0}"),
        Unit::Pct => format!("{v:.1}"),
    }
}

/// Median, minimum and maximum of `values` (not empty).
pub fn median_spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

/// "median [min..max]" of one figure over an agent's rounds ("-" where it does not apply).
fn cell(runs: &[DemoRun], f: &Figure) -> String {
    let vals: Vec<f64> = runs.iter().filter_map(f.get).collect();
    if vals.is_empty() {
        return "-".into();
    }
    let (med, lo, hi) = median_spread(&vals);
    if vals.len() == 1 {
        fmt_value(med, f.unit)
    } else {
        format!(
            "{} [{}..{}]",
            fmt_value(med, f.unit),
            fmt_value(lo, f.unit),
            fmt_value(hi, f.unit)
        )
    }
}

fn saturated_cell(runs: &[DemoRun]) -> String {
    let n = runs.iter().filter(|r| r.results.saturated).count();
    match n {
        0 => "no".into(),
        n if n == runs.len() => "SATURATED".into(),
        n => format!("SATURATED {n}/{}", runs.len()),
    }
}

/// Lays out a table: a header row, then named rows, right-aligned columns.
fn render(header: &[String], rows: &[(String, Vec<String>)]) -> String {
    let w0 = rows
        .iter()
        .map(|r| r.0.chars().count())
        .chain([header[0].chars().count()])
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = (1..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1.get(i - 1).map_or(0, |c| c.chars().count()))
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(4)
        })
        .collect();
    let mut out = String::new();
    let mut line = |first: &str, cells: &[String]| {
        let pad = w0 - first.chars().count();
        let _ = write!(out, "{first}{}", " ".repeat(pad));
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {c:>w$}");
        }
        out.push('\n');
    };
    line(&header[0], &header[1..]);
    for (name, cells) in rows {
        line(name, cells);
    }
    out
}

/// The table of `--repeat`: per agent, the median of each figure and its spread over rounds.
pub fn repeat_table(per_agent: &[Vec<DemoRun>]) -> String {
    let rounds = per_agent.first().map_or(0, Vec::len);
    let mut header = vec![format!("agent (median [min..max] of {rounds})")];
    header.extend(
        per_agent
            .iter()
            .map(|runs| runs.first().map_or("?".into(), |r| r.results.mode.clone())),
    );
    let mut rows: Vec<(String, Vec<String>)> = FIGURES
        .iter()
        .map(|f| {
            let cells = per_agent.iter().map(|runs| cell(runs, f)).collect();
            (f.name.to_string(), cells)
        })
        .collect();
    rows.push((
        "saturated".into(),
        per_agent.iter().map(|r| saturated_cell(r)).collect(),
    ));
    render(&header, &rows)
}

/// One load of a sweep: the offered rate and, per agent, its runs (rounds).
pub struct SweepPoint {
    /// Offered load (req/s).
    pub rate: f64,
    /// Per agent (in the demo's agent order), its runs.
    pub per_agent: Vec<Vec<DemoRun>>,
}

/// Runs the demo at each offered load of `rates` (one calibration for all of them).
pub fn run_sweep(
    opts: &DemoOptions,
    rates: &[f64],
    image: Option<&Image>,
) -> Result<Vec<SweepPoint>> {
    let mut opts = opts.clone();
    calibrate(&mut opts);
    let mut points = Vec::new();
    for &rate in rates {
        eprintln!("wave: demo: sweep point {rate:.0} req/s");
        opts.engine.rate = rate;
        points.push(SweepPoint {
            rate,
            per_agent: run_rounds(&opts, image)?,
        });
    }
    Ok(points)
}

/// Latency against load per agent: a row per offered load, a column per agent and figure
/// (medians over rounds), saturated loads marked.
pub fn sweep_table(points: &[SweepPoint], agents: &[AgentMode]) -> String {
    let mut header = vec!["offered (req/s)".to_string()];
    for a in agents {
        for what in ["GET p50", "GET p99", "throughput", "sat"] {
            header.push(format!("{} {what}", a.name()));
        }
    }
    let med = |runs: &[DemoRun], f: fn(&DemoRun) -> f64, unit: Unit| {
        let v: Vec<f64> = runs.iter().map(f).collect();
        fmt_value(median_spread(&v).0, unit)
    };
    let rows: Vec<(String, Vec<String>)> = points
        .iter()
        .map(|p| {
            let mut cells = Vec::new();
            for runs in &p.per_agent {
                cells.push(med(runs, |r| r.results.get.p50_us, Unit::Us));
                cells.push(med(runs, |r| r.results.get.p99_us, Unit::Us));
                cells.push(med(runs, |r| r.results.throughput_rps, Unit::Rps));
                let sat = runs.iter().filter(|r| r.results.saturated).count();
                cells.push(if sat == 0 {
                    "no".into()
                } else {
                    format!("SAT {sat}/{}", runs.len())
                });
            }
            (format!("{:.0}", p.rate), cells)
        })
        .collect();
    render(&header, &rows)
}

/// Every run of a repeat or a sweep as one JSON document (`points`: one per offered load,
/// each with its rounds per agent).
pub fn json_points(opts: &DemoOptions, points: &[SweepPoint]) -> String {
    let head = json(opts, &[]);
    // `json` ends with `"runs":[]}`: replace that with the points.
    let mut o = head[..head.len() - "\"runs\":[]}".len()].to_string();
    o.push_str("\"points\":[");
    for (k, p) in points.iter().enumerate() {
        if k > 0 {
            o.push(',');
        }
        let _ = write!(o, "{{\"rate\":{},\"agents\":[", p.rate);
        for (i, runs) in p.per_agent.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let one = json(opts, runs);
            let start = one.find("\"runs\":").map_or(0, |i| i + "\"runs\":".len());
            o.push_str(&one[start..one.len() - 1]);
        }
        o.push_str("]}");
    }
    o.push_str("]}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: &str, p99: f64, saturated: bool) -> DemoRun {
        let mut r = EngineResults {
            mode: mode.into(),
            saturated,
            ..Default::default()
        };
        r.get.p99_us = p99;
        DemoRun {
            results: r,
            firmware: None,
            emulator_cpu_s: None,
            ipu_cost: None,
        }
    }

    #[test]
    fn ipu_cost_from_the_firmware_console() {
        let console = "sched: policy shinjuku: committed 5\n\
            sched: pmu: events 100 instructions 52000 cycles 900000 decisions 40 instructions 30000 cycles 400000\n\
            sched: host stopped\n";
        let c = IpuCost::from_console(console).unwrap();
        assert_eq!((c.events, c.decisions), (100, 40));
        assert_eq!(
            (c.instructions_per_event, c.instructions_per_decision),
            (520.0, 750.0)
        );
        assert_eq!(c.cycles_per_decision, 10_000.0);
        assert_eq!(IpuCost::from_console("sched: pmu: events x"), None);
        assert_eq!(IpuCost::from_console("nothing"), None);
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(median_spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_spread(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert!(median_spread(&[]).0.is_nan());
    }

    #[test]
    fn repeat_table_shows_medians_spread_and_saturation() {
        let per_agent = vec![
            vec![
                run("host", 30.0, false),
                run("host", 10.0, false),
                run("host", 20.0, true),
            ],
            (0..3).map(|_| run("linux", 5.0, false)).collect(),
        ];
        let t = repeat_table(&per_agent);
        let p99 = t.lines().find(|l| l.starts_with("GET p99 ")).unwrap();
        assert!(p99.contains("20 us [10 us..30 us]"), "{t}");
        assert!(p99.contains("5 us [5 us..5 us]"), "{t}");
        let sat = t.lines().find(|l| l.starts_with("saturated")).unwrap();
        assert!(sat.contains("SATURATED 1/3") && sat.ends_with("no"), "{t}");
        // Decision latency is not a linux figure.
        let dec = t
            .lines()
            .find(|l| l.starts_with("decision latency p50"))
            .unwrap();
        assert!(dec.trim_end().ends_with('-'), "{t}");
    }

    #[test]
    fn sweep_table_has_a_row_per_load() {
        let points = vec![
            SweepPoint {
                rate: 5000.0,
                per_agent: vec![vec![run("host", 40.0, false)]],
            },
            SweepPoint {
                rate: 20000.0,
                per_agent: vec![vec![run("host", 9000.0, true)]],
            },
        ];
        let t = sweep_table(&points, &[AgentMode::Host]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].starts_with("5000") && lines[1].ends_with("no"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("20000") && lines[2].contains("SAT 1/1"),
            "{t}"
        );
        let j = json_points(&DemoOptions::default(), &points);
        assert!(j.starts_with("{\"config\":") && j.contains("\"points\":[{\"rate\":5000"));
        assert!(j.ends_with("}]]}]}"), "{j}");
    }
}
