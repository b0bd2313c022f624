//! Locating the Cargo workspace root and its target directory at run time.
//!
//! The root is, in order: `$WAVE_WORKSPACE`; the parent of this crate's manifest directory as
//! recorded at compile time; the nearest ancestor of the current directory that is the Wave
//! workspace. The target directory is `$CARGO_TARGET_DIR` if set, else `<root>/target`, which is
//! what the nested `cargo build` of the firmware uses too.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Environment variable that overrides the workspace root.
pub const WORKSPACE_ENV: &str = "WAVE_WORKSPACE";

/// Whether `dir` looks like the Wave workspace root: a `Cargo.toml` with a `[workspace]` table
/// next to a `firmware/` directory.
pub fn is_wave_workspace(dir: &Path) -> bool {
    let manifest = dir.join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(manifest) else {
        return false;
    };
    text.lines().any(|l| l.trim() == "[workspace]") && dir.join("firmware").is_dir()
}

/// The workspace root (see the module docs for the search order).
pub fn root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(WORKSPACE_ENV) {
        let dir = PathBuf::from(dir);
        return if is_wave_workspace(&dir) {
            Ok(dir)
        } else {
            Err(Error::Workspace(format!(
                "${WORKSPACE_ENV} is {}, which is not the Wave workspace (no Cargo.toml with \
                 [workspace] next to firmware/); unset it or point it at the repository root",
                dir.display()
            )))
        };
    }
    if let Some(dir) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        if is_wave_workspace(dir) {
            return Ok(dir.to_path_buf());
        }
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    cwd.ancestors()
        .find(|d| is_wave_workspace(d))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            Error::Workspace(format!(
                "cannot find the Wave workspace from {}: run this inside the repository, or set \
                 ${WORKSPACE_ENV} to its root",
                cwd.display()
            ))
        })
}

/// The target directory cargo uses for `root`: `$CARGO_TARGET_DIR` (relative to the current
/// directory, as cargo reads it) or `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()
                    .map(|cwd| cwd.join(&dir))
                    .unwrap_or(dir)
            }
        }
        _ => root.join("target"),
    }
}

/// Where `cargo wave image` and `cargo wave boot` put the image: `<target>/wave`.
pub fn wave_dir(root: &Path) -> PathBuf {
    target_dir(root).join("wave")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_workspace_with_firmware() {
        let dir = std::env::temp_dir().join(format!("wave-ws-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("firmware")).unwrap();
        std::fs::write(dir.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        assert!(is_wave_workspace(&dir));
        std::fs::write(dir.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        assert!(!is_wave_workspace(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
