//! The policy's vocabulary: identifiers, the events the host reports, the decisions the policy
//! emits, the sink decisions are written to, and the counters every policy keeps.
//!
//! These types are the *decoded* form: the link layer (`wave-abi`) copies entries out of shared
//! memory and maps them onto [`Event`]; the policy still treats every field as untrusted (ids
//! out of range, unknown threads, unknown transactions, old sequence numbers are counted in
//! [`PolicyStats`] and ignored, never a panic).

/// A host thread id. The policy maps it directly to a slot index, so the host must allocate
/// ids densely in `0..T` (the policy's thread capacity); larger ids are rejected and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid(pub u32);

/// A host CPU index in `0..n_cpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(pub u32);

/// A transaction id. The policy allocates them unique and strictly increasing from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub u64);

/// A thread's sequence number (ghOSt's status-word `barrier`). The host bumps it at every state
/// change of the thread. It is a wrapping `u32` compared with serial-number arithmetic
/// (RFC 1982), so a wrap after 2^32 changes is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seq(pub u32);

impl Seq {
    /// `true` if `self` is strictly newer than `other` (within half the number space).
    #[inline]
    pub fn is_newer_than(self, other: Seq) -> bool {
        (self.0.wrapping_sub(other.0) as i32) > 0
    }

    /// The next sequence number (what the host writes at a state change).
    #[inline]
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.wrapping_add(1))
    }
}

/// Why the host refused to commit a prestaged transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The thread's sequence number moved on since the decision (the agent has not yet seen
    /// the newer event, or has and it is in flight).
    Stale,
    /// The sequence number matched but the thread was not runnable (running, blocked, dead).
    NotRunnable,
    /// No such thread on the host.
    NotFound,
    /// Anything else the host rejects (CPU not allowed by affinity, CPU offline, malformed).
    Invalid,
}

/// What the host reports. Thread events carry the thread's new sequence number; transaction
/// outcomes carry the transaction id the policy chose. `cpu` fields name the CPU the thread
/// was running on (stop events) or the CPU that owns the transaction slot (outcomes).
///
/// Ordering the policy relies on for precision (it stays safe without it, because the host
/// checks every commit): events from one host CPU arrive in the order they happened, and a
/// thread's first event is its `ThreadNew`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A thread joined the scheduler (runnable or blocked). Also revives a tid after `Dead`.
    ThreadNew { tid: Tid, seq: Seq, runnable: bool },
    /// A blocked thread became runnable.
    Wakeup { tid: Tid, seq: Seq },
    /// The thread running on `cpu` blocked.
    Blocked { tid: Tid, seq: Seq, cpu: CpuId },
    /// The thread running on `cpu` yielded (it stays runnable).
    Yield { tid: Tid, seq: Seq, cpu: CpuId },
    /// The thread running on `cpu` was preempted (it stays runnable).
    Preempted { tid: Tid, seq: Seq, cpu: CpuId },
    /// The thread exited; `cpu` is where it was running, if it was.
    Dead {
        tid: Tid,
        seq: Seq,
        cpu: Option<CpuId>,
    },
    /// The thread's CPU affinity changed (bit `c` = may run on CPU `c`). Run state unchanged.
    Affinity { tid: Tid, seq: Seq, mask: u64 },
    /// `cpu` claimed transaction `txn` and now runs `tid` (at the transaction's sequence).
    TxnCommitted { txn: TxnId, tid: Tid, cpu: CpuId },
    /// `cpu` tried to claim `txn` and the host refused it.
    TxnFailed {
        txn: TxnId,
        tid: Tid,
        cpu: CpuId,
        reason: FailReason,
    },
    /// The host retracted `txn` from `cpu`'s slot before any claim (the abort won the race).
    TxnAborted { txn: TxnId, cpu: CpuId },
    /// `cpu` has nothing to run and an empty slot: it is going to sleep until a doorbell.
    CpuIdle { cpu: CpuId },
}

/// The event kinds, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    ThreadNew,
    Wakeup,
    Blocked,
    Yield,
    Preempted,
    Dead,
    Affinity,
    TxnCommitted,
    TxnFailed,
    TxnAborted,
    CpuIdle,
}

impl EventKind {
    /// Number of kinds (length of [`PolicyStats::events`]).
    pub const COUNT: usize = 11;
}

impl Event {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ThreadNew { .. } => EventKind::ThreadNew,
            Event::Wakeup { .. } => EventKind::Wakeup,
            Event::Blocked { .. } => EventKind::Blocked,
            Event::Yield { .. } => EventKind::Yield,
            Event::Preempted { .. } => EventKind::Preempted,
            Event::Dead { .. } => EventKind::Dead,
            Event::Affinity { .. } => EventKind::Affinity,
            Event::TxnCommitted { .. } => EventKind::TxnCommitted,
            Event::TxnFailed { .. } => EventKind::TxnFailed,
            Event::TxnAborted { .. } => EventKind::TxnAborted,
            Event::CpuIdle { .. } => EventKind::CpuIdle,
        }
    }
}

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
    /// Events received, by [`EventKind`] (`events[kind as usize]`), valid or not.
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
        self.events[kind as usize]
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
}
