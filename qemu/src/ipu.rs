//! The emulated IPU attached to the host: the firmware in QEMU with an `ivshmem-doorbell`
//! device, next to the host shim's ivshmem server in this process.
//!
//! The server must listen before QEMU starts (QEMU blocks until it gets the shared memory), and
//! must keep being serviced while QEMU runs. [`with_ipu`] does that dance once for every
//! command that needs the link (`link-test`, `demo`): it binds the server on a fresh socket,
//! boots the firmware with the given boot arguments, waits until QEMU has connected, hands the
//! server to the caller's host-side code, and services the socket until QEMU is gone.

use std::time::{Duration, Instant};

use wave_host_shim::ivshmem::{IvshmemServer, ServerConfig};
use wave_host_shim::Link;

use crate::boot::{run_boot_with_image, BootConfig, BootOutcome};
use crate::error::{Error, Result};
use crate::image::Image;

/// How long QEMU may take to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the guest may take to end its run after the host side finished.
const GUEST_GRACE: Duration = Duration::from_secs(15);

/// The host end of the emulated link.
#[derive(Clone, Copy, Debug)]
pub struct LinkSettings {
    /// Shared memory size (bytes, power of two).
    pub shm_size: usize,
    /// Doorbell vectors per side.
    pub vectors: u16,
    /// ABI major the host announces (only tests change it).
    pub abi_major: u16,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            shm_size: 1 << 20,
            vectors: wave_abi::layout::MIN_VECTORS as u16,
            abi_major: wave_abi::ABI_MAJOR,
        }
    }
}

/// Binds a fresh ivshmem server on a new socket in the runner's private directory
/// ([`crate::sockets`]); the socket is removed when the server is dropped, or by the signal
/// handler if the runner is interrupted.
pub fn bind(link: LinkSettings) -> Result<IvshmemServer> {
    let socket = crate::sockets::socket_path()
        .map_err(|e| Error::Qemu(format!("cannot make a private socket directory: {e}")))?;
    IvshmemServer::bind(ServerConfig {
        socket,
        shm_size: link.shm_size,
        vectors: link.vectors,
        ring_entries: wave_abi::layout::DEFAULT_RING_ENTRIES,
        abi_major: link.abi_major,
    })
    .map_err(|e| Error::Qemu(format!("cannot start the host shim's ivshmem server: {e}")))
}

/// Boots the firmware per `boot` (its `extra_args` get the ivshmem device) against a fresh
/// ivshmem server, and runs `host` with the server once QEMU has connected. Returns `host`'s
/// result and how the firmware run ended.
pub fn with_ipu<T>(
    boot: &BootConfig,
    image: &Image,
    link: LinkSettings,
    host: impl FnOnce(&mut IvshmemServer, Duration) -> T,
) -> Result<(T, BootOutcome)> {
    let mut server = bind(link)?;
    let r = with_ipu_on(&mut server, boot, image, host);
    crate::sockets::release(&server.config().socket);
    r
}

/// As [`with_ipu`], on a server that already runs (so several QEMU runs in turn can connect to
/// the same host, as after an IPU restart).
pub fn with_ipu_on<T>(
    server: &mut IvshmemServer,
    boot: &BootConfig,
    image: &Image,
    host: impl FnOnce(&mut IvshmemServer, Duration) -> T,
) -> Result<(T, BootOutcome)> {
    let mut cfg = boot.clone();
    cfg.extra_args
        .extend(server.qemu_args().split_whitespace().map(str::to_string));
    let started = Instant::now();
    let result = std::thread::scope(|scope| {
        let qemu = scope.spawn(|| run_boot_with_image(&cfg, image));
        while !server.peer_present() {
            if qemu.is_finished() || started.elapsed() > CONNECT_TIMEOUT {
                break;
            }
            let _ = server.service(Duration::from_millis(50));
        }
        let out = if server.peer_present() {
            let left = cfg.timeout.saturating_sub(started.elapsed());
            Some(host(server, left))
        } else {
            None
        };
        // Keep servicing the socket until QEMU is gone (it may still ring doorbells), and
        // notice its disconnect. The host side is done: a guest that has not ended its run
        // within the grace period will not (the host stopped its end, or gave up), so end it.
        let host_done = Instant::now();
        while !qemu.is_finished() {
            if host_done.elapsed() > GUEST_GRACE {
                cfg.cancel.cancel();
            }
            let _ = server.service(Duration::from_millis(20));
        }
        let _ = server.service(Duration::from_millis(1));
        let fw = qemu
            .join()
            .map_err(|_| Error::Qemu("the QEMU thread panicked".into()))?;
        Ok::<_, Error>((out, fw?))
    });
    let (out, fw) = result?;
    match out {
        Some(out) => Ok((out, fw)),
        None => Err(Error::Qemu(format!(
            "QEMU never connected to the ivshmem socket {}:\n{}{}",
            server.config().socket.display(),
            fw.console,
            fw.stderr
        ))),
    }
}

