//! The ivshmem server transport: the host shim *is* the ivshmem server (peer 0) and QEMU's
//! `ivshmem-doorbell` device is its one client (peer 1, the IPU).
//!
//! Protocol (QEMU `docs/specs/ivshmem-spec.rst`): on connect the server sends 8-byte
//! little-endian signed integers, one `sendmsg` each, some with one fd in SCM_RIGHTS:
//! `0` (protocol version), `1` (the client's id), `-1` + memfd, then `0` × N each with one of
//! peer 0's eventfds (QEMU writes them when the guest rings `Doorbell = 0 << 16 | v`), then
//! `1` × N each with one of the client's own eventfds (we write them to raise the guest's MSI-X
//! vector v). QEMU sets O_NONBLOCK on the eventfds it receives, a flag shared with us through
//! the open file description, so this side only ever polls them.
//!
//! Before sending the memfd to a new client the server re-initialises the region (header,
//! layout, host status BOOTING with a new epoch) — safe because no guest can touch the region
//! before QEMU has the memfd. A second concurrent client is refused (logged, closed). A client
//! that disconnects is forgotten; the next one gets a fresh region and a new host epoch.

use std::cell::RefCell;
use std::io::{IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use wave_abi::layout::{Layout, DEFAULT_RING_ENTRIES, MIN_VECTORS};
use wave_abi::status::{next_epoch, State, StatusView};
use wave_abi::{Kind, SharedRegion};

use crate::error::ShimError;
use crate::link::{wait_eventfds, Doorbells, Link, LinkError, Wake};
use crate::shm::SharedMemory;

/// ivshmem peer id of the host (this server).
pub const HOST_PEER: i64 = 0;
/// ivshmem peer id given to the QEMU client (the IPU).
pub const IPU_PEER: i64 = 1;
/// Most vectors: QEMU decodes only 8 bits of the Doorbell vector field.
pub const MAX_VECTORS: u16 = 256;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// UNIX socket path QEMU connects to.
    pub socket: PathBuf,
    /// Shared memory size (power of two, at least `Layout::min_size(ring_entries)`).
    pub shm_size: usize,
    /// Doorbell vectors per peer (QEMU's `vectors=` must be the same).
    pub vectors: u16,
    /// Entries per ring.
    pub ring_entries: u32,
    /// The ABI major version the header announces. Anything but [`wave_abi::ABI_MAJOR`] is
    /// for testing a peer's version check: the IPU must refuse the region and say why.
    pub abi_major: u16,
}

impl ServerConfig {
    /// Defaults: 1 MiB, 4 vectors, 512-entry rings, this build's ABI.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            shm_size: 1 << 20,
            vectors: 4,
            ring_entries: DEFAULT_RING_ENTRIES,
            abi_major: wave_abi::ABI_MAJOR,
        }
    }
}

/// Server counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Clients that completed the handshake.
    pub clients_accepted: u64,
    /// Clients refused because one was already connected (or the handshake failed).
    pub clients_refused: u64,
    /// Clients that disconnected.
    pub disconnects: u64,
    /// Doorbell vectors the guest rang that woke us (eventfd reads).
    pub doorbells_in: u64,
    /// Doorbells we sent to the guest.
    pub doorbells_out: u64,
}

struct Client {
    stream: UnixStream,
    /// Peer 0's eventfds: QEMU writes them when the guest rings us.
    host_vec: Arc<Vec<EventFd>>,
    /// The client's eventfds: we write them to interrupt the guest.
    ipu_vec: Arc<Vec<EventFd>>,
}

/// A `Send + Sync` handle on the current client's doorbell eventfds (see
/// [`Link::doorbells`]): [`IvshmemServer`] itself is single-threaded (its socket servicing
/// uses a `RefCell`), so a multi-threaded runtime waits and notifies through this handle while
/// one thread keeps calling [`Link::wait`] to service the socket. The handle stays valid (the
/// fds stay open) after the client leaves; it is simply never rung again.
pub struct IvshmemDoorbells {
    host_vec: Arc<Vec<EventFd>>,
    ipu_vec: Arc<Vec<EventFd>>,
}

impl Doorbells for IvshmemDoorbells {
    fn notify(&self, vector: u16) -> Result<(), LinkError> {
        crate::link::signal_eventfd(&self.ipu_vec, vector)
    }

    fn wait(&self, mask: u32, timeout: Duration) -> Result<u32, LinkError> {
        let refs: Vec<&EventFd> = self.host_vec.iter().collect();
        wait_eventfds(&refs, mask, timeout)
    }
}

struct Inner {
    client: Option<Client>,
    generation: u64,
    epoch: u32,
    counters: ServerCounters,
}

/// The ivshmem server and host end of the link.
pub struct IvshmemServer {
    cfg: ServerConfig,
    listener: UnixListener,
    shm: SharedMemory,
    layout: Layout,
    inner: RefCell<Inner>,
}

fn log(msg: std::fmt::Arguments<'_>) {
    eprintln!("wave-host: {msg}");
}

