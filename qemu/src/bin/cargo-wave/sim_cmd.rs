//! `cargo wave sim`: the simulator (`wave-sim`) as a command: one scenario, the agent
//! placements side by side (`--compare`), the mitigation ablation (`--ablation`), a load sweep
//! (`--sweep`), as a table, JSON (`--json`) and SVG plots (`--plot DIR`).

use std::path::PathBuf;

use clap::Args;
use wave_qemu::ExitCode;
use wave_sim::scenario::{self, Outcome, Placement, Scenario};
use wave_sim::{svg, Mitigations};

/// Where the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Where {
    /// On the IPU, across the link.
    Ipu,
    /// On a host core taken from the workload.
    Host,
    /// Free and instant (the bound).
    Ideal,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Scheduling policy.
    #[arg(long, default_value = "shinjuku",
          value_parser = clap::builder::PossibleValuesParser::new(wave_policy::registry::names()))]
    pub policy: String,
    /// Host CPUs (2..=64; the on-host agent takes one of them).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub cpus: usize,
    /// Offered load as a share of all host CPUs (e.g. 0.7).
    #[arg(long, default_value_t = 0.7, value_name = "SHARE")]
    pub load: f64,
    /// Milliseconds of arrivals (virtual time).
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub duration_ms: u64,
    /// GET service time (µs).
    #[arg(long, default_value_t = 10.0, value_name = "US")]
    pub get_us: f64,
    /// RANGE service time (ms).
    #[arg(long, default_value_t = 5.0, value_name = "MS")]
    pub range_ms: f64,
    /// Share of RANGE requests (percent).
    #[arg(long, default_value_t = 0.5, value_name = "PCT")]
    pub range_pct: f64,
    /// Worker threads.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub workers: usize,
    /// Seed (a run is a function of its options and seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Link: one-way latency of a posted write (ns; PCIe Gen4, about half a 550 ns read).
    #[arg(long, default_value_t = 300, value_name = "NS")]
    pub link_ns: u64,
    /// Link: read round trip (ns; pcie-bench 64 B read, Xeon same socket).
    #[arg(long, default_value_t = 550, value_name = "NS")]
    pub read_rtt_ns: u64,
    /// Link: MSI-X delivery plus the wake-up of a sleeping core (ns).
    #[arg(long, default_value_t = 1_000, value_name = "NS")]
    pub msix_ns: u64,
    /// Link: extra latency of each further 8-byte write of an entry without write-combining.
    #[arg(long, default_value_t = 40, value_name = "NS")]
    pub write_gap_ns: u64,
    /// IPU agent cost per event (ns; ~700 instructions measured by `demo --ipu-count`, at
    /// 0.4 ns each: a 2.5 GHz Neoverse N1 at one instruction per cycle).
    #[arg(long, default_value_t = 280, value_name = "NS")]
    pub event_ns: u64,
    /// IPU agent cost per decision (ns; ~1,400 instructions measured, at 0.4 ns each).
    #[arg(long, default_value_t = 560, value_name = "NS")]
    pub decision_ns: u64,
    /// IPU agent cost per step (ns).
    #[arg(long, default_value_t = 100, value_name = "NS")]
    pub step_ns: u64,
    /// Where the agent runs (a single run; see --compare).
    #[arg(long, value_enum, default_value_t = Where::Ipu)]
    pub agent_on: Where,
    /// Mitigation off: prestaging (decisions wait for a free CPU instead of in its slot).
    #[arg(long)]
    pub no_prestage: bool,
    /// Mitigation off: batching (one event per agent step).
    #[arg(long)]
    pub no_batching: bool,
    /// Mitigation off: wakeup suppression (the host rings the agent for every event).
    #[arg(long)]
    pub no_wakeup_suppression: bool,
    /// Mitigation off: transaction abort by posted write (a retraction reads the slot first).
    #[arg(long)]
    pub no_abort: bool,
    /// Mitigation off: write-combining (an entry is eight 8-byte writes, not one 64-byte).
    #[arg(long)]
    pub no_write_combining: bool,
    /// Run offloaded, on-host and ideal side by side.
    #[arg(long)]
    pub compare: bool,
    /// Run the mitigation ablation (all on, all off, each one off, each one on), offloaded.
    #[arg(long)]
    pub ablation: bool,
    /// Load sweep: run --compare at each of these loads (e.g. 0.3,0.5,0.7,0.9).
    #[arg(long, value_delimiter = ',', value_name = "SHARE,...")]
    pub sweep: Vec<f64>,
    /// Write all runs as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write SVG plots of the runs into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

impl SimArgs {
    fn mitigations(&self) -> Mitigations {
        Mitigations {
            prestage: !self.no_prestage,
            batching: !self.no_batching,
            wakeup_suppression: !self.no_wakeup_suppression,
            abort: !self.no_abort,
            write_combining: !self.no_write_combining,
        }
    }

    fn scenario(&self) -> Scenario {
        let d = Scenario::default();
        let mut ipu = d.ipu;
        ipu.event_ns = self.event_ns;
        ipu.decision_ns = self.decision_ns;
        ipu.step_ns = self.step_ns;
        ipu.read_rtt_ns = self.read_rtt_ns;
        ipu.write_gap_ns = self.write_gap_ns;
        let mut host = d.host;
        host.read_rtt_ns = self.read_rtt_ns;
        Scenario {
            policy: self.policy.clone(),
            cpus: self.cpus,
            load: self.load,
            duration_ms: self.duration_ms,
            get_us: self.get_us,
            range_ms: self.range_ms,
            range_pct: self.range_pct,
            workers: self.workers,
            seed: self.seed,
            link_ns: self.link_ns,
            msix_ns: self.msix_ns,
            ipu,
            host,
            ..d
        }
    }

