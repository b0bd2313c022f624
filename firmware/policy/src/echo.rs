//! The link-test echo service: reads link-test requests, answers each valid one with
//! `{seq, test_transform(seq, words)}`, drops (and counts) invalid ones. Bounded work per
//! step, no allocation; never takes a request it has no response slot for.
//!
//! The message codec (`encode_test`, `TestDecoder`, `test_transform`) is part of the ABI and
//! stays in `wave_abi::msg`; this is the service that runs it under the agent runtime.

use wave_abi::msg::{encode_test, test_transform, DecodeStats, TestDecoder};
use wave_abi::msg::{TAG_TEST_REQUEST, TAG_TEST_RESPONSE};
use wave_abi::ring::EntryBody;
use wave_abi::{Channel, Endpoint};

use crate::runtime::{Log, Service, Step};

/// Requests answered per step at most.
pub const ECHO_BATCH: usize = 32;

/// Echo counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Responses published.
    pub echoed: u64,
    /// Requests rejected by the decoder (see [`EchoService::decode_stats`] for why).
    pub invalid: u64,
}

/// The IPU side of the link test.
pub struct EchoService {
    decoder: TestDecoder,
    stats: EchoStats,
    buf: [EntryBody; ECHO_BATCH],
}

impl Default for EchoService {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoService {
    /// A fresh service.
    pub fn new() -> Self {
        Self {
            decoder: TestDecoder::new(TAG_TEST_REQUEST),
            stats: EchoStats::default(),
            buf: [EntryBody::ZERO; ECHO_BATCH],
        }
    }

    /// Counters.
    pub fn stats(&self) -> EchoStats {
        self.stats
    }

    /// Decoder counters (per rejection reason).
    pub fn decode_stats(&self) -> DecodeStats {
        self.decoder.stats
    }

    /// Processes up to one batch. Returns the number of requests taken off the ring and, if
    /// the host is sleeping, the doorbell vector to ring.
    pub fn echo(&mut self, ep: &mut Endpoint<'_>) -> (usize, Option<u16>) {
        if !ep.is_up() {
            return (0, None);
        }
        let (rx, tx) = ep.channel(Channel::LinkTest);
        let room = (tx.free_slots() as usize).min(self.buf.len());
        let mut n_out = 0;
        let mut taken = 0;
        while taken < room {
            let Some(req) = rx.poll() else { break };
            taken += 1;
            match self.decoder.decode(&req) {
                Ok(m) => {
                    if let Some(slot) = self.buf.get_mut(n_out) {
                        let out = test_transform(m.seq, &m.words);
                        *slot = encode_test(TAG_TEST_RESPONSE, m.seq, &out);
                        n_out += 1;
                    }
                }
                Err(_) => self.stats.invalid += 1,
            }
        }
        if n_out == 0 {
            return (taken, None);
        }
        let (sent, ring) = ep.send(Channel::LinkTest, self.buf.get(..n_out).unwrap_or(&[]));
        self.stats.echoed += sent as u64;
        (taken, ring)
    }
}

impl<'a> Service<'a> for EchoService {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn channel(&self) -> Channel {
        Channel::LinkTest
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, _now_ns: u64, _log: &mut dyn Log) -> Step {
        let (work, ring) = self.echo(ep);
        Step {
            work,
            doorbells: ring.map_or(0, |v| 1u64 << (v & 63)),
        }
    }
    fn counters(&self) -> (u64, u64) {
        (self.stats.invalid, self.stats.echoed)
    }
}
