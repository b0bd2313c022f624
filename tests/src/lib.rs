//! Shared helpers of the end-to-end tests: boot the firmware through the `wave-qemu` library
//! (the image is built once per test binary), check the boot report, run `cargo wave` as a
//! subprocess under a timeout.
//!
//! Every helper fails with a message that says what was expected and shows the console, so a
//! red test explains itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use wave_qemu::{cores_online, BootConfig, BootOutcome, BootStatus, Inject};

/// Timeout for runs expected to finish by themselves (boot takes well under a second on TCG).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A configuration with `smp` cores and the default board.
pub fn config(smp: u32) -> BootConfig {
    BootConfig {
        smp,
        timeout: RUN_TIMEOUT,
        ..Default::default()
    }
}

/// Boots with `cfg`; panics (failing the test) if QEMU could not be run at all.
pub fn boot(cfg: &BootConfig) -> BootOutcome {
    match wave_qemu::run_boot(cfg) {
        Ok(outcome) => outcome,
        Err(e) => panic!("could not boot the firmware in QEMU: {e}"),
    }
}

/// `"\n--- console ---\n…"` for assertion messages.
pub fn show(outcome: &BootOutcome) -> String {
    format!(
        "\n--- status: {:?} after {:?} ---\n--- console ---\n{}--- qemu stderr ---\n{}",
        outcome.status, outcome.wall, outcome.console, outcome.stderr
    )
}

/// The console line that reports core `k` online (`cpu K mpidr … online`), if any.
pub fn cpu_online_line(console: &str, k: u32) -> Option<&str> {
    let prefix = format!("cpu {k} ");
    console
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix) && l.contains("online"))
}

/// Asserts the boot report shows every one of `smp` cores online.
pub fn assert_all_cores_online(outcome: &BootOutcome, smp: u32) {
    assert_eq!(
        cores_online(&outcome.console),
        Some((smp, smp)),
        "expected `cores online: {smp}/{smp}`{}",
        show(outcome)
    );
    let reports = outcome
        .console
        .lines()
        .filter(|l| l.contains("cores online:"))
        .count();
    assert_eq!(
        reports,
        1,
        "`cores online` must be printed exactly once{}",
        show(outcome)
    );
    for k in 0..smp {
        assert!(
            cpu_online_line(&outcome.console, k).is_some(),
            "no `cpu {k} … online` line{}",
            show(outcome)
        );
    }
    assert!(
        cpu_online_line(&outcome.console, smp).is_none(),
        "a cpu {smp} line with only {smp} cores{}",
        show(outcome)
    );
}

/// Whether process `pid` is gone (not running and reaped).
pub fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    wave_qemu::workspace::root().expect("workspace root")
}

/// Output of a subprocess run under a timeout.
#[derive(Debug)]
pub struct Ran {
    /// `None` if the timeout passed (the process was then killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with piped output, killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// `cargo wave ARGS` from the workspace root (the way a developer runs it).
pub fn cargo_wave(args: &[&str], timeout: Duration) -> Ran {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("wave").args(args).current_dir(workspace_root());
    run_with_timeout(&mut cmd, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cpu_lines() {
        let c = "  cpu 0 mpidr 0x0 online (boot core)\n  cpu 1 mpidr 0x1 online\n  cpu 12 mpidr 0xc online\n";
        assert!(cpu_online_line(c, 0).is_some());
        assert!(cpu_online_line(c, 1).is_some());
        assert!(cpu_online_line(c, 2).is_none());
        assert!(cpu_online_line(c, 12).is_some());
    }
}
