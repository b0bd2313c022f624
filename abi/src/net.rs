//! The network/RPC control plane over the link (`docs/abi.md` §8.4): per-worker telemetry,
//! interval ends and decision outcomes host→IPU on `RingNetTelemetry`; core-allocation and
//! steering decisions IPU→host on `RingNetDecisions`; the 128-entry steering table both sides
//! derive from a decision's weights ([`build_table`]).
//!
//! Every decision names the host's table epoch it was computed from; the host commits it only
//! if the epoch is still current and reports the outcome (with the epoch after it) as a
//! [`NetOutcome`]. Decoders never panic: they check tag, length, reserved bytes and ranges and
//! count each rejection in [`NetDecodeStats`].

use crate::layout::Kind;
use crate::ring::{EntryBody, PAYLOAD_SIZE};
use crate::subsystem::{RingDesc, Subsystem};

/// Most workers a server has (one 4-bit weight each in a decision, ABI 3.0).
pub const MAX_WORKERS: usize = 64;
/// Largest table weight a decision carries (4 bits); the encoder saturates above it.
pub const MAX_WEIGHT: u8 = 15;
/// The weight of every active worker when shares are equal ([`equal_weights`]); halving it
/// three times reaches 1 and doubling recovers it exactly.
pub const EQUAL_WEIGHT: u8 = 8;
/// Entries of the steering table (a NIC's RSS indirection table has 128; index = hash & 127).
pub const TABLE_ENTRIES: usize = 128;

/// Layout kind of the host→IPU ring (telemetry, interval ends, outcomes).
pub const KIND_RING_NET_TELEMETRY: Kind = Kind(0x16);
/// Layout kind of the IPU→host ring (decisions).
pub const KIND_RING_NET_DECISIONS: Kind = Kind(0x17);

/// The network subsystem's channel: its index in [`crate::subsystem::SUBSYSTEMS`] (found by
/// name, so it does not depend on where it was appended).
pub const NET_CHANNEL: crate::endpoint::Channel = crate::endpoint::Channel(net_index());

const fn net_index() -> u8 {
    let subs = &crate::subsystem::SUBSYSTEMS;
    let mut i = 0;
    while i < subs.len() {
        if subs[i].to_ipu.kind.0 == KIND_RING_NET_TELEMETRY.0 {
            return i as u8;
        }
        i += 1;
    }
    panic!("the network subsystem is not registered in SUBSYSTEMS")
}

/// The network subsystem: telemetry host→IPU, decisions IPU→host; no blocks, no extra
/// vectors. Added in ABI 1.2 as an optional pair of rings.
pub const NET: Subsystem = Subsystem {
    name: "net",
    to_ipu: RingDesc {
        kind: KIND_RING_NET_TELEMETRY,
        name: "RingNetTelemetry",
        optional: true,
    },
    to_host: RingDesc {
        kind: KIND_RING_NET_DECISIONS,
        name: "RingNetDecisions",
        optional: true,
    },
    blocks: &[],
    extra_vectors: 0,
};

/// The allocator's parameters (meaning and defaults in `docs/network.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetParams {
    /// Workers the server always holds.
    pub min_workers: u8,
    /// Grant when a worker's oldest waiting request is older than this, µs.
    pub delay_add_us: u32,
    /// Grant when a queue stayed non-empty for this many consecutive checks.
    pub standing_checks: u8,
    /// Revoke only if the busy time fits in one worker fewer at this utilisation, ‰ ...
    pub target_util_permille: u32,
    /// ... minus this margin, in thousandths of a core (Arachne's hysteresis).
    pub hysteresis_millicores: u32,
    /// ... for this many consecutive intervals.
    pub revoke_after: u32,
    /// No revoke for this many intervals after a grant.
    pub grant_hold: u32,
    /// A worker is slow when its queueing delay exceeds the mean of the others by this
    /// factor, ‰ (and exceeds half of `delay_add_us`).
    pub slow_permille: u32,
    /// Intervals between two rebalances at least.
    pub rebalance_every: u32,
    /// An outstanding decision without an outcome is given up after this many intervals.
    pub outcome_timeout: u32,
}

