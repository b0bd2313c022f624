//! The ghOSt bookkeeping shared by every centralized policy: the policy's view of every thread
//! and cpu, sequence numbers, the per-cpu prestaged transaction (k = 1), transaction outcomes,
//! aborts, steals and the mechanics of preemption. *Which* thread runs next, and when a run
//! has had enough, is the [`Discipline`]'s business ([`crate::discipline`]).
//!
//! Every policy is this core with a different discipline: `SchedCore<C, T, Fifo<T>>` is
//! [`crate::CentralizedFifo`], and so on. Everything is fixed-capacity (`C` cpus, `T`
//! threads, const parameters), no allocation, and every call does bounded work: `on_event` is
//! O(discipline), `poll` is O(changed cpus + decisions * discipline pick), independent of `C`
//! for a steady workload (see *Incremental state* below), and `next_deadline` is O(1).
//!
//! # Incremental state
//! A poll looks only at the cpus that changed since the previous poll (`touched`, set by every
//! event or decision that changes a cpu) and at the cpus whose slice or steal threshold has
//! passed (`due`, found through the per-cpu timer minimum [`TimerMin`]). From each changed cpu
//! it derives the sets the phases iterate (`open`: no prestaged transaction; `empty`: nothing
//! running either; `work`: a doorbell or abort to send; `evict`: its run lost its affinity)
//! and its next timer. The decisions are the same, in the same order, as a scan of every cpu
//! would give; a poll that stops early (`out` full) makes the next one rescan every cpu.
//!
//! # The view
//! Per thread: its latest sequence number, its run state as of the latest event
//! (`Live`) and where the policy has put it (`Place`). Per cpu: the run it believes is
//! on the cpu, the outstanding prestaged transaction, and whether the cpu said it sleeps.
//! The host is authoritative; the view is only a best guess that the host's commit check makes
//! safe. [`SchedCore::check_invariants`] states what must always hold.

use crate::cpuset::{mask_allows, mask_meets, CpuSet, TimerMin, MAX_SET_CPUS};
use crate::discipline::Discipline;
use crate::types::{
    ConfigError, CpuId, Decision, DecisionSink, Event, FailReason, PolicyStats, Seq, Tid, TxnId,
};
use crate::Policy;

pub use crate::discipline::SCAN_LIMIT;

/// Thread indices are stored as `u16`; this one is reserved.
const NIL: u16 = u16::MAX;

/// Smallest accepted time slice (1 µs).
pub const MIN_SLICE_NS: u64 = 1_000;
/// Largest accepted time slice (1 s).
pub const MAX_SLICE_NS: u64 = 1_000_000_000;

/// Run state of a thread as of the latest event the policy accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    /// Never seen (or the slot was never used).
    Absent,
    Runnable,
    Running(u16),
    Blocked,
    Dead,
}

/// Where the policy put a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    None,
    /// In the discipline's run queue.
    Queued,
    /// The subject of the outstanding transaction on this cpu.
    Prestaged(u16),
    /// Runnable per our latest event, but the host refused it at that sequence number, so a
    /// newer event is on its way; the thread waits for it.
    Parked,
}

#[derive(Clone, Copy, Debug)]
struct Thread {
    live: Live,
    place: Place,
    /// Latest accepted sequence number.
    seq: Seq,
    /// Sequence number of the latest run-state change (everything but `Affinity`).
    state_seq: Seq,
}

