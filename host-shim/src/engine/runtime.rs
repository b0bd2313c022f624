//! The shim runtime: pinned CPU workers that claim prestaged transactions, run handler fibers
//! until they block, yield, are preempted or exit, and post every state change through one
//! event funnel; the dispatcher that hands requests to blocked handlers; and the invariant
//! checks. Used by the `ipu` and `host` modes (the agent is at the other end of the link).
//!
//! Locks (always taken in this order, never held across a wait): `dispatch` (free handlers
//! and the request queue) → `funnel` (the host `Endpoint` and the events not yet published).
//! A state change and the post of its event happen under the funnel lock, so the events of
//! one thread reach the ring in sequence order.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use wave_abi::layout::{VECTOR_CONTROL, VECTOR_SCHED};
use wave_abi::ring::EntryBody;
use wave_abi::sched::{
    EventKind, FailReason, SchedConfig, SchedEvent, SlotReader, CPU_VECTOR_BASE,
};
use wave_abi::{Channel, Endpoint, Layout, SharedRegion, Side};

use super::failover::{Action, FallbackLinks, Supervisor};
use super::hist::Histogram;
use super::host_agent::{self, AgentShared};
use super::live::{self, LiveCounts, PendingSwap};
use super::results::{EngineResults, Span};
use super::workload::{Kind, Request, Table, Work};
use super::{AgentMode, Clock, EngineConfig, EngineError};
use crate::link::Link;
use crate::local::LocalLink;
use crate::sched::{ClaimOutcome, CpuCursor, Mechanism, ThreadSlot, ThreadState};

const NO_OWNER: u32 = u32::MAX;

/// What a CPU passes to a fiber when it resumes it.
#[derive(Clone, Copy)]
enum Resume {
    /// Run on this CPU.
    Run(u32),
    /// Shut down (return).
    Quit,
}

/// Why a fiber gave its CPU back.
#[derive(Clone, Copy)]
enum Suspend {
    /// No request in the mailbox: block unless one is queued.
    NeedRequest,
    /// A preempt request for it was seen at a safe point at this time (ns).
    Preempted(u64),
    /// It yields voluntarily.
    Yield,
}

/// A handler fiber. See the SAFETY note on `Send`.
struct Fiber(Coroutine<Resume, Suspend, (), DefaultStack>);

// SAFETY: a fiber only ever holds, across a suspension point, values that are `Send`: plain
// integers, a `Request` (Copy data), `&Shared` (which is `Sync`) and the yielder. It never
// holds a lock guard, an `Rc` or a thread-local across `suspend`, and the handler code it runs
// uses no thread-locals. At most one thread resumes it at a time (it lives in a `Mutex` and is
// taken out while running; the owner check below makes a double run a counted violation).
unsafe impl Send for Fiber {}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    stale: AtomicU64,
    not_runnable: AtomicU64,
    not_found: AtomicU64,
    invalid: AtomicU64,
    aborted: AtomicU64,
    taken: AtomicU64,
    outcomes: AtomicU64,
    preemptions: AtomicU64,
    yields: AtomicU64,
    cpu_idle: AtomicU64,
    resyncs: AtomicU64,
    doorbells_to_cpus: AtomicU64,
    affinity: AtomicU64,
    queued: AtomicU64,
    offered: AtomicU64,
    completed: AtomicU64,
    violations: AtomicU64,
}

pub(super) struct Funnel<'a> {
    pub(super) ep: Endpoint<'a>,
    pending: VecDeque<EntryBody>,
    sent: u64,
    rang: u64,
    /// The link `ep` is on: the IPU's, or the fallback agent's (its doorbells).
    pub(super) bells: &'a dyn Link,
    /// The region and layout of that link.
    pub(super) region: SharedRegion<'a>,
    pub(super) layout: Layout,
    /// The session the CPUs' slot reader follows (0: none yet, every slot ignored).
    pub(super) session: u32,
    /// Bumped at every resynchronisation: each CPU starts a new transaction cursor.
    route_gen: u64,
}

impl Funnel<'_> {
    fn push(&mut self, ev: SchedEvent) {
        self.pending.push_back(ev.encode());
    }

    /// Publishes what fits; true if the agent sleeps and must be rung.
    fn flush(&mut self) -> bool {
        let mut ring = false;
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            let len = a.len();
            let (n, v) = self.ep.send(Channel::Sched, a);
            ring |= v.is_some();
            self.pending.drain(..n);
            self.sent += n as u64;
            if n < len {
                break;
            }
        }
        if ring {
            self.rang += 1;
        }
        ring
    }
}

struct Dispatch {
    free: Vec<u32>,
    queue: VecDeque<Request>,
}

struct CpuShared {
    /// Preempt generation last seen at a safe point on this CPU.
    last_preempt: AtomicU64,
}

