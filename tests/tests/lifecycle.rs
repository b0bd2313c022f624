//! Either side can die at any moment (issue 9): the host notices a dead or stopped IPU through
//! the transport and the heartbeat, ends the link test at once with the cause, and never reads
//! a dead session's entries as new ones.

use std::path::Path;
use std::time::Duration;

use wave_host_shim::link_test::{self, LinkTestConfig, LinkTestSummary};
use wave_host_shim::watchdog::Cause;
use wave_qemu::ipu::{with_ipu, LinkSettings};

fn echo_boot() -> wave_qemu::BootConfig {
    wave_qemu::BootConfig {
        smp: 1,
        timeout: Duration::from_secs(120),
        append: vec!["wave.services=echo@0".into()],
        ..Default::default()
    }
}

/// The pid of the QEMU whose command line names `socket` (unique per server).
fn qemu_on(socket: &Path) -> Option<u32> {
    let needle = socket.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains(&needle)
            .then_some(pid)
    })
}

/// Runs a long link test and sends `signal` to QEMU once some responses came back.
/// `peer_timeout`: the heartbeat bound (long where only the transport may end the run, so a
/// starved IPU on a loaded machine is not declared gone first).
fn link_test_with(
    signal: &str,
    peer_timeout: Duration,
) -> (LinkTestSummary, wave_qemu::BootOutcome) {
    let image = wave_qemu::image().expect("firmware image");
    let (summary, fw) = with_ipu(&echo_boot(), &image, LinkSettings::default(), |s, left| {
        let socket = s.config().socket.clone();
        let cfg = LinkTestConfig {
            messages: 5_000_000,
            timeout: left,
            link_up_timeout: Duration::from_secs(30).min(left),
            peer_timeout,
            ..Default::default()
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // Let the test get going (no timing is asserted, only counts).
                std::thread::sleep(Duration::from_millis(1500));
                // The run may already have ended (a starved IPU declared gone): nothing to do.
                let Some(pid) = qemu_on(&socket) else { return };
                let _ = std::process::Command::new("kill")
                    .args([signal, &pid.to_string()])
                    .status();
            });
            link_test::run(s, cfg)
        })
    })
    .expect("the run");
    (summary.expect("the link test ran"), fw)
}

fn assert_no_dead_session_reread(s: &LinkTestSummary) {
    assert!(s.received > 0 && s.received < 5_000_000, "{s}");
    assert_eq!(
        s.corrupt, 0,
        "entries of a dead session were read as new: {s}"
    );
    assert_eq!(s.unexpected + s.duplicate, 0, "{s}");
    assert_eq!(s.received + s.lost, s.sent, "{s}");
    assert!(!s.timed_out, "ended by the watchdog, not the timeout: {s}");
    let report = s.watchdog.as_deref().unwrap_or("");
    assert!(
        report.contains("ipu: state"),
        "the watchdog report: {report}"
    );
}

#[test]
fn kill_9_of_qemu_ends_the_link_test_at_once_with_the_cause() {
    let (s, _fw) = link_test_with("-KILL", Duration::from_secs(60));
    assert_eq!(s.peer_lost, Some(Cause::Disconnected), "{s}");
    assert_no_dead_session_reread(&s);
}

#[test]
fn sigstop_of_qemu_is_caught_by_the_heartbeat_watchdog() {
    let (s, fw) = link_test_with("-STOP", Duration::from_millis(300));
    assert!(matches!(s.peer_lost, Some(Cause::HeartbeatStale(_))), "{s}");
    assert_no_dead_session_reread(&s);
    // The runner ended the stopped QEMU instead of waiting for it.
    assert_ne!(fw.status, wave_qemu::BootStatus::Exited(0));
}

