//! Deterministic discrete-event simulator of N host cpus driven by a policy across a link with
//! a one-way latency (std only: feature `sim`, always built for unit tests).
//!
//! It owns the *host model* (thread status words with sequence numbers, per-cpu transaction
//! slots, commit/stale/abort resolution, safe-point preemption, sleeping cpus and doorbells),
//! the *workloads* (open-loop requests with a seeded RNG; wake/block/affinity/kill "storms"),
//! the *agent loop* (events delivered `link_latency_ns` after posting, one `poll` per batch and
//! at the policy's deadlines, decisions applied `link_latency_ns` later), and the *checks*:
//! every violation of the protocol's invariants is recorded in [`SimReport::violations`].
//!
//! Host model rules (what the real host shim must do too):
//! - a cpu claims its slot when its thread stops (blocks, yields, is preempted, exits, finishes)
//!   or when woken; it commits only if the thread is at the slot's sequence, runnable, and the
//!   cpu is in its affinity, else it reports `TxnFailed`; a cpu with nothing to run posts
//!   `CpuIdle` and sleeps; a sleeping cpu looks at its slot only when its doorbell rings;
//! - an `Abort` is resolved when it arrives: if the slot still holds that transaction it is
//!   removed and `TxnAborted` reported, otherwise the claim already reported the outcome;
//! - a `Preempt` for the running thread at its current sequence is honoured at the next safe
//!   point (every `safe_point_ns` of run time); otherwise it is ignored.
//!
//! Time is virtual (u64 ns); nothing here reads a clock, so runs are reproducible by seed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

use crate::types::{CpuId, Decision, Event, FailReason, PolicyStats, Seq, Tid, TxnId};
use crate::Policy;

/// A small deterministic RNG (xorshift64*, seeded through splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator; any seed (including 0) is fine.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo + 1)
        }
    }
    /// Exponential with the given mean (at least 1).
    pub fn exp(&mut self, mean: f64) -> u64 {
        let u = 1.0 - self.unit(); // (0, 1]
        ((-u.ln()) * mean).max(1.0) as u64
    }
}

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
        }
    }
}

/// Latency statistics of one request class.
#[derive(Clone, Debug, Default)]
pub struct ClassStats {
    /// Class name.
    pub name: &'static str,
    /// Completed requests.
    pub count: u64,
    /// Median arrival→completion latency.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Maximum.
    pub max_ns: u64,
}

/// Host-side counters.
#[derive(Clone, Debug, Default)]
pub struct HostCounters {
    /// Events posted to the agent.
    pub events_posted: u64,
    /// Decisions received from the agent.
    pub decisions: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Claims refused as stale.
    pub failed_stale: u64,
    /// Claims refused as not runnable.
    pub failed_not_runnable: u64,
    /// Claims refused otherwise.
    pub failed_other: u64,
    /// Aborts that found their transaction still in the slot.
    pub aborts_won: u64,
    /// Aborts that arrived after the claim.
    pub aborts_lost: u64,
    /// Preemptions honoured.
    pub preempts_honoured: u64,
    /// Preempt requests ignored (thread no longer running at that sequence).
    pub preempts_ignored: u64,
    /// Doorbells rung.
    pub doorbells: u64,
    /// Doorbells / wakes that found nothing to do.
    pub spurious_wakes: u64,
    /// Prestages that reached a sleeping cpu without a doorbell (the cpu only noticed on a
    /// later `Wake`).
    pub prestage_to_sleeper: u64,
}

/// Result of a run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Policy name.
    pub policy: &'static str,
    /// Per request class (open loop).
    pub classes: Vec<ClassStats>,
    /// Requests (open loop) or bursts (storm) started.
    pub generated: u64,
    /// Requests or bursts completed.
    pub completed: u64,
    /// Storm bursts discarded because their thread was killed while runnable or running.
    pub abandoned: u64,
    /// Host counters.
    pub host: HostCounters,
    /// The policy's counters at the end.
    pub policy_stats: PolicyStats,
    /// Preempt decision → honoured, median.
    pub preempt_latency_p50_ns: u64,
    /// Preempt decision → honoured, 99th percentile.
    pub preempt_latency_p99_ns: u64,
    /// Longest time any thread stayed runnable before running.
    pub max_runnable_wait_ns: u64,
    /// Virtual time at the end.
    pub end_ns: u64,
    /// Fraction of cpu time spent running threads.
    pub busy_fraction: f64,
    /// Every invariant violation seen (empty = all checks passed).
    pub violations: Vec<String>,
}

