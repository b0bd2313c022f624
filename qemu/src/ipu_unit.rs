//! `cargo wave ipu`: the emulated IPU as a long-running unit (`dist/systemd/wave-ipu.service`).
//! It reads the same configuration as the host shim (`/etc/wave/wave.toml`), waits for the
//! shim's link socket, derives the flashable image from the installed firmware ELF, and boots
//! it with one service per core (`wave.services=` from `[subsystems] enabled`) and the
//! ivshmem-doorbell device on the shim's socket. QEMU's command line is the runner's own
//! ([`crate::cmdline`] through [`crate::run_boot_with_image`]); this module only fills in a
//! [`BootConfig`]. The run ends when the firmware powers off (after the host published
//! STOPPED) or QEMU is killed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wave_host_shim::service::Config;

use crate::boot::{run_boot_with_image, BootConfig, BootOutcome};
use crate::error::{Error, Result};
use crate::image::write_image;

/// No wall-clock limit to speak of: a service runs until stopped.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings of an IPU unit run.
#[derive(Clone, Debug)]
pub struct IpuUnit {
    /// The shared configuration.
    pub config: Config,
    /// Firmware ELF (overrides `[ipu] firmware`).
    pub firmware: Option<PathBuf>,
    /// Where the raw image is written (`$RUNTIME_DIRECTORY` under systemd).
    pub work_dir: PathBuf,
    /// How long to wait for the host shim's link socket.
    pub wait: Duration,
}

/// The QEMU run for `cfg`: cores, services, and the link device on the shim's socket.
pub fn boot_config(cfg: &Config) -> BootConfig {
    BootConfig {
        smp: cfg.ipu_core_count(),
        timeout: FOREVER,
        append: vec![cfg.services_arg()],
        echo: true,
        extra_args: vec![
            "-chardev".into(),
            format!("socket,path={},id=ivsh", cfg.link_socket.display()),
            "-device".into(),
            format!(
                "ivshmem-doorbell,chardev=ivsh,vectors={}",
                cfg.vector_count()
            ),
        ],
        ..BootConfig::default()
    }
}

fn wait_for_socket(path: &Path, wait: Duration) -> Result<()> {
    let t = Instant::now();
    use std::os::unix::fs::FileTypeExt;
    // Only look: a test connect would be an ivshmem client, re-initialising the region.
    while !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if t.elapsed() > wait {
            return Err(Error::Qemu(format!(
                "the host shim's link socket {} did not come up within {} s; start the host \
                 shim first (`systemctl start wave-host`, or `wave-host run`)",
                path.display(),
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Boots the IPU and returns when QEMU ends.
pub fn run(u: &IpuUnit) -> Result<BootOutcome> {
    let cfg = &u.config;
    if std::env::var_os(crate::install::QEMU_ENV).is_none() && cfg.ipu_qemu != "qemu-system-aarch64"
    {
        std::env::set_var(crate::install::QEMU_ENV, &cfg.ipu_qemu);
    }
    let elf = u
        .firmware
        .clone()
        .unwrap_or_else(|| cfg.ipu_firmware.clone());
    if !elf.is_file() {
        return Err(Error::Image(format!(
            "no firmware ELF at {}; `wave-host install` copies target/wave/wave-firmware.elf \
             there (run `cargo wave image` first), or pass --firmware PATH",
            elf.display()
        )));
    }
    let image = write_image(&elf, &u.work_dir)?;
    wait_for_socket(&cfg.link_socket, u.wait)?;
    let boot = boot_config(cfg);
    crate::cmdline::validate(&boot)?;
    eprintln!(
        "wave: ipu: booting {} on {} cores ({}) against {}",
        image.bin.display(),
        boot.smp,
        cfg.services_arg(),
        cfg.link_socket.display()
    );
    run_boot_with_image(&boot, &image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_follows_the_configuration() {
        let cfg =
            Config::parse("[subsystems]\nenabled = [\"echo\"]\n[sched]\nhost_cpus = 4\n").unwrap();
        let b = boot_config(&cfg);
        assert_eq!(b.smp, 2);
        assert_eq!(b.append, ["wave.services=echo@1"]);
        let args = crate::cmdline::qemu_args(&b, Path::new("/fw.bin"))
            .unwrap()
            .join(" ");
        assert!(
            args.contains("-chardev socket,path=/run/wave/ivshmem.sock,id=ivsh"),
            "{args}"
        );
        assert!(
            args.contains(&format!("vectors={}", cfg.vector_count())),
            "{args}"
        );
        assert!(args.contains("wave.services=echo@1"), "{args}");
    }

    #[test]
    fn a_missing_firmware_says_what_to_do() {
        let u = IpuUnit {
            config: Config::default(),
            firmware: Some("/nonexistent/wave-firmware.elf".into()),
            work_dir: std::env::temp_dir(),
            wait: Duration::from_millis(1),
        };
        let e = run(&u).unwrap_err().to_string();
        assert!(
            e.contains("cargo wave image") && e.contains("--firmware"),
            "{e}"
        );
    }
}
