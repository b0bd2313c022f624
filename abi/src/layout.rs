//! The region header and layout table: where everything lives, who owns it, who writes it.
//!
//! The host writes the header once, before the IPU can see the region (the ivshmem server does
//! it before handing the memfd to QEMU), with the magic stored last. The IPU reads it once at
//! attach (a slow-path read across the link) and validates every field with [`Layout::read`]
//! before trusting any offset. See `docs/abi.md`, "Region header" and "Layout table".

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::region::{load_le, store_le, RegionError, SharedRegion};
use crate::ring::{ring_words, ENTRY_SIZE};
use crate::subsystem::{align_up, channel_vector, half_size, kind_info, KINDS, NKINDS};
use crate::sync::Ordering;
use crate::{ABI_MAJOR, ABI_MINOR};

/// `b"WAVELINK"`, the first 8 bytes of the region.
pub const MAGIC: [u8; 8] = *b"WAVELINK";
/// Byte offset of the layout table inside the header.
pub const LAYOUT_TABLE_OFFSET: usize = 0x40;
/// Size of one layout table entry.
pub const LAYOUT_ENTRY_SIZE: usize = 32;
/// Most layout entries a reader accepts.
pub const MAX_LAYOUT_ENTRIES: usize = 32;
/// The IPU status block is at this offset in every ABI version, so that an IPU that cannot
/// parse the header can still report why.
pub const IPU_STATUS_OFFSET: usize = 0x1000;
/// Alignment of every region in the layout.
pub const REGION_ALIGN: usize = 0x1000;
/// Ring entries in the default (v1.0) layout.
pub const DEFAULT_RING_ENTRIES: u32 = 512;
/// Doorbell vectors a transport must provide (control, then the channel vectors of the first
/// `subsystem::DOORBELL_CHANNELS` channels with their extras in between); later channels whose
/// vector it lacks are doorbell-less. Derived from the subsystem table.
pub const MIN_VECTORS: u32 = crate::subsystem::MIN_VECTORS;
/// Doorbell vector: link control (a side became ready, restarted or stopped).
pub const VECTOR_CONTROL: u16 = 0;
/// Doorbell vector: link-test channel (derived from the subsystem table).
pub const VECTOR_LINK_TEST: u16 = crate::subsystem::channel_vector(0);
/// Doorbell vector: scheduling channel (derived from the subsystem table).
pub const VECTOR_SCHED: u16 = crate::subsystem::channel_vector(1);
/// "No doorbell" in a layout entry's vector field.
pub const VECTOR_NONE: u16 = 0xFFFF;
/// Offset, inside a credits block, of the first published word (credit words lie below it).
pub const PUBLISHED_BASE: usize = 0x800;

/// The credits blocks of a ring written by `kind.writer()`: the one holding its credit word
/// (homed on the producer) and the one holding its published word (homed on the consumer).
fn credit_blocks(kind: Kind) -> (Kind, Kind) {
    match kind.writer() {
        Side::Host => (Kind::CreditsFromIpu, Kind::CreditsFromHost),
        Side::Ipu => (Kind::CreditsFromHost, Kind::CreditsFromIpu),
    }
}

/// A side of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    /// The host (ivshmem peer 0).
    Host = 1,
    /// The IPU (ivshmem peer 1).
    Ipu = 2,
}

impl Side {
    /// The other side.
    pub const fn peer(self) -> Side {
        match self {
            Side::Host => Side::Ipu,
            Side::Ipu => Side::Host,
        }
    }
    fn from_u8(v: u8) -> Option<Side> {
        match v {
            1 => Some(Side::Host),
            2 => Some(Side::Ipu),
            _ => None,
        }
    }
}

/// What a layout entry describes: the link's own blocks (below) or a subsystem's rings and
/// blocks (declared in its descriptor, [`crate::subsystem`]). Open: a kind this build does
/// not know is skipped by readers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind(pub u16);

