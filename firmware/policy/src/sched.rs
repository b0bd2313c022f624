//! The shared centralized-scheduling core: the policy's view of every thread and cpu, the
//! global FIFO run queue, the per-cpu prestaged transaction (k = 1), transaction outcomes,
//! aborts, steals and (optionally) time-slice preemption.
//!
//! Both policies ([`crate::CentralizedFifo`], [`crate::Shinjuku`]) are this core with a
//! different [`CoreConfig`]. Everything is fixed-capacity (`C` cpus, `T` threads, const
//! parameters), no allocation, and every call does bounded work: `on_event` is O(1), `poll`
//! is O(C log C + C * SCAN_LIMIT).
//!
//! # The view
//! Per thread: its latest sequence number, its run state as of the latest event
//! (`Live`) and where the policy has put it (`Place`). Per cpu: the run it believes is
//! on the cpu, the outstanding prestaged transaction, and whether the cpu said it sleeps.
//! The host is authoritative; the view is only a best guess that the host's commit check makes
//! safe. [`SchedCore::check_invariants`] states what must always hold.

use crate::types::{
    ConfigError, CpuId, Decision, DecisionSink, Event, FailReason, PolicyStats, Seq, Tid, TxnId,
};

/// Nil link in the intrusive run queue.
const NIL: u16 = u16::MAX;

/// How many queued threads a slot fill inspects looking for one whose affinity allows the cpu.
pub const SCAN_LIMIT: usize = 32;

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
    /// In the run queue.
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
    mask: u64,
    prev: u16,
    next: u16,
}

impl Thread {
    const EMPTY: Thread = Thread {
        live: Live::Absent,
        place: Place::None,
        seq: Seq(0),
        state_seq: Seq(0),
        mask: u64::MAX,
        prev: NIL,
        next: NIL,
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

/// Configuration of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// Host cpus scheduled, `1..=C`.
    pub n_cpus: usize,
    /// Preempt a run older than this when a thread waits for its cpu. `None`: never.
    pub time_slice_ns: Option<u64>,
    /// When a cpu is hungry (idle, empty slot, empty queue), abort a prestaged transaction
    /// waiting behind a run older than this, so the thread moves to the hungry cpu. `None`:
    /// never steal.
    pub steal_after_ns: Option<u64>,
    /// Preference among busy cpus for prestaging.
    pub busy_order: BusyOrder,
}

/// The centralized scheduling core. `C` = cpu capacity (`<= 64`, affinity masks are `u64`),
/// `T` = thread capacity (`< 65535`).
#[derive(Clone, Debug)]
pub struct SchedCore<const C: usize, const T: usize> {
    cfg: CoreConfig,
    threads: [Thread; T],
    cpus: [Cpu; C],
    head: u16,
    tail: u16,
    qlen: usize,
    next_txn: u64,
    steals_in_flight: usize,
    stats: PolicyStats,
}

impl<const C: usize, const T: usize> SchedCore<C, T> {
    const CAPACITY_OK: () = assert!(C >= 1 && C <= 64 && T >= 1 && T < NIL as usize);

