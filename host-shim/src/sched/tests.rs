//! Unit tests of the mechanism core against the IPU's real slot writer over an in-memory
//! region: transitions, claims and their races, preempt checks.

extern crate std;

use std::vec::Vec;

use core::sync::atomic::AtomicU64;
use wave_abi::layout::DEFAULT_RING_ENTRIES;
use wave_abi::sched::{EventKind, FailReason, SlotReader, SlotWriter, NO_CPU};
use wave_abi::{Layout, SharedRegion};

use super::*;

const SIZE: usize = 0x80000;
const SESSION: u32 = 0x0002_0001;

struct Fixture {
    mem: Vec<AtomicU64>,
    threads: Vec<ThreadSlot>,
}

impl Fixture {
    fn new(n_threads: usize) -> Self {
        Fixture {
            mem: (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect(),
            threads: (0..n_threads).map(|_| ThreadSlot::new()).collect(),
        }
    }
    fn parts(&self) -> (SlotWriter<'_>, SlotReader<'_>, Mechanism<'_>) {
        let region = SharedRegion::from_words(&self.mem);
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, SIZE, 8).unwrap();
        layout.write(&region).unwrap();
        let w = SlotWriter::new(&region, &layout, 2, SESSION).unwrap();
        let r = SlotReader::new(&region, &layout, 2, SESSION).unwrap();
        (w, r, Mechanism::new(&self.threads, 2))
    }
}

#[test]
fn transitions_bump_seq_and_produce_one_event_each() {
    let f = Fixture::new(4);
    let (_, _, m) = f.parts();
    let e = m.thread_new(1, false, 5).unwrap();
    assert_eq!(
        (e.kind, e.tid, e.seq, e.arg, e.cpu),
        (EventKind::ThreadNew, 1, 1, 0, NO_CPU)
    );
    assert_eq!(e.time_ns, 5);
    assert_eq!(
        m.thread_new(1, true, 6),
        Err(TransitionError::WrongState(ThreadState::Blocked))
    );
    let e = m.wakeup(1, 7).unwrap();
    assert_eq!((e.kind, e.seq), (EventKind::Wakeup, 2));
    assert_eq!(
        m.wakeup(1, 8),
        Err(TransitionError::WrongState(ThreadState::Runnable))
    );
    // Not running: stop events are refused.
    assert!(m.blocked(1, 0, 0, 9).is_err());
    let e = m.set_affinity(1, 0b10, 10).unwrap();
    assert_eq!((e.kind, e.seq, e.mask), (EventKind::Affinity, 3, 0b10));
    assert_eq!(m.set_affinity(1, 0b100, 11), Err(TransitionError::BadMask));
    assert_eq!(m.set_affinity(1, 0, 11), Err(TransitionError::BadMask));
    assert_eq!(m.status(1).unwrap().state, ThreadState::Runnable);
    let e = m.dead(1, 0, 12).unwrap();
    assert_eq!((e.kind, e.seq, e.cpu), (EventKind::Dead, 4, NO_CPU));
    assert!(m.dead(1, 0, 13).is_err());
    // A dead tid may be created again, with a newer seq.
    let e = m.thread_new(1, true, 14).unwrap();
    assert_eq!((e.seq, e.arg), (5, 1));
    assert_eq!(m.wakeup(9, 0), Err(TransitionError::BadTid));
}

