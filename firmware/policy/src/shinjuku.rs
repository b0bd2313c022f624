//! Policy 2: Shinjuku-style preemptive centralized FIFO, as a [`Discipline`]: the FIFO queue
//! plus a time slice. A run older than the slice is preempted when another thread waits for
//! its cpu, the preempted thread goes to the back of the queue and the cpu claims the waiting
//! thread locally. Busy cpus are prestaged oldest run first, since those are preempted next.
//! Short requests therefore wait at most about one slice behind a long one, and a preempted
//! long request still comes back round (the queue is FIFO), so nothing starves.

use crate::discipline::{Discipline, Param, Params, Plugin};
use crate::fifo::{steal_after, steal_param, FifoQueue};
use crate::sched::{BusyOrder, SchedCore, MAX_SLICE_NS, MIN_SLICE_NS};
use crate::types::ConfigError;
use crate::{MAX_CPUS, MAX_THREADS};

/// Default time slice: 30 µs (ghOSt's Shinjuku experiments).
pub const DEFAULT_SLICE_NS: u64 = 30_000;

/// The slice parameter (shared with the fair policy).
pub(crate) const fn slice_param(default: u64) -> Param {
    Param {
        name: "slice_ns",
        about: "time slice: preempt a run this old when another thread waits (ns)",
        default,
        min: MIN_SLICE_NS,
        max: MAX_SLICE_NS,
    }
}

/// The Shinjuku discipline.
#[derive(Clone, Debug)]
pub struct ShinjukuQueue<const T: usize> {
    queue: FifoQueue<T>,
    slice_ns: u64,
    steal_after_ns: Option<u64>,
}

impl<const T: usize> Discipline for ShinjukuQueue<T> {
    fn name(&self) -> &'static str {
        "shinjuku"
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
        self.queue.check_list()
    }
}

impl<const T: usize> Plugin for ShinjukuQueue<T> {
    const ABOUT: &'static str = "centralized FIFO with time-slice preemption (Shinjuku)";
    const PARAMS: &'static [Param] =
        &[slice_param(DEFAULT_SLICE_NS), steal_param(DEFAULT_SLICE_NS)];
    #[inline(always)]
    fn from_params(p: &Params) -> Self {
        ShinjukuQueue {
            queue: FifoQueue::new(),
            slice_ns: p.get(0),
            steal_after_ns: steal_after(p.get(1)),
        }
    }
}

/// Configuration of [`Shinjuku`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShinjukuConfig {
    /// Host cpus scheduled.
    pub n_cpus: usize,
    /// The time slice, `MIN_SLICE_NS..=MAX_SLICE_NS` (Shinjuku uses 5–50 µs).
    pub time_slice_ns: u64,
    /// Steal threshold; `None` disables stealing.
    pub steal_after_ns: Option<u64>,
}

impl ShinjukuConfig {
    /// Defaults for `n_cpus` cpus: 30 µs slice, stealing behind runs older than the slice.
    pub fn new(n_cpus: usize) -> Self {
        ShinjukuConfig {
            n_cpus,
            time_slice_ns: DEFAULT_SLICE_NS,
            steal_after_ns: Some(DEFAULT_SLICE_NS),
        }
    }
}

/// The Shinjuku-style policy: the core over [`ShinjukuQueue`].
pub type Shinjuku<const C: usize = MAX_CPUS, const T: usize = MAX_THREADS> =
    SchedCore<C, T, ShinjukuQueue<T>>;

impl<const C: usize, const T: usize> SchedCore<C, T, ShinjukuQueue<T>> {
    /// A Shinjuku policy with default settings.
    pub fn new(n_cpus: usize) -> Result<Self, ConfigError> {
        Self::with_config(ShinjukuConfig::new(n_cpus))
    }

    /// A Shinjuku policy with explicit settings.
    pub fn with_config(cfg: ShinjukuConfig) -> Result<Self, ConfigError> {
        if !(MIN_SLICE_NS..=MAX_SLICE_NS).contains(&cfg.time_slice_ns) {
            return Err(ConfigError::TimeSlice);
        }
        let disc = ShinjukuQueue {
            queue: FifoQueue::new(),
            slice_ns: cfg.time_slice_ns,
            steal_after_ns: cfg.steal_after_ns,
        };
        SchedCore::with_discipline(cfg.n_cpus, disc)
    }
}
