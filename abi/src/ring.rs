//! The SPSC descriptor ring: 64-byte entries copied whole, one published-position word per
//! batch, credits in batches.
//!
//! Owns the entry format (`RingEntry`, `EntryBody`), the stamp, published-position and credit
//! encodings, and the two endpoints: [`Producer`] (writes entries and the published word across
//! the link into the consumer's memory, reads credits from its own memory) and [`Consumer`]
//! (reads entries and the published word in its own memory, writes credits across the link
//! into the producer's memory). Neither endpoint ever reads memory homed on the other side.
//! The protocol is specified in `docs/abi.md`, "Rings".
//!
//! Fast path: a producer writes each entry whole (body and stamp, no ordering inside the line:
//! four 16-byte stores on x86_64, eight word stores elsewhere and under loom), then publishes the
//! whole batch with **one** release store of the session-tagged published word. A consumer loads that word with acquire only when it has used
//! up what it last saw, copies each entry out whole and checks its stamp in the copy.
//! [`Producer::reserve`] hands out slots so a producer encodes straight into the ring.
//!
//! No allocation, no panics: every slice access is bounds-checked with `get`, and every value
//! read from shared memory is validated before it changes any state. The only `unsafe` is the
//! x86_64 whole-line copy (`copy_in`, `copy_out`), on slots the protocol gives to one side
//! at a time.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::region::{load_le, store_le};
use crate::sync::{AtomicU64, Ordering};

/// Bytes in one ring entry (one cache line).
pub const ENTRY_SIZE: usize = 64;
/// 64-bit words in one ring entry.
pub const ENTRY_WORDS: usize = ENTRY_SIZE / 8;
/// 64-bit words of an entry's body (everything but the stamp).
pub const BODY_WORDS: usize = ENTRY_WORDS - 1;
/// Bytes of payload in one entry.
pub const PAYLOAD_SIZE: usize = 48;
/// Smallest ring (entries).
pub const MIN_ENTRIES: u32 = 2;
/// Largest ring (entries).
pub const MAX_ENTRIES: u32 = 1 << 16;

/// One slot of shared memory: eight little-endian words.
type SlotWords = [AtomicU64; ENTRY_WORDS];

/// Copies a whole entry into `slot`. No ordering: the published word orders it (`docs/abi.md`
/// §6), and a consumer never reads a slot before it acquired that word.
#[inline(always)]
fn copy_in(slot: &SlotWords, words: [u64; ENTRY_WORDS]) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
        let dst = core::ptr::from_ref(slot).cast::<__m128i>().cast_mut();
        let src = core::ptr::from_ref(&words).cast::<__m128i>();
        for i in 0..4 {
            // SAFETY: `dst + i` (i < 4) lies inside `slot`, 64 bytes of `AtomicU64`s, which are
            // `UnsafeCell`s, so writing through a pointer derived from `&slot` is allowed; the
            // store is unaligned-safe; SSE2 is part of the x86_64 baseline. It cannot race with
            // a load of the same bytes by a correct peer: the producer writes a slot only after
            // acquiring the credit that freed it and before releasing the published word.
            // `src + i` lies inside the local `words`.
            unsafe { _mm_storeu_si128(dst.add(i), _mm_loadu_si128(src.add(i))) };
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    for (w, v) in slot.iter().zip(words) {
        store_le(w, v, Ordering::Relaxed);
    }
}

/// Copies a whole entry out of `slot` (see [`copy_in`]; a hostile peer's concurrent write
/// can only make the copy garbage, which the stamp check and the caller's validation catch).
#[inline(always)]
fn copy_out(slot: &SlotWords) -> [u64; ENTRY_WORDS] {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
        let src = core::ptr::from_ref(slot).cast::<__m128i>();
        let mut out = [0u64; ENTRY_WORDS];
        let dst = out.as_mut_ptr().cast::<__m128i>();
        for i in 0..4 {
            // SAFETY: as in `copy_in`: `src + i` (i < 4) is inside `slot`, `dst + i` inside the
            // local `out`, unaligned-safe, SSE2 baseline; a correct producer never writes a
            // slot between our acquire of the published word that covers it and our release
            // of its credit.
            unsafe { _mm_storeu_si128(dst.add(i), _mm_loadu_si128(src.add(i))) };
        }
        out
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    core::array::from_fn(|i| slot.get(i).map_or(0, |w| load_le(w, Ordering::Relaxed)))
}

