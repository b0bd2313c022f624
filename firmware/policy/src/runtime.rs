//! The agent runtime: runs services over one side's [`Endpoint`], the same code on the IPU,
//! in a host thread (the on-host baseline) and in a simulator (virtual time).
//!
//! Each loop iteration: poll the link (attach, resynchronise on a new session, notice a clean
//! stop), step every service (each polls its own rings), ring the doorbells they ask for, and
//! publish the heartbeat and counters every [`Tuning::tick_ns`]. While there is no work the
//! loop spins for [`Tuning::spin_ns`], then announces sleep through the wake word
//! (`docs/abi.md`, "Wake-ups"), re-checks its rings and waits on its doorbell vectors until
//! the earliest service deadline or [`Tuning::max_sleep_ns`].
//!
//! Services reach the hardware only through a [`Port`]: notify a vector, wait for own vectors
//! with a timeout, a monotonic clock, and a log line. A port is the whole platform: the
//! firmware's port rings the ivshmem doorbell and sleeps in WFI, the host's waits on eventfds,
//! a simulator's advances virtual time in `wait`.

use wave_abi::layout::VECTOR_CONTROL;
use wave_abi::{Channel, Down, Endpoint};

/// What one service step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Entries consumed or produced (0 = idle).
    pub work: usize,
    /// Bit v: ring the peer's doorbell vector v.
    pub doorbells: u64,
}

/// Where a service writes a log line (the firmware console, stderr, or nowhere).
pub trait Log {
    /// Writes one line.
    fn log(&mut self, line: core::fmt::Arguments<'_>);
}

/// A log that drops every line.
pub struct NoLog;

impl Log for NoLog {
    fn log(&mut self, _line: core::fmt::Arguments<'_>) {}
}

/// A service the runtime runs: one subsystem's agent (echo, scheduling, ...).
pub trait Service<'a> {
    /// Short name for the boot report and logs.
    fn name(&self) -> &'static str;
    /// The channel whose rings it serves (the runtime waits on that channel's vector).
    fn channel(&self) -> Channel;
    /// One bounded step at `now_ns`. Must do nothing harmful while the link is down.
    fn step(&mut self, ep: &mut Endpoint<'a>, now_ns: u64, log: &mut dyn Log) -> Step;
    /// Counters published with the heartbeat: (invalid entries, service-specific count).
    fn counters(&self) -> (u64, u64);
    /// When the service next needs a step without a doorbell (same clock as `step`).
    fn deadline_ns(&self, _now_ns: u64) -> Option<u64> {
        None
    }
    /// True once the service has nothing left to do (a test driver that sent and checked
    /// everything); the runtime returns when every service is finished.
    fn finished(&self) -> bool {
        false
    }
}

/// The platform under the runtime.
pub trait Port: Log {
    /// Monotonic time in nanoseconds.
    fn now_ns(&mut self) -> u64;
    /// Rings the peer's doorbell `vector`.
    fn notify(&mut self, vector: u16);
    /// Sleeps until one of this side's vectors in `mask` fires or `timeout_ns` passes. Calls
    /// `still_idle` once, as late as the platform allows before sleeping (the firmware calls
    /// it with interrupts masked), and returns at once if it says false. Returns non-zero if
    /// a doorbell ended the wait, as far as the platform knows (0 on timeout).
    fn wait(&mut self, mask: u64, timeout_ns: u64, still_idle: &mut dyn FnMut() -> bool) -> u64;
    /// True when the owner wants the runtime to return (a host thread being stopped).
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// The idle policy: how long to spin, how long to sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Idle time spent polling before announcing sleep.
    pub spin_ns: u64,
    /// Longest sleep without a doorbell (bounds the cost of a lost wake-up).
    pub max_sleep_ns: u64,
    /// A sleep shorter than this is not worth announcing: keep polling instead.
    pub min_sleep_ns: u64,
    /// Heartbeat and counter period while busy.
    pub tick_ns: u64,
}

impl Tuning {
    /// The IPU's default: a short spin (under QEMU TCG a spinning core costs a host core).
    pub const IPU: Tuning = Tuning {
        spin_ns: 20_000,
        max_sleep_ns: 2_000_000,
        min_sleep_ns: 1_000,
        tick_ns: 1_000_000,
    };
    /// A host thread's default.
    pub const HOST: Tuning = Tuning {
        spin_ns: 10_000,
        max_sleep_ns: 1_000_000,
        min_sleep_ns: 5_000,
        tick_ns: 10_000_000,
    };
}

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The peer stopped cleanly after the link had been up.
    PeerStopped,
    /// The port asked to stop.
    StopRequested,
    /// Every service said it is finished.
    Finished,
    /// The ABI versions differ (the peer is READY speaking another major, or refused ours):
    /// this side stored `VERSION_MISMATCH` (if it was the one to refuse) and ended its run.
    Refused,
}

/// Runtime counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Loop iterations.
    pub iterations: u64,
    /// Iterations in which some service did work.
    pub busy: u64,
    /// Waits entered (after the sleep announcement and the re-check).
    pub sleeps: u64,
    /// Waits ended by a doorbell (as far as the port knows).
    pub doorbell_wakeups: u64,
    /// Doorbells rung at the peer on the services' behalf.
    pub doorbells: u64,
    /// New sessions after a peer restart (or, for a host lane, its primary's restart).
    pub resyncs: u64,
    /// Times the link came up.
    pub ups: u64,
}

