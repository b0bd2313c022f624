//! Scheduling over the link (ABI 1.2, `docs/abi.md` §8 "Scheduling"): the session
//! configuration the host publishes, the event messages the host sends on `RingEvents`, and
//! the per-CPU transaction slots the IPU agent writes into host memory (`CpuSlots`).
//!
//! A decision is a transaction "run thread T at sequence S on CPU C" that the agent *prestages*
//! in CPU C's slot before C needs it; the host commits it only if T is still at S and runnable,
//! and reports the outcome as an event. The agent retracts a prestaged transaction by writing
//! its id into the slot's abort word; the host decides whether the claim or the abort won and
//! reports which. No word is written by both sides, and nothing here reads across the link on
//! the fast path: the IPU only writes slots, the host only writes events and the config.

use crate::endpoint::Channel;
use crate::layout::{Kind, Layout, Side};
use crate::region::{load_le, store_le, SharedRegion};
use crate::ring::EntryBody;
use crate::subsystem::{BlockDesc, RingDesc, Subsystem};
use crate::sync::{AtomicU64, Ordering};

/// Most host CPUs a session schedules (one 64-byte slot each in a 4 KiB block).
pub const MAX_CPUS: u32 = 64;
/// Most schedulable threads a session has.
pub const MAX_THREADS: u32 = 65_535;
/// Bytes per CPU slot.
pub const SLOT_SIZE: usize = 64;
/// The scheduling subsystem (`docs/abi.md` §8): events host→IPU, decisions IPU→host, the
/// session configuration (home IPU) and the per-CPU transaction slots (home host, added in
/// 1.1), and one host doorbell vector per host CPU after its channel vector.
pub const SCHED: Subsystem = Subsystem {
    name: "sched",
    to_ipu: RingDesc {
        kind: Kind::RingEvents,
        name: "RingEvents",
        optional: false,
    },
    to_host: RingDesc {
        kind: Kind::RingDecisions,
        name: "RingDecisions",
        optional: false,
    },
    blocks: &[
        BlockDesc {
            kind: Kind::CpuSlots,
            name: "CpuSlots",
            home: Side::Host,
            size: 0x1000,
            optional: true,
        },
        BlockDesc {
            kind: Kind::SchedConfig,
            name: "SchedConfig",
            home: Side::Ipu,
            size: 0x1000,
            optional: true,
        },
    ],
    extra_vectors: MAX_CPUS as u16,
};

/// Host doorbell vector of CPU `c` is `CPU_VECTOR_BASE + c`: the scheduling channel's extra
/// vectors (derived from the subsystem table: they follow every channel vector, so 4 with the
/// link test, scheduling and memory registered).
pub const CPU_VECTOR_BASE: u16 = crate::subsystem::extra_vector_base(Channel::Sched.index());
/// "No CPU" in an event's `cpu` field.
pub const NO_CPU: u32 = u32::MAX;

/// Words in the per-policy parameter block of [`SchedConfig`].
pub const PARAM_WORDS: usize = 8;

/// The session configuration (block `SchedConfig`, home IPU, written by the host).
///
/// The policy is named by its wire id and configured by a parameter block whose meaning
/// belongs to that policy (`wave_policy::registry` lists ids, names and parameters). This
/// layer checks only what every policy shares; the agent validates the block against the
/// policy's own parameter table when it builds the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedConfig {
    /// Host CPUs, `0..n_cpus`.
    pub n_cpus: u32,
    /// Schedulable threads, tids `0..n_threads`.
    pub n_threads: u32,
    /// Policy wire id (non-zero).
    pub policy: u32,
    /// The policy's parameters; 0 = the policy's default for that parameter.
    pub params: [u64; PARAM_WORDS],
}

/// Why a configuration, event or slot is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// The layout has no scheduling blocks (a 1.0 host).
    NotInLayout,
    /// The host has not published a configuration.
    NoConfig,
    /// A configuration field is out of range (field name).
    BadConfig(&'static str),
    /// Out of the region.
    Region,
}

impl core::fmt::Display for SchedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SchedError::NotInLayout => write!(
                f,
                "the shared region has no scheduling blocks (host ABI 1.0?)"
            ),
            SchedError::NoConfig => {
                write!(f, "the host has not published a scheduling configuration")
            }
            SchedError::BadConfig(field) => {
                write!(f, "scheduling configuration: `{field}` out of range")
            }
            SchedError::Region => write!(f, "scheduling block outside the shared region"),
        }
    }
}

fn block<'a>(
    region: &SharedRegion<'a>,
    layout: &Layout,
    kind: Kind,
) -> Result<&'a [AtomicU64], SchedError> {
    let p = layout.place(kind);
    if p.size == 0 {
        return Err(SchedError::NotInLayout);
    }
    region
        .words(p.offset, p.size)
        .map_err(|_| SchedError::Region)
}

