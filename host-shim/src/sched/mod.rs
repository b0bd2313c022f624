//! The host scheduling *mechanism* (`no_std`, no allocation): per-thread status words, the
//! state changes that bump a thread's sequence number and produce the event to post, the
//! per-CPU claim of a prestaged transaction (`docs/abi.md` §8 "Host rules": commit, stale,
//! abort), the idle rule and the preempt check run at safe points. These rules exist only
//! here: the Linux runtime (`engine`) and the simulator (`wave-sim`, which links this crate
//! with `default-features = false`, in virtual time over an in-process region) both call them.
//!
//! A kernel could embed this module as is: the caller provides the thread storage
//! (`&[ThreadSlot]`, one per tid) and one [`CpuCursor`] per CPU, and posts the returned
//! [`SchedEvent`]s on the events ring. Every state word is one `AtomicU64` changed with a
//! compare-and-swap, so a claim on one CPU and a wakeup on another cannot both win; a caller
//! that needs the events of one thread to reach the ring in sequence order (the policy wants
//! that) performs the change and the post under one lock (the Linux runtime does).
//!
//! Status word layout: `seq << 32 | cpu << 8 | state` (state: 0 absent, 1 runnable,
//! 2 running, 3 blocked, 4 dead; cpu only meaningful while running). A commit does not bump
//! the sequence number; every other change does, by exactly one.

use core::sync::atomic::{AtomicU64, Ordering};

use wave_abi::sched::{
    EventKind, FailReason, PreemptRequest, SchedEvent, SlotReader, MAX_CPUS, NO_CPU,
};

/// Run state of a host thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// The tid was never created.
    Absent,
    /// Ready to run, not running.
    Runnable,
    /// Running on this CPU.
    Running(u32),
    /// Waiting for a wakeup.
    Blocked,
    /// Exited (the tid may be created again).
    Dead,
}

/// A decoded status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Run state.
    pub state: ThreadState,
    /// Sequence number (bumped at every state change except a commit).
    pub seq: u32,
}

const ST_ABSENT: u64 = 0;
const ST_RUNNABLE: u64 = 1;
const ST_RUNNING: u64 = 2;
const ST_BLOCKED: u64 = 3;
const ST_DEAD: u64 = 4;

impl Status {
    fn decode(w: u64) -> Status {
        let state = match w & 0xFF {
            ST_RUNNABLE => ThreadState::Runnable,
            ST_RUNNING => ThreadState::Running(((w >> 8) & 0xFFFF) as u32),
            ST_BLOCKED => ThreadState::Blocked,
            ST_DEAD => ThreadState::Dead,
            _ => ThreadState::Absent,
        };
        Status {
            state,
            seq: (w >> 32) as u32,
        }
    }

    fn encode(self) -> u64 {
        let (st, cpu) = match self.state {
            ThreadState::Absent => (ST_ABSENT, 0),
            ThreadState::Runnable => (ST_RUNNABLE, 0),
            ThreadState::Running(c) => (ST_RUNNING, c as u64 & 0xFFFF),
            ThreadState::Blocked => (ST_BLOCKED, 0),
            ThreadState::Dead => (ST_DEAD, 0),
        };
        (self.seq as u64) << 32 | cpu << 8 | st
    }
}

/// One thread's status in host memory: state word, accumulated runtime, allowed CPUs.
#[derive(Debug)]
pub struct ThreadSlot {
    word: AtomicU64,
    runtime_ns: AtomicU64,
    mask: AtomicU64,
}

