//! The `Link` trait: what the host side needs from a transport (ivshmem today, a VFIO-mapped
//! BAR with MSI-X eventfds on a real IPU), the region setup every transport shares, and the
//! agent runtime's port over a link ([`HostPort`]). The trait is `no_std`: a kernel could
//! implement it too.

use core::time::Duration;

use wave_abi::endpoint::previous_epoch;
use wave_abi::layout::LayoutError;
use wave_abi::status::{next_epoch, State, StatusView};
use wave_abi::{Kind, Layout, SharedRegion, Side};

/// Transport errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// No peer is connected, so there is nobody to notify.
    NoPeer,
    /// The vector is outside the configured range.
    BadVector(u16),
    /// An OS call failed (errno).
    Os(i32),
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkError::NoPeer => write!(f, "no peer is connected to the link"),
            LinkError::BadVector(v) => write!(f, "doorbell vector {v} is out of range"),
            LinkError::Os(e) => write!(f, "OS error {e}"),
        }
    }
}

/// What woke a [`Link::wait`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wake {
    /// Bit v set: our doorbell vector v fired.
    pub vectors: u32,
    /// The transport changed (a peer connected or left, the region was re-initialised): check
    /// [`Link::generation`].
    pub changed: bool,
}

/// A link transport: one side's access to the shared region and the doorbells. The one seam
/// between the host's link code and the hardware (ivshmem today, a VFIO-mapped BAR with
/// MSI-X eventfds on a real IPU, an in-process pair for tests and the on-host agent).
///
/// `Sync`: `notify` may be called from any thread, and `wait` from several threads at once
/// as long as their masks are disjoint (each waiter drains only the vectors in its own mask;
/// with overlapping masks one waiter may consume the other's wake-up, which then costs it its
/// timeout, never a hang). A wait whose mask includes the control vector (or is 0) also
/// services the transport itself (a new peer, a peer that left).
pub trait Link: Sync {
    /// The shared region (valid as long as the link lives).
    fn region(&self) -> SharedRegion<'_>;
    /// Doorbell vectors per side.
    fn vectors(&self) -> u16;
    /// Rings the peer's doorbell `vector` (an MSI-X on the IPU).
    fn notify(&self, vector: u16) -> Result<(), LinkError>;
    /// Waits (µs precision or better) until one of our vectors in `mask` fires, the transport
    /// changes, or `timeout` passes. Drains the vectors that fired. Never blocks longer than
    /// `timeout`.
    fn wait(&self, mask: u32, timeout: Duration) -> Result<Wake, LinkError>;
    /// Changes whenever the transport re-initialised the region (e.g. a new IPU connected):
    /// build a new `Endpoint` with [`Link::epoch`] when it does.
    fn generation(&self) -> u64 {
        0
    }
    /// The epoch this side's primary `Endpoint` must use in the current generation.
    fn epoch(&self) -> u32;
    /// False if the transport knows the peer is gone (e.g. QEMU disconnected).
    fn peer_present(&self) -> bool {
        true
    }
}

/// Region setup, written once for every transport that owns the region (the host): reads the
/// host epoch the region last carried, zeroes it, writes header and layout (magic last), and
/// publishes host BOOTING with the next epoch, which it returns. Call only while no peer can
/// use the region.
pub fn prepare_region(region: &SharedRegion<'_>, layout: &Layout) -> Result<u32, LayoutError> {
    let previous = Layout::read(region)
        .ok()
        .map_or(0, |l| previous_epoch(region, &l, Side::Host));
    let epoch = next_epoch(previous);
    layout.write(region)?;
    if let Ok(v) = StatusView::new(region, layout.place(Kind::HostStatus).offset) {
        v.set_state(State::Booting, epoch);
    }
    Ok(epoch)
}

