//! Fixed-size cpu sets and the per-cpu timer minimum that let [`crate::sched::SchedCore`] look
//! only at the cpus that changed: a [`CpuSet`] (up to [`MAX_SET_CPUS`] cpus, iterated in
//! ascending order) and a [`TimerMin`] (the earliest of one timer per cpu, updated in
//! O(groups), read in O(1)).
//!
//! Affinity from the wire: the ABI's 64-bit mask (`docs/abi.md` §8.2) names cpus 0..63;
//! [`CpuSet::from_abi_mask`] reads an all-ones mask as "every cpu" (so a thread that may run
//! anywhere may also run on cpus 64 and up), and any narrower mask as exactly those of cpus
//! 0..63.

/// Largest cpu count a [`CpuSet`] holds.
pub const MAX_SET_CPUS: usize = 256;
const WORDS: usize = MAX_SET_CPUS / 64;

/// A set of cpus `0..MAX_SET_CPUS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpuSet([u64; WORDS]);

impl CpuSet {
    /// No cpu.
    pub const EMPTY: CpuSet = CpuSet([0; WORDS]);
    /// Every cpu.
    pub const ALL: CpuSet = CpuSet([u64::MAX; WORDS]);

    /// The affinity an ABI mask grants (see the module doc).
    pub const fn from_abi_mask(mask: u64) -> CpuSet {
        if mask == u64::MAX {
            CpuSet::ALL
        } else {
            let mut w = [0; WORDS];
            w[0] = mask;
            CpuSet(w)
        }
    }

    /// Cpus `0..n`.
    pub fn first(n: usize) -> CpuSet {
        let mut s = CpuSet::EMPTY;
        for c in 0..n.min(MAX_SET_CPUS) {
            s.insert(c);
        }
        s
    }

    /// Whether `c` is in the set (false for `c` out of range).
    #[inline]
    pub fn contains(&self, c: usize) -> bool {
        c < MAX_SET_CPUS && self.0[c / 64] & (1 << (c % 64)) != 0
    }

    /// Adds `c` (ignored if out of range).
    #[inline]
    pub fn insert(&mut self, c: usize) {
        if c < MAX_SET_CPUS {
            self.0[c / 64] |= 1 << (c % 64);
        }
    }

    /// Removes `c`.
    #[inline]
    pub fn remove(&mut self, c: usize) {
        if c < MAX_SET_CPUS {
            self.0[c / 64] &= !(1 << (c % 64));
        }
    }

    /// Adds or removes `c`.
    #[inline]
    pub fn assign(&mut self, c: usize, on: bool) {
        if on {
            self.insert(c)
        } else {
            self.remove(c)
        }
    }

    /// Number of cpus in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True if no cpu is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// True if the two sets share a cpu.
    pub fn intersects(&self, other: &CpuSet) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }

    /// Union.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        let mut w = self.0;
        for (a, b) in w.iter_mut().zip(&other.0) {
            *a |= b;
        }
        CpuSet(w)
    }

    /// Cpus in `self` and not in `other`.
    pub fn minus(&self, other: &CpuSet) -> CpuSet {
        let mut w = self.0;
        for (a, b) in w.iter_mut().zip(&other.0) {
            *a &= !b;
        }
        CpuSet(w)
    }

    /// The cpus, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> {
        let words = self.0;
        (0..WORDS).flat_map(move |i| {
            let mut w = words[i];
            core::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + b)
            })
        })
    }
}

/// Whether an ABI affinity mask allows cpu `c` (as [`CpuSet::from_abi_mask`] reads it).
#[inline]
pub fn mask_allows(mask: u64, c: usize) -> bool {
    mask == u64::MAX || (c < 64 && mask & (1 << c) != 0)
}

/// Whether an ABI affinity mask allows some cpu of `set`.
#[inline]
pub fn mask_meets(mask: u64, set: &CpuSet) -> bool {
    if mask == u64::MAX {
        !set.is_empty()
    } else {
        set.0[0] & mask != 0
    }
}

/// Cpus per group of a [`TimerMin`].
const GROUP: usize = 16;
const GROUPS: usize = MAX_SET_CPUS / GROUP;

/// One timer per cpu (`u64::MAX` = none) and their minimum: setting a timer rescans its group
/// of [`GROUP`] cpus and the group minima; reading the minimum is one load.
#[derive(Clone, Debug)]
pub struct TimerMin<const C: usize> {
    at: [u64; C],
    group: [u64; GROUPS],
    min: u64,
}

