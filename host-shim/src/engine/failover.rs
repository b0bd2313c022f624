//! Fallback and hand-back (`docs/engine.md` "Fallback", `docs/abi.md` §7 "Liveness" and
//! "Resynchronisation"): the engine's supervisor watches the IPU (transport and heartbeat);
//! when it dies or stalls, scheduling moves to the *same* scheduling service under the *same*
//! agent runtime in a host thread (`host_agent::run`) over an in-process link, rebuilt from
//! the host's truth (status words: `Mechanism::resync`); when an IPU is up again (a new QEMU,
//! or the same one whose heartbeat resumed, attached under a new host epoch) and has
//! acknowledged the new session, scheduling is handed back to it, again through a resync.
//!
//! Nothing of an old route is ever acted on: its slots are no longer read (the CPUs' slot
//! reader follows the current route and session), its unpublished events are dropped, and
//! transaction cursors start over. The host mechanism validates every claim as always, so a
//! switch can cost a stall but never an invariant.

use std::time::{Duration, Instant};

use wave_abi::endpoint::previous_epoch;
use wave_abi::sched::SchedConfig;
use wave_abi::status::{next_epoch, State, StatusView};
use wave_abi::{Channel, Endpoint, Kind, Layout, Side};

use super::runtime::Shared;
use crate::link::Link;
use crate::local::LocalLink;
use crate::watchdog::{self, Cause, Watchdog};

/// The fallback agent's in-process link: the host end (the engine's endpoint while in
/// fallback) and the agent end (the host thread running the scheduling service).
pub(super) struct FallbackLinks {
    pub(super) host: LocalLink,
    pub(super) agent: LocalLink,
}

impl FallbackLinks {
    /// A pair with room for `cpus` CPU doorbells.
    pub(super) fn new(cpus: u32) -> Result<Self, String> {
        let vectors = wave_abi::sched::CPU_VECTOR_BASE + cpus as u16;
        let (host, agent) = LocalLink::pair(1 << 20, vectors.max(4), 512)
            .map_err(|e| format!("fallback link: {e}"))?;
        Ok(FallbackLinks { host, agent })
    }
}

/// What the engine must do after a supervisor tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing.
    None,
    /// Start the fallback agent thread (scheduling moved to it).
    StartAgent,
    /// Stop and join the fallback agent thread (scheduling went back to the IPU).
    StopAgent,
    /// The IPU is gone and there is no fallback: end the run.
    PeerLost,
}

/// Fallback counters for the results table.
#[derive(Clone, Debug, Default)]
pub struct FailoverStats {
    /// Times scheduling moved to the host.
    pub failovers: u64,
    /// Times it went back to an IPU.
    pub handbacks: u64,
    /// Time spent with the fallback agent scheduling.
    pub fallback: Duration,
    /// Longest time without a committed transaction across a switch (from the IPU's last
    /// heartbeat, or from the hand-back, to the first commit on the new route).
    pub worst_stall: Duration,
    /// Longest time from the IPU's last heartbeat to the failover.
    pub worst_detection: Duration,
    /// Why each failover happened.
    pub causes: Vec<String>,
    /// Set when the IPU was lost with no fallback (the run ended early).
    pub peer_lost: Option<String>,
    /// Policy hot-swaps done.
    pub swaps: u64,
}

enum Route<'a> {
    /// The IPU schedules; `generation` is the transport generation it attached in.
    Ipu { generation: u64 },
    /// The fallback agent schedules.
    Fallback {
        since: Instant,
        /// Transport generation and IPU heartbeat when it was declared gone.
        ipu_gen: u64,
        beat: (u32, u64),
        /// An endpoint on the IPU's link, waiting for a live IPU to acknowledge it (boxed:
        /// an endpoint is large and this is rare).
        pending: Option<(u64, Box<Endpoint<'a>>)>,
    },
}

/// The engine's watchdog and route switcher (one per run, driven by the supervising thread).
pub(super) struct Supervisor<'a, 's> {
    sh: &'s Shared<'a>,
    ipu: &'a dyn Link,
    ipu_layout: Layout,
    fallback: Option<&'a FallbackLinks>,
    config: SchedConfig,
    watchdog: Watchdog,
    route: Route<'a>,
    stall_from: Option<(Instant, u64)>,
    /// Watch the agent's liveness (the IPU; not the in-process agent of `--agent host`).
    watch: bool,
    pub(super) stats: FailoverStats,
}