impl Default for NetParams {
    fn default() -> Self {
        NetParams {
            min_workers: 1,
            delay_add_us: 2_000,
            standing_checks: 3,
            target_util_permille: 700,
            hysteresis_millicores: 200,
            revoke_after: 20,
            grant_hold: 30,
            slow_permille: 3_000,
            rebalance_every: 10,
            outcome_timeout: 50,
        }
    }
}

/// One worker's telemetry for one interval (host→IPU).
pub const TAG_NET_SAMPLE: u16 = 0x0401;
/// The end of one interval's telemetry (host→IPU).
pub const TAG_NET_INTERVAL: u16 = 0x0402;
/// The outcome of one decision (host→IPU).
pub const TAG_NET_OUTCOME: u16 = 0x0403;
/// A decision (IPU→host).
pub const TAG_NET_DECISION: u16 = 0x0404;

/// One worker's telemetry for one interval (deltas over the interval, except the queue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSample {
    /// Worker index (`0..n_workers`).
    pub worker: u8,
    /// The worker is unparked (holds a core).
    pub active: bool,
    /// Requests waiting in its socket at the end of the interval.
    pub queued: u32,
    /// Age of the oldest waiting request (kernel receive timestamp), µs; 0 if none.
    pub oldest_age_us: u32,
    /// Time spent serving requests during the interval, ns.
    pub busy_ns: u64,
    /// Time spent waiting for requests during the interval, ns.
    pub idle_ns: u64,
    /// Requests completed during the interval.
    pub completions: u64,
    /// Entries of the steering table that name this worker.
    pub table_entries: u8,
}

impl WorkerSample {
    /// An idle worker with nothing queued (tests and docs).
    pub fn idle(worker: u8, active: bool, interval_ns: u64) -> Self {
        WorkerSample {
            worker,
            active,
            idle_ns: if active { interval_ns } else { 0 },
            ..Default::default()
        }
    }
}

/// The end of one interval's telemetry: the policy decides on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntervalReport {
    /// Interval number (the host counts from 1).
    pub interval: u32,
    /// The host's steering-table epoch when it took the samples.
    pub table_epoch: u32,
    /// Length of the interval, ns.
    pub interval_ns: u64,
}

/// What a decision does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetDecisionKind {
    /// Unpark `worker` (give the server a core) and steer by the new weights.
    Grant,
    /// Park `worker` (its core goes to the batch job) and steer by the new weights.
    Revoke,
    /// Rewrite the steering table from the new weights; no worker changes state.
    Rebalance,
}

/// A decision (IPU→host): a transaction on the host's steering state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDecision {
    /// Transaction id (the policy's counter; echoed in the outcome).
    pub txn: u64,
    /// The table epoch the decision was computed from.
    pub table_epoch: u32,
    /// What it does.
    pub kind: NetDecisionKind,
    /// The worker granted or revoked (0 for a rebalance).
    pub worker: u8,
    /// Table weight per worker after the decision (0: not in the table; a parked worker must
    /// have 0, an active one at least 1; at most [`MAX_WEIGHT`] on the wire).
    pub weights: [u8; MAX_WORKERS],
}

/// How the host answered a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// Applied; the table epoch moved to the outcome's epoch.
    Committed,
    /// Refused: the table epoch had moved since the decision was computed.
    Stale,
    /// Refused: the decision is impossible (worker out of range, granting an active worker,
    /// revoking the last one, weights inconsistent with the active set).
    Invalid,
}

/// The outcome of one decision (host→IPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetOutcome {
    /// The decision's transaction id.
    pub txn: u64,
    /// The host's table epoch after handling it.
    pub table_epoch: u32,
    /// What happened.
    pub kind: OutcomeKind,
}

/// A decoded host→IPU message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToIpu {
    /// A worker's telemetry, with the interval and epoch it belongs to.
    Sample {
        /// The sample.
        sample: WorkerSample,
        /// Its interval.
        interval: u32,
    },
    /// The end of an interval.
    Interval(IntervalReport),
    /// A decision's outcome.
    Outcome(NetOutcome),
    /// The session configuration.
    Config(NetConfig),
}

