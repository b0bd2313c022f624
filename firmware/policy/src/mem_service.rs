//! The memory service: [`MemPolicy`] under the agent runtime, over the memory channel
//! (`docs/abi.md` §8.3). The same code runs on the IPU (`wave.services=mem@N`), in a host
//! thread (the on-host baseline) and in tests.
//!
//! On a new session it builds the policy from the host's `MemConfig` block. Each step it first
//! sends what it still owes the host (decisions, then the interval's Done), and only when that
//! is all out does it take more off the records ring: records and outcomes go straight to the
//! policy, a Tick ends the policy's interval and queues its decisions and a Done. No
//! allocation; bounded work per step; every entry it rejects is counted.

use heapless::Vec;
use wave_abi::layout::Layout;
use wave_abi::mem::{
    encode_to_host, MemDecodeStats, MemSessionConfig, ToHost, ToIpu, ToIpuDecoder, WireAction,
    WireOutcome, FLAG_FAR, FLAG_READ, FLAG_WRITTEN, MEM_CHANNEL,
};
use wave_abi::ring::EntryBody;
use wave_abi::{Channel, Endpoint, SharedRegion};

use crate::mem::{
    MemAction, MemConfig, MemDecision, MemOutcome, MemPolicy, OutcomeKind, RegionId, RegionRecord,
    Tier,
};
use crate::runtime::{Log, Service, Step};

/// Entries taken off the records ring per step at most.
pub const MEM_BATCH: usize = 64;
/// Decisions one interval may queue (the sum of the default quotas fits with room to spare).
pub const MEM_OUT: usize = 256;

/// Service counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemServiceStats {
    /// Sessions a policy was built for.
    pub sessions: u64,
    /// Sessions whose configuration was refused (the service stays idle for them).
    pub config_errors: u64,
    /// Records, outcomes and ticks applied.
    pub records: u64,
    /// See `records`.
    pub outcomes: u64,
    /// See `records`.
    pub ticks: u64,
    /// Decisions sent to the host.
    pub decisions: u64,
    /// Entries the decoder rejected (see [`MemService::decode_stats`] for why).
    pub invalid: u64,
}

/// The memory agent over at most `N` regions.
pub struct MemService<'a, const N: usize> {
    region: SharedRegion<'a>,
    layout: Layout,
    session: Option<u32>,
    policy: Option<MemPolicy<N>>,
    decoder: ToIpuDecoder,
    pending: Vec<MemDecision, MEM_OUT>,
    sent: usize,
    done: Option<ToHost>,
    stats: MemServiceStats,
}

