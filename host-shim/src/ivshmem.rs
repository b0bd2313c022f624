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

use std::io::{IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use nix::sys::time::TimeSpec;
use wave_abi::layout::{Layout, DEFAULT_RING_ENTRIES, MIN_VECTORS, VECTOR_CONTROL};
use wave_abi::status::{State, StatusView};
use wave_abi::{Kind, SharedRegion};

use crate::error::ShimError;
use crate::link::{prepare_region, Link, LinkError, Wake};
use crate::shm::SharedMemory;

/// ivshmem peer id of the host (this server).
pub const HOST_PEER: i64 = 0;
/// ivshmem peer id given to the QEMU client (the IPU).
pub const IPU_PEER: i64 = 1;
/// Largest shared region the server creates (the default layout needs 256 KiB).
pub const MAX_SHM_SIZE: usize = 1 << 30;
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
            vectors: MIN_VECTORS as u16,
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
    stream: Arc<UnixStream>,
    /// Peer 0's eventfds: QEMU writes them when the guest rings us.
    host_vec: Arc<Vec<EventFd>>,
    /// The client's eventfds: we write them to interrupt the guest.
    ipu_vec: Arc<Vec<EventFd>>,
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
    inner: Mutex<Inner>,
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
        if cfg.shm_size > MAX_SHM_SIZE {
            return Err(ShimError::ShmTooLarge(cfg.shm_size));
        }
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
        // Only this user (and root) may connect: mode 0600, whatever the umask, and every
        // client's credentials are checked at accept (`peer_allowed`).
        std::fs::set_permissions(
            &cfg.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| ShimError::Io("make the socket private (mode 0600)", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ShimError::Io("set the socket non-blocking", e))?;
        let shm = SharedMemory::create("wave-ivshmem", cfg.shm_size).map_err(ShimError::Shm)?;
        let server = Self {
            cfg,
            listener,
            shm,
            layout,
            inner: Mutex::new(Inner {
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
        self.lock().counters
    }

    /// The state, even if a thread panicked while holding it (every update is a plain field
    /// store, so it is never half-done).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Zeroes the region, writes header and layout, and publishes host BOOTING with a new epoch.
    fn reinit_region(&self) {
        let region = self.shm.region();
        let mut inner = self.lock();
        inner.generation += 1;
        match prepare_region(&region, &self.layout) {
            Ok(epoch) => inner.epoch = epoch,
            Err(e) => log(format_args!("cannot initialise the shared region: {e}")),
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
            stream: Arc::new(stream.try_clone()?),
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
            if let Err(why) = peer_allowed(&stream) {
                self.lock().counters.clients_refused += 1;
                log(format_args!(
                    "refusing an ivshmem client on {}: {why}",
                    self.cfg.socket.display()
                ));
                continue;
            }
            if self.lock().client.is_some() {
                self.lock().counters.clients_refused += 1;
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
                    let mut inner = self.lock();
                    inner.counters.clients_accepted += 1;
                    log(format_args!(
                        "ivshmem client connected as peer {IPU_PEER} (host epoch {}, {} vectors)",
                        inner.epoch, self.cfg.vectors
                    ));
                    inner.client = Some(client);
                }
                Err(e) => {
                    self.lock().counters.clients_refused += 1;
                    log(format_args!(
                        "ivshmem handshake failed: {e}; closing the client"
                    ));
                }
            }
        }
    }

    fn drop_client(&self) {
        let mut inner = self.lock();
        if inner.client.take().is_some() {
            inner.counters.disconnects += 1;
            inner.generation += 1;
            // The IPU's writer is gone with QEMU: store OFFLINE on its behalf (docs/abi.md §7
            // "Liveness"), so no endpoint keeps reading its last READY as a live session and
            // re-reads that session's entries.
            let region = self.shm.region();
            // A final state (STOPPED, a refusal) says why it left: keep it.
            if let Ok(v) = StatusView::new(&region, self.layout.place(Kind::IpuStatus).offset) {
                let last = v.snapshot();
                if !crate::watchdog::is_final(last.state) {
                    v.set_state(State::Offline, last.epoch);
                }
            }
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
            let inner = self.lock();
            let Some(c) = inner.client.as_ref() else {
                return false;
            };
            let mut s: &UnixStream = &c.stream;
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

/// `SO_PEERCRED`: only a client running as this server's effective uid, or as root, may
/// receive the shared memory and the doorbells.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    let cred = getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("cannot read its credentials (SO_PEERCRED): {e}"))?;
    if cred.uid() == me || cred.uid() == 0 {
        return Ok(());
    }
    Err(format!(
        "pid {} runs as uid {}; only uid {me} or root may connect (run QEMU as the same user)",
        cred.pid(),
        cred.uid()
    ))
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
        let mut inner = self.lock();
        let client = inner.client.as_ref().ok_or(LinkError::NoPeer)?;
        crate::link::signal_eventfd(&client.ipu_vec, vector)?;
        inner.counters.doorbells_out += 1;
        Ok(())
    }

    fn wait(&self, mask: u32, timeout: Duration) -> Result<Wake, LinkError> {
        // Clone the client's handles and let go of the lock: other threads notify and wait
        // while this one sleeps.
        let client = self
            .lock()
            .client
            .as_ref()
            .map(|c| (c.stream.clone(), c.host_vec.clone()));
        let service = mask == 0 || mask & (1 << VECTOR_CONTROL) != 0;
        let mut fds = Vec::new();
        if service {
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            if let Some((stream, _)) = &client {
                fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
            }
        }
        let first_vector = fds.len();
        let mut vecs = Vec::new();
        if let Some((_, host_vec)) = &client {
            for (v, fd) in host_vec.iter().enumerate() {
                if v < 32 && mask & (1 << v) != 0 {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    vecs.push(v);
                }
            }
        }
        match ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => return Ok(Wake::default()),
            Err(e) => return Err(errno(e)),
        }
        let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
        let listener_ready = service && fds.first().is_some_and(ready);
        let client_ready = service && client.is_some() && fds.get(1).is_some_and(ready);
        let mut wake = Wake::default();
        if let Some((_, host_vec)) = &client {
            for (i, v) in vecs.iter().enumerate() {
                if fds.get(first_vector + i).is_some_and(ready) {
                    // Non-blocking read drains the counter (EAGAIN if QEMU's read won).
                    if let Some(fd) = host_vec.get(*v) {
                        let _ = fd.read();
                    }
                    wake.vectors |= 1 << v;
                }
            }
        }
        drop(fds);
        if wake.vectors != 0 {
            self.lock().counters.doorbells_in += wake.vectors.count_ones() as u64;
        }
        if client_ready && self.check_client_socket() {
            wake.changed = true;
        }
        if listener_ready && self.accept_pending() {
            wake.changed = true;
        }
        Ok(wake)
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn epoch(&self) -> u32 {
        self.lock().epoch
    }

    fn peer_present(&self) -> bool {
        self.lock().client.is_some()
    }
}

impl Drop for IvshmemServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg.socket);
    }
}
