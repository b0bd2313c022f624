//! `Endpoint`: one side's view of the whole link — its status, the peer's status, its rings —
//! and the restart/resynchronisation protocol.
//!
//! Both the firmware (`Side::Ipu`) and the host shim (`Side::Host`) drive the link through this
//! type, so the protocol in `docs/abi.md` ("Start, restart and resync", "Wake-ups") exists in
//! one place. It reads only memory homed on its own side; it writes the peer's memory (its own
//! status block, the rings it produces into, the credits for rings it consumes).

use crate::layout::{Kind, Layout, LayoutError, Placement, Side, IPU_STATUS_OFFSET};
use crate::region::{RegionError, SharedRegion};
use crate::ring::{Consumer, EntryBody, Producer, RingError, RingWords};
use crate::status::{session_tag, State, StatusSnapshot, StatusView, COUNTERS, MAX_LANES};
use crate::subsystem::{Subsystem, SUBSYSTEMS};
use crate::sync::{fence, Ordering};
use crate::{ABI_MAJOR, ABI_MINOR};

/// A pair of rings, one per direction: channel `i` is subsystem `i` of
/// [`crate::subsystem::SUBSYSTEMS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Channel(pub u8);

pub use crate::subsystem::CHANNELS;

#[allow(non_upper_case_globals)]
impl Channel {
    /// Link test: requests host→IPU, responses IPU→host.
    pub const LinkTest: Channel = Channel(0);
    /// Scheduling: events host→IPU, decisions IPU→host.
    pub const Sched: Channel = Channel(1);

    /// Index into per-channel arrays (and into the subsystem table).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
    /// The subsystem this channel carries (`None` for a channel this build does not know).
    pub fn subsystem(self) -> Option<&'static Subsystem> {
        SUBSYSTEMS.get(self.index())
    }
    /// The ring this side produces into on this channel.
    pub fn tx_kind(self, side: Side) -> Kind {
        match (self.subsystem(), side) {
            (Some(s), Side::Host) => s.to_ipu.kind,
            (Some(s), Side::Ipu) => s.to_host.kind,
            (None, _) => Kind(0),
        }
    }
    /// The ring this side consumes on this channel.
    pub fn rx_kind(self, side: Side) -> Kind {
        self.tx_kind(side.peer())
    }
}

const _: () = assert!(CHANNELS <= 8, "channel masks are u8");

/// Why the link is not up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// The peer has not started (state OFFLINE), or its block is unreadable.
    PeerOffline,
    /// The peer is starting.
    PeerBooting,
    /// The peer stopped cleanly.
    PeerStopped,
    /// The peer is ready but has not yet acknowledged our epoch.
    AwaitingAck,
    /// The peer speaks another ABI major, or refused ours.
    VersionMismatch {
        /// Peer's major.
        major: u16,
        /// Peer's minor.
        minor: u16,
    },
    /// The peer refused the region layout (detail code).
    PeerLayoutError(u64),
    /// The peer refused this side's session configuration and ended its run (detail:
    /// `channel << 32 | reason`).
    PeerRefused(u64),
    /// The peer published a state this side does not know, or epoch 0.
    PeerInvalid,
}

/// Result of [`Endpoint::poll_link`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkPoll {
    /// `Ok(session)` when both sides are ready and have acknowledged each other's epoch.
    pub state: Result<u32, Down>,
    /// True if this poll detected a new peer incarnation and reset all channel state: anything
    /// in flight before it is lost.
    pub resynced: bool,
}

/// Link-level counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Peer restarts detected (channel state reset).
    pub resyncs: u64,
    /// Transitions into "up".
    pub ups: u64,
    /// Doorbells this side decided to ring (peer was sleeping).
    pub doorbells: u64,
    /// Times this side announced it was going to sleep.
    pub sleeps: u64,
    /// Polls that found the peer's status invalid.
    pub peer_invalid: u64,
}

