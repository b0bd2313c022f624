//! Booting the image in QEMU: start `qemu-system-aarch64`, stream its serial console through
//! the decoder (live, line by line), enforce the timeout, and always reap QEMU: a
//! [`QemuChild`] kills it when dropped, so no path (error, timeout, panic) leaves an orphan.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::defmt::DefmtDecoder;
use crate::image::Image;
use crate::{cmdline, install};
use crate::{Error, Result};

/// A deliberate failure for the firmware to produce after its boot report (`wave.test=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Inject {
    /// Read an unmapped address: a data abort (exit code 3).
    Fault,
    /// Panic (exit code 2).
    Panic,
    /// Spin forever with interrupts masked (the runner's timeout must end it).
    Hang,
    /// Recurse until the main stack hits its guard page (a fault, exit code 3).
    StackOverflow,
}

impl Inject {
    /// The value of `wave.test=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Inject::Fault => "fault",
            Inject::Panic => "panic",
            Inject::Hang => "hang",
            Inject::StackOverflow => "stack-overflow",
        }
    }
}

/// One QEMU run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Cores (`-smp`); the run passes only if all of them come online.
    pub smp: u32,
    /// Guest RAM (`-m`), e.g. `1G`, `512M`.
    pub mem: String,
    /// CPU model (`-cpu`).
    pub cpu: String,
    /// GIC version, 2 or 3.
    pub gic: u8,
    /// Wall-clock limit for the whole QEMU run.
    pub timeout: Duration,
    /// A deliberate failure to inject.
    pub inject: Option<Inject>,
    /// Extra boot-argument words.
    pub append: Vec<String>,
    /// Print the decoded console live (with `println!`, so test harnesses capture it).
    pub echo: bool,
    /// Extra QEMU arguments (devices such as the ivshmem link), appended last.
    pub extra_args: Vec<String>,
    /// Another thread can end the run early (QEMU is killed; the status is `TimedOut`).
    pub cancel: Cancel,
}

/// A flag another thread raises to end a QEMU run early (for example when the host side of a
/// link test gave up, so there is no point waiting for the guest's own timeout).
#[derive(Clone, Debug, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    /// Asks the run to end.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl PartialEq for Cancel {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Cancel {}

impl Default for BootConfig {
    fn default() -> Self {
        Self {
            smp: 4,
            mem: "1G".into(),
            cpu: "neoverse-n1".into(),
            gic: 3,
            timeout: Duration::from_secs(60),
            inject: None,
            append: Vec::new(),
            echo: true,
            extra_args: Vec::new(),
            cancel: Cancel::default(),
        }
    }
}

/// How QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootStatus {
    /// QEMU exited with this code (with semihosting: the firmware's exit code).
    Exited(i32),
    /// QEMU was killed by this signal (not by the runner).
    Signaled(i32),
    /// The timeout passed; the runner killed QEMU.
    TimedOut,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOutcome {
    pub status: BootStatus,
    /// The decoded console: text lines and decoded `defmt` frames, one per line.
    pub console: String,
    /// What QEMU printed on stderr (its own errors and warnings).
    pub stderr: String,
    /// Host wall-clock time from starting QEMU until it exited or was killed.
    pub wall: Duration,
    /// QEMU's process id; the process has been reaped when the outcome is returned.
    pub qemu_pid: u32,
}

impl BootOutcome {
    /// Judges this outcome against the configuration that produced it.
    pub fn verdict(&self, cfg: &BootConfig) -> crate::Verdict {
        crate::verdict::judge(self, cfg.smp, cfg.inject)
    }
}

/// A QEMU process that is killed and reaped when dropped.
pub struct QemuChild {
    child: Option<Child>,
}

impl QemuChild {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Non-blocking: the exit status if QEMU has exited (it is then reaped).
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => {
                let status = c.try_wait()?;
                if status.is_some() {
                    self.child = None;
                }
                Ok(status)
            }
            None => Ok(None),
        }
    }

    /// Kills and reaps QEMU.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for QemuChild {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Msg {
    Console(Vec<String>),
    Stderr(String),
}

fn spawn_reader<R: Read + Send + 'static>(
    mut pipe: R,
    tx: mpsc::Sender<Msg>,
    mut console: Option<Console>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut err_line = Vec::new();
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match console.as_mut() {
                Some(c) => {
                    let lines = c.feed(&buf[..n]);
                    if !lines.is_empty() && tx.send(Msg::Console(lines)).is_err() {
                        return;
                    }
                }
                None => {
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            let line = String::from_utf8_lossy(&err_line).into_owned();
                            err_line.clear();
                            let _ = tx.send(Msg::Stderr(line));
                        } else {
                            err_line.push(b);
                        }
                    }
                }
            }
        }
        match console.as_mut() {
            Some(c) => {
                let _ = tx.send(Msg::Console(c.finish()));
            }
            None if !err_line.is_empty() => {
                let _ = tx.send(Msg::Stderr(String::from_utf8_lossy(&err_line).into_owned()));
            }
            None => {}
        }
    })
}

#[cfg(unix)]
fn status_of(s: std::process::ExitStatus) -> BootStatus {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => BootStatus::Exited(c),
        (None, Some(sig)) => BootStatus::Signaled(sig),
        (None, None) => BootStatus::Exited(-1),
    }
}

