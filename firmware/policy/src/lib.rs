//! `wave-policy`: OS policies as pure, portable `no_std` logic.
//!
//! Policies have no hardware access; the firmware, the host shim's on-host mode and the
//! simulator (`wave-sim`) all link the same code. No allocation: capacities are const parameters.
//!
//! The agent runtime ([`runtime`]) runs services over one side's endpoint through a narrow
//! port (notify, wait with a timeout, a clock): the same loop on the IPU, in a host thread and
//! under virtual time. Services: [`echo`] (link test), [`sched_service`] (the scheduling
//! agent of [`agent`]) and [`mem_service`] (the memory policy of [`mem`]).
//!
//! # Scheduling (ghOSt semantics over PCIe, DESIGN.md §6)
//! The host is authoritative. It reports [`Event`]s (thread state changes carrying the thread's
//! new sequence number, outcomes of transactions, cpus going to sleep); the policy answers with
//! [`Decision`]s: prestaged transactions ("run T at sequence S on cpu C", one outstanding per
//! cpu), aborts of prestaged transactions, preemption requests and doorbells.
//!
//! # Policies as plug-ins
//! [`SchedCore`] keeps the ghOSt bookkeeping; a [`Discipline`] decides the order (FIFO,
//! Shinjuku, weighted fair). [`registry`] is the one list of policies (wire id, name,
//! parameters, constructor). A new policy is one file and one registry line (`docs/engine.md`).
//!
//! An agent loop drives a [`Policy`] like this:
//! ```
//! use wave_policy::{CentralizedFifo, Decision, Event, Policy, Seq, Tid};
//! let mut policy = CentralizedFifo::<4, 64>::new(4).unwrap();
//! let mut batch: heapless::Vec<Decision, 64> = heapless::Vec::new();
//! # let now = 0;
//! // for each event drained from the event ring (copied out and decoded):
//! policy.on_event(Event::ThreadNew { tid: Tid(7), seq: Seq(1), runnable: true }, now);
//! // then once per batch of events (and whenever `next_deadline` passes):
//! policy.poll(now, &mut batch);
//! assert!(matches!(batch[0], Decision::Prestage { tid: Tid(7), wake: true, .. }));
//! // write `batch` into the decision ring / per-cpu slots, ring doorbells where `wake`.
//! ```
//!
//! What the host must report (the contract the tests and the simulator check):
//! - every thread state change, with the sequence number it bumped to; a thread's first event
//!   is `ThreadNew`; events from one host cpu in the order they happened;
//! - exactly one outcome per prestaged transaction: `TxnCommitted` (claimed, seq matched, thread
//!   runnable), `TxnFailed` (claimed but refused) or `TxnAborted` (abort arrived first);
//! - `CpuIdle` when a cpu has nothing to run and an empty slot and goes to sleep; a sleeping
//!   cpu looks at its slot only when its doorbell rings.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]

pub mod agent;
pub mod cpuset;
pub mod discipline;
pub mod echo;
pub mod fair;
pub mod fifo;
pub mod mem;
pub mod mem_service;
pub mod net;
pub mod registry;
pub mod runtime;
pub mod sched;
pub mod sched_service;
pub mod shinjuku;
pub mod types;

/// Helpers the unit tests share.
#[cfg(test)]
pub(crate) mod test_link {
    use wave_abi::layout::{Layout, Side};
    use wave_abi::{Endpoint, SharedRegion};

    /// A host and an IPU endpoint on `region`, polled until the link is up.
    pub(crate) fn up<'a>(
        region: SharedRegion<'a>,
        layout: &Layout,
    ) -> (Endpoint<'a>, Endpoint<'a>) {
        let mut host = Endpoint::new(region, layout, Side::Host, 2).unwrap();
        let mut ipu = Endpoint::new(region, layout, Side::Ipu, 1).unwrap();
        for _ in 0..8 {
            host.poll_link();
            ipu.poll_link();
        }
        assert!(host.is_up() && ipu.is_up());
        (host, ipu)
    }
}

pub use crate::discipline::{Discipline, Param, Params, Plugin};
pub use crate::fair::{Fair, FairQueue};
pub use crate::fifo::{CentralizedFifo, Fifo, FifoConfig};
pub use crate::registry::{AnyPolicy, PolicyChoice, PolicyInfo, POLICIES};
pub use crate::sched::{BusyOrder, SchedCore, MAX_SLICE_NS, MIN_SLICE_NS};
pub use crate::shinjuku::{Shinjuku, ShinjukuConfig, ShinjukuQueue};
pub use crate::types::{
    ConfigError, CpuId, Decision, DecisionSink, Event, EventKind, FailReason, PolicyStats, Seq,
    Tid, TxnId,
};

/// Default cpu capacity (affinity masks are `u64`, so this is also the maximum).
pub const MAX_CPUS: usize = 64;
/// Default thread capacity.
pub const MAX_THREADS: usize = 1024;

/// A scheduling policy: events in, decisions out. Object safe, so an agent can hold a
/// `&mut dyn Policy` chosen at run time.
pub trait Policy {
    /// Short name for logs and reports.
    fn name(&self) -> &'static str;
    /// Apply one event drained from the event ring at time `now_ns` (the caller's clock).
    fn on_event(&mut self, ev: Event, now_ns: u64);
    /// Emit the decisions due at `now_ns` into `out` (bounded work, O(n_cpus) decisions at
    /// most). Decisions `out` refuses stay due for the next poll. Returns how many were
    /// emitted.
    fn poll(&mut self, now_ns: u64, out: &mut dyn DecisionSink) -> usize;
    /// The earliest future time a poll could act without a new event (slice expiry, steal
    /// threshold), for agents that sleep between events; `None` if only events matter.
    fn next_deadline(&self, now_ns: u64) -> Option<u64>;
    /// Counters.
    fn stats(&self) -> &PolicyStats;
    /// Internal consistency check (O(cpus + threads)), for tests and debug builds.
    fn check_invariants(&self) -> Result<(), &'static str>;
}

#[cfg(test)]
mod tests;
