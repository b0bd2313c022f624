//! `wave-boot`: everything between reset and Rust on an aarch64 core.
//!
//! - [`entry`]: the arm64 `Image` header, the primary and secondary entry points, EL2→EL1,
//!   BSS zeroing, per-core stacks (with unmapped guard pages) and the jump into the firmware.
//! - [`vectors`]: the exception vector table and the saved register [`vectors::Frame`].
//! - [`esr`]: decoding of the Exception Syndrome Register into readable text (portable).
//! - [`pagetable`]: a 4 KiB-granule identity-map builder that can split blocks and change one
//!   range's attributes (portable, tested on the host against a fake table allocator).
//! - [`mmu`]: MAIR/TCR/SCTLR values and turning the MMU on.
//! - [`psci`] and [`semihosting`]: power control (CPU_ON, SYSTEM_OFF, SYSTEM_RESET) and the
//!   test-only semihosting exit.
//!
//! The firmware provides three `extern "C"` functions that the entry code calls:
//! `wave_primary_main(dtb: usize) -> !` on the boot core, `wave_secondary_main(slot: usize) -> !`
//! on every other core, and `wave_exception(kind: u64, frame: &mut Frame)` for every exception.
#![cfg_attr(not(test), no_std)]

pub mod esr;
pub mod layout;
pub mod pagetable;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod entry;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod mmu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod psci;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod semihosting;
pub mod vectors;
