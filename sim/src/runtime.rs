//! The shipped agent loop in the simulator: [`RuntimeAgent`] runs
//! `wave_policy::agent::SchedAgent` (the loop the firmware and the on-host mode run: ring
//! entries in, the decoder, the policy the session configuration names, decisions written into
//! the CPU slots with the shipped `SlotWriter`) over an in-process region of its own, the IPU's
//! view ([`AgentRegion`]).
//!
//! The simulator posts each event into that region's event ring with a host `Endpoint` when it
//! arrives, steps the agent, and reads back, with a `SlotReader` on the agent's region, what the
//! step wrote into the slots: each new prestage, abort and preempt request, plus the doorbells
//! the step asked for. Those leave for the host as decisions and land in host memory one link
//! latency later, like any other agent's.

use core::sync::atomic::AtomicU64;
use std::boxed::Box;
use std::format;
use std::vec::Vec;

use wave_abi::layout::Side;
use wave_abi::sched::{SchedConfig, SchedEvent, SlotReader, CPU_VECTOR_BASE, MAX_CPUS};
use wave_abi::{Channel, Endpoint, Layout, SharedRegion};
use wave_policy::agent::{AgentError, SchedAgent, EVENTS_PER_STEP};
use wave_policy::registry::PolicyChoice;
use wave_policy::{CpuId, Decision, PolicyStats, Seq, Tid, TxnId};

use crate::agent::{AgentSide, Checker};
use crate::config::SimConfig;
use crate::link::HostMemory;
use crate::report::{SimReport, Violations};
use crate::sim::{threads_of, Sim};

/// Ring entries of the agent region's rings (events arrive one at a time and are drained
/// at once, so this bounds only the events of one instant).
const RING_ENTRIES: u32 = 1024;
/// Host and IPU epochs (any two non-zero values).
const EPOCHS: (u32, u32) = (2, 1);

/// The IPU's view of the link: a region with the layout, the rings and the session
/// configuration the agent reads.
pub struct AgentRegion {
    words: Vec<AtomicU64>,
    layout: Layout,
}

impl AgentRegion {
    /// A region whose published session configuration is `cfg`.
    pub fn new(cfg: &SchedConfig) -> Result<AgentRegion, AgentError> {
        let size = Layout::min_size(RING_ENTRIES);
        let words: Vec<AtomicU64> = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        let vectors = CPU_VECTOR_BASE as u32 + cfg.n_cpus.min(MAX_CPUS);
        let layout = Layout::v1(RING_ENTRIES, size, vectors)
            .expect("the v1 layout fits its own minimum size");
        let region = SharedRegion::from_words(&words);
        layout
            .write(&region)
            .expect("the layout fits the region it was sized for");
        cfg.publish(&region, &layout, EPOCHS.0 as u64)?;
        Ok(AgentRegion { words, layout })
    }
}

/// `SchedAgent` with the simulator's view of what it writes.
pub struct RuntimeAgent<'a> {
    agent: Box<SchedAgent<'a>>,
    host: Endpoint<'a>,
    ipu: Endpoint<'a>,
    written: SlotReader<'a>,
    n_cpus: u32,
    ring: u64,
    last_txn: Vec<u64>,
    last_abort: Vec<u64>,
    last_preempt: Vec<u64>,
    checker: Checker,
}

impl<'a> RuntimeAgent<'a> {
    /// Brings the link up over `r` and starts the agent on its configuration; checks the
    /// policy's invariants every `check_every` steps (0: only at the end).
    pub fn new(r: &'a AgentRegion, check_every: u64) -> Result<Self, AgentError> {
        let region = SharedRegion::from_words(&r.words);
        let up = |side, epoch| Endpoint::new(region, &r.layout, side, epoch).ok();
        let (Some(mut host), Some(mut ipu)) = (up(Side::Host, EPOCHS.0), up(Side::Ipu, EPOCHS.1))
        else {
            return Err(AgentError::Sched(wave_abi::sched::SchedError::Region));
        };
        for _ in 0..8 {
            host.poll_link();
            ipu.poll_link();
        }
        let agent: Box<SchedAgent<'a>> =
            Box::new(SchedAgent::new(&region, &r.layout, ipu.session())?);
        let cfg = *agent.config();
        let written = SlotReader::new(&region, &r.layout, cfg.n_cpus, ipu.session())?;
        let n = cfg.n_cpus as usize;
        Ok(RuntimeAgent {
            agent,
            host,
            ipu,
            written,
            n_cpus: cfg.n_cpus,
            ring: 0,
            last_txn: std::vec![0; n],
            last_abort: std::vec![0; n],
            last_preempt: std::vec![0; n],
            checker: Checker::new(cfg.n_cpus, cfg.n_threads, check_every),
        })
    }

