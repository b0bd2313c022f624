//! Mechanism tests with real sockets on loopback: a stale decision is refused; steering
//! follows the table (needs root for eBPF; without it the test says so and checks the
//! fallback); a parked worker receives nothing; no request is dropped while the table and the
//! active set change. Counts only: no timing assertion.

use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wave_abi::net::{equal_weights, NetDecision, NetDecisionKind, OutcomeKind, MAX_WORKERS};

use super::server::{Server, ServerConfig, SteerMode, Transport, REQ_LEN};
use super::sock;

type Threads = Vec<std::thread::JoinHandle<()>>;

fn start(workers: usize, active: usize) -> (Arc<Server>, Threads) {
    start_with(workers, active, true)
}

fn start_with(workers: usize, active: usize, steering: bool) -> (Arc<Server>, Threads) {
    Server::start(ServerConfig {
        workers,
        cpu_permille: 0,
        steering,
        initial_active: active,
        transport: Transport::Udp,
    })
    .expect("server")
}

fn stop(s: Arc<Server>, t: Threads) {
    s.stop();
    for h in t {
        h.join().unwrap();
    }
}

fn ebpf(s: &Server) -> bool {
    match s.mode() {
        SteerMode::Ebpf => true,
        SteerMode::Hash(why) => {
            eprintln!("net test: eBPF steering unavailable ({why}); checking the fallback only");
            false
        }
    }
}

