//! Booting the firmware in QEMU with 1, 2 and 4 cores: QEMU exits 0, the boot report counts
//! every core, and each core has its `cpu K … online` line.

use wave_tests::{assert_all_cores_online, boot, config, show, BootStatus};

fn boots_with(smp: u32) {
    let outcome = boot(&config(smp));
    assert_eq!(outcome.status, BootStatus::Exited(0), "{}", show(&outcome));
    assert_all_cores_online(&outcome, smp);
    assert!(
        outcome.verdict(&config(smp)).exit_code() == wave_qemu::ExitCode::Pass,
        "{}",
        show(&outcome)
    );
    println!(
        "wave-tests: smp {smp}: qemu exited 0 after {:.2} s",
        outcome.wall.as_secs_f64()
    );
}

#[test]
fn boots_one_core() {
    boots_with(1);
}

#[test]
fn boots_two_cores() {
    boots_with(2);
}

#[test]
fn boots_four_cores() {
    boots_with(4);
}

#[test]
fn gicv2_board_boots_too() {
    let cfg = wave_qemu::BootConfig {
        gic: 2,
        ..config(2)
    };
    let outcome = boot(&cfg);
    assert_eq!(outcome.status, BootStatus::Exited(0), "{}", show(&outcome));
    assert_all_cores_online(&outcome, 2);
}
