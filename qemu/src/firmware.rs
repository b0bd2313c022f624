//! Building the firmware ELF with a nested `cargo build`, run from the workspace root so the
//! workspace's `.cargo/config.toml`, toolchain file and target directory apply.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace;
use crate::{Error, Result};

/// The firmware package (and binary) name.
pub const PACKAGE: &str = "wave-firmware";
/// The firmware's target triple.
pub const TARGET: &str = "aarch64-unknown-none";

/// The cargo to use: the one that started us (`$CARGO`), else `cargo` from `PATH`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// The arguments of the firmware build, after `cargo`.
pub fn build_args() -> [&'static str; 6] {
    ["build", "-p", PACKAGE, "--release", "--target", TARGET]
}

/// Where the nested build leaves the ELF.
pub fn elf_path(root: &Path) -> PathBuf {
    workspace::target_dir(root)
        .join(TARGET)
        .join("release")
        .join(PACKAGE)
}

/// Builds the firmware (cargo's caching makes an up-to-date build cheap) and returns the ELF path.
/// `quiet` passes `--quiet` (compiler errors are still shown) and skips the heading.
pub fn build(root: &Path, quiet: bool) -> Result<PathBuf> {
    crate::toolchain::ensure_firmware_target(root)?;
    let command = format!("cargo {}", build_args().join(" "));
    if !quiet {
        eprintln!("wave: building the firmware: {command}");
    }
    let status = Command::new(cargo())
        .args(build_args())
        .args(quiet.then_some("--quiet"))
        .current_dir(root)
        .status()
        .map_err(|source| Error::Spawn {
            program: "cargo".into(),
            hint: "Is the Rust toolchain installed (rustup) and cargo on PATH?",
            source,
        })?;
    if !status.success() {
        return Err(Error::BuildFailed { command, status });
    }
    let elf = elf_path(root);
    if !elf.is_file() {
        return Err(Error::Image(format!(
            "`{command}` succeeded but {} does not exist; is the firmware binary still named \
             `{PACKAGE}`?",
            elf.display()
        )));
    }
    Ok(elf)
}