    /// A core with every cpu assumed asleep and no threads.
    pub fn new(cfg: CoreConfig) -> Result<Self, ConfigError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        if cfg.n_cpus == 0 || cfg.n_cpus > C {
            return Err(ConfigError::CpuCount);
        }
        if let Some(s) = cfg.time_slice_ns {
            if !(MIN_SLICE_NS..=MAX_SLICE_NS).contains(&s) {
                return Err(ConfigError::TimeSlice);
            }
        }
        Ok(SchedCore {
            cfg,
            threads: [Thread::EMPTY; T],
            cpus: [Cpu::INIT; C],
            head: NIL,
            tail: NIL,
            qlen: 0,
            next_txn: 1,
            steals_in_flight: 0,
            stats: PolicyStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// Threads in the run queue.
    pub fn queue_len(&self) -> usize {
        self.qlen
    }

    /// Outstanding prestaged transactions (at most one per cpu).
    pub fn outstanding_txns(&self) -> usize {
        self.cpus[..self.cfg.n_cpus]
            .iter()
            .filter(|c| c.pending.is_some())
            .count()
    }

    // ----------------------------------------------------------------------------------
    // Run queue (intrusive doubly linked list over thread slots).

    fn push_back(&mut self, i: usize) {
        let i16 = i as u16;
        self.threads[i].prev = self.tail;
        self.threads[i].next = NIL;
        if self.tail == NIL {
            self.head = i16;
        } else {
            self.threads[self.tail as usize].next = i16;
        }
        self.tail = i16;
        self.enqueued(i);
    }

    fn push_front(&mut self, i: usize) {
        let i16 = i as u16;
        self.threads[i].next = self.head;
        self.threads[i].prev = NIL;
        if self.head == NIL {
            self.tail = i16;
        } else {
            self.threads[self.head as usize].prev = i16;
        }
        self.head = i16;
        self.enqueued(i);
    }

    fn enqueued(&mut self, i: usize) {
        self.threads[i].place = Place::Queued;
        self.qlen += 1;
        self.stats.queue_len = self.qlen as u64;
        self.stats.queue_max = self.stats.queue_max.max(self.qlen as u64);
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.threads[i].prev, self.threads[i].next);
        if p == NIL {
            self.head = n;
        } else {
            self.threads[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.threads[n as usize].prev = p;
        }
        self.threads[i].prev = NIL;
        self.threads[i].next = NIL;
        self.threads[i].place = Place::None;
        self.qlen -= 1;
        self.stats.queue_len = self.qlen as u64;
    }

    /// A thread runnable per our view with no place goes into the queue.
    fn settle(&mut self, i: usize, front: bool) {
        let t = &self.threads[i];
        if t.live == Live::Runnable && t.place == Place::None {
            if front {
                self.push_front(i);
            } else {
                self.push_back(i);
            }
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
        if c < self.cfg.n_cpus {
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
        self.stats.events[ev.kind() as usize] += 1;
        match ev {
            Event::ThreadNew { tid, seq, runnable } => self.thread_new(tid, seq, runnable),
            Event::Wakeup { tid, seq } => {
                self.thread_event(tid, seq, None, Change::State(Live::Runnable))
            }
            Event::Blocked { tid, seq, cpu } => {
                self.thread_event(tid, seq, Some(cpu), Change::State(Live::Blocked))
            }
            Event::Yield { tid, seq, cpu } | Event::Preempted { tid, seq, cpu } => {
                self.thread_event(tid, seq, Some(cpu), Change::State(Live::Runnable))
            }
            Event::Dead { tid, seq, cpu } => {
                self.thread_event(tid, seq, cpu, Change::State(Live::Dead))
            }
            Event::Affinity { tid, seq, mask } => {
                self.thread_event(tid, seq, None, Change::Mask(mask))
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
        }
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
            ..Thread::EMPTY
        };
        if let Place::Prestaged(c) = place {
            if let Some(p) = self.cpus[c as usize].pending.as_mut() {
                if p.abort == AbortState::None {
                    p.abort = AbortState::Wanted { steal: false };
                }
            }
        }
        self.settle(i, false);
    }

    fn thread_event(&mut self, tid: Tid, seq: Seq, cpu: Option<CpuId>, change: Change) {
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
        match change {
            Change::Mask(mask) => {
                t.mask = mask;
                if let Live::Running(c) = t.live {
                    if mask & (1u64 << c) == 0 {
                        if let Some(r) = self.cpus[c as usize].current.as_mut() {
                            r.evict = true;
                        }
                    }
                }
            }
            Change::State(new) => {
                t.state_seq = seq;
                self.set_live(i, new, ev_cpu);
            }
        }
        // Any newer event makes an outstanding transaction for this thread stale: retract it
        // (the host would fail it anyway; aborting frees the slot sooner).
        if let Place::Prestaged(c) = self.threads[i].place {
            if let Some(p) = self.cpus[c as usize].pending.as_mut() {
                if p.abort == AbortState::None {
                    p.abort = AbortState::Wanted { steal: false };
                }
            }
        }
        self.settle(i, false);
    }

    fn set_live(&mut self, i: usize, new: Live, ev_cpu: Option<usize>) {
        let old = self.threads[i].live;
        match old {
            Live::Running(c) => {
                let cpu = &mut self.cpus[c as usize];
                if cpu.current.is_some_and(|r| r.tid as usize == i) {
                    cpu.current = None;
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
            self.unlink(i);
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
        if t.live == Live::Runnable && !t.state_seq.is_newer_than(p.seq) {
            t.live = Live::Running(c as u16);
            let evict = t.mask & (1u64 << c) == 0;
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
        let n = self.cfg.n_cpus;
        let mut emitted = 0;

        // 1. Doorbells and aborts first: cheap, and they unblock cpus.
        for c in 0..n {
            let cpu_id = CpuId(c as u32);
            if self.cpus[c].need_wake {
                if !out.try_push(Decision::Wake { cpu: cpu_id }) {
                    return emitted;
                }
                emitted += 1;
                self.stats.wakes += 1;
                self.cpus[c].need_wake = false;
            }
            if let Some(p) = self.cpus[c].pending.as_mut() {
                if let AbortState::Wanted { steal } = p.abort {
                    if !out.try_push(Decision::Abort {
                        cpu: cpu_id,
                        txn: p.txn,
                    }) {
                        return emitted;
                    }
                    emitted += 1;
                    p.abort = AbortState::Sent { steal };
                    self.stats.aborts += 1;
                }
            }
        }

        // 2. Fill empty slots: cpus with nothing running first, then busy cpus.
        for c in 0..n {
            if self.qlen == 0 {
                break;
            }
            if self.cpus[c].current.is_none() && self.cpus[c].pending.is_none() {
                match self.prestage(c, out) {
                    Fill::Done => emitted += 1,
                    Fill::NoFit => {}
                    Fill::Full => return emitted,
                }
            }
        }
        if self.qlen > 0 {
            let mut busy = [(0u64, 0u16); C];
            let mut nb = 0;
            for (c, cpu) in self.cpus[..n].iter().enumerate() {
                if let (Some(r), None) = (cpu.current, cpu.pending) {
                    let key = match self.cfg.busy_order {
                        BusyOrder::OldestFirst => r.since,
                        BusyOrder::YoungestFirst => u64::MAX - r.since,
                    };
                    busy[nb] = (key, c as u16);
                    nb += 1;
                }
            }
            busy[..nb].sort_unstable();
            for &(_, c) in &busy[..nb] {
                if self.qlen == 0 {
                    break;
                }
                match self.prestage(c as usize, out) {
                    Fill::Done => emitted += 1,
                    Fill::NoFit => {}
                    Fill::Full => return emitted,
                }
            }
        }

        // 3. Steal: a hungry cpu (nothing running, nothing prestaged, nothing queued for it)
        //    takes a thread that waits behind an old run elsewhere.
        if let Some(after) = self.cfg.steal_after_ns {
            let mut hungry_mask = 0u64;
            let mut hungry = 0usize;
            for (c, cpu) in self.cpus[..n].iter().enumerate() {
                if cpu.current.is_none() && cpu.pending.is_none() {
                    hungry_mask |= 1u64 << c;
                    hungry += 1;
                }
            }
            let mut budget = hungry.saturating_sub(self.steals_in_flight);
            for c in 0..n {
                if budget == 0 {
                    break;
                }
                let cpu = &self.cpus[c];
                let (Some(r), Some(p)) = (cpu.current, cpu.pending) else {
                    continue;
                };
                if p.abort != AbortState::None
                    || now_ns.saturating_sub(r.since) < after
                    || self.threads[p.tid as usize].mask & hungry_mask == 0
                {
                    continue;
                }
                if !out.try_push(Decision::Abort {
                    cpu: CpuId(c as u32),
                    txn: p.txn,
                }) {
                    return emitted;
                }
                emitted += 1;
                if let Some(p) = self.cpus[c].pending.as_mut() {
                    p.abort = AbortState::Sent { steal: true };
                }
                self.steals_in_flight += 1;
                self.stats.aborts += 1;
                self.stats.steals += 1;
                budget -= 1;
            }
        }

        // 4. Preempt: a run past its slice with a thread waiting in its slot, or a run whose
        //    affinity no longer allows the cpu.
        for c in 0..n {
            let cpu = &self.cpus[c];
            let Some(r) = cpu.current else { continue };
            let waiter = cpu.pending.is_some_and(|p| p.abort == AbortState::None);
            let slice_up = self
                .cfg
                .time_slice_ns
                .is_some_and(|s| now_ns.saturating_sub(r.since) >= s && waiter);
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
            if !out.try_push(d) {
                return emitted;
            }
            emitted += 1;
            self.stats.preempts += 1;
            if r.evict {
                self.stats.affinity_preempts += 1;
            } else {
                self.stats.slice_preempts += 1;
            }
            if let Some(r) = self.cpus[c].current.as_mut() {
                r.preempt_sent = Some(seq);
            }
        }
        emitted
    }

    fn prestage(&mut self, c: usize, out: &mut dyn DecisionSink) -> Fill {
        let bit = 1u64 << c;
        let mut i = self.head;
        let mut scanned = 0;
        while i != NIL && scanned < SCAN_LIMIT {
            if self.threads[i as usize].mask & bit != 0 {
                break;
            }
            i = self.threads[i as usize].next;
            scanned += 1;
        }
        if i == NIL || scanned == SCAN_LIMIT {
            self.stats.scan_misses += 1;
            return Fill::NoFit;
        }
        let idx = i as usize;
        let seq = self.threads[idx].seq;
        let txn = TxnId(self.next_txn);
        let wake = self.cpus[c].idle;
        let d = Decision::Prestage {
            cpu: CpuId(c as u32),
            txn,
            tid: Tid(i as u32),
            seq,
            wake,
        };
        if !out.try_push(d) {
            return Fill::Full;
        }
        self.next_txn += 1;
        self.unlink(idx);
        self.threads[idx].place = Place::Prestaged(c as u16);
        let cpu = &mut self.cpus[c];
        cpu.pending = Some(Pending {
            txn,
            tid: i,
            seq,
            abort: AbortState::None,
            woke: wake,
        });
        if wake {
            cpu.need_wake = false;
            self.stats.prestage_wakes += 1;
        }
        self.stats.prestages += 1;
        Fill::Done
    }

    /// The earliest future time at which `poll` could act without a new event (a slice
    /// expiring or a steal threshold passing), for agents that sleep between events.
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        let mut best: Option<u64> = None;
        let mut consider = |t: u64| {
            if t > now_ns {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for cpu in &self.cpus[..self.cfg.n_cpus] {
            let Some(r) = cpu.current else { continue };
            if let Some(s) = self.cfg.time_slice_ns {
                if r.preempt_sent.is_none() {
                    consider(r.since.saturating_add(s));
                }
            }
            if let (Some(a), Some(p)) = (self.cfg.steal_after_ns, cpu.pending) {
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
    /// 1. The run queue is a well-formed list of exactly the `Queued` threads, all runnable.
    /// 2. Every thread runnable per our view is queued, prestaged or parked (none is lost).
    /// 3. Each cpu has at most one outstanding transaction; its thread is `Prestaged` on that
    ///    cpu and nowhere else, so no thread is prestaged on two cpus.
    /// 4. An outstanding transaction not being retracted names a thread runnable at exactly
    ///    the transaction's sequence number (we never stand by a stale decision).
    /// 5. `Running(c)` on a thread ⇔ cpu `c` believes it runs that thread.
    /// 6. Transaction ids are below the next id to allocate.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let n = self.cfg.n_cpus;
        // 1.
        let mut count = 0usize;
        let mut prev = NIL;
        let mut i = self.head;
        while i != NIL {
            count += 1;
            if count > T {
                return Err("run queue has a cycle");
            }
            let t = &self.threads[i as usize];
            if t.place != Place::Queued || t.live != Live::Runnable {
                return Err("queued thread not Queued/Runnable");
            }
            if t.prev != prev {
                return Err("run queue back link broken");
            }
            prev = i;
            i = t.next;
        }
        if prev != self.tail || count != self.qlen {
            return Err("run queue tail/length mismatch");
        }
        for (i, t) in self.threads.iter().enumerate() {
            match t.place {
                Place::Queued => count -= 1,
                Place::Prestaged(c) => {
                    if c as usize >= n {
                        return Err("prestaged on invalid cpu");
                    }
                    if self.cpus[c as usize].pending.map(|p| p.tid as usize) != Some(i) {
                        return Err("prestaged thread not in its cpu's slot");
                    }
                }
                Place::Parked => {
                    if t.live != Live::Runnable {
                        return Err("parked thread not runnable");
                    }
                }
                Place::None => {
                    // 2.
                    if t.live == Live::Runnable {
                        return Err("runnable thread lost (not queued/prestaged/parked)");
                    }
                }
            }
            if let Live::Running(c) = t.live {
                if c as usize >= n
                    || self.cpus[c as usize].current.map(|r| r.tid as usize) != Some(i)
                {
                    return Err("running thread not current on its cpu");
                }
                if t.place != Place::None {
                    return Err("running thread also placed");
                }
            }
        }
        if count != 0 {
            return Err("Queued threads outside the run queue");
        }
        let mut steals = 0;
        for (c, cpu) in self.cpus[..n].iter().enumerate() {
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
        }
        if steals != self.steals_in_flight {
            return Err("steal accounting mismatch");
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Change {
    State(Live),
    Mask(u64),
}

enum Fill {
    Done,
    NoFit,
    Full,
}