/// The first 56 bytes of an entry: what the producer writes before the stamp.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct EntryBody {
    /// Message type (see `msg` tags). 0 is never valid.
    pub tag: U16,
    /// Bytes of `payload` in use (0..=48); the rest must be zero.
    pub len: U16,
    /// Message-specific 32-bit field; 0 where a message does not define it.
    pub aux: U32,
    /// Message payload.
    pub payload: [u8; PAYLOAD_SIZE],
}

/// One ring slot as it sits in shared memory.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct RingEntry {
    /// Message header and payload.
    pub body: EntryBody,
    /// `session << 32 | (position + 1) mod 2^32`, written with the body (the published word orders it).
    pub stamp: U64,
}

const _: () = assert!(core::mem::size_of::<EntryBody>() == 56);
const _: () = assert!(core::mem::size_of::<RingEntry>() == ENTRY_SIZE);
const _: () = assert!(core::mem::align_of::<RingEntry>() == ENTRY_SIZE);
const _: () = assert!(core::mem::offset_of!(EntryBody, tag) == 0);
const _: () = assert!(core::mem::offset_of!(EntryBody, len) == 2);
const _: () = assert!(core::mem::offset_of!(EntryBody, aux) == 4);
const _: () = assert!(core::mem::offset_of!(EntryBody, payload) == 8);
const _: () = assert!(core::mem::offset_of!(RingEntry, stamp) == 56);

impl EntryBody {
    /// An all-zero body (tag 0: invalid if ever received).
    pub const ZERO: EntryBody = EntryBody {
        tag: U16::ZERO,
        len: U16::ZERO,
        aux: U32::ZERO,
        payload: [0; PAYLOAD_SIZE],
    };

    /// A body with the given header and payload bytes (`payload.len() <= 48`; longer input is
    /// cut to 48 bytes, and `len` says how much was kept).
    pub fn new(tag: u16, aux: u32, payload: &[u8]) -> Self {
        let n = payload.len().min(PAYLOAD_SIZE);
        let mut body = EntryBody::ZERO;
        body.tag = U16::new(tag);
        body.len = U16::new(n as u16);
        body.aux = U32::new(aux);
        if let (Some(dst), Some(src)) = (body.payload.get_mut(..n), payload.get(..n)) {
            dst.copy_from_slice(src);
        }
        body
    }

    /// The body as the seven words it occupies in a slot (word 0 = `tag | len << 16 |
    /// aux << 32`, words 1..7 = the payload, all little-endian).
    #[inline]
    pub fn to_words(&self) -> [u64; BODY_WORDS] {
        zerocopy::transmute!(*self)
    }

    /// The body held by the seven slot words `w`.
    #[inline]
    pub fn from_words(w: [u64; BODY_WORDS]) -> Self {
        zerocopy::transmute!(w)
    }

    /// Word 0 of a body: `tag | len << 16 | aux << 32`.
    #[inline]
    pub const fn header_word(tag: u16, len: u16, aux: u32) -> u64 {
        tag as u64 | (len as u64) << 16 | (aux as u64) << 32
    }
}

/// The stamp a producer writes into the entry at `pos` in `session`.
#[inline]
pub const fn stamp(session: u32, pos: u32) -> u64 {
    ((session as u64) << 32) | pos.wrapping_add(1) as u64
}

/// The published word a producer stores after writing every entry before `end`.
#[inline]
pub const fn published(session: u32, end: u32) -> u64 {
    ((session as u64) << 32) | end as u64
}

/// The credit word a consumer writes after consuming everything before `consumed`.
#[inline]
pub const fn credit(session: u32, consumed: u32) -> u64 {
    ((session as u64) << 32) | consumed as u64
}

/// Why a ring cannot be built over the given memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// Entry count not a power of two in `MIN_ENTRIES..=MAX_ENTRIES`.
    BadEntries(u32),
    /// Slot memory length does not match the entry count.
    BadLength,
}

/// Checks an entry count and returns the number of 64-bit words the ring occupies.
pub fn ring_words(entries: u32) -> Result<usize, RingError> {
    if !entries.is_power_of_two() || !(MIN_ENTRIES..=MAX_ENTRIES).contains(&entries) {
        return Err(RingError::BadEntries(entries));
    }
    Ok(entries as usize * ENTRY_WORDS)
}

