//! Unit, simulator and property tests of the policies (host only).

use std::vec::Vec;

use crate::sim::{simulate, SimConfig, StormConfig, Workload};
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
// Simulator.

fn storm_cfg(seed: u64, link: u64) -> SimConfig {
    SimConfig {
        n_cpus: 4,
        link_latency_ns: link,
        wake_latency_ns: 2_000,
        safe_point_ns: 1_000,
        seed,
        duration_ns: 60_000_000,
        drain_ns: 1_000_000_000,
        check_every: 1,
        workload: Workload::Storm(StormConfig {
            threads: 48,
            burst_ns: (500, 40_000),
            sleep_ns: (1_000, 60_000),
            yield_prob: 0.2,
            affinity_every_ns: 20_000,
            kill_every_ns: 100_000,
            revive_after_ns: 5_000,
        }),
    }
}

#[test]
fn storm_races_keep_every_invariant() {
    // High link latency relative to bursts: decisions are often stale when they land.
    for (seed, link) in [(1, 1_000), (2, 10_000), (3, 50_000), (4, 3_000)] {
        for preempt in [false, true] {
            let mut fifo = CentralizedFifo::<4, 64>::new(4).unwrap();
            let shin_cfg = ShinjukuConfig {
                time_slice_ns: 5_000,
                ..ShinjukuConfig::new(4)
            };
            let mut shin = Shinjuku::<4, 64>::with_config(shin_cfg).unwrap();
            let p: &mut dyn Policy = if preempt { &mut shin } else { &mut fifo };
            let r = simulate(storm_cfg(seed, link), p);
            assert!(
                r.violations.is_empty(),
                "{} seed {seed} link {link}: {:#?}",
                r.policy,
                r.violations
            );
            assert_eq!(
                r.completed + r.abandoned,
                r.generated,
                "no runnable burst lost"
            );
            let h = &r.host;
            // The races were exercised.
            assert!(h.failed_stale > 0, "{h:?}");
            assert!(h.aborts_won + h.aborts_lost > 0, "{h:?}");
            assert!(r.policy_stats.parked + r.policy_stats.txn_failed_stale > 0);
            std::println!(
                "{} link {link}: max runnable wait {} us, {:?}",
                r.policy,
                r.max_runnable_wait_ns / 1000,
                h
            );
            // No starvation: 48 threads of <= 40 µs bursts on 4 cpus.
            assert!(
                r.max_runnable_wait_ns < 5_000_000,
                "{}",
                r.max_runnable_wait_ns
            );
            // (With a 50 µs link every 5 µs-slice preemption lands after the burst ended.)
            if preempt && link <= 10_000 {
                assert!(h.preempts_honoured > 0, "{h:?}");
            }
        }
    }
}

#[test]
fn storm_is_deterministic() {
    let a = simulate(storm_cfg(9, 5_000), &mut Shin4::new(4).unwrap());
    let b = simulate(storm_cfg(9, 5_000), &mut Shin4::new(4).unwrap());
    assert_eq!(a.policy_stats, b.policy_stats);
    assert_eq!(a.max_runnable_wait_ns, b.max_runnable_wait_ns);
}

fn rocksdb(n_cpus: usize, rate: f64, seed: u64, ms: u64) -> SimConfig {
    let mut c = SimConfig::rocksdb(n_cpus, rate, seed);
    c.duration_ns = ms * 1_000_000;
    c
}

#[test]
fn fifo_never_starves_under_overload_bursts() {
    // Offered load above capacity for the run, then drain: every request completes, in FIFO
    // order of becoming runnable, so the worst wait is bounded by the backlog.
    let cfg = rocksdb(4, 130_000.0, 4, 100);
    let r = simulate(cfg, &mut CentralizedFifo::<4, 256>::new(4).unwrap());
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert_eq!(r.completed, r.generated);
    assert!(r.generated > 10_000);
}

#[test]
fn shinjuku_keeps_get_tail_low_where_fifo_does_not() {
    // 8 cpus, ~70 % load: 160 k req/s of 99.5 % GET 10 µs / 0.5 % RANGE 5 ms.
    let cfg = rocksdb(8, 160_000.0, 7, 300);
    let f = simulate(cfg.clone(), &mut CentralizedFifo::<8, 256>::new(8).unwrap());
    let s = simulate(cfg, &mut Shinjuku::<8, 256>::new(8).unwrap());
    for r in [&f, &s] {
        assert!(r.violations.is_empty(), "{}: {:#?}", r.policy, r.violations);
    }
    let (fg, sg) = (f.class("GET").unwrap(), s.class("GET").unwrap());
    std::println!("fifo GET {fg:?}\nshinjuku GET {sg:?}");
    assert!(sg.p99_ns < 1_000_000, "shinjuku GET p99 {} ns", sg.p99_ns);
    assert!(
        fg.p99_ns > 5 * sg.p99_ns,
        "fifo {} vs shinjuku {}",
        fg.p99_ns,
        sg.p99_ns
    );
    // The preempted RANGE requests still finish.
    assert!(s.class("RANGE").unwrap().count > 0);
    assert!(s.host.preempts_honoured > 0);
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
        fn garbage_never_breaks_shinjuku(ops in proptest::collection::vec(op(), 1..300)) {
            let cfg = ShinjukuConfig { time_slice_ns: 5_000, ..ShinjukuConfig::new(4) };
            let mut p = Shinjuku::<8, 16>::with_config(cfg).unwrap();
            run(&mut p, &ops)?;
        }
    }
}

/// The FIFO-vs-Shinjuku table for the report:
/// `cargo test -p wave-policy --release -- --ignored --nocapture sim_table`.
#[test]
#[ignore]
fn sim_table() {
    for &(cpus, link) in &[(8usize, 1_000u64), (8, 5_000)] {
        for &load in &[0.5f64, 0.7, 0.85] {
            let rate = load * cpus as f64 * 1e9 / 34_950.0;
            let mut cfg = SimConfig::rocksdb(cpus, rate, 42);
            cfg.link_latency_ns = link;
            let f = simulate(
                cfg.clone(),
                &mut CentralizedFifo::<64, 1024>::new(cpus).unwrap(),
            );
            let s = simulate(cfg, &mut Shinjuku::<64, 1024>::new(cpus).unwrap());
            for r in [&f, &s] {
                assert!(r.violations.is_empty(), "{:#?}", r.violations);
                let g = r.class("GET").unwrap();
                let x = r.class("RANGE").unwrap();
                std::println!(
                    "cpus={cpus} link={}us load={load:.2} ({:.0}k rps) {:9} GET p50={:>7.1}us p99={:>8.1}us | RANGE p50={:>7.1}us p99={:>7.1}us | n={} preempts={} preempt-lat p50/p99={:.1}/{:.1}us stale={} aborts won/lost={}/{} busy={:.2}",
                    link / 1000,
                    rate / 1000.0,
                    r.policy,
                    g.p50_ns as f64 / 1e3,
                    g.p99_ns as f64 / 1e3,
                    x.p50_ns as f64 / 1e3,
                    x.p99_ns as f64 / 1e3,
                    r.completed,
                    r.host.preempts_honoured,
                    r.preempt_latency_p50_ns as f64 / 1e3,
                    r.preempt_latency_p99_ns as f64 / 1e3,
                    r.host.failed_stale,
                    r.host.aborts_won,
                    r.host.aborts_lost,
                    r.busy_fraction,
                );
            }
        }
    }
}
