//! The IPU end of the host link (`docs/abi.md`): attach to the region the host initialised in
//! the ivshmem shared-memory BAR, route the doorbell vectors to this core, and run an agent
//! loop that polls its rings and sleeps on a doorbell (or a bounded timer) only after
//! announcing it in shared memory.
//!
//! Two services run in that loop: the link-test echo (`wave.link=echo`) and the scheduling
//! agent (`wave.link=sched`, the policy from `wave-policy`).

use crate::gic;
use crate::ivshmem::Ivshmem;
use crate::println;
use crate::time;
use wave_abi::layout::{LayoutError, Side};
use wave_abi::msg::EchoAgent;
use wave_abi::sched::{SchedError, CPU_VECTOR_BASE};
use wave_abi::status::next_epoch;
use wave_abi::{Channel, Down, Endpoint, Layout, SharedRegion};
use wave_policy::agent::{AgentError, SchedAgent};

/// How long to wait for the host to initialise the region.
const ATTACH_TIMEOUT_US: u64 = 30_000_000;
/// Idle time before announcing sleep.
const SPIN_US: u64 = 200;
/// Longest sleep without a doorbell (bounds the cost of a lost wake-up).
const SLEEP_US: u64 = 2_000;
/// How often heartbeat and counters are published while busy.
const TICK_US: u64 = 1_000;

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
        }
    }
}

/// What the echo agent did.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoSummary {
    /// Responses sent.
    pub echoed: u64,
    /// Requests that failed validation (counted and skipped).
    pub invalid: u64,
    /// Host restarts seen.
    pub resyncs: u64,
    /// Doorbells rung at the host.
    pub doorbells: u64,
    /// Sleeps announced.
    pub sleeps: u64,
    /// Doorbell interrupts taken.
    pub irqs: u64,
    /// Timer wake-ups taken.
    pub timer_wakeups: u64,
    /// Our epoch.
    pub epoch: u32,
}

/// Routes every doorbell vector of `dev` to the core in `slot`, and turns on that core's
/// interrupts. MSI-X is already enabled with vectors masked (`Ivshmem::enable_msix_masked`),
/// so doorbells that arrived before this latched in the PBA and fire on unmask.
pub fn route_doorbells(dev: &Ivshmem, slot: usize) -> Result<(), gic::GicError> {
    for v in 0..dev.msix.vectors.min(gic::MAX_VECTORS as u16) {
        let (addr, data) = gic::route_msi(dev.requester_id(), v as u32, slot)?;
        dev.set_vector(v, addr, data);
    }
    gic::enable_timer(slot);
    gic::enable_cpu();
    Ok(())
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
                sleep_us(1_000);
            }
            Err(LayoutError::BadMagic(_)) => return Err(LinkFailure::NoHost),
            Err(e) => {
                wave_abi::endpoint::report_attach_error(region, &e, 1);
                return Err(LinkFailure::Layout(e));
            }
        }
    }
}

/// Sleeps until an interrupt or `us` microseconds, with no race against an interrupt that
/// arrives just before: IRQs are masked around the check, and WFI wakes on a pending IRQ even
/// while masked.
fn sleep_us(us: u64) {
    // IRQs masked from before the timer is armed until after WFI: an interrupt (timer or
    // doorbell) that arrives in between stays pending and makes WFI return at once, instead of
    // being handled before WFI and leaving it to sleep with nothing to wake it.
    let daif: u64;
    // SAFETY: saving DAIF and masking IRQs on this core; restored below. No `nomem`, so the
    // compiler does not move the caller's shared-memory checks across the mask.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nostack)) };
    time::arm_wakeup(us);
    // SAFETY: WFI only waits; a pending (even masked) interrupt ends it.
    unsafe { core::arch::asm!("wfi", options(nostack, preserves_flags)) };
    // SAFETY: restores this core's interrupt mask; a pending IRQ is taken here if unmasked.
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nostack)) };
}

/// A service the agent loop runs over the link: link test echo, or the scheduling agent.
trait Service<'a> {
    /// One bounded step. Returns the work done (0 = idle) and a bitmask of host doorbell
    /// vectors to ring.
    fn step(&mut self, ep: &mut Endpoint<'a>, now_ns: u64) -> (usize, u64);
    /// Counters to publish: (invalid entries, service-specific count).
    fn counters(&self) -> (u64, u64);
    /// When the service next needs a step without any doorbell (ns, same clock as `step`).
    fn deadline_ns(&self, now_ns: u64) -> Option<u64>;
}

struct Echo(EchoAgent);

impl<'a> Service<'a> for Echo {
    fn step(&mut self, ep: &mut Endpoint<'a>, _now: u64) -> (usize, u64) {
        let (taken, ring) = self.0.step(ep);
        (taken, ring.map_or(0, |v| 1u64 << (v & 63)))
    }
    fn counters(&self) -> (u64, u64) {
        let st = self.0.stats();
        (st.invalid, st.echoed)
    }
    fn deadline_ns(&self, _now: u64) -> Option<u64> {
        None
    }
}