fn kill_every(fallback: bool) -> wave_qemu::demo::DemoRun {
    use wave_host_shim::engine::{AgentMode, EngineConfig, PolicyChoice};
    let image = wave_qemu::image().expect("firmware image");
    let opts = wave_qemu::demo::DemoOptions {
        agents: vec![AgentMode::Ipu],
        engine: EngineConfig {
            policy: PolicyChoice::named("shinjuku").expect("registered"),
            rate: 3_000.0,
            duration: Duration::from_secs(5),
            cpus: 2,
            handlers: 32,
            table_keys: 1 << 16,
            progress: false,
            fallback,
            // Without a fallback only the kill may end the run: a starved (not dead) IPU on a
            // loaded machine must not be declared gone first.
            peer_timeout: if fallback {
                wave_host_shim::engine::DEFAULT_IPU_TIMEOUT
            } else {
                Duration::from_secs(60)
            },
            ..EngineConfig::default()
        },
        timeout: Duration::from_secs(120),
        kill_ipu_every: Some(Duration::from_millis(1500)),
        ..Default::default()
    };
    let run = wave_qemu::demo::run_ipu(&opts, &image).expect("the ipu run");
    println!("{}", run.results);
    run
}

/// Issue 9 part 1: QEMU is killed under load (three times in five seconds); the host fails
/// over to its own agent, hands back to each new IPU, and loses nothing.
#[test]
fn killing_the_ipu_under_load_fails_over_hands_back_and_loses_nothing() {
    let run = kill_every(true);
    let r = &run.results;
    assert!(r.offered > 0);
    assert_eq!(r.completed, r.offered, "every request completes\n{r}");
    assert_eq!(r.invariant_violations, 0, "{:?}\n{r}", r.first_violation);
    assert!(r.ipu_restarts >= 1, "{r}");
    assert!(
        r.failovers >= 1 && r.handbacks >= 1,
        "{:?}",
        r.failover_causes
    );
    // Every switch re-announced the threads to the new agent.
    assert!(r.resyncs >= r.failovers + r.handbacks, "{r}");
    assert_eq!(
        r.txn_taken,
        r.txn_committed + r.txn_failed() + r.txn_aborted,
        "{r}"
    );
    assert_eq!(r.peer_lost, None);
}

/// Without a fallback, a killed IPU ends the run at once, with the cause.
#[test]
fn without_fallback_a_killed_ipu_ends_the_run_with_the_cause() {
    let run = kill_every(false);
    let r = &run.results;
    let cause = r.peer_lost.as_deref().unwrap_or("");
    assert!(cause.contains("disconnected"), "{cause:?}\n{r}");
    assert_eq!(r.failovers, 0);
}

/// Issue 9 part 2: the host side restarts (a new host epoch on the same region) under a
/// running IPU; the IPU drops the old session, serves the new host, and stores STOPPED at
/// the end of its run.
#[test]
fn a_restarted_host_is_served_by_the_running_ipu() {
    let image = wave_qemu::image().expect("firmware image");
    let (out, fw) = with_ipu(&echo_boot(), &image, LinkSettings::default(), |s, left| {
        let first = link_test::run(
            s,
            LinkTestConfig {
                messages: 3_000,
                timeout: left,
                stop_at_end: false, // the first host "dies" without stopping
                ..Default::default()
            },
        );
        let second = link_test::run(
            s,
            LinkTestConfig {
                messages: 3_000,
                timeout: left,
                new_host_epoch: true,
                ..Default::default()
            },
        );
        let region = wave_host_shim::Link::region(s);
        let layout = wave_abi::Layout::read(&region).expect("layout");
        let ipu = wave_abi::status::StatusView::new(
            &region,
            layout.place(wave_abi::Kind::IpuStatus).offset,
        )
        .expect("status");
        // The IPU ends its run after the host's STOPPED and stores STOPPED itself.
        let t = std::time::Instant::now();
        while ipu.snapshot().state != wave_abi::status::State::Stopped
            && t.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        (first, second, ipu.snapshot().state)
    })
    .expect("the run");
    let (first, second, state) = out;
    let (first, second) = (first.expect("first host"), second.expect("second host"));
    assert_eq!((first.received, first.corrupt), (3_000, 0), "{first}");
    assert_eq!(
        (second.received, second.corrupt, second.lost),
        (3_000, 0, 0),
        "{second}"
    );
    assert_eq!(state, wave_abi::status::State::Stopped, "{}", fw.console);
    assert!(fw.console.contains("peer restarted"), "{}", fw.console);
    assert_eq!(
        fw.status,
        wave_qemu::BootStatus::Exited(0),
        "{}",
        fw.console
    );
}

