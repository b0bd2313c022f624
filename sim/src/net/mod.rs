//! The network control plane at scale, in virtual time: the shipped `wave_policy::net`
//! allocator drives a model of an RPC server with 16–64 workers (per-worker FIFO queues, a
//! 128-entry steering table built by `wave_abi::net::build_table`, epoch-checked decisions
//! applied one interval after they are made) against the demo's load step (low → peak → low →
//! bursty) with µs-scale requests; static allocations (all workers, or the fewest that meet the
//! SLO at the peak, [`scale::static_minimum`]) run on the same model. Deterministic: a run is a
//! function of its configuration.

use std::collections::VecDeque;

use wave_abi::net::{build_table, equal_weights, NetDecision, NetDecisionKind, NetOutcome};
use wave_abi::net::{NetParams, OutcomeKind, MAX_WORKERS, TABLE_ENTRIES};
use wave_policy::net::{CoreAllocator, IntervalReport, WorkerSample};

pub mod scale;

/// Simulation settings. Every time is the demo's (`wave-host-shim` `net::control`) divided by
/// 100: 2 ms → 20 µs requests, 2 s → 20 ms phases, 1 ms → 10 µs interval, 30 ms → 300 µs SLO.
#[derive(Clone, Debug)]
pub struct NetSimConfig {
    /// Workers (1..=64, `MAX_WORKERS`).
    pub workers: usize,
    /// `Some(k)`: a static allocation of the first k workers, steered equally, no allocator.
    pub static_workers: Option<usize>,
    /// Virtual ns per phase.
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
    /// Only the peak load, for one phase (the static-minimum search).
    pub peak_only: bool,
    /// Control interval, ns.
    pub interval_ns: u64,
    /// The p99 objective, ns, and the window the reaction time is measured in.
    pub slo_ns: u64,
    /// See [`NetSimConfig::slo_ns`].
    pub window_ns: u64,
    /// Allocator parameters.
    pub params: NetParams,
    /// Seed.
    pub seed: u64,
}

