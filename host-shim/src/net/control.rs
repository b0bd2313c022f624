//! One run of the RPC server under one configuration: static (a fixed number of workers), or
//! dynamic with the control loop's policy on a host thread (`host`) or on the IPU (`ipu`).
//!
//! For the dynamic ones, the host's control thread is the mechanism's end of the net channel:
//! every interval it applies the decisions that arrived (each an epoch-checked transaction,
//! its outcome sent back) and posts one sample per worker and an interval end. A monitor
//! records the cores the server holds and the batch job's work over time; the results split
//! latency by phase and by window.

use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wave_abi::net::{encode_config, encode_interval, encode_outcome, encode_sample};
use wave_abi::net::{IntervalReport, NetConfig, NetDecoder, NetParams, NET_CHANNEL};
use wave_abi::ring::EntryBody;
use wave_abi::{Endpoint, Layout, Side};
use wave_policy::net::NetService;
use wave_policy::runtime::{self, Tuning};

use super::load::{self, LoadConfig, LoadResult, PHASES};
use super::server::{MechStats, Server, ServerConfig, SteerMode};
use crate::link::{HostPort, Link};
use crate::local::LocalLink;

/// Most outcomes waiting for room in the ring; decisions beyond stay in the IPU's ring.
const MAX_PENDING_OUTCOMES: usize = 1024;
/// Where the control loop's policy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// All workers, no control loop (the kernel's hash without steering, Linux's default).
    StaticAll,
    /// A fixed number of workers (the minimum that meets the SLO at peak), steered equally.
    StaticMin(usize),
    /// The policy in a host thread over an in-process link.
    Host,
    /// The policy on the IPU, over the given link.
    Ipu,
}

impl NetMode {
    /// Short name for tables.
    pub fn name(&self) -> String {
        match self {
            NetMode::StaticAll => "static-all".into(),
            NetMode::StaticMin(k) => format!("static-{k}"),
            NetMode::Host => "host".into(),
            NetMode::Ipu => "ipu".into(),
        }
    }
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct NetRunConfig {
    /// Workers.
    pub workers: usize,
    /// Compute share of the service time, ‰.
    pub cpu_permille: u32,
    /// Try eBPF steering.
    pub steering: bool,
    /// The load.
    pub load: LoadConfig,
    /// Control interval.
    pub interval: Duration,
    /// Allocator parameters.
    pub params: NetParams,
    /// The p99 latency objective, µs.
    pub slo_us: u64,
    /// Window of the time series, ms.
    pub window_ms: u64,
    /// How long to wait for the link.
    pub link_up_timeout: Duration,
    /// Print a progress line every second (stderr).
    pub progress: bool,
    /// Serve the net channel as a lane of a host primary endpoint another driver runs over the
    /// same link (`cargo wave demo --subsystem all`), not as the primary.
    pub lane: bool,
}

impl Default for NetRunConfig {
    fn default() -> Self {
        let load = LoadConfig::default();
        let workers = 8;
        NetRunConfig {
            workers,
            cpu_permille: 50,
            steering: true,
            load: LoadConfig {
                capacity_rps: load.capacity_of(workers),
                ..load
            },
            interval: Duration::from_millis(1),
            // Grant when a request has waited 10 ms (a third of the SLO; longer than one
            // long request, so one long request alone does not grant a core), or when a
            // queue has not moved for 10 checks. Revoke after 35 low intervals (Arachne-style
            // hysteresis): at 20 the bursty phase's gaps took every extra worker away and its
            // bursts went over the SLO (p99 34 ms); at 50 more workers were held for the same
            // p99 (`docs/network.md`, "Parameters").
            params: NetParams {
                delay_add_us: 10_000,
                standing_checks: 10,
                revoke_after: 35,
                ..NetParams::default()
            },
            slo_us: 30_000,
            window_ms: 100,
            link_up_timeout: Duration::from_secs(60),
            progress: false,
            lane: false,
        }
    }
}

/// One window of the time series.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    /// Start, ms from the run's start.
    pub t_ms: u64,
    /// p99 of the requests sent in the window, µs (0 if none).
    pub p99_us: u64,
    /// Requests sent in the window and answered.
    pub answered: u64,
    /// Average workers held.
    pub cores: f64,
}

