//! Unit and property tests of the policies (host only). The simulator's tests, which run the
//! policies against the shipped host mechanism, live in `wave-sim`.

use std::vec::Vec;

use crate::{
    CentralizedFifo, ConfigError, CpuId, Decision, Event, EventKind, FailReason, Policy, Seq,
    Shinjuku, ShinjukuConfig, Tid, TxnId,
};

type Fifo4 = CentralizedFifo<4, 64>;
type Shin4 = Shinjuku<4, 64>;

fn poll(p: &mut dyn Policy, now: u64) -> Vec<Decision> {
    let mut v = Vec::new();
    p.poll(now, &mut v);
    p.check_invariants().unwrap();
    v
}

fn ev(p: &mut dyn Policy, e: Event, now: u64) {
    p.on_event(e, now);
    p.check_invariants().unwrap();
}

/// The host reports that `cpu` committed transaction `txn` and now runs `tid`.
fn commit(p: &mut dyn Policy, txn: u64, tid: u32, cpu: u32, now: u64) {
    ev(
        p,
        Event::TxnCommitted {
            txn: TxnId(txn),
            tid: Tid(tid),
            cpu: CpuId(cpu),
        },
        now,
    );
}

fn new_thread(p: &mut dyn Policy, tid: u32) {
    ev(
        p,
        Event::ThreadNew {
            tid: Tid(tid),
            seq: Seq(1),
            runnable: true,
        },
        0,
    );
}

fn prestages(v: &[Decision]) -> Vec<(u32, u32, u64, u32, bool)> {
    v.iter()
        .filter_map(|d| match *d {
            Decision::Prestage {
                cpu,
                txn,
                tid,
                seq,
                wake,
            } => Some((cpu.0, tid.0, txn.0, seq.0, wake)),
            _ => None,
        })
        .collect()
}

#[test]
fn config_is_validated() {
    assert_eq!(Fifo4::new(0).err(), Some(ConfigError::CpuCount));
    assert_eq!(Fifo4::new(5).err(), Some(ConfigError::CpuCount));
    let bad = ShinjukuConfig {
        time_slice_ns: 10,
        ..ShinjukuConfig::new(4)
    };
    assert_eq!(Shin4::with_config(bad).err(), Some(ConfigError::TimeSlice));
    assert!(Shin4::new(4).is_ok());
}

#[test]
fn seq_wraps() {
    assert!(Seq(1).is_newer_than(Seq(0)));
    assert!(Seq(0).is_newer_than(Seq(u32::MAX)));
    assert!(!Seq(5).is_newer_than(Seq(5)));
    assert!(!Seq(4).is_newer_than(Seq(5)));
}

#[test]
fn fifo_prestages_in_order_with_wake_and_runs_next_locally() {
    let mut p = Fifo4::new(2).unwrap();
    for t in 0..4 {
        new_thread(&mut p, t);
    }
    let d = poll(&mut p, 10);
    // Both cpus are asleep at start: the first two threads go there with a doorbell.
    assert_eq!(prestages(&d), vec![(0, 0, 1, 1, true), (1, 1, 2, 1, true)]);
    commit(&mut p, 1, 0, 0, 20);
    commit(&mut p, 2, 1, 1, 20);
    // Slots are empty again: prestage the next threads behind the running ones, no doorbell.
    let d = poll(&mut p, 30);
    let ps = prestages(&d);
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|&(_, _, _, _, wake)| !wake));
    assert_eq!(ps.iter().map(|x| x.1).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(p.queue_len(), 0);
    // Nothing more to do; no duplicate decisions.
    assert!(poll(&mut p, 40).is_empty());
    assert_eq!(p.stats().prestages, 4);
    assert_eq!(p.stats().events_of(EventKind::TxnCommitted), 2);
}