struct Loop {
    last_state: Option<Result<u32, Down>>,
    was_up: bool,
    idle_since: u64,
    last_tick: u64,
    stats: RuntimeStats,
}

/// The vectors this side's services wait on: the control vector and each service's channel.
pub fn wait_mask(ep: &Endpoint<'_>, services: &[&mut dyn Service<'_>]) -> u64 {
    let mut mask = 1u64 << VECTOR_CONTROL;
    for s in services {
        // A doorbell-less channel (`VECTOR_NONE`, or a vector past the mask) is polled.
        let v = ep.rx_vector(s.channel());
        if v < 64 {
            mask |= 1u64 << v;
        }
    }
    mask
}

/// Runs `services` over `ep` until the peer stops cleanly, the port asks to stop, or every
/// service is finished (a run with no service only keeps the link: attach, heartbeat, sleep).
pub fn run<'a, P: Port>(
    ep: &mut Endpoint<'a>,
    port: &mut P,
    tuning: &Tuning,
    services: &mut [&mut dyn Service<'a>],
) -> (Exit, RuntimeStats) {
    let mut rt = Runtime::new(*tuning);
    let exit = rt.run(ep, port, services);
    (exit, rt.stats())
}

/// A runtime that keeps its state (link state seen, counters) across several runs on one
/// endpoint, for owners that stop it periodically (to report, or to look at the transport).
pub struct Runtime {
    tuning: Tuning,
    l: Loop,
}