/// Shared implementation of every `notify` over eventfds: adds 1 to the eventfd of `vector`. A
/// saturated counter (EAGAIN) means the peer has a wake-up pending anyway, so it is success.
#[cfg(feature = "std")]
pub(crate) fn signal_eventfd(
    fds: &[nix::sys::eventfd::EventFd],
    vector: u16,
) -> Result<(), LinkError> {
    let fd = fds
        .get(vector as usize)
        .ok_or(LinkError::BadVector(vector))?;
    match fd.write(1) {
        Ok(_) | Err(nix::Error::EAGAIN) => Ok(()),
        Err(e) => Err(LinkError::Os(e as i32)),
    }
}

/// Shared implementation of [`Link::wait`]'s doorbell part over non-blocking eventfds: `ppoll` with a
/// nanosecond timeout on the fds of `mask`, then a non-blocking read of each that fired.
#[cfg(feature = "std")]
pub(crate) fn wait_eventfds<E: core::ops::Deref<Target = nix::sys::eventfd::EventFd>>(
    fds: &[E],
    mask: u32,
    timeout: Duration,
) -> Result<u32, LinkError> {
    use nix::poll::{ppoll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let picked: std::vec::Vec<usize> = (0..fds.len().min(32))
        .filter(|v| mask & (1 << v) != 0)
        .collect();
    let mut pfds: std::vec::Vec<PollFd<'_>> = picked
        .iter()
        .map(|v| PollFd::new(fds[*v].as_fd(), PollFlags::POLLIN))
        .collect();
    let ts = nix::sys::time::TimeSpec::from_duration(timeout);
    match ppoll(&mut pfds, Some(ts), None) {
        Ok(_) | Err(nix::Error::EINTR) => {}
        Err(e) => return Err(LinkError::Os(e as i32)),
    }
    let mut fired = 0u32;
    for (p, v) in pfds.iter().zip(&picked) {
        if p.revents().is_some_and(|r| !r.is_empty()) {
            let _ = fds[*v].read();
            fired |= 1 << v;
        }
    }
    Ok(fired)
}

/// The agent runtime's port over a [`Link`] (`wave_policy::runtime`):
/// the host end of everything that runs a service in a host thread (the on-host scheduling
/// agent, the link-test driver, test peers). The clock counts from `origin`; the run stops
/// when `stop` is set, the transport re-initialises the region, or the deadline passes.
#[cfg(feature = "std")]
pub struct HostPort<'s> {
    link: &'s dyn Link,
    origin: std::time::Instant,
    stop: &'s core::sync::atomic::AtomicBool,
    generation: u64,
    deadline: Option<std::time::Instant>,
    log_prefix: Option<&'static str>,
    watchdog: Option<(wave_abi::Layout, crate::watchdog::Watchdog)>,
    lost: Option<crate::watchdog::Cause>,
    /// Doorbells that failed (counted, never fatal: the peer also wakes on its timeout).
    pub notify_errors: u64,
}

#[cfg(feature = "std")]
impl<'s> HostPort<'s> {
    /// A port over `link`, with a clock from `origin`, stopping when `stop` is set.
    pub fn new(
        link: &'s dyn Link,
        origin: std::time::Instant,
        stop: &'s core::sync::atomic::AtomicBool,
    ) -> Self {
        HostPort {
            link,
            origin,
            stop,
            generation: link.generation(),
            deadline: None,
            log_prefix: None,
            watchdog: None,
            lost: None,
            notify_errors: 0,
        }
    }

    /// Also stops the run when the peer (the IPU) is gone: its transport says it left, or its
    /// heartbeat did not change for `bound` (see [`crate::watchdog`]). Then
    /// [`Self::peer_lost`] says why.
    pub fn with_watchdog(mut self, layout: wave_abi::Layout, bound: Duration) -> Self {
        self.watchdog = Some((layout, crate::watchdog::Watchdog::new(bound)));
        self
    }

    /// Why the watchdog stopped the run, if it did.
    pub fn peer_lost(&self) -> Option<crate::watchdog::Cause> {
        self.lost
    }

    /// How long the peer's heartbeat has been unchanged (zero without a watchdog).
    pub fn heartbeat_age(&self) -> Duration {
        self.watchdog
            .as_ref()
            .map_or(Duration::ZERO, |(_, w)| w.age())
    }

