//! The loopback RPC server and its mechanism: W pinned workers, each owning one
//! `SO_REUSEPORT` UDP socket (or, with [`Transport::Tcp`], one TCP listener and the
//! connections it accepted, [`tcp`]) on one port; a batch job that runs on the slots of parked
//! workers; the steering state (active set, weights, 128-entry table, epoch) and the
//! transactions that change it.
//!
//! A parked worker's socket is adopted by an active worker, so a datagram that reached it
//! (in flight while its table entries moved, or by the kernel's hash without steering) is
//! still served: nothing is dropped while the table or the active set changes. Under TCP the
//! adopter takes the listener and every connection of the slot.

mod tcp;

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wave_abi::net::{build_table, equal_weights, NetDecision, NetDecisionKind, NetOutcome};
use wave_abi::net::{OutcomeKind, WorkerSample, MAX_WORKERS, TABLE_ENTRIES};

use super::sock;
use super::steer::Steering;

/// Bytes of a request and of its reply: seq, send time (ns, the client's clock), service
/// time (ns).
pub const REQ_LEN: usize = 24;

/// Longest service time a request may ask for (UDP clamps to it; TCP closes the
/// connection of a request over it as malformed).
pub const MAX_SERVICE_NS: u64 = 1_000_000_000;

/// How requests reach the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per request; steered per datagram.
    #[default]
    Udp,
    /// Fixed-size records on connections; steered per connection, at SYN.
    Tcp,
}

impl Transport {
    /// `udp` or `tcp`.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// UDP sockets or TCP listeners.
    pub transport: Transport,
    /// Workers (1..=64, `MAX_WORKERS`).
    pub workers: usize,
    /// Share of each request's service time spent computing, ‰; the rest is a timed wait
    /// (a downstream call), so W busy workers fit on a 2-core machine.
    pub cpu_permille: u32,
    /// Try eBPF steering (needs root); otherwise plain reuseport hashing.
    pub steering: bool,
    /// Workers active at start.
    pub initial_active: usize,
}

/// How the group is steered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteerMode {
    /// eBPF program + mmapped table.
    Ebpf,
    /// Kernel reuseport hash; the reason eBPF is not used.
    Hash(String),
}

/// Per-worker shared state and counters (cumulative).
#[derive(Default)]
pub struct WorkerState {
    parked: AtomicBool,
    owner: AtomicU32,
    busy_ns: AtomicU64,
    /// When the request in service started (ns of the server clock), 0 if none.
    busy_start: AtomicU64,
    idle_ns: AtomicU64,
    completions: AtomicU64,
    /// Requests taken off this worker's socket or connections (by it or by an adopter).
    received: AtomicU64,
    batch_units: AtomicU64,
    park_lock: Mutex<()>,
    park_cv: Condvar,
}

/// The steering state the mechanism owns.
#[derive(Clone, Copy, Debug)]
pub struct SteerState {
    /// Bumped by every committed change.
    pub epoch: u32,
    /// Bit w: worker w is active.
    pub active: u64,
    /// Table weights.
    pub weights: [u8; MAX_WORKERS],
    /// The table.
    pub table: [u8; TABLE_ENTRIES],
}

/// Mechanism counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MechStats {
    /// Decisions committed.
    pub committed: u64,
    /// Refused: stale epoch.
    pub stale: u64,
    /// Refused: invalid.
    pub invalid: u64,
    /// Table rewrites done through the mapped table.
    pub rewrites: u64,
    /// Table rewrites skipped (no eBPF steering).
    pub rewrites_skipped: u64,
}

/// The server.
pub struct Server {
    cfg: ServerConfig,
    sockets: Vec<UdpSocket>,
    tcp: Vec<tcp::Slot>,
    port: u16,
    workers: Vec<WorkerState>,
    steering: Option<Steering>,
    mode: SteerMode,
    state: Mutex<(SteerState, MechStats)>,
    stop: AtomicBool,
    truesize: u32,
    origin: Instant,
    last: Mutex<Vec<(u64, u64, u64)>>,
    last_at: AtomicU64,
    /// Requests refused as malformed (wrong size, service time over the limit, a connection
    /// ending inside a record).
    malformed: AtomicU64,
}

