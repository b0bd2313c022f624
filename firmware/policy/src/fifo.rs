//! Policy 1: centralized FIFO without preemption (ghOSt `fifo/centralized`, Shinjuku without
//! the slice), as a [`Discipline`]: one global run queue in order of becoming runnable; each
//! cpu gets the head when its slot is empty (idle cpus first, then busy cpus whose run started
//! most recently). A thread waiting in the slot of a cpu whose run is old is moved to a hungry
//! cpu by an abort ("steal", done by the core), so a long run cannot hold a ready thread
//! hostage while a cpu sleeps.
//!
//! [`FifoQueue`] is also the queue Shinjuku uses.

use crate::discipline::{Discipline, Param, Params, Plugin, SCAN_LIMIT};
use crate::sched::SchedCore;
use crate::types::ConfigError;
use crate::{MAX_CPUS, MAX_THREADS};

/// Default steal threshold: a prestaged thread behind a run older than this moves to a
/// hungry cpu.
pub const DEFAULT_STEAL_AFTER_NS: u64 = 20_000;

/// The steal-threshold parameter every policy shares (`u64::MAX` = never steal).
pub(crate) const fn steal_param(default: u64) -> Param {
    Param {
        name: "steal_after_ns",
        about:
            "move a thread waiting behind a run older than this to a hungry cpu (ns; max = never)",
        default,
        min: 1_000,
        max: u64::MAX,
    }
}

/// `u64::MAX` means "never".
pub(crate) fn steal_after(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

const NIL: u16 = u16::MAX;

/// An intrusive FIFO of thread indices `0..T` (doubly linked over per-thread links).
#[derive(Clone, Debug)]
pub struct FifoQueue<const T: usize> {
    prev: [u16; T],
    next: [u16; T],
    queued: [bool; T],
    head: u16,
    tail: u16,
    len: usize,
}

impl<const T: usize> FifoQueue<T> {
    /// An empty queue.
    #[inline(always)]
    pub fn new() -> Self {
        FifoQueue {
            prev: [NIL; T],
            next: [NIL; T],
            queued: [false; T],
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    /// Appends `t` at the back, or at the front if `front`.
    pub fn push(&mut self, t: usize, front: bool) {
        let i = t as u16;
        if front {
            self.prev[t] = NIL;
            self.next[t] = self.head;
            match self.head {
                NIL => self.tail = i,
                h => self.prev[h as usize] = i,
            }
            self.head = i;
        } else {
            self.next[t] = NIL;
            self.prev[t] = self.tail;
            match self.tail {
                NIL => self.head = i,
                l => self.next[l as usize] = i,
            }
            self.tail = i;
        }
        self.queued[t] = true;
        self.len += 1;
    }

    /// Unlinks queued `t`.
    pub fn unlink(&mut self, t: usize) {
        let (p, n) = (self.prev[t], self.next[t]);
        match p {
            NIL => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.prev[n as usize] = p,
        }
        (self.prev[t], self.next[t], self.queued[t]) = (NIL, NIL, false);
        self.len -= 1;
    }

    /// The first of the first [`SCAN_LIMIT`] queued threads that `fits` accepts.
    pub fn first_fit(&self, fits: impl Fn(usize) -> bool) -> Option<usize> {
        let mut i = self.head;
        for _ in 0..SCAN_LIMIT {
            if i == NIL {
                return None;
            }
            if fits(i as usize) {
                return Some(i as usize);
            }
            i = self.next[i as usize];
        }
        None
    }

    /// Number of queued threads.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `t` is queued.
    pub fn contains(&self, t: usize) -> bool {
        self.queued[t]
    }

    /// Walks the list: well formed, acyclic, matching the length and the queued flags.
    pub fn check_list(&self) -> Result<(), &'static str> {
        let (mut count, mut prev, mut i) = (0usize, NIL, self.head);
        while i != NIL {
            count += 1;
            if count > T || !self.queued[i as usize] || self.prev[i as usize] != prev {
                return Err("run queue list broken");
            }
            prev = i;
            i = self.next[i as usize];
        }
        let flagged = self.queued.iter().filter(|&&q| q).count();
        if prev != self.tail || count != self.len || flagged != self.len {
            return Err("run queue tail/length mismatch");
        }
        Ok(())
    }
}

impl<const T: usize> Default for FifoQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The FIFO discipline: a [`FifoQueue`], threads returned unused go back to the front.
#[derive(Clone, Debug)]
pub struct Fifo<const T: usize> {
    queue: FifoQueue<T>,
    steal_after_ns: Option<u64>,
}

impl<const T: usize> Discipline for Fifo<T> {
    fn name(&self) -> &'static str {
        "fifo"
    }
    fn enqueue(&mut self, t: usize, returned: bool) {
        self.queue.push(t, returned)
    }
    fn remove(&mut self, t: usize) {
        self.queue.unlink(t)
    }
    fn peek(&self, _cpu: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
        self.queue.first_fit(fits)
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn contains(&self, t: usize) -> bool {
        self.queue.contains(t)
    }
    fn steal_after_ns(&self) -> Option<u64> {
        self.steal_after_ns
    }
    fn check(&self) -> Result<(), &'static str> {
        self.queue.check_list()
    }
}

impl<const T: usize> Plugin for Fifo<T> {
    const ABOUT: &'static str = "centralized FIFO, no preemption (ghOSt fifo/centralized)";
    const PARAMS: &'static [Param] = &[steal_param(DEFAULT_STEAL_AFTER_NS)];
    #[inline(always)]
    fn from_params(p: &Params) -> Self {
        Fifo {
            queue: FifoQueue::new(),
            steal_after_ns: steal_after(p.get(0)),
        }
    }
}

/// Configuration of [`CentralizedFifo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FifoConfig {
    /// Host cpus scheduled.
    pub n_cpus: usize,
    /// Steal threshold (see [`Discipline::steal_after_ns`]); `None` disables stealing.
    pub steal_after_ns: Option<u64>,
}

impl FifoConfig {
    /// Defaults for `n_cpus` cpus.
    pub fn new(n_cpus: usize) -> Self {
        FifoConfig {
            n_cpus,
            steal_after_ns: Some(DEFAULT_STEAL_AFTER_NS),
        }
    }
}

/// The centralized FIFO policy: the core over [`Fifo`].
pub type CentralizedFifo<const C: usize = MAX_CPUS, const T: usize = MAX_THREADS> =
    SchedCore<C, T, Fifo<T>>;

impl<const C: usize, const T: usize> SchedCore<C, T, Fifo<T>> {
    /// A FIFO policy with default settings.
    pub fn new(n_cpus: usize) -> Result<Self, ConfigError> {
        Self::with_config(FifoConfig::new(n_cpus))
    }

    /// A FIFO policy with explicit settings.
    pub fn with_config(cfg: FifoConfig) -> Result<Self, ConfigError> {
        let disc = Fifo {
            queue: FifoQueue::new(),
            steal_after_ns: cfg.steal_after_ns,
        };
        SchedCore::with_discipline(cfg.n_cpus, disc)
    }
}
