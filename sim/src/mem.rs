//! The memory policy over a recorded access trace, at any memory size: how its cost grows.
//!
//! A trace is what the host mechanism posted, interval by interval (one record per changed
//! region; the demo records it, `wave_host_shim::mem::wire`). [`replay`] tiles it `scale`
//! times side by side (tile t's region r is region `t × base + r`, so a 1 GiB trace stands for
//! a 256 GiB memory whose every GiB behaves like the recorded one), and runs the shipped
//! `MemPolicy` over it with a simulated host that commits every decision: a reclaimed region
//! is far, and its recorded accesses then come back as faulted pages; a promoted one is near.
//! The quotas scale with the tiles (they are amounts of memory per interval).
//! It measures the policy's time per interval (records in, decisions out, outcomes in), the
//! work an IPU saves the host.

use std::time::Instant;

use wave_policy::mem::{
    MemConfig, MemDecision, MemOutcome, MemPolicy, OutcomeKind, RegionId, RegionRecord, Tier,
};
use wave_policy::Seq;

/// Regions the replay's policy can hold (256 GiB at 2 MiB).
pub const MAX_REGIONS: usize = 131_072;

/// What one replay measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplayReport {
    /// Regions managed.
    pub regions: u32,
    /// Intervals replayed.
    pub intervals: u64,
    /// Records fed to the policy.
    pub records: u64,
    /// Decisions it made.
    pub decisions: u64,
    /// Mean wall time of the policy per interval, ns (records, decisions, outcomes).
    pub ns_per_interval: f64,
    /// Regions in the far tier at the end.
    pub far_regions: u32,
    /// Policy invariant violations at the end (0 or 1).
    pub violations: u64,
}

struct Host {
    seq: Vec<u32>,
    far: Vec<bool>,
}

impl Host {
    fn record(&mut self, r: u32, rec: &RegionRecord) -> RegionRecord {
        let i = r as usize;
        self.seq[i] = self.seq[i].wrapping_add(1);
        let far = self.far[i];
        RegionRecord {
            region: RegionId(r),
            seq: Seq(self.seq[i]),
            read: rec.read,
            written: rec.written,
            tier: if far { Tier::Far } else { Tier::Near },
            faulted: if far && rec.accessed() {
                rec.faulted.max(1)
            } else {
                0
            },
        }
    }

    fn apply(&mut self, d: &MemDecision) -> MemOutcome {
        let (action, txn, region, seq) = d.parts();
        let i = region.0 as usize;
        let kind = if self.seq.get(i) != Some(&seq.0) {
            OutcomeKind::Stale
        } else {
            use wave_policy::mem::MemAction::*;
            match action {
                Reclaim => self.far[i] = true,
                Promote => self.far[i] = false,
                Collapse => {}
            }
            if action != Collapse {
                self.seq[i] = self.seq[i].wrapping_add(1);
            }
            OutcomeKind::Committed
        };
        MemOutcome {
            txn,
            region,
            seq: Seq(self.seq.get(i).copied().unwrap_or(0)),
            kind,
        }
    }
}

/// Replays `trace` (recorded over `base` regions) tiled `scale` times, with policy `cfg`
/// (`n_regions` is set). Runs in a thread with a stack large enough for the policy.
pub fn replay(trace: &[Vec<RegionRecord>], base: u32, scale: u32, cfg: MemConfig) -> ReplayReport {
    let regions = base.saturating_mul(scale).min(MAX_REGIONS as u32);
    let tiles = (regions / base.max(1)).max(1);
    // The quotas are per memory size (DAMOS-style: bytes per interval), so they scale too.
    let cfg = MemConfig {
        n_regions: regions.max(1),
        reclaim_quota: cfg.reclaim_quota.saturating_mul(tiles),
        promote_quota: cfg.promote_quota.saturating_mul(tiles),
        collapse_quota: cfg.collapse_quota.saturating_mul(tiles),
        ..cfg
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn_scoped(s, || run(trace, base, regions, cfg))
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    })
}

fn run(trace: &[Vec<RegionRecord>], base: u32, regions: u32, cfg: MemConfig) -> ReplayReport {
    let Ok(policy) = MemPolicy::<MAX_REGIONS>::new(cfg) else {
        return ReplayReport::default();
    };
    let mut policy = Box::new(policy);
    let mut host = Host {
        seq: vec![0; regions as usize],
        far: vec![false; regions as usize],
    };
    let tiles = regions / base.max(1);
    let mut out: Vec<MemDecision> = Vec::new();
    let mut report = ReplayReport {
        regions,
        ..ReplayReport::default()
    };
    let mut ns = 0u128;
    let mut batch = Vec::new();
    for interval in trace {
        batch.clear();
        for t in 0..tiles {
            for rec in interval.iter().filter(|r| r.region.0 < base) {
                batch.push(host.record(t * base + rec.region.0, rec));
            }
        }
        out.clear();
        let t0 = Instant::now();
        for r in &batch {
            policy.on_record(*r);
        }
        policy.end_interval(&mut out);
        ns += t0.elapsed().as_nanos();
        let outcomes: Vec<MemOutcome> = out.iter().map(|d| host.apply(d)).collect();
        let t1 = Instant::now();
        for o in outcomes {
            policy.on_outcome(o);
        }
        ns += t1.elapsed().as_nanos();
        report.intervals += 1;
        report.records += batch.len() as u64;
        report.decisions += out.len() as u64;
    }
    report.ns_per_interval = ns as f64 / report.intervals.max(1) as f64;
    report.far_regions = policy.far_regions();
    report.violations = policy.check_invariants().is_err() as u64;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace over 8 regions: region 0 written every interval, region 1 read every other.
    fn trace(n: usize) -> Vec<Vec<RegionRecord>> {
        (0..n)
            .map(|i| {
                let mut v = vec![RegionRecord::touched(RegionId(0), Seq(0), false, true)];
                if i % 2 == 0 {
                    v.push(RegionRecord::touched(RegionId(1), Seq(0), true, false));
                }
                v
            })
            .collect()
    }

    #[test]
    fn a_tiled_trace_reclaims_the_idle_regions_of_every_tile() {
        let cfg = MemConfig {
            intervals_per_minute: 1,
            ..MemConfig::default()
        };
        let one = replay(&trace(40), 8, 1, cfg);
        let four = replay(&trace(40), 8, 4, cfg);
        assert_eq!((one.regions, four.regions), (8, 32));
        assert_eq!(one.far_regions, 6, "all but the two used regions: {one:?}");
        assert_eq!(four.far_regions, 24, "the same in every tile: {four:?}");
        assert_eq!(four.records, 4 * one.records);
        assert_eq!(one.violations + four.violations, 0);
    }
}
