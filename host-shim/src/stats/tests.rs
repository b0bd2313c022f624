//! Stats against a live in-process link: the real echo service on an "IPU" thread, the real
//! link-test driver on the host, and the sampler reading the region from outside both; plus
//! the control socket's permissions, credentials check, protocol and cleanup.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wave_abi::{Endpoint, Layout, Side};
use wave_policy::echo::EchoService;
use wave_policy::runtime::{Runtime, Tuning};

use super::control::{query, ControlServer, Request};
use super::*;
use crate::link::{HostPort, Link};
use crate::link_test::{self, LinkTestConfig};
use crate::local::LocalLink;

fn channel_of(name: &str) -> usize {
    SUBSYSTEMS.iter().position(|s| s.name == name).unwrap()
}

#[test]
fn live_counters_increase_while_the_echo_service_runs() {
    let (host, ipu) = LocalLink::pair(1 << 20, 8, 512).unwrap();
    let layout = Layout::read(&host.region()).unwrap();
    let stop = AtomicBool::new(false);
    let mut placement = vec![None; SUBSYSTEMS.len()];
    placement[channel_of("echo")] = Some(2);
    let mut sampler = Sampler::new(layout, placement, Duration::from_secs(1));
    let mut seen = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut ep = Endpoint::new(ipu.region(), &layout, Side::Ipu, ipu.epoch()).unwrap();
            let mut echo = EchoService::new();
            let mut port = HostPort::new(&ipu, Instant::now(), &stop);
            Runtime::new(Tuning::HOST).run(&mut ep, &mut port, &mut [&mut echo]);
        });
        let driver = s.spawn(|| {
            let cfg = LinkTestConfig {
                messages: 500_000,
                timeout: Duration::from_secs(60),
                ..LinkTestConfig::default()
            };
            link_test::run(&host, cfg)
        });
        let region = host.region();
        let t0 = Instant::now();
        while !driver.is_finished() && t0.elapsed() < Duration::from_secs(60) {
            for _ in 0..5 {
                sampler.sample_awake(&region);
                std::thread::sleep(Duration::from_millis(2));
            }
            seen.push(sampler.update(&region).clone());
        }
        let sum = driver.join().unwrap().unwrap();
        assert_eq!((sum.received, sum.corrupt), (500_000, 0));
        stop.store(true, Ordering::Release);
        let _ = host.notify(wave_abi::layout::VECTOR_CONTROL);
    });
    let echo = channel_of("echo");
    let live: Vec<&Stats> = seen.iter().filter(|s| s.ipu_state == "ready").collect();
    assert!(
        live.len() >= 3,
        "too few samples while the link was up: {seen:?}"
    );
    let (first, last) = (live[0], live[live.len() - 1]);
    let (a, b) = (&first.subsystems[echo], &last.subsystems[echo]);
    assert!(
        b.decisions > a.decisions,
        "echo answers grow: {a:?} -> {b:?}"
    );
    assert!(b.events > a.events, "requests grow: {a:?} -> {b:?}");
    assert!(last.ipu_heartbeat > first.ipu_heartbeat);
    assert!(live
        .iter()
        .any(|s| s.subsystems[echo].decisions_per_s > 0.0));
    assert_eq!(b.ipu_core, Some(2));
    assert!(b
        .ipu_core_awake_pct
        .is_some_and(|p| (0.0..=100.0).contains(&p)));
    assert!(b.ring_to_ipu.occupancy <= b.ring_to_ipu.capacity);
    assert_eq!(last.malformed, Malformed::default());
    assert_eq!(last.fallback, "none");
    let j = render::json(last);
    assert!(
        j.starts_with('{') && j.ends_with('}') && j.contains("\"name\":\"echo\""),
        "{j}"
    );
    let p = render::prometheus(last);
    assert!(
        p.contains("wave_decisions_total{subsystem=\"echo\"} "),
        "{p}"
    );
}

#[test]
fn the_sampler_survives_garbage_in_the_region() {
    let (host, _ipu) = LocalLink::pair(1 << 20, 8, 512).unwrap();
    let layout = Layout::read(&host.region()).unwrap();
    let region = host.region();
    // Fill everything after the layout table with a pattern (stamps, credits, status words).
    let words = region.words(0x1000, region.len() - 0x1000).unwrap();
    for (i, w) in words.iter().enumerate() {
        w.store(
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            Ordering::Relaxed,
        );
    }
    let mut s = Sampler::new(layout, vec![None; SUBSYSTEMS.len()], Duration::from_secs(1));
    for _ in 0..3 {
        let st = s.update(&region).clone();
        for x in &st.subsystems {
            assert!(x.ring_to_ipu.occupancy <= x.ring_to_ipu.capacity);
            assert!(x.ring_to_host.occupancy <= x.ring_to_host.capacity);
        }
        let _ = render::json(&st);
        let _ = render::prometheus(&st);
        let _ = render::table(&st);
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wave-ctl-{tag}-{}", std::process::id()))
}

#[test]
fn control_socket_is_private_answers_and_leaves_nothing() {
    let dir = temp_dir("ok");
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("control.sock");
    let mut server = ControlServer::bind(&path).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&path), 0o600);
    let stats = Stats {
        ipu_state: "ready".into(),
        ..Stats::default()
    };
    let client = std::thread::spawn({
        let path = path.clone();
        move || {
            let j = query(&path, Request::Json).unwrap();
            let bad = std::os::unix::net::UnixStream::connect(&path).map(|mut s| {
                use std::io::{Read, Write};
                let _ = s.write_all(b"rm -rf /\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            });
            (j, bad.unwrap())
        }
    });
    let t0 = Instant::now();
    while server.counters.served + server.counters.bad_requests < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "client never came");
        server.serve_pending(&mut |r| crate::service::answer(&stats, r));
        std::thread::sleep(Duration::from_millis(5));
    }
    let (j, bad) = client.join().unwrap();
    assert!(j.contains("\"ipu_state\":\"ready\""), "{j}");
    assert!(bad.starts_with("error: unknown request"), "{bad}");
    assert_eq!(
        (server.counters.served, server.counters.bad_requests),
        (1, 1)
    );
    let second = ControlServer::bind(&path).err().unwrap();
    assert!(second.contains("in use"), "{second}");
    drop(server);
    assert!(
        !path.exists() && !dir.exists(),
        "socket and directory removed"
    );
}