impl<const C: usize> TimerMin<C> {
    /// No timers.
    pub const fn new() -> Self {
        TimerMin {
            at: [u64::MAX; C],
            group: [u64::MAX; GROUPS],
            min: u64::MAX,
        }
    }

    /// Sets cpu `c`'s timer (`u64::MAX` clears it). `c < C`. A group (and the minimum) is
    /// rescanned only when the timer that was its minimum moves later.
    #[inline]
    pub fn set(&mut self, c: usize, at: u64) {
        let old = self.at[c];
        if old == at {
            return;
        }
        self.at[c] = at;
        let g = c / GROUP;
        let old_group = self.group[g];
        if at < old_group {
            self.group[g] = at;
        } else if old == old_group {
            let end = ((g + 1) * GROUP).min(C);
            self.group[g] = self.at[g * GROUP..end]
                .iter()
                .copied()
                .min()
                .unwrap_or(u64::MAX);
        }
        let new_group = self.group[g];
        if new_group < self.min {
            self.min = new_group;
        } else if old_group == self.min && new_group != old_group {
            self.min = self.group[..C.div_ceil(GROUP)]
                .iter()
                .copied()
                .min()
                .unwrap_or(u64::MAX);
        }
    }

    /// Cpu `c`'s timer.
    pub fn get(&self, c: usize) -> u64 {
        self.at[c]
    }

    /// The earliest timer (`u64::MAX` if none).
    #[inline]
    pub fn min(&self) -> u64 {
        self.min
    }

    /// A cpu whose timer is `<= t`, if any.
    pub fn any_at_or_before(&self, t: u64) -> Option<usize> {
        if self.min > t {
            return None;
        }
        let g = self.group.iter().position(|&m| m <= t)?;
        let end = ((g + 1) * GROUP).min(C);
        (g * GROUP..end).find(|&c| self.at[c] <= t)
    }
}

impl<const C: usize> Default for TimerMin<C> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_and_ascending_iteration() {
        let mut s = CpuSet::EMPTY;
        for c in [200, 3, 64, 63, 255] {
            s.insert(c);
        }
        s.insert(256); // out of range: ignored
        assert_eq!(
            s.iter().collect::<heapless::Vec<usize, 8>>(),
            [3, 63, 64, 200, 255]
        );
        assert_eq!(s.len(), 5);
        s.remove(64);
        assert!(!s.contains(64) && s.contains(63) && !s.contains(300));
        let t = CpuSet::first(4);
        assert!(s.intersects(&t));
        assert_eq!(s.minus(&t).iter().next(), Some(63));
        assert_eq!(t.union(&s).len(), 7);
        assert!(CpuSet::from_abi_mask(u64::MAX).contains(255));
        let narrow = CpuSet::from_abi_mask(0b1010);
        assert!(narrow.contains(1) && narrow.contains(3) && !narrow.contains(65));
        assert!(CpuSet::EMPTY.is_empty() && !narrow.is_empty());
        assert!(mask_allows(u64::MAX, 200) && mask_allows(0b10, 1) && !mask_allows(0b10, 65));
        let high = CpuSet::first(80).minus(&CpuSet::first(64));
        assert!(mask_meets(u64::MAX, &high) && !mask_meets(u64::MAX >> 1, &high));
        assert!(mask_meets(0b1000, &s) && !mask_meets(0, &s));
    }

    #[test]
    fn timer_min_tracks_the_earliest() {
        let mut t = TimerMin::<40>::new();
        assert_eq!(t.min(), u64::MAX);
        t.set(39, 50);
        t.set(2, 70);
        t.set(17, 60);
        assert_eq!(t.min(), 50);
        assert_eq!(t.any_at_or_before(55), Some(39));
        assert_eq!(t.any_at_or_before(49), None);
        t.set(39, u64::MAX);
        assert_eq!(t.min(), 60);
        assert_eq!(t.any_at_or_before(65), Some(17));
        t.set(17, u64::MAX);
        t.set(2, u64::MAX);
        assert_eq!((t.min(), t.get(2)), (u64::MAX, u64::MAX));
        // Against a plain minimum over a pseudo-random sequence of updates.
        let mut x = 12345u64;
        for _ in 0..5_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let c = (x >> 33) as usize % 40;
            let v = if x & 7 == 0 {
                u64::MAX
            } else {
                (x >> 40) % 1000
            };
            t.set(c, v);
            let want = (0..40).map(|c| t.get(c)).min().unwrap();
            assert_eq!(t.min(), want);
            assert_eq!(
                t.any_at_or_before(want).map(|c| t.get(c) <= want),
                (want != u64::MAX).then_some(true)
            );
        }
    }
}