fn check_socket_path(path: &Path) -> Result<(), ShimError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if UnixStream::connect(path).is_ok() {
        return Err(ShimError::SocketInUse(path.to_path_buf()));
    }
    Err(ShimError::SocketPathExists(path.to_path_buf()))
}

impl IvshmemServer {
    /// Validates the settings, creates and initialises the shared memory, and listens.
    pub fn bind(cfg: ServerConfig) -> Result<Self, ShimError> {
        let minimum = Layout::min_size(cfg.ring_entries);
        if !cfg.shm_size.is_power_of_two() {
            return Err(ShimError::ShmNotPowerOfTwo(cfg.shm_size));
        }
        if cfg.shm_size < minimum {
            return Err(ShimError::ShmTooSmall {
                requested: cfg.shm_size,
                minimum,
            });
        }
        if !(MIN_VECTORS as u16..=MAX_VECTORS).contains(&cfg.vectors) {
            return Err(ShimError::Vectors {
                requested: cfg.vectors,
                minimum: MIN_VECTORS as u16,
                maximum: MAX_VECTORS,
            });
        }
        let layout = Layout::v1(cfg.ring_entries, cfg.shm_size, cfg.vectors as u32)
            .map_err(|e| ShimError::Io("layout", std::io::Error::other(e.to_string())))?;
        check_socket_path(&cfg.socket)?;
        let listener =
            UnixListener::bind(&cfg.socket).map_err(|e| ShimError::Bind(cfg.socket.clone(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ShimError::Io("set the socket non-blocking", e))?;
        let shm = SharedMemory::create("wave-ivshmem", cfg.shm_size).map_err(ShimError::Shm)?;
        let server = Self {
            cfg,
            listener,
            shm,
            layout,
            inner: RefCell::new(Inner {
                client: None,
                generation: 0,
                epoch: 0,
                counters: ServerCounters::default(),
            }),
        };
        server.reinit_region();
        Ok(server)
    }

    /// The QEMU arguments that connect a guest to this server.
    pub fn qemu_args(&self) -> String {
        format!(
            "-chardev socket,path={},id=ivsh -device ivshmem-doorbell,chardev=ivsh,vectors={}",
            self.cfg.socket.display(),
            self.cfg.vectors
        )
    }

    /// Settings.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The layout written into the region.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Counters.
    pub fn counters(&self) -> ServerCounters {
        self.inner.borrow().counters
    }

    /// Zeroes the region, writes header and layout, and publishes host BOOTING with a new epoch.
    fn reinit_region(&self) {
        let region = self.shm.region();
        let mut inner = self.inner.borrow_mut();
        inner.epoch = next_epoch(inner.epoch);
        inner.generation += 1;
        if let Err(e) = self.layout.write(&region) {
            log(format_args!("cannot initialise the shared region: {e}"));
        }
        if self.cfg.abi_major != wave_abi::ABI_MAJOR {
            // Header word 1: abi_major (bits 0..16), abi_minor, header_size (docs/abi.md §3).
            if let Ok(w) = region.word(8) {
                let v = u64::from_le(w.load(std::sync::atomic::Ordering::Relaxed));
                let v = (v & !0xffff) | self.cfg.abi_major as u64;
                w.store(v.to_le(), std::sync::atomic::Ordering::Release);
            }
            log(format_args!(
                "announcing ABI major {} instead of {} (testing the peer's version check)",
                self.cfg.abi_major,
                wave_abi::ABI_MAJOR
            ));
        }
        if let Ok(v) = StatusView::new(&region, self.layout.place(Kind::HostStatus).offset) {
            v.set_state(State::Booting, inner.epoch);
        }
    }

    fn send(stream: &UnixStream, value: i64, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
        let bytes = value.to_le_bytes();
        let iov = [IoSlice::new(&bytes)];
        let raw;
        let cmsg_storage;
        let cmsgs: &[ControlMessage<'_>] = match fd {
            Some(fd) => {
                raw = [fd.as_raw_fd()];
                cmsg_storage = [ControlMessage::ScmRights(&raw)];
                &cmsg_storage
            }
            None => &[],
        };
        sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    fn handshake(&self, stream: &UnixStream) -> std::io::Result<Client> {
        let n = self.cfg.vectors as usize;
        let mk = || EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC);
        let host_vec = Arc::new((0..n).map(|_| mk()).collect::<Result<Vec<_>, _>>()?);
        let ipu_vec = Arc::new((0..n).map(|_| mk()).collect::<Result<Vec<_>, _>>()?);
        stream.set_nonblocking(false)?;
        Self::send(stream, 0, None)?; // protocol version
        Self::send(stream, IPU_PEER, None)?; // the client's id
        Self::send(stream, -1, Some(self.shm.fd()))?; // shared memory
        for fd in host_vec.iter() {
            Self::send(stream, HOST_PEER, Some(fd.as_fd()))?; // the other peer (us)
        }
        for fd in ipu_vec.iter() {
            Self::send(stream, IPU_PEER, Some(fd.as_fd()))?; // the client's own vectors
        }
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream: stream.try_clone()?,
            host_vec,
            ipu_vec,
        })
    }

