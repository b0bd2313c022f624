//! [`MemPolicy`]: per-region ages, the threshold controller (promotion-rate SLO), reclaim,
//! promotion and collapse decisions with quotas, and transaction bookkeeping.

use super::hist::AgeHistogram;
use super::{
    MemAction, MemDecision, MemOutcome, MemSink, MemStats, OutcomeKind, RegionId, RegionRecord,
    Tier,
};
use crate::types::{Seq, TxnId};

/// Parts per million (the SLO's unit).
const PPM: u64 = 1_000_000;
/// Minutes the feedback averages observed promotions over (an exponential average).
const AVG_MINUTES: u64 = 8;

/// Policy parameters. Times are in scan intervals; `intervals_per_minute` is the time base
/// that maps them onto the SLO's minute (60 for 1 s intervals; a short demo uses fewer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemConfig {
    /// Regions in the managed area (`1..=N`).
    pub n_regions: u32,
    /// Smallest cold threshold (age in intervals; a power of two, `>= 1`).
    pub min_threshold: u32,
    /// Largest cold threshold (a power of two, `>= min_threshold`).
    pub max_threshold: u32,
    /// Scan intervals per SLO minute (`>= 1`).
    pub intervals_per_minute: u32,
    /// The SLO: promotions per minute, in parts per million of the working set (2000 = 0.2%).
    pub slo_ppm_per_minute: u32,
    /// A region belongs to the working set if its age is below this (Google: 120 s); 0 means
    /// two SLO minutes (`2 * intervals_per_minute`), which follows the time base.
    pub wss_age: u32,
    /// Most reclaim decisions per interval (DAMOS-style quota).
    pub reclaim_quota: u32,
    /// Most promote decisions per interval.
    pub promote_quota: u32,
    /// Collapse a region after this many consecutive hot intervals (0: never collapse).
    pub collapse_after: u32,
    /// Most collapse decisions per interval.
    pub collapse_quota: u32,
    /// A decision with no outcome after this many intervals is forgotten (counted).
    pub pending_timeout: u32,
    /// Pages per region (the SLO counts pages: a working set of W regions is W × this).
    pub region_pages: u32,
    /// Promote a far region whole once this many of its pages faulted back in one interval,
    /// or once it is accessed in two intervals in a row; fewer, isolated faults (a cold read)
    /// bring back only the pages touched.
    pub promote_pages: u32,
    /// The feedback floor at the start (0 = `min_threshold`): a policy that starts high
    /// reclaims only long-idle regions first and lowers the threshold while the promotions
    /// stay under half the SLO (a power of two in range, else clamped).
    pub initial_threshold: u32,
}

impl Default for MemConfig {
    fn default() -> Self {
        MemConfig {
            n_regions: 512,
            min_threshold: 2,
            max_threshold: 1 << 14,
            intervals_per_minute: 60,
            slo_ppm_per_minute: 2000,
            wss_age: 0,
            reclaim_quota: 64,
            promote_quota: 64,
            collapse_after: 8,
            collapse_quota: 4,
            pending_timeout: 64,
            region_pages: 512,
            promote_pages: 16,
            initial_threshold: 0,
        }
    }
}

/// A [`MemConfig`] the policy refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemConfigError {
    /// `n_regions` is 0 or above the capacity `N`.
    RegionCount,
    /// A threshold is 0, not a power of two, or `min > max`.
    Threshold,
    /// `intervals_per_minute` or `region_pages` is 0.
    TimeBase,
}

/// One region as the policy sees it.
#[derive(Clone, Copy, Debug)]
struct Region {
    seq: Seq,
    age: u32,
    hot_streak: u32,
    accessed: bool,
    far: bool,
    huge: bool,
    no_collapse: bool,
    /// Accessed in the last ended interval.
    accessed_before: bool,
    want_promote: bool,
    /// Pages faulted back since the region was last reclaimed.
    faulted: u32,
    pending: Option<Pending>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    txn: TxnId,
    action: MemAction,
    issued: u64,
}

impl Region {
    const NEW: Region = Region {
        seq: Seq(0),
        age: 0,
        hot_streak: 0,
        accessed: false,
        far: false,
        huge: false,
        no_collapse: false,
        accessed_before: false,
        want_promote: false,
        faulted: 0,
        pending: None,
    };

