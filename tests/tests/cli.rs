//! The `cargo wave` command line itself, run as a developer would from the workspace root: its
//! exit status follows the documented policy.

use std::time::Duration;

use wave_tests::cargo_wave;

/// Generous: the first call may compile the runner binary.
const CLI_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn cargo_wave_boot_smp_2_passes() {
    let ran = cargo_wave(&["boot", "--smp", "2", "--timeout", "60"], CLI_TIMEOUT);
    let status = ran.status.expect("cargo wave boot did not finish");
    assert!(
        status.success(),
        "cargo wave boot --smp 2 exited {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(ran.stdout.contains("cores online: 2/2"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("wave: qemu exited 0 after"),
        "{}",
        ran.stdout
    );
}

#[test]
fn cargo_wave_boot_passes_the_panic_code_through() {
    let ran = cargo_wave(
        &["boot", "--smp", "1", "--inject", "panic", "--timeout", "60"],
        CLI_TIMEOUT,
    );
    let status = ran.status.expect("cargo wave boot did not finish");
    assert_eq!(status.code(), Some(2), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("firmware exit code 2 = panic"),
        "{}",
        ran.stdout
    );
}

#[test]
fn cargo_wave_rejects_bad_options_with_125() {
    let ran = cargo_wave(&["boot", "--mem", "lots"], CLI_TIMEOUT);
    let status = ran.status.expect("cargo wave boot did not finish");
    assert_eq!(status.code(), Some(125), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("--mem"), "{}", ran.stderr);
}
