//! The host scheduling engine (Linux runtime, `std`): host CPUs are pinned worker threads,
//! schedulable threads are fibers running real request handlers, and every scheduling
//! decision comes from an agent over the link, validated by the [`crate::sched`] mechanism.
//!
//! Three agent modes share one workload and one offered load (see `docs/engine.md`):
//! - [`run_ipu`]: the agent runs on the IPU (firmware in QEMU) at the other end of `link`;
//! - [`run_host`]: the same scheduling service under the same agent runtime
//!   (`wave_policy::sched_service`, `wave_policy::runtime`) in a host thread over an in-process
//!   [`crate::local::LocalLink`]; its CPU time is reported;
//! - [`run_linux`]: no shim, the handlers are plain OS threads scheduled by Linux.
//!
//! Modules: [`hist`] (lock-free latency histogram), [`workload`] (table, requests, arrivals),
//! `runtime` (CPUs, fibers, event funnel, invariants), `host_agent`, `linux`, [`results`].

mod failover;
pub mod hist;
mod host_agent;
mod linux;
pub mod live;
pub mod results;
mod runtime;
pub mod workload;

use std::time::Duration;

pub use wave_policy::registry::PolicyChoice;

use crate::link::Link;
use crate::local::LocalLink;

pub use live::{EngineHandle, LiveCounts, SwapOutcome, SwapTicket};
pub use results::EngineResults;

/// Which agent schedules the host CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentMode {
    /// Firmware on the IPU, over the real link.
    Ipu,
    /// `SchedAgent` in a host thread over an in-process link.
    Host,
    /// Linux itself (no shim).
    Linux,
}

impl AgentMode {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            AgentMode::Ipu => "ipu",
            AgentMode::Host => "host",
            AgentMode::Linux => "linux",
        }
    }
}

/// Extra churn for the storm tests: makes the engine produce stale transactions on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Storm {
    /// Every this many µs, a churn thread changes the affinity of a random handler (bumping
    /// its sequence number, so a transaction prestaged for it at the old one fails as stale).
    pub affinity_every_us: u64,
    /// Every n-th request yields once halfway through (a Yield event), 0 = never.
    pub yield_every: u32,
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Policy the agent runs.
    /// Policy the agent runs, with its parameters (`wave_policy::registry`).
    pub policy: PolicyChoice,
    /// Offered load, requests per second (Poisson).
    pub rate: f64,
    /// How long the generator offers load.
    pub duration: Duration,
    /// Host CPUs (worker threads, pinned round-robin to the machine's cores).
    pub cpus: u32,
    /// Handler threads.
    pub handlers: u32,
    /// GET service time target (µs).
    pub get_us: f64,
    /// RANGE service time target (ms).
    pub range_ms: f64,
    /// Share of RANGE requests (percent).
    pub range_pct: f64,
    /// Keys in the table.
    pub table_keys: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Print a live progress line on stderr.
    pub progress: bool,
    /// Churn for tests.
    pub storm: Storm,
    /// After the load ends, how long to wait for queued requests to finish.
    pub drain_timeout: Duration,
    /// How long to wait for the link to come up.
    pub link_up_timeout: Duration,
    /// Fiber stack size (bytes).
    pub stack_size: usize,
    /// At the end (ipu mode), publish the host STOPPED and ring the IPU's control vector.
    pub stop_link_at_end: bool,
    /// The work per request, calibrated once ([`calibrate`]) and shared by every agent of a
    /// comparison, so every column runs identical work; `None`: the run calibrates its own.
    pub work: Option<workload::Work>,
    /// ipu mode: when the IPU dies or stalls, keep scheduling with the same policy in a host
    /// thread and hand back when an IPU is up again (`docs/engine.md` "Fallback"). Without
    /// it, a lost IPU ends the run (`EngineResults::peer_lost`).
    pub fallback: bool,
    /// ipu mode: the IPU is declared gone once its heartbeat has not changed for this long
    /// (a QEMU that exits is noticed at once).
    pub peer_timeout: Duration,
    /// Policy hot-swaps (ipu and host modes): at each time after the load starts, switch the
    /// agent to that policy under load, through the same resync path as a hand-back.
    pub policy_swaps: Vec<(Duration, PolicyChoice)>,
    /// A handle for the program that owns the run (ipu and host modes): swaps asked for
    /// while it runs, a stop flag, live counters ([`live`]).
    pub handle: Option<EngineHandle>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            policy: PolicyChoice::named("shinjuku").expect("shinjuku is registered"),
            rate: 10_000.0,
            duration: Duration::from_secs(5),
            cpus: 2,
            handlers: 64,
            get_us: 10.0,
            range_ms: 5.0,
            range_pct: 0.5,
            table_keys: 1 << 20,
            seed: 42,
            progress: false,
            storm: Storm::default(),
            drain_timeout: Duration::from_secs(30),
            link_up_timeout: Duration::from_secs(60),
            stack_size: 256 * 1024,
            stop_link_at_end: true,
            work: None,
            fallback: true,
            peer_timeout: DEFAULT_IPU_TIMEOUT,
            policy_swaps: Vec::new(),
            handle: None,
        }
    }
}

