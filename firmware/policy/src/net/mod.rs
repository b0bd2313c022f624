//! Network/RPC control-plane policy (issue 11, `docs/network.md`): how many worker cores an
//! RPC server holds, and how its receive traffic is steered across them.
//!
//! The host runs the data path (W workers, each with its own `SO_REUSEPORT` socket) and the
//! mechanism (park/unpark a worker, rewrite the 128-entry steering table). Once per interval it
//! reports one [`WorkerSample`] per worker and an [`IntervalReport`]; the [`CoreAllocator`]
//! answers with at most one [`NetDecision`] at a time, naming the table epoch it was computed
//! from. The host refuses a decision whose epoch moved (stale) and reports every outcome.
//!
//! - **Grant** (Caladan): a worker's oldest waiting request is older than
//!   [`NetParams::delay_add_us`], or a queue has not drained for [`NetParams::standing_checks`]
//!   consecutive checks → unpark one worker.
//! - **Revoke** (Arachne): the busy time of the active workers fits in one worker fewer with a
//!   hysteresis margin, for [`NetParams::revoke_after`] consecutive intervals, and no grant in
//!   the last [`NetParams::grant_hold`] intervals → park one worker.
//! - **Rebalance**: a worker whose queueing delay is far above the others' gets half its table
//!   share; shares go back to equal once no worker is slow.
//!
//! ```
//! use wave_policy::net::{CoreAllocator, IntervalReport, NetDecisionKind, NetParams, WorkerSample};
//! let mut a = CoreAllocator::new(4, NetParams::default()).unwrap();
//! for w in 0..4u8 {
//!     let mut s = WorkerSample::idle(w, w == 0, 1_000_000);
//!     if w == 0 { s.queued = 9; s.oldest_age_us = 50_000; }
//!     a.on_sample(s, 1);
//! }
//! let d = a.on_interval(IntervalReport { interval: 1, table_epoch: 7, interval_ns: 1_000_000 });
//! let d = d.unwrap();
//! assert_eq!((d.kind, d.worker, d.table_epoch), (NetDecisionKind::Grant, 1, 7));
//! ```
//!
//! Everything the host reports is untrusted: out-of-range workers, samples for another
//! interval, impossible busy times and outcomes for unknown transactions are counted in
//! [`NetStats`] and ignored, never a panic.

mod alloc;
pub mod service;
#[cfg(test)]
mod tests;

pub use alloc::{CoreAllocator, NetParamsError};
pub use service::NetService;
pub use wave_abi::net::{
    IntervalReport, NetConfig, NetDecision, NetDecisionKind, NetOutcome, NetParams, OutcomeKind,
    WorkerSample, MAX_WORKERS,
};

/// Policy counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Intervals decided on.
    pub intervals: u64,
    /// Decisions emitted, by kind.
    pub grants: u64,
    /// See [`NetStats::grants`].
    pub revokes: u64,
    /// See [`NetStats::grants`].
    pub rebalances: u64,
    /// Outcomes: committed.
    pub committed: u64,
    /// Outcomes: refused as stale (the table epoch had moved).
    pub stale: u64,
    /// Outcomes: refused as invalid by the host.
    pub refused: u64,
    /// Hostile or inconsistent telemetry counted and ignored (bad worker, impossible times,
    /// interval reports with missing samples, outcomes for unknown transactions).
    pub hostile: u64,
    /// Outstanding decisions given up after [`NetParams::outcome_timeout`] intervals.
    pub lost: u64,
}
