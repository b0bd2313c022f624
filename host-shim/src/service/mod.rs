//! `wave-host run`: the host shim as a long-lived service (started at boot by
//! `dist/systemd/wave-host.service`). It owns the link (the ivshmem server the IPU connects
//! to, with the configured region, rings and vectors) and keeps the host end alive across IPU
//! restarts (attach, resynchronise, heartbeat); with a scheduling workload configured it
//! first runs the scheduling engine as the host's end of the link ([`workload`]), whose
//! policy `wave-host policy set` switches; it serves live stats on the control socket
//! ([`crate::stats::control`]); it logs to stderr (the journal under systemd); and on SIGTERM
//! or SIGINT it ends the workload (drain), publishes STOPPED, rings the IPU, and removes both
//! sockets (and the control directory if it made it), leaving nothing behind.
//!
//! - [`config`]: `/etc/wave/wave.toml`, its keys and defaults, validation.
//! - [`toml`]: the small TOML subset parser it uses.
//! - [`install`]: `wave-host install` (binaries, units, default configuration).
//! - [`workload`]: the scheduling workload and its policy hot-swaps.
//! - [`lanes`]: the memory and network workloads, lanes of the primary endpoint.

pub mod commands;
pub mod config;
pub mod install;
pub mod lanes;
pub mod probe;
pub mod toml;
pub mod workload;

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use wave_abi::endpoint::previous_epoch;
use wave_abi::status::next_epoch;
use wave_abi::{Endpoint, Layout, Side};
use wave_policy::runtime::{Runtime, Tuning};

use crate::ivshmem::{IvshmemServer, ServerConfig};
use crate::link::{HostPort, Link};
use crate::stats::control::{ControlServer, Request};
use crate::stats::{render, Sampler, Stats};
use probe::{LinkProbe, ProbeCounters};
use workload::Workload;

pub use config::Config;

fn log(msg: std::fmt::Arguments<'_>) {
    eprintln!("wave-host: {msg}");
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and the threads it starts later) and
/// returns a descriptor that reads them, so shutdown happens in ordinary code.
pub fn shutdown_signals() -> Result<SignalFd, String> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| format!("cannot block the shutdown signals: {e}"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot create a signalfd: {e}"))
}

/// Runs the service until a shutdown signal. Returns an error (already worded for the
/// operator) if it cannot start.
pub fn run(cfg: &Config) -> Result<(), String> {
    let signals = shutdown_signals()?;
    let server = IvshmemServer::bind(ServerConfig {
        socket: cfg.link_socket.clone(),
        shm_size: cfg.shm_size,
        vectors: cfg.vector_count(),
        ring_entries: cfg.ring_entries,
        abi_major: wave_abi::ABI_MAJOR,
    })
    .map_err(|e| e.to_string())?;
    let mut control = ControlServer::bind(&cfg.control_socket)?;
    log(format_args!(
        "serving the link on {} ({} KiB, {} vectors; subsystems {}; IPU boot argument `{}`); \
         control socket {}",
        cfg.link_socket.display(),
        cfg.shm_size / 1024,
        cfg.vector_count(),
        cfg.subsystems.join(","),
        cfg.services_arg(),
        cfg.control_socket.display()
    ));
    log(format_args!("QEMU connects with: {}", server.qemu_args()));
    let workload = Workload::new(cfg);
    let (mem, net) = lanes::configured(cfg);
    let lane_list: Vec<&lanes::LaneWork> = mem.iter().chain(net.iter()).collect();
    notify_ready();
    // `stop`: a shutdown signal came; `primary_stop`: the primary endpoint stops, once no
    // lane runs any more (the lanes' runs are bounded by their durations).
    let (stop, primary_stop) = (AtomicBool::new(false), AtomicBool::new(false));
    let lanes_left = AtomicUsize::new(lane_list.len());
    let prepared = AtomicU64::new(0);
    let prepare = || {
        let g = server.generation();
        if prepared.swap(g, Ordering::AcqRel) != g {
            lane_list.iter().for_each(|l| l.prepare(&server));
        }
    };
    let probe = ProbeCounters::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let probe = cfg.probe_interval().map(|_| &probe);
            let ctx = Supervised {
                server: &server,
                stop: &stop,
                probe,
                workload: workload.as_ref(),
                lanes: (mem.as_ref(), net.as_ref()),
            };
            supervise(cfg, &ctx, &mut control, &signals);
        });
        for l in &lane_list {
            let (server, stop, left) = (&server, &stop, &lanes_left);
            s.spawn(move || {
                l.run(server, stop);
                left.fetch_sub(1, Ordering::AcqRel);
            });
        }
        s.spawn(|| {
            while !(stop.load(Ordering::Acquire) && lanes_left.load(Ordering::Acquire) == 0) {
                std::thread::sleep(Duration::from_millis(20));
            }
            primary_stop.store(true, Ordering::Release);
        });
        let used = workload
            .as_ref()
            .and_then(|w| w.run(&server, &primary_stop, &prepare));
        hold_link(
            &server,
            &primary_stop,
            cfg.probe_interval().map(|i| (i, &probe)),
            used,
            &prepare,
        );
    });
    drop(control);
    drop(server);
    log(format_args!("stopped; sockets removed"));
    Ok(())
}