/// Why an entry was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetDecodeError {
    /// Not a tag of this ring.
    BadTag(u16),
    /// `len` not what the tag requires.
    BadLength(u16),
    /// `aux` or a reserved byte is not zero.
    Reserved,
    /// A field out of range (worker, kind, flags).
    Range,
}

/// Decoder counters: accepted entries and one per rejection reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetDecodeStats {
    /// Entries accepted.
    pub ok: u64,
    /// Wrong tag.
    pub bad_tag: u64,
    /// Wrong length.
    pub bad_length: u64,
    /// Non-zero reserved bytes.
    pub reserved: u64,
    /// Field out of range.
    pub range: u64,
}

impl NetDecodeStats {
    /// Entries rejected for any reason.
    pub fn invalid(&self) -> u64 {
        self.bad_tag + self.bad_length + self.reserved + self.range
    }
    fn count<T>(&mut self, r: &Result<T, NetDecodeError>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(NetDecodeError::BadTag(_)) => self.bad_tag += 1,
            Err(NetDecodeError::BadLength(_)) => self.bad_length += 1,
            Err(NetDecodeError::Reserved) => self.reserved += 1,
            Err(NetDecodeError::Range) => self.range += 1,
        }
    }
}

/// Little-endian field writer over a payload.
struct W([u8; PAYLOAD_SIZE]);

impl W {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.0.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
}

