//! `wave-qemu`: the runner behind `cargo wave …`.
//!
//! It owns everything between "the source tree" and "a verdict": building the firmware
//! (`wave-firmware` for `aarch64-unknown-none`), turning its ELF into the flashable raw image,
//! finding (or installing) `qemu-system-aarch64`, QEMU's command line, the live console (plain
//! text plus `defmt` frames), the timeout and the exit-code policy. The contract with the firmware
//! is `docs/firmware.md`.
//!
//! Library use (this is what the end-to-end tests in `tests/` do):
//!
//! ```no_run
//! let cfg = wave_qemu::BootConfig { smp: 2, ..Default::default() };
//! let outcome = wave_qemu::run_boot(&cfg).expect("could not run QEMU");
//! assert_eq!(outcome.status, wave_qemu::BootStatus::Exited(0));
//! assert_eq!(wave_qemu::cores_online(&outcome.console), Some((2, 2)));
//! ```

pub mod boot;
pub mod cmdline;
pub mod console;
pub mod defmt;
pub mod demo;
pub mod demo_all;
pub mod demo_mem;
pub mod demo_net;
pub mod elf;
pub mod error;
pub mod firmware;
pub mod image;
pub mod install;
pub mod ipu;
pub mod ipu_unit;
pub mod link_test;
pub mod size;
pub mod sockets;
pub mod toolchain;
pub mod verdict;
pub mod workspace;

pub use boot::{run_boot, run_boot_with_image, BootConfig, BootOutcome, BootStatus, Inject};
pub use console::cores_online;
pub use error::{Error, Result};
pub use image::{build_image, image, Image};
pub use link_test::{run_link_test, LinkTestOptions, LinkTestOutcome};
pub use verdict::{ExitCode, Verdict};
