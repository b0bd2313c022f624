//! The IPU end of the host link (`docs/abi.md`): attach to the region the host initialised,
//! place the services the boot arguments name on their cores (`wave.services=sched@1,echo@2`),
//! route each service's doorbell vector to its core, and run every service under the agent
//! runtime (`wave_policy::runtime`), one per core, through the core's [`IpuPort`].
//!
//! The first service listed owns the IPU's status block (state, epoch, heartbeat, control
//! vector); the others serve their channel as lanes of it (see `docs/abi.md`, "Lanes"). The
//! boot core hands a secondary core its job through a mailbox; a secondary with a service
//! waits for it in WFI (woken by its timer), every other secondary stays in WFI for good.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::board::MAX_CPUS;
use crate::bootargs::{ServiceKind, Services};
use crate::port::{self, IpuPort, LinkDevice};
use crate::{cpus, gic, println, time};
use wave_abi::layout::{LayoutError, Side};
use wave_abi::status::next_epoch;
use wave_abi::{Channel, Endpoint, Layout, SharedRegion};
use wave_policy::echo::EchoService;
use wave_policy::runtime::{self, Service, Tuning};
use wave_policy::sched_service::SchedService;

/// How long to wait for the host to initialise the region.
const ATTACH_TIMEOUT_US: u64 = 30_000_000;
/// How often a secondary with a service looks for its job, and the boot core for results.
const MAILBOX_POLL_US: u64 = 1_000;

/// Host CPUs and threads one firmware scheduling agent schedules.
pub const AGENT_CPUS: usize = 16;
/// See [`AGENT_CPUS`].
pub const AGENT_THREADS: usize = 1024;

/// Why the link could not be served.
#[derive(Clone, Copy, Debug)]
pub enum LinkFailure {
    /// The BAR cannot be viewed as a region (alignment or size).
    Region,
    /// The host never wrote the header.
    NoHost,
    /// The host's header is unusable (version, size, table); also published to the host.
    Layout(LayoutError),
    /// The endpoint could not be built from the layout.
    Endpoint,
    /// Doorbell interrupts could not be routed.
    Interrupts(gic::GicError),
    /// A service was assigned to a core that is not online.
    NoCore(usize),
}

impl core::fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkFailure::Region => write!(f, "the shared-memory BAR is not usable as a region"),
            LinkFailure::NoHost => write!(
                f,
                "the host never initialised the shared region (is `wave-host` serving the socket QEMU connects to?)"
            ),
            LinkFailure::Layout(LayoutError::Version { major, minor }) => write!(
                f,
                "ABI version mismatch: the host speaks {major}.{minor}, this firmware {}.{}; rebuild one side",
                wave_abi::ABI_MAJOR,
                wave_abi::ABI_MINOR
            ),
            LinkFailure::Layout(e) => write!(f, "the host's shared region is unusable: {e:?}"),
            LinkFailure::Endpoint => write!(f, "the layout's ring placements are invalid"),
            LinkFailure::Interrupts(e) => write!(f, "{e}"),
            LinkFailure::NoCore(c) => write!(
                f,
                "a service is assigned to core {c}, which is not online (boot with more cores, e.g. --smp {}, or change wave.services=)",
                c + 1
            ),
        }
    }
}

/// What one core's service did.
#[derive(Clone, Copy, Debug)]
pub struct CoreReport {
    /// The core (stack slot).
    pub core: usize,
    /// Its service.
    pub kind: ServiceKind,
    /// Service counters: echo (echoed, invalid); sched (decisions, invalid).
    pub count: u64,
    /// Invalid entries counted and skipped.
    pub invalid: u64,
    /// Valid events applied (sched), 0 for echo.
    pub events: u64,
    /// Sessions served (sched), 0 for echo.
    pub sessions: u64,
    /// Runtime counters.
    pub runtime: runtime::RuntimeStats,
    /// Doorbell interrupts this core took.
    pub irqs: u64,
}

impl CoreReport {
    /// Prints the closing line for this core (tests look for "host stopped").
    pub fn print(&self) {
        let r = &self.runtime;
        match self.kind {
            ServiceKind::Echo => println!(
                "link: host stopped; core {} echoed {} invalid {} resyncs {} doorbells {} sleeps {} doorbell-irqs {}",
                self.core, self.count, self.invalid, r.resyncs, r.doorbells, r.sleeps, self.irqs
            ),
            ServiceKind::Sched => println!(
                "sched: host stopped; core {} events {} invalid {} decisions {} sessions {} sleeps {} doorbell-irqs {}",
                self.core, self.events, self.invalid, self.count, self.sessions, r.sleeps, self.irqs
            ),
        }
    }
}

/// One core's work: its endpoint (primary or lane) and its service.
struct Job {
    core: usize,
    kind: ServiceKind,
    ep: Endpoint<'static>,
    region: SharedRegion<'static>,
    layout: Layout,
    dev: &'static dyn LinkDevice,
    vectors: u64,
    tuning: Tuning,
}

