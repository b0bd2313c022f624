//! Arm semihosting `SYS_EXIT`: ends a QEMU run (`-semihosting`) with an exit code.
//!
//! Only for test runs: on a board without a debugger the `hlt` traps as an undefined
//! instruction.

const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Ends the QEMU process with `code` as its exit status.
pub fn exit(code: u32) -> ! {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code as u64];
    // SAFETY: the semihosting call reads the two-word parameter block, which lives on this
    // stack for the duration of the call; it does not touch other memory.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack),
        );
    }
    crate::psci::park()
}