impl Thread {
    const EMPTY: Thread = Thread {
        live: Live::Absent,
        place: Place::None,
        seq: Seq(0),
        state_seq: Seq(0),
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AbortState {
    None,
    /// To be emitted at the next poll.
    Wanted {
        steal: bool,
    },
    Sent {
        steal: bool,
    },
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    txn: TxnId,
    tid: u16,
    seq: Seq,
    abort: AbortState,
    /// The prestage carried a doorbell (or a `Wake` followed it).
    woke: bool,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    tid: u16,
    since: u64,
    /// Sequence number a `Preempt` was sent for (re-sent if the thread's seq moves on).
    preempt_sent: Option<Seq>,
    /// The thread's affinity no longer allows this cpu.
    evict: bool,
}

#[derive(Clone, Copy, Debug)]
struct Cpu {
    current: Option<Run>,
    pending: Option<Pending>,
    /// Reported `CpuIdle` and has not committed anything since.
    idle: bool,
    need_wake: bool,
}

impl Cpu {
    const INIT: Cpu = Cpu {
        current: None,
        pending: None,
        idle: true,
        need_wake: false,
    };
}

/// Which busy cpu gets a prestaged thread first when there are fewer queued threads than
/// empty slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyOrder {
    /// The cpu whose current run started most recently (likely a short request, done soon).
    YoungestFirst,
    /// The cpu whose current run started longest ago (the next to be preempted).
    OldestFirst,
}

/// The centralized scheduling core over discipline `D`. `C` = cpu capacity (`<=
/// MAX_SET_CPUS`, 256; affinity beyond cpu 63 as in [`CpuSet::from_abi_mask`]), `T` = thread
/// capacity (`< 65535`).
#[derive(Clone, Debug)]
pub struct SchedCore<const C: usize, const T: usize, D> {
    n_cpus: usize,
    disc: D,
    threads: [Thread; T],
    /// Allowed cpus per thread as the ABI mask (apart from `threads` to keep [`Thread`] at 16
    /// bytes; read with [`mask_allows`]: all ones is every cpu, up to 256).
    masks: [u64; T],
    cpus: [Cpu; C],
    next_txn: u64,
    steals_in_flight: usize,
    stats: PolicyStats,
    /// Derived per-cpu state, see *Incremental state* in the module doc.
    inc: Incremental<C>,
}

/// What a poll needs to find the cpus it must look at without scanning them all.
#[derive(Clone, Debug)]
struct Incremental<const C: usize> {
    /// Cpus changed since their derived state below was last computed.
    touched: CpuSet,
    /// Recompute every cpu at the next poll (after an early stop, and at start).
    rescan: bool,
    /// No outstanding transaction.
    open: CpuSet,
    /// No transaction and nothing running (hungry).
    empty: CpuSet,
    /// A doorbell to ring or an abort to send.
    work: CpuSet,
    /// The current run must leave (affinity).
    evict: CpuSet,
    /// The current run has passed its slice or the steal threshold (as of the last sync).
    due: CpuSet,
    /// Per cpu, the next slice expiry or steal threshold not yet passed.
    timers: TimerMin<C>,
}

impl<const C: usize, const T: usize, D: Discipline> SchedCore<C, T, D> {
    const CAPACITY_OK: () = assert!(C >= 1 && C <= MAX_SET_CPUS && T >= 1 && T < NIL as usize);

    /// A core for `n_cpus` cpus (all assumed asleep), no threads, queueing with `disc`.
    pub fn with_discipline(n_cpus: usize, disc: D) -> Result<Self, ConfigError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        Self::check_cpus_count(n_cpus)?;
        Ok(Self::build(n_cpus, disc))
    }

    /// `n_cpus` is in `1..=C`.
    pub fn check_cpus_count(n_cpus: usize) -> Result<(), ConfigError> {
        if n_cpus == 0 || n_cpus > C {
            return Err(ConfigError::CpuCount);
        }
        Ok(())
    }

