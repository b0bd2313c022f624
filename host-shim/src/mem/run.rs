//! One run of the memory demo (`cargo wave demo --subsystem mem`, `wave-host mem`): the
//! key-value workload over its table for a fixed time with a phase change halfway, under one
//! of three modes on identical work:
//!
//! - `none`: the table in plain memory, no management (the baseline);
//! - `host`: the memory policy (`wave_policy::mem_service`) in a host thread over an
//!   in-process link: the same service the IPU runs, costing host CPU;
//! - `ipu`: the policy on the IPU, over the link the caller passes (QEMU's ivshmem).
//!
//! In `host` and `ipu` the mechanism runs in the calling thread as the host's memory service
//! ([`super::wire::MemHostService`]) under the agent runtime; the far tier is zram when the
//! process is root and zram0 is free, and otherwise none (reclaims then fail, counted, and
//! the saving is 0, said why).

use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

use wave_abi::layout::VECTOR_CONTROL;
use wave_abi::mem::MEM_CHANNEL;
use wave_abi::{Endpoint, Layout, Side};
use wave_policy::mem::MemConfig;
use wave_policy::mem_service::{wire_config, MemService};
use wave_policy::runtime::{self, Log, Runtime, Service, Step, Tuning};

use super::kv::{KvLoad, KvLoadConfig, KvStore, Storage};
use super::place::{Placement, ThreadMeter, ThreadStats};
use super::wire::{KvShared, MemHostService, Sample, Schedule, WireCounters};
use super::{managed_area, AreaConfig, MechStats, ZramSwap};
use crate::engine::hist::Latency;
use crate::link::{HostPort, Link};
use crate::local::LocalLink;

/// Who runs the memory policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMode {
    /// No memory management.
    None,
    /// The policy in a host thread.
    Host,
    /// The policy on the IPU.
    Ipu,
}

impl MemMode {
    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            MemMode::None => "none",
            MemMode::Host => "host",
            MemMode::Ipu => "ipu",
        }
    }
}

/// `collapse_after` that never collapses (0 on the wire means "the policy's default").
pub const COLLAPSE_NEVER: u32 = u32::MAX;

/// Regions the on-host policy thread can manage (32 GiB at 2 MiB).
pub const HOST_MAX_REGIONS: usize = 16_384;

/// Checks the numbers a user gives a memory run (table size in MiB, offered rate, seconds of
/// load): finite and within bounds, or a message naming the option. Both front ends
/// (`cargo wave demo --subsystem mem`, `wave-host mem`) call it before they allocate anything.
pub fn check_load(table_mib: u64, rate: f64, duration_s: f64) -> Result<(), String> {
    if !(8..=65_536).contains(&table_mib) {
        return Err(format!("table size {table_mib} MiB: must be 8..=65536 MiB"));
    }
    if !(rate > 0.0 && rate <= 10_000_000.0) {
        return Err(format!(
            "rate {rate}: must be above 0 and at most 10000000 operations per second"
        ));
    }
    if !(duration_s > 0.0 && duration_s <= 3600.0) {
        return Err(format!(
            "duration {duration_s}: must be above 0 and at most 3600 seconds"
        ));
    }
    Ok(())
}

/// Settings of a run (identical for every mode of one demo).
#[derive(Clone, Debug)]
pub struct MemRunConfig {
    /// Bytes of the key-value table.
    pub table_bytes: usize,
    /// Length of the load; the hot set moves halfway.
    pub duration: Duration,
    /// Scan interval.
    pub interval: Duration,
    /// The workload.
    pub load: KvLoadConfig,
    /// The policy's parameters (`n_regions` is set from the table).
    pub policy: MemConfig,
    /// Read-sampled pages per region per interval.
    pub read_samples: u32,
    /// Use a far tier (zram) when possible.
    pub far_tier: bool,
    /// Print a live progress line.
    pub progress: bool,
    /// How long the link may take to come up.
    pub link_up_timeout: Duration,
    /// Serve the memory channel as a lane of a host primary endpoint another driver runs over
    /// the same link (`cargo wave demo --subsystem all`), not as the primary.
    pub lane: bool,
    /// Set once the table is built, before the link is needed: lets a caller start other work
    /// at the same moment as this run's load (`cargo wave demo --subsystem all`).
    pub set_up: Option<std::sync::Arc<AtomicBool>>,
    /// Pin the threads ([`Placement`]): the key-value thread alone on one CPU, the rest on
    /// the others, identically in every mode.
    pub pin: bool,
}

