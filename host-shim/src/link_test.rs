//! The host-side link-test driver: sends sequence-numbered, checksummed requests, waits for the
//! IPU's transformed echoes, and verifies every one (decode, sequence, transform).
//!
//! It polls; it sleeps on its doorbells only after a run of empty polls, announcing the sleep
//! in shared memory first, and it rings the IPU only when the IPU said it sleeps. A restart of
//! the IPU (new epoch) resynchronises the link: requests in flight are counted lost and the test
//! goes on. Malformed responses are counted and skipped; valid ones keep flowing.

use std::time::{Duration, Instant};

use wave_abi::endpoint::EndpointError;
use wave_abi::layout::{LayoutError, VECTOR_CONTROL, VECTOR_LINK_TEST};
use wave_abi::msg::{
    encode_test, test_transform, DecodeStats, TestDecoder, TAG_TEST_REQUEST, TAG_TEST_RESPONSE,
    TEST_WORDS,
};
use wave_abi::ring::EntryBody;
use wave_abi::{Channel, Down, Endpoint, Layout, Side};

use crate::link::{Link, LinkError};

/// Settings.
#[derive(Clone, Debug)]
pub struct LinkTestConfig {
    /// Requests to send.
    pub messages: u64,
    /// Most requests in flight.
    pub window: usize,
    /// Give up (counting the rest lost) after this long.
    pub timeout: Duration,
    /// Give up if the link is not up within this long.
    pub link_up_timeout: Duration,
    /// Empty polls before announcing sleep.
    pub spin: u32,
    /// Longest single sleep on the doorbell (a lost wake-up costs at most this).
    pub sleep: Duration,
    /// Seed of the request payloads.
    pub seed: u64,
    /// At the end, publish this side as STOPPED and ring the control vector, so the IPU's
    /// agent knows the test is over (the firmware's `wave.link=echo` then powers off).
    pub stop_at_end: bool,
    /// Hostile-host mode: after every this many valid requests, also send one malformed
    /// request (cycling through [`malformed_request`]'s kinds). The IPU must count and skip
    /// them and keep answering the valid ones; see [`LinkTestSummary::ipu_invalid`].
    pub malformed_every: Option<u64>,
}

/// Kinds of malformed request the hostile-host mode sends, in order.
pub const MALFORMED_KINDS: u64 = 6;

/// Malformed request number `k` (cycling through [`MALFORMED_KINDS`] kinds): bad tag, bad
/// length, reserved field set, checksum mismatch, the all-zero entry, and a response tag sent
/// as a request. Each is based on a well-formed request so that only one thing is wrong.
pub fn malformed_request(k: u64, seed: u64) -> EntryBody {
    let seq = 1 << 40; // never a real sequence number
    let mut b = encode_test(TAG_TEST_REQUEST, seq, &request_words(seed, seq));
    match k % MALFORMED_KINDS {
        0 => b.tag = 0x7777.into(),
        1 => b.len = 47.into(),
        2 => b.aux = 9.into(),
        3 => b.payload[12] ^= 0x40,
        4 => b = EntryBody::ZERO,
        _ => b = encode_test(TAG_TEST_RESPONSE, seq, &request_words(seed, seq)),
    }
    b
}

impl Default for LinkTestConfig {
    fn default() -> Self {
        Self {
            messages: 10_000,
            window: 64,
            timeout: Duration::from_secs(60),
            link_up_timeout: Duration::from_secs(30),
            spin: 2_000,
            sleep: Duration::from_millis(2),
            seed: 0x5eed,
            stop_at_end: true,
            malformed_every: None,
        }
    }
}

