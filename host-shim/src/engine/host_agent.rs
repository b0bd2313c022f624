//! The on-host agent (`--agent host`): the scheduling service (`wave_policy::sched_service`)
//! under the agent runtime (`wave_policy::runtime`) — the same service, loop and policy code
//! the IPU firmware runs — in a dedicated host thread over the IPU end of an in-process link,
//! through a [`HostPort`]. It reports its own thread CPU time: the host CPU time the policy
//! costs when it is not offloaded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use wave_abi::sched::SlotReader;
use wave_abi::{Channel, Endpoint, Layout, SharedRegion, Side};
use wave_policy::agent::SchedAgent;
use wave_policy::runtime::{self, Log, RuntimeStats, Service, Step, Tuning};
use wave_policy::sched_service::SchedService;

use super::Clock;
use crate::link::{HostPort, Link};
use crate::local::LocalLink;

/// What the host sees of the in-process agent: when it wrote each CPU's latest preempt
/// request (so the engine can time request → yield on one clock).
pub(super) struct AgentShared {
    written_gen: Vec<AtomicU64>,
    written_ns: Vec<AtomicU64>,
    seen_gen: Vec<AtomicU64>,
}

impl AgentShared {
    pub(super) fn new(cpus: u32) -> Self {
        let v = || (0..cpus).map(|_| AtomicU64::new(0)).collect();
        AgentShared {
            written_gen: v(),
            written_ns: v(),
            seen_gen: v(),
        }
    }

    /// A safe point on `cpu` saw preempt generation `g`.
    pub(super) fn note_seen(&self, cpu: u32, g: u64) {
        self.seen_gen[cpu as usize].store(g, Relaxed);
    }

    fn note_written(&self, cpu: u32, g: u64, ns: u64) {
        self.written_ns[cpu as usize].store(ns, Relaxed);
        self.written_gen[cpu as usize].store(g, Release);
    }

    /// When the request the CPU last saw was written, if the agent thread observed it.
    pub(super) fn written_ns(&self, cpu: u32) -> Option<u64> {
        let c = cpu as usize;
        let g = self.written_gen[c].load(Acquire);
        (g != 0 && g == self.seen_gen[c].load(Relaxed)).then(|| self.written_ns[c].load(Relaxed))
    }
}

/// The agent thread's report.
pub(super) struct AgentReport {
    pub(super) cpu_ns: u64,
    pub(super) summary: String,
}

/// The scheduling service plus what the engine watches: after every step, the time each
/// CPU's newest preempt request was written (to time request → yield on the engine's clock).
struct Observed<'a, 'v> {
    inner: SchedService<'a>,
    region: SharedRegion<'a>,
    layout: Layout,
    view: &'v AgentShared,
    clock: Clock,
    reader: Option<(u32, SlotReader<'a>)>,
    last_gen: Vec<u64>,
    last_preempts: u64,
}

impl<'a> Observed<'a, '_> {
    fn observe(&mut self) {
        let Some(agent) = self.inner.agent() else {
            return;
        };
        let preempts = agent.stats().preempts;
        if preempts == self.last_preempts {
            return;
        }
        self.last_preempts = preempts;
        let n = agent.config().n_cpus;
        let session = agent.session();
        if self.reader.as_ref().is_none_or(|(s, _)| *s != session) {
            self.reader = SlotReader::new(&self.region, &self.layout, n, session)
                .ok()
                .map(|r| (session, r));
            self.last_gen = vec![0; n as usize];
        }
        let Some((_, reader)) = &self.reader else {
            return;
        };
        let t = self.clock.now_ns();
        for cpu in 0..n {
            if let Some(req) = reader.preempt(cpu, self.last_gen[cpu as usize]) {
                self.last_gen[cpu as usize] = req.generation;
                self.view.note_written(cpu, req.generation, t);
            }
        }
    }
}

impl<'a> Service<'a> for Observed<'a, '_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn channel(&self) -> Channel {
        self.inner.channel()
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, now_ns: u64, log: &mut dyn Log) -> Step {
        let r = self.inner.step(ep, now_ns, log);
        self.observe();
        r
    }
    fn counters(&self) -> (u64, u64) {
        self.inner.counters()
    }
    fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        self.inner.deadline_ns(now_ns)
    }
}

/// Runs the scheduling service under the agent runtime (the same loop the IPU runs) over the
/// IPU end of `ipu` until `stop` is set.
pub(super) fn run(
    ipu: &LocalLink,
    stop: &AtomicBool,
    view: &AgentShared,
    clock: Clock,
) -> Result<AgentReport, String> {
    super::fine_timer_slack();
    // A dedicated core when the machine has one the host CPUs do not use.
    let n = super::cores();
    let used = view.written_gen.len();
    if used < n {
        super::pin_to(&(used..n).collect::<Vec<_>>());
    }
    let cpu0 = super::thread_cpu_ns();
    let region = ipu.region();
    let layout = Layout::read(&region).map_err(|e| e.to_string())?;
    let mut ep =
        Endpoint::new(region, &layout, Side::Ipu, ipu.epoch()).map_err(|e| format!("{e:?}"))?;
    let mut svc = Observed {
        inner: SchedService::new(region, layout),
        region,
        layout,
        view,
        clock,
        reader: None,
        last_gen: Vec::new(),
        last_preempts: 0,
    };
    let mut port = HostPort::new(ipu, clock.0, stop);
    let (_, rt) = runtime::run(&mut ep, &mut port, &Tuning::HOST, &mut [&mut svc]);
    let agent = svc
        .inner
        .agent()
        .ok_or("the agent never started (no session configuration)")?;
    Ok(AgentReport {
        cpu_ns: super::thread_cpu_ns().saturating_sub(cpu0),
        summary: summary(agent, &rt),
    })
}

fn summary(agent: &SchedAgent<'_>, rt: &RuntimeStats) -> String {
    let st = agent.stats();
    let ps = *agent.policy().stats();
    let inv = agent.policy().check_invariants();
    format!(
        "policy {}: events {} (invalid {}), prestages {}, aborts {}, preempts {}, doorbells {}, sleeps {}, committed {}, stale {}, steals {}, slice preempts {}, queue max {}, policy invariants {}",
        agent.policy().name(),
        st.decode.ok,
        st.decode.invalid(),
        st.prestages,
        st.aborts,
        st.preempts,
        st.doorbells,
        rt.sleeps,
        ps.txn_committed,
        ps.txn_failed_stale,
        ps.steals,
        ps.slice_preempts,
        ps.queue_max,
        match inv {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("VIOLATED: {e}"),
        }
    )
}
