//! Ending the run: pass or fail, through semihosting (QEMU tests) or PSCI (any board).

use crate::bootargs::{exit_code, ExitMethod};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use wave_boot::psci::{self, Conduit};

static METHOD: AtomicU8 = AtomicU8::new(0); // 0 = PSCI, 1 = semihosting
static SMC: AtomicBool = AtomicBool::new(false);
static ENDING: AtomicBool = AtomicBool::new(false);

/// Records how to end the run (from the boot arguments and the DT's PSCI node).
pub fn configure(method: ExitMethod, conduit: Conduit) {
    METHOD.store((method == ExitMethod::Semihosting) as u8, Ordering::Relaxed);
    SMC.store(conduit == Conduit::Smc, Ordering::Relaxed);
}

/// The PSCI conduit recorded by [`configure`] (HVC until then).
pub fn conduit() -> Conduit {
    if SMC.load(Ordering::Relaxed) {
        Conduit::Smc
    } else {
        Conduit::Hvc
    }
}

fn describe(code: u32) -> &'static str {
    match code {
        exit_code::PASS => "pass",
        exit_code::BOOT_ERROR => "boot error",
        exit_code::PANIC => "panic",
        exit_code::EXCEPTION => "CPU exception",
        exit_code::CORES_MISSING => "cores missing",
        _ => "failure",
    }
}

/// Ends the run with `code` (0 = pass). Never returns. If a second core gets here while the
/// first is ending the run, it just parks.
pub fn end(code: u32) -> ! {
    // Load and store rather than swap: this also runs before the MMU is on, when exclusive
    // accesses are unusable. Two cores racing here both end the run the same way.
    if ENDING.load(Ordering::Acquire) {
        psci::park();
    }
    ENDING.store(true, Ordering::Release);
    let semihosting = METHOD.load(Ordering::Relaxed) == 1;
    crate::println!(
        "wave: {} (exit code {code}); {}",
        describe(code),
        match (semihosting, code) {
            (true, _) => "semihosting exit",
            (false, 0) => "PSCI SYSTEM_OFF",
            (false, _) => "PSCI SYSTEM_RESET",
        }
    );
    if semihosting {
        wave_boot::semihosting::exit(code);
    }
    if code == exit_code::PASS {
        psci::system_off(conduit())
    } else {
        psci::system_reset(conduit())
    }
}
