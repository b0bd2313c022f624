//! Per-side status block: state word, epoch, acknowledgement, heartbeat, wake request, counters.
//!
//! Each side writes only its own block, and its own block lives in the *peer's* memory (the
//! peer polls it locally; rule 1 of `docs/abi.md`). Every field is a little-endian 64-bit word
//! written with one atomic store, so fields that must change together share a word (state and
//! epoch). See `docs/abi.md`, "Status blocks".

use crate::region::{load_le, store_le, RegionError, SharedRegion};
use crate::sync::{AtomicU64, Ordering};

/// Bytes of one status block (four cache lines used, the rest of a 4 KiB page reserved).
pub const STATUS_USED: usize = 256;
/// Word index: `state: u32 | epoch: u32 << 32`.
pub const W_STATE_EPOCH: usize = 0;
/// Word index: `peer_epoch_seen: u32 | abi_major: u16 << 32 | abi_minor: u16 << 48`.
pub const W_ACK_ABI: usize = 1;
/// Word index: heartbeat counter.
pub const W_HEARTBEAT: usize = 2;
/// Word index: wake request, `sleeping: bit 0 | generation << 1`.
pub const W_WAKE: usize = 3;
/// Word index: error detail (see [`State`]).
pub const W_DETAIL: usize = 4;
/// Word index of the first of [`COUNTERS`] published counters.
pub const W_COUNTERS: usize = 8;
/// Number of published counters.
pub const COUNTERS: usize = 8;
/// Word index of the first lane (added in 1.2): one lane per channel, written by whichever
/// core of this side serves that channel.
pub const W_LANES: usize = 16;
/// Words per lane: wake request, invalid entries, service count, reserved.
pub const LANE_WORDS: usize = 4;
/// Lanes a status block holds.
pub const MAX_LANES: usize = 4;
const _: () = assert!((W_LANES + MAX_LANES * LANE_WORDS) * 8 <= STATUS_USED);

/// A side's state (low 32 bits of word 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// 0: never started, or cleared by the host when it (re)initialised the region.
    Offline,
    /// 1: starting; rings not usable yet.
    Booting,
    /// 2: attached and serving its rings.
    Ready,
    /// 3: stopped cleanly.
    Stopped,
    /// 4: refuses the region's ABI version; detail = `major | minor << 16` it found.
    VersionMismatch,
    /// 5: refuses the region's layout; detail = layout error code.
    LayoutError,
    /// 6 (1.3): refuses the peer's session configuration and ended its run; detail =
    /// `channel << 32 | reason` (`docs/abi.md` §5).
    Refused,
    /// Anything else: a corrupt or newer value.
    Unknown(u32),
}

impl State {
    /// Wire value.
    pub const fn to_u32(self) -> u32 {
        match self {
            State::Offline => 0,
            State::Booting => 1,
            State::Ready => 2,
            State::Stopped => 3,
            State::VersionMismatch => 4,
            State::LayoutError => 5,
            State::Refused => 6,
            State::Unknown(v) => v,
        }
    }
    /// Decodes a wire value (never fails: unknown values are kept).
    pub const fn from_u32(v: u32) -> State {
        match v {
            0 => State::Offline,
            1 => State::Booting,
            2 => State::Ready,
            3 => State::Stopped,
            4 => State::VersionMismatch,
            5 => State::LayoutError,
            6 => State::Refused,
            v => State::Unknown(v),
        }
    }
}

/// The epoch to use after `prev`: +1, skipping values whose low 16 bits are 0 (so session
/// tags are never zero) and never 0.
pub const fn next_epoch(prev: u32) -> u32 {
    let mut e = prev.wrapping_add(1);
    if e & 0xFFFF == 0 {
        e = e.wrapping_add(1);
    }
    e
}

/// The session tag both sides stamp entries and credits with.
pub const fn session_tag(host_epoch: u32, ipu_epoch: u32) -> u32 {
    ((host_epoch & 0xFFFF) << 16) | (ipu_epoch & 0xFFFF)
}

/// A snapshot of a status block, copied out of shared memory (untrusted values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// State.
    pub state: State,
    /// Epoch of that side's current incarnation.
    pub epoch: u32,
    /// The peer epoch this side has attached to.
    pub peer_epoch_seen: u32,
    /// ABI major the side speaks.
    pub abi_major: u16,
    /// ABI minor the side speaks.
    pub abi_minor: u16,
    /// Heartbeat counter.
    pub heartbeat: u64,
    /// Wake request word.
    pub wake: u64,
    /// Error detail.
    pub detail: u64,
    /// Published counters (see `docs/abi.md` for their meaning).
    pub counters: [u64; COUNTERS],
    /// Per-lane (per-channel) counters: (invalid entries, service count).
    pub lanes: [(u64, u64); MAX_LANES],
}

impl StatusSnapshot {
    /// True if the side says it is sleeping and wants a doorbell.
    pub fn sleeping(&self) -> bool {
        self.wake & 1 == 1
    }
}

/// A status block in shared memory.
#[derive(Clone, Copy)]
pub struct StatusView<'a> {
    words: &'a [AtomicU64],
}

impl<'a> StatusView<'a> {
    /// The status block at `offset`.
    pub fn new(region: &SharedRegion<'a>, offset: usize) -> Result<Self, RegionError> {
        Ok(Self {
            words: region.words(offset, STATUS_USED)?,
        })
    }

