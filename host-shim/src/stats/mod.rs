//! Live statistics of a running link, read from the host's own memory only: both status blocks
//! (the IPU's is homed on the host), the rings' stamp and credit words, and the transport's
//! counters. A [`Sampler`] turns successive reads into rates (decisions/s, events/s), heartbeat
//! age and each IPU core's awake share; [`render`] prints the result as a table, JSON or the
//! Prometheus text format; [`control`] serves it on the host shim's control socket.
//!
//! Nothing here writes to the region, and every value read from it is untrusted: impossible
//! values (a credit ahead of the producer, a stamp from another session) are counted as zero
//! occupancy, never a panic.

pub mod client;
pub mod control;
pub mod render;
mod ring_scan;

use std::time::{Duration, Instant};

use wave_abi::status::{session_tag, State, StatusSnapshot, StatusView, MAX_LANES};
use wave_abi::subsystem::SUBSYSTEMS;
use wave_abi::{Kind, Layout, SharedRegion};

pub use crate::engine::LiveCounts;

pub use ring_scan::{scan_ring, RingLevel};

/// Transaction outcomes of a subsystem. The scheduling mechanism publishes its committed
/// count live in the host status block (counter slot 7); stale and aborted counts are known
/// only when the owner of the mechanism hands them to the sampler ([`Sampler::set_txns`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Txns {
    /// Committed transactions.
    pub committed: u64,
    /// Failed because the target's state moved on (stale sequence number), if known.
    pub stale: Option<u64>,
    /// Aborted by the agent before the host took them, if known.
    pub aborted: Option<u64>,
}

/// One subsystem's view.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubsystemStats {
    /// Name from the subsystem table (`echo`, `sched`, ...).
    pub name: &'static str,
    /// The IPU core the configuration placed it on (`None`: not placed).
    pub ipu_core: Option<u32>,
    /// Entries the host published towards the IPU this session, and per second.
    pub events: u64,
    /// See `events`.
    pub events_per_s: f64,
    /// The IPU service's own count (scheduling: decisions; echo: requests answered).
    pub decisions: u64,
    /// See `decisions`.
    pub decisions_per_s: f64,
    /// Entries the IPU published towards the host this session.
    pub replies: u64,
    /// Entries published and not yet credited back, host→IPU ring (of `capacity`).
    pub ring_to_ipu: RingLevel,
    /// The same for the IPU→host ring.
    pub ring_to_host: RingLevel,
    /// Malformed entries the IPU service skipped on this channel.
    pub ipu_invalid: u64,
    /// Share of samples in which the IPU core serving this channel was awake (not asleep
    /// waiting for a doorbell), in percent: the busy share as the host can see it.
    pub ipu_core_awake_pct: Option<f64>,
    /// Transactions (scheduling), if published live.
    pub txns: Option<Txns>,
}

/// A whole snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Seconds since the sampler started.
    pub uptime_s: f64,
    /// Host state and epoch.
    pub host_state: String,
    /// IPU state and epoch.
    pub ipu_state: String,
    /// Host epoch.
    pub host_epoch: u32,
    /// IPU epoch.
    pub ipu_epoch: u32,
    /// The IPU's heartbeat counter.
    pub ipu_heartbeat: u64,
    /// Milliseconds since the IPU's heartbeat last moved (`None`: never seen moving).
    pub heartbeat_age_ms: Option<u64>,
    /// True if the heartbeat is older than the configured threshold.
    pub heartbeat_stale: bool,
    /// Doorbells the host rang at the IPU.
    pub doorbells_to_ipu: u64,
    /// Doorbells the IPU rang at the host.
    pub doorbells_to_host: u64,
    /// Fallback state: `sched` while the scheduling workload's host fallback agent schedules
    /// (the IPU is down or hung), else `none`.
    pub fallback: &'static str,
    /// Malformed-entry counters of the link, per side.
    pub malformed: Malformed,
    /// The link probe, when the service runs one.
    pub probe: Option<Probe>,
    /// The scheduling workload, when the service runs one (the engine's live counters).
    pub sched_workload: Option<LiveCounts>,
    /// The memory workload, when the service runs one (a lane).
    pub mem_workload: Option<LaneRun>,
    /// The network workload, when the service runs one (a lane).
    pub net_workload: Option<LaneRun>,
    /// Per subsystem.
    pub subsystems: Vec<SubsystemStats>,
}

/// A memory or network workload the service runs as a lane of its primary endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaneRun {
    /// Set up or serving its load.
    pub running: bool,
    /// Its run has ended (`failed` says whether it could run at all).
    pub finished: bool,
    /// It ended with an error before any result (the journal has why).
    pub failed: bool,
    /// Its final counts, by name (empty until it finished).
    pub summary: Vec<(&'static str, i64)>,
}

