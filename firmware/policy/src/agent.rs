//! The scheduling agent loop, shared by the IPU firmware and the host shim's on-host mode
//! (`--agent host`): events in from the link's `Sched` ring, the [`Policy`] in the middle,
//! decisions out into the per-CPU transaction slots in host memory (`docs/abi.md` §8). The
//! event decoder yields the policies' own [`crate::Event`]; the policy is the one the session
//! configuration names, built through [`crate::registry`].
//!
//! The agent only reads memory homed on its own side (the events ring and the session
//! configuration) and only writes the host's (the CPU slots and its credits), so it runs
//! unchanged on either side of the link.

use crate::registry::AnyPolicy;
use crate::types::{ConfigError, Decision};
use crate::{Policy, MAX_CPUS, MAX_THREADS};
use wave_abi::sched::{EventDecoder, EventStats, SchedConfig, SchedError, SlotWriter};
use wave_abi::{Channel, Endpoint, Layout, SharedRegion};

/// Events taken off the ring per [`SchedAgent::step`] (bounds the work of one step).
pub const EVENTS_PER_STEP: usize = 64;
/// Decisions emitted per step.
pub const DECISIONS_PER_STEP: usize = 64;

/// Why an agent could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentError {
    /// The session configuration or slots are unusable.
    Sched(SchedError),
    /// The policy refused the configuration.
    Policy(ConfigError),
    /// More CPUs or threads than this agent was built for.
    TooBig {
        /// CPUs asked for.
        cpus: u32,
        /// Threads asked for.
        threads: u32,
    },
}

impl core::fmt::Display for AgentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AgentError::Sched(e) => write!(f, "{e}"),
            AgentError::Policy(e) => write!(f, "policy configuration refused: {e}"),
            AgentError::TooBig { cpus, threads } => write!(
                f,
                "session asks for {cpus} CPUs and {threads} threads, more than this agent holds"
            ),
        }
    }
}

impl From<SchedError> for AgentError {
    fn from(e: SchedError) -> Self {
        AgentError::Sched(e)
    }
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepResult {
    /// Valid events applied.
    pub events: usize,
    /// Entries rejected by the decoder.
    pub invalid: usize,
    /// Decisions written into the slots.
    pub decisions: usize,
    /// Bit `c`: ring host CPU `c`'s doorbell (vector `CPU_VECTOR_BASE + c`).
    pub ring_cpus: u64,
}

/// Agent counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentStats {
    /// Event decoder counters (accepted and rejected by reason).
    pub decode: EventStats,
    /// Prestages written.
    pub prestages: u64,
    /// Aborts written.
    pub aborts: u64,
    /// Preempt requests written.
    pub preempts: u64,
    /// CPU doorbells asked for.
    pub doorbells: u64,
    /// Steps that did any work.
    pub busy_steps: u64,
}

/// Reads the running core's (instructions retired, cycles) counters: the firmware's PMU
/// (`firmware/src/pmu.rs`). With a meter the agent accounts its own cost ([`Cost`]).
pub type Meter = fn() -> (u64, u64);

/// What the agent's work cost on its core, as its [`Meter`] counted it. The event phase (ring
/// poll, decode, `on_event`) is counted in steps that drained events; the decision phase
/// (`poll` and the slot writes) in steps that drained events or made decisions, so its cost
/// per decision includes the polls that decided nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Events drained in counted steps.
    pub events: u64,
    /// Instructions of the event phase.
    pub event_instructions: u64,
    /// Cycles of the event phase.
    pub event_cycles: u64,
    /// Decisions made in counted steps.
    pub decisions: u64,
    /// Instructions of the decision phase.
    pub decision_instructions: u64,
    /// Cycles of the decision phase.
    pub decision_cycles: u64,
}

impl Cost {
    fn account(&mut self, r: &StepResult, start: (u64, u64), mid: (u64, u64), end: (u64, u64)) {
        if r.events > 0 {
            self.events += r.events as u64;
            self.event_instructions += mid.0.wrapping_sub(start.0);
            self.event_cycles += mid.1.wrapping_sub(start.1);
        }
        if r.events > 0 || r.decisions > 0 {
            self.decisions += r.decisions as u64;
            self.decision_instructions += end.0.wrapping_sub(mid.0);
            self.decision_cycles += end.1.wrapping_sub(mid.1);
        }
    }
}

/// The agent: one per link session.
pub struct SchedAgent<'a, const C: usize = MAX_CPUS, const T: usize = MAX_THREADS> {
    config: SchedConfig,
    generation: u64,
    session: u32,
    policy: AnyPolicy<C, T>,
    decoder: EventDecoder,
    slots: SlotWriter<'a>,
    stats: AgentStats,
    meter: Option<Meter>,
    cost: Cost,
}

