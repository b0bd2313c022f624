//! The network control-plane service: runs the [`CoreAllocator`] under the agent runtime over
//! the net channel. It (re)builds the allocator on each configuration the host sends, feeds it
//! samples, interval ends and outcomes, and publishes its decisions. The same service runs on
//! the IPU (`wave.services=net@N`), in a host thread (the on-host baseline) and in tests.
//!
//! The channel may be doorbell-less (its vector past the transport's, `docs/abi.md` §4): the
//! service asks the runtime to step it every [`POLL_NS`] so it never sleeps past a telemetry
//! interval.

use heapless::Deque;
use wave_abi::net::{encode_decision, NetDecodeStats, NetDecoder, ToIpu, NET_CHANNEL};
use wave_abi::Endpoint;

use super::{CoreAllocator, NetConfig, NetDecision, NetStats};
use crate::runtime::{Log, Service, Step};

/// Entries taken off the ring per step at most.
pub const NET_BATCH: usize = 64;
/// Longest the service sleeps between steps (its channel may have no doorbell).
pub const POLL_NS: u64 = 250_000;

/// The control-plane service.
#[derive(Default)]
pub struct NetService {
    alloc: Option<CoreAllocator>,
    config: Option<NetConfig>,
    decoder: NetDecoder,
    out: Deque<NetDecision, 4>,
    decisions: u64,
    configs: u64,
    refused_configs: u64,
    unconfigured: u64,
    session: u32,
}

impl NetService {
    /// A service with no configuration yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The allocator's counters (of the current configuration).
    pub fn stats(&self) -> Option<NetStats> {
        self.alloc.as_ref().map(|a| *a.stats())
    }

    /// Decoder counters.
    pub fn decode_stats(&self) -> NetDecodeStats {
        self.decoder.stats
    }

    /// Decisions published.
    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    /// Configurations applied, refused, and entries dropped for lack of one.
    pub fn config_counts(&self) -> (u64, u64, u64) {
        (self.configs, self.refused_configs, self.unconfigured)
    }

    fn configure(&mut self, c: NetConfig, log: &mut dyn Log) {
        match CoreAllocator::new(c.n_workers as usize, c.params) {
            Ok(a) => {
                log.log(format_args!(
                    "net: {} workers, grant at {} us queueing delay",
                    c.n_workers, c.params.delay_add_us
                ));
                self.alloc = Some(a);
                self.config = Some(c);
                self.configs += 1;
                self.out.clear();
            }
            Err(e) => {
                log.log(format_args!("net: refusing the host's configuration: {e}"));
                self.alloc = None;
                self.refused_configs += 1;
            }
        }
    }

    fn apply(&mut self, m: ToIpu, log: &mut dyn Log) {
        if let ToIpu::Config(c) = m {
            return self.configure(c, log);
        }
        let Some(a) = self.alloc.as_mut() else {
            self.unconfigured += 1;
            return;
        };
        match m {
            ToIpu::Sample { sample, interval } => a.on_sample(sample, interval),
            ToIpu::Outcome(o) => a.on_outcome(o),
            ToIpu::Interval(r) => {
                if let Some(d) = a.on_interval(r) {
                    // At most one decision is outstanding, so the queue never overflows;
                    // if it did, the allocator gives the decision up after its timeout.
                    let _ = self.out.push_back(d);
                }
            }
            ToIpu::Config(_) => {}
        }
    }

    fn flush(&mut self, ep: &mut Endpoint<'_>) -> Option<u16> {
        let mut ring = None;
        while let Some(d) = self.out.front() {
            let (n, r) = ep.send(NET_CHANNEL, &[encode_decision(d)]);
            if n == 0 {
                break;
            }
            ring = ring.or(r);
            self.decisions += 1;
            self.out.pop_front();
        }
        ring
    }

    /// One step: drain up to [`NET_BATCH`] entries, decide, publish.
    pub fn serve(&mut self, ep: &mut Endpoint<'_>, log: &mut dyn Log) -> (usize, Option<u16>) {
        if !ep.is_up() {
            return (0, None);
        }
        if ep.session() != self.session {
            // A new session: the host starts over and sends its configuration first.
            self.session = ep.session();
            self.alloc = None;
            self.out.clear();
        }
        let mut taken = 0;
        while taken < NET_BATCH {
            let Some(body) = ep.rx(NET_CHANNEL).poll() else {
                break;
            };
            taken += 1;
            if let Ok(m) = self.decoder.to_ipu(&body) {
                self.apply(m, log);
            }
        }
        let ring = self.flush(ep);
        (taken, ring)
    }
}

impl<'a> Service<'a> for NetService {
    fn name(&self) -> &'static str {
        "net"
    }
    fn channel(&self) -> wave_abi::Channel {
        NET_CHANNEL
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, _now_ns: u64, log: &mut dyn Log) -> Step {
        let (work, ring) = self.serve(ep, log);
        Step {
            work,
            doorbells: ring.filter(|v| *v < 64).map_or(0, |v| 1u64 << v),
        }
    }
    fn counters(&self) -> (u64, u64) {
        let hostile = self.stats().map_or(0, |s| s.hostile);
        (self.decoder.stats.invalid() + hostile, self.decisions)
    }
    fn deadline_ns(&self, now_ns: u64) -> Option<u64> {
        Some(now_ns + POLL_NS)
    }
}
