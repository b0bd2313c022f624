//! The host end of the memory subsystem on the link (`docs/abi.md` §8.3), as a service of the
//! agent runtime so the host gets link bring-up, heartbeats and sleep/wake-up from the same
//! code as every other service. Each scan interval it scans the mechanism, posts one Record
//! per changed region and a Tick; it applies every Decision that comes back as a transaction
//! (`Mechanism::apply`: stale ones are refused) and posts its Outcome. It also keeps what the
//! demo reports: promotions and the working set as the host sees them, the decision latency
//! (Tick sent → decision applied, Tick → Done), and resident memory over time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use wave_abi::mem::{encode_to_ipu, MemDecodeStats, ToHost, ToHostDecoder, ToIpu, MEM_CHANNEL};
use wave_abi::ring::EntryBody;
use wave_abi::{Channel, Endpoint};
use wave_policy::mem::{OutcomeKind, RegionRecord, Tier};
use wave_policy::mem_service::{decision_from_wire, outcome_msg, record_msg};
use wave_policy::runtime::{Log, Service, Step};

use super::Mechanism;
use crate::engine::hist::Histogram;

/// Wall time one step spends applying decisions; the rest wait for the next step, so a batch
/// of reclaims never holds up a scan (or the link) for long.
pub const APPLY_BUDGET_NS: u64 = 20_000_000;

/// Most intervals of records kept as the trace.
pub const TRACE_INTERVALS: usize = 10_000;

/// What the workload thread shares with the progress line.
#[derive(Default)]
pub struct KvShared {
    /// Operations served so far.
    pub ops: AtomicU64,
    /// GET p99 of the last window, ns.
    pub p99_ns: AtomicU64,
}

/// One point of the memory timeline.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// Bytes of the table resident in DRAM.
    pub resident: u64,
    /// Bytes of the table in the far tier.
    pub far: u64,
    /// DRAM the far tier itself uses (zram `mem_used`).
    pub far_used: u64,
    /// The policy's cold threshold (intervals) as last reported.
    pub threshold: u32,
}

/// Host-side counters of the memory link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireCounters {
    /// Intervals scanned (Ticks posted).
    pub intervals: u64,
    /// Records posted.
    pub records: u64,
    /// Done messages received.
    pub dones: u64,
    /// Decisions received, by action (`[reclaim, promote, collapse]`).
    pub decisions: [u64; 3],
    /// Outcomes, by kind (`[committed, stale, failed]`).
    pub outcomes: [u64; 3],
    /// Pages the application faulted back from the far tier (demand promotions: the SLO's
    /// unit, as in Google's far memory; a whole-region promotion's prefetch is not counted).
    pub promoted_pages: u64,
    /// Promoted pages in the intervals after the phase change mark ([`MemHostService::mark`]).
    pub promoted_pages_after_mark: u64,
    /// Far regions observed accessed (demand promotions, counted per region and interval).
    pub far_accesses: u64,
    /// Scans that failed (the interval posts no records).
    pub scan_errors: u64,
    /// Most entries waiting for room in the records ring.
    pub backlog_max: u64,
    /// Decisions refused as stale unapplied because they waited in the host's queue longer
    /// than [`Schedule::decision_ttl`] (the policy may have given up on them).
    pub expired: u64,
    /// Decisions of an earlier session dropped unapplied when a new session began.
    pub dropped_old_session: u64,
}

/// Timing of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Scan interval, ns.
    pub interval_ns: u64,
    /// The service finishes this long after its first step with the link up, ns.
    pub run_ns: u64,
    /// A timeline sample every this many intervals.
    pub sample_every: u64,
    /// Working set: regions accessed within this many intervals.
    pub wss_age: u64,
    /// Print a progress line about every this many ns (0: none).
    pub progress_ns: u64,
    /// A decision that waited more than this many intervals in the host's queue is refused
    /// as stale without being applied (0: no limit). Set below the policy's
    /// `pending_timeout`: an outcome arriving after the policy forgot the transaction is
    /// ignored, and the policy's view of the region's tier would go wrong.
    pub decision_ttl: u64,
}

