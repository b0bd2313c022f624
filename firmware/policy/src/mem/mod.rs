//! Memory-management policy (DESIGN.md §7): which regions of a managed memory area are cold,
//! how many to reclaim per interval, which to promote back, which to collapse into huge pages.
//!
//! The host mechanism (`wave-host-shim`'s `mem` module) divides a memory area into regions
//! (2 MiB by default) and reports, once per scan interval, one [`RegionRecord`] per region that
//! changed (touched, or moved between tiers). The policy ages every region kstaled-style (age =
//! scan intervals since the last observed access), keeps cold-age and promotion histograms, and
//! chooses a cold threshold so that promotions stay under an SLO on the promotion rate (Google's
//! software-defined far memory: at most P% of the working set promoted per minute). It answers
//! with [`MemDecision`]s, each a transaction naming the region's sequence number; the host
//! refuses one whose region moved on (stale) and reports every outcome as a [`MemOutcome`].
//!
//! ```
//! use wave_policy::mem::{MemConfig, MemDecision, MemPolicy, RegionId, RegionRecord};
//! use wave_policy::Seq;
//! let cfg = MemConfig { n_regions: 4, min_threshold: 1, ..MemConfig::default() };
//! let mut policy = MemPolicy::<4>::new(cfg).unwrap();
//! let mut out: heapless::Vec<MemDecision, 16> = heapless::Vec::new();
//! // interval 1: region 0 was written; the others were not touched
//! policy.on_record(RegionRecord::touched(RegionId(0), Seq(1), false, true));
//! policy.end_interval(&mut out);
//! // interval 2: nothing touched; regions 1..4 have age 2 and are reclaimed (quota allowing)
//! policy.end_interval(&mut out);
//! assert!(out.iter().any(|d| matches!(d, MemDecision::Reclaim { region: RegionId(1), .. })));
//! ```
//!
//! Everything the host reports is untrusted: region ids out of range, records older than what
//! the policy knows, outcomes for transactions it never issued are counted in [`MemStats`] and
//! ignored, never a panic.

mod hist;
mod policy;
#[cfg(test)]
mod tests;

pub use hist::{age_bin, AgeHistogram, AGE_BINS};
pub use policy::{MemConfig, MemConfigError, MemPolicy};

use crate::types::{Seq, TxnId};

/// A region index in `0..n_regions` (the host numbers regions densely from the area's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId(pub u32);

/// Which tier a region lives in, as the host reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Resident in DRAM.
    Near,
    /// (Mostly) in the far tier (compressed swap or the userspace far tier).
    Far,
}

/// One per-interval record for a region that changed. `seq` is the region's sequence number
/// after the change (the host bumps it whenever the region is touched or changes tier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionRecord {
    /// The region.
    pub region: RegionId,
    /// The region's sequence number after this interval.
    pub seq: Seq,
    /// A read was observed in the interval (sampled; may miss reads).
    pub read: bool,
    /// A write was observed in the interval (exact).
    pub written: bool,
    /// The region's tier at the end of the interval.
    pub tier: Tier,
    /// Pages of a far region that came back into DRAM in the interval (demand faults): the
    /// unit of the promotion SLO. 0 for resident regions.
    pub faulted: u32,
}

impl RegionRecord {
    /// A record of a resident region touched in the interval.
    pub fn touched(region: RegionId, seq: Seq, read: bool, written: bool) -> Self {
        RegionRecord {
            region,
            seq,
            read,
            written,
            tier: Tier::Near,
            faulted: 0,
        }
    }

    /// A record of a far region `faulted` of whose pages came back in the interval.
    pub fn far(region: RegionId, seq: Seq, faulted: u32) -> Self {
        RegionRecord {
            region,
            seq,
            read: faulted > 0,
            written: false,
            tier: Tier::Far,
            faulted,
        }
    }

    /// `true` if any access was observed.
    pub fn accessed(&self) -> bool {
        self.read || self.written
    }
}

/// What a decision asks the host to do with a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemAction {
    /// Move the region to the far tier.
    Reclaim,
    /// Bring the region back into DRAM.
    Promote,
    /// Collapse the region into a huge page.
    Collapse,
}

