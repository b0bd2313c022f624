//! What a run reports: latency per request class, host counters, the policy's counters, and
//! every invariant violation seen ([`Violations`]).

use std::format;
use std::string::String;
use std::vec::Vec;

use wave_policy::PolicyStats;

/// Latency statistics of one request class.
#[derive(Clone, Debug, Default)]
pub struct ClassStats {
    /// Class name.
    pub name: &'static str,
    /// Completed requests.
    pub count: u64,
    /// Median arrival→completion latency.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Maximum.
    pub max_ns: u64,
}

/// Host-side counters.
#[derive(Clone, Debug, Default)]
pub struct HostCounters {
    /// Events posted to the agent.
    pub events_posted: u64,
    /// Decisions received from the agent.
    pub decisions: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Claims refused as stale.
    pub failed_stale: u64,
    /// Claims refused as not runnable.
    pub failed_not_runnable: u64,
    /// Claims refused otherwise.
    pub failed_other: u64,
    /// Claims that found the agent's abort naming their transaction (the abort won).
    pub aborts_won: u64,
    /// Aborts that landed after their transaction was taken (the claim's outcome stands).
    pub aborts_lost: u64,
    /// Preemptions honoured.
    pub preempts_honoured: u64,
    /// Preempt requests consumed at a safe point and ignored (not this thread at this seq).
    pub preempts_ignored: u64,
    /// Doorbells rung.
    pub doorbells: u64,
    /// Doorbells / wakes that found nothing to do.
    pub spurious_wakes: u64,
    /// Prestages that reached a sleeping cpu without a doorbell (the cpu only noticed on a
    /// later `Wake`).
    pub prestage_to_sleeper: u64,
}

/// Result of a run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Policy name.
    pub policy: &'static str,
    /// Per request class (open loop).
    pub classes: Vec<ClassStats>,
    /// Requests (open loop) or bursts (storm) started.
    pub generated: u64,
    /// Requests or bursts completed.
    pub completed: u64,
    /// Storm bursts discarded because their thread was killed while runnable or running.
    pub abandoned: u64,
    /// Host counters.
    pub host: HostCounters,
    /// The policy's counters at the end.
    pub policy_stats: PolicyStats,
    /// Preempt decision → honoured, median.
    pub preempt_latency_p50_ns: u64,
    /// Preempt decision → honoured, 99th percentile.
    pub preempt_latency_p99_ns: u64,
    /// Longest time any thread stayed runnable before running.
    pub max_runnable_wait_ns: u64,
    /// Virtual time at the end.
    pub end_ns: u64,
    /// Fraction of cpu time spent running threads.
    pub busy_fraction: f64,
    /// Agent time spent in steps (with an [`crate::AgentModel`]; 0 without).
    pub agent_busy_ns: u64,
    /// Agent steps taken (with an [`crate::AgentModel`]).
    pub agent_steps: u64,
    /// End of the load → last completion.
    pub drain_ns: u64,
    /// Last request completion (open loop).
    pub last_completion_ns: u64,
    /// Run time the host mechanism accounted to the threads (sum of their slots' runtime);
    /// equals the CPUs' busy time when every run ended through the mechanism.
    pub mechanism_runtime_ns: u64,
    /// Every invariant violation seen (empty = all checks passed).
    pub violations: Vec<String>,
}

impl SimReport {
    /// Stats of the class called `name`.
    pub fn class(&self, name: &str) -> Option<&ClassStats> {
        self.classes.iter().find(|c| c.name == name)
    }
}

/// The violations of one run, each stamped with the virtual time it was seen (at most 50 kept).
#[derive(Debug, Default)]
pub struct Violations {
    list: Vec<String>,
}

impl Violations {
    /// Records `what`, seen at virtual time `now`.
    pub fn add(&mut self, now: u64, what: String) {
        if self.list.len() < 50 {
            self.list.push(format!("t={now} {what}"));
        }
    }

    /// The violations recorded.
    pub fn into_vec(self) -> Vec<String> {
        self.list
    }
}

/// The `q` quantile (nearest rank) of sorted `v`; 0 if empty.
pub fn pct(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