/// The shared words of one ring, as each endpoint sees them.
#[derive(Clone, Copy)]
pub struct RingWords<'a> {
    /// The slots: `entries × 8` words, homed on the consumer.
    pub slots: &'a [AtomicU64],
    /// The credit word: homed on the producer, written by the consumer.
    pub credit: &'a AtomicU64,
    /// The published word: homed on the consumer, written by the producer.
    pub published: &'a AtomicU64,
}

impl<'a> RingWords<'a> {
    /// Validates the geometry and returns the slots as whole entries.
    fn lines(&self, entries: u32) -> Result<&'a [SlotWords], RingError> {
        if self.slots.len() != ring_words(entries)? {
            return Err(RingError::BadLength);
        }
        let (lines, rest) = self.slots.as_chunks::<ENTRY_WORDS>();
        if !rest.is_empty() {
            return Err(RingError::BadLength);
        }
        Ok(lines)
    }
}

/// Producer-side counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Entries published.
    pub published: u64,
    /// Commits (published-word stores) that published at least one entry.
    pub batches: u64,
    /// Reservations (or pushes) that got fewer slots than asked for because the ring was full.
    pub full: u64,
    /// Credit words rejected (wrong session ignored silently; this counts impossible values:
    /// more consumed than produced, or consumed going backwards).
    pub bad_credit: u64,
}

/// Writes entries into a ring homed in the peer's memory.
pub struct Producer<'a> {
    slots: &'a [SlotWords],
    credit: &'a AtomicU64,
    published: &'a AtomicU64,
    mask: u32,
    entries: u32,
    session: u32,
    pos: u32,
    consumed: u32,
    stats: ProducerStats,
}

impl<'a> Producer<'a> {
    /// A producer over `words` (slots and published word in the consumer's memory, the credit
    /// word in this side's memory), starting at position 0 of `session`.
    pub fn new(words: RingWords<'a>, entries: u32, session: u32) -> Result<Self, RingError> {
        Ok(Self {
            slots: words.lines(entries)?,
            credit: words.credit,
            published: words.published,
            mask: entries - 1,
            entries,
            session,
            pos: 0,
            consumed: 0,
            stats: ProducerStats::default(),
        })
    }

    /// An absent ring (an optional subsystem the peer's table does not have): no slot, never
    /// room, never writes. `zero` is only ever read, and must read 0 (no session is 0).
    pub fn absent(zero: &'a AtomicU64) -> Self {
        Self {
            slots: &[],
            credit: zero,
            published: zero,
            mask: 0,
            entries: 0,
            session: 0,
            pos: 0,
            consumed: 0,
            stats: ProducerStats::default(),
        }
    }

    /// Starts a new session: position 0, all slots free. Old-session credits are ignored.
    pub fn reset(&mut self, session: u32) {
        self.session = session;
        self.pos = 0;
        self.consumed = 0;
    }

    /// Counters.
    pub fn stats(&self) -> ProducerStats {
        self.stats
    }

    /// Next position to be written (free-running, mod 2^32).
    pub fn position(&self) -> u32 {
        self.pos
    }

    /// Ring size in entries.
    pub fn capacity(&self) -> u32 {
        self.entries
    }

    /// Current session.
    pub fn session(&self) -> u32 {
        self.session
    }

    /// Reads the credit word (a local read) and updates what the consumer has freed.
    fn refresh_credits(&mut self) {
        // Acquire: the consumer finished copying slots out before it released this credit, so
        // our later overwrite of those slots cannot be seen by its earlier reads.
        let raw = load_le(self.credit, Ordering::Acquire);
        if (raw >> 32) as u32 != self.session {
            return; // not yet written in this session, or a stale write from an old one
        }
        let consumed = raw as u32;
        let outstanding = self.pos.wrapping_sub(consumed);
        let advance = consumed.wrapping_sub(self.consumed);
        if outstanding > self.entries || advance > self.entries {
            self.stats.bad_credit += 1;
            return;
        }
        self.consumed = consumed;
    }

    #[inline]
    fn cached_free(&self) -> u32 {
        self.entries - self.pos.wrapping_sub(self.consumed)
    }