/// Keeps the host end of the link alive (the agent runtime: attach, resynchronise, heartbeat,
/// sleep on its vectors; with the echo subsystem's link probe as its one service when enabled)
/// until `stop`; then publishes STOPPED and rings the IPU. `used`: a transport generation
/// whose epoch another host endpoint (the scheduling workload) already used; on it this one
/// starts under a new epoch, so the IPU sees a new session. `prepare` runs before each
/// start (the lanes' state on a new connection).
fn hold_link(
    server: &IvshmemServer,
    stop: &AtomicBool,
    probe: Option<(Duration, &ProbeCounters)>,
    mut used: Option<u64>,
    prepare: &dyn Fn(),
) {
    let mut probe = probe.map(|(i, c)| LinkProbe::new(i.as_nanos() as u64, c));
    let layout: Layout = *server.layout();
    let origin = Instant::now();
    let tuning = Tuning {
        max_sleep_ns: 50_000_000,
        ..Tuning::HOST
    };
    while !stop.load(Ordering::Acquire) {
        if !server.peer_present() {
            let _ = server.service(Duration::from_millis(50));
            continue;
        }
        let generation = server.generation();
        let epoch = if used == Some(generation) {
            next_epoch(previous_epoch(&server.region(), &layout, Side::Host))
        } else {
            server.epoch()
        };
        used = Some(generation);
        prepare();
        let Ok(mut ep) = Endpoint::new(server.region(), &layout, Side::Host, epoch) else {
            log(format_args!(
                "the region's layout is unusable; waiting for a new IPU"
            ));
            let _ = server.service(Duration::from_millis(200));
            continue;
        };
        log(format_args!("IPU connected; host epoch {}", ep.epoch()));
        let mut rt = Runtime::new(tuning);
        let mut port = HostPort::new(server, origin, stop).with_log("wave-host");
        match probe.as_mut() {
            Some(p) => rt.run(&mut ep, &mut port, &mut [p]),
            None => rt.run(&mut ep, &mut port, &mut []),
        };
        if stop.load(Ordering::Acquire) {
            ep.stop();
            let _ = server.notify(wave_abi::layout::VECTOR_CONTROL);
            log(format_args!("published STOPPED to the IPU"));
        }
    }
}

/// What the supervising thread looks after.
struct Supervised<'a> {
    server: &'a IvshmemServer,
    stop: &'a AtomicBool,
    probe: Option<&'a ProbeCounters>,
    workload: Option<&'a Workload>,
    lanes: (Option<&'a lanes::LaneWork>, Option<&'a lanes::LaneWork>),
}