/// Sends `n` zero-work requests from 32 flows and returns how many distinct ones came back.
fn blast(port: u16, n: u64) -> u64 {
    let clients: Vec<_> = (0..32).map(|_| sock::client(port).unwrap()).collect();
    let to = sock::server_addr(port);
    for seq in 0..n {
        let mut req = [0u8; REQ_LEN];
        req[..8].copy_from_slice(&seq.to_le_bytes());
        let c = &clients[seq as usize % clients.len()];
        while c.send_to(&req, to).is_err() {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let mut seen = vec![false; n as usize];
    let mut got = 0;
    let all: Vec<usize> = (0..clients.len()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 64];
    while got < n && Instant::now() < deadline {
        for i in sock::poll_readable(&clients, &all, 10) {
            while let Ok(len) = clients[i].recv(&mut buf) {
                let seq = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
                if len == REQ_LEN && seq < seen.len() && !std::mem::replace(&mut seen[seq], true) {
                    got += 1;
                }
            }
        }
    }
    got
}

fn decision(epoch: u32, kind: NetDecisionKind, worker: u8, active: u64) -> NetDecision {
    NetDecision {
        txn: 1,
        table_epoch: epoch,
        kind,
        worker,
        weights: equal_weights(active),
    }
}

#[test]
fn a_stale_or_impossible_decision_is_refused() {
    let (s, t) = start(4, 2);
    let e = s.snapshot().0.epoch;
    let grant = decision(e, NetDecisionKind::Grant, 2, 0b111);
    let stale = NetDecision {
        table_epoch: e - 1,
        ..grant
    };
    assert_eq!(s.apply(&stale).kind, OutcomeKind::Stale);
    assert_eq!(s.snapshot().0.active, 0b11, "nothing changed");
    let o = s.apply(&grant);
    assert_eq!((o.kind, o.table_epoch), (OutcomeKind::Committed, e + 1));
    assert_eq!(s.snapshot().0.active, 0b111);
    // The same decision again: the epoch moved, so it is stale now.
    assert_eq!(s.apply(&grant).kind, OutcomeKind::Stale);
    // Impossible: grant an active worker; weights that disagree with the active set; a
    // worker out of range; revoking the last worker.
    let e = s.snapshot().0.epoch;
    let bad = [
        decision(e, NetDecisionKind::Grant, 1, 0b111),
        decision(e, NetDecisionKind::Rebalance, 0, 0b1111),
        decision(e, NetDecisionKind::Grant, 9, 0b111),
        NetDecision {
            weights: [0; MAX_WORKERS],
            ..decision(e, NetDecisionKind::Rebalance, 0, 0)
        },
    ];
    for d in bad {
        assert_eq!(s.apply(&d).kind, OutcomeKind::Invalid, "{d:?}");
    }
    let st = s.snapshot();
    assert_eq!(
        (st.0.epoch, st.1.stale, st.1.invalid, st.1.committed),
        (e, 2, 4, 1)
    );
    stop(s, t);
}

#[test]
fn steering_follows_the_table() {
    let (s, t) = start(4, 4);
    if !ebpf(&s) {
        // Fallback: every request is still answered by the kernel's hash.
        assert_eq!(blast(s.port(), 400), 400);
        return stop(s, t);
    }
    // Everything to worker 2: revoke 0, 1 and 3 (a parked worker has no table entry).
    for w in [0u8, 1, 3] {
        let st = s.snapshot().0;
        let left = st.active & !(1 << w);
        let o = s.apply(&decision(st.epoch, NetDecisionKind::Revoke, w, left));
        assert_eq!(o.kind, OutcomeKind::Committed);
    }
    assert_eq!(s.snapshot().0.active, 0b100);
    assert_eq!(
        s.kernel_entry(0),
        Some(2),
        "the mmapped stores reached the map"
    );
    assert_eq!(s.kernel_entry(127), Some(2));
    let before = s.per_worker();
    assert_eq!(blast(s.port(), 400), 400);
    let after = s.per_worker();
    assert_eq!(
        after[2].1 - before[2].1,
        400,
        "every datagram reached socket 2"
    );
    // Spread over 2 and 3: both sockets get traffic (64 entries each).
    let st = s.snapshot().0;
    let o = s.apply(&decision(st.epoch, NetDecisionKind::Grant, 3, 0b1100));
    assert_eq!(o.kind, OutcomeKind::Committed);
    let before = s.per_worker();
    assert_eq!(blast(s.port(), 400), 400);
    let after = s.per_worker();
    let (a, b) = (after[2].1 - before[2].1, after[3].1 - before[3].1);
    assert_eq!(a + b, 400);
    assert!(a > 0 && b > 0, "{a} / {b}");
    stop(s, t);
}

/// 64 workers (the ABI's most): a grant of the last one and a revoke of the first steer
/// everything to worker 63 (with eBPF), and every request is answered either way.
#[test]
fn sixty_four_workers_steer_to_the_last() {
    let (s, t) = start(64, 1);
    let st = s.snapshot().0;
    let o = s.apply(&decision(st.epoch, NetDecisionKind::Grant, 63, 1 | 1 << 63));
    assert_eq!(o.kind, OutcomeKind::Committed);
    let o = s.apply(&decision(
        o.table_epoch,
        NetDecisionKind::Revoke,
        0,
        1 << 63,
    ));
    assert_eq!(o.kind, OutcomeKind::Committed);
    assert_eq!(s.snapshot().0.active, 1 << 63);
    let steered = ebpf(&s);
    std::thread::sleep(Duration::from_millis(20)); // let worker 0 notice and park
    let before = s.per_worker();
    assert_eq!(blast(s.port(), 400), 400);
    let after = s.per_worker();
    let served: u64 = (0..64).map(|w| after[w].0 - before[w].0).sum();
    assert_eq!(served, 400);
    if steered {
        assert_eq!(s.kernel_entry(5), Some(63));
        assert_eq!(
            after[63].1 - before[63].1,
            400,
            "every datagram reached socket 63"
        );
    }
    stop(s, t);
}

#[test]
fn a_parked_worker_receives_nothing() {
    parked_worker(true);
}

#[test]
fn without_steering_a_parked_worker_serves_nothing_and_its_socket_is_adopted() {
    parked_worker(false);
}

fn parked_worker(steering: bool) {
    let (s, t) = start_with(4, 4, steering);
    let steered = steering && ebpf(&s);
    let st = s.snapshot().0;
    assert_eq!(
        s.apply(&decision(st.epoch, NetDecisionKind::Revoke, 1, 0b1101))
            .kind,
        OutcomeKind::Committed
    );
    std::thread::sleep(Duration::from_millis(20)); // let worker 1 notice and park
    let before = s.per_worker();
    assert_eq!(blast(s.port(), 600), 600);
    let after = s.per_worker();
    assert_eq!(after[1].0, before[1].0, "the parked worker served nothing");
    if steered {
        assert_eq!(after[1].1, before[1].1, "no datagram reached its socket");
    } else {
        assert!(
            after[1].1 > before[1].1,
            "the hash still reaches its socket (adopted)"
        );
    }
    stop(s, t);
}

#[test]
fn no_request_is_dropped_while_the_table_changes() {
    let (s, t) = start(4, 2);
    let flip = AtomicBool::new(true);
    let changes = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let mut n = 0u32;
            let mut k = 0u8;
            while flip.load(Acquire) {
                let st = s.snapshot().0;
                let w = 2 + (k % 2);
                k = k.wrapping_add(1);
                let d = if st.active & (1 << w) != 0 {
                    decision(st.epoch, NetDecisionKind::Revoke, w, st.active & !(1 << w))
                } else {
                    decision(st.epoch, NetDecisionKind::Grant, w, st.active | (1 << w))
                };
                if s.apply(&d).kind == OutcomeKind::Committed {
                    n += 1;
                }
                std::thread::sleep(Duration::from_micros(300));
            }
            n
        });
        let got = blast(s.port(), 3000);
        flip.store(false, Release);
        assert_eq!(got, 3000, "every request answered");
        h.join().unwrap()
    });
    assert!(changes > 5, "the table changed {changes} times");
    stop(s, t);
}