impl Server {
    /// Binds the sockets, loads steering (or falls back), starts workers and batch threads.
    pub fn start(
        cfg: ServerConfig,
    ) -> Result<(Arc<Server>, Vec<std::thread::JoinHandle<()>>), String> {
        if cfg.workers == 0 || cfg.workers > MAX_WORKERS {
            return Err(format!(
                "workers must be 1..={MAX_WORKERS}, not {}",
                cfg.workers
            ));
        }
        let (sockets, tcp, port) = match cfg.transport {
            Transport::Udp => {
                let (s, port) = sock::reuseport_group(cfg.workers)?;
                (s, Vec::new(), port)
            }
            Transport::Tcp => {
                let (l, port) = sock::reuseport_listeners(cfg.workers)?;
                (
                    Vec::new(),
                    l.into_iter().map(tcp::Slot::new).collect(),
                    port,
                )
            }
        };
        let active = low_bits(cfg.initial_active.clamp(1, cfg.workers));
        let weights = equal_weights(active);
        let table = build_table(&weights).ok_or("no active worker")?;
        let fds: Vec<RawFd> = sockets
            .iter()
            .map(|s| s.as_raw_fd())
            .chain(tcp.iter().map(tcp::Slot::fd))
            .collect();
        let (steering, mode) = if cfg.steering {
            match Steering::load(&fds, &table) {
                Ok(s) => (Some(s), SteerMode::Ebpf),
                Err(e) => (None, SteerMode::Hash(e)),
            }
        } else {
            (None, SteerMode::Hash("steering turned off".into()))
        };
        let workers: Vec<WorkerState> = (0..cfg.workers).map(|_| WorkerState::default()).collect();
        let server = Arc::new(Server {
            truesize: sock::datagram_truesize(REQ_LEN),
            cfg: cfg.clone(),
            sockets,
            tcp,
            port,
            workers,
            steering,
            mode,
            state: Mutex::new((
                SteerState {
                    epoch: 1,
                    active,
                    weights,
                    table,
                },
                MechStats::default(),
            )),
            stop: AtomicBool::new(false),
            origin: Instant::now(),
            last: Mutex::new(vec![(0, 0, 0); cfg.workers]),
            last_at: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        });
        server.set_owners(active);
        let mut threads = Vec::new();
        for w in 0..cfg.workers {
            let s = server.clone();
            threads.push(std::thread::spawn(move || s.worker(w)));
            let s = server.clone();
            threads.push(std::thread::spawn(move || s.batch(w)));
        }
        Ok((server, threads))
    }

    /// The port the group listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How the group is steered.
    pub fn mode(&self) -> &SteerMode {
        &self.mode
    }

    /// UDP or TCP.
    pub fn transport(&self) -> Transport {
        self.cfg.transport
    }