#[test]
fn commit_then_stop_events_name_the_cpu_and_count_runtime() {
    let f = Fixture::new(4);
    let (w, r, m) = f.parts();
    let mut c1 = CpuCursor::default();
    m.thread_new(2, true, 0).unwrap();
    assert!(m.claim(&r, 1, &mut c1, 0).is_none(), "empty slot");
    w.prestage(1, 10, 2, 1);
    let c = m.claim(&r, 1, &mut c1, 100).unwrap();
    assert_eq!(c.outcome, ClaimOutcome::Committed { tid: 2, seq: 1 });
    assert_eq!(
        (
            c.event.kind,
            c.event.tid,
            c.event.seq,
            c.event.cpu,
            c.event.txn
        ),
        (EventKind::TxnCommitted, 2, 1, 1, 10)
    );
    assert_eq!(
        m.status(2).unwrap(),
        Status {
            state: ThreadState::Running(1),
            seq: 1
        }
    );
    assert!(
        m.claim(&r, 1, &mut c1, 0).is_none(),
        "a transaction is taken once"
    );
    assert!(m.blocked(2, 0, 5, 0).is_err(), "wrong cpu");
    let e = m.preempted(2, 1, 500, 200).unwrap();
    assert_eq!((e.kind, e.seq, e.cpu), (EventKind::Preempted, 2, 1));
    w.prestage(1, 11, 2, 2);
    assert!(matches!(
        m.claim(&r, 1, &mut c1, 0).unwrap().outcome,
        ClaimOutcome::Committed { .. }
    ));
    let e = m.yielded(2, 1, 100, 0).unwrap();
    assert_eq!((e.kind, e.seq), (EventKind::Yield, 3));
    w.prestage(1, 12, 2, 3);
    m.claim(&r, 1, &mut c1, 0).unwrap();
    let e = m.blocked(2, 1, 400, 0).unwrap();
    assert_eq!((e.kind, e.seq, e.cpu), (EventKind::Blocked, 4, 1));
    assert_eq!(m.thread(2).unwrap().runtime_ns(), 1_000);
    // Dead while running names the cpu.
    m.wakeup(2, 0).unwrap();
    w.prestage(1, 13, 2, 5);
    m.claim(&r, 1, &mut c1, 0).unwrap();
    let e = m.dead(2, 0, 0).unwrap();
    assert_eq!((e.kind, e.cpu, e.seq), (EventKind::Dead, 1, 6));
}

#[test]
fn abort_wins_only_before_the_claim() {
    let f = Fixture::new(4);
    let (w, r, m) = f.parts();
    let mut c0 = CpuCursor::default();
    m.thread_new(0, true, 0).unwrap();
    // Abort written before the claim: the abort wins.
    w.prestage(0, 1, 0, 1);
    w.abort(0, 1);
    let c = m.claim(&r, 0, &mut c0, 0).unwrap();
    assert_eq!(c.outcome, ClaimOutcome::Aborted);
    assert_eq!(
        (c.event.kind, c.event.tid, c.event.seq, c.event.txn),
        (EventKind::TxnAborted, 0, 0, 1)
    );
    assert_eq!(m.status(0).unwrap().state, ThreadState::Runnable);
    // Claim first, abort after: the commit stands and nothing more is reported.
    w.prestage(0, 2, 0, 1);
    let c = m.claim(&r, 0, &mut c0, 0).unwrap();
    assert!(matches!(c.outcome, ClaimOutcome::Committed { .. }));
    w.abort(0, 2);
    assert!(m.claim(&r, 0, &mut c0, 0).is_none());
    // An abort naming an older transaction does not affect a new one.
    m.blocked(0, 0, 0, 0).unwrap();
    m.wakeup(0, 0).unwrap();
    w.prestage(0, 3, 0, 3);
    assert!(matches!(
        m.claim(&r, 0, &mut c0, 0).unwrap().outcome,
        ClaimOutcome::Committed { tid: 0, seq: 3 }
    ));
}