    fn reclaimable(&self) -> bool {
        !self.far && self.pending.is_none() && !self.want_promote
    }
}

/// The memory policy over at most `N` regions (no allocation).
pub struct MemPolicy<const N: usize> {
    cfg: MemConfig,
    regions: [Region; N],
    /// Accesses by idle age in the current SLO minute, and in the previous one.
    promo_cur: AgeHistogram,
    promo_prev: AgeHistogram,
    /// The promotion histogram averaged over about `AVG_MINUTES` minutes (× `AVG_MINUTES`):
    /// the controller's memory of which idle ages were re-accessed, so one quiet minute does
    /// not let it forget a costly age and drop the threshold below it.
    promo_avg: AgeHistogram,
    /// Intervals in the current minute; whether a previous minute exists.
    window_elapsed: u32,
    have_prev: bool,
    /// Demand promotions observed in the current minute, and in the previous one.
    actual_cur: u64,
    actual_prev: u64,
    /// Promoted pages per minute, averaged over about `AVG_MINUTES` minutes (× `AVG_MINUTES`).
    actual_avg: u64,
    /// Minutes since the floor last changed.
    floor_age: u64,
    /// Near regions by age (reclaim candidates), as of the last interval.
    cold: AgeHistogram,
    wss: u64,
    threshold: u32,
    floor: u32,
    next_txn: u64,
    cursor: u32,
    stats: MemStats,
}