#[allow(non_upper_case_globals)]
impl Kind {
    /// The header and layout table. Home host, written by host.
    pub const Header: Kind = Kind(1);
    /// Host state, epoch, heartbeat, wake request, counters. Home IPU, written by host.
    pub const HostStatus: Kind = Kind(2);
    /// IPU state, epoch, heartbeat, wake request, counters. Home host, written by IPU.
    pub const IpuStatus: Kind = Kind(3);
    /// Credit words for host→IPU rings. Home host, written by IPU.
    pub const CreditsFromIpu: Kind = Kind(4);
    /// Credit words for IPU→host rings. Home IPU, written by host.
    pub const CreditsFromHost: Kind = Kind(5);
    /// Scheduling session configuration (the scheduling subsystem's block).
    pub const SchedConfig: Kind = Kind(6);
    /// Per-CPU transaction slots (the scheduling subsystem's block).
    pub const CpuSlots: Kind = Kind(7);
    /// Link-test requests, host→IPU (the link-test subsystem's ring).
    pub const RingTestRequest: Kind = Kind(0x10);
    /// Link-test responses, IPU→host (the link-test subsystem's ring).
    pub const RingTestResponse: Kind = Kind(0x11);
    /// Scheduling events, host→IPU (the scheduling subsystem's ring).
    pub const RingEvents: Kind = Kind(0x12);
    /// Scheduling decisions, IPU→host (the scheduling subsystem's ring).
    pub const RingDecisions: Kind = Kind(0x13);

    /// Decodes a table kind; `None` for kinds this build does not know (readers skip them).
    pub fn from_u16(v: u16) -> Option<Kind> {
        kind_info(Kind(v)).map(|k| k.kind)
    }
    /// The wire value.
    pub const fn raw(self) -> u16 {
        self.0
    }
    /// The side whose memory holds it (the side that reads it on the fast path).
    pub fn home(self) -> Side {
        kind_info(self).map_or(Side::Host, |k| k.home)
    }
    /// The only side that writes it.
    pub fn writer(self) -> Side {
        if self == Kind::Header {
            Side::Host
        } else {
            self.home().peer()
        }
    }
    /// Kinds a reader accepts a table without (added by a minor version after 1.0); their
    /// [`Layout::place`] then has size 0.
    pub fn optional(self) -> bool {
        kind_info(self).is_some_and(|k| k.optional)
    }
    /// True for rings.
    pub fn is_ring(self) -> bool {
        kind_info(self).is_some_and(|k| k.ring)
    }
    fn index(self) -> Option<usize> {
        KINDS.iter().position(|k| k.kind == self)
    }
}

impl core::fmt::Debug for Kind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match kind_info(*self) {
            Some(k) => f.write_str(k.name),
            None => write!(f, "Kind({:#x})", self.0),
        }
    }
}

/// The region header as it sits at offset 0.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RawHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// ABI major version: readers reject any other major.
    pub abi_major: U16,
    /// ABI minor version: readers accept any minor (additions only).
    pub abi_minor: U16,
    /// Bytes of header including the layout table.
    pub header_size: U32,
    /// Size of the whole shared region in bytes.
    pub total_size: U64,
    /// Offset of the layout table (0x40 in v1).
    pub layout_offset: U32,
    /// Number of layout entries.
    pub layout_count: U32,
    /// Doorbell vectors per peer the transport provides.
    pub vectors: U32,
    /// ivshmem peer id of the host (0).
    pub host_peer: U16,
    /// ivshmem peer id of the IPU (1).
    pub ipu_peer: U16,
    /// Reserved, 0.
    pub flags: U64,
    /// Reserved, 0.
    pub reserved: [u8; 16],
}

/// One layout table entry.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RawLayoutEntry {
    /// [`Kind`] as u16.
    pub kind: U16,
    /// Home side (1 host, 2 IPU).
    pub home: u8,
    /// Writer side (1 host, 2 IPU).
    pub writer: u8,
    /// Doorbell vector that wakes the consumer of this ring, or 0xFFFF.
    pub vector: U16,
    /// Entry size for rings (64), 0 otherwise.
    pub entry_size: U16,
    /// Byte offset from the region start.
    pub offset: U32,
    /// Byte size.
    pub size: U32,
    /// Ring entries (power of two), 0 for non-rings.
    pub entries: U32,
    /// Rings: byte offset of this ring's credit word (in the producer's home); 0 otherwise.
    pub credit_offset: U32,
    /// Reserved, 0.
    pub reserved: U64,
}

