//! The `wave.*` words of `/chosen/bootargs` (see docs/firmware.md).

/// How the run reports pass or fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// PSCI SYSTEM_OFF (pass) / SYSTEM_RESET (fail): works on any board.
    Psci,
    /// Arm semihosting SYS_EXIT with a code: QEMU `-semihosting` only.
    Semihosting,
}

/// A deliberate failure to test the firmware's and the runner's failure paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// Read an unmapped address (data abort).
    Fault,
    /// `panic!`.
    Panic,
    /// Spin forever with interrupts masked.
    Hang,
    /// Recurse until the main stack hits its guard page.
    StackOverflow,
}

/// What the firmware does with the link after booting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Attach to the host's region and echo link-test requests until the host stops.
    Echo,
    /// Attach to the host's region and run the scheduling agent until the host stops.
    Sched,
}

/// Parsed boot arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootArgs {
    /// How to end the run.
    pub exit: ExitMethod,
    /// Failure to inject after the boot report, if any.
    pub inject: Option<Inject>,
    /// Link service to run after the boot report, if any.
    pub link: Option<LinkMode>,
}

impl BootArgs {
    /// Parses `bootargs`; unknown words (a real board's kernel arguments) are ignored.
    pub fn parse(bootargs: &str) -> Self {
        let mut args = BootArgs {
            exit: ExitMethod::Psci,
            inject: None,
            link: None,
        };
        for word in bootargs.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("wave.exit", "semihosting")) => args.exit = ExitMethod::Semihosting,
                Some(("wave.exit", "psci")) => args.exit = ExitMethod::Psci,
                Some(("wave.link", "echo")) => args.link = Some(LinkMode::Echo),
                Some(("wave.link", "sched")) => args.link = Some(LinkMode::Sched),
                Some(("wave.test", "fault")) => args.inject = Some(Inject::Fault),
                Some(("wave.test", "panic")) => args.inject = Some(Inject::Panic),
                Some(("wave.test", "hang")) => args.inject = Some(Inject::Hang),
                Some(("wave.test", "stack-overflow")) => args.inject = Some(Inject::StackOverflow),
                _ => {}
            }
        }
        args
    }
}

/// Exit codes of a semihosting run (docs/firmware.md).
pub mod exit_code {
    /// Every core came online and the firmware powered off cleanly.
    pub const PASS: u32 = 0;
    /// A required device-tree node is missing or malformed, or the image does not fit.
    pub const BOOT_ERROR: u32 = 1;
    /// A panic.
    pub const PANIC: u32 = 2;
    /// A CPU exception.
    pub const EXCEPTION: u32 = 3;
    /// Not every core came online in time.
    pub const CORES_MISSING: u32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_psci_without_injection() {
        let none = BootArgs {
            exit: ExitMethod::Psci,
            inject: None,
            link: None,
        };
        assert_eq!(BootArgs::parse(""), none);
        let a =
            BootArgs::parse("console=ttyAMA0 root=/dev/vda wave.bogus=1 wave.test= wave.link=x");
        assert_eq!(a, none);
        assert_eq!(BootArgs::parse("wave.link=echo").link, Some(LinkMode::Echo));
        assert_eq!(
            BootArgs::parse("wave.link=sched").link,
            Some(LinkMode::Sched)
        );
    }

    #[test]
    fn reads_exit_and_test_words() {
        let a = BootArgs::parse("  wave.exit=semihosting\twave.test=fault ");
        assert_eq!(a.exit, ExitMethod::Semihosting);
        assert_eq!(a.inject, Some(Inject::Fault));
        assert_eq!(
            BootArgs::parse("wave.test=panic").inject,
            Some(Inject::Panic)
        );
        assert_eq!(
            BootArgs::parse("wave.test=hang wave.exit=psci").inject,
            Some(Inject::Hang)
        );
        // The last word wins.
        assert_eq!(
            BootArgs::parse("wave.exit=semihosting wave.exit=psci").exit,
            ExitMethod::Psci
        );
    }
}
