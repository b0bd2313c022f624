//! The discrete-event core: the event queue in virtual time, the run loop, the link's
//! latencies (events to the agent, decisions to the host, doorbells), and the end-of-run
//! checks. The host CPUs are in [`crate::host`], the workloads in [`crate::workload`], the
//! agent in [`crate::agent`].

use std::boxed::Box;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

use wave_abi::sched::{SchedEvent, SlotReader, SlotWriter};
use wave_host_shim::sched::{CpuCursor, Mechanism, ThreadState};
use wave_policy::{Decision, Policy};

use crate::agent::{AgentSide, PolicyAgent};
use crate::config::{SimConfig, Workload};
use crate::link::{self, HostMemory};
use crate::model::AgentModel;
use crate::report::{pct, ClassStats, SimReport, Violations};
use crate::rng::Rng;

/// Something that happens at a point of virtual time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SimEv {
    Arrival,
    AgentRecv(SchedEvent),
    AgentPoll,
    /// A step of the agent with an [`AgentModel`] (stale unless it is the one scheduled).
    AgentStep,
    HostRecv(Decision, u64),
    CpuWake(usize),
    SegEnd {
        cpu: usize,
        gen: u64,
    },
    StormWake {
        tid: usize,
        gen: u64,
    },
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

/// A request of the open-loop workload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Req {
    pub arrival: u64,
    pub class: usize,
}

/// The simulator's side of a host thread (its run state lives in the mechanism).
#[derive(Clone, Debug, Default)]
pub(crate) struct HThread {
    pub work_left: u64,
    pub req: Option<Req>,
    pub runnable_since: u64,
    pub wake_gen: u64,
}

/// One host CPU as the host runtime sees it.
#[derive(Clone, Debug, Default)]
pub(crate) struct HCpu {
    pub running: Option<usize>,
    pub run_start: u64,
    pub seg_start: u64,
    pub gen: u64,
    pub cursor: CpuCursor,
    pub sleeping: bool,
    pub waking: bool,
    pub preempt_decided_at: u64,
    pub busy_ns: u64,
}

/// The simulator. Build with [`Sim::new`], run with [`Sim::run`].
pub struct Sim<'m, 'p> {
    pub(crate) cfg: SimConfig,
    pub(crate) rng: Rng,
    heap: BinaryHeap<Item>,
    n: u64,
    pub(crate) now: u64,
    pub(crate) mech: Mechanism<'m>,
    pub(crate) slots: SlotReader<'m>,
    writer: SlotWriter<'m>,
    pub(crate) threads: Vec<HThread>,
    pub(crate) cpus: Vec<HCpu>,
    pub(crate) idle_workers: VecDeque<usize>,
    pub(crate) backlog: VecDeque<Req>,
    pub(crate) latencies: Vec<Vec<u64>>,
    agent: Box<dyn AgentSide + 'p>,
    last_poll_at: Option<u64>,
    deadline_poll_at: Option<u64>,
    pub(crate) txn_outcomes: BTreeMap<u64, u8>,
    pub(crate) preempt_lat: Vec<u64>,
    pub(crate) report: SimReport,
    pub(crate) v: Violations,
    /// The agent as a server with costs, when the configuration has a model.
    served: Option<Served>,
}

/// The state of an agent with an [`AgentModel`] (see `crate::model`).
struct Served {
    m: AgentModel,
    inbox: VecDeque<SchedEvent>,
    /// The agent is busy until then.
    free_at: u64,
    /// The step scheduled next, if any.
    step_at: Option<u64>,
    /// Interrupt time to charge to the next step.
    irq_debt: u64,
    /// Per cpu, whether the agent's events say it runs something.
    busy_view: Vec<bool>,
    /// Per cpu, a prestage held until the cpu is free (prestaging off).
    held: Vec<Option<Decision>>,
}

/// Threads the workload of `cfg` uses.
pub fn threads_of(cfg: &SimConfig) -> usize {
    match &cfg.workload {
        Workload::OpenLoop { workers, .. } => *workers,
        Workload::Storm(s) => s.threads,
    }
}

impl<'m, 'p> Sim<'m, 'p> {
    /// A simulator for `cfg` over `mem` (built for `cfg`'s CPUs and threads) driving `policy`
    /// directly, which must schedule at least `cfg.n_cpus` CPUs and hold every tid the
    /// workload uses.
    pub fn new(cfg: SimConfig, mem: &'m HostMemory, policy: &'p mut dyn Policy) -> Self {
        let n_threads = threads_of(&cfg) as u32;
        let agent = PolicyAgent::new(policy, cfg.n_cpus as u32, n_threads, cfg.check_every);
        Self::with_agent(cfg, mem, Box::new(agent))
    }