const _: () = assert!(core::mem::size_of::<RawHeader>() == LAYOUT_TABLE_OFFSET);
const _: () = assert!(core::mem::offset_of!(RawHeader, abi_major) == 0x08);
const _: () = assert!(core::mem::offset_of!(RawHeader, abi_minor) == 0x0A);
const _: () = assert!(core::mem::offset_of!(RawHeader, header_size) == 0x0C);
const _: () = assert!(core::mem::offset_of!(RawHeader, total_size) == 0x10);
const _: () = assert!(core::mem::offset_of!(RawHeader, layout_offset) == 0x18);
const _: () = assert!(core::mem::offset_of!(RawHeader, layout_count) == 0x1C);
const _: () = assert!(core::mem::offset_of!(RawHeader, vectors) == 0x20);
const _: () = assert!(core::mem::offset_of!(RawHeader, host_peer) == 0x24);
const _: () = assert!(core::mem::offset_of!(RawHeader, ipu_peer) == 0x26);
const _: () = assert!(core::mem::offset_of!(RawHeader, flags) == 0x28);
const _: () = assert!(core::mem::offset_of!(RawHeader, reserved) == 0x30);
const _: () = assert!(core::mem::size_of::<RawLayoutEntry>() == LAYOUT_ENTRY_SIZE);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, home) == 0x02);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, writer) == 0x03);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, vector) == 0x04);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, entry_size) == 0x06);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, offset) == 0x08);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, size) == 0x0C);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, entries) == 0x10);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, credit_offset) == 0x14);
const _: () = assert!(core::mem::offset_of!(RawLayoutEntry, reserved) == 0x18);
const _: () = assert!(LAYOUT_TABLE_OFFSET + NKINDS * LAYOUT_ENTRY_SIZE <= REGION_ALIGN);
const _: () = assert!(NKINDS <= MAX_LAYOUT_ENTRIES);

/// A validated placement of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// What it is.
    pub kind: Kind,
    /// Byte offset.
    pub offset: usize,
    /// Byte size.
    pub size: usize,
    /// Ring entries (0 for non-rings).
    pub entries: u32,
    /// Credit word offset (rings only).
    pub credit_offset: usize,
    /// Doorbell vector that wakes this ring's consumer ([`VECTOR_NONE`] for non-rings).
    pub vector: u16,
}

impl Placement {
    const EMPTY: Placement = Placement {
        kind: Kind::Header,
        offset: 0,
        size: 0,
        entries: 0,
        credit_offset: 0,
        vector: VECTOR_NONE,
    };
}

/// A complete, validated layout: a plain copy in local memory, never re-read from the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Size of the shared region.
    pub total_size: usize,
    /// Doorbell vectors per peer.
    pub vectors: u32,
    /// Minor version the writer used.
    pub abi_minor: u16,
    places: [Placement; NKINDS],
}