#[test]
fn the_host_control_loop_grants_on_the_step_and_answers_everything() {
    use super::control::{run_host, NetRunConfig};
    let mut cfg = NetRunConfig {
        workers: 4,
        ..NetRunConfig::default()
    };
    cfg.load.phase_s = 0.4;
    cfg.load.capacity_rps = cfg.load.capacity_of(4);
    let r = run_host(&cfg).expect("host run");
    assert_eq!(r.sent, r.answered, "every request answered");
    assert!(r.sent > 100);
    assert!(r.decisions >= 1 && r.mech.committed >= 1, "{r:?}");
    assert!(
        r.peak_cores >= 2,
        "the step to the peak was granted a core: {r:?}"
    );
    assert_eq!(r.bad_decisions, 0);
}

// ---- TCP (`--transport tcp`): the same mechanism, steered per connection at SYN ----

fn start_tcp(workers: usize, active: usize, steering: bool) -> (Arc<Server>, Threads) {
    Server::start(ServerConfig {
        workers,
        cpu_permille: 0,
        steering,
        initial_active: active,
        transport: Transport::Tcp,
    })
    .expect("tcp server")
}

/// Sends `n` zero-work requests over connections of `per_conn` requests each (16 connections
/// open at a time, each half-closed after its requests and read to its end); returns how many
/// distinct requests came back.
fn blast_tcp(port: u16, n: u64, per_conn: u64) -> u64 {
    use std::io::{Read, Write};
    let mut seen = vec![false; n as usize];
    let (mut got, mut seq) = (0, 0u64);
    while seq < n {
        let mut open = Vec::new();
        while open.len() < 16 && seq < n {
            let c = std::net::TcpStream::connect(sock::server_addr(port)).unwrap();
            c.set_nodelay(true).unwrap();
            for _ in 0..per_conn.min(n - seq) {
                let mut req = [0u8; REQ_LEN];
                req[..8].copy_from_slice(&seq.to_le_bytes());
                (&c).write_all(&req).unwrap();
                seq += 1;
            }
            c.shutdown(std::net::Shutdown::Write).unwrap();
            open.push(c);
        }
        for c in open {
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = Vec::new();
            let _ = (&c).read_to_end(&mut buf);
            for r in buf.chunks_exact(REQ_LEN) {
                let s = u64::from_le_bytes(r[..8].try_into().unwrap()) as usize;
                if s < seen.len() && !std::mem::replace(&mut seen[s], true) {
                    got += 1;
                }
            }
        }
    }
    got
}

