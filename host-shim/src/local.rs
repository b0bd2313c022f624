//! An in-process link: two `Link` ends over one memfd mapping with eventfd doorbells. The
//! on-host mode and the tests use it to run the IPU agent in a thread against the real host
//! code, with the same layout, rings and wake-up protocol as over ivshmem.
//!
//! Concurrency: `LocalLink` is `Sync`, and [`Link::wait`] may be called from several threads
//! at once; each call polls and drains only the eventfds of its own mask, so waiters with
//! disjoint masks never steal each other's wake-ups. [`Link::doorbells`] gives the same
//! eventfds as a `Send + Sync` handle with sub-millisecond waits.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use wave_abi::endpoint::previous_epoch;
use wave_abi::layout::Layout;
use wave_abi::status::next_epoch;
use wave_abi::{SharedRegion, Side};

use crate::error::ShimError;
use crate::link::{wait_eventfds, Doorbells, Link, LinkError, Wake};
use crate::shm::SharedMemory;

/// One end of an in-process link.
pub struct LocalLink {
    side: Side,
    shm: Arc<SharedMemory>,
    layout: Layout,
    own: Arc<Vec<EventFd>>,
    peer: Arc<Vec<EventFd>>,
}

impl LocalLink {
    /// A (host, IPU) pair over a fresh region of `size` bytes with `vectors` doorbells per
    /// side and rings of `ring_entries`. The region is initialised as the ivshmem server would.
    pub fn pair(
        size: usize,
        vectors: u16,
        ring_entries: u32,
    ) -> Result<(LocalLink, LocalLink), ShimError> {
        let minimum = Layout::min_size(ring_entries);
        if size < minimum {
            return Err(ShimError::ShmTooSmall {
                requested: size,
                minimum,
            });
        }
        let layout = Layout::v1(ring_entries, size, vectors as u32)
            .map_err(|e| ShimError::Io("layout", std::io::Error::other(e.to_string())))?;
        let shm = Arc::new(SharedMemory::create("wave-local", size).map_err(ShimError::Shm)?);
        layout
            .write(&shm.region())
            .map_err(|e| ShimError::Io("layout", std::io::Error::other(e.to_string())))?;
        let mk = || {
            (0..vectors)
                .map(|_| EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC))
                .collect::<Result<Vec<_>, _>>()
                .map(Arc::new)
                .map_err(|e| ShimError::Io("eventfd", e.into()))
        };
        let (h, i) = (mk()?, mk()?);
        Ok((
            LocalLink {
                side: Side::Host,
                shm: shm.clone(),
                layout,
                own: h.clone(),
                peer: i.clone(),
            },
            LocalLink {
                side: Side::Ipu,
                shm,
                layout,
                own: i,
                peer: h,
            },
        ))
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

impl Link for LocalLink {
    fn region(&self) -> SharedRegion<'_> {
        self.shm.region()
    }

    fn vectors(&self) -> u16 {
        self.own.len() as u16
    }

    fn notify(&self, vector: u16) -> Result<(), LinkError> {
        crate::link::signal_eventfd(&self.peer, vector)
    }

    fn wait(&self, mask: u32, timeout: Duration) -> Result<Wake, LinkError> {
        let picked: Vec<usize> = (0..self.own.len().min(32))
            .filter(|v| mask & (1 << v) != 0)
            .collect();
        let mut fds: Vec<PollFd<'_>> = picked
            .iter()
            .filter_map(|v| self.own.get(*v))
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let t = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, t) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(LinkError::Os(e as i32)),
        }
        let mut wake = Wake::default();
        for (p, v) in fds.iter().zip(&picked) {
            if p.revents().is_some_and(|r| !r.is_empty()) {
                if let Some(fd) = self.own.get(*v) {
                    let _ = fd.read();
                }
                wake.vectors |= 1 << v;
            }
        }
        Ok(wake)
    }

    fn epoch(&self) -> u32 {
        next_epoch(previous_epoch(&self.shm.region(), &self.layout, self.side))
    }

    fn doorbells(&self) -> Option<Arc<dyn Doorbells>> {
        Some(Arc::new(LocalDoorbells {
            own: self.own.clone(),
            peer: self.peer.clone(),
        }))
    }
}

/// The thread-safe doorbells of one end of a [`LocalLink`] (the same eventfds).
pub struct LocalDoorbells {
    own: Arc<Vec<EventFd>>,
    peer: Arc<Vec<EventFd>>,
}

impl Doorbells for LocalDoorbells {
    fn notify(&self, vector: u16) -> Result<(), LinkError> {
        crate::link::signal_eventfd(&self.peer, vector)
    }

    fn wait(&self, mask: u32, timeout: Duration) -> Result<u32, LinkError> {
        let refs: Vec<&EventFd> = self.own.iter().collect();
        wait_eventfds(&refs, mask, timeout)
    }
}
