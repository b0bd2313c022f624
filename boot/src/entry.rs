//! Reset entry: the arm64 `Image` header, EL2→EL1, BSS, stacks, MMU for secondaries, and the
//! jump into the firmware's Rust entry points.
//!
//! Boot protocol (Linux arm64 `booting.rst`, which QEMU `-kernel` and U-Boot `booti` follow):
//! the boot core enters at offset 0 with the MMU off, `x0` = physical address of the device
//! tree. Secondary cores enter [`secondary_entry`](self) through PSCI `CPU_ON` with `x0` =
//! their stack slot (the PSCI context id).
//!
//! Stacks: each core runs normal code on `SP_EL0` (its main stack) and takes exceptions on
//! `SP_EL1` (a separate exception stack), so a main-stack overflow into its guard page still
//! reaches the exception handler and is reported.

use crate::layout::{
    CoreStacks, CORE_STACKS_STRIDE, EXCEPTION_STACK_TOP, MAIN_STACK_TOP, MAX_CORES,
};
use crate::mmu::MmuConfig;
use core::cell::UnsafeCell;

/// Every core's stacks, in the image's BSS. Slot 0 is the boot core.
#[repr(transparent)]
pub struct Stacks(UnsafeCell<[CoreStacks; MAX_CORES]>);
// SAFETY: each slot is used by exactly one core (its stack), and only through the stack
// pointer; Rust code never forms references into it.
unsafe impl Sync for Stacks {}

#[unsafe(no_mangle)]
static WAVE_STACKS: Stacks = Stacks(UnsafeCell::new(
    // SAFETY: CoreStacks is plain bytes, for which all-zero is valid.
    unsafe { core::mem::zeroed() },
));

/// The MMU settings secondaries load before running Rust code; written by the boot core
/// before it starts them (see [`publish_mmu_config`]).
#[repr(transparent)]
pub struct SharedMmuConfig(UnsafeCell<MmuConfig>);
// SAFETY: written once by the boot core before any secondary core is started, then only read.
unsafe impl Sync for SharedMmuConfig {}

#[unsafe(no_mangle)]
static WAVE_SECONDARY_MMU: SharedMmuConfig = SharedMmuConfig(UnsafeCell::new(MmuConfig::OFF));

/// Address range of every core's stacks, and of one slot's two guard pages, for the page
/// tables (the guards stay unmapped).
pub fn stacks_range() -> (usize, usize) {
    let start = WAVE_STACKS.0.get() as usize;
    (start, start + CORE_STACKS_STRIDE * MAX_CORES)
}

/// Guard pages (main, exception) of a stack slot.
pub fn guard_pages(slot: usize) -> [usize; 2] {
    let base = stacks_range().0 + slot * CORE_STACKS_STRIDE;
    [
        base,
        base + crate::layout::PAGE_SIZE + crate::layout::MAIN_STACK_SIZE,
    ]
}

/// Physical address of the entry point secondaries are started at (for PSCI `CPU_ON`).
pub fn secondary_entry_address() -> usize {
    unsafe extern "C" {
        fn wave_secondary_entry();
    }
    wave_secondary_entry as *const () as usize
}

/// Makes `config` the MMU setting secondaries enable before running Rust code.
///
/// Must be called before any secondary is started; the data is cleaned to the point of
/// coherency because secondaries read it with their MMU and caches still off.
pub fn publish_mmu_config(config: MmuConfig) {
    let p = WAVE_SECONDARY_MMU.0.get();
    // SAFETY: only the boot core calls this, before any secondary runs, so nothing else
    // accesses the cell concurrently.
    unsafe { p.write_volatile(config) };
    crate::mmu::clean_to_poc(p as usize, core::mem::size_of::<MmuConfig>());
}

// The Image header must be the first 64 bytes of the image; the linker script places
// `.text.head` first.
core::arch::global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       2f                      // code0: branch over the header
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   __wave_image_size       // image_size: loaded bytes + BSS + stacks
    .quad   0x2                     // flags: little endian, 4 KiB pages, base near start of DRAM
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5
2:
    mov     x19, x0                 // device tree address
    bl      wave_el1_setup

    // Zero the BSS (the MMU is off: plain aligned 8-byte stores, no DC ZVA).
    adrp    x1, __wave_bss_start
    add     x1, x1, :lo12:__wave_bss_start
    adrp    x2, __wave_bss_end
    add     x2, x2, :lo12:__wave_bss_end