fn delta(after: &[u64], before: &[u64], w: usize) -> u64 {
    after[w] - before[w]
}

#[test]
fn tcp_steering_follows_the_table_at_connection_setup() {
    let (s, t) = start_tcp(4, 4, true);
    if !ebpf(&s) {
        assert_eq!(blast_tcp(s.port(), 400, 4), 400);
        assert_eq!(s.accepted().iter().sum::<u64>(), 100, "100 connections");
        return stop(s, t);
    }
    for w in [0u8, 1, 3] {
        let st = s.snapshot().0;
        let left = st.active & !(1 << w);
        let o = s.apply(&decision(st.epoch, NetDecisionKind::Revoke, w, left));
        assert_eq!(o.kind, OutcomeKind::Committed);
    }
    let before = s.accepted();
    assert_eq!(blast_tcp(s.port(), 400, 4), 400);
    let after = s.accepted();
    assert_eq!(
        delta(&after, &before, 2),
        100,
        "every connection reached listener 2: {after:?}"
    );
    let st = s.snapshot().0;
    let o = s.apply(&decision(st.epoch, NetDecisionKind::Grant, 3, 0b1100));
    assert_eq!(o.kind, OutcomeKind::Committed);
    let before = s.accepted();
    assert_eq!(blast_tcp(s.port(), 400, 4), 400);
    let after = s.accepted();
    let (a, b) = (delta(&after, &before, 2), delta(&after, &before, 3));
    assert_eq!(a + b, 100, "{after:?}");
    assert!(a > 0 && b > 0, "{a} / {b}");
    stop(s, t);
}

#[test]
fn tcp_a_parked_worker_accepts_no_new_connections() {
    let (s, t) = start_tcp(4, 4, true);
    let steered = ebpf(&s);
    let st = s.snapshot().0;
    let o = s.apply(&decision(st.epoch, NetDecisionKind::Revoke, 1, 0b1101));
    assert_eq!(o.kind, OutcomeKind::Committed);
    std::thread::sleep(Duration::from_millis(20)); // let worker 1 notice and park
    let (acc, work) = (s.accepted(), s.per_worker());
    assert_eq!(blast_tcp(s.port(), 600, 4), 600);
    let (acc2, work2) = (s.accepted(), s.per_worker());
    assert_eq!(work2[1].0, work[1].0, "the parked worker served nothing");
    if steered {
        assert_eq!(acc2[1], acc[1], "no connection reached its listener");
    } else {
        eprintln!(
            "net test: without steering the hash still reaches listener 1: {} connections, served by its adopter",
            acc2[1] - acc[1]
        );
    }
    stop(s, t);
}

#[test]
fn tcp_no_request_is_lost_while_the_table_changes() {
    let (s, t) = start_tcp(4, 2, true);
    let flip = AtomicBool::new(true);
    let changes = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let mut n = 0u32;
            let mut k = 0u8;
            while flip.load(Acquire) {
                let st = s.snapshot().0;
                let w = 2 + (k % 2);
                k = k.wrapping_add(1);
                let d = if st.active & (1 << w) != 0 {
                    decision(st.epoch, NetDecisionKind::Revoke, w, st.active & !(1 << w))
                } else {
                    decision(st.epoch, NetDecisionKind::Grant, w, st.active | (1 << w))
                };
                if s.apply(&d).kind == OutcomeKind::Committed {
                    n += 1;
                }
                std::thread::sleep(Duration::from_micros(300));
            }
            n
        });
        let got = blast_tcp(s.port(), 3000, 8);
        flip.store(false, Release);
        assert_eq!(got, 3000, "every request answered");
        h.join().unwrap()
    });
    assert!(changes > 5, "the table changed {changes} times");
    assert_eq!(s.malformed(), 0);
    stop(s, t);
}

