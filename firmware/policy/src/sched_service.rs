//! The scheduling service: wraps [`SchedAgent`] for the agent runtime. It builds the agent
//! when the link is up and the host has published this session's configuration, rebuilds it
//! when the session or the configuration changes (a restarted host starts from scratch: its
//! threads and transactions are gone), and turns the agent's "wake CPU c" bits into host
//! doorbell vectors.

use wave_abi::sched::{SchedError, CPU_VECTOR_BASE};
use wave_abi::{Channel, Endpoint, Layout, SharedRegion};

use crate::agent::{AgentError, SchedAgent, StepResult, EVENTS_PER_STEP};
use crate::runtime::{Log, Service, Step};
use crate::{MAX_CPUS, MAX_THREADS};

/// Totals over every session the service served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedTotals {
    /// Valid events applied.
    pub events: u64,
    /// Invalid events counted and skipped (also those drained while refusing a session).
    pub invalid: u64,
    /// Decisions written.
    pub decisions: u64,
    /// Sessions (agents built).
    pub sessions: u64,
}

/// The scheduling agent as a runtime service.
pub struct SchedService<'a, const C: usize = MAX_CPUS, const T: usize = MAX_THREADS> {
    region: SharedRegion<'a>,
    layout: Layout,
    agent: Option<SchedAgent<'a, C, T>>,
    refused: Option<AgentError>,
    totals: SchedTotals,
    /// Given to every agent built (cost accounting, `agent::Meter`).
    meter: Option<crate::agent::Meter>,
}

/// The reason code a refused scheduling configuration is reported with (`docs/abi.md` §5,
/// state 6): 1 no scheduling blocks, 2 `n_cpus`, 3 `n_threads`, 4 policy id, 5 a policy
/// parameter, 6 more CPUs or threads than this agent holds, 7 a block outside the region.
pub fn refusal_code(e: &AgentError) -> u32 {
    use crate::types::ConfigError as C;
    match e {
        AgentError::Sched(SchedError::NotInLayout | SchedError::NoConfig) => 1,
        AgentError::Sched(SchedError::BadConfig("n_cpus")) | AgentError::Policy(C::CpuCount) => 2,
        AgentError::Sched(SchedError::BadConfig("n_threads")) => 3,
        AgentError::Sched(SchedError::BadConfig(_)) | AgentError::Policy(C::UnknownPolicy(_)) => 4,
        AgentError::Policy(C::TimeSlice | C::Param(_)) => 5,
        AgentError::TooBig { .. } => 6,
        AgentError::Sched(SchedError::Region) => 7,
    }
}

/// Host doorbell vectors for the CPUs set in `cpus` (bit c: vector `CPU_VECTOR_BASE + c`).
pub fn cpu_vectors(mut cpus: u64) -> u64 {
    let mut vectors = 0u64;
    while cpus != 0 {
        let c = cpus.trailing_zeros() as u64;
        cpus &= cpus - 1;
        let v = CPU_VECTOR_BASE as u64 + c;
        if v < 64 {
            vectors |= 1 << v;
        }
    }
    vectors
}

impl<'a, const C: usize, const T: usize> SchedService<'a, C, T> {
    /// A service over `region` laid out as `layout`; the agent is built once a session is up.
    pub fn new(region: SharedRegion<'a>, layout: Layout) -> Self {
        SchedService {
            region,
            layout,
            agent: None,
            refused: None,
            totals: SchedTotals::default(),
            meter: None,
        }
    }

    /// Counts every agent's own cost with `meter` (the firmware's PMU); see `agent::Cost`.
    pub fn set_meter(&mut self, meter: Option<crate::agent::Meter>) {
        self.meter = meter;
        if let Some(a) = self.agent.as_mut() {
            a.set_meter(meter);
        }
    }

