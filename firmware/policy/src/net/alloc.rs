//! The core allocator: Caladan-style grants on queueing, Arachne-style revokes with
//! hysteresis, and table rebalancing away from slow workers (see the module above).

use super::{IntervalReport, NetDecision, NetDecisionKind, NetOutcome, NetStats, OutcomeKind};
use super::{WorkerSample, MAX_WORKERS};
use wave_abi::net::{equal_weights, NetParams, EQUAL_WEIGHT, TABLE_ENTRIES};

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetParamsError {
    /// `n_workers` is 0 or above [`MAX_WORKERS`], or `min_workers` is 0 or above it.
    Workers,
    /// A threshold is 0 (it would grant or revoke every interval).
    Threshold,
}

impl core::fmt::Display for NetParamsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetParamsError::Workers => write!(
                f,
                "worker count must be 1..={MAX_WORKERS} and min_workers 1..=workers"
            ),
            NetParamsError::Threshold => {
                write!(
                    f,
                    "delay_add_us, standing_checks and revoke_after must be > 0"
                )
            }
        }
    }
}

/// The allocator: feed it samples and interval ends, get decisions; feed it outcomes.
pub struct CoreAllocator {
    p: NetParams,
    n: usize,
    samples: [Option<WorkerSample>; MAX_WORKERS],
    standing: [u8; MAX_WORKERS],
    weights: [u8; MAX_WORKERS],
    interval: u32,
    pending: Option<(NetDecision, u32)>,
    next_txn: u64,
    low_streak: u32,
    since_grant: u32,
    since_rebalance: u32,
    stats: NetStats,
}