impl<const N: usize> MemPolicy<N> {
    /// A policy for `cfg`; all regions start resident, at age 0 and sequence number 0.
    pub fn new(cfg: MemConfig) -> Result<Self, MemConfigError> {
        if cfg.n_regions == 0 || cfg.n_regions as usize > N {
            return Err(MemConfigError::RegionCount);
        }
        let pow2 = |t: u32| t.is_power_of_two();
        if !pow2(cfg.min_threshold)
            || !pow2(cfg.max_threshold)
            || cfg.min_threshold > cfg.max_threshold
        {
            return Err(MemConfigError::Threshold);
        }
        if cfg.intervals_per_minute == 0 || cfg.region_pages == 0 {
            return Err(MemConfigError::TimeBase);
        }
        Ok(MemPolicy {
            cfg,
            regions: [Region::NEW; N],
            promo_cur: AgeHistogram::new(),
            promo_prev: AgeHistogram::new(),
            promo_avg: AgeHistogram::new(),
            window_elapsed: 0,
            have_prev: false,
            actual_cur: 0,
            actual_prev: 0,
            actual_avg: 0,
            floor_age: 0,
            cold: AgeHistogram::new(),
            wss: 0,
            threshold: cfg.min_threshold,
            floor: cfg
                .initial_threshold
                .clamp(cfg.min_threshold, cfg.max_threshold),
            next_txn: 1,
            cursor: 0,
            stats: MemStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MemConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &MemStats {
        &self.stats
    }

    /// The cold threshold chosen at the last interval (age in intervals).
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The feedback floor under the threshold (raised when promotions break the SLO).
    pub fn threshold_floor(&self) -> u32 {
        self.floor
    }

    /// Working-set size in regions (age below `wss_age`), as of the last interval.
    pub fn working_set(&self) -> u64 {
        self.wss
    }

    /// Resident reclaim candidates by age, as of the last interval.
    pub fn cold_histogram(&self) -> &AgeHistogram {
        &self.cold
    }

    /// Accesses by the idle age they ended, in the current SLO minute.
    pub fn promotion_histogram(&self) -> &AgeHistogram {
        &self.promo_cur
    }

    /// A region's age, tier and huge-page state (`None` if out of range).
    pub fn region(&self, r: RegionId) -> Option<(u32, Tier, bool)> {
        let reg = self.slot(r)?;
        let tier = if reg.far { Tier::Far } else { Tier::Near };
        Some((reg.age, tier, reg.huge))
    }

    /// Regions the policy believes are in the far tier.
    pub fn far_regions(&self) -> u32 {
        self.live().iter().filter(|r| r.far).count() as u32
    }

    /// Transactions in flight.
    pub fn pending(&self) -> u32 {
        self.live().iter().filter(|r| r.pending.is_some()).count() as u32
    }

    fn live(&self) -> &[Region] {
        &self.regions[..self.cfg.n_regions as usize]
    }

    fn slot(&self, r: RegionId) -> Option<&Region> {
        self.live().get(r.0 as usize)
    }

    fn slot_mut(&mut self, r: RegionId) -> Option<&mut Region> {
        let n = self.cfg.n_regions as usize;
        self.regions[..n].get_mut(r.0 as usize)
    }

    /// Apply one record from the host (untrusted: bad ids and old records are counted).
    pub fn on_record(&mut self, rec: RegionRecord) {
        let burst = rec.faulted >= self.cfg.promote_pages;
        let Some(reg) = self.slot_mut(rec.region) else {
            self.stats.bad_region += 1;
            return;
        };
        if !rec.seq.is_newer_than(reg.seq) {
            self.stats.old_records += 1;
            return;
        }
        reg.seq = rec.seq;
        let accessed = rec.accessed();
        let promoted = reg.far && accessed;
        // accessed in the previous interval too (its age was reset then)
        let sustained = accessed && reg.age == 0 && reg.accessed_before;
        reg.accessed |= accessed;
        reg.far = rec.tier == Tier::Far;
        reg.want_promote = reg.far && (burst || (promoted && sustained) || reg.want_promote);
        if reg.far {
            reg.huge = false;
        }
        let pages = if promoted { rec.faulted.max(1) } else { 0 };
        reg.faulted = reg.faulted.saturating_add(pages);
        self.stats.records += 1;
        if promoted {
            self.stats.promotions += 1;
            self.stats.promoted_pages += pages as u64;
            self.actual_cur = self.actual_cur.saturating_add(pages as u64);
        }
    }

    /// Apply the host's outcome for a decision (untrusted: unknown ones are counted).
    pub fn on_outcome(&mut self, o: MemOutcome) {
        let Some(reg) = self.slot_mut(o.region) else {
            self.stats.unknown_outcomes += 1;
            return;
        };
        let Some(p) = reg.pending.filter(|p| p.txn == o.txn) else {
            self.stats.unknown_outcomes += 1;
            return;
        };
        reg.pending = None;
        if o.seq.is_newer_than(reg.seq) {
            reg.seq = o.seq;
        }
        match (o.kind, p.action) {
            (OutcomeKind::Committed, MemAction::Reclaim) => {
                reg.far = true;
                reg.huge = false;
                reg.faulted = 0;
            }
            (OutcomeKind::Committed, MemAction::Promote) => {
                reg.far = false;
                reg.want_promote = false;
                reg.age = 0;
            }
            // A region a later record reported far cannot be huge, whatever the host claims (an
            // outcome is untrusted: it may arrive after the record that moved the region).
            (OutcomeKind::Committed, MemAction::Collapse) => reg.huge = !reg.far,
            (OutcomeKind::Failed, MemAction::Collapse) => reg.no_collapse = true,
            // back off: a region the host could not reclaim waits another threshold
            (OutcomeKind::Failed, MemAction::Reclaim) => reg.age = 0,
            _ => {}
        }
        self.stats.outcomes[o.kind.index()] += 1;
    }

    /// End the scan interval: age regions, update histograms and the threshold, and emit the
    /// due decisions into `out` (at most the quotas). Returns how many were emitted.
    pub fn end_interval(&mut self, out: &mut dyn MemSink) -> usize {
        self.stats.intervals += 1;
        self.age_regions();
        self.roll_window();
        self.threshold = self.choose_threshold();
        let mut n = self.emit_promotions(out);
        n += self.emit_reclaims(out);
        n += self.emit_collapses(out);
        n
    }

    /// Age every region by one interval; rebuild the cold histogram and the working set.
    fn age_regions(&mut self) {
        let now = self.stats.intervals;
        let timeout = self.cfg.pending_timeout as u64;
        let wss_age = match self.cfg.wss_age {
            0 => self.cfg.intervals_per_minute.saturating_mul(2),
            a => a,
        };
        let n = self.cfg.n_regions as usize;
        self.cold.clear();
        self.wss = 0;
        for reg in &mut self.regions[..n] {
            reg.accessed_before = reg.accessed;
            if reg.accessed {
                if reg.age > 0 {
                    self.promo_cur.add(reg.age);
                }
                reg.age = 0;
                reg.hot_streak = reg.hot_streak.saturating_add(1);
                reg.accessed = false;
            } else {
                reg.age = reg.age.saturating_add(1);
                reg.hot_streak = 0;
            }
            if reg
                .pending
                .is_some_and(|p| now.saturating_sub(p.issued) > timeout)
            {
                reg.pending = None;
                self.stats.unknown_outcomes += 1;
            }
            if reg.age < wss_age {
                self.wss += 1;
            }
            if reg.reclaimable() {
                self.cold.add(reg.age);
            }
        }
    }

    /// Close the SLO minute if it is over; adjust the feedback floor from the promotions
    /// actually observed in it.
    fn roll_window(&mut self) {
        self.window_elapsed += 1;
        if self.window_elapsed < self.cfg.intervals_per_minute {
            return;
        }
        self.promo_prev = self.promo_cur;
        self.promo_avg.decay_add(&self.promo_prev, AVG_MINUTES);
        self.promo_cur.clear();
        self.actual_prev = self.actual_cur;
        self.actual_cur = 0;
        self.window_elapsed = 0;
        self.have_prev = true;
        let budget = self.budget();
        let (min, max) = (self.cfg.min_threshold, self.cfg.max_threshold);
        // The average forgets slowly, so one costly minute (a whole region promoted) holds the
        // floor up for several minutes instead of one; a minute over budget raises the floor
        // only while the average is over budget too.
        self.actual_avg =
            (self.actual_avg - self.actual_avg / AVG_MINUTES).saturating_add(self.actual_prev);
        let avg = self.actual_avg / AVG_MINUTES;
        self.floor_age += 1;
        // Saturating: the counts and the configuration words come from the host.
        if self.actual_prev.saturating_mul(PPM) > budget && avg.saturating_mul(PPM) > budget {
            self.floor = (self.floor.saturating_mul(2)).min(max);
            self.stats.slo_backoffs += 1;
            self.floor_age = 0;
        } else if avg.saturating_mul(PPM).saturating_mul(2) <= budget
            && self.floor > min
            && self.floor_age >= AVG_MINUTES
            && self.predicted_ppm(self.floor / 2).saturating_mul(2) <= budget
        {
            // lower it step by step, each step held a few minutes to see its promotions, and
            // only where the promotion histogram predicts at most half the SLO at the new floor
            self.floor = (self.floor / 2).max(min);
            self.floor_age = 0;
        }
    }

    /// Pages one demand promotion faults back, as observed so far (rounded up); before the
    /// first promotion, `promote_pages` (a conservative prior: a region is promoted whole
    /// after that many faults). Converts the histograms' accesses into the SLO's pages.
    fn pages_per_promotion(&self) -> u64 {
        let s = &self.stats;
        let p = if s.promotions > 0 {
            s.promoted_pages.div_ceil(s.promotions)
        } else {
            self.cfg.promote_pages as u64
        };
        p.clamp(1, self.cfg.region_pages.max(1) as u64)
    }

    /// Predicted promoted pages per minute at `threshold`, in ppm-scaled units (`x * PPM`):
    /// every access after an idle age at or above it would have faulted
    /// [`Self::pages_per_promotion`] pages. The larger of the recent rate (this minute and the
    /// last) and the rate averaged over about `AVG_MINUTES` minutes.
    fn predicted_ppm(&self, threshold: u32) -> u64 {
        let prev_len = if self.have_prev {
            self.cfg.intervals_per_minute
        } else {
            0
        };
        let span = (prev_len + self.window_elapsed) as u64;
        let count = self.promo_prev.at_least(threshold) + self.promo_cur.at_least(threshold);
        let recent = count
            .saturating_mul(PPM)
            .saturating_mul(self.cfg.intervals_per_minute as u64)
            .checked_div(span)
            .unwrap_or(0);
        let long = self.promo_avg.at_least(threshold).saturating_mul(PPM) / AVG_MINUTES;
        recent.max(long).saturating_mul(self.pages_per_promotion())
    }

    /// The SLO in ppm-scaled pages per minute: `slo_ppm × working set (pages)`.
    fn budget(&self) -> u64 {
        self.wss
            .saturating_mul(self.cfg.region_pages as u64)
            .saturating_mul(self.cfg.slo_ppm_per_minute as u64)
    }

    /// The smallest power-of-two threshold whose predicted promotion rate meets the SLO, never
    /// below the feedback floor; the largest threshold if none does.
    fn choose_threshold(&self) -> u32 {
        let budget = self.budget();
        let mut t = self.cfg.min_threshold;
        while t < self.cfg.max_threshold && self.predicted_ppm(t) > budget {
            t *= 2;
        }
        t.max(self.floor)
    }

    fn emit(&mut self, out: &mut dyn MemSink, idx: usize, action: MemAction) -> bool {
        let txn = TxnId(self.next_txn);
        let reg = &self.regions[idx];
        let d = MemDecision::new(action, txn, RegionId(idx as u32), reg.seq);
        if !out.try_push(d) {
            self.stats.sink_full += 1;
            return false;
        }
        self.next_txn += 1;
        let issued = self.stats.intervals;
        let reg = &mut self.regions[idx];
        reg.pending = Some(Pending {
            txn,
            action,
            issued,
        });
        if action == MemAction::Promote {
            // The rest of the region comes back ahead of use (a prefetch): it costs the host
            // a decompression, not the application a fault, so the SLO does not count it.
            reg.want_promote = false;
        }
        self.stats.decisions[action.index()] += 1;
        true
    }

    /// Promote far regions that are hot again (a burst of faults, or accesses in two
    /// intervals in a row): the whole region comes back.
    fn emit_promotions(&mut self, out: &mut dyn MemSink) -> usize {
        let mut n = 0;
        for i in 0..self.cfg.n_regions as usize {
            if n >= self.cfg.promote_quota as usize {
                break;
            }
            let r = &self.regions[i];
            if r.want_promote && r.pending.is_none() {
                if !self.emit(out, i, MemAction::Promote) {
                    break;
                }
                n += 1;
            }
        }
        n
    }

    /// Reclaim the oldest resident regions at or above the threshold, up to the quota.
    fn emit_reclaims(&mut self, out: &mut dyn MemSink) -> usize {
        let quota = self.cfg.reclaim_quota as u64;
        let cutoff = self.reclaim_cutoff(quota);
        let (n_regions, start) = (self.cfg.n_regions, self.cursor);
        let mut n = 0u64;
        for k in 0..n_regions {
            if n >= quota {
                break;
            }
            let i = ((start + k) % n_regions) as usize;
            let r = &self.regions[i];
            if r.reclaimable() && r.age >= cutoff {
                if !self.emit(out, i, MemAction::Reclaim) {
                    break;
                }
                n += 1;
                self.cursor = (i as u32 + 1) % n_regions;
            }
        }
        n as usize
    }

    /// The age from which reclaiming yields the quota oldest-first (never below the threshold).
    fn reclaim_cutoff(&self, quota: u64) -> u32 {
        let bins = self.cold.bins();
        let mut acc = 0u64;
        for b in (0..bins.len()).rev() {
            let floor = super::hist::bin_floor(b);
            if floor <= self.threshold {
                break;
            }
            acc += bins[b];
            if acc >= quota {
                return floor;
            }
        }
        self.threshold
    }

    /// Collapse regions that stayed hot, up to the quota.
    fn emit_collapses(&mut self, out: &mut dyn MemSink) -> usize {
        if self.cfg.collapse_after == 0 {
            return 0;
        }
        let mut n = 0;
        for i in 0..self.cfg.n_regions as usize {
            if n >= self.cfg.collapse_quota as usize {
                break;
            }
            let r = &self.regions[i];
            let due = r.hot_streak >= self.cfg.collapse_after && !r.huge && !r.no_collapse;
            if due && !r.far && r.pending.is_none() {
                if !self.emit(out, i, MemAction::Collapse) {
                    break;
                }
                n += 1;
            }
        }
        n
    }

    /// Internal consistency (O(regions)), for tests and debug builds.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        for r in self.live() {
            if r.want_promote && !r.far {
                return Err("promotion wanted for a resident region");
            }
            if r.huge && r.far {
                return Err("far region marked huge");
            }
            if r.pending.is_some_and(|p| p.txn.0 >= self.next_txn) {
                return Err("pending transaction id never issued");
            }
        }
        if self.threshold < self.cfg.min_threshold || self.threshold > self.cfg.max_threshold {
            return Err("threshold out of range");
        }
        Ok(())
    }
}