fn u32_at(p: &[u8; PAYLOAD_SIZE], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = p.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

fn u64_at(p: &[u8; PAYLOAD_SIZE], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = p.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

fn zero(p: &[u8; PAYLOAD_SIZE], from: usize, to: usize) -> bool {
    p.get(from..to).is_some_and(|s| s.iter().all(|b| *b == 0))
}

/// Payload bytes used by each message (`len`).
pub const SAMPLE_LEN: u16 = 48;
/// See [`SAMPLE_LEN`].
pub const INTERVAL_LEN: u16 = 16;
/// See [`SAMPLE_LEN`].
pub const OUTCOME_LEN: u16 = 13;
/// See [`SAMPLE_LEN`].
pub const DECISION_LEN: u16 = 48;

/// Encodes a worker's sample for `interval` (offsets in `docs/abi.md` §8.4).
pub fn encode_sample(s: &WorkerSample, interval: u32) -> EntryBody {
    let mut w = W([0; PAYLOAD_SIZE]);
    w.put(0, &[s.worker, s.active as u8, s.table_entries, 0]);
    w.put(4, &s.queued.to_le_bytes());
    w.put(8, &s.oldest_age_us.to_le_bytes());
    w.put(12, &interval.to_le_bytes());
    w.put(16, &s.busy_ns.to_le_bytes());
    w.put(24, &s.idle_ns.to_le_bytes());
    w.put(32, &s.completions.to_le_bytes());
    EntryBody::new(TAG_NET_SAMPLE, 0, &w.0[..SAMPLE_LEN as usize])
}

/// Encodes an interval end.
pub fn encode_interval(r: &IntervalReport) -> EntryBody {
    let mut w = W([0; PAYLOAD_SIZE]);
    w.put(0, &r.interval.to_le_bytes());
    w.put(4, &r.table_epoch.to_le_bytes());
    w.put(8, &r.interval_ns.to_le_bytes());
    EntryBody::new(TAG_NET_INTERVAL, 0, &w.0[..INTERVAL_LEN as usize])
}

/// Encodes an outcome.
pub fn encode_outcome(o: &NetOutcome) -> EntryBody {
    let mut w = W([0; PAYLOAD_SIZE]);
    w.put(0, &o.txn.to_le_bytes());
    w.put(8, &o.table_epoch.to_le_bytes());
    w.put(12, &[o.kind as u8]);
    EntryBody::new(TAG_NET_OUTCOME, 0, &w.0[..OUTCOME_LEN as usize])
}

/// Encodes a decision.
pub fn encode_decision(d: &NetDecision) -> EntryBody {
    let mut w = W([0; PAYLOAD_SIZE]);
    w.put(0, &d.txn.to_le_bytes());
    w.put(8, &d.table_epoch.to_le_bytes());
    w.put(12, &[d.kind as u8, d.worker, 0, 0]);
    w.put(16, &pack_weights(&d.weights));
    EntryBody::new(TAG_NET_DECISION, 0, &w.0[..DECISION_LEN as usize])
}

/// Bytes of the packed weights: two workers per byte.
const PACKED_WEIGHTS: usize = MAX_WORKERS / 2;

/// Packs the weights 4 bits each (worker 2i in the low nibble of byte i, 2i + 1 in the high
/// one), saturating at [`MAX_WEIGHT`].
fn pack_weights(weights: &[u8; MAX_WORKERS]) -> [u8; PACKED_WEIGHTS] {
    let mut out = [0u8; PACKED_WEIGHTS];
    for (i, b) in out.iter_mut().enumerate() {
        let lo = weights[2 * i].min(MAX_WEIGHT);
        let hi = weights[2 * i + 1].min(MAX_WEIGHT);
        *b = lo | hi << 4;
    }
    out
}

/// The inverse of [`pack_weights`] (every nibble is a valid weight).
fn unpack_weights(packed: &[u8]) -> [u8; MAX_WORKERS] {
    let mut w = [0u8; MAX_WORKERS];
    for (i, b) in packed.iter().take(PACKED_WEIGHTS).enumerate() {
        w[2 * i] = b & 0x0f;
        w[2 * i + 1] = b >> 4;
    }
    w
}

fn header(body: &EntryBody, len: u16) -> Result<(), NetDecodeError> {
    if body.len.get() != len {
        return Err(NetDecodeError::BadLength(body.len.get()));
    }
    if body.aux.get() != 0 || !zero(&body.payload, len as usize, PAYLOAD_SIZE) {
        return Err(NetDecodeError::Reserved);
    }
    Ok(())
}

fn decode_sample(p: &[u8; PAYLOAD_SIZE]) -> Result<ToIpu, NetDecodeError> {
    if p[3] != 0 {
        return Err(NetDecodeError::Reserved);
    }
    if p[0] as usize >= MAX_WORKERS || p[1] > 1 || p[2] as usize > TABLE_ENTRIES {
        return Err(NetDecodeError::Range);
    }
    let sample = WorkerSample {
        worker: p[0],
        active: p[1] == 1,
        table_entries: p[2],
        queued: u32_at(p, 4),
        oldest_age_us: u32_at(p, 8),
        busy_ns: u64_at(p, 16),
        idle_ns: u64_at(p, 24),
        completions: u64_at(p, 32),
    };
    if !zero(p, 40, 48) {
        return Err(NetDecodeError::Reserved);
    }
    Ok(ToIpu::Sample {
        sample,
        interval: u32_at(p, 12),
    })
}

fn outcome_kind(v: u8) -> Option<OutcomeKind> {
    match v {
        0 => Some(OutcomeKind::Committed),
        1 => Some(OutcomeKind::Stale),
        2 => Some(OutcomeKind::Invalid),
        _ => None,
    }
}

fn decision_kind(v: u8) -> Option<NetDecisionKind> {
    match v {
        0 => Some(NetDecisionKind::Grant),
        1 => Some(NetDecisionKind::Revoke),
        2 => Some(NetDecisionKind::Rebalance),
        _ => None,
    }
}

/// Decodes a host→IPU entry (no counting).
pub fn decode_to_ipu(body: &EntryBody) -> Result<ToIpu, NetDecodeError> {
    let p = &body.payload;
    match body.tag.get() {
        TAG_NET_SAMPLE => {
            header(body, SAMPLE_LEN)?;
            decode_sample(p)
        }
        TAG_NET_INTERVAL => {
            header(body, INTERVAL_LEN)?;
            Ok(ToIpu::Interval(IntervalReport {
                interval: u32_at(p, 0),
                table_epoch: u32_at(p, 4),
                interval_ns: u64_at(p, 8),
            }))
        }
        TAG_NET_OUTCOME => {
            header(body, OUTCOME_LEN)?;
            let kind = outcome_kind(p[12]).ok_or(NetDecodeError::Range)?;
            Ok(ToIpu::Outcome(NetOutcome {
                txn: u64_at(p, 0),
                table_epoch: u32_at(p, 8),
                kind,
            }))
        }
        TAG_NET_CONFIG => {
            header(body, CONFIG_LEN)?;
            decode_config(p)
        }
        t => Err(NetDecodeError::BadTag(t)),
    }
}

/// Decodes an IPU→host decision (no counting).
pub fn decode_decision(body: &EntryBody) -> Result<NetDecision, NetDecodeError> {
    if body.tag.get() != TAG_NET_DECISION {
        return Err(NetDecodeError::BadTag(body.tag.get()));
    }
    header(body, DECISION_LEN)?;
    let p = &body.payload;
    if p[14] != 0 || p[15] != 0 {
        return Err(NetDecodeError::Reserved);
    }
    let kind = decision_kind(p[12]).ok_or(NetDecodeError::Range)?;
    if p[13] as usize >= MAX_WORKERS {
        return Err(NetDecodeError::Range);
    }
    let weights = unpack_weights(&p[16..48]);
    Ok(NetDecision {
        txn: u64_at(p, 0),
        table_epoch: u32_at(p, 8),
        kind,
        worker: p[13],
        weights,
    })
}

/// The session configuration the host sends first (and again whenever it changes): the
/// worker count and the allocator's parameters. The policy (re)starts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Workers the server has (`1..=MAX_WORKERS`).
    pub n_workers: u8,
    /// Allocator parameters.
    pub params: NetParams,
}

/// The session configuration (host→IPU).
pub const TAG_NET_CONFIG: u16 = 0x0405;
/// Payload bytes of a configuration.
pub const CONFIG_LEN: u16 = 40;

/// Encodes a configuration.
pub fn encode_config(c: &NetConfig) -> EntryBody {
    let p = &c.params;
    let mut w = W([0; PAYLOAD_SIZE]);
    w.put(0, &[c.n_workers, p.min_workers, p.standing_checks, 0]);
    let words = [
        p.delay_add_us,
        p.target_util_permille,
        p.hysteresis_millicores,
        p.revoke_after,
        p.grant_hold,
        p.slow_permille,
        p.rebalance_every,
        p.outcome_timeout,
    ];
    for (i, v) in words.iter().enumerate() {
        w.put(4 + 4 * i, &v.to_le_bytes());
    }
    w.put(36, &0u32.to_le_bytes());
    EntryBody::new(TAG_NET_CONFIG, 0, &w.0[..CONFIG_LEN as usize])
}

fn decode_config(p: &[u8; PAYLOAD_SIZE]) -> Result<ToIpu, NetDecodeError> {
    if p[3] != 0 || u32_at(p, 36) != 0 {
        return Err(NetDecodeError::Reserved);
    }
    if p[0] == 0 || p[0] as usize > MAX_WORKERS || p[1] == 0 || p[1] > p[0] {
        return Err(NetDecodeError::Range);
    }
    let params = NetParams {
        min_workers: p[1],
        standing_checks: p[2],
        delay_add_us: u32_at(p, 4),
        target_util_permille: u32_at(p, 8),
        hysteresis_millicores: u32_at(p, 12),
        revoke_after: u32_at(p, 16),
        grant_hold: u32_at(p, 20),
        slow_permille: u32_at(p, 24),
        rebalance_every: u32_at(p, 28),
        outcome_timeout: u32_at(p, 32),
    };
    Ok(ToIpu::Config(NetConfig {
        n_workers: p[0],
        params,
    }))
}

/// A counting decoder for each direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetDecoder {
    /// Counters.
    pub stats: NetDecodeStats,
}