/// The scheduling agent, rebuilt whenever the link session or the host's configuration
/// changes (a restarted host starts from scratch: its threads and transactions are gone).
struct Sched<'a> {
    region: SharedRegion<'a>,
    layout: Layout,
    agent: Option<SchedAgent<'a, AGENT_CPUS, AGENT_THREADS>>,
    refused: Option<AgentError>,
    /// Totals over all sessions.
    events: u64,
    invalid: u64,
    decisions: u64,
    sessions: u64,
}

/// Host CPUs and threads one firmware agent schedules.
pub const AGENT_CPUS: usize = 16;
/// See [`AGENT_CPUS`].
pub const AGENT_THREADS: usize = 1024;

impl<'a> Service<'a> for Sched<'a> {
    fn step(&mut self, ep: &mut Endpoint<'a>, now_ns: u64) -> (usize, u64) {
        let session = ep.session();
        // A new link session, or a new host configuration (its generation is the host epoch):
        // the host's threads and transactions are not the ones this agent knows.
        let host = ep.peer_epoch() as u64;
        let stale = self
            .agent
            .as_ref()
            .is_some_and(|a| a.session() != session || a.generation() != host);
        if stale {
            self.agent = None;
        }
        if self.agent.is_none() {
            match SchedAgent::new(&self.region, &self.layout, session) {
                // Still the previous host's configuration: wait for this host's.
                Ok(a) if a.generation() != host => return (0, 0),
                Ok(a) => {
                    println!(
                        "sched: session {session:#010x}: {} policy, {} host CPUs, {} threads",
                        a.policy().name(),
                        a.config().n_cpus,
                        a.config().n_threads
                    );
                    self.agent = Some(a);
                    self.refused = None;
                    self.sessions += 1;
                }
                Err(AgentError::Sched(SchedError::NoConfig)) => return (0, 0),
                Err(e) => {
                    if self.refused != Some(e) {
                        println!("sched: refusing the host's configuration: {e}");
                        self.refused = Some(e);
                    }
                    // Drain (and count) events so the host is not blocked by a full ring.
                    let mut n = 0;
                    // Bounded: a host that keeps producing cannot keep this step busy.
                    for _ in 0..wave_policy::agent::EVENTS_PER_STEP {
                        if ep.rx(Channel::Sched).poll().is_none() {
                            break;
                        }
                        n += 1;
                        self.invalid += 1;
                    }
                    return (n, 0);
                }
            }
        }
        let Some(agent) = self.agent.as_mut() else {
            return (0, 0);
        };
        let r = agent.step(ep, now_ns);
        self.events += r.events as u64;
        self.invalid += r.invalid as u64;
        self.decisions += r.decisions as u64;
        let mut vectors = 0u64;
        let mut cpus = r.ring_cpus;
        while cpus != 0 {
            let c = cpus.trailing_zeros() as u64;
            cpus &= cpus - 1;
            let v = CPU_VECTOR_BASE as u64 + c;
            if v < 64 {
                vectors |= 1 << v;
            }
        }
        (r.events + r.invalid + r.decisions, vectors)
    }
    fn counters(&self) -> (u64, u64) {
        (self.invalid, self.decisions)
    }
    fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        self.agent.as_ref().and_then(|a| a.next_deadline(now_ns))
    }
}

/// Attaches to the host's region and builds this side's endpoint.
fn connect<'a>(
    dev: &Ivshmem,
) -> Result<(SharedRegion<'a>, Layout, Endpoint<'a>, u32), LinkFailure> {
    let region = dev.shared_region().map_err(|_| LinkFailure::Region)?;
    let layout = attach(&region)?;
    let epoch = next_epoch(wave_abi::endpoint::previous_epoch(
        &region,
        &layout,
        Side::Ipu,
    ));
    let ep = Endpoint::new(region, &layout, Side::Ipu, epoch).map_err(|_| LinkFailure::Endpoint)?;
    Ok((region, layout, ep, epoch))
}