impl<'a, const C: usize, const T: usize> SchedAgent<'a, C, T> {
    /// Reads and validates the host's session configuration, clears the CPU slots and builds
    /// the policy it names. `session` is the link session (`Endpoint::session`).
    #[inline(never)] // its frame, not the caller's, holds what building the policy needs
    pub fn new(
        region: &SharedRegion<'a>,
        layout: &Layout,
        session: u32,
    ) -> Result<Self, AgentError> {
        let (generation, config) = SchedConfig::read(region, layout)?;
        if config.n_cpus as usize > C || config.n_threads as usize > T {
            return Err(AgentError::TooBig {
                cpus: config.n_cpus,
                threads: config.n_threads,
            });
        }
        let n = config.n_cpus as usize;
        let (which, params) = AnyPolicy::<C, T>::check(config.policy, n, &config.params)
            .map_err(AgentError::Policy)?;
        let slots = SlotWriter::new(region, layout, config.n_cpus, session)?;
        // Built last and infallibly, straight into the result (see `build_checked`).
        Ok(SchedAgent {
            decoder: EventDecoder::new(&config),
            config,
            generation,
            session,
            policy: AnyPolicy::build_checked(which, n, &params),
            slots,
            stats: AgentStats::default(),
            meter: None,
            cost: Cost::default(),
        })
    }

    /// The session configuration in force.
    pub fn config(&self) -> &SchedConfig {
        &self.config
    }

    /// The configuration generation (host epoch) this agent was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The link session this agent writes slots for.
    pub fn session(&self) -> u32 {
        self.session
    }

    /// The policy (for its name and counters).
    pub fn policy(&self) -> &dyn Policy {
        &self.policy
    }

    /// Agent counters.
    pub fn stats(&self) -> AgentStats {
        AgentStats {
            decode: self.decoder.stats,
            ..self.stats
        }
    }

    /// Counts the agent's own cost with `meter` from now on (`None`: stop counting).
    pub fn set_meter(&mut self, meter: Option<Meter>) {
        self.meter = meter;
    }