pub(super) struct Shared<'a> {
    cfg: EngineConfig,
    pub(super) clock: Clock,
    pub(super) mech: Mechanism<'a>,
    /// The CPU slots of the current route and session (replaced under the funnel lock).
    slots: RwLock<SlotReader<'a>>,
    pub(super) funnel: Mutex<Funnel<'a>>,
    /// The link whose CPU doorbells the CPUs sleep on (the current route's).
    pub(super) cpu_bells: RwLock<&'a dyn Link>,
    dispatch: Mutex<Dispatch>,
    mail: Vec<Mutex<Option<Request>>>,
    owner: Vec<AtomicU32>,
    runnable_since: Vec<AtomicU64>,
    cpus: Vec<CpuShared>,
    table: Table,
    work: Work,
    get: Histogram,
    range: Histogram,
    decision: Histogram,
    seen_to_yield: Histogram,
    pub(super) request_to_yield: Histogram,
    pub(super) agent_view: &'a AgentShared,
    c: Counters,
    stop_cpus: AtomicBool,
    pub(super) stop_gen: AtomicBool,
    first_violation: Mutex<Option<String>>,
    /// First arrival, end of load, last completion (throughput and saturation).
    span: Span,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Shared<'a> {
    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    pub(super) fn violation(&self, what: String) {
        self.c.violations.fetch_add(1, Relaxed);
        let mut f = lock(&self.first_violation);
        if f.is_none() {
            *f = Some(what);
        }
    }

    /// Runs `f` under the funnel lock, publishes, and rings the agent if it sleeps.
    pub(super) fn locked<R>(&self, f: impl FnOnce(&mut Funnel<'a>) -> R) -> R {
        let mut g = lock(&self.funnel);
        let r = f(&mut g);
        let ring = g.flush();
        let bells = g.bells;
        drop(g);
        if ring {
            let _ = bells.notify(VECTOR_SCHED);
        }
        r
    }

    /// Points the funnel at a new agent endpoint `ep` on `bells` (failover or hand-back):
    /// nothing of the old route is acted on again (its slots are no longer read, its events
    /// not yet published are dropped: the new agent learns the host's truth at its first
    /// session, see [`Self::resync`]). Call with the funnel held.
    pub(super) fn reroute(&self, f: &mut Funnel<'a>, ep: Endpoint<'a>, bells: &'a dyn Link) {
        let region = bells.region();
        let Ok(layout) = Layout::read(&region) else {
            self.violation("rerouting to a link without a valid layout".into());
            return;
        };
        f.ep = ep;
        f.bells = bells;
        f.region = region;
        f.layout = layout;
        f.session = 0;
        f.pending.clear();
        f.route_gen += 1;
        if let Ok(r) = SlotReader::new(&region, &layout, self.cfg.cpus, 0) {
            *self.slots.write().unwrap_or_else(|e| e.into_inner()) = r;
        }
        *self.cpu_bells.write().unwrap_or_else(|e| e.into_inner()) = bells;
    }

    /// A new session on the current route (a new agent, or the same agent restarted): drop
    /// what was not yet published, re-announce every thread from the host's truth (status
    /// words: `ThreadNew` / `ThreadRunning`), and let the CPUs read the new session's slots
    /// with fresh cursors. Call with the funnel held.
    pub(super) fn resync(&self, f: &mut Funnel<'a>, session: u32) {
        f.pending.clear();
        self.mech
            .resync(self.clock.now_ns(), |e| f.pending.push_back(e.encode()));
        match SlotReader::new(&f.region, &f.layout, self.cfg.cpus, session) {
            Ok(r) => *self.slots.write().unwrap_or_else(|e| e.into_inner()) = r,
            Err(e) => self.violation(format!("resync: CPU slots unreadable: {e}")),
        }
        f.session = session;
        f.route_gen += 1;
        self.c.resyncs.fetch_add(1, Relaxed);
    }

    /// Transactions committed so far.
    pub(super) fn committed(&self) -> u64 {
        self.c.committed.load(Relaxed)
    }

    /// Copies the run's counters into `l` (the live view of [`live::EngineHandle`]).
    pub(super) fn live_counts(&self, l: &mut LiveCounts) {
        let c = &self.c;
        l.generated = c.offered.load(Relaxed);
        l.completed = c.completed.load(Relaxed);
        l.violations = c.violations.load(Relaxed);
        l.committed = c.committed.load(Relaxed);
        l.stale = c.stale.load(Relaxed);
        l.failed = l.stale
            + c.not_runnable.load(Relaxed)
            + c.not_found.load(Relaxed)
            + c.invalid.load(Relaxed);
        l.aborted = c.aborted.load(Relaxed);
    }

    /// Applies a state change and posts its event, or counts a violation.
    fn post(
        &self,
        what: &str,
        change: impl FnOnce(&Mechanism<'a>) -> Result<SchedEvent, crate::sched::TransitionError>,
    ) {
        let r = self.locked(|f| {
            let r = change(&self.mech);
            if let Ok(e) = r {
                f.push(e);
            }
            r
        });
        if let Err(e) = r {
            self.violation(format!("{what}: refused by the mechanism: {e:?}"));
        }
    }

    /// The dispatcher: hands `req` to a blocked handler (waking it) or queues it.
    fn dispatch(&self, req: Request) {
        self.c.offered.fetch_add(1, Relaxed);
        self.span.arrived(req.arrival_ns);
        let mut d = lock(&self.dispatch);
        match d.free.pop() {
            Some(tid) => {
                *lock(&self.mail[tid as usize]) = Some(req);
                self.runnable_since[tid as usize].store(self.now(), Relaxed);
                self.post("wakeup", |m| m.wakeup(tid, self.clock.now_ns()));
            }
            None => {
                self.c.queued.fetch_add(1, Relaxed);
                d.queue.push_back(req);
            }
        }
    }

    fn complete(&self, req: &Request) {
        let now = self.now();
        self.span.done(now);
        let lat = now.saturating_sub(req.arrival_ns);
        match req.kind {
            Kind::Get => self.get.record(lat),
            Kind::Range => self.range.record(lat),
        }
        self.c.completed.fetch_add(1, Relaxed);
    }

    /// Safe-point check of `tid` on `cpu`: true if it must yield now.
    fn must_yield(&self, cpu: u32, tid: u32) -> bool {
        let cs = &self.cpus[cpu as usize];
        let last = cs.last_preempt.load(Relaxed);
        // Fast path: one acquire load of the generation word inside `preempt`.
        let mut cur = CpuCursor {
            last_txn: 0,
            last_preempt: last,
        };
        let hit = {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            self.mech.check_preempt(&slots, cpu, &mut cur, tid)
        };
        if cur.last_preempt != last {
            cs.last_preempt.store(cur.last_preempt, Relaxed);
        }
        if let Some(req) = hit {
            self.agent_view.note_seen(cpu, req.generation);
            return true;
        }
        false
    }

    /// The body of handler `tid`.
    fn handler(&self, tid: u32, y: &Yielder<Resume, Suspend>, first: Resume) {
        let cpu = Cell::new(match first {
            Resume::Run(c) => c,
            Resume::Quit => return,
        });
        let quit = Cell::new(false);
        let mut served = 0u32;
        loop {
            let req = lock(&self.mail[tid as usize]).take();
            let Some(req) = req else {
                match y.suspend(Suspend::NeedRequest) {
                    Resume::Run(c) => {
                        cpu.set(c);
                        continue;
                    }
                    Resume::Quit => return,
                }
            };
            served = served.wrapping_add(1);
            let storm = self.cfg.storm.yield_every;
            let yield_at = (storm > 0 && served.is_multiple_of(storm)).then(|| {
                let n = match req.kind {
                    Kind::Get => self.work.get_chunks,
                    Kind::Range => self.work.range_chunks,
                };
                n / 2
            });
            let resume = |s: Suspend| match y.suspend(s) {
                Resume::Run(c) => cpu.set(c),
                Resume::Quit => quit.set(true),
            };
            let mut sp = || {
                if !quit.get() && self.must_yield(cpu.get(), tid) {
                    resume(Suspend::Preempted(self.clock.now_ns()));
                }
            };
            let mut yn = || {
                if !quit.get() {
                    match y.suspend(Suspend::Yield) {
                        Resume::Run(c) => cpu.set(c),
                        Resume::Quit => quit.set(true),
                    }
                }
            };
            self.work
                .serve(&self.table, &req, yield_at, &mut sp, &mut yn);
            self.complete(&req);
            if quit.get() {
                return;
            }
        }
    }

    /// Runs `tid` (just committed at `seq`) on `cpu` until it gives the CPU back.
    fn run_thread(&self, cpu: u32, tid: u32, fibers: &[Mutex<Option<Fiber>>]) {
        let t = tid as usize;
        // Invariant: no thread runs on two CPUs at once.
        if let Err(o) = self.owner[t].compare_exchange(NO_OWNER, cpu, AcqRel, Acquire) {
            self.violation(format!(
                "tid {tid} committed on cpu {cpu} while cpu {o} runs it"
            ));
            return;
        }
        let Some(mut fiber) = lock(&fibers[t]).take() else {
            self.owner[t].store(NO_OWNER, Release);
            self.violation(format!("tid {tid}: fiber missing on cpu {cpu}"));
            return;
        };
        let start = self.now();
        self.decision
            .record(start.saturating_sub(self.runnable_since[t].load(Relaxed)));
        let give_back = |fiber: Fiber| {
            *lock(&fibers[t]) = Some(fiber);
            self.owner[t].store(NO_OWNER, Release);
        };
        loop {
            match fiber.0.resume(Resume::Run(cpu)) {
                CoroutineResult::Yield(Suspend::NeedRequest) => {
                    let mut d = lock(&self.dispatch);
                    if let Some(req) = d.queue.pop_front() {
                        drop(d);
                        *lock(&self.mail[t]) = Some(req);
                        continue;
                    }
                    give_back(fiber);
                    d.free.push(tid);
                    let ran = self.now() - start;
                    self.post("blocked", |m| m.blocked(tid, cpu, ran, self.clock.now_ns()));
                    drop(d);
                    return;
                }
                CoroutineResult::Yield(Suspend::Preempted(seen)) => {
                    give_back(fiber);
                    let now = self.now();
                    self.seen_to_yield.record(now.saturating_sub(seen));
                    if let Some(w) = self.agent_view.written_ns(cpu) {
                        self.request_to_yield.record(now.saturating_sub(w));
                    }
                    self.c.preemptions.fetch_add(1, Relaxed);
                    self.runnable_since[t].store(now, Relaxed);
                    self.post("preempted", |m| m.preempted(tid, cpu, now - start, now));
                    return;
                }
                CoroutineResult::Yield(Suspend::Yield) => {
                    give_back(fiber);
                    let now = self.now();
                    self.c.yields.fetch_add(1, Relaxed);
                    self.runnable_since[t].store(now, Relaxed);
                    self.post("yield", |m| m.yielded(tid, cpu, now - start, now));
                    return;
                }
                CoroutineResult::Return(()) => {
                    self.owner[t].store(NO_OWNER, Release);
                    let now = self.now();
                    self.post("dead", |m| m.dead(tid, now - start, now));
                    return;
                }
            }
        }
    }

    /// One host CPU.
    fn cpu_main(&self, cpu: u32, fibers: &[Mutex<Option<Fiber>>]) {
        let n = super::cores();
        super::pin_to(&[cpu as usize % n]);
        super::fine_timer_slack();
        let mut cur = CpuCursor::default();
        let mut idle_posted = false;
        let mut route_gen = 0;
        let mask = 1u32 << (CPU_VECTOR_BASE as u32 + cpu);
        while !self.stop_cpus.load(Acquire) {
            let claim = self.locked(|f| {
                if f.route_gen != route_gen {
                    // A new agent or session: its transaction ids start over.
                    route_gen = f.route_gen;
                    cur.last_txn = 0;
                    idle_posted = false;
                }
                let prev = cur.last_txn;
                let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
                let c = self.mech.claim(&slots, cpu, &mut cur, self.clock.now_ns());
                drop(slots);
                if let Some(c) = &c {
                    f.push(c.event);
                    // Invariant: a stale decision is never applied. Checked under the funnel
                    // lock, where no other state change can slip in between.
                    if let ClaimOutcome::Committed { tid, seq } = c.outcome {
                        match self.mech.status(tid) {
                            Some(s) if s.seq == seq && s.state == ThreadState::Running(cpu) => {}
                            s => self.violation(format!(
                                "commit of tid {tid} at seq {seq} on cpu {cpu} left status {s:?}"
                            )),
                        }
                    }
                    if c.txn <= prev {
                        self.violation(format!(
                            "cpu {cpu}: transaction {} taken after {prev}",
                            c.txn
                        ));
                    }
                }
                c
            });
            if let Some(c) = claim {
                self.c.taken.fetch_add(1, Relaxed);
                self.c.outcomes.fetch_add(1, Relaxed);
                match c.outcome {
                    ClaimOutcome::Committed { tid, .. } => {
                        self.c.committed.fetch_add(1, Relaxed);
                        idle_posted = false;
                        self.run_thread(cpu, tid, fibers);
                    }
                    ClaimOutcome::Aborted => {
                        self.c.aborted.fetch_add(1, Relaxed);
                    }
                    ClaimOutcome::Failed(r) => {
                        match r {
                            FailReason::Stale => &self.c.stale,
                            FailReason::NotRunnable => &self.c.not_runnable,
                            FailReason::NotFound => &self.c.not_found,
                            FailReason::Invalid => &self.c.invalid,
                        }
                        .fetch_add(1, Relaxed);
                    }
                }
                continue;
            }
            if !idle_posted {
                idle_posted = true;
                self.c.cpu_idle.fetch_add(1, Relaxed);
                self.locked(|f| {
                    let mut e = SchedEvent::new(EventKind::CpuIdle);
                    e.cpu = cpu;
                    e.time_ns = self.clock.now_ns();
                    f.push(e);
                });
                continue; // look at the slot once more before sleeping
            }
            let bells = *self.cpu_bells.read().unwrap_or_else(|e| e.into_inner());
            if let Ok(w) = bells.wait(mask, Duration::from_millis(1)) {
                if w.vectors & mask != 0 {
                    self.c.doorbells_to_cpus.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Affinity churn (storm test).
    fn churn(&self) {
        let every = Duration::from_micros(self.cfg.storm.affinity_every_us.max(1));
        let mut rng = super::workload::Rng::new(self.cfg.seed ^ 0xC0FFEE);
        let all = if self.cfg.cpus >= 64 {
            u64::MAX
        } else {
            (1u64 << self.cfg.cpus) - 1
        };
        while !self.stop_gen.load(Relaxed) {
            std::thread::sleep(every);
            let tid = (rng.next_u64() % self.cfg.handlers as u64) as u32;
            // Alternate between all CPUs and one CPU; both keep the thread runnable somewhere.
            let mask = if rng.next_u64() & 1 == 0 {
                all
            } else {
                1u64 << (rng.next_u64() % self.cfg.cpus as u64)
            };
            let r = self.locked(|f| {
                let r = self.mech.set_affinity(tid, mask, self.clock.now_ns());
                if let Ok(e) = r {
                    f.push(e);
                }
                r
            });
            if r.is_ok() {
                self.c.affinity.fetch_add(1, Relaxed);
            }
        }
        // Leave every handler allowed everywhere.
        for tid in 0..self.cfg.handlers {
            if self.mech.thread(tid).is_some_and(|t| t.mask() != all) {
                self.post("affinity reset", |m| {
                    m.set_affinity(tid, all, self.clock.now_ns())
                });
            }
        }
    }
}

/// Waits for the link to come up, servicing it from the calling thread (or until the
/// owner's handle asks the run to stop).
fn link_up<L: Link>(
    link: &L,
    ep: &mut Endpoint<'_>,
    timeout: Duration,
    handle: Option<&live::EngineHandle>,
) -> Result<u32, EngineError> {
    let start = Instant::now();
    loop {
        if handle.is_some_and(|h| h.stop_requested()) {
            return Err(EngineError::NeverUp(
                "stopped before the link came up".into(),
            ));
        }
        match ep.poll_link().state {
            Ok(s) => return Ok(s),
            Err(d @ wave_abi::Down::VersionMismatch { .. }) => {
                return Err(EngineError::NeverUp(format!("{d:?}")))
            }
            Err(wave_abi::Down::PeerRefused(detail)) => {
                let cause = crate::watchdog::Cause::Ended(wave_abi::status::State::Refused, detail);
                return Err(EngineError::NeverUp(cause.to_string()));
            }
            Err(d) if start.elapsed() > timeout => {
                return Err(EngineError::NeverUp(format!("{d:?}")))
            }
            Err(_) => {}
        }
        let _ = link.wait(1 << VECTOR_CONTROL, Duration::from_millis(1));
    }
}

pub(super) fn run_shim<L: Link>(
    link: &L,
    cfg: &EngineConfig,
    mode: AgentMode,
    agent_link: Option<LocalLink>,
) -> Result<EngineResults, EngineError> {
    let wall = Instant::now();
    let region = link.region();
    let layout = Layout::read(&region).map_err(|e| EngineError::Link(e.to_string()))?;
    if !link.peer_present() {
        return Err(EngineError::Link("the link has no peer yet".into()));
    }
    let bells: &dyn Link = link;
    let fallback = (mode == AgentMode::Ipu && cfg.fallback)
        .then(|| FallbackLinks::new(cfg.cpus))
        .transpose()
        .map_err(EngineError::Link)?;
    let sched_cfg = SchedConfig {
        n_cpus: cfg.cpus,
        n_threads: cfg.handlers,
        policy: cfg.policy.info.id,
        params: cfg.policy.params,
    };
    // The engine owns the host's status block but serves only the scheduling channel: another
    // host thread may run the link test over the same region as a lane.
    let mut ep = Endpoint::primary(region, &layout, Side::Host, link.epoch(), &[Channel::Sched])
        .map_err(|e| EngineError::Link(format!("{e:?}")))?;
    sched_cfg
        .publish(&region, &layout, ep.epoch() as u64)
        .map_err(|e| EngineError::Config(format!("{e} (link has {} vectors)", layout.vectors)))?;

    let table = Table::new(cfg.table_keys, cfg.seed);
    let work = cfg
        .work
        .unwrap_or_else(|| Work::calibrate(&table, cfg.get_us * 1e3, cfg.range_ms * 1e6));
    let threads: Vec<ThreadSlot> = (0..cfg.handlers).map(|_| ThreadSlot::new()).collect();

    let agent_view = AgentShared::new(cfg.cpus);
    let clock = Clock::new();
    let agent_stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<EngineResults, EngineError> {
        let agent_thread = agent_link.map(|ipu| {
            let (stop, view) = (&agent_stop, &agent_view);
            s.spawn(move || host_agent::run(&ipu, stop, view, clock))
        });
        let up = link_up(link, &mut ep, cfg.link_up_timeout, cfg.handle.as_ref());
        let session = match up {
            Ok(session) => session,
            Err(e) => {
                agent_stop.store(true, Release);
                return Err(e);
            }
        };
        let slots = match SlotReader::new(&region, &layout, cfg.cpus, session) {
            Ok(s) => s,
            Err(e) => {
                agent_stop.store(true, Release);
                return Err(EngineError::Link(e.to_string()));
            }
        };
        let sh = Shared {
            cfg: cfg.clone(),
            clock,
            mech: Mechanism::new(&threads, cfg.cpus),
            slots: RwLock::new(slots),
            funnel: Mutex::new(Funnel {
                ep,
                pending: VecDeque::new(),
                sent: 0,
                rang: 0,
                bells,
                region,
                layout,
                session,
                route_gen: 0,
            }),
            cpu_bells: RwLock::new(bells),
            dispatch: Mutex::new(Dispatch {
                free: (0..cfg.handlers).rev().collect(),
                queue: VecDeque::new(),
            }),
            mail: (0..cfg.handlers).map(|_| Mutex::new(None)).collect(),
            owner: (0..cfg.handlers)
                .map(|_| AtomicU32::new(NO_OWNER))
                .collect(),
            runnable_since: (0..cfg.handlers).map(|_| AtomicU64::new(0)).collect(),
            cpus: (0..cfg.cpus)
                .map(|_| CpuShared {
                    last_preempt: AtomicU64::new(0),
                })
                .collect(),
            table,
            work,
            get: Histogram::new(),
            range: Histogram::new(),
            decision: Histogram::new(),
            seen_to_yield: Histogram::new(),
            request_to_yield: Histogram::new(),
            agent_view: &agent_view,
            c: Counters::default(),
            stop_cpus: AtomicBool::new(false),
            stop_gen: AtomicBool::new(false),
            first_violation: Mutex::new(None),
            span: Span::default(),
        };
        let r = run_session(&sh, cfg, mode, link, fallback.as_ref(), &sched_cfg, wall);
        agent_stop.store(true, Release);
        let agent = agent_thread.map(|h| h.join());
        let mut r = r?;
        match agent {
            Some(Ok(Ok(rep))) => {
                r.agent_cpu_ns = Some(rep.cpu_ns);
                r.agent_cpu_share = Some(rep.cpu_ns as f64 / (r.wall_s * 1e9).max(1.0));
                r.agent = Some(rep.summary);
                if mode == AgentMode::Host {
                    r.preempt_request_to_yield = sh.request_to_yield.summary();
                }
            }
            Some(Ok(Err(e))) => return Err(EngineError::Agent(e)),
            Some(Err(_)) => return Err(EngineError::Agent("the agent thread panicked".into())),
            None => r.agent_cpu_ns = Some(0),
        }
        Ok(r)
    })
}

fn run_session<'a, L: Link>(
    sh: &Shared<'a>,
    cfg: &EngineConfig,
    mode: AgentMode,
    link: &'a L,
    fallback: Option<&'a FallbackLinks>,
    sched_cfg: &SchedConfig,
    wall: Instant,
) -> Result<EngineResults, EngineError> {
    let watch = mode == AgentMode::Ipu;
    let mut sup = Supervisor::new(sh, link, fallback, *sched_cfg, cfg.peer_timeout, watch)
        .map_err(EngineError::Link)?;
    let fb_stop = AtomicBool::new(false);
    let mut fb_cpu_ns = 0u64;
    // Fibers: created after `sh` and dropped (all finished) before this function returns.
    let mut fibers: Vec<Mutex<Option<Fiber>>> = Vec::with_capacity(cfg.handlers as usize);
    for tid in 0..cfg.handlers {
        let stack = DefaultStack::new(cfg.stack_size)
            .map_err(|e| EngineError::Os(format!("fiber stack: {e}")))?;
        let body = move |y: &Yielder<Resume, Suspend>, first: Resume| sh.handler(tid, y, first);
        // SAFETY: the closure borrows only `sh`, which outlives every fiber: each fiber is
        // resumed to completion (`Resume::Quit`) or dropped at the end of this function, and
        // all threads that could resume one are joined before that (scoped threads below).
        let co = unsafe { Coroutine::with_stack_unchecked(stack, body) };
        fibers.push(Mutex::new(Some(Fiber(co))));
    }
    let fibers = &fibers;
    let gen_done = AtomicBool::new(false);
    // Every handler exists, blocked, waiting for a request.
    for tid in 0..cfg.handlers {
        sh.post("thread_new", |m| {
            m.thread_new(tid, false, sh.clock.now_ns())
        });
    }
    std::thread::scope(|inner| {
        let cpu_handles: Vec<_> = (0..cfg.cpus)
            .map(|cpu| inner.spawn(move || sh.cpu_main(cpu, fibers)))
            .collect();
        let churn = (cfg.storm.affinity_every_us > 0).then(|| inner.spawn(|| sh.churn()));
        let generator = inner.spawn(|| {
            let n = super::generate(cfg, &sh.clock, &sh.stop_gen, |req, _| sh.dispatch(req));
            sh.span.load_ended(sh.clock.now_ns());
            gen_done.store(true, Release);
            n
        });
        // Supervise: keep the link serviced, watch the IPU (fail over, hand back), heartbeat,
        // progress, end of run.
        let progress = cfg.progress || std::io::stdout().is_terminal();
        let mut last_print = Instant::now();
        let mut last_commits = 0u64;
        let mut drain_start: Option<Instant> = None;
        let mut timed_out = false;
        let mut fb_agent = None;
        let load_start = Instant::now();
        let mut swaps = cfg.policy_swaps.iter().peekable();
        let handle = cfg.handle.as_ref();
        let mut pending: Option<PendingSwap> = None;
        if let Some(h) = handle {
            h.publish(|l| {
                l.running = true;
                l.set_policy(&cfg.policy);
            });
        }
        loop {
            let _ = link.wait(1 << VECTOR_CONTROL, Duration::from_millis(1));
            if let Some((_, p)) = swaps.next_if(|(at, _)| load_start.elapsed() >= *at) {
                let config = SchedConfig {
                    policy: p.info.id,
                    params: p.params,
                    ..*sched_cfg
                };
                if let Err(e) = sup.swap(config) {
                    sh.violation(format!("policy swap to {}: {e}", p.info.name));
                } else if let Some(h) = handle {
                    h.publish(|l| l.set_policy(p));
                }
            }
            if let Some(h) = handle {
                if h.stop_requested() {
                    sh.stop_gen.store(true, Release);
                }
                live::serve_inbox(h, &mut pending, &mut sup, sh, sched_cfg);
            }
            match sup.tick() {
                Action::None => {}
                Action::StartAgent => {
                    if let Some(fb) = fallback {
                        fb_stop.store(false, Release);
                        let (stop, view, clock) = (&fb_stop, sh.agent_view, sh.clock);
                        fb_agent = Some(
                            inner.spawn(move || host_agent::run(&fb.agent, stop, view, clock)),
                        );
                    }
                }
                Action::StopAgent => fb_cpu_ns += stop_agent(&fb_stop, fb_agent.take()),
                Action::PeerLost => {
                    sh.violation(format!(
                        "{}; no fallback (the run ended early)",
                        sup.stats.peer_lost.clone().unwrap_or_default()
                    ));
                    sh.stop_gen.store(true, Release);
                    break;
                }
            }
            if progress && last_print.elapsed() >= Duration::from_millis(500) {
                let dt = last_print.elapsed().as_secs_f64();
                last_print = Instant::now();
                let commits = sh.c.committed.load(Relaxed);
                eprint!(
                    "{}[{}] {:>6.1}s completed {:>9} GET p99 {:>9.1} µs decisions/s {:>9.0}   {}",
                    crate::engine::progress_prefix(),
                    if sup.in_fallback() {
                        "fallback"
                    } else {
                        mode.name()
                    },
                    wall.elapsed().as_secs_f64(),
                    sh.c.completed.load(Relaxed),
                    sh.get.quantile(0.99) as f64 / 1e3,
                    (commits - last_commits) as f64 / dt,
                    crate::engine::progress_suffix()
                );
                last_commits = commits;
            }
            if gen_done.load(Acquire) {
                let d = *drain_start.get_or_insert_with(Instant::now);
                // Every scheduled swap happens (a stalled loop takes one per iteration).
                if sh.c.completed.load(Relaxed) >= sh.c.offered.load(Relaxed)
                    && swaps.peek().is_none()
                {
                    break;
                }
                if d.elapsed() > cfg.drain_timeout {
                    timed_out = true;
                    break;
                }
            }
        }
        if progress && std::io::stderr().is_terminal() {
            eprintln!();
        }
        sh.stop_gen.store(true, Release);
        if let Some(c) = churn {
            if c.join().is_err() {
                sh.violation("the churn thread panicked".into());
            }
        }
        let offered = generator.join().unwrap_or_else(|_| {
            sh.violation("the load generator panicked".into());
            0
        });
        // Let the CPUs settle (a thread that finished its last request is blocking).
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(200) {
            if lock(&sh.dispatch).free.len() == cfg.handlers as usize {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        sh.stop_cpus.store(true, Release);
        for (cpu, h) in cpu_handles.into_iter().enumerate() {
            if h.join().is_err() {
                sh.violation(format!("CPU {cpu}'s thread panicked"));
            }
        }
        fb_cpu_ns += stop_agent(&fb_stop, fb_agent.take());
        sup.finish();
        if let Some(h) = handle {
            drop(pending.take());
            h.refuse_waiting("the scheduling workload ended");
        }
        if timed_out {
            sh.violation(format!(
                "{} of {} requests never completed",
                sh.c.offered.load(Relaxed) - sh.c.completed.load(Relaxed),
                sh.c.offered.load(Relaxed)
            ));
        }
        let _ = offered;
    });
    // End-of-run invariants: every request done, queue empty, every handler blocked and idle.
    let (free, queued) = {
        let d = lock(&sh.dispatch);
        (d.free.len(), d.queue.len())
    };
    if queued != 0 || free != cfg.handlers as usize {
        sh.violation(format!(
            "at the end {queued} requests queued and {free}/{} handlers idle",
            cfg.handlers
        ));
    }
    if sh.c.taken.load(Relaxed) != sh.c.outcomes.load(Relaxed) {
        sh.violation("transactions taken != outcomes posted".into());
    }
    for tid in 0..cfg.handlers {
        let st = sh.mech.status(tid).map(|s| s.state);
        if st != Some(ThreadState::Blocked) {
            sh.violation(format!("tid {tid} ends in state {st:?}, not blocked"));
        }
        // Retire the handler: Dead, then let its fiber return.
        sh.post("dead", |m| m.dead(tid, 0, sh.clock.now_ns()));
        if let Some(mut f) = lock(&fibers[tid as usize]).take() {
            if !matches!(f.0.resume(Resume::Quit), CoroutineResult::Return(())) {
                sh.violation(format!("tid {tid}: fiber did not finish on quit"));
            }
        }
    }
    if let Some(h) = &cfg.handle {
        live::publish(h, &sup, sh);
        h.publish(|l| {
            l.running = false;
            l.finished = true;
        });
    }
    let (sent, rang, bells) = sh.locked(|f| {
        if mode == AgentMode::Ipu && cfg.stop_link_at_end {
            f.flush();
            f.ep.stop();
        }
        (f.sent, f.rang, f.bells)
    });
    if mode == AgentMode::Ipu && cfg.stop_link_at_end {
        let _ = bells.notify(VECTOR_CONTROL);
    }
    let fo = sup.stats.clone();
    let c = &sh.c;
    let wall_s = wall.elapsed().as_secs_f64();
    let mut r = EngineResults {
        mode: mode.name().into(),
        policy: cfg.policy.describe(),
        cpus: cfg.cpus,
        handlers: cfg.handlers,
        rate: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        work: work_desc(&sh.work),
        get_chunks: sh.work.get_chunks,
        range_chunks: sh.work.range_chunks,
        offered: c.offered.load(Relaxed),
        completed: c.completed.load(Relaxed),
        throughput_rps: 0.0,
        span_s: 0.0,
        drain_s: 0.0,
        saturated: false,
        get: sh.get.summary(),
        range: sh.range.summary(),
        txn_committed: c.committed.load(Relaxed),
        txn_failed_stale: c.stale.load(Relaxed),
        txn_failed_not_runnable: c.not_runnable.load(Relaxed),
        txn_failed_not_found: c.not_found.load(Relaxed),
        txn_failed_invalid: c.invalid.load(Relaxed),
        txn_aborted: c.aborted.load(Relaxed),
        txn_taken: c.taken.load(Relaxed),
        preemptions: c.preemptions.load(Relaxed),
        preempt_seen_to_yield: sh.seen_to_yield.summary(),
        preempt_request_to_yield: Default::default(),
        decision_latency: sh.decision.summary(),
        agent_cpu_ns: None,
        agent_cpu_share: None,
        events_sent: sent,
        doorbells_to_agent: rang,
        doorbells_to_cpus: c.doorbells_to_cpus.load(Relaxed),
        cpu_idle: c.cpu_idle.load(Relaxed),
        yields: c.yields.load(Relaxed),
        affinity_changes: c.affinity.load(Relaxed),
        queued: c.queued.load(Relaxed),
        invariant_violations: c.violations.load(Relaxed),
        first_violation: lock(&sh.first_violation).clone(),
        agent: None,
        wall_s,
        failovers: fo.failovers,
        handbacks: fo.handbacks,
        fallback_s: fo.fallback.as_secs_f64(),
        worst_stall_ms: fo.worst_stall.as_secs_f64() * 1e3,
        worst_detection_ms: fo.worst_detection.as_secs_f64() * 1e3,
        resyncs: c.resyncs.load(Relaxed),
        fallback_agent_cpu_ns: fb_cpu_ns,
        peer_lost: fo.peer_lost,
        failover_causes: fo.causes,
        ipu_restarts: 0,
        policy_swaps: fo.swaps,
    };
    sh.span.fill(&mut r);
    Ok(r)
}

/// Stops the fallback agent thread and joins it; returns its CPU time.
fn stop_agent(
    stop: &AtomicBool,
    agent: Option<std::thread::ScopedJoinHandle<'_, Result<host_agent::AgentReport, String>>>,
) -> u64 {
    let Some(h) = agent else { return 0 };
    stop.store(true, Release);
    match h.join() {
        Ok(Ok(rep)) => rep.cpu_ns,
        _ => 0,
    }
}

pub(super) fn work_desc(w: &Work) -> String {
    format!(
        "real table work (sorted in-memory table): GET = {} chunks x {} lookups ({:.0} ns/chunk), RANGE = {} chunks x {} values scanned ({:.0} ns/chunk)",
        w.get_chunks,
        w.lookups_per_chunk,
        w.get_chunk_ns,
        w.range_chunks,
        w.scan_per_chunk,
        w.range_chunk_ns
    )
}
