//! The firmware target of the pinned toolchain: finding out whether `aarch64-unknown-none` is
//! installed, and adding it with rustup when it is not.
//!
//! rustup installs a `rust-toolchain.toml` toolchain's targets only when it installs the
//! toolchain itself; a machine that already had the pinned toolchain without the target would
//! otherwise fail the firmware build with "can't find crate for `core`".

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::firmware::TARGET;
use crate::{Error, Result};

/// How to add the target by hand, for the error message.
pub const TARGET_HINT: &str = "add it by hand and run again: \
    `rustup target add aarch64-unknown-none` (run inside the Wave checkout, so the pinned \
    toolchain of rust-toolchain.toml gets it)";

/// The sysroot of the toolchain that builds in `root` (`rustc --print sysroot`).
fn sysroot(root: &Path) -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .output()
        .map_err(|source| Error::Spawn {
            program: "rustc".into(),
            hint: "Is the Rust toolchain installed (rustup) and rustc on PATH?",
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || text.is_empty() {
        return Err(Error::Image(format!(
            "`rustc --print sysroot` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(PathBuf::from(text))
}

/// Whether `sysroot` holds the standard library for `target`.
pub fn has_target(sysroot: &Path, target: &str) -> bool {
    sysroot
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

/// Makes sure the firmware target is installed for the toolchain that builds in `root`,
/// adding it with rustup (as any user: rustup installs into the user's own toolchain) when it
/// is missing. Says what it does.
pub fn ensure_firmware_target(root: &Path) -> Result<()> {
    let sysroot = sysroot(root)?;
    if has_target(&sysroot, TARGET) {
        return Ok(());
    }
    eprintln!(
        "wave: the toolchain at {} has no `{TARGET}` target (the firmware's); adding it: \
         rustup target add {TARGET}",
        sysroot.display()
    );
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .current_dir(root)
        .status()
        .map_err(|source| Error::Spawn {
            program: "rustup".into(),
            hint: "rustup is not on PATH; install the target with your toolchain manager.",
            source,
        })?;
    if !status.success() || !has_target(&sysroot, TARGET) {
        return Err(Error::Image(format!(
            "`rustup target add {TARGET}` failed ({status}); {TARGET_HINT}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_lib_folder_under_rustlib() {
        let dir = std::env::temp_dir().join(format!("wave-sysroot-{}", std::process::id()));
        let lib = dir.join("lib/rustlib/aarch64-unknown-none/lib");
        std::fs::create_dir_all(&lib).unwrap();
        assert!(has_target(&dir, "aarch64-unknown-none"));
        assert!(!has_target(&dir, "riscv64gc-unknown-none-elf"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_host_toolchain_has_its_own_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let sysroot = sysroot(root).unwrap();
        let host = std::env::consts::ARCH.to_string() + "-unknown-linux-gnu";
        assert!(has_target(&sysroot, &host), "{}", sysroot.display());
    }
}
