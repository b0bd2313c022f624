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

/// A service an IPU core can run over the link: its index in the firmware's service table
/// (`link::SERVICES`), whose names [`BootArgs::parse`] is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceKind(pub u8);

impl ServiceKind {
    fn from_name(s: &str, known: &[&str]) -> Option<ServiceKind> {
        known
            .iter()
            .position(|k| *k == s)
            .map(|i| ServiceKind(i as u8))
    }
}

/// Most services one boot runs (one per core).
pub const MAX_SERVICES: usize = 4;

/// Which core runs which service: `(service, core)`, core = stack slot (0 = boot core).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Services {
    list: [Option<(ServiceKind, usize)>; MAX_SERVICES],
}

/// Why `wave.services=` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServicesError {
    /// An unknown service name.
    UnknownService,
    /// A core number that is not a number or beyond the firmware's cores.
    BadCore,
    /// Two services on one core, or one service twice.
    Duplicate,
    /// More than [`MAX_SERVICES`] services.
    TooMany,
}

impl core::fmt::Display for ServicesError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ServicesError::UnknownService => "unknown service name",
            ServicesError::BadCore => "core must be a number below 64",
            ServicesError::Duplicate => "each core runs one service and each service runs once",
            ServicesError::TooMany => "at most 4 services",
        })?;
        f.write_str("; write wave.services=SERVICE@CORE,... e.g. wave.services=sched@1,echo@2")
    }
}

impl Services {
    /// `SERVICE[@CORE],...`; a service without a core takes the core after the previous one
    /// (the first takes core 0).
    pub fn parse(v: &str, known: &[&str]) -> Result<Services, ServicesError> {
        let mut out = Services::default();
        let mut next_core = 0usize;
        for (i, item) in v.split(',').filter(|s| !s.is_empty()).enumerate() {
            let (name, core) = match item.split_once('@') {
                Some((n, c)) => (n, c.parse::<usize>().map_err(|_| ServicesError::BadCore)?),
                None => (item, next_core),
            };
            let kind = ServiceKind::from_name(name, known).ok_or(ServicesError::UnknownService)?;
            if core >= 64 {
                return Err(ServicesError::BadCore);
            }
            if out.iter().any(|(k, c)| k == kind || c == core) {
                return Err(ServicesError::Duplicate);
            }
            *out.list.get_mut(i).ok_or(ServicesError::TooMany)? = Some((kind, core));
            next_core = core + 1;
        }
        Ok(out)
    }

    /// One service on the boot core (what `wave.link=` asks for).
    pub fn single(kind: ServiceKind) -> Services {
        let mut s = Services::default();
        s.list[0] = Some((kind, 0));
        s
    }

    /// The assignments, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (ServiceKind, usize)> + '_ {
        self.list.iter().flatten().copied()
    }

    /// True if no service runs (a boot-only run).
    pub fn is_empty(&self) -> bool {
        self.list[0].is_none()
    }

    /// The service core `core` runs, if any.
    pub fn on_core(&self, core: usize) -> Option<ServiceKind> {
        self.iter().find(|(_, c)| *c == core).map(|(k, _)| k)
    }
}

/// Parsed boot arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootArgs {
    /// How to end the run.
    pub exit: ExitMethod,
    /// Failure to inject after the boot report, if any.
    pub inject: Option<Inject>,
    /// Services to run over the link after the boot report (`wave.services=`, or the older
    /// `wave.link=SERVICE`, which runs it on core 0); empty for a boot-only run.
    pub services: Services,
    /// A refused `wave.services=` value (the run ends with a boot error saying why).
    pub services_error: Option<ServicesError>,
    /// Idle time an agent core polls before it sleeps (`wave.spin_us=`), if given.
    pub spin_us: Option<u64>,
    /// Count the scheduling agent's instructions and cycles with the PMU (`wave.pmu=1`).
    pub pmu: bool,
}

