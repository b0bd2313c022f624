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

/// Microseconds since the counter started.
pub fn micros() -> u64 {
    ticks_to_micros(ticks())
}

/// A point `micros` microseconds from now, in ticks.
pub fn deadline_after_micros(micros: u64) -> u64 {
    ticks() + (micros as u128 * frequency() as u128 / 1_000_000) as u64
}
