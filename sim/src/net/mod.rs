//! The network control plane at scale, in virtual time: the shipped `wave_policy::net`
//! allocator drives a model of an RPC server with 16–64 workers (per-worker FIFO queues, a
//! 128-entry steering table built by `wave_abi::net::build_table`, epoch-checked decisions
//! applied one interval after they are made) against the demo's load step (low → peak → low →
//! bursty) with µs-scale requests. Deterministic: a run is a function of its configuration.

use std::collections::VecDeque;

use wave_abi::net::{build_table, equal_weights, NetDecision, NetDecisionKind, NetOutcome};
use wave_abi::net::{NetParams, OutcomeKind, TABLE_ENTRIES};
use wave_policy::net::{CoreAllocator, IntervalReport, WorkerSample};

/// Simulation settings.
#[derive(Clone, Debug)]
pub struct NetSimConfig {
    /// Workers (1..=32: the table's weights are per worker; see `MAX_WORKERS`).
    pub workers: usize,
    /// Virtual seconds per phase.
    pub phase_ns: u64,
    /// Short and long service times, ns, and the share of long ones, ‰.
    pub short_ns: u64,
    /// See [`NetSimConfig::short_ns`].
    pub long_ns: u64,
    /// See [`NetSimConfig::short_ns`].
    pub long_permille: u32,
    /// Low and peak load, fractions of the workers' capacity.
    pub low: f64,
    /// See [`NetSimConfig::low`].
    pub peak: f64,
    /// Control interval, ns.
    pub interval_ns: u64,
    /// Allocator parameters.
    pub params: NetParams,
    /// Seed.
    pub seed: u64,
}

impl NetSimConfig {
    /// The demo's shape at µs scale: 95 % 20 µs / 5 % 80 µs, 10 µs interval, grant at 100 µs.
    pub fn scaled(workers: usize) -> Self {
        NetSimConfig {
            workers,
            phase_ns: 20_000_000,
            short_ns: 20_000,
            long_ns: 80_000,
            long_permille: 50,
            low: 0.2,
            peak: 0.6,
            interval_ns: 10_000,
            params: NetParams {
                delay_add_us: 100,
                standing_checks: 10,
                ..NetParams::default()
            },
            seed: 7,
        }
    }
    fn mean_ns(&self) -> f64 {
        let p = self.long_permille as f64 / 1000.0;
        self.short_ns as f64 * (1.0 - p) + self.long_ns as f64 * p
    }
    fn load_at(&self, t: u64) -> f64 {
        match t / self.phase_ns {
            0 | 2 => self.low,
            1 => self.peak,
            _ if (t / 1_000_000).is_multiple_of(4) => (self.peak * 1.1).min(1.0),
            _ => self.low / 2.0,
        }
    }
}

/// Per-phase and total results.
#[derive(Clone, Debug, Default)]
pub struct NetSimReport {
    /// Requests arrived / completed.
    pub arrived: u64,
    /// See [`NetSimReport::arrived`].
    pub completed: u64,
    /// p99 latency per phase, ns.
    pub p99_ns: [u64; 4],
    /// Average workers held per phase.
    pub cores: [f64; 4],
    /// Average workers held over the run.
    pub avg_cores: f64,
    /// Decisions committed, stale, invalid.
    pub committed: u64,
    /// See [`NetSimReport::committed`].
    pub stale: u64,
    /// See [`NetSimReport::committed`].
    pub invalid: u64,
    /// Grants and revokes the policy made.
    pub grants: u64,
    /// See [`NetSimReport::grants`].
    pub revokes: u64,
}

struct Worker {
    queue: VecDeque<(u64, u64)>,
    free_at: u64,
    active: bool,
}

struct Host {
    w: Vec<Worker>,
    epoch: u32,
    weights: [u8; wave_abi::net::MAX_WORKERS],
    table: [u8; TABLE_ENTRIES],
}

