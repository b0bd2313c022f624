//! `cargo wave demo --subsystem mem`: offloaded memory management end to end, against its
//! baselines on identical work.
//!
//! The same key-value workload (a table with a skewed, time-clustered hot set that moves
//! halfway through the run, open-loop arrivals, every value checksummed) runs under each mode:
//! `none` (no management, all in DRAM), `host` (the memory policy in a host thread over an
//! in-process link) and `ipu` (the policy in the firmware in QEMU over the ivshmem link). The
//! host mechanism is the same in `host` and `ipu`. Then a side-by-side table, optionally JSON
//! and an SVG of resident memory and GET p99 over time.

use std::fmt::Write as _;
use std::time::Duration;

pub use wave_host_shim::mem::report::{svg, table as results_table};
pub use wave_host_shim::mem::run::MemMode;
use wave_host_shim::mem::run::{self as mem_run, MemRunConfig};

use crate::boot::{BootConfig, BootOutcome, BootStatus};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ipu::{with_ipu, LinkSettings};

/// Settings of a memory demo.
#[derive(Debug, Clone)]
pub struct MemDemoOptions {
    /// Modes to compare (run in this order; `none` first makes the baseline).
    pub modes: Vec<MemMode>,
    /// Workload, policy and timing (identical for every mode).
    pub run: MemRunConfig,
    /// IPU cores (`-smp`); the policy runs on core 0.
    pub ipu_cores: u32,
    /// `wave.spin_us=` for the IPU service.
    pub spin_us: Option<u64>,
    /// GIC version of the board.
    pub gic: u8,
    /// Show the firmware console.
    pub echo: bool,
}

impl Default for MemDemoOptions {
    fn default() -> Self {
        MemDemoOptions {
            modes: vec![MemMode::None, MemMode::Host, MemMode::Ipu],
            run: MemRunConfig {
                progress: true,
                ..MemRunConfig::default()
            },
            ipu_cores: 1,
            spin_us: None,
            gic: 3,
            echo: false,
        }
    }
}

/// One mode's run.
#[derive(Debug)]
pub struct MemDemoRun {
    /// What the run measured (for `ipu`, with the QEMU CPU time in `emulator_cpu_s`).
    pub results: mem_run::MemRunResults,
    /// For `ipu`: how the firmware run ended.
    pub firmware: Option<BootOutcome>,
}

impl MemDemoRun {
    /// True if every value verified, no invariant broke, and (for `ipu`) the firmware exited
    /// cleanly and reported its policy's invariants intact.
    pub fn ok(&self) -> bool {
        self.results.checksum_failures == 0
            && self.results.invariant_violations == 0
            && self.firmware.as_ref().is_none_or(|f| {
                f.status == BootStatus::Exited(0) && firmware_invariants_ok(&f.console)
            })
    }
}

/// True if the firmware's closing `mem: policy:` line says its invariants held.
pub fn firmware_invariants_ok(console: &str) -> bool {
    console
        .lines()
        .any(|l| l.contains("mem: policy:") && l.contains("invariants ok"))
}

fn children_cpu_s() -> Option<f64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

/// The `ipu` run: the firmware in QEMU with `wave.services=mem@0`, the host mechanism here.
pub fn run_ipu(opts: &MemDemoOptions, image: &Image) -> Result<MemDemoRun> {
    let boot = BootConfig {
        smp: opts.ipu_cores,
        gic: opts.gic,
        timeout: opts.run.duration + Duration::from_secs(180),
        append: std::iter::once("wave.services=mem@0".to_string())
            .chain(opts.spin_us.map(|us| format!("wave.spin_us={us}")))
            .collect(),
        echo: opts.echo,
        ..BootConfig::default()
    };
    // QEMU inherits the calling thread's CPUs: the control CPUs, as in the other modes
    mem_run::place_control(&opts.run);
    let before = children_cpu_s();
    let (results, fw) = with_ipu(&boot, image, LinkSettings::default(), |server, _left| {
        mem_run::run_managed(server, MemMode::Ipu, &opts.run)
    })?;
    let emulator_cpu_s = children_cpu_s().map(|after| after - before.unwrap_or(0.0));
    match results {
        Ok(mut r) => {
            if !firmware_invariants_ok(&fw.console) {
                r.invariant_violations += 1;
            }
            r.emulator_cpu_s = emulator_cpu_s;
            Ok(MemDemoRun {
                results: r,
                firmware: Some(fw),
            })
        }
        Err(e) => Err(Error::Qemu(format!(
            "ipu run failed: {e}\n--- firmware console ---\n{}",
            fw.console
        ))),
    }
}

