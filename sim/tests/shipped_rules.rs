//! The simulator applies the shipped host rules (`wave_host_shim::sched::Mechanism`), not a
//! model of them: scripted agents put transactions in the slots and the outcomes they get back
//! are the mechanism's, at the moments the mechanism decides them (a claim, when the CPU looks
//! at its slot), not when a decision lands.

use std::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

use wave_policy::{
    CpuId, Decision, DecisionSink, Event, FailReason, Policy, PolicyStats, Seq, Tid, TxnId,
};
use wave_sim::{simulate, SimConfig, SimReport, StormConfig, Workload};

type Log = Rc<RefCell<Vec<(u64, Event)>>>;
type React = Box<dyn FnMut(u64, &Event) -> Vec<Decision>>;

/// A policy that answers each event with the decisions `react` returns, and logs the events.
struct Script {
    log: Log,
    react: React,
    due: Vec<Decision>,
    stats: PolicyStats,
}

impl Policy for Script {
    fn name(&self) -> &'static str {
        "script"
    }
    fn on_event(&mut self, ev: Event, now_ns: u64) {
        self.log.borrow_mut().push((now_ns, ev));
        let more = (self.react)(now_ns, &ev);
        self.due.extend(more);
    }
    fn poll(&mut self, _now_ns: u64, out: &mut dyn DecisionSink) -> usize {
        let n = self.due.len();
        for d in self.due.drain(..) {
            assert!(out.try_push(d));
        }
        n
    }
    fn next_deadline(&self, _now_ns: u64) -> Option<u64> {
        None
    }
    fn stats(&self) -> &PolicyStats {
        &self.stats
    }
    fn check_invariants(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

const LINK: u64 = 1_000;
const BURST: u64 = 1_000_000;

/// One CPU, `threads` threads born runnable, each with one 1 ms burst and nothing after.
fn one_burst_each(threads: usize) -> SimConfig {
    SimConfig {
        n_cpus: 1,
        link_latency_ns: LINK,
        wake_latency_ns: 2_000,
        safe_point_ns: 1_000,
        seed: 1,
        duration_ns: 1, // no new bursts after the first ones
        drain_ns: 100_000_000,
        check_every: 1,
        workload: Workload::Storm(StormConfig {
            threads,
            burst_ns: (BURST, BURST),
            sleep_ns: (1, 1),
            yield_prob: 0.0,
            affinity_every_ns: 0,
            kill_every_ns: 0,
            revive_after_ns: 0,
        }),
        agent_model: None,
    }
}

fn run(cfg: SimConfig, react: React) -> (SimReport, Vec<(u64, Event)>) {
    let log: Log = Rc::default();
    let mut p = Script {
        log: log.clone(),
        react,
        due: Vec::new(),
        stats: PolicyStats::default(),
    };
    let r = simulate(cfg, &mut p);
    let events = log.borrow().clone();
    (r, events)
}

fn prestage(txn: u64, tid: u32, seq: u32, wake: bool) -> Decision {
    Decision::Prestage {
        cpu: CpuId(0),
        txn: TxnId(txn),
        tid: Tid(tid),
        seq: Seq(seq),
        wake,
    }
}

#[test]
fn a_stale_prestage_is_refused_by_the_mechanism_at_the_claim() {
    // Thread 0 runs (txn 1); the script prestages it again at the seq it ran at (txn 2). When
    // its burst ends it blocks (seq 2) and the CPU claims txn 2: stale.
    let (r, log) = run(
        one_burst_each(1),
        Box::new(|_, ev| match ev {
            Event::ThreadNew { tid: Tid(0), .. } => vec![prestage(1, 0, 1, true)],
            Event::TxnCommitted { txn: TxnId(1), .. } => vec![prestage(2, 0, 1, false)],
            _ => vec![],
        }),
    );
    let failed: Vec<_> = log
        .iter()
        .filter_map(|(t, e)| match e {
            Event::TxnFailed { txn, reason, .. } => Some((*t, *txn, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{log:#?}");
    let (t, txn, reason) = failed[0];
    assert_eq!((txn, reason), (TxnId(2), FailReason::Stale));
    assert!(
        t >= BURST,
        "decided at the claim after the burst, not on landing: {t}"
    );
    assert_eq!(
        (r.host.commits, r.host.failed_stale),
        (1, 1),
        "{:?}",
        r.host
    );
    // The agent-side check saw the script prestage a running thread; nothing else is wrong.
    assert_eq!(r.violations.len(), 1, "{:#?}", r.violations);
    assert!(r.violations[0].contains("not runnable per latest event"));
    assert_eq!(
        r.mechanism_runtime_ns, BURST,
        "run time accounted by the mechanism"
    );
}

#[test]
fn an_abort_wins_at_the_claim_not_when_it_lands() {
    // Thread 0 runs (txn 1); thread 1 is prestaged behind it (txn 2) and the script aborts
    // txn 2 at once. The abort lands ~2 link latencies later, but the CPU only looks at its
    // slot when thread 0's burst ends: that claim finds the abort and reports TxnAborted.
    // Thread 1 is then prestaged again (txn 3) and runs.
    let (r, log) = run(
        one_burst_each(2),
        Box::new(|_, ev| match ev {
            Event::ThreadNew { tid: Tid(0), .. } => vec![prestage(1, 0, 1, true)],
            Event::TxnCommitted { txn: TxnId(1), .. } => vec![
                prestage(2, 1, 1, false),
                Decision::Abort {
                    cpu: CpuId(0),
                    txn: TxnId(2),
                },
            ],
            Event::TxnAborted { txn: TxnId(2), .. } => vec![prestage(3, 1, 1, true)],
            _ => vec![],
        }),
    );
    let aborted: Vec<u64> = log
        .iter()
        .filter(|(_, e)| matches!(e, Event::TxnAborted { txn: TxnId(2), .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(aborted.len(), 1, "exactly one outcome: {log:#?}");
    assert!(aborted[0] >= BURST, "resolved at the claim: {}", aborted[0]);
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert_eq!((r.host.commits, r.host.aborts_won), (2, 1), "{:?}", r.host);
    assert_eq!(r.completed, 2);
    assert_eq!(r.mechanism_runtime_ns, 2 * BURST);
}

#[test]
fn an_abort_that_lands_after_the_claim_loses() {
    // The abort of txn 1 is sent when the commit is already reported: the commit stands, no
    // second outcome.
    let (r, log) = run(
        one_burst_each(1),
        Box::new(|_, ev| match ev {
            Event::ThreadNew { tid: Tid(0), .. } => vec![prestage(1, 0, 1, true)],
            Event::TxnCommitted { txn: TxnId(1), .. } => vec![Decision::Abort {
                cpu: CpuId(0),
                txn: TxnId(1),
            }],
            _ => vec![],
        }),
    );
    assert!(!log
        .iter()
        .any(|(_, e)| matches!(e, Event::TxnAborted { .. })));
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert_eq!(
        (r.host.commits, r.host.aborts_won, r.host.aborts_lost),
        (1, 0, 1)
    );
}