#[test]
fn tcp_a_malformed_request_closes_only_its_connection() {
    use std::io::{Read, Write};
    let (s, t) = start_tcp(2, 2, false);
    let bad = std::net::TcpStream::connect(sock::server_addr(s.port())).unwrap();
    let mut req = [0u8; REQ_LEN];
    req[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // service time over the limit
    (&bad).write_all(&req).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let _ = (&bad).read_to_end(&mut buf);
    assert!(buf.is_empty(), "no reply, the connection was closed");
    // A connection ending inside a record.
    let cut = std::net::TcpStream::connect(sock::server_addr(s.port())).unwrap();
    (&cut).write_all(&req[..10]).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    cut.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = (&cut).read_to_end(&mut buf);
    assert_eq!(s.malformed(), 2);
    assert_eq!(blast_tcp(s.port(), 100, 4), 100, "the others are served");
    stop(s, t);
}

#[test]
fn a_short_tcp_run_through_the_host_control_loop_answers_everything() {
    use super::control::{run_host, NetRunConfig};
    let mut cfg = NetRunConfig {
        workers: 4,
        ..NetRunConfig::default()
    };
    cfg.load.transport = Transport::Tcp;
    cfg.load.phase_s = 0.4;
    cfg.load.capacity_rps = cfg.load.capacity_of(4);
    let r = run_host(&cfg).expect("host run");
    assert_eq!(r.transport, "tcp");
    assert_eq!(r.sent, r.answered, "every request answered");
    assert!(r.sent > 100);
    assert!(r.decisions >= 1 && r.mech.committed >= 1, "{r:?}");
    assert_eq!((r.bad_decisions, r.malformed), (0, 0));
}

/// TCP telemetry: requests waiting in a busy worker's connection count as queued (unread
/// bytes over the record size) with the age of the oldest unread segment, and a connection
/// not accepted yet counts as one more.
#[test]
fn tcp_telemetry_sees_unread_requests_and_the_accept_queue() {
    use std::io::Write;
    let (s, t) = start_tcp(1, 1, false);
    let to = sock::server_addr(s.port());
    let a = std::net::TcpStream::connect(to).unwrap();
    let b = std::net::TcpStream::connect(to).unwrap();
    wait_for(|| s.accepted() == [2]); // both accepted by the idle worker
    let mut req = [0u8; REQ_LEN];
    req[16..24].copy_from_slice(&1_000_000_000u64.to_le_bytes()); // 1 s: the worker is busy
    (&a).write_all(&req).unwrap();
    wait_for(|| s.per_worker()[0].1 == 1); // it took that request
    req[16..24].copy_from_slice(&0u64.to_le_bytes());
    for _ in 0..4 {
        (&b).write_all(&req).unwrap();
    }
    let _c = std::net::TcpStream::connect(to).unwrap(); // waits in the accept queue
    let mut w = s.samples().0[0];
    for _ in 0..100 {
        if w.queued == 5 || s.per_worker()[0].1 > 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        w = s.samples().0[0];
    }
    assert_eq!(
        w.queued, 5,
        "4 unread requests + 1 connection not accepted: {w:?}"
    );
    assert!(w.oldest_age_us > 0, "{w:?}");
    stop(s, t);
}

/// Polls `f` every ms until it holds (a count, not a timing bound: 20 s for a stalled machine).
fn wait_for(f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "condition never held");
        std::thread::sleep(Duration::from_millis(1));
    }
}
