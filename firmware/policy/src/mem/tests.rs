//! Unit tests of the memory policy: histograms, aging, the threshold controller, quotas,
//! hot-set moves, outcomes (stale, failed, unknown) and hostile input.

use super::*;
use crate::types::{Seq, TxnId};

type P = MemPolicy<64>;

fn cfg(n: u32) -> MemConfig {
    MemConfig {
        n_regions: n,
        min_threshold: 2,
        max_threshold: 64,
        intervals_per_minute: 10,
        slo_ppm_per_minute: 100_000, // 10% of the working set per minute
        wss_age: 8,
        reclaim_quota: 64,
        promote_quota: 64,
        collapse_after: 0,
        collapse_quota: 4,
        pending_timeout: 64,
        // one page per region, promoted on its first fault: the SLO counts regions here
        region_pages: 1,
        promote_pages: 1,
        initial_threshold: 0,
    }
}

/// Test harness: a fake host that tracks seqs and answers every decision.
struct Host {
    seq: [u32; 64],
    far: [bool; 64],
}

impl Host {
    fn new() -> Self {
        Host {
            seq: [0; 64],
            far: [false; 64],
        }
    }

    fn touch(&mut self, p: &mut P, r: u32, write: bool) {
        self.seq[r as usize] += 1;
        let tier = if self.far[r as usize] {
            Tier::Far
        } else {
            Tier::Near
        };
        // A touch of a far region faults back its (one) page.
        let faulted = u32::from(tier == Tier::Far);
        let rec = RegionRecord {
            region: RegionId(r),
            seq: Seq(self.seq[r as usize]),
            read: !write,
            written: write,
            tier,
            faulted,
        };
        p.on_record(rec);
    }

    /// Commit every decision whose seq is current (changing tiers bumps the seq).
    fn apply(&mut self, p: &mut P, ds: &[MemDecision]) -> (u32, u32) {
        let (mut committed, mut stale) = (0, 0);
        for d in ds {
            let (action, txn, region, seq) = d.parts();
            let i = region.0 as usize;
            let kind = if seq.0 != self.seq[i] {
                stale += 1;
                OutcomeKind::Stale
            } else {
                committed += 1;
                match action {
                    MemAction::Reclaim => self.far[i] = true,
                    MemAction::Promote => self.far[i] = false,
                    MemAction::Collapse => {}
                }
                if action != MemAction::Collapse {
                    self.seq[i] += 1;
                }
                OutcomeKind::Committed
            };
            p.on_outcome(MemOutcome {
                txn,
                region,
                seq: Seq(self.seq[i]),
                kind,
            });
        }
        (committed, stale)
    }
}

fn step(p: &mut P) -> Vec<MemDecision> {
    let mut out = Vec::new();
    p.end_interval(&mut out);
    p.check_invariants().unwrap();
    out
}

fn reclaims(ds: &[MemDecision]) -> Vec<u32> {
    ds.iter()
        .filter(|d| matches!(d, MemDecision::Reclaim { .. }))
        .map(|d| d.parts().2 .0)
        .collect()
}

#[test]
fn age_bins_are_log2() {
    assert_eq!(age_bin(0), 0);
    assert_eq!(age_bin(1), 1);
    assert_eq!(
        (age_bin(2), age_bin(3), age_bin(4), age_bin(7), age_bin(8)),
        (2, 2, 3, 3, 4)
    );
    assert_eq!(age_bin(u32::MAX), AGE_BINS - 1);
    let mut h = AgeHistogram::new();
    for a in [0, 1, 2, 3, 4, 8, 100] {
        h.add(a);
    }
    assert_eq!(h.total(), 7);
    assert_eq!(h.at_least(0), 7);
    assert_eq!(h.at_least(2), 5);
    assert_eq!(h.at_least(4), 3);
    assert_eq!(h.at_least(8), 2);
    assert_eq!(h.below(4), 4);
}