/// The service's link probe (the echo subsystem's host side).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Probe {
    /// Probes sent.
    pub sent: u64,
    /// Answered correctly.
    pub answered: u64,
    /// Lost or answered wrongly.
    pub lost: u64,
    /// Round trip of the last answer (µs).
    pub last_rtt_us: f64,
}

/// The link's counters of malformed input (docs/abi.md, "Published counters").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Malformed {
    /// Ring slots the host skipped for bad stamps.
    pub host_bad_stamps: u64,
    /// Entries the host's decoders rejected.
    pub host_invalid: u64,
    /// Ring slots the IPU skipped for bad stamps.
    pub ipu_bad_stamps: u64,
    /// Entries the IPU's decoders rejected.
    pub ipu_invalid: u64,
    /// Times the IPU found its status block invalid or a ring full / a credit rejected.
    pub ipu_full_or_bad_credit: u64,
    /// The same on the host side.
    pub host_full_or_bad_credit: u64,
}

/// Reads of one instant.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    host: StatusSnapshot,
    ipu: StatusSnapshot,
    rings: Vec<(RingLevel, RingLevel)>,
}

/// Turns successive reads of a region into [`Stats`].
pub struct Sampler {
    started: Instant,
    layout: Layout,
    placement: Vec<Option<u32>>,
    stale_after: Duration,
    last: Option<Sample>,
    beat_seen: Option<(u64, Instant)>,
    awake: Vec<(u64, u64)>,
    current: Stats,
    txns: Option<Txns>,
    transport_doorbells: Option<(u64, u64)>,
    probe: Option<Probe>,
    workload: Option<LiveCounts>,
    lanes: (Option<LaneRun>, Option<LaneRun>),
    txns_from_host_status: bool,
}

fn state_name(s: &StatusSnapshot) -> String {
    match s.state {
        State::Offline => "offline".into(),
        State::Booting => "booting".into(),
        State::Ready => "ready".into(),
        State::Stopped => "stopped".into(),
        State::VersionMismatch => format!("version-mismatch({:#x})", s.detail),
        State::LayoutError => format!("layout-error({})", s.detail),
        State::Refused => format!(
            "refused(channel {}, reason {})",
            s.detail >> 32,
            s.detail & 0xFFFF_FFFF
        ),
        State::Unknown(v) => format!("unknown({v})"),
    }
}

impl Sampler {
    /// A sampler for `layout`; `placement[ch]` is the IPU core serving channel `ch`, if any;
    /// a heartbeat older than `stale_after` is reported stale.
    pub fn new(layout: Layout, placement: Vec<Option<u32>>, stale_after: Duration) -> Self {
        Sampler {
            started: Instant::now(),
            layout,
            placement,
            stale_after,
            last: None,
            beat_seen: None,
            awake: vec![(0, 0); SUBSYSTEMS.len()],
            current: Stats::default(),
            txns: None,
            transport_doorbells: None,
            probe: None,
            workload: None,
            lanes: (None, None),
            txns_from_host_status: false,
        }
    }

    /// Sets the live transaction counts of the scheduling subsystem (from its host mechanism).
    pub fn set_txns(&mut self, t: Txns) {
        self.txns = Some(t);
    }

    /// Reads the scheduling subsystem's committed transactions from the host status block's
    /// counter 7, which the scheduling engine publishes when it is the host's primary endpoint
    /// (docs/abi.md "Published counters": application-defined; elsewhere it sums other
    /// services' counts, so this is off by default).
    pub fn txns_from_host_status(&mut self) {
        self.txns_from_host_status = true;
    }

    /// Sets the scheduling workload's live counters (its transactions, its fallback state).
    pub fn set_workload(&mut self, w: LiveCounts) {
        self.set_txns(Txns {
            committed: w.committed,
            stale: Some(w.stale),
            aborted: Some(w.aborted),
        });
        self.workload = Some(w);
    }

    /// Sets the memory and network workloads' states.
    pub fn set_lane_runs(&mut self, mem: Option<LaneRun>, net: Option<LaneRun>) {
        self.lanes = (mem, net);
    }

    /// Sets the link probe's counters.
    pub fn set_probe(&mut self, p: Probe) {
        self.probe = Some(p);
    }

    /// Sets the transport's own doorbell counts (to the IPU, to the host), which include the
    /// doorbells of every lane (the status blocks count only the primary endpoint's).
    pub fn set_transport_doorbells(&mut self, to_ipu: u64, to_host: u64) {
        self.transport_doorbells = Some((to_ipu, to_host));
    }

    fn read(&self, region: &SharedRegion<'_>) -> Option<Sample> {
        let view = |k: Kind| StatusView::new(region, self.layout.place(k).offset).ok();
        let host = view(Kind::HostStatus)?.snapshot();
        let ipu = view(Kind::IpuStatus)?.snapshot();
        let session = session_tag(host.epoch, ipu.epoch);
        let rings = SUBSYSTEMS
            .iter()
            .map(|s| {
                let to_ipu = scan_ring(region, &self.layout, s.to_ipu.kind, session);
                let to_host = scan_ring(region, &self.layout, s.to_host.kind, session);
                (to_ipu, to_host)
            })
            .collect();
        Some(Sample {
            at: Instant::now(),
            host,
            ipu,
            rings,
        })
    }

