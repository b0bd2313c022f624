//! The agent model and its mitigation switches: every combination keeps every invariant, runs
//! are deterministic by seed, and switching the mitigations off costs latency.

use wave_policy::registry::{by_name, AnyPolicy};
use wave_sim::{simulate, AgentModel, Mitigations, SimConfig, SimReport};

fn run(policy: &str, m: Mitigations, seed: u64) -> SimReport {
    let mut cfg = SimConfig::rocksdb(4, 4.0 * 0.6 / 34.95e-6, seed);
    cfg.duration_ns = 40_000_000;
    cfg.link_latency_ns = 300;
    cfg.check_every = 64;
    cfg.agent_model = Some(AgentModel {
        mitigations: m,
        ..AgentModel::default()
    });
    let info = by_name(policy).unwrap();
    let mut p: Box<AnyPolicy<4, 256>> =
        Box::new(AnyPolicy::build(info.id, 4, &[0; wave_abi::sched::PARAM_WORDS]).unwrap());
    simulate(cfg, &mut *p)
}

fn get_p99(r: &SimReport) -> u64 {
    r.class("GET").unwrap().p99_ns
}

#[test]
fn every_switch_keeps_the_invariants() {
    for policy in ["fifo", "shinjuku"] {
        let mut sets = vec![Mitigations::ALL, Mitigations::NONE];
        for i in 0..Mitigations::NAMES.len() {
            let mut off = Mitigations::ALL;
            off.set(i, false);
            sets.push(off);
        }
        for m in sets {
            let r = run(policy, m, 3);
            assert!(
                r.violations.is_empty(),
                "{policy} {m:?}: {:#?}",
                r.violations
            );
            assert_eq!(r.completed, r.generated);
            assert!(r.agent_steps > 0 && r.agent_busy_ns > 0);
        }
    }
}

#[test]
fn deterministic_and_mitigations_matter() {
    let a = run("shinjuku", Mitigations::ALL, 7);
    let b = run("shinjuku", Mitigations::ALL, 7);
    assert_eq!(
        (get_p99(&a), a.end_ns, a.agent_busy_ns),
        (get_p99(&b), b.end_ns, b.agent_busy_ns)
    );
    let off = run("shinjuku", Mitigations::NONE, 7);
    assert!(
        get_p99(&off) > get_p99(&a),
        "{} vs {}",
        get_p99(&off),
        get_p99(&a)
    );
    // Without batching every event is a step of its own.
    let mut nb = Mitigations::ALL;
    nb.batching = false;
    let r = run("shinjuku", nb, 7);
    assert!(r.agent_steps >= r.host.events_posted);
}