/// One QEMU run of [`with_ipu_restarts`]: its thread and the flag that kills it.
type Running<'s> = (
    std::thread::ScopedJoinHandle<'s, Result<BootOutcome>>,
    crate::boot::Cancel,
);

fn start<'s, 'e>(
    scope: &'s std::thread::Scope<'s, 'e>,
    cfg: &'e BootConfig,
    image: &'e Image,
) -> Running<'s> {
    let mut c = cfg.clone();
    c.cancel = crate::boot::Cancel::default();
    let cancel = c.cancel.clone();
    (scope.spawn(move || run_boot_with_image(&c, image)), cancel)
}

fn join(h: std::thread::ScopedJoinHandle<'_, Result<BootOutcome>>) -> Result<BootOutcome> {
    h.join()
        .map_err(|_| Error::Qemu("the QEMU thread panicked".into()))?
}

/// As [`with_ipu`], but the IPU dies under the host: every `every`, the runner kills QEMU
/// (as `kill -9` would: no clean stop) and boots a new one on the same server, until `host`
/// returns. The host side must notice, fail over, and hand back to each new IPU. Returns
/// `host`'s result and how each QEMU run ended (all but the last were killed).
pub fn with_ipu_restarts<T: Send>(
    boot: &BootConfig,
    image: &Image,
    link: LinkSettings,
    every: Duration,
    host: impl FnOnce(&IvshmemServer) -> T + Send,
) -> Result<(T, Vec<BootOutcome>)> {
    let server = bind(link)?;
    let mut cfg = boot.clone();
    cfg.extra_args
        .extend(server.qemu_args().split_whitespace().map(str::to_string));
    let (cfg, server) = (&cfg, &server);
    let r = std::thread::scope(|scope| -> Result<(T, Vec<BootOutcome>)> {
        let mut runs = Vec::new();
        let mut current = start(scope, cfg, image);
        let started = Instant::now();
        while !server.peer_present() {
            if current.0.is_finished() || started.elapsed() > CONNECT_TIMEOUT {
                current.1.cancel();
                let fw = join(current.0)?;
                return Err(Error::Qemu(format!(
                    "QEMU never connected to the ivshmem socket:\n{}{}",
                    fw.console, fw.stderr
                )));
            }
            let _ = server.service(Duration::from_millis(50));
        }
        let host_thread = scope.spawn(move || host(server));
        let mut since = Instant::now();
        while !host_thread.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
            if since.elapsed() >= every {
                // The old QEMU is gone (killed and reaped) before the new one connects: the
                // server serves one client at a time.
                current.1.cancel();
                runs.push(join(current.0)?);
                current = start(scope, cfg, image);
                since = Instant::now();
            }
        }
        let out = host_thread
            .join()
            .map_err(|_| Error::Qemu("the host side panicked".into()))?;
        let done = Instant::now();
        while !current.0.is_finished() {
            if done.elapsed() > GUEST_GRACE {
                current.1.cancel();
            }
            let _ = server.service(Duration::from_millis(20));
        }
        runs.push(join(current.0)?);
        Ok((out, runs))
    });
    crate::sockets::release(&server.config().socket);
    r
}
