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

/// The service's path: swaps asked for through the engine's handle while it runs, each
/// answered once the rebuilt agent acknowledged; the live counters follow; a stop request
/// ends an open-ended load after a drain.
#[test]
fn swaps_requested_through_the_handle_are_confirmed_and_stop_drains() {
    use wave_host_shim::engine::{EngineHandle, SwapOutcome};
    let p = |n: &str| PolicyChoice::named(n).expect("registered");
    let h = EngineHandle::new();
    let cfg = EngineConfig {
        policy: p("fifo"),
        rate: 2_000.0,
        duration: Duration::from_secs(3600),
        cpus: 2,
        handlers: 32,
        table_keys: 1 << 16,
        drain_timeout: Duration::from_secs(60),
        handle: Some(h.clone()),
        ..EngineConfig::default()
    };
    let confirmed = |t: wave_host_shim::engine::SwapTicket| match t.wait(Duration::from_secs(60)) {
        Ok(SwapOutcome::Confirmed { by, session, .. }) => {
            assert_eq!(by, "ipu", "the on-host agent sits where the IPU would");
            assert_ne!(session, 0);
        }
        o => panic!("{o:?}"),
    };
    let r = std::thread::scope(|s| {
        let run = s.spawn(|| engine::run(AgentMode::Host, &cfg));
        let t0 = std::time::Instant::now();
        while h.live().completed < 200 {
            assert!(t0.elapsed() < Duration::from_secs(120), "{:?}", h.live());
            std::thread::sleep(Duration::from_millis(20));
        }
        confirmed(h.request_swap(p("shinjuku")));
        assert_eq!(h.live().policy, "shinjuku", "{:?}", h.live());
        let done = h.live().completed;
        while h.live().completed < done + 200 {
            assert!(t0.elapsed() < Duration::from_secs(120), "{:?}", h.live());
            std::thread::sleep(Duration::from_millis(20));
        }
        confirmed(h.request_swap(p("fair")));
        h.stop();
        run.join().expect("the engine thread")
    })
    .expect("the run");
    let live = h.live();
    assert!(!live.running && live.finished, "{live:?}");
    assert_eq!((live.generated, live.completed), (r.offered, r.completed));
    assert_eq!(r.completed, r.offered, "every request completes\n{r}");
    assert_eq!((live.swaps, r.policy_swaps), (2, 2), "{r}");
    assert_eq!((live.violations, r.invariant_violations), (0, 0), "{r}");
    assert_eq!(live.policy, "fair", "{live:?}");
    assert!(live.policy_params.starts_with("fair"), "{live:?}");
    assert!(r.wall_s < 3000.0, "the stop ended the open-ended load");
}
