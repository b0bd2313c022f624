//! `wave-host install`: puts the binaries, the systemd units and the default configuration in
//! place under a prefix (default `/`, i.e. `/usr/local/bin`, `/etc/systemd/system`,
//! `/etc/wave/wave.toml`, `/usr/local/share/wave/`). `--dry-run` prints the plan and writes
//! nothing. An existing configuration is never overwritten (the operator's edits win).

use std::path::{Path, PathBuf};

/// The host shim's unit.
pub const HOST_UNIT: &str = include_str!("../../../dist/systemd/wave-host.service");
/// The emulated IPU's unit.
pub const IPU_UNIT: &str = include_str!("../../../dist/systemd/wave-ipu.service");

/// What to install from where.
#[derive(Clone, Debug)]
pub struct InstallPlan {
    /// Root everything goes under (`/` on a real install, a temp dir in tests).
    pub prefix: PathBuf,
    /// Binaries to copy into `usr/local/bin` (the running `wave-host`, and `cargo-wave` if found).
    pub binaries: Vec<PathBuf>,
    /// Firmware image (and ELF) to copy into `usr/local/share/wave`, if found.
    pub firmware: Vec<PathBuf>,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Copy a file (mode).
    Copy(PathBuf, PathBuf, u32),
    /// Write text (mode).
    Write(PathBuf, &'static str, u32),
    /// Keep an existing file.
    Keep(PathBuf),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Copy(from, to, m) => write!(
                f,
                "copy {} -> {} (mode {m:o})",
                from.display(),
                to.display()
            ),
            Step::Write(to, _, m) => write!(f, "write {} (mode {m:o})", to.display()),
            Step::Keep(p) => write!(f, "keep {} (already there; not overwritten)", p.display()),
        }
    }
}

fn under(prefix: &Path, p: &str) -> PathBuf {
    prefix.join(p.trim_start_matches('/'))
}

impl InstallPlan {
    /// The default plan: this executable, `cargo-wave` and the firmware image if they sit
    /// beside it (a `cargo build` output directory) or under `target/wave`.
    pub fn discover(prefix: PathBuf) -> InstallPlan {
        let me = std::env::current_exe().ok();
        let dir = me.as_ref().and_then(|m| m.parent().map(Path::to_path_buf));
        let mut binaries: Vec<PathBuf> = me.into_iter().collect();
        let mut firmware = Vec::new();
        if let Some(d) = &dir {
            let cw = d.join("cargo-wave");
            if cw.is_file() {
                binaries.push(cw);
            }
            // target/<profile>/ -> target/wave/
            if let Some(t) = d.parent() {
                for f in ["wave-firmware.bin", "wave-firmware.elf"] {
                    let p = t.join("wave").join(f);
                    if p.is_file() {
                        firmware.push(p);
                    }
                }
            }
        }
        InstallPlan {
            prefix,
            binaries,
            firmware,
        }
    }

    /// The steps, in order.
    pub fn steps(&self) -> Vec<Step> {
        let p = &self.prefix;
        let mut out = Vec::new();
        for b in &self.binaries {
            if let Some(name) = b.file_name() {
                out.push(Step::Copy(
                    b.clone(),
                    under(p, "/usr/local/bin").join(name),
                    0o755,
                ));
            }
        }
        for f in &self.firmware {
            if let Some(name) = f.file_name() {
                out.push(Step::Copy(
                    f.clone(),
                    under(p, "/usr/local/share/wave").join(name),
                    0o644,
                ));
            }
        }
        let units = under(p, "/etc/systemd/system");
        out.push(Step::Write(
            units.join("wave-host.service"),
            HOST_UNIT,
            0o644,
        ));
        out.push(Step::Write(units.join("wave-ipu.service"), IPU_UNIT, 0o644));
        let cfg = under(p, super::config::DEFAULT_PATH);
        if cfg.exists() {
            out.push(Step::Keep(cfg));
        } else {
            out.push(Step::Write(cfg, super::config::DEFAULT_FILE, 0o644));
        }
        out
    }

    /// Carries out the steps (or only prints them with `dry_run`). Returns them.
    pub fn apply(&self, dry_run: bool) -> Result<Vec<Step>, String> {
        use std::os::unix::fs::PermissionsExt;
        let steps = self.steps();
        for s in &steps {
            println!(
                "wave-host: install: {}{s}",
                if dry_run { "(dry run) " } else { "" }
            );
            if dry_run {
                continue;
            }
            let (to, mode) = match s {
                Step::Copy(_, to, m) | Step::Write(to, _, m) => (to, *m),
                Step::Keep(_) => continue,
            };
            if let Some(d) = to.parent() {
                std::fs::create_dir_all(d)
                    .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            }
            let r = match s {
                Step::Copy(from, ..) => std::fs::copy(from, to).map(|_| ()),
                Step::Write(_, text, _) => std::fs::write(to, text),
                Step::Keep(_) => Ok(()),
            };
            r.and_then(|_| std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)))
                .map_err(|e| {
                    format!(
                        "cannot install {}: {e} (run as root, or pass --prefix DIR)",
                        to.display()
                    )
                })?;
        }
        if !dry_run && self.prefix == Path::new("/") {
            println!("wave-host: install: done; now `systemctl daemon-reload && systemctl enable --now wave-host wave-ipu`");
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_into_a_prefix_and_keeps_an_edited_config() {
        let dir = std::env::temp_dir().join(format!("wave-install-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("src-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let plan = InstallPlan {
            prefix: dir.join("root"),
            binaries: vec![bin],
            firmware: vec![],
        };
        let dry = plan.apply(true).unwrap();
        assert!(!dir.join("root").exists(), "a dry run writes nothing");
        assert_eq!(dry.len(), 4);
        plan.apply(false).unwrap();
        let root = dir.join("root");
        assert!(root.join("usr/local/bin/src-bin").is_file());
        let unit =
            std::fs::read_to_string(root.join("etc/systemd/system/wave-host.service")).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/wave-host run"));
        let cfg = root.join("etc/wave/wave.toml");
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            super::super::config::DEFAULT_FILE
        );
        std::fs::write(&cfg, "[sched]\npolicy = \"fifo\"\n").unwrap();
        let again = plan.apply(false).unwrap();
        assert!(again.contains(&Step::Keep(cfg.clone())));
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            "[sched]\npolicy = \"fifo\"\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
