//! The queueing-discipline interface: what a scheduling policy decides, separated from the
//! ghOSt bookkeeping ([`crate::sched::SchedCore`]: thread view, sequence numbers, transactions
//! in flight, prestaging, aborts, steals, the mechanics of preemption).
//!
//! A discipline owns only the order of runnable threads and a few policy knobs. The core calls
//! it with thread indices (`tid` as `usize`, always `< T`) and guarantees:
//! - `enqueue(t)` only for a thread that is not queued; `remove(t)`/`take(t)` only for one that
//!   is;
//! - `charge(t, ran_ns)` once per run of `t` that ended (host-measured time when the host
//!   reports it, otherwise the agent's own estimate);
//! - `reset(t)` when a tid (re)joins the scheduler, before its first `enqueue`.
//!
//! FIFO ([`crate::fifo`]), Shinjuku ([`crate::shinjuku`]) and weighted-fair ([`crate::fair`])
//! are each one short file against this trait; [`crate::registry`] makes them selectable.

use crate::sched::BusyOrder;
use crate::types::ConfigError;
use wave_abi::sched::PARAM_WORDS;

/// How many queued threads a slot fill may inspect looking for one whose affinity allows the
/// cpu (bounds the work of one poll).
pub const SCAN_LIMIT: usize = 32;

/// A queueing discipline over thread indices `0..T`.
pub trait Discipline {
    /// Short name for logs and reports.
    fn name(&self) -> &'static str;
    /// `t` became runnable and waits for a cpu. `returned`: it had been picked, but its
    /// transaction came back unused (failed or aborted), so it was first in line a moment ago.
    fn enqueue(&mut self, t: usize, returned: bool);
    /// Removes queued `t` (it blocked or exited).
    fn remove(&mut self, t: usize);
    /// Removes queued `t` because it was just prestaged on a cpu (picked by [`Self::peek`]).
    fn take(&mut self, t: usize) {
        self.remove(t)
    }
    /// The next queued thread for cpu `cpu` among those `fits` accepts (affinity), inspecting
    /// at most [`SCAN_LIMIT`] candidates; `None` if none fits. Does not remove it.
    fn peek(&self, cpu: usize, fits: impl Fn(usize) -> bool) -> Option<usize>;
    /// Number of queued threads.
    fn len(&self) -> usize;
    /// `true` if nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether `t` is queued (for invariant checks).
    fn contains(&self, t: usize) -> bool;
    /// A run of `t` ended after `ran_ns` of cpu time.
    fn charge(&mut self, _t: usize, _ran_ns: u64) {}
    /// `t` (re)joined the scheduler: forget what is known about its past.
    fn reset(&mut self, _t: usize) {}
    /// Preempt `running` once its run is this old and another thread waits for its cpu.
    /// `None`: never preempt.
    fn slice_ns(&self, _running: usize) -> Option<u64> {
        None
    }
    /// Which busy cpu gets a queued thread first when there are more empty slots than threads.
    fn busy_order(&self) -> BusyOrder {
        BusyOrder::YoungestFirst
    }
    /// A hungry cpu takes a thread prestaged behind a run older than this (`None`: never).
    fn steal_after_ns(&self) -> Option<u64>;
    /// The discipline's own consistency check (O(T)).
    fn check(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

/// One parameter of a policy (a word of the configuration's parameter block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Name, as given on the command line (`--param NAME=VALUE`).
    pub name: &'static str,
    /// What it does, with its unit.
    pub about: &'static str,
    /// Value used when the word is 0.
    pub default: u64,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
}

/// A policy's parameter values, checked against its [`Param`] table (index = table position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params([u64; PARAM_WORDS]);

impl Params {
    /// Resolves a raw parameter block against `table`: 0 means the default, anything else must
    /// be in range, and words beyond the table must be 0.
    pub fn resolve(table: &[Param], raw: &[u64; PARAM_WORDS]) -> Result<Params, ConfigError> {
        if table.len() > PARAM_WORDS {
            return Err(ConfigError::Param("too many parameters"));
        }
        let mut out = [0u64; PARAM_WORDS];
        for (i, &v) in raw.iter().enumerate() {
            match table.get(i) {
                None if v != 0 => return Err(ConfigError::Param("unused parameter word")),
                None => {}
                Some(p) if v == 0 => out[i] = p.default,
                Some(p) if !(p.min..=p.max).contains(&v) => return Err(ConfigError::Param(p.name)),
                Some(_) => out[i] = v,
            }
        }
        Ok(Params(out))
    }

    /// The value of parameter `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.0.get(i).copied().unwrap_or(0)
    }
}

/// A discipline that can be built from a parameter block: what the registry needs.
pub trait Plugin: Discipline + Sized {
    /// One line for `--help` and reports.
    const ABOUT: &'static str;
    /// The parameter table (at most [`PARAM_WORDS`] entries).
    const PARAMS: &'static [Param];
    /// Builds the discipline from parameters [`Params::resolve`] accepted (so every value is
    /// within its table range). Infallible, so a caller can build a policy in place.
    fn from_params(p: &Params) -> Self;
}
