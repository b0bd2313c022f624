//! How full a ring is, seen from outside both ends: the producer's position is the highest
//! stamp of the current session among the slots, the consumer's is its credit word. Both are
//! read-only loads of words the host can read locally in emulation (and, on a real IPU, of the
//! rings homed on the host).

use std::sync::atomic::Ordering;

use wave_abi::ring::ENTRY_WORDS;
use wave_abi::{Kind, Layout, SharedRegion};

/// One ring's level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingLevel {
    /// Slots.
    pub capacity: u32,
    /// Entries published in this session (the producer's position).
    pub produced: u32,
    /// Entries the consumer credited back in this session.
    pub credited: u32,
    /// Published and not yet credited (0 if the words are inconsistent).
    pub occupancy: u32,
}

/// Reads ring `kind`'s level in session `session` (absent ring: all zero).
pub fn scan_ring(
    region: &SharedRegion<'_>,
    layout: &Layout,
    kind: Kind,
    session: u32,
) -> RingLevel {
    let p = layout.place(kind);
    if p.entries == 0 || p.size == 0 {
        return RingLevel::default();
    }
    let Ok(words) = region.words(p.offset, p.entries as usize * ENTRY_WORDS * 8) else {
        return RingLevel::default();
    };
    let produced = words
        .chunks_exact(ENTRY_WORDS)
        .map(|e| u64::from_le(e[ENTRY_WORDS - 1].load(Ordering::Acquire)))
        .filter(|s| (s >> 32) as u32 == session)
        .map(|s| s as u32)
        .max()
        .unwrap_or(0);
    let credited = region
        .word(p.credit_offset)
        .map(|w| u64::from_le(w.load(Ordering::Acquire)))
        .ok()
        .filter(|c| (c >> 32) as u32 == session)
        .map_or(0, |c| c as u32);
    let occupancy = produced
        .checked_sub(credited)
        .filter(|o| *o <= p.entries)
        .unwrap_or(0);
    RingLevel {
        capacity: p.entries,
        produced,
        credited,
        occupancy,
    }
}
