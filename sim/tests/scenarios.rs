//! The simulator's scenarios: the policies, unchanged, against the shipped host mechanism with
//! the link as a latency model. Storms race decisions in flight (stale claims, aborts,
//! preemptions, kills); open-loop RocksDB-like loads check latency and that no request is lost.

use wave_policy::registry::PolicyChoice;
use wave_policy::{CentralizedFifo, FairQueue, Policy, SchedCore, Shinjuku, ShinjukuConfig};
use wave_sim::{simulate, simulate_runtime, SimConfig, StormConfig, Workload};

type Shin4 = Shinjuku<4, 64>;

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
        agent_model: None,
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
    assert_eq!(format!("{:?}", a.host), format!("{:?}", b.host));
    assert_eq!(a.mechanism_runtime_ns, b.mechanism_runtime_ns);
    assert_eq!(a.end_ns, b.end_ns);
    // A different seed is a different run.
    let c = simulate(storm_cfg(10, 5_000), &mut Shin4::new(4).unwrap());
    assert_ne!(format!("{:?}", a.host), format!("{:?}", c.host));
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

/// The FIFO-vs-Shinjuku table for the report:
/// `cargo test -p wave-sim --release --test scenarios -- --ignored --nocapture sim_table`.
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

// --------------------------------------------------------------------------------------
// The shipped agent loop (`SchedAgent` over an in-process region) instead of a bare policy.

/// Policy `name` from the registry, with its time slice set where it has one.
fn choice(name: &str, slice_ns: u64) -> PolicyChoice {
    let mut c = PolicyChoice::named(name).unwrap();
    if c.get("slice_ns").is_some() {
        c.set("slice_ns", slice_ns).unwrap();
    }
    c
}

#[test]
fn the_shipped_agent_loop_keeps_every_invariant_in_storms() {
    for (seed, link) in [(1, 1_000), (3, 50_000)] {
        for (kind, slice) in [("fifo", 30_000), ("shinjuku", 5_000), ("fair", 5_000)] {
            let r = simulate_runtime(storm_cfg(seed, link), choice(kind, slice)).unwrap();
            assert!(
                r.violations.is_empty(),
                "{kind:?} link {link}: {:#?}",
                r.violations
            );
            assert_eq!(r.completed + r.abandoned, r.generated);
            assert!(r.host.failed_stale > 0, "{:?}", r.host);
            assert!(r.policy_stats.events_total() > 0);
        }
    }
}

#[test]
fn the_shipped_agent_loop_decides_as_the_policy_does() {
    // Same policy and configuration, driven directly or through SchedAgent: same run.
    let cfg = rocksdb(4, 100_000.0, 5, 20);
    let direct = simulate(cfg.clone(), &mut Shinjuku::<64, 1024>::new(4).unwrap());
    let shipped = simulate_runtime(cfg, choice("shinjuku", 30_000)).unwrap();
    for r in [&direct, &shipped] {
        assert!(r.violations.is_empty(), "{}: {:#?}", r.policy, r.violations);
    }
    assert_eq!(direct.policy_stats, shipped.policy_stats);
    assert_eq!(format!("{:?}", direct.host), format!("{:?}", shipped.host));
    assert_eq!(
        direct.class("GET").unwrap().p99_ns,
        shipped.class("GET").unwrap().p99_ns
    );
}

#[test]
fn the_shipped_agent_refuses_a_session_it_cannot_hold() {
    let mut cfg = storm_cfg(1, 1_000);
    cfg.n_cpus = 65;
    assert!(simulate_runtime(cfg, choice("fifo", 30_000)).is_err());
}

#[test]
fn sixty_four_cpus_through_the_shipped_agent_loop() {
    // The most CPUs a session holds (affinity masks are 64 bits), at ~60 % load.
    let cfg = rocksdb(64, 1_100_000.0, 11, 10);
    for kind in ["fifo", "shinjuku", "fair"] {
        let r = simulate_runtime(cfg.clone(), choice(kind, 30_000)).unwrap();
        assert!(r.violations.is_empty(), "{kind:?}: {:#?}", r.violations);
        assert_eq!(r.completed, r.generated);
        assert!(r.generated > 5_000, "{}", r.generated);
    }
}

#[test]
fn fair_survives_the_storm() {
    // The weighted-fair discipline with a short slice and stealing, against the same races.
    for (seed, link) in [(11, 1_000), (12, 20_000)] {
        let q = FairQueue::new(5_000, Some(5_000)).unwrap();
        let mut p = SchedCore::<4, 64, FairQueue<64>>::with_discipline(4, q).unwrap();
        let r = simulate(storm_cfg(seed, link), &mut p);
        assert!(r.violations.is_empty(), "seed {seed}: {:#?}", r.violations);
        assert_eq!(
            r.completed + r.abandoned,
            r.generated,
            "no runnable burst lost"
        );
    }
}