impl Runtime {
    /// A runtime with `tuning`.
    pub fn new(tuning: Tuning) -> Self {
        Runtime {
            tuning,
            l: Loop {
                last_state: None,
                was_up: false,
                idle_since: 0,
                last_tick: 0,
                stats: RuntimeStats::default(),
            },
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> RuntimeStats {
        self.l.stats
    }

    /// As [`run`], continuing from the state of the previous run (counters, the link state
    /// last logged). Returns [`Exit::PeerStopped`] only if the link was up during this run.
    pub fn run<'a, P: Port>(
        &mut self,
        ep: &mut Endpoint<'a>,
        port: &mut P,
        services: &mut [&mut dyn Service<'a>],
    ) -> Exit {
        let now = port.now_ns();
        self.l.was_up = ep.is_up();
        self.l.idle_since = now;
        self.l.last_tick = now;
        run_loop(ep, port, &self.tuning, services, &mut self.l)
    }
}

fn run_loop<'a, P: Port>(
    ep: &mut Endpoint<'a>,
    port: &mut P,
    tuning: &Tuning,
    services: &mut [&mut dyn Service<'a>],
    l: &mut Loop,
) -> Exit {
    let mask = wait_mask(ep, services);
    let exit = loop {
        if port.stop_requested() {
            break Exit::StopRequested;
        }
        let state = poll_link(ep, port, l);
        if state == Err(Down::PeerStopped) && (l.was_up || stop_is_for_us(ep)) {
            break Exit::PeerStopped;
        }
        if let Err(d @ Down::VersionMismatch { major, minor }) = state {
            if ep.peer_status().state == wave_abi::status::State::Ready {
                // The peer speaks another major: refuse it in our status block.
                ep.refuse(d, Channel(0), 0);
            }
            port.log(format_args!(
                "link: ABI version mismatch (peer {major}.{minor}, ours {}.{}): ending the run",
                wave_abi::ABI_MAJOR,
                wave_abi::ABI_MINOR
            ));
            break Exit::Refused;
        }
        let now = port.now_ns();
        let work = step_all(ep, port, now, services, &mut l.stats);
        if !services.is_empty() && services.iter().all(|s| s.finished()) {
            break Exit::Finished;
        }
        if now.saturating_sub(l.last_tick) >= tuning.tick_ns {
            publish(ep, services);
            l.last_tick = now;
        }
        if work > 0 {
            l.stats.busy += 1;
            l.idle_since = now;
        } else if now.saturating_sub(l.idle_since) >= tuning.spin_ns {
            idle(ep, port, tuning, services, mask, state, l);
        } else {
            core::hint::spin_loop();
        }
    };
    publish(ep, services);
    exit
}

/// A peer's STOPPED ends this side's run if it was up, or if the stop is by the peer
/// incarnation this side attached to (it acknowledged that epoch) or by a peer it never
/// attached to at all: a peer that stops right after its link-up, before it saw our
/// acknowledgement, must not leave us waiting (`docs/abi.md` §7, "Clean stop").
fn stop_is_for_us(ep: &Endpoint<'_>) -> bool {
    let attached = ep.peer_epoch();
    attached == 0 || ep.peer_status().epoch == attached
}

/// Polls the link and logs each change of state.
fn poll_link<P: Port>(ep: &mut Endpoint<'_>, port: &mut P, l: &mut Loop) -> Result<u32, Down> {
    let (peer_before, own_before) = (ep.peer_epoch(), ep.epoch());
    let p = ep.poll_link();
    l.stats.iterations += 1;
    if Some(p.state) != l.last_state {
        match p.state {
            Ok(session) => {
                port.log(format_args!(
                    "link: up (session {session:#010x}, peer epoch {})",
                    ep.peer_epoch()
                ));
                l.was_up = true;
                l.stats.ups += 1;
            }
            Err(d) => port.log(format_args!("link: down: {d:?}")),
        }
        l.last_state = Some(p.state);
    }
    if p.resynced {
        l.stats.resyncs += 1;
        if ep.epoch() != own_before && ep.peer_epoch() == peer_before {
            // A host lane adopting its primary's new epoch (`docs/abi.md` §5, "Lanes").
            port.log(format_args!(
                "link: this side's primary restarted (epoch {}); resynchronised",
                ep.epoch()
            ));
        } else {
            port.log(format_args!(
                "link: peer restarted (epoch {}); resynchronised",
                ep.peer_epoch()
            ));
        }
    }
    p.state
}

/// Steps every service once and rings the doorbells they ask for. Returns the work done.
fn step_all<'a, P: Port>(
    ep: &mut Endpoint<'a>,
    port: &mut P,
    now: u64,
    services: &mut [&mut dyn Service<'a>],
    stats: &mut RuntimeStats,
) -> usize {
    let mut work = 0;
    for s in services.iter_mut() {
        let r = s.step(ep, now, port);
        work += r.work;
        let mut bits = r.doorbells;
        while bits != 0 {
            port.notify(bits.trailing_zeros() as u16);
            stats.doorbells += 1;
            bits &= bits - 1;
        }
    }
    work
}

/// Heartbeat and counters: per service in its lane, summed in the side's counters.
fn publish(ep: &mut Endpoint<'_>, services: &[&mut dyn Service<'_>]) {
    let (mut invalid, mut other) = (0u64, 0u64);
    for s in services {
        let (i, o) = s.counters();
        ep.tick_lane(s.channel(), i, o);
        invalid += i;
        other += o;
    }
    ep.tick(invalid, other);
}

/// Idle: publish, announce sleep, re-check, wait for a doorbell or the next deadline.
fn idle<'a, P: Port>(
    ep: &mut Endpoint<'a>,
    port: &mut P,
    tuning: &Tuning,
    services: &[&mut dyn Service<'a>],
    mask: u64,
    state: Result<u32, Down>,
    l: &mut Loop,
) {
    let now = port.now_ns();
    let mut timeout = tuning.max_sleep_ns;
    for s in services {
        if let Some(d) = s.deadline_ns(now) {
            timeout = timeout.min(d.saturating_sub(now));
        }
    }
    if timeout < tuning.min_sleep_ns {
        core::hint::spin_loop();
        return;
    }
    publish(ep, services);
    l.last_tick = now;
    ep.begin_sleep();
    let mut slept = false;
    let fired = port.wait(mask, timeout, &mut || {
        slept = !ep.has_work() && ep.poll_link().state == state;
        slept
    });
    ep.end_sleep();
    if slept {
        l.stats.sleeps += 1;
        if fired != 0 {
            l.stats.doorbell_wakeups += 1;
        }
    }
    l.idle_since = port.now_ns();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::EchoService;
    use core::sync::atomic::AtomicU64;
    use wave_abi::layout::{Layout, Side, DEFAULT_RING_ENTRIES};
    use wave_abi::msg::{decode_test, encode_test, test_transform};
    use wave_abi::msg::{TAG_TEST_REQUEST, TAG_TEST_RESPONSE};
    use wave_abi::SharedRegion;

    /// A virtual-time port whose "peer" is a closure run at every wait: the shape a
    /// simulator's port has.
    struct VirtualPort<'p> {
        now: u64,
        rung: std::vec::Vec<u16>,
        waits: u64,
        on_wait: &'p mut dyn FnMut(u64) -> bool,
    }

