//! The policy's vocabulary: identifiers, the events the host reports, the decisions the policy
//! emits, the sink decisions are written to, and the counters every policy keeps.
//!
//! One vocabulary: the identifiers and [`Event`] are `wave-abi`'s, re-exported here, so the
//! link's event decoder yields exactly what the policies consume. The policy still treats every
//! field as untrusted (ids out of range, unknown threads, unknown transactions, old sequence
//! numbers are counted in [`PolicyStats`] and ignored, never a panic).

pub use wave_abi::sched::{CpuId, Event, EventKind, FailReason, Seq, Tid, TxnId};

/// What the policy asks the host to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Write transaction `txn` = "run `tid` at `seq`" into `cpu`'s slot. The CPU claims it at
    /// its next scheduling point (its thread blocks, yields, is preempted or exits) or at once
    /// if idle. If `wake`, the CPU reported itself sleeping: ring its doorbell after the write.
    /// The host commits only if `tid` is still at `seq` and runnable, and reports the outcome
    /// ([`Event::TxnCommitted`] / [`Event::TxnFailed`] / [`Event::TxnAborted`]) exactly once.
    Prestage {
        cpu: CpuId,
        txn: TxnId,
        tid: Tid,
        seq: Seq,
        wake: bool,
    },
    /// Retract `txn` from `cpu`'s slot if nobody claimed it yet. The host reports
    /// [`Event::TxnAborted`] if the abort won, otherwise the claim's outcome stands.
    Abort { cpu: CpuId, txn: TxnId },
    /// Ask the thread running on `cpu` to yield at its next safe point, if it is still `tid`
    /// at `seq` (otherwise the host ignores the request). The CPU then claims its slot.
    Preempt { cpu: CpuId, tid: Tid, seq: Seq },
    /// Ring `cpu`'s doorbell: it reported sleeping while a prestaged transaction was in flight.
    Wake { cpu: CpuId },
}

/// Where decisions go. `try_push` returns `false` when full (e.g. no ring credit); the policy
/// then keeps the decision for a later poll and changes no state for it.
pub trait DecisionSink {
    /// Append one decision; `false` if there is no room.
    fn try_push(&mut self, d: Decision) -> bool;
}

impl<const N: usize> DecisionSink for heapless::Vec<Decision, N> {
    fn try_push(&mut self, d: Decision) -> bool {
        self.push(d).is_ok()
    }
}

#[cfg(any(test, feature = "std"))]
impl DecisionSink for std::vec::Vec<Decision> {
    fn try_push(&mut self, d: Decision) -> bool {
        self.push(d);
        true
    }
}

/// Counters every policy keeps. Plain integers, so the firmware can copy them into a shared
/// counters block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyStats {
    /// Events received, by [`EventKind`] (`events[kind.index()]`), valid or not.
    pub events: [u64; EventKind::COUNT],
    /// Events naming a tid `>= T` (ignored).
    pub bad_tid: u64,
    /// Events naming a cpu `>= n_cpus` (ignored).
    pub bad_cpu: u64,
    /// Thread events for a tid with no live `ThreadNew` (ignored).
    pub unknown_thread: u64,
    /// `ThreadNew` for a thread that is already live (ignored).
    pub duplicate_new: u64,
    /// Thread events whose sequence number is not newer than the latest seen (ignored).
    pub stale_events: u64,
    /// Outcomes naming a transaction that is not outstanding on that cpu (ignored).
    pub unknown_txn: u64,
    /// Events that contradict the policy's view (e.g. `CpuIdle` while a thread is believed to
    /// run there). The policy follows the host and resynchronises.
    pub inconsistent: u64,
    /// `Prestage` decisions emitted.
    pub prestages: u64,
    /// ... of which carried `wake`.
    pub prestage_wakes: u64,
    /// `Abort` decisions emitted.
    pub aborts: u64,
    /// `Preempt` decisions emitted.
    pub preempts: u64,
    /// `Wake` decisions emitted.
    pub wakes: u64,
    /// Transactions committed.
    pub txn_committed: u64,
    /// Transactions failed as `Stale`.
    pub txn_failed_stale: u64,
    /// Transactions failed as `NotRunnable`.
    pub txn_failed_not_runnable: u64,
    /// Transactions failed for another reason.
    pub txn_failed_other: u64,
    /// Aborts that won the race (`TxnAborted`).
    pub abort_won: u64,
    /// Aborts that lost the race to a claim (outcome was a commit or a failure).
    pub abort_lost: u64,
    /// Aborts issued to move a waiting prestaged thread to a hungry cpu.
    pub steals: u64,
    /// Preemptions because the time slice expired with others waiting.
    pub slice_preempts: u64,
    /// Preemptions because the running thread's affinity no longer allows its cpu.
    pub affinity_preempts: u64,
    /// Threads parked after the host said our latest view is stale (released by the next
    /// event for that thread).
    pub parked: u64,
    /// Slots left empty in a poll because no queued thread in the scan window fits the cpu.
    pub scan_misses: u64,
    /// Current length of the run queue.
    pub queue_len: u64,
    /// Largest run-queue length seen.
    pub queue_max: u64,
}

impl PolicyStats {
    /// Number of events of `kind` received.
    pub fn events_of(&self, kind: EventKind) -> u64 {
        self.events[kind.index()]
    }

    /// Total events received.
    pub fn events_total(&self) -> u64 {
        self.events.iter().sum()
    }

    /// Total invalid or ignored events.
    pub fn ignored_total(&self) -> u64 {
        self.bad_tid
            + self.bad_cpu
            + self.unknown_thread
            + self.duplicate_new
            + self.stale_events
            + self.unknown_txn
    }
}

/// A configuration the policy refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `n_cpus` must be in `1..=C` (and `C <= 64`).
    CpuCount,
    /// The time slice is outside `MIN_SLICE_NS..=MAX_SLICE_NS`.
    TimeSlice,
    /// No registered policy has this wire id.
    UnknownPolicy(u32),
    /// A parameter of the policy's block is out of range (its name), or a word the policy does
    /// not use is not 0.
    Param(&'static str),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::CpuCount => write!(f, "more cpus than the policy was built for, or none"),
            ConfigError::TimeSlice => write!(f, "time slice outside 1 µs ..= 1 s"),
            ConfigError::UnknownPolicy(id) => write!(f, "no policy has wire id {id}"),
            ConfigError::Param(name) => write!(f, "policy parameter `{name}` out of range"),
        }
    }
}