impl SimReport {
    /// Stats of the class called `name`.
    pub fn class(&self, name: &str) -> Option<&ClassStats> {
        self.classes.iter().find(|c| c.name == name)
    }
}

#[derive(Clone, Copy, Debug)]
enum SimEv {
    Arrival,
    AgentRecv(Event),
    AgentPoll,
    HostRecv(Decision, u64),
    CpuWake(usize),
    SegEnd { cpu: usize, gen: u64 },
    StormWake { tid: usize, gen: u64 },
    StormAffinity,
    StormKill,
    StormRevive(usize),
}

struct Item {
    t: u64,
    n: u64,
    ev: SimEv,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.n) == (o.t, o.n)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (time, insertion order).
        (o.t, o.n).cmp(&(self.t, self.n))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HState {
    Absent,
    Runnable,
    Running(usize),
    Blocked,
    Dead,
}

#[derive(Clone, Copy, Debug)]
struct Req {
    arrival: u64,
    class: usize,
}

#[derive(Clone, Debug)]
struct HThread {
    seq: Seq,
    st: HState,
    mask: u64,
    work_left: u64,
    req: Option<Req>,
    runnable_since: u64,
    wake_gen: u64,
}

#[derive(Clone, Debug, Default)]
struct HCpu {
    running: Option<usize>,
    seg_start: u64,
    gen: u64,
    slot: Option<(TxnId, usize, Seq)>,
    sleeping: bool,
    waking: bool,
    preempt: Option<(usize, Seq, u64)>,
    busy_ns: u64,
}

/// The agent-side mirror used to check each decision as it is emitted.
#[derive(Clone, Copy, Debug, Default)]
struct Mirror {
    known: bool,
    seq: u32,
    state_seq: u32,
    runnable: bool,
    running: bool,
    failed_at: Option<u32>,
    outstanding: Option<(usize, TxnId, u32)>,
}

/// The simulator. Build with [`Sim::new`], run with [`Sim::run`].
pub struct Sim<'p> {
    cfg: SimConfig,
    policy: &'p mut dyn Policy,
    rng: Rng,
    heap: BinaryHeap<Item>,
    n: u64,
    now: u64,
    threads: Vec<HThread>,
    cpus: Vec<HCpu>,
    // open loop
    idle_workers: VecDeque<usize>,
    backlog: VecDeque<Req>,
    latencies: Vec<Vec<u64>>,
    // agent side
    mirror: Vec<Mirror>,
    cpu_outstanding: Vec<Option<TxnId>>,
    last_txn: u64,
    last_poll_at: Option<u64>,
    deadline_poll_at: Option<u64>,
    agent_steps: u64,
    // accounting
    txn_outcomes: HashMap<u64, u8>,
    preempt_lat: Vec<u64>,
    report: SimReport,
}