#[test]
fn invalid_events_are_counted_and_ignored() {
    let mut p = Fifo4::new(2).unwrap();
    ev(
        &mut p,
        Event::Wakeup {
            tid: Tid(1000),
            seq: Seq(1),
        },
        0,
    );
    ev(
        &mut p,
        Event::Wakeup {
            tid: Tid(3),
            seq: Seq(1),
        },
        0,
    );
    ev(&mut p, Event::CpuIdle { cpu: CpuId(7) }, 0);
    commit(&mut p, 99, 0, 0, 0);
    new_thread(&mut p, 3);
    new_thread(&mut p, 3);
    ev(
        &mut p,
        Event::Wakeup {
            tid: Tid(3),
            seq: Seq(1),
        },
        0,
    );
    let s = *p.stats();
    assert_eq!(
        (s.bad_tid, s.unknown_thread, s.bad_cpu, s.unknown_txn),
        (1, 1, 1, 1)
    );
    assert_eq!((s.duplicate_new, s.stale_events), (1, 1));
    assert_eq!(s.events_total(), 7);
    assert_eq!(prestages(&poll(&mut p, 1)).len(), 1);
}

#[test]
fn stale_failure_parks_until_the_newer_event() {
    let mut p = Fifo4::new(1).unwrap();
    new_thread(&mut p, 5);
    let d = poll(&mut p, 0);
    assert_eq!(prestages(&d), vec![(0, 5, 1, 1, true)]);
    // Host: the thread moved on (seq 2) before the claim; we have not seen the event yet.
    let fail = Event::TxnFailed {
        txn: TxnId(1),
        tid: Tid(5),
        cpu: CpuId(0),
        reason: FailReason::Stale,
    };
    ev(&mut p, fail, 5);
    assert_eq!(p.stats().parked, 1);
    assert!(
        poll(&mut p, 6).is_empty(),
        "never re-prestage at a refused sequence number"
    );
    // The newer event: affinity change, still runnable -> released.
    ev(
        &mut p,
        Event::Affinity {
            tid: Tid(5),
            seq: Seq(2),
            mask: 1,
        },
        7,
    );
    assert_eq!(prestages(&poll(&mut p, 8)), vec![(0, 5, 2, 2, true)]);
}

#[test]
fn stale_prestage_is_aborted_and_both_race_outcomes_are_handled() {
    let mut p = Fifo4::new(2).unwrap();
    new_thread(&mut p, 1);
    new_thread(&mut p, 2);
    poll(&mut p, 0);
    // Both prestaged; affinity changes make both transactions stale -> aborts.
    ev(
        &mut p,
        Event::Affinity {
            tid: Tid(1),
            seq: Seq(2),
            mask: 0b11,
        },
        1,
    );
    ev(
        &mut p,
        Event::Affinity {
            tid: Tid(2),
            seq: Seq(2),
            mask: 0b11,
        },
        1,
    );
    let d = poll(&mut p, 2);
    assert_eq!(
        d,
        vec![
            Decision::Abort {
                cpu: CpuId(0),
                txn: TxnId(1)
            },
            Decision::Abort {
                cpu: CpuId(1),
                txn: TxnId(2)
            }
        ]
    );
    // Abort won on cpu 0: the thread goes back to the queue and is prestaged again.
    ev(
        &mut p,
        Event::TxnAborted {
            txn: TxnId(1),
            cpu: CpuId(0),
        },
        3,
    );
    // On cpu 1 the claim won before the host saw the affinity change? Impossible (seq
    // differs), so the host fails it as stale; we already know seq 2, so it is requeued.
    let fail = Event::TxnFailed {
        txn: TxnId(2),
        tid: Tid(2),
        cpu: CpuId(1),
        reason: FailReason::Stale,
    };
    ev(&mut p, fail, 3);
    let ps = prestages(&poll(&mut p, 4));
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|&(_, _, _, seq, _)| seq == 2));
    assert_eq!(p.stats().abort_won, 1);
    assert_eq!(p.stats().abort_lost, 1);
    assert_eq!(p.stats().parked, 0);
}

