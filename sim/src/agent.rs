//! The agent side of the simulation, behind one seam ([`AgentSide`]): events in, decisions out,
//! and the agent-side checks of every decision as it is emitted ([`Checker`], a mirror of what
//! the events told the agent).
//!
//! Two agents plug in: [`PolicyAgent`] drives any `&mut dyn Policy` directly (events decoded by
//! the shipped [`EventDecoder`]), for policies built with custom capacities or configurations and
//! for scripted test agents; [`crate::runtime::RuntimeAgent`] runs the shipped agent loop
//! (`wave_policy::agent::SchedAgent`) over an in-process region. Host events reach the agent
//! as the ABI encodes them and are decoded by the shipped decoder into the policies' own
//! vocabulary (`wave_abi::sched::Event`, one set of types on both sides).

use std::format;
use std::vec::Vec;

use wave_abi::sched::{EventDecoder, SchedConfig, SchedEvent, PARAM_WORDS};
use wave_policy::{CpuId, Decision, Event, FailReason, Policy, PolicyStats, Seq, Tid, TxnId};

use crate::report::Violations;

/// What the agent believes about one thread, from the events alone.
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

/// What the simulator needs from an agent. Time is the caller's (virtual); violations the
/// agent sees go into `v`.
pub trait AgentSide {
    /// The policy's name.
    fn name(&self) -> &'static str;
    /// The link session the agent writes slots for (the host reads only that session's).
    fn session(&self) -> u32;
    /// One host event arrives at the agent.
    fn deliver(&mut self, ev: &SchedEvent, now: u64, v: &mut Violations);
    /// The agent runs: the decisions it makes now, in order, as they leave for the host.
    fn poll(&mut self, now: u64, v: &mut Violations) -> Vec<Decision>;
    /// When the policy next wants a poll without a new event.
    fn next_deadline(&self, now: u64) -> Option<u64>;
    /// The policy's counters.
    fn stats(&self) -> PolicyStats;
    /// The policy's own consistency check.
    fn check_invariants(&self) -> Result<(), &'static str>;
}

/// Drives a `&mut dyn Policy` directly: entries decoded by the shipped decoder, one
/// `on_event` per event, one `poll` per batch.
pub struct PolicyAgent<'p> {
    policy: &'p mut dyn Policy,
    decoder: EventDecoder,
    checker: Checker,
}

/// Session a [`PolicyAgent`] uses (any non-zero value).
const POLICY_AGENT_SESSION: u32 = 1;

impl<'p> PolicyAgent<'p> {
    /// An agent for `n_cpus` CPUs and `n_threads` threads driving `policy`; checks the
    /// policy's invariants every `check_every` steps (0: only at the end).
    pub fn new(policy: &'p mut dyn Policy, n_cpus: u32, n_threads: u32, check_every: u64) -> Self {
        let cfg = SchedConfig {
            n_cpus,
            n_threads,
            policy: 1, // the decoder only reads the counts
            params: [0; PARAM_WORDS],
        };
        PolicyAgent {
            policy,
            decoder: EventDecoder::new(&cfg),
            checker: Checker::new(n_cpus, n_threads, check_every),
        }
    }

    fn step_done(&mut self, now: u64, v: &mut Violations) {
        if self.checker.tick() {
            if let Err(e) = self.policy.check_invariants() {
                v.add(now, format!("policy invariant: {e}"));
            }
        }
    }
}

impl AgentSide for PolicyAgent<'_> {
    fn name(&self) -> &'static str {
        self.policy.name()
    }

    fn session(&self) -> u32 {
        POLICY_AGENT_SESSION
    }

    fn deliver(&mut self, ev: &SchedEvent, now: u64, v: &mut Violations) {
        let body = ev.encode();
        let Ok(e) = self.decoder.decode(&body) else {
            v.add(
                now,
                format!("agent: the host posted an invalid event {ev:?}"),
            );
            return;
        };
        self.checker.event(e, now, v);
        self.policy.on_event(e, now);
        self.step_done(now, v);
    }

    fn poll(&mut self, now: u64, v: &mut Violations) -> Vec<Decision> {
        let mut out: Vec<Decision> = Vec::new();
        self.policy.poll(now, &mut out);
        self.step_done(now, v);
        self.checker.decisions(&out, now, v);
        out
    }

    fn next_deadline(&self, now: u64) -> Option<u64> {
        self.policy.next_deadline(now)
    }

    fn stats(&self) -> PolicyStats {
        *self.policy.stats()
    }

    fn check_invariants(&self) -> Result<(), &'static str> {
        self.policy.check_invariants()
    }
}

/// The agent-side checks: what the events said about each thread, and every prestage checked
/// against it (ids increasing, one outstanding per CPU and per thread, only runnable threads at
/// their latest seq, never again at a seq the host refused), every outcome matched to exactly
/// one outstanding transaction.
pub struct Checker {
    mirror: Vec<Mirror>,
    cpu_outstanding: Vec<Option<TxnId>>,
    last_txn: u64,
    steps: u64,
    check_every: u64,
}