    /// Samples only the IPU cores' sleep words (cheap; call often, e.g. every 10 ms, for the
    /// awake share).
    pub fn sample_awake(&mut self, region: &SharedRegion<'_>) {
        let Ok(v) = StatusView::new(region, self.layout.place(Kind::IpuStatus).offset) else {
            return;
        };
        for (ch, a) in self.awake.iter_mut().enumerate().take(MAX_LANES) {
            a.1 += 1;
            if v.lane_wake(ch) & 1 == 0 {
                a.0 += 1;
            }
        }
    }

    /// Reads the region and updates the current stats (rates over the time since the last
    /// call). Returns the new stats.
    pub fn update(&mut self, region: &SharedRegion<'_>) -> &Stats {
        let Some(now) = self.read(region) else {
            return &self.current;
        };
        match self.beat_seen {
            Some((beat, _)) if beat == now.ipu.heartbeat => {}
            _ => self.beat_seen = Some((now.ipu.heartbeat, now.at)),
        }
        let age = self
            .beat_seen
            .filter(|(b, _)| *b != 0)
            .map(|(_, at)| now.at.duration_since(at));
        let subsystems = (0..SUBSYSTEMS.len())
            .map(|ch| self.subsystem(ch, &now))
            .collect();
        self.awake.iter_mut().for_each(|a| *a = (0, 0));
        let (host, ipu) = (&now.host, &now.ipu);
        let bells = self.transport_doorbells;
        self.current = Stats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            host_state: state_name(host),
            ipu_state: state_name(ipu),
            host_epoch: host.epoch,
            ipu_epoch: ipu.epoch,
            ipu_heartbeat: ipu.heartbeat,
            heartbeat_age_ms: age.map(|a| a.as_millis() as u64),
            heartbeat_stale: age.is_some_and(|a| a > self.stale_after),
            doorbells_to_ipu: bells.map_or(host.counters[4], |d| d.0),
            doorbells_to_host: bells.map_or(ipu.counters[4], |d| d.1),
            fallback: match &self.workload {
                Some(w) if w.in_fallback => "sched",
                _ => "none",
            },
            malformed: Malformed {
                host_bad_stamps: host.counters[1],
                host_invalid: host.counters[6],
                ipu_bad_stamps: ipu.counters[1],
                ipu_invalid: ipu.counters[6],
                ipu_full_or_bad_credit: ipu.counters[3],
                host_full_or_bad_credit: host.counters[3],
            },
            probe: self.probe,
            sched_workload: self.workload.clone(),
            mem_workload: self.lanes.0.clone(),
            net_workload: self.lanes.1.clone(),
            subsystems,
        };
        self.last = Some(now);
        &self.current
    }

    /// Channel `ch`'s stats from `now` (rates against the previous sample).
    fn subsystem(&self, ch: usize, now: &Sample) -> SubsystemStats {
        let name = SUBSYSTEMS[ch].name;
        let (to_ipu, to_host) = now.rings[ch];
        let lane = now.ipu.lanes.get(ch).copied().unwrap_or((0, 0));
        let last = self.last.as_ref();
        let dt = last
            .map(|l| now.at.duration_since(l.at).as_secs_f64())
            .filter(|d| *d > 0.0);
        let rate = |new: u64, old: Option<u64>| match (dt, old) {
            (Some(dt), Some(old)) if new >= old => (new - old) as f64 / dt,
            _ => 0.0,
        };
        let old_events = last.map(|l| u64::from(l.rings[ch].0.produced));
        let old_decisions = last.and_then(|l| l.ipu.lanes.get(ch).map(|x| x.1));
        let core = self.placement.get(ch).copied().flatten();
        let (awake, samples) = self.awake[ch];
        let live_txns = (self.txns_from_host_status).then(|| Txns {
            committed: now.host.counters[7],
            ..Txns::default()
        });
        SubsystemStats {
            name,
            ipu_core: core,
            events: u64::from(to_ipu.produced),
            events_per_s: rate(u64::from(to_ipu.produced), old_events),
            decisions: lane.1,
            decisions_per_s: rate(lane.1, old_decisions),
            replies: u64::from(to_host.produced),
            ring_to_ipu: to_ipu,
            ring_to_host: to_host,
            ipu_invalid: lane.0,
            ipu_core_awake_pct: (samples > 0 && core.is_some())
                .then(|| awake as f64 * 100.0 / samples as f64),
            txns: (name == "sched").then(|| self.txns.or(live_txns)).flatten(),
        }
    }

    /// The latest stats.
    pub fn current(&self) -> &Stats {
        &self.current
    }
}

#[cfg(test)]
mod tests;