impl<'p> Sim<'p> {
    /// A simulator for `cfg` driving `policy`, which must schedule at least `cfg.n_cpus` cpus
    /// and hold every tid the workload uses.
    pub fn new(cfg: SimConfig, policy: &'p mut dyn Policy) -> Sim<'p> {
        let n_threads = match &cfg.workload {
            Workload::OpenLoop { workers, .. } => *workers,
            Workload::Storm(s) => s.threads,
        };
        let n_classes = match &cfg.workload {
            Workload::OpenLoop { classes, .. } => classes.len(),
            Workload::Storm(_) => 0,
        };
        let rng = Rng::new(cfg.seed);
        let name = policy.name();
        Sim {
            rng,
            heap: BinaryHeap::new(),
            n: 0,
            now: 0,
            threads: vec![
                HThread {
                    seq: Seq(0),
                    st: HState::Absent,
                    mask: u64::MAX,
                    work_left: 0,
                    req: None,
                    runnable_since: 0,
                    wake_gen: 0,
                };
                n_threads
            ],
            cpus: vec![
                HCpu {
                    sleeping: true,
                    ..HCpu::default()
                };
                cfg.n_cpus
            ],
            idle_workers: VecDeque::new(),
            backlog: VecDeque::new(),
            latencies: vec![Vec::new(); n_classes],
            mirror: vec![Mirror::default(); n_threads],
            cpu_outstanding: vec![None; cfg.n_cpus],
            last_txn: 0,
            last_poll_at: None,
            deadline_poll_at: None,
            agent_steps: 0,
            txn_outcomes: HashMap::new(),
            preempt_lat: Vec::new(),
            report: SimReport {
                policy: name,
                ..SimReport::default()
            },
            cfg,
            policy,
        }
    }

    fn push(&mut self, t: u64, ev: SimEv) {
        self.n += 1;
        self.heap.push(Item { t, n: self.n, ev });
    }

    fn violation(&mut self, s: String) {
        if self.report.violations.len() < 50 {
            self.report.violations.push(format!("t={} {}", self.now, s));
        }
    }

    fn all_mask(&self) -> u64 {
        if self.cfg.n_cpus >= 64 {
            u64::MAX
        } else {
            (1u64 << self.cfg.n_cpus) - 1
        }
    }

    /// Runs to completion and returns the report.
    pub fn run(mut self) -> SimReport {
        self.setup();
        let limit = self.cfg.duration_ns.saturating_add(self.cfg.drain_ns);
        let mut drained = true;
        while let Some(it) = self.heap.pop() {
            if it.t > limit {
                drained = false;
                break;
            }
            self.now = it.t;
            self.step(it.ev);
        }
        self.finish(drained)
    }

    fn setup(&mut self) {
        let nt = self.threads.len();
        match self.cfg.workload.clone() {
            Workload::OpenLoop { rate_per_sec, .. } => {
                for tid in 0..nt {
                    self.threads[tid].seq = Seq(1);
                    self.threads[tid].st = HState::Blocked;
                    self.idle_workers.push_back(tid);
                    self.post(Event::ThreadNew {
                        tid: Tid(tid as u32),
                        seq: Seq(1),
                        runnable: false,
                    });
                }
                if rate_per_sec > 0.0 {
                    let first = self.rng.exp(1e9 / rate_per_sec);
                    self.push(first, SimEv::Arrival);
                }
            }
            Workload::Storm(s) => {
                for tid in 0..nt {
                    let burst = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
                    let th = &mut self.threads[tid];
                    th.seq = Seq(1);
                    th.st = HState::Runnable;
                    th.work_left = burst;
                    self.report.generated += 1;
                    self.post(Event::ThreadNew {
                        tid: Tid(tid as u32),
                        seq: Seq(1),
                        runnable: true,
                    });
                }
                if s.affinity_every_ns > 0 {
                    let t = self.rng.exp(s.affinity_every_ns as f64);
                    self.push(t, SimEv::StormAffinity);
                }
                if s.kill_every_ns > 0 {
                    let t = self.rng.exp(s.kill_every_ns as f64);
                    self.push(t, SimEv::StormKill);
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Link.

    fn post(&mut self, ev: Event) {
        self.report.host.events_posted += 1;
        let t = self.now + self.cfg.link_latency_ns;
        self.push(t, SimEv::AgentRecv(ev));
    }

    fn step(&mut self, ev: SimEv) {
        match ev {
            SimEv::Arrival => self.arrival(),
            SimEv::AgentRecv(e) => self.agent_recv(e),
            SimEv::AgentPoll => self.agent_poll(),
            SimEv::HostRecv(d, decided_at) => self.host_recv(d, decided_at),
            SimEv::CpuWake(c) => self.cpu_wake(c),
            SimEv::SegEnd { cpu, gen } => self.seg_end(cpu, gen),
            SimEv::StormWake { tid, gen } => self.storm_wake(tid, gen),
            SimEv::StormAffinity => self.storm_affinity(),
            SimEv::StormKill => self.storm_kill(),
            SimEv::StormRevive(tid) => self.storm_revive(tid),
        }
    }

    // ----------------------------------------------------------------------------------
    // Agent side.

    fn agent_recv(&mut self, e: Event) {
        self.mirror_event(e);
        self.policy.on_event(e, self.now);
        self.agent_steps += 1;
        self.maybe_check();
        if self.last_poll_at != Some(self.now) {
            self.last_poll_at = Some(self.now);
            self.push(self.now, SimEv::AgentPoll);
        }
    }

    fn maybe_check(&mut self) {
        if self.cfg.check_every > 0 && self.agent_steps.is_multiple_of(self.cfg.check_every) {
            if let Err(e) = self.policy.check_invariants() {
                self.violation(format!("policy invariant: {e}"));
            }
        }
    }

    fn agent_poll(&mut self) {
        let mut out: Vec<Decision> = Vec::new();
        self.policy.poll(self.now, &mut out);
        self.agent_steps += 1;
        self.maybe_check();
        for d in out {
            self.check_decision(d);
            let t = self.now + self.cfg.link_latency_ns;
            self.push(t, SimEv::HostRecv(d, self.now));
        }
        // One pending deadline poll at a time (the earliest); each poll schedules the next.
        if self.deadline_poll_at.is_some_and(|x| x <= self.now) {
            self.deadline_poll_at = None;
        }
        if let Some(d) = self.policy.next_deadline(self.now) {
            if d > self.now && self.deadline_poll_at.is_none_or(|x| d < x) {
                self.deadline_poll_at = Some(d);
                self.push(d, SimEv::AgentPoll);
            }
        }
    }

    fn mirror_event(&mut self, e: Event) {
        let newer = |m: &Mirror, s: Seq| Seq(s.0).is_newer_than(Seq(m.seq));
        match e {
            Event::ThreadNew { tid, seq, runnable } => {
                let m = &mut self.mirror[tid.0 as usize];
                let keep = m.outstanding;
                *m = Mirror {
                    known: true,
                    seq: seq.0,
                    state_seq: seq.0,
                    runnable,
                    outstanding: keep,
                    ..Mirror::default()
                };
            }
            Event::Wakeup { tid, seq } => self.mirror_state(tid, seq, true),
            Event::Yield { tid, seq, .. } | Event::Preempted { tid, seq, .. } => {
                self.mirror_state(tid, seq, true)
            }
            Event::Blocked { tid, seq, .. } | Event::Dead { tid, seq, .. } => {
                self.mirror_state(tid, seq, false)
            }
            Event::Affinity { tid, seq, .. } => {
                let m = &mut self.mirror[tid.0 as usize];
                if newer(m, seq) {
                    m.seq = seq.0;
                }
            }
            Event::TxnCommitted { txn, tid, cpu } => {
                if let Some(seq) = self.mirror_outcome(txn, tid, cpu) {
                    let m = &mut self.mirror[tid.0 as usize];
                    if m.runnable && !Seq(m.state_seq).is_newer_than(Seq(seq)) {
                        m.running = true;
                    }
                }
            }
            Event::TxnFailed {
                txn,
                tid,
                cpu,
                reason,
            } => {
                if let Some(seq) = self.mirror_outcome(txn, tid, cpu) {
                    if matches!(reason, FailReason::Stale | FailReason::NotRunnable) {
                        self.mirror[tid.0 as usize].failed_at = Some(seq);
                    }
                }
            }
            Event::TxnAborted { txn, cpu } => {
                let tid = self.mirror.iter().position(|m| {
                    m.outstanding
                        .is_some_and(|(c, t, _)| c == cpu.0 as usize && t == txn)
                });
                match tid {
                    Some(tid) => {
                        self.mirror_outcome(txn, Tid(tid as u32), cpu);
                    }
                    None => self.violation(format!("agent: abort outcome for unknown {txn:?}")),
                }
            }
            Event::CpuIdle { .. } => {}
        }
    }

    fn mirror_state(&mut self, tid: Tid, seq: Seq, runnable: bool) {
        let m = &mut self.mirror[tid.0 as usize];
        if seq.is_newer_than(Seq(m.seq)) {
            m.seq = seq.0;
            m.state_seq = seq.0;
            m.runnable = runnable;
            m.running = false;
        }
    }

    /// Removes the outstanding record; returns the transaction's sequence number.
    fn mirror_outcome(&mut self, txn: TxnId, tid: Tid, cpu: CpuId) -> Option<u32> {
        let c = cpu.0 as usize;
        let m = &mut self.mirror[tid.0 as usize];
        match m.outstanding {
            Some((oc, ot, seq)) if oc == c && ot == txn && self.cpu_outstanding[c] == Some(txn) => {
                m.outstanding = None;
                self.cpu_outstanding[c] = None;
                Some(seq)
            }
            _ => {
                self.violation(format!(
                    "agent: outcome for unknown {txn:?} {tid:?} {cpu:?}"
                ));
                None
            }
        }
    }

    fn check_decision(&mut self, d: Decision) {
        if let Decision::Prestage {
            cpu, txn, tid, seq, ..
        } = d
        {
            let c = cpu.0 as usize;
            let t = tid.0 as usize;
            if c >= self.cfg.n_cpus || t >= self.mirror.len() {
                self.violation(format!("prestage out of range {d:?}"));
                return;
            }
            if txn.0 <= self.last_txn {
                self.violation(format!("txn ids not increasing: {d:?}"));
            }
            self.last_txn = txn.0;
            if self.cpu_outstanding[c].is_some() {
                self.violation(format!("second outstanding txn on cpu {c}: {d:?}"));
            }
            let m = self.mirror[t];
            if m.outstanding.is_some() {
                self.violation(format!(
                    "thread prestaged on two cpus: {d:?} and {:?}",
                    m.outstanding
                ));
            }
            if !m.known || m.seq != seq.0 || !m.runnable || m.running {
                self.violation(format!(
                    "prestage of a thread not runnable per latest event: {d:?} {m:?}"
                ));
            }
            if m.failed_at == Some(seq.0) {
                self.violation(format!(
                    "re-prestage at a seq the host already refused: {d:?}"
                ));
            }
            self.cpu_outstanding[c] = Some(txn);
            self.mirror[t].outstanding = Some((c, txn, seq.0));
        }
    }

    // ----------------------------------------------------------------------------------
    // Host side.

    fn outcome(&mut self, txn: TxnId) {
        let n = self.txn_outcomes.entry(txn.0).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.violation(format!("two outcomes for {txn:?}"));
        }
    }

    fn host_recv(&mut self, d: Decision, decided_at: u64) {
        self.report.host.decisions += 1;
        match d {
            Decision::Prestage {
                cpu,
                txn,
                tid,
                seq,
                wake,
            } => {
                let c = cpu.0 as usize;
                if self.cpus[c].slot.is_some() {
                    self.violation(format!("slot of cpu {c} already full: {d:?}"));
                    return;
                }
                self.cpus[c].slot = Some((txn, tid.0 as usize, seq));
                self.txn_outcomes.insert(txn.0, 0);
                if self.cpus[c].sleeping && !self.cpus[c].waking {
                    if wake {
                        self.ring(c);
                    } else {
                        self.report.host.prestage_to_sleeper += 1;
                    }
                }
            }
            Decision::Abort { cpu, txn } => {
                let c = cpu.0 as usize;
                match self.cpus[c].slot {
                    Some((t, _, _)) if t == txn => {
                        self.cpus[c].slot = None;
                        self.outcome(txn);
                        self.report.host.aborts_won += 1;
                        self.post(Event::TxnAborted { txn, cpu });
                    }
                    _ => self.report.host.aborts_lost += 1,
                }
            }
            Decision::Preempt { cpu, tid, seq } => {
                let c = cpu.0 as usize;
                let t = tid.0 as usize;
                if self.cpus[c].running == Some(t) && self.threads[t].seq == seq {
                    self.cpus[c].preempt = Some((t, seq, decided_at));
                    let q = self.cfg.safe_point_ns.max(1);
                    let start = self.cpus[c].seg_start;
                    let elapsed = self.now - start;
                    let next = start + elapsed.div_ceil(q) * q;
                    if next < start + self.threads[t].work_left {
                        self.cpus[c].gen += 1;
                        let gen = self.cpus[c].gen;
                        self.push(next, SimEv::SegEnd { cpu: c, gen });
                    }
                } else {
                    self.report.host.preempts_ignored += 1;
                }
            }
            Decision::Wake { cpu } => {
                let c = cpu.0 as usize;
                if self.cpus[c].sleeping && !self.cpus[c].waking {
                    self.ring(c);
                } else {
                    self.report.host.spurious_wakes += 1;
                }
            }
        }
    }

    fn ring(&mut self, c: usize) {
        self.report.host.doorbells += 1;
        self.cpus[c].waking = true;
        let t = self.now + self.cfg.wake_latency_ns;
        self.push(t, SimEv::CpuWake(c));
    }

    fn cpu_wake(&mut self, c: usize) {
        self.cpus[c].waking = false;
        if !self.cpus[c].sleeping {
            return;
        }
        if self.cpus[c].slot.is_some() {
            self.cpus[c].sleeping = false;
            self.claim(c);
        } else {
            self.report.host.spurious_wakes += 1;
        }
    }

    /// A thread's state change to runnable: bumps its sequence number, as the host does.
    fn make_runnable(&mut self, tid: usize) -> Seq {
        let th = &mut self.threads[tid];
        th.seq = th.seq.next();
        th.st = HState::Runnable;
        th.runnable_since = self.now;
        th.seq
    }

    /// The cpu's current thread stopped: claim the slot or sleep.
    fn cpu_next(&mut self, c: usize) {
        self.cpus[c].running = None;
        self.cpus[c].preempt = None;
        self.cpus[c].gen += 1;
        if self.cpus[c].slot.is_some() {
            self.claim(c);
        } else {
            self.go_idle(c);
        }
    }

    fn go_idle(&mut self, c: usize) {
        self.cpus[c].running = None;
        self.cpus[c].sleeping = true;
        self.post(Event::CpuIdle {
            cpu: CpuId(c as u32),
        });
    }

    fn claim(&mut self, c: usize) {
        let Some((txn, tid, seq)) = self.cpus[c].slot.take() else {
            return;
        };
        self.outcome(txn);
        let cpu = CpuId(c as u32);
        let th = &self.threads[tid];
        let reason = if th.st == HState::Absent {
            Some(FailReason::NotFound)
        } else if th.seq != seq {
            Some(FailReason::Stale)
        } else if th.st != HState::Runnable {
            Some(FailReason::NotRunnable)
        } else if th.mask & (1u64 << c) == 0 {
            Some(FailReason::Invalid)
        } else {
            None
        };
        match reason {
            None => {
                if let Some(other) = self.cpus.iter().position(|x| x.running == Some(tid)) {
                    self.violation(format!("thread {tid} would run on cpus {other} and {c}"));
                }
                let wait = self.now - self.threads[tid].runnable_since;
                self.report.max_runnable_wait_ns = self.report.max_runnable_wait_ns.max(wait);
                self.threads[tid].st = HState::Running(c);
                self.report.host.commits += 1;
                self.post(Event::TxnCommitted {
                    txn,
                    tid: Tid(tid as u32),
                    cpu,
                });
                self.start(c, tid);
            }
            Some(r) => {
                match r {
                    FailReason::Stale => self.report.host.failed_stale += 1,
                    FailReason::NotRunnable => self.report.host.failed_not_runnable += 1,
                    _ => self.report.host.failed_other += 1,
                }
                self.post(Event::TxnFailed {
                    txn,
                    tid: Tid(tid as u32),
                    cpu,
                    reason: r,
                });
                self.go_idle(c);
            }
        }
    }

    fn start(&mut self, c: usize, tid: usize) {
        let cpu = &mut self.cpus[c];
        cpu.running = Some(tid);
        cpu.sleeping = false;
        cpu.seg_start = self.now;
        cpu.preempt = None;
        cpu.gen += 1;
        let gen = cpu.gen;
        let t = self.now + self.threads[tid].work_left.max(1);
        self.push(t, SimEv::SegEnd { cpu: c, gen });
    }

    fn seg_end(&mut self, c: usize, gen: u64) {
        if self.cpus[c].gen != gen {
            return;
        }
        let Some(tid) = self.cpus[c].running else {
            return;
        };
        let elapsed = self.now - self.cpus[c].seg_start;
        self.cpus[c].busy_ns += elapsed;
        self.cpus[c].seg_start = self.now;
        let th = &mut self.threads[tid];
        th.work_left = th.work_left.saturating_sub(elapsed);
        if th.work_left == 0 {
            self.finish_burst(c, tid);
            return;
        }
        match self.cpus[c].preempt {
            Some((pt, pseq, decided)) if pt == tid && pseq == self.threads[tid].seq => {
                self.report.host.preempts_honoured += 1;
                self.preempt_lat.push(self.now - decided);
                let seq = self.make_runnable(tid);
                self.post(Event::Preempted {
                    tid: Tid(tid as u32),
                    seq,
                    cpu: CpuId(c as u32),
                    ran_ns: 0,
                });
                self.cpu_next(c);
            }
            _ => {
                self.cpus[c].preempt = None;
                self.cpus[c].gen += 1;
                let gen = self.cpus[c].gen;
                let t = self.now + self.threads[tid].work_left;
                self.push(t, SimEv::SegEnd { cpu: c, gen });
            }
        }
    }

    fn block(&mut self, c: usize, tid: usize) {
        let th = &mut self.threads[tid];
        th.seq = th.seq.next();
        th.st = HState::Blocked;
        let seq = th.seq;
        self.post(Event::Blocked {
            tid: Tid(tid as u32),
            seq,
            cpu: CpuId(c as u32),
            ran_ns: 0,
        });
        self.cpu_next(c);
    }

    fn finish_burst(&mut self, c: usize, tid: usize) {
        self.report.completed += 1;
        match self.cfg.workload.clone() {
            Workload::OpenLoop { classes, .. } => {
                if let Some(r) = self.threads[tid].req.take() {
                    self.latencies[r.class].push(self.now - r.arrival);
                }
                if let Some(r) = self.backlog.pop_front() {
                    // Keep running: take the next request without a state change.
                    self.threads[tid].req = Some(r);
                    self.threads[tid].work_left = classes[r.class].service_ns.max(1);
                    self.cpus[c].gen += 1;
                    let gen = self.cpus[c].gen;
                    let t = self.now + self.threads[tid].work_left;
                    self.push(t, SimEv::SegEnd { cpu: c, gen });
                } else {
                    self.idle_workers.push_back(tid);
                    self.block(c, tid);
                }
            }
            Workload::Storm(s) => {
                let live = self.now < self.cfg.duration_ns;
                if live && self.rng.unit() < s.yield_prob {
                    self.report.generated += 1;
                    let th = &mut self.threads[tid];
                    th.work_left = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
                    let seq = self.make_runnable(tid);
                    self.post(Event::Yield {
                        tid: Tid(tid as u32),
                        seq,
                        cpu: CpuId(c as u32),
                        ran_ns: 0,
                    });
                    self.cpu_next(c);
                } else {
                    self.block(c, tid);
                    if live {
                        let th = &mut self.threads[tid];
                        th.wake_gen += 1;
                        let gen = th.wake_gen;
                        let t = self.now + self.rng.range(s.sleep_ns.0, s.sleep_ns.1);
                        self.push(t, SimEv::StormWake { tid, gen });
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Workloads.

    fn arrival(&mut self) {
        let Workload::OpenLoop {
            rate_per_sec,
            classes,
            ..
        } = self.cfg.workload.clone()
        else {
            return;
        };
        self.report.generated += 1;
        let total: f64 = classes.iter().map(|c| c.weight).sum();
        let mut x = self.rng.unit() * total;
        let mut class = classes.len() - 1;
        for (i, c) in classes.iter().enumerate() {
            if x < c.weight {
                class = i;
                break;
            }
            x -= c.weight;
        }
        let req = Req {
            arrival: self.now,
            class,
        };
        if let Some(tid) = self.idle_workers.pop_front() {
            let th = &mut self.threads[tid];
            th.req = Some(req);
            th.work_left = classes[class].service_ns.max(1);
            let seq = self.make_runnable(tid);
            self.post(Event::Wakeup {
                tid: Tid(tid as u32),
                seq,
            });
        } else {
            self.backlog.push_back(req);
        }
        let next = self.now + self.rng.exp(1e9 / rate_per_sec);
        if next < self.cfg.duration_ns {
            self.push(next, SimEv::Arrival);
        }
    }

    fn storm(&self) -> Option<StormConfig> {
        match &self.cfg.workload {
            Workload::Storm(s) => Some(s.clone()),
            Workload::OpenLoop { .. } => None,
        }
    }

    fn storm_wake(&mut self, tid: usize, gen: u64) {
        let Some(s) = self.storm() else { return };
        if self.threads[tid].wake_gen != gen || self.threads[tid].st != HState::Blocked {
            return;
        }
        self.report.generated += 1;
        let burst = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
        let th = &mut self.threads[tid];
        th.work_left = burst;
        let seq = self.make_runnable(tid);
        self.post(Event::Wakeup {
            tid: Tid(tid as u32),
            seq,
        });
    }

    fn storm_affinity(&mut self) {
        let Some(s) = self.storm() else { return };
        let tid = self.rng.range(0, self.threads.len() as u64 - 1) as usize;
        if !matches!(self.threads[tid].st, HState::Absent | HState::Dead) {
            let all = self.all_mask();
            let mut mask = self.rng.next_u64() & all;
            if mask == 0 || self.rng.unit() < 0.3 {
                mask = all;
            }
            let th = &mut self.threads[tid];
            th.mask = mask;
            th.seq = th.seq.next();
            let seq = th.seq;
            self.post(Event::Affinity {
                tid: Tid(tid as u32),
                seq,
                mask,
            });
        }
        let next = self.now + self.rng.exp(s.affinity_every_ns as f64);
        if next < self.cfg.duration_ns {
            self.push(next, SimEv::StormAffinity);
        }
    }

    fn storm_kill(&mut self) {
        let Some(s) = self.storm() else { return };
        let tid = self.rng.range(0, self.threads.len() as u64 - 1) as usize;
        let st = self.threads[tid].st;
        if !matches!(st, HState::Absent | HState::Dead) {
            if matches!(st, HState::Runnable | HState::Running(_)) {
                self.report.abandoned += 1;
            }
            let th = &mut self.threads[tid];
            th.seq = th.seq.next();
            th.st = HState::Dead;
            th.wake_gen += 1;
            let seq = th.seq;
            let cpu = if let HState::Running(c) = st {
                Some(c)
            } else {
                None
            };
            if let Some(c) = cpu {
                let elapsed = self.now - self.cpus[c].seg_start;
                self.cpus[c].busy_ns += elapsed;
            }
            self.post(Event::Dead {
                tid: Tid(tid as u32),
                seq,
                cpu: cpu.map(|c| CpuId(c as u32)),
                ran_ns: 0,
            });
            if let Some(c) = cpu {
                self.cpu_next(c);
            }
            let t = self.now + s.revive_after_ns;
            self.push(t, SimEv::StormRevive(tid));
        }
        let next = self.now + self.rng.exp(s.kill_every_ns as f64);
        if next < self.cfg.duration_ns {
            self.push(next, SimEv::StormKill);
        }
    }

    fn storm_revive(&mut self, tid: usize) {
        let Some(s) = self.storm() else { return };
        if self.threads[tid].st != HState::Dead {
            return;
        }
        self.report.generated += 1;
        let all = self.all_mask();
        let burst = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
        let th = &mut self.threads[tid];
        th.seq = th.seq.next();
        th.st = HState::Runnable;
        th.mask = all;
        th.work_left = burst;
        th.runnable_since = self.now;
        let seq = th.seq;
        self.post(Event::ThreadNew {
            tid: Tid(tid as u32),
            seq,
            runnable: true,
        });
    }

    // ----------------------------------------------------------------------------------
    // End of run.

    fn finish(mut self, drained: bool) -> SimReport {
        if !drained {
            self.violation(String::from(
                "did not drain: work left after duration + drain",
            ));
        }
        if let Workload::OpenLoop { .. } = self.cfg.workload {
            if self.report.completed != self.report.generated || !self.backlog.is_empty() {
                self.violation(format!(
                    "requests lost: generated {} completed {}",
                    self.report.generated, self.report.completed
                ));
            }
        }
        for (tid, th) in self.threads.iter().enumerate() {
            if matches!(th.st, HState::Runnable | HState::Running(_)) {
                let s = format!("thread {tid} still {:?} at the end", th.st);
                if self.report.violations.len() < 50 {
                    self.report.violations.push(s);
                }
            }
        }
        for c in 0..self.cpus.len() {
            if self.cpus[c].slot.is_some() {
                self.violation(format!("cpu {c} slot still full at the end"));
            }
        }
        let unresolved = self.txn_outcomes.values().filter(|&&n| n != 1).count();
        if unresolved > 0 {
            self.violation(format!(
                "{unresolved} transactions without exactly one outcome"
            ));
        }
        if let Err(e) = self.policy.check_invariants() {
            self.violation(format!("policy invariant at end: {e}"));
        }
        let ps = *self.policy.stats();
        if ps.queue_len != 0 {
            self.violation(format!("policy queue not empty at end: {}", ps.queue_len));
        }
        if ps.ignored_total() != 0 || ps.inconsistent != 0 {
            self.violation(format!("policy saw invalid/inconsistent events: {ps:?}"));
        }
        if self.report.host.prestage_to_sleeper > 0 && ps.wakes == 0 {
            self.violation(String::from(
                "prestages reached sleeping cpus but no Wake was sent",
            ));
        }
        self.report.policy_stats = ps;
        if let Workload::OpenLoop { classes, .. } = &self.cfg.workload {
            for (i, c) in classes.iter().enumerate() {
                let v = &mut self.latencies[i];
                v.sort_unstable();
                self.report.classes.push(ClassStats {
                    name: c.name,
                    count: v.len() as u64,
                    p50_ns: pct(v, 0.50),
                    p99_ns: pct(v, 0.99),
                    p999_ns: pct(v, 0.999),
                    max_ns: v.last().copied().unwrap_or(0),
                });
            }
        }
        self.preempt_lat.sort_unstable();
        self.report.preempt_latency_p50_ns = pct(&self.preempt_lat, 0.5);
        self.report.preempt_latency_p99_ns = pct(&self.preempt_lat, 0.99);
        self.report.end_ns = self.now;
        let busy: u64 = self.cpus.iter().map(|c| c.busy_ns).sum();
        self.report.busy_fraction = busy as f64 / (self.now.max(1) as f64 * self.cpus.len() as f64);
        self.report
    }
}

/// The `q` quantile (nearest rank) of sorted `v`; 0 if empty.
pub fn pct(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Runs `cfg` against `policy` (convenience for [`Sim::new`] + [`Sim::run`]).
pub fn simulate(cfg: SimConfig, policy: &mut dyn Policy) -> SimReport {
    Sim::new(cfg, policy).run()
}