impl Checker {
    /// Checks for `n_cpus` CPUs and `n_threads` threads; [`Self::tick`] says when to run the
    /// policy's own check (every `check_every` steps, never if 0).
    pub fn new(n_cpus: u32, n_threads: u32, check_every: u64) -> Self {
        Checker {
            mirror: std::vec![Mirror::default(); n_threads as usize],
            cpu_outstanding: std::vec![None; n_cpus as usize],
            last_txn: 0,
            steps: 0,
            check_every,
        }
    }

    /// Counts one agent step; true when the policy's invariants are due for a check.
    pub fn tick(&mut self) -> bool {
        self.steps += 1;
        self.check_every > 0 && self.steps.is_multiple_of(self.check_every)
    }

    /// The agent received `e`.
    pub fn event(&mut self, e: Event, now: u64, v: &mut Violations) {
        self.mirror_event(e, now, v);
    }

    /// The agent emitted `ds`, in order.
    pub fn decisions(&mut self, ds: &[Decision], now: u64, v: &mut Violations) {
        for d in ds {
            self.check_decision(*d, now, v);
        }
    }

    fn mirror_event(&mut self, e: Event, now: u64, v: &mut Violations) {
        match e {
            Event::ThreadNew { tid, seq, runnable } => {
                let m = &mut self.mirror[tid.0 as usize];
                *m = Mirror {
                    known: true,
                    seq: seq.0,
                    state_seq: seq.0,
                    runnable,
                    outstanding: m.outstanding,
                    ..Mirror::default()
                };
            }
            Event::Wakeup { tid, seq }
            | Event::Yield { tid, seq, .. }
            | Event::Preempted { tid, seq, .. } => self.mirror_state(tid, seq, true),
            Event::Blocked { tid, seq, .. } | Event::Dead { tid, seq, .. } => {
                self.mirror_state(tid, seq, false)
            }
            Event::Affinity { tid, seq, .. } => {
                let m = &mut self.mirror[tid.0 as usize];
                if seq.is_newer_than(Seq(m.seq)) {
                    m.seq = seq.0;
                }
            }
            Event::TxnCommitted { txn, tid, cpu } => {
                if let Some(seq) = self.mirror_outcome(txn, tid, cpu, now, v) {
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
                if let Some(seq) = self.mirror_outcome(txn, tid, cpu, now, v) {
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
                        self.mirror_outcome(txn, Tid(tid as u32), cpu, now, v);
                    }
                    None => v.add(now, format!("agent: abort outcome for unknown {txn:?}")),
                }
            }
            Event::CpuIdle { .. } => {}
            // Only sent at a resynchronisation, which the simulator does not model.
            Event::ThreadRunning { tid, seq, .. } => self.mirror_state(tid, seq, false),
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
    fn mirror_outcome(
        &mut self,
        txn: TxnId,
        tid: Tid,
        cpu: CpuId,
        now: u64,
        v: &mut Violations,
    ) -> Option<u32> {
        let c = cpu.0 as usize;
        let m = &mut self.mirror[tid.0 as usize];
        match m.outstanding {
            Some((oc, ot, seq)) if oc == c && ot == txn && self.cpu_outstanding[c] == Some(txn) => {
                m.outstanding = None;
                self.cpu_outstanding[c] = None;
                Some(seq)
            }
            _ => {
                v.add(
                    now,
                    format!("agent: outcome for unknown {txn:?} {tid:?} {cpu:?}"),
                );
                None
            }
        }
    }

    fn check_decision(&mut self, d: Decision, now: u64, v: &mut Violations) {
        let Decision::Prestage {
            cpu, txn, tid, seq, ..
        } = d
        else {
            return;
        };
        let (c, t) = (cpu.0 as usize, tid.0 as usize);
        if c >= self.cpu_outstanding.len() || t >= self.mirror.len() {
            v.add(now, format!("prestage out of range {d:?}"));
            return;
        }
        if txn.0 <= self.last_txn {
            v.add(now, format!("txn ids not increasing: {d:?}"));
        }
        self.last_txn = txn.0;
        if self.cpu_outstanding[c].is_some() {
            v.add(now, format!("second outstanding txn on cpu {c}: {d:?}"));
        }
        let m = self.mirror[t];
        if m.outstanding.is_some() {
            v.add(
                now,
                format!(
                    "thread prestaged on two cpus: {d:?} and {:?}",
                    m.outstanding
                ),
            );
        }
        if !m.known || m.seq != seq.0 || !m.runnable || m.running {
            v.add(
                now,
                format!("prestage of a thread not runnable per latest event: {d:?} {m:?}"),
            );
        }
        if m.failed_at == Some(seq.0) {
            v.add(
                now,
                format!("re-prestage at a seq the host already refused: {d:?}"),
            );
        }
        self.cpu_outstanding[c] = Some(txn);
        self.mirror[t].outstanding = Some((c, txn, seq.0));
    }
}
