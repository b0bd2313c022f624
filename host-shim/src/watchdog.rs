//! Liveness of the peer: the host's watchdog over the IPU's heartbeat (`docs/abi.md` §7
//! "Liveness"), and the report it prints when it declares the peer dead or stuck (the host's
//! whole view of the link, as sched_ext prints when it ejects a scheduler).
//!
//! Everything it reads is homed on the host (the IPU status block and the CPU slots), so
//! watching costs a few local loads and never reads across the link.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use wave_abi::status::{State, StatusSnapshot, StatusView};
use wave_abi::{Kind, Layout, SharedRegion};

use crate::link::Link;

/// Default heartbeat-age bound: the IPU publishes its heartbeat at least every 2 ms while it
/// runs (every busy tick and before every sleep, and its sleeps end within 2 ms), but under
/// QEMU TCG on a loaded machine its vCPU thread can go unscheduled for tens of ms, so the
/// bound leaves an order of magnitude of margin.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the peer is considered gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The transport says the peer left (QEMU exited or was killed: its socket closed).
    Disconnected,
    /// The peer's heartbeat did not change for this long while it claimed to run (stopped,
    /// hung or starved).
    HeartbeatStale(Duration),
    /// The peer, READY before, ended its run: STOPPED, or it refused something (state 4, 5
    /// or 6 with its detail word).
    Ended(State, u64),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Disconnected => write!(f, "the IPU disconnected (QEMU exited or was killed)"),
            Cause::HeartbeatStale(d) => write!(
                f,
                "the IPU's heartbeat has not changed for {} ms (IPU stopped, hung or starved)",
                d.as_millis()
            ),
            Cause::Ended(State::Stopped, _) => write!(f, "the IPU stopped its run (STOPPED)"),
            Cause::Ended(State::Refused, d) => write!(
                f,
                "the IPU refused the configuration of channel {} (reason {}, docs/abi.md §5)",
                d >> 32,
                d & 0xFFFF_FFFF
            ),
            Cause::Ended(s, d) => write!(f, "the IPU ended its run in state {s:?} (detail {d})"),
        }
    }
}

/// Watches one peer's heartbeat. Feed it the peer's status at every look; it declares the
/// peer dead once the heartbeat stayed the same for longer than the bound while the peer's
/// state was READY (a peer that is booting, stopped cleanly or refused the link has no
/// heartbeat to keep).
#[derive(Clone, Debug)]
pub struct Watchdog {
    bound: Duration,
    last_beat: Option<(u32, u64)>,
    since: Instant,
    seen_ready: bool,
}

impl Watchdog {
    /// A watchdog that declares the peer dead after `bound` without a heartbeat.
    pub fn new(bound: Duration) -> Self {
        Watchdog {
            bound,
            last_beat: None,
            since: Instant::now(),
            seen_ready: false,
        }
    }

    /// The bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// How long the heartbeat has been unchanged.
    pub fn age(&self) -> Duration {
        self.since.elapsed()
    }

    /// Forgets the last heartbeat (a new peer connected).
    pub fn reset(&mut self) {
        self.last_beat = None;
        self.since = Instant::now();
        self.seen_ready = false;
    }

    /// Looks at the peer: `Some(cause)` if it is gone. `present` is what the transport knows
    /// ([`Link::peer_present`]).
    pub fn check(&mut self, peer: &StatusSnapshot, present: bool) -> Option<Cause> {
        // A peer that ended its run says why before it leaves: that beats "disconnected".
        // A refusal is always this incarnation's word; a STOPPED only once it was READY.
        if is_final(peer.state) && (self.seen_ready || peer.state != State::Stopped) {
            return Some(Cause::Ended(peer.state, peer.detail));
        }
        if !present {
            return Some(Cause::Disconnected);
        }
        self.seen_ready |= peer.state == State::Ready;
        let beat = (peer.epoch, peer.heartbeat);
        if peer.state != State::Ready || self.last_beat != Some(beat) {
            self.last_beat = Some(beat);
            self.since = Instant::now();
            return None;
        }
        let age = self.since.elapsed();
        (age > self.bound).then_some(Cause::HeartbeatStale(age))
    }

    /// As [`Self::check`], reading the IPU status block of `link`'s region.
    pub fn check_link(&mut self, link: &dyn Link, layout: &Layout) -> Option<Cause> {
        let region = link.region();
        let snap = StatusView::new(&region, layout.place(Kind::IpuStatus).offset)
            .map(|v| v.snapshot())
            .ok();
        match snap {
            Some(s) => self.check(&s, link.peer_present()),
            None => Some(Cause::Disconnected),
        }
    }
}

/// States a side ends its run in (`docs/abi.md` §5: final for that epoch).
pub fn is_final(state: State) -> bool {
    matches!(
        state,
        State::Stopped | State::Refused | State::VersionMismatch | State::LayoutError
    )
}