    /// A simulator for `cfg` over `mem` with any agent (e.g. [`crate::RuntimeAgent`]).
    pub fn with_agent(cfg: SimConfig, mem: &'m HostMemory, agent: Box<dyn AgentSide + 'p>) -> Self {
        let n_threads = threads_of(&cfg);
        let n_classes = match &cfg.workload {
            Workload::OpenLoop { classes, .. } => classes.len(),
            Workload::Storm(_) => 0,
        };
        assert!(
            mem.fits(cfg.n_cpus, n_threads),
            "host memory built for another size: make it with HostMemory::new({}, {n_threads})",
            cfg.n_cpus
        );
        let (writer, slots) = mem.slots(agent.session());
        Sim {
            rng: Rng::new(cfg.seed),
            heap: BinaryHeap::new(),
            n: 0,
            now: 0,
            mech: mem.mechanism(),
            slots,
            writer,
            threads: vec![HThread::default(); n_threads],
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
            last_poll_at: None,
            deadline_poll_at: None,
            txn_outcomes: BTreeMap::new(),
            preempt_lat: Vec::new(),
            report: SimReport {
                policy: agent.name(),
                ..SimReport::default()
            },
            agent,
            v: Violations::default(),
            served: cfg.agent_model.map(|m| Served {
                m,
                inbox: VecDeque::new(),
                free_at: 0,
                step_at: None,
                irq_debt: 0,
                busy_view: vec![false; cfg.n_cpus],
                held: vec![None; cfg.n_cpus],
            }),
            cfg,
        }
    }

    pub(crate) fn push(&mut self, t: u64, ev: SimEv) {
        self.n += 1;
        self.heap.push(Item { t, n: self.n, ev });
    }

