//! How full a ring is, seen from outside both ends: the producer's position is its published
//! word (`session << 32 | end`, ABI 2.0, in the consumer's credits block), the consumer's is its
//! credit word. Both are read-only loads of words the host can read locally in emulation (and,
//! on a real IPU, of the rings homed on the host).

use std::sync::atomic::Ordering;

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
    let produced = region
        .word(layout.published_offset(kind))
        .map(|w| u64::from_le(w.load(Ordering::Acquire)))
        .ok()
        .filter(|w| (w >> 32) as u32 == session)
        .map_or(0, |w| w as u32);
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