impl BootArgs {
    /// Parses `bootargs`; unknown words (a real board's kernel arguments) are ignored.
    /// `services` are the names of the services the firmware has, in table order.
    pub fn parse(bootargs: &str, services: &[&str]) -> Self {
        let mut args = BootArgs {
            exit: ExitMethod::Psci,
            inject: None,
            services: Services::default(),
            services_error: None,
            spin_us: None,
            pmu: false,
        };
        for word in bootargs.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("wave.exit", "semihosting")) => args.exit = ExitMethod::Semihosting,
                Some(("wave.exit", "psci")) => args.exit = ExitMethod::Psci,
                Some(("wave.link", v)) => {
                    if let Some(k) = ServiceKind::from_name(v, services) {
                        args.services = Services::single(k);
                    }
                }
                Some(("wave.services", v)) => match Services::parse(v, services) {
                    Ok(s) => args.services = s,
                    Err(e) => args.services_error = Some(e),
                },
                Some(("wave.spin_us", v)) => args.spin_us = v.parse().ok(),
                Some(("wave.pmu", v)) => args.pmu = v == "1",
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

    const KNOWN: [&str; 2] = ["echo", "sched"];
    const ECHO: ServiceKind = ServiceKind(0);
    const SCHED: ServiceKind = ServiceKind(1);

    fn parse(s: &str) -> BootArgs {
        BootArgs::parse(s, &KNOWN)
    }

    #[test]
    fn defaults_to_psci_without_injection() {
        let none = BootArgs {
            exit: ExitMethod::Psci,
            inject: None,
            services: Services::default(),
            services_error: None,
            spin_us: None,
            pmu: false,
        };
        assert_eq!(parse(""), none);
        assert!(parse("wave.pmu=1").pmu && !parse("wave.pmu=0").pmu);
        let a = parse("console=ttyAMA0 root=/dev/vda wave.bogus=1 wave.test= wave.link=x");
        assert_eq!(a, none);
        assert_eq!(parse("wave.link=echo").services, Services::single(ECHO));
        assert_eq!(parse("wave.link=sched").services.on_core(0), Some(SCHED));
    }

    #[test]
    fn assigns_services_to_cores() {
        let a = parse("wave.services=sched@1,echo@2 wave.spin_us=5");
        let got: heapless::Vec<_, 4> = a.services.iter().collect();
        assert_eq!(&got[..], &[(SCHED, 1), (ECHO, 2)]);
        assert_eq!((a.services_error, a.spin_us), (None, Some(5)));
        // Without cores: consecutive from core 0.
        let s = Services::parse("echo,sched", &KNOWN).unwrap();
        assert_eq!(s.on_core(0), Some(ECHO));
        assert_eq!(s.on_core(1), Some(SCHED));
        assert_eq!(Services::parse("", &KNOWN), Ok(Services::default()));
        for (bad, why) in [
            ("mem@1", ServicesError::UnknownService),
            ("sched@x", ServicesError::BadCore),
            ("sched@64", ServicesError::BadCore),
            ("sched@1,echo@1", ServicesError::Duplicate),
            ("sched,sched", ServicesError::Duplicate),
        ] {
            assert_eq!(Services::parse(bad, &KNOWN), Err(why), "{bad}");
        }
        let a = parse("wave.services=bogus");
        assert!(a.services.is_empty());
        assert_eq!(a.services_error, Some(ServicesError::UnknownService));
    }

    #[test]
    fn reads_exit_and_test_words() {
        let a = parse("  wave.exit=semihosting\twave.test=fault ");
        assert_eq!(a.exit, ExitMethod::Semihosting);
        assert_eq!(a.inject, Some(Inject::Fault));
        assert_eq!(parse("wave.test=panic").inject, Some(Inject::Panic));
        assert_eq!(
            parse("wave.test=hang wave.exit=psci").inject,
            Some(Inject::Hang)
        );
        // The last word wins.
        assert_eq!(
            parse("wave.exit=semihosting wave.exit=psci").exit,
            ExitMethod::Psci
        );
    }
}
