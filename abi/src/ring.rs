//! The SPSC descriptor ring: 64-byte entries, a stamp word written last, credits in batches.
//!
//! Owns the entry format (`RingEntry`, `EntryBody`), the stamp and credit encodings, and the two
//! endpoints: [`Producer`] (writes entries across the link into the consumer's memory, reads
//! credits from its own memory) and [`Consumer`] (polls entries in its own memory, writes
//! credits across the link into the producer's memory). Neither endpoint ever reads memory
//! homed on the other side. The protocol is specified in `docs/abi.md`, "Rings".
//!
//! No allocation, no panics: every slice access is bounds-checked with `get`, and every value
//! read from shared memory is validated before it changes any state.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::region::{load_le, read_words, store_le, write_words};
use crate::sync::{AtomicU64, Ordering};

/// Bytes in one ring entry (one cache line).
pub const ENTRY_SIZE: usize = 64;
/// 64-bit words in one ring entry.
pub const ENTRY_WORDS: usize = ENTRY_SIZE / 8;
/// Bytes of payload in one entry.
pub const PAYLOAD_SIZE: usize = 48;
/// Smallest ring (entries).
pub const MIN_ENTRIES: u32 = 2;
/// Largest ring (entries).
pub const MAX_ENTRIES: u32 = 1 << 16;
/// Index of the stamp word inside an entry.
const STAMP_WORD: usize = ENTRY_WORDS - 1;

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
    /// `session << 32 | (position + 1) mod 2^32`, written last with release ordering.
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
}

/// The stamp a producer writes for `pos` in `session`.
#[inline]
pub const fn stamp(session: u32, pos: u32) -> u64 {
    ((session as u64) << 32) | pos.wrapping_add(1) as u64
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

/// Producer-side counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Entries published.
    pub published: u64,
    /// Publish calls (batches) that wrote at least one entry.
    pub batches: u64,
    /// Times an entry could not be written because the ring was full.
    pub full: u64,
    /// Credit words rejected (wrong session ignored silently; this counts impossible values:
    /// more consumed than produced, or consumed going backwards).
    pub bad_credit: u64,
}

/// Writes entries into a ring homed in the peer's memory.
pub struct Producer<'a> {
    slots: &'a [AtomicU64],
    credit: &'a AtomicU64,
    mask: u32,
    entries: u32,
    session: u32,
    pos: u32,
    consumed: u32,
    stats: ProducerStats,
}

impl<'a> Producer<'a> {
    /// A producer over `slots` (the ring, `entries * 8` words, in the consumer's memory) and
    /// `credit` (the credit word, in this side's memory), starting at position 0 of `session`.
    pub fn new(
        slots: &'a [AtomicU64],
        credit: &'a AtomicU64,
        entries: u32,
        session: u32,
    ) -> Result<Self, RingError> {
        if slots.len() != ring_words(entries)? {
            return Err(RingError::BadLength);
        }
        Ok(Self {
            slots,
            credit,
            mask: entries - 1,
            entries,
            session,
            pos: 0,
            consumed: 0,
            stats: ProducerStats::default(),
        })
    }