#[test]
fn commit_after_abort_runs_the_thread() {
    let mut p = Fifo4::new(2).unwrap();
    new_thread(&mut p, 0);
    new_thread(&mut p, 1);
    poll(&mut p, 0);
    commit(&mut p, 1, 0, 0, 1);
    new_thread(&mut p, 2);
    let d = poll(&mut p, 2);
    assert_eq!(prestages(&d), vec![(0, 2, 3, 1, false)]);
    // cpu 1 reports sleeping while its prestage (sent with a doorbell) is in flight: the
    // doorbell follows the slot write, so no extra Wake.
    ev(&mut p, Event::CpuIdle { cpu: CpuId(1) }, 3);
    assert!(poll(&mut p, 4).is_empty());
    commit(&mut p, 2, 1, 1, 5);
    ev(
        &mut p,
        Event::Blocked {
            tid: Tid(1),
            seq: Seq(2),
            cpu: CpuId(1),
            ran_ns: 0,
        },
        6,
    );
    ev(&mut p, Event::CpuIdle { cpu: CpuId(1) }, 6);
    // cpu 1 hungry, thread 2 waits behind cpu 0's run older than the steal threshold.
    let d = poll(&mut p, 50_000);
    assert_eq!(
        d,
        vec![Decision::Abort {
            cpu: CpuId(0),
            txn: TxnId(3)
        }]
    );
    // The claim won: thread 0 blocked and cpu 0 took thread 2 anyway.
    ev(
        &mut p,
        Event::Blocked {
            tid: Tid(0),
            seq: Seq(2),
            cpu: CpuId(0),
            ran_ns: 0,
        },
        50_001,
    );
    commit(&mut p, 3, 2, 0, 50_002);
    assert_eq!(p.stats().abort_lost, 1);
    assert_eq!(p.stats().steals, 1);
    assert!(poll(&mut p, 50_003).is_empty());
    assert_eq!(p.outstanding_txns(), 0);
}

#[test]
fn shinjuku_preempts_after_slice_only_with_a_waiter() {
    let mut p = Shin4::new(1).unwrap();
    new_thread(&mut p, 0);
    poll(&mut p, 0);
    commit(&mut p, 1, 0, 0, 0);
    assert!(poll(&mut p, 100_000).is_empty(), "no waiter, no preemption");
    assert_eq!(p.next_deadline(100_000), None);
    new_thread(&mut p, 1);
    let d = poll(&mut p, 100_001);
    assert_eq!(
        d,
        vec![
            Decision::Prestage {
                cpu: CpuId(0),
                txn: TxnId(2),
                tid: Tid(1),
                seq: Seq(1),
                wake: false
            },
            Decision::Preempt {
                cpu: CpuId(0),
                tid: Tid(0),
                seq: Seq(1)
            },
        ]
    );
    assert!(poll(&mut p, 100_002).is_empty(), "preempt sent once");
    ev(
        &mut p,
        Event::Preempted {
            tid: Tid(0),
            seq: Seq(2),
            cpu: CpuId(0),
            ran_ns: 0,
        },
        100_500,
    );
    commit(&mut p, 2, 1, 0, 100_500);
    // Thread 0 is back in the queue and prestaged behind thread 1; slice deadline is set.
    assert_eq!(prestages(&poll(&mut p, 100_501)), vec![(0, 0, 3, 2, false)]);
    assert_eq!(p.next_deadline(100_501), Some(130_500));
    let d = poll(&mut p, 130_500);
    assert_eq!(
        d,
        vec![Decision::Preempt {
            cpu: CpuId(0),
            tid: Tid(1),
            seq: Seq(1)
        }]
    );
    assert_eq!(p.stats().slice_preempts, 2);
}

#[test]
fn affinity_change_evicts_a_running_thread() {
    let mut p = Fifo4::new(2).unwrap();
    new_thread(&mut p, 0);
    poll(&mut p, 0);
    commit(&mut p, 1, 0, 0, 0);
    ev(
        &mut p,
        Event::Affinity {
            tid: Tid(0),
            seq: Seq(2),
            mask: 0b10,
        },
        1,
    );
    assert_eq!(
        poll(&mut p, 2),
        vec![Decision::Preempt {
            cpu: CpuId(0),
            tid: Tid(0),
            seq: Seq(2)
        }]
    );
    ev(
        &mut p,
        Event::Preempted {
            tid: Tid(0),
            seq: Seq(3),
            cpu: CpuId(0),
            ran_ns: 0,
        },
        3,
    );
    ev(&mut p, Event::CpuIdle { cpu: CpuId(0) }, 3);
    assert_eq!(prestages(&poll(&mut p, 4)), vec![(1, 0, 2, 3, true)]);
    assert_eq!(p.stats().affinity_preempts, 1);
}