/// The configuration words (checked to hold the whole parameter block).
fn config_words<'a>(
    region: &SharedRegion<'a>,
    layout: &Layout,
) -> Result<&'a [AtomicU64], SchedError> {
    block(region, layout, Kind::SchedConfig)?
        .get(..W_PARAMS + PARAM_WORDS)
        .ok_or(SchedError::Region)
}

/// First word of the parameter block in `SchedConfig` (words 3..=10).
const W_PARAMS: usize = 3;

impl SchedConfig {
    /// Checks every field; `vectors` is the link's doorbell count (each CPU needs one).
    pub fn validate(&self, vectors: u32) -> Result<(), SchedError> {
        let cpu_limit = MAX_CPUS.min(vectors.saturating_sub(CPU_VECTOR_BASE as u32));
        if self.n_cpus == 0 || self.n_cpus > cpu_limit {
            return Err(SchedError::BadConfig("n_cpus"));
        }
        if self.n_threads == 0 || self.n_threads > MAX_THREADS {
            return Err(SchedError::BadConfig("n_threads"));
        }
        if self.policy == 0 {
            return Err(SchedError::BadConfig("policy"));
        }
        Ok(())
    }

    /// Host: publishes the configuration for `generation` (non-zero; the host epoch), the
    /// generation word last with release.
    pub fn publish(
        &self,
        region: &SharedRegion<'_>,
        layout: &Layout,
        generation: u64,
    ) -> Result<(), SchedError> {
        self.validate(layout.vectors)?;
        let w = config_words(region, layout)?;
        store_le(
            &w[1],
            self.n_cpus as u64 | (self.n_threads as u64) << 32,
            Ordering::Relaxed,
        );
        store_le(&w[2], self.policy as u64, Ordering::Relaxed);
        for (word, &p) in w[W_PARAMS..W_PARAMS + PARAM_WORDS].iter().zip(&self.params) {
            store_le(word, p, Ordering::Relaxed);
        }
        store_le(&w[0], generation.max(1), Ordering::Release);
        Ok(())
    }

    /// IPU: reads and validates the configuration; returns it with its generation.
    pub fn read(
        region: &SharedRegion<'_>,
        layout: &Layout,
    ) -> Result<(u64, SchedConfig), SchedError> {
        let w = config_words(region, layout)?;
        let generation = load_le(&w[0], Ordering::Acquire);
        if generation == 0 {
            return Err(SchedError::NoConfig);
        }
        let counts = load_le(&w[1], Ordering::Relaxed);
        let policy = u32::try_from(load_le(&w[2], Ordering::Relaxed))
            .map_err(|_| SchedError::BadConfig("policy"))?;
        let mut params = [0u64; PARAM_WORDS];
        for (p, word) in params.iter_mut().zip(&w[W_PARAMS..W_PARAMS + PARAM_WORDS]) {
            *p = load_le(word, Ordering::Relaxed);
        }
        let cfg = SchedConfig {
            n_cpus: counts as u32,
            n_threads: (counts >> 32) as u32,
            policy,
            params,
        };
        cfg.validate(layout.vectors)?;
        Ok((generation, cfg))
    }
}

/// A host thread id. Policies map it directly to a slot index, so the host allocates ids
/// densely in `0..n_threads`; the decoder rejects larger ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid(pub u32);

/// A host CPU index in `0..n_cpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(pub u32);

/// A transaction id. The agent allocates them unique and strictly increasing from 1.
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

/// Scheduling event kinds; the discriminant is the message tag on `RingEvents`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum EventKind {
    /// A thread exists (`arg` = 1 if it is runnable now).
    ThreadNew = 0x0201,
    /// A thread became runnable.
    Wakeup = 0x0202,
    /// The thread running on `cpu` blocked.
    Blocked = 0x0203,
    /// The thread running on `cpu` yielded (still runnable).
    Yield = 0x0204,
    /// The thread running on `cpu` was preempted at a safe point (still runnable).
    Preempted = 0x0205,
    /// A thread exited (`cpu` = where it ran, or [`NO_CPU`]).
    Dead = 0x0206,
    /// A thread's allowed CPUs changed (`mask`).
    Affinity = 0x0207,
    /// Transaction `txn` committed: `tid` now runs on `cpu`.
    TxnCommitted = 0x0208,
    /// Transaction `txn` failed (`arg` = [`FailReason`]).
    TxnFailed = 0x0209,
    /// The agent's abort of transaction `txn` on `cpu` won.
    TxnAborted = 0x020A,
    /// `cpu` has nothing to run and an empty slot; it sleeps until its doorbell rings.
    CpuIdle = 0x020B,
    /// Resynchronisation (1.3): a thread exists and runs on `cpu` now (sent only right after a
    /// new session, with `ThreadNew` for the others, so a new agent learns the host's truth).
    ThreadRunning = 0x020C,
}