impl ThreadSlot {
    /// An absent thread allowed on every CPU.
    pub const fn new() -> Self {
        ThreadSlot {
            word: AtomicU64::new(0),
            runtime_ns: AtomicU64::new(0),
            mask: AtomicU64::new(u64::MAX),
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        Status::decode(self.word.load(Ordering::Acquire))
    }

    /// Total time spent running (ns), as reported by the stop calls.
    pub fn runtime_ns(&self) -> u64 {
        self.runtime_ns.load(Ordering::Relaxed)
    }

    /// Allowed CPUs.
    pub fn mask(&self) -> u64 {
        self.mask.load(Ordering::Acquire)
    }
}

impl Default for ThreadSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a state change was refused (nothing was changed and no event is due).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionError {
    /// tid out of range.
    BadTid,
    /// The thread is not in a state this change applies to (its current state).
    WrongState(ThreadState),
    /// Affinity mask empty or naming CPUs outside the session.
    BadMask,
}

/// Per-CPU memory of what this CPU already took from its slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCursor {
    /// The last transaction id taken (0: none).
    pub last_txn: u64,
    /// The last preempt generation seen.
    pub last_preempt: u64,
}

/// The outcome of one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The thread now runs on the CPU (status word says `Running(cpu)` at `seq`).
    Committed {
        /// Thread.
        tid: u32,
        /// Its (unchanged) sequence number.
        seq: u32,
    },
    /// Refused for this reason.
    Failed(FailReason),
    /// The agent's abort won.
    Aborted,
}

/// A transaction taken from a CPU slot: its outcome and the one event that reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Transaction id.
    pub txn: u64,
    /// What happened.
    pub outcome: ClaimOutcome,
    /// The outcome event to post (exactly one per transaction taken).
    pub event: SchedEvent,
}

/// The mechanism over caller-provided thread storage (`tid` = index).
pub struct Mechanism<'s> {
    threads: &'s [ThreadSlot],
    n_cpus: u32,
}

/// Most compare-and-swap retries one call makes before giving up (bounded work).
const CAS_RETRIES: usize = 64;

impl<'s> Mechanism<'s> {
    /// A mechanism for `threads.len()` threads (the session's `n_threads`) and `n_cpus`
    /// CPUs (at most [`MAX_CPUS`]).
    pub fn new(threads: &'s [ThreadSlot], n_cpus: u32) -> Self {
        Mechanism {
            threads,
            n_cpus: n_cpus.min(MAX_CPUS),
        }
    }

    /// Number of threads.
    pub fn n_threads(&self) -> u32 {
        self.threads.len() as u32
    }

    /// Number of CPUs.
    pub fn n_cpus(&self) -> u32 {
        self.n_cpus
    }