/// The payload words of request `seq` (deterministic, so a test peer can forge responses).
pub fn request_words(seed: u64, seq: u64) -> [u64; TEST_WORDS] {
    let mut x = seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    core::array::from_fn(|_| {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkTestSummary {
    /// Requests published.
    pub sent: u64,
    /// Valid, correctly transformed responses to requests in flight.
    pub received: u64,
    /// Invalid responses, all reasons (= decode invalid + unexpected + duplicate + mismatched
    /// + ring-level bad stamps).
    pub corrupt: u64,
    /// Requests sent that never got a valid response (peer restarted, or timeout).
    pub lost: u64,
    /// Well-formed responses for a sequence number never sent or no longer in flight.
    pub unexpected: u64,
    /// Second responses to the same request.
    pub duplicate: u64,
    /// Responses whose words are not the transform of the request's.
    pub mismatched: u64,
    /// Decoder counters (per reason).
    pub decode: DecodeStats,
    /// Ring slots skipped for impossible stamps.
    pub bad_stamps: u64,
    /// Peer restarts seen (link resynchronised).
    pub resyncs: u64,
    /// Doorbells rung at the IPU (only when it was sleeping).
    pub doorbells_sent: u64,
    /// Times this side slept on its doorbells.
    pub sleeps: u64,
    /// Sleeps ended by a doorbell (not a timeout).
    pub wakeups: u64,
    /// True if the run ended by timeout.
    pub timed_out: bool,
    /// Malformed requests sent (hostile-host mode).
    pub injected: u64,
    /// Invalid requests the IPU reports having counted and skipped (its published counter),
    /// read at the end of the run.
    pub ipu_invalid: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Received messages per second.
    pub msgs_per_sec: f64,
    /// Median round-trip time.
    pub rtt_p50: Duration,
    /// 99th percentile round-trip time.
    pub rtt_p99: Duration,
}

/// Why the test could not run.
#[derive(Debug, PartialEq)]
pub enum LinkTestError {
    /// The region header is invalid.
    Layout(LayoutError),
    /// The endpoint could not be built.
    Endpoint(EndpointError),
    /// The link did not come up in time; the last reason.
    NeverUp(Down),
    /// The transport failed.
    Link(LinkError),
}

impl std::fmt::Display for LinkTestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkTestError::Layout(e) => write!(f, "shared region: {e}"),
            LinkTestError::Endpoint(e) => write!(f, "cannot start the host endpoint: {e:?}"),
            LinkTestError::NeverUp(Down::VersionMismatch { major, minor }) => write!(
                f,
                "the IPU speaks ABI {major}.{minor}, the host {}.{}: rebuild one side",
                wave_abi::ABI_MAJOR,
                wave_abi::ABI_MINOR
            ),
            LinkTestError::NeverUp(d) => write!(f, "link did not come up in time (last: {d:?})"),
            LinkTestError::Link(e) => write!(f, "link transport: {e}"),
        }
    }
}

impl std::error::Error for LinkTestError {}

struct InFlight {
    sent: Option<(Instant, [u64; TEST_WORDS])>,
}