impl<'a, 's> Supervisor<'a, 's> {
    pub(super) fn new(
        sh: &'s Shared<'a>,
        ipu: &'a dyn Link,
        fallback: Option<&'a FallbackLinks>,
        config: SchedConfig,
        bound: Duration,
        watch: bool,
    ) -> Result<Self, String> {
        let ipu_layout = Layout::read(&ipu.region()).map_err(|e| e.to_string())?;
        Ok(Supervisor {
            sh,
            ipu,
            ipu_layout,
            fallback,
            config,
            watchdog: Watchdog::new(bound),
            route: Route::Ipu {
                generation: ipu.generation(),
            },
            stall_from: None,
            watch,
            stats: FailoverStats::default(),
        })
    }

    /// True while the fallback agent schedules.
    pub(super) fn in_fallback(&self) -> bool {
        matches!(self.route, Route::Fallback { .. })
    }

    /// One look (call every supervisor iteration): poll the current route (resync on a new
    /// session, heartbeat), measure stalls, and switch routes when needed.
    pub(super) fn tick(&mut self) -> Action {
        let sh = self.sh;
        sh.locked(|f| {
            if let Ok(session) = f.ep.poll_link().state {
                if session != f.session {
                    sh.resync(f, session);
                }
            }
            f.ep.tick(0, sh.committed());
        });
        if let Some((t0, c0)) = self.stall_from {
            if sh.committed() > c0 {
                self.stats.worst_stall = self.stats.worst_stall.max(t0.elapsed());
                self.stall_from = None;
            }
        }
        match self.route {
            Route::Ipu { .. } if !self.watch => Action::None,
            Route::Ipu { generation } => {
                let cause = self.watchdog.check_link(self.ipu, &self.ipu_layout);
                let cause = match cause {
                    // The region was re-initialised for a new client: this IPU is gone.
                    None if self.ipu.generation() != generation => Some(Cause::Disconnected),
                    c => c,
                };
                cause.map_or(Action::None, |c| self.lost(c))
            }
            Route::Fallback { .. } => self.try_handback(),
        }
    }

    fn ipu_beat(&self) -> (State, (u32, u64)) {
        let region = self.ipu.region();
        StatusView::new(&region, self.ipu_layout.place(Kind::IpuStatus).offset)
            .map(|v| v.snapshot())
            .map_or((State::Offline, (0, 0)), |s| {
                (s.state, (s.epoch, s.heartbeat))
            })
    }

    /// The IPU is gone: print the watchdog report, then fail over (or give up).
    fn lost(&mut self, cause: Cause) -> Action {
        let age = self.watchdog.age();
        let region = self.ipu.region();
        eprint!(
            "{}",
            watchdog::report(&region, &self.ipu_layout, &cause, age, self.config.n_cpus)
        );
        self.stats.causes.push(cause.to_string());
        let Some(fb) = self.fallback else {
            self.stats.peer_lost = Some(cause.to_string());
            return Action::PeerLost;
        };
        let fb_region = fb.host.region();
        let layout = *fb.host.layout();
        let epoch = next_epoch(previous_epoch(&fb_region, &layout, Side::Host));
        let ep = Endpoint::primary(fb_region, &layout, Side::Host, epoch, &[Channel::Sched]);
        let ep = match ep {
            Ok(ep)
                if self
                    .config
                    .publish(&fb_region, &layout, epoch as u64)
                    .is_ok() =>
            {
                ep
            }
            _ => {
                self.stats.peer_lost = Some(format!("{cause}; the fallback link failed"));
                return Action::PeerLost;
            }
        };
        let sh = self.sh;
        sh.locked(|f| sh.reroute(f, ep, &fb.host));
        self.stats.failovers += 1;
        self.stats.worst_detection = self.stats.worst_detection.max(age);
        let now = Instant::now();
        self.stall_from = Some((now.checked_sub(age).unwrap_or(now), sh.committed()));
        self.route = Route::Fallback {
            since: now,
            ipu_gen: self.ipu.generation(),
            beat: self.ipu_beat().1,
            pending: None,
        };
        eprintln!("wave: failover: {cause}; the host's fallback agent schedules now");
        Action::StartAgent
    }

