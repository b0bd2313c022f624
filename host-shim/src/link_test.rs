//! The host-side link-test driver: sends sequence-numbered, checksummed requests, waits for the
//! IPU's transformed echoes, and verifies every one (decode, sequence, transform).
//!
//! It polls; it sleeps on its doorbells only after a run of empty polls, announcing the sleep
//! in shared memory first, and it rings the IPU only when the IPU said it sleeps. A restart of
//! the IPU (new epoch) resynchronises the link: requests in flight are counted lost and the test
//! goes on. Malformed responses are counted and skipped; valid ones keep flowing.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use wave_abi::endpoint::EndpointError;
use wave_abi::layout::{LayoutError, VECTOR_CONTROL, VECTOR_LINK_TEST};
use wave_abi::msg::{
    encode_test, test_transform, DecodeStats, TestDecoder, TAG_TEST_REQUEST, TAG_TEST_RESPONSE,
    TEST_WORDS,
};
use wave_abi::ring::EntryBody;
use wave_abi::{Channel, Down, Endpoint, Layout, Side};

use wave_policy::runtime::{self, Exit, Log, Service, Step, Tuning};

use crate::link::{HostPort, Link, LinkError};
use crate::watchdog::{self, Cause};

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
    /// Idle time spent polling before announcing sleep (ns).
    pub spin_ns: u64,
    /// Longest single sleep on the doorbell (a lost wake-up costs at most this).
    pub sleep: Duration,
    /// Seed of the request payloads.
    pub seed: u64,
    /// At the end, publish this side as STOPPED and ring the control vector, so the IPU's
    /// agent knows the test is over (the firmware's `wave.link=echo` then powers off).
    pub stop_at_end: bool,
    /// Hostile-host mode: right after every this many valid requests (exactly: after valid
    /// request number k·K), also send one malformed request (cycling through [`malformed_request`]'s kinds). The IPU must count and skip
    /// them and keep answering the valid ones; see [`LinkTestSummary::ipu_invalid`].
    pub malformed_every: Option<u64>,
    /// Run as a lane of the host side (another thread owns the host's status block, e.g. a
    /// scheduling engine on the same region): never stops the side at the end.
    pub lane: bool,
    /// End the run (counting what is in flight lost) once the IPU's heartbeat has not changed
    /// for this long, or at once when the transport says the IPU left.
    pub peer_timeout: Duration,
    /// Start as a new host incarnation on a region an earlier host side already used (a
    /// restarted host): the next epoch after the one in the host status block, instead of
    /// the transport's. The IPU must drop that session and serve this one.
    pub new_host_epoch: bool,
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
            spin_ns: 50_000,
            sleep: Duration::from_millis(2),
            seed: 0x5eed,
            stop_at_end: true,
            malformed_every: None,
            lane: false,
            peer_timeout: crate::watchdog::DEFAULT_PEER_TIMEOUT,
            new_host_epoch: false,
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
    /// Why the run ended early: the IPU left or its heartbeat stopped.
    pub peer_lost: Option<Cause>,
    /// The watchdog's report when it declared the IPU gone (both status blocks, counters).
    pub watchdog: Option<String>,
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

/// The host side of the link test as a runtime service: sends a window of requests, checks
/// every response, and is finished once every request was answered or counted lost.
struct Driver<'c> {
    cfg: &'c LinkTestConfig,
    flights: Vec<Option<(Instant, [u64; TEST_WORDS])>>,
    answered: Vec<bool>,
    in_flight: usize,
    next_seq: u64,
    session: u32,
    s: LinkTestSummary,
    decoder: TestDecoder,
    rtts: Vec<u64>,
    batch: Vec<EntryBody>,
    /// Per entry of `batch`: a valid request (true) or a malformed one.
    valid: Vec<bool>,
}

impl<'c> Driver<'c> {
    fn new(cfg: &'c LinkTestConfig) -> Self {
        let total = cfg.messages as usize;
        Driver {
            cfg,
            flights: vec![None; total],
            answered: vec![false; total],
            in_flight: 0,
            next_seq: 0,
            session: 0,
            s: LinkTestSummary::default(),
            decoder: TestDecoder::new(TAG_TEST_RESPONSE),
            rtts: Vec::with_capacity(total),
            batch: Vec::with_capacity(32),
            valid: Vec::with_capacity(32),
        }
    }

    /// Every request in flight is lost (the peer restarted, or the run ended).
    fn lose_all(&mut self) {
        for f in self.flights.iter_mut() {
            if f.take().is_some() {
                self.s.lost += 1;
            }
        }
        self.in_flight = 0;
    }