const EMPTY: u8 = 0;
const POSTED: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// A one-shot hand-off between the boot core and one secondary: the boot core writes `job`
/// then publishes POSTED; the secondary takes it (RUNNING), writes `report`, publishes DONE.
struct Mailbox {
    state: AtomicU8,
    assigned: AtomicU8,
    job: UnsafeCell<Option<Job>>,
    report: UnsafeCell<Option<CoreReport>>,
}

// SAFETY: `job` is written only by the boot core before it stores POSTED (release) and read
// only by the one secondary after it loads POSTED (acquire); `report` is written only by that
// secondary before DONE (release) and read by the boot core after DONE (acquire). The state
// word orders every access, and no two cores touch a field in the same state.
unsafe impl Sync for Mailbox {}

static MAILBOXES: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        state: AtomicU8::new(EMPTY),
        assigned: AtomicU8::new(0),
        job: UnsafeCell::new(None),
        report: UnsafeCell::new(None),
    }
}; MAX_CPUS];

/// Marks the cores that will run a service (before they start: their entry checks it).
pub fn plan(services: &Services) {
    for (_, core) in services.iter() {
        if let Some(m) = MAILBOXES.get(core) {
            m.assigned.store(1, Ordering::Release);
        }
    }
}

/// True if the core in `slot` will be given a service.
pub fn has_service(slot: usize) -> bool {
    MAILBOXES
        .get(slot)
        .is_some_and(|m| m.assigned.load(Ordering::Acquire) != 0)
}

/// A secondary core with a service: waits for its job, runs it, posts the report.
pub fn serve_secondary(slot: usize) {
    let Some(m) = MAILBOXES.get(slot) else { return };
    port::enable_this_core(slot);
    while m.state.load(Ordering::Acquire) != POSTED {
        port::sleep_us(MAILBOX_POLL_US);
    }
    // SAFETY: POSTED was loaded with acquire: the boot core finished writing `job` and will
    // not touch it again (see `Mailbox`).
    let job = unsafe { (*m.job.get()).take() };
    m.state.store(RUNNING, Ordering::Relaxed);
    let report = job.map(run_job);
    // SAFETY: only this core writes `report`, before publishing DONE.
    unsafe { *m.report.get() = report };
    m.state.store(DONE, Ordering::Release);
}

/// Waits for the host's header and returns the validated layout.
fn attach(region: &SharedRegion<'_>) -> Result<Layout, LinkFailure> {
    let deadline = time::deadline_after_micros(ATTACH_TIMEOUT_US);
    let mut said = false;
    loop {
        match Layout::read(region) {
            Ok(l) => return Ok(l),
            Err(LayoutError::BadMagic(_)) if time::ticks() < deadline => {
                if !said {
                    println!("link: waiting for the host to initialise the shared region");
                    said = true;
                }
                port::sleep_us(1_000);
            }
            Err(LayoutError::BadMagic(_)) => return Err(LinkFailure::NoHost),
            Err(e) => {
                wave_abi::endpoint::report_attach_error(region, &e, 1);
                return Err(LinkFailure::Layout(e));
            }
        }
    }
}

/// The channel a service kind serves.
fn channel(kind: ServiceKind) -> Channel {
    match kind {
        ServiceKind::Echo => Channel::LinkTest,
        ServiceKind::Sched => Channel::Sched,
    }
}

/// Routes every vector of `dev`: each service's channel vector to its core, every other
/// vector (control included) to the primary's core. Returns each service's vector mask.
fn route(
    dev: &dyn LinkDevice,
    layout: &Layout,
    services: &Services,
) -> Result<[u64; MAX_CPUS], LinkFailure> {
    let mut masks = [0u64; MAX_CPUS];
    let primary = services.iter().next().map_or(0, |(_, c)| c);
    for v in 0..dev.vectors() {
        let core = services
            .iter()
            .find(|(k, _)| layout.place(channel(*k).rx_kind(Side::Ipu)).vector == v)
            .map_or(primary, |(_, c)| c);
        dev.route(v, core).map_err(LinkFailure::Interrupts)?;
        if let Some(m) = masks.get_mut(core) {
            *m |= 1 << v;
        }
    }
    Ok(masks)
}

