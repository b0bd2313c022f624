//! Turning the MMU on: the MAIR/TCR/SCTLR values that go with [`crate::pagetable`], and cache
//! maintenance for data shared with cores whose MMU is still off.

use crate::pagetable::MAIR_VALUE;

/// The four registers that enable translation on a core; the layout is read by the assembly
/// in [`crate::entry`] (`wave_mmu_enable`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmuConfig {
    /// MAIR_EL1.
    pub mair: u64,
    /// TCR_EL1.
    pub tcr: u64,
    /// TTBR0_EL1: the level-0 table.
    pub ttbr0: u64,
    /// SCTLR_EL1 with M, C and I set.
    pub sctlr: u64,
}

const SCTLR_RES1: u64 = 0x30d0_0800;
const SCTLR_M: u64 = 1 << 0;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_SA: u64 = 1 << 3;
const SCTLR_I: u64 = 1 << 12;

impl MmuConfig {
    /// Translation off (what secondaries would load if nobody published a config).
    pub const OFF: MmuConfig = MmuConfig {
        mair: 0,
        tcr: 0,
        ttbr0: 0,
        sctlr: SCTLR_RES1,
    };

    /// Settings for the identity map rooted at `root`: 48-bit VA, 4 KiB granule, write-back
    /// cacheable inner-shareable table walks, TTBR1 walks disabled, and the physical address
    /// size this CPU reports.
    pub fn for_root(root: u64) -> Self {
        let parange = aarch64_cpu::registers::ID_AA64MMFR0_EL1.get() & 0xf;
        // IPS cannot exceed 48 bits with this table format.
        let ips = parange.min(5);
        let tcr = 16 // T0SZ: 48-bit VA
            | (0b01 << 8) // IRGN0: write-back write-allocate
            | (0b01 << 10) // ORGN0
            | (0b11 << 12) // SH0: inner shareable
            | (1 << 23) // EPD1: no TTBR1 walks
            | (ips << 32);
        MmuConfig {
            mair: MAIR_VALUE,
            tcr,
            ttbr0: root,
            sctlr: SCTLR_RES1 | SCTLR_M | SCTLR_C | SCTLR_SA | SCTLR_I,
        }
    }
}

use aarch64_cpu::registers::Readable;

/// Turns the MMU and caches on for the calling core.
///
/// # Safety
/// `config` must describe tables that identity-map all code, data and stacks the core uses,
/// and the tables must stay valid for as long as translation is on.
pub unsafe fn enable(config: &MmuConfig) {
    unsafe extern "C" {
        fn wave_mmu_enable(config: *const MmuConfig);
    }
    // SAFETY: the caller guarantees the identity map covers everything this core touches, so
    // execution continues at the next instruction with the same addresses.
    unsafe { wave_mmu_enable(config) };
}

/// Cleans and invalidates `[addr, addr + len)` to the point of coherency, so a core running
/// with caches off (a secondary before it enables its MMU) sees the data.
pub fn clean_to_poc(addr: usize, len: usize) {
    const LINE: usize = 64;
    let mut a = addr & !(LINE - 1);
    while a < addr + len {
        // SAFETY: DC CIVAC only does cache maintenance on a mapped address; it does not
        // change memory contents.
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += LINE;
    }
    // SAFETY: a barrier has no memory-safety requirements.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}