    /// Sends up to a window of requests, with one malformed request right after every
    /// `malformed_every`-th valid one (hostile-host mode); returns (entries sent, doorbells).
    fn send(&mut self, ep: &mut Endpoint<'_>) -> (usize, u64) {
        self.batch.clear();
        self.valid.clear();
        let every = self.cfg.malformed_every.filter(|&e| e > 0);
        let mut seq = self.next_seq;
        let mut bad = self.s.injected;
        while self.in_flight + self.valid.len() < self.cfg.window
            && seq < self.cfg.messages
            && self.batch.len() + 2 <= self.batch.capacity()
        {
            self.batch.push(encode_test(
                TAG_TEST_REQUEST,
                seq,
                &request_words(self.cfg.seed, seq),
            ));
            self.valid.push(true);
            seq += 1;
            if every.is_some_and(|k| seq.is_multiple_of(k)) {
                self.batch.push(malformed_request(bad, self.cfg.seed));
                self.valid.push(false);
                bad += 1;
            }
        }
        if self.batch.is_empty() {
            return (0, 0);
        }
        let (n, ring) = ep.send(Channel::LinkTest, &self.batch);
        let now = Instant::now();
        for &ok in &self.valid[..n] {
            if !ok {
                self.s.injected += 1;
                continue;
            }
            if let Some(f) = self.flights.get_mut(self.next_seq as usize) {
                *f = Some((now, request_words(self.cfg.seed, self.next_seq)));
            }
            self.next_seq += 1;
            self.in_flight += 1;
            self.s.sent += 1;
        }
        (n, ring.map_or(0, |v| 1 << (v & 63)))
    }

    /// Takes every response waiting and checks it; returns how many.
    fn receive(&mut self, ep: &mut Endpoint<'_>) -> usize {
        let mut n = 0;
        while let Some(body) = ep.rx(Channel::LinkTest).poll() {
            n += 1;
            let Ok(m) = self.decoder.decode(&body) else {
                continue;
            };
            if m.seq >= self.next_seq {
                self.s.unexpected += 1;
                continue;
            }
            let idx = m.seq as usize;
            match self.flights.get_mut(idx).and_then(|f| f.take()) {
                Some((t0, words)) => {
                    self.in_flight -= 1;
                    if m.words == test_transform(m.seq, &words) {
                        self.s.received += 1;
                        self.rtts.push(t0.elapsed().as_nanos() as u64);
                        if let Some(a) = self.answered.get_mut(idx) {
                            *a = true;
                        }
                    } else {
                        self.s.mismatched += 1;
                        self.s.lost += 1;
                    }
                }
                None if self.answered.get(idx).copied().unwrap_or(false) => self.s.duplicate += 1,
                None => self.s.unexpected += 1,
            }
        }
        n
    }
}

impl<'a> Service<'a> for Driver<'_> {
    fn name(&self) -> &'static str {
        "link-test"
    }
    fn channel(&self) -> Channel {
        Channel::LinkTest
    }
    fn step(&mut self, ep: &mut Endpoint<'a>, _now_ns: u64, _log: &mut dyn Log) -> Step {
        if ep.session() != self.session {
            if self.session != 0 {
                // The IPU restarted: whatever was in flight to it is lost.
                self.s.resyncs += 1;
                self.lose_all();
            }
            self.session = ep.session();
        }
        let (sent, doorbells) = if ep.is_up() { self.send(ep) } else { (0, 0) };
        // Receive also after the link went down: whatever is there is this session's.
        let got = self.receive(ep);
        Step {
            work: sent + got,
            doorbells,
        }
    }
    fn counters(&self) -> (u64, u64) {
        (self.s.corrupt_so_far(&self.decoder), self.s.received)
    }
    fn finished(&self) -> bool {
        self.s.received + self.s.lost >= self.cfg.messages
    }
}

/// Builds this side's endpoint: the primary, or (`cfg.lane`) a lane of the primary another
/// thread runs, waiting for it to start.
fn endpoint<'a, L: Link>(
    link: &'a L,
    layout: &Layout,
    cfg: &LinkTestConfig,
) -> Result<Endpoint<'a>, LinkTestError> {
    let region = link.region();
    if !cfg.lane {
        let epoch = if cfg.new_host_epoch {
            wave_abi::status::next_epoch(wave_abi::endpoint::previous_epoch(
                &region,
                layout,
                Side::Host,
            ))
        } else {
            link.epoch()
        };
        return Endpoint::primary(region, layout, Side::Host, epoch, &[Channel::LinkTest])
            .map_err(LinkTestError::Endpoint);
    }
    let start = Instant::now();
    loop {
        match Endpoint::lane(region, layout, Side::Host, &[Channel::LinkTest]) {
            Err(EndpointError::NotStarted) if start.elapsed() < cfg.link_up_timeout => {
                let _ = link.wait(1 << VECTOR_CONTROL, Duration::from_millis(1));
            }
            r => return r.map_err(LinkTestError::Endpoint),
        }
    }
}