#[test]
fn stale_not_runnable_not_found_invalid() {
    let f = Fixture::new(4);
    let (w, r, m) = f.parts();
    let mut c0 = CpuCursor::default();
    let mut c1 = CpuCursor::default();
    m.thread_new(0, true, 0).unwrap(); // seq 1
                                       // Stale: the thread changed (affinity) after the decision.
    m.set_affinity(0, 0b11, 0).unwrap(); // seq 2
    w.prestage(0, 1, 0, 1);
    let c = m.claim(&r, 0, &mut c0, 0).unwrap();
    assert_eq!(c.outcome, ClaimOutcome::Failed(FailReason::Stale));
    assert_eq!(
        (c.event.kind, c.event.arg, c.event.seq),
        (EventKind::TxnFailed, 1, 2)
    );
    // Running elsewhere: cpu 1 runs it, cpu 0 is told to run it at the same seq.
    w.prestage(1, 2, 0, 2);
    assert!(matches!(
        m.claim(&r, 1, &mut c1, 0).unwrap().outcome,
        ClaimOutcome::Committed { .. }
    ));
    w.prestage(0, 3, 0, 2);
    let c = m.claim(&r, 0, &mut c0, 0).unwrap();
    assert_eq!(c.outcome, ClaimOutcome::Failed(FailReason::NotRunnable));
    assert_eq!(
        m.status(0).unwrap().state,
        ThreadState::Running(1),
        "untouched"
    );
    // Blocked at the decision's seq is not runnable.
    m.blocked(0, 1, 0, 0).unwrap(); // seq 3
    w.prestage(0, 4, 0, 3);
    assert_eq!(
        m.claim(&r, 0, &mut c0, 0).unwrap().outcome,
        ClaimOutcome::Failed(FailReason::NotRunnable)
    );
    // Dead.
    m.dead(0, 0, 0).unwrap(); // seq 4
    w.prestage(0, 5, 0, 4);
    assert_eq!(
        m.claim(&r, 0, &mut c0, 0).unwrap().outcome,
        ClaimOutcome::Failed(FailReason::NotRunnable)
    );
    // Never created.
    w.prestage(0, 6, 3, 0);
    assert_eq!(
        m.claim(&r, 0, &mut c0, 0).unwrap().outcome,
        ClaimOutcome::Failed(FailReason::NotFound)
    );
    // A tid beyond the session: invalid, reported against tid 0 so it decodes.
    w.prestage(0, 7, 77, 1);
    let c = m.claim(&r, 0, &mut c0, 0).unwrap();
    assert_eq!(c.outcome, ClaimOutcome::Failed(FailReason::Invalid));
    assert_eq!((c.event.tid, c.event.seq, c.event.arg), (0, 0, 4));
    // Affinity forbids this cpu.
    m.thread_new(2, true, 0).unwrap(); // seq 1
    m.set_affinity(2, 0b10, 0).unwrap(); // seq 2
    w.prestage(0, 8, 2, 2);
    assert_eq!(
        m.claim(&r, 0, &mut c0, 0).unwrap().outcome,
        ClaimOutcome::Failed(FailReason::Invalid)
    );
    w.prestage(1, 9, 2, 2);
    assert!(matches!(
        m.claim(&r, 1, &mut c1, 0).unwrap().outcome,
        ClaimOutcome::Committed { .. }
    ));
}

#[test]
fn a_reused_tid_starts_with_every_cpu_allowed() {
    let f = Fixture::new(4);
    let (w, r, m) = f.parts();
    m.thread_new(0, true, 0).unwrap(); // seq 1
    m.set_affinity(0, 0b10, 0).unwrap(); // seq 2: cpu 1 only
    m.dead(0, 0, 0).unwrap(); // seq 3
    m.thread_new(0, true, 0).unwrap(); // seq 4
    assert_eq!(m.thread(0).unwrap().mask(), u64::MAX);
    w.prestage(0, 1, 0, 4);
    let mut c0 = CpuCursor::default();
    assert_eq!(
        m.claim(&r, 0, &mut c0, 0).unwrap().outcome,
        ClaimOutcome::Committed { tid: 0, seq: 4 }
    );
    // A live thread cannot be created again, and its mask is left alone.
    m.set_affinity(0, 0b01, 0).unwrap();
    assert!(m.thread_new(0, true, 0).is_err());
    assert_eq!(m.thread(0).unwrap().mask(), 0b01);
}

#[test]
fn idle_only_with_nothing_left_to_take() {
    let f = Fixture::new(4);
    let (w, r, m) = f.parts();
    let mut c0 = CpuCursor::default();
    let e = m.idle(&r, 0, &c0, 9).unwrap();
    assert_eq!(
        (e.kind, e.cpu, e.tid, e.seq, e.time_ns),
        (EventKind::CpuIdle, 0, 0, 0, 9)
    );
    assert!(m.idle(&r, 7, &c0, 9).is_none(), "cpu outside the session");
    w.prestage(0, 1, 3, 1);
    assert!(m.idle(&r, 0, &c0, 9).is_none(), "claim first");
    m.claim(&r, 0, &mut c0, 9).unwrap(); // fails (tid 3 absent) but is taken
    assert!(m.idle(&r, 0, &c0, 9).is_some());
}

