//! Policy 3: weighted fair queueing, as a [`Discipline`] (written only against that trait):
//! least virtual runtime first, with a slice, in the manner of CFS/EEVDF and scx_rustland.
//!
//! - Every run that ends is charged to its thread's *virtual runtime*: the cpu time the host
//!   reports for the run (`ran_ns` of the stop event; the core's estimate for a host that does
//!   not measure), scaled by `NICE_0_WEIGHT / weight`. A heavier thread ages more slowly and so
//!   gets a proportionally larger share of the cpus.
//! - The queued thread with the least virtual runtime runs next (an indexed binary min-heap;
//!   ties go to the lower tid). A cpu whose best candidate does not fit its affinity takes the
//!   least-vruntime thread among the first [`SCAN_LIMIT`] heap entries that fits.
//! - A run older than the slice is preempted when a thread waits for its cpu; the preempted
//!   thread comes back at its new, larger virtual runtime.
//! - A thread that (re)enters the queue is placed no earlier than one slice before the queue's
//!   floor (`min_vruntime`, the largest vruntime dispatched so far), so a long sleeper gets a
//!   head start but cannot monopolise the cpus, and no thread starves.

use crate::discipline::{Discipline, Param, Params, Plugin, SCAN_LIMIT};
use crate::fifo::{steal_after, steal_param};
use crate::sched::{BusyOrder, SchedCore, MAX_SLICE_NS, MIN_SLICE_NS};
use crate::shinjuku::slice_param;
use crate::types::ConfigError;
use crate::{MAX_CPUS, MAX_THREADS};

/// Weight of a default (nice 0) thread.
pub const NICE_0_WEIGHT: u32 = 1024;
/// Largest weight (Linux's nice -20).
pub const MAX_WEIGHT: u32 = 88_761;
/// Default slice: 50 µs.
pub const DEFAULT_SLICE_NS: u64 = 50_000;

const NIL: u16 = u16::MAX;

/// The weighted-fair discipline over thread indices `0..T`.
#[derive(Clone, Debug)]
pub struct FairQueue<const T: usize> {
    vruntime: [u64; T],
    weight: [u32; T],
    /// Heap of queued threads, `heap[..len]`, least `(vruntime, tid)` at the root.
    heap: [u16; T],
    /// Position of each thread in `heap`, `NIL` if not queued.
    pos: [u16; T],
    len: usize,
    min_vruntime: u64,
    slice_ns: u64,
    steal_after_ns: Option<u64>,
}

impl<const T: usize> FairQueue<T> {
    /// An empty queue with the given slice and steal threshold (`None`: never steal).
    pub fn new(slice_ns: u64, steal_after_ns: Option<u64>) -> Result<Self, ConfigError> {
        if !(MIN_SLICE_NS..=MAX_SLICE_NS).contains(&slice_ns) {
            return Err(ConfigError::TimeSlice);
        }
        Ok(Self::empty(slice_ns, steal_after_ns))
    }

    #[inline(always)]
    fn empty(slice_ns: u64, steal_after_ns: Option<u64>) -> Self {
        FairQueue {
            vruntime: [0; T],
            weight: [NICE_0_WEIGHT; T],
            heap: [NIL; T],
            pos: [NIL; T],
            len: 0,
            min_vruntime: 0,
            slice_ns,
            steal_after_ns,
        }
    }

    /// Sets thread `t`'s weight (`1..=MAX_WEIGHT`, clamped); applies to runs charged from now.
    pub fn set_weight(&mut self, t: usize, weight: u32) {
        if let Some(w) = self.weight.get_mut(t) {
            *w = weight.clamp(1, MAX_WEIGHT);
        }
    }

    /// Thread `t`'s virtual runtime (ns at nice-0 weight).
    pub fn vruntime(&self, t: usize) -> u64 {
        self.vruntime.get(t).copied().unwrap_or(0)
    }

    /// The queue's floor: the largest virtual runtime dispatched so far.
    pub fn min_vruntime(&self) -> u64 {
        self.min_vruntime
    }