/// Why a header/layout is rejected. Every variant says what was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The region is too small or its view is unusable.
    Region(RegionError),
    /// The magic is not `WAVELINK` (the host has not initialised the region yet, or this is not
    /// a Wave region).
    BadMagic([u8; 8]),
    /// The header's ABI major differs from ours.
    Version {
        /// Major found in the header.
        major: u16,
        /// Minor found in the header.
        minor: u16,
    },
    /// `total_size` is larger than the mapped region or not a multiple of 4 KiB.
    TotalSize {
        /// Header's claim.
        claimed: u64,
        /// What is mapped.
        mapped: usize,
    },
    /// Table offset/count out of range.
    BadTable,
    /// Fewer doorbell vectors than the layout uses.
    TooFewVectors(u32),
    /// A table entry is malformed (bad home/writer, bounds, alignment, ring geometry, credit).
    BadEntry {
        /// Index in the table.
        index: usize,
        /// Kind, as found.
        kind: u16,
    },
    /// A kind appears twice.
    Duplicate(u16),
    /// A required kind is missing.
    Missing(u16),
    /// Two regions overlap.
    Overlap(u16, u16),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::Region(e) => write!(f, "{e}"),
            LayoutError::BadMagic(m) => {
                write!(f, "region magic is {m:02x?}, expected \"WAVELINK\" (host not ready?)")
            }
            LayoutError::Version { major, minor } => write!(
                f,
                "ABI version mismatch: region is {major}.{minor}, this side speaks {ABI_MAJOR}.{ABI_MINOR}"
            ),
            LayoutError::TotalSize { claimed, mapped } => write!(
                f,
                "header claims {claimed} bytes but {mapped} bytes are mapped"
            ),
            LayoutError::BadTable => write!(f, "layout table offset/count out of range"),
            LayoutError::TooFewVectors(n) => write!(
                f,
                "the link has {n} doorbell vectors, the layout needs at least {MIN_VECTORS}"
            ),
            LayoutError::BadEntry { index, kind } => {
                write!(f, "layout entry {index} (kind {kind:#x}) is invalid")
            }
            LayoutError::Duplicate(k) => write!(f, "layout kind {k:#x} appears twice"),
            LayoutError::Missing(k) => write!(f, "layout kind {k:#x} is missing"),
            LayoutError::Overlap(a, b) => write!(f, "layout kinds {a:#x} and {b:#x} overlap"),
        }
    }
}

impl From<RegionError> for LayoutError {
    fn from(e: RegionError) -> Self {
        LayoutError::Region(e)
    }
}

impl Layout {
    /// The layout of the registered subsystems for rings of `ring_entries` entries in a
    /// region of `total_size` bytes: the host-homed kinds from offset 0, the IPU-homed ones
    /// from the middle (`total_size / 2` of the smallest region), each in [`KINDS`] order,
    /// 4 KiB aligned. Ring `i`'s credit word is word `8 i` of the credit block in its
    /// producer's memory; its vector is its channel's ([`crate::subsystem::channel_vector`]).
    pub fn v1(ring_entries: u32, total_size: usize, vectors: u32) -> Result<Layout, LayoutError> {
        ring_words(ring_entries).map_err(|_| LayoutError::BadEntry {
            index: 0,
            kind: Kind::RingTestRequest.0,
        })?;
        if vectors < MIN_VECTORS {
            return Err(LayoutError::TooFewVectors(vectors));
        }
        let need = Self::min_size(ring_entries);
        if total_size < need || !total_size.is_multiple_of(REGION_ALIGN) {
            return Err(LayoutError::Region(RegionError::TooSmall {
                have: total_size,
                need,
            }));
        }
        let ring_size = ring_entries as usize * ENTRY_SIZE;
        let mut cursor = [0, need / 2]; // host half, IPU half
        let mut places = [Placement::EMPTY; NKINDS];
        for (p, k) in places.iter_mut().zip(KINDS.iter()) {
            let c = &mut cursor[(k.home == Side::Ipu) as usize];
            let size = if k.ring { ring_size } else { k.size };
            *p = Placement {
                kind: k.kind,
                offset: *c,
                size,
                entries: if k.ring { ring_entries } else { 0 },
                credit_offset: 0,
                vector: if k.ring && (channel_vector(k.channel as usize) as u32) < vectors {
                    channel_vector(k.channel as usize)
                } else {
                    VECTOR_NONE
                },
            };
            *c += align_up(size, REGION_ALIGN);
        }
        let mut layout = Layout {
            total_size,
            vectors,
            abi_minor: ABI_MINOR,
            places,
        };
        for k in KINDS.iter().filter(|k| k.ring) {
            let block = match k.home {
                Side::Ipu => layout.place(Kind::CreditsFromIpu),
                Side::Host => layout.place(Kind::CreditsFromHost),
            };
            if let Some(i) = k.kind.index() {
                layout.places[i].credit_offset = block.offset + 64 * k.channel as usize;
            }
        }
        Ok(layout)
    }

    /// Smallest region (a power of two) that holds the layout with `ring_entries` rings.
    pub const fn min_size(ring_entries: u32) -> usize {
        let host = half_size(Side::Host, ring_entries);
        let ipu = half_size(Side::Ipu, ring_entries);
        let half = if host > ipu { host } else { ipu };
        align_up(half, REGION_ALIGN).next_power_of_two() * 2
    }

