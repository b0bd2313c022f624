//! Identity-mapped stage-1 translation tables: 4 KiB granule, 48-bit addresses, four levels.
//!
//! [`PageTable::map`] maps (or, with `None`, unmaps) a page-aligned range with the largest
//! blocks that fit (1 GiB, 2 MiB, 4 KiB), splitting an existing block into a next-level table
//! when only part of it changes. So a range's attributes can be changed after the rest of the
//! map is built (the link remaps the shared-memory BAR normal non-cacheable; the stack guard
//! pages are punched out of RAM).
//!
//! Tables come from a [`TableAlloc`], so the same code runs on the IPU (a static pool, physical
//! address = pointer) and in host tests (a fake allocator). Changing a live table needs
//! break-before-make and TLB maintenance, which is the caller's job; the firmware builds the
//! whole map before it turns the MMU on.

/// Memory types, with their MAIR_EL1 attribute index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal memory, inner and outer write-back, inner shareable (RAM).
    Normal,
    /// Normal memory, non-cacheable: the write-combining analogue, for memory another agent
    /// reads over PCIe without coherence.
    NormalNonCacheable,
    /// Device-nGnRE: MMIO registers.
    Device,
}

impl MemType {
    fn index(self) -> u64 {
        match self {
            MemType::Normal => 0,
            MemType::Device => 1,
            MemType::NormalNonCacheable => 2,
        }
    }

    fn from_index(i: u64) -> Option<Self> {
        match i {
            0 => Some(MemType::Normal),
            1 => Some(MemType::Device),
            2 => Some(MemType::NormalNonCacheable),
            _ => None,
        }
    }
}

/// MAIR_EL1 value matching [`MemType`]'s indices: 0 = 0xff (normal WB RA WA), 1 = 0x04
/// (Device-nGnRE), 2 = 0x44 (normal non-cacheable).
pub const MAIR_VALUE: u64 = 0xff | (0x04 << 8) | (0x44 << 16);

/// Attributes of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// Memory type.
    pub mem: MemType,
    /// Whether instructions may be fetched from it.
    pub exec: bool,
}

impl Attrs {
    /// RAM holding code and data.
    pub const RAM: Attrs = Attrs {
        mem: MemType::Normal,
        exec: true,
    };
    /// MMIO registers.
    pub const DEVICE: Attrs = Attrs {
        mem: MemType::Device,
        exec: false,
    };
    /// Shared memory another agent reads across a non-coherent link.
    pub const SHARED: Attrs = Attrs {
        mem: MemType::NormalNonCacheable,
        exec: false,
    };
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range is not 4 KiB aligned.
    Unaligned { start: u64, size: u64 },
    /// The range leaves the 48-bit address space.
    OutOfRange { start: u64, size: u64 },
    /// The table allocator is exhausted.
    NoTables,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::Unaligned { start, size } => {
                write!(f, "range {start:#x}+{size:#x} is not 4 KiB aligned")
            }
            MapError::OutOfRange { start, size } => {
                write!(f, "range {start:#x}+{size:#x} is beyond 48-bit addresses")
            }
            MapError::NoTables => write!(f, "out of page-table pages (raise the pool size)"),
        }
    }
}

/// Where translation tables come from.
pub trait TableAlloc {
    /// A fresh, zeroed, 4 KiB-aligned table; returns its physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    /// The table at physical address `pa` (one returned by [`Self::alloc_table`]).
    fn table(&mut self, pa: u64) -> &mut [u64; 512];
}

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const XN: u64 = (1 << 53) | (1 << 54);
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
const VA_LIMIT: u64 = 1 << 48;

fn level_shift(level: usize) -> u32 {
    12 + 9 * (3 - level as u32)
}

fn leaf(pa: u64, attrs: Attrs, level: usize) -> u64 {
    let sh = match attrs.mem {
        MemType::Normal => 0b11, // inner shareable
        _ => 0b10,               // outer shareable (ignored for device memory)
    };
    let mut d = VALID | (attrs.mem.index() << 2) | (sh << 8) | AF | (pa & ADDR_MASK);
    if level == 3 {
        d |= TABLE_OR_PAGE;
    }
    if !attrs.exec {
        d |= XN;
    }
    d
}

fn decode_attrs(desc: u64) -> Option<Attrs> {
    Some(Attrs {
        mem: MemType::from_index((desc >> 2) & 7)?,
        exec: desc & XN == 0,
    })
}

/// An identity map under construction.
pub struct PageTable<A: TableAlloc> {
    root: u64,
    alloc: A,
}

impl<A: TableAlloc> PageTable<A> {
    /// An empty map (everything unmapped).
    pub fn new(mut alloc: A) -> Result<Self, MapError> {
        let root = alloc.alloc_table().ok_or(MapError::NoTables)?;
        Ok(Self { root, alloc })
    }