impl CoreAllocator {
    /// An allocator for `n_workers` workers.
    pub fn new(n_workers: usize, p: NetParams) -> Result<Self, NetParamsError> {
        if n_workers == 0
            || n_workers > MAX_WORKERS
            || p.min_workers == 0
            || p.min_workers as usize > n_workers
        {
            return Err(NetParamsError::Workers);
        }
        if p.delay_add_us == 0 || p.standing_checks == 0 || p.revoke_after == 0 {
            return Err(NetParamsError::Threshold);
        }
        Ok(CoreAllocator {
            p,
            n: n_workers,
            samples: [None; MAX_WORKERS],
            standing: [0; MAX_WORKERS],
            weights: [0; MAX_WORKERS],
            interval: 0,
            pending: None,
            next_txn: 1,
            low_streak: 0,
            since_grant: u32::MAX / 2,
            since_rebalance: 0,
            stats: NetStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Parameters.
    pub fn params(&self) -> &NetParams {
        &self.p
    }

    /// The decision awaiting its outcome, if any.
    pub fn pending(&self) -> Option<&NetDecision> {
        self.pending.as_ref().map(|(d, _)| d)
    }

    /// One worker's sample for interval `interval` (the next [`Self::on_interval`] uses it).
    pub fn on_sample(&mut self, s: WorkerSample, interval: u32) {
        let plausible = (s.worker as usize) < self.n
            && s.table_entries as usize <= TABLE_ENTRIES
            && interval > self.interval;
        match self.samples.get_mut(s.worker as usize) {
            Some(slot) if plausible => *slot = Some(s),
            _ => self.stats.hostile += 1,
        }
    }

    /// An outcome for a decision.
    pub fn on_outcome(&mut self, o: NetOutcome) {
        match self.pending {
            Some((d, _)) if d.txn == o.txn => {
                self.pending = None;
                match o.kind {
                    OutcomeKind::Committed => {
                        self.stats.committed += 1;
                        self.weights = d.weights;
                    }
                    OutcomeKind::Stale => self.stats.stale += 1,
                    OutcomeKind::Invalid => self.stats.refused += 1,
                }
            }
            _ => self.stats.hostile += 1,
        }
    }

    /// The end of an interval: decide (at most one decision, and none while one is pending).
    pub fn on_interval(&mut self, r: IntervalReport) -> Option<NetDecision> {
        let complete = self.samples.iter().take(self.n).all(Option::is_some);
        if r.interval <= self.interval || r.interval_ns == 0 || !complete {
            self.stats.hostile += 1;
            self.samples = [None; MAX_WORKERS];
            return None;
        }
        self.interval = r.interval;
        self.stats.intervals += 1;
        let mut s = [WorkerSample::default(); MAX_WORKERS];
        for (dst, src) in s.iter_mut().zip(self.samples.iter_mut()).take(self.n) {
            *dst = src.take().unwrap_or_default();
        }
        let s = &s[..self.n];
        if s.iter()
            .any(|w| w.busy_ns > r.interval_ns.saturating_mul(4))
        {
            self.stats.hostile += 1;
            return None;
        }
        self.observe(s);
        if let Some((_, age)) = self.pending.as_mut() {
            *age += 1;
            if *age <= self.p.outcome_timeout {
                return None;
            }
            self.pending = None;
            self.stats.lost += 1;
        }
        let d = self.decide(s, &r)?;
        self.pending = Some((d, 0));
        Some(d)
    }

    /// Updates the per-worker standing-queue counts, the table weights the host reports, and
    /// the interval counters.
    fn observe(&mut self, s: &[WorkerSample]) {
        for w in s {
            let st = &mut self.standing[w.worker as usize];
            // Caladan's congestion test: items waiting and the head did not move.
            *st = if w.queued > 0 && w.completions == 0 {
                st.saturating_add(1)
            } else {
                0
            };
            let weight = &mut self.weights[w.worker as usize];
            *weight = match (w.active, *weight) {
                (false, _) => 0,
                (true, 0) => EQUAL_WEIGHT,
                (true, x) => x,
            };
        }
        self.since_grant = self.since_grant.saturating_add(1);
        self.since_rebalance = self.since_rebalance.saturating_add(1);
    }

    fn congested(&self, w: &WorkerSample) -> bool {
        w.oldest_age_us > self.p.delay_add_us
            || self.standing[w.worker as usize] >= self.p.standing_checks
    }

    fn decide(&mut self, s: &[WorkerSample], r: &IntervalReport) -> Option<NetDecision> {
        let active: u64 = s
            .iter()
            .filter(|w| w.active)
            .fold(0, |m, w| m | (1 << w.worker));
        let n_active = active.count_ones();
        let congested = s.iter().any(|w| self.congested(w));
        if congested {
            self.low_streak = 0;
            if let Some(w) = s.iter().find(|w| !w.active) {
                self.since_grant = 0;
                self.stats.grants += 1;
                let weights = equal_weights(active | (1 << w.worker));
                return Some(self.make(r, NetDecisionKind::Grant, w.worker, weights));
            }
            return self.rebalance(s, r);
        }
        if n_active > self.p.min_workers as u32 && self.can_shrink(s, r, n_active) {
            self.low_streak += 1;
            if self.low_streak >= self.p.revoke_after && self.since_grant >= self.p.grant_hold {
                self.low_streak = 0;
                let w = s.iter().rev().find(|w| w.active)?.worker;
                self.stats.revokes += 1;
                let weights = equal_weights(active & !(1 << w));
                return Some(self.make(r, NetDecisionKind::Revoke, w, weights));
            }
        } else {
            self.low_streak = 0;
        }
        self.rebalance(s, r)
    }

    /// Arachne's ramp-down test: the busy time fits in `n_active - 1` workers at the target
    /// utilisation, with the hysteresis margin, and queues are short (about one request per
    /// active worker at most).
    fn can_shrink(&self, s: &[WorkerSample], r: &IntervalReport, n_active: u32) -> bool {
        // Saturating: each sample's busy time is only bounded by the host's interval.
        let busy = s.iter().fold(0u64, |a, w| a.saturating_add(w.busy_ns));
        let busy_millicores = busy.saturating_mul(1000) / r.interval_ns;
        let room = (n_active as u64 - 1) * self.p.target_util_permille as u64;
        // Queues: at most about one waiting request per active worker.
        let queued: u64 = s.iter().map(|w| w.queued as u64).sum();
        queued <= n_active as u64 && busy_millicores + self.p.hysteresis_millicores as u64 <= room
    }

    /// Halves the table share of a worker much slower than the others while the others'
    /// shares recover; shares are back to equal once no worker is slow.
    fn rebalance(&mut self, s: &[WorkerSample], r: &IntervalReport) -> Option<NetDecision> {
        if self.since_rebalance < self.p.rebalance_every {
            return None;
        }
        let act: heapless::Vec<&WorkerSample, MAX_WORKERS> =
            s.iter().filter(|w| w.active).collect();
        if act.len() < 2 {
            return None;
        }
        let slow = act.iter().max_by_key(|w| w.oldest_age_us)?;
        let others: u64 = act
            .iter()
            .filter(|w| w.worker != slow.worker)
            .map(|w| w.oldest_age_us as u64)
            .sum::<u64>()
            / (act.len() as u64 - 1);
        let is_slow = slow.oldest_age_us as u64 * 1000 > others * self.p.slow_permille as u64
            && slow.oldest_age_us > self.p.delay_add_us / 2;
        // The slow worker's share halves; every other active worker's recovers (doubles,
        // up to the equal weight), so shares drift back to equal once no one is slow.
        let full = EQUAL_WEIGHT;
        let mut weights = self.weights;
        for w in &act {
            let x = &mut weights[w.worker as usize];
            *x = if is_slow && w.worker == slow.worker {
                (*x / 2).max(1)
            } else {
                x.saturating_mul(2).clamp(1, full)
            };
        }
        if weights == self.weights {
            return None;
        }
        self.since_rebalance = 0;
        self.stats.rebalances += 1;
        Some(self.make(r, NetDecisionKind::Rebalance, 0, weights))
    }

    fn make(
        &mut self,
        r: &IntervalReport,
        kind: NetDecisionKind,
        worker: u8,
        weights: [u8; MAX_WORKERS],
    ) -> NetDecision {
        let txn = self.next_txn;
        self.next_txn += 1;
        NetDecision {
            txn,
            table_epoch: r.table_epoch,
            kind,
            worker,
            weights,
        }
    }
}
