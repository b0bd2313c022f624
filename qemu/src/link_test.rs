//! `cargo wave link-test`: the firmware and the host shim talking over the emulated PCIe link.
//!
//! The runner becomes the host: it starts the shim's ivshmem server on a fresh socket (the
//! server must listen before QEMU starts, which blocks until it gets the shared memory), boots
//! the firmware with `wave.services=echo@0` and an `ivshmem-doorbell` device on that socket, runs the
//! shim's link-test driver (sequence-numbered, checksummed requests the IPU answers with a
//! transformed payload, doorbells only for a side that announced it sleeps), then stops its end
//! of the link so the firmware powers off. Pass means: nothing lost, nothing corrupt, every
//! message answered, and the firmware ended cleanly.

use std::time::Duration;

use wave_host_shim::link_test::{self, LinkTestConfig, LinkTestSummary};

use crate::boot::{BootConfig, BootOutcome, BootStatus};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ipu::{with_ipu, LinkSettings};

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
    /// The IPU is declared gone once its heartbeat has not changed for this long.
    pub peer_timeout: Duration,
}

impl Default for LinkTestOptions {
    fn default() -> Self {
        Self {
            messages: 10_000,
            smp: 1,
            gic: 3,
            shm_size: 1 << 20,
            vectors: wave_abi::layout::MIN_VECTORS as u16,
            timeout: Duration::from_secs(300),
            echo: true,
            malformed_every: None,
            peer_timeout: wave_host_shim::watchdog::DEFAULT_PEER_TIMEOUT,
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
        ) + &match &s.peer_lost {
            Some(cause) => format!(" | ended early: {cause}"),
            None => String::new(),
        }
    }
}

/// Runs the link test with `image`.
pub fn run_link_test(opts: &LinkTestOptions, image: &Image) -> Result<LinkTestOutcome> {
    let cfg = BootConfig {
        smp: opts.smp,
        gic: opts.gic,
        timeout: opts.timeout,
        append: vec!["wave.services=echo@0".into()],
        echo: opts.echo,
        ..BootConfig::default()
    };
    let link = LinkSettings {
        shm_size: opts.shm_size,
        vectors: opts.vectors,
        ..LinkSettings::default()
    };
    let cancel = cfg.cancel.clone();
    let (summary, boot) = with_ipu(&cfg, image, link, |server, left| {
        let r = link_test::run(
            server,
            LinkTestConfig {
                messages: opts.messages,
                timeout: left,
                link_up_timeout: Duration::from_secs(30).min(left),
                malformed_every: opts.malformed_every,
                peer_timeout: opts.peer_timeout,
                ..LinkTestConfig::default()
            },
        );
        if r.as_ref().is_ok_and(|s| s.peer_lost.is_some()) {
            // A stopped or hung IPU will not end its run: end QEMU now, not after the grace.
            cancel.cancel();
        }
        r
    })?;
    match summary {
        Ok(summary) => Ok(LinkTestOutcome { summary, boot }),
        Err(e) => Err(Error::Qemu(format!(
            "link test: {e}\n--- firmware console ---\n{}",
            boot.console
        ))),
    }
}
