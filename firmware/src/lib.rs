//! `wave-firmware`: the Wave image that runs on the IPU cores.
//!
//! Portable modules (tested on the host with plain `cargo test`):
//! - [`board`]: board discovery from the device tree;
//! - [`bootargs`]: the `wave.*` boot arguments and the run's exit codes;
//! - [`pci`]: PCI enumeration, BAR assignment and MSI-X discovery over a config-space accessor,
//!   and the typed ECAM and MSI-X table blocks;
//! - [`its`]: GICv3 ITS registers and command encoding (its driver is built for the image only).
//!
//! Hardware modules (built only for `aarch64-unknown-none`):
//! - [`console`]: the PL011 console, its lock, and the `defmt` logger;
//! - [`memory`]: the page tables built from the board description;
//! - [`gic`]: the interrupt controller and MSI routing (GICv3 + ITS, or GICv2m);
//! - [`ivshmem`]: the ivshmem-doorbell device that stands in for the PCIe link;
//! - [`link`]: the IPU end of the link: services placed on cores, each run by the agent runtime;
//! - [`lock`]: the IRQ-masking spin lock around driver state several cores share;
//! - [`port`]: the runtime's port on this firmware (doorbells, WFI, clock) and the link device;
//! - [`cpus`]: secondary-core bring-up and the online roll call;
//! - [`power`]: ending the run (semihosting or PSCI) with a pass/fail result;
//! - [`fault`]: reporting CPU exceptions and panics;
//! - [`time`]: the generic timer.
//!
//! The entry points themselves live in `main.rs`.
#![cfg_attr(not(test), no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod board;
pub mod bootargs;
pub mod its;
pub mod pci;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod cpus;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod fault;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod gic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod ivshmem;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod link;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod lock;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod memory;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod pmu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod port;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod power;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod time;
