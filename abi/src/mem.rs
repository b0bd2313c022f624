//! Memory management over the link (ABI 1.3, `docs/abi.md` §8.3 "Memory"): the session
//! configuration the host publishes (`MemConfig`, home IPU), the messages the host sends on
//! `RingMemRecords` (one record per changed region, outcomes of decisions, the end of each
//! scan interval) and the messages the IPU sends back on `RingMemDecisions` (decisions, each a
//! transaction naming a region and its sequence number, and the end of an interval's
//! decisions).
//!
//! The host is authoritative: it applies a decision only if the region is still at the
//! decision's sequence number, and reports every outcome as a message. Nothing here reads
//! across the link: the host writes records and the configuration into IPU memory, the IPU
//! writes decisions into host memory. Every decoder counts what it rejects and never panics.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::endpoint::Channel;
use crate::layout::{Kind, Layout, Side};
use crate::region::{load_le, store_le, SharedRegion};
use crate::ring::{EntryBody, PAYLOAD_SIZE};
use crate::sched::{Seq, TxnId};
use crate::subsystem::{BlockDesc, RingDesc, Subsystem};
use crate::sync::{AtomicU64, Ordering};

/// Host→IPU ring: records, outcomes, interval ends.
pub const RING_MEM_RECORDS: Kind = Kind(0x14);
/// IPU→host ring: decisions and interval-done markers.
pub const RING_MEM_DECISIONS: Kind = Kind(0x15);
/// The session configuration block (home IPU, written by the host).
pub const MEM_CONFIG: Kind = Kind(8);

/// The memory subsystem's channel (its index in [`crate::subsystem::SUBSYSTEMS`]).
pub const MEM_CHANNEL: Channel = Channel(2);

/// The memory subsystem (`docs/abi.md` §8.3): records host→IPU, decisions IPU→host, the
/// session configuration (home IPU); no extra vectors. Added in 1.3, so every kind is
/// optional (a 1.2 peer's table has none of them).
pub const MEM: Subsystem = Subsystem {
    name: "mem",
    to_ipu: RingDesc {
        kind: RING_MEM_RECORDS,
        name: "RingMemRecords",
        optional: true,
    },
    to_host: RingDesc {
        kind: RING_MEM_DECISIONS,
        name: "RingMemDecisions",
        optional: true,
    },
    blocks: &[BlockDesc {
        kind: MEM_CONFIG,
        name: "MemConfig",
        home: Side::Ipu,
        size: 0x1000,
        optional: true,
    }],
    extra_vectors: 0,
};

/// Record of one region that changed in an interval (host→IPU).
pub const TAG_MEM_RECORD: u16 = 0x0301;
/// Outcome of one decision (host→IPU).
pub const TAG_MEM_OUTCOME: u16 = 0x0302;
/// End of a scan interval: decide now (host→IPU).
pub const TAG_MEM_TICK: u16 = 0x0303;
/// A decision (IPU→host).
pub const TAG_MEM_DECISION: u16 = 0x0311;
/// Every decision of an interval has been sent (IPU→host).
pub const TAG_MEM_DONE: u16 = 0x0312;

/// Record flag: a read was observed (sampled).
pub const FLAG_READ: u32 = 1;
/// Record flag: a write was observed (exact).
pub const FLAG_WRITTEN: u32 = 2;
/// Record flag: the region is in the far tier at the end of the interval.
pub const FLAG_FAR: u32 = 4;
const FLAGS_ALL: u32 = FLAG_READ | FLAG_WRITTEN | FLAG_FAR;

/// Most regions a session manages (region ids are `0..n_regions`).
pub const MAX_REGIONS: u32 = 1 << 24;
/// Most pages a record may report faulted back (a region of 4 GiB of 4 KiB pages).
pub const MAX_FAULTED: u32 = 1 << 20;

/// What a decision asks for (the wire value of `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum WireAction {
    /// Move the region to the far tier.
    Reclaim = 1,
    /// Bring it back into DRAM.
    Promote = 2,
    /// Collapse it into a huge page.
    Collapse = 3,
}