#[test]
fn full_sink_keeps_decisions_for_later() {
    let mut p = Fifo4::new(4).unwrap();
    for t in 0..4 {
        new_thread(&mut p, t);
    }
    let mut small: heapless::Vec<Decision, 3> = heapless::Vec::new();
    assert_eq!(p.poll(0, &mut small), 3);
    p.check_invariants().unwrap();
    let d = poll(&mut p, 0);
    assert_eq!(prestages(&d), vec![(3, 3, 4, 1, true)]);
    assert_eq!(p.outstanding_txns(), 4);
}

#[test]
fn dead_thread_in_slot_is_retracted_and_tid_reusable() {
    let mut p = Fifo4::new(1).unwrap();
    new_thread(&mut p, 0);
    poll(&mut p, 0);
    ev(
        &mut p,
        Event::Dead {
            tid: Tid(0),
            seq: Seq(2),
            cpu: None,
            ran_ns: 0,
        },
        1,
    );
    ev(
        &mut p,
        Event::ThreadNew {
            tid: Tid(0),
            seq: Seq(3),
            runnable: true,
        },
        2,
    );
    assert_eq!(
        poll(&mut p, 3),
        vec![Decision::Abort {
            cpu: CpuId(0),
            txn: TxnId(1)
        }]
    );
    ev(
        &mut p,
        Event::TxnAborted {
            txn: TxnId(1),
            cpu: CpuId(0),
        },
        4,
    );
    assert_eq!(prestages(&poll(&mut p, 5)), vec![(0, 0, 2, 3, true)]);
}

