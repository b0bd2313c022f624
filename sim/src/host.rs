//! The host CPUs, in virtual time, as the host runtime runs them: a CPU whose thread stops
//! (blocks, yields, is preempted, exits) or whose doorbell rings looks at its slot; every
//! decision there (commit, stale, not runnable, abort, idle) and every thread state change is
//! made by the shipped mechanism (`wave_host_shim::sched::Mechanism`), never here. What this
//! module adds is time: run segments, safe points every `safe_point_ns`, wake latencies, and
//! the host-side checks (no thread on two CPUs, no stale commit applied, one outcome per
//! transaction).

use std::format;

use wave_abi::sched::{FailReason, SchedEvent};
use wave_host_shim::sched::{ClaimOutcome, ThreadState, TransitionError};

use crate::sim::{Sim, SimEv};

impl Sim<'_, '_> {
    /// Posts the event of a state change the mechanism made, or records its refusal.
    pub(crate) fn changed(&mut self, what: &str, r: Result<SchedEvent, TransitionError>) -> bool {
        match r {
            Ok(e) => {
                self.post(e);
                true
            }
            Err(e) => {
                self.violation(format!("{what}: refused by the mechanism: {e:?}"));
                false
            }
        }
    }

    /// How long `c`'s current run has lasted, and closes its open segment's busy time.
    pub(crate) fn stop_run(&mut self, c: usize) -> u64 {
        let cpu = &mut self.cpus[c];
        cpu.busy_ns += self.now - cpu.seg_start;
        cpu.seg_start = self.now;
        self.now - cpu.run_start
    }

