//! A running engine's handle for the program that owns it (the `wave-host run` service): a
//! swap inbox (policy hot-swaps asked for while the engine runs, each answered once the new
//! agent acknowledged its session), a stop flag (end the load, drain, return), and live
//! counters another thread may read at any time. Cloning shares the handle.
//!
//! The engine drains the inbox from its supervising loop next to the fixed
//! [`super::EngineConfig::policy_swaps`], one swap at a time, through the same path
//! (`failover::Supervisor::swap`: the configuration published under a new host epoch, every
//! thread re-announced from the host's truth once the agent acknowledges).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wave_abi::sched::SchedConfig;
use wave_policy::registry::PolicyChoice;

use super::failover::Supervisor;
use super::runtime::Shared;

/// How a requested swap ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The agent rebuilt with the new policy acknowledged its new session.
    Confirmed {
        /// Who acknowledged: `"ipu"`, or `"host fallback agent"` while the IPU is down.
        by: &'static str,
        /// The new link session.
        session: u32,
        /// From taking the request to the acknowledgement.
        after: Duration,
    },
    /// The swap was refused or could not be published; the old policy stays.
    Failed(String),
}

/// The answer to one [`EngineHandle::request_swap`].
pub struct SwapTicket(Receiver<SwapOutcome>);

impl SwapTicket {
    /// Waits up to `timeout` for the outcome. `Err` says why none came (timed out, or the
    /// engine ended first).
    pub fn wait(&self, timeout: Duration) -> Result<SwapOutcome, String> {
        self.0.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!(
                "no acknowledgement within {} ms (the switch may still complete)",
                timeout.as_millis()
            ),
            RecvTimeoutError::Disconnected => {
                "the scheduling workload ended before the switch was acknowledged".into()
            }
        })
    }
}

/// A swap waiting in the inbox.
pub(super) struct SwapRequest {
    pub(super) choice: PolicyChoice,
    reply: Sender<SwapOutcome>,
}

impl SwapRequest {
    /// Sends the outcome (the asker may have given up: ignored).
    pub(super) fn answer(&self, o: SwapOutcome) {
        let _ = self.reply.send(o);
    }
}

/// A swap the engine published and whose acknowledgement it waits for.
pub(super) struct PendingSwap {
    pub(super) req: SwapRequest,
    pub(super) since: Instant,
}

/// Counters the engine publishes while it runs (copied from its own every supervisor loop).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// True from the engine's start until it returned.
    pub running: bool,
    /// True once the load ended and every request completed (or the drain timed out).
    pub finished: bool,
    /// Requests the generator offered.
    pub generated: u64,
    /// Requests completed.
    pub completed: u64,
    /// Invariant violations.
    pub violations: u64,
    /// Transactions committed.
    pub committed: u64,
    /// Transactions that failed stale (also not-runnable, not-found, invalid).
    pub failed: u64,
    /// The stale ones among them.
    pub stale: u64,
    /// Transactions the agent aborted.
    pub aborted: u64,
    /// Policy swaps done (fixed and requested).
    pub swaps: u64,
    /// Failovers to the host's fallback agent.
    pub failovers: u64,
    /// True while the fallback agent schedules.
    pub in_fallback: bool,
    /// The policy in force (the last one acknowledged): its registry name ...
    pub policy: &'static str,
    /// ... and its parameters as reports show them (`fair(slice 50 µs)`).
    pub policy_params: String,
}

impl LiveCounts {
    pub(super) fn set_policy(&mut self, p: &PolicyChoice) {
        self.policy = p.info.name;
        self.policy_params = p.describe();
    }
}