    /// In fallback: once an IPU is alive (a new one connected, or the old one's heartbeat
    /// moved), attach to it under a new host epoch; once it acknowledged, hand back.
    fn try_handback(&mut self) -> Action {
        let g = self.ipu.generation();
        let present = self.ipu.peer_present();
        let (state, beat_now) = self.ipu_beat();
        let Route::Fallback {
            since,
            ipu_gen,
            beat,
            pending,
        } = &mut self.route
        else {
            return Action::None;
        };
        if pending.as_ref().is_some_and(|(pg, _)| *pg != g) || !present {
            *pending = None; // that IPU went away too
        }
        if pending.is_none() {
            let revived = g == *ipu_gen && state == State::Ready && beat_now != *beat;
            if !present || (g == *ipu_gen && !revived) {
                return Action::None;
            }
            let region = self.ipu.region();
            let epoch = if g != *ipu_gen {
                self.ipu.epoch()
            } else {
                next_epoch(previous_epoch(&region, &self.ipu_layout, Side::Host))
            };
            let ep = Endpoint::primary(
                region,
                &self.ipu_layout,
                Side::Host,
                epoch,
                &[Channel::Sched],
            );
            let Ok(ep) = ep else { return Action::None };
            if self
                .config
                .publish(&region, &self.ipu_layout, epoch as u64)
                .is_err()
            {
                return Action::None;
            }
            *pending = Some((g, Box::new(ep)));
        }
        let Some((_, ep)) = pending.as_mut() else {
            return Action::None;
        };
        let Ok(session) = ep.poll_link().state else {
            return Action::None;
        };
        let Some((_, ep)) = pending.take() else {
            return Action::None;
        };
        let took = since.elapsed();
        let sh = self.sh;
        let ipu = self.ipu;
        sh.locked(|f| {
            sh.reroute(f, *ep, ipu);
            sh.resync(f, session);
        });
        self.stats.handbacks += 1;
        self.stats.fallback += took;
        self.stall_from = Some((Instant::now(), sh.committed()));
        self.watchdog.reset();
        self.route = Route::Ipu { generation: g };
        eprintln!(
            "wave: hand-back: the IPU is up (session {session:#010x}) after {} ms in fallback",
            took.as_millis()
        );
        Action::StopAgent
    }

    /// Policy hot-swap (`docs/engine.md` "Policy hot-swap"): the same path as a hand-back, on
    /// the current route. Publishes `config` under a new host epoch on the current link and
    /// points the engine at that new session; the agent sees the new epoch, rebuilds itself
    /// with the new policy, and the host re-announces every thread at link-up (resync).
    pub(super) fn swap(&mut self, config: SchedConfig) -> Result<(), String> {
        let link: &'a dyn Link = match (&self.route, self.fallback) {
            (Route::Fallback { .. }, Some(fb)) => &fb.host,
            _ => self.ipu,
        };
        let region = link.region();
        let layout = Layout::read(&region).map_err(|e| e.to_string())?;
        let epoch = next_epoch(previous_epoch(&region, &layout, Side::Host));
        config
            .publish(&region, &layout, epoch as u64)
            .map_err(|e| e.to_string())?;
        let ep = Endpoint::primary(region, &layout, Side::Host, epoch, &[Channel::Sched])
            .map_err(|e| format!("{e:?}"))?;
        let sh = self.sh;
        sh.locked(|f| sh.reroute(f, ep, link));
        let _ = link.notify(wave_abi::layout::VECTOR_CONTROL);
        self.config = config;
        self.stall_from = Some((Instant::now(), sh.committed()));
        self.stats.swaps += 1;
        Ok(())
    }

    /// End of run: account the time in fallback, and stop the host's side of the IPU's
    /// region (so a live IPU ends its run).
    pub(super) fn finish(&mut self) {
        if let Route::Fallback { since, pending, .. } = &mut self.route {
            self.stats.fallback += since.elapsed();
            if let Some((_, mut ep)) = pending.take() {
                ep.stop();
            }
            // The host's side of the IPU's region stops too (whichever epoch it shows), so a
            // live IPU ends its run instead of waiting for a host that moved away.
            let _ = crate::link::stop_side(self.ipu, Side::Host);
        }
    }
}
