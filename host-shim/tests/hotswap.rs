//! Policy hot-swap (issue 12 part 4) through the resync path: FIFO → Shinjuku → fair under
//! load with the on-host agent; nothing is lost and no invariant breaks.

use std::time::Duration;

use wave_host_shim::engine::{self, AgentMode, EngineConfig, PolicyChoice};

#[test]
fn fifo_to_shinjuku_to_fair_under_load() {
    let p = |n: &str| PolicyChoice::named(n).expect("registered");
    let cfg = EngineConfig {
        policy: p("fifo"),
        rate: 2_000.0,
        duration: Duration::from_millis(1500),
        cpus: 2,
        handlers: 32,
        table_keys: 1 << 16,
        drain_timeout: Duration::from_secs(60),
        policy_swaps: vec![
            (Duration::from_millis(500), p("shinjuku")),
            (Duration::from_millis(1000), p("fair")),
        ],
        ..EngineConfig::default()
    };
    let r = engine::run(AgentMode::Host, &cfg).expect("the run");
    assert!(r.offered > 0, "{r}");
    assert_eq!(r.completed, r.offered, "every request completes\n{r}");
    assert_eq!(r.invariant_violations, 0, "{:?}\n{r}", r.first_violation);
    assert_eq!(r.policy_swaps, 2, "{r}");
    // Each swap is a new session: every thread re-announced to the rebuilt agent.
    assert!(r.resyncs >= 2, "{r}");
    assert_eq!(
        r.txn_taken,
        r.txn_committed + r.txn_failed() + r.txn_aborted,
        "{r}"
    );
    // The agent that ran last is the fair one.
    assert!(
        r.agent.as_deref().unwrap_or("").contains("policy fair"),
        "{:?}",
        r.agent
    );
}