#[derive(Default)]
struct Inner {
    stop: AtomicBool,
    inbox: Mutex<VecDeque<SwapRequest>>,
    live: Mutex<LiveCounts>,
    published: AtomicU64,
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct EngineHandle(Arc<Inner>);

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("stop", &self.0.stop.load(Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EngineHandle {
    /// A new handle (put a clone in [`super::EngineConfig::handle`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the running engine to switch to `choice`; the ticket gives the outcome.
    pub fn request_swap(&self, choice: PolicyChoice) -> SwapTicket {
        let (tx, rx) = channel();
        lock(&self.0.inbox).push_back(SwapRequest { choice, reply: tx });
        SwapTicket(rx)
    }

    /// Ends the load: the generator stops, queued requests drain, the engine returns.
    pub fn stop(&self) {
        self.0.stop.store(true, Release);
    }

    /// True once [`Self::stop`] was called.
    pub fn stop_requested(&self) -> bool {
        self.0.stop.load(Acquire)
    }

    /// The latest live counters.
    pub fn live(&self) -> LiveCounts {
        lock(&self.0.live).clone()
    }

    /// Times the engine published its counters (0: it never ran).
    pub fn publications(&self) -> u64 {
        self.0.published.load(Relaxed)
    }

    /// Engine: the next request, if any.
    pub(super) fn next_swap(&self) -> Option<SwapRequest> {
        lock(&self.0.inbox).pop_front()
    }

    /// Engine: answers every request still waiting (the engine is ending).
    pub(super) fn refuse_waiting(&self, why: &str) {
        for r in lock(&self.0.inbox).drain(..) {
            r.answer(SwapOutcome::Failed(why.into()));
        }
    }

    /// Engine: publishes the live counters.
    pub(super) fn publish(&self, f: impl FnOnce(&mut LiveCounts)) {
        f(&mut lock(&self.0.live));
        self.0.published.fetch_add(1, Relaxed);
    }
}

/// Engine (supervising loop, every iteration): answers the swap in flight once the agent
/// acknowledged its new session (or fails it if the route was lost meanwhile), takes the next
/// request when none is in flight, and publishes the counters.
pub(super) fn serve_inbox(
    h: &EngineHandle,
    pending: &mut Option<PendingSwap>,
    sup: &mut Supervisor<'_, '_>,
    sh: &Shared<'_>,
    base: &SchedConfig,
) {
    if let Some(p) = pending.as_ref() {
        let session = sh.locked(|f| f.session);
        if session != 0 {
            let by = if sup.in_fallback() {
                "host fallback agent"
            } else {
                "ipu"
            };
            h.publish(|l| l.set_policy(&p.req.choice));
            p.req.answer(SwapOutcome::Confirmed {
                by,
                session,
                after: p.since.elapsed(),
            });
            *pending = None;
        }
    }
    if pending.is_none() {
        if let Some(req) = h.next_swap() {
            *pending = start_swap(req, sup, base);
        }
    }
    publish(h, sup, sh);
}

/// Publishes `req`'s policy on the current route; `None` (answered) if that failed.
fn start_swap(
    req: SwapRequest,
    sup: &mut Supervisor<'_, '_>,
    base: &SchedConfig,
) -> Option<PendingSwap> {
    let p = req.choice;
    if let Err(e) = wave_policy::Params::resolve(p.info.params, &p.params) {
        req.answer(SwapOutcome::Failed(format!("policy {}: {e}", p.info.name)));
        return None;
    }
    let config = SchedConfig {
        policy: p.info.id,
        params: p.params,
        ..*base
    };
    match sup.swap(config) {
        Ok(()) => Some(PendingSwap {
            req,
            since: Instant::now(),
        }),
        Err(e) => {
            req.answer(SwapOutcome::Failed(format!(
                "the new configuration could not be published: {e}"
            )));
            None
        }
    }
}

/// Engine: copies the run's counters into the handle.
pub(super) fn publish(h: &EngineHandle, sup: &Supervisor<'_, '_>, sh: &Shared<'_>) {
    h.publish(|l| {
        sh.live_counts(l);
        l.swaps = sup.stats.swaps;
        l.failovers = sup.stats.failovers;
        l.in_fallback = sup.in_fallback();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_once_and_a_dropped_one_says_so() {
        let h = EngineHandle::new();
        let t = h.request_swap(PolicyChoice::named("fair").unwrap());
        let r = h.next_swap().unwrap();
        assert_eq!(r.choice.info.name, "fair");
        r.answer(SwapOutcome::Failed("no".into()));
        assert_eq!(
            t.wait(Duration::from_millis(10)),
            Ok(SwapOutcome::Failed("no".into()))
        );
        let t = h.request_swap(PolicyChoice::named("fifo").unwrap());
        assert!(t
            .wait(Duration::from_millis(1))
            .unwrap_err()
            .contains("no acknowledgement"));
        h.refuse_waiting("ended");
        assert_eq!(
            t.wait(Duration::from_millis(10)),
            Ok(SwapOutcome::Failed("ended".into()))
        );
        let t = h.request_swap(PolicyChoice::named("fifo").unwrap());
        drop(h.next_swap());
        assert!(t
            .wait(Duration::from_millis(10))
            .unwrap_err()
            .contains("ended before"));
    }
}