/// Errors building an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// A layout placement is outside the region.
    Region(RegionError),
    /// A ring placement has bad geometry.
    Ring(RingError),
    /// Epoch 0 is reserved.
    ZeroEpoch,
    /// A lane was asked for before this side's primary endpoint published READY.
    NotStarted,
}

impl From<RegionError> for EndpointError {
    fn from(e: RegionError) -> Self {
        EndpointError::Region(e)
    }
}
impl From<RingError> for EndpointError {
    fn from(e: RingError) -> Self {
        EndpointError::Ring(e)
    }
}

/// Bit `ch` set for every channel in `channels`.
pub const fn channel_mask(channels: &[Channel]) -> u8 {
    let mut m = 0u8;
    let mut i = 0;
    while i < channels.len() {
        m |= 1 << channels[i].0;
        i += 1;
    }
    m
}

const _: () = assert!(CHANNELS <= MAX_LANES);

const fn all_channels() -> [Channel; CHANNELS] {
    let mut out = [Channel(0); CHANNELS];
    let mut i = 0;
    while i < CHANNELS {
        out[i] = Channel(i as u8);
        i += 1;
    }
    out
}

/// Every channel.
pub const ALL_CHANNELS: [Channel; CHANNELS] = all_channels();

/// One side of the link, or one lane of it.
///
/// The *primary* endpoint ([`Endpoint::new`]) owns the side's status block: state, epoch,
/// acknowledgement, heartbeat, side wake word and counters. A *lane* endpoint
/// ([`Endpoint::lane`]) serves a subset of the channels from another core or thread with the
/// same epoch: it writes only the lane words of its channels (wake request and counters, see
/// `docs/abi.md` "Lanes") and resets only its own rings on a new session.
pub struct Endpoint<'a> {
    side: Side,
    primary: bool,
    mine: u8,
    own: StatusView<'a>,
    peer: StatusView<'a>,
    epoch: u32,
    peer_epoch: u32,
    session: u32,
    up: bool,
    tx: [Producer<'a>; CHANNELS],
    rx: [Consumer<'a>; CHANNELS],
    tx_vector: [u16; CHANNELS],
    rx_vector: [u16; CHANNELS],
    sleep_gen: u64,
    last_rung: u64,
    lane_rung: [u64; CHANNELS],
    heartbeat: u64,
    stats: LinkStats,
    refused: bool,
}

/// Byte offset, inside a status block, of a reserved word that stays 0 (read as the credit
/// word of an absent ring).
const ABSENT_CREDIT_WORD: usize = 0xFF8;

/// One value per channel, or the first error.
fn collect<T, E>(mut f: impl FnMut(Channel) -> Result<T, E>) -> Result<[T; CHANNELS], E> {
    let mut out: [Option<T>; CHANNELS] = [const { None }; CHANNELS];
    for (slot, ch) in out.iter_mut().zip(ALL_CHANNELS) {
        *slot = Some(f(ch)?);
    }
    Ok(out.map(|v| match v {
        Some(v) => v,
        // Every slot was filled above (the loop returns on the first error).
        None => unreachable!(),
    }))
}

fn status_offset(layout: &Layout, side: Side) -> usize {
    match side {
        Side::Host => layout.place(Kind::HostStatus).offset,
        Side::Ipu => layout.place(Kind::IpuStatus).offset,
    }
}

/// Reads back the epoch `side` last published (a slow-path read; used once at start to pick
/// `next_epoch(previous)`).
pub fn previous_epoch(region: &SharedRegion<'_>, layout: &Layout, side: Side) -> u32 {
    StatusView::new(region, status_offset(layout, side))
        .map(|v| v.snapshot().epoch)
        .unwrap_or(0)
}

/// IPU side: reports why it refuses the region, in the IPU status block at its fixed offset
/// (0x1000 in every ABI version), so the host can print it. `epoch` is whatever the IPU would
/// have used.
pub fn report_attach_error(region: &SharedRegion<'_>, err: &LayoutError, epoch: u32) {
    let Ok(view) = StatusView::new(region, IPU_STATUS_OFFSET) else {
        return;
    };
    let (state, detail) = match *err {
        LayoutError::Version { major, minor } => {
            (State::VersionMismatch, major as u64 | (minor as u64) << 16)
        }
        LayoutError::BadMagic(_) => return, // host not ready: nothing to report yet
        LayoutError::Region(_) => (State::LayoutError, 1),
        LayoutError::TotalSize { .. } => (State::LayoutError, 2),
        LayoutError::BadTable => (State::LayoutError, 3),
        LayoutError::TooFewVectors(_) => (State::LayoutError, 4),
        LayoutError::BadEntry { .. } => (State::LayoutError, 5),
        LayoutError::Duplicate(_) => (State::LayoutError, 6),
        LayoutError::Missing(_) => (State::LayoutError, 7),
        LayoutError::Overlap(_, _) => (State::LayoutError, 8),
    };
    view.set_detail(detail);
    view.set_ack(0, ABI_MAJOR, ABI_MINOR);
    view.set_state(state, epoch);
}

/// Producer half of the wake-up handshake, run after publishing entries: a full fence, then a
/// local read of the peer's wake request. True if the peer sleeps and this sleep generation has
/// not been rung yet (`last_rung` remembers the last one rung).
pub fn wake_check(peer: &StatusView<'_>, last_rung: &mut u64) -> bool {
    fence(Ordering::SeqCst);
    let wake = peer.wake();
    if wake & 1 == 1 && wake != *last_rung {
        *last_rung = wake;
        true
    } else {
        false
    }
}

/// Consumer half of the wake-up handshake: publishes "sleeping" with a new generation (after
/// `prev_gen`), then a full fence. The caller must re-check its rings after this and before
/// sleeping. Returns the new generation.
pub fn sleep_announce(own: &StatusView<'_>, prev_gen: u64) -> u64 {
    let gen = prev_gen.wrapping_add(1);
    own.set_wake((gen << 1) | 1);
    fence(Ordering::SeqCst);
    gen
}

/// Lane `lane`'s half of the wake-up handshake (consumer side): publishes "sleeping" with
/// generation `gen` in the lane word, then a full fence. The caller re-checks its rings after
/// this and before sleeping.
pub fn lane_sleep_announce(own: &StatusView<'_>, lane: usize, gen: u64) {
    own.set_lane_wake(lane, (gen << 1) | 1);
    fence(Ordering::SeqCst);
}

/// Producer half for lane `lane`, run after publishing on it: a full fence, then a local read
/// of the peer's lane word. True if that lane sleeps and this sleep has not been rung yet.
pub fn lane_wake_check(peer: &StatusView<'_>, lane: usize, last_rung: &mut u64) -> bool {
    fence(Ordering::SeqCst);
    let wake = peer.lane_wake(lane);
    if wake & 1 == 1 && wake != *last_rung {
        *last_rung = wake;
        true
    } else {
        false
    }
}

impl<'a> Endpoint<'a> {
    /// Starts `side` on a validated `layout` with a fresh `epoch` (use
    /// [`crate::status::next_epoch`] of [`previous_epoch`]). Publishes BOOTING, resets its
    /// counters and wake request, then READY. The link comes up once the peer is READY and both
    /// have acknowledged each other's epoch (see [`Self::poll_link`]).
    pub fn new(
        region: SharedRegion<'a>,
        layout: &Layout,
        side: Side,
        epoch: u32,
    ) -> Result<Self, EndpointError> {
        Self::primary(region, layout, side, epoch, &ALL_CHANNELS)
    }

    /// As [`Self::new`], serving only `channels` (the others are served by lanes).
    pub fn primary(
        region: SharedRegion<'a>,
        layout: &Layout,
        side: Side,
        epoch: u32,
        channels: &[Channel],
    ) -> Result<Self, EndpointError> {
        if epoch == 0 {
            return Err(EndpointError::ZeroEpoch);
        }
        let ep = Self::build(region, layout, side, epoch, true, channel_mask(channels))?;
        let own = ep.own;
        own.set_state(State::Booting, epoch);
        own.set_heartbeat(0);
        own.set_wake(0);
        own.set_detail(0);
        own.set_counters(&[0; COUNTERS]);
        for l in 0..MAX_LANES {
            own.set_lane_wake(l, 0);
            own.set_lane_counters(l, 0, 0);
        }
        own.set_ack(0, ABI_MAJOR, ABI_MINOR);
        own.set_state(State::Ready, epoch);
        Ok(ep)
    }

    /// A lane of `side` serving `channels`, with the epoch the side's primary endpoint
    /// published (read back from this side's own status block once, a slow-path read).
    /// [`EndpointError::NotStarted`] until the primary is READY: retry.
    pub fn lane(
        region: SharedRegion<'a>,
        layout: &Layout,
        side: Side,
        channels: &[Channel],
    ) -> Result<Self, EndpointError> {
        let own = StatusView::new(&region, status_offset(layout, side))?.snapshot();
        if own.state != State::Ready || own.epoch == 0 {
            return Err(EndpointError::NotStarted);
        }
        let ep = Self::build(
            region,
            layout,
            side,
            own.epoch,
            false,
            channel_mask(channels),
        )?;
        for ch in channels {
            ep.own.set_lane_wake(ch.index(), 0);
        }
        Ok(ep)
    }

    fn build(
        region: SharedRegion<'a>,
        layout: &Layout,
        side: Side,
        epoch: u32,
        primary: bool,
        mine: u8,
    ) -> Result<Self, EndpointError> {
        let own = StatusView::new(&region, status_offset(layout, side))?;
        let peer = StatusView::new(&region, status_offset(layout, side.peer()))?;
        // An optional ring the table lacks (a subsystem the peer's build does not have) is
        // absent: it never holds an entry and never has room. Its credit word is a reserved
        // word of the peer's status block, which nobody writes.
        let zero = region.word(status_offset(layout, side.peer()) + ABSENT_CREDIT_WORD)?;
        let ring_words = |p: Placement, kind: Kind| -> Result<RingWords<'a>, RegionError> {
            Ok(RingWords {
                slots: region.words(p.offset, p.size)?,
                credit: region.word(p.credit_offset)?,
                published: region.word(layout.published_offset(kind))?,
            })
        };
        let producer = |ch: Channel| -> Result<Producer<'a>, EndpointError> {
            let p = layout.place(ch.tx_kind(side));
            if p.size == 0 {
                return Ok(Producer::absent(zero));
            }
            Ok(Producer::new(
                ring_words(p, ch.tx_kind(side))?,
                p.entries,
                0,
            )?)
        };
        let consumer = |ch: Channel| -> Result<Consumer<'a>, EndpointError> {
            let p = layout.place(ch.rx_kind(side));
            if p.size == 0 {
                return Ok(Consumer::absent(zero));
            }
            Ok(Consumer::new(
                ring_words(p, ch.rx_kind(side))?,
                p.entries,
                0,
            )?)
        };
        let tx = collect(producer)?;
        let rx = collect(consumer)?;
        let vector = |k: Kind| layout.place(k).vector;
        Ok(Self {
            side,
            primary,
            mine,
            own,
            peer,
            epoch,
            peer_epoch: 0,
            session: 0,
            up: false,
            tx,
            rx,
            tx_vector: ALL_CHANNELS.map(|ch| vector(ch.tx_kind(side))),
            rx_vector: ALL_CHANNELS.map(|ch| vector(ch.rx_kind(side))),
            sleep_gen: 0,
            last_rung: 0,
            lane_rung: [0; CHANNELS],
            heartbeat: 0,
            stats: LinkStats::default(),
            refused: false,
        })
    }

    fn is_mine(&self, ch: usize) -> bool {
        self.mine & (1 << ch) != 0
    }

    /// True for the endpoint that owns this side's status block.
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// This side.
    pub fn side(&self) -> Side {
        self.side
    }
    /// This incarnation's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    /// The peer epoch currently attached to (0: none yet).
    pub fn peer_epoch(&self) -> u32 {
        self.peer_epoch
    }
    /// Current session tag (0 before the first attach).
    pub fn session(&self) -> u32 {
        self.session
    }
    /// True if the last [`Self::poll_link`] found the link up.
    pub fn is_up(&self) -> bool {
        self.up
    }
    /// Link counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }
    /// The peer's status block (local read, untrusted values).
    pub fn peer_status(&self) -> StatusSnapshot {
        self.peer.snapshot()
    }

    /// Reads the peer's status (local memory) and runs the attach/resync protocol:
    /// a new peer epoch resets every ring of this side to position 0 of the new session and
    /// acknowledges it. Call this in every loop iteration; it is a few local loads.
    ///
    /// A host-side lane first follows its primary: when the primary published READY under a
    /// new epoch (it restarted), the lane adopts that epoch and starts a new session of its own
    /// channels, reported as `resynced` (`docs/abi.md` §5, "Lanes").
    pub fn poll_link(&mut self) -> LinkPoll {
        let mut resynced = self.follow_primary();
        let s = self.peer.snapshot();
        let down = |this: &mut Self, why: Down| {
            this.up = false;
            Err(why)
        };
        let state = match s.state {
            State::Ready if s.abi_major != ABI_MAJOR => down(
                self,
                Down::VersionMismatch {
                    major: s.abi_major,
                    minor: s.abi_minor,
                },
            ),
            State::Ready if s.epoch == 0 => {
                self.stats.peer_invalid += 1;
                down(self, Down::PeerInvalid)
            }
            State::Ready => {
                if s.epoch != self.peer_epoch {
                    if self.peer_epoch != 0 && !resynced {
                        self.stats.resyncs += 1;
                    }
                    resynced |= self.peer_epoch != 0;
                    self.attach(s.epoch);
                }
                if s.peer_epoch_seen != self.epoch {
                    down(self, Down::AwaitingAck)
                } else {
                    if !self.up {
                        self.stats.ups += 1;
                    }
                    self.up = true;
                    Ok(self.session)
                }
            }
            State::Offline => down(self, Down::PeerOffline),
            State::Booting => down(self, Down::PeerBooting),
            State::Stopped => down(self, Down::PeerStopped),
            State::VersionMismatch => down(
                self,
                Down::VersionMismatch {
                    major: s.detail as u16,
                    minor: (s.detail >> 16) as u16,
                },
            ),
            State::LayoutError => down(self, Down::PeerLayoutError(s.detail)),
            State::Refused => down(self, Down::PeerRefused(s.detail)),
            State::Unknown(_) => {
                self.stats.peer_invalid += 1;
                down(self, Down::PeerInvalid)
            }
        };
        LinkPoll { state, resynced }
    }

    /// Attaches to peer epoch `peer_epoch`: a new session of this endpoint's channels (every
    /// ring it serves restarts at position 0 of it; nothing of the old session is read after
    /// this), acknowledged by the primary.
    fn attach(&mut self, peer_epoch: u32) {
        self.peer_epoch = peer_epoch;
        self.session = match self.side {
            Side::Host => session_tag(self.epoch, peer_epoch),
            Side::Ipu => session_tag(peer_epoch, self.epoch),
        };
        for ch in 0..CHANNELS {
            if self.is_mine(ch) {
                self.tx[ch].reset(self.session);
                self.rx[ch].reset(self.session);
            }
        }
        self.lane_rung = [0; CHANNELS];
        self.up = false;
        if self.primary {
            self.own.set_ack(peer_epoch, ABI_MAJOR, ABI_MINOR);
        }
    }

    /// A host lane follows its primary (a local read of its own status block): when the
    /// primary is READY under another epoch, the lane adopts it and, if it was attached to a
    /// peer, starts the new session with that peer at once. True if it resynchronised.
    /// IPU lanes restart with their primary (the firmware restarts as a whole), so they never
    /// need this, and reading their own block would cross the link.
    fn follow_primary(&mut self) -> bool {
        if self.primary || self.side != Side::Host {
            return false;
        }
        let own = self.own.snapshot();
        if own.state != State::Ready || own.epoch == 0 || own.epoch == self.epoch {
            return false;
        }
        self.epoch = own.epoch;
        self.up = false;
        if self.peer_epoch == 0 {
            return false;
        }
        self.stats.resyncs += 1;
        self.attach(self.peer_epoch);
        true
    }

    /// The producer for `ch` (writes into the peer's memory).
    pub fn tx(&mut self, ch: Channel) -> &mut Producer<'a> {
        &mut self.tx[ch.index()]
    }

    /// The consumer for `ch` (reads this side's memory).
    pub fn rx(&mut self, ch: Channel) -> &mut Consumer<'a> {
        &mut self.rx[ch.index()]
    }

    /// Both ends of `ch` at once (an agent that answers what it reads).
    pub fn channel(&mut self, ch: Channel) -> (&mut Consumer<'a>, &mut Producer<'a>) {
        (&mut self.rx[ch.index()], &mut self.tx[ch.index()])
    }

    /// Publishes `bodies` on `ch` (as many as fit) if the link is up. Returns how many were
    /// published and, if the peer asked to be woken, the doorbell vector to ring (never for a
    /// doorbell-less channel, whose consumer polls).
    pub fn send(&mut self, ch: Channel, bodies: &[EntryBody]) -> (usize, Option<u16>) {
        if !self.up {
            return (0, None);
        }
        let n = self.tx[ch.index()].push_batch(bodies);
        let doorbell = self.tx_vector[ch.index()] != crate::layout::VECTOR_NONE;
        let ring = if n > 0 && doorbell && self.peer_lane_wants_wakeup(ch) {
            Some(self.tx_vector[ch.index()])
        } else {
            None
        };
        (n, ring)
    }

    /// After publishing: true if the peer announced it is sleeping and has not been rung for
    /// this sleep yet (then ring its doorbell). Runs a full fence first so the check cannot be
    /// ordered before the entries just published (see "Wake-ups" in `docs/abi.md`).
    pub fn peer_wants_wakeup(&mut self) -> bool {
        let ring = wake_check(&self.peer, &mut self.last_rung);
        if ring {
            self.stats.doorbells += 1;
        }
        ring
    }

    /// After publishing on `ch`: true if the peer's consumer of `ch` announced sleep in its
    /// lane, or the peer's primary in the side wake word (a 1.1 peer has no lanes), and has not
    /// been rung for that sleep yet.
    pub fn peer_lane_wants_wakeup(&mut self, ch: Channel) -> bool {
        let c = ch.index();
        let by_lane = match self.lane_rung.get_mut(c) {
            Some(last) => lane_wake_check(&self.peer, c, last),
            None => false,
        };
        let by_side = wake_check(&self.peer, &mut self.last_rung);
        let ring = by_lane || by_side;
        if ring {
            self.stats.doorbells += 1;
        }
        ring
    }

    /// The doorbell vector that wakes the peer's consumer of `ch`.
    pub fn tx_vector(&self, ch: Channel) -> u16 {
        self.tx_vector[ch.index()]
    }

    /// The doorbell vector that wakes this side's consumer of `ch` (the one a service on `ch`
    /// waits for).
    pub fn rx_vector(&self, ch: Channel) -> u16 {
        self.rx_vector[ch.index()]
    }

    /// Announces that this side is about to sleep on its doorbells. Returns credits first (a
    /// producer must never wait on a sleeper for credits). The caller must then poll its rings
    /// once more and sleep only if they are still empty, always with a timeout, and call
    /// [`Self::end_sleep`] when it wakes.
    pub fn begin_sleep(&mut self) {
        for ch in 0..CHANNELS {
            if self.is_mine(ch) {
                self.rx[ch].flush_credits();
            }
        }
        let gen = self.sleep_gen.wrapping_add(1);
        for ch in 0..CHANNELS {
            if self.is_mine(ch) {
                lane_sleep_announce(&self.own, ch, gen);
            }
        }
        self.sleep_gen = if self.primary {
            sleep_announce(&self.own, self.sleep_gen)
        } else {
            gen
        };
        self.stats.sleeps += 1;
    }

    /// Withdraws the sleep announcement.
    pub fn end_sleep(&mut self) {
        for ch in 0..CHANNELS {
            if self.is_mine(ch) {
                self.own.set_lane_wake(ch, self.sleep_gen << 1);
            }
        }
        if self.primary {
            self.own.set_wake(self.sleep_gen << 1);
        }
    }

    /// True if any ring this endpoint consumes has a published entry waiting (local reads).
    pub fn has_work(&self) -> bool {
        (0..CHANNELS).any(|ch| self.is_mine(ch) && self.rx[ch].has_entry())
    }

    /// Publishes `ch`'s lane counters (invalid entries, service count).
    pub fn tick_lane(&mut self, ch: Channel, invalid: u64, count: u64) {
        if self.is_mine(ch.index()) {
            self.own.set_lane_counters(ch.index(), invalid, count);
        }
    }

    /// Advances the heartbeat and publishes counters (`app` = the caller's own counters, see
    /// `docs/abi.md` "Published counters" for slots 6 and 7).
    /// A lane endpoint publishes nothing here (its counters go to [`Self::tick_lane`]).
    pub fn tick(&mut self, app_invalid: u64, app_other: u64) {
        if !self.primary {
            return;
        }
        self.heartbeat = self.heartbeat.wrapping_add(1);
        self.own.set_heartbeat(self.heartbeat);
        let mut c = [0u64; COUNTERS];
        for r in &self.rx {
            c[0] += r.stats().consumed;
            c[1] += r.stats().bad_stamp + r.stats().bad_published;
        }
        for t in &self.tx {
            c[2] += t.stats().published;
            c[3] += t.stats().full + t.stats().bad_credit;
        }
        c[4] = self.stats.doorbells;
        c[5] = self.stats.resyncs;
        c[6] = app_invalid;
        c[7] = app_other;
        self.own.set_counters(&c);
    }

    /// Ends this side's run because it refuses what the peer asked for: `VERSION_MISMATCH`
    /// with the peer's `major | minor << 16` for a [`Down::VersionMismatch`], otherwise
    /// `REFUSED` with `detail` (`channel << 32 | reason`). Only the primary changes the state;
    /// a lane writes `detail` into its lane's reserved word (+0x18) for the host to read.
    pub fn refuse(&mut self, why: Down, channel: Channel, detail: u32) {
        self.up = false;
        self.refused = true;
        let (state, detail) = match why {
            Down::VersionMismatch { major, minor } => {
                (State::VersionMismatch, major as u64 | (minor as u64) << 16)
            }
            _ => (State::Refused, (channel.0 as u64) << 32 | detail as u64),
        };
        if self.primary {
            self.own.set_detail(detail);
            self.own.set_state(state, self.epoch);
        } else {
            self.own.set_lane_detail(channel.index(), detail);
        }
    }

    /// Publishes STOPPED (a clean shutdown the peer can tell from a crash), unless this side
    /// refused the peer ([`Self::refuse`]: that state stays). A lane only stops using the
    /// link: the primary speaks for the side.
    pub fn stop(&mut self) {
        self.up = false;
        if self.primary && !self.refused {
            self.own.set_state(State::Stopped, self.epoch);
        }
    }
}
