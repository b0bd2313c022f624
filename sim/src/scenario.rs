//! What `cargo wave sim` runs: one scenario (policy, host cpus, load and mix, link model,
//! agent cost, where the agent runs, mitigation switches) turned into [`SimConfig`]s, run,
//! and summarised ([`Outcome`]); plus the comparisons of the evaluation: agent placements
//! side by side ([`Placement`]), the mitigation ablation ([`ablation_sets`]) and load sweeps.
//! Every run is a function of the scenario and its seed.

use std::boxed::Box;
use std::format;
use std::string::String;
use std::vec::Vec;

use wave_abi::sched::PARAM_WORDS;
use wave_policy::registry::{by_name, AnyPolicy};

use crate::config::{RequestClass, SimConfig, Workload};
use crate::model::{AgentModel, Mitigations};
use crate::sim::simulate;

/// Largest host cpu count the simulator models (the ABI's cpu slots).
pub const MAX_SIM_CPUS: usize = wave_abi::sched::MAX_CPUS as usize;
const THREADS: usize = 1024;

/// Where the agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the IPU across the link (every host cpu runs the workload).
    Ipu,
    /// On a host core taken from the workload, over cache-coherent memory.
    Host,
    /// Free and instant: no cost, no link, every cpu runs the workload (the bound).
    Ideal,
}

impl Placement {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Ipu => "offloaded",
            Placement::Host => "on-host",
            Placement::Ideal => "ideal",
        }
    }
}

/// One scenario (the options of `cargo wave sim`).
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Policy name (registry).
    pub policy: String,
    /// Host cpus (the on-host agent takes one of them).
    pub cpus: usize,
    /// Offered load as a share of all `cpus` (0..1).
    pub load: f64,
    /// Seconds of arrivals (virtual time).
    pub duration_ms: u64,
    /// GET service time (µs).
    pub get_us: f64,
    /// RANGE service time (ms).
    pub range_ms: f64,
    /// Share of RANGE requests (percent).
    pub range_pct: f64,
    /// Worker threads.
    pub workers: usize,
    /// Seed.
    pub seed: u64,
    /// One-way latency of a posted write across the link (ns).
    pub link_ns: u64,
    /// MSI-X delivery plus wake-up of a sleeping core (ns).
    pub msix_ns: u64,
    /// The IPU agent's cost and the mitigation switches.
    pub ipu: AgentModel,
    /// The on-host agent's cost (its switches are the same as the IPU's).
    pub host: AgentModel,
    /// One-way latency between host cores (ns), for the on-host agent.
    pub host_link_ns: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            policy: "shinjuku".into(),
            cpus: 16,
            load: 0.7,
            duration_ms: 200,
            get_us: 10.0,
            range_ms: 5.0,
            range_pct: 0.5,
            workers: 200,
            seed: 1,
            link_ns: 300,
            msix_ns: 1_000,
            ipu: AgentModel::default(),
            host: AgentModel {
                event_ns: 60,
                decision_ns: 200,
                step_ns: 50,
                ..AgentModel::default()
            },
            host_link_ns: 100,
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Placement name.
    pub placement: &'static str,
    /// Mitigations label (`all on`, `no prestage`, …).
    pub label: String,
    /// Offered load (share of all cpus).
    pub load: f64,
    /// Offered rate (req/s).
    pub rate: f64,
    /// Cpus running the workload.
    pub work_cpus: usize,
    /// GET p50 / p99 (µs).
    pub get_p50_us: f64,
    /// GET p99 (µs).
    pub get_p99_us: f64,
    /// RANGE p99 (µs).
    pub range_p99_us: f64,
    /// Completed ÷ (first arrival → last completion), req/s.
    pub throughput: f64,
    /// Load end → last completion (µs).
    pub drain_us: f64,
    /// Share of agent time busy.
    pub agent_busy: f64,
    /// Invariant violations (must be 0).
    pub violations: usize,
}

