//! Core bring-up: starts every CPU the device tree lists with PSCI `CPU_ON` and keeps the
//! roll call of which have reported in.
//!
//! Stack slots: slot 0 is the boot core; the other CPUs get slots 1.. in device-tree order.
//! A started core enters with its slot in `x0` and reports in through [`report_in`].

use crate::board::{Board, MAX_CPUS};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use wave_boot::psci::{self, Conduit};

/// Bit i set = DT cpu i has reported in.
static ONLINE: AtomicU64 = AtomicU64::new(0);
/// Slot → DT cpu index + 1 (0 = unused).
static SLOT_CPU: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// DT cpu index → MPIDR, for reporting.
static CPU_MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

/// MPIDR affinity fields (Aff3..Aff0), as the DT `reg` gives them.
pub fn affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// This core's MPIDR affinity.
pub fn current_mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack)) };
    affinity(v)
}

/// One CPU's bring-up result.
#[derive(Clone, Copy, Debug)]
pub enum StartResult {
    /// The boot core itself.
    BootCore,
    /// CPU_ON accepted.
    Started,
    /// CPU_ON refused, with the PSCI error.
    Refused(smccc::psci::Error),
}

/// Gives every DT cpu a stack slot (the boot core slot 0, the others 1.. in DT order).
/// Returns the DT index of the boot core (None if its MPIDR is not in the DT).
pub fn assign_slots(board: &Board<'_>) -> Option<usize> {
    let me = current_mpidr();
    let boot = board.cpus.iter().position(|&m| affinity(m) == me);
    for (i, &m) in board.cpus.iter().enumerate() {
        CPU_MPIDR[i].store(m, Ordering::Relaxed);
    }
    if let Some(b) = boot {
        SLOT_CPU[0].store(b + 1, Ordering::Relaxed);
    }
    let mut slot = 1;
    for i in 0..board.cpus.len() {
        if Some(i) == boot || slot >= MAX_CPUS {
            continue;
        }
        SLOT_CPU[slot].store(i + 1, Ordering::Release);
        slot += 1;
    }
    boot
}

/// (slot, MPIDR) of every cpu that has a slot.
pub fn slots() -> impl Iterator<Item = (usize, u64)> {
    (0..MAX_CPUS).filter_map(|s| cpu_of_slot(s).map(|c| (s, CPU_MPIDR[c].load(Ordering::Relaxed))))
}

/// Starts every CPU other than the boot core (after [`assign_slots`]). Returns each DT cpu's
/// result.
pub fn start_all(
    board: &Board<'_>,
    conduit: Conduit,
    boot: Option<usize>,
) -> [Option<StartResult>; MAX_CPUS] {
    let mut results = [None; MAX_CPUS];
    if let Some(b) = boot {
        ONLINE.fetch_or(1 << b, Ordering::AcqRel);
        results[b] = Some(StartResult::BootCore);
    }
    let entry = wave_boot::entry::secondary_entry_address() as u64;
    for slot in 1..MAX_CPUS {
        let Some(i) = cpu_of_slot(slot) else { continue };
        let mpidr = board.cpus[i];
        let r = match psci::cpu_on(conduit, mpidr, entry, slot as u64) {
            Ok(()) => StartResult::Started,
            Err(e) => StartResult::Refused(e),
        };
        defmt::debug!(
            "cpu_on mpidr={=u64:#x} slot={=usize}: {}",
            mpidr,
            slot,
            matches!(r, StartResult::Started)
        );
        results[i] = Some(r);
    }
    results
}

/// Called by a started core: marks its DT cpu online.
pub fn report_in(slot: usize) {
    let Some(cpu) = SLOT_CPU
        .get(slot)
        .map(|s| s.load(Ordering::Acquire))
        .filter(|&c| c > 0)
    else {
        return;
    };
    let cpu = cpu - 1;
    let want = CPU_MPIDR[cpu].load(Ordering::Relaxed);
    if affinity(want) != current_mpidr() {
        crate::println!(
            "wave: core in slot {slot} has mpidr {:#x}, expected {want:#x}; not counted",
            current_mpidr()
        );
        return;
    }
    ONLINE.fetch_or(1 << cpu, Ordering::AcqRel);
    defmt::info!(
        "cpu {=usize} (mpidr {=u64:#x}) online in slot {=usize}",
        cpu,
        want,
        slot
    );
}

/// The DT cpu index of a stack slot.
pub fn cpu_of_slot(slot: usize) -> Option<usize> {
    SLOT_CPU
        .get(slot)
        .map(|s| s.load(Ordering::Acquire))
        .filter(|&c| c > 0)
        .map(|c| c - 1)
}

/// The stack slot of DT cpu `cpu`.
pub fn slot_of_cpu(cpu: usize) -> Option<usize> {
    (0..MAX_CPUS).find(|&s| cpu_of_slot(s) == Some(cpu))
}

/// Bitmask of DT cpus that are online.
pub fn online_mask() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

/// Waits until `count` cpus are online or `timeout_us` passes; returns the online mask.
pub fn wait_online(count: usize, timeout_us: u64) -> u64 {
    let deadline = crate::time::deadline_after_micros(timeout_us);
    loop {
        let mask = online_mask();
        if mask.count_ones() as usize >= count || crate::time::ticks() >= deadline {
            return mask;
        }
        core::hint::spin_loop();
    }
}