    /// Agent steps until the event ring is empty (at least one: the policy polls in each);
    /// the doorbells they ask for accumulate until the next [`AgentSide::poll`].
    fn drain(&mut self, now: u64, v: &mut Violations) {
        loop {
            let r = self.agent.step(&mut self.ipu, now);
            self.ring |= r.ring_cpus;
            if r.invalid > 0 {
                v.add(
                    now,
                    format!("agent: {} invalid entries from the host", r.invalid),
                );
            }
            if self.checker.tick() {
                if let Err(e) = self.agent.policy().check_invariants() {
                    v.add(now, format!("policy invariant: {e}"));
                }
            }
            if r.events + r.invalid < EVENTS_PER_STEP {
                return;
            }
        }
    }

    /// What the agent wrote into `cpu`'s slot since the last look, as decisions.
    fn written(&mut self, cpu: u32, ring: bool, out: &mut Vec<Decision>) {
        let c = cpu as usize;
        let mut rung = false;
        if let Some(p) = self.written.prestaged(cpu, self.last_txn[c]) {
            self.last_txn[c] = p.txn;
            rung = ring;
            out.push(Decision::Prestage {
                cpu: CpuId(cpu),
                txn: TxnId(p.txn),
                tid: Tid(p.tid),
                seq: Seq(p.seq),
                wake: ring,
            });
        }
        let txn = self.last_txn[c];
        if txn != 0 && self.last_abort[c] != txn && self.written.abort_requested(cpu, txn) {
            self.last_abort[c] = txn;
            out.push(Decision::Abort {
                cpu: CpuId(cpu),
                txn: TxnId(txn),
            });
        }
        if let Some(p) = self.written.preempt(cpu, self.last_preempt[c]) {
            self.last_preempt[c] = p.generation;
            out.push(Decision::Preempt {
                cpu: CpuId(cpu),
                tid: Tid(p.tid),
                seq: Seq(p.seq),
            });
        }
        if ring && !rung {
            out.push(Decision::Wake { cpu: CpuId(cpu) });
        }
    }
}

impl AgentSide for RuntimeAgent<'_> {
    fn name(&self) -> &'static str {
        self.agent.policy().name()
    }

    fn session(&self) -> u32 {
        self.agent.session()
    }

    fn deliver(&mut self, ev: &SchedEvent, now: u64, v: &mut Violations) {
        match ev.event() {
            Some(e) => self.checker.event(e, now, v),
            None => v.add(
                now,
                format!("agent: the host posted an invalid event {ev:?}"),
            ),
        }
        if self.host.send(Channel::Sched, &[ev.encode()]).0 == 1 {
            return;
        }
        // The ring is full: let the agent drain it first (it would be polling meanwhile).
        self.drain(now, v);
        if self.host.send(Channel::Sched, &[ev.encode()]).0 != 1 {
            v.add(now, format!("agent: event ring overflow at {ev:?}"));
        }
    }

    fn poll(&mut self, now: u64, v: &mut Violations) -> Vec<Decision> {
        self.drain(now, v);
        let ring = core::mem::take(&mut self.ring);
        let mut out = Vec::new();
        for cpu in 0..self.n_cpus {
            self.written(cpu, ring & (1 << cpu) != 0, &mut out);
        }
        self.checker.decisions(&out, now, v);
        out
    }

    fn next_deadline(&self, now: u64) -> Option<u64> {
        self.agent.next_deadline(now)
    }

    fn stats(&self) -> PolicyStats {
        *self.agent.policy().stats()
    }

    fn check_invariants(&self) -> Result<(), &'static str> {
        self.agent.policy().check_invariants()
    }
}

/// Runs `cfg` with the shipped agent loop and the policy (with its parameter block) a session
/// configuration names, over fresh host and agent memory. Fails if the agent refuses the
/// configuration (too many CPUs or threads, a bad parameter).
pub fn simulate_runtime(cfg: SimConfig, choice: PolicyChoice) -> Result<SimReport, AgentError> {
    let n_threads = threads_of(&cfg);
    let session = SchedConfig {
        n_cpus: cfg.n_cpus as u32,
        n_threads: n_threads as u32,
        policy: choice.info.id,
        params: choice.params,
    };
    let region = AgentRegion::new(&session)?;
    let agent = RuntimeAgent::new(&region, cfg.check_every)?;
    let mem = HostMemory::new(cfg.n_cpus, n_threads);
    Ok(Sim::with_agent(cfg, &mem, Box::new(agent)).run())
}