/// Latency of one phase.
#[derive(Clone, Debug, Default)]
pub struct PhaseStats {
    /// Phase name.
    pub name: &'static str,
    /// Requests answered (sent in this phase).
    pub answered: u64,
    /// Percentiles, µs.
    pub p50_us: u64,
    /// See [`PhaseStats::p50_us`].
    pub p99_us: u64,
    /// See [`PhaseStats::p50_us`].
    pub p999_us: u64,
    /// Average workers held.
    pub cores: f64,
}

/// A run's results.
#[derive(Clone, Debug, Default)]
pub struct NetRunResult {
    /// Configuration name.
    pub mode: String,
    /// `ebpf` or why not.
    pub steering: String,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// Requests the server refused as malformed.
    pub malformed: u64,
    /// Requests sent / answered.
    pub sent: u64,
    /// See [`NetRunResult::sent`].
    pub answered: u64,
    /// Per phase.
    pub phases: Vec<PhaseStats>,
    /// Time series.
    pub windows: Vec<Window>,
    /// Average and peak workers held.
    pub avg_cores: f64,
    /// See [`NetRunResult::avg_cores`].
    pub peak_cores: u32,
    /// Batch work units per second.
    pub batch_rate: f64,
    /// Answered requests per second.
    pub throughput_rps: f64,
    /// Throughput at the p99 SLO: requests answered per second of load, counting only the
    /// windows (by send time) whose p99 met the SLO (`docs/network.md`).
    pub goodput_rps: f64,
    /// Time after the step to the peak until the windowed p99 is back under the SLO, ms
    /// (None: never back within the phase).
    pub reaction_ms: Option<u64>,
    /// Mechanism counters.
    pub mech: MechStats,
    /// Decisions received / rejected by the decoder.
    pub decisions: u64,
    /// See [`NetRunResult::decisions`].
    pub bad_decisions: u64,
    /// Intervals whose telemetry was not posted (the ring was full: the IPU fell behind).
    pub intervals_skipped: u64,
    /// Host CPU of the control thread (the mechanism: telemetry + applying), s.
    pub mechanism_cpu_s: f64,
    /// Host CPU of the policy thread (host mode only), s.
    pub policy_cpu_s: Option<f64>,
    /// Wall time of the load, s.
    pub duration_s: f64,
}

impl NetRunResult {
    /// True if every request was answered.
    pub fn all_answered(&self) -> bool {
        self.sent == self.answered
    }
}

/// What the control thread reports.
#[derive(Default)]
struct ControlReport {
    decisions: u64,
    skipped: u64,
    bad: u64,
    cpu_ns: u64,
    error: Option<String>,
}

/// Runs one static configuration.
pub fn run_static(cfg: &NetRunConfig, mode: NetMode) -> Result<NetRunResult, String> {
    let k = match mode {
        NetMode::StaticMin(k) => k,
        _ => cfg.workers,
    };
    run_with(cfg, mode, k, None::<&LocalLink>, None)
}

/// Runs with the policy in a host thread over an in-process link.
pub fn run_host(cfg: &NetRunConfig) -> Result<NetRunResult, String> {
    let (host, ipu) = LocalLink::pair(1 << 20, wave_abi::layout::MIN_VECTORS as u16, 512)
        .map_err(|e| e.to_string())?;
    run_with(cfg, NetMode::Host, 1, Some(&host), Some(ipu))
}

/// Runs with the policy on the IPU at the other end of `link`.
pub fn run_ipu<L: Link>(link: &L, cfg: &NetRunConfig) -> Result<NetRunResult, String> {
    run_with(cfg, NetMode::Ipu, 1, Some(link), None)
}