impl EventKind {
    /// Number of kinds (length of a per-kind counter array).
    pub const COUNT: usize = 12;
    const FIRST_TAG: u16 = 0x0201;

    /// Dense index `0..COUNT`, for per-kind counters.
    pub fn index(self) -> usize {
        (self as u16 - Self::FIRST_TAG) as usize
    }

    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0x0201 => Self::ThreadNew,
            0x0202 => Self::Wakeup,
            0x0203 => Self::Blocked,
            0x0204 => Self::Yield,
            0x0205 => Self::Preempted,
            0x0206 => Self::Dead,
            0x0207 => Self::Affinity,
            0x0208 => Self::TxnCommitted,
            0x0209 => Self::TxnFailed,
            0x020A => Self::TxnAborted,
            0x020B => Self::CpuIdle,
            0x020C => Self::ThreadRunning,
            _ => return None,
        })
    }
}

/// Why the host refused a transaction (`arg` of [`EventKind::TxnFailed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum FailReason {
    /// The thread's sequence number moved on since the decision.
    Stale = 1,
    /// The sequence number matched but the thread was not runnable (running, blocked, dead).
    NotRunnable = 2,
    /// No such thread on the host.
    NotFound = 3,
    /// Anything else the host rejects (bad tid, CPU not allowed by affinity, malformed slot).
    Invalid = 4,
}

impl FailReason {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Stale,
            2 => Self::NotRunnable,
            3 => Self::NotFound,
            4 => Self::Invalid,
            _ => return None,
        })
    }
}

/// A scheduling event as the policies see it: what [`EventDecoder::decode`] yields.
///
/// Thread events carry the thread's new sequence number; transaction outcomes carry the
/// transaction id the agent chose. `cpu` fields name the CPU the thread was running on (stop
/// events) or the CPU that owns the transaction slot (outcomes). Stop events carry `ran_ns`,
/// the CPU time of the run that just ended as the host measured it (0 = not measured).
#[allow(missing_docs)] // the variant docs name every field
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A thread joined the scheduler (runnable or blocked). Also revives a tid after `Dead`.
    ThreadNew { tid: Tid, seq: Seq, runnable: bool },
    /// A blocked thread became runnable.
    Wakeup { tid: Tid, seq: Seq },
    /// The thread running on `cpu` blocked after running `ran_ns`.
    Blocked {
        tid: Tid,
        seq: Seq,
        cpu: CpuId,
        ran_ns: u64,
    },
    /// The thread running on `cpu` yielded (it stays runnable).
    Yield {
        tid: Tid,
        seq: Seq,
        cpu: CpuId,
        ran_ns: u64,
    },
    /// The thread running on `cpu` was preempted (it stays runnable).
    Preempted {
        tid: Tid,
        seq: Seq,
        cpu: CpuId,
        ran_ns: u64,
    },
    /// The thread exited; `cpu` is where it was running, if it was.
    Dead {
        tid: Tid,
        seq: Seq,
        cpu: Option<CpuId>,
        ran_ns: u64,
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
    /// Resynchronisation after a new session: the thread exists and is running on `cpu` (at
    /// `seq`); the agent treats `cpu` as busy with it until its stop event.
    ThreadRunning { tid: Tid, seq: Seq, cpu: CpuId },
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
            Event::ThreadRunning { .. } => EventKind::ThreadRunning,
        }
    }

    /// The wire record of this event, stamped with host time `time_ns`.
    pub fn record(&self, time_ns: u64) -> SchedEvent {
        let mut r = SchedEvent::new(self.kind());
        r.time_ns = time_ns;
        match *self {
            Event::ThreadNew { tid, seq, runnable } => {
                (r.tid, r.seq, r.arg) = (tid.0, seq.0, runnable as u32)
            }
            Event::Wakeup { tid, seq } => (r.tid, r.seq) = (tid.0, seq.0),
            Event::Blocked {
                tid,
                seq,
                cpu,
                ran_ns,
            }
            | Event::Yield {
                tid,
                seq,
                cpu,
                ran_ns,
            }
            | Event::Preempted {
                tid,
                seq,
                cpu,
                ran_ns,
            } => (r.tid, r.seq, r.cpu, r.ran_ns) = (tid.0, seq.0, cpu.0, ran_ns),
            Event::Dead {
                tid,
                seq,
                cpu,
                ran_ns,
            } => {
                (r.tid, r.seq, r.ran_ns) = (tid.0, seq.0, ran_ns);
                r.cpu = cpu.map_or(NO_CPU, |c| c.0);
            }
            Event::Affinity { tid, seq, mask } => (r.tid, r.seq, r.mask) = (tid.0, seq.0, mask),
            Event::TxnCommitted { txn, tid, cpu } => (r.txn, r.tid, r.cpu) = (txn.0, tid.0, cpu.0),
            Event::TxnFailed {
                txn,
                tid,
                cpu,
                reason,
            } => (r.txn, r.tid, r.cpu, r.arg) = (txn.0, tid.0, cpu.0, reason as u32),
            Event::TxnAborted { txn, cpu } => (r.txn, r.cpu) = (txn.0, cpu.0),
            Event::CpuIdle { cpu } => r.cpu = cpu.0,
            Event::ThreadRunning { tid, seq, cpu } => (r.tid, r.seq, r.cpu) = (tid.0, seq.0, cpu.0),
        }
        r
    }
}

