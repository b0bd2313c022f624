//! Subsystems declared once, as data: each subsystem (link test, scheduling, memory, ...) is a
//! [`Subsystem`] descriptor — its ring pair, its blocks (size and home side) and the doorbell
//! vectors it needs — and [`SUBSYSTEMS`] registers them. Everything else is derived from that
//! table (`docs/abi.md`, "Subsystems"):
//!
//! - the layout table and every offset ([`crate::layout::Layout::v1`] walks [`KINDS`]);
//! - the channels of an endpoint ([`crate::endpoint::Channel`] `i` is subsystem `i`);
//! - the doorbell vectors ([`channel_vector`], [`extra_vector_base`]).
//!
//! Adding a subsystem: a module with its descriptor and messages, and one line in
//! [`SUBSYSTEMS`], appended at the end (so every earlier offset, channel and vector stays
//! where it was). A peer that does not know a subsystem skips its kinds in the layout table.

use crate::layout::{Kind, Side, REGION_ALIGN};

/// A block (anything that is not a ring) a subsystem places in the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDesc {
    /// Layout kind.
    pub kind: Kind,
    /// Name for logs and the spec.
    pub name: &'static str,
    /// The side whose memory holds it (the other side writes it).
    pub home: Side,
    /// Bytes (a multiple of 4 KiB).
    pub size: usize,
    /// Readers accept a table without it (added by a minor version).
    pub optional: bool,
}

/// One ring of a subsystem's pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingDesc {
    /// Layout kind.
    pub kind: Kind,
    /// Name for logs and the spec.
    pub name: &'static str,
    /// Readers accept a table without it (a subsystem added by a minor version).
    pub optional: bool,
}

/// One subsystem: a ring each way, its blocks, its doorbell vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subsystem {
    /// Short name (`echo`, `sched`, ...).
    pub name: &'static str,
    /// Host→IPU ring (home IPU, written by the host).
    pub to_ipu: RingDesc,
    /// IPU→host ring (home host, written by the IPU).
    pub to_host: RingDesc,
    /// Blocks, in placement order within their home half.
    pub blocks: &'static [BlockDesc],
    /// Doorbell vectors the subsystem uses beyond its channel vector (scheduling: one per host
    /// CPU), numbered after every channel vector ([`extra_vector_base`]). Only the last
    /// subsystem with extra vectors may grow.
    pub extra_vectors: u16,
}

/// Every subsystem, in registration order: index = channel number. Append only.
pub const SUBSYSTEMS: [Subsystem; 4] = [
    crate::msg::LINK_TEST,
    crate::sched::SCHED,
    crate::mem::MEM,
    crate::net::NET,
];

/// Channels (one per subsystem).
pub const CHANNELS: usize = SUBSYSTEMS.len();

/// What the layout knows of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// The kind.
    pub kind: Kind,
    /// Name for logs.
    pub name: &'static str,
    /// Home side.
    pub home: Side,
    /// Bytes for blocks; 0 for rings (their size comes from the ring entries).
    pub size: usize,
    /// True for rings.
    pub ring: bool,
    /// Readers accept a table without it.
    pub optional: bool,
    /// The channel (subsystem index) for rings; `u8::MAX` otherwise.
    pub channel: u8,
}

const fn block(kind: Kind, name: &'static str, home: Side) -> KindInfo {
    KindInfo {
        kind,
        name,
        home,
        size: REGION_ALIGN,
        ring: false,
        optional: false,
        channel: u8::MAX,
    }
}

/// The link's own kinds on the host's half (header first), then on the IPU's half.
const CORE_HOST: [KindInfo; 3] = [
    block(Kind::Header, "Header", Side::Host),
    block(Kind::IpuStatus, "IpuStatus", Side::Host),
    block(Kind::CreditsFromIpu, "CreditsFromIpu", Side::Host),
];
const CORE_IPU: [KindInfo; 2] = [
    block(Kind::HostStatus, "HostStatus", Side::Ipu),
    block(Kind::CreditsFromHost, "CreditsFromHost", Side::Ipu),
];

const fn kind_count() -> usize {
    let mut n = CORE_HOST.len() + CORE_IPU.len();
    let mut i = 0;
    while i < CHANNELS {
        n += 2 + SUBSYSTEMS[i].blocks.len();
        i += 1;
    }
    n
}

/// Number of kinds the registered subsystems and the link use.
pub const NKINDS: usize = kind_count();

const fn ring(r: RingDesc, home: Side, channel: usize) -> KindInfo {
    KindInfo {
        kind: r.kind,
        name: r.name,
        home,
        size: 0,
        ring: true,
        optional: r.optional,
        channel: channel as u8,
    }
}