/// The host's memory service over one mechanism.
pub struct MemHostService<'m> {
    mech: &'m mut Mechanism,
    kv: &'m KvShared,
    sched: Schedule,
    decoder: ToHostDecoder,
    backlog: VecDeque<EntryBody>,
    /// Decisions received and not applied yet (applied within [`APPLY_BUDGET_NS`] per step),
    /// with the interval they arrived in.
    queue: VecDeque<(ToHost, u64, Option<u64>)>,
    /// The newest interval whose Done has arrived: a decision answers the oldest Tick after it.
    done_through: u64,
    recs: Vec<RegionRecord>,
    next_scan_ns: u64,
    ticks: VecDeque<(u64, u64)>,
    last_access: Vec<u64>,
    mark: Option<u64>,
    threshold: u32,
    last_progress_ns: u64,
    origin_ns: Option<u64>,
    end_ns: u64,
    now_ns: u64,
    /// Tick sent → decision received, ns.
    pub decision_latency: Histogram,
    /// Tick sent → Done received, ns.
    pub round_trip: Histogram,
    /// Resident memory over time.
    pub samples: Vec<Sample>,
    /// Working set (regions) at each interval.
    pub wss: Vec<u32>,
    /// Pages faulted back from the far tier in each interval.
    pub promoted: Vec<u64>,
    /// The records of every interval (the access trace the simulator replays; capped at
    /// [`TRACE_INTERVALS`] intervals).
    pub trace: Vec<Vec<RegionRecord>>,
    /// Counters.
    pub counters: WireCounters,
}

impl<'m> MemHostService<'m> {
    /// A service over `mech` (its regions are the session's), reporting progress from `kv`.
    pub fn new(mech: &'m mut Mechanism, kv: &'m KvShared, sched: Schedule) -> Self {
        let n = mech.n_regions() as usize;
        MemHostService {
            mech,
            kv,
            sched,
            decoder: ToHostDecoder::default(),
            backlog: VecDeque::new(),
            queue: VecDeque::new(),
            done_through: 0,
            recs: Vec::new(),
            next_scan_ns: 0,
            ticks: VecDeque::new(),
            last_access: vec![0; n],
            mark: None,
            threshold: 0,
            last_progress_ns: 0,
            origin_ns: None,
            end_ns: u64::MAX,
            now_ns: 0,
            decision_latency: Histogram::new(),
            round_trip: Histogram::new(),
            samples: Vec::new(),
            wss: Vec::new(),
            promoted: Vec::new(),
            trace: Vec::new(),
            counters: WireCounters::default(),
        }
    }

    /// Decoder counters (entries from the IPU rejected, by reason).
    pub fn decode_stats(&self) -> MemDecodeStats {
        self.decoder.stats
    }

    /// Promotions from now on are also counted in `promotions_after_mark` (the phase change).
    pub fn mark(&mut self) {
        self.mark = Some(self.counters.intervals);
    }

    /// The interval count when [`Self::mark`] was called.
    pub fn mark_interval(&self) -> Option<u64> {
        self.mark
    }

    /// A new session on the link: what was queued for the old one (records, ticks, the
    /// outcomes of its decisions) is dropped, never sent to the new one, and the old session's
    /// decisions still waiting to be applied are dropped unapplied (counted in
    /// [`WireCounters::dropped_old_session`]): the policy that made them is gone.
    pub fn new_session(&mut self) {
        self.backlog.clear();
        self.ticks.clear();
        self.counters.dropped_old_session += self.queue.len() as u64;
        self.queue.clear();
    }

    /// The mechanism (for its counters and residency at the end).
    pub fn mechanism(&mut self) -> &mut Mechanism {
        self.mech
    }

    /// When the first interval started (ns, runtime clock).
    pub fn origin_ns(&self) -> Option<u64> {
        self.origin_ns
    }

