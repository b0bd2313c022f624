//! The on-host loop (the `host` baseline, and the fallback when the IPU is gone): the memory
//! policy runs in-process on a host thread, driven by the mechanism each interval. It measures
//! what offload saves: the host CPU time of the policy, next to that of the mechanism.
//!
//! The demo's `host` and `ipu` modes go over the link instead (`super::wire`, `super::run`:
//! the policy as a service, records posted, decisions and outcomes carried back); this loop
//! stays as the in-process form the mechanism tests use.

use std::io;

use wave_policy::mem::{MemConfig, MemConfigError, MemPolicy, RegionRecord};

use super::{DecisionVec, Mechanism};

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusive timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What one interval did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntervalReport {
    /// Records the mechanism posted.
    pub records: usize,
    /// Decisions the policy emitted (all applied this interval).
    pub decisions: usize,
    /// Thread CPU of the scan (mechanism), of the policy, and of applying decisions, ns.
    pub scan_cpu_ns: u64,
    pub policy_cpu_ns: u64,
    pub apply_cpu_ns: u64,
    /// The policy's cold threshold after the interval.
    pub threshold: u32,
}

/// Mechanism and policy in one host thread.
pub struct OnHostLoop<const N: usize> {
    /// The mechanism (public: callers read its stats and tiers).
    pub mech: Mechanism,
    /// The policy (public: callers read its stats and histograms).
    pub policy: Box<MemPolicy<N>>,
    recs: Vec<RegionRecord>,
    decisions: DecisionVec,
    /// Totals over all intervals: `(scan, policy, apply)` thread CPU, ns.
    pub cpu_ns: (u64, u64, u64),
}

impl<const N: usize> OnHostLoop<N> {
    /// A loop over `mech` with a policy for `cfg` (`cfg.n_regions` is set from the area).
    pub fn new(mech: Mechanism, cfg: MemConfig) -> Result<Self, MemConfigError> {
        let cfg = MemConfig {
            n_regions: mech.n_regions(),
            ..cfg
        };
        let policy = Box::new(MemPolicy::new(cfg)?);
        Ok(OnHostLoop {
            mech,
            policy,
            recs: Vec::new(),
            decisions: DecisionVec::default(),
            cpu_ns: (0, 0, 0),
        })
    }

    /// One interval: scan, feed the records to the policy, end its interval, apply every
    /// decision as a transaction and feed the outcomes back.
    pub fn step(&mut self) -> io::Result<IntervalReport> {
        let t0 = thread_cpu_ns();
        self.recs.clear();
        self.mech.scan(&mut self.recs)?;
        let t1 = thread_cpu_ns();
        self.recs.iter().for_each(|r| self.policy.on_record(*r));
        self.decisions.0.clear();
        self.policy.end_interval(&mut self.decisions);
        let t2 = thread_cpu_ns();
        let mut policy_ns = t2 - t1;
        for d in &self.decisions.0 {
            let o = self.mech.apply(*d);
            let t = thread_cpu_ns();
            self.policy.on_outcome(o);
            policy_ns += thread_cpu_ns() - t;
        }
        let apply_ns = thread_cpu_ns() - t2 - (policy_ns - (t2 - t1));
        let r = IntervalReport {
            records: self.recs.len(),
            decisions: self.decisions.0.len(),
            scan_cpu_ns: t1 - t0,
            policy_cpu_ns: policy_ns,
            apply_cpu_ns: apply_ns,
            threshold: self.policy.threshold(),
        };
        self.cpu_ns.0 += r.scan_cpu_ns;
        self.cpu_ns.1 += r.policy_cpu_ns;
        self.cpu_ns.2 += r.apply_cpu_ns;
        Ok(r)
    }
}