impl NetSimConfig {
    /// The demo's shape at 1/100 of its times: 95 % 20 µs / 5 % 80 µs, phases of 20 ms at
    /// 20 % → 80 % → 20 % → bursty (0.5 ms at 1.1 × peak, 1.5 ms at half the low load), 10 µs
    /// interval, grant at 100 µs, SLO p99 300 µs, 1 ms windows.
    pub fn scaled(workers: usize) -> Self {
        NetSimConfig {
            workers,
            static_workers: None,
            phase_ns: 20_000_000,
            short_ns: 20_000,
            long_ns: 80_000,
            long_permille: 50,
            low: 0.2,
            peak: 0.8,
            peak_only: false,
            interval_ns: 10_000,
            slo_ns: 300_000,
            window_ns: 1_000_000,
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
    fn phases(&self) -> u64 {
        if self.peak_only {
            1
        } else {
            4
        }
    }
    fn load_at(&self, t: u64) -> f64 {
        if self.peak_only {
            return self.peak;
        }
        match t / self.phase_ns {
            0 | 2 => self.low,
            1 => self.peak,
            _ if (t / 500_000).is_multiple_of(4) => (self.peak * 1.1).min(1.0),
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
    /// Average and peak workers held over the run.
    pub avg_cores: f64,
    /// See [`NetSimReport::avg_cores`].
    pub peak_cores: usize,
    /// From the step to the peak until the first window after which every window of the peak
    /// phase has its p99 within the SLO, ns (None: never within the phase).
    pub reaction_ns: Option<u64>,
    /// Requests per second (virtual) completed in windows whose p99 met the SLO.
    pub goodput_rps: f64,
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
    table: [u8; TABLE_ENTRIES],
}

impl Host {
    fn new(n: usize, k: usize) -> Result<Self, String> {
        let active = if k >= 64 { u64::MAX } else { (1u64 << k) - 1 };
        Ok(Host {
            w: (0..n)
                .map(|i| Worker {
                    queue: VecDeque::new(),
                    free_at: 0,
                    active: i < k,
                })
                .collect(),
            epoch: 1,
            table: build_table(&equal_weights(active)).ok_or("no active worker")?,
        })
    }

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
        let consistent =
            (0..MAX_WORKERS).all(|k| (d.weights[k] > 0) == active.get(k).copied().unwrap_or(false));
        let Some(table) = build_table(&d.weights).filter(|_| ok_kind && consistent) else {
            return OutcomeKind::Invalid;
        };
        for (k, a) in active.iter().enumerate() {
            self.w[k].active = *a;
        }
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

/// What one run records: (arrival, latency) per completed request and (t, workers held) per
/// interval.
#[derive(Default)]
struct Trace {
    done: Vec<(u64, u64)>,
    held: Vec<(u64, usize)>,
}

/// Runs one simulation.
pub fn simulate(cfg: &NetSimConfig) -> Result<NetSimReport, String> {
    let n = cfg.workers;
    let mut alloc = match cfg.static_workers {
        Some(k) if (1..=n).contains(&k) => None,
        Some(k) => return Err(format!("a static allocation of {k} of {n} workers")),
        None => Some(CoreAllocator::new(n, cfg.params).map_err(|e| e.to_string())?),
    };
    let mut host = Host::new(n, cfg.static_workers.unwrap_or(1))?;
    let mut rng = Rng(cfg.seed.max(1));
    let mut trace = Trace::default();
    let (mut rep, mut pending): (NetSimReport, Option<NetDecision>) = Default::default();
    let capacity = n as f64 / cfg.mean_ns();
    let end = cfg.phases() * cfg.phase_ns;
    let mut next_arrival = 0f64;
    let (mut t, mut interval) = (0u64, 0u32);
    while t < end || host.w.iter().any(|w| !w.queue.is_empty()) {
        let t1 = t + cfg.interval_ns;
        if let (Some(d), Some(a)) = (pending.take(), alloc.as_mut()) {
            let kind = host.apply(&d);
            count_outcome(&mut rep, kind);
            a.on_outcome(NetOutcome {
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
        interval += 1;
        let mut entries = [0u8; MAX_WORKERS];
        for e in host.table {
            entries[e as usize] += 1;
        }
        for (k, w) in host.w.iter_mut().enumerate() {
            let s = serve(w, t, t1, &mut trace.done);
            let s = WorkerSample {
                worker: k as u8,
                table_entries: entries[k],
                ..s
            };
            if let Some(a) = alloc.as_mut() {
                a.on_sample(s, interval);
            }
        }
        if t < end {
            trace
                .held
                .push((t, host.w.iter().filter(|w| w.active).count()));
        }
        pending = alloc.as_mut().and_then(|a| {
            a.on_interval(IntervalReport {
                interval,
                table_epoch: host.epoch,
                interval_ns: cfg.interval_ns,
            })
        });
        t = t1;
    }
    rep.completed = trace.done.len() as u64;
    if let Some(a) = alloc {
        rep.grants = a.stats().grants;
        rep.revokes = a.stats().revokes;
    }
    scale::summarize(cfg, &trace.done, &trace.held, &mut rep);
    Ok(rep)
}

fn count_outcome(rep: &mut NetSimReport, kind: OutcomeKind) {
    match kind {
        OutcomeKind::Committed => rep.committed += 1,
        OutcomeKind::Stale => rep.stale += 1,
        OutcomeKind::Invalid => rep.invalid += 1,
    }
}

/// One worker's interval [t, t1): serves what it can (if active) and returns its sample;
/// each completion is recorded as (arrival, latency).
fn serve(w: &mut Worker, t: u64, t1: u64, done: &mut Vec<(u64, u64)>) -> WorkerSample {
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
        done.push((arr, w.free_at - arr));
        completions += 1;
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