fn run_with<L: Link>(
    cfg: &NetRunConfig,
    mode: NetMode,
    initial: usize,
    link: Option<&L>,
    agent: Option<LocalLink>,
) -> Result<NetRunResult, String> {
    let (server, threads) = Server::start(ServerConfig {
        workers: cfg.workers,
        cpu_permille: cfg.cpu_permille,
        steering: cfg.steering && mode != NetMode::StaticAll,
        initial_active: initial,
        transport: cfg.load.transport,
    })?;
    let stop = AtomicBool::new(false);
    let ready = AtomicBool::new(link.is_none());
    let samples = Mutex::new(Vec::<(u64, u32, u64)>::new());
    let name = mode.name();
    let out = std::thread::scope(|s| {
        let policy = agent.map(|ipu| s.spawn(|| policy_thread(ipu, &stop)));
        let ctl = link.map(|l| s.spawn(|| control(l, &server, cfg, &stop, &ready)));
        // The load starts once the control loop is up (or has given up).
        while !ready.load(Acquire) && !ctl.as_ref().is_some_and(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let origin = Instant::now();
        let (srv, name, stop, samples) = (&server, &name, &stop, &samples);
        let mon = s.spawn(move || monitor(srv, origin, cfg, name, stop, samples));
        let load = load::run(server.port(), &cfg.load, origin);
        stop.store(true, Release);
        let _ = mon.join();
        let rep = ctl
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let policy_ns = policy.and_then(|h| h.join().ok()).flatten();
        (load, rep, policy_ns)
    });
    server.stop();
    for t in threads {
        let _ = t.join();
    }
    let (load, rep, policy_ns) = out;
    if let Some(e) = rep.error {
        return Err(e);
    }
    let samples = samples.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut r = summarize(cfg, &load?, &samples);
    r.mode = mode.name();
    r.steering = match server.mode() {
        SteerMode::Ebpf => "ebpf".into(),
        SteerMode::Hash(why) => format!("hash ({why})"),
    };
    r.mech = server.snapshot().1;
    r.transport = server.transport().name();
    r.malformed = server.malformed();
    r.decisions = rep.decisions;
    r.bad_decisions = rep.bad;
    r.intervals_skipped = rep.skipped;
    r.mechanism_cpu_s = rep.cpu_ns as f64 / 1e9;
    r.policy_cpu_s = policy_ns.map(|n| n as f64 / 1e9);
    Ok(r)
}

/// The policy thread of the host mode: the same service and runtime as the firmware.
fn policy_thread(ipu: LocalLink, stop: &AtomicBool) -> Option<u64> {
    super::latency_priority();
    let cpu0 = super::thread_cpu_ns();
    let region = ipu.region();
    let layout = Layout::read(&region).ok()?;
    let mut ep = Endpoint::new(region, &layout, Side::Ipu, ipu.epoch()).ok()?;
    let mut svc = NetService::new();
    let mut port = HostPort::new(&ipu, Instant::now(), stop);
    let _ = runtime::run(&mut ep, &mut port, &Tuning::HOST, &mut [&mut svc]);
    Some(super::thread_cpu_ns().saturating_sub(cpu0))
}

/// Every tenth of a window: workers held and batch units; a progress line every second.
fn monitor(
    server: &Server,
    origin: Instant,
    cfg: &NetRunConfig,
    name: &str,
    stop: &AtomicBool,
    out: &Mutex<Vec<(u64, u32, u64)>>,
) {
    let step = Duration::from_millis((cfg.window_ms / 10).max(1));
    let mut next_line = 1_000_000_000u64;
    while !stop.load(Acquire) {
        let t = origin.elapsed().as_nanos() as u64;
        let row = (t, server.active_count(), server.batch_units());
        out.lock().unwrap_or_else(|e| e.into_inner()).push(row);
        if cfg.progress && t >= next_line {
            next_line += 1_000_000_000;
            let phase = PHASES[load::phase_of(&cfg.load, t)];
            eprintln!(
                "net: {name:>10} t={:4.1} s  phase {phase:<9}  workers held {}  served {}  batch units {}",
                t as f64 / 1e9,
                row.1,
                server.completions(),
                row.2
            );
        }
        std::thread::sleep(step);
    }
}

/// The mechanism's end of the net channel.
fn control<L: Link>(
    link: &L,
    server: &Server,
    cfg: &NetRunConfig,
    stop: &AtomicBool,
    ready: &AtomicBool,
) -> ControlReport {
    super::latency_priority();
    let cpu0 = super::thread_cpu_ns();
    let mut rep = ControlReport::default();
    if let Err(e) = control_loop(link, server, cfg, stop, ready, &mut rep) {
        rep.error = Some(e);
    }
    rep.cpu_ns = super::thread_cpu_ns().saturating_sub(cpu0);
    rep
}

fn control_loop<L: Link>(
    link: &L,
    server: &Server,
    cfg: &NetRunConfig,
    stop: &AtomicBool,
    ready: &AtomicBool,
    rep: &mut ControlReport,
) -> Result<(), String> {
    super::fine_timer_slack();
    let region = link.region();
    let layout = Layout::read(&region).map_err(|e| e.to_string())?;
    let mut ep = if cfg.lane {
        crate::link::host_lane(link, &layout, &[NET_CHANNEL], cfg.link_up_timeout)
    } else {
        Endpoint::primary(region, &layout, Side::Host, link.epoch(), &[NET_CHANNEL])
    }
    .map_err(|e| format!("{e:?}"))?;
    let start = Instant::now();
    while ep.poll_link().state.is_err() {
        if start.elapsed() > cfg.link_up_timeout || stop.load(Acquire) {
            return Err(
                "the net link never came up (is the IPU running wave.services=net@N?)".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let config = NetConfig {
        n_workers: cfg.workers as u8,
        params: cfg.params,
    };
    let mut configured = None;
    let mut outcomes: std::collections::VecDeque<EntryBody> = Default::default();
    follow_session(&mut ep, &config, &mut configured, &mut outcomes);
    ready.store(true, Release);
    let mut dec = NetDecoder::default();
    let mut interval = 0u32;
    let mut next = Instant::now();
    while !stop.load(Acquire) {
        if !follow_session(&mut ep, &config, &mut configured, &mut outcomes) {
            rep.skipped += 1;
            next = pace(next, cfg.interval);
            continue;
        }
        // Decisions are taken only while their outcomes have room (a peer that decides and
        // never reads its outcomes is held back by its own ring, not by host memory).
        while outcomes.len() < MAX_PENDING_OUTCOMES {
            let Some(b) = ep.rx(NET_CHANNEL).poll() else {
                break;
            };
            if let Ok(d) = dec.decision(&b) {
                outcomes.push_back(encode_outcome(&server.apply(&d)));
            }
        }
        // Every outcome is delivered (retried while the ring is full); telemetry for an
        // interval is posted only behind them, whole or not at all.
        let (sent, _) = ep.send(NET_CHANNEL, outcomes.make_contiguous());
        outcomes.drain(..sent);
        interval += 1;
        let (samples, epoch) = server.samples();
        let mut batch: Vec<_> = samples.iter().map(|s| encode_sample(s, interval)).collect();
        batch.push(encode_interval(&IntervalReport {
            interval,
            table_epoch: epoch,
            interval_ns: cfg.interval.as_nanos() as u64,
        }));
        if outcomes.is_empty() && ep.tx(NET_CHANNEL).free_slots() as usize >= batch.len() {
            ep.send(NET_CHANNEL, &batch);
        } else {
            rep.skipped += 1;
        }
        next = pace(next, cfg.interval);
    }
    rep.decisions = dec.stats.ok;
    rep.bad = dec.stats.invalid();
    ep.stop();
    Ok(())
}

/// Sleeps until `next + interval` (at once if that is past); returns the next deadline.
fn pace(next: Instant, interval: Duration) -> Instant {
    let next = next + interval;
    match next.checked_duration_since(Instant::now()) {
        Some(d) => {
            std::thread::sleep(d);
            next
        }
        None => Instant::now(),
    }
}

/// Polls the link and keeps the IPU configured: on a new session (the IPU restarted, or this
/// lane's primary did, `docs/abi.md` §5 "Lanes") the outcomes queued for the old session are
/// dropped (their decisions are not the new session's) and the configuration is sent again.
/// True when the link is up and this session has its configuration.
fn follow_session(
    ep: &mut Endpoint<'_>,
    config: &NetConfig,
    configured: &mut Option<u32>,
    outcomes: &mut std::collections::VecDeque<EntryBody>,
) -> bool {
    let link = ep.poll_link();
    if link.resynced {
        outcomes.clear();
    }
    let Ok(session) = link.state else {
        return false;
    };
    if *configured != Some(session) && ep.send(NET_CHANNEL, &[encode_config(config)]).0 == 1 {
        *configured = Some(session);
    }
    *configured == Some(session)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Average of the monitor's core samples in [a, b) ns.
fn cores_between(samples: &[(u64, u32, u64)], a: u64, b: u64) -> f64 {
    let v: Vec<u32> = samples
        .iter()
        .filter(|s| s.0 >= a && s.0 < b)
        .map(|s| s.1)
        .collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u32>() as f64 / v.len() as f64
    }
}

fn summarize(cfg: &NetRunConfig, load: &LoadResult, samples: &[(u64, u32, u64)]) -> NetRunResult {
    let phase_ns = (cfg.load.phase_s * 1e9) as u64;
    let mut phases = Vec::new();
    for (i, name) in PHASES.iter().enumerate() {
        let (a, b) = (i as u64 * phase_ns, (i as u64 + 1) * phase_ns);
        let mut lat: Vec<u64> = load
            .records
            .iter()
            .filter(|r| r.send_ns >= a && r.send_ns < b)
            .map(|r| r.latency_ns / 1000)
            .collect();
        lat.sort_unstable();
        phases.push(PhaseStats {
            name,
            answered: lat.len() as u64,
            p50_us: percentile(&lat, 0.5),
            p99_us: percentile(&lat, 0.99),
            p999_us: percentile(&lat, 0.999),
            cores: cores_between(samples, a, b),
        });
    }
    let windows = windows(cfg, load, samples);
    let reaction_ms = reaction(cfg, &windows, phase_ns);
    let dur_s = load.duration_ns as f64 / 1e9;
    let good: u64 = windows
        .iter()
        .filter(|w| w.p99_us <= cfg.slo_us)
        .map(|w| w.answered)
        .sum();
    let batch = samples.last().map_or(0, |s| s.2) as f64;
    NetRunResult {
        sent: load.sent,
        answered: load.answered,
        phases,
        avg_cores: cores_between(samples, 0, load.duration_ns),
        peak_cores: samples.iter().map(|s| s.1).max().unwrap_or(0),
        batch_rate: batch / dur_s.max(1e-9),
        throughput_rps: load.answered as f64 / dur_s.max(1e-9),
        goodput_rps: good as f64 / dur_s.max(1e-9),
        reaction_ms,
        duration_s: dur_s,
        windows,
        ..NetRunResult::default()
    }
}

fn windows(cfg: &NetRunConfig, load: &LoadResult, samples: &[(u64, u32, u64)]) -> Vec<Window> {
    let w_ns = cfg.window_ms.max(1) * 1_000_000;
    let n = load.duration_ns.div_ceil(w_ns) as usize;
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); n];
    for r in &load.records {
        if let Some(v) = lat.get_mut((r.send_ns / w_ns) as usize) {
            v.push(r.latency_ns / 1000);
        }
    }
    lat.into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            v.sort_unstable();
            let a = i as u64 * w_ns;
            Window {
                t_ms: a / 1_000_000,
                p99_us: percentile(&v, 0.99),
                answered: v.len() as u64,
                cores: cores_between(samples, a, a + w_ns),
            }
        })
        .collect()
}