    /// Physical address of the level-0 table, for TTBR0_EL1.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Identity-maps `[start, start + size)` with `attrs`, or unmaps it when `attrs` is `None`.
    pub fn map(&mut self, start: u64, size: u64, attrs: Option<Attrs>) -> Result<(), MapError> {
        if !start.is_multiple_of(4096) || !size.is_multiple_of(4096) {
            return Err(MapError::Unaligned { start, size });
        }
        let end = start.checked_add(size).filter(|&e| e <= VA_LIMIT);
        let Some(end) = end else {
            return Err(MapError::OutOfRange { start, size });
        };
        if size == 0 {
            return Ok(());
        }
        self.map_level(self.root, 0, start, end, attrs)
    }

    fn map_level(
        &mut self,
        table_pa: u64,
        level: usize,
        start: u64,
        end: u64,
        attrs: Option<Attrs>,
    ) -> Result<(), MapError> {
        let shift = level_shift(level);
        let entry_size = 1u64 << shift;
        let mut va = start;
        while va < end {
            let idx = ((va >> shift) & 511) as usize;
            let entry_start = va & !(entry_size - 1);
            let seg_end = end.min(entry_start + entry_size);
            let whole = va == entry_start && seg_end == entry_start + entry_size;
            // Level 0 entries cannot be blocks with a 4 KiB granule.
            if whole && level >= 1 {
                let d = attrs.map_or(0, |a| leaf(va, a, level));
                self.alloc.table(table_pa)[idx] = d;
            } else {
                let desc = self.alloc.table(table_pa)[idx];
                let next = if level < 3 && desc & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE {
                    desc & ADDR_MASK
                } else {
                    let next = self.alloc.alloc_table().ok_or(MapError::NoTables)?;
                    if desc & VALID != 0 {
                        // Split the block: the new table repeats it at the next level.
                        let child_size = 1u64 << level_shift(level + 1);
                        let base = desc & ADDR_MASK & !(entry_size - 1);
                        let bits = desc & !ADDR_MASK & !TABLE_OR_PAGE;
                        let page = if level + 1 == 3 { TABLE_OR_PAGE } else { 0 };
                        let t = self.alloc.table(next);
                        for (i, e) in t.iter_mut().enumerate() {
                            *e = (base + i as u64 * child_size) | bits | page;
                        }
                    }
                    self.alloc.table(table_pa)[idx] = next | VALID | TABLE_OR_PAGE;
                    next
                };
                self.map_level(next, level + 1, va, seg_end, attrs)?;
            }
            va = seg_end;
        }
        Ok(())
    }

