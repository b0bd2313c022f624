//! `cargo wave link-test`: the firmware and the host shim talking over the emulated PCIe link.
//!
//! The runner becomes the host: it starts the shim's ivshmem server on a fresh socket (the
//! server must listen before QEMU starts, which blocks until it gets the shared memory), boots
//! the firmware with `wave.link=echo` and an `ivshmem-doorbell` device on that socket, runs the
//! shim's link-test driver (sequence-numbered, checksummed requests the IPU answers with a
//! transformed payload, doorbells only for a side that announced it sleeps), then stops its end
//! of the link so the firmware powers off. Pass means: nothing lost, nothing corrupt, every
//! message answered, and the firmware ended cleanly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wave_host_shim::ivshmem::{IvshmemServer, ServerConfig};
use wave_host_shim::link_test::{self, LinkTestConfig, LinkTestSummary};
use wave_host_shim::Link;

use crate::boot::{run_boot_with_image, BootConfig, BootOutcome, BootStatus};
use crate::error::{Error, Result};
use crate::image::Image;

/// Settings of one link test.
#[derive(Debug, Clone)]
pub struct LinkTestOptions {
    /// Messages each way.
    pub messages: u64,
    /// IPU cores.
    pub smp: u32,
    /// GIC version of the board.
    pub gic: u8,
    /// Shared-memory size in bytes (a power of two, at least 256 KiB).
    pub shm_size: usize,
    /// Doorbell vectors per side.
    pub vectors: u16,
    /// Wall-clock limit for the whole run.
    pub timeout: Duration,
    /// Show the firmware console live.
    pub echo: bool,
    /// Hostile-host mode: one malformed request after every this many valid ones.
    pub malformed_every: Option<u64>,
}

impl Default for LinkTestOptions {
    fn default() -> Self {
        Self {
            messages: 10_000,
            smp: 1,
            gic: 3,
            shm_size: 1 << 20,
            vectors: 4,
            timeout: Duration::from_secs(300),
            echo: true,
            malformed_every: None,
        }
    }
}

/// What happened on both sides.
#[derive(Debug)]
pub struct LinkTestOutcome {
    /// The host side's counters and timings.
    pub summary: LinkTestSummary,
    /// How the firmware run ended, with its console.
    pub boot: BootOutcome,
}

impl LinkTestOutcome {
    /// True if every message came back valid, the IPU counted exactly the malformed requests
    /// it was sent, and the firmware ended with exit code 0.
    pub fn passed(&self, opts: &LinkTestOptions) -> bool {
        self.summary.lost == 0
            && self.summary.corrupt == 0
            && self.summary.received == opts.messages
            && self.summary.ipu_invalid == self.summary.injected
            && self.boot.status == BootStatus::Exited(0)
    }

    /// The one summary line.
    pub fn line(&self) -> String {
        let s = &self.summary;
        format!(
            "link-test: sent {} received {} corrupt {} lost {} malformed sent {} skipped by IPU {} | {:.0} msgs/s | rtt p50 {:.1} us p99 {:.1} us | doorbells to IPU {} host sleeps {} resyncs {}",
            s.sent,
            s.received,
            s.corrupt,
            s.lost,
            s.injected,
            s.ipu_invalid,
            s.msgs_per_sec,
            s.rtt_p50.as_secs_f64() * 1e6,
            s.rtt_p99.as_secs_f64() * 1e6,
            s.doorbells_sent,
            s.sleeps,
            s.resyncs
        )
    }
}

fn socket_path() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("wave-link-{}-{n}.sock", std::process::id()))
}

/// Runs the link test with `image`.
pub fn run_link_test(opts: &LinkTestOptions, image: &Image) -> Result<LinkTestOutcome> {
    let socket = socket_path();
    let mut server = IvshmemServer::bind(ServerConfig {
        socket: socket.clone(),
        shm_size: opts.shm_size,
        vectors: opts.vectors,
        ring_entries: wave_abi::layout::DEFAULT_RING_ENTRIES,
    })
    .map_err(|e| Error::Qemu(format!("cannot start the host shim's ivshmem server: {e}")))?;
    let cfg = BootConfig {
        smp: opts.smp,
        gic: opts.gic,
        timeout: opts.timeout,
        append: vec!["wave.link=echo".into()],
        echo: opts.echo,
        extra_args: server
            .qemu_args()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        ..BootConfig::default()
    };
    let started = Instant::now();
    let result = std::thread::scope(|scope| {
        let qemu = scope.spawn(|| run_boot_with_image(&cfg, image));
        // QEMU connects while it starts; serve it until it has its memory and doorbells.
        while !server.peer_present() {
            if qemu.is_finished() || started.elapsed() > Duration::from_secs(30) {
                break;
            }
            let _ = server.service(Duration::from_millis(50));
        }
        let summary = if server.peer_present() {
            let left = opts.timeout.saturating_sub(started.elapsed());
            Some(link_test::run(
                &mut server,
                LinkTestConfig {
                    messages: opts.messages,
                    timeout: left,
                    link_up_timeout: Duration::from_secs(30).min(left),
                    malformed_every: opts.malformed_every,
                    ..LinkTestConfig::default()
                },
            ))
        } else {
            None
        };
        // Keep servicing the socket until QEMU is gone (it may still ring doorbells).
        while !qemu.is_finished() {
            let _ = server.service(Duration::from_millis(20));
        }
        let boot = qemu
            .join()
            .map_err(|_| Error::Qemu("the QEMU thread panicked".into()))?;
        Ok::<_, Error>((summary, boot?))
    });
    let _ = std::fs::remove_file(&socket);
    let (summary, boot) = result?;
    let summary = match summary {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(Error::Qemu(format!("link test: {e}"))),
        None => {
            return Err(Error::Qemu(format!(
                "QEMU never connected to the ivshmem socket {} (see its output above)",
                socket.display()
            )))
        }
    };
    Ok(LinkTestOutcome { summary, boot })
}