    /// Byte offset of ring `kind`'s published word (0 for a kind that is not a ring in this
    /// table): in the credits block homed on the ring's consumer, at the offset its credit
    /// word has inside the producer's credits block plus [`PUBLISHED_BASE`] (`docs/abi.md` §6).
    pub fn published_offset(&self, kind: Kind) -> usize {
        let p = self.place(kind);
        if !kind.is_ring() || p.size == 0 {
            return 0;
        }
        let (credits, published) = credit_blocks(kind);
        let within = p.credit_offset.wrapping_sub(self.place(credits).offset);
        self.place(published).offset + PUBLISHED_BASE + within
    }

    /// Where `kind` lives (size 0 if the table does not have it).
    pub fn place(&self, kind: Kind) -> Placement {
        kind.index()
            .and_then(|i| self.places.get(i))
            .filter(|p| p.size > 0)
            .copied()
            .unwrap_or(Placement {
                kind,
                ..Placement::EMPTY
            })
    }

    /// All placements, in table order.
    pub fn places(&self) -> &[Placement] {
        &self.places
    }

    /// Host side: zeroes the region, writes the layout table and header, and stores the magic
    /// last (release). Call only while the IPU cannot be using the region.
    pub fn write(&self, region: &SharedRegion<'_>) -> Result<(), LayoutError> {
        if region.len() < self.total_size {
            return Err(LayoutError::Region(RegionError::TooSmall {
                have: region.len(),
                need: self.total_size,
            }));
        }
        // Zero only what the layout uses (docs/abi.md §7.1): the header page and every block.
        // The rest of the region is never read, so a 1 GiB region costs no more than 1 MiB.
        region.zero(0, REGION_ALIGN)?;
        for p in self.places.iter().filter(|p| p.size > 0) {
            region.zero(p.offset, p.size)?;
        }
        let mut table = [0u8; NKINDS * LAYOUT_ENTRY_SIZE];
        for (p, out) in self
            .places
            .iter()
            .zip(table.chunks_exact_mut(LAYOUT_ENTRY_SIZE))
        {
            let e = RawLayoutEntry {
                kind: U16::new(p.kind.0),
                home: p.kind.home() as u8,
                writer: p.kind.writer() as u8,
                vector: U16::new(p.vector),
                entry_size: U16::new(if p.kind.is_ring() {
                    ENTRY_SIZE as u16
                } else {
                    0
                }),
                offset: U32::new(p.offset as u32),
                size: U32::new(p.size as u32),
                entries: U32::new(p.entries),
                credit_offset: U32::new(p.credit_offset as u32),
                reserved: U64::ZERO,
            };
            out.copy_from_slice(e.as_bytes());
        }
        region.write_bytes(LAYOUT_TABLE_OFFSET, &table)?;
        let header = RawHeader {
            magic: MAGIC,
            abi_major: U16::new(ABI_MAJOR),
            abi_minor: U16::new(ABI_MINOR),
            header_size: U32::new((LAYOUT_TABLE_OFFSET + table.len()) as u32),
            total_size: U64::new(self.total_size as u64),
            layout_offset: U32::new(LAYOUT_TABLE_OFFSET as u32),
            layout_count: U32::new(NKINDS as u32),
            vectors: U32::new(self.vectors),
            host_peer: U16::new(0),
            ipu_peer: U16::new(1),
            flags: U64::ZERO,
            reserved: [0; 16],
        };
        let bytes = header.as_bytes();
        region.write_bytes(8, &bytes[8..])?;
        store_le(
            region.word(0)?,
            u64::from_le_bytes(MAGIC),
            Ordering::Release,
        );
        Ok(())
    }