    /// An absent ring (an optional subsystem the peer's table does not have): no slot, never
    /// room. `zero` is only ever read, and must read 0 (no session is 0).
    pub fn absent(zero: &'a AtomicU64) -> Self {
        Self {
            slots: &[],
            credit: zero,
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

    fn cached_free(&self) -> u32 {
        self.entries - self.pos.wrapping_sub(self.consumed)
    }

    /// Free slots, after reading the latest credits.
    pub fn free_slots(&mut self) -> u32 {
        self.refresh_credits();
        self.cached_free()
    }

    /// Publishes one entry. Returns `false` (and counts `full`) if the ring has no free slot.
    pub fn push(&mut self, body: &EntryBody) -> bool {
        self.push_batch(core::slice::from_ref(body)) == 1
    }

    /// Publishes as many of `bodies` as fit and returns how many. All bodies are written first,
    /// then the stamps from last to first, so the consumer sees the whole batch at once.
    pub fn push_batch(&mut self, bodies: &[EntryBody]) -> usize {
        if bodies.is_empty() {
            return 0;
        }
        let mut free = self.cached_free();
        if (free as usize) < bodies.len() {
            self.refresh_credits();
            free = self.cached_free();
        }
        let n = bodies.len().min(free as usize);
        if n < bodies.len() {
            self.stats.full += 1;
        }
        if n == 0 {
            return 0;
        }
        for (i, body) in bodies.iter().take(n).enumerate() {
            if let Some(slot) = self.slot(self.pos.wrapping_add(i as u32)) {
                if let Some(words) = slot.get(..STAMP_WORD) {
                    write_words(words, body.as_bytes());
                }
            }
        }
        for i in (0..n).rev() {
            let pos = self.pos.wrapping_add(i as u32);
            if let Some(w) = self.slot(pos).and_then(|s| s.get(STAMP_WORD)) {
                // Release: the body words above happen-before a consumer that acquires this.
                store_le(w, stamp(self.session, pos), Ordering::Release);
            }
        }
        self.pos = self.pos.wrapping_add(n as u32);
        self.stats.published += n as u64;
        self.stats.batches += 1;
        n
    }

    fn slot(&self, pos: u32) -> Option<&'a [AtomicU64]> {
        let i = (pos & self.mask) as usize * ENTRY_WORDS;
        self.slots.get(i..i + ENTRY_WORDS)
    }
}

/// Consumer-side counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Entries taken off the ring (valid stamps; their content is validated by the caller).
    pub consumed: u64,
    /// Slots skipped because their stamp had this session's tag but an impossible position
    /// (a corrupt or hostile producer).
    pub bad_stamp: u64,
    /// Credit words written to the producer.
    pub credit_writes: u64,
}

/// Reads entries from a ring homed in this side's memory.
pub struct Consumer<'a> {
    slots: &'a [AtomicU64],
    credit: &'a AtomicU64,
    mask: u32,
    entries: u32,
    session: u32,
    pos: u32,
    returned: u32,
    credit_batch: u32,
    stats: ConsumerStats,
}

/// What the consumer found in the next slot.
enum Slot {
    Empty,
    Entry(EntryBody),
    Corrupt,
}

impl<'a> Consumer<'a> {
    /// A consumer over `slots` (the ring, in this side's memory) and `credit` (the credit word,
    /// in the producer's memory), at position 0 of `session`. Credits are returned every
    /// `entries / 4` entries and whenever the ring is found empty.
    pub fn new(
        slots: &'a [AtomicU64],
        credit: &'a AtomicU64,
        entries: u32,
        session: u32,
    ) -> Result<Self, RingError> {
        if slots.len() != ring_words(entries)? {
            return Err(RingError::BadLength);
        }
        Ok(Self {
            slots,
            credit,
            mask: entries - 1,
            entries,
            session,
            pos: 0,
            returned: 0,
            credit_batch: (entries / 4).max(1),
            stats: ConsumerStats::default(),
        })
    }