/// Runs every mode of `opts` in turn (`image` is needed only for `ipu`).
pub fn run_demo(opts: &MemDemoOptions, image: Option<&Image>) -> Result<Vec<MemDemoRun>> {
    let mut runs = Vec::new();
    for &mode in &opts.modes {
        let c = &opts.run;
        eprintln!(
            "wave: demo mem: {} ({} MiB table, {:.0} ops/s for {:.0} s, hot set moves at {:.0} s, {} ms intervals)",
            mode.name(),
            c.table_bytes >> 20,
            c.load.rate_per_s,
            c.duration.as_secs_f64(),
            c.duration.as_secs_f64() / 2.0,
            c.interval.as_millis()
        );
        let plain = |r: std::result::Result<mem_run::MemRunResults, String>| {
            r.map(|results| MemDemoRun {
                results,
                firmware: None,
            })
            .map_err(|e| Error::Qemu(format!("{} run failed: {e}", mode.name())))
        };
        let run = match mode {
            MemMode::None => plain(mem_run::run_none(&opts.run))?,
            MemMode::Host => plain(mem_run::run_host(&opts.run))?,
            MemMode::Ipu => {
                let image = image
                    .ok_or_else(|| Error::Qemu("the ipu mode needs the firmware image".into()))?;
                run_ipu(opts, image)?
            }
        };
        eprintln!();
        runs.push(run);
    }
    Ok(runs)
}

/// `rounds` rounds of every mode, interleaved (none, host, ipu, none, host, ipu, …), so slow
/// drift in the machine's load falls on every mode alike.
pub fn run_rounds(
    opts: &MemDemoOptions,
    image: Option<&Image>,
    rounds: u32,
) -> Result<Vec<Vec<MemDemoRun>>> {
    let mut out = Vec::new();
    for r in 0..rounds.max(1) {
        if rounds > 1 {
            eprintln!("wave: demo mem: round {} of {rounds}", r + 1);
        }
        out.push(run_demo(opts, image)?);
    }
    Ok(out)
}

/// The `--repeat` summary table of `rounds`: per mode the GET p99 per round, its median and
/// spread, the ratio to `none` per round and the median of those ratios.
pub fn repeat_table(rounds: &[Vec<MemDemoRun>]) -> String {
    wave_host_shim::mem::report::repeat_table(&wave_host_shim::mem::report::summarize(&results(
        rounds,
    )))
}

fn results(rounds: &[Vec<MemDemoRun>]) -> Vec<Vec<mem_run::MemRunResults>> {
    rounds
        .iter()
        .map(|r| r.iter().map(|x| x.results.clone()).collect())
        .collect()
}

/// Every round as one JSON document (the last round as `runs`, all as `rounds`, and the
/// per-mode `summary`).
pub fn json_rounds(opts: &MemDemoOptions, rounds: &[Vec<MemDemoRun>]) -> String {
    wave_host_shim::mem::report::json_rounds(&opts.run, opts.ipu_cores, &results(rounds))
}

/// The side-by-side table of `runs`.
pub fn table(runs: &[MemDemoRun]) -> String {
    let r: Vec<mem_run::MemRunResults> = runs.iter().map(|r| r.results.clone()).collect();
    results_table(&r)
}

/// All runs as one JSON document.
pub fn json(opts: &MemDemoOptions, runs: &[MemDemoRun]) -> String {
    let r: Vec<mem_run::MemRunResults> = runs.iter().map(|r| r.results.clone()).collect();
    wave_host_shim::mem::report::json(&opts.run, opts.ipu_cores, &r)
}

/// The SVG of resident memory and GET p99 over time.
pub fn plot(runs: &[MemDemoRun]) -> String {
    let r: Vec<mem_run::MemRunResults> = runs.iter().map(|r| r.results.clone()).collect();
    svg(&r)
}

/// The simulator's replay of the first managed run's recorded trace, tiled to 16, 64 and 256
/// GiB: how the policy's cost grows with memory size (`None` without a managed run).
pub fn scaling(opts: &MemDemoOptions, runs: &[MemDemoRun]) -> Option<String> {
    let run = runs.iter().find(|r| !r.results.trace.is_empty())?;
    let r = &run.results;
    let base = r.n_regions.max(1);
    let table_gib = r.table_bytes as f64 / (1u64 << 30) as f64;
    let mut out = format!(
        "simulator: the policy over the {} run's recorded trace ({} intervals of {} regions), tiled:\n",
        r.mode,
        r.trace.len(),
        base
    );
    let _ = writeln!(
        out,
        "{:>8}  {:>8}  {:>16}  {:>14}  {:>10}  {:>6}",
        "memory", "regions", "policy/interval", "per GiB", "decisions", "far %"
    );
    for gib in [16u64, 64, 256] {
        let scale = ((gib as f64 / table_gib).round() as u32).max(1);
        let rep = wave_sim::mem::replay(&r.trace, base, scale, opts.run.policy);
        let mem_gib = rep.regions as f64 * table_gib / base as f64;
        let _ = writeln!(
            out,
            "{:>5.0} GiB  {:>8}  {:>13.1} us  {:>11.2} us  {:>10}  {:>5.1}%",
            mem_gib,
            rep.regions,
            rep.ns_per_interval / 1e3,
            rep.ns_per_interval / 1e3 / mem_gib.max(1e-9),
            rep.decisions,
            100.0 * rep.far_regions as f64 / rep.regions.max(1) as f64
        );
    }
    Some(out)
}
