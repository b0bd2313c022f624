//! The service's scheduling workload (`[sched] workload_rate` above 0): the scheduling engine
//! ([`crate::engine::run_ipu`]) as the host's end of the link, its host worker threads
//! scheduled by the IPU, an emulated request-serving workload standing in for the host's own
//! threads. It owns the engine's handle: the control socket's `policy set` goes through it (a
//! hot-swap the agent acknowledges), SIGTERM stops the load through it (drain, then STOPPED),
//! and the stats sampler reads its live counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wave_abi::Side;
use wave_policy::registry::PolicyChoice;

use super::{log, Config};
use crate::engine::{self, EngineConfig, EngineHandle, LiveCounts, SwapOutcome};
use crate::ivshmem::IvshmemServer;
use crate::link::Link;

/// How long a `policy set` waits for the agent's acknowledgement.
pub const SWAP_WAIT: Duration = Duration::from_secs(10);

/// A configured workload and the handle of its engine.
pub struct Workload {
    engine: EngineConfig,
    handle: EngineHandle,
}

impl Workload {
    /// The workload `cfg` configures, if any.
    pub fn new(cfg: &Config) -> Option<Self> {
        let handle = EngineHandle::new();
        let engine = EngineConfig {
            handle: Some(handle.clone()),
            ..cfg.sched_workload()?
        };
        Some(Workload { engine, handle })
    }

    /// Ends the load (the engine drains and returns).
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// The live counters (before the engine's first start: the configured policy, not running).
    pub fn live(&self) -> LiveCounts {
        if self.handle.publications() > 0 {
            return self.handle.live();
        }
        LiveCounts {
            policy: self.engine.policy.info.name,
            policy_params: self.engine.policy.describe(),
            ..LiveCounts::default()
        }
    }

    /// Runs the engine against the IPU once one is connected, until the load ends or `stop`.
    /// Returns the transport generation the engine used (`None`: it never ran). On `stop`, the
    /// host side is left STOPPED and the IPU rung. `prepare` runs before each start (the
    /// lanes' state on a new connection).
    pub fn run(
        &self,
        server: &IvshmemServer,
        stop: &AtomicBool,
        prepare: &dyn Fn(),
    ) -> Option<u64> {
        let mut cfg = self.engine.clone();
        let mut failed_gen = None;
        while !stop.load(Ordering::Acquire) {
            let gen = server.generation();
            if !server.peer_present() || failed_gen == Some(gen) {
                let _ = server.service(Duration::from_millis(50));
                continue;
            }
            if cfg.work.is_none() {
                let w = engine::calibrate(&cfg);
                log(format_args!("workload: {}", engine::describe_work(&w)));
                cfg.work = Some(w);
            }
            announce(&cfg);
            prepare();
            match engine::run_ipu(server, &cfg) {
                Ok(r) => {
                    log(format_args!(
                        "the scheduling workload ended: {} of {} requests completed, {} invariant \
                         violations, {} policy swaps, {} failovers; policy {}",
                        r.completed,
                        r.offered,
                        r.invariant_violations,
                        r.policy_swaps,
                        r.failovers,
                        self.handle.live().policy_params
                    ));
                    if stop.load(Ordering::Acquire) {
                        let _ = crate::link::stop_side(server, Side::Host);
                        log(format_args!("published STOPPED to the IPU"));
                    }
                    return Some(server.generation());
                }
                Err(e) => {
                    log(format_args!(
                        "the scheduling workload could not run: {e}; waiting for a new IPU"
                    ));
                    failed_gen = Some(gen);
                }
            }
        }
        None
    }

    /// The answer to `policy set NAME PARAMS`.
    pub fn set_policy(&self, name: &str, params: &[String]) -> String {
        let choice = match PolicyChoice::from_cli(name, None, params) {
            Ok(c) => c,
            Err(e) => return format!("error: {}\n", e.replace("--param ", "parameter ")),
        };
        let live = self.handle.live();
        if !live.running {
            let why = if live.finished {
                "has ended"
            } else {
                "has not started yet (no IPU has come up)"
            };
            return format!("error: the scheduling workload {why}; a switch needs it running\n");
        }
        let to = choice.describe();
        match self.handle.request_swap(choice).wait(SWAP_WAIT) {
            Ok(SwapOutcome::Confirmed { by, session, after }) => format!(
                "confirmed: policy {to}, acknowledged by the {by} (session {session:#010x}) \
                 after {} ms\n",
                after.as_millis()
            ),
            Ok(SwapOutcome::Failed(e)) => format!("error: the switch to {to} failed: {e}\n"),
            Err(e) => format!("error: the switch to {to}: {e}\n"),
        }
    }

    /// The answer to `policy show`.
    pub fn show(&self) -> String {
        format!("{}\n", crate::stats::render::workload_line(&self.live()))
    }
}

/// Logs the start of a workload run.
fn announce(cfg: &EngineConfig) {
    log(format_args!(
        "IPU connected: the scheduling workload starts (policy {}, {} requests/s, {} host CPUs, \
         {} handler threads, {})",
        cfg.policy.describe(),
        cfg.rate,
        cfg.cpus,
        cfg.handlers,
        match cfg.duration.as_secs() {
            s if s as f64 >= engine::MAX_DURATION_S => "until stopped".to_string(),
            s => format!("{s} s"),
        }
    ));
}

/// The answer to a policy request when no workload is configured.
pub fn no_workload() -> String {
    "error: no scheduling workload runs in this host shim; set [sched] workload_rate above 0 \
     in its configuration (docs/operations.md) and restart it\n"
        .into()
}
