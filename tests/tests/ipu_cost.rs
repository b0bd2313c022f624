//! The IPU agent's own cost, counted by the firmware's PMU under QEMU `-icount`
//! (`cargo wave demo --ipu-count`): the firmware prints its `sched: pmu:` line and the runner
//! reads instructions per event and per decision from it.

use std::time::Duration;

use wave_host_shim::engine::{AgentMode, EngineConfig, PolicyChoice};
use wave_qemu::demo::{run_ipu, DemoOptions};

#[test]
fn ipu_counts_instructions_per_event_and_decision() {
    let image = wave_qemu::image().expect("firmware image");
    let opts = DemoOptions {
        agents: vec![AgentMode::Ipu],
        engine: EngineConfig {
            policy: PolicyChoice::named("shinjuku").expect("registered"),
            rate: 2_000.0,
            duration: Duration::from_millis(1000),
            cpus: 2,
            handlers: 32,
            table_keys: 1 << 16,
            progress: false,
            ..EngineConfig::default()
        },
        timeout: Duration::from_secs(120),
        ipu_count: true,
        ..Default::default()
    };
    let run = run_ipu(&opts, &image).unwrap_or_else(|e| panic!("ipu run failed: {e}"));
    assert!(run.ok(), "{}", run.results);
    let cost = run.ipu_cost.expect("the firmware printed its PMU counts");
    assert!(cost.events > 0 && cost.decisions > 0, "{cost:?}");
    // An event is at least a ring poll and a decode; a decision at least a slot write.
    assert!(cost.instructions_per_event > 50.0, "{cost:?}");
    assert!(cost.instructions_per_decision > 50.0, "{cost:?}");
}