    fn watch(&mut self) -> bool {
        if let Some((layout, w)) = self.watchdog.as_mut() {
            if self.lost.is_none() {
                self.lost = w.check_link(self.link, layout);
            }
        }
        self.lost.is_some()
    }

    /// Prints the runtime's log lines on stdout with `prefix` (otherwise they go to stderr
    /// only when `WAVE_AGENT_LOG` is set).
    pub fn with_log(mut self, prefix: &'static str) -> Self {
        self.log_prefix = Some(prefix);
        self
    }

    /// Also stops the run at `deadline`.
    pub fn with_deadline(mut self, deadline: std::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// True if the transport re-initialised the region since this port was made (the run
    /// stopped for it: build a new endpoint).
    pub fn transport_changed(&self) -> bool {
        self.link.generation() != self.generation
    }

    /// True if the deadline passed.
    pub fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
    }
}

#[cfg(feature = "std")]
impl wave_policy::runtime::Log for HostPort<'_> {
    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        if let Some(prefix) = self.log_prefix {
            println!("{prefix}: {line}");
        } else if std::env::var_os("WAVE_AGENT_LOG").is_some() {
            eprintln!("agent: {line}");
        }
    }
}

#[cfg(feature = "std")]
impl wave_policy::runtime::Port for HostPort<'_> {
    fn now_ns(&mut self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    fn notify(&mut self, vector: u16) {
        if self.link.notify(vector).is_err() {
            self.notify_errors += 1;
        }
    }
    fn wait(&mut self, mask: u64, timeout_ns: u64, still_idle: &mut dyn FnMut() -> bool) -> u64 {
        if !still_idle() {
            return 0;
        }
        self.link
            .wait(mask as u32, Duration::from_nanos(timeout_ns))
            .map_or(0, |w| u64::from(w.vectors))
    }
    fn stop_requested(&mut self) -> bool {
        self.stop.load(core::sync::atomic::Ordering::Acquire)
            || self.transport_changed()
            || self.past_deadline()
            || self.watch()
    }
}

/// Publishes STOPPED for `side` on behalf of its primary endpoint once every driver that used
/// the region is done (a host that ran a scheduling engine and a link test over one region at
/// once, each ending without stopping the side), then rings the peer's control vector.
pub fn stop_side<L: Link + ?Sized>(link: &L, side: Side) -> Result<(), LayoutError> {
    let region = link.region();
    let layout = Layout::read(&region)?;
    let offset = match side {
        Side::Host => layout.place(Kind::HostStatus).offset,
        Side::Ipu => layout.place(Kind::IpuStatus).offset,
    };
    let view = StatusView::new(&region, offset)?;
    view.set_state(State::Stopped, view.snapshot().epoch);
    // Best effort: a sleeping peer also notices within its bounded sleep.
    let _ = link.notify(wave_abi::layout::VECTOR_CONTROL);
    Ok(())
}

/// A host lane serving `channels` (docs/abi.md, "Lanes") once the host's primary endpoint,
/// which another driver runs over the same region, is READY: retries until it is or `timeout`
/// passes. For a subsystem's driver run beside the primary (`cargo wave demo --subsystem all`).
#[cfg(feature = "std")]
pub fn host_lane<'a, L: Link + ?Sized>(
    link: &'a L,
    layout: &Layout,
    channels: &[wave_abi::Channel],
    timeout: Duration,
) -> Result<wave_abi::Endpoint<'a>, wave_abi::endpoint::EndpointError> {
    use wave_abi::endpoint::EndpointError;
    let start = std::time::Instant::now();
    loop {
        match wave_abi::Endpoint::lane(link.region(), layout, Side::Host, channels) {
            Err(EndpointError::NotStarted) if start.elapsed() < timeout => {
                let _ = link.wait(
                    1 << wave_abi::layout::VECTOR_CONTROL,
                    Duration::from_millis(1),
                );
            }
            r => return r,
        }
    }
}
