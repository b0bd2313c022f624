//! Policy 2: Shinjuku-style preemptive centralized FIFO. The FIFO core plus a time slice: a run
//! older than the slice is preempted when another thread waits for its cpu (the cpu's slot is
//! filled), the preempted thread goes to the back of the queue and the cpu claims the waiting
//! thread locally. Busy cpus are prestaged oldest run first, since those are preempted next.
//! Short requests therefore wait at most about one slice behind a long one, and a preempted
//! long request still comes back round (the queue is FIFO), so nothing starves.

use crate::sched::{BusyOrder, CoreConfig, SchedCore};
use crate::types::{ConfigError, DecisionSink, Event, PolicyStats};
use crate::{Policy, MAX_CPUS, MAX_THREADS};

/// Default time slice: 30 µs (ghOSt's Shinjuku experiments).
pub const DEFAULT_SLICE_NS: u64 = 30_000;

/// Configuration of [`Shinjuku`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShinjukuConfig {
    /// Host cpus scheduled.
    pub n_cpus: usize,
    /// The time slice, `MIN_SLICE_NS..=MAX_SLICE_NS` (Shinjuku uses 5–50 µs).
    pub time_slice_ns: u64,
    /// See [`CoreConfig::steal_after_ns`]; `None` disables stealing.
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

/// The Shinjuku-style policy.
#[derive(Clone, Debug)]
pub struct Shinjuku<const C: usize = MAX_CPUS, const T: usize = MAX_THREADS> {
    core: SchedCore<C, T>,
}

impl<const C: usize, const T: usize> Shinjuku<C, T> {
    /// A Shinjuku policy with default settings.
    pub fn new(n_cpus: usize) -> Result<Self, ConfigError> {
        Self::with_config(ShinjukuConfig::new(n_cpus))
    }

    /// A Shinjuku policy with explicit settings.
    pub fn with_config(cfg: ShinjukuConfig) -> Result<Self, ConfigError> {
        Ok(Shinjuku {
            core: SchedCore::new(CoreConfig {
                n_cpus: cfg.n_cpus,
                time_slice_ns: Some(cfg.time_slice_ns),
                steal_after_ns: cfg.steal_after_ns,
                busy_order: BusyOrder::OldestFirst,
            })?,
        })
    }

    /// The shared core (queue length, outstanding transactions, invariants).
    pub fn core(&self) -> &SchedCore<C, T> {
        &self.core
    }
}

impl<const C: usize, const T: usize> Policy for Shinjuku<C, T> {
    fn name(&self) -> &'static str {
        "shinjuku"
    }
    fn on_event(&mut self, ev: Event, now_ns: u64) {
        self.core.on_event(ev, now_ns)
    }
    fn poll(&mut self, now_ns: u64, out: &mut dyn DecisionSink) -> usize {
        self.core.poll(now_ns, out)
    }
    fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        self.core.next_deadline(now_ns)
    }
    fn stats(&self) -> &PolicyStats {
        self.core.stats()
    }
    fn check_invariants(&self) -> Result<(), &'static str> {
        self.core.check_invariants()
    }
}