/// One scheduling event in its flat wire form, as the host builds and encodes it. Fields a
/// kind does not use are 0 ([`NO_CPU`] for `cpu`). The IPU never acts on this form: its
/// decoder validates it and yields an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedEvent {
    /// What happened.
    pub kind: EventKind,
    /// Thread.
    pub tid: u32,
    /// The thread's sequence number after the change.
    pub seq: u32,
    /// CPU.
    pub cpu: u32,
    /// Kind-specific (runnable flag, fail reason).
    pub arg: u32,
    /// Transaction id.
    pub txn: u64,
    /// Affinity mask.
    pub mask: u64,
    /// Host time of the event (ns, host monotonic clock), for latency accounting.
    pub time_ns: u64,
    /// Stop events: CPU time of the run that just ended (ns; 0 = not measured). ABI 1.2.
    pub ran_ns: u64,
}

/// Length of a scheduling event payload.
pub const EVENT_LEN: u16 = 48;

impl SchedEvent {
    /// A blank event of `kind` (all fields zero, no CPU).
    pub const fn new(kind: EventKind) -> Self {
        SchedEvent {
            kind,
            tid: 0,
            seq: 0,
            cpu: NO_CPU,
            arg: 0,
            txn: 0,
            mask: 0,
            time_ns: 0,
            ran_ns: 0,
        }
    }

    /// Encodes into a ring entry body.
    pub fn encode(&self) -> EntryBody {
        let mut p = [0u8; 48];
        p[0..4].copy_from_slice(&self.tid.to_le_bytes());
        p[4..8].copy_from_slice(&self.seq.to_le_bytes());
        p[8..12].copy_from_slice(&self.cpu.to_le_bytes());
        p[12..16].copy_from_slice(&self.arg.to_le_bytes());
        p[16..24].copy_from_slice(&self.txn.to_le_bytes());
        p[24..32].copy_from_slice(&self.mask.to_le_bytes());
        p[32..40].copy_from_slice(&self.time_ns.to_le_bytes());
        p[40..48].copy_from_slice(&self.ran_ns.to_le_bytes());
        EntryBody::new(self.kind as u16, 0, &p)
    }
}

/// Why an event entry was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    /// Unknown tag.
    BadTag,
    /// `len` is not 48.
    BadLength,
    /// `aux` is not 0.
    Reserved,
    /// A tid at or beyond `n_threads`.
    BadTid,
    /// A CPU at or beyond `n_cpus`, or a CPU where the kind has none (or none where it needs one).
    BadCpu,
    /// `arg`, `txn` or `mask` invalid for the kind.
    BadField,
}

/// Decoder counters, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Accepted.
    pub ok: u64,
    /// [`EventError::BadTag`].
    pub bad_tag: u64,
    /// [`EventError::BadLength`].
    pub bad_length: u64,
    /// [`EventError::Reserved`].
    pub reserved: u64,
    /// [`EventError::BadTid`].
    pub bad_tid: u64,
    /// [`EventError::BadCpu`].
    pub bad_cpu: u64,
    /// [`EventError::BadField`].
    pub bad_field: u64,
}

impl EventStats {
    /// All rejections.
    pub fn invalid(&self) -> u64 {
        self.bad_tag
            + self.bad_length
            + self.reserved
            + self.bad_tid
            + self.bad_cpu
            + self.bad_field
    }
}

fn u32_at(p: &[u8; 48], o: usize) -> u32 {
    u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]])
}
fn u64_at(p: &[u8; 48], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[o..o + 8]);
    u64::from_le_bytes(b)
}

/// Validates and decodes event entries against a session's limits, counting rejections.
#[derive(Clone, Debug)]
pub struct EventDecoder {
    n_cpus: u32,
    n_threads: u32,
    /// Counters.
    pub stats: EventStats,
}

impl EventDecoder {
    /// A decoder for `cfg`'s CPU and thread counts.
    pub fn new(cfg: &SchedConfig) -> Self {
        EventDecoder {
            n_cpus: cfg.n_cpus,
            n_threads: cfg.n_threads,
            stats: EventStats::default(),
        }
    }