/// One half of the table: its core kinds, then per subsystem its ring homed there and its
/// blocks homed there.
const fn half(out: &mut [KindInfo; NKINDS], mut n: usize, home: Side) -> usize {
    let core: &[KindInfo] = match home {
        Side::Host => &CORE_HOST,
        Side::Ipu => &CORE_IPU,
    };
    let mut i = 0;
    while i < core.len() {
        out[n] = core[i];
        n += 1;
        i += 1;
    }
    let mut s = 0;
    while s < CHANNELS {
        let sub = &SUBSYSTEMS[s];
        out[n] = match home {
            Side::Host => ring(sub.to_host, Side::Host, s),
            Side::Ipu => ring(sub.to_ipu, Side::Ipu, s),
        };
        n += 1;
        let mut b = 0;
        while b < sub.blocks.len() {
            let d = sub.blocks[b];
            if d.home as u8 == home as u8 {
                out[n] = KindInfo {
                    kind: d.kind,
                    name: d.name,
                    home: d.home,
                    size: d.size,
                    ring: false,
                    optional: d.optional,
                    channel: u8::MAX,
                };
                n += 1;
            }
            b += 1;
        }
        s += 1;
    }
    n
}

const fn build_kinds() -> [KindInfo; NKINDS] {
    let mut out = [CORE_HOST[0]; NKINDS];
    let n = half(&mut out, 0, Side::Host);
    let n = half(&mut out, n, Side::Ipu);
    assert!(n == NKINDS, "a block's home must be Host or Ipu");
    out
}

/// Every kind, in table (and placement) order: the host-homed half, then the IPU-homed half.
pub const KINDS: [KindInfo; NKINDS] = build_kinds();

/// What the layout knows of `kind` (`None`: a kind this build does not know).
pub fn kind_info(kind: Kind) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The doorbell vector of channel `ch` (the one that wakes either side's consumer of its
/// rings): control is vector 0, then every channel in order takes one (channel `ch`: vector
/// `1 + ch`), then come the extra vectors of each subsystem in order. Channel vectors first,
/// so every channel's vector stays below 64 however many extras a subsystem has (the IPU's
/// interrupt controller and the wait masks hold 64 vectors).
pub const fn channel_vector(ch: usize) -> u16 {
    1 + ch as u16
}

/// The first of channel `ch`'s extra vectors (after every channel vector and the extras of
/// the channels before it).
pub const fn extra_vector_base(ch: usize) -> u16 {
    let mut v = 1 + CHANNELS as u16;
    let mut i = 0;
    while i < ch && i < CHANNELS {
        v += SUBSYSTEMS[i].extra_vectors;
        i += 1;
    }
    v
}

/// Channels whose channel vector every transport must provide: all of them (channel vectors
/// come first, so they stay few). A transport with fewer vectors is refused (`MIN_VECTORS`);
/// the layout still marks a channel whose vector is missing `VECTOR_NONE` (its consumers poll),
/// so a reader can cope with a table from a transport it would not have chosen.
pub const DOORBELL_CHANNELS: usize = CHANNELS;

/// Doorbell vectors a transport must provide for every channel vector (extras are optional:
/// a subsystem uses those the transport has).
pub const MIN_VECTORS: u32 = channel_vector(CHANNELS - 1) as u32 + 1;

/// Bytes of `home`'s half for rings of `ring_entries` entries (unaligned to a power of two).
pub const fn half_size(home: Side, ring_entries: u32) -> usize {
    let ring = align_up(
        ring_entries as usize * crate::ring::ENTRY_SIZE,
        REGION_ALIGN,
    );
    let mut total = 0;
    let mut i = 0;
    while i < NKINDS {
        let k = &KINDS[i];
        if k.home as u8 == home as u8 {
            total += if k.ring {
                ring
            } else {
                align_up(k.size, REGION_ALIGN)
            };
        }
        i += 1;
    }
    total
}

/// Rounds `v` up to a multiple of `a` (a power of two).
pub const fn align_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_channels_follow_registration_order() {
        assert_eq!(channel_vector(0), 1, "link test");
        assert_eq!(channel_vector(1), 2, "scheduling");
        assert_eq!(channel_vector(2), 3, "memory");
        assert_eq!(MIN_VECTORS, CHANNELS as u32 + 1);
        // The extras (scheduling: one per host CPU) follow every channel vector.
        assert_eq!(extra_vector_base(1), crate::sched::CPU_VECTOR_BASE);
        assert_eq!(extra_vector_base(1), 1 + CHANNELS as u16);
        assert_eq!(extra_vector_base(2), 1 + CHANNELS as u16 + 64);
    }

    #[test]
    fn kinds_are_unique_and_rings_belong_to_their_channel() {
        for (i, a) in KINDS.iter().enumerate() {
            assert!(KINDS[i + 1..].iter().all(|b| b.kind != a.kind), "{a:?}");
            if a.ring {
                let sub = &SUBSYSTEMS[a.channel as usize];
                let r = if a.home == Side::Ipu {
                    sub.to_ipu
                } else {
                    sub.to_host
                };
                assert_eq!(r.kind, a.kind);
            }
        }
        assert_eq!(KINDS[0].kind, Kind::Header);
    }
}
