//! The workloads, in virtual time with the seeded RNG: open-loop requests served by a pool of
//! worker threads, and the storm (random bursts, sleeps, yields, affinity changes, kills and
//! revivals) that races decisions in flight. Every thread state change goes through the
//! mechanism ([`crate::host`]'s helpers or `Sim::mech` directly).

use std::vec::Vec;

use wave_host_shim::sched::ThreadState;

use crate::config::{RequestClass, StormConfig, Workload};
use crate::sim::{Req, Sim, SimEv};

impl Sim<'_, '_> {
    pub(crate) fn setup(&mut self) {
        match self.cfg.workload.clone() {
            Workload::OpenLoop { rate_per_sec, .. } => {
                for tid in 0..self.threads.len() {
                    self.idle_workers.push_back(tid);
                    let r = self.mech.thread_new(tid as u32, false, self.now);
                    self.changed("thread_new", r);
                }
                if rate_per_sec > 0.0 {
                    let first = self.rng.exp(1e9 / rate_per_sec);
                    self.push(first, SimEv::Arrival);
                }
            }
            Workload::Storm(s) => {
                for tid in 0..self.threads.len() {
                    self.threads[tid].work_left = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
                    self.report.generated += 1;
                    let r = self.mech.thread_new(tid as u32, true, self.now);
                    self.changed("thread_new", r);
                }
                if s.affinity_every_ns > 0 {
                    let t = self.rng.exp(s.affinity_every_ns as f64);
                    self.push(t, SimEv::StormAffinity);
                }
                if s.kill_every_ns > 0 {
                    let t = self.rng.exp(s.kill_every_ns as f64);
                    self.push(t, SimEv::StormKill);
                }
            }
        }
    }

    fn classes(&self) -> Vec<RequestClass> {
        match &self.cfg.workload {
            Workload::OpenLoop { classes, .. } => classes.clone(),
            Workload::Storm(_) => Vec::new(),
        }
    }

    fn storm(&self) -> Option<StormConfig> {
        match &self.cfg.workload {
            Workload::Storm(s) => Some(s.clone()),
            Workload::OpenLoop { .. } => None,
        }
    }

    fn state(&self, tid: usize) -> ThreadState {
        self.mech
            .status(tid as u32)
            .map_or(ThreadState::Absent, |s| s.state)
    }

    fn all_mask(&self) -> u64 {
        if self.cfg.n_cpus >= 64 {
            u64::MAX
        } else {
            (1u64 << self.cfg.n_cpus) - 1
        }
    }

    /// The burst of the thread running on `c` is done.
    pub(crate) fn finish_burst(&mut self, c: usize, tid: usize) {
        self.report.completed += 1;
        self.report.last_completion_ns = self.now;
        if let Some(s) = self.storm() {
            return self.storm_burst_done(c, tid, &s);
        }
        let classes = self.classes();
        if let Some(r) = self.threads[tid].req.take() {
            self.latencies[r.class].push(self.now - r.arrival);
        }
        if let Some(r) = self.backlog.pop_front() {
            // Keep running: take the next request without a state change.
            self.threads[tid].req = Some(r);
            self.threads[tid].work_left = classes[r.class].service_ns.max(1);
            self.schedule_segment_end(c);
        } else {
            self.idle_workers.push_back(tid);
            self.block(c, tid);
        }
    }

    pub(crate) fn arrival(&mut self) {
        let Workload::OpenLoop { rate_per_sec, .. } = self.cfg.workload else {
            return;
        };
        let classes = self.classes();
        self.report.generated += 1;
        let total: f64 = classes.iter().map(|c| c.weight).sum();
        let mut x = self.rng.unit() * total;
        let mut class = classes.len() - 1;
        for (i, c) in classes.iter().enumerate() {
            if x < c.weight {
                class = i;
                break;
            }
            x -= c.weight;
        }
        let req = Req {
            arrival: self.now,
            class,
        };
        if let Some(tid) = self.idle_workers.pop_front() {
            let th = &mut self.threads[tid];
            th.req = Some(req);
            th.work_left = classes[class].service_ns.max(1);
            th.runnable_since = self.now;
            let r = self.mech.wakeup(tid as u32, self.now);
            self.changed("wakeup", r);
        } else {
            self.backlog.push_back(req);
        }
        let next = self.now + self.rng.exp(1e9 / rate_per_sec);
        if next < self.cfg.duration_ns {
            self.push(next, SimEv::Arrival);
        }
    }