    /// `c` looks at its slot. Returns true if it took a transaction (whatever its outcome).
    fn claim(&mut self, c: usize) -> bool {
        let prev = self.cpus[c].cursor.last_txn;
        let Some(cl) = self
            .mech
            .claim(&self.slots, c as u32, &mut self.cpus[c].cursor, self.now)
        else {
            return false;
        };
        if cl.txn <= prev {
            self.violation(format!(
                "cpu {c}: transaction {} taken after {prev}",
                cl.txn
            ));
        }
        let n = self.txn_outcomes.entry(cl.txn).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.violation(format!("two outcomes for txn {}", cl.txn));
        }
        self.post(cl.event);
        match cl.outcome {
            ClaimOutcome::Committed { tid, seq } => self.committed(c, tid as usize, seq),
            ClaimOutcome::Aborted => self.report.host.aborts_won += 1,
            ClaimOutcome::Failed(FailReason::Stale) => self.report.host.failed_stale += 1,
            ClaimOutcome::Failed(FailReason::NotRunnable) => {
                self.report.host.failed_not_runnable += 1
            }
            ClaimOutcome::Failed(_) => self.report.host.failed_other += 1,
        }
        true
    }

    fn committed(&mut self, c: usize, tid: usize, seq: u32) {
        if let Some(other) = self.cpus.iter().position(|x| x.running == Some(tid)) {
            self.violation(format!("thread {tid} would run on cpus {other} and {c}"));
        }
        match self.mech.status(tid as u32) {
            Some(s) if s.seq == seq && s.state == ThreadState::Running(c as u32) => {}
            s => self.violation(format!(
                "commit of tid {tid} at seq {seq} on cpu {c} left status {s:?}"
            )),
        }
        let wait = self.now - self.threads[tid].runnable_since;
        self.report.max_runnable_wait_ns = self.report.max_runnable_wait_ns.max(wait);
        self.report.host.commits += 1;
        self.start(c, tid);
    }

    fn go_idle(&mut self, c: usize) {
        self.cpus[c].running = None;
        self.cpus[c].sleeping = true;
        let ev = self
            .mech
            .idle(&self.slots, c as u32, &self.cpus[c].cursor, self.now);
        match ev {
            Some(e) => self.post(e),
            None => self.violation(format!("cpu {c} went idle with a transaction to take")),
        }
    }

    /// The cpu's current thread stopped (or it was woken): claim until something runs, else
    /// report idle and sleep.
    pub(crate) fn cpu_next(&mut self, c: usize) {
        self.cpus[c].running = None;
        self.cpus[c].gen += 1;
        self.cpus[c].sleeping = false;
        while self.cpus[c].running.is_none() {
            if !self.claim(c) {
                self.go_idle(c);
                return;
            }
        }
    }

    pub(crate) fn cpu_wake(&mut self, c: usize) {
        self.cpus[c].waking = false;
        if !self.cpus[c].sleeping {
            return;
        }
        let cur = self.cpus[c].cursor;
        if self.slots.prestaged(c as u32, cur.last_txn).is_some() {
            self.cpu_next(c);
        } else {
            self.report.host.spurious_wakes += 1;
        }
    }

    fn start(&mut self, c: usize, tid: usize) {
        let cpu = &mut self.cpus[c];
        cpu.running = Some(tid);
        cpu.sleeping = false;
        cpu.run_start = self.now;
        cpu.seg_start = self.now;
        self.schedule_segment_end(c);
        self.schedule_safe_point(c);
    }

    /// The running thread's work ends at the end of its remaining work.
    pub(crate) fn schedule_segment_end(&mut self, c: usize) {
        let Some(tid) = self.cpus[c].running else {
            return;
        };
        self.cpus[c].gen += 1;
        let gen = self.cpus[c].gen;
        let t = self.now + self.threads[tid].work_left.max(1);
        self.push(t, SimEv::SegEnd { cpu: c, gen });
    }

    /// If a preempt request waits in `c`'s slot, end the running segment at the next safe
    /// point, where the mechanism checks it. (The CPU checks at every safe point; those
    /// without a new request would find nothing, so they are not simulated.)
    pub(crate) fn schedule_safe_point(&mut self, c: usize) {
        let Some(tid) = self.cpus[c].running else {
            return;
        };
        let last = self.cpus[c].cursor.last_preempt;
        if self.slots.preempt(c as u32, last).is_none() {
            return;
        }
        let q = self.cfg.safe_point_ns.max(1);
        let start = self.cpus[c].seg_start;
        let next = start + (self.now - start).div_ceil(q) * q;
        if next < start + self.threads[tid].work_left {
            self.cpus[c].gen += 1;
            let gen = self.cpus[c].gen;
            self.push(next, SimEv::SegEnd { cpu: c, gen });
        }
    }

    pub(crate) fn seg_end(&mut self, c: usize, gen: u64) {
        if self.cpus[c].gen != gen {
            return;
        }
        let Some(tid) = self.cpus[c].running else {
            return;
        };
        let elapsed = self.now - self.cpus[c].seg_start;
        self.cpus[c].busy_ns += elapsed;
        self.cpus[c].seg_start = self.now;
        let th = &mut self.threads[tid];
        th.work_left = th.work_left.saturating_sub(elapsed);
        if th.work_left == 0 {
            self.finish_burst(c, tid);
            return;
        }
        self.safe_point(c, tid);
    }

    /// The mechanism's preempt check at a safe point of `tid` on `c`.
    fn safe_point(&mut self, c: usize, tid: usize) {
        let last = self.cpus[c].cursor.last_preempt;
        let hit =
            self.mech
                .check_preempt(&self.slots, c as u32, &mut self.cpus[c].cursor, tid as u32);
        if hit.is_none() {
            if self.cpus[c].cursor.last_preempt != last {
                self.report.host.preempts_ignored += 1;
            }
            self.schedule_segment_end(c);
            return;
        }
        self.report.host.preempts_honoured += 1;
        self.preempt_lat
            .push(self.now - self.cpus[c].preempt_decided_at);
        let ran = self.stop_run(c);
        self.threads[tid].runnable_since = self.now;
        let r = self.mech.preempted(tid as u32, c as u32, ran, self.now);
        self.changed("preempted", r);
        self.cpu_next(c);
    }

    /// The thread running on `c` blocks.
    pub(crate) fn block(&mut self, c: usize, tid: usize) {
        let ran = self.stop_run(c);
        let r = self.mech.blocked(tid as u32, c as u32, ran, self.now);
        self.changed("blocked", r);
        self.cpu_next(c);
    }

    /// The thread running on `c` yields with `work` more to do.
    pub(crate) fn yield_with(&mut self, c: usize, tid: usize, work: u64) {
        let ran = self.stop_run(c);
        self.threads[tid].work_left = work;
        self.threads[tid].runnable_since = self.now;
        let r = self.mech.yielded(tid as u32, c as u32, ran, self.now);
        self.changed("yield", r);
        self.cpu_next(c);
    }
}
