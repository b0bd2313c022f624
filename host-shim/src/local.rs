//! An in-process link: two `Link` ends over one memfd mapping with eventfd doorbells. The
//! on-host mode and the tests use it to run the IPU agent in a thread against the real host
//! code, with the same layout, rings and wake-up protocol as over ivshmem.
//!
//! Concurrency: `LocalLink` is `Sync`, and [`Link::wait`] may be called from several threads
//! at once; each call polls and drains only the eventfds of its own mask (with nanosecond
//! timeouts), so waiters with disjoint masks never steal each other's wake-ups.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use wave_abi::endpoint::previous_epoch;
use wave_abi::layout::Layout;
use wave_abi::status::next_epoch;
use wave_abi::{SharedRegion, Side};

use crate::error::ShimError;
use crate::link::{prepare_region, wait_eventfds, Link, LinkError, Wake};
use crate::shm::SharedMemory;

/// One end of an in-process link.
pub struct LocalLink {
    side: Side,
    host_epoch: u32,
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
        let host_epoch = prepare_region(&shm.region(), &layout)
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
                host_epoch,
                shm: shm.clone(),
                layout,
                own: h.clone(),
                peer: i.clone(),
            },
            LocalLink {
                side: Side::Ipu,
                host_epoch,
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
        let refs: Vec<&EventFd> = self.own.iter().collect();
        Ok(Wake {
            vectors: wait_eventfds(&refs, mask, timeout)?,
            changed: false,
        })
    }

    fn epoch(&self) -> u32 {
        match self.side {
            Side::Host => self.host_epoch,
            Side::Ipu => next_epoch(previous_epoch(&self.shm.region(), &self.layout, Side::Ipu)),
        }
    }
}