#[test]
fn config_is_validated() {
    assert_eq!(
        P::new(MemConfig {
            n_regions: 0,
            ..cfg(1)
        })
        .err(),
        Some(MemConfigError::RegionCount)
    );
    assert_eq!(
        P::new(MemConfig {
            n_regions: 65,
            ..cfg(1)
        })
        .err(),
        Some(MemConfigError::RegionCount)
    );
    assert_eq!(
        P::new(MemConfig {
            min_threshold: 3,
            ..cfg(4)
        })
        .err(),
        Some(MemConfigError::Threshold)
    );
    assert_eq!(
        P::new(MemConfig {
            min_threshold: 128,
            ..cfg(4)
        })
        .err(),
        Some(MemConfigError::Threshold)
    );
    assert_eq!(
        P::new(MemConfig {
            intervals_per_minute: 0,
            ..cfg(4)
        })
        .err(),
        Some(MemConfigError::TimeBase)
    );
    assert!(
        P::new(MemConfig::default()).is_err(),
        "default 512 regions exceed capacity 64"
    );
    assert!(MemPolicy::<512>::new(MemConfig::default()).is_ok());
}

#[test]
fn ages_and_cold_histogram() {
    let mut p = P::new(MemConfig {
        min_threshold: 64,
        ..cfg(8)
    })
    .unwrap();
    let mut h = Host::new();
    for _ in 0..5 {
        h.touch(&mut p, 0, true);
        h.touch(&mut p, 1, false);
        assert!(step(&mut p).is_empty());
    }
    assert_eq!(p.region(RegionId(0)).unwrap().0, 0);
    assert_eq!(p.region(RegionId(5)).unwrap().0, 5);
    // 2 regions at age 0, 6 at age 5 (bin 3: ages 4..8)
    assert_eq!(p.cold_histogram().bins()[0], 2);
    assert_eq!(p.cold_histogram().bins()[3], 6);
    assert_eq!(p.cold_histogram().at_least(4), 6);
    assert_eq!(p.working_set(), 8, "all ages below wss_age 8");
    for _ in 0..4 {
        h.touch(&mut p, 0, true);
        step(&mut p);
    }
    assert_eq!(
        p.working_set(),
        2,
        "regions 2..8 aged past wss_age; 1 is at age 4"
    );
    assert_eq!(p.region(RegionId(1)).unwrap().0, 4);
}