/// Default heartbeat bound of the engine's watchdog: the IPU beats every 1–2 ms while it
/// runs; under QEMU TCG on a loaded two-core machine its vCPU thread is sometimes not scheduled
/// for tens of ms, and a needless failover costs a switch and back, never correctness.
pub const DEFAULT_IPU_TIMEOUT: Duration = Duration::from_millis(100);

/// Why a run could not start or finish.
#[derive(Debug)]
pub enum EngineError {
    /// A setting is out of range.
    Config(String),
    /// The link (layout, endpoint, transport) failed.
    Link(String),
    /// The link did not come up in time.
    NeverUp(String),
    /// The host agent failed to start.
    Agent(String),
    /// An OS resource (thread, stack, memory) could not be created.
    Os(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(s) => write!(f, "configuration: {s}"),
            EngineError::Link(s) => write!(f, "link: {s}"),
            EngineError::NeverUp(s) => write!(f, "the link did not come up: {s}"),
            EngineError::Agent(s) => write!(f, "host agent: {s}"),
            EngineError::Os(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl EngineConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |s: &str| Err(EngineError::Config(s.into()));
        // Each CPU sleeps on doorbell vector CPU_VECTOR_BASE + cpu, and doorbell masks are u32.
        let max_cpus = wave_abi::sched::MAX_CPUS.min(32 - wave_abi::sched::CPU_VECTOR_BASE as u32);
        if self.cpus == 0 || self.cpus > max_cpus {
            return Err(EngineError::Config(format!("cpus must be 1..={max_cpus}")));
        }
        if self.handlers == 0 || self.handlers as usize > wave_policy::MAX_THREADS {
            return bad("handlers must be 1..=1024");
        }
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            return bad("rate must be > 0 and at most 10,000,000 requests/s");
        }
        let secs = self.duration.as_secs_f64();
        // A year bounds the arrival clock; a service runs "until stopped" as one long run.
        if !(secs > 0.0 && secs <= MAX_DURATION_S) {
            return bad("duration must be > 0 and at most one year");
        }
        if !(0.0..=100.0).contains(&self.range_pct) {
            return bad("range-pct must be 0..=100");
        }
        let p = &self.policy;
        wave_policy::Params::resolve(p.info.params, &p.params)
            .map_err(|e| EngineError::Config(format!("policy {}: {e}", p.info.name)))?;
        if !(self.get_us > 0.0 && self.get_us <= 100_000.0) {
            return bad("get-us must be > 0 and at most 100000 µs");
        }
        if !(self.range_ms > 0.0 && self.range_ms <= 1_000.0) {
            return bad("range-ms must be > 0 and at most 1000 ms");
        }
        if self.table_keys < SCAN_MIN_KEYS {
            return bad("table must hold at least 4096 keys");
        }
        for (at, p) in &self.policy_swaps {
            wave_policy::Params::resolve(p.info.params, &p.params)
                .map_err(|e| EngineError::Config(format!("policy {}: {e}", p.info.name)))?;
            if *at >= self.duration {
                return bad("a policy swap must happen before the end of the load");
            }
        }
        let ms = self.peer_timeout.as_millis();
        if !(1..=600_000).contains(&ms) {
            return bad("the IPU heartbeat bound must be 1..=600000 ms");
        }
        Ok(())
    }
}

const SCAN_MIN_KEYS: usize = 4096;
/// Longest load (one year, in seconds).
pub const MAX_DURATION_S: f64 = 365.0 * 24.0 * 3600.0;
/// Highest offered rate (the generator's arrivals are stamped in ns; far beyond any load the
/// engine can serve, low enough that a run never builds an unbounded queue in seconds).
const MAX_RATE: f64 = 10_000_000.0;

/// Measures the work per request for `cfg`'s service-time targets on the calling thread (see
/// [`workload::Work::calibrate`]). Run it once and put the result in [`EngineConfig::work`] so
/// that every agent compared runs the same chunks.
pub fn calibrate(cfg: &EngineConfig) -> workload::Work {
    let table = workload::Table::new(cfg.table_keys, cfg.seed);
    workload::Work::calibrate(&table, cfg.get_us * 1e3, cfg.range_ms * 1e6)
}

/// The calibration in one line (what every agent of a comparison runs).
pub fn describe_work(w: &workload::Work) -> String {
    runtime::work_desc(w)
}

