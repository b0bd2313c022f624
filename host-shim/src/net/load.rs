//! The open-loop load generator: Poisson arrivals from many client sockets (one flow each, so
//! the kernel's flow hash spreads them over the table), a load step (low → peak → low) and a
//! bursty phase, a service-time mix carried in each request, and latency from send to reply.
//!
//! Under TCP ([`run_tcp`]) each flow is a connection that carries `conn_requests` requests
//! (pipelined, open loop) and is then half-closed, while the flow opens a new one: steering at
//! SYN reaches every flow within that many of its requests. A half-closed connection is read
//! until the server closes it after its last reply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc};

use super::server::{Transport, REQ_LEN};
use super::sock;

/// Load settings.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server's nominal capacity, req/s (all workers busy all the time).
    pub capacity_rps: f64,
    /// Seconds per phase.
    pub phase_s: f64,
    /// Short requests' service time, µs.
    pub short_us: u64,
    /// Long requests' service time, µs.
    pub long_us: u64,
    /// Share of long requests, ‰.
    pub long_permille: u32,
    /// Load of the low phases and of the peak, as fractions of capacity.
    pub low: f64,
    /// See [`LoadConfig::low`].
    pub peak: f64,
    /// Client sockets (flows).
    pub clients: usize,
    /// Random seed.
    pub seed: u64,
    /// How long to wait for the last replies.
    pub drain: Duration,
    /// Only the peak load, for one phase (the search for the static minimum).
    pub peak_only: bool,
    /// UDP datagrams or TCP connections (the server runs the same transport).
    pub transport: Transport,
    /// TCP: requests per connection before the flow reconnects.
    pub conn_requests: u32,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            capacity_rps: 0.0,
            phase_s: 2.0,
            short_us: 2_000,
            long_us: 8_000,
            long_permille: 50,
            low: 0.2,
            peak: 0.6,
            clients: 64,
            seed: 42,
            drain: Duration::from_secs(30),
            peak_only: false,
            transport: Transport::Udp,
            conn_requests: 8,
        }
    }
}

impl LoadConfig {
    /// Mean service time, µs.
    pub fn mean_service_us(&self) -> f64 {
        let p = self.long_permille as f64 / 1000.0;
        self.short_us as f64 * (1.0 - p) + self.long_us as f64 * p
    }

    /// The capacity of `workers` workers, req/s.
    pub fn capacity_of(&self, workers: usize) -> f64 {
        workers as f64 * 1e6 / self.mean_service_us()
    }
}

/// The phases, in order: name, and load as a fraction of capacity at time `t` into the phase.
pub const PHASES: [&str; 4] = ["low", "peak", "low-after", "bursty"];

/// Load (fraction of capacity) at `t_s` seconds into the run.
pub fn load_at(cfg: &LoadConfig, t_s: f64) -> f64 {
    if cfg.peak_only {
        return cfg.peak;
    }
    let phase = (t_s / cfg.phase_s) as usize;
    match phase {
        0 | 2 => cfg.low,
        1 => cfg.peak,
        // Bursty: 50 ms at 1.1× the peak, then 150 ms at the low load.
        _ => {
            if (t_s * 1000.0) as u64 % 200 < 50 {
                (cfg.peak * 1.1).min(1.0)
            } else {
                cfg.low / 2.0
            }
        }
    }
}

/// Which phase `t_ns` falls in.
pub fn phase_of(cfg: &LoadConfig, t_ns: u64) -> usize {
    ((t_ns as f64 / 1e9 / cfg.phase_s) as usize).min(PHASES.len() - 1)
}

/// Most requests one run sends (replies naming a higher sequence number are ignored).
pub const MAX_REQUESTS: usize = 1 << 26;

/// One request's fate.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// When it was sent (ns from the run's start).
    pub send_ns: u64,
    /// Send → reply, ns.
    pub latency_ns: u64,
}

/// What the generator saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests sent.
    pub sent: u64,
    /// Replies received (each request at most once).
    pub answered: u64,
    /// Answered requests.
    pub records: Vec<Record>,
    /// Length of the load (without the drain), ns.
    pub duration_ns: u64,
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs the load against `port` for 4 phases (UDP or TCP, `cfg.transport`); `origin` is the
/// run's clock.
pub fn run(port: u16, cfg: &LoadConfig, origin: Instant) -> Result<LoadResult, String> {
    if cfg.transport == Transport::Tcp {
        return run_tcp(port, cfg, origin);
    }
    let clients: Vec<std::net::UdpSocket> = (0..cfg.clients.max(1))
        .map(|_| sock::client(port))
        .collect::<Result<_, _>>()?;
    // The sender is a thread of its own: it raises its priority, and the caller's (which may
    // start QEMU next, a child inheriting it) stays as it was.
    drive(
        cfg,
        |total_ns| send(&clients, port, cfg, origin, total_ns),
        |sent, done| receive(&clients, origin, sent, done, cfg.drain),
    )
}