// --------------------------------------------------------------------------------------
// Property tests: arbitrary (garbage) event streams.

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Ev(u8, u32, u32, u32, u64),
        /// An outcome for whatever is outstanding on this cpu (or garbage if nothing).
        Outcome(u32, u8),
        Poll(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..8, 0u32..20, 0u32..12, 0u32..6, any::<u64>()).prop_map(|(k, t, s, c, m)| Op::Ev(k, t, s, c, m)),
            3 => (0u32..6, 0u8..6).prop_map(|(c, k)| Op::Outcome(c, k)),
            2 => (0u64..200_000).prop_map(Op::Poll),
        ]
    }

    fn thread_event(k: u8, t: u32, s: u32, c: u32, m: u64) -> Event {
        let (tid, seq, cpu) = (Tid(t), Seq(s), CpuId(c));
        match k {
            0 => Event::ThreadNew {
                tid,
                seq,
                runnable: m & 1 == 0,
            },
            1 => Event::Wakeup { tid, seq },
            2 => Event::Blocked {
                tid,
                seq,
                cpu,
                ran_ns: m,
            },
            3 => Event::Yield {
                tid,
                seq,
                cpu,
                ran_ns: 0,
            },
            4 => Event::Preempted {
                tid,
                seq,
                cpu,
                ran_ns: m,
            },
            5 => Event::Dead {
                tid,
                seq,
                cpu: if m & 2 == 0 { Some(cpu) } else { None },
                ran_ns: 0,
            },
            6 => Event::Affinity { tid, seq, mask: m },
            _ => Event::CpuIdle { cpu },
        }
    }

    fn run(p: &mut dyn Policy, ops: &[Op]) -> Result<(), TestCaseError> {
        // What the policy has outstanding per cpu, from its own decisions.
        let mut outstanding: [Option<(TxnId, Tid)>; 6] = [None; 6];
        let mut last_txn = 0u64;
        let mut now = 0u64;
        for op in ops {
            match *op {
                Op::Ev(k, t, s, c, m) => p.on_event(thread_event(k, t, s, c, m), now),
                Op::Outcome(c, k) => {
                    let (txn, tid) = outstanding[c as usize].unwrap_or((TxnId(777), Tid(1)));
                    let cpu = CpuId(c);
                    let e = match k {
                        0 | 1 => Event::TxnCommitted { txn, tid, cpu },
                        2 => Event::TxnFailed {
                            txn,
                            tid,
                            cpu,
                            reason: FailReason::Stale,
                        },
                        3 => Event::TxnFailed {
                            txn,
                            tid,
                            cpu,
                            reason: FailReason::NotRunnable,
                        },
                        4 => Event::TxnFailed {
                            txn,
                            tid,
                            cpu,
                            reason: FailReason::Invalid,
                        },
                        _ => Event::TxnAborted { txn, cpu },
                    };
                    if outstanding[c as usize].is_some() {
                        outstanding[c as usize] = None;
                    }
                    p.on_event(e, now);
                }
                Op::Poll(dt) => {
                    now += dt;
                    let mut out = Vec::new();
                    p.poll(now, &mut out);
                    for d in out {
                        if let Decision::Prestage { cpu, txn, tid, .. } = d {
                            prop_assert!(txn.0 > last_txn, "txn ids increase");
                            last_txn = txn.0;
                            prop_assert!((cpu.0 as usize) < 4);
                            prop_assert!(outstanding[cpu.0 as usize].is_none(), "k = 1 per cpu");
                            prop_assert!(
                                outstanding.iter().all(|o| o.is_none_or(|(_, t)| t != tid)),
                                "thread prestaged twice"
                            );
                            outstanding[cpu.0 as usize] = Some((txn, tid));
                        }
                    }
                }
            }
            if let Err(e) = p.check_invariants() {
                return Err(TestCaseError::fail(e));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn garbage_never_breaks_fifo(ops in proptest::collection::vec(op(), 1..300)) {
            let mut p = CentralizedFifo::<8, 16>::new(4).unwrap();
            run(&mut p, &ops)?;
        }

        #[test]
        fn garbage_never_breaks_fair(ops in proptest::collection::vec(op(), 1..300)) {
            let mut p = crate::Fair::<8, 16>::new(4).unwrap();
            run(&mut p, &ops)?;
        }

        #[test]
        fn garbage_never_breaks_shinjuku(ops in proptest::collection::vec(op(), 1..300)) {
            let cfg = ShinjukuConfig { time_slice_ns: 5_000, ..ShinjukuConfig::new(4) };
            let mut p = Shinjuku::<8, 16>::with_config(cfg).unwrap();
            run(&mut p, &ops)?;
        }
    }
}
/// Weighted-fair policy: vruntime order, weights, the host's run time, no starvation.
mod fair {
    use super::*;
    use crate::{Discipline, Fair, FairQueue};

    type Fair2 = Fair<2, 16>;

    /// A host whose threads never block: each cpu runs what it commits until preempted.
    struct CpuBoundHost {
        seq: Vec<u32>,
        /// Per cpu: (tid, run start, preempt requested).
        running: Vec<Option<(u32, u64, bool)>>,
        /// Per cpu: the prestaged (txn, tid, seq).
        slot: Vec<Option<(u64, u32, u32)>>,
        idle_sent: Vec<bool>,
        /// Cpu time each thread received.
        service: Vec<u64>,
        /// Whether runs report their time (`ran_ns`) or leave it to the agent's estimate.
        report_ran: bool,
    }

    impl CpuBoundHost {
        fn new(cpus: usize, threads: usize) -> Self {
            CpuBoundHost {
                seq: vec![0; threads],
                running: vec![None; cpus],
                slot: vec![None; cpus],
                idle_sent: vec![false; cpus],
                service: vec![0; threads],
                report_ran: true,
            }
        }

        fn spawn(&mut self, p: &mut dyn Policy, tid: u32, now: u64) {
            self.seq[tid as usize] += 1;
            let seq = Seq(self.seq[tid as usize]);
            ev(
                p,
                Event::ThreadNew {
                    tid: Tid(tid),
                    seq,
                    runnable: true,
                },
                now,
            );
        }

        fn apply(&mut self, p: &mut dyn Policy, d: Decision, now: u64) {
            match d {
                Decision::Prestage {
                    cpu, txn, tid, seq, ..
                } => self.slot[cpu.0 as usize] = Some((txn.0, tid.0, seq.0)),
                Decision::Abort { cpu, txn } => {
                    if self.slot[cpu.0 as usize].is_some_and(|s| s.0 == txn.0) {
                        self.slot[cpu.0 as usize] = None;
                        ev(p, Event::TxnAborted { txn, cpu }, now);
                    }
                }
                Decision::Preempt { cpu, tid, seq } => {
                    if let Some(r) = self.running[cpu.0 as usize].as_mut() {
                        if r.0 == tid.0 && self.seq[tid.0 as usize] == seq.0 {
                            r.2 = true;
                        }
                    }
                }
                Decision::Wake { .. } => {}
            }
        }

        /// One scheduling point per cpu: stop a preempted run, claim the slot, or go idle.
        fn schedule(&mut self, p: &mut dyn Policy, now: u64) {
            for c in 0..self.running.len() {
                if let Some((tid, since, true)) = self.running[c] {
                    let ran = now - since;
                    self.service[tid as usize] += ran;
                    self.seq[tid as usize] += 1;
                    let ran_ns = if self.report_ran { ran } else { 0 };
                    let (tid, seq, cpu) = (Tid(tid), Seq(self.seq[tid as usize]), CpuId(c as u32));
                    ev(
                        p,
                        Event::Preempted {
                            tid,
                            seq,
                            cpu,
                            ran_ns,
                        },
                        now,
                    );
                    self.running[c] = None;
                }
                if self.running[c].is_some() {
                    continue;
                }
                if let Some((txn, tid, seq)) = self.slot[c].take() {
                    assert_eq!(self.seq[tid as usize], seq, "a fresh decision");
                    self.running[c] = Some((tid, now, false));
                    self.idle_sent[c] = false;
                    commit(p, txn, tid, c as u32, now);
                } else if !self.idle_sent[c] {
                    self.idle_sent[c] = true;
                    ev(
                        p,
                        Event::CpuIdle {
                            cpu: CpuId(c as u32),
                        },
                        now,
                    );
                }
            }
        }

        /// Runs from `from` to `to` in steps of `step` ns.
        fn run(&mut self, p: &mut dyn Policy, from: u64, to: u64, step: u64) {
            let mut now = from;
            while now < to {
                for d in poll(p, now) {
                    self.apply(p, d, now);
                }
                self.schedule(p, now);
                now += step;
            }
        }
    }

    fn share(service: &[u64], t: usize) -> f64 {
        service[t] as f64 / service.iter().sum::<u64>() as f64
    }

    #[test]
    fn registry_builds_fair_from_its_parameter_block() {
        let info = crate::registry::by_name("fair").unwrap();
        assert_eq!(crate::registry::by_id(info.id).unwrap().name, "fair");
        let mut raw = [0u64; wave_abi::sched::PARAM_WORDS];
        raw[0] = 20_000;
        let p = crate::AnyPolicy::<2, 16>::build(info.id, 2, &raw).unwrap();
        assert_eq!(p.name(), "fair");
        raw[0] = 10; // below 1 µs
        assert!(matches!(
            crate::AnyPolicy::<2, 16>::build(info.id, 2, &raw),
            Err(ConfigError::Param("slice_ns"))
        ));
        assert!(matches!(
            crate::AnyPolicy::<2, 16>::build(99, 2, &[0; 8]),
            Err(ConfigError::UnknownPolicy(99))
        ));
        // The host-side choice: names, parameters, reports.
        use crate::registry::PolicyChoice;
        assert_eq!(PolicyChoice::named("fifo").unwrap().describe(), "fifo");
        let mut c = PolicyChoice::from_cli("fair", Some(40), &[]).unwrap();
        assert_eq!(c.describe(), "fair(slice 40 µs)");
        c.set("steal_after_ns", u64::MAX).unwrap();
        assert_eq!(c.describe(), "fair(slice 40 µs, steal_after never)");
        let e = PolicyChoice::from_cli("fifo", Some(30), &[]).unwrap_err();
        assert!(e.contains("no parameter `slice_ns`"), "{e}");
        let e = PolicyChoice::from_cli("nope", None, &[]).unwrap_err();
        assert!(e.contains("fifo, shinjuku, fair"), "{e}");
        let e = PolicyChoice::from_cli("fair", None, &["slice_ns=5".into()]).unwrap_err();
        assert!(e.contains("1000..=1000000000"), "{e}");
    }

    #[test]
    fn least_virtual_runtime_runs_first_using_the_hosts_run_time() {
        let mut p = Fair2::new(1).unwrap();
        for t in 0..3 {
            new_thread(&mut p, t);
        }
        // The host says thread 0 ran 900 µs and thread 1 ran 200 µs (whatever the agent saw).
        let runs = [(0u32, 900_000u64), (1, 200_000)];
        for (i, &(tid, ran)) in runs.iter().enumerate() {
            let now = 1_000 + i as u64 * 10;
            let d = poll(&mut p, now);
            let txn = d
                .iter()
                .find_map(|d| match d {
                    Decision::Prestage { txn, tid: t, .. } if t.0 == tid => Some(txn.0),
                    _ => None,
                })
                .expect("the least-vruntime thread (ties: lowest tid) is prestaged");
            commit(&mut p, txn, tid, 0, now);
            let (t, seq, cpu) = (Tid(tid), Seq(2), CpuId(0));
            ev(
                &mut p,
                Event::Preempted {
                    tid: t,
                    seq,
                    cpu,
                    ran_ns: ran,
                },
                now + 5,
            );
            assert_eq!(
                p.discipline().vruntime(tid as usize),
                ran,
                "host time is charged"
            );
        }
        // Thread 2 (never ran) first, then 1 (200 µs), then 0 (900 µs).
        let d = poll(&mut p, 2_000);
        assert!(
            matches!(d[..], [Decision::Prestage { tid: Tid(2), .. }]),
            "{d:?}"
        );
    }

    #[test]
    fn without_a_reported_run_time_the_agent_charges_what_it_saw() {
        let mut p = Fair2::new(1).unwrap();
        new_thread(&mut p, 0);
        let d = poll(&mut p, 1_000);
        let Decision::Prestage { txn, .. } = d[0] else {
            panic!("{d:?}")
        };
        commit(&mut p, txn.0, 0, 0, 1_000);
        let (tid, seq, cpu) = (Tid(0), Seq(2), CpuId(0));
        ev(
            &mut p,
            Event::Blocked {
                tid,
                seq,
                cpu,
                ran_ns: 0,
            },
            31_000,
        );
        assert_eq!(p.discipline().vruntime(0), 30_000);
    }

    #[test]
    fn weights_divide_the_cpu_in_proportion() {
        let mut p = Fair2::new(1).unwrap();
        p.discipline_mut().set_weight(0, 2048);
        let mut h = CpuBoundHost::new(1, 3);
        for t in 0..3 {
            h.spawn(&mut p, t, 0);
        }
        h.run(&mut p, 0, 60_000_000, 5_000);
        let (a, b, c) = (
            share(&h.service, 0),
            share(&h.service, 1),
            share(&h.service, 2),
        );
        assert!(
            (a - 0.5).abs() < 0.05,
            "weight 2 gets half: {a:.3} {b:.3} {c:.3}"
        );
        assert!(
            (b - 0.25).abs() < 0.05 && (c - 0.25).abs() < 0.05,
            "{b:.3} {c:.3}"
        );
        assert!(p.stats().slice_preempts > 100, "{:?}", p.stats());
    }

    #[test]
    fn equal_threads_get_equal_service_on_two_cpus_even_without_run_times() {
        let mut p = Fair2::new(2).unwrap();
        let mut h = CpuBoundHost::new(2, 5);
        h.report_ran = false;
        for t in 0..5 {
            h.spawn(&mut p, t, 0);
        }
        h.run(&mut p, 0, 50_000_000, 5_000);
        for t in 0..5 {
            let s = share(&h.service, t);
            assert!(
                (s - 0.2).abs() < 0.04,
                "thread {t}: {s:.3} of {:?}",
                h.service
            );
        }
    }

    #[test]
    fn a_late_thread_gets_its_share_at_once_but_no_more() {
        let mut p = Fair2::new(1).unwrap();
        let mut h = CpuBoundHost::new(1, 3);
        h.spawn(&mut p, 0, 0);
        h.spawn(&mut p, 1, 0);
        h.run(&mut p, 0, 20_000_000, 5_000);
        let before = h.service.clone();
        // Thread 2 joins 20 ms late with vruntime 0: placed one slice behind the floor, it
        // neither waits behind 20 ms of others' history nor monopolises the cpu to catch up.
        h.spawn(&mut p, 2, 20_000_000);
        h.run(&mut p, 20_000_000, 21_000_000, 5_000);
        assert!(h.service[2] > 0, "the newcomer ran within 1 ms");
        h.run(&mut p, 21_000_000, 50_000_000, 5_000);
        let gained: Vec<u64> = (0..3).map(|t| h.service[t] - before[t]).collect();
        for t in 0..3 {
            let s = share(&gained, t);
            assert!(
                (s - 1.0 / 3.0).abs() < 0.05,
                "thread {t}: {s:.3} of {gained:?}"
            );
        }
    }

    #[test]
    fn heap_stays_ordered_under_random_charges() {
        let mut q = FairQueue::<16>::new(50_000, None).unwrap();
        let mut rng = 12345u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rng >> 33
        };
        for round in 0..2_000 {
            let t = (next() % 16) as usize;
            if q.contains(t) {
                if round % 3 == 0 {
                    q.remove(t);
                } else {
                    q.charge(t, next() % 100_000);
                }
            } else {
                q.enqueue(t, false);
            }
            q.check().unwrap();
            if let Some(best) = q.peek(0, |_| true) {
                let min = (0..16)
                    .filter(|&t| q.contains(t))
                    .map(|t| (q.vruntime(t), t))
                    .min();
                assert_eq!(Some((q.vruntime(best), best)), min);
            }
        }
    }
}

