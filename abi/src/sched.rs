//! Scheduling over the link (ABI 1.1, `docs/abi.md` §8 "Scheduling"): the session
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
/// vectors (derived from the subsystem table: 3 while link test and scheduling are the first
/// two subsystems).
pub const CPU_VECTOR_BASE: u16 = crate::subsystem::extra_vector_base(Channel::Sched.index());
/// "No CPU" in an event's `cpu` field.
pub const NO_CPU: u32 = u32::MAX;

/// The policy a session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PolicyKind {
    /// Centralized FIFO, no preemption.
    Fifo = 1,
    /// Centralized FIFO with time-slice preemption (Shinjuku).
    Shinjuku = 2,
}

/// The session configuration (block `SchedConfig`, home IPU, written by the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedConfig {
    /// Host CPUs, `0..n_cpus`.
    pub n_cpus: u32,
    /// Schedulable threads, tids `0..n_threads`.
    pub n_threads: u32,
    /// Policy.
    pub policy: PolicyKind,
    /// Shinjuku time slice in ns (ignored by FIFO).
    pub slice_ns: u64,
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
        if !(1_000..=1_000_000_000).contains(&self.slice_ns) {
            return Err(SchedError::BadConfig("slice_ns"));
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
        let w = block(region, layout, Kind::SchedConfig)?;
        store_le(
            &w[1],
            self.n_cpus as u64 | (self.n_threads as u64) << 32,
            Ordering::Relaxed,
        );
        store_le(&w[2], self.policy as u64, Ordering::Relaxed);
        store_le(&w[3], self.slice_ns, Ordering::Relaxed);
        store_le(&w[0], generation.max(1), Ordering::Release);
        Ok(())
    }

    /// IPU: reads and validates the configuration; returns it with its generation.
    pub fn read(
        region: &SharedRegion<'_>,
        layout: &Layout,
    ) -> Result<(u64, SchedConfig), SchedError> {
        let w = block(region, layout, Kind::SchedConfig)?;
        let generation = load_le(&w[0], Ordering::Acquire);
        if generation == 0 {
            return Err(SchedError::NoConfig);
        }
        let counts = load_le(&w[1], Ordering::Relaxed);
        let policy = match load_le(&w[2], Ordering::Relaxed) {
            1 => PolicyKind::Fifo,
            2 => PolicyKind::Shinjuku,
            _ => return Err(SchedError::BadConfig("policy")),
        };
        let cfg = SchedConfig {
            n_cpus: counts as u32,
            n_threads: (counts >> 32) as u32,
            policy,
            slice_ns: load_le(&w[3], Ordering::Relaxed),
        };
        cfg.validate(layout.vectors)?;
        Ok((generation, cfg))
    }
}

/// Scheduling event kinds (message tags on `RingEvents`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl EventKind {
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
            _ => return None,
        })
    }
}

/// Why the host refused a transaction (`arg` of [`EventKind::TxnFailed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FailReason {
    /// The thread's sequence number moved on.
    Stale = 1,
    /// The thread is not runnable (blocked, running elsewhere, dead).
    NotRunnable = 2,
    /// The thread does not exist.
    NotFound = 3,
    /// The slot was malformed (bad tid, wrong CPU affinity, ...).
    Invalid = 4,
}

/// One scheduling event, decoded. Fields a kind does not use are 0 ([`NO_CPU`] for `cpu`).
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
    /// `aux` or the reserved word is not 0.
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

    /// Decodes `body` (already copied out of shared memory).
    pub fn decode(&mut self, body: &EntryBody) -> Result<SchedEvent, EventError> {
        let r = self.check(body);
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

    fn check(&self, body: &EntryBody) -> Result<SchedEvent, EventError> {
        let kind = EventKind::from_u16(body.tag.get()).ok_or(EventError::BadTag)?;
        if body.len.get() != EVENT_LEN {
            return Err(EventError::BadLength);
        }
        let p = &body.payload;
        if body.aux.get() != 0 || u64_at(p, 40) != 0 {
            return Err(EventError::Reserved);
        }
        let ev = SchedEvent {
            kind,
            tid: u32_at(p, 0),
            seq: u32_at(p, 4),
            cpu: u32_at(p, 8),
            arg: u32_at(p, 12),
            txn: u64_at(p, 16),
            mask: u64_at(p, 24),
            time_ns: u64_at(p, 32),
        };
        use EventKind::*;
        let has_tid = !matches!(kind, TxnAborted | CpuIdle);
        if has_tid && ev.tid >= self.n_threads {
            return Err(EventError::BadTid);
        }
        if !has_tid && (ev.tid != 0 || ev.seq != 0) {
            return Err(EventError::BadField);
        }
        let cpu_ok = match kind {
            ThreadNew | Wakeup | Affinity => ev.cpu == NO_CPU,
            Dead => ev.cpu == NO_CPU || ev.cpu < self.n_cpus,
            _ => ev.cpu < self.n_cpus,
        };
        if !cpu_ok {
            return Err(EventError::BadCpu);
        }
        let has_txn = matches!(kind, TxnCommitted | TxnFailed | TxnAborted);
        let all_cpus = if self.n_cpus >= 64 {
            u64::MAX
        } else {
            (1u64 << self.n_cpus) - 1
        };
        let fields_ok = (has_txn == (ev.txn != 0))
            && match kind {
                ThreadNew => ev.arg <= 1,
                TxnFailed => (1..=4).contains(&ev.arg),
                _ => ev.arg == 0,
            }
            && match kind {
                Affinity => ev.mask != 0 && ev.mask & !all_cpus == 0,
                _ => ev.mask == 0,
            };
        if !fields_ok {
            return Err(EventError::BadField);
        }
        Ok(ev)
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
    use super::*;
    use crate::layout::DEFAULT_RING_ENTRIES;

    fn cfg() -> SchedConfig {
        SchedConfig {
            n_cpus: 2,
            n_threads: 8,
            policy: PolicyKind::Shinjuku,
            slice_ns: 30_000,
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
        assert_eq!(d.decode(&e.encode()), Ok(e));
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
        body.payload[44] = 1;
        assert_eq!(d.decode(&body), Err(EventError::Reserved));
        assert_eq!(d.stats.ok, 1);
        assert_eq!(d.stats.invalid(), 8);
    }

    #[test]
    fn slots_carry_prestage_abort_and_preempt() {
        let mut mem = [0u64; 0x40000 / 8];
        // SAFETY: `mem` outlives the region and is only accessed through it in this test.
        let region = unsafe { SharedRegion::from_raw(mem.as_mut_ptr().cast(), 0x40000) }.unwrap();
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, 0x40000, 8).unwrap();
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
        let mut mem = [0u64; 0x40000 / 8];
        // SAFETY: as above.
        let region = unsafe { SharedRegion::from_raw(mem.as_mut_ptr().cast(), 0x40000) }.unwrap();
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, 0x40000, 4).unwrap();
        layout.write(&region).unwrap();
        assert_eq!(
            SchedConfig::read(&region, &layout),
            Err(SchedError::NoConfig)
        );
        // 4 vectors leave room for one CPU doorbell only.
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
        store_le(&w[2], 77, Ordering::Relaxed);
        assert_eq!(
            SchedConfig::read(&region, &layout),
            Err(SchedError::BadConfig("policy"))
        );
    }
}