impl Default for MemRunConfig {
    fn default() -> Self {
        MemRunConfig {
            table_bytes: 1 << 30,
            duration: Duration::from_secs(20),
            interval: Duration::from_millis(100),
            load: KvLoadConfig::default(),
            policy: MemConfig {
                intervals_per_minute: 1,
                initial_threshold: 64,
                // Off by default: MADV_COLLAPSE holds the process's mmap lock for writing while
                // it copies 2 MiB, and every fault of the key-value thread waits for it
                // (measured: ms-long stalls, the largest single cost to GET p99; see
                // docs/memory.md). `--collapse-after N` turns it on.
                collapse_after: COLLAPSE_NEVER,
                // 16 regions (32 MiB) per 100 ms interval: about what the paced pageout does
                // in one interval on this machine; a larger quota only queues decisions at the
                // host, where they go stale or outlive the policy's pending timeout
                reclaim_quota: 16,
                ..MemConfig::default()
            },
            read_samples: 1,
            far_tier: true,
            progress: false,
            link_up_timeout: Duration::from_secs(60),
            lane: false,
            set_up: None,
            pin: true,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct MemRunResults {
    /// `none`, `host` or `ipu`.
    pub mode: String,
    /// Bytes of the table.
    pub table_bytes: u64,
    /// The far tier used, or why none.
    pub far_tier: String,
    /// Operations served, and per second.
    pub ops: u64,
    /// See `ops`.
    pub throughput: f64,
    /// GET latency.
    pub get: Latency,
    /// Values that failed verification during the run and in the full read after it.
    pub checksum_failures: u64,
    /// Resident memory over time.
    pub samples: Vec<Sample>,
    /// GET p99 per window: (seconds, ns).
    pub p99_windows: Vec<(f64, u64)>,
    /// When the hot set moved (seconds).
    pub phase_s: f64,
    /// Resident bytes at the start, just before the phase change, at the end.
    pub resident: [u64; 3],
    /// Far-tier footprint (zram `mem_used`) at the same three points.
    pub far_used: [u64; 3],
    /// Memory saved net of the far tier's footprint at those points (bytes; table − resident −
    /// far tier).
    pub saved: [i64; 3],
    /// Host-side link counters (`None` for `none`).
    pub wire: Option<WireCounters>,
    /// Scan intervals per SLO minute, and the SLO (ppm of the working set per minute).
    pub intervals_per_minute: u32,
    /// See `intervals_per_minute`.
    pub slo_ppm: u32,
    /// Working set (regions) at each interval.
    pub wss_per_interval: Vec<u32>,
    /// Pages promoted in each interval.
    pub promoted: Vec<u64>,
    /// Pages per region.
    pub region_pages: u64,
    /// Intervals scanned before the hot set moved.
    pub mark_interval: Option<u64>,
    /// Decision latency (Tick → decision applied) and round trip (Tick → Done).
    pub decision_latency: Latency,
    /// See `decision_latency`.
    pub round_trip: Latency,
    /// Host CPU of the mechanism (scan, apply, the link, the sampler's fault thread), s.
    pub mech_cpu_s: f64,
    /// Host CPU of the policy (on-host mode only), s.
    pub policy_cpu_s: Option<f64>,
    /// Entries either side rejected.
    pub invalid_entries: u64,
    /// Invariant violations found (policy check, decisions without outcomes, region ids).
    pub invariant_violations: u64,
    /// The mechanism's counters.
    pub mech: Option<MechStats>,
    /// A note for the reader (the far-tier fallback).
    pub note: Option<String>,
    /// For `ipu`: host CPU seconds QEMU used emulating the IPU (set by the runner).
    pub emulator_cpu_s: Option<f64>,
    /// The records the mechanism posted, per interval (for the simulator's replay).
    pub trace: Vec<Vec<wave_policy::mem::RegionRecord>>,
    /// Regions of the table (the trace's region ids are below it).
    pub n_regions: u32,
    /// The key-value thread's scheduling over the load (CPU, off-CPU, context switches).
    pub kv_thread: ThreadStats,
    /// Operations whose own service took over 50 µs (blocked or preempted mid-operation),
    /// their total service time (s), and the longest service time of one operation (µs).
    pub slow_ops: u64,
    /// See `slow_ops`.
    pub slow_s: f64,
    /// See `slow_ops`.
    pub max_service_us: f64,
    /// Host CPU of the sampler's fault handler thread, s (part of `mech_cpu_s`).
    pub handler_cpu_s: f64,
    /// Where the threads ran ([`Placement::describe`]), or why they were not pinned.
    pub placement: String,
    /// Load average (1 min) when the run ended: other work on the machine.
    pub loadavg: f64,
    /// The slow operations by the mechanism's work that overlapped them (`[reclaim, promote,
    /// collapse, scan, arm samples, none of these]`, see [`super::place::attribute`]): (count, total ns).
    pub slow_by: [(u64, u64); 6],
}

impl MemRunResults {
    /// The run's four windows, as interval ranges: warm-up (the first half of the intervals
    /// before the hot set moves: the policy learns the workload), steady before the move, the
    /// move (the first half of the intervals after it: the new hot set comes back), settled.
    fn windows(&self) -> [(usize, usize); 4] {
        let n = self.wss_per_interval.len();
        let m = self.mark_interval.map_or(n / 2, |m| m as usize).min(n);
        let (a, b) = (m / 2, m + (n - m) / 2);
        [(0, a), (a, m), (m, b), (b, n)]
    }

    /// Promoted pages per SLO minute in each of [`Self::windows`].
    pub fn promotions_per_min(&self) -> [f64; 4] {
        let ipm = self.intervals_per_minute.max(1) as f64;
        self.windows().map(|(a, b)| {
            let pages: u64 = self.promoted.iter().take(b).skip(a).sum();
            pages as f64 * ipm / b.saturating_sub(a).max(1) as f64
        })
    }

    /// The SLO in pages per minute in each window (`slo_ppm` of the mean working set's pages).
    pub fn slo_per_min(&self) -> [f64; 4] {
        let pages = self.region_pages as f64;
        self.windows().map(|(a, b)| {
            let v = self.wss_per_interval.get(a..b).unwrap_or(&[]);
            let wss = v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
            wss * pages * self.slo_ppm as f64 / 1_000_000.0
        })
    }

    /// True if the promotion rate is within the SLO in both steady windows (before the move,
    /// and settled after it).
    pub fn within_slo(&self) -> bool {
        let (p, s) = (self.promotions_per_min(), self.slo_per_min());
        p[1] <= s[1] && p[3] <= s[3]
    }
}

/// How long a run waits for zram0 held by another run.
const ZRAM_WAIT: Duration = Duration::from_secs(120);

/// The far tier for a run: zram when possible, else none with the reason.
fn far_tier(cfg: &MemRunConfig) -> (Option<ZramSwap>, String, Option<String>) {
    if !cfg.far_tier {
        return (None, "none (disabled)".into(), None);
    }
    // zram0 is one device per machine: if another run holds it, wait a while for it
    let start = Instant::now();
    let mut said = false;
    let got = loop {
        match ZramSwap::setup(cfg.table_bytes as u64 * 2) {
            Err(e) if e.to_string().contains("in use") && start.elapsed() < ZRAM_WAIT => {
                if !said {
                    eprintln!(
                        "wave: mem: {e}; waiting up to {} s for it",
                        ZRAM_WAIT.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            r => break r,
        }
    };
    match got {
        Ok(z) => (Some(z), "zram (lzo-rle, MADV_PAGEOUT)".into(), None),
        Err(e) => (
            None,
            "none".into(),
            Some(format!(
                "no far tier: {e}. Reclaims fail (counted) and the memory saved is 0."
            )),
        ),
    }
}

/// What the workload thread hands back.
struct Drive<S: Storage> {
    load: KvLoad,
    kv: KvStore<S>,
    windows: Vec<(f64, u64)>,
    phase_s: f64,
    thread: ThreadStats,
}

/// The workload thread: serves the load until `duration`, moves the hot set at half, and
/// records GET p99 per window; pinned to the key-value CPU when `place` says so.
fn drive<S: Storage>(
    mut kv: KvStore<S>,
    cfg: &KvLoadConfig,
    duration: Duration,
    origin: Instant,
    shared: &KvShared,
    place: Option<&Placement>,
) -> Drive<S> {
    const WINDOW_NS: u64 = 250_000_000;
    if let Some(p) = place {
        p.pin_kv();
    }
    let meter = ThreadMeter::start(place.map(|p| p.kv_cpu));
    let mut load = KvLoad::new(*cfg, kv.keys());
    let end = duration.as_nanos() as u64;
    let phase = (end / 2 / WINDOW_NS).max(1) * WINDOW_NS;
    let now = || origin.elapsed().as_nanos() as u64;
    let mut windows = Vec::new();
    let mut t = 0;
    while t < end {
        t = (t + WINDOW_NS).min(end);
        load.serve_until(&mut kv, t, now);
        if t == phase {
            load.move_hot_set();
        }
        let p99 = load.take_window(0.99);
        shared.ops.store(load.ops, Relaxed);
        shared.p99_ns.store(p99, Relaxed);
        windows.push((t as f64 / 1e9, p99));
    }
    Drive {
        thread: meter.stop(),
        load,
        kv,
        windows,
        phase_s: phase as f64 / 1e9,
    }
}

/// The run's placement (`None` if off or on one CPU), with the calling thread (and so what it
/// spawns: the mechanism's helpers, the policy thread, QEMU) moved to the control CPUs.
pub fn place_control(cfg: &MemRunConfig) -> Option<Placement> {
    let p = Placement::detect().filter(|_| cfg.pin)?;
    p.pin_control();
    Some(p)
}

fn describe(p: Option<&Placement>, cfg: &MemRunConfig) -> String {
    match p {
        Some(p) => p.describe(),
        None if !cfg.pin => "not pinned (disabled)".into(),
        None => "not pinned (one CPU)".into(),
    }
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Reads every key once; returns the failures.
fn verify_all<S: Storage>(kv: &mut KvStore<S>) -> u64 {
    let before = kv.checksum_failures;
    for k in 0..kv.keys() {
        kv.get(k);
    }
    kv.checksum_failures - before
}

fn summary<S: Storage>(res: &mut MemRunResults, d: &Drive<S>, secs: f64, failures: u64) {
    let load = &d.load;
    res.ops = load.ops;
    res.throughput = load.ops as f64 / secs.max(1e-9);
    res.get = load.get_latency.summary();
    res.checksum_failures = failures;
    res.kv_thread = d.thread;
    res.slow_ops = load.slow_ops;
    res.slow_s = load.slow_ns as f64 / 1e9;
    res.max_service_us = load.max_service_ns as f64 / 1e3;
    res.loadavg = loadavg();
}

/// The no-management baseline: the table in plain memory.
pub fn run_none(cfg: &MemRunConfig) -> Result<MemRunResults, String> {
    let place = place_control(cfg);
    let kv = KvStore::new(vec![0u8; cfg.table_bytes]);
    let shared = KvShared::default();
    let origin = Instant::now();
    let (sh, pl) = (&shared, place.as_ref());
    let mut d = std::thread::scope(|s| {
        s.spawn(move || drive(kv, &cfg.load, cfg.duration, origin, sh, pl))
            .join()
            .map_err(|_| "the workload thread panicked".to_string())
    })?;
    let failures = d.kv.checksum_failures + verify_all(&mut d.kv);
    let table = cfg.table_bytes as u64;
    let mut res = MemRunResults {
        mode: "none".into(),
        table_bytes: table,
        far_tier: "-".into(),
        p99_windows: std::mem::take(&mut d.windows),
        phase_s: d.phase_s,
        resident: [table; 3],
        samples: vec![
            Sample {
                t_s: 0.0,
                resident: table,
                ..Sample::default()
            },
            Sample {
                t_s: cfg.duration.as_secs_f64(),
                resident: table,
                ..Sample::default()
            },
        ],
        intervals_per_minute: cfg.policy.intervals_per_minute,
        slo_ppm: cfg.policy.slo_ppm_per_minute,
        placement: describe(place.as_ref(), cfg),
        ..MemRunResults::default()
    };
    summary(&mut res, &d, cfg.duration.as_secs_f64(), failures);
    Ok(res)
}

/// The on-host baseline: the policy in a host thread over an in-process link.
pub fn run_host(cfg: &MemRunConfig) -> Result<MemRunResults, String> {
    place_control(cfg);
    let (host, ipu) = LocalLink::pair(1 << 20, wave_abi::layout::MIN_VECTORS as u16, 512)
        .map_err(|e| e.to_string())?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let agent = std::thread::Builder::new()
            .name("wave-mem-policy".into())
            .stack_size(16 << 20)
            .spawn_scoped(s, || policy_thread(&ipu, &stop))
            .map_err(|e| e.to_string())?;
        let r = run_managed(&host, MemMode::Host, cfg);
        stop.store(true, Release);
        let report = agent
            .join()
            .map_err(|_| "the policy thread panicked".to_string())?;
        let mut r = r?;
        r.policy_cpu_s = Some(report.cpu_ns as f64 / 1e9);
        r.invalid_entries += report.invalid;
        r.invariant_violations += report.violations;
        Ok(r)
    })
}

pub(super) struct PolicyReport {
    cpu_ns: u64,
    pub(super) invalid: u64,
    pub(super) violations: u64,
}

/// The on-host policy: the memory service under the agent runtime until `stop`.
pub(super) fn policy_thread(ipu: &LocalLink, stop: &AtomicBool) -> PolicyReport {
    let cpu0 = crate::engine::thread_cpu_ns();
    let region = ipu.region();
    let mut report = PolicyReport {
        cpu_ns: 0,
        invalid: 0,
        violations: 0,
    };
    let Ok(layout) = Layout::read(&region) else {
        report.violations += 1;
        return report;
    };
    let Ok(mut ep) = Endpoint::primary(region, &layout, Side::Ipu, ipu.epoch(), &[MEM_CHANNEL])
    else {
        report.violations += 1;
        return report;
    };
    let mut svc = Box::new(MemService::<HOST_MAX_REGIONS>::new(region, layout));
    let mut port = HostPort::new(ipu, Instant::now(), stop);
    let _ = runtime::run(&mut ep, &mut port, &Tuning::HOST, &mut [&mut *svc]);
    report.cpu_ns = crate::engine::thread_cpu_ns().saturating_sub(cpu0);
    report.invalid = svc.stats().invalid;
    report.violations += svc
        .policy()
        .map_or(0, |p| p.check_invariants().is_err() as u64);
    report
}

/// CPU seconds of this process's threads named `name` (from /proc; 0 if unreadable).
fn threads_cpu_s(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0.0;
    for e in dir.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (t(11) + t(12)) / hz;
    }
    total
}

/// Waits until the link is up (or fails with why).
fn link_up(link: &dyn Link, ep: &mut Endpoint<'_>, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match ep.poll_link().state {
            Ok(_) => return Ok(()),
            Err(d @ wave_abi::Down::VersionMismatch { .. }) => return Err(format!("{d:?}")),
            Err(d) if start.elapsed() > timeout => {
                return Err(format!("the memory link never came up ({d:?})"))
            }
            Err(_) => {}
        }
        let _ = link.wait(1 << VECTOR_CONTROL, Duration::from_millis(1));
    }
}

/// Publishes the memory policy's configuration for a table of `cfg` (as [`run_managed`] will
/// compute it from its managed area) in `region`'s memory config block, under generation 1.
/// For a memory lane whose primary runs in another thread: the IPU's memory lane reads the
/// configuration when the primary brings its session up, which may be before the run has
/// built its table (the run publishes the same values again under its own epoch).
pub fn publish_config(
    region: &wave_abi::SharedRegion<'_>,
    cfg: &MemRunConfig,
) -> Result<(), String> {
    let layout = Layout::read(region).map_err(|e| e.to_string())?;
    let region_bytes = AreaConfig::default().region_bytes;
    let policy = MemConfig {
        n_regions: u32::try_from(cfg.table_bytes.div_ceil(region_bytes))
            .map_err(|_| "the memory table is too large".to_string())?,
        region_pages: (region_bytes / super::PAGE) as u32,
        ..cfg.policy
    };
    wire_config(&policy)
        .publish(region, &layout, 1)
        .map_err(|e| e.to_string())
}

/// A managed run (`host` or `ipu`) over `link`, whose peer runs the memory service.
pub fn run_managed<L: Link>(
    link: &L,
    mode: MemMode,
    cfg: &MemRunConfig,
) -> Result<MemRunResults, String> {
    let place = place_control(cfg);
    let (zram, far_name, note) = far_tier(cfg);
    if let Some(n) = &note {
        eprintln!("wave: mem: {n}");
    }
    let (mem, mut mech) = managed_area(AreaConfig {
        bytes: cfg.table_bytes,
        read_samples: cfg.read_samples,
        ..AreaConfig::default()
    })
    .map_err(|e| format!("cannot set up the managed area: {e}"))?;
    if let Some(p) = place.as_ref().filter(|_| cfg.read_samples > 0) {
        if let Some(tid) = handler_tid(&mech) {
            p.pin_to_kv(tid);
        }
    }
    let kv = KvStore::new(mem);
    if let Some(set_up) = &cfg.set_up {
        set_up.store(true, Release);
    }
    let region = link.region();
    let layout = Layout::read(&region).map_err(|e| e.to_string())?;
    let pcfg = MemConfig {
        n_regions: mech.n_regions(),
        region_pages: (mech.region_bytes() / super::PAGE) as u32,
        ..cfg.policy
    };
    let mut ep = if cfg.lane {
        crate::link::host_lane(link, &layout, &[MEM_CHANNEL], cfg.link_up_timeout)
    } else {
        Endpoint::primary(region, &layout, Side::Host, link.epoch(), &[MEM_CHANNEL])
    }
    .map_err(|e| format!("{e:?}"))?;
    wire_config(&pcfg)
        .publish(&region, &layout, ep.epoch() as u64)
        .map_err(|e| e.to_string())?;
    link_up(link, &mut ep, cfg.link_up_timeout)?;
    let shared = KvShared::default();
    let sched = Schedule {
        interval_ns: cfg.interval.as_nanos() as u64,
        run_ns: cfg.duration.as_nanos() as u64,
        sample_every: (250_000_000 / cfg.interval.as_nanos().max(1) as u64).max(1),
        wss_age: match pcfg.wss_age {
            0 => 2 * pcfg.intervals_per_minute as u64,
            a => a as u64,
        },
        progress_ns: if cfg.progress { 1_000_000_000 } else { 0 },
        decision_ttl: (pcfg.pending_timeout as u64 / 2).max(1),
    };
    let mut res = MemRunResults {
        mode: mode.name().into(),
        table_bytes: cfg.table_bytes as u64,
        far_tier: far_name,
        note,
        intervals_per_minute: pcfg.intervals_per_minute,
        slo_ppm: pcfg.slo_ppm_per_minute,
        region_pages: (mech.region_bytes() / super::PAGE) as u64,
        n_regions: mech.n_regions(),
        placement: describe(place.as_ref(), cfg),
        ..MemRunResults::default()
    };
    let (mut d, svc) = std::thread::scope(|s| {
        let origin = Instant::now();
        let (shared, pl) = (&shared, place.as_ref());
        let worker = s.spawn(move || drive(kv, &cfg.load, cfg.duration, origin, shared, pl));
        let cpu0 = crate::engine::thread_cpu_ns();
        let republish = |epoch: u32| {
            let _ = wire_config(&pcfg).publish(&region, &layout, epoch as u64);
        };
        let mut svc = Sessions {
            svc: MemHostService::new(&mut mech, shared, sched),
            republish: &republish,
            session: None,
        };
        let stop = AtomicBool::new(false);
        let mut port = HostPort::new(link, origin, &stop)
            .with_deadline(origin + cfg.duration + Duration::from_secs(30));
        let mut rt = Runtime::new(Tuning::HOST);
        // The phase change mark: run to the middle, mark, run to the end.
        let half = cfg.duration / 2;
        let mut port_half = HostPort::new(link, origin, &stop).with_deadline(origin + half);
        rt.run(&mut ep, &mut port_half, &mut [&mut svc]);
        svc.svc.mark();
        rt.run(&mut ep, &mut port, &mut [&mut svc]);
        let now = origin.elapsed().as_nanos() as u64;
        svc.svc.sample(now);
        ep.stop();
        let _ = link.notify(VECTOR_CONTROL);
        res.mech_cpu_s = crate::engine::thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e9;
        let mut d = match worker.join() {
            Ok(v) => v,
            Err(_) => return Err("the workload thread panicked".to_string()),
        };
        res.p99_windows = std::mem::take(&mut d.windows);
        res.phase_s = d.phase_s;
        Ok((d, Report::of(&mut svc.svc)))
    })?;
    res.handler_cpu_s = threads_cpu_s("wave-mem-uffd");
    res.mech_cpu_s += res.handler_cpu_s;
    let failures = d.kv.checksum_failures + verify_all(&mut d.kv);
    summary(&mut res, &d, cfg.duration.as_secs_f64(), failures);
    svc.fill(&mut res);
    res.mech = Some(*mech.stats());
    res.slow_by = super::place::attribute(&d.load.slow_log, mech.work_log());
    drop(d);
    drop(mech);
    drop(zram);
    Ok(res)
}

/// The sampler's fault handler thread id (it records it when it starts: wait briefly).
fn handler_tid(mech: &super::Mechanism) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(t) = mech.fault_handler_tid() {
            return Some(t);
        }
        if start.elapsed() > Duration::from_secs(1) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The host memory service following its endpoint's sessions: on every new session after the
/// first (the IPU restarted, or this lane's primary did: `docs/abi.md` §5 "Lanes") it
/// publishes the MemConfig again under the new host epoch and drops what it had queued for the
/// old session, then goes on. Decisions of the old session never arrive (the rings restart).
struct Sessions<'s, 'm> {
    svc: MemHostService<'m>,
    republish: &'s dyn Fn(u32),
    session: Option<u32>,
}

impl<'a> Service<'a> for Sessions<'_, '_> {
    fn name(&self) -> &'static str {
        self.svc.name()
    }
    fn channel(&self) -> wave_abi::Channel {
        MEM_CHANNEL
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, now: u64, log: &mut dyn Log) -> Step {
        if ep.is_up() && self.session != Some(ep.session()) {
            if self.session.is_some() {
                (self.republish)(ep.epoch());
                self.svc.new_session();
                log.log(format_args!("mem: new session {:#010x}", ep.session()));
            }
            self.session = Some(ep.session());
        }
        self.svc.step(ep, now, log)
    }
    fn counters(&self) -> (u64, u64) {
        Service::counters(&self.svc)
    }
    fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        Service::deadline_ns(&self.svc, now_ns)
    }
    fn finished(&self) -> bool {
        Service::finished(&self.svc)
    }
}