impl Scenario {
    /// Checks the options; a message a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        if by_name(&self.policy).is_none() {
            return Err(format!("unknown policy {:?}", self.policy));
        }
        if !(2..=MAX_SIM_CPUS).contains(&self.cpus) {
            return Err(format!(
                "--cpus must be 2..={MAX_SIM_CPUS} (the ABI's cpu slots; the policy alone scales to 256, see `cargo bench -p wave-policy`)"
            ));
        }
        if !(self.load > 0.0 && self.load < 2.0) {
            return Err("--load must be in (0, 2)".into());
        }
        if self.workers == 0 || self.workers > THREADS {
            return Err(format!("--workers must be 1..={THREADS}"));
        }
        if self.duration_ms == 0 || self.get_us <= 0.0 || self.range_ms <= 0.0 {
            return Err("--duration-ms, --get-us and --range-ms must be > 0".into());
        }
        if !(0.0..=100.0).contains(&self.range_pct) {
            return Err("--range-pct must be 0..=100".into());
        }
        Ok(())
    }

    /// Mean service time (ns).
    fn mean_service_ns(&self) -> f64 {
        let r = self.range_pct / 100.0;
        (1.0 - r) * self.get_us * 1e3 + r * self.range_ms * 1e6
    }

    /// Offered rate (req/s) at `load`.
    pub fn rate(&self, load: f64) -> f64 {
        load * self.cpus as f64 / (self.mean_service_ns() * 1e-9)
    }

    /// The simulator's configuration for `placement` with `mitigations`.
    pub fn config(&self, placement: Placement, mitigations: Mitigations) -> SimConfig {
        let r = self.range_pct / 100.0;
        let mut cfg = SimConfig::rocksdb(self.cpus, self.rate(self.load), self.seed);
        cfg.duration_ns = self.duration_ms * 1_000_000;
        cfg.drain_ns = 20_000_000_000;
        cfg.workload = Workload::OpenLoop {
            rate_per_sec: self.rate(self.load),
            workers: self.workers,
            classes: std::vec![
                RequestClass {
                    name: "GET",
                    weight: 1.0 - r,
                    service_ns: (self.get_us * 1e3) as u64,
                },
                RequestClass {
                    name: "RANGE",
                    weight: r,
                    service_ns: (self.range_ms * 1e6) as u64,
                },
            ],
        };
        let (cpus, link, wake, model) = match placement {
            Placement::Ipu => (self.cpus, self.link_ns, self.msix_ns, self.ipu),
            Placement::Host => (self.cpus - 1, self.host_link_ns, self.msix_ns, self.host),
            Placement::Ideal => (self.cpus, 0, 0, AgentModel::free()),
        };
        cfg.n_cpus = cpus;
        cfg.link_latency_ns = link;
        cfg.wake_latency_ns = wake;
        cfg.agent_model = Some(AgentModel {
            mitigations: if placement == Placement::Ideal {
                Mitigations::ALL
            } else {
                mitigations
            },
            ..model
        });
        cfg
    }

    /// Runs `placement` with `mitigations`.
    pub fn run(&self, placement: Placement, mitigations: Mitigations, label: &str) -> Outcome {
        let cfg = self.config(placement, mitigations);
        let info = by_name(&self.policy).expect("validated");
        let mut p: Box<AnyPolicy<MAX_SIM_CPUS, THREADS>> =
            Box::new(AnyPolicy::build(info.id, cfg.n_cpus, &[0; PARAM_WORDS]).expect("validated"));
        let (work_cpus, duration) = (cfg.n_cpus, cfg.duration_ns);
        let r = simulate(cfg, &mut *p);
        let us = |ns: u64| ns as f64 / 1e3;
        let class = |n: &str| r.class(n).cloned().unwrap_or_default();
        let span = r.last_completion_ns.max(1);
        Outcome {
            placement: placement.name(),
            label: label.into(),
            load: self.load,
            rate: self.rate(self.load),
            work_cpus,
            get_p50_us: us(class("GET").p50_ns),
            get_p99_us: us(class("GET").p99_ns),
            range_p99_us: us(class("RANGE").p99_ns),
            throughput: r.completed as f64 / (span as f64 * 1e-9),
            drain_us: us(r.last_completion_ns.saturating_sub(duration)),
            agent_busy: r.agent_busy_ns as f64 / r.end_ns.max(1) as f64,
            violations: r.violations.len(),
        }
    }
}

impl AgentModel {
    /// An agent that costs nothing (the ideal bound).
    pub fn free() -> AgentModel {
        AgentModel {
            event_ns: 0,
            decision_ns: 0,
            step_ns: 0,
            irq_ns: 0,
            read_rtt_ns: 0,
            write_gap_ns: 0,
            ..AgentModel::default()
        }
    }
}