#[test]
fn a_shared_directory_is_refused() {
    let dir = temp_dir("open");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = ControlServer::bind(&dir.join("c.sock")).err().unwrap();
    assert!(
        e.contains("accessible to other users") && e.contains("chmod 700"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn policy_requests_are_parsed_strictly() {
    let set = |n: &str, p: &[&str]| Request::PolicySet {
        name: n.into(),
        params: p.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(Request::parse("policy show\n"), Ok(Request::PolicyShow));
    assert_eq!(Request::parse("policy set fair"), Ok(set("fair", &[])));
    assert_eq!(
        Request::parse(" policy  set shinjuku slice_ns=30000\n"),
        Ok(set("shinjuku", &["slice_ns=30000"]))
    );
    let r = set("fair", &["slice_ns=1", "steal_after_ns=2"]);
    assert_eq!(Request::parse(&r.line()), Ok(r));
    for (bad, says) in [
        ("policy set", "unknown request"),
        ("policy", "unknown request"),
        ("policy set Fair", "not a policy name"),
        ("policy set fair slice_ns", "not PARAM=VALUE"),
        ("policy set fair slice_ns=-1", "not PARAM=VALUE"),
        ("policy set fair slice_ns=1e3", "not PARAM=VALUE"),
        ("policy set fair =1", "not PARAM=VALUE"),
        (
            "policy set fair a=1 a=1 a=1 a=1 a=1 a=1 a=1 a=1 a=1",
            "at most 8",
        ),
        ("policy set f\u{1b}[2J", "not a policy name"),
        ("json please", "unknown request"),
    ] {
        let e = Request::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
        assert!(
            !e.contains('\u{1b}'),
            "control characters are escaped: {e:?}"
        );
    }
    // A shim without a workload says so, and how to get one.
    let a = crate::service::answer(&Stats::default(), set("fair", &[]));
    assert!(
        a.starts_with("error: no scheduling workload") && a.contains("workload_rate"),
        "{a}"
    );
}

#[test]
fn an_overlong_policy_request_is_refused_and_counted() {
    let dir = temp_dir("long");
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("control.sock");
    let mut server = ControlServer::bind(&path).unwrap();
    let client = std::thread::spawn({
        let path = path.clone();
        move || {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let line = format!("policy set fair {}\n", "x=1 ".repeat(200));
            let _ = s.write_all(line.as_bytes());
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        }
    });
    let t0 = Instant::now();
    while server.counters.bad_requests < 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "client never came");
        server.serve_pending(&mut |r| crate::service::answer(&Stats::default(), r));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = client.join().unwrap();
    assert!(out.starts_with("error: request longer than"), "{out}");
    assert_eq!(server.counters.served, 0);
}

#[test]
fn lane_workloads_render_in_every_format() {
    let stats = Stats {
        mem_workload: Some(super::LaneRun {
            finished: true,
            summary: vec![("checksum_failures", 0), ("saved_bytes", -4096)],
            ..Default::default()
        }),
        net_workload: Some(super::LaneRun {
            running: true,
            ..Default::default()
        }),
        ..Stats::default()
    };
    let j = super::render::json(&stats);
    assert!(
        j.contains(
            "\"mem_workload\":{\"running\":false,\"finished\":true,\"failed\":false,\
             \"checksum_failures\":0,\"saved_bytes\":-4096}"
        ),
        "{j}"
    );
    assert!(j.contains("\"net_workload\":{\"running\":true,"), "{j}");
    let t = super::render::table(&stats);
    assert!(
        t.contains("mem workload: finished: checksum_failures 0, saved_bytes -4096"),
        "{t}"
    );
    assert!(t.contains("net workload: running\n"), "{t}");
    let p = super::render::prometheus(&stats);
    assert!(
        p.contains("wave_lane_workload_running{subsystem=\"net\"} 1"),
        "{p}"
    );
    assert!(
        p.contains("wave_lane_workload_result{subsystem=\"mem\",count=\"saved_bytes\"} -4096"),
        "{p}"
    );
    assert!(!super::render::json(&Stats::default()).contains("\"mem_workload\":{"));
}

#[test]
fn a_client_that_trickles_its_request_is_cut_off_and_counted() {
    let dir = temp_dir("trickle");
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("control.sock");
    let mut server = ControlServer::bind(&path).unwrap();
    let client = std::thread::spawn({
        let path = path.clone();
        move || {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            // One byte every 50 ms, never a newline: each read alone is quick, the request
            // never ends. The server's total deadline must cut it off (then the read sees the
            // answer and the end of the stream).
            s.set_nonblocking(true).unwrap();
            let mut out = Vec::new();
            for _ in 0..1200 {
                let _ = s.write_all(b"j");
                if s.read_to_end(&mut out).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    });
    let t0 = Instant::now();
    while server.counters.bad_requests < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the trickling client held the server"
        );
        server.serve_pending(&mut |r| crate::service::answer(&Stats::default(), r));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = client.join().unwrap();
    assert!(out.starts_with("error: unreadable request"), "{out}");
    assert_eq!(server.counters.served, 0);
}
