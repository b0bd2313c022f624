//! The service's host side of the echo subsystem: a link probe. Every `interval` it sends one
//! checksummed request on the echo channel, and checks the IPU's transformed answer; the round
//! trip and the count of probes lost or answered wrongly tell the operator the link and the
//! IPU's echo core are alive and how fast they answer (`wave-host stats`: `probe`). It runs as
//! a service of the host's agent runtime, like the link-test driver, one request at a time.

use std::sync::atomic::{AtomicU64, Ordering};

use wave_abi::msg::{
    encode_test, test_transform, TestDecoder, TAG_TEST_REQUEST, TAG_TEST_RESPONSE,
};
use wave_abi::{Channel, Endpoint};
use wave_policy::runtime::{Log, Service, Step};

use crate::link_test::request_words;

/// Probe counters, shared with the stats thread.
#[derive(Debug, Default)]
pub struct ProbeCounters {
    /// Probes sent.
    pub sent: AtomicU64,
    /// Probes answered correctly.
    pub answered: AtomicU64,
    /// Probes never answered (timeout, or the IPU restarted), or answered wrongly.
    pub lost: AtomicU64,
    /// Round trip of the last answered probe (ns).
    pub last_rtt_ns: AtomicU64,
}

/// The probe service.
pub struct LinkProbe<'c> {
    interval_ns: u64,
    timeout_ns: u64,
    next_ns: u64,
    seq: u64,
    in_flight: Option<(u64, u64)>,
    session: u32,
    decoder: TestDecoder,
    invalid: u64,
    c: &'c ProbeCounters,
}

const SEED: u64 = 0x5741_5645_5052_4f42;

impl<'c> LinkProbe<'c> {
    /// A probe every `interval_ns`; an answer later than `max(interval, 1 s)` counts as lost.
    pub fn new(interval_ns: u64, counters: &'c ProbeCounters) -> Self {
        LinkProbe {
            interval_ns,
            timeout_ns: interval_ns.max(1_000_000_000),
            next_ns: 0,
            seq: 0,
            in_flight: None,
            session: 0,
            decoder: TestDecoder::new(TAG_TEST_RESPONSE),
            invalid: 0,
            c: counters,
        }
    }

    fn lose(&mut self) {
        if self.in_flight.take().is_some() {
            self.c.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send(&mut self, ep: &mut Endpoint<'_>, now_ns: u64) -> (usize, u64) {
        let words = request_words(SEED, self.seq);
        let (n, ring) = ep.send(
            Channel::LinkTest,
            &[encode_test(TAG_TEST_REQUEST, self.seq, &words)],
        );
        if n == 1 {
            self.in_flight = Some((self.seq, now_ns));
            self.seq += 1;
            self.c.sent.fetch_add(1, Ordering::Relaxed);
        }
        self.next_ns = now_ns + self.interval_ns;
        (n, ring.map_or(0, |v| 1 << (v & 63)))
    }

    fn receive(&mut self, ep: &mut Endpoint<'_>, now_ns: u64) -> usize {
        let mut n = 0;
        while let Some(body) = ep.rx(Channel::LinkTest).poll() {
            n += 1;
            let Ok(m) = self.decoder.decode(&body) else {
                self.invalid += 1;
                continue;
            };
            match self.in_flight {
                Some((seq, t0)) if seq == m.seq => {
                    self.in_flight = None;
                    if m.words == test_transform(seq, &request_words(SEED, seq)) {
                        self.c.answered.fetch_add(1, Ordering::Relaxed);
                        self.c
                            .last_rtt_ns
                            .store(now_ns.saturating_sub(t0), Ordering::Relaxed);
                    } else {
                        self.c.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => self.invalid += 1,
            }
        }
        n
    }
}

impl<'a> Service<'a> for LinkProbe<'_> {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn channel(&self) -> Channel {
        Channel::LinkTest
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, now_ns: u64, _log: &mut dyn Log) -> Step {
        if ep.session() == 0 {
            // Never up yet: the rings have no session, and an all-zero slot would read as a
            // corrupt one.
            return Step::default();
        }
        if ep.session() != self.session {
            self.lose(); // a new IPU incarnation: the old probe will never be answered
            self.session = ep.session();
        }
        let got = self.receive(ep, now_ns);
        if self
            .in_flight
            .is_some_and(|(_, t0)| now_ns.saturating_sub(t0) > self.timeout_ns)
        {
            self.lose();
        }
        let (sent, doorbells) = if ep.is_up() && self.in_flight.is_none() && now_ns >= self.next_ns
        {
            self.send(ep, now_ns)
        } else {
            (0, 0)
        };
        Step {
            work: sent + got,
            doorbells,
        }
    }
    fn counters(&self) -> (u64, u64) {
        (self.invalid, self.c.answered.load(Ordering::Relaxed))
    }
    fn deadline_ns(&self, _now_ns: u64) -> Option<u64> {
        Some(match self.in_flight {
            Some((_, t0)) => t0 + self.timeout_ns,
            None => self.next_ns,
        })
    }
}