    /// The agent's cost so far (zero without a meter).
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// When the policy next wants a step without a new event (slice expiry), if ever.
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        self.policy.next_deadline(now_ns)
    }

    /// One bounded step: up to [`EVENTS_PER_STEP`] events, one policy poll, the decisions
    /// written into the slots. Does nothing while the link is down.
    pub fn step(&mut self, ep: &mut Endpoint<'a>, now_ns: u64) -> StepResult {
        let mut r = StepResult::default();
        if !ep.is_up() {
            return r;
        }
        let start = self.meter.map(|m| m());
        for _ in 0..EVENTS_PER_STEP {
            let Some(body) = ep.rx(Channel::Sched).poll() else {
                break;
            };
            match self.decoder.decode(&body) {
                Ok(ev) => {
                    self.policy.on_event(ev, now_ns);
                    r.events += 1;
                }
                Err(_) => r.invalid += 1,
            }
        }
        let mid = self.meter.map(|m| m());
        let mut batch: heapless::Vec<Decision, DECISIONS_PER_STEP> = heapless::Vec::new();
        self.policy.poll(now_ns, &mut batch);
        for d in &batch {
            match *d {
                Decision::Prestage {
                    cpu,
                    txn,
                    tid,
                    seq,
                    wake,
                } => {
                    if self.slots.prestage(cpu.0, txn.0, tid.0, seq.0) {
                        self.stats.prestages += 1;
                        if wake {
                            r.ring_cpus |= 1 << (cpu.0 & 63);
                        }
                    }
                }
                Decision::Abort { cpu, txn } => {
                    if self.slots.abort(cpu.0, txn.0) {
                        self.stats.aborts += 1;
                    }
                }
                Decision::Preempt { cpu, tid, seq } => {
                    if self.slots.preempt(cpu.0, tid.0, seq.0) {
                        self.stats.preempts += 1;
                    }
                }
                Decision::Wake { cpu } => r.ring_cpus |= 1 << (cpu.0 & 63),
            }
        }
        r.decisions = batch.len();
        self.stats.doorbells += r.ring_cpus.count_ones() as u64;
        if r.events + r.invalid + r.decisions > 0 {
            self.stats.busy_steps += 1;
        }
        if let (Some(m), Some(start), Some(mid)) = (self.meter, start, mid) {
            self.cost.account(&r, start, mid, m());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_link::up;
    use core::sync::atomic::AtomicU64;
    use wave_abi::layout::DEFAULT_RING_ENTRIES;
    use wave_abi::sched::{EventKind, SchedEvent, SlotReader, CPU_VECTOR_BASE, PARAM_WORDS};

    const SIZE: usize = 0x80000;

    #[test]
    fn cost_splits_event_and_decision_phases() {
        let mut c = Cost::default();
        let step = |events, decisions| StepResult {
            events,
            decisions,
            ..StepResult::default()
        };
        c.account(&step(4, 2), (100, 10), (500, 50), (900, 90));
        // An idle step (nothing drained, nothing decided) is not counted.
        c.account(&step(0, 0), (900, 90), (950, 95), (990, 99));
        // A step that only decided (a slice expired) counts for decisions only.
        c.account(&step(0, 1), (1000, 100), (1010, 101), (1310, 131));
        assert_eq!(
            (c.events, c.event_instructions, c.event_cycles),
            (4, 400, 40)
        );
        assert_eq!(
            (c.decisions, c.decision_instructions, c.decision_cycles),
            (3, 700, 70)
        );
    }

    #[test]
    fn events_in_decisions_out_through_the_slots() {
        let mem: std::vec::Vec<AtomicU64> = (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect();
        let region = SharedRegion::from_words(&mem);
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, SIZE, CPU_VECTOR_BASE as u32 + 2).unwrap();
        layout.write(&region).unwrap();
        let cfg = SchedConfig {
            n_cpus: 2,
            n_threads: 4,
            policy: crate::registry::by_name("fifo").unwrap().id,
            params: [0; PARAM_WORDS],
        };
        cfg.publish(&region, &layout, 2).unwrap();
        let (mut host, mut ipu) = up(region, &layout);
        let session = ipu.session();
        let mut agent: SchedAgent<'_, 4, 16> = SchedAgent::new(&region, &layout, session).unwrap();
        let reader = SlotReader::new(&region, &layout, 2, host.session()).unwrap();

        // Both CPUs report idle; thread 1 is born runnable; one garbage entry.
        let mut evs = std::vec::Vec::new();
        for cpu in 0..2 {
            let mut e = SchedEvent::new(EventKind::CpuIdle);
            e.cpu = cpu;
            evs.push(e.encode());
        }
        let mut born = SchedEvent::new(EventKind::ThreadNew);
        born.tid = 1;
        born.seq = 1;
        born.arg = 1;
        evs.push(born.encode());
        let mut bad = born;
        bad.tid = 99;
        evs.push(bad.encode());
        assert_eq!(host.send(Channel::Sched, &evs).0, 4);

        let r = agent.step(&mut ipu, 1_000);
        assert_eq!((r.events, r.invalid), (3, 1));
        assert_eq!(r.decisions, 1);
        assert_eq!(r.ring_cpus.count_ones(), 1, "the chosen idle CPU is rung");
        let cpu = r.ring_cpus.trailing_zeros();
        let p = reader.prestaged(cpu, 0).expect("prestaged on the rung CPU");
        assert_eq!((p.tid, p.seq), (1, 1));
        assert_eq!(agent.stats().decode.bad_tid, 1);

        // The host commits it; nothing more to do.
        let mut c = SchedEvent::new(EventKind::TxnCommitted);
        c.tid = 1;
        c.cpu = cpu;
        c.txn = p.txn;
        host.send(Channel::Sched, &[c.encode()]);
        let r = agent.step(&mut ipu, 2_000);
        assert_eq!((r.events, r.decisions, r.ring_cpus), (1, 0, 0));
        assert_eq!(agent.policy().stats().txn_committed, 1);
    }

    #[test]
    fn refuses_a_session_larger_than_its_capacity() {
        let mem: std::vec::Vec<AtomicU64> = (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect();
        let region = SharedRegion::from_words(&mem);
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, SIZE, 8).unwrap();
        layout.write(&region).unwrap();
        assert!(matches!(
            SchedAgent::<'_, 4, 16>::new(&region, &layout, 1),
            Err(AgentError::Sched(SchedError::NoConfig))
        ));
        let cfg = SchedConfig {
            n_cpus: 2,
            n_threads: 100,
            policy: crate::registry::by_name("shinjuku").unwrap().id,
            params: [30_000, 0, 0, 0, 0, 0, 0, 0],
        };
        cfg.publish(&region, &layout, 1).unwrap();
        assert!(matches!(
            SchedAgent::<'_, 4, 16>::new(&region, &layout, 1),
            Err(AgentError::TooBig {
                cpus: 2,
                threads: 100
            })
        ));
        assert!(SchedAgent::<'_, 4, 128>::new(&region, &layout, 1).is_ok());
    }
}