    /// Free slots, after reading the latest credits.
    pub fn free_slots(&mut self) -> u32 {
        self.refresh_credits();
        self.cached_free()
    }

    /// Reserves up to `want` free slots to be written in place (fewer if the ring has less
    /// room; then `full` is counted). Nothing is visible to the consumer until
    /// [`Reservation::commit`]; a reservation dropped without commit publishes nothing.
    #[inline]
    pub fn reserve(&mut self, want: usize) -> Reservation<'_, 'a> {
        let want = want.min(u32::MAX as usize) as u32;
        if self.cached_free() < want {
            self.refresh_credits();
        }
        let len = want.min(self.cached_free());
        if len < want {
            self.stats.full += 1;
        }
        Reservation {
            producer: self,
            len,
            written: 0,
        }
    }

    /// Publishes one entry. Returns `false` (and counts `full`) if the ring has no free slot.
    pub fn push(&mut self, body: &EntryBody) -> bool {
        let mut r = self.reserve(1);
        r.write(body);
        r.commit() == 1
    }

    /// Publishes as many of `bodies` as fit, with one published-word store, and returns how
    /// many.
    pub fn push_batch(&mut self, bodies: &[EntryBody]) -> usize {
        if bodies.is_empty() {
            return 0;
        }
        let mut r = self.reserve(bodies.len());
        for body in bodies {
            if !r.write(body) {
                break;
            }
        }
        r.commit()
    }

    /// Writes the whole slot of `pos`: seven body words and the stamp, plain stores (the
    /// published word orders them).
    #[inline]
    fn write_slot(&self, pos: u32, body: &[u64; BODY_WORDS]) {
        if let Some(slot) = self.slots.get((pos & self.mask) as usize) {
            let [b0, b1, b2, b3, b4, b5, b6] = *body;
            copy_in(slot, [b0, b1, b2, b3, b4, b5, b6, stamp(self.session, pos)]);
        }
    }

    /// Publishes everything before `end` with one release store.
    #[inline]
    fn publish(&mut self, n: u32) {
        let end = self.pos.wrapping_add(n);
        // Release: every slot written before this store happens-before a consumer that
        // acquires it.
        store_le(
            self.published,
            published(self.session, end),
            Ordering::Release,
        );
        self.pos = end;
        self.stats.published += n as u64;
        self.stats.batches += 1;
    }
}

/// Slots reserved by [`Producer::reserve`], written in order, published together by
/// [`Reservation::commit`].
pub struct Reservation<'r, 'a> {
    producer: &'r mut Producer<'a>,
    len: u32,
    written: u32,
}

impl Reservation<'_, '_> {
    /// Slots reserved.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True if no slot was free.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots reserved and not yet written.
    pub fn remaining(&self) -> usize {
        (self.len - self.written) as usize
    }

    /// Encodes the next reserved slot straight from the seven body words (see
    /// [`EntryBody::to_words`]; word 0 is [`EntryBody::header_word`]). Returns `false` if every
    /// reserved slot is written.
    #[inline]
    pub fn write_words(&mut self, body: &[u64; BODY_WORDS]) -> bool {
        if self.written == self.len {
            return false;
        }
        let pos = self.producer.pos.wrapping_add(self.written);
        self.producer.write_slot(pos, body);
        self.written += 1;
        true
    }

    /// Writes the next reserved slot from `body`. Returns `false` if every reserved slot is
    /// written.
    #[inline]
    pub fn write(&mut self, body: &EntryBody) -> bool {
        self.write_words(&body.to_words())
    }

    /// Publishes every slot written (one release store of the published word) and returns
    /// how many.
    #[inline]
    pub fn commit(self) -> usize {
        if self.written > 0 {
            self.producer.publish(self.written);
        }
        self.written as usize
    }
}

/// Consumer-side counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Entries taken off the ring (valid stamps; their content is validated by the caller).
    pub consumed: u64,
    /// Published slots skipped because their stamp was not this session's stamp for their
    /// position (a corrupt or hostile producer).
    pub bad_stamp: u64,
    /// Published words rejected: this session's tag with an impossible position (ahead of
    /// the ring, or going backwards).
    pub bad_published: u64,
    /// Credit words written to the producer.
    pub credit_writes: u64,
}