    /// The agent of the current session, if one is built.
    pub fn agent(&self) -> Option<&SchedAgent<'a, C, T>> {
        self.agent.as_ref()
    }

    /// Totals over all sessions.
    pub fn totals(&self) -> SchedTotals {
        self.totals
    }

    /// Makes sure the agent matches the link session and the host's configuration. Returns
    /// the work done draining a refused session's events, or `None` when the agent is ready.
    fn ensure_agent(&mut self, ep: &mut Endpoint<'a>, log: &mut dyn Log) -> Option<usize> {
        let session = ep.session();
        let host = ep.peer_epoch() as u64;
        if self
            .agent
            .as_ref()
            .is_some_and(|a| a.session() != session || a.generation() != host)
        {
            self.agent = None;
        }
        if self.agent.is_some() {
            return None;
        }
        match SchedAgent::new(&self.region, &self.layout, session) {
            // Still the previous host's configuration: wait for this host's.
            Ok(a) if a.generation() != host => Some(0),
            Ok(mut a) => {
                a.set_meter(self.meter);
                log.log(format_args!(
                    "sched: session {session:#010x}: {} policy, {} host CPUs, {} threads",
                    a.policy().name(),
                    a.config().n_cpus,
                    a.config().n_threads
                ));
                self.agent = Some(a);
                self.refused = None;
                self.totals.sessions += 1;
                None
            }
            Err(AgentError::Sched(SchedError::NoConfig)) => Some(0),
            Err(e) => {
                if self.refused != Some(e) {
                    log.log(format_args!(
                        "sched: refusing the host's configuration ({e}): reason {}, ending the run",
                        refusal_code(&e)
                    ));
                    self.refused = Some(e);
                    // docs/abi.md §7: reported in the status block, and the run ends.
                    ep.refuse(
                        wave_abi::Down::PeerInvalid,
                        Channel::Sched,
                        refusal_code(&e),
                    );
                }
                Some(self.drain(ep))
            }
        }
    }

    /// Drains (and counts) events of a refused session so the host is not blocked by a full
    /// ring. Bounded: a host that keeps producing cannot keep one step busy.
    fn drain(&mut self, ep: &mut Endpoint<'a>) -> usize {
        let mut n = 0;
        for _ in 0..EVENTS_PER_STEP {
            if ep.rx(Channel::Sched).poll().is_none() {
                break;
            }
            n += 1;
            self.totals.invalid += 1;
        }
        n
    }

    /// One step of the agent; the raw result (for callers that watch the agent's decisions).
    pub fn step_agent(
        &mut self,
        ep: &mut Endpoint<'a>,
        now_ns: u64,
        log: &mut dyn Log,
    ) -> StepResult {
        if !ep.is_up() {
            return StepResult::default();
        }
        if let Some(drained) = self.ensure_agent(ep, log) {
            return StepResult {
                invalid: drained,
                ..StepResult::default()
            };
        }
        let Some(agent) = self.agent.as_mut() else {
            return StepResult::default();
        };
        let r = agent.step(ep, now_ns);
        self.totals.events += r.events as u64;
        self.totals.invalid += r.invalid as u64;
        self.totals.decisions += r.decisions as u64;
        r
    }
}

impl<'a, const C: usize, const T: usize> Service<'a> for SchedService<'a, C, T> {
    fn name(&self) -> &'static str {
        "sched"
    }
    fn channel(&self) -> Channel {
        Channel::Sched
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, now_ns: u64, log: &mut dyn Log) -> Step {
        let r = self.step_agent(ep, now_ns, log);
        Step {
            work: r.events + r.invalid + r.decisions,
            doorbells: cpu_vectors(r.ring_cpus),
        }
    }
    fn counters(&self) -> (u64, u64) {
        (self.totals.invalid, self.totals.decisions)
    }
    fn finished(&self) -> bool {
        self.refused.is_some()
    }
    fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        self.agent.as_ref().and_then(|a| a.next_deadline(now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bits_become_host_vectors() {
        let base = CPU_VECTOR_BASE as u64;
        assert_eq!(cpu_vectors(0), 0);
        assert_eq!(cpu_vectors(0b101), 1 << base | 1 << (base + 2));
        // CPUs whose vector would not fit in 64 are dropped, never wrapped.
        assert_eq!(cpu_vectors(1 << 63), 0);
    }
}