/// Waits for the IPU to come up on `ep` (rebuilding it if the transport changes meanwhile).
fn wait_up<'a, L: Link>(
    link: &'a L,
    layout: &Layout,
    cfg: &LinkTestConfig,
    ep: &mut Endpoint<'a>,
) -> Result<(), LinkTestError> {
    let mut generation = link.generation();
    let start = Instant::now();
    let mask = (1u32 << VECTOR_CONTROL) | (1u32 << VECTOR_LINK_TEST);
    loop {
        match ep.poll_link().state {
            Ok(_) => return Ok(()),
            Err(d @ (Down::VersionMismatch { .. } | Down::PeerRefused(_))) => {
                return Err(LinkTestError::NeverUp(d))
            }
            Err(d) if start.elapsed() > cfg.link_up_timeout => {
                return Err(LinkTestError::NeverUp(d))
            }
            Err(_) => {}
        }
        let w = link.wait(mask, Duration::from_millis(1));
        let w = w.map_err(LinkTestError::Link)?;
        if w.changed && link.generation() != generation {
            generation = link.generation();
            *ep = endpoint(link, layout, cfg)?;
        }
    }
}

/// Runs the link test over `link` as the host side: the driver service under the agent
/// runtime, restarted on a new endpoint whenever the transport re-initialises the region.
pub fn run<L: Link>(link: &L, cfg: LinkTestConfig) -> Result<LinkTestSummary, LinkTestError> {
    let region = link.region();
    let layout = Layout::read(&region).map_err(LinkTestError::Layout)?;
    let mut ep = endpoint(link, &layout, &cfg)?;
    wait_up(link, &layout, &cfg, &mut ep)?;
    let tuning = Tuning {
        spin_ns: cfg.spin_ns,
        max_sleep_ns: cfg.sleep.as_nanos() as u64,
        min_sleep_ns: 0,
        tick_ns: 1_000_000,
    };
    let mut d = Driver::new(&cfg);
    let began = Instant::now();
    let stop = AtomicBool::new(false);
    let mut bad_stamps = 0;
    loop {
        let mut port = HostPort::new(link, began, &stop)
            .with_deadline(began + cfg.timeout)
            .with_watchdog(layout, cfg.peer_timeout);
        let (exit, rt) = runtime::run(&mut ep, &mut port, &tuning, &mut [&mut d]);
        d.s.sleeps += rt.sleeps;
        d.s.wakeups += rt.doorbell_wakeups;
        d.s.doorbells_sent += rt.doorbells;
        bad_stamps += ep.rx(Channel::LinkTest).stats().bad_stamp;
        let lost = port.peer_lost().or_else(|| {
            (port.transport_changed() && !link.peer_present()).then_some(Cause::Disconnected)
        });
        if let Some(cause) = lost {
            // The IPU is gone: stop at once; what is in flight is lost (counted below).
            d.s.peer_lost = Some(cause);
            let age = port.heartbeat_age();
            d.s.watchdog = Some(watchdog::report(&region, &layout, &cause, age, 0));
            break;
        }
        if exit == Exit::StopRequested && port.transport_changed() && !port.past_deadline() {
            // A new IPU connected to the transport: the region was re-initialised.
            d.s.resyncs += 1;
            d.lose_all();
            ep = endpoint(link, &layout, &cfg)?;
            d.session = 0;
            continue;
        }
        d.s.timed_out = exit == Exit::StopRequested;
        break;
    }
    d.lose_all();
    let mut s = finish(d, began.elapsed(), bad_stamps);
    ep.tick(s.corrupt, s.received);
    if s.peer_lost.is_some() {
        s.ipu_invalid = ep.peer_status().lanes[Channel::LinkTest.index()].0;
        return Ok(s);
    }
    s.ipu_invalid = settle_ipu_invalid(link, &ep, s.injected);
    if cfg.stop_at_end {
        ep.stop();
        // Best effort: a sleeping IPU also notices within its bounded sleep.
        let _ = link.notify(VECTOR_CONTROL);
    }
    Ok(s)
}

/// The summary of a finished driver.
fn finish(d: Driver<'_>, elapsed: Duration, bad_stamps: u64) -> LinkTestSummary {
    let mut s = d.s;
    s.elapsed = elapsed;
    s.decode = d.decoder.stats;
    s.bad_stamps = bad_stamps;
    s.corrupt = s.decode.invalid() + s.unexpected + s.duplicate + s.mismatched + s.bad_stamps;
    s.msgs_per_sec = s.received as f64 / s.elapsed.as_secs_f64().max(1e-9);
    let mut rtts = d.rtts;
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
    s
}

/// The IPU publishes the link-test lane's invalid-request count with its heartbeat; gives it
/// a moment to publish the final value (bounded; the count is only reported, the caller
/// judges it).
fn settle_ipu_invalid<L: Link>(link: &L, ep: &Endpoint<'_>, injected: u64) -> u64 {
    let settle = Instant::now();
    loop {
        let invalid = ep.peer_status().lanes[Channel::LinkTest.index()].0;
        if invalid >= injected || settle.elapsed() > Duration::from_millis(500) {
            return invalid;
        }
        let _ = link.wait(1 << VECTOR_CONTROL, Duration::from_millis(5));
    }
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
             rtt_p50={:?} rtt_p99={:?}{}{}",
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
            if self.timed_out { " TIMED OUT" } else { "" },
            match &self.peer_lost {
                Some(c) => format!(" PEER LOST: {c}"),
                None => String::new(),
            }
        )
    }
}
