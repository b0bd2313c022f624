//! What to simulate: the host (CPUs, link and wake latencies, safe points), the seed, and
//! the workload (open-loop requests or a wake/block/affinity/kill storm).

use std::vec;
use std::vec::Vec;

/// One request class of an open-loop workload.
#[derive(Clone, Debug)]
pub struct RequestClass {
    /// Name in reports.
    pub name: &'static str,
    /// Relative frequency.
    pub weight: f64,
    /// Service time (cpu time needed).
    pub service_ns: u64,
}

/// Wake/block storm: threads alternate random bursts and sleeps, yield sometimes, and the host
/// changes affinities and kills/revives threads at random, to race decisions in flight.
#[derive(Clone, Debug)]
pub struct StormConfig {
    /// Number of threads (tids `0..threads`).
    pub threads: usize,
    /// Burst length range.
    pub burst_ns: (u64, u64),
    /// Sleep length range.
    pub sleep_ns: (u64, u64),
    /// Probability a finished burst yields instead of blocking.
    pub yield_prob: f64,
    /// Mean interval between affinity changes (0 = none).
    pub affinity_every_ns: u64,
    /// Mean interval between kills (0 = none); a killed tid is revived after `revive_after_ns`.
    pub kill_every_ns: u64,
    /// Delay before a killed tid is revived with `ThreadNew`.
    pub revive_after_ns: u64,
}

/// What runs on the simulated host.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Poisson arrivals dispatched to a pool of worker threads (tids `0..workers`); a worker
    /// runs requests back to back while a backlog exists, else blocks until the next one.
    OpenLoop {
        /// Offered load.
        rate_per_sec: f64,
        /// Worker threads.
        workers: usize,
        /// Request mix.
        classes: Vec<RequestClass>,
    },
    /// See [`StormConfig`].
    Storm(StormConfig),
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Host cpus.
    pub n_cpus: usize,
    /// One-way link latency: events reach the agent, and decisions the host, this much later.
    pub link_latency_ns: u64,
    /// Doorbell delivery plus wake-up of a sleeping cpu.
    pub wake_latency_ns: u64,
    /// Preemption safe-point granularity (cooperative checks).
    pub safe_point_ns: u64,
    /// RNG seed.
    pub seed: u64,
    /// New work is generated during `[0, duration_ns)`.
    pub duration_ns: u64,
    /// After `duration_ns`, at most this long to finish all work (else a violation).
    pub drain_ns: u64,
    /// Check the policy's internal invariants every this many agent steps (0 = only at end).
    pub check_every: u64,
    /// The workload.
    pub workload: Workload,
    /// The agent's own cost and the mitigation switches (`None`: an infinitely fast agent
    /// with every mitigation on).
    pub agent_model: Option<crate::model::AgentModel>,
}

impl SimConfig {
    /// The ghOSt/Shinjuku RocksDB mix: 99.5 % GET (10 µs), 0.5 % RANGE (5 ms), open loop at
    /// `rate_per_sec`, 200 workers, 1 µs link, 2 µs wake, 1 µs safe points, 1 s of arrivals.
    pub fn rocksdb(n_cpus: usize, rate_per_sec: f64, seed: u64) -> SimConfig {
        SimConfig {
            n_cpus,
            link_latency_ns: 1_000,
            wake_latency_ns: 2_000,
            safe_point_ns: 1_000,
            seed,
            duration_ns: 1_000_000_000,
            drain_ns: 5_000_000_000,
            check_every: 0,
            workload: Workload::OpenLoop {
                rate_per_sec,
                workers: 200,
                classes: vec![
                    RequestClass {
                        name: "GET",
                        weight: 0.995,
                        service_ns: 10_000,
                    },
                    RequestClass {
                        name: "RANGE",
                        weight: 0.005,
                        service_ns: 5_000_000,
                    },
                ],
            },
            agent_model: None,
        }
    }
}