    /// An absent ring (an optional subsystem the peer's table does not have): never holds an
    /// entry, so it never writes `credit`.
    pub fn absent(credit: &'a AtomicU64) -> Self {
        Self {
            slots: &[],
            credit,
            mask: 0,
            entries: 0,
            session: 0,
            pos: 0,
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

    fn slot(&self, pos: u32) -> Option<&'a [AtomicU64]> {
        let i = (pos & self.mask) as usize * ENTRY_WORDS;
        self.slots.get(i..i + ENTRY_WORDS)
    }

    fn peek(&self) -> Slot {
        let Some(slot) = self.slot(self.pos) else {
            return Slot::Empty;
        };
        let Some(stamp_word) = slot.get(STAMP_WORD) else {
            return Slot::Empty;
        };
        // Acquire: pairs with the producer's release store of the stamp.
        let raw = load_le(stamp_word, Ordering::Acquire);
        if raw == stamp(self.session, self.pos) {
            let mut body = EntryBody::ZERO;
            if let Some(words) = slot.get(..STAMP_WORD) {
                read_words(words, body.as_mut_bytes());
            }
            return Slot::Entry(body);
        }
        let previous_lap = stamp(self.session, self.pos.wrapping_sub(self.entries));
        if (raw >> 32) as u32 == self.session && raw != previous_lap {
            return Slot::Corrupt;
        }
        Slot::Empty
    }

    /// True if the next slot holds a published entry (does not consume it).
    pub fn has_entry(&self) -> bool {
        matches!(self.peek(), Slot::Entry(_))
    }

    /// Takes the next entry, if one is published. Corrupt slots are counted and skipped (at
    /// most one ring's worth per call, so a hostile producer cannot keep this call busy).
    /// Credits are returned when a batch is complete or when the ring is found empty.
    pub fn poll(&mut self) -> Option<EntryBody> {
        for _ in 0..self.entries {
            match self.peek() {
                Slot::Entry(body) => {
                    self.advance();
                    self.stats.consumed += 1;
                    return Some(body);
                }
                Slot::Corrupt => {
                    self.advance();
                    self.stats.bad_stamp += 1;
                }
                Slot::Empty => {
                    self.flush_credits();
                    return None;
                }
            }
        }
        None
    }

    /// Takes up to `out.len()` entries; returns how many were written to `out`.
    pub fn poll_batch(&mut self, out: &mut [EntryBody]) -> usize {
        let mut n = 0;
        for dst in out.iter_mut() {
            match self.poll() {
                Some(body) => {
                    *dst = body;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    fn advance(&mut self) {
        self.pos = self.pos.wrapping_add(1);
        if self.pos.wrapping_sub(self.returned) >= self.credit_batch {
            self.flush_credits();
        }
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

    fn mem(entries: u32) -> ([AtomicU64; 8 * 8], AtomicU64) {
        assert_eq!(entries, 8);
        (
            core::array::from_fn(|_| AtomicU64::new(0)),
            AtomicU64::new(0),
        )
    }

    #[test]
    fn an_absent_ring_is_always_empty_and_full() {
        let zero = AtomicU64::new(0);
        let mut p = Producer::absent(&zero);
        let mut c = Consumer::absent(&zero);
        assert_eq!(p.free_slots(), 0);
        assert_eq!(p.push_batch(&[EntryBody::ZERO]), 0);
        assert!(!c.has_entry());
        assert!(c.poll().is_none());
        c.flush_credits();
        c.reset(7);
        assert_eq!(load_le(&zero, Ordering::Relaxed), 0, "never written");
    }

    #[test]
    fn fill_drain_wrap() {
        let (slots, credit) = mem(8);
        let mut p = Producer::new(&slots, &credit, 8, 7).unwrap();
        let mut c = Consumer::new(&slots, &credit, 8, 7).unwrap();
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
    fn old_session_entries_are_invisible() {
        let (slots, credit) = mem(8);
        let mut p = Producer::new(&slots, &credit, 8, 1).unwrap();
        assert!(p.push(&EntryBody::new(1, 5, &[])));
        let mut c = Consumer::new(&slots, &credit, 8, 2).unwrap();
        assert!(c.poll().is_none());
        assert_eq!(c.stats().bad_stamp, 0);
        p.reset(2);
        assert!(p.push(&EntryBody::new(1, 6, &[])));
        assert_eq!(c.poll().unwrap().aux.get(), 6);
    }

    #[test]
    fn corrupt_stamp_is_skipped() {
        let (slots, credit) = mem(8);
        let mut c = Consumer::new(&slots, &credit, 8, 3).unwrap();
        // Slot 0 claims position 5 of the current session: impossible, so corrupt.
        slots[STAMP_WORD].store(stamp(3, 5).to_le(), Ordering::Relaxed);
        // Slot 1 holds a proper entry for position 1.
        slots[ENTRY_WORDS + STAMP_WORD].store(stamp(3, 1).to_le(), Ordering::Relaxed);
        assert!(c.poll().is_some());
        assert_eq!(c.stats().bad_stamp, 1);
        assert_eq!(c.stats().consumed, 1);
        assert_eq!(c.position(), 2);
        assert!(c.poll().is_none());
    }

    #[test]
    fn bogus_credit_is_rejected() {
        let (slots, credit) = mem(8);
        let mut p = Producer::new(&slots, &credit, 8, 4).unwrap();
        credit.store(super::credit(4, 100).to_le(), Ordering::Relaxed);
        assert_eq!(p.free_slots(), 8);
        assert_eq!(p.stats().bad_credit, 1);
    }
}