    /// Translates `va`: its physical address, attributes and the level of the leaf.
    pub fn lookup(&mut self, va: u64) -> Option<(u64, Attrs, usize)> {
        if va >= VA_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in 0..4 {
            let shift = level_shift(level);
            let desc = self.alloc.table(table)[((va >> shift) & 511) as usize];
            if desc & VALID == 0 {
                return None;
            }
            let is_table = level < 3 && desc & TABLE_OR_PAGE != 0;
            if !is_table {
                let offset_mask = (1u64 << shift) - 1;
                let pa = (desc & ADDR_MASK & !offset_mask) | (va & offset_mask);
                return Some((pa, decode_attrs(desc)?, level));
            }
            table = desc & ADDR_MASK;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host fake: tables in a Vec, "physical" addresses invented (distinct, aligned).
    struct FakeAlloc {
        tables: Vec<Box<[u64; 512]>>,
        limit: usize,
    }

    impl FakeAlloc {
        fn new(limit: usize) -> Self {
            Self {
                tables: Vec::new(),
                limit,
            }
        }
    }

    impl TableAlloc for FakeAlloc {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() == self.limit {
                return None;
            }
            self.tables.push(Box::new([0; 512]));
            Some(0x7000_0000_0000 + self.tables.len() as u64 * 0x1000)
        }
        fn table(&mut self, pa: u64) -> &mut [u64; 512] {
            let i = ((pa - 0x7000_0000_0000) / 0x1000) as usize - 1;
            &mut self.tables[i]
        }
    }

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    #[test]
    fn ram_uses_gib_blocks_and_devices_stay_separate() {
        let mut pt = PageTable::new(FakeAlloc::new(16)).unwrap();
        pt.map(0x4000_0000, GIB, Some(Attrs::RAM)).unwrap();
        pt.map(0x0900_0000, 0x1000, Some(Attrs::DEVICE)).unwrap();
        assert_eq!(pt.lookup(0x4000_1234), Some((0x4000_1234, Attrs::RAM, 1)));
        assert_eq!(pt.lookup(0x7fff_fff8).map(|l| l.2), Some(1));
        assert_eq!(pt.lookup(0x8000_0000), None);
        assert_eq!(
            pt.lookup(0x0900_0ffc),
            Some((0x0900_0ffc, Attrs::DEVICE, 3))
        );
        assert_eq!(pt.lookup(0x0900_1000), None);
        // root + L1 + (L2 + L3 for the UART page)
        assert_eq!(pt.alloc.tables.len(), 4);
    }

    #[test]
    fn guard_page_splits_a_block_and_keeps_neighbours() {
        let mut pt = PageTable::new(FakeAlloc::new(16)).unwrap();
        pt.map(0x4000_0000, GIB, Some(Attrs::RAM)).unwrap();
        let guard = 0x4012_3000;
        pt.map(guard, 0x1000, None).unwrap();
        assert_eq!(pt.lookup(guard), None);
        assert_eq!(pt.lookup(guard + 0xfff), None);
        assert_eq!(pt.lookup(guard - 8), Some((guard - 8, Attrs::RAM, 3)));
        assert_eq!(
            pt.lookup(guard + 0x1000),
            Some((guard + 0x1000, Attrs::RAM, 3))
        );
        // Other 2 MiB blocks of the split GiB stay 2 MiB blocks.
        assert_eq!(pt.lookup(0x4060_0000).map(|l| l.2), Some(2));
        assert_eq!(pt.lookup(0x7fe0_0000), Some((0x7fe0_0000, Attrs::RAM, 2)));
    }

    #[test]
    fn one_range_can_change_attributes_inside_a_device_window() {
        let mut pt = PageTable::new(FakeAlloc::new(16)).unwrap();
        pt.map(0x1000_0000, 0x2eff_0000, Some(Attrs::DEVICE))
            .unwrap();
        pt.map(0x1020_0000, 4 * MIB, Some(Attrs::SHARED)).unwrap();
        assert_eq!(pt.lookup(0x1020_0040).unwrap().1, Attrs::SHARED);
        assert_eq!(pt.lookup(0x105f_fff0).unwrap().1, Attrs::SHARED);
        assert_eq!(pt.lookup(0x1060_0000).unwrap().1, Attrs::DEVICE);
        assert_eq!(pt.lookup(0x101f_f000).unwrap().1, Attrs::DEVICE);
        assert_eq!(pt.lookup(0x3efe_f000).unwrap().1, Attrs::DEVICE);
        assert_eq!(pt.lookup(0x3eff_0000), None);
    }

    #[test]
    fn high_addresses_map_through_level_zero() {
        let mut pt = PageTable::new(FakeAlloc::new(16)).unwrap();
        pt.map(0x40_1000_0000, 256 * MIB, Some(Attrs::DEVICE))
            .unwrap();
        pt.map(0x80_0000_0000, 2 * GIB, Some(Attrs::DEVICE))
            .unwrap();
        assert_eq!(pt.lookup(0x40_1000_0008).unwrap().0, 0x40_1000_0008);
        assert_eq!(pt.lookup(0x80_7fff_0000).unwrap().2, 1);
        assert_eq!(pt.lookup(0x40_0fff_f000), None);
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let mut pt = PageTable::new(FakeAlloc::new(2)).unwrap();
        assert_eq!(
            pt.map(0x1001, 0x1000, Some(Attrs::RAM)),
            Err(MapError::Unaligned {
                start: 0x1001,
                size: 0x1000
            })
        );
        assert!(matches!(
            pt.map(VA_LIMIT - 0x1000, 0x2000, Some(Attrs::RAM)),
            Err(MapError::OutOfRange { .. })
        ));
        assert!(matches!(
            pt.map(!0xfff, 0x2000, Some(Attrs::RAM)),
            Err(MapError::OutOfRange { .. })
        ));
        // One table left after the root: the L1; a 4 KiB page needs L2 and L3 too.
        assert_eq!(
            pt.map(0x9000_0000, 0x1000, Some(Attrs::RAM)),
            Err(MapError::NoTables)
        );
    }

    #[test]
    fn remapping_a_whole_block_back_replaces_the_table() {
        let mut pt = PageTable::new(FakeAlloc::new(16)).unwrap();
        pt.map(0x4000_0000, 2 * MIB, Some(Attrs::RAM)).unwrap();
        pt.map(0x4000_0000, 0x1000, None).unwrap();
        pt.map(0x4000_0000, 2 * MIB, Some(Attrs::DEVICE)).unwrap();
        assert_eq!(
            pt.lookup(0x4000_0000),
            Some((0x4000_0000, Attrs::DEVICE, 2))
        );
    }
}