/// Runs the link test over `link` as the host side.
pub fn run<L: Link>(link: &mut L, cfg: LinkTestConfig) -> Result<LinkTestSummary, LinkTestError> {
    let link: &L = link;
    let region = link.region();
    let layout = Layout::read(&region).map_err(LinkTestError::Layout)?;
    let mut generation = link.generation();
    let mut ep = Endpoint::new(region, &layout, Side::Host, link.epoch())
        .map_err(LinkTestError::Endpoint)?;
    let mask = (1u32 << VECTOR_CONTROL) | (1u32 << VECTOR_LINK_TEST);

    // Wait for the IPU.
    let start = Instant::now();
    loop {
        let p = ep.poll_link();
        match p.state {
            Ok(_) => break,
            Err(d @ Down::VersionMismatch { .. }) => return Err(LinkTestError::NeverUp(d)),
            Err(d) if start.elapsed() > cfg.link_up_timeout => {
                return Err(LinkTestError::NeverUp(d))
            }
            Err(_) => {}
        }
        ep.begin_sleep();
        let w = link.wait(mask, Duration::from_millis(1));
        ep.end_sleep();
        let w = w.map_err(LinkTestError::Link)?;
        if w.changed && link.generation() != generation {
            generation = link.generation();
            ep = Endpoint::new(region, &layout, Side::Host, link.epoch())
                .map_err(LinkTestError::Endpoint)?;
        }
    }

    let total = cfg.messages as usize;
    let mut flights: Vec<InFlight> = (0..total).map(|_| InFlight { sent: None }).collect();
    let mut answered = vec![false; total];
    let mut in_flight = 0usize;
    let mut next_seq = 0u64;
    let mut s = LinkTestSummary::default();
    let mut decoder = TestDecoder::new(TAG_TEST_RESPONSE);
    let mut rtts: Vec<u64> = Vec::with_capacity(total);
    let mut batch: Vec<EntryBody> = Vec::with_capacity(32);
    let mut idle = 0u32;
    let mut iter = 0u64;
    let began = Instant::now();
    let mut bad_stamp_base = 0u64;

    let lose_all = |flights: &mut Vec<InFlight>, in_flight: &mut usize, s: &mut LinkTestSummary| {
        for f in flights.iter_mut() {
            if f.sent.take().is_some() {
                s.lost += 1;
            }
        }
        *in_flight = 0;
    };

    while s.received + s.lost < cfg.messages {
        if began.elapsed() > cfg.timeout {
            s.timed_out = true;
            break;
        }
        iter += 1;
        let mut progress = false;

        if link.generation() != generation {
            // A new IPU connected to the transport: the region was re-initialised.
            generation = link.generation();
            s.bad_stamps += ep.rx(Channel::LinkTest).stats().bad_stamp - bad_stamp_base;
            ep = Endpoint::new(region, &layout, Side::Host, link.epoch())
                .map_err(LinkTestError::Endpoint)?;
            bad_stamp_base = 0;
            s.resyncs += 1;
            lose_all(&mut flights, &mut in_flight, &mut s);
        }
        let p = ep.poll_link();
        if p.resynced {
            s.resyncs += 1;
            lose_all(&mut flights, &mut in_flight, &mut s);
        }

        if p.state.is_ok() {
            // Send.
            batch.clear();
            while in_flight + batch.len() < cfg.window
                && next_seq + (batch.len() as u64) < cfg.messages
                && batch.len() < batch.capacity()
            {
                let seq = next_seq + batch.len() as u64;
                batch.push(encode_test(
                    TAG_TEST_REQUEST,
                    seq,
                    &request_words(cfg.seed, seq),
                ));
            }
            if let Some(every) = cfg.malformed_every.filter(|&e| e > 0) {
                // One malformed request ahead of the batch whenever the valid count crosses a
                // multiple of `every` (while there are still valid requests to send after it).
                if !batch.is_empty() && next_seq / every > s.injected {
                    let (n, ring) = ep.send(
                        Channel::LinkTest,
                        &[malformed_request(s.injected, cfg.seed)],
                    );
                    if n == 1 {
                        s.injected += 1;
                    }
                    if let Some(v) = ring {
                        link.notify(v).map_err(LinkTestError::Link)?;
                        s.doorbells_sent += 1;
                    }
                }
            }
            if !batch.is_empty() {
                let (n, ring) = ep.send(Channel::LinkTest, &batch);
                let now = Instant::now();
                for i in 0..n as u64 {
                    let seq = next_seq + i;
                    if let Some(f) = flights.get_mut(seq as usize) {
                        f.sent = Some((now, request_words(cfg.seed, seq)));
                    }
                }
                next_seq += n as u64;
                in_flight += n;
                s.sent += n as u64;
                if n > 0 {
                    progress = true;
                }
                if let Some(v) = ring {
                    link.notify(v).map_err(LinkTestError::Link)?;
                    s.doorbells_sent += 1;
                }
            }
        }

        // Receive (also after the link went down: whatever is there is this session's).
        while let Some(body) = ep.rx(Channel::LinkTest).poll() {
            progress = true;
            let Ok(m) = decoder.decode(&body) else {
                continue;
            };
            let idx = m.seq as usize;
            if m.seq >= next_seq {
                s.unexpected += 1;
                continue;
            }
            match flights.get_mut(idx).and_then(|f| f.sent.take()) {
                Some((t0, words)) => {
                    in_flight -= 1;
                    if m.words == test_transform(m.seq, &words) {
                        s.received += 1;
                        rtts.push(t0.elapsed().as_nanos() as u64);
                        if let Some(a) = answered.get_mut(idx) {
                            *a = true;
                        }
                    } else {
                        s.mismatched += 1;
                        s.lost += 1;
                    }
                }
                None if answered.get(idx).copied().unwrap_or(false) => s.duplicate += 1,
                None => s.unexpected += 1,
            }
        }

        if iter.is_multiple_of(256) {
            ep.tick(s.corrupt_so_far(&decoder), s.received);
        }
        if progress {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle >= cfg.spin {
            idle = 0;
            ep.begin_sleep();
            if !ep.has_work() {
                let w = link.wait(mask, cfg.sleep);
                s.sleeps += 1;
                match w {
                    Ok(w) if w.vectors != 0 => s.wakeups += 1,
                    Ok(_) => {}
                    Err(e) => {
                        ep.end_sleep();
                        return Err(LinkTestError::Link(e));
                    }
                }
            }
            ep.end_sleep();
            ep.tick(s.corrupt_so_far(&decoder), s.received);
        } else {
            std::hint::spin_loop();
        }
    }
    lose_all(&mut flights, &mut in_flight, &mut s);

    s.elapsed = began.elapsed();
    s.decode = decoder.stats;
    s.bad_stamps += ep.rx(Channel::LinkTest).stats().bad_stamp - bad_stamp_base;
    s.corrupt = s.decode.invalid() + s.unexpected + s.duplicate + s.mismatched + s.bad_stamps;
    s.doorbells_sent = s.doorbells_sent.max(ep.stats().doorbells);
    s.msgs_per_sec = s.received as f64 / s.elapsed.as_secs_f64().max(1e-9);
    rtts.sort_unstable();
    let pct = |q: f64| -> Duration {
        if rtts.is_empty() {
            return Duration::ZERO;
        }
        let i = ((rtts.len() - 1) as f64 * q).round() as usize;
        Duration::from_nanos(rtts.get(i).copied().unwrap_or(0))
    };
    s.rtt_p50 = pct(0.50);
    s.rtt_p99 = pct(0.99);
    ep.tick(s.corrupt, s.received);
    // The IPU publishes its invalid-request count with its heartbeat; give it a moment to
    // publish the final value (bounded; the count is only reported, the caller judges it).
    let settle = Instant::now();
    loop {
        s.ipu_invalid = ep.peer_status().counters[6];
        if s.ipu_invalid >= s.injected || settle.elapsed() > Duration::from_millis(500) {
            break;
        }
        let _ = link.wait(mask, Duration::from_millis(5));
    }
    if cfg.stop_at_end {
        ep.stop();
        // Best effort: a sleeping IPU also notices within its bounded sleep.
        let _ = link.notify(VECTOR_CONTROL);
    }
    Ok(s)
}

impl LinkTestSummary {
    fn corrupt_so_far(&self, d: &TestDecoder) -> u64 {
        d.stats.invalid() + self.unexpected + self.duplicate + self.mismatched
    }
}

impl std::fmt::Display for LinkTestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} received={} corrupt={} lost={} (unexpected={} duplicate={} mismatched={} \
             bad_tag={} bad_len={} reserved={} checksum={} bad_stamps={}) resyncs={} \
             doorbells_sent={} sleeps={} wakeups={} injected={} ipu_invalid={} msgs/s={:.0} \
             rtt_p50={:?} rtt_p99={:?}{}",
            self.sent,
            self.received,
            self.corrupt,
            self.lost,
            self.unexpected,
            self.duplicate,
            self.mismatched,
            self.decode.bad_tag,
            self.decode.bad_length,
            self.decode.reserved,
            self.decode.checksum,
            self.bad_stamps,
            self.resyncs,
            self.doorbells_sent,
            self.sleeps,
            self.wakeups,
            self.injected,
            self.ipu_invalid,
            self.msgs_per_sec,
            self.rtt_p50,
            self.rtt_p99,
            if self.timed_out { " TIMED OUT" } else { "" }
        )
    }
}