    /// Thread `tid`'s slot.
    pub fn thread(&self, tid: u32) -> Option<&'s ThreadSlot> {
        self.threads.get(tid as usize)
    }

    /// Thread `tid`'s status.
    pub fn status(&self, tid: u32) -> Option<Status> {
        self.thread(tid).map(|t| t.status())
    }

    fn all_cpus(&self) -> u64 {
        if self.n_cpus >= 64 {
            u64::MAX
        } else {
            (1u64 << self.n_cpus) - 1
        }
    }

    /// Applies `f` (current status → new state, or refusal) with a CAS loop, bumping seq.
    fn change(
        &self,
        tid: u32,
        f: impl Fn(Status) -> Result<ThreadState, TransitionError>,
    ) -> Result<(Status, Status), TransitionError> {
        let t = self.thread(tid).ok_or(TransitionError::BadTid)?;
        let mut w = t.word.load(Ordering::Acquire);
        for _ in 0..CAS_RETRIES {
            let old = Status::decode(w);
            let new = Status {
                state: f(old)?,
                seq: old.seq.wrapping_add(1),
            };
            match t
                .word
                .compare_exchange(w, new.encode(), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok((old, new)),
                Err(now) => w = now,
            }
        }
        Err(TransitionError::WrongState(Status::decode(w).state))
    }

    fn event(kind: EventKind, tid: u32, seq: u32, cpu: u32, now_ns: u64) -> SchedEvent {
        let mut e = SchedEvent::new(kind);
        e.tid = tid;
        e.seq = seq;
        e.cpu = cpu;
        e.time_ns = now_ns;
        e
    }

    /// Creates `tid` (absent or dead before), runnable or blocked: `ThreadNew`. A new thread
    /// is allowed on every CPU (the event carries no mask, and the policy assumes all), so a
    /// reused tid does not inherit the affinity of the thread that died.
    pub fn thread_new(
        &self,
        tid: u32,
        runnable: bool,
        now_ns: u64,
    ) -> Result<SchedEvent, TransitionError> {
        let t = self.thread(tid).ok_or(TransitionError::BadTid)?;
        match t.status().state {
            ThreadState::Absent | ThreadState::Dead => {}
            st => return Err(TransitionError::WrongState(st)),
        }
        // Mask first, then the seq bump (as in `set_affinity`).
        t.mask.store(u64::MAX, Ordering::Release);
        let (_, new) = self.change(tid, |s| match s.state {
            ThreadState::Absent | ThreadState::Dead => Ok(if runnable {
                ThreadState::Runnable
            } else {
                ThreadState::Blocked
            }),
            st => Err(TransitionError::WrongState(st)),
        })?;
        let mut e = Self::event(EventKind::ThreadNew, tid, new.seq, NO_CPU, now_ns);
        e.arg = runnable as u32;
        Ok(e)
    }

    /// Resynchronisation (`docs/abi.md` §7.7): the host's truth for a new agent, one event per
    /// live thread in tid order — `ThreadNew` (runnable or blocked) or `ThreadRunning` (with
    /// its CPU) at the thread's current sequence number, no state change — then, for a thread
    /// whose affinity is not every CPU, an `Affinity` change re-applying its mask (a real
    /// change: it bumps the seq, so the new agent accepts it). Call it with the event funnel
    /// held, so no state change slips in between.
    pub fn resync(&self, now_ns: u64, mut emit: impl FnMut(SchedEvent)) {
        for tid in 0..self.n_threads() {
            let Some(st) = self.status(tid) else { continue };
            let e = match st.state {
                ThreadState::Absent | ThreadState::Dead => continue,
                ThreadState::Runnable | ThreadState::Blocked => {
                    let mut e = Self::event(EventKind::ThreadNew, tid, st.seq, NO_CPU, now_ns);
                    e.arg = (st.state == ThreadState::Runnable) as u32;
                    e
                }
                ThreadState::Running(c) => {
                    Self::event(EventKind::ThreadRunning, tid, st.seq, c, now_ns)
                }
            };
            emit(e);
            let mask = self.thread(tid).map_or(u64::MAX, |t| t.mask());
            if mask & self.all_cpus() != self.all_cpus() {
                if let Ok(a) = self.set_affinity(tid, mask, now_ns) {
                    emit(a);
                }
            }
        }
    }

    /// A blocked thread becomes runnable: `Wakeup`.
    pub fn wakeup(&self, tid: u32, now_ns: u64) -> Result<SchedEvent, TransitionError> {
        let (_, new) = self.change(tid, |s| match s.state {
            ThreadState::Blocked => Ok(ThreadState::Runnable),
            st => Err(TransitionError::WrongState(st)),
        })?;
        Ok(Self::event(EventKind::Wakeup, tid, new.seq, NO_CPU, now_ns))
    }

    fn stop(
        &self,
        kind: EventKind,
        to: ThreadState,
        tid: u32,
        cpu: u32,
        ran_ns: u64,
        now_ns: u64,
    ) -> Result<SchedEvent, TransitionError> {
        let (_, new) = self.change(tid, |s| match s.state {
            ThreadState::Running(c) if c == cpu => Ok(to),
            st => Err(TransitionError::WrongState(st)),
        })?;
        if let Some(t) = self.thread(tid) {
            t.runtime_ns.fetch_add(ran_ns, Ordering::Relaxed);
        }
        let mut e = Self::event(kind, tid, new.seq, cpu, now_ns);
        e.ran_ns = ran_ns;
        Ok(e)
    }

    /// The thread running on `cpu` blocked after running `ran_ns`: `Blocked`.
    pub fn blocked(
        &self,
        tid: u32,
        cpu: u32,
        ran_ns: u64,
        now_ns: u64,
    ) -> Result<SchedEvent, TransitionError> {
        self.stop(
            EventKind::Blocked,
            ThreadState::Blocked,
            tid,
            cpu,
            ran_ns,
            now_ns,
        )
    }

    /// The thread running on `cpu` yielded (stays runnable): `Yield`.
    pub fn yielded(
        &self,
        tid: u32,
        cpu: u32,
        ran_ns: u64,
        now_ns: u64,
    ) -> Result<SchedEvent, TransitionError> {
        self.stop(
            EventKind::Yield,
            ThreadState::Runnable,
            tid,
            cpu,
            ran_ns,
            now_ns,
        )
    }

    /// The thread running on `cpu` was preempted at a safe point: `Preempted`.
    pub fn preempted(
        &self,
        tid: u32,
        cpu: u32,
        ran_ns: u64,
        now_ns: u64,
    ) -> Result<SchedEvent, TransitionError> {
        self.stop(
            EventKind::Preempted,
            ThreadState::Runnable,
            tid,
            cpu,
            ran_ns,
            now_ns,
        )
    }

    /// The thread exits, from any live state: `Dead` (cpu = where it ran, if running).
    pub fn dead(&self, tid: u32, ran_ns: u64, now_ns: u64) -> Result<SchedEvent, TransitionError> {
        let (old, new) = self.change(tid, |s| match s.state {
            ThreadState::Absent | ThreadState::Dead => Err(TransitionError::WrongState(s.state)),
            _ => Ok(ThreadState::Dead),
        })?;
        let cpu = match old.state {
            ThreadState::Running(c) => c,
            _ => NO_CPU,
        };
        if let Some(t) = self.thread(tid) {
            t.runtime_ns.fetch_add(ran_ns, Ordering::Relaxed);
        }
        let mut e = Self::event(EventKind::Dead, tid, new.seq, cpu, now_ns);
        // Only a run that ended has a run time (`docs/abi.md` §8).
        e.ran_ns = if cpu == NO_CPU { 0 } else { ran_ns };
        Ok(e)
    }

    /// Changes a live thread's allowed CPUs (run state unchanged): `Affinity`.
    pub fn set_affinity(
        &self,
        tid: u32,
        mask: u64,
        now_ns: u64,
    ) -> Result<SchedEvent, TransitionError> {
        if mask == 0 || mask & !self.all_cpus() != 0 {
            return Err(TransitionError::BadMask);
        }
        let t = self.thread(tid).ok_or(TransitionError::BadTid)?;
        match t.status().state {
            ThreadState::Absent | ThreadState::Dead => {
                return Err(TransitionError::WrongState(t.status().state))
            }
            _ => {}
        }
        // Mask first, then the seq bump: a claim that saw the old seq re-validates.
        t.mask.store(mask, Ordering::Release);
        let (_, new) = self.change(tid, |s| match s.state {
            ThreadState::Absent | ThreadState::Dead => Err(TransitionError::WrongState(s.state)),
            st => Ok(st),
        })?;
        let mut e = Self::event(EventKind::Affinity, tid, new.seq, NO_CPU, now_ns);
        e.mask = mask;
        Ok(e)
    }

    /// CPU `cpu` looks at its slot (it has nothing to run). Returns `None` if there is no new
    /// transaction of this session; otherwise takes it (it is never taken again) and decides,
    /// alone: aborted if the agent's abort word names it, else committed if the thread is at
    /// exactly the slot's seq, runnable, not running anywhere and allowed on `cpu`, else
    /// failed with a reason. The returned event is the transaction's only outcome.
    pub fn claim(
        &self,
        slots: &SlotReader<'_>,
        cpu: u32,
        cursor: &mut CpuCursor,
        now_ns: u64,
    ) -> Option<Claim> {
        if cpu >= self.n_cpus {
            return None;
        }
        let p = slots.prestaged(cpu, cursor.last_txn)?;
        cursor.last_txn = p.txn;
        let mut ev = Self::event(EventKind::TxnFailed, p.tid, 0, cpu, now_ns);
        ev.txn = p.txn;
        if slots.abort_requested(cpu, p.txn) {
            ev.kind = EventKind::TxnAborted;
            ev.tid = 0;
            return Some(Claim {
                txn: p.txn,
                outcome: ClaimOutcome::Aborted,
                event: ev,
            });
        }
        let fail = |mut ev: SchedEvent, why: FailReason, seq: u32| {
            ev.arg = why as u32;
            ev.seq = seq;
            Some(Claim {
                txn: ev.txn,
                outcome: ClaimOutcome::Failed(why),
                event: ev,
            })
        };
        let Some(t) = self.thread(p.tid) else {
            // An out-of-range tid cannot be named in an event (the decoder would drop it and
            // the agent would never learn the outcome): report it against tid 0.
            ev.tid = 0;
            return fail(ev, FailReason::Invalid, 0);
        };
        let mut w = t.word.load(Ordering::Acquire);
        for _ in 0..CAS_RETRIES {
            let s = Status::decode(w);
            match s.state {
                ThreadState::Absent => return fail(ev, FailReason::NotFound, s.seq),
                _ if s.seq != p.seq => return fail(ev, FailReason::Stale, s.seq),
                ThreadState::Runnable => {}
                _ => return fail(ev, FailReason::NotRunnable, s.seq),
            }
            if t.mask.load(Ordering::Acquire) & (1u64 << cpu) == 0 {
                return fail(ev, FailReason::Invalid, s.seq);
            }
            let running = Status {
                state: ThreadState::Running(cpu),
                seq: s.seq,
            };
            match t
                .word
                .compare_exchange(w, running.encode(), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    ev.kind = EventKind::TxnCommitted;
                    ev.seq = s.seq;
                    return Some(Claim {
                        txn: p.txn,
                        outcome: ClaimOutcome::Committed {
                            tid: p.tid,
                            seq: s.seq,
                        },
                        event: ev,
                    });
                }
                Err(now) => w = now,
            }
        }
        let s = Status::decode(w);
        fail(ev, FailReason::Stale, s.seq)
    }

    /// CPU `cpu` has nothing to run: `CpuIdle` if its slot holds no transaction it has not
    /// taken yet (it may then sleep until its doorbell rings), else `None` (claim first).
    pub fn idle(
        &self,
        slots: &SlotReader<'_>,
        cpu: u32,
        cursor: &CpuCursor,
        now_ns: u64,
    ) -> Option<SchedEvent> {
        if cpu >= self.n_cpus || slots.prestaged(cpu, cursor.last_txn).is_some() {
            return None;
        }
        Some(Self::event(EventKind::CpuIdle, 0, 0, cpu, now_ns))
    }

    /// Safe-point check on `cpu`, which runs `tid`: true (and the request) if the agent
    /// published a new preempt generation targeting exactly this thread at its current seq
    /// in this session. A request for another thread or an older seq is consumed and ignored.
    pub fn check_preempt(
        &self,
        slots: &SlotReader<'_>,
        cpu: u32,
        cursor: &mut CpuCursor,
        tid: u32,
    ) -> Option<PreemptRequest> {
        let req = slots.preempt(cpu, cursor.last_preempt)?;
        cursor.last_preempt = req.generation;
        let s = self.status(tid)?;
        (req.tid == tid && req.seq == s.seq && s.state == ThreadState::Running(cpu)).then_some(req)
    }
}

#[cfg(test)]
mod tests;
