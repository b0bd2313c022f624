//! Failure paths: an injected data abort (exit 3 with ESR/EC and the core), a stack overflow into
//! the guard page (exit 3), an injected panic (exit 2 with file:line), and an injected hang,
//! which only the runner's timeout ends (QEMU is killed and reaped).

use std::time::Duration;

use wave_qemu::{ExitCode, Inject};
use wave_tests::{boot, config, process_gone, show, BootConfig, BootStatus};

fn injected(inject: Inject, smp: u32, timeout: Duration) -> (BootConfig, wave_tests::BootOutcome) {
    let cfg = BootConfig {
        inject: Some(inject),
        timeout,
        ..config(smp)
    };
    let outcome = boot(&cfg);
    (cfg, outcome)
}

#[test]
fn fault_reports_esr_and_core_and_exits_3() {
    let (cfg, outcome) = injected(Inject::Fault, 2, wave_tests::RUN_TIMEOUT);
    assert_eq!(outcome.status, BootStatus::Exited(3), "{}", show(&outcome));
    assert_eq!(outcome.verdict(&cfg).exit_code(), ExitCode::CpuException);
    let c = &outcome.console;
    let esr = c
        .lines()
        .find(|l| l.contains("ESR"))
        .unwrap_or_else(|| panic!("no ESR line{}", show(&outcome)));
    assert!(
        esr.contains("EC 0x") || esr.contains("EC=0x") || esr.contains("EC: 0x"),
        "the ESR line names no exception class: {esr}{}",
        show(&outcome)
    );
    let core_line = c
        .lines()
        .find(|l| l.contains("exception") && l.contains("core "))
        .unwrap_or_else(|| panic!("no line names the faulting core{}", show(&outcome)));
    let core: u32 = core_line
        .split("core ")
        .nth(1)
        .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the core number in: {core_line}"));
    assert!(core < cfg.smp, "faulting core {core} of {}", cfg.smp);
    assert!(c.contains("ELR") && c.contains("FAR"), "{}", show(&outcome));
}

#[test]
fn panic_reports_file_line_and_exits_2() {
    let (cfg, outcome) = injected(Inject::Panic, 1, wave_tests::RUN_TIMEOUT);
    assert_eq!(outcome.status, BootStatus::Exited(2), "{}", show(&outcome));
    assert_eq!(outcome.verdict(&cfg).exit_code(), ExitCode::Panic);
    let has_location = |l: &str| {
        l.split(".rs:")
            .nth(1)
            .is_some_and(|rest| rest.starts_with(|ch: char| ch.is_ascii_digit()))
    };
    let line = outcome
        .console
        .lines()
        .find(|l| l.contains("panic") && has_location(l))
        .unwrap_or_else(|| panic!("no panic line with file.rs:LINE{}", show(&outcome)));
    let message = line.rsplit(": ").next().unwrap_or("");
    assert!(
        !message.trim().is_empty(),
        "panic line without a message: {line}"
    );
}

#[test]
fn hang_is_ended_by_the_timeout_and_qemu_is_killed() {
    let (cfg, outcome) = injected(Inject::Hang, 1, Duration::from_secs(5));
    assert_eq!(outcome.status, BootStatus::TimedOut, "{}", show(&outcome));
    assert_eq!(outcome.verdict(&cfg).exit_code(), ExitCode::TimedOut);
    assert!(
        process_gone(outcome.qemu_pid),
        "QEMU (pid {}) is still there after the timeout",
        outcome.qemu_pid
    );
    // The hang comes after the boot report, which must have been printed in full.
    assert_eq!(
        wave_qemu::cores_online(&outcome.console),
        Some((1, 1)),
        "{}",
        show(&outcome)
    );
    let explain = outcome.verdict(&cfg).explain();
    assert!(
        explain.contains("TIMEOUT") && explain.contains("last console line"),
        "{explain}"
    );
}

#[test]
fn stack_overflow_hits_the_guard_page_and_exits_3() {
    let (cfg, outcome) = injected(Inject::StackOverflow, 1, wave_tests::RUN_TIMEOUT);
    assert_eq!(outcome.status, BootStatus::Exited(3), "{}", show(&outcome));
    assert_eq!(outcome.verdict(&cfg).exit_code(), ExitCode::CpuException);
    assert!(outcome.console.contains("ESR"), "{}", show(&outcome));
    assert!(outcome.console.contains("guard page"), "{}", show(&outcome));
}