3:  cmp     x1, x2
    b.hs    4f
    str     xzr, [x1], #8
    b       3b
4:
    mov     x0, #0
    bl      wave_set_stacks
    mov     x0, x19
    bl      wave_primary_main
5:  wfi
    b       5b

.section .text.wave_boot, "ax"

// Drop from EL2 to EL1 if entered at EL2; enable FP/SIMD at EL1. Clobbers x9, x10.
.global wave_el1_setup
wave_el1_setup:
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    1f
    mov     x9, #(1 << 31)          // HCR_EL2.RW: EL1 is AArch64; nothing else trapped
    msr     hcr_el2, x9
    mov     x9, #3                  // CNTHCTL_EL2: EL1 may use the physical counter and timer
    msr     cnthctl_el2, x9
    msr     cntvoff_el2, xzr
    mov     x9, #0x33ff             // CPTR_EL2: do not trap FP/SIMD
    msr     cptr_el2, x9
    msr     vttbr_el2, xzr
    mrs     x9, id_aa64pfr0_el1     // GICv3 system registers present?
    ubfx    x9, x9, #24, #4
    cbz     x9, 2f
    mrs     x9, S3_4_C12_C9_5       // ICC_SRE_EL2: SRE | Enable (let EL1 use ICC_*)
    mov     x10, #0x9
    orr     x9, x9, x10
    msr     S3_4_C12_C9_5, x9
    isb
2:  ldr     x9, =0x30d00800         // SCTLR_EL1: RES1 bits, MMU and caches off
    msr     sctlr_el1, x9
    mov     x9, #0x3c5              // SPSR: EL1h, DAIF masked
    msr     spsr_el2, x9
    adr     x9, 1f                  // continue below at EL1 (x30 still holds the return)
    msr     elr_el2, x9
    isb
    eret
1:  mov     x9, #(3 << 20)          // CPACR_EL1.FPEN: no FP/SIMD traps
    msr     cpacr_el1, x9
    isb
    ret

// x0 = stack slot. Sets SP_EL1 (exception stack), switches to SP_EL0 (main stack), sets
// TPIDR_EL1 = slot and VBAR_EL1. Clobbers x9, x10.
.global wave_set_stacks
wave_set_stacks:
    adrp    x9, WAVE_STACKS
    add     x9, x9, :lo12:WAVE_STACKS
    ldr     x10, ={stride}
    madd    x9, x0, x10, x9
    ldr     x10, ={exc_top}
    add     x10, x9, x10
    mov     sp, x10                 // SPSel is 1 here: this is SP_EL1
    msr     spsel, #0
    ldr     x10, ={main_top}
    add     x10, x9, x10
    mov     sp, x10                 // SP_EL0
    msr     tpidr_el1, x0
    adrp    x9, wave_vector_table
    add     x9, x9, :lo12:wave_vector_table
    msr     vbar_el1, x9
    isb
    ret

// PSCI CPU_ON entry. x0 = stack slot (context id).
.global wave_secondary_entry
wave_secondary_entry:
    mov     x19, x0
    bl      wave_el1_setup
    mov     x0, x19
    bl      wave_set_stacks
    adrp    x0, WAVE_SECONDARY_MMU
    add     x0, x0, :lo12:WAVE_SECONDARY_MMU
    bl      wave_mmu_enable
    mov     x0, x19
    bl      wave_secondary_main
1:  wfi
    b       1b

// x0 = &MmuConfig {{ mair, tcr, ttbr0, sctlr }}. Turns the MMU on for this core.
.global wave_mmu_enable
wave_mmu_enable:
    ldr     x1, [x0, #0]
    msr     mair_el1, x1
    ldr     x1, [x0, #8]
    msr     tcr_el1, x1
    ldr     x1, [x0, #16]
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x1, [x0, #24]
    msr     sctlr_el1, x1
    isb
    ret
"#,
    stride = const CORE_STACKS_STRIDE,
    exc_top = const EXCEPTION_STACK_TOP,
    main_top = const MAIN_STACK_TOP,
);