    pub(crate) fn violation(&mut self, s: String) {
        self.v.add(self.now, s);
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

    fn step(&mut self, ev: SimEv) {
        match ev {
            SimEv::Arrival => self.arrival(),
            SimEv::AgentRecv(e) => self.agent_recv(e),
            SimEv::AgentPoll => self.agent_poll(),
            SimEv::AgentStep => self.agent_step(),
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
    // Link.

    /// The host posts `ev` on the events ring; the agent sees it one link latency later.
    pub(crate) fn post(&mut self, ev: SchedEvent) {
        self.report.host.events_posted += 1;
        let extra = self.served.as_ref().map_or(0, |s| s.m.entry_extra_ns());
        let t = self.now + self.cfg.link_latency_ns + extra;
        self.push(t, SimEv::AgentRecv(ev));
    }

    fn agent_recv(&mut self, e: SchedEvent) {
        if self.served.is_some() {
            return self.served_recv(e);
        }
        self.agent.deliver(&e, self.now, &mut self.v);
        if self.last_poll_at != Some(self.now) {
            self.last_poll_at = Some(self.now);
            self.push(self.now, SimEv::AgentPoll);
        }
    }

    fn agent_poll(&mut self) {
        for d in self.agent.poll(self.now, &mut self.v) {
            let t = self.now + self.cfg.link_latency_ns;
            self.push(t, SimEv::HostRecv(d, self.now));
        }
        // One pending deadline poll at a time (the earliest); each poll schedules the next.
        if self.deadline_poll_at.is_some_and(|x| x <= self.now) {
            self.deadline_poll_at = None;
        }
        if let Some(d) = self.agent.next_deadline(self.now) {
            if d > self.now && self.deadline_poll_at.is_none_or(|x| d < x) {
                self.deadline_poll_at = Some(d);
                self.push(d, SimEv::AgentPoll);
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // The agent as a server (with an `AgentModel`).

    /// An event reaches the agent's ring: it waits in the inbox for a step.
    fn served_recv(&mut self, e: SchedEvent) {
        let now = self.now;
        let wake = self.cfg.wake_latency_ns;
        let Some(s) = self.served.as_mut() else {
            return;
        };
        let asleep = s.inbox.is_empty()
            && s.step_at.is_none()
            && now.saturating_sub(s.free_at) >= s.m.spin_ns;
        let mut ready = now;
        if !s.m.mitigations.wakeup_suppression {
            s.irq_debt += s.m.irq_ns;
        } else if asleep {
            s.irq_debt += s.m.irq_ns;
            ready = now + wake;
        }
        s.inbox.push_back(e);
        let at = ready.max(s.free_at);
        self.schedule_step(at);
    }

    fn schedule_step(&mut self, at: u64) {
        let Some(s) = self.served.as_mut() else {
            return;
        };
        if s.step_at.is_none_or(|x| at < x) {
            s.step_at = Some(at);
            self.push(at, SimEv::AgentStep);
        }
    }

    /// One agent step: drain a batch, poll the policy once, pay for it, send the decisions.
    fn agent_step(&mut self) {
        let now = self.now;
        let Some(s) = self.served.as_mut() else {
            return;
        };
        if s.step_at != Some(now) {
            return; // superseded by an earlier step
        }
        s.step_at = None;
        let n = s.inbox.len().min(s.m.batch());
        let batch: Vec<SchedEvent> = s.inbox.drain(..n).collect();
        let mut released = Vec::new();
        for e in &batch {
            self.agent.deliver(e, now, &mut self.v);
            released.extend(self.view_event(e));
        }
        let ds = self.agent.poll(now, &mut self.v);
        let Some(s) = self.served.as_mut() else {
            return;
        };
        let m = s.m;
        let cost = m.step_ns
            + n as u64 * m.event_ns
            + ds.len() as u64 * m.decision_ns
            + core::mem::take(&mut s.irq_debt);
        let done = now + cost;
        s.free_at = done;
        let more = !s.inbox.is_empty();
        self.report.agent_busy_ns += cost;
        self.report.agent_steps += 1;
        for d in released.into_iter().chain(ds) {
            self.served_send(d, done);
        }
        if more {
            self.schedule_step(done);
        }
        if let Some(d) = self.agent.next_deadline(now) {
            if d > now {
                self.schedule_step(d.max(done));
            }
        }
    }

    /// Tracks which cpus run something, as the agent's events say; returns the prestages held
    /// for a cpu that this event frees (prestaging off), now with a doorbell.
    fn view_event(&mut self, e: &SchedEvent) -> Option<Decision> {
        use wave_abi::sched::EventKind as K;
        let s = self.served.as_mut()?;
        let c = e.cpu as usize;
        let busy = match e.kind {
            K::TxnCommitted => true,
            K::Blocked | K::Yield | K::Preempted | K::Dead | K::CpuIdle => false,
            _ => return None,
        };
        *s.busy_view.get_mut(c)? = busy;
        if busy {
            return None;
        }
        match s.held.get_mut(c)?.take()? {
            Decision::Prestage {
                cpu, txn, tid, seq, ..
            } => Some(Decision::Prestage {
                cpu,
                txn,
                tid,
                seq,
                wake: true,
            }),
            d => Some(d),
        }
    }

    /// Sends decision `d` at `at`, unless prestaging is off and its cpu is busy (then it is
    /// held); an abort of a held prestage releases it first.
    fn served_send(&mut self, d: Decision, at: u64) {
        let link = self.cfg.link_latency_ns;
        let Some(s) = self.served.as_mut() else {
            return;
        };
        let m = s.m;
        let mut first = None;
        match d {
            Decision::Prestage { cpu, .. }
                if !m.mitigations.prestage && s.busy_view[cpu.0 as usize] =>
            {
                s.held[cpu.0 as usize] = Some(d);
                return;
            }
            Decision::Abort { cpu, txn } => {
                let c = cpu.0 as usize;
                if matches!(s.held[c], Some(Decision::Prestage { txn: t, .. }) if t == txn) {
                    first = s.held[c].take();
                }
            }
            _ => {}
        }
        let t = at + link + m.entry_extra_ns();
        if let Some(p) = first {
            self.push(t, SimEv::HostRecv(p, at));
        }
        let read = match d {
            Decision::Abort { .. } if !m.mitigations.abort => m.read_rtt_ns,
            _ => 0,
        };
        self.push(t + read, SimEv::HostRecv(d, at));
    }

    /// A decision's posted write reaches host memory (and its doorbell, if any, is rung).
    fn host_recv(&mut self, d: Decision, decided_at: u64) {
        self.report.host.decisions += 1;
        match d {
            Decision::Prestage { cpu, txn, wake, .. } => {
                let c = cpu.0 as usize;
                let cur = self.cpus[c].cursor;
                if self.slots.prestaged(cpu.0, cur.last_txn).is_some() {
                    self.violation(format!(
                        "slot of cpu {c} not taken yet: {d:?} overwrites it"
                    ));
                }
                self.txn_outcomes.insert(txn.0, 0);
                self.land(&d);
                if self.cpus[c].sleeping && !self.cpus[c].waking {
                    if wake {
                        self.ring(c);
                    } else {
                        self.report.host.prestage_to_sleeper += 1;
                    }
                }
            }
            Decision::Abort { cpu, txn } => {
                let cur = self.cpus[cpu.0 as usize].cursor;
                if self.slots.prestaged(cpu.0, cur.last_txn).map(|p| p.txn) != Some(txn.0) {
                    self.report.host.aborts_lost += 1;
                }
                self.land(&d);
            }
            Decision::Preempt { cpu, .. } => {
                let c = cpu.0 as usize;
                self.land(&d);
                self.cpus[c].preempt_decided_at = decided_at;
                self.schedule_safe_point(c);
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

    fn land(&mut self, d: &Decision) {
        if !link::land(&mut self.writer, d) {
            self.violation(format!("decision for a cpu outside the session: {d:?}"));
        }
    }

    /// Rings `c`'s doorbell: it wakes one wake latency later.
    pub(crate) fn ring(&mut self, c: usize) {
        self.report.host.doorbells += 1;
        self.cpus[c].waking = true;
        let t = self.now + self.cfg.wake_latency_ns;
        self.push(t, SimEv::CpuWake(c));
    }

    // ----------------------------------------------------------------------------------
    // End of run.

    fn finish(mut self, drained: bool) -> SimReport {
        if !drained {
            self.violation(String::from(
                "did not drain: work left after duration + drain",
            ));
        }
        self.check_host_at_end();
        self.check_policy_at_end();
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
        self.report.drain_ns = self
            .report
            .last_completion_ns
            .saturating_sub(self.cfg.duration_ns);
        let busy: u64 = self.cpus.iter().map(|c| c.busy_ns).sum();
        self.report.busy_fraction = busy as f64 / (self.now.max(1) as f64 * self.cpus.len() as f64);
        self.report.violations = self.v.into_vec();
        self.report
    }

    /// No request or runnable thread lost, every slot taken, one outcome per transaction,
    /// and the mechanism's run-time accounting equal to the CPUs' busy time.
    fn check_host_at_end(&mut self) {
        if let Workload::OpenLoop { .. } = self.cfg.workload {
            if self.report.completed != self.report.generated || !self.backlog.is_empty() {
                self.violation(format!(
                    "requests lost: generated {} completed {}",
                    self.report.generated, self.report.completed
                ));
            }
        }
        for tid in 0..self.threads.len() {
            let st = self.mech.status(tid as u32).map(|s| s.state);
            if matches!(st, Some(ThreadState::Runnable | ThreadState::Running(_))) {
                self.violation(format!("thread {tid} still {st:?} at the end"));
            }
        }
        for c in 0..self.cpus.len() {
            let last = self.cpus[c].cursor.last_txn;
            if self.slots.prestaged(c as u32, last).is_some() {
                self.violation(format!("cpu {c} slot still holds a transaction at the end"));
            }
        }
        let unresolved = self.txn_outcomes.values().filter(|&&n| n != 1).count();
        if unresolved > 0 {
            self.violation(format!(
                "{unresolved} transactions without exactly one outcome"
            ));
        }
        let runtime: u64 = (0..self.threads.len() as u32)
            .filter_map(|t| self.mech.thread(t).map(|s| s.runtime_ns()))
            .sum();
        let busy: u64 = self.cpus.iter().map(|c| c.busy_ns).sum();
        if runtime != busy {
            self.violation(format!(
                "mechanism accounted {runtime} ns of run time, cpus were busy {busy} ns"
            ));
        }
        self.report.mechanism_runtime_ns = runtime;
    }

    fn check_policy_at_end(&mut self) {
        if let Err(e) = self.agent.check_invariants() {
            self.violation(format!("policy invariant at end: {e}"));
        }
        let ps = self.agent.stats();
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
    }
}

/// Runs `cfg` against `policy` over fresh host memory (convenience for [`Sim::new`] +
/// [`Sim::run`]).
pub fn simulate(cfg: SimConfig, policy: &mut dyn Policy) -> SimReport {
    let mem = HostMemory::new(cfg.n_cpus, threads_of(&cfg));
    Sim::new(cfg, &mem, policy).run()
}
