//! The generic timer's counter: timestamps and deadlines.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};

/// Counter ticks now.
pub fn ticks() -> u64 {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTPCT_EL0.get()
}

/// Counter frequency in Hz (never 0).
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// Ticks to microseconds.
pub fn ticks_to_micros(ticks: u64) -> u64 {
    (ticks as u128 * 1_000_000 / frequency() as u128) as u64
}

/// Ticks to nanoseconds.
pub fn ticks_to_nanos(ticks: u64) -> u64 {
    (ticks as u128 * 1_000_000_000 / frequency() as u128) as u64
}

/// Microseconds since the counter started.
pub fn micros() -> u64 {
    ticks_to_micros(ticks())
}

/// A point `micros` microseconds from now, in ticks.
pub fn deadline_after_micros(micros: u64) -> u64 {
    ticks() + (micros as u128 * frequency() as u128 / 1_000_000) as u64
}

/// INTID of the EL1 virtual timer (a PPI).
pub const VIRTUAL_TIMER_INTID: u32 = 27;

/// Arms the virtual timer to interrupt this core in `micros` microseconds (a bounded sleep:
/// a lost doorbell costs at most this long).
pub fn arm_wakeup(micros: u64) {
    let ticks =
        (micros as u128 * frequency() as u128 / 1_000_000).clamp(1, u32::MAX as u128) as u64;
    // SAFETY: programming this core's own virtual timer has no memory effects.
    unsafe {
        core::arch::asm!(
            "msr cntv_tval_el0, {t}",
            "msr cntv_ctl_el0, {on}",
            "isb",
            t = in(reg) ticks,
            on = in(reg) 1u64,
            options(nostack, preserves_flags),
        );
    }
}

/// Stops this core's virtual timer (called when its interrupt is taken).
pub fn disarm() {
    // SAFETY: as for `arm_wakeup`.
    unsafe {
        core::arch::asm!(
            "msr cntv_ctl_el0, xzr",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}