fn status_line(out: &mut String, name: &str, s: &StatusSnapshot) {
    let _ = writeln!(
        out,
        "  {name}: state {:?} epoch {} acked peer epoch {} abi {}.{} heartbeat {} wake {:#x} detail {}",
        s.state, s.epoch, s.peer_epoch_seen, s.abi_major, s.abi_minor, s.heartbeat, s.wake, s.detail
    );
    let _ = writeln!(out, "    counters {:?}", s.counters);
    let _ = writeln!(out, "    lanes (invalid, served) {:?}", s.lanes);
}

/// The watchdog report: both status blocks, the heartbeat age, and the first `cpus` CPU slots
/// of the scheduling session (prestaged and last-aborted transactions, preempt requests):
/// what was in flight when the peer was declared gone. `cpus` is what the caller configured
/// (0: no scheduling session); the report reads only host-homed blocks.
pub fn report(
    region: &SharedRegion<'_>,
    layout: &Layout,
    cause: &Cause,
    age: Duration,
    cpus: u32,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "wave: watchdog: {cause}");
    let _ = writeln!(out, "  heartbeat age {} ms", age.as_millis());
    let view = |k: Kind| StatusView::new(region, layout.place(k).offset).ok();
    if let Some(v) = view(Kind::HostStatus) {
        status_line(&mut out, "host", &v.snapshot());
    }
    if let Some(v) = view(Kind::IpuStatus) {
        status_line(&mut out, "ipu", &v.snapshot());
    }
    slots(&mut out, region, layout, cpus);
    out
}

/// Per-CPU slot words of the scheduling session, if one is configured.
fn slots(out: &mut String, region: &SharedRegion<'_>, layout: &Layout, cpus: u32) {
    let base = layout.place(Kind::CpuSlots).offset;
    if cpus == 0 || layout.place(Kind::CpuSlots).size == 0 {
        return;
    }
    let _ = writeln!(out, "  CPU slots (transactions in flight):");
    for cpu in 0..cpus as usize {
        let w = |i: usize| {
            region
                .word(base + 64 * cpu + 8 * i)
                .map(|a| u64::from_le(a.load(std::sync::atomic::Ordering::Acquire)))
                .unwrap_or(0)
        };
        let _ = writeln!(
            out,
            "    cpu {cpu}: prestaged txn {} -> tid {} seq {} (session {:#x}), abort {}, preempt gen {:#x} -> tid {} seq {}",
            w(0),
            w(1) as u32,
            w(1) >> 32,
            w(2),
            w(3),
            w(4),
            w(5) as u32,
            w(5) >> 32
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(state: State, epoch: u32, heartbeat: u64) -> StatusSnapshot {
        StatusSnapshot {
            state,
            epoch,
            peer_epoch_seen: 0,
            abi_major: 1,
            abi_minor: 2,
            heartbeat,
            wake: 0,
            detail: 0,
            counters: [0; wave_abi::status::COUNTERS],
            lanes: [(0, 0); wave_abi::status::MAX_LANES],
        }
    }
    fn ready(epoch: u32, beat: u64) -> StatusSnapshot {
        snap(State::Ready, epoch, beat)
    }

    #[test]
    fn a_disconnected_peer_is_gone_at_once() {
        let mut w = Watchdog::new(Duration::from_secs(3600));
        assert_eq!(w.check(&ready(1, 1), false), Some(Cause::Disconnected));
    }

    #[test]
    fn a_frozen_heartbeat_is_stale_after_the_bound_and_a_beat_revives() {
        let mut w = Watchdog::new(Duration::from_millis(20));
        assert_eq!(w.check(&ready(1, 5), true), None);
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(
            w.check(&ready(1, 5), true),
            Some(Cause::HeartbeatStale(_))
        ));
        assert_eq!(w.check(&ready(1, 6), true), None);
        // A new epoch with the same count is a new heartbeat.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(w.check(&ready(2, 6), true), None);
    }

    #[test]
    fn a_peer_that_is_not_ready_has_no_heartbeat_to_keep() {
        let mut w = Watchdog::new(Duration::from_millis(1));
        let booting = snap(State::Booting, 1, 0);
        assert_eq!(w.check(&booting, true), None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(w.check(&booting, true), None);
    }

    #[test]
    fn a_peer_that_was_ready_and_stops_or_refuses_has_ended() {
        let mut w = Watchdog::new(Duration::from_secs(3600));
        assert_eq!(
            w.check(&snap(State::Stopped, 1, 0), true),
            None,
            "never ready"
        );
        assert_eq!(w.check(&ready(1, 1), true), None);
        let mut refused = snap(State::Refused, 1, 1);
        refused.detail = 1 << 32 | 2;
        assert_eq!(
            w.check(&refused, true),
            Some(Cause::Ended(State::Refused, 1 << 32 | 2))
        );
        assert!(Cause::Ended(State::Refused, 1 << 32 | 2)
            .to_string()
            .contains("channel 1 (reason 2"));
    }
}