    /// The command line that reproduces this run (for plot captions).
    fn command(&self) -> String {
        let mut c = format!(
            "cargo wave sim --policy {} --cpus {} --duration-ms {} --seed {}",
            self.policy, self.cpus, self.duration_ms, self.seed
        );
        if self.sweep.is_empty() {
            c += &format!(" --load {}", self.load);
        } else {
            let s: Vec<String> = self.sweep.iter().map(|v| v.to_string()).collect();
            c += &format!(" --sweep {}", s.join(","));
        }
        if self.ablation {
            c += " --ablation";
        }
        c
    }
}

fn progress(k: usize, n: usize, what: &str) {
    eprintln!("wave: sim: run {k}/{n}: {what}");
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let sc = args.scenario();
    sc.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.sweep.iter().any(|l| !(*l > 0.0 && *l < 2.0)) {
        anyhow::bail!("--sweep takes loads in (0, 2), e.g. 0.3,0.5,0.7,0.9");
    }
    let mut all: Vec<Outcome> = Vec::new();
    if !args.sweep.is_empty() {
        sweep(&args, &sc, &mut all)?;
    } else if args.ablation {
        ablation(&args, &sc, &mut all)?;
    } else if args.compare {
        all = compare(&sc, 1, 1);
        print!("{}", scenario::table(&all, Some(all[2].get_p99_us)));
        println!("(vs base: GET p99 against the ideal agent)");
    } else {
        let p = match args.agent_on {
            Where::Ipu => Placement::Ipu,
            Where::Host => Placement::Host,
            Where::Ideal => Placement::Ideal,
        };
        progress(1, 1, p.name());
        if p != Placement::Ipu && args.mitigations() != Mitigations::ALL {
            eprintln!("wave: sim: note: the ideal agent ignores the mitigation switches");
        }
        all.push(sc.run(p, args.mitigations(), ""));
        print!("{}", scenario::table(&all, None));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, scenario::json(&all))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wave: runs written to {}", path.display());
    }
    if all.iter().any(|o| o.violations > 0) {
        println!("wave: FAIL: a simulated run broke an invariant");
        return Ok(ExitCode::DemoFailed);
    }
    Ok(ExitCode::Pass)
}

/// Offloaded, on-host and ideal at the scenario's load.
fn compare(sc: &Scenario, k0: usize, n: usize) -> Vec<Outcome> {
    [Placement::Ipu, Placement::Host, Placement::Ideal]
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            progress(k0 + i, n, &format!("{} at load {:.2}", p.name(), sc.load));
            sc.run(p, Mitigations::ALL, "")
        })
        .collect()
}

fn sweep(args: &SimArgs, sc: &Scenario, all: &mut Vec<Outcome>) -> anyhow::Result<()> {
    let n = 3 * args.sweep.len();
    for (i, &load) in args.sweep.iter().enumerate() {
        let s = Scenario { load, ..sc.clone() };
        all.extend(compare(&s, 1 + 3 * i, n));
    }
    print!("{}", scenario::table(all, None));
    if let Some(dir) = &args.plot {
        let series: Vec<(String, Vec<(f64, f64)>)> = ["offloaded", "on-host", "ideal"]
            .iter()
            .map(|p| {
                let pts = all
                    .iter()
                    .filter(|o| o.placement == *p)
                    .map(|o| (o.load, o.get_p99_us))
                    .collect();
                (p.to_string(), pts)
            })
            .collect();
        let title = format!("GET p99 vs load: {} at {} host CPUs", sc.policy, sc.cpus);
        let svg = svg::lines(
            &title,
            "offered load (share of host CPUs)",
            "GET p99 (µs)",
            &series,
            &args.command(),
        );
        write_plot(
            dir,
            &format!("sweep-{}-{}cpus.svg", sc.policy, sc.cpus),
            &svg,
        )?;
    }
    Ok(())
}

fn ablation(args: &SimArgs, sc: &Scenario, all: &mut Vec<Outcome>) -> anyhow::Result<()> {
    let sets = scenario::ablation_sets();
    let n = sets.len() + 1;
    progress(1, n, "ideal");
    let ideal = sc.run(Placement::Ideal, Mitigations::ALL, "");
    for (i, (label, m)) in sets.iter().enumerate() {
        progress(i + 2, n, label);
        all.push(sc.run(Placement::Ipu, *m, label));
    }
    all.push(ideal);
    let base = all[0].get_p99_us;
    print!("{}", scenario::table(all, Some(base)));
    println!("(vs base: GET p99 against offloaded with every mitigation on)");
    if let Some(dir) = &args.plot {
        let items: Vec<(String, f64)> = all
            .iter()
            .map(|o| {
                let name = if o.label.is_empty() {
                    o.placement.to_string()
                } else {
                    o.label.clone()
                };
                (name, o.get_p99_us)
            })
            .collect();
        let title = format!(
            "GET p99 by mitigation: {} at {} host CPUs, load {}",
            sc.policy, sc.cpus, sc.load
        );
        let svg = svg::bars(&title, "GET p99 (µs)", &items, &args.command());
        write_plot(
            dir,
            &format!("ablation-{}-{}cpus.svg", sc.policy, sc.cpus),
            &svg,
        )?;
    }
    Ok(())
}

fn write_plot(dir: &std::path::Path, name: &str, svg: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, svg).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    println!("wave: plot written to {}", path.display());
    Ok(())
}