/// Polls `service` over the link until the host stops its end: spins while there is work,
/// publishes counters, announces sleep and waits for a doorbell or the next deadline.
fn serve<'a>(dev: &Ivshmem, ep: &mut Endpoint<'a>, service: &mut dyn Service<'a>) {
    let mut was_up = false;
    let mut last_state = None;
    let mut idle_since = time::ticks();
    let mut last_tick = 0u64;
    let spin = time::frequency() * SPIN_US / 1_000_000;
    let tick_every = time::frequency() * TICK_US / 1_000_000;
    loop {
        let p = ep.poll_link();
        if Some(p.state) != last_state {
            match p.state {
                Ok(session) => {
                    println!(
                        "link: up (session {session:#010x}, host epoch {})",
                        ep.peer_epoch()
                    );
                    was_up = true;
                }
                Err(Down::PeerStopped) if was_up => break,
                Err(d) => defmt::info!("link down: {}", defmt::Debug2Format(&d)),
            }
            last_state = Some(p.state);
        }
        if p.resynced {
            println!(
                "link: host restarted (epoch {}); resynchronised",
                ep.peer_epoch()
            );
        }
        let now = time::ticks();
        let (work, ring) = service.step(ep, time::ticks_to_nanos(now));
        let mut bits = ring;
        while bits != 0 {
            dev.ring(0, bits.trailing_zeros() as u16);
            bits &= bits - 1;
        }
        if now.wrapping_sub(last_tick) >= tick_every {
            let (invalid, other) = service.counters();
            ep.tick(invalid, other);
            last_tick = now;
        }
        if work > 0 {
            idle_since = now;
            continue;
        }
        if now.wrapping_sub(idle_since) < spin {
            core::hint::spin_loop();
            continue;
        }
        // Idle: publish counters, announce sleep, re-check, then wait for a doorbell, the
        // service's next deadline or the bounded timer.
        let (invalid, other) = service.counters();
        ep.tick(invalid, other);
        let mut sleep = SLEEP_US;
        let now_ns = time::ticks_to_nanos(time::ticks());
        if let Some(d) = service.deadline_ns(now_ns) {
            sleep = sleep.min(d.saturating_sub(now_ns) / 1000).max(1);
        }
        ep.begin_sleep();
        // SAFETY: masking IRQs on this core only; unmasked again below.
        unsafe { core::arch::asm!("msr daifset, #2", options(nostack)) };
        if !ep.has_work() && ep.poll_link().state == p.state {
            sleep_us(sleep);
        }
        // SAFETY: unmasking IRQs on this core; a pending doorbell or timer IRQ is taken here.
        unsafe { core::arch::asm!("msr daifclr, #2", options(nostack)) };
        ep.end_sleep();
        idle_since = time::ticks();
    }
    let (invalid, other) = service.counters();
    ep.tick(invalid, other);
}

fn irq_counts() -> (u64, u64) {
    let irqs = gic::MSI_COUNT
        .iter()
        .map(|c| c.load(core::sync::atomic::Ordering::Relaxed))
        .sum();
    (
        irqs,
        gic::TIMER_COUNT.load(core::sync::atomic::Ordering::Relaxed),
    )
}

/// Runs the echo agent on this core until the host stops its end of the link.
pub fn serve_echo(dev: &Ivshmem) -> Result<EchoSummary, LinkFailure> {
    let (_region, _layout, mut ep, epoch) = connect(dev)?;
    println!(
        "link: attached to ABI {}.{} region of {} KiB as epoch {epoch}; echo agent running",
        wave_abi::ABI_MAJOR,
        wave_abi::ABI_MINOR,
        dev.shared_size() >> 10
    );
    let mut echo = Echo(EchoAgent::new());
    serve(dev, &mut ep, &mut echo);
    let st = echo.0.stats();
    let ls = ep.stats();
    let (irqs, timer_wakeups) = irq_counts();
    Ok(EchoSummary {
        echoed: st.echoed,
        invalid: st.invalid,
        resyncs: ls.resyncs,
        doorbells: ls.doorbells,
        sleeps: ls.sleeps,
        irqs,
        timer_wakeups,
        epoch,
    })
}

/// What the scheduling agent did.
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedSummary {
    /// Valid events applied.
    pub events: u64,
    /// Invalid events counted and skipped.
    pub invalid: u64,
    /// Decisions written.
    pub decisions: u64,
    /// Sessions served.
    pub sessions: u64,
    /// Doorbell interrupts taken.
    pub irqs: u64,
}

/// Runs the scheduling agent on this core until the host stops its end of the link.
pub fn serve_sched(dev: &Ivshmem) -> Result<SchedSummary, LinkFailure> {
    let (region, layout, mut ep, epoch) = connect(dev)?;
    println!(
        "link: attached to ABI {}.{} region as epoch {epoch}; scheduling agent running",
        wave_abi::ABI_MAJOR,
        wave_abi::ABI_MINOR
    );
    let mut sched = Sched {
        region,
        layout,
        agent: None,
        refused: None,
        events: 0,
        invalid: 0,
        decisions: 0,
        sessions: 0,
    };
    serve(dev, &mut ep, &mut sched);
    if let Some(a) = &sched.agent {
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
    Ok(SchedSummary {
        events: sched.events,
        invalid: sched.invalid,
        decisions: sched.decisions,
        sessions: sched.sessions,
        irqs: irq_counts().0,
    })
}
