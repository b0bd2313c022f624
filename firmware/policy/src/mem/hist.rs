//! Log2-binned age histograms (kstaled / far-memory style): how many regions are at least a
//! given age (cold-age histogram), and how many accesses came after at least a given idle age
//! (promotion histogram: the promotions a threshold would have caused).

/// Number of bins. Bin 0 holds age 0, bin `k >= 1` holds ages `2^(k-1) .. 2^k`; the last bin
/// holds everything older.
pub const AGE_BINS: usize = 16;

/// The bin of `age` (intervals since the last access).
pub fn age_bin(age: u32) -> usize {
    if age == 0 {
        0
    } else {
        let k = (u32::BITS - age.leading_zeros()) as usize; // floor(log2(age)) + 1
        k.min(AGE_BINS - 1)
    }
}

/// The smallest age in bin `bin` (a power of two for `bin >= 1`).
pub fn bin_floor(bin: usize) -> u32 {
    if bin == 0 {
        0
    } else {
        1u32 << (bin - 1).min(30)
    }
}

/// Counts per log2 age bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgeHistogram {
    bins: [u64; AGE_BINS],
}

impl AgeHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        AgeHistogram {
            bins: [0; AGE_BINS],
        }
    }

    /// Count one sample of `age`.
    pub fn add(&mut self, age: u32) {
        let b = age_bin(age);
        self.bins[b] = self.bins[b].saturating_add(1);
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.bins = [0; AGE_BINS];
    }

    /// The raw bins.
    pub fn bins(&self) -> &[u64; AGE_BINS] {
        &self.bins
    }

    /// Total samples.
    pub fn total(&self) -> u64 {
        self.bins.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// Samples with age `>= threshold`. Exact when `threshold` is 0 or a power of two (the
    /// thresholds the controller uses); otherwise rounded down to the bin's floor.
    pub fn at_least(&self, threshold: u32) -> u64 {
        self.bins[age_bin(threshold)..]
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// An exponential average over windows, kept scaled by `keep` (the bins hold about
    /// `keep` windows' worth): forget `1/keep` of every bin, then add `window`.
    pub fn decay_add(&mut self, window: &AgeHistogram, keep: u64) {
        let keep = keep.max(1);
        for (a, &w) in self.bins.iter_mut().zip(window.bins.iter()) {
            *a = (*a - *a / keep).saturating_add(w);
        }
    }

    /// Samples with age `< threshold` (same exactness as [`AgeHistogram::at_least`]).
    pub fn below(&self, threshold: u32) -> u64 {
        self.total() - self.at_least(threshold)
    }
}
