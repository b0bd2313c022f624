//! The `Link` trait: what the host side needs from a transport (ivshmem today, a VFIO-mapped
//! BAR with MSI-X eventfds on a real IPU). `no_std`: a kernel could implement it too.

use core::time::Duration;

use wave_abi::SharedRegion;

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

/// One side's access to the link.
pub trait Link {
    /// The shared region (valid as long as the link lives).
    fn region(&self) -> SharedRegion<'_>;
    /// Doorbell vectors per side.
    fn vectors(&self) -> u16;
    /// Rings the peer's doorbell `vector` (an MSI-X on the IPU).
    fn notify(&self, vector: u16) -> Result<(), LinkError>;
    /// Waits until one of our vectors in `mask` fires, the transport changes, or `timeout`
    /// passes. Drains the vectors that fired. Never blocks longer than `timeout`.
    fn wait(&self, mask: u32, timeout: Duration) -> Result<Wake, LinkError>;
    /// Changes whenever the transport re-initialised the region (e.g. a new IPU connected):
    /// build a new `Endpoint` with [`Link::epoch`] when it does.
    fn generation(&self) -> u64 {
        0
    }
    /// The epoch this side's `Endpoint` must use in the current generation.
    fn epoch(&self) -> u32;
    /// False if the transport knows the peer is gone (e.g. QEMU disconnected).
    fn peer_present(&self) -> bool {
        true
    }
    /// A thread-safe handle on this link's doorbells in the current generation, for runtimes
    /// that wait and notify from several threads at once (the scheduling engine: one waiter
    /// per host CPU vector). `None` if the transport has none (no peer yet).
    #[cfg(feature = "std")]
    fn doorbells(&self) -> Option<std::sync::Arc<dyn Doorbells>> {
        None
    }
}

/// Doorbells that several threads may use concurrently: `notify` from any thread, and
/// `wait` from several threads at once as long as their masks are disjoint (each waiter drains
/// only the vectors in its own mask; with overlapping masks one waiter may consume the other's
/// wake-up, which then costs it its timeout, never a hang).
#[cfg(feature = "std")]
pub trait Doorbells: Send + Sync {
    /// Rings the peer's doorbell `vector`.
    fn notify(&self, vector: u16) -> Result<(), LinkError>;
    /// Waits (with µs precision) until one of our vectors in `mask` fires or `timeout`
    /// passes; drains and returns the vectors that fired.
    fn wait(&self, mask: u32, timeout: Duration) -> Result<u32, LinkError>;
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

/// Shared implementation of [`Doorbells::wait`] over non-blocking eventfds: `ppoll` with a
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