    /// Decodes `body` (already copied out of shared memory) into the event the policies use.
    pub fn decode(&mut self, body: &EntryBody) -> Result<Event, EventError> {
        let r = self
            .check(body)
            .and_then(|rec| rec.event().ok_or(EventError::BadField));
        let s = &mut self.stats;
        match r {
            Ok(_) => s.ok += 1,
            Err(EventError::BadTag) => s.bad_tag += 1,
            Err(EventError::BadLength) => s.bad_length += 1,
            Err(EventError::Reserved) => s.reserved += 1,
            Err(EventError::BadTid) => s.bad_tid += 1,
            Err(EventError::BadCpu) => s.bad_cpu += 1,
            Err(EventError::BadField) => s.bad_field += 1,
        }
        r
    }

    /// The wire record of `body` if it is valid for this session.
    fn check(&self, body: &EntryBody) -> Result<SchedEvent, EventError> {
        let kind = EventKind::from_u16(body.tag.get()).ok_or(EventError::BadTag)?;
        if body.len.get() != EVENT_LEN {
            return Err(EventError::BadLength);
        }
        if body.aux.get() != 0 {
            return Err(EventError::Reserved);
        }
        let p = &body.payload;
        let ev = SchedEvent {
            kind,
            tid: u32_at(p, 0),
            seq: u32_at(p, 4),
            cpu: u32_at(p, 8),
            arg: u32_at(p, 12),
            txn: u64_at(p, 16),
            mask: u64_at(p, 24),
            time_ns: u64_at(p, 32),
            ran_ns: u64_at(p, 40),
        };
        self.check_ids(&ev)?;
        if !self.fields_ok(&ev) {
            return Err(EventError::BadField);
        }
        Ok(ev)
    }

    fn check_ids(&self, ev: &SchedEvent) -> Result<(), EventError> {
        use EventKind::*;
        let has_tid = !matches!(ev.kind, TxnAborted | CpuIdle);
        if has_tid && ev.tid >= self.n_threads {
            return Err(EventError::BadTid);
        }
        if !has_tid && (ev.tid != 0 || ev.seq != 0) {
            return Err(EventError::BadField);
        }
        let cpu_ok = match ev.kind {
            ThreadNew | Wakeup | Affinity => ev.cpu == NO_CPU,
            Dead => ev.cpu == NO_CPU || ev.cpu < self.n_cpus,
            _ => ev.cpu < self.n_cpus,
        };
        if cpu_ok {
            Ok(())
        } else {
            Err(EventError::BadCpu)
        }
    }

    fn fields_ok(&self, ev: &SchedEvent) -> bool {
        use EventKind::*;
        let kind = ev.kind;
        let has_txn = matches!(kind, TxnCommitted | TxnFailed | TxnAborted);
        let all_cpus = if self.n_cpus >= 64 {
            u64::MAX
        } else {
            (1u64 << self.n_cpus) - 1
        };
        // Only a run that ended has a run time: stop events, and `Dead` of a running thread.
        let may_have_ran =
            matches!(kind, Blocked | Yield | Preempted) || (kind == Dead && ev.cpu != NO_CPU);
        (has_txn == (ev.txn != 0))
            && (may_have_ran || ev.ran_ns == 0)
            && match kind {
                ThreadNew => ev.arg <= 1,
                TxnFailed => FailReason::from_u32(ev.arg).is_some(),
                _ => ev.arg == 0,
            }
            && match kind {
                Affinity => ev.mask != 0 && ev.mask & !all_cpus == 0,
                _ => ev.mask == 0,
            }
    }
}

impl SchedEvent {
    /// The event this record describes; `None` if a field does not fit its kind (an unknown
    /// fail reason). Ids are not range-checked here: [`EventDecoder`] does that.
    pub fn event(&self) -> Option<Event> {
        let (tid, seq, cpu, txn) = (
            Tid(self.tid),
            Seq(self.seq),
            CpuId(self.cpu),
            TxnId(self.txn),
        );
        let ran_ns = self.ran_ns;
        Some(match self.kind {
            EventKind::ThreadNew => Event::ThreadNew {
                tid,
                seq,
                runnable: self.arg == 1,
            },
            EventKind::Wakeup => Event::Wakeup { tid, seq },
            EventKind::Blocked => Event::Blocked {
                tid,
                seq,
                cpu,
                ran_ns,
            },
            EventKind::Yield => Event::Yield {
                tid,
                seq,
                cpu,
                ran_ns,
            },
            EventKind::Preempted => Event::Preempted {
                tid,
                seq,
                cpu,
                ran_ns,
            },
            EventKind::Dead => Event::Dead {
                tid,
                seq,
                cpu: (self.cpu != NO_CPU).then_some(cpu),
                ran_ns,
            },
            EventKind::Affinity => Event::Affinity {
                tid,
                seq,
                mask: self.mask,
            },
            EventKind::TxnCommitted => Event::TxnCommitted { txn, tid, cpu },
            EventKind::TxnFailed => Event::TxnFailed {
                txn,
                tid,
                cpu,
                reason: FailReason::from_u32(self.arg)?,
            },
            EventKind::TxnAborted => Event::TxnAborted { txn, cpu },
            EventKind::CpuIdle => Event::CpuIdle { cpu },
            EventKind::ThreadRunning => Event::ThreadRunning { tid, seq, cpu },
        })
    }
}