    fn accept_pending(&self) -> bool {
        let mut changed = false;
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return changed,
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    return changed;
                }
            };
            if self.inner.borrow().client.is_some() {
                self.inner.borrow_mut().counters.clients_refused += 1;
                log(format_args!(
                    "refusing a second ivshmem client on {}: peer {IPU_PEER} is already \
                     connected (one IPU per socket); closing it",
                    self.cfg.socket.display()
                ));
                drop(stream);
                continue;
            }
            // No guest can use the region before it has the memfd: re-initialise now.
            self.reinit_region();
            changed = true;
            match self.handshake(&stream) {
                Ok(client) => {
                    let mut inner = self.inner.borrow_mut();
                    inner.counters.clients_accepted += 1;
                    log(format_args!(
                        "ivshmem client connected as peer {IPU_PEER} (host epoch {}, {} vectors)",
                        inner.epoch, self.cfg.vectors
                    ));
                    inner.client = Some(client);
                }
                Err(e) => {
                    self.inner.borrow_mut().counters.clients_refused += 1;
                    log(format_args!(
                        "ivshmem handshake failed: {e}; closing the client"
                    ));
                }
            }
        }
    }

    fn drop_client(&self) {
        let mut inner = self.inner.borrow_mut();
        if inner.client.take().is_some() {
            inner.counters.disconnects += 1;
            inner.generation += 1;
            log(format_args!(
                "ivshmem client disconnected; waiting for a new one on {}",
                self.cfg.socket.display()
            ));
        }
    }

    /// Handles readiness on the client socket: any data or hang-up is a disconnect (the
    /// protocol never sends client→server).
    fn check_client_socket(&self) -> bool {
        let mut buf = [0u8; 64];
        let gone = {
            let inner = self.inner.borrow();
            let Some(c) = inner.client.as_ref() else {
                return false;
            };
            let mut s = &c.stream;
            !matches!(s.read(&mut buf), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
        };
        if gone {
            self.drop_client();
        }
        gone
    }

    /// Services the socket for up to `timeout` without waiting on doorbells (the `serve`
    /// loop uses [`Link::wait`] instead; this is for callers with nothing else to do).
    pub fn service(&self, timeout: Duration) -> Result<Wake, LinkError> {
        self.wait(0, timeout)
    }
}

fn errno(e: nix::Error) -> LinkError {
    LinkError::Os(e as i32)
}

impl Link for IvshmemServer {
    fn region(&self) -> SharedRegion<'_> {
        self.shm.region()
    }

    fn vectors(&self) -> u16 {
        self.cfg.vectors
    }

    fn notify(&self, vector: u16) -> Result<(), LinkError> {
        let mut inner = self.inner.borrow_mut();
        let client = inner.client.as_ref().ok_or(LinkError::NoPeer)?;
        crate::link::signal_eventfd(&client.ipu_vec, vector)?;
        inner.counters.doorbells_out += 1;
        Ok(())
    }

    fn wait(&self, mask: u32, timeout: Duration) -> Result<Wake, LinkError> {
        let mut wake = Wake::default();
        let (fired, listener_ready, client_ready) = {
            let inner = self.inner.borrow();
            let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let mut vecs = Vec::new();
            if let Some(c) = inner.client.as_ref() {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
                for (v, fd) in c.host_vec.iter().enumerate() {
                    if v < 32 && mask & (1 << v) != 0 {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                        vecs.push(v);
                    }
                }
            }
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let t = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, t) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => return Ok(wake),
                Err(e) => return Err(errno(e)),
            }
            let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
            let listener_ready = ready(&fds[0]);
            let client_ready = fds.get(1).is_some_and(ready);
            let mut fired = 0u32;
            if let Some(c) = inner.client.as_ref() {
                for (i, v) in vecs.iter().enumerate() {
                    if fds.get(2 + i).is_some_and(ready) {
                        // Non-blocking read drains the counter (EAGAIN if QEMU's read won).
                        if let Some(fd) = c.host_vec.get(*v) {
                            let _ = fd.read();
                        }
                        fired |= 1 << v;
                    }
                }
            }
            (fired, listener_ready, client_ready)
        };
        if fired != 0 {
            self.inner.borrow_mut().counters.doorbells_in += fired.count_ones() as u64;
        }
        wake.vectors = fired;
        if client_ready && self.check_client_socket() {
            wake.changed = true;
        }
        if listener_ready && self.accept_pending() {
            wake.changed = true;
        }
        Ok(wake)
    }

    fn generation(&self) -> u64 {
        self.inner.borrow().generation
    }

    fn epoch(&self) -> u32 {
        self.inner.borrow().epoch
    }

    fn peer_present(&self) -> bool {
        self.inner.borrow().client.is_some()
    }

    fn doorbells(&self) -> Option<Arc<dyn Doorbells>> {
        let inner = self.inner.borrow();
        let c = inner.client.as_ref()?;
        Some(Arc::new(IvshmemDoorbells {
            host_vec: c.host_vec.clone(),
            ipu_vec: c.ipu_vec.clone(),
        }))
    }
}

impl Drop for IvshmemServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg.socket);
    }
}