/// The ablation: every mitigation on, every one off, each one off alone, each one on alone.
pub fn ablation_sets() -> Vec<(String, Mitigations)> {
    let mut v = std::vec![
        (String::from("all on"), Mitigations::ALL),
        (String::from("all off"), Mitigations::NONE),
    ];
    for (i, name) in Mitigations::NAMES.iter().enumerate() {
        let mut m = Mitigations::ALL;
        m.set(i, false);
        v.push((format!("all but {name}"), m));
    }
    for (i, name) in Mitigations::NAMES.iter().enumerate() {
        let mut m = Mitigations::NONE;
        m.set(i, true);
        v.push((format!("only {name}"), m));
    }
    v
}

/// A table of outcomes: a row per outcome.
pub fn table(rows: &[Outcome], baseline_p99_us: Option<f64>) -> String {
    let mut out = format!(
        "{:<28} {:>6} {:>5} {:>10} {:>10} {:>10} {:>11} {:>10} {:>9} {:>7} {:>5}\n",
        "run",
        "load",
        "cpus",
        "GET p50",
        "GET p99",
        "RANGE p99",
        "throughput",
        "drain",
        "agent",
        "vs base",
        "viol"
    );
    for o in rows {
        let name = if o.label.is_empty() {
            String::from(o.placement)
        } else {
            format!("{} {}", o.placement, o.label)
        };
        let ratio = baseline_p99_us.map_or(String::from("-"), |b| {
            format!("{:.2}x", o.get_p99_us / b.max(1e-9))
        });
        out.push_str(&format!(
            "{:<28} {:>6.2} {:>5} {:>8.1}us {:>8.1}us {:>8.0}us {:>11.0} {:>8.0}us {:>8.1}% {:>7} {:>5}\n",
            name,
            o.load,
            o.work_cpus,
            o.get_p50_us,
            o.get_p99_us,
            o.range_p99_us,
            o.throughput,
            o.drain_us,
            o.agent_busy * 100.0,
            ratio,
            o.violations
        ));
    }
    out
}

/// Outcomes as a JSON array.
pub fn json(rows: &[Outcome]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|o| {
            format!(
                "{{\"placement\":\"{}\",\"label\":\"{}\",\"load\":{:.4},\"rate\":{:.1},\"work_cpus\":{},\"get_p50_us\":{:.3},\"get_p99_us\":{:.3},\"range_p99_us\":{:.3},\"throughput\":{:.1},\"drain_us\":{:.3},\"agent_busy\":{:.4},\"violations\":{}}}",
                o.placement, o.label, o.load, o.rate, o.work_cpus, o.get_p50_us, o.get_p99_us,
                o.range_p99_us, o.throughput, o.drain_us, o.agent_busy, o.violations
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Scenario {
        Scenario {
            cpus: 4,
            duration_ms: 20,
            ..Scenario::default()
        }
    }

    #[test]
    fn placements_are_ordered_and_clean() {
        let s = small();
        s.validate().unwrap();
        let ideal = s.run(Placement::Ideal, Mitigations::ALL, "");
        let ipu = s.run(Placement::Ipu, Mitigations::ALL, "");
        let host = s.run(Placement::Host, Mitigations::ALL, "");
        for o in [&ideal, &ipu, &host] {
            assert_eq!(o.violations, 0, "{o:?}");
        }
        assert_eq!((ipu.work_cpus, host.work_cpus, ideal.work_cpus), (4, 3, 4));
        // No request can beat its service time; the ideal agent adds nothing to it at p50.
        assert_eq!(ideal.get_p50_us, 10.0);
        assert!(ipu.get_p50_us >= 10.0 && host.get_p50_us >= 10.0);
        assert_eq!(ideal.agent_busy, 0.0);
        let t = table(&[ideal, ipu], Some(10.0));
        assert_eq!(t.lines().count(), 3);
        assert!(json(&[host]).starts_with("[{\"placement\":\"on-host\""));
    }

    #[test]
    fn ablation_has_every_switch_both_ways() {
        let sets = ablation_sets();
        assert_eq!(sets.len(), 2 + 2 * Mitigations::NAMES.len());
        assert!(sets
            .iter()
            .any(|(l, m)| l == "only abort" && m.abort && !m.prestage));
        let bad = Scenario {
            cpus: 65,
            ..small()
        };
        assert!(bad.validate().unwrap_err().contains("--cpus"));
    }
}