/// A prestaged transaction, as the host reads it from a CPU slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prestaged {
    /// Transaction id (non-zero).
    pub txn: u64,
    /// Thread to run.
    pub tid: u32,
    /// The thread's sequence number the decision was made at.
    pub seq: u32,
}

/// A preemption request, as the host reads it from a CPU slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreemptRequest {
    /// Request generation (changes with every request).
    pub generation: u64,
    /// Thread the request targets.
    pub tid: u32,
    /// Its sequence number when the agent decided.
    pub seq: u32,
}

// Slot words (see docs/abi.md "CPU slots").
const W_TXN: usize = 0;
const W_TARGET: usize = 1;
const W_SESSION: usize = 2;
const W_ABORT: usize = 3;
const W_PREEMPT_GEN: usize = 4;
const W_PREEMPT_TARGET: usize = 5;
const W_PREEMPT_SESSION: usize = 6;
const W_TXN_BEGIN: usize = 7;
const WORDS_PER_SLOT: usize = SLOT_SIZE / 8;

fn slots<'a>(
    region: &SharedRegion<'a>,
    layout: &Layout,
    n_cpus: u32,
) -> Result<&'a [AtomicU64], SchedError> {
    let w = block(region, layout, Kind::CpuSlots)?;
    w.get(..n_cpus as usize * WORDS_PER_SLOT)
        .ok_or(SchedError::Region)
}

/// The IPU's side of the CPU slots: it only writes.
pub struct SlotWriter<'a> {
    words: &'a [AtomicU64],
    session: u32,
    preempt_gen: [u64; MAX_CPUS as usize],
}

impl<'a> SlotWriter<'a> {
    /// Slots for `n_cpus` CPUs of `layout`, tagged with link `session`; clears them.
    pub fn new(
        region: &SharedRegion<'a>,
        layout: &Layout,
        n_cpus: u32,
        session: u32,
    ) -> Result<Self, SchedError> {
        let words = slots(region, layout, n_cpus.min(MAX_CPUS))?;
        // Preempt generations start from the session, so a host that remembers a generation
        // of an earlier session can never mistake a new request for an old one.
        let w = SlotWriter {
            words,
            session,
            preempt_gen: [(session as u64) << 32; MAX_CPUS as usize],
        };
        for x in w.words {
            store_le(x, 0, Ordering::Relaxed);
        }
        crate::sync::fence(Ordering::Release);
        Ok(w)
    }

    fn slot(&self, cpu: u32) -> Option<&'a [AtomicU64]> {
        let i = cpu as usize * WORDS_PER_SLOT;
        self.words.get(i..i + WORDS_PER_SLOT)
    }

    /// Prestages transaction `txn` (non-zero): run `tid` at `seq` on `cpu`. Returns false for
    /// a CPU outside the session.
    pub fn prestage(&self, cpu: u32, txn: u64, tid: u32, seq: u32) -> bool {
        let Some(s) = self.slot(cpu) else {
            return false;
        };
        // Seqlock-style: the id goes into word 7 first and word 0 last, so a reader that saw
        // the old id in word 0 and a new target finds a different id in word 7.
        store_le(&s[W_TXN_BEGIN], txn, Ordering::Relaxed);
        crate::sync::fence(Ordering::Release);
        store_le(
            &s[W_TARGET],
            tid as u64 | (seq as u64) << 32,
            Ordering::Relaxed,
        );
        store_le(&s[W_SESSION], self.session as u64, Ordering::Relaxed);
        store_le(&s[W_TXN], txn, Ordering::Release);
        true
    }

    /// Asks the host to abort transaction `txn` on `cpu` (if it has not claimed it yet).
    pub fn abort(&self, cpu: u32, txn: u64) -> bool {
        let Some(s) = self.slot(cpu) else {
            return false;
        };
        store_le(&s[W_ABORT], txn, Ordering::Release);
        true
    }

    /// Asks `cpu` to preempt `tid` (at `seq`) at its next safe point.
    pub fn preempt(&mut self, cpu: u32, tid: u32, seq: u32) -> bool {
        let Some(s) = self.slot(cpu) else {
            return false;
        };
        let g = &mut self.preempt_gen[cpu as usize];
        *g += 1;
        store_le(
            &s[W_PREEMPT_TARGET],
            tid as u64 | (seq as u64) << 32,
            Ordering::Relaxed,
        );
        store_le(
            &s[W_PREEMPT_SESSION],
            self.session as u64,
            Ordering::Relaxed,
        );
        store_le(&s[W_PREEMPT_GEN], *g, Ordering::Release);
        true
    }
}