/// Runs `send` (given the load's length, returns the requests sent) and `receive` (until
/// `done` and every one of `sent` is answered or the drain ends) on two threads.
fn drive<S, R>(cfg: &LoadConfig, send: S, receive: R) -> Result<LoadResult, String>
where
    S: FnOnce(u64) -> u64 + Send,
    R: FnOnce(&AtomicU64, &AtomicBool) -> (Vec<Record>, u64) + Send,
{
    let phases = if cfg.peak_only { 1 } else { PHASES.len() };
    let total_ns = (cfg.phase_s * phases as f64 * 1e9) as u64;
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let rx = s.spawn(|| receive(&sent, &done));
        let tx = s.spawn(|| send(total_ns));
        let n = tx.join().map_err(|_| "sender panicked")?;
        sent.store(n, Release);
        done.store(true, Release);
        let (records, answered) = rx.join().map_err(|_| "receiver panicked")?;
        Ok(LoadResult {
            sent: n,
            answered,
            records,
            duration_ns: total_ns,
        })
    })
}

/// The open-loop schedule: calls `emit(flow, request)` at each Poisson arrival until
/// `total_ns`; returns the requests emitted.
fn schedule(
    cfg: &LoadConfig,
    flows: usize,
    origin: Instant,
    total_ns: u64,
    mut emit: impl FnMut(usize, &[u8; REQ_LEN]),
) -> u64 {
    super::fine_timer_slack();
    super::latency_priority();
    let mut rng = Rng::new(cfg.seed);
    let mut next = 0f64;
    let mut seq = 0u64;
    loop {
        let rate = load_at(cfg, next / 1e9) * cfg.capacity_rps;
        next += -(1.0 - rng.unit()).ln() / rate.max(1.0) * 1e9;
        if next as u64 >= total_ns {
            return seq;
        }
        wait_until(origin, next as u64);
        let long = rng.unit() * 1000.0 < cfg.long_permille as f64;
        let service_ns = if long { cfg.long_us } else { cfg.short_us } * 1000;
        let mut req = [0u8; REQ_LEN];
        req[..8].copy_from_slice(&seq.to_le_bytes());
        let now = origin.elapsed().as_nanos() as u64;
        req[8..16].copy_from_slice(&now.to_le_bytes());
        req[16..24].copy_from_slice(&service_ns.to_le_bytes());
        emit((rng.unit() * flows as f64) as usize % flows, &req);
        seq += 1;
    }
}

fn send(
    clients: &[std::net::UdpSocket],
    port: u16,
    cfg: &LoadConfig,
    origin: Instant,
    total_ns: u64,
) -> u64 {
    let to = sock::server_addr(port);
    schedule(cfg, clients.len(), origin, total_ns, |f, req| {
        // A full socket buffer is retried (never silently dropped on our side).
        while clients[f].send_to(req, to).is_err() {
            std::thread::sleep(Duration::from_micros(50));
        }
    })
}

