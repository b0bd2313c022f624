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
use wave_policy::mem_service::MemService;
use wave_policy::runtime::{self, Tuning};
use wave_policy::sched_service::SchedService;

/// How long to wait for the host to initialise the region.
const ATTACH_TIMEOUT_US: u64 = 30_000_000;
/// How often a secondary with a service looks for its job, and the boot core for results.
const MAILBOX_POLL_US: u64 = 1_000;

/// Host CPUs and threads one firmware scheduling agent schedules.
pub const AGENT_CPUS: usize = 16;
/// See [`AGENT_CPUS`].
pub const AGENT_THREADS: usize = 1024;
/// Regions one firmware memory agent manages (2 GiB at 2 MiB regions).
pub const MEM_REGIONS: usize = 1024;

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

/// One service the firmware can run: its name in `wave.services=`, the channel it serves,
/// and how a core runs it (until the host stops; it prints its own closing line).
pub struct ServiceEntry {
    /// Name in `wave.services=` and the boot report.
    pub name: &'static str,
    /// The channel (subsystem) it serves.
    pub channel: Channel,
    run: fn(&mut Job, &mut IpuPort<'static>) -> runtime::RuntimeStats,
}

/// Every service this firmware has: adding a subsystem's service is one line here.
pub const SERVICES: [ServiceEntry; 4] = [
    ServiceEntry {
        name: "echo",
        channel: Channel::LinkTest,
        run: run_echo,
    },
    ServiceEntry {
        name: "sched",
        channel: Channel::Sched,
        run: run_sched,
    },
    ServiceEntry {
        name: "mem",
        channel: wave_abi::mem::MEM_CHANNEL,
        run: run_mem,
    },
    ServiceEntry {
        name: "net",
        channel: wave_abi::net::NET_CHANNEL,
        run: run_net,
    },
];

const fn names() -> [&'static str; SERVICES.len()] {
    let mut out = [""; SERVICES.len()];
    let mut i = 0;
    while i < SERVICES.len() {
        out[i] = SERVICES[i].name;
        i += 1;
    }
    out
}

/// The names of [`SERVICES`], in order (what `BootArgs::parse` is given).
pub const SERVICE_NAMES: [&str; SERVICES.len()] = names();

fn entry(kind: ServiceKind) -> Option<&'static ServiceEntry> {
    SERVICES.get(kind.0 as usize)
}

/// The name of a service (for the boot report).
pub fn service_name(kind: ServiceKind) -> &'static str {
    entry(kind).map_or("?", |e| e.name)
}

/// One core's work: its endpoint (primary or lane) and its service.
pub struct Job {
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
}

// SAFETY: `job` is written only by the boot core before it stores POSTED (release) and read
// only by the one secondary after it loads POSTED (acquire). The state word orders every
// access, and no two cores touch the field in the same state.
unsafe impl Sync for Mailbox {}

static MAILBOXES: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        state: AtomicU8::new(EMPTY),
        assigned: AtomicU8::new(0),
        job: UnsafeCell::new(None),
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

/// A secondary core with a service: waits for its job, runs it, reports DONE.
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
    if let Some(job) = job {
        run_job(job);
    }
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