/// How the host disposed of a decision (the wire value of `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum WireOutcome {
    /// Applied.
    Committed = 1,
    /// Refused: the region was touched or moved since the decision's sequence number.
    Stale = 2,
    /// Tried and failed (kernel refused, no far tier, region out of range).
    Failed = 3,
}

impl WireAction {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(WireAction::Reclaim),
            2 => Some(WireAction::Promote),
            3 => Some(WireAction::Collapse),
            _ => None,
        }
    }
}

impl WireOutcome {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(WireOutcome::Committed),
            2 => Some(WireOutcome::Stale),
            3 => Some(WireOutcome::Failed),
            _ => None,
        }
    }
}

/// A host→IPU message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToIpu {
    /// Region `region` changed; `seq` is its sequence number after the change.
    Record {
        /// Region id.
        region: u32,
        /// The region's sequence number now.
        seq: Seq,
        /// [`FLAG_READ`] | [`FLAG_WRITTEN`] | [`FLAG_FAR`].
        flags: u32,
        /// Pages of a far region that came back in the interval (≤ [`MAX_FAULTED`]).
        faulted: u32,
    },
    /// The outcome of transaction `txn` on `region`; `seq` is the region's sequence number
    /// after it.
    Outcome {
        /// The transaction.
        txn: TxnId,
        /// Region id.
        region: u32,
        /// The region's sequence number now.
        seq: Seq,
        /// What happened.
        kind: WireOutcome,
    },
    /// Interval `interval` ended: every record of it was sent before this message.
    Tick {
        /// Interval number (from 1).
        interval: u64,
    },
}