fn wait_until(origin: Instant, t_ns: u64) {
    loop {
        let now = origin.elapsed().as_nanos() as u64;
        if now >= t_ns {
            return;
        }
        // Sleep (1 µs timer slack) for all but the last 20 µs: spinning out the gaps would
        // take a whole core from the server on this 2-core machine at the peak's rates. The
        // send time is read after the wait, so a late wake delays a request, never hides it.
        let left = t_ns - now;
        if left > 30_000 {
            std::thread::sleep(Duration::from_nanos(left - 20_000));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn receive(
    clients: &[std::net::UdpSocket],
    origin: Instant,
    sent: &AtomicU64,
    done: &AtomicBool,
    drain: Duration,
) -> (Vec<Record>, u64) {
    super::latency_priority();
    let mut tally = Tally::default();
    let all: Vec<usize> = (0..clients.len()).collect();
    let mut buf = [0u8; 64];
    let mut drained_since: Option<Instant> = None;
    loop {
        if done.load(Acquire) {
            let since = *drained_since.get_or_insert_with(Instant::now);
            if tally.records.len() as u64 >= sent.load(Acquire) || since.elapsed() > drain {
                break;
            }
        }
        for i in sock::poll_readable(clients, &all, 5) {
            while let Ok(n) = clients[i].recv(&mut buf) {
                if n == REQ_LEN {
                    tally.reply(&buf[..REQ_LEN], origin);
                }
            }
        }
    }
    let n = tally.records.len() as u64;
    (tally.records, n)
}

/// The replies seen so far: each request counted once.
#[derive(Default)]
struct Tally {
    seen: Vec<bool>,
    records: Vec<Record>,
}

impl Tally {
    fn reply(&mut self, buf: &[u8], origin: Instant) {
        let now = origin.elapsed().as_nanos() as u64;
        let word = |i: usize| {
            u64::from_le_bytes(
                buf.get(i..i + 8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            )
        };
        let (seq, t) = (word(0) as usize, word(8));
        if seq >= MAX_REQUESTS {
            return; // not a request we could have sent
        }
        if seq >= self.seen.len() {
            self.seen.resize(seq + 1, false);
        }
        if !std::mem::replace(&mut self.seen[seq], true) {
            self.records.push(Record {
                send_ns: t,
                latency_ns: now.saturating_sub(t),
            });
        }
    }
}

/// The TCP load: the same schedule, each flow a connection renewed every `conn_requests`
/// requests. A request whose connection failed is counted as sent and never answered (lost).
pub fn run_tcp(port: u16, cfg: &LoadConfig, origin: Instant) -> Result<LoadResult, String> {
    let (conns_tx, conns_rx) = mpsc::channel::<Arc<TcpStream>>();
    drive(
        cfg,
        move |total_ns| send_tcp(port, cfg, origin, total_ns, conns_tx),
        move |sent, done| receive_tcp(conns_rx, origin, sent, done, cfg.drain),
    )
}

/// A flow's current connection and the requests it carried.
type Flow = Option<(Arc<TcpStream>, u32)>;

fn send_tcp(
    port: u16,
    cfg: &LoadConfig,
    origin: Instant,
    total_ns: u64,
    conns: mpsc::Sender<Arc<TcpStream>>,
) -> u64 {
    let mut flows: Vec<Flow> = vec![None; cfg.clients.max(1)];
    let per_conn = cfg.conn_requests.max(1);
    let n = schedule(cfg, flows.len(), origin, total_ns, |f, req| {
        let flow = &mut flows[f];
        if flow.as_ref().is_none_or(|(_, k)| *k >= per_conn) {
            if let Some((old, _)) = flow.take() {
                let _ = old.shutdown(Shutdown::Write);
            }
            *flow = sock::connect(port).ok().map(|c| (Arc::new(c), 0));
            if let Some((c, _)) = flow {
                let _ = conns.send(c.clone());
            }
        }
        if let Some((c, k)) = flow {
            *k = if write_record(c, req) {
                *k + 1
            } else {
                per_conn
            };
        }
    });
    for (c, _) in flows.into_iter().flatten() {
        let _ = c.shutdown(Shutdown::Write);
    }
    n
}

/// Writes one whole record (retrying partial writes and a full send buffer); false if the
/// connection failed.
fn write_record(c: &TcpStream, req: &[u8; REQ_LEN]) -> bool {
    let mut off = 0;
    let mut tries = 0u32;
    while off < REQ_LEN {
        match (&*c).write(&req[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && tries < 200_000 => {
                tries += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// A connection the receiver reads: its partial reply.
struct RxConn {
    s: Arc<TcpStream>,
    buf: [u8; REQ_LEN],
    have: usize,
}

impl RxConn {
    /// Reads every reply available; false once the connection ended or failed.
    fn read(&mut self, tally: &mut Tally, origin: Instant) -> bool {
        loop {
            match (&*self.s).read(&mut self.buf[self.have..]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.have += n;
                    if self.have == REQ_LEN {
                        self.have = 0;
                        tally.reply(&self.buf, origin);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

fn receive_tcp(
    new: mpsc::Receiver<Arc<TcpStream>>,
    origin: Instant,
    sent: &AtomicU64,
    done: &AtomicBool,
    drain: Duration,
) -> (Vec<Record>, u64) {
    super::latency_priority();
    let mut tally = Tally::default();
    let mut conns: Vec<RxConn> = Vec::new();
    let mut drained_since: Option<Instant> = None;
    loop {
        conns.extend(new.try_iter().map(|s| RxConn {
            s,
            buf: [0; REQ_LEN],
            have: 0,
        }));
        if done.load(Acquire) {
            let since = *drained_since.get_or_insert_with(Instant::now);
            if tally.records.len() as u64 >= sent.load(Acquire) || since.elapsed() > drain {
                break;
            }
        }
        let mut fds: Vec<libc::pollfd> = conns
            .iter()
            .map(|c| libc::pollfd {
                fd: c.s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5) };
        let mut i = 0;
        while i < conns.len() {
            let ready = fds.get(i).is_some_and(|p| p.revents != 0);
            if ready && !conns[i].read(&mut tally, origin) {
                conns.swap_remove(i);
                fds.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    let n = tally.records.len() as u64;
    (tally.records, n)
}
