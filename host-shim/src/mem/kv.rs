//! The memory subsystem's workload: a key-value store over one large in-memory table, with
//! skewed open-loop GETs and PUTs, a moving hot set, and a checksum on every value that every
//! read verifies.
//!
//! Layout: key `k` lives in fixed slot `k` (128 bytes: key, version, checksum, 112-byte value),
//! like a table clustered by insertion time. Default distribution: the hot set is the most
//! recent `hot_fraction` (25%) of the keys; accesses are Zipfian (θ = 0.99, YCSB's default) by
//! recency inside it, so the hottest keys are adjacent and whole regions share a temperature;
//! a small `cold_fraction` of operations (default 0.01%) reads a uniformly random old key, as
//! occasional lookups of historical rows do. A phase change moves the hot window (a new day's
//! rows become the hot set), so previously hot regions go cold and cold ones heat up.

use crate::engine::hist::Histogram;
use crate::engine::workload::{mix, Rng};

use super::AreaMemory;

/// Bytes per slot.
pub const SLOT: usize = 128;
const HEADER: usize = 16;

/// Where the table's bytes live (a managed area, or plain memory for the no-management
/// baseline).
pub trait Storage {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// The bytes, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl Storage for AreaMemory {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Storage for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// A row's value: a fixed text template (field names, padding) with 32 hex digits of
/// per-version data, so values compress about as much as real rows do (a purely random value
/// would not compress at all and no compressed far tier could save memory on it).
const TEMPLATE: &[u8; SLOT - HEADER] =
    b"{\"id\":\"................\",\"tag\":\"................\",\"state\":\"active\",\"region\":\"eu-west\",\"pad\":\"-----------------\"}";

fn fill_value(value: &mut [u8], seed: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    value.copy_from_slice(TEMPLATE);
    let mut bits = [mix(seed), mix(seed ^ 0x5555)];
    for b in value.iter_mut().filter(|b| **b == b'.') {
        let w = &mut bits[0];
        *b = HEX[(*w & 15) as usize];
        *w = w.rotate_right(4);
        bits.swap(0, 1);
    }
}

/// The checksum of a slot's key, version and value (FNV-1a, 64-bit, folded).
fn checksum(key: u64, version: u32, value: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let head = key.to_le_bytes().into_iter().chain(version.to_le_bytes());
    for b in head.chain(value.iter().copied()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// The key-value table (fixed slots over a [`Storage`]).
pub struct KvStore<S: Storage> {
    mem: S,
    keys: u64,
    /// Reads whose slot failed verification (wrong key or checksum): must stay 0.
    pub checksum_failures: u64,
}

impl<S: Storage> KvStore<S> {
    /// A table over all of `mem`, every slot written once (version 0).
    pub fn new(mem: S) -> Self {
        let keys = (mem.bytes().len() / SLOT) as u64;
        let mut kv = KvStore {
            mem,
            keys,
            checksum_failures: 0,
        };
        for k in 0..keys {
            kv.write(k, 0);
        }
        kv
    }

    /// Keys in the table.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Byte offset of key `k`'s slot.
    pub fn offset(k: u64) -> usize {
        k as usize * SLOT
    }

    fn write(&mut self, k: u64, version: u32) {
        let slot = &mut self.mem.bytes_mut()[Self::offset(k)..Self::offset(k) + SLOT];
        fill_value(&mut slot[HEADER..], mix(k ^ ((version as u64) << 40)));
        let sum = checksum(k, version, &slot[HEADER..]);
        slot[..8].copy_from_slice(&k.to_le_bytes());
        slot[8..12].copy_from_slice(&version.to_le_bytes());
        slot[12..16].copy_from_slice(&sum.to_le_bytes());
    }

    /// Read key `k` and verify it; `Some(version)` if intact, `None` (and a counted failure)
    /// if the slot holds the wrong key or its checksum does not match. Out-of-range keys are
    /// `None` without a failure.
    pub fn get(&mut self, k: u64) -> Option<u32> {
        if k >= self.keys {
            return None;
        }
        let slot = &self.mem.bytes()[Self::offset(k)..Self::offset(k) + SLOT];
        let key = u64::from_le_bytes(slot[..8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(slot[8..12].try_into().expect("4 bytes"));
        let sum = u32::from_le_bytes(slot[12..16].try_into().expect("4 bytes"));
        if key != k || checksum(key, version, &slot[HEADER..]) != sum {
            self.checksum_failures += 1;
            return None;
        }
        Some(version)
    }

    /// Overwrite key `k` with its next version (read-modify-write, verified). Returns the new
    /// version, or `None` if the old slot failed verification (counted) or `k` is out of range.
    pub fn put(&mut self, k: u64) -> Option<u32> {
        let v = self.get(k)?.wrapping_add(1);
        self.write(k, v);
        Some(v)
    }

    /// The storage (for tests that corrupt a slot on purpose, and to get the area back).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.mem
    }
}

/// Zipfian ranks in `0..n` with skew `theta` (Gray et al., "Quickly generating billion-record
/// synthetic databases", the generator YCSB uses): O(n) setup, O(1) per sample.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipf {
    /// A generator over `n >= 1` ranks, `0 < theta < 1`.
    pub fn new(n: u64, theta: f64) -> Zipf {
        let n = n.max(1);
        let theta = theta.clamp(0.01, 0.999);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2.min(n), theta);
        let eta = if n < 3 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        };
        Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// One rank (0 is the most popular).
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (r as u64).min(self.n - 1)
    }
}

/// Shape of the load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvLoadConfig {
    /// Fraction of the keys in the hot window (0 < f <= 1).
    pub hot_fraction: f64,
    /// Zipf skew inside the hot window.
    pub theta: f64,
    /// Fraction of operations that are PUTs (the rest are GETs).
    pub put_fraction: f64,
    /// Fraction of operations that read a uniformly random key outside the hot window.
    pub cold_fraction: f64,
    /// Offered load, operations per second (open loop, Poisson arrivals).
    pub rate_per_s: f64,
    /// PRNG seed.
    pub seed: u64,
}