/// An IPU→host message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToHost {
    /// Apply `action` to `region` if it is still at `seq`.
    Decision {
        /// The transaction (unique, increasing).
        txn: TxnId,
        /// Region id.
        region: u32,
        /// The region's sequence number the decision was made at.
        seq: Seq,
        /// What to do.
        action: WireAction,
    },
    /// Every decision for interval `interval` was sent; the policy's cold threshold now.
    Done {
        /// The interval the host's tick named.
        interval: u64,
        /// Decisions sent for it.
        decisions: u32,
        /// The policy's cold-age threshold (intervals) after the interval.
        threshold: u32,
    },
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
struct RecordWire {
    region: U32,
    seq: U32,
    flags: U32,
    faulted: U32,
    checksum: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
struct TxnWire {
    txn: U64,
    region: U32,
    seq: U32,
    value: U32,
    reserved: U32,
    checksum: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
struct MarkWire {
    interval: U64,
    a: U32,
    b: U32,
    checksum: U64,
}

const RECORD_LEN: usize = core::mem::size_of::<RecordWire>();
const TXN_LEN: usize = core::mem::size_of::<TxnWire>();
const MARK_LEN: usize = core::mem::size_of::<MarkWire>();
const _: () = assert!(RECORD_LEN == 24 && TXN_LEN == 32 && MARK_LEN == 24);
const _: () = assert!(TXN_LEN <= PAYLOAD_SIZE);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a (64-bit) over the tag's two little-endian bytes, then the payload bytes before the
/// checksum (`len - 8` bytes). A torn or corrupted entry fails it.
pub fn mem_checksum(tag: u16, payload: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in tag.to_le_bytes().iter().chain(payload) {
        h ^= *b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Encodes `bytes` (a wire struct whose last 8 bytes are the checksum) with its checksum.
fn seal(tag: u16, bytes: &mut [u8]) -> EntryBody {
    let n = bytes.len() - 8;
    let sum = mem_checksum(tag, &bytes[..n]);
    bytes[n..].copy_from_slice(&sum.to_le_bytes());
    EntryBody::new(tag, 0, bytes)
}

/// Encodes a host→IPU message.
pub fn encode_to_ipu(m: &ToIpu) -> EntryBody {
    match *m {
        ToIpu::Record {
            region,
            seq,
            flags,
            faulted,
        } => {
            let mut w = RecordWire {
                region: region.into(),
                seq: seq.0.into(),
                flags: flags.into(),
                faulted: faulted.into(),
                checksum: 0.into(),
            };
            seal(TAG_MEM_RECORD, w.as_mut_bytes())
        }
        ToIpu::Outcome {
            txn,
            region,
            seq,
            kind,
        } => txn_body(TAG_MEM_OUTCOME, txn, region, seq, kind as u32),
        ToIpu::Tick { interval } => mark_body(TAG_MEM_TICK, interval, 0, 0),
    }
}

/// Encodes an IPU→host message.
pub fn encode_to_host(m: &ToHost) -> EntryBody {
    match *m {
        ToHost::Decision {
            txn,
            region,
            seq,
            action,
        } => txn_body(TAG_MEM_DECISION, txn, region, seq, action as u32),
        ToHost::Done {
            interval,
            decisions,
            threshold,
        } => mark_body(TAG_MEM_DONE, interval, decisions, threshold),
    }
}

fn txn_body(tag: u16, txn: TxnId, region: u32, seq: Seq, value: u32) -> EntryBody {
    let mut w = TxnWire {
        txn: txn.0.into(),
        region: region.into(),
        seq: seq.0.into(),
        value: value.into(),
        reserved: 0.into(),
        checksum: 0.into(),
    };
    seal(tag, w.as_mut_bytes())
}

fn mark_body(tag: u16, interval: u64, a: u32, b: u32) -> EntryBody {
    let mut w = MarkWire {
        interval: interval.into(),
        a: a.into(),
        b: b.into(),
        checksum: 0.into(),
    };
    seal(tag, w.as_mut_bytes())
}

/// Why an entry was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemDecodeError {
    /// A tag this ring does not carry.
    BadTag(u16),
    /// `len` not what the tag requires.
    BadLength(u16),
    /// `aux`, a reserved field, or payload bytes past `len` are not zero.
    Reserved,
    /// Checksum mismatch (a torn or corrupted entry).
    Checksum,
    /// A field out of range: unknown flag bits, action or outcome kind, region id ≥
    /// [`MAX_REGIONS`], faulted pages > [`MAX_FAULTED`], transaction 0, interval 0.
    BadValue,
}

/// Decoder counters: accepted entries and one counter per rejection reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemDecodeStats {
    /// Entries accepted.
    pub ok: u64,
    /// Wrong tag.
    pub bad_tag: u64,
    /// Wrong length.
    pub bad_length: u64,
    /// Non-zero reserved bytes.
    pub reserved: u64,
    /// Checksum mismatch.
    pub checksum: u64,
    /// A field out of range.
    pub bad_value: u64,
}

impl MemDecodeStats {
    /// Entries rejected for any reason.
    pub fn invalid(&self) -> u64 {
        self.bad_tag + self.bad_length + self.reserved + self.checksum + self.bad_value
    }
    fn count<T>(&mut self, r: &Result<T, MemDecodeError>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(MemDecodeError::BadTag(_)) => self.bad_tag += 1,
            Err(MemDecodeError::BadLength(_)) => self.bad_length += 1,
            Err(MemDecodeError::Reserved) => self.reserved += 1,
            Err(MemDecodeError::Checksum) => self.checksum += 1,
            Err(MemDecodeError::BadValue) => self.bad_value += 1,
        }
    }
}

/// Checks length, `aux`, the bytes past `len` and the checksum; returns the payload bytes.
fn checked(body: &EntryBody, len: usize) -> Result<&[u8], MemDecodeError> {
    if body.len.get() as usize != len {
        return Err(MemDecodeError::BadLength(body.len.get()));
    }
    let (used, rest) = body.payload.split_at(len);
    if body.aux.get() != 0 || rest.iter().any(|b| *b != 0) {
        return Err(MemDecodeError::Reserved);
    }
    let (data, sum) = used.split_at(len - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if u64::from_le_bytes(s) != mem_checksum(body.tag.get(), data) {
        return Err(MemDecodeError::Checksum);
    }
    Ok(used)
}

fn read<T: FromBytes>(bytes: &[u8]) -> Result<T, MemDecodeError> {
    T::read_from_bytes(bytes).map_err(|_| MemDecodeError::BadLength(bytes.len() as u16))
}

fn txn_fields(body: &EntryBody) -> Result<(TxnId, u32, Seq, u32), MemDecodeError> {
    let w: TxnWire = read(checked(body, TXN_LEN)?)?;
    if w.reserved.get() != 0 {
        return Err(MemDecodeError::Reserved);
    }
    if w.txn.get() == 0 || w.region.get() >= MAX_REGIONS {
        return Err(MemDecodeError::BadValue);
    }
    Ok((
        TxnId(w.txn.get()),
        w.region.get(),
        Seq(w.seq.get()),
        w.value.get(),
    ))
}

fn mark_fields(body: &EntryBody) -> Result<(u64, u32, u32), MemDecodeError> {
    let w: MarkWire = read(checked(body, MARK_LEN)?)?;
    if w.interval.get() == 0 {
        return Err(MemDecodeError::BadValue);
    }
    Ok((w.interval.get(), w.a.get(), w.b.get()))
}

/// Decodes a host→IPU entry (no counting).
pub fn decode_to_ipu(body: &EntryBody) -> Result<ToIpu, MemDecodeError> {
    match body.tag.get() {
        TAG_MEM_RECORD => {
            let w: RecordWire = read(checked(body, RECORD_LEN)?)?;
            if w.flags.get() & !FLAGS_ALL != 0
                || w.region.get() >= MAX_REGIONS
                || w.faulted.get() > MAX_FAULTED
            {
                return Err(MemDecodeError::BadValue);
            }
            Ok(ToIpu::Record {
                region: w.region.get(),
                seq: Seq(w.seq.get()),
                flags: w.flags.get(),
                faulted: w.faulted.get(),
            })
        }
        TAG_MEM_OUTCOME => {
            let (txn, region, seq, v) = txn_fields(body)?;
            let kind = WireOutcome::from_u32(v).ok_or(MemDecodeError::BadValue)?;
            Ok(ToIpu::Outcome {
                txn,
                region,
                seq,
                kind,
            })
        }
        TAG_MEM_TICK => {
            let (interval, a, b) = mark_fields(body)?;
            if a != 0 || b != 0 {
                return Err(MemDecodeError::Reserved);
            }
            Ok(ToIpu::Tick { interval })
        }
        t => Err(MemDecodeError::BadTag(t)),
    }
}

/// Decodes an IPU→host entry (no counting).
pub fn decode_to_host(body: &EntryBody) -> Result<ToHost, MemDecodeError> {
    match body.tag.get() {
        TAG_MEM_DECISION => {
            let (txn, region, seq, v) = txn_fields(body)?;
            let action = WireAction::from_u32(v).ok_or(MemDecodeError::BadValue)?;
            Ok(ToHost::Decision {
                txn,
                region,
                seq,
                action,
            })
        }
        TAG_MEM_DONE => {
            let (interval, decisions, threshold) = mark_fields(body)?;
            Ok(ToHost::Done {
                interval,
                decisions,
                threshold,
            })
        }
        t => Err(MemDecodeError::BadTag(t)),
    }
}

/// A counting decoder for the host→IPU ring (the IPU's side).
#[derive(Clone, Copy, Debug, Default)]
pub struct ToIpuDecoder {
    /// Counters.
    pub stats: MemDecodeStats,
}

impl ToIpuDecoder {
    /// Decodes and counts.
    pub fn decode(&mut self, body: &EntryBody) -> Result<ToIpu, MemDecodeError> {
        let r = decode_to_ipu(body);
        self.stats.count(&r);
        r
    }
}

/// A counting decoder for the IPU→host ring (the host's side).
#[derive(Clone, Copy, Debug, Default)]
pub struct ToHostDecoder {
    /// Counters.
    pub stats: MemDecodeStats,
}

impl ToHostDecoder {
    /// Decodes and counts.
    pub fn decode(&mut self, body: &EntryBody) -> Result<ToHost, MemDecodeError> {
        let r = decode_to_host(body);
        self.stats.count(&r);
        r
    }
}

/// Policy parameters carried in the configuration, in word order (words 2..=14 of the
/// block); 0 = the policy's default. See `wave_policy::mem::MemConfig`.
pub const PARAM_NAMES: [&str; 13] = [
    "min_threshold",
    "max_threshold",
    "intervals_per_minute",
    "slo_ppm_per_minute",
    "wss_age",
    "reclaim_quota",
    "promote_quota",
    "collapse_after",
    "collapse_quota",
    "pending_timeout",
    "region_pages",
    "promote_pages",
    "initial_threshold",
];

/// The session configuration (block `MemConfig`, home IPU, written by the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSessionConfig {
    /// Regions of the managed area, ids `0..n_regions` (1..=[`MAX_REGIONS`]).
    pub n_regions: u32,
    /// The policy's parameters in [`PARAM_NAMES`] order; 0 = its default.
    pub params: [u32; PARAM_NAMES.len()],
}

/// Why a configuration is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemConfigError {
    /// The layout has no `MemConfig` block (a 1.2 host).
    NotInLayout,
    /// The host has not published a configuration.
    NoConfig,
    /// A field is out of range (field name).
    BadConfig(&'static str),
    /// Out of the region.
    Region,
}

impl core::fmt::Display for MemConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MemConfigError::NotInLayout => write!(
                f,
                "the shared region has no memory-subsystem blocks (host ABI older than 1.3?)"
            ),
            MemConfigError::NoConfig => {
                write!(f, "the host has not published a memory configuration")
            }
            MemConfigError::BadConfig(field) => {
                write!(f, "memory configuration: `{field}` out of range")
            }
            MemConfigError::Region => write!(f, "memory block outside the shared region"),
        }
    }
}