#[test]
fn cold_regions_are_reclaimed_at_the_threshold_and_hot_ones_are_not() {
    let mut p = P::new(cfg(8)).unwrap();
    let mut h = Host::new();
    h.touch(&mut p, 0, true);
    assert!(reclaims(&step(&mut p)).is_empty(), "age 1 < threshold 2");
    h.touch(&mut p, 0, true);
    let ds = step(&mut p);
    assert_eq!(reclaims(&ds), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(p.pending(), 7);
    assert_eq!(h.apply(&mut p, &ds), (7, 0));
    assert_eq!(p.far_regions(), 7);
    assert_eq!(p.stats().outcomes, [7, 0, 0]);
    h.touch(&mut p, 0, true);
    assert!(
        step(&mut p).is_empty(),
        "nothing resident is cold; nothing re-reclaimed"
    );
}

#[test]
fn reclaim_quota_takes_the_oldest_first() {
    let mut p = P::new(MemConfig {
        reclaim_quota: 2,
        ..cfg(8)
    })
    .unwrap();
    let mut h = Host::new();
    for i in 0..20 {
        // region r is touched until interval 2r: lower ids are older
        for r in 0..8 {
            if i < 2 * r {
                h.touch(&mut p, r, false);
            }
        }
        let ds = step(&mut p);
        assert!(reclaims(&ds).len() <= 2, "quota 2 per interval");
        // the host refuses every decision (as if each region had moved): all stay candidates
        for d in &ds {
            let (_, txn, region, seq) = d.parts();
            p.on_outcome(MemOutcome {
                txn,
                region,
                seq,
                kind: OutcomeKind::Stale,
            });
        }
        if i == 19 {
            let got = reclaims(&ds);
            assert_eq!(got.len(), 2);
            assert!(
                got.iter().all(|r| *r <= 2),
                "the oldest bin (regions 0..=2) goes first: {got:?}"
            );
        }
    }
    assert_eq!(p.stats().outcomes[1], p.stats().decisions[0]);
}

/// Drive a policy with a hot set that moves through far regions, so promotions happen.
fn run_churn(p: &mut P, h: &mut Host, intervals: u32) -> u64 {
    let before = p.stats().promotions;
    for i in 0..intervals {
        h.touch(p, 0, true);
        // every 4th interval touch a region that has been idle 3 intervals
        if i % 4 == 0 {
            h.touch(p, 1 + (i / 4) % 6, false);
        }
        let ds = step(p);
        h.apply(p, &ds);
    }
    p.stats().promotions - before
}

#[test]
fn controller_raises_the_threshold_when_promotions_break_the_slo() {
    // working set ~8 regions; SLO 10% of 8 = 0.8 promotions/minute (10 intervals)
    let mut p = P::new(cfg(8)).unwrap();
    let mut h = Host::new();
    assert_eq!(p.threshold(), 2);
    let promos = run_churn(&mut p, &mut h, 60);
    assert!(
        promos > 0,
        "threshold 2 reclaims regions touched every 24 intervals"
    );
    assert!(
        p.threshold() > 4,
        "threshold {} did not rise",
        p.threshold()
    );
    assert!(p.stats().slo_backoffs > 0 || p.threshold() >= 8);
    // with the threshold up, a further run promotes less per minute than at the start
    let later = run_churn(&mut p, &mut h, 60);
    assert!(later < promos, "promotions {promos} -> {later}");
}

#[test]
fn controller_predicts_from_the_promotion_histogram() {
    // generous SLO: the predicted rate at threshold 2 fits, so the threshold stays low
    let mut p = P::new(MemConfig {
        slo_ppm_per_minute: 1_000_000,
        ..cfg(8)
    })
    .unwrap();
    let mut h = Host::new();
    run_churn(&mut p, &mut h, 30);
    assert_eq!(p.threshold(), 2);
    assert!(p.promotion_histogram().total() > 0 || p.stats().promotions > 0);
    // strict SLO: the same history forces the threshold above the accesses' idle ages
    let mut q = P::new(MemConfig {
        slo_ppm_per_minute: 1,
        ..cfg(8)
    })
    .unwrap();
    let mut hq = Host::new();
    run_churn(&mut q, &mut hq, 30);
    assert!(q.threshold() >= 32, "threshold {}", q.threshold());
}

#[test]
fn feedback_floor_relaxes_when_promotions_stop() {
    let mut p = P::new(cfg(8)).unwrap();
    let mut h = Host::new();
    run_churn(&mut p, &mut h, 60);
    let raised = p.threshold_floor();
    for _ in 0..200 {
        h.touch(&mut p, 0, true);
        let ds = step(&mut p);
        h.apply(&mut p, &ds);
    }
    assert!(p.threshold_floor() < raised || raised == 2);
    assert_eq!(p.threshold_floor(), 2);
}

#[test]
fn hot_set_move_promotes_new_hot_regions_and_reclaims_old_ones() {
    let mut p = P::new(MemConfig {
        slo_ppm_per_minute: 1_000_000,
        ..cfg(8)
    })
    .unwrap();
    let mut h = Host::new();
    let phase = |p: &mut P, h: &mut Host, hot: core::ops::Range<u32>, n: u32| {
        for _ in 0..n {
            for r in hot.clone() {
                h.touch(p, r, false);
            }
            let ds = step(p);
            h.apply(p, &ds);
        }
    };
    phase(&mut p, &mut h, 0..4, 10);
    assert_eq!(p.far_regions(), 4, "4..8 cold and reclaimed");
    let promos = p.stats().promotions;
    phase(&mut p, &mut h, 4..8, 10);
    assert_eq!(
        p.stats().promotions - promos,
        4,
        "each new hot region promoted once"
    );
    assert_eq!(p.stats().decisions[1], 4);
    for r in 0..4 {
        assert_eq!(
            p.region(RegionId(r)).unwrap().1,
            Tier::Far,
            "old hot set reclaimed"
        );
    }
    for r in 4..8 {
        assert_eq!(
            p.region(RegionId(r)).unwrap().1,
            Tier::Near,
            "new hot set resident"
        );
    }
}

#[test]
fn stale_outcome_clears_the_transaction_and_the_region_is_retried_later() {
    // a generous SLO: the access after idling would otherwise (rightly) raise the threshold
    let mut p = P::new(MemConfig {
        slo_ppm_per_minute: 1_000_000,
        ..cfg(2)
    })
    .unwrap();
    let mut h = Host::new();
    step(&mut p);
    let ds = step(&mut p);
    assert_eq!(reclaims(&ds), vec![0, 1]);
    // region 1 is written after the decision was computed: the host refuses it as stale
    h.touch(&mut p, 1, true);
    assert_eq!(h.apply(&mut p, &ds), (1, 1));
    assert_eq!(p.stats().outcomes, [1, 1, 0]);
    assert_eq!(p.pending(), 0);
    assert_eq!(p.region(RegionId(1)).unwrap().1, Tier::Near);
    // the write made it hot: no decision until it is cold again, then one with the new seq
    assert!(reclaims(&step(&mut p)).is_empty());
    assert!(reclaims(&step(&mut p)).is_empty());
    let ds = step(&mut p);
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].parts().3, Seq(h.seq[1]));
    assert_eq!(h.apply(&mut p, &ds), (1, 0));
}