    fn storm_burst_done(&mut self, c: usize, tid: usize, s: &StormConfig) {
        let live = self.now < self.cfg.duration_ns;
        if live && self.rng.unit() < s.yield_prob {
            self.report.generated += 1;
            let work = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
            self.yield_with(c, tid, work);
            return;
        }
        self.block(c, tid);
        if live {
            let th = &mut self.threads[tid];
            th.wake_gen += 1;
            let gen = th.wake_gen;
            let t = self.now + self.rng.range(s.sleep_ns.0, s.sleep_ns.1);
            self.push(t, SimEv::StormWake { tid, gen });
        }
    }

    pub(crate) fn storm_wake(&mut self, tid: usize, gen: u64) {
        let Some(s) = self.storm() else { return };
        if self.threads[tid].wake_gen != gen || self.state(tid) != ThreadState::Blocked {
            return;
        }
        self.report.generated += 1;
        let th = &mut self.threads[tid];
        th.work_left = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
        th.runnable_since = self.now;
        let r = self.mech.wakeup(tid as u32, self.now);
        self.changed("wakeup", r);
    }

    pub(crate) fn storm_affinity(&mut self) {
        let Some(s) = self.storm() else { return };
        let tid = self.rng.range(0, self.threads.len() as u64 - 1) as usize;
        if !matches!(self.state(tid), ThreadState::Absent | ThreadState::Dead) {
            let all = self.all_mask();
            let mut mask = self.rng.next_u64() & all;
            if mask == 0 || self.rng.unit() < 0.3 {
                mask = all;
            }
            let r = self.mech.set_affinity(tid as u32, mask, self.now);
            self.changed("affinity", r);
        }
        let next = self.now + self.rng.exp(s.affinity_every_ns as f64);
        if next < self.cfg.duration_ns {
            self.push(next, SimEv::StormAffinity);
        }
    }

    pub(crate) fn storm_kill(&mut self) {
        let Some(s) = self.storm() else { return };
        let tid = self.rng.range(0, self.threads.len() as u64 - 1) as usize;
        let st = self.state(tid);
        if !matches!(st, ThreadState::Absent | ThreadState::Dead) {
            self.kill(tid, st);
            let t = self.now + s.revive_after_ns;
            self.push(t, SimEv::StormRevive(tid));
        }
        let next = self.now + self.rng.exp(s.kill_every_ns as f64);
        if next < self.cfg.duration_ns {
            self.push(next, SimEv::StormKill);
        }
    }

    fn kill(&mut self, tid: usize, st: ThreadState) {
        if matches!(st, ThreadState::Runnable | ThreadState::Running(_)) {
            self.report.abandoned += 1;
        }
        self.threads[tid].wake_gen += 1;
        let cpu = match st {
            ThreadState::Running(c) => Some(c as usize),
            _ => None,
        };
        let ran = cpu.map_or(0, |c| self.stop_run(c));
        let r = self.mech.dead(tid as u32, ran, self.now);
        self.changed("dead", r);
        if let Some(c) = cpu {
            self.cpu_next(c);
        }
    }

    pub(crate) fn storm_revive(&mut self, tid: usize) {
        let Some(s) = self.storm() else { return };
        if self.state(tid) != ThreadState::Dead {
            return;
        }
        self.report.generated += 1;
        let th = &mut self.threads[tid];
        th.work_left = self.rng.range(s.burst_ns.0, s.burst_ns.1).max(1);
        th.runnable_since = self.now;
        let r = self.mech.thread_new(tid as u32, true, self.now);
        self.changed("thread_new", r);
    }
}
