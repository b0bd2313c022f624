//! The exit-code policy: from a finished run ([`BootOutcome`]) to a [`Verdict`], the runner's
//! exit code and a one-line explanation that decodes the firmware's exit code
//! (docs/firmware.md, "Exit codes").
//!
//! | runner exit | meaning |
//! | --- | --- |
//! | 0 | QEMU exited 0 and the console shows `cores online: N/N` with N = `--smp` |
//! | 1–4 | the firmware's own verdict, passed through: 1 boot error, 2 panic, 3 CPU exception, 4 cores missing |
//! | 5 | QEMU exited 0 but the boot report is missing or counts the wrong cores |
//! | 6 | QEMU itself failed: its own error, an unknown exit code, or killed by a signal |
//! | 124 | timeout: the runner killed QEMU |
//! | 125 | the runner could not run: build failure, QEMU missing, bad option |

use std::time::Duration;

use crate::boot::{BootOutcome, BootStatus, Inject};
use crate::console::cores_online;

/// Exit codes of `cargo wave boot` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Pass = 0,
    BootError = 1,
    Panic = 2,
    CpuException = 3,
    CoresMissing = 4,
    NoBootReport = 5,
    QemuFailed = 6,
    /// `link-test`: messages lost or corrupt, or not all answered.
    LinkFailed = 7,
    /// `demo`: a run lost requests, violated an invariant, or the firmware failed.
    DemoFailed = 8,
    /// `link-test`, `demo` with `--no-fallback`: the IPU died or stopped during the run (QEMU
    /// exited, or its heartbeat stopped); the watchdog report says which and what was in flight.
    PeerLost = 9,
    TimedOut = 124,
    RunnerError = 125,
}

/// The firmware's semihosting exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareExit {
    BootError,
    Panic,
    CpuException,
    CoresMissing,
}

impl FirmwareExit {
    /// The firmware verdict for a QEMU exit code, if it is one.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::BootError,
            2 => Self::Panic,
            3 => Self::CpuException,
            4 => Self::CoresMissing,
            _ => return None,
        })
    }

    pub fn code(self) -> i32 {
        match self {
            Self::BootError => 1,
            Self::Panic => 2,
            Self::CpuException => 3,
            Self::CoresMissing => 4,
        }
    }

    /// What the code means and where to look.
    pub fn describe(self) -> &'static str {
        match self {
            Self::BootError => "boot error: a required device-tree node or property is missing or malformed, or the image does not fit (the console says which)",
            Self::Panic => "panic (the console above shows the core, file:line and message)",
            Self::CpuException => "CPU exception (the console above shows the core, the exception kind, ESR with its exception class, ELR and FAR)",
            Self::CoresMissing => "not every core came online before the bring-up deadline",
        }
    }
}

/// How a run ended, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0 and `cores online: N/N`.
    Pass { cores: u32 },
    /// The firmware reported failure through its exit code.
    Firmware {
        exit: FirmwareExit,
        cores: Option<(u32, u32)>,
        injected: Option<Inject>,
    },
    /// Exit 0, but the boot report does not show every expected core.
    NoBootReport {
        expected: u32,
        found: Option<(u32, u32)>,
    },
    /// QEMU failed on its own (`stderr` is its first error line, if any).
    QemuFailed {
        status: BootStatus,
        stderr: Option<String>,
    },
    /// The runner killed QEMU after `waited`.
    TimedOut {
        waited: Duration,
        last_line: Option<String>,
        injected: Option<Inject>,
    },
}

/// Judges `outcome` of a run that expected `smp` cores (and had `inject`, if any).
pub fn judge(outcome: &BootOutcome, smp: u32, inject: Option<Inject>) -> Verdict {
    let cores = cores_online(&outcome.console);
    let qemu_error = outcome
        .stderr
        .lines()
        .find(|l| l.contains("qemu-system-") || l.contains("qemu:"))
        .map(|l| l.trim().to_string());
    match outcome.status {
        BootStatus::TimedOut => Verdict::TimedOut {
            waited: outcome.wall,
            last_line: outcome
                .console
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string),
            injected: inject,
        },
        BootStatus::Exited(0) => match cores {
            Some((up, total)) if up == smp && total == smp => Verdict::Pass { cores: smp },
            found => Verdict::NoBootReport {
                expected: smp,
                found,
            },
        },
        // QEMU exits 1 on its own errors too; its stderr tells the two apart, unless the
        // firmware said it is a boot error (QEMU may also have printed a mere warning).
        BootStatus::Exited(code)
            if qemu_error.is_none()
                || code != 1
                || outcome.console.contains("wave: boot error:") =>
        {
            match FirmwareExit::from_code(code) {
                Some(exit) => Verdict::Firmware {
                    exit,
                    cores,
                    injected: inject,
                },
                None => Verdict::QemuFailed {
                    status: outcome.status,
                    stderr: qemu_error,
                },
            }
        }
        status => Verdict::QemuFailed {
            status,
            stderr: qemu_error,
        },
    }
}