#[test]
fn failed_outcomes_back_off() {
    let mut p = P::new(MemConfig {
        collapse_after: 2,
        ..cfg(2)
    })
    .unwrap();
    let mut h = Host::new();
    h.touch(&mut p, 0, true);
    step(&mut p);
    h.touch(&mut p, 0, true);
    let ds = step(&mut p);
    let col: Vec<_> = ds
        .iter()
        .filter(|d| matches!(d, MemDecision::Collapse { .. }))
        .collect();
    assert_eq!(col.len(), 1);
    let (_, txn, region, seq) = col[0].parts();
    p.on_outcome(MemOutcome {
        txn,
        region,
        seq,
        kind: OutcomeKind::Failed,
    });
    for _ in 0..5 {
        h.touch(&mut p, 0, true);
        assert!(
            !step(&mut p)
                .iter()
                .any(|d| matches!(d, MemDecision::Collapse { .. })),
            "no retry"
        );
    }
    assert_eq!(p.stats().outcomes[2], 1);
}

#[test]
fn collapse_after_a_hot_streak_once() {
    let mut p = P::new(MemConfig {
        collapse_after: 3,
        ..cfg(4)
    })
    .unwrap();
    let mut h = Host::new();
    let mut collapses = 0;
    for _ in 0..10 {
        h.touch(&mut p, 2, true);
        let ds = step(&mut p);
        collapses += ds
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    MemDecision::Collapse {
                        region: RegionId(2),
                        ..
                    }
                )
            })
            .count();
        h.apply(&mut p, &ds);
    }
    assert_eq!(collapses, 1);
    assert!(p.region(RegionId(2)).unwrap().2, "marked huge");
}

#[test]
fn hostile_input_is_counted_not_fatal() {
    let mut p = P::new(cfg(4)).unwrap();
    p.on_record(RegionRecord::touched(RegionId(4), Seq(1), true, true));
    p.on_record(RegionRecord::touched(
        RegionId(u32::MAX),
        Seq(1),
        true,
        true,
    ));
    assert_eq!(p.stats().bad_region, 2);
    p.on_record(RegionRecord::touched(RegionId(0), Seq(5), true, false));
    p.on_record(RegionRecord::touched(RegionId(0), Seq(5), true, false)); // replayed
    p.on_record(RegionRecord::touched(RegionId(0), Seq(3), true, false)); // reordered
    assert_eq!(p.stats().old_records, 2);
    p.on_outcome(MemOutcome {
        txn: TxnId(99),
        region: RegionId(0),
        seq: Seq(9),
        kind: OutcomeKind::Committed,
    });
    p.on_outcome(MemOutcome {
        txn: TxnId(1),
        region: RegionId(77),
        seq: Seq(9),
        kind: OutcomeKind::Stale,
    });
    assert_eq!(p.stats().unknown_outcomes, 2);
    assert_eq!(p.far_regions(), 0, "an unknown commit changed nothing");
    // seq wrap-around is harmless
    for s in [0x7fff_ffff, 0xffff_fff0, 5] {
        p.on_record(RegionRecord::touched(RegionId(1), Seq(s), false, true));
    }
    assert_eq!(p.stats().records, 4);
    step(&mut p);
}