    /// IPU side (and host self-check): reads and validates the header and table. Nothing in
    /// shared memory is trusted: every offset is bounds-, alignment- and overlap-checked, homes
    /// and writers must match the kind, rings must have sane geometry and credit words inside
    /// the producer's credit block. Unknown kinds (from a newer minor) are skipped.
    pub fn read(region: &SharedRegion<'_>) -> Result<Layout, LayoutError> {
        let magic = load_le(region.word(0)?, Ordering::Acquire).to_le_bytes();
        if magic != MAGIC {
            return Err(LayoutError::BadMagic(magic));
        }
        let mut hb = [0u8; LAYOUT_TABLE_OFFSET];
        region.read_bytes(0, &mut hb)?;
        let h = RawHeader::read_from_bytes(&hb).map_err(|_| LayoutError::BadTable)?;
        if h.abi_major.get() != ABI_MAJOR {
            return Err(LayoutError::Version {
                major: h.abi_major.get(),
                minor: h.abi_minor.get(),
            });
        }
        let total = h.total_size.get();
        if total > region.len() as u64 || total % REGION_ALIGN as u64 != 0 || total == 0 {
            return Err(LayoutError::TotalSize {
                claimed: total,
                mapped: region.len(),
            });
        }
        let total = total as usize;
        let count = h.layout_count.get() as usize;
        let toff = h.layout_offset.get() as usize;
        // Reserved header fields must be 0 (docs/abi.md §3): a writer that sets them speaks a
        // contract this reader does not know.
        if h.flags.get() != 0 || h.reserved != [0; 16] {
            return Err(LayoutError::BadTable);
        }
        if count > MAX_LAYOUT_ENTRIES
            || toff < LAYOUT_TABLE_OFFSET
            || !toff.is_multiple_of(8)
            || toff + count * LAYOUT_ENTRY_SIZE > REGION_ALIGN
        {
            return Err(LayoutError::BadTable);
        }
        if h.vectors.get() < MIN_VECTORS {
            return Err(LayoutError::TooFewVectors(h.vectors.get()));
        }
        let mut places = [Placement::EMPTY; NKINDS];
        let mut seen = [false; NKINDS];
        for index in 0..count {
            let mut eb = [0u8; LAYOUT_ENTRY_SIZE];
            region.read_bytes(toff + index * LAYOUT_ENTRY_SIZE, &mut eb)?;
            let e = RawLayoutEntry::read_from_bytes(&eb).map_err(|_| LayoutError::BadTable)?;
            let raw_kind = e.kind.get();
            let Some(index) = Kind(raw_kind).index() else {
                continue; // newer minor: not ours to use
            };
            let kind = Kind(raw_kind);
            let bad = LayoutError::BadEntry {
                index,
                kind: raw_kind,
            };
            if seen[index] {
                return Err(LayoutError::Duplicate(raw_kind));
            }
            let offset = e.offset.get() as usize;
            let size = e.size.get() as usize;
            let home_ok = Side::from_u8(e.home) == Some(kind.home());
            let writer_ok = Side::from_u8(e.writer) == Some(kind.writer());
            let bounds_ok = offset.is_multiple_of(REGION_ALIGN)
                && size >= REGION_ALIGN.min(64)
                && size.is_multiple_of(64)
                && offset.checked_add(size).is_some_and(|end| end <= total);
            if !(home_ok && writer_ok && bounds_ok && e.reserved.get() == 0) {
                return Err(bad);
            }
            let mut p = Placement {
                kind,
                offset,
                size,
                entries: 0,
                credit_offset: 0,
                vector: VECTOR_NONE,
            };
            if (kind == Kind::IpuStatus && offset != IPU_STATUS_OFFSET)
                || (kind == Kind::Header && offset != 0)
            {
                return Err(bad);
            }
            if kind.is_ring() {
                let entries = e.entries.get();
                let geometry_ok = e.entry_size.get() as usize == ENTRY_SIZE
                    && ring_words(entries).is_ok()
                    && entries as usize * ENTRY_SIZE == size
                    && ((e.vector.get() as u32) < h.vectors.get() || e.vector.get() == VECTOR_NONE);
                if !geometry_ok {
                    return Err(bad);
                }
                p.entries = entries;
                p.credit_offset = e.credit_offset.get() as usize;
                p.vector = e.vector.get();
            }
            places[index] = p;
            seen[index] = true;
        }
        for (i, k) in KINDS.iter().enumerate() {
            if !seen[i] && !k.optional {
                return Err(LayoutError::Missing(k.kind.0));
            }
        }
        for (i, a) in places.iter().enumerate() {
            for b in places.iter().skip(i + 1) {
                if a.size > 0
                    && b.size > 0
                    && a.offset < b.offset + b.size
                    && b.offset < a.offset + a.size
                {
                    return Err(LayoutError::Overlap(a.kind.0, b.kind.0));
                }
            }
        }
        // Credit words: 8-aligned, inside the credit block homed on the producer's side, and
        // distinct between rings.
        for (i, p) in places.iter().enumerate() {
            if !p.kind.is_ring() {
                continue;
            }
            let (credits, published) = credit_blocks(p.kind);
            let block_of = |k: Kind| k.index().and_then(|i| places.get(i));
            let Some(block) = block_of(credits) else {
                return Err(LayoutError::Missing(credits.0));
            };
            let Some(other) = block_of(published) else {
                return Err(LayoutError::Missing(published.0));
            };
            // The credit word lies below PUBLISHED_BASE, so that its published word (same
            // offset + PUBLISHED_BASE in the other block) fits in that block.
            let inside = p.credit_offset.is_multiple_of(8)
                && p.credit_offset >= block.offset
                && p.credit_offset + 8 <= block.offset + block.size.min(PUBLISHED_BASE)
                && other.size >= 2 * PUBLISHED_BASE;
            let clash = places
                .iter()
                .skip(i + 1)
                .any(|q| q.kind.is_ring() && q.credit_offset == p.credit_offset);
            if !inside || clash {
                return Err(LayoutError::BadEntry {
                    index: i,
                    kind: p.kind.0,
                });
            }
        }
        Ok(Layout {
            total_size: total,
            vectors: h.vectors.get(),
            abi_minor: h.abi_minor.get(),
            places,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The default layout, exactly as tabulated in `docs/abi.md` ("Layout, 2.0 default").
    #[test]
    fn default_layout_matches_the_spec_table() {
        assert_eq!(Layout::min_size(DEFAULT_RING_ENTRIES), 0x80000);
        let l = Layout::v1(DEFAULT_RING_ENTRIES, 0x10_0000, MIN_VECTORS).unwrap();
        let expect: [(Kind, usize, usize, usize, u16); 16] = [
            (Kind::Header, 0x0_0000, 0x1000, 0, VECTOR_NONE),
            (Kind::IpuStatus, 0x0_1000, 0x1000, 0, VECTOR_NONE),
            (Kind::CreditsFromIpu, 0x0_2000, 0x1000, 0, VECTOR_NONE),
            (Kind::RingTestResponse, 0x0_3000, 0x8000, 0x4_1000, 1),
            (Kind::RingDecisions, 0x0_B000, 0x8000, 0x4_1040, 2),
            (Kind::CpuSlots, 0x1_3000, 0x1000, 0, VECTOR_NONE),
            (
                crate::mem::RING_MEM_DECISIONS,
                0x1_4000,
                0x8000,
                0x4_1080,
                3,
            ),
            (
                crate::net::KIND_RING_NET_DECISIONS,
                0x1_C000,
                0x8000,
                0x4_10C0,
                4,
            ),
            (Kind::HostStatus, 0x4_0000, 0x1000, 0, VECTOR_NONE),
            (Kind::CreditsFromHost, 0x4_1000, 0x1000, 0, VECTOR_NONE),
            (Kind::RingTestRequest, 0x4_2000, 0x8000, 0x0_2000, 1),
            (Kind::RingEvents, 0x4_A000, 0x8000, 0x0_2040, 2),
            (Kind::SchedConfig, 0x5_2000, 0x1000, 0, VECTOR_NONE),
            (crate::mem::RING_MEM_RECORDS, 0x5_3000, 0x8000, 0x0_2080, 3),
            (crate::mem::MEM_CONFIG, 0x5_B000, 0x1000, 0, VECTOR_NONE),
            (
                crate::net::KIND_RING_NET_TELEMETRY,
                0x5_C000,
                0x8000,
                0x0_20C0,
                4,
            ),
        ];
        for (kind, offset, size, credit, vector) in expect {
            let p = l.place(kind);
            assert_eq!(
                (p.offset, p.size, p.credit_offset, p.vector),
                (offset, size, credit, vector),
                "{kind:?}"
            );
        }
    }

    /// Published words: upper half of the credits block homed on the ring's consumer.
    #[test]
    fn published_words_follow_the_spec_table() {
        let l = Layout::v1(DEFAULT_RING_ENTRIES, 0x10_0000, MIN_VECTORS).unwrap();
        assert_eq!(l.published_offset(Kind::RingTestResponse), 0x0_2800);
        assert_eq!(l.published_offset(Kind::RingDecisions), 0x0_2840);
        assert_eq!(l.published_offset(Kind::RingTestRequest), 0x4_1800);
        assert_eq!(l.published_offset(Kind::RingEvents), 0x4_1840);
        assert_eq!(l.published_offset(Kind::CpuSlots), 0);
    }

    /// A kind from a newer peer's subsystem is skipped, and the rest of the table still reads.
    #[test]
    fn unknown_kinds_from_a_newer_peer_are_skipped() {
        extern crate std;
        use core::sync::atomic::AtomicU64;
        use std::format;
        let size = Layout::min_size(8);
        let mem: std::vec::Vec<AtomicU64> = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        let region = SharedRegion::from_words(&mem);
        let l = Layout::v1(8, size, MIN_VECTORS).unwrap();
        l.write(&region).unwrap();
        // Append an entry of kind 0x40 (a subsystem this build does not know) after the table,
        // placed in the free space at the end of the region, and count it.
        let e = RawLayoutEntry {
            kind: U16::new(0x40),
            home: Side::Ipu as u8,
            writer: Side::Host as u8,
            vector: U16::new(3),
            entry_size: U16::new(ENTRY_SIZE as u16),
            offset: U32::new((size - REGION_ALIGN) as u32),
            size: U32::new(REGION_ALIGN as u32),
            entries: U32::new(64),
            credit_offset: U32::new(0),
            reserved: U64::ZERO,
        };
        region
            .write_bytes(
                LAYOUT_TABLE_OFFSET + NKINDS * LAYOUT_ENTRY_SIZE,
                e.as_bytes(),
            )
            .unwrap();
        let table_word = LAYOUT_TABLE_OFFSET as u64 | (NKINDS as u64 + 1) << 32;
        region.write_bytes(0x18, &table_word.to_le_bytes()).unwrap();
        let read = Layout::read(&region).unwrap();
        assert_eq!(read.places(), l.places());
        assert_eq!(read.place(Kind(0x40)).size, 0);
        assert_eq!(format!("{:?}", Kind(0x40)), "Kind(0x40)");
        assert_eq!(format!("{:?}", Kind::RingEvents), "RingEvents");
    }
}

#[cfg(all(test, not(loom)))]
mod reserved_tests {
    extern crate std;
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// docs/abi.md §3, §4: non-zero reserved fields are rejected, not ignored.
    #[test]
    fn reserved_fields_are_rejected() {
        let size = Layout::min_size(DEFAULT_RING_ENTRIES);
        let mem: std::vec::Vec<AtomicU64> = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        let region = SharedRegion::from_words(&mem);
        let layout = Layout::v1(DEFAULT_RING_ENTRIES, size, MIN_VECTORS).unwrap();
        layout.write(&region).unwrap();
        assert!(Layout::read(&region).is_ok());
        let poke = |word: usize, v: u64| mem[word].store(v.to_le(), Ordering::Relaxed);
        poke(0x28 / 8, 1); // header flags
        assert_eq!(Layout::read(&region).err(), Some(LayoutError::BadTable));
        poke(0x28 / 8, 0);
        poke(0x30 / 8, 1); // header reserved
        assert_eq!(Layout::read(&region).err(), Some(LayoutError::BadTable));
        poke(0x30 / 8, 0);
        poke((0x40 + 0x18) / 8, 7); // entry 0's reserved word
        assert!(matches!(
            Layout::read(&region),
            Err(LayoutError::BadEntry { .. })
        ));
    }
}