impl NetDecoder {
    /// Decodes a host→IPU entry and counts.
    pub fn to_ipu(&mut self, body: &EntryBody) -> Result<ToIpu, NetDecodeError> {
        let r = decode_to_ipu(body);
        self.stats.count(&r);
        r
    }
    /// Decodes a decision and counts.
    pub fn decision(&mut self, body: &EntryBody) -> Result<NetDecision, NetDecodeError> {
        let r = decode_decision(body);
        self.stats.count(&r);
        r
    }
}

/// The steering table for `weights`: worker w gets a share of the 128 entries proportional to
/// its weight (largest remainder, ties to the lower index), spread so that consecutive entries
/// name different workers where possible. `None` if every weight is 0.
pub fn build_table(weights: &[u8; MAX_WORKERS]) -> Option<[u8; TABLE_ENTRIES]> {
    let total: u32 = weights.iter().map(|w| *w as u32).sum();
    if total == 0 {
        return None;
    }
    let mut count = [0u32; MAX_WORKERS];
    let mut rem = [0u32; MAX_WORKERS];
    let mut given = 0;
    for (i, w) in weights.iter().enumerate() {
        let share = *w as u32 * TABLE_ENTRIES as u32;
        count[i] = share / total;
        rem[i] = share % total;
        given += count[i];
    }
    while given < TABLE_ENTRIES as u32 {
        let mut best = 0;
        for i in 0..MAX_WORKERS {
            if rem[i] > rem[best] {
                best = i;
            }
        }
        count[best] += 1;
        rem[best] = 0;
        given += 1;
    }
    Some(spread(&count))
}