    /// Builds from words directly (tests).
    pub fn from_words(words: &'a [AtomicU64]) -> Option<Self> {
        (words.len() >= STATUS_USED / 8).then_some(Self { words })
    }

    fn w(&self, i: usize) -> Option<&'a AtomicU64> {
        self.words.get(i)
    }

    fn load(&self, i: usize, o: Ordering) -> u64 {
        self.w(i).map_or(0, |w| load_le(w, o))
    }

    fn store(&self, i: usize, v: u64, o: Ordering) {
        if let Some(w) = self.w(i) {
            store_le(w, v, o)
        }
    }

    /// Copies the block out.
    pub fn snapshot(&self) -> StatusSnapshot {
        let se = self.load(W_STATE_EPOCH, Ordering::Acquire);
        let aa = self.load(W_ACK_ABI, Ordering::Acquire);
        let mut counters = [0u64; COUNTERS];
        for (i, c) in counters.iter_mut().enumerate() {
            *c = self.load(W_COUNTERS + i, Ordering::Relaxed);
        }
        StatusSnapshot {
            state: State::from_u32(se as u32),
            epoch: (se >> 32) as u32,
            peer_epoch_seen: aa as u32,
            abi_major: (aa >> 32) as u16,
            abi_minor: (aa >> 48) as u16,
            heartbeat: self.load(W_HEARTBEAT, Ordering::Relaxed),
            wake: self.load(W_WAKE, Ordering::Acquire),
            detail: self.load(W_DETAIL, Ordering::Relaxed),
            counters,
            lanes: core::array::from_fn(|l| {
                let w = W_LANES + l * LANE_WORDS;
                (
                    self.load(w + 1, Ordering::Relaxed),
                    self.load(w + 2, Ordering::Relaxed),
                )
            }),
        }
    }

    /// Writes lane `lane`'s wake request (sequentially consistent, as [`Self::set_wake`]).
    pub fn set_lane_wake(&self, lane: usize, wake: u64) {
        if lane < MAX_LANES {
            self.store(W_LANES + lane * LANE_WORDS, wake, Ordering::SeqCst);
        }
    }

    /// Reads lane `lane`'s wake request (0 for a lane out of range).
    pub fn lane_wake(&self, lane: usize) -> u64 {
        if lane < MAX_LANES {
            self.load(W_LANES + lane * LANE_WORDS, Ordering::SeqCst)
        } else {
            0
        }
    }

    /// Publishes lane `lane`'s counters.
    pub fn set_lane_counters(&self, lane: usize, invalid: u64, count: u64) {
        if lane < MAX_LANES {
            self.store(W_LANES + lane * LANE_WORDS + 1, invalid, Ordering::Relaxed);
            self.store(W_LANES + lane * LANE_WORDS + 2, count, Ordering::Relaxed);
        }
    }

    /// Writes lane `lane`'s refusal detail (its reserved word +0x18, 1.3).
    pub fn set_lane_detail(&self, lane: usize, detail: u64) {
        if lane < MAX_LANES {
            self.store(W_LANES + lane * LANE_WORDS + 3, detail, Ordering::Release);
        }
    }

    /// Writes state and epoch together (release).
    pub fn set_state(&self, state: State, epoch: u32) {
        self.store(
            W_STATE_EPOCH,
            state.to_u32() as u64 | (epoch as u64) << 32,
            Ordering::Release,
        );
    }

    /// Writes the acknowledged peer epoch and our ABI version (release).
    pub fn set_ack(&self, peer_epoch: u32, major: u16, minor: u16) {
        self.store(
            W_ACK_ABI,
            peer_epoch as u64 | (major as u64) << 32 | (minor as u64) << 48,
            Ordering::Release,
        );
    }

    /// Writes the heartbeat.
    pub fn set_heartbeat(&self, beat: u64) {
        self.store(W_HEARTBEAT, beat, Ordering::Relaxed);
    }

    /// Writes the wake request word with sequentially consistent ordering (it takes part in the
    /// sleep/wake handshake).
    pub fn set_wake(&self, wake: u64) {
        self.store(W_WAKE, wake, Ordering::SeqCst);
    }

    /// Reads the wake request word (sequentially consistent, see [`Self::set_wake`]).
    pub fn wake(&self) -> u64 {
        self.load(W_WAKE, Ordering::SeqCst)
    }

    /// Writes the error detail.
    pub fn set_detail(&self, detail: u64) {
        self.store(W_DETAIL, detail, Ordering::Relaxed);
    }

    /// Publishes counters.
    pub fn set_counters(&self, counters: &[u64; COUNTERS]) {
        for (i, c) in counters.iter().enumerate() {
            self.store(W_COUNTERS + i, *c, Ordering::Relaxed);
        }
    }

    /// Zeroes the block except for the epoch, which is kept so the next incarnation can pick a
    /// larger one.
    pub fn clear_keep_epoch(&self) {
        let epoch = (self.load(W_STATE_EPOCH, Ordering::Relaxed) >> 32) as u32;
        for w in self.words {
            w.store(0, Ordering::Relaxed);
        }
        self.set_state(State::Offline, epoch);
    }
}