/// Runs the engine against an agent at the other end of `link` (the IPU: pass the
/// `IvshmemServer` once QEMU is connected). The link needs `3 + cfg.cpus` doorbell vectors;
/// the caller's thread services the link (it calls `link.wait` on the control vector) while
/// worker threads wait on their own CPU vectors through the same `link` (it is `Sync`). The
/// engine is the host's primary endpoint for the scheduling channel only, so another thread
/// may run the link test over the same region as a lane at the same time.
pub fn run_ipu<L: Link>(link: &L, cfg: &EngineConfig) -> Result<EngineResults, EngineError> {
    cfg.validate()?;
    runtime::run_shim(link, cfg, AgentMode::Ipu, None)
}

/// Runs the engine with the agent in a host thread (same policy code as the firmware) over an
/// in-process link.
pub fn run_host(cfg: &EngineConfig) -> Result<EngineResults, EngineError> {
    cfg.validate()?;
    let vectors = wave_abi::sched::CPU_VECTOR_BASE + cfg.cpus as u16;
    let (host, ipu) = LocalLink::pair(1 << 20, vectors.max(4), 512)
        .map_err(|e| EngineError::Link(e.to_string()))?;
    runtime::run_shim(&host, cfg, AgentMode::Host, Some(ipu))
}

/// Runs the same workload on plain OS threads scheduled by Linux.
pub fn run_linux(cfg: &EngineConfig) -> Result<EngineResults, EngineError> {
    cfg.validate()?;
    linux::run(cfg)
}

/// Runs `mode` (host or linux; ipu needs a link, see [`run_ipu`]).
pub fn run(mode: AgentMode, cfg: &EngineConfig) -> Result<EngineResults, EngineError> {
    match mode {
        AgentMode::Host => run_host(cfg),
        AgentMode::Linux => run_linux(cfg),
        AgentMode::Ipu => Err(EngineError::Config(
            "ipu mode needs the IPU link: call engine::run_ipu(&server, cfg)".into(),
        )),
    }
}

/// Progress lines rewrite themselves on a terminal and become one line each otherwise.
pub(crate) fn progress_prefix() -> &'static str {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        "\r"
    } else {
        ""
    }
}

/// See [`progress_prefix`].
pub(crate) fn progress_suffix() -> &'static str {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        ""
    } else {
        "\n"
    }
}

/// Cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Pins the calling thread to `core` (modulo the machine's cores). Best effort.
pub(crate) fn pin_to(cores_set: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for c in cores_set {
        let _ = set.set(*c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

/// Asks for 1 µs timer slack on the calling thread, so short sleeps end on time.
pub(crate) fn fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only changes this thread's
    // timer slack; no memory is passed to the kernel.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0);
    }
}

/// CPU time the calling thread has used (ns).
pub(crate) fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Sleeps until `deadline_ns` of `clock` (coarse sleep, then a short spin for the rest).
pub(crate) fn sleep_until(clock: &Clock, deadline_ns: u64) {
    loop {
        let now = clock.now_ns();
        if now >= deadline_ns {
            return;
        }
        let left = deadline_ns - now;
        if left > 30_000 {
            std::thread::sleep(Duration::from_nanos(left - 20_000));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The engine's monotonic clock: ns since the run started (the events' `time_ns`).
#[derive(Clone, Copy)]
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Clock(std::time::Instant::now())
    }
    pub(crate) fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The open-loop load generator shared by all modes: Poisson arrivals at `cfg.rate` for
/// `cfg.duration`, each handed to `dispatch` (stamped with its *scheduled* arrival time, so a
/// late generator still charges the delay to the request's latency). Returns requests offered.
pub(crate) fn generate(
    cfg: &EngineConfig,
    clock: &Clock,
    stop: &std::sync::atomic::AtomicBool,
    mut dispatch: impl FnMut(workload::Request, u64),
) -> u64 {
    use workload::{Kind, Request, Rng};
    fine_timer_slack();
    let mut rng = Rng::new(cfg.seed);
    let mean_gap = 1e9 / cfg.rate;
    let start = clock.now_ns();
    let end = start + cfg.duration.as_nanos() as u64;
    let mut next = start as f64 + rng.exp(mean_gap);
    let mut offered = 0u64;
    while (next as u64) < end {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        sleep_until(clock, next as u64);
        let now = clock.now_ns();
        while (next as u64) <= now && (next as u64) < end {
            let kind = if rng.unit() * 100.0 < cfg.range_pct {
                Kind::Range
            } else {
                Kind::Get
            };
            let req = Request {
                kind,
                arrival_ns: next as u64,
                seed: rng.next_u64(),
            };
            dispatch(req, now);
            offered += 1;
            next += rng.exp(mean_gap);
        }
    }
    offered
}