#[test]
fn full_sink_defers_decisions() {
    let mut p = P::new(cfg(4)).unwrap();
    step(&mut p);
    let mut small: heapless::Vec<MemDecision, 1> = heapless::Vec::new();
    p.end_interval(&mut small);
    assert_eq!(small.len(), 1);
    assert!(p.stats().sink_full >= 1);
    assert_eq!(p.pending(), 1);
    let ds = step(&mut p);
    assert_eq!(
        reclaims(&ds).len(),
        3,
        "the deferred ones come next interval"
    );
}

#[test]
fn lost_outcomes_expire() {
    let mut p = P::new(MemConfig {
        pending_timeout: 3,
        ..cfg(2)
    })
    .unwrap();
    step(&mut p);
    assert_eq!(step(&mut p).len(), 2);
    for _ in 0..4 {
        step(&mut p);
    }
    assert_eq!(p.stats().unknown_outcomes, 2);
    assert_eq!(p.pending(), 2, "expired, then reissued");
}

mod fuzz {
    //! Random mixes of valid and hostile input: the policy never panics, keeps its invariants,
    //! respects its quotas, and only names regions it has.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Record {
            region: u32,
            seq_step: i32,
            read: bool,
            written: bool,
            far: bool,
        },
        Answer {
            pick: usize,
            kind: u8,
            seq_step: u32,
        },
        Garbage {
            txn: u64,
            region: u32,
            kind: u8,
        },
        End,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..80, -2i32..4, any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(region, seq_step, read, written, far)| Op::Record { region, seq_step, read, written, far }),
            3 => (any::<usize>(), 0u8..3, 0u32..3).prop_map(|(pick, kind, seq_step)| Op::Answer { pick, kind, seq_step }),
            1 => (any::<u64>(), 0u32..100, 0u8..3).prop_map(|(txn, region, kind)| Op::Garbage { txn, region, kind }),
            3 => Just(Op::End),
        ]
    }

    fn kind(k: u8) -> OutcomeKind {
        [
            OutcomeKind::Committed,
            OutcomeKind::Stale,
            OutcomeKind::Failed,
        ][k as usize % 3]
    }

    fn run(ops: &[Op]) {
        let cfg = MemConfig {
            reclaim_quota: 5,
            promote_quota: 3,
            collapse_after: 2,
            collapse_quota: 2,
            ..cfg(48)
        };
        let mut p = P::new(cfg).unwrap();
        let mut seqs = [0u32; 80];
        let mut open: Vec<MemDecision> = Vec::new();
        for op in ops {
            match *op {
                Op::Record {
                    region,
                    seq_step,
                    read,
                    written,
                    far,
                } => {
                    let s = &mut seqs[region as usize];
                    *s = s.wrapping_add_signed(seq_step);
                    let tier = if far { Tier::Far } else { Tier::Near };
                    p.on_record(RegionRecord {
                        region: RegionId(region),
                        seq: Seq(*s),
                        read,
                        written,
                        tier,
                        faulted: u32::from(far && (read || written)),
                    });
                }
                Op::Answer {
                    pick,
                    kind: k,
                    seq_step,
                } if !open.is_empty() => {
                    let d = open.swap_remove(pick % open.len());
                    let (_, txn, region, _) = d.parts();
                    let s = &mut seqs[region.0 as usize];
                    *s = s.wrapping_add(seq_step);
                    p.on_outcome(MemOutcome {
                        txn,
                        region,
                        seq: Seq(*s),
                        kind: kind(k),
                    });
                }
                Op::Answer { .. } => {}
                Op::Garbage {
                    txn,
                    region,
                    kind: k,
                } => {
                    p.on_outcome(MemOutcome {
                        txn: TxnId(txn),
                        region: RegionId(region),
                        seq: Seq(0),
                        kind: kind(k),
                    });
                }
                Op::End => {
                    let ds = step(&mut p);
                    let count = |a: MemAction| ds.iter().filter(|d| d.parts().0 == a).count();
                    assert!(count(MemAction::Reclaim) <= 5 && count(MemAction::Promote) <= 3);
                    assert!(count(MemAction::Collapse) <= 2);
                    assert!(ds.iter().all(|d| d.parts().2 .0 < 48));
                    open.extend(ds);
                }
            }
            p.check_invariants().unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn random_and_hostile_input_never_breaks_the_policy(ops in proptest::collection::vec(op(), 1..400)) {
            run(&ops);
        }
    }
}