/// The service's second thread: samples the stats, answers the control socket, logs a
/// summary now and then, and turns a shutdown signal into `stop`. (A `policy set` holds it
/// until the switch is acknowledged, at most [`workload::SWAP_WAIT`].)
fn supervise(cfg: &Config, x: &Supervised<'_>, control: &mut ControlServer, signals: &SignalFd) {
    let server = x.server;
    let region = server.region();
    let mut sampler = Sampler::new(
        *server.layout(),
        cfg.placement(),
        Duration::from_millis(cfg.heartbeat_stale_ms),
    );
    let interval = Duration::from_millis(cfg.stats_interval_ms);
    let mut next_sample = Instant::now();
    let mut next_log = Instant::now() + Duration::from_secs(cfg.log_interval_s);
    loop {
        let (sig, ctl) = wait_ready(signals, control);
        if sig {
            if let Ok(Some(info)) = signals.read_signal() {
                log(format_args!("signal {}: shutting down", info.ssi_signo));
            }
            x.stop.store(true, Ordering::Release);
            if let Some(w) = x.workload {
                w.stop();
            }
            let _ = server.notify(wave_abi::layout::VECTOR_CONTROL);
            return;
        }
        sampler.sample_awake(&region);
        if Instant::now() >= next_sample {
            let c = server.counters();
            sampler.set_transport_doorbells(c.doorbells_out, c.doorbells_in);
            if let Some(p) = x.probe {
                sampler.set_probe(probe_stats(p));
            }
            if let Some(w) = x.workload {
                sampler.set_workload(w.live());
            }
            let (m, n) = x.lanes;
            if m.is_some() || n.is_some() {
                sampler.set_lane_runs(m.map(|l| l.live()), n.map(|l| l.live()));
            }
            next_sample = Instant::now() + interval;
            sampler.update(&region);
        }
        if ctl {
            let snap = sampler.current().clone();
            control.serve_pending(&mut |r| answer_with(&snap, x.workload, r));
        }
        if cfg.log_interval_s > 0 && Instant::now() >= next_log {
            next_log = Instant::now() + Duration::from_secs(cfg.log_interval_s);
            let t = render::table(sampler.current());
            log(format_args!("{}", t.lines().next().unwrap_or("")));
        }
    }
}

fn probe_stats(p: &ProbeCounters) -> crate::stats::Probe {
    crate::stats::Probe {
        sent: p.sent.load(Ordering::Relaxed),
        answered: p.answered.load(Ordering::Relaxed),
        lost: p.lost.load(Ordering::Relaxed),
        last_rtt_us: p.last_rtt_ns.load(Ordering::Relaxed) as f64 / 1e3,
    }
}

/// The control socket's answer to `r` from a shim without a scheduling workload.
pub fn answer(s: &Stats, r: Request) -> String {
    answer_with(s, None, r)
}

/// The control socket's answer to `r`: stats from `s`, policy requests through `workload`.
pub fn answer_with(s: &Stats, workload: Option<&Workload>, r: Request) -> String {
    match (r, workload) {
        (Request::Json, _) => format!("{}\n", render::json(s)),
        (Request::Table, _) => render::table(s),
        (Request::Prometheus, _) => render::prometheus(s),
        (Request::PolicyShow, Some(w)) => w.show(),
        (Request::PolicySet { name, params }, Some(w)) => {
            let a = w.set_policy(&name, &params);
            log(format_args!("policy set {name}: {}", a.trim_end()));
            a
        }
        (Request::PolicyShow | Request::PolicySet { .. }, None) => workload::no_workload(),
    }
}

/// Waits up to 10 ms for a signal or a control client.
fn wait_ready(signals: &SignalFd, control: &ControlServer) -> (bool, bool) {
    let mut fds = [
        PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        PollFd::new(control.listener().as_fd(), PollFlags::POLLIN),
    ];
    let _ = poll(&mut fds, PollTimeout::from(10u8));
    let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
    (ready(&fds[0]), ready(&fds[1]))
}

/// Tells systemd the service is ready (`Type=notify`): one `READY=1` datagram to
/// `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). No-op outside systemd.
pub fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent =
        UnixDatagram::unbound().and_then(|s| addr.and_then(|a| s.send_to_addr(b"READY=1", &a)));
    if let Err(e) = sent {
        log(format_args!("cannot notify systemd on {path}: {e}"));
    }
}
