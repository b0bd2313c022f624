//! The IPU end of the host link (`docs/abi.md`): attach to the region the host initialised in
//! the ivshmem shared-memory BAR, route the doorbell vectors to this core, and run an agent
//! loop that polls its rings and sleeps on a doorbell (or a bounded timer) only after
//! announcing it in shared memory.
//!
//! Today's agent is the link-test echo (`wave.link=echo`); the scheduling agent plugs into the
//! same loop.

use crate::gic;
use crate::ivshmem::Ivshmem;
use crate::pci::ConfigSpace;
use crate::println;
use crate::time;
use wave_abi::layout::{LayoutError, Side};
use wave_abi::msg::EchoAgent;
use wave_abi::status::next_epoch;
use wave_abi::{Down, Endpoint, Layout, SharedRegion};

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
    time::arm_wakeup(us);
    // SAFETY: WFI only waits; interrupts stay masked by the caller's state or are unmasked.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Runs the echo agent on this core until the host stops its end of the link.
pub fn serve_echo(dev: &Ivshmem, _cs: &impl ConfigSpace) -> Result<EchoSummary, LinkFailure> {
    // SAFETY: the BAR is mapped normal non-cacheable for the rest of the run (memory.rs), is
    // used only through this region's atomic accesses, and stays live: it is never unmapped.
    let region = unsafe { SharedRegion::from_raw(dev.shm.base as *mut u8, dev.shm.size as usize) }
        .map_err(|_| LinkFailure::Region)?;
    let layout = attach(&region)?;
    let epoch = next_epoch(wave_abi::endpoint::previous_epoch(
        &region,
        &layout,
        Side::Ipu,
    ));
    let mut ep =
        Endpoint::new(region, &layout, Side::Ipu, epoch).map_err(|_| LinkFailure::Endpoint)?;
    println!(
        "link: attached to ABI {}.{} region of {} KiB as epoch {epoch}; echo agent running",
        wave_abi::ABI_MAJOR,
        wave_abi::ABI_MINOR,
        dev.shm.size >> 10
    );
    let mut echo = EchoAgent::new();
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
        let (taken, ring) = echo.step(&mut ep);
        if let Some(v) = ring {
            dev.ring(0, v);
        }
        let now = time::ticks();
        if now.wrapping_sub(last_tick) >= tick_every {
            let st = echo.stats();
            ep.tick(st.invalid, st.echoed);
            last_tick = now;
        }
        if taken > 0 {
            idle_since = now;
            continue;
        }
        if now.wrapping_sub(idle_since) < spin {
            core::hint::spin_loop();
            continue;
        }
        // Idle: publish counters, announce sleep, re-check, then wait for a doorbell or the
        // bounded timer.
        let st = echo.stats();
        ep.tick(st.invalid, st.echoed);
        ep.begin_sleep();
        // SAFETY: masking IRQs on this core only; unmasked again below.
        unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack)) };
        if !ep.has_work() && ep.poll_link().state == p.state {
            sleep_us(SLEEP_US);
        }
        // SAFETY: unmasking IRQs on this core; a pending doorbell or timer IRQ is taken here.
        unsafe { core::arch::asm!("msr daifclr, #2", options(nomem, nostack)) };
        ep.end_sleep();
        idle_since = time::ticks();
    }
    let st = echo.stats();
    ep.tick(st.invalid, st.echoed);
    let ls = ep.stats();
    let irqs = gic::MSI_COUNT
        .iter()
        .map(|c| c.load(core::sync::atomic::Ordering::Relaxed))
        .sum();
    Ok(EchoSummary {
        echoed: st.echoed,
        invalid: st.invalid,
        resyncs: ls.resyncs,
        doorbells: ls.doorbells,
        sleeps: ls.sleeps,
        irqs,
        timer_wakeups: gic::TIMER_COUNT.load(core::sync::atomic::Ordering::Relaxed),
        epoch,
    })
}
