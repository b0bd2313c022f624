//! Finding `qemu-system-aarch64`: `$WAVE_QEMU`, else `PATH`; installing it with apt when it is
//! missing and we are root on Debian/Ubuntu (a fresh CI machine); checking its version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::cmdline::QEMU;
use crate::{Error, Result};

/// Environment variable naming the QEMU binary to use instead of `qemu-system-aarch64` on `PATH`.
pub const QEMU_ENV: &str = "WAVE_QEMU";
/// The QEMU version this project is developed and tested with (Debian bookworm's).
pub const TESTED_VERSION: (u32, u32, u32) = (7, 2, 0);

/// A usable QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    pub path: PathBuf,
    /// `(major, minor, micro)` from `--version`, if it could be read.
    pub version: Option<(u32, u32, u32)>,
}

/// How to install QEMU by hand, for the error message.
pub const INSTALL_HINT: &str = "install it and run again:\n  \
    Debian/Ubuntu: sudo apt-get install qemu-system-arm\n  \
    Fedora:        sudo dnf install qemu-system-aarch64\n  \
    Arch:          sudo pacman -S qemu-system-aarch64\n  \
    macOS:         brew install qemu\n\
    or set WAVE_QEMU to the path of a qemu-system-aarch64 binary";

/// Looks `name` up on `PATH` (or takes it as a path if it contains a `/`).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Parses `QEMU emulator version 7.2.22 (Debian …)`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.split("version").nth(1)?.split_whitespace().next()?;
    let mut parts = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let micro = parts.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

/// The effective user id, from `/proc/self/status` (no unsafe, no libc).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn can_apt_install() -> bool {
    Path::new("/etc/debian_version").exists() && euid() == Some(0) && which("apt-get").is_some()
}

fn run_apt(args: &[&str]) -> Result<()> {
    eprintln!("wave: $ apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|source| Error::Spawn {
            program: "apt-get".into(),
            hint: "Install qemu-system-arm by hand.",
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Qemu(format!(
            "`apt-get {}` failed ({status}); {QEMU} is still missing: {INSTALL_HINT}",
            args.join(" ")
        )))
    }
}

/// The packages an `apt-get` command would remove, from a simulated run (`-s`): its `Remv NAME
/// [VERSION]` lines. Empty if the simulation cannot run.
fn apt_would_remove(args: &[&str]) -> Vec<String> {
    let out = Command::new("apt-get")
        .arg("-s")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    match out {
        Ok(out) => removals(&String::from_utf8_lossy(&out.stdout)),
        Err(_) => Vec::new(),
    }
}

/// Parses the `Remv NAME …` lines of `apt-get -s` output.
pub fn removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn install_with_apt() -> Result<PathBuf> {
    eprintln!("wave: {QEMU} is not on PATH; installing Debian's qemu-system-arm (running as root)");
    run_apt(&["update"])?;
    let install = [
        "install",
        "-y",
        "--no-install-recommends",
        "qemu-system-arm",
    ];
    let removed = apt_would_remove(&install[..]);
    if !removed.is_empty() {
        eprintln!(
            "wave: note: installing qemu-system-arm makes apt remove {} package(s): {} \
             (apt resolves a version conflict that way; reinstall them afterwards if you need them)",
            removed.len(),
            removed.join(", ")
        );
    }
    run_apt(&install)?;
    which(QEMU).ok_or_else(|| {
        Error::Qemu(format!(
            "installed qemu-system-arm but {QEMU} is still not on PATH ({}); {INSTALL_HINT}",
            std::env::var("PATH").unwrap_or_default()
        ))
    })
}

fn locate() -> Result<Qemu> {
    let path = match std::env::var(QEMU_ENV) {
        Ok(p) if !p.is_empty() => which(&p).ok_or_else(|| {
            Error::Qemu(format!(
                "${QEMU_ENV} is `{p}`, which is not an executable; fix or unset it"
            ))
        })?,
        _ => match which(QEMU) {
            Some(p) => p,
            None if can_apt_install() => install_with_apt()?,
            None => {
                return Err(Error::Qemu(format!(
                    "{QEMU} was not found on PATH; {INSTALL_HINT}"
                )))
            }
        },
    };
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|source| Error::Spawn {
            program: path.display().to_string(),
            hint: "Is it a working QEMU binary? Reinstall qemu-system-arm.",
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text);
    match version {
        Some(v) if v < TESTED_VERSION => eprintln!(
            "wave: warning: {} is QEMU {}.{}.{}, older than {}.{}, the version Wave is tested \
             with; if the boot misbehaves, upgrade QEMU",
            path.display(),
            v.0,
            v.1,
            v.2,
            TESTED_VERSION.0,
            TESTED_VERSION.1
        ),
        Some(_) => {}
        None => eprintln!(
            "wave: warning: could not read the version of {} (`--version` printed {:?})",
            path.display(),
            text.lines().next().unwrap_or("")
        ),
    }
    Ok(Qemu { path, version })
}

/// A usable QEMU, located (and if needed installed) once per process.
pub fn qemu() -> Result<Qemu> {
    static QEMU_FOUND: OnceLock<Result<Qemu, String>> = OnceLock::new();
    QEMU_FOUND
        .get_or_init(|| locate().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Qemu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_versions() {
        assert_eq!(
            parse_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some((7, 2, 22))
        );
        assert_eq!(
            parse_version("QEMU emulator version 9.1.0\n"),
            Some((9, 1, 0))
        );
        assert_eq!(
            parse_version("QEMU emulator version 6.2\n"),
            Some((6, 2, 0))
        );
        assert_eq!(parse_version("nonsense"), None);
        assert!(parse_version("QEMU emulator version 6.2.0").unwrap() < TESTED_VERSION);
        assert!(parse_version("QEMU emulator version 10.0.0").unwrap() > TESTED_VERSION);
    }

    #[test]
    fn reads_removals_from_an_apt_simulation() {
        let sim = "NOTE: This is only a simulation!\n\
                   Remv qemu-utils [1:10.0.2+ds-2]\n\
                   Inst qemu-system-arm (1:7.2+dfsg-7 Debian:12)\n\
                   Conf qemu-system-arm (1:7.2+dfsg-7 Debian:12)\n";
        assert_eq!(removals(sim), vec!["qemu-utils".to_string()]);
        assert!(removals("Inst a (1)\nConf a (1)\n").is_empty());
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("definitely-not-a-program-wave").is_none());
    }
}