impl Host {
    /// The mechanism's transaction rules (the same as `wave-host-shim`'s `Server::apply`).
    fn apply(&mut self, d: &NetDecision) -> OutcomeKind {
        if d.table_epoch != self.epoch {
            return OutcomeKind::Stale;
        }
        let n = self.w.len();
        let i = d.worker as usize;
        let active: Vec<bool> = (0..n)
            .map(|k| match d.kind {
                NetDecisionKind::Grant if k == i => true,
                NetDecisionKind::Revoke if k == i => false,
                _ => self.w[k].active,
            })
            .collect();
        let ok_kind = match d.kind {
            NetDecisionKind::Grant => i < n && !self.w[i].active,
            NetDecisionKind::Revoke => i < n && self.w[i].active,
            NetDecisionKind::Rebalance => true,
        };
        let consistent = (0..d.weights.len())
            .all(|k| (d.weights[k] > 0) == active.get(k).copied().unwrap_or(false));
        let Some(table) = build_table(&d.weights).filter(|_| ok_kind && consistent) else {
            return OutcomeKind::Invalid;
        };
        for (k, a) in active.iter().enumerate() {
            self.w[k].active = *a;
        }
        self.weights = d.weights;
        self.table = table;
        self.epoch += 1;
        if d.kind == NetDecisionKind::Revoke {
            // Its socket is adopted: what waits there moves to the first active worker.
            let moved: Vec<_> = self.w[i].queue.drain(..).collect();
            if let Some(a) = self.w.iter_mut().find(|w| w.active) {
                a.queue.extend(moved);
            }
        }
        OutcomeKind::Committed
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs one simulation.
pub fn simulate(cfg: &NetSimConfig) -> Result<NetSimReport, String> {
    let n = cfg.workers;
    let mut alloc = CoreAllocator::new(n, cfg.params).map_err(|e| e.to_string())?;
    let weights = equal_weights(1);
    let mut host = Host {
        w: (0..n)
            .map(|k| Worker {
                queue: VecDeque::new(),
                free_at: 0,
                active: k == 0,
            })
            .collect(),
        epoch: 1,
        weights,
        table: build_table(&weights).ok_or("no table")?,
    };
    let mut rng = Rng(cfg.seed.max(1));
    let mut lat: [Vec<u64>; 4] = Default::default();
    let mut cores = [(0u64, 0u64); 4];
    let (mut rep, mut pending): (NetSimReport, Option<NetDecision>) = Default::default();
    let capacity = n as f64 / cfg.mean_ns();
    let end = 4 * cfg.phase_ns;
    let mut next_arrival = 0f64;
    let mut t = 0u64;
    let mut interval = 0u32;
    while t < end || host.w.iter().any(|w| !w.queue.is_empty()) {
        let t1 = t + cfg.interval_ns;
        if let Some(d) = pending.take() {
            let kind = host.apply(&d);
            match kind {
                OutcomeKind::Committed => rep.committed += 1,
                OutcomeKind::Stale => rep.stale += 1,
                OutcomeKind::Invalid => rep.invalid += 1,
            }
            alloc.on_outcome(NetOutcome {
                txn: d.txn,
                table_epoch: host.epoch,
                kind,
            });
        }
        while (next_arrival as u64) < t1.min(end) {
            let a = next_arrival as u64;
            let long = rng.unit() * 1000.0 < cfg.long_permille as f64;
            let svc = if long { cfg.long_ns } else { cfg.short_ns };
            let k = host.table[(rng.next() as usize) & (TABLE_ENTRIES - 1)] as usize;
            host.w[k].queue.push_back((a, svc));
            rep.arrived += 1;
            let rate = cfg.load_at(a) * capacity;
            next_arrival += -(1.0 - rng.unit()).ln() / rate.max(1e-12);
        }
        let phase = ((t / cfg.phase_ns) as usize).min(3);
        interval += 1;
        for (k, w) in host.w.iter_mut().enumerate() {
            let s = serve(w, t, t1, &mut lat[phase], &mut rep.completed);
            let entries = host.table.iter().filter(|e| **e as usize == k).count() as u8;
            alloc.on_sample(
                WorkerSample {
                    worker: k as u8,
                    table_entries: entries,
                    ..s
                },
                interval,
            );
        }
        let active = host.w.iter().filter(|w| w.active).count() as u64;
        cores[phase].0 += active;
        cores[phase].1 += 1;
        pending = alloc.on_interval(IntervalReport {
            interval,
            table_epoch: host.epoch,
            interval_ns: cfg.interval_ns,
        });
        t = t1;
    }
    for p in 0..4 {
        lat[p].sort_unstable();
        let v = &lat[p];
        rep.p99_ns[p] = v
            .get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0);
        rep.cores[p] = cores[p].0 as f64 / cores[p].1.max(1) as f64;
    }
    let all: (u64, u64) = cores.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    rep.avg_cores = all.0 as f64 / all.1.max(1) as f64;
    rep.grants = alloc.stats().grants;
    rep.revokes = alloc.stats().revokes;
    Ok(rep)
}

/// One worker's interval [t, t1): serves what it can (if active) and returns its sample.
fn serve(w: &mut Worker, t: u64, t1: u64, lat: &mut Vec<u64>, done: &mut u64) -> WorkerSample {
    let mut busy = w.free_at.clamp(t, t1) - t;
    let mut completions = 0;
    while w.active {
        let Some(&(arr, svc)) = w.queue.front() else {
            break;
        };
        let start = w.free_at.max(arr);
        if start >= t1 {
            break;
        }
        w.queue.pop_front();
        w.free_at = start + svc;
        busy += w.free_at.min(t1) - start;
        lat.push(w.free_at - arr);
        completions += 1;
        *done += 1;
    }
    let waiting = w.queue.iter().filter(|(a, _)| *a < t1).count() as u32;
    let oldest = w
        .queue
        .front()
        .filter(|(a, _)| *a < t1)
        .map_or(0, |(a, _)| (t1 - a) / 1000);
    WorkerSample {
        active: w.active,
        queued: waiting,
        oldest_age_us: oldest as u32,
        busy_ns: busy,
        idle_ns: if w.active {
            (t1 - t).saturating_sub(busy)
        } else {
            0
        },
        completions,
        ..WorkerSample::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped allocator at 16 and 32 workers against the load step: every request
    /// completes, the peak is granted cores, the low phases give them back (fewer than all
    /// on average), no decision is stale or invalid (one outstanding at a time). Virtual time:
    /// the p99 bound is deterministic, not a wall-clock measurement.
    #[test]
    fn the_allocator_at_scale_follows_the_load_step() {
        for n in [16, 32] {
            let r = simulate(&NetSimConfig::scaled(n)).unwrap();
            println!("{n} workers: {r:?}");
            assert_eq!(r.arrived, r.completed);
            assert!(r.grants > 0 && r.revokes > 0, "{r:?}");
            assert!(r.cores[1] > r.cores[0], "more workers at the peak: {r:?}");
            assert!(r.avg_cores < n as f64, "{r:?}");
            assert_eq!((r.stale, r.invalid), (0, 0));
            assert!(
                r.p99_ns[1] < 1_000_000,
                "peak p99 under 1 ms of virtual time: {r:?}"
            );
        }
    }
}