/// Time from the step to the peak until the first window whose p99 is under the SLO and
/// stays under it for the rest of the peak phase.
fn reaction(cfg: &NetRunConfig, windows: &[Window], phase_ns: u64) -> Option<u64> {
    let (a, b) = (phase_ns / 1_000_000, 2 * phase_ns / 1_000_000);
    let peak: Vec<&Window> = windows
        .iter()
        .filter(|w| w.t_ms >= a && w.t_ms < b)
        .collect();
    let last_bad = peak.iter().rposition(|w| w.p99_us > cfg.slo_us);
    match last_bad {
        None => Some(0),
        Some(i) if i + 1 < peak.len() => Some(peak[i + 1].t_ms - a),
        Some(_) => None,
    }
}

#[cfg(test)]
mod session_tests {
    //! The control loop's session handling over an in-process link, stepped by hand (no
    //! threads, no timing): the net lane follows a restart of the host's primary.

    use std::collections::VecDeque;

    use wave_abi::net::{decode_to_ipu, NetOutcome, OutcomeKind, ToIpu};
    use wave_abi::status::next_epoch;
    use wave_abi::Channel;

    use super::*;
    use crate::link::{host_lane, Link};

    /// What waits for the IPU on the net channel: (configurations, outcomes, others).
    fn drain(ipu: &mut Endpoint<'_>) -> (usize, usize, usize) {
        let mut n = (0, 0, 0);
        while let Some(b) = ipu.rx(NET_CHANNEL).poll() {
            match decode_to_ipu(&b) {
                Ok(ToIpu::Config(_)) => n.0 += 1,
                Ok(ToIpu::Outcome(_)) => n.1 += 1,
                _ => n.2 += 1,
            }
        }
        n
    }