    /// Scans, and queues the records and the Tick.
    fn scan_and_post(&mut self, now: u64, log: &mut dyn Log) {
        self.counters.intervals += 1;
        let interval = self.counters.intervals;
        self.recs.clear();
        if let Err(e) = self.mech.scan(&mut self.recs) {
            self.counters.scan_errors += 1;
            log.log(format_args!("mem: scan failed: {e}"));
        }
        let recs = std::mem::take(&mut self.recs);
        for r in &recs {
            let i = r.region.0 as usize;
            if r.accessed() {
                self.last_access[i] = interval;
                if r.tier == Tier::Far {
                    self.counters.far_accesses += 1;
                    self.promote_pages(r.faulted.max(1) as u64);
                }
            }
            self.backlog.push_back(encode_to_ipu(&record_msg(r)));
        }
        self.counters.records += recs.len() as u64;
        if self.trace.len() < TRACE_INTERVALS {
            self.trace.push(recs.clone());
        }
        self.recs = recs;
        let wss = self
            .last_access
            .iter()
            .filter(|&&a| interval - a < self.sched.wss_age)
            .count();
        self.wss.push(wss as u32);
        self.backlog
            .push_back(encode_to_ipu(&ToIpu::Tick { interval }));
        self.ticks.push_back((interval, now));
        while self.ticks.len() > 256 {
            self.ticks.pop_front();
        }
        if interval.is_multiple_of(self.sched.sample_every.max(1)) {
            self.sample(now);
        }
    }

    /// Records one timeline point.
    pub fn sample(&mut self, now: u64) {
        let (present, swapped) = self.mech.residency().unwrap_or((0, 0));
        let far_used = super::zram_stat().map_or(0, |s| s.mem_used);
        let origin = self.origin_ns.unwrap_or(now);
        self.samples.push(Sample {
            t_s: now.saturating_sub(origin) as f64 / 1e9,
            resident: present * super::PAGE as u64,
            far: swapped * super::PAGE as u64,
            far_used,
            threshold: self.threshold,
        });
    }

    /// Takes decisions and Dones off the ring and applies them.
    fn take_decisions(&mut self, ep: &mut Endpoint<'_>, now: u64) -> usize {
        let mut got = [EntryBody::ZERO; 64];
        let n = ep.channel(MEM_CHANNEL).0.poll_batch(&mut got);
        for body in got.iter().take(n) {
            match self.decoder.decode(body) {
                Ok(ToHost::Done {
                    interval,
                    threshold,
                    ..
                }) => {
                    self.counters.dones += 1;
                    self.threshold = threshold;
                    self.done_through = self.done_through.max(interval);
                    if let Some(&(_, t)) = self.ticks.iter().find(|(i, _)| *i == interval) {
                        self.round_trip.record(now.saturating_sub(t));
                    }
                }
                Ok(m) => {
                    // The Tick this decision answers: the oldest one not Done yet.
                    let done = self.done_through;
                    let tick = self.ticks.iter().find(|(i, _)| *i > done).map(|&(_, t)| t);
                    self.queue.push_back((m, self.counters.intervals, tick));
                }
                Err(_) => {}
            }
        }
        n
    }

    /// Applies queued decisions for at most [`APPLY_BUDGET_NS`] (at least one).
    fn apply_queued(&mut self, now: u64) -> usize {
        let t0 = std::time::Instant::now();
        let mut n = 0;
        while let Some((m, at, tick)) = self.queue.pop_front() {
            let ttl = self.sched.decision_ttl;
            if ttl > 0 && self.counters.intervals.saturating_sub(at) > ttl {
                self.expire(&m);
                n += 1;
                continue;
            }
            self.apply(&m, now + t0.elapsed().as_nanos() as u64, tick);
            n += 1;
            if t0.elapsed().as_nanos() as u64 >= APPLY_BUDGET_NS {
                break;
            }
        }
        n
    }

    /// Applies `m`; its latency runs from `tick`, the Tick it answers.
    fn apply(&mut self, m: &ToHost, now: u64, tick: Option<u64>) {
        let Some(d) = decision_from_wire(m) else {
            return;
        };
        if let Some(t) = tick {
            self.decision_latency.record(now.saturating_sub(t));
        }
        let (action, ..) = d.parts();
        self.counters.decisions[action.index()] += 1;
        let o = self.mech.apply(d);
        self.counters.outcomes[o.kind.index()] += 1;
        self.backlog.push_back(encode_to_ipu(&outcome_msg(&o)));
    }

