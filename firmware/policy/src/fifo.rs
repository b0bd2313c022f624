//! Policy 1: centralized FIFO without preemption (ghOSt `fifo/centralized`, Shinjuku without
//! the slice). One global run queue in order of becoming runnable; each cpu gets the head when
//! its slot is empty (idle cpus first, then busy cpus whose run started most recently).
//! A thread waiting in the slot of a cpu whose run is old is moved to a hungry cpu by an
//! abort ("steal"), so a long run cannot hold a ready thread hostage while a cpu sleeps.

use crate::sched::{BusyOrder, CoreConfig, SchedCore};
use crate::types::{ConfigError, DecisionSink, Event, PolicyStats};
use crate::{Policy, MAX_CPUS, MAX_THREADS};

/// Default steal threshold: a prestaged thread behind a run older than this moves to a
/// hungry cpu.
pub const DEFAULT_STEAL_AFTER_NS: u64 = 20_000;

/// Configuration of [`CentralizedFifo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FifoConfig {
    /// Host cpus scheduled.
    pub n_cpus: usize,
    /// See [`CoreConfig::steal_after_ns`]; `None` disables stealing.
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

/// The centralized FIFO policy.
#[derive(Clone, Debug)]
pub struct CentralizedFifo<const C: usize = MAX_CPUS, const T: usize = MAX_THREADS> {
    core: SchedCore<C, T>,
}

impl<const C: usize, const T: usize> CentralizedFifo<C, T> {
    /// A FIFO policy with default settings.
    pub fn new(n_cpus: usize) -> Result<Self, ConfigError> {
        Self::with_config(FifoConfig::new(n_cpus))
    }

    /// A FIFO policy with explicit settings.
    pub fn with_config(cfg: FifoConfig) -> Result<Self, ConfigError> {
        Ok(CentralizedFifo {
            core: SchedCore::new(CoreConfig {
                n_cpus: cfg.n_cpus,
                time_slice_ns: None,
                steal_after_ns: cfg.steal_after_ns,
                busy_order: BusyOrder::YoungestFirst,
            })?,
        })
    }

    /// The shared core (queue length, outstanding transactions, invariants).
    pub fn core(&self) -> &SchedCore<C, T> {
        &self.core
    }
}

impl<const C: usize, const T: usize> Policy for CentralizedFifo<C, T> {
    fn name(&self) -> &'static str {
        "fifo"
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