/// What the host service measured, taken out before the mechanism it borrows is released.
struct Report {
    samples: Vec<Sample>,
    wss: Vec<u32>,
    promoted: Vec<u64>,
    trace: Vec<Vec<wave_policy::mem::RegionRecord>>,
    mark: Option<u64>,
    counters: WireCounters,
    decision_latency: Latency,
    round_trip: Latency,
    invalid: u64,
}

impl Report {
    fn of(svc: &mut MemHostService<'_>) -> Report {
        Report {
            samples: std::mem::take(&mut svc.samples),
            wss: std::mem::take(&mut svc.wss),
            promoted: std::mem::take(&mut svc.promoted),
            trace: std::mem::take(&mut svc.trace),
            mark: svc.mark_interval(),
            counters: svc.counters,
            decision_latency: svc.decision_latency.summary(),
            round_trip: svc.round_trip.summary(),
            invalid: svc.decode_stats().invalid(),
        }
    }

    fn fill(self, res: &mut MemRunResults) {
        let table = res.table_bytes as i64;
        let at = |t: f64| {
            self.samples
                .iter()
                .rev()
                .find(|s| s.t_s <= t)
                .or(self.samples.first())
                .copied()
                .unwrap_or_default()
        };
        let points = [
            self.samples.first().copied().unwrap_or_default(),
            at(res.phase_s - 0.01),
            self.samples.last().copied().unwrap_or_default(),
        ];
        for (i, p) in points.iter().enumerate() {
            res.resident[i] = p.resident;
            res.far_used[i] = p.far_used;
            res.saved[i] = table - p.resident as i64 - p.far_used as i64;
        }
        res.wss_per_interval = self.wss;
        res.promoted = self.promoted;
        res.trace = self.trace;
        res.mark_interval = self.mark;
        let c = self.counters;
        let decided: u64 = c.decisions.iter().sum();
        let outcomes: u64 = c.outcomes.iter().sum();
        res.invariant_violations += decided.abs_diff(outcomes);
        res.samples = self.samples;
        res.wire = Some(c);
        res.decision_latency = self.decision_latency;
        res.round_trip = self.round_trip;
        res.invalid_entries += self.invalid;
    }
}

#[cfg(test)]
mod check_tests {
    use super::check_load;

    #[test]
    fn extreme_numbers_are_refused() {
        assert!(check_load(1024, 100_000.0, 20.0).is_ok());
        for (mib, rate, secs) in [
            (4, 1.0, 1.0),
            (u64::MAX, 1.0, 1.0),
            (64, f64::NAN, 1.0),
            (64, f64::INFINITY, 1.0),
            (64, 0.0, 1.0),
            (64, 1.0, f64::NAN),
            (64, 1.0, 1e308),
        ] {
            assert!(check_load(mib, rate, secs).is_err(), "{mib} {rate} {secs}");
        }
    }
}