/// The host's side of the CPU slots: it only reads (its own memory).
pub struct SlotReader<'a> {
    words: &'a [AtomicU64],
    session: u32,
}

impl<'a> SlotReader<'a> {
    /// Slots for `n_cpus` CPUs, accepting only entries of link `session`.
    pub fn new(
        region: &SharedRegion<'a>,
        layout: &Layout,
        n_cpus: u32,
        session: u32,
    ) -> Result<Self, SchedError> {
        Ok(SlotReader {
            words: slots(region, layout, n_cpus.min(MAX_CPUS))?,
            session,
        })
    }

    fn slot(&self, cpu: u32) -> Option<&'a [AtomicU64]> {
        let i = cpu as usize * WORDS_PER_SLOT;
        self.words.get(i..i + WORDS_PER_SLOT)
    }

    /// The transaction prestaged on `cpu`, if it is newer than `last` (the last one this CPU
    /// took) and of this session. A slot rewritten while being read is reported as empty.
    pub fn prestaged(&self, cpu: u32, last: u64) -> Option<Prestaged> {
        let s = self.slot(cpu)?;
        let txn = load_le(&s[W_TXN], Ordering::Acquire);
        if txn == 0 || txn == last {
            return None;
        }
        let target = load_le(&s[W_TARGET], Ordering::Relaxed);
        let session = load_le(&s[W_SESSION], Ordering::Relaxed);
        crate::sync::fence(Ordering::Acquire);
        if load_le(&s[W_TXN_BEGIN], Ordering::Relaxed) != txn || session != self.session as u64 {
            return None;
        }
        Some(Prestaged {
            txn,
            tid: target as u32,
            seq: (target >> 32) as u32,
        })
    }

    /// True if the agent asked to abort `txn` on `cpu`.
    pub fn abort_requested(&self, cpu: u32, txn: u64) -> bool {
        self.slot(cpu)
            .is_some_and(|s| load_le(&s[W_ABORT], Ordering::Acquire) == txn)
    }

    /// The latest preemption request on `cpu`, if newer than generation `last`.
    pub fn preempt(&self, cpu: u32, last: u64) -> Option<PreemptRequest> {
        let s = self.slot(cpu)?;
        let generation = load_le(&s[W_PREEMPT_GEN], Ordering::Acquire);
        if generation == last {
            return None;
        }
        let target = load_le(&s[W_PREEMPT_TARGET], Ordering::Relaxed);
        let session = load_le(&s[W_PREEMPT_SESSION], Ordering::Relaxed);
        if session != self.session as u64 {
            return None;
        }
        Some(PreemptRequest {
            generation,
            tid: target as u32,
            seq: (target >> 32) as u32,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::*;
    use crate::layout::DEFAULT_RING_ENTRIES;

    fn cfg() -> SchedConfig {
        SchedConfig {
            n_cpus: 2,
            n_threads: 8,
            policy: 2,
            params: [30_000, 0, 0, 0, 0, 0, 0, 7],
        }
    }

    #[test]
    fn events_roundtrip_and_bad_fields_are_counted() {
        let mut d = EventDecoder::new(&cfg());
        let mut e = SchedEvent::new(EventKind::Blocked);
        e.tid = 7;
        e.seq = 3;
        e.cpu = 1;
        e.time_ns = 99;
        e.ran_ns = 1234;
        let want = Event::Blocked {
            tid: Tid(7),
            seq: Seq(3),
            cpu: CpuId(1),
            ran_ns: 1234,
        };
        assert_eq!(d.decode(&e.encode()), Ok(want));
        assert_eq!(want.record(99), e, "the record round-trips");
        let mut bad = e;
        bad.tid = 8;
        assert_eq!(d.decode(&bad.encode()), Err(EventError::BadTid));
        let mut bad = e;
        bad.cpu = 2;
        assert_eq!(d.decode(&bad.encode()), Err(EventError::BadCpu));
        let mut bad = e;
        bad.txn = 5;
        assert_eq!(d.decode(&bad.encode()), Err(EventError::BadField));
        let mut w = SchedEvent::new(EventKind::Wakeup);
        w.cpu = 0;
        assert_eq!(d.decode(&w.encode()), Err(EventError::BadCpu));
        let mut a = SchedEvent::new(EventKind::Affinity);
        a.mask = 0b100;
        assert_eq!(d.decode(&a.encode()), Err(EventError::BadField));
        let mut f = SchedEvent::new(EventKind::TxnFailed);
        f.cpu = 0;
        f.txn = 1;
        f.arg = 9;
        assert_eq!(d.decode(&f.encode()), Err(EventError::BadField));
        let mut body = e.encode();
        body.tag = 0x0299.into();
        assert_eq!(d.decode(&body), Err(EventError::BadTag));
        let mut body = e.encode();
        body.aux = 1.into();
        assert_eq!(d.decode(&body), Err(EventError::Reserved));
        let mut w = SchedEvent::new(EventKind::Wakeup);
        w.tid = 1;
        w.ran_ns = 5;
        assert_eq!(
            d.decode(&w.encode()),
            Err(EventError::BadField),
            "only a run that ended has a run time"
        );
        assert_eq!(d.stats.ok, 1);
        assert_eq!(d.stats.invalid(), 9);
    }

    #[test]
    fn slots_carry_prestage_abort_and_preempt() {
        let mut mem = std::vec![0u64; 0x80000 / 8];
        // SAFETY: `mem` outlives the region and is only accessed through it in this test.
        let region = unsafe { SharedRegion::from_raw(mem.as_mut_ptr().cast(), 0x80000) }.unwrap();
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, 0x80000, CPU_VECTOR_BASE as u32 + 4).unwrap();
        layout.write(&region).unwrap();
        cfg().publish(&region, &layout, 3).unwrap();
        assert_eq!(SchedConfig::read(&region, &layout), Ok((3, cfg())));

        let mut w = SlotWriter::new(&region, &layout, 2, 0x0002_0001).unwrap();
        let r = SlotReader::new(&region, &layout, 2, 0x0002_0001).unwrap();
        assert_eq!(r.prestaged(1, 0), None);
        assert!(w.prestage(1, 10, 5, 42));
        assert_eq!(
            r.prestaged(1, 0),
            Some(Prestaged {
                txn: 10,
                tid: 5,
                seq: 42
            })
        );
        assert_eq!(r.prestaged(1, 10), None, "already taken");
        assert_eq!(r.prestaged(0, 0), None);
        assert!(!r.abort_requested(1, 10));
        w.abort(1, 10);
        assert!(r.abort_requested(1, 10));
        assert!(!w.prestage(2, 11, 0, 0), "CPU outside the session");
        assert_eq!(r.preempt(0, 0), None);
        w.preempt(0, 3, 9);
        let p = r.preempt(0, 0).unwrap();
        assert_eq!((p.tid, p.seq), (3, 9));
        assert_eq!(
            p.generation,
            (0x0002_0001u64 << 32) + 1,
            "generations start at the session"
        );
        assert_eq!(r.preempt(0, p.generation), None);
        // A slot caught mid-rewrite (word 7 already holds the next id) is not taken.
        let s7 = region
            .word(layout.place(Kind::CpuSlots).offset + 64 + 56)
            .unwrap();
        store_le(s7, 11, Ordering::Relaxed);
        assert_eq!(r.prestaged(1, 0), None);
        w.prestage(1, 11, 6, 43);
        assert_eq!(
            r.prestaged(1, 10),
            Some(Prestaged {
                txn: 11,
                tid: 6,
                seq: 43
            })
        );
        // Entries of another session are ignored.
        let other = SlotReader::new(&region, &layout, 2, 0x0003_0001).unwrap();
        assert_eq!(other.prestaged(1, 0), None);
        assert_eq!(other.preempt(0, 0), None);
    }

    #[test]
    fn config_is_validated_both_ways() {
        let mut mem = std::vec![0u64; 0x80000 / 8];
        // SAFETY: as above.
        let region = unsafe { SharedRegion::from_raw(mem.as_mut_ptr().cast(), 0x80000) }.unwrap();
        let vectors = CPU_VECTOR_BASE as u32 + 1;
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, 0x80000, vectors).unwrap();
        layout.write(&region).unwrap();
        assert_eq!(
            SchedConfig::read(&region, &layout),
            Err(SchedError::NoConfig)
        );
        // These vectors leave room for one CPU doorbell only.
        assert_eq!(
            cfg().publish(&region, &layout, 1),
            Err(SchedError::BadConfig("n_cpus"))
        );
        let one = SchedConfig { n_cpus: 1, ..cfg() };
        one.publish(&region, &layout, 1).unwrap();
        // A hostile host writes a bad policy: refused on read.
        let w = region
            .words(layout.place(Kind::SchedConfig).offset, 64)
            .unwrap();
        store_le(&w[2], 0, Ordering::Relaxed);
        assert_eq!(
            SchedConfig::read(&region, &layout),
            Err(SchedError::BadConfig("policy"))
        );
        store_le(&w[2], 1 << 40, Ordering::Relaxed);
        assert_eq!(
            SchedConfig::read(&region, &layout),
            Err(SchedError::BadConfig("policy"))
        );
    }
}
