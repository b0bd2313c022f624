//! The core's performance monitors, for the scheduling agent's cost per event and per
//! decision (`wave.pmu=1`, read by `wave_policy::agent::Meter`).
//!
//! Event counter 0 counts INST_RETIRED (event 0x08) and the cycle counter counts cycles, both
//! at EL1 and EL0. Under QEMU's TCG, INST_RETIRED counts only with `-icount` (then exactly)
//! and reads 0 otherwise; the cycle counter ticks at an emulated 1 GHz from host time (see
//! `../shared/reference/msi-on-qemu-virt.md`, *Counting guest instructions*).

use core::sync::atomic::{AtomicBool, Ordering};

static WANTED: AtomicBool = AtomicBool::new(false);

/// INST_RETIRED, the architectural "instruction architecturally executed" event.
const INST_RETIRED: u64 = 0x08;
/// PMCR_EL0: E (enable), P (reset event counters), C (reset the cycle counter).
const PMCR_E_P_C: u64 = 0b111;
/// PMCNTENSET_EL0: event counter 0 and the cycle counter (bit 31).
const COUNTERS: u64 = 1 | 1 << 31;

/// Records whether the boot arguments asked for counting (`wave.pmu=1`).
pub fn set_wanted(on: bool) {
    WANTED.store(on, Ordering::Relaxed);
}

/// Whether counting was asked for.
pub fn wanted() -> bool {
    WANTED.load(Ordering::Relaxed)
}

/// Programs and starts the calling core's counters (from zero).
pub fn start() {
    // SAFETY: these writes configure only this core's performance monitors (event type,
    // cycle filter, enables, control); they have no memory effects and no other code of the
    // firmware uses the PMU.
    unsafe {
        core::arch::asm!(
            "msr pmevtyper0_el0, {ev}",
            "msr pmccfiltr_el0, xzr",
            "msr pmcntenset_el0, {en}",
            "msr pmcr_el0, {cr}",
            "isb",
            ev = in(reg) INST_RETIRED,
            en = in(reg) COUNTERS,
            cr = in(reg) PMCR_E_P_C,
            options(nostack, preserves_flags)
        );
    }
}

/// The calling core's (instructions retired, cycles) so far.
pub fn read() -> (u64, u64) {
    let (inst, cycles): (u64, u64);
    // SAFETY: reading this core's counters has no side effects.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {i}, pmevcntr0_el0",
            "mrs {c}, pmccntr_el0",
            i = out(reg) inst,
            c = out(reg) cycles,
            options(nostack, preserves_flags)
        );
    }
    (inst, cycles)
}