/// Policy cost per interval against memory size (2 MiB regions; 1% of regions touched per
/// interval, the host committing every decision). Prints, never gates:
/// `cargo test -p wave-policy --release mem::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_policy_cost_by_memory_size() {
    fn run<const N: usize>() {
        let cfg = MemConfig {
            n_regions: N as u32,
            ..MemConfig::default()
        };
        let mut p = Box::new(MemPolicy::<N>::new(cfg).unwrap());
        let mut seqs = vec![0u32; N];
        let mut out = Vec::new();
        let intervals = 200;
        let t0 = std::time::Instant::now();
        for i in 0..intervals {
            for k in 0..N / 100 {
                let r = (spread(i, k) % N as u64) as usize;
                seqs[r] += 1;
                p.on_record(RegionRecord::touched(
                    RegionId(r as u32),
                    Seq(seqs[r]),
                    true,
                    false,
                ));
            }
            out.clear();
            p.end_interval(&mut out);
            for d in &out {
                let (_, txn, region, _) = d.parts();
                let i = region.0 as usize;
                seqs[i] += 1;
                p.on_outcome(MemOutcome {
                    txn,
                    region,
                    seq: Seq(seqs[i]),
                    kind: OutcomeKind::Committed,
                });
            }
        }
        let per = t0.elapsed() / intervals as u32;
        let gib = N * 2 / 1024;
        eprintln!(
            "{gib:>4} GiB ({N:>6} regions): {per:?} per interval; far {}",
            p.far_regions()
        );
    }
    let t = std::thread::Builder::new().stack_size(256 << 20).spawn(|| {
        run::<512>();
        run::<8192>();
        run::<32768>();
        run::<131072>();
    });
    t.unwrap().join().unwrap();
}

fn spread(i: u64, k: usize) -> u64 {
    let mut z =
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 31;
    z.wrapping_mul(0x94D0_49BB_1331_11EB) >> 7
}

#[test]
fn working_set_age_follows_the_time_base_by_default() {
    let mut p = P::new(MemConfig {
        wss_age: 0,
        intervals_per_minute: 3,
        min_threshold: 64,
        ..cfg(4)
    })
    .unwrap();
    let mut h = Host::new();
    for _ in 0..6 {
        h.touch(&mut p, 0, true);
        step(&mut p);
    }
    assert_eq!(
        p.working_set(),
        1,
        "idle regions leave the working set after 2 minutes (6 intervals)"
    );
}

/// A 4-region policy with 512-page regions whose region 1 was reclaimed (committed at seq 1).
fn with_far_region(initial_threshold: u32) -> P {
    let mut p = P::new(MemConfig {
        n_regions: 4,
        min_threshold: 1,
        intervals_per_minute: 1,
        initial_threshold,
        ..MemConfig::default()
    })
    .unwrap();
    let mut out: heapless::Vec<MemDecision, 16> = heapless::Vec::new();
    for r in [0, 2, 3] {
        p.on_record(RegionRecord::touched(RegionId(r), Seq(1), true, false));
    }
    p.end_interval(&mut out);
    let d = out
        .iter()
        .find(|d| d.parts().2 == RegionId(1))
        .copied()
        .expect("the idle region is reclaimed");
    let (_, txn, region, _) = d.parts();
    p.on_outcome(MemOutcome {
        txn,
        region,
        seq: Seq(1),
        kind: OutcomeKind::Committed,
    });
    assert_eq!(p.far_regions(), 1);
    p
}

fn promotes(p: &mut P, rec: RegionRecord) -> bool {
    let mut out: heapless::Vec<MemDecision, 16> = heapless::Vec::new();
    for r in [0, 2, 3] {
        let seq = Seq(p.region(RegionId(r)).map_or(0, |_| 0) + 2 + p.stats().intervals as u32);
        p.on_record(RegionRecord::touched(RegionId(r), seq, true, false));
    }
    p.on_record(rec);
    p.end_interval(&mut out);
    out.iter().any(|d| {
        matches!(
            d,
            MemDecision::Promote {
                region: RegionId(1),
                ..
            }
        )
    })
}

