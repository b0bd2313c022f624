//! End-to-end link tests on the host: the real link-test driver against an in-process fake IPU
//! (a thread running the real `EchoService` from `wave-policy` over a shared memfd), including an IPU
//! restart mid-run and a hostile IPU that writes malformed responses between valid ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wave_abi::layout::{VECTOR_CONTROL, VECTOR_LINK_TEST};
use wave_abi::msg::{encode_test, test_transform, TAG_TEST_RESPONSE};
use wave_abi::ring::EntryBody;
use wave_abi::{Channel, Endpoint, Layout, Side};
use wave_host_shim::link::Link;
use wave_host_shim::link_test::{self, request_words, LinkTestConfig};
use wave_host_shim::local::LocalLink;
use wave_policy::echo::EchoService;

#[derive(Clone, Copy, Default)]
struct Script {
    /// Restart (new epoch) after this many echoes, once.
    restart_after: Option<u64>,
    /// Inject one malformed response after every this many echoes.
    hostile_every: Option<u64>,
    /// Stop injecting once this many valid echoes went out (so every injected entry is
    /// followed by valid ones the host still reads).
    hostile_until: u64,
}

#[derive(Debug, Default)]
struct FakeReport {
    echoed: u64,
    injected: u64,
    restarts: u64,
}

/// Malformed response number `k` (cycling through every kind of damage).
fn malformed(k: u64, seed: u64) -> EntryBody {
    let good = |seq: u64| {
        encode_test(
            TAG_TEST_RESPONSE,
            seq,
            &test_transform(seq, &request_words(seed, seq)),
        )
    };
    match k % 7 {
        0 => {
            let mut b = good(0);
            b.tag = 0x7777.into(); // bad tag
            b
        }
        1 => {
            let mut b = good(0);
            b.len = 47.into(); // bad length
            b
        }
        2 => {
            let mut b = good(0);
            b.aux = 9.into(); // reserved field set
            b
        }
        3 => {
            let mut b = good(0);
            b.payload[12] ^= 0x40; // checksum mismatch
            b
        }
        4 => good(1 << 40),   // sequence jump: a seq never sent (valid checksum)
        5 => good(0),         // duplicate of seq 0 (answered long before)
        _ => EntryBody::ZERO, // tag 0: never valid
    }
}

fn fake_ipu(link: LocalLink, script: Script, stop: Arc<AtomicBool>) -> FakeReport {
    let region = link.region();
    let layout = Layout::read(&region).expect("host wrote a valid layout");
    let mut ep = Endpoint::new(region, &layout, Side::Ipu, link.epoch()).unwrap();
    let mut agent = EchoService::new();
    let mut report = FakeReport::default();
    let mut was_up = false;
    let mut idle = 0u32;
    let mut next_inject = script.hostile_every;
    while !stop.load(Ordering::Relaxed) {
        let up = ep.poll_link().state.is_ok();
        if up && !was_up && ep.peer_wants_wakeup() {
            link.notify(VECTOR_CONTROL).unwrap();
        }
        was_up = up;
        let (taken, ring) = agent.echo(&mut ep);
        if let Some(v) = ring {
            link.notify(v).unwrap();
        }
        let echoed = report.echoed + agent.stats().echoed;
        if let (Some(every), Some(at)) = (script.hostile_every, next_inject) {
            if echoed >= at && echoed < script.hostile_until && up {
                let (n, ring) = ep.send(Channel::LinkTest, &[malformed(report.injected, 0x5eed)]);
                if n == 1 {
                    report.injected += 1;
                    next_inject = Some(at + every);
                }
                if let Some(v) = ring {
                    link.notify(v).unwrap();
                }
            }
        }
        if script.restart_after.is_some_and(|r| echoed >= r) && report.restarts == 0 {
            // Crash and come back: a new incarnation with a new epoch, fresh agent state.
            report.echoed += agent.stats().echoed;
            report.restarts += 1;
            // (the old endpoint is simply abandoned, as a crash would)
            ep = Endpoint::new(region, &layout, Side::Ipu, link.epoch()).unwrap();
            agent = EchoService::new();
            was_up = false;
            continue;
        }
        if taken > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle > 1000 {
            idle = 0;
            ep.begin_sleep();
            if !ep.has_work() {
                let _ = link.wait(
                    (1 << VECTOR_CONTROL) | (1 << VECTOR_LINK_TEST),
                    Duration::from_millis(2),
                );
            }
            ep.end_sleep();
            ep.tick(agent.stats().invalid, agent.stats().echoed);
        }
    }
    report.echoed += agent.stats().echoed;
    report
}

fn run_with(
    script: Script,
    messages: u64,
    ring_entries: u32,
) -> (link_test::LinkTestSummary, FakeReport) {
    let (host, ipu) = LocalLink::pair(
        Layout::min_size(ring_entries),
        wave_abi::layout::MIN_VECTORS as u16,
        ring_entries,
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let peer = thread::spawn(move || fake_ipu(ipu, script, stop2));
    let cfg = LinkTestConfig {
        messages,
        window: 48,
        timeout: Duration::from_secs(120),
        link_up_timeout: Duration::from_secs(30),
        spin_ns: 5_000,
        ..LinkTestConfig::default()
    };
    let summary = link_test::run(&host, cfg).expect("link test runs");
    println!("{summary}");
    stop.store(true, Ordering::Relaxed);
    let report = peer.join().unwrap();
    (summary, report)
}

#[test]
fn clean_run_all_messages_verified() {
    let (s, r) = run_with(Script::default(), 5_000, 64);
    assert!(!s.timed_out, "{s}");
    assert_eq!(s.sent, 5_000);
    assert_eq!(s.received, 5_000, "{s}");
    assert_eq!(s.corrupt, 0, "{s}");
    assert_eq!(s.lost, 0, "{s}");
    assert_eq!(s.resyncs, 0);
    assert_eq!(r.echoed, 5_000);
    assert!(s.rtt_p50 <= s.rtt_p99);
}

#[test]
fn ipu_restart_mid_run_resyncs_and_continues() {
    let script = Script {
        restart_after: Some(1_000),
        ..Script::default()
    };
    let (s, r) = run_with(script, 4_000, 64);
    assert!(!s.timed_out, "{s}");
    assert_eq!(r.restarts, 1);
    assert_eq!(s.resyncs, 1, "{s}");
    assert_eq!(s.sent, 4_000);
    assert_eq!(s.received + s.lost, 4_000, "{s}");
    assert!(s.lost <= 48, "only the window in flight can be lost: {s}");
    assert!(s.received >= 4_000 - 48, "{s}");
    assert_eq!(s.corrupt, 0, "{s}");
}

#[test]
fn hostile_ipu_entries_are_counted_and_skipped() {
    let script = Script {
        hostile_every: Some(50),
        hostile_until: 3_000,
        ..Script::default()
    };
    let (s, r) = run_with(script, 3_000, 64);
    assert!(!s.timed_out, "{s}");
    assert!(
        r.injected >= 7,
        "every kind injected at least once: {}",
        r.injected
    );
    assert_eq!(s.received, 3_000, "valid messages keep flowing: {s}");
    assert_eq!(s.lost, 0, "{s}");
    assert_eq!(s.corrupt, r.injected, "{s}");
    assert!(s.decode.bad_tag >= 2 && s.decode.bad_length >= 1 && s.decode.reserved >= 1);
    assert!(
        s.decode.checksum >= 2 && s.unexpected >= 1 && s.duplicate >= 1,
        "{s}"
    );
}
