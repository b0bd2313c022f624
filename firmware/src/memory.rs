//! The firmware's memory map, built from the board description: RAM normal write-back
//! (except the stack guard pages, left unmapped), device registers and PCIe windows
//! Device-nGnRE. Tables come from a static pool in the image's BSS.

use crate::board::{Board, Region};
use core::cell::UnsafeCell;
use wave_boot::layout::MAX_CORES;
use wave_boot::mmu::MmuConfig;
use wave_boot::pagetable::{Attrs, MapError, PageTable, TableAlloc};

const POOL_TABLES: usize = 48;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u64; 512]; POOL_TABLES]>);
// SAFETY: only the boot core touches the pool, while building the map before other cores
// start; afterwards only the MMU reads it.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([[0; 512]; POOL_TABLES]));

/// Hands out the static pool's tables; physical address = pointer (identity map).
struct StaticAlloc {
    next: usize,
}

impl TableAlloc for StaticAlloc {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.next == POOL_TABLES {
            return None;
        }
        // SAFETY: index checked above; the pool is in BSS, so the table is already zero.
        let t = unsafe { (*POOL.0.get()).as_mut_ptr().add(self.next) };
        self.next += 1;
        Some(t as u64)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // The address only selects one of the tables handed out; it is never dereferenced.
        let index = (pa.wrapping_sub(POOL.0.get() as u64) / 4096) as usize;
        assert!(
            index < self.next && pa.is_multiple_of(4096),
            "page-table address {pa:#x} is not a table from the pool"
        );
        // SAFETY: `index` is a table of the pool (checked); the boot core is the only user
        // while the map is built, and the reference borrows `self`, so it is the only one.
        unsafe { &mut (*POOL.0.get())[index] }
    }
}

fn page_round(r: Region) -> (u64, u64) {
    let start = r.base & !0xfff;
    let end = (r.end() + 0xfff) & !0xfff;
    (start, end - start)
}

fn map(pt: &mut PageTable<StaticAlloc>, r: Region, attrs: Option<Attrs>) -> Result<(), MapError> {
    let (start, size) = page_round(r);
    pt.map(start, size, attrs)
}

/// Builds the map for `board`, plus `extra` ranges (device BARs, and the shared-memory BAR as
/// normal non-cacheable: the write-combining analogue, since the host reads it through its own
/// mapping without coherence with our caches), and returns the settings that turn it on.
/// `extra` is applied last, so it overrides the window mappings.
pub fn build(board: &Board<'_>, extra: &[(Region, Attrs)]) -> Result<MmuConfig, MapError> {
    let mut pt = PageTable::new(StaticAlloc { next: 0 })?;
    for &ram in &board.memory {
        map(&mut pt, ram, Some(Attrs::RAM))?;
    }
    for slot in 0..MAX_CORES {
        for guard in wave_boot::entry::guard_pages(slot) {
            pt.map(guard as u64, wave_boot::layout::PAGE_SIZE as u64, None)?;
        }
    }
    let gic = &board.gic;
    let devices = [
        Some(board.uart),
        Some(gic.distributor),
        gic.redistributors,
        gic.cpu_interface,
        gic.its,
        gic.v2m,
        Some(board.pcie.ecam),
    ];
    for r in devices.into_iter().flatten() {
        map(&mut pt, r, Some(Attrs::DEVICE))?;
    }
    for w in &board.pcie.windows {
        map(
            &mut pt,
            Region {
                base: w.cpu_base,
                size: w.size,
            },
            Some(Attrs::DEVICE),
        )?;
    }
    for &(r, attrs) in extra {
        map(&mut pt, r, Some(attrs))?;
    }
    Ok(MmuConfig::for_root(pt.root()))
}