#[test]
fn a_cold_read_brings_back_one_page_not_the_region() {
    let mut p = with_far_region(0);
    assert!(!promotes(&mut p, RegionRecord::far(RegionId(1), Seq(2), 1)));
    assert_eq!(p.stats().promoted_pages, 1, "the SLO counts the one page");
    assert_eq!(p.stats().decisions[1], 0);
}

#[test]
fn a_burst_of_faults_promotes_the_whole_region() {
    let mut p = with_far_region(0);
    assert!(promotes(&mut p, RegionRecord::far(RegionId(1), Seq(2), 40)));
    assert_eq!(
        p.stats().promoted_pages,
        40,
        "40 faulted; the other 472 come back ahead of use, not counted"
    );
}

#[test]
fn accesses_in_two_intervals_in_a_row_promote_the_region() {
    let mut p = with_far_region(0);
    assert!(!promotes(&mut p, RegionRecord::far(RegionId(1), Seq(2), 1)));
    assert!(promotes(&mut p, RegionRecord::far(RegionId(1), Seq(3), 1)));
}

#[test]
fn a_high_initial_threshold_waits_before_reclaiming() {
    let mut p = P::new(MemConfig {
        n_regions: 2,
        min_threshold: 1,
        intervals_per_minute: 1,
        initial_threshold: 8,
        ..MemConfig::default()
    })
    .unwrap();
    let mut out: heapless::Vec<MemDecision, 16> = heapless::Vec::new();
    for _ in 0..3 {
        p.end_interval(&mut out);
    }
    assert!(out.is_empty(), "the floor holds a few minutes: {out:?}");
    for _ in 0..5 {
        p.end_interval(&mut out);
    }
    assert_eq!(out.len(), 2, "then comes down while nothing is promoted");
}

/// Region 0 is hot; regions 1..=6 are each re-read every `gap` intervals, staggered.
fn periodic_reads(p: &mut P, h: &mut Host, intervals: u32, gap: u32) {
    for i in 0..intervals {
        h.touch(p, 0, true);
        for k in 1..=6u32 {
            if (i + k) % gap == 0 {
                h.touch(p, k, false);
            }
        }
        let ds = step(p);
        h.apply(p, &ds);
    }
}

#[test]
fn the_floor_is_not_lowered_below_what_the_promotion_histogram_allows() {
    // starts conservative (floor 32); regions re-read after 5 idle intervals, about 10 such
    // reads per minute against an SLO of 0.8: the floor may come down to 8, never to 4
    let mut p = P::new(MemConfig {
        initial_threshold: 32,
        ..cfg(8)
    })
    .unwrap();
    let mut h = Host::new();
    periodic_reads(&mut p, &mut h, 400, 6);
    assert_eq!(
        p.stats().promotions,
        0,
        "nothing re-read was ever reclaimed"
    );
    assert_eq!(
        p.threshold_floor(),
        8,
        "the floor came down to where it is safe"
    );
    assert!(p.threshold() >= 8, "threshold {}", p.threshold());
}

#[test]
fn the_prediction_counts_the_pages_a_promotion_faults_back() {
    // 64-page regions, SLO 5% of the working set's pages per minute (about 22 pages); reads
    // after 7 idle intervals, 7.5 per minute. Before any promotion a read is predicted to
    // fault `promote_pages` pages: at 1 the floor comes down below 8, at 16 it may not.
    let run = |promote_pages: u32| {
        let mut p = P::new(MemConfig {
            region_pages: 64,
            promote_pages,
            slo_ppm_per_minute: 50_000,
            initial_threshold: 16,
            ..cfg(8)
        })
        .unwrap();
        let mut h = Host::new();
        periodic_reads(&mut p, &mut h, 400, 8);
        p.threshold_floor()
    };
    assert_eq!(run(16), 8, "16 pages per promotion");
    assert!(run(1) < 8, "1 page per promotion: {}", run(1));
}