/// Attaches to the host's region, places `services` on their cores and runs them until the
/// host stops its end. Runs on the boot core; returns one report per service.
pub fn run_services(
    dev: &'static dyn LinkDevice,
    services: &Services,
    spin_us: Option<u64>,
) -> Result<heapless::Vec<CoreReport, 4>, LinkFailure> {
    if let Some((_, c)) = services.iter().find(|(_, c)| {
        *c != 0 && cpus::cpu_of_slot(*c).is_none_or(|cpu| cpus::online_mask() & (1 << cpu) == 0)
    }) {
        return Err(LinkFailure::NoCore(c));
    }
    // The boot core sleeps on its timer while it waits for the host and for the results.
    port::enable_this_core(0);
    let (base, size) = dev.shared_memory();
    // SAFETY: the BAR is mapped normal non-cacheable for the rest of the run (memory.rs), is
    // used only through this region's atomic accesses, and is never unmapped.
    let region: SharedRegion<'static> = unsafe { SharedRegion::from_raw(base as *mut u8, size) }
        .map_err(|_| LinkFailure::Region)?;
    let layout = attach(&region)?;
    let masks = route(dev, &layout, services)?;
    let epoch = next_epoch(wave_abi::endpoint::previous_epoch(
        &region,
        &layout,
        Side::Ipu,
    ));
    let mut tuning = Tuning::IPU;
    if let Some(us) = spin_us {
        tuning.spin_ns = us.saturating_mul(1000);
    }
    println!(
        "link: attached to ABI {}.{} region of {} KiB as epoch {epoch}; spin {} us",
        wave_abi::ABI_MAJOR,
        wave_abi::ABI_MINOR,
        size >> 10,
        tuning.spin_ns / 1000
    );
    let mut own: Option<Job> = None;
    for (i, (kind, core)) in services.iter().enumerate() {
        let ep = if i == 0 {
            Endpoint::primary(region, &layout, Side::Ipu, epoch, &[channel(kind)])
        } else {
            Endpoint::lane(region, &layout, Side::Ipu, &[channel(kind)])
        }
        .map_err(|_| LinkFailure::Endpoint)?;
        println!("link: core {core} runs {}", kind.name());
        let job = Job {
            core,
            kind,
            ep,
            region,
            layout,
            dev,
            vectors: masks.get(core).copied().unwrap_or(0),
            tuning,
        };
        if core == 0 {
            own = Some(job);
        } else {
            post(core, job);
        }
    }
    let mut reports = heapless::Vec::new();
    if let Some(job) = own {
        let _ = reports.push(run_job(job));
    }
    for (_, core) in services.iter().filter(|(_, c)| *c != 0) {
        if let Some(r) = collect(core) {
            let _ = reports.push(r);
        }
    }
    Ok(reports)
}

fn post(core: usize, job: Job) {
    let Some(m) = MAILBOXES.get(core) else { return };
    // SAFETY: the state is EMPTY, so the secondary does not read `job` until POSTED below.
    unsafe { *m.job.get() = Some(job) };
    m.state.store(POSTED, Ordering::Release);
}

fn collect(core: usize) -> Option<CoreReport> {
    let m = MAILBOXES.get(core)?;
    while m.state.load(Ordering::Acquire) != DONE {
        port::sleep_us(MAILBOX_POLL_US);
    }
    // SAFETY: DONE was loaded with acquire: the secondary wrote `report` and is finished.
    unsafe { (*m.report.get()).take() }
}

/// Runs one core's service under the runtime until the host stops.
fn run_job(mut job: Job) -> CoreReport {
    let mut port = IpuPort::new(job.dev, job.vectors);
    let irq0 = port::irqs(job.vectors);
    let mut report = CoreReport {
        core: job.core,
        kind: job.kind,
        count: 0,
        invalid: 0,
        events: 0,
        sessions: 0,
        runtime: runtime::RuntimeStats::default(),
        irqs: 0,
    };
    match job.kind {
        ServiceKind::Echo => {
            let mut echo = EchoService::new();
            let services: &mut [&mut dyn Service<'static>] = &mut [&mut echo];
            (_, report.runtime) = runtime::run(&mut job.ep, &mut port, &job.tuning, services);
            (report.invalid, report.count) = (echo.stats().invalid, echo.stats().echoed);
        }
        ServiceKind::Sched => {
            let mut sched: SchedService<'static, AGENT_CPUS, AGENT_THREADS> =
                SchedService::new(job.region, job.layout);
            let services: &mut [&mut dyn Service<'static>] = &mut [&mut sched];
            (_, report.runtime) = runtime::run(&mut job.ep, &mut port, &job.tuning, services);
            print_policy(&sched);
            let t = sched.totals();
            (report.invalid, report.count) = (t.invalid, t.decisions);
            (report.events, report.sessions) = (t.events, t.sessions);
        }
    }
    report.irqs = port::irqs(job.vectors) - irq0;
    report
}

fn print_policy(sched: &SchedService<'static, AGENT_CPUS, AGENT_THREADS>) {
    if let Some(a) = sched.agent() {
        let ps = a.policy().stats();
        println!(
            "sched: policy {}: committed {} stale {} not-runnable {} aborts {} (won {}) preempts {}",
            a.policy().name(),
            ps.txn_committed,
            ps.txn_failed_stale,
            ps.txn_failed_not_runnable,
            ps.aborts,
            ps.abort_won,
            ps.preempts
        );
    }
}