    fn key(&self, h: usize) -> (u64, u16) {
        let t = self.heap[h];
        (self.vruntime[t as usize], t)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a] as usize] = a as u16;
        self.pos[self.heap[b] as usize] = b as u16;
    }

    fn sift_up(&mut self, mut h: usize) {
        while h > 0 && self.key(h) < self.key((h - 1) / 2) {
            self.swap(h, (h - 1) / 2);
            h = (h - 1) / 2;
        }
    }

    fn sift_down(&mut self, mut h: usize) {
        loop {
            let (l, r) = (2 * h + 1, 2 * h + 2);
            let mut m = h;
            if l < self.len && self.key(l) < self.key(m) {
                m = l;
            }
            if r < self.len && self.key(r) < self.key(m) {
                m = r;
            }
            if m == h {
                return;
            }
            self.swap(h, m);
            h = m;
        }
    }

    fn insert(&mut self, t: usize) {
        self.heap[self.len] = t as u16;
        self.pos[t] = self.len as u16;
        self.len += 1;
        self.sift_up(self.len - 1);
    }

    fn delete(&mut self, t: usize) {
        let h = self.pos[t] as usize;
        self.len -= 1;
        self.swap(h, self.len);
        self.pos[t] = NIL;
        if h < self.len {
            self.sift_down(h);
            self.sift_up(h);
        }
    }
}

impl<const T: usize> Discipline for FairQueue<T> {
    fn name(&self) -> &'static str {
        "fair"
    }
    fn enqueue(&mut self, t: usize, _returned: bool) {
        let floor = self.min_vruntime.saturating_sub(self.slice_ns);
        self.vruntime[t] = self.vruntime[t].max(floor);
        self.insert(t);
    }
    fn remove(&mut self, t: usize) {
        self.delete(t);
    }
    fn take(&mut self, t: usize) {
        self.delete(t);
        self.min_vruntime = self.min_vruntime.max(self.vruntime[t]);
    }
    fn peek(&self, _cpu: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.len.min(SCAN_LIMIT))
            .filter(|&h| fits(self.heap[h] as usize))
            .min_by_key(|&h| self.key(h))
            .map(|h| self.heap[h] as usize)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn contains(&self, t: usize) -> bool {
        self.pos[t] != NIL
    }
    fn charge(&mut self, t: usize, ran_ns: u64) {
        let scaled = ran_ns as u128 * NICE_0_WEIGHT as u128 / self.weight[t] as u128;
        let queued = self.contains(t);
        if queued {
            self.delete(t);
        }
        self.vruntime[t] = self.vruntime[t].saturating_add(scaled.min(u64::MAX as u128) as u64);
        if queued {
            self.insert(t);
        }
    }
    fn reset(&mut self, t: usize) {
        self.vruntime[t] = 0;
    }
    fn slice_ns(&self, _running: usize) -> Option<u64> {
        Some(self.slice_ns)
    }
    fn busy_order(&self) -> BusyOrder {
        BusyOrder::OldestFirst
    }
    fn steal_after_ns(&self) -> Option<u64> {
        self.steal_after_ns
    }
    fn check(&self) -> Result<(), &'static str> {
        for h in 0..self.len {
            if self.pos[self.heap[h] as usize] as usize != h {
                return Err("fair heap position mismatch");
            }
            if h > 0 && self.key(h) < self.key((h - 1) / 2) {
                return Err("fair heap order broken");
            }
        }
        if self.pos.iter().filter(|&&p| p != NIL).count() != self.len {
            return Err("fair heap length mismatch");
        }
        Ok(())
    }
}

impl<const T: usize> Plugin for FairQueue<T> {
    const ABOUT: &'static str =
        "weighted fair: least virtual runtime first, with a slice (CFS/EEVDF-like)";
    const PARAMS: &'static [Param] =
        &[slice_param(DEFAULT_SLICE_NS), steal_param(DEFAULT_SLICE_NS)];
    #[inline(always)]
    fn from_params(p: &Params) -> Self {
        FairQueue::empty(p.get(0), steal_after(p.get(1)))
    }
}

/// The weighted-fair policy: the core over [`FairQueue`].
pub type Fair<const C: usize = MAX_CPUS, const T: usize = MAX_THREADS> =
    SchedCore<C, T, FairQueue<T>>;

impl<const C: usize, const T: usize> SchedCore<C, T, FairQueue<T>> {
    /// A fair policy for `n_cpus` cpus with the default slice and steal threshold.
    pub fn new(n_cpus: usize) -> Result<Self, ConfigError> {
        let q = FairQueue::new(DEFAULT_SLICE_NS, Some(DEFAULT_SLICE_NS))?;
        SchedCore::with_discipline(n_cpus, q)
    }
}