impl<'a, const N: usize> MemService<'a, N> {
    /// A service over the memory blocks of `region` (placed per `layout`).
    pub fn new(region: SharedRegion<'a>, layout: Layout) -> Self {
        MemService {
            region,
            layout,
            session: None,
            policy: None,
            decoder: ToIpuDecoder::default(),
            pending: Vec::new(),
            sent: 0,
            done: None,
            stats: MemServiceStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> MemServiceStats {
        self.stats
    }

    /// Decoder counters (per rejection reason).
    pub fn decode_stats(&self) -> MemDecodeStats {
        self.decoder.stats
    }

    /// The policy of the current session, if one was built.
    pub fn policy(&self) -> Option<&MemPolicy<N>> {
        self.policy.as_ref()
    }

    /// Builds the policy for `session` from the host's configuration.
    fn start_session(&mut self, session: u32, log: &mut dyn Log) {
        self.session = Some(session);
        self.policy = None;
        self.pending.clear();
        self.sent = 0;
        self.done = None;
        let cfg = match MemSessionConfig::read(&self.region, &self.layout) {
            Ok((_, c)) => c,
            Err(e) => {
                self.stats.config_errors += 1;
                log.log(format_args!("mem: session {session}: {e}"));
                return;
            }
        };
        match MemPolicy::new(policy_config(&cfg)) {
            Ok(p) => {
                self.policy = Some(p);
                self.stats.sessions += 1;
                log.log(format_args!(
                    "mem: session {session}: {} regions",
                    cfg.n_regions
                ));
            }
            Err(e) => {
                self.stats.config_errors += 1;
                log.log(format_args!(
                    "mem: session {session}: configuration refused ({e:?}; capacity {N} regions)"
                ));
            }
        }
    }

    /// Sends queued decisions, then the Done. Returns entries sent and the doorbell to ring.
    fn flush(&mut self, ep: &mut Endpoint<'_>) -> (usize, Option<u16>) {
        let mut buf = [EntryBody::ZERO; 32];
        let mut n = 0;
        for d in self.pending.iter().skip(self.sent).take(buf.len()) {
            buf[n] = encode_to_host(&decision_msg(d));
            n += 1;
        }
        if n < buf.len() && self.sent + n == self.pending.len() {
            if let Some(done) = self.done {
                buf[n] = encode_to_host(&done);
                n += 1;
            }
        }
        if n == 0 {
            return (0, None);
        }
        let (sent, ring) = ep.send(MEM_CHANNEL, buf.get(..n).unwrap_or(&[]));
        let decisions = sent.min(self.pending.len() - self.sent);
        self.sent += decisions;
        self.stats.decisions += decisions as u64;
        if sent > decisions {
            self.done = None;
        }
        if self.done.is_none() && self.sent == self.pending.len() {
            self.pending.clear();
            self.sent = 0;
        }
        (sent, ring)
    }

    fn owes(&self) -> bool {
        self.done.is_some() || self.sent < self.pending.len()
    }

    /// Takes entries off the records ring until a Tick (or the batch) is done.
    fn consume(&mut self, ep: &mut Endpoint<'_>) -> usize {
        let (rx, _) = ep.channel(MEM_CHANNEL);
        let mut taken = 0;
        while taken < MEM_BATCH {
            let Some(body) = rx.poll() else { break };
            taken += 1;
            match self.decoder.decode(&body) {
                Ok(m) => {
                    if self.apply(m) {
                        break;
                    }
                }
                Err(_) => self.stats.invalid += 1,
            }
        }
        taken
    }

    /// Applies one message; true after a Tick (its decisions are queued).
    fn apply(&mut self, m: ToIpu) -> bool {
        let Some(policy) = self.policy.as_mut() else {
            return false;
        };
        match m {
            ToIpu::Record {
                region,
                seq,
                flags,
                faulted,
            } => {
                self.stats.records += 1;
                policy.on_record(RegionRecord {
                    faulted,
                    region: RegionId(region),
                    seq,
                    read: flags & FLAG_READ != 0,
                    written: flags & FLAG_WRITTEN != 0,
                    tier: if flags & FLAG_FAR != 0 {
                        Tier::Far
                    } else {
                        Tier::Near
                    },
                });
                false
            }
            ToIpu::Outcome {
                txn,
                region,
                seq,
                kind,
            } => {
                self.stats.outcomes += 1;
                policy.on_outcome(MemOutcome {
                    txn,
                    region: RegionId(region),
                    seq,
                    kind: outcome_kind(kind),
                });
                false
            }
            ToIpu::Tick { interval } => {
                self.stats.ticks += 1;
                let n = policy.end_interval(&mut self.pending);
                self.done = Some(ToHost::Done {
                    interval,
                    decisions: n as u32,
                    threshold: policy.threshold(),
                });
                true
            }
        }
    }
}

/// The policy's configuration from the wire's (0 = the policy's default).
pub fn policy_config(c: &MemSessionConfig) -> MemConfig {
    let d = MemConfig::default();
    let p = |i: usize, dflt: u32| match c.params[i] {
        0 => dflt,
        v => v,
    };
    MemConfig {
        n_regions: c.n_regions,
        min_threshold: p(0, d.min_threshold),
        max_threshold: p(1, d.max_threshold),
        intervals_per_minute: p(2, d.intervals_per_minute),
        slo_ppm_per_minute: p(3, d.slo_ppm_per_minute),
        wss_age: p(4, d.wss_age),
        reclaim_quota: p(5, d.reclaim_quota),
        promote_quota: p(6, d.promote_quota),
        collapse_after: p(7, d.collapse_after),
        collapse_quota: p(8, d.collapse_quota),
        pending_timeout: p(9, d.pending_timeout),
        region_pages: p(10, d.region_pages),
        promote_pages: p(11, d.promote_pages),
        initial_threshold: p(12, d.initial_threshold),
    }
}

/// The wire's parameter block for `c` (the inverse of [`policy_config`]).
pub fn wire_config(c: &MemConfig) -> MemSessionConfig {
    MemSessionConfig {
        n_regions: c.n_regions,
        params: [
            c.min_threshold,
            c.max_threshold,
            c.intervals_per_minute,
            c.slo_ppm_per_minute,
            c.wss_age,
            c.reclaim_quota,
            c.promote_quota,
            c.collapse_after,
            c.collapse_quota,
            c.pending_timeout,
            c.region_pages,
            c.promote_pages,
            c.initial_threshold,
        ],
    }
}

/// A decision as its wire message.
pub fn decision_msg(d: &MemDecision) -> ToHost {
    let (action, txn, region, seq) = d.parts();
    ToHost::Decision {
        txn,
        region: region.0,
        seq,
        action: match action {
            MemAction::Reclaim => WireAction::Reclaim,
            MemAction::Promote => WireAction::Promote,
            MemAction::Collapse => WireAction::Collapse,
        },
    }
}

/// A wire decision as the policy's (what the host applies).
pub fn decision_from_wire(m: &ToHost) -> Option<MemDecision> {
    let ToHost::Decision {
        txn,
        region,
        seq,
        action,
    } = *m
    else {
        return None;
    };
    let action = match action {
        WireAction::Reclaim => MemAction::Reclaim,
        WireAction::Promote => MemAction::Promote,
        WireAction::Collapse => MemAction::Collapse,
    };
    Some(MemDecision::new(action, txn, RegionId(region), seq))
}

fn outcome_kind(k: WireOutcome) -> OutcomeKind {
    match k {
        WireOutcome::Committed => OutcomeKind::Committed,
        WireOutcome::Stale => OutcomeKind::Stale,
        WireOutcome::Failed => OutcomeKind::Failed,
    }
}

/// An outcome as its wire message.
pub fn outcome_msg(o: &MemOutcome) -> ToIpu {
    ToIpu::Outcome {
        txn: o.txn,
        region: o.region.0,
        seq: o.seq,
        kind: match o.kind {
            OutcomeKind::Committed => WireOutcome::Committed,
            OutcomeKind::Stale => WireOutcome::Stale,
            OutcomeKind::Failed => WireOutcome::Failed,
        },
    }
}

/// A record as its wire message.
pub fn record_msg(r: &RegionRecord) -> ToIpu {
    let mut flags = 0;
    if r.read {
        flags |= FLAG_READ;
    }
    if r.written {
        flags |= FLAG_WRITTEN;
    }
    if r.tier == Tier::Far {
        flags |= FLAG_FAR;
    }
    ToIpu::Record {
        region: r.region.0,
        seq: r.seq,
        flags,
        faulted: r.faulted,
    }
}

impl<'a, const N: usize> Service<'a> for MemService<'a, N> {
    fn name(&self) -> &'static str {
        "mem"
    }
    fn channel(&self) -> Channel {
        MEM_CHANNEL
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, _now_ns: u64, log: &mut dyn Log) -> Step {
        if !ep.is_up() {
            return Step::default();
        }
        let session = ep.session();
        if self.session != Some(session) {
            self.start_session(session, log);
        }
        let (mut work, mut ring) = self.flush(ep);
        if !self.owes() {
            let taken = self.consume(ep);
            work += taken;
            if self.owes() {
                let (sent, r) = self.flush(ep);
                work += sent;
                ring = ring.or(r);
            }
        }
        Step {
            work,
            doorbells: ring.map_or(0, |v| 1u64 << (v & 63)),
        }
    }
    fn counters(&self) -> (u64, u64) {
        (self.stats.invalid, self.stats.decisions)
    }
}

#[cfg(test)]
mod tests;
