//! Engine tests (host only, bounded, no timing gates except the behavioural Shinjuku check,
//! run at a load low enough to hold on a 2-core machine): the on-host agent with FIFO,
//! Shinjuku and fair, refused policy parameters, a wake/block/affinity storm that forces stale transactions, and the Linux mode.

use std::time::Duration;

use wave_host_shim::engine::{self, EngineConfig, EngineResults, PolicyChoice, Storm};

/// The engine pins threads and measures latency: run one engine at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn small(policy: &str) -> EngineConfig {
    EngineConfig {
        policy: PolicyChoice::named(policy).expect("a registered policy"),
        rate: 2_000.0,
        duration: Duration::from_secs(1),
        cpus: 2,
        handlers: 32,
        table_keys: 1 << 16,
        drain_timeout: Duration::from_secs(60),
        ..EngineConfig::default()
    }
}

fn check_common(r: &EngineResults) {
    assert!(r.offered > 0, "{r}");
    assert_eq!(r.completed, r.offered, "every request completes\n{r}");
    assert_eq!(r.invariant_violations, 0, "{r}");
    assert!(r.txn_committed > 0, "{r}");
    // Each transaction taken has exactly one outcome.
    assert_eq!(
        r.txn_taken,
        r.txn_committed + r.txn_failed() + r.txn_aborted,
        "{r}"
    );
    assert_eq!(r.get.count + r.range.count, r.completed, "{r}");
    assert!(r.to_json().contains("\"invariant_violations\":0"));
}

#[test]
fn host_agent_fifo_runs_every_request() {
    let _g = serial();
    let r = engine::run_host(&small("fifo")).unwrap();
    check_common(&r);
    assert_eq!(r.preemptions, 0, "FIFO never preempts\n{r}");
    assert!(r.agent_cpu_ns.unwrap() > 0);
}

#[test]
fn host_agent_shinjuku_runs_every_request() {
    let _g = serial();
    let r = engine::run_host(&small("shinjuku")).unwrap();
    check_common(&r);
}

#[test]
fn host_agent_fair_runs_every_request_and_preempts() {
    let _g = serial();
    let mut cfg = EngineConfig {
        range_pct: 5.0,
        ..small("fair")
    };
    cfg.policy.set("slice_ns", 40_000).unwrap();
    let r = engine::run_host(&cfg).unwrap();
    check_common(&r);
    assert_eq!(r.policy, "fair(slice 40 µs)");
    assert!(r.preemptions > 0, "the slice preempts long requests\n{r}");
}

#[test]
fn bad_policy_parameters_are_refused_before_the_run() {
    let mut cfg = small("shinjuku");
    cfg.policy.params[0] = 5; // below the 1 µs minimum, written past `set`'s check
    let e = engine::run_host(&cfg).unwrap_err();
    assert!(e.to_string().contains("slice_ns"), "{e}");
    cfg.policy.params[0] = 0;
    cfg.policy.params[7] = 1; // a word shinjuku does not use
    assert!(engine::run_host(&cfg).is_err());
}

#[test]
fn storm_forces_stale_transactions_without_violations() {
    let _g = serial();
    let cfg = EngineConfig {
        rate: 4_000.0,
        handlers: 8,
        storm: Storm {
            affinity_every_us: 20,
            yield_every: 3,
        },
        ..small("fifo")
    };
    let r = engine::run_host(&cfg).unwrap();
    check_common(&r);
    assert!(r.affinity_changes > 0 && r.yields > 0, "{r}");
    assert!(
        r.txn_failed_stale > 0,
        "the storm must produce stale transactions\n{r}"
    );
}

#[test]
fn shinjuku_preempts_ranges_and_keeps_gets_short() {
    let _g = serial();
    // One host CPU (the agent gets the other core), 10 µs GETs, 5 ms RANGEs, 5% of them so
    // there are enough to preempt, at a low load.
    let cfg = EngineConfig {
        cpus: 1,
        rate: 1_000.0,
        duration: Duration::from_secs(2),
        range_pct: 5.0,
        ..small("shinjuku")
    };
    assert_eq!(cfg.policy.get("slice_ns"), Some(30_000));
    let r = engine::run_host(&cfg).unwrap();
    check_common(&r);
    assert!(r.preemptions > 0, "{r}");
    assert!(r.range.count > 0, "{r}");
    if cfg!(debug_assertions) {
        // Unoptimised builds make every scheduling step ~10x slower; only the ordering holds.
        assert!(r.get.p50_us < r.range.p50_us, "{r}");
    } else {
        assert!(
            r.get.p99_us < cfg.range_ms * 1_000.0,
            "GET p99 must stay below one RANGE service time\n{r}"
        );
    }
}

#[test]
fn linux_mode_smoke() {
    let _g = serial();
    let r = engine::run_linux(&small("fifo")).unwrap();
    assert_eq!(r.completed, r.offered, "{r}");
    assert_eq!(r.invariant_violations, 0, "{r}");
    assert_eq!(r.agent_cpu_ns, None);
    assert!(r.to_json().starts_with("{\"mode\":\"linux\""));
}

#[test]
fn ipu_mode_without_a_peer_is_an_error_not_a_hang() {
    let _g = serial();
    // `run` refuses ipu without a link; `run_ipu` over a link whose peer never comes up
    // times out cleanly.
    assert!(engine::run(engine::AgentMode::Ipu, &small("fifo")).is_err());
    let (host, _ipu) = wave_host_shim::local::LocalLink::pair(
        1 << 20,
        wave_abi::layout::MIN_VECTORS as u16 + 2,
        512,
    )
    .unwrap();
    let cfg = EngineConfig {
        link_up_timeout: Duration::from_millis(100),
        ..small("fifo")
    };
    assert!(matches!(
        engine::run_ipu(&host, &cfg),
        Err(engine::EngineError::NeverUp(_))
    ));
}
