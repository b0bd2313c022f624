//! The on-host agent (`--agent host`): `wave_policy::agent::SchedAgent` — the same loop and
//! policy code the IPU firmware runs — in a dedicated host thread over the IPU end of an
//! in-process link. It polls while there is work, announces sleep and waits on its vector
//! (with the policy's next deadline as timeout, at most 1 ms) when idle, rings host CPU
//! doorbells as the agent asks, and reports its own thread CPU time: the host CPU time the
//! policy costs when it is not offloaded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::Duration;

use wave_abi::layout::{VECTOR_CONTROL, VECTOR_SCHED};
use wave_abi::sched::{SlotReader, CPU_VECTOR_BASE};
use wave_abi::{Endpoint, Layout, Side};
use wave_policy::agent::SchedAgent;

use super::Clock;
use crate::link::Link;
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
    let bells = ipu.doorbells().ok_or("no doorbells")?;
    let mut ep =
        Endpoint::new(region, &layout, Side::Ipu, ipu.epoch()).map_err(|e| format!("{e:?}"))?;
    let mask = 1u32 << VECTOR_CONTROL | 1 << VECTOR_SCHED;
    while ep.poll_link().state.is_err() {
        if stop.load(Acquire) {
            return Err("stopped before the link came up".into());
        }
        let _ = bells.wait(mask, Duration::from_millis(1));
    }
    let mut agent: SchedAgent<'_> =
        SchedAgent::new(&region, &layout, ep.session()).map_err(|e| e.to_string())?;
    let n_cpus = agent.config().n_cpus;
    let reader =
        SlotReader::new(&region, &layout, n_cpus, ep.session()).map_err(|e| e.to_string())?;
    let mut last_gen = vec![0u64; n_cpus as usize];
    let mut last_preempts = 0u64;
    let mut idle = 0u32;
    let mut last_tick = clock.now_ns();
    let mut sleeps = 0u64;
    while !stop.load(Acquire) {
        ep.poll_link();
        let now = clock.now_ns();
        let r = agent.step(&mut ep, now);
        let mut rc = r.ring_cpus;
        while rc != 0 {
            let c = rc.trailing_zeros();
            rc &= rc - 1;
            let _ = bells.notify(CPU_VECTOR_BASE + c as u16);
        }
        let st = agent.stats();
        if st.preempts != last_preempts {
            last_preempts = st.preempts;
            let t = clock.now_ns();
            for cpu in 0..n_cpus {
                if let Some(req) = reader.preempt(cpu, last_gen[cpu as usize]) {
                    last_gen[cpu as usize] = req.generation;
                    view.note_written(cpu, req.generation, t);
                }
            }
        }
        if now - last_tick > 10_000_000 {
            last_tick = now;
            ep.tick(st.decode.invalid(), st.prestages);
        }
        if r.events + r.invalid + r.decisions > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < 64 {
            std::hint::spin_loop();
            continue;
        }
        let now = clock.now_ns();
        let timeout = agent
            .next_deadline(now)
            .map_or(1_000_000, |d| d.saturating_sub(now))
            .min(1_000_000);
        if timeout < 5_000 {
            continue;
        }
        ep.begin_sleep();
        if ep.has_work() {
            ep.end_sleep();
            continue;
        }
        sleeps += 1;
        let _ = bells.wait(mask, Duration::from_nanos(timeout));
        ep.end_sleep();
    }
    let st = agent.stats();
    let ps = *agent.policy().stats();
    let inv = agent.policy().check_invariants();
    Ok(AgentReport {
        cpu_ns: super::thread_cpu_ns().saturating_sub(cpu0),
        summary: format!(
            "policy {}: events {} (invalid {}), prestages {}, aborts {}, preempts {}, doorbells {}, sleeps {}, committed {}, stale {}, steals {}, slice preempts {}, queue max {}, policy invariants {}",
            agent.policy().name(),
            st.decode.ok,
            st.decode.invalid(),
            st.prestages,
            st.aborts,
            st.preempts,
            st.doorbells,
            sleeps,
            ps.txn_committed,
            ps.txn_failed_stale,
            ps.steals,
            ps.slice_preempts,
            ps.queue_max,
            match inv {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("VIOLATED: {e}"),
            }
        ),
    })
}