/// Reads entries from a ring homed in this side's memory.
pub struct Consumer<'a> {
    slots: &'a [SlotWords],
    credit: &'a AtomicU64,
    published: &'a AtomicU64,
    mask: u32,
    entries: u32,
    session: u32,
    pos: u32,
    end: u32,
    returned: u32,
    credit_batch: u32,
    stats: ConsumerStats,
}

impl<'a> Consumer<'a> {
    /// A consumer over `words` (slots and published word in this side's memory, the credit
    /// word in the producer's memory), at position 0 of `session`. Credits are returned every
    /// `entries / 4` entries and whenever the ring is found empty.
    pub fn new(words: RingWords<'a>, entries: u32, session: u32) -> Result<Self, RingError> {
        Ok(Self {
            slots: words.lines(entries)?,
            credit: words.credit,
            published: words.published,
            mask: entries - 1,
            entries,
            session,
            pos: 0,
            end: 0,
            returned: 0,
            credit_batch: (entries / 4).max(1),
            stats: ConsumerStats::default(),
        })
    }

    /// An absent ring (an optional subsystem the peer's table does not have): never holds an
    /// entry, so it never writes `credit`. `zero` must read 0.
    pub fn absent(zero: &'a AtomicU64) -> Self {
        Self {
            slots: &[],
            credit: zero,
            published: zero,
            mask: 0,
            entries: 0,
            session: 0,
            pos: 0,
            end: 0,
            returned: 0,
            credit_batch: 1,
            stats: ConsumerStats::default(),
        }
    }

    /// Sets how many consumed entries are batched into one credit write (clamped to
    /// `1..=entries`).
    pub fn set_credit_batch(&mut self, batch: u32) {
        self.credit_batch = batch.clamp(1, self.entries.max(1));
    }

    /// Starts a new session at position 0.
    pub fn reset(&mut self, session: u32) {
        self.session = session;
        self.pos = 0;
        self.end = 0;
        self.returned = 0;
    }

    /// Counters.
    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// Next position to be read.
    pub fn position(&self) -> u32 {
        self.pos
    }

    /// Ring size in entries.
    pub fn capacity(&self) -> u32 {
        self.entries
    }

    /// The published end the word holds now, if it is this session's and possible (between
    /// what this consumer already knows and a full ring ahead of its position).
    fn load_published(&self) -> Result<Option<u32>, ()> {
        // Acquire: pairs with the producer's release store; the slots before `end` are
        // written.
        let raw = load_le(self.published, Ordering::Acquire);
        if (raw >> 32) as u32 != self.session {
            return Ok(None); // not yet written in this session, or a stale old-session value
        }
        let end = raw as u32;
        let ahead = end.wrapping_sub(self.pos);
        if ahead > self.entries || ahead < self.end.wrapping_sub(self.pos) {
            return Err(());
        }
        Ok(Some(end))
    }

    /// Entries known to be published and not yet taken, reloading the published word when
    /// none are left.
    #[inline]
    fn available(&mut self) -> u32 {
        if self.pos == self.end {
            match self.load_published() {
                Ok(Some(end)) => self.end = end,
                Ok(None) => {}
                Err(()) => self.stats.bad_published += 1,
            }
        }
        self.end.wrapping_sub(self.pos)
    }

    /// True if a published entry is waiting (does not consume it; a local read).
    pub fn has_entry(&self) -> bool {
        self.pos != self.end || matches!(self.load_published(), Ok(Some(end)) if end != self.pos)
    }

    /// Copies the slot of the current position out whole and checks its stamp.
    #[inline]
    fn take(&mut self) -> Option<EntryBody> {
        let pos = self.pos;
        self.pos = pos.wrapping_add(1);
        let slot = self.slots.get((pos & self.mask) as usize)?;
        let [w0, w1, w2, w3, w4, w5, w6, w7] = copy_out(slot);
        if w7 != stamp(self.session, pos) {
            self.stats.bad_stamp += 1;
            return None;
        }
        self.stats.consumed += 1;
        Some(EntryBody::from_words([w0, w1, w2, w3, w4, w5, w6]))
    }