const W_PARAMS: usize = 2;
const CONFIG_WORDS: usize = W_PARAMS + PARAM_NAMES.len();

fn config_words<'a>(
    region: &SharedRegion<'a>,
    layout: &Layout,
) -> Result<&'a [AtomicU64], MemConfigError> {
    let p = layout.place(MEM_CONFIG);
    if p.size == 0 {
        return Err(MemConfigError::NotInLayout);
    }
    region
        .words(p.offset, p.size)
        .map_err(|_| MemConfigError::Region)?
        .get(..CONFIG_WORDS)
        .ok_or(MemConfigError::Region)
}

impl MemSessionConfig {
    /// Checks what this layer knows (the policy checks its parameters when it builds).
    pub fn validate(&self) -> Result<(), MemConfigError> {
        if self.n_regions == 0 || self.n_regions > MAX_REGIONS {
            return Err(MemConfigError::BadConfig("n_regions"));
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
    ) -> Result<(), MemConfigError> {
        self.validate()?;
        let w = config_words(region, layout)?;
        store_le(&w[1], self.n_regions as u64, Ordering::Relaxed);
        for (word, &p) in w[W_PARAMS..].iter().zip(&self.params) {
            store_le(word, p as u64, Ordering::Relaxed);
        }
        store_le(&w[0], generation.max(1), Ordering::Release);
        Ok(())
    }

    /// IPU: reads and validates the configuration; returns it with its generation.
    pub fn read(
        region: &SharedRegion<'_>,
        layout: &Layout,
    ) -> Result<(u64, MemSessionConfig), MemConfigError> {
        let w = config_words(region, layout)?;
        let generation = load_le(&w[0], Ordering::Acquire);
        if generation == 0 {
            return Err(MemConfigError::NoConfig);
        }
        let n_regions = u32::try_from(load_le(&w[1], Ordering::Relaxed))
            .map_err(|_| MemConfigError::BadConfig("n_regions"))?;
        let mut params = [0u32; PARAM_NAMES.len()];
        for ((p, word), name) in params.iter_mut().zip(&w[W_PARAMS..]).zip(PARAM_NAMES) {
            *p = u32::try_from(load_le(word, Ordering::Relaxed))
                .map_err(|_| MemConfigError::BadConfig(name))?;
        }
        let cfg = MemSessionConfig { n_regions, params };
        cfg.validate()?;
        Ok((generation, cfg))
    }
}

#[cfg(test)]
mod tests;