impl Default for KvLoadConfig {
    fn default() -> Self {
        KvLoadConfig {
            hot_fraction: 0.25,
            theta: 0.99,
            put_fraction: 0.05,
            cold_fraction: 0.0001,
            rate_per_s: 200_000.0,
            seed: 1,
        }
    }
}

/// Open-loop load over a [`KvStore`]: arrivals on a schedule independent of service, latency
/// from scheduled arrival to completion (so queueing behind a slow operation counts).
pub struct KvLoad {
    cfg: KvLoadConfig,
    zipf: Zipf,
    rng: Rng,
    keys: u64,
    hot_keys: u64,
    /// The newest key of the hot window (rank 0); the window runs backwards from it.
    hot_head: u64,
    next_arrival_ns: f64,
    /// GET latency, ns.
    pub get_latency: Histogram,
    /// GET latency since the last [`KvLoad::take_window`], ns (for latency over time).
    pub get_window: Histogram,
    /// PUT latency, ns.
    pub put_latency: Histogram,
    /// Operations completed.
    pub ops: u64,
    /// Operations whose own service (start to completion, not the wait before it) took over
    /// [`SLOW_SERVICE_NS`]: blocked in a fault or preempted while being served.
    pub slow_ops: u64,
    /// Total service time of the slow operations, ns.
    pub slow_ns: u64,
    /// The longest service time of one operation, ns.
    pub max_service_ns: u64,
    /// The slow operations' (start on CLOCK_MONOTONIC, service time), ns; at most
    /// [`super::place::LOG_CAP`].
    pub slow_log: Vec<(u64, u64)>,
}

/// An operation served in more than this is counted slow (a GET takes about 1 µs in DRAM, a
/// fault back from zram about 5–10 µs).
pub const SLOW_SERVICE_NS: u64 = 50_000;