    /// Takes up to `max` published entries, calling `f` with each (a local copy whose stamp
    /// was checked; its content is the caller's to validate), and returns how many were
    /// taken. Slots with a bad stamp are counted and skipped (they count towards `max`).
    /// Credits are returned when a batch is complete or when the ring is found empty.
    #[inline]
    pub fn consume(&mut self, max: usize, mut f: impl FnMut(&EntryBody)) -> usize {
        let n = (self.available() as usize).min(max);
        let mut taken = 0;
        for _ in 0..n {
            if let Some(body) = self.take() {
                f(&body);
                taken += 1;
            }
        }
        if n == 0 || self.pos.wrapping_sub(self.returned) >= self.credit_batch {
            self.flush_credits();
        }
        taken
    }

    /// Takes the next entry, if one is published. Slots with a bad stamp are counted and
    /// skipped (at most one ring's worth per call, so a hostile producer cannot keep this
    /// call busy).
    pub fn poll(&mut self) -> Option<EntryBody> {
        for _ in 0..self.entries.max(1) {
            let before = self.pos;
            let mut out = None;
            self.consume(1, |b| out = Some(*b));
            if out.is_some() || self.pos == before {
                return out;
            }
        }
        None
    }

    /// Takes up to `out.len()` entries; returns how many were written to `out`.
    pub fn poll_batch(&mut self, out: &mut [EntryBody]) -> usize {
        let mut n = 0;
        for _ in 0..self.entries.max(1) {
            let mut dst = out.get_mut(n..).unwrap_or_default().iter_mut();
            if dst.len() == 0 {
                break;
            }
            let before = self.pos;
            n += self.consume(dst.len(), |b| {
                if let Some(d) = dst.next() {
                    *d = *b;
                }
            });
            if self.pos == before {
                break;
            }
        }
        n
    }