    #[test]
    fn the_net_lane_resends_its_config_after_its_primary_restarts() {
        let (host, ipu_link) =
            LocalLink::pair(1 << 20, wave_abi::layout::MIN_VECTORS as u16, 512).unwrap();
        let region = host.region();
        let layout = Layout::read(&region).unwrap();
        let primary = |epoch| {
            Endpoint::primary(region, &layout, Side::Host, epoch, &[Channel::Sched]).unwrap()
        };
        let mut sched = primary(host.epoch());
        let mut lane = host_lane(&host, &layout, &[NET_CHANNEL], Duration::from_secs(1)).unwrap();
        let mut ipu = Endpoint::new(ipu_link.region(), &layout, Side::Ipu, 9).unwrap();
        let config = NetConfig {
            n_workers: 4,
            params: NetParams::default(),
        };
        let (mut configured, mut outcomes) = (None, VecDeque::new());
        for _ in 0..2 {
            ipu.poll_link();
            sched.poll_link();
        }
        assert!(follow_session(
            &mut lane,
            &config,
            &mut configured,
            &mut outcomes
        ));
        assert!(follow_session(
            &mut lane,
            &config,
            &mut configured,
            &mut outcomes
        ));
        assert!(ipu.poll_link().state.is_ok());
        assert_eq!(drain(&mut ipu), (1, 0, 0), "one configuration per session");

        // An outcome of the old session is queued when the primary restarts.
        outcomes.push_back(encode_outcome(&NetOutcome {
            txn: 7,
            table_epoch: 1,
            kind: OutcomeKind::Committed,
        }));
        let mut sched = primary(next_epoch(sched.epoch()));
        assert!(!follow_session(
            &mut lane,
            &config,
            &mut configured,
            &mut outcomes
        ));
        assert!(
            outcomes.is_empty(),
            "the old session's outcomes are dropped"
        );
        assert_eq!(lane.epoch(), sched.epoch());
        assert!(ipu.poll_link().resynced);
        sched.poll_link();
        assert!(follow_session(
            &mut lane,
            &config,
            &mut configured,
            &mut outcomes
        ));
        assert!(ipu.poll_link().state.is_ok());
        assert_eq!(lane.session(), ipu.session());
        assert_eq!(
            drain(&mut ipu),
            (1, 0, 0),
            "the configuration again, nothing old"
        );
    }
}