#[test]
fn slots_of_another_session_or_cpu_are_ignored() {
    let f = Fixture::new(4);
    let (w, _, m) = f.parts();
    let region = SharedRegion::from_words(&f.mem);
    let layout = Layout::read(&region).unwrap();
    let other = SlotReader::new(&region, &layout, 2, SESSION + 1).unwrap();
    m.thread_new(0, true, 0).unwrap();
    w.prestage(0, 1, 0, 1);
    let mut c0 = CpuCursor::default();
    assert!(m.claim(&other, 0, &mut c0, 0).is_none());
    assert_eq!(c0.last_txn, 0, "not taken");
    assert!(
        m.claim(&other, 5, &mut c0, 0).is_none(),
        "cpu outside the session"
    );
    assert_eq!(m.status(0).unwrap().state, ThreadState::Runnable);
}

#[test]
fn preempt_requests_match_the_running_thread_only() {
    let f = Fixture::new(4);
    let (mut w, r, m) = f.parts();
    let mut c0 = CpuCursor::default();
    m.thread_new(1, true, 0).unwrap(); // seq 1
    w.prestage(0, 1, 1, 1);
    m.claim(&r, 0, &mut c0, 0).unwrap();
    assert!(
        m.check_preempt(&r, 0, &mut c0, 1).is_none(),
        "no request yet"
    );
    // A request for another thread is consumed and ignored.
    w.preempt(0, 2, 1);
    assert!(m.check_preempt(&r, 0, &mut c0, 1).is_none());
    // Wrong seq.
    w.preempt(0, 1, 7);
    assert!(m.check_preempt(&r, 0, &mut c0, 1).is_none());
    // The right one.
    w.preempt(0, 1, 1);
    let req = m.check_preempt(&r, 0, &mut c0, 1).unwrap();
    assert_eq!((req.tid, req.seq), (1, 1));
    assert!(m.check_preempt(&r, 0, &mut c0, 1).is_none(), "seen once");
    let e = m.preempted(1, 0, 0, 0).unwrap();
    assert_eq!(e.kind, EventKind::Preempted);
    // A request from another session is never seen.
    let region = SharedRegion::from_words(&f.mem);
    let layout = Layout::read(&region).unwrap();
    let mut w2 = SlotWriter::new(&region, &layout, 2, SESSION + 1).unwrap();
    w.prestage(0, 2, 1, 2);
    m.claim(&r, 0, &mut c0, 0).unwrap();
    w2.preempt(0, 1, 2);
    assert!(m.check_preempt(&r, 0, &mut c0, 1).is_none());
}

#[test]
fn concurrent_claims_never_double_run() {
    // Two cpus race to claim the same thread, re-reading the same slot over and over (as if
    // every prestage were new), while a writer keeps re-staging it at its current seq.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    let f = Fixture::new(1);
    let (w, r, m) = f.parts();
    m.thread_new(0, true, 0).unwrap();
    let running = AtomicU32::new(0);
    let doubles = AtomicU32::new(0);
    let commits = AtomicU32::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for cpu in 0..2u32 {
            let (m, r, running, doubles, commits, done) =
                (&m, &r, &running, &doubles, &commits, &done);
            s.spawn(move || {
                let mut cur = CpuCursor::default();
                while !done.load(SeqCst) {
                    cur.last_txn = 0; // re-take the slot to force claim races
                    if let Some(c) = m.claim(r, cpu, &mut cur, 0) {
                        if let ClaimOutcome::Committed { tid, .. } = c.outcome {
                            if running.fetch_add(1, SeqCst) != 0 {
                                doubles.fetch_add(1, SeqCst);
                            }
                            commits.fetch_add(1, SeqCst);
                            running.fetch_sub(1, SeqCst);
                            m.yielded(tid, cpu, 0, 0).unwrap();
                        }
                    }
                }
            });
        }
        s.spawn(|| {
            let mut i = 0u64;
            while commits.load(SeqCst) < 2_000 && i < 50_000_000 {
                i += 1;
                let st = m.status(0).unwrap();
                w.prestage((i % 2) as u32, i, 0, st.seq);
            }
            done.store(true, SeqCst);
        });
    });
    assert_eq!(doubles.load(SeqCst), 0);
    assert!(commits.load(SeqCst) > 0);
}