impl Verdict {
    /// The runner's exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Verdict::Pass { .. } => ExitCode::Pass,
            Verdict::Firmware { exit, .. } => match exit {
                FirmwareExit::BootError => ExitCode::BootError,
                FirmwareExit::Panic => ExitCode::Panic,
                FirmwareExit::CpuException => ExitCode::CpuException,
                FirmwareExit::CoresMissing => ExitCode::CoresMissing,
            },
            Verdict::NoBootReport { .. } => ExitCode::NoBootReport,
            Verdict::QemuFailed { .. } => ExitCode::QemuFailed,
            Verdict::TimedOut { .. } => ExitCode::TimedOut,
        }
    }

    /// One line for the user.
    pub fn explain(&self) -> String {
        match self {
            Verdict::Pass { cores } => {
                format!("wave: PASS: all {cores} cores online, firmware exited 0")
            }
            Verdict::Firmware {
                exit,
                cores,
                injected,
            } => {
                let mut s = format!(
                    "wave: FAIL: firmware exit code {} = {}",
                    exit.code(),
                    exit.describe()
                );
                if *exit == FirmwareExit::CoresMissing {
                    match cores {
                        Some((up, total)) => s.push_str(&format!(" (cores online: {up}/{total})")),
                        None => s.push_str(" (no `cores online` line on the console)"),
                    }
                }
                if let Some(i) = injected {
                    s.push_str(&format!(" [expected: --inject {} was given]", i.as_str()));
                }
                s
            }
            Verdict::NoBootReport { expected, found } => match found {
                Some((up, total)) => format!(
                    "wave: FAIL: QEMU exited 0 but the console says `cores online: {up}/{total}`, \
                     expected {expected}/{expected}"
                ),
                None => format!(
                    "wave: FAIL: QEMU exited 0 but the console has no `cores online: \
                     {expected}/{expected}` line (the boot report never printed; is the console \
                     UART the one in /chosen/stdout-path?)"
                ),
            },
            Verdict::QemuFailed { status, stderr } => match (status, stderr) {
                (BootStatus::Exited(c), Some(e)) => format!(
                    "wave: FAIL: QEMU itself failed (exit code {c}) before or while running \
                         the firmware: {e}"
                ),
                (BootStatus::Exited(c), None) => format!(
                    "wave: FAIL: QEMU exited {c}, which is not one of the firmware's exit \
                         codes 0-4 (docs/firmware.md)"
                ),
                (BootStatus::Signaled(s), _) => {
                    format!("wave: FAIL: QEMU was killed by signal {s} (not by the runner)")
                }
                (BootStatus::TimedOut, _) => "wave: FAIL: QEMU timed out".into(),
            },
            Verdict::TimedOut {
                waited,
                last_line,
                injected,
            } => {
                let last = last_line
                    .as_deref()
                    .map(|l| format!("last console line: `{}`", l.trim()))
                    .unwrap_or_else(|| "the console stayed silent".into());
                let hint = match injected {
                    Some(Inject::Hang) => " [expected: --inject hang was given]".to_string(),
                    _ => {
                        "; the firmware hung or is slow: look at the last line, or raise --timeout"
                            .to_string()
                    }
                };
                format!(
                    "wave: TIMEOUT: QEMU did not exit within {:.1} s, so the runner killed it; {last}{hint}",
                    waited.as_secs_f64()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: BootStatus, console: &str, stderr: &str) -> BootOutcome {
        BootOutcome {
            status,
            console: console.into(),
            stderr: stderr.into(),
            wall: Duration::from_millis(1234),
            qemu_pid: 1,
        }
    }

    const OK2: &str = "wave: boot report\n  cpu 0 mpidr 0x0 online (boot core)\n  cpu 1 mpidr 0x1 online\n  cores online: 2/2\nwave: boot ok in 1 ms\n";

    #[test]
    fn pass_needs_exit_zero_and_every_core() {
        let v = judge(&outcome(BootStatus::Exited(0), OK2, ""), 2, None);
        assert_eq!(v, Verdict::Pass { cores: 2 });
        assert_eq!(v.exit_code() as i32, 0);

        let v = judge(&outcome(BootStatus::Exited(0), OK2, ""), 4, None);
        assert_eq!(v.exit_code(), ExitCode::NoBootReport);
        assert!(v.explain().contains("cores online: 2/2"), "{}", v.explain());

        let v = judge(
            &outcome(BootStatus::Exited(0), "cores online: 1/2", ""),
            2,
            None,
        );
        assert_eq!(v.exit_code(), ExitCode::NoBootReport);

        let v = judge(&outcome(BootStatus::Exited(0), "nothing", ""), 1, None);
        assert_eq!(v.exit_code(), ExitCode::NoBootReport);
        assert!(v.explain().contains("no `cores online: 1/1` line"));
    }

    /// Issue 9: `boot --smp 512` is the firmware's boot error, not a QEMU failure, even though
    /// QEMU printed a warning on stderr.
    #[test]
    fn a_firmware_boot_error_wins_over_a_qemu_warning() {
        let console =
            "wave: boot error: device tree lists 512 CPUs but this image supports at most 16\n";
        let stderr = "qemu-system-aarch64: warning: ACPI table size 72493 exceeds 65536 bytes\n";
        let v = judge(&outcome(BootStatus::Exited(1), console, stderr), 512, None);
        assert_eq!(v.exit_code(), ExitCode::BootError, "{}", v.explain());
    }

    #[test]
    fn firmware_codes_are_decoded_and_passed_through() {
        for (code, expect, word) in [
            (1, ExitCode::BootError, "boot error"),
            (2, ExitCode::Panic, "panic"),
            (3, ExitCode::CpuException, "ESR"),
            (4, ExitCode::CoresMissing, "not every core"),
        ] {
            let v = judge(
                &outcome(BootStatus::Exited(code), "cores online: 3/4", ""),
                4,
                None,
            );
            assert_eq!(v.exit_code(), expect);
            assert_eq!(v.exit_code() as i32, code);
            let line = v.explain();
            assert!(
                line.contains(&format!("exit code {code}")) && line.contains(word),
                "{line}"
            );
            assert!(!line.contains('\n'));
        }
        let v = judge(
            &outcome(BootStatus::Exited(4), "cores online: 3/4", ""),
            4,
            None,
        );
        assert!(v.explain().contains("(cores online: 3/4)"));
        let v = judge(
            &outcome(BootStatus::Exited(2), "", ""),
            4,
            Some(Inject::Panic),
        );
        assert!(v.explain().contains("--inject panic"));
    }

    #[test]
    fn qemu_failures_are_told_apart() {
        let v = judge(
            &outcome(
                BootStatus::Exited(1),
                "",
                "qemu-system-aarch64: unable to find CPU model 'bogus'\n",
            ),
            4,
            None,
        );
        assert_eq!(v.exit_code(), ExitCode::QemuFailed);
        assert!(v.explain().contains("QEMU itself failed (exit code 1)"));
        assert!(v.explain().contains("unable to find CPU model"));

        let v = judge(&outcome(BootStatus::Exited(77), "", ""), 4, None);
        assert_eq!(v.exit_code(), ExitCode::QemuFailed);
        assert!(v.explain().contains("QEMU exited 77"));

        let v = judge(&outcome(BootStatus::Signaled(9), "", ""), 4, None);
        assert_eq!(v.exit_code(), ExitCode::QemuFailed);
        assert!(v.explain().contains("signal 9"));
    }

    #[test]
    fn timeout_says_how_long_and_the_last_line() {
        let v = judge(
            &outcome(BootStatus::TimedOut, "a\n  cores online: 1/1\n\n", ""),
            1,
            None,
        );
        assert_eq!(v.exit_code() as i32, 124);
        let line = v.explain();
        assert!(
            line.contains("1.2 s") && line.contains("`cores online: 1/1`"),
            "{line}"
        );
        let v = judge(
            &outcome(BootStatus::TimedOut, "", ""),
            1,
            Some(Inject::Hang),
        );
        assert!(v.explain().contains("silent") && v.explain().contains("--inject hang"));
    }
}
