//! PSCI power control through the conduit the device tree names (`hvc` or `smc`).

use smccc::{Hvc, Smc};

/// How PSCI calls reach the firmware or hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0` (QEMU `virt` without EL2 emulation).
    Hvc,
    /// `smc #0` (firmware at EL3, or QEMU with `virtualization=on`).
    Smc,
}

/// Starts the core `mpidr` at physical address `entry` with `x0 = context`.
pub fn cpu_on(
    conduit: Conduit,
    mpidr: u64,
    entry: u64,
    context: u64,
) -> Result<(), smccc::psci::Error> {
    match conduit {
        Conduit::Hvc => smccc::psci::cpu_on::<Hvc>(mpidr, entry, context),
        Conduit::Smc => smccc::psci::cpu_on::<Smc>(mpidr, entry, context),
    }
}

/// PSCI version (major, minor).
pub fn version(conduit: Conduit) -> Option<(u16, u16)> {
    let v = match conduit {
        Conduit::Hvc => smccc::psci::version::<Hvc>(),
        Conduit::Smc => smccc::psci::version::<Smc>(),
    };
    v.ok().map(|v| (v.major, v.minor))
}

/// SYSTEM_OFF: the clean end of a run. Does not return.
pub fn system_off(conduit: Conduit) -> ! {
    let _ = match conduit {
        Conduit::Hvc => smccc::psci::system_off::<Hvc>(),
        Conduit::Smc => smccc::psci::system_off::<Smc>(),
    };
    park()
}

/// SYSTEM_RESET: the failed end of a run (QEMU `-no-reboot` turns it into an exit).
pub fn system_reset(conduit: Conduit) -> ! {
    let _ = match conduit {
        Conduit::Hvc => smccc::psci::system_reset::<Hvc>(),
        Conduit::Smc => smccc::psci::system_reset::<Smc>(),
    };
    park()
}

/// Waits forever. WFI, not WFE: under QEMU TCG a WFE loop spins a host CPU, WFI halts the vCPU.
pub fn park() -> ! {
    loop {
        aarch64_cpu::asm::wfi();
    }
}