/// Interleaves `count[w]` entries per worker: each entry goes to the worker furthest behind
/// its share so far (deterministic).
fn spread(count: &[u32; MAX_WORKERS]) -> [u8; TABLE_ENTRIES] {
    let mut table = [0u8; TABLE_ENTRIES];
    let mut used = [0u32; MAX_WORKERS];
    for (e, slot) in table.iter_mut().enumerate() {
        let mut best: Option<usize> = None;
        let mut best_lag = i64::MIN;
        for w in 0..MAX_WORKERS {
            if used[w] >= count[w] {
                continue;
            }
            // How far behind its proportional position worker w is at entry e.
            let lag = (count[w] as i64 * (e as i64 + 1)) - (used[w] as i64 * TABLE_ENTRIES as i64);
            if lag > best_lag {
                best_lag = lag;
                best = Some(w);
            }
        }
        if let Some(w) = best {
            used[w] += 1;
            *slot = w as u8;
        }
    }
    table
}

/// Equal weights ([`EQUAL_WEIGHT`]) for the workers set in `active` (bit w: worker w), 0
/// elsewhere.
pub fn equal_weights(active: u64) -> [u8; MAX_WORKERS] {
    let mut w = [0u8; MAX_WORKERS];
    for (i, x) in w.iter_mut().enumerate() {
        if active & (1 << i) != 0 {
            *x = EQUAL_WEIGHT;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkerSample {
        WorkerSample {
            worker: 3,
            active: true,
            queued: 7,
            oldest_age_us: 1234,
            busy_ns: 5,
            idle_ns: u64::MAX,
            completions: 99,
            table_entries: 32,
        }
    }

    #[test]
    fn roundtrips() {
        let s = sample();
        let b = encode_sample(&s, 41);
        assert_eq!(
            decode_to_ipu(&b),
            Ok(ToIpu::Sample {
                sample: s,
                interval: 41
            })
        );
        let r = IntervalReport {
            interval: 9,
            table_epoch: 3,
            interval_ns: 1_000_000,
        };
        assert_eq!(decode_to_ipu(&encode_interval(&r)), Ok(ToIpu::Interval(r)));
        let o = NetOutcome {
            txn: 5,
            table_epoch: 6,
            kind: OutcomeKind::Stale,
        };
        assert_eq!(decode_to_ipu(&encode_outcome(&o)), Ok(ToIpu::Outcome(o)));
        let c = NetConfig {
            n_workers: 8,
            params: NetParams::default(),
        };
        assert_eq!(decode_to_ipu(&encode_config(&c)), Ok(ToIpu::Config(c)));
        let d = NetDecision {
            txn: 1,
            table_epoch: 2,
            kind: NetDecisionKind::Revoke,
            worker: 63,
            weights: equal_weights(0x7fff_ffff_ffff_ffff),
        };
        assert_eq!(decode_decision(&encode_decision(&d)), Ok(d));
        // Every weight 0..=15 at every position survives the 4-bit packing; above 15 saturates.
        let mut ws = [0u8; MAX_WORKERS];
        for (i, w) in ws.iter_mut().enumerate() {
            *w = (i % 16) as u8;
        }
        let d2 = NetDecision { weights: ws, ..d };
        assert_eq!(decode_decision(&encode_decision(&d2)), Ok(d2));
        ws[5] = 200;
        let got = decode_decision(&encode_decision(&NetDecision { weights: ws, ..d })).unwrap();
        assert_eq!(
            (got.weights[5], got.weights[4], got.weights[6]),
            (MAX_WEIGHT, 4, 6)
        );
        let c64 = NetConfig {
            n_workers: 64,
            params: NetParams::default(),
        };
        assert_eq!(decode_to_ipu(&encode_config(&c64)), Ok(ToIpu::Config(c64)));
        let mut c65 = encode_config(&c64);
        c65.payload[0] = 65;
        assert_eq!(decode_to_ipu(&c65), Err(NetDecodeError::Range));
    }

    #[test]
    fn decoder_counts_each_reason() {
        let mut dec = NetDecoder::default();
        let good = encode_sample(&sample(), 1);
        let mut bad_len = good;
        bad_len.len = 47.into();
        let mut bad_aux = good;
        bad_aux.aux = 1.into();
        let mut bad_worker = good;
        bad_worker.payload[0] = 64;
        let mut bad_flag = good;
        bad_flag.payload[1] = 2;
        for b in [
            good,
            bad_len,
            bad_aux,
            bad_worker,
            bad_flag,
            EntryBody::ZERO,
        ] {
            let _ = dec.to_ipu(&b);
        }
        let mut bad_kind = encode_decision(&NetDecision {
            txn: 1,
            table_epoch: 1,
            kind: NetDecisionKind::Grant,
            worker: 0,
            weights: [1; MAX_WORKERS],
        });
        bad_kind.payload[12] = 3;
        let _ = dec.decision(&bad_kind);
        let _ = dec.decision(&good);
        assert_eq!(
            dec.stats,
            NetDecodeStats {
                ok: 1,
                bad_tag: 2,
                bad_length: 1,
                reserved: 1,
                range: 3
            }
        );
    }

    #[test]
    fn the_rings_are_placed_with_their_channel_vector() {
        use crate::layout::{Layout, MIN_VECTORS};
        // docs/abi.md §4 and the default layout table: net is channel 3, vector 4.
        let l = Layout::v1(512, 1 << 20, MIN_VECTORS).unwrap();
        let (d, t) = (
            l.place(KIND_RING_NET_DECISIONS),
            l.place(KIND_RING_NET_TELEMETRY),
        );
        let v = crate::subsystem::channel_vector(NET_CHANNEL.index());
        assert_eq!((d.vector, t.vector), (v, v));
        assert_eq!((d.size, t.size), (0x8000, 0x8000));
        assert_eq!((d.offset, t.offset), (0x1C000, 0x5C000));
        // A transport without every channel vector is refused.
        assert!(Layout::v1(512, 1 << 20, MIN_VECTORS - 1).is_err());
    }

    #[test]
    fn table_shares_follow_weights() {
        let t = build_table(&equal_weights(0b1111)).unwrap();
        for w in 0..4u8 {
            assert_eq!(t.iter().filter(|x| **x == w).count(), 32);
        }
        // Spread: the first four entries name four different workers.
        assert_eq!(&t[..4], &[0, 1, 2, 3]);
        let mut ws = equal_weights(0b111);
        ws[1] = EQUAL_WEIGHT / 2; // half of the others' share
        let t = build_table(&ws).unwrap();
        let n1 = t.iter().filter(|x| **x == 1).count();
        assert_eq!(n1, 26, "8/40 of 128 is 25.6");
        assert_eq!(t.iter().filter(|x| **x == 0).count(), 51);
        assert!(build_table(&[0; MAX_WORKERS]).is_none());
        // 64 workers: two entries each, every worker named.
        let t = build_table(&equal_weights(u64::MAX)).unwrap();
        for w in 0..64u8 {
            assert_eq!(t.iter().filter(|x| **x == w).count(), 2);
        }
    }
}