/// The channel a service serves.
fn channel(kind: ServiceKind) -> Channel {
    entry(kind).map_or(Channel(u8::MAX), |e| e.channel)
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
/// host stops its end. Runs on the boot core; returns once every service has ended.
pub fn run_services(
    dev: &'static dyn LinkDevice,
    services: &Services,
    spin_us: Option<u64>,
) -> Result<(), LinkFailure> {
    if let Some((_, c)) = services.iter().find(|(_, c)| {
        *c != 0 && cpus::cpu_of_slot(*c).is_none_or(|cpu| cpus::online_mask() & (1 << cpu) == 0)
    }) {
        return Err(LinkFailure::NoCore(c));
    }
    // The boot core sleeps on its timer while it waits for the host and for the results.
    port::enable_this_core(0);
    let region = dev.shared_region().map_err(|_| LinkFailure::Region)?;
    let size = region.len();
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
        println!("link: core {core} runs {}", service_name(kind));
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
    if let Some(job) = own {
        run_job(job);
    }
    for (_, core) in services.iter().filter(|(_, c)| *c != 0) {
        wait_done(core);
    }
    Ok(())
}

fn post(core: usize, job: Job) {
    let Some(m) = MAILBOXES.get(core) else { return };
    // SAFETY: the state is EMPTY, so the secondary does not read `job` until POSTED below.
    unsafe { *m.job.get() = Some(job) };
    m.state.store(POSTED, Ordering::Release);
}

fn wait_done(core: usize) {
    let Some(m) = MAILBOXES.get(core) else { return };
    while m.state.load(Ordering::Acquire) != DONE {
        port::sleep_us(MAILBOX_POLL_US);
    }
}

/// Runs one core's service under the runtime until the host stops.
fn run_job(mut job: Job) {
    let Some(e) = entry(job.kind) else { return };
    let mut port = IpuPort::new(job.dev, job.vectors);
    (e.run)(&mut job, &mut port);
    // A clean end stores STOPPED (docs/abi.md §7 "Clean stop"); the primary speaks for the
    // side, a refusal (VERSION_MISMATCH, REFUSED) stays as it is.
    job.ep.stop();
    job.dev.ring_host(wave_abi::layout::VECTOR_CONTROL);
}

fn irqs_line(job: &Job, rt: &runtime::RuntimeStats) -> (u64, u64) {
    (rt.sleeps, port::irqs(job.vectors))
}

fn run_echo(job: &mut Job, port: &mut IpuPort<'static>) -> runtime::RuntimeStats {
    let mut echo = EchoService::new();
    let (_, rt) = runtime::run(&mut job.ep, port, &job.tuning, &mut [&mut echo]);
    let (sleeps, irqs) = irqs_line(job, &rt);
    let st = echo.stats();
    println!(
        "link: host stopped; core {} echoed {} invalid {} resyncs {} doorbells {} sleeps {sleeps} doorbell-irqs {irqs}",
        job.core, st.echoed, st.invalid, rt.resyncs, rt.doorbells
    );
    rt
}

fn run_sched(job: &mut Job, port: &mut IpuPort<'static>) -> runtime::RuntimeStats {
    let mut sched: SchedService<'static, AGENT_CPUS, AGENT_THREADS> =
        SchedService::new(job.region, job.layout);
    if crate::pmu::wanted() {
        crate::pmu::start();
        sched.set_meter(Some(crate::pmu::read));
    }
    let (_, rt) = runtime::run(&mut job.ep, port, &job.tuning, &mut [&mut sched]);
    print_policy(&sched);
    if let Some(c) = sched
        .agent()
        .map(|a| a.cost())
        .filter(|_| crate::pmu::wanted())
    {
        println!(
            "sched: pmu: events {} instructions {} cycles {} decisions {} instructions {} cycles {}",
            c.events,
            c.event_instructions,
            c.event_cycles,
            c.decisions,
            c.decision_instructions,
            c.decision_cycles
        );
    }
    let (sleeps, irqs) = irqs_line(job, &rt);
    let t = sched.totals();
    println!(
        "sched: host stopped; core {} events {} invalid {} decisions {} sessions {} sleeps {sleeps} doorbell-irqs {irqs}",
        job.core, t.events, t.invalid, t.decisions, t.sessions
    );
    rt
}
fn run_net(job: &mut Job, port: &mut IpuPort<'static>) -> runtime::RuntimeStats {
    let mut net = wave_policy::net::NetService::new();
    let (_, rt) = runtime::run(&mut job.ep, port, &job.tuning, &mut [&mut net]);
    let st = net.stats().unwrap_or_default();
    println!(
        "net: host stopped; core {} intervals {} decisions {} committed {} stale {} hostile {} invalid {}",
        job.core,
        st.intervals,
        net.decisions(),
        st.committed,
        st.stale,
        st.hostile,
        net.decode_stats().invalid()
    );
    rt
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

fn run_mem(job: &mut Job, port: &mut IpuPort<'static>) -> runtime::RuntimeStats {
    let mut mem: MemService<'static, MEM_REGIONS> = MemService::new(job.region, job.layout);
    let (_, rt) = runtime::run(&mut job.ep, port, &job.tuning, &mut [&mut mem]);
    let (sleeps, irqs) = irqs_line(job, &rt);
    let st = mem.stats();
    if let Some(p) = mem.policy() {
        let ps = p.stats();
        println!(
            "mem: policy: intervals {} reclaims {} promotions {} committed {} stale {} failed {} threshold {} invariants {}",
            ps.intervals,
            ps.decisions[0],
            ps.promotions,
            ps.outcomes[0],
            ps.outcomes[1],
            ps.outcomes[2],
            p.threshold(),
            if p.check_invariants().is_ok() { "ok" } else { "VIOLATED" }
        );
    }
    println!(
        "mem: host stopped; core {} records {} outcomes {} ticks {} decisions {} invalid {} sessions {} sleeps {sleeps} doorbell-irqs {irqs}",
        job.core, st.records, st.outcomes, st.ticks, st.decisions, st.invalid, st.sessions
    );
    rt
}