    /// Refuses decision `m` as stale without applying it (it waited too long).
    fn expire(&mut self, m: &ToHost) {
        let Some(d) = decision_from_wire(m) else {
            return;
        };
        let (action, txn, region, _) = d.parts();
        self.counters.decisions[action.index()] += 1;
        self.counters.outcomes[OutcomeKind::Stale.index()] += 1;
        self.counters.expired += 1;
        let seq = self.mech.region_seq(region).unwrap_or(wave_policy::Seq(0));
        let o = wave_policy::mem::MemOutcome {
            txn,
            region,
            seq,
            kind: OutcomeKind::Stale,
        };
        self.backlog.push_back(encode_to_ipu(&outcome_msg(&o)));
    }

    fn promote_pages(&mut self, pages: u64) {
        let k = self.counters.intervals.saturating_sub(1) as usize;
        if self.promoted.len() <= k {
            self.promoted.resize(k + 1, 0);
        }
        self.promoted[k] += pages;
        self.counters.promoted_pages += pages;
        if self.mark.is_some() {
            self.counters.promoted_pages_after_mark += pages;
        }
    }

    /// Sends what the ring has room for, in order.
    fn flush(&mut self, ep: &mut Endpoint<'_>) -> (usize, Option<u16>) {
        self.counters.backlog_max = self.counters.backlog_max.max(self.backlog.len() as u64);
        let mut sent_total = 0;
        let mut ring = None;
        while !self.backlog.is_empty() {
            let (a, b) = self.backlog.as_slices();
            let chunk = if a.is_empty() { b } else { a };
            let (sent, r) = ep.send(MEM_CHANNEL, &chunk[..chunk.len().min(64)]);
            ring = ring.or(r);
            sent_total += sent;
            self.backlog.drain(..sent);
            if sent == 0 {
                break;
            }
        }
        (sent_total, ring)
    }

    fn progress(&mut self, now: u64) {
        if self.sched.progress_ns == 0
            || now.saturating_sub(self.last_progress_ns) < self.sched.progress_ns
        {
            return;
        }
        self.last_progress_ns = now;
        let (present, swapped) = self.mech.residency().unwrap_or((0, 0));
        let t = now.saturating_sub(self.origin_ns.unwrap_or(now)) as f64 / 1e9;
        eprint!(
            "{}  t={t:>5.1}s resident {:>5} MiB far {:>5} MiB threshold {:>5} promoted {:>6} pages stale {:>4} ops {:>9} GET p99 {:>7} us{}",
            crate::engine::progress_prefix(),
            (present * super::PAGE as u64) >> 20,
            (swapped * super::PAGE as u64) >> 20,
            self.threshold,
            self.counters.promoted_pages,
            self.counters.outcomes[1],
            self.kv.ops.load(Relaxed),
            self.kv.p99_ns.load(Relaxed) / 1000,
            crate::engine::progress_suffix()
        );
    }
}

impl<'a> Service<'a> for MemHostService<'_> {
    fn name(&self) -> &'static str {
        "mem-host"
    }
    fn channel(&self) -> Channel {
        MEM_CHANNEL
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, now: u64, log: &mut dyn Log) -> Step {
        self.now_ns = now;
        if !ep.is_up() {
            return Step::default();
        }
        if self.origin_ns.is_none() {
            self.origin_ns = Some(now);
            self.end_ns = now + self.sched.run_ns;
            self.next_scan_ns = now + self.sched.interval_ns;
            self.sample(now);
        }
        let mut work = self.take_decisions(ep, now);
        if now >= self.next_scan_ns && now < self.end_ns {
            self.scan_and_post(now, log);
            self.next_scan_ns = (self.next_scan_ns + self.sched.interval_ns).max(now + 1);
            self.progress(now);
            work += 1;
        }
        work += self.apply_queued(now);
        let (sent, ring) = self.flush(ep);
        Step {
            work: work + sent,
            doorbells: ring.map_or(0, |v| 1u64 << (v & 63)),
        }
    }
    fn counters(&self) -> (u64, u64) {
        (self.decoder.stats.invalid(), self.counters.records)
    }
    fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        if !self.queue.is_empty() {
            return Some(now_ns);
        }
        Some(self.next_scan_ns.min(self.end_ns))
    }
    fn finished(&self) -> bool {
        self.origin_ns.is_some() && self.now_ns >= self.end_ns && self.queue.is_empty()
    }
}
