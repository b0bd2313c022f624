//! The RocksDB-like workload of the ghOSt/Shinjuku evaluations: an in-memory ordered table
//! (a sorted array of 1M u64 keys with values), GET requests (point lookups, ~10 µs) and RANGE
//! requests (scans, ~5 ms, 0.5% of requests), open-loop Poisson arrivals.
//!
//! Work is *real*: a GET does binary-search lookups of pseudo-random keys, a RANGE scans and
//! sums consecutive values. At startup the engine measures how long one *chunk* takes (a few
//! lookups, or a few thousand scanned values, sized at startup to ~1 µs each) and sets the chunks per request so that a
//! request takes its target service time on an idle core. Handlers call a safe point between
//! chunks, i.e. about every microsecond.

use std::hint::black_box;
use std::time::Instant;

/// Target duration of one chunk of work (the distance between safe points).
pub const CHUNK_TARGET_NS: f64 = 1_000.0;

/// Request type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Point lookups.
    Get,
    /// Range scan.
    Range,
}

/// One request.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Type.
    pub kind: Kind,
    /// Scheduled arrival time (ns since the engine's start); latency counts from here.
    pub arrival_ns: u64,
    /// Seed of the keys it touches.
    pub seed: u64,
}

/// splitmix64.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small PRNG (xorshift64*) for arrivals and request mix.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (never zero).
    pub fn new(seed: u64) -> Self {
        Rng(mix(seed) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Exponential with mean `mean`.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }
}

/// The ordered table.
pub struct Table {
    keys: Vec<u64>,
    vals: Vec<u64>,
}

impl Table {
    /// `n` distinct sorted pseudo-random keys with derived values.
    pub fn new(n: usize, seed: u64) -> Self {
        let mut keys: Vec<u64> = (0..n as u64).map(|i| mix(seed ^ i)).collect();
        keys.sort_unstable();
        keys.dedup();
        let vals = keys.iter().map(|k| k.rotate_left(17) ^ 0xABCD).collect();
        Table { keys, vals }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if empty (never, for n > 0).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// One GET chunk: `lookups` lookups (half hits, half misses).
    pub fn get_chunk(&self, state: &mut u64, lookups: usize) -> u64 {
        let mut acc = 0u64;
        for _ in 0..lookups {
            *state = mix(*state);
            let probe = if *state & 1 == 0 {
                self.keys[(*state >> 1) as usize % self.keys.len()]
            } else {
                *state
            };
            acc = acc.wrapping_add(match self.keys.binary_search(&probe) {
                Ok(i) => self.vals[i],
                Err(i) => i as u64,
            });
        }
        acc
    }

    /// One RANGE chunk: sums `len` consecutive values from `*pos` (wrapping).
    pub fn scan_chunk(&self, pos: &mut usize, len: usize) -> u64 {
        let n = self.vals.len();
        let len = len.min(n);
        if *pos + len > n {
            *pos = 0;
        }
        let s: u64 = self.vals[*pos..*pos + len]
            .iter()
            .fold(0u64, |a, v| a.wrapping_add(*v));
        *pos += len;
        s
    }
}

/// How much work a request does.
#[derive(Clone, Copy, Debug)]
pub struct Work {
    /// Lookups per GET chunk.
    pub lookups_per_chunk: usize,
    /// Values scanned per RANGE chunk.
    pub scan_per_chunk: usize,
    /// Chunks per GET.
    pub get_chunks: u32,
    /// Chunks per RANGE.
    pub range_chunks: u32,
    /// Measured ns per GET chunk.
    pub get_chunk_ns: f64,
    /// Measured ns per RANGE chunk.
    pub range_chunk_ns: f64,
}

impl Work {
    /// Measures chunk costs on the calling thread and sets chunk counts for the targets.
    pub fn calibrate(table: &Table, get_ns: f64, range_ns: f64) -> Work {
        let measure = |f: &mut dyn FnMut() -> u64| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let mut acc = 0u64;
                for _ in 0..2_000 {
                    acc = acc.wrapping_add(f());
                }
                black_box(acc);
                best = best.min(t.elapsed().as_nanos() as f64 / 2_000.0);
            }
            best.max(1.0)
        };
        // Size the chunks to ~1 µs (from the cost of one lookup / 4096 values), then measure.
        let mut st = 7u64;
        let one = measure(&mut || table.get_chunk(&mut st, 1));
        let lookups_per_chunk = ((CHUNK_TARGET_NS / one).round() as usize).clamp(1, 64);
        let mut pos = 0usize;
        let probe = 4096.min(table.len());
        let base = measure(&mut || table.scan_chunk(&mut pos, probe));
        let scan_per_chunk =
            ((CHUNK_TARGET_NS / base * probe as f64) as usize).clamp(16, 65_536.min(table.len()));
        let get_chunk_ns = measure(&mut || table.get_chunk(&mut st, lookups_per_chunk));
        let range_chunk_ns = measure(&mut || table.scan_chunk(&mut pos, scan_per_chunk));
        Work {
            lookups_per_chunk,
            scan_per_chunk,
            get_chunks: ((get_ns / get_chunk_ns).round() as u32).max(1),
            range_chunks: ((range_ns / range_chunk_ns).round() as u32).max(1),
            get_chunk_ns,
            range_chunk_ns,
        }
    }

    /// Serves `req`, calling `safe_point` between chunks; `yield_at` (a chunk index) makes
    /// it call `yield_now` once there (the storm tests). Returns a checksum.
    pub fn serve(
        &self,
        table: &Table,
        req: &Request,
        yield_at: Option<u32>,
        safe_point: &mut dyn FnMut(),
        yield_now: &mut dyn FnMut(),
    ) -> u64 {
        let mut acc = 0u64;
        let mut st = req.seed;
        let mut pos = (mix(req.seed) as usize) % table.len().max(1);
        let chunks = match req.kind {
            Kind::Get => self.get_chunks,
            Kind::Range => self.range_chunks,
        };
        for i in 0..chunks {
            acc = acc.wrapping_add(match req.kind {
                Kind::Get => table.get_chunk(&mut st, self.lookups_per_chunk),
                Kind::Range => table.scan_chunk(&mut pos, self.scan_per_chunk),
            });
            if yield_at == Some(i) {
                yield_now();
            } else {
                safe_point();
            }
        }
        black_box(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lookups_hit_and_calibration_is_sane() {
        let t = Table::new(10_000, 1);
        assert!(t.len() > 9_900);
        let mut st = 3;
        let _ = t.get_chunk(&mut st, 3);
        let mut pos = t.len() - 10;
        let _ = t.scan_chunk(&mut pos, 100);
        assert_eq!(pos, 100);
        let w = Work::calibrate(&t, 10_000.0, 1_000_000.0);
        assert!(w.get_chunks >= 1 && w.range_chunks > w.get_chunks);
        let mut sp = 0;
        let req = Request {
            kind: Kind::Get,
            arrival_ns: 0,
            seed: 9,
        };
        w.serve(&t, &req, None, &mut || sp += 1, &mut || {});
        assert_eq!(sp, w.get_chunks);
        let mut r = Rng::new(5);
        let m: f64 = (0..10_000).map(|_| r.exp(2.0)).sum::<f64>() / 10_000.0;
        assert!((m - 2.0).abs() < 0.2, "{m}");
    }
}