/// Boots `image` with `cfg`: QEMU is found (or installed) first, then started; the console is
/// decoded against `image.elf`.
pub fn run_boot_with_image(cfg: &BootConfig, image: &Image) -> Result<BootOutcome> {
    let args = cmdline::qemu_args(cfg, &image.bin)?;
    let qemu = install::qemu()?;
    run_qemu(
        cfg,
        &qemu.path,
        &args,
        DefmtDecoder::from_elf_file(&image.elf),
    )
}

/// Builds the image (once per process, see [`crate::image()`]) and boots it with `cfg`.
pub fn run_boot(cfg: &BootConfig) -> Result<BootOutcome> {
    cmdline::validate(cfg)?;
    let image = crate::image::image()?;
    run_boot_with_image(cfg, &image)
}

/// Runs `program args` as QEMU under `cfg`'s timeout, decoding its stdout as the console.
pub fn run_qemu(
    cfg: &BootConfig,
    program: &Path,
    args: &[String],
    defmt: DefmtDecoder,
) -> Result<BootOutcome> {
    if cfg.echo {
        println!(
            "wave: $ {}",
            cmdline::render(&program.display().to_string(), args)
        );
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // If the runner itself dies (even by SIGKILL), QEMU must not outlive it.
    // SAFETY: the closure runs in the forked child before exec and only makes one
    // async-signal-safe system call (prctl).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: program.display().to_string(),
        hint: "Is QEMU installed and executable? (see `cargo wave boot --help`)",
        source,
    })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut qemu = QemuChild::new(child);
    let qemu_pid = qemu.id();
    let (tx, rx) = mpsc::channel();
    let readers = [
        spawn_reader(stdout, tx.clone(), Some(Console::new(defmt))),
        spawn_reader(stderr, tx, None),
    ];

    let mut console = String::new();
    let mut err_text = String::new();
    let mut handle = |msg: Msg| match msg {
        Msg::Console(lines) => {
            for line in lines {
                if cfg.echo {
                    println!("{line}");
                }
                console.push_str(&line);
                console.push('\n');
            }
        }
        Msg::Stderr(line) => {
            if cfg.echo {
                eprintln!("{line}");
            }
            err_text.push_str(&line);
            err_text.push('\n');
        }
    };

    let deadline = start + cfg.timeout;
    let (status, wall) = loop {
        match qemu
            .try_wait()
            .map_err(|e| Error::Qemu(format!("waiting for QEMU failed: {e}")))?
        {
            Some(s) => break (status_of(s), start.elapsed()),
            None if Instant::now() >= deadline || cfg.cancel.is_cancelled() => {
                qemu.kill();
                break (BootStatus::TimedOut, start.elapsed());
            }
            None => {}
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(msg) => handle(msg),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes closed: QEMU is exiting; keep polling for its status.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(5))
            }
        }
    };
    // QEMU is gone, so the pipes hit EOF soon; collect the rest of the output. A grandchild
    // holding a pipe open must not hang us: give up after a short grace period.
    let grace = Instant::now() + Duration::from_secs(2);
    loop {
        let left = grace.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(msg) => handle(msg),
            Err(_) => break,
        }
    }
    for r in readers {
        if r.is_finished() {
            let _ = r.join();
        }
    }
    Ok(BootOutcome {
        status,
        console,
        stderr: err_text,
        wall,
        qemu_pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> BootOutcome {
        let cfg = BootConfig {
            timeout: Duration::from_millis(timeout_ms),
            echo: false,
            ..Default::default()
        };
        run_qemu(
            &cfg,
            Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            DefmtDecoder::without_table("test"),
        )
        .unwrap()
    }

    #[test]
    fn collects_console_and_exit_code() {
        let o = sh(
            "printf 'a\\n\\001\\002\\000b\\n'; echo oops >&2; exit 3",
            10_000,
        );
        assert_eq!(o.status, BootStatus::Exited(3));
        assert!(o.console.starts_with("a\n"), "{:?}", o.console);
        assert!(o.console.contains("[defmt frame, 1 bytes] 02"));
        assert!(o.console.ends_with("b\n"));
        assert_eq!(o.stderr, "oops\n");
    }

    #[test]
    fn timeout_kills_and_reaps_the_process() {
        let o = sh("echo started; exec sleep 30", 300);
        assert_eq!(o.status, BootStatus::TimedOut);
        assert_eq!(o.console, "started\n");
        assert!(!Path::new(&format!("/proc/{}", o.qemu_pid)).exists());
    }

    #[test]
    fn cancel_ends_the_run_early() {
        let cfg = BootConfig {
            timeout: Duration::from_secs(60),
            echo: false,
            ..Default::default()
        };
        let cancel = cfg.cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            cancel.cancel();
        });
        let o = run_qemu(
            &cfg,
            Path::new("/bin/sh"),
            &["-c".into(), "exec sleep 30".into()],
            DefmtDecoder::without_table("test"),
        )
        .unwrap();
        t.join().unwrap();
        assert_eq!(o.status, BootStatus::TimedOut);
        assert!(
            o.wall < Duration::from_secs(30),
            "cancelled, not waited out"
        );
        assert!(!Path::new(&format!("/proc/{}", o.qemu_pid)).exists());
    }

    #[test]
    fn signals_are_reported() {
        let o = sh("kill -9 $$", 10_000);
        assert_eq!(o.status, BootStatus::Signaled(9));
    }

    #[test]
    fn drop_kills() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        drop(QemuChild::new(child));
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