    /// Writes the credit word now if anything was consumed since the last write.
    pub fn flush_credits(&mut self) {
        if self.pos != self.returned {
            // Release: our copies of the consumed slots happen-before the producer reusing them.
            store_le(
                self.credit,
                credit(self.session, self.pos),
                Ordering::Release,
            );
            self.returned = self.pos;
            self.stats.credit_writes += 1;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    struct Mem {
        slots: [AtomicU64; 8 * 8],
        credit: AtomicU64,
        published: AtomicU64,
    }

    fn mem() -> Mem {
        Mem {
            slots: core::array::from_fn(|_| AtomicU64::new(0)),
            credit: AtomicU64::new(0),
            published: AtomicU64::new(0),
        }
    }

    impl Mem {
        fn words(&self) -> RingWords<'_> {
            RingWords {
                slots: &self.slots,
                credit: &self.credit,
                published: &self.published,
            }
        }
        fn pair(&self, session: u32) -> (Producer<'_>, Consumer<'_>) {
            (
                Producer::new(self.words(), 8, session).unwrap(),
                Consumer::new(self.words(), 8, session).unwrap(),
            )
        }
    }

    #[test]
    fn an_absent_ring_is_always_empty_and_full() {
        let zero = AtomicU64::new(0);
        let mut p = Producer::absent(&zero);
        let mut c = Consumer::absent(&zero);
        assert_eq!(p.free_slots(), 0);
        assert_eq!(p.push_batch(&[EntryBody::ZERO]), 0);
        assert!(!p.push(&EntryBody::ZERO));
        assert!(p.reserve(4).is_empty());
        assert!(!c.has_entry());
        assert!(c.poll().is_none());
        c.flush_credits();
        c.reset(7);
        assert_eq!(load_le(&zero, Ordering::Relaxed), 0, "never written");
    }

    #[test]
    fn words_round_trip_and_header_layout() {
        let b = EntryBody::new(0x0102, 0xAABB_CCDD, &[9; 48]);
        let w = b.to_words();
        assert_eq!(w[0], EntryBody::header_word(0x0102, 48, 0xAABB_CCDD));
        assert_eq!(w[1], u64::from_le_bytes([9; 8]));
        assert_eq!(EntryBody::from_words(w), b);
    }

    #[test]
    fn fill_drain_wrap() {
        let m = mem();
        let (mut p, mut c) = m.pair(7);
        c.set_credit_batch(2);
        for round in 0..5u32 {
            for i in 0..8u32 {
                assert!(p.push(&EntryBody::new(1, round * 8 + i, &[])));
            }
            assert!(!p.push(&EntryBody::new(1, 99, &[])), "ring must be full");
            for i in 0..8u32 {
                let b = c.poll().expect("entry");
                assert_eq!(b.aux.get(), round * 8 + i);
            }
            assert!(c.poll().is_none());
        }
        assert_eq!(p.stats().published, 40);
        assert_eq!(p.stats().full, 5);
        assert_eq!(c.stats().consumed, 40);
    }

    #[test]
    fn a_reservation_publishes_only_on_commit() {
        let m = mem();
        let (mut p, mut c) = m.pair(5);
        {
            let mut r = p.reserve(3);
            assert_eq!(r.len(), 3);
            assert!(r.write_words(&EntryBody::new(2, 1, &[]).to_words()));
            assert!(r.write(&EntryBody::new(2, 2, &[])));
        } // dropped without commit
        assert!(!c.has_entry(), "dropped without commit: nothing published");
        let mut r = p.reserve(3);
        assert!(r.write(&EntryBody::new(2, 3, &[])));
        assert_eq!(r.remaining(), 2);
        assert!(!c.has_entry(), "written but not committed");
        assert_eq!(r.commit(), 1);
        assert_eq!(p.stats().batches, 1);
        let mut got = [EntryBody::ZERO; 4];
        assert_eq!(c.poll_batch(&mut got), 1);
        assert_eq!(got[0].aux.get(), 3);
        let mut r = p.reserve(20);
        assert_eq!(r.len(), 8, "ring of 8");
        while r.write(&EntryBody::new(2, 4, &[])) {}
        assert_eq!(r.commit(), 8);
        assert_eq!(p.stats().full, 1);
        assert_eq!(c.consume(16, |b| assert_eq!(b.aux.get(), 4)), 8);
    }

    #[test]
    fn old_session_entries_are_invisible() {
        let m = mem();
        let mut p = Producer::new(m.words(), 8, 1).unwrap();
        assert!(p.push(&EntryBody::new(1, 5, &[])));
        let mut c = Consumer::new(m.words(), 8, 2).unwrap();
        assert!(!c.has_entry());
        assert!(c.poll().is_none());
        assert_eq!(c.stats().bad_stamp + c.stats().bad_published, 0);
        p.reset(2);
        assert!(p.push(&EntryBody::new(1, 6, &[])));
        assert_eq!(c.poll().unwrap().aux.get(), 6);
    }

    #[test]
    fn a_stale_slot_behind_a_current_published_word_is_skipped() {
        let m = mem();
        // Session 1 leaves entries in slots 0 and 1.
        let (mut p, _) = m.pair(1);
        assert_eq!(p.push_batch(&[EntryBody::new(1, 1, &[]); 2]), 2);
        // A hostile or broken session-2 producer publishes two entries it never wrote.
        let mut c = Consumer::new(m.words(), 8, 2).unwrap();
        m.published
            .store(published(2, 2).to_le(), Ordering::Relaxed);
        assert!(c.poll().is_none());
        assert_eq!(c.stats().bad_stamp, 2);
        assert_eq!(c.stats().consumed, 0);
        assert_eq!(c.position(), 2);
    }

    #[test]
    fn impossible_published_words_are_counted_and_ignored() {
        let m = mem();
        let (mut p, mut c) = m.pair(3);
        m.published
            .store(published(3, 9).to_le(), Ordering::Relaxed);
        assert!(c.poll().is_none(), "9 ahead of a ring of 8");
        assert_eq!(c.stats().bad_published, 1);
        assert!(p.push(&EntryBody::new(1, 1, &[])));
        assert!(p.push(&EntryBody::new(1, 2, &[])));
        assert_eq!(c.poll().unwrap().aux.get(), 1);
        m.published
            .store(published(3, 0).to_le(), Ordering::Relaxed);
        assert_eq!(c.poll().unwrap().aux.get(), 2, "cached end still good");
        assert!(c.poll().is_none(), "backwards");
        assert_eq!(c.stats().bad_published, 2);
    }

    #[test]
    fn bogus_credit_is_rejected() {
        let m = mem();
        let mut p = Producer::new(m.words(), 8, 4).unwrap();
        m.credit
            .store(super::credit(4, 100).to_le(), Ordering::Relaxed);
        assert_eq!(p.free_slots(), 8);
        assert_eq!(p.stats().bad_credit, 1);
    }
}