    /// Requests refused as malformed so far (each closed its connection under TCP).
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Relaxed)
    }

    /// Workers.
    pub fn n_workers(&self) -> usize {
        self.cfg.workers
    }

    /// The steering state and counters now.
    pub fn snapshot(&self) -> (SteerState, MechStats) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Active workers now.
    pub fn active_count(&self) -> u32 {
        self.snapshot().0.active.count_ones()
    }

    /// Total batch-job work units so far.
    pub fn batch_units(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.batch_units.load(Relaxed))
            .sum()
    }

    /// Requests completed so far.
    pub fn completions(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.completions.load(Relaxed))
            .sum()
    }

    /// Per worker: (requests it completed, requests taken off its socket or connections).
    pub fn per_worker(&self) -> Vec<(u64, u64)> {
        self.workers
            .iter()
            .map(|w| (w.completions.load(Relaxed), w.received.load(Relaxed)))
            .collect()
    }

    /// Stops every thread (join the handles `start` returned).
    pub fn stop(&self) {
        self.stop.store(true, Release);
        for w in &self.workers {
            let _g = w.park_lock.lock();
            w.park_cv.notify_all();
        }
    }

    /// The mapped table's entry `i` read back through the map (None without steering).
    pub fn kernel_entry(&self, i: u32) -> Option<u32> {
        self.steering.as_ref()?.read_entry(i)
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Socket s is served by worker s when active, else by an active worker (round robin).
    fn set_owners(&self, active: u64) {
        let actives: Vec<u32> = (0..self.cfg.workers as u32)
            .filter(|w| active & (1 << w) != 0)
            .collect();
        let mut k = 0;
        for (s, ws) in self.workers.iter().enumerate() {
            let owner = if active & (1 << s) != 0 {
                s as u32
            } else {
                k += 1;
                actives
                    .get((k - 1) % actives.len().max(1))
                    .copied()
                    .unwrap_or(0)
            };
            ws.owner.store(owner, Release);
        }
    }

    fn set_parked(&self, w: usize, parked: bool) {
        if let Some(ws) = self.workers.get(w) {
            let _g = ws.park_lock.lock();
            ws.parked.store(parked, Release);
            ws.park_cv.notify_all();
        }
    }

    fn write_table(&self, st: &SteerState, stats: &mut MechStats) {
        match &self.steering {
            Some(s) => {
                s.write_table(&st.table);
                stats.rewrites += 1;
            }
            None => stats.rewrites_skipped += 1,
        }
    }

    /// Sets the active set to the first `k` workers with equal weights, as one committed
    /// change (static configurations and tests).
    pub fn set_static(&self, k: usize) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let active = low_bits(k.clamp(1, self.cfg.workers));
        let weights = equal_weights(active);
        let Some(table) = build_table(&weights) else {
            return;
        };
        let (st, stats) = &mut *g;
        let grow = active & !st.active;
        for w in 0..self.cfg.workers {
            if grow & (1 << w) != 0 {
                self.set_parked(w, false);
            }
        }
        *st = SteerState {
            epoch: st.epoch + 1,
            active,
            weights,
            table,
        };
        self.set_owners(active);
        self.write_table(st, stats);
        for w in 0..self.cfg.workers {
            self.set_parked(w, active & (1 << w) == 0);
        }
    }

    /// Applies one decision as a transaction: refused as stale if the epoch moved, as
    /// invalid if impossible; otherwise committed (epoch + 1). Returns the outcome.
    pub fn apply(&self, d: &NetDecision) -> NetOutcome {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (st, stats) = &mut *g;
        let kind = if d.table_epoch != st.epoch {
            stats.stale += 1;
            OutcomeKind::Stale
        } else if let Some((active, table)) = self.check(st, d) {
            self.commit(st, stats, d, active, table);
            stats.committed += 1;
            OutcomeKind::Committed
        } else {
            stats.invalid += 1;
            OutcomeKind::Invalid
        };
        NetOutcome {
            txn: d.txn,
            table_epoch: st.epoch,
            kind,
        }
    }

    /// The active set and table after `d`, if `d` is possible.
    fn check(&self, st: &SteerState, d: &NetDecision) -> Option<(u64, [u8; TABLE_ENTRIES])> {
        let w = d.worker as usize;
        let bit = 1u64.checked_shl(d.worker as u32)?;
        let active = match d.kind {
            NetDecisionKind::Grant if w < self.cfg.workers && st.active & bit == 0 => {
                st.active | bit
            }
            NetDecisionKind::Revoke if w < self.cfg.workers && st.active & bit != 0 => {
                st.active & !bit
            }
            NetDecisionKind::Rebalance => st.active,
            _ => return None,
        };
        let consistent = (0..MAX_WORKERS).all(|i| (d.weights[i] > 0) == (active & (1 << i) != 0));
        if active == 0 || !consistent {
            return None;
        }
        Some((active, build_table(&d.weights)?))
    }

    /// Grant: unpark, then steer to it. Revoke: steer away, then park (its socket is adopted).
    fn commit(
        &self,
        st: &mut SteerState,
        stats: &mut MechStats,
        d: &NetDecision,
        active: u64,
        table: [u8; TABLE_ENTRIES],
    ) {
        let w = d.worker as usize;
        if d.kind == NetDecisionKind::Grant {
            self.set_parked(w, false);
        }
        st.active = active;
        st.weights = d.weights;
        st.table = table;
        st.epoch += 1;
        self.set_owners(active);
        self.write_table(st, stats);
        if d.kind == NetDecisionKind::Revoke {
            self.set_parked(w, true);
        }
    }

    /// One sample per worker: queue depth and oldest-request age from its socket, busy/idle
    /// time and completions since the previous call.
    pub fn samples(&self) -> (Vec<WorkerSample>, u32) {
        let (st, _) = self.snapshot();
        let realtime = sock::realtime_ns();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(self.cfg.workers);
        let t = self.now_ns();
        let elapsed = t.saturating_sub(self.last_at.swap(t, Relaxed));
        for (w, ws) in self.workers.iter().enumerate() {
            let (queued, oldest) = self.queue_signals(w, realtime);
            // Busy time includes the request in service so far, so a long request spreads
            // over the intervals it spans.
            let start = ws.busy_start.load(Relaxed);
            let running = if start > 0 {
                t.saturating_sub(start)
            } else {
                0
            };
            let now = (
                ws.busy_ns.load(Relaxed) + running,
                ws.idle_ns.load(Relaxed),
                ws.completions.load(Relaxed),
            );
            let prev = std::mem::replace(&mut last[w], now);
            let entries = st.table.iter().filter(|t| **t as usize == w).count();
            out.push(WorkerSample {
                worker: w as u8,
                active: st.active & (1 << w) != 0,
                queued,
                oldest_age_us: oldest.map_or(0, |a| (a / 1000).min(u32::MAX as u64) as u32),
                busy_ns: now.0.saturating_sub(prev.0).min(elapsed),
                idle_ns: now.1.saturating_sub(prev.1),
                completions: now.2.saturating_sub(prev.2),
                table_entries: if self.steering.is_some() {
                    entries as u8
                } else {
                    0
                },
            });
        }
        (out, st.epoch)
    }

    /// Queue depth and age of the oldest waiting request of worker w's socket (UDP), or of
    /// its listener and connections (TCP, [`tcp`]).
    fn queue_signals(&self, w: usize, realtime: u64) -> (u32, Option<u64>) {
        if let Some(slot) = self.tcp.get(w) {
            return slot.queue_signals(realtime);
        }
        let fd = self.sockets[w].as_raw_fd();
        (
            sock::rmem(fd) / self.truesize.max(1),
            sock::oldest_age_ns(fd, realtime),
        )
    }

    /// The slots worker w serves now (its own when active, adopted ones).
    fn owned(&self, w: usize) -> Vec<usize> {
        (0..self.cfg.workers)
            .filter(|s| self.workers[*s].owner.load(Acquire) as usize == w)
            .collect()
    }

    /// Worker w serves one request of `service_ns` (busy time and completion counted).
    fn serve_one(&self, w: usize, service_ns: u64) {
        let me = &self.workers[w];
        let t0 = self.now_ns().max(1);
        me.busy_start.store(t0, Relaxed);
        serve(service_ns.min(MAX_SERVICE_NS), self.cfg.cpu_permille);
        me.completions.fetch_add(1, Relaxed);
        me.busy_ns.fetch_add(self.now_ns() - t0, Relaxed);
        me.busy_start.store(0, Relaxed);
    }

    /// Worker w: serve the sockets it owns until stopped; wait while parked.
    fn worker(&self, w: usize) {
        super::pin_slot(w);
        super::fine_timer_slack();
        super::latency_priority();
        let me = &self.workers[w];
        let mut buf = [0u8; 64];
        while !self.stop.load(Acquire) {
            if me.parked.load(Acquire) {
                let g = me.park_lock.lock().unwrap_or_else(|e| e.into_inner());
                if me.parked.load(Acquire) && !self.stop.load(Acquire) {
                    let _ = me.park_cv.wait_timeout(g, Duration::from_millis(50));
                }
                continue;
            }
            if !self.tcp.is_empty() {
                self.tcp_pass(w);
                continue;
            }
            let owned = self.owned(w);
            let t0 = self.now_ns();
            let ready = sock::poll_readable(&self.sockets, &owned, 2);
            me.idle_ns.fetch_add(self.now_ns() - t0, Relaxed);
            for s in ready {
                self.drain(w, s, &mut buf);
            }
        }
    }

    /// Serves up to 16 requests waiting on socket s.
    fn drain(&self, w: usize, s: usize, buf: &mut [u8; 64]) {
        let me = &self.workers[w];
        for _ in 0..16 {
            let Ok((n, from)) = self.sockets[s].recv_from(buf) else {
                return;
            };
            self.workers[s].received.fetch_add(1, Relaxed);
            let t0 = self.now_ns().max(1);
            me.busy_start.store(t0, Relaxed);
            if n == REQ_LEN {
                let service = u64::from_le_bytes(buf[16..24].try_into().unwrap_or([0; 8]));
                serve(service.min(MAX_SERVICE_NS), self.cfg.cpu_permille);
                reply(&self.sockets[s], &buf[..REQ_LEN], from);
                me.completions.fetch_add(1, Relaxed);
            } else {
                self.malformed.fetch_add(1, Relaxed);
            }
            me.busy_ns.fetch_add(self.now_ns() - t0, Relaxed);
            me.busy_start.store(0, Relaxed);
            if self.workers[s].owner.load(Relaxed) as usize != w {
                return; // the socket changed hands (a grant or a revoke)
            }
        }
    }

    /// The batch job on slot w: counts work units while worker w is parked.
    fn batch(&self, w: usize) {
        super::pin_slot(w);
        idle_priority();
        let me = &self.workers[w];
        let mut x = w as u64 + 1;
        while !self.stop.load(Acquire) {
            if !me.parked.load(Acquire) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            for _ in 0..20_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            std::hint::black_box(x);
            me.batch_units.fetch_add(1, Relaxed);
        }
    }
}

/// Puts the calling thread in `SCHED_IDLE`: the batch job only gets cycles no worker wants
/// (Shenango's batch applications). Best effort.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) reads one sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

fn low_bits(k: usize) -> u64 {
    if k >= 64 {
        u64::MAX
    } else {
        (1u64 << k) - 1
    }
}

/// Sends a reply, retrying briefly while the socket's send buffer is full.
fn reply(sock: &UdpSocket, buf: &[u8], to: std::net::SocketAddr) {
    for _ in 0..1000 {
        match sock.send_to(buf, to) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(20))
            }
            _ => return,
        }
    }
}

/// The request's work: compute for `cpu_permille` of `service_ns`, wait for the rest.
fn serve(service_ns: u64, cpu_permille: u32) {
    let t0 = Instant::now();
    let cpu = Duration::from_nanos(service_ns * cpu_permille.min(1000) as u64 / 1000);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    while t0.elapsed() < cpu {
        for i in 0..64u64 {
            h = (h ^ i).wrapping_mul(0x100_0000_01b3);
        }
    }
    std::hint::black_box(h);
    let total = Duration::from_nanos(service_ns);
    if let Some(rest) = total.checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
}
