//! QEMU's command line: the one place that decides how the firmware is started (machine, CPU,
//! GIC, memory, console, semihosting exit, boot arguments), plus validation of a
//! [`BootConfig`] against what QEMU `virt` and the firmware accept.

use std::path::Path;

use crate::boot::BootConfig;
use crate::size;
use crate::{Error, Result};

/// The QEMU binary the runner drives.
pub const QEMU: &str = "qemu-system-aarch64";
/// QEMU `virt` limits: GICv2 handles 8 CPUs, GICv3 (with the high-memory redistributor region)
/// 512.
pub const MAX_SMP_GICV2: u32 = 8;
pub const MAX_SMP_GICV3: u32 = 512;

/// Checks a configuration before anything is built or started.
pub fn validate(cfg: &BootConfig) -> Result<()> {
    let max = match cfg.gic {
        2 => MAX_SMP_GICV2,
        3 => MAX_SMP_GICV3,
        other => {
            return Err(Error::Config(format!(
                "--gic {other}: QEMU virt offers GIC version 2 or 3"
            )))
        }
    };
    if cfg.smp == 0 || cfg.smp > max {
        return Err(Error::Config(format!(
            "--smp {}: with GICv{} QEMU virt supports 1..={max} cores",
            cfg.smp, cfg.gic
        )));
    }
    size::parse_size(&cfg.mem).map_err(|e| Error::Config(format!("--mem {e}")))?;
    if cfg.cpu.trim().is_empty() || cfg.cpu.contains(char::is_whitespace) {
        return Err(Error::Config(format!(
            "--cpu `{}`: give one QEMU CPU model, e.g. neoverse-n1, cortex-a76 or max \
             (`{QEMU} -cpu help` lists them)",
            cfg.cpu
        )));
    }
    if cfg.timeout.is_zero() {
        return Err(Error::Config("--timeout must be at least 1 second".into()));
    }
    if let Some(bad) = cfg
        .append
        .iter()
        .find(|w| w.chars().any(|c| c.is_control()))
    {
        return Err(Error::Config(format!(
            "--append {bad:?}: boot arguments cannot contain control characters"
        )));
    }
    Ok(())
}

/// The firmware's boot arguments (`/chosen/bootargs`, see docs/firmware.md "Boot arguments").
pub fn bootargs(cfg: &BootConfig) -> String {
    let mut words = vec!["wave.exit=semihosting".to_string()];
    if let Some(inject) = cfg.inject {
        words.push(format!("wave.test={}", inject.as_str()));
    }
    words.extend(
        cfg.append
            .iter()
            .flat_map(|w| w.split_whitespace())
            .map(str::to_string),
    );
    words.join(" ")
}

/// QEMU's arguments (after the program name) to boot `kernel` (the raw image) with `cfg`.
pub fn qemu_args(cfg: &BootConfig, kernel: &Path) -> Result<Vec<String>> {
    validate(cfg)?;
    let mem = size::qemu_size(size::parse_size(&cfg.mem).map_err(Error::Config)?);
    let kernel = kernel.to_str().ok_or_else(|| {
        Error::Config(format!(
            "the image path {} is not UTF-8; set CARGO_TARGET_DIR to a plain path",
            kernel.display()
        ))
    })?;
    let args = [
        "-machine",
        &format!("virt,gic-version={}", cfg.gic),
        "-cpu",
        &cfg.cpu,
        "-smp",
        &cfg.smp.to_string(),
        "-m",
        &mem,
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-nic",
        "none",
        "-no-reboot",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        kernel,
        "-append",
        &bootargs(cfg),
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(cfg.extra_args.iter().cloned());
    Ok(args)
}

/// Renders a command line for humans to copy into a shell (POSIX single quotes where needed).
pub fn render(program: &str, args: &[String]) -> String {
    let quote = |s: &str| {
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,./:+@%".contains(c));
        if plain {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::Inject;
    use std::time::Duration;

    fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
        let i = args.iter().position(|a| a == flag).expect(flag);
        &args[i + 1]
    }

    #[test]
    fn default_command_line() {
        let cfg = BootConfig::default();
        let args = qemu_args(&cfg, Path::new("/t/wave/wave-firmware.bin")).unwrap();
        assert_eq!(
            render(QEMU, &args),
            "qemu-system-aarch64 -machine virt,gic-version=3 -cpu neoverse-n1 -smp 4 -m 1G \
             -display none -monitor none -serial stdio -nic none -no-reboot \
             -semihosting-config enable=on,target=native -kernel /t/wave/wave-firmware.bin \
             -append wave.exit=semihosting"
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    #[test]
    fn options_reach_qemu() {
        let cfg = BootConfig {
            smp: 2,
            mem: "512M".into(),
            cpu: "cortex-a76".into(),
            gic: 2,
            timeout: Duration::from_secs(5),
            inject: Some(Inject::Fault),
            append: vec!["foo=1 bar".into(), "baz".into()],
            echo: false,
            extra_args: Vec::new(),
            cancel: Default::default(),
        };
        let args = qemu_args(&cfg, Path::new("img.bin")).unwrap();
        assert_eq!(arg_after(&args, "-machine"), "virt,gic-version=2");
        assert_eq!(arg_after(&args, "-cpu"), "cortex-a76");
        assert_eq!(arg_after(&args, "-smp"), "2");
        assert_eq!(arg_after(&args, "-m"), "512M");
        assert_eq!(arg_after(&args, "-kernel"), "img.bin");
        assert_eq!(
            arg_after(&args, "-append"),
            "wave.exit=semihosting wave.test=fault foo=1 bar baz"
        );
        assert!(render(QEMU, &args)
            .ends_with("-append 'wave.exit=semihosting wave.test=fault foo=1 bar baz'"));
    }

    #[test]
    fn inject_words() {
        for (inject, word) in [
            (Inject::Fault, "wave.test=fault"),
            (Inject::Panic, "wave.test=panic"),
            (Inject::Hang, "wave.test=hang"),
            (Inject::StackOverflow, "wave.test=stack-overflow"),
        ] {
            let cfg = BootConfig {
                inject: Some(inject),
                ..Default::default()
            };
            assert_eq!(bootargs(&cfg), format!("wave.exit=semihosting {word}"));
        }
    }

    #[test]
    fn rejects_configs_qemu_cannot_run() {
        let bad = [
            BootConfig {
                smp: 0,
                ..Default::default()
            },
            BootConfig {
                smp: 9,
                gic: 2,
                ..Default::default()
            },
            BootConfig {
                gic: 4,
                ..Default::default()
            },
            BootConfig {
                mem: "lots".into(),
                ..Default::default()
            },
            BootConfig {
                cpu: "".into(),
                ..Default::default()
            },
            BootConfig {
                timeout: Duration::ZERO,
                ..Default::default()
            },
            BootConfig {
                append: vec!["a\nb".into()],
                ..Default::default()
            },
        ];
        for cfg in bad {
            let err = qemu_args(&cfg, Path::new("x")).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{cfg:?}: {err}");
        }
        assert!(validate(&BootConfig {
            smp: 8,
            gic: 2,
            ..Default::default()
        })
        .is_ok());
        assert!(validate(&BootConfig {
            smp: 64,
            ..Default::default()
        })
        .is_ok());
    }

    #[test]
    fn render_quotes_only_when_needed() {
        let args = vec![
            "a b".to_string(),
            "it's".to_string(),
            "".to_string(),
            "x=1,y".to_string(),
        ];
        assert_eq!(render("q", &args), r"q 'a b' 'it'\''s' '' x=1,y");
    }
}