    impl Log for VirtualPort<'_> {
        fn log(&mut self, _line: core::fmt::Arguments<'_>) {}
    }

    impl Port for VirtualPort<'_> {
        fn now_ns(&mut self) -> u64 {
            self.now += 100; // every look at the clock costs 100 ns of virtual time
            self.now
        }
        fn notify(&mut self, vector: u16) {
            self.rung.push(vector);
        }
        fn wait(&mut self, _mask: u64, timeout_ns: u64, idle: &mut dyn FnMut() -> bool) -> u64 {
            if !idle() {
                return 0;
            }
            self.waits += 1;
            self.now += timeout_ns;
            0
        }
        fn stop_requested(&mut self) -> bool {
            (self.on_wait)(self.waits)
        }
    }

    #[test]
    fn echoes_then_sleeps_then_stops_when_the_peer_stops() {
        let size = Layout::min_size(DEFAULT_RING_ENTRIES);
        let mem: std::vec::Vec<AtomicU64> = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        let region = SharedRegion::from_words(&mem);
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, size, wave_abi::layout::MIN_VECTORS).unwrap();
        layout.write(&region).unwrap();
        let mut host = Endpoint::new(region, &layout, Side::Host, 1).unwrap();
        let mut ipu = Endpoint::new(region, &layout, Side::Ipu, 1).unwrap();
        ipu.poll_link();
        host.poll_link();
        let w = [1, 2, 3, 4];
        let reqs: std::vec::Vec<_> = (0..10)
            .map(|s| encode_test(TAG_TEST_REQUEST, s, &w))
            .collect();
        assert_eq!(host.send(Channel::LinkTest, &reqs).0, 10);
        // The host stops once the runtime has slept twice.
        let host_cell = core::cell::RefCell::new(host);
        let mut stop = |waits: u64| {
            if waits >= 2 {
                host_cell.borrow_mut().stop();
            }
            false
        };
        let mut port = VirtualPort {
            now: 0,
            rung: std::vec::Vec::new(),
            waits: 0,
            on_wait: &mut stop,
        };
        let mut echo = EchoService::new();
        let (exit, st) = run(&mut ipu, &mut port, &Tuning::IPU, &mut [&mut echo]);
        assert_eq!(exit, Exit::PeerStopped);
        assert_eq!(echo.stats().echoed, 10);
        assert!(st.sleeps >= 2, "{st:?}");
        assert!(port.rung.is_empty(), "the host never announced sleep");
        let mut host = host_cell.into_inner();
        for s in 0..10 {
            let r = host.rx(Channel::LinkTest).poll().expect("response");
            let m = decode_test(TAG_TEST_RESPONSE, &r).unwrap();
            assert_eq!((m.seq, m.words), (s, test_transform(s, &w)));
        }
        // The IPU published its counters: 10 echoed, 0 invalid.
        assert_eq!(host.peer_status().counters[7], 10);
        assert_eq!(host.peer_status().counters[6], 0);
    }
}