    /// [`Self::with_discipline`] for an `n_cpus` already checked: infallible, so the compiler
    /// can build the (large) value in place.
    #[inline(always)]
    pub(crate) fn build(n_cpus: usize, disc: D) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        SchedCore {
            n_cpus,
            disc,
            threads: [Thread::EMPTY; T],
            masks: [u64::MAX; T],
            cpus: [Cpu::INIT; C],
            next_txn: 1,
            steals_in_flight: 0,
            stats: PolicyStats::default(),
            inc: Incremental {
                touched: CpuSet::EMPTY,
                rescan: true,
                open: CpuSet::EMPTY,
                empty: CpuSet::EMPTY,
                work: CpuSet::EMPTY,
                evict: CpuSet::EMPTY,
                due: CpuSet::EMPTY,
                timers: TimerMin::new(),
            },
        }
    }

    /// Host cpus scheduled.
    pub fn n_cpus(&self) -> usize {
        self.n_cpus
    }

    /// The discipline.
    pub fn discipline(&self) -> &D {
        &self.disc
    }

    /// The discipline, mutably (per-thread settings such as weights).
    pub fn discipline_mut(&mut self) -> &mut D {
        &mut self.disc
    }

    /// The counters.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// Threads in the run queue.
    pub fn queue_len(&self) -> usize {
        self.disc.len()
    }

    /// Outstanding prestaged transactions (at most one per cpu).
    pub fn outstanding_txns(&self) -> usize {
        self.cpus[..self.n_cpus]
            .iter()
            .filter(|c| c.pending.is_some())
            .count()
    }

    // ----------------------------------------------------------------------------------
    // Run queue (the discipline's), and the counters that follow it.

    fn enqueue(&mut self, i: usize, returned: bool) {
        self.disc.enqueue(i, returned);
        self.threads[i].place = Place::Queued;
        let len = self.disc.len() as u64;
        self.stats.queue_len = len;
        self.stats.queue_max = self.stats.queue_max.max(len);
    }

    fn unlink(&mut self, i: usize, dispatched: bool) {
        if dispatched {
            self.disc.take(i);
        } else {
            self.disc.remove(i);
        }
        self.threads[i].place = Place::None;
        self.stats.queue_len = self.disc.len() as u64;
    }

    /// A thread runnable per our view with no place goes into the queue.
    fn settle(&mut self, i: usize, front: bool) {
        let t = &self.threads[i];
        if t.live == Live::Runnable && t.place == Place::None {
            self.enqueue(i, front);
        }
    }

    // ----------------------------------------------------------------------------------
    // Validation.

    fn tid_index(&mut self, tid: Tid) -> Option<usize> {
        let i = tid.0 as usize;
        if i < T {
            Some(i)
        } else {
            self.stats.bad_tid += 1;
            None
        }
    }

    fn cpu_index(&mut self, cpu: CpuId) -> Option<usize> {
        let c = cpu.0 as usize;
        if c < self.n_cpus {
            Some(c)
        } else {
            self.stats.bad_cpu += 1;
            None
        }
    }

    // ----------------------------------------------------------------------------------
    // Events.

    /// Apply one host event observed at `now_ns`.
    pub fn on_event(&mut self, ev: Event, now_ns: u64) {
        self.stats.events[ev.kind().index()] += 1;
        let stop = |live, ran_ns| Change::State(live, Some(ran_ns));
        match ev {
            Event::ThreadNew { tid, seq, runnable } => self.thread_new(tid, seq, runnable),
            Event::Wakeup { tid, seq } => {
                self.thread_event(tid, seq, None, Change::State(Live::Runnable, None), now_ns)
            }
            Event::Blocked {
                tid,
                seq,
                cpu,
                ran_ns,
            } => self.thread_event(tid, seq, Some(cpu), stop(Live::Blocked, ran_ns), now_ns),
            Event::Yield {
                tid,
                seq,
                cpu,
                ran_ns,
            }
            | Event::Preempted {
                tid,
                seq,
                cpu,
                ran_ns,
            } => self.thread_event(tid, seq, Some(cpu), stop(Live::Runnable, ran_ns), now_ns),
            Event::Dead {
                tid,
                seq,
                cpu,
                ran_ns,
            } => {
                let change = Change::State(Live::Dead, cpu.map(|_| ran_ns));
                self.thread_event(tid, seq, cpu, change, now_ns)
            }
            Event::Affinity { tid, seq, mask } => {
                self.thread_event(tid, seq, None, Change::Mask(mask), now_ns)
            }
            Event::TxnCommitted { txn, tid, cpu } => self.committed(txn, tid, cpu, now_ns),
            Event::TxnFailed {
                txn,
                tid,
                cpu,
                reason,
            } => self.failed(txn, tid, cpu, reason),
            Event::TxnAborted { txn, cpu } => self.aborted(txn, cpu),
            Event::CpuIdle { cpu } => self.cpu_idle(cpu),
            Event::ThreadRunning { tid, seq, cpu } => self.thread_running(tid, seq, cpu, now_ns),
        }
    }

    /// Resynchronisation: `tid` exists and runs on `cpu` (a new agent learning the host's
    /// truth). Refused (counted as a duplicate) if the tid is live or the cpu already busy.
    fn thread_running(&mut self, tid: Tid, seq: Seq, cpu: CpuId, now: u64) {
        let Some(i) = self.tid_index(tid) else { return };
        let c = cpu.0 as usize;
        let free = matches!(self.threads[i].live, Live::Absent | Live::Dead);
        let Some(slot) = self.cpus.get(c) else { return };
        if !free || slot.current.is_some() || slot.pending.is_some() {
            self.stats.duplicate_new += 1;
            return;
        }
        self.threads[i] = Thread {
            live: Live::Running(c as u16),
            place: Place::None,
            seq,
            state_seq: seq,
        };
        self.masks[i] = u64::MAX;
        self.disc.reset(i);
        self.cpus[c].idle = false;
        self.cpus[c].need_wake = false;
        self.cpus[c].current = Some(Run {
            tid: tid.0 as u16,
            since: now,
            preempt_sent: None,
            evict: false,
        });
    }

    fn thread_new(&mut self, tid: Tid, seq: Seq, runnable: bool) {
        let Some(i) = self.tid_index(tid) else { return };
        let t = &self.threads[i];
        let reusable = match t.live {
            Live::Absent => true,
            // A tid may be reused after death, once no transaction refers to it.
            Live::Dead => seq.is_newer_than(t.seq),
            _ => false,
        };
        if !reusable {
            self.stats.duplicate_new += 1;
            return;
        }
        // A revived tid may still be the subject of a transaction from its previous life
        // (already being retracted, since `Dead` was newer); it keeps that place until the
        // outcome arrives.
        let place = match t.place {
            Place::Prestaged(c) => Place::Prestaged(c),
            _ => Place::None,
        };
        self.threads[i] = Thread {
            live: if runnable {
                Live::Runnable
            } else {
                Live::Blocked
            },
            place,
            seq,
            state_seq: seq,
        };
        self.masks[i] = u64::MAX;
        self.disc.reset(i);
        if let Place::Prestaged(c) = place {
            self.retract(c as usize);
        }
        self.settle(i, false);
    }

    fn thread_event(
        &mut self,
        tid: Tid,
        seq: Seq,
        cpu: Option<CpuId>,
        change: Change,
        now_ns: u64,
    ) {
        let Some(i) = self.tid_index(tid) else { return };
        let ev_cpu = match cpu {
            Some(c) => match self.cpu_index(c) {
                Some(c) => Some(c),
                None => return,
            },
            None => None,
        };
        let t = &mut self.threads[i];
        if t.live == Live::Absent {
            self.stats.unknown_thread += 1;
            return;
        }
        if !seq.is_newer_than(t.seq) {
            self.stats.stale_events += 1;
            return;
        }
        t.seq = seq;
        if t.place == Place::Parked {
            // The newer event we were waiting for.
            t.place = Place::None;
        }
        if let Live::Running(c) = t.live {
            // Its run's sequence number moved: a preempt sent at the old one may be due again.
            self.inc.touched.insert(c as usize);
        }
        match change {
            Change::Mask(mask) => {
                self.masks[i] = mask;
                if let Live::Running(c) = t.live {
                    if !mask_allows(mask, c as usize) {
                        if let Some(r) = self.cpus[c as usize].current.as_mut() {
                            r.evict = true;
                        }
                    }
                }
            }
            Change::State(new, ran) => {
                t.state_seq = seq;
                if let Some(ran_ns) = ran {
                    self.charge_run(i, ran_ns, now_ns);
                }
                self.set_live(i, new, ev_cpu);
            }
        }
        // Any newer event makes an outstanding transaction for this thread stale: retract it
        // (the host would fail it anyway; aborting frees the slot sooner).
        if let Place::Prestaged(c) = self.threads[i].place {
            self.retract(c as usize);
        }
        self.settle(i, false);
    }

    /// Asks for an abort of cpu `c`'s outstanding transaction (if not already asked).
    fn retract(&mut self, c: usize) {
        if let Some(p) = self.cpus[c].pending.as_mut() {
            if p.abort == AbortState::None {
                p.abort = AbortState::Wanted { steal: false };
                self.inc.touched.insert(c);
            }
        }
    }

    /// A run of thread `i` ended: the discipline learns its cpu time, as the host measured it
    /// or, from a host that does not measure (`ran_ns` 0), as far as our view tells.
    fn charge_run(&mut self, i: usize, ran_ns: u64, now_ns: u64) {
        let ran = if ran_ns > 0 {
            ran_ns
        } else {
            match self.threads[i].live {
                Live::Running(c) => self.cpus[c as usize]
                    .current
                    .filter(|r| r.tid as usize == i)
                    .map_or(0, |r| now_ns.saturating_sub(r.since)),
                _ => 0,
            }
        };
        if ran > 0 {
            self.disc.charge(i, ran);
        }
    }

    fn set_live(&mut self, i: usize, new: Live, ev_cpu: Option<usize>) {
        let old = self.threads[i].live;
        match old {
            Live::Running(c) => {
                let cpu = &mut self.cpus[c as usize];
                if cpu.current.is_some_and(|r| r.tid as usize == i) {
                    cpu.current = None;
                    self.inc.touched.insert(c as usize);
                }
                if ev_cpu.is_some_and(|e| e != c as usize) {
                    self.stats.inconsistent += 1;
                }
            }
            _ => {
                // A stop event from a cpu we did not think it ran on.
                if ev_cpu.is_some() && new != Live::Dead {
                    self.stats.inconsistent += 1;
                }
            }
        }
        if new != Live::Runnable && self.threads[i].place == Place::Queued {
            self.unlink(i, false);
        }
        self.threads[i].live = new;
    }

    /// Validates an outcome against the cpu's outstanding transaction and takes it.
    fn take_pending(
        &mut self,
        txn: TxnId,
        tid: Option<Tid>,
        cpu: CpuId,
    ) -> Option<(usize, Pending)> {
        let c = self.cpu_index(cpu)?;
        match self.cpus[c].pending {
            Some(p) if p.txn == txn && tid.is_none_or(|t| t.0 == p.tid as u32) => {
                self.cpus[c].pending = None;
                self.inc.touched.insert(c);
                if let AbortState::Sent { steal: true } = p.abort {
                    self.steals_in_flight = self.steals_in_flight.saturating_sub(1);
                }
                let t = &mut self.threads[p.tid as usize];
                debug_assert_eq!(t.place, Place::Prestaged(c as u16));
                t.place = Place::None;
                Some((c, p))
            }
            _ => {
                self.stats.unknown_txn += 1;
                None
            }
        }
    }

    /// The cpu's believed run is over without us seeing its stop event: park the thread until
    /// its next event (which the host guarantees, since it stopped).
    fn displace(&mut self, c: usize) {
        if let Some(r) = self.cpus[c].current.take() {
            self.inc.touched.insert(c);
            self.stats.inconsistent += 1;
            let t = &mut self.threads[r.tid as usize];
            if t.live == Live::Running(c as u16) {
                t.live = Live::Runnable;
                t.place = Place::Parked;
                self.stats.parked += 1;
            }
        }
    }

    fn committed(&mut self, txn: TxnId, tid: Tid, cpu: CpuId, now: u64) {
        let Some((c, p)) = self.take_pending(txn, Some(tid), cpu) else {
            return;
        };
        self.stats.txn_committed += 1;
        if matches!(p.abort, AbortState::Sent { .. }) {
            self.stats.abort_lost += 1;
        }
        self.cpus[c].idle = false;
        self.cpus[c].need_wake = false;
        self.displace(c);
        let i = p.tid as usize;
        let t = &mut self.threads[i];
        self.inc.touched.insert(c);
        if t.live == Live::Runnable && !t.state_seq.is_newer_than(p.seq) {
            t.live = Live::Running(c as u16);
            let evict = !mask_allows(self.masks[i], c);
            self.cpus[c].current = Some(Run {
                tid: p.tid,
                since: now,
                preempt_sent: None,
                evict,
            });
        } else {
            // The run already ended (we saw a newer run-state event first).
            self.settle(i, false);
        }
    }

    fn failed(&mut self, txn: TxnId, tid: Tid, cpu: CpuId, reason: FailReason) {
        let Some((_, p)) = self.take_pending(txn, Some(tid), cpu) else {
            return;
        };
        match reason {
            FailReason::Stale => self.stats.txn_failed_stale += 1,
            FailReason::NotRunnable => self.stats.txn_failed_not_runnable += 1,
            FailReason::NotFound | FailReason::Invalid => self.stats.txn_failed_other += 1,
        }
        if matches!(p.abort, AbortState::Sent { .. }) {
            self.stats.abort_lost += 1;
        }
        let i = p.tid as usize;
        let t = &mut self.threads[i];
        if t.live != Live::Runnable {
            return;
        }
        let we_are_behind = matches!(
            reason,
            FailReason::Stale | FailReason::NotRunnable | FailReason::NotFound
        ) && !t.seq.is_newer_than(p.seq);
        if we_are_behind {
            // The host has news we have not seen; the event carrying it will release the thread.
            t.place = Place::Parked;
            self.stats.parked += 1;
        } else {
            // Our view is newer than the decision: the thread is still runnable. It was at the
            // head of the queue when prestaged, so it goes back to the front.
            self.settle(i, true);
        }
    }

    fn aborted(&mut self, txn: TxnId, cpu: CpuId) {
        let Some((_, p)) = self.take_pending(txn, None, cpu) else {
            return;
        };
        if matches!(p.abort, AbortState::Sent { .. }) {
            self.stats.abort_won += 1;
        } else {
            self.stats.inconsistent += 1;
        }
        self.settle(p.tid as usize, true);
    }

    fn cpu_idle(&mut self, cpu: CpuId) {
        let Some(c) = self.cpu_index(cpu) else { return };
        self.displace(c);
        self.inc.touched.insert(c);
        let cpu = &mut self.cpus[c];
        cpu.idle = true;
        if let Some(p) = cpu.pending.as_mut() {
            // The cpu went to sleep before our prestage reached its slot: ring it.
            if !p.woke {
                p.woke = true;
                cpu.need_wake = true;
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Decisions.

    /// Emit decisions for time `now_ns` into `out` until done or `out` is full. Returns the
    /// number emitted. State changes only for decisions that were accepted by `out`.
    pub fn poll(&mut self, now_ns: u64, out: &mut dyn DecisionSink) -> usize {
        let mut emitted = 0;
        self.sync(now_ns);
        // Stops early (`None`) when `out` is full; what was not emitted stays due, and the
        // next poll looks at every cpu again.
        if self.poll_phases(now_ns, out, &mut emitted).is_none() {
            self.inc.rescan = true;
        }
        self.sync(now_ns);
        emitted
    }

    // ----------------------------------------------------------------------------------
    // Incremental state.

    /// Brings the derived state of every changed cpu up to date at `now`, and moves the cpus
    /// whose timer has passed into `due`.
    fn sync(&mut self, now: u64) {
        if self.inc.rescan {
            self.inc.rescan = false;
            self.inc.touched = CpuSet::first(self.n_cpus);
        }
        let touched = self.inc.touched;
        self.inc.touched = CpuSet::EMPTY;
        for c in touched.iter() {
            self.refresh(c, now);
        }
        while let Some(c) = self.inc.timers.any_at_or_before(now) {
            self.refresh(c, now);
        }
    }

    /// Recomputes cpu `c`'s derived state at `now`; its timer is left `> now` (or none).
    fn refresh(&mut self, c: usize, now: u64) {
        let cpu = &self.cpus[c];
        let inc = &mut self.inc;
        inc.open.assign(c, cpu.pending.is_none());
        inc.empty
            .assign(c, cpu.pending.is_none() && cpu.current.is_none());
        let abort_wanted = cpu
            .pending
            .is_some_and(|p| matches!(p.abort, AbortState::Wanted { .. }));
        inc.work.assign(c, cpu.need_wake || abort_wanted);
        inc.evict.assign(c, cpu.current.is_some_and(|r| r.evict));
        let mut due = false;
        let mut next = u64::MAX;
        if let Some(r) = cpu.current {
            // `wake`: a deadline the agent sleeps until (as `scan_deadline` counts them). A
            // slice passed after a preempt was sent still makes the cpu due (a preempt sent
            // for affinity before the slice ended keeps it in `evict` meanwhile).
            let mut timer = |after: u64, wake: bool| {
                if now.saturating_sub(r.since) >= after {
                    due = true;
                } else if wake {
                    next = next.min(r.since.saturating_add(after));
                }
            };
            if let Some(s) = self.disc.slice_ns(r.tid as usize) {
                timer(s, r.preempt_sent.is_none());
            }
            if let (Some(a), Some(p)) = (self.disc.steal_after_ns(), cpu.pending) {
                if p.abort == AbortState::None {
                    timer(a, true);
                }
            }
        }
        inc.due.assign(c, due);
        inc.timers.set(c, next);
    }

    fn poll_phases(
        &mut self,
        now_ns: u64,
        out: &mut dyn DecisionSink,
        emitted: &mut usize,
    ) -> Option<()> {
        // 1. Doorbells and aborts first: cheap, and they unblock cpus.
        self.wakes_and_aborts(out, emitted)?;
        // 2. Fill empty slots: cpus with nothing running first, then busy cpus.
        self.fill_slots(out, emitted)?;
        // 3. Steal: a hungry cpu takes a thread waiting behind an old run elsewhere.
        self.sync(now_ns);
        self.steal(now_ns, out, emitted)?;
        // 4. Preempt: a run past its slice with a thread waiting, or evicted by affinity.
        self.sync(now_ns);
        self.preempt(now_ns, out, emitted)
    }

    /// Pushes `d` into `out`, counting it; `None` if `out` is full.
    fn push(out: &mut dyn DecisionSink, d: Decision, emitted: &mut usize) -> Option<()> {
        if out.try_push(d) {
            *emitted += 1;
            Some(())
        } else {
            None
        }
    }

    fn wakes_and_aborts(&mut self, out: &mut dyn DecisionSink, emitted: &mut usize) -> Option<()> {
        for c in self.inc.work.iter() {
            self.inc.touched.insert(c);
            let cpu_id = CpuId(c as u32);
            if self.cpus[c].need_wake {
                Self::push(out, Decision::Wake { cpu: cpu_id }, emitted)?;
                self.stats.wakes += 1;
                self.cpus[c].need_wake = false;
            }
            if let Some(p) = self.cpus[c].pending.as_mut() {
                if let AbortState::Wanted { steal } = p.abort {
                    let d = Decision::Abort {
                        cpu: cpu_id,
                        txn: p.txn,
                    };
                    Self::push(out, d, emitted)?;
                    p.abort = AbortState::Sent { steal };
                    self.stats.aborts += 1;
                }
            }
        }
        Some(())
    }

    fn fill_slots(&mut self, out: &mut dyn DecisionSink, emitted: &mut usize) -> Option<()> {
        if self.disc.is_empty() {
            return Some(());
        }
        let (empty, open) = (self.inc.empty, self.inc.open);
        for c in empty.iter() {
            if self.disc.is_empty() {
                return Some(());
            }
            self.prestage(c, out, emitted)?;
        }
        // Only the busy cpus without a transaction, collected without touching the rest.
        let mut busy: heapless::Vec<(u64, u16), C> = heapless::Vec::new();
        for c in open.minus(&empty).iter() {
            let cpu = &self.cpus[c];
            if let (Some(r), None) = (cpu.current, cpu.pending) {
                let key = match self.disc.busy_order() {
                    BusyOrder::OldestFirst => r.since,
                    BusyOrder::YoungestFirst => u64::MAX - r.since,
                };
                // At most one entry per cpu: never full.
                let _ = busy.push((key, c as u16));
            }
        }
        busy.sort_unstable();
        for &(_, c) in busy.iter() {
            if self.disc.is_empty() {
                break;
            }
            self.prestage(c as usize, out, emitted)?;
        }
        Some(())
    }

    fn steal(
        &mut self,
        now_ns: u64,
        out: &mut dyn DecisionSink,
        emitted: &mut usize,
    ) -> Option<()> {
        let Some(after) = self.disc.steal_after_ns() else {
            return Some(());
        };
        // The derived sets are current (synced after fill_slots).
        let hungry_set = self.inc.empty;
        let mut budget = hungry_set.len().saturating_sub(self.steals_in_flight);
        if budget == 0 {
            return Some(());
        }
        // Only a cpu past a timer can be past the steal threshold.
        for c in self.inc.due.iter() {
            if budget == 0 {
                break;
            }
            let cpu = &self.cpus[c];
            let (Some(r), Some(p)) = (cpu.current, cpu.pending) else {
                continue;
            };
            if p.abort != AbortState::None
                || now_ns.saturating_sub(r.since) < after
                || !mask_meets(self.masks[p.tid as usize], &hungry_set)
            {
                continue;
            }
            self.inc.touched.insert(c);
            let d = Decision::Abort {
                cpu: CpuId(c as u32),
                txn: p.txn,
            };
            Self::push(out, d, emitted)?;
            if let Some(p) = self.cpus[c].pending.as_mut() {
                p.abort = AbortState::Sent { steal: true };
            }
            self.steals_in_flight += 1;
            self.stats.aborts += 1;
            self.stats.steals += 1;
            budget -= 1;
        }
        Some(())
    }

    fn preempt(
        &mut self,
        now_ns: u64,
        out: &mut dyn DecisionSink,
        emitted: &mut usize,
    ) -> Option<()> {
        // A preempt is due only on a cpu past its slice or evicted by affinity.
        for c in self.inc.due.union(&self.inc.evict).iter() {
            let cpu = &self.cpus[c];
            let Some(r) = cpu.current else { continue };
            let waiter = cpu.pending.is_some_and(|p| p.abort == AbortState::None);
            let slice_up = waiter
                && self
                    .disc
                    .slice_ns(r.tid as usize)
                    .is_some_and(|s| now_ns.saturating_sub(r.since) >= s);
            if !(slice_up || r.evict) {
                continue;
            }
            let seq = self.threads[r.tid as usize].seq;
            if r.preempt_sent == Some(seq) {
                continue;
            }
            let d = Decision::Preempt {
                cpu: CpuId(c as u32),
                tid: Tid(r.tid as u32),
                seq,
            };
            Self::push(out, d, emitted)?;
            self.stats.preempts += 1;
            if r.evict {
                self.stats.affinity_preempts += 1;
            } else {
                self.stats.slice_preempts += 1;
            }
            if let Some(r) = self.cpus[c].current.as_mut() {
                r.preempt_sent = Some(seq);
            }
            self.inc.touched.insert(c);
        }
        Some(())
    }

    /// Prestages the discipline's pick for cpu `c`, if any fits. `None` if `out` is full.
    fn prestage(
        &mut self,
        c: usize,
        out: &mut dyn DecisionSink,
        emitted: &mut usize,
    ) -> Option<()> {
        let masks = &self.masks;
        let Some(idx) = self.disc.peek(c, |t| mask_allows(masks[t], c)) else {
            self.stats.scan_misses += 1;
            return Some(());
        };
        let seq = self.threads[idx].seq;
        let txn = TxnId(self.next_txn);
        let wake = self.cpus[c].idle;
        let d = Decision::Prestage {
            cpu: CpuId(c as u32),
            txn,
            tid: Tid(idx as u32),
            seq,
            wake,
        };
        Self::push(out, d, emitted)?;
        self.next_txn += 1;
        self.unlink(idx, true);
        self.threads[idx].place = Place::Prestaged(c as u16);
        self.inc.touched.insert(c);
        let cpu = &mut self.cpus[c];
        cpu.pending = Some(Pending {
            txn,
            tid: idx as u16,
            seq,
            abort: AbortState::None,
            woke: wake,
        });
        if wake {
            cpu.need_wake = false;
            self.stats.prestage_wakes += 1;
        }
        self.stats.prestages += 1;
        Some(())
    }

    /// The earliest future time at which `poll` could act without a new event (a slice
    /// expiring or a steal threshold passing), for agents that sleep between events.
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        let inc = &self.inc;
        if !inc.rescan && inc.touched.is_empty() && inc.timers.min() > now_ns {
            // Synced at the last poll: the cached earliest timer.
            return (inc.timers.min() != u64::MAX).then_some(inc.timers.min());
        }
        self.scan_deadline(now_ns)
    }

    /// [`Self::next_deadline`] by looking at every cpu (before the first poll after a change).
    fn scan_deadline(&self, now_ns: u64) -> Option<u64> {
        let mut best: Option<u64> = None;
        let mut consider = |t: u64| {
            if t > now_ns {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for cpu in &self.cpus[..self.n_cpus] {
            let Some(r) = cpu.current else { continue };
            if let Some(s) = self.disc.slice_ns(r.tid as usize) {
                if r.preempt_sent.is_none() {
                    consider(r.since.saturating_add(s));
                }
            }
            if let (Some(a), Some(p)) = (self.disc.steal_after_ns(), cpu.pending) {
                if p.abort == AbortState::None {
                    consider(r.since.saturating_add(a));
                }
            }
        }
        best
    }

    // ----------------------------------------------------------------------------------
    // Invariants.

    /// Checks the internal invariants (O(C + T)); for tests and debug builds.
    ///
    /// 1. The discipline holds exactly the `Queued` threads, all runnable, and is consistent.
    /// 2. Every thread runnable per our view is queued, prestaged or parked (none is lost).
    /// 3. Each cpu has at most one outstanding transaction; its thread is `Prestaged` on that
    ///    cpu and nowhere else, so no thread is prestaged on two cpus.
    /// 4. An outstanding transaction not being retracted names a thread runnable at exactly
    ///    the transaction's sequence number (we never stand by a stale decision).
    /// 5. `Running(c)` on a thread ⇔ cpu `c` believes it runs that thread.
    /// 6. Transaction ids are below the next id to allocate.
    /// 7. The incremental state of every cpu not marked changed is current.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        self.disc.check()?;
        let mut queued = 0usize;
        for (i, t) in self.threads.iter().enumerate() {
            if (t.place == Place::Queued) != self.disc.contains(i) {
                return Err("run queue membership differs from the thread view");
            }
            self.check_thread(i, t)?;
            queued += (t.place == Place::Queued) as usize;
        }
        if queued != self.disc.len() {
            return Err("run queue length mismatch");
        }
        self.check_cpus()
    }

    fn check_thread(&self, i: usize, t: &Thread) -> Result<(), &'static str> {
        let n = self.n_cpus;
        match t.place {
            Place::Queued if t.live != Live::Runnable => return Err("queued thread not Runnable"),
            Place::Queued => {}
            Place::Prestaged(c) => {
                if c as usize >= n {
                    return Err("prestaged on invalid cpu");
                }
                if self.cpus[c as usize].pending.map(|p| p.tid as usize) != Some(i) {
                    return Err("prestaged thread not in its cpu's slot");
                }
            }
            Place::Parked if t.live != Live::Runnable => return Err("parked thread not runnable"),
            Place::Parked => {}
            Place::None if t.live == Live::Runnable => {
                return Err("runnable thread lost (not queued/prestaged/parked)")
            }
            Place::None => {}
        }
        if let Live::Running(c) = t.live {
            if c as usize >= n || self.cpus[c as usize].current.map(|r| r.tid as usize) != Some(i) {
                return Err("running thread not current on its cpu");
            }
            if t.place != Place::None {
                return Err("running thread also placed");
            }
        }
        Ok(())
    }

    /// 7. The derived state of a cpu not marked changed matches the cpu (no missed change).
    fn check_derived(&self, c: usize, cpu: &Cpu) -> Result<(), &'static str> {
        let inc = &self.inc;
        if inc.rescan || inc.touched.contains(c) {
            return Ok(());
        }
        let abort_wanted = cpu
            .pending
            .is_some_and(|p| matches!(p.abort, AbortState::Wanted { .. }));
        let ok = inc.open.contains(c) == cpu.pending.is_none()
            && inc.empty.contains(c) == (cpu.pending.is_none() && cpu.current.is_none())
            && inc.work.contains(c) == (cpu.need_wake || abort_wanted)
            && inc.evict.contains(c) == cpu.current.is_some_and(|r| r.evict);
        if ok {
            Ok(())
        } else {
            Err("a cpu changed without being marked touched")
        }
    }

    fn check_cpus(&self) -> Result<(), &'static str> {
        let mut steals = 0;
        for (c, cpu) in self.cpus[..self.n_cpus].iter().enumerate() {
            if let Some(p) = cpu.pending {
                let t = &self.threads[p.tid as usize];
                if t.place != Place::Prestaged(c as u16) {
                    return Err("slot's thread not Prestaged here");
                }
                if p.txn.0 >= self.next_txn || p.txn.0 == 0 {
                    return Err("txn id out of range");
                }
                if p.abort == AbortState::None && (t.live != Live::Runnable || t.seq != p.seq) {
                    return Err("standing transaction is stale");
                }
                if p.abort == (AbortState::Sent { steal: true }) {
                    steals += 1;
                }
            }
            if let Some(r) = cpu.current {
                if self.threads[r.tid as usize].live != Live::Running(c as u16) {
                    return Err("cpu current not Running here");
                }
            }
            self.check_derived(c, cpu)?;
        }
        if steals != self.steals_in_flight {
            return Err("steal accounting mismatch");
        }
        Ok(())
    }
}

impl<const C: usize, const T: usize, D: Discipline> Policy for SchedCore<C, T, D> {
    fn name(&self) -> &'static str {
        self.disc.name()
    }
    fn on_event(&mut self, ev: Event, now_ns: u64) {
        SchedCore::on_event(self, ev, now_ns)
    }
    fn poll(&mut self, now_ns: u64, out: &mut dyn DecisionSink) -> usize {
        SchedCore::poll(self, now_ns, out)
    }
    fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        SchedCore::next_deadline(self, now_ns)
    }
    fn stats(&self) -> &PolicyStats {
        &self.stats
    }
    fn check_invariants(&self) -> Result<(), &'static str> {
        SchedCore::check_invariants(self)
    }
}

#[derive(Clone, Copy)]
enum Change {
    /// A run-state change; `Some(ran_ns)` if it ends a run (a stop event).
    State(Live, Option<u64>),
    Mask(u64),
}