impl KvLoad {
    /// Load over a table of `keys` keys; the hot window starts at the newest keys.
    pub fn new(cfg: KvLoadConfig, keys: u64) -> KvLoad {
        let keys = keys.max(1);
        let hot_keys = ((keys as f64 * cfg.hot_fraction.clamp(0.0, 1.0)) as u64).clamp(1, keys);
        KvLoad {
            zipf: Zipf::new(hot_keys, cfg.theta),
            rng: Rng::new(cfg.seed),
            cfg,
            keys,
            hot_keys,
            hot_head: keys - 1,
            next_arrival_ns: 0.0,
            get_latency: Histogram::new(),
            get_window: Histogram::new(),
            put_latency: Histogram::new(),
            ops: 0,
            slow_ops: 0,
            slow_ns: 0,
            max_service_ns: 0,
            slow_log: Vec::new(),
        }
    }

    /// GET quantile `q` since the last call (0 if no GET), and a fresh window.
    pub fn take_window(&mut self, q: f64) -> u64 {
        let w = std::mem::take(&mut self.get_window);
        if w.count() == 0 {
            0
        } else {
            w.quantile(q)
        }
    }

    /// Keys in the hot window.
    pub fn hot_keys(&self) -> u64 {
        self.hot_keys
    }

    /// The hot window as `(first, last)` keys, inclusive, possibly wrapping past 0.
    pub fn hot_window(&self) -> (u64, u64) {
        (
            (self.hot_head + self.keys + 1 - self.hot_keys) % self.keys,
            self.hot_head,
        )
    }

    /// Phase change: the hot window moves by one window length (it wraps around the table).
    pub fn move_hot_set(&mut self) {
        self.hot_head = (self.hot_head + self.keys - self.hot_keys) % self.keys;
    }

    /// The key of the next operation, and whether it is a PUT.
    pub fn next_op(&mut self) -> (u64, bool) {
        let put = self.rng.unit() <= self.cfg.put_fraction;
        if !put && self.rng.unit() <= self.cfg.cold_fraction && self.hot_keys < self.keys {
            let off = self.rng.next_u64() % (self.keys - self.hot_keys);
            return ((self.hot_head + 1 + off) % self.keys, false);
        }
        let rank = self.zipf.sample(&mut self.rng);
        ((self.hot_head + self.keys - rank) % self.keys, put)
    }

    fn note_service(&mut self, ns: u64) {
        self.max_service_ns = self.max_service_ns.max(ns);
        if ns > SLOW_SERVICE_NS {
            self.slow_ops += 1;
            self.slow_ns += ns;
            if self.slow_log.len() < super::place::LOG_CAP {
                let end = super::place::mono_ns();
                self.slow_log.push((end.saturating_sub(ns), ns));
            }
        }
    }

    /// Serve every operation that arrives before `until_ns` (ns on the caller's clock, which
    /// started at 0 when the load did); `now` reads that clock. Returns operations served.
    pub fn serve_until<S: Storage>(
        &mut self,
        kv: &mut KvStore<S>,
        until_ns: u64,
        now: impl Fn() -> u64,
    ) -> u64 {
        let mean_ns = 1e9 / self.cfg.rate_per_s.max(1e-3);
        let mut n = 0;
        while (self.next_arrival_ns as u64) < until_ns {
            let arrival = self.next_arrival_ns as u64;
            self.next_arrival_ns += self.rng.exp(mean_ns);
            while now() < arrival {
                std::hint::spin_loop();
            }
            let (k, put) = self.next_op();
            let start = now();
            if put {
                kv.put(k);
            } else {
                kv.get(k);
            }
            let done = now();
            self.note_service(done.saturating_sub(start));
            let lat = done.saturating_sub(arrival);
            if put {
                self.put_latency.record(lat);
            } else {
                self.get_latency.record(lat);
                self.get_window.record(lat);
            }
            n += 1;
        }
        self.ops += n;
        n
    }
}