/// Resynchronisation (docs/abi.md §7.7): `ThreadRunning` tells a new agent that a thread runs
/// on a CPU; the agent keeps that CPU's thread off every other CPU, accepts its stop event,
/// and refuses a second claim on the same CPU.
#[test]
fn thread_running_resyncs_a_running_thread() {
    let mut p = Fifo4::new(2).unwrap();
    let running = Event::ThreadRunning {
        tid: Tid(0),
        seq: Seq(5),
        cpu: CpuId(0),
    };
    ev(&mut p, running, 0);
    new_thread(&mut p, 1);
    let d = poll(&mut p, 1);
    // Thread 0 runs on cpu 0: never prestaged anywhere; thread 1 is.
    assert!(prestages(&d).iter().all(|&(_, tid, ..)| tid == 1), "{d:?}");
    assert!(!prestages(&d).is_empty(), "{d:?}");
    // A second thread cannot run on cpu 0 too.
    let dup = Event::ThreadRunning {
        tid: Tid(2),
        seq: Seq(1),
        cpu: CpuId(0),
    };
    ev(&mut p, dup, 2);
    assert_eq!(p.stats().duplicate_new, 1);
    // Its stop event is accepted (not stale, not unknown).
    let before = p.stats().stale_events + p.stats().unknown_thread;
    ev(
        &mut p,
        Event::Blocked {
            tid: Tid(0),
            seq: Seq(6),
            cpu: CpuId(0),
            ran_ns: 1000,
        },
        3,
    );
    assert_eq!(p.stats().stale_events + p.stats().unknown_thread, before);
}