/// A decision: a transaction on one region, valid only while the region is still at `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemDecision {
    /// Reclaim `region` to the far tier.
    Reclaim {
        txn: TxnId,
        region: RegionId,
        seq: Seq,
    },
    /// Promote `region` back to DRAM.
    Promote {
        txn: TxnId,
        region: RegionId,
        seq: Seq,
    },
    /// Collapse `region` into a huge page.
    Collapse {
        txn: TxnId,
        region: RegionId,
        seq: Seq,
    },
}

impl MemDecision {
    /// Build a decision of `action`.
    pub fn new(action: MemAction, txn: TxnId, region: RegionId, seq: Seq) -> Self {
        match action {
            MemAction::Reclaim => MemDecision::Reclaim { txn, region, seq },
            MemAction::Promote => MemDecision::Promote { txn, region, seq },
            MemAction::Collapse => MemDecision::Collapse { txn, region, seq },
        }
    }

    /// The decision's parts: action, transaction, region, sequence number.
    pub fn parts(&self) -> (MemAction, TxnId, RegionId, Seq) {
        match *self {
            MemDecision::Reclaim { txn, region, seq } => (MemAction::Reclaim, txn, region, seq),
            MemDecision::Promote { txn, region, seq } => (MemAction::Promote, txn, region, seq),
            MemDecision::Collapse { txn, region, seq } => (MemAction::Collapse, txn, region, seq),
        }
    }
}

/// How the host disposed of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// Applied.
    Committed,
    /// Refused: the region's sequence number had moved on.
    Stale,
    /// Tried and failed (the kernel refused, no far tier, malformed decision).
    Failed,
}

/// The host's report on one decision. `seq` is the region's sequence number after the outcome
/// (a commit that changes the region's tier bumps it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemOutcome {
    /// The transaction the outcome is for.
    pub txn: TxnId,
    /// The region the transaction named.
    pub region: RegionId,
    /// The region's sequence number after the outcome.
    pub seq: Seq,
    /// What happened.
    pub kind: OutcomeKind,
}

/// Where decisions go (a ring, a vector). Mirrors [`crate::DecisionSink`].
pub trait MemSink {
    /// Append one decision; `false` if there is no room.
    fn try_push(&mut self, d: MemDecision) -> bool;
}

impl<const N: usize> MemSink for heapless::Vec<MemDecision, N> {
    fn try_push(&mut self, d: MemDecision) -> bool {
        self.push(d).is_ok()
    }
}

#[cfg(any(test, feature = "std"))]
impl MemSink for std::vec::Vec<MemDecision> {
    fn try_push(&mut self, d: MemDecision) -> bool {
        self.push(d);
        true
    }
}

/// Counters the memory policy keeps (plain integers, copyable into a shared counters block).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Intervals ended.
    pub intervals: u64,
    /// Records applied.
    pub records: u64,
    /// Records naming a region id out of range (skipped).
    pub bad_region: u64,
    /// Records whose sequence number was not newer than the one known (skipped).
    pub old_records: u64,
    /// Decisions emitted, by action (`[reclaim, promote, collapse]`).
    pub decisions: [u64; 3],
    /// Outcomes by kind (`[committed, stale, failed]`).
    pub outcomes: [u64; 3],
    /// Outcomes for no transaction in flight on that region (skipped).
    pub unknown_outcomes: u64,
    /// Far regions observed accessed (demand promotions).
    pub promotions: u64,
    /// Pages the application faulted back from the far tier (demand promotions, Google's
    /// "promotions"): what the SLO limits. Pages a whole-region promotion brings back ahead
    /// of use are not counted: they cost no fault.
    pub promoted_pages: u64,
    /// Times the feedback raised the threshold floor because promotions broke the SLO.
    pub slo_backoffs: u64,
    /// Decisions the sink refused (retried next interval).
    pub sink_full: u64,
}

impl MemAction {
    /// Index into [`MemStats::decisions`].
    pub fn index(self) -> usize {
        match self {
            MemAction::Reclaim => 0,
            MemAction::Promote => 1,
            MemAction::Collapse => 2,
        }
    }
}

impl OutcomeKind {
    /// Index into [`MemStats::outcomes`].
    pub fn index(self) -> usize {
        match self {
            OutcomeKind::Committed => 0,
            OutcomeKind::Stale => 1,
            OutcomeKind::Failed => 2,
        }
    }
}