/// Issue 9 part 5: a configuration the IPU cannot take (more host CPUs than its agent holds)
/// is refused in the IPU status block with a reason code, the IPU ends its run (STOPPED is
/// not stored over the refusal), and the host names the reason. (With the fallback on, the
/// host's own agent would take over instead.)
#[test]
fn a_refused_configuration_is_reported_and_ends_the_run() {
    use wave_host_shim::engine::{AgentMode, EngineConfig};
    let image = wave_qemu::image().expect("firmware image");
    let opts = wave_qemu::demo::DemoOptions {
        agents: vec![AgentMode::Ipu],
        engine: EngineConfig {
            cpus: wave_qemu::demo::IPU_MAX_CPUS + 1,
            duration: Duration::from_millis(500),
            rate: 1_000.0,
            table_keys: 1 << 16,
            progress: false,
            fallback: false,
            ..EngineConfig::default()
        },
        timeout: Duration::from_secs(120),
        echo: true,
        ..Default::default()
    };
    // The refusal can land before the host saw the link come up (the run then fails with the
    // cause and the console) or after (the run ends with the cause as `peer_lost`): both are
    // the refusal reported with its reason; which one is a race, so either is accepted.
    let (cause, console, status) = match wave_qemu::demo::run_ipu(&opts, &image) {
        Ok(run) => {
            let fw = run.firmware.expect("firmware outcome");
            let cause = run.results.peer_lost.clone().unwrap_or_default();
            (cause, fw.console.clone(), Some(fw.status))
        }
        Err(e) => {
            let text = e.to_string();
            (text.clone(), text, None)
        }
    };
    assert!(
        cause.contains("refused the configuration of channel 1 (reason 6"),
        "{cause:?}"
    );
    assert!(
        console.contains("refusing the host's configuration"),
        "{console}"
    );
    match status {
        Some(s) => assert_eq!(s, wave_qemu::BootStatus::Exited(0), "{console}"),
        None => assert!(console.contains("wave: pass (exit code 0)"), "{console}"),
    }
}

/// Issue 12 part 4: policy hot-swap on the IPU under load (FIFO → Shinjuku → fair), through the
/// same resync path as a hand-back: nothing lost, no invariant broken, the firmware rebuilt
/// its agent for each policy.
#[test]
fn the_ipu_policy_is_hot_swapped_under_load() {
    use wave_host_shim::engine::{AgentMode, EngineConfig, PolicyChoice};
    let p = |n: &str| PolicyChoice::named(n).expect("registered");
    let image = wave_qemu::image().expect("firmware image");
    let opts = wave_qemu::demo::DemoOptions {
        agents: vec![AgentMode::Ipu],
        engine: EngineConfig {
            policy: p("fifo"),
            rate: 3_000.0,
            duration: Duration::from_secs(3),
            cpus: 2,
            handlers: 32,
            table_keys: 1 << 16,
            progress: false,
            policy_swaps: vec![
                (Duration::from_secs(1), p("shinjuku")),
                (Duration::from_secs(2), p("fair")),
            ],
            ..EngineConfig::default()
        },
        timeout: Duration::from_secs(120),
        echo: true,
        ..Default::default()
    };
    let run = wave_qemu::demo::run_ipu(&opts, &image).expect("the ipu run");
    let r = &run.results;
    assert_eq!(r.completed, r.offered, "{r}");
    assert_eq!(r.invariant_violations, 0, "{:?}\n{r}", r.first_violation);
    assert_eq!(r.policy_swaps, 2, "{r}");
    let fw = run.firmware.expect("firmware outcome");
    assert_eq!(
        fw.status,
        wave_qemu::BootStatus::Exited(0),
        "{}",
        fw.console
    );
    for name in ["fifo policy", "shinjuku policy", "fair policy"] {
        assert!(
            fw.console.contains(name),
            "no `{name}` session\n{}",
            fw.console
        );
    }
}
