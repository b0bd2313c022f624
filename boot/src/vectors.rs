//! The EL1 exception vector table and the register frame it saves.
//!
//! Every vector saves the interrupted context into a [`Frame`] on the exception stack
//! (`SP_EL1`) and calls the firmware's `wave_exception(kind, &mut frame)`. If that returns
//! (an interrupt that was handled), the frame is restored and the core resumes.

/// Which of the 16 vectors was taken: `origin * 4 + class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionKind(pub u64);

impl ExceptionKind {
    /// Synchronous exception (abort, undefined instruction, SVC, …).
    pub const SYNC: u64 = 0;
    /// IRQ.
    pub const IRQ: u64 = 1;
    /// FIQ.
    pub const FIQ: u64 = 2;
    /// SError (asynchronous abort).
    pub const SERROR: u64 = 3;

    /// The class: one of [`Self::SYNC`], [`Self::IRQ`], [`Self::FIQ`], [`Self::SERROR`].
    pub fn class(self) -> u64 {
        self.0 & 3
    }

    /// Human-readable class name.
    pub fn class_name(self) -> &'static str {
        match self.class() {
            Self::SYNC => "synchronous",
            Self::IRQ => "IRQ",
            Self::FIQ => "FIQ",
            _ => "SError",
        }
    }

    /// Where the exception came from (the vector table's four groups).
    pub fn origin(self) -> &'static str {
        match self.0 >> 2 {
            0 => "EL1 on SP_EL0 (normal code)",
            1 => "EL1 on SP_EL1 (inside an exception handler)",
            2 => "EL0 AArch64",
            _ => "EL0 AArch32",
        }
    }
}

/// The interrupted context, as saved by the vector entry code.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct Frame {
    /// General-purpose registers x0..x30.
    pub x: [u64; 31],
    /// ELR_EL1: where the exception was taken.
    pub elr: u64,
    /// SPSR_EL1: the interrupted PSTATE.
    pub spsr: u64,
    /// ESR_EL1: the syndrome.
    pub esr: u64,
    /// FAR_EL1: the faulting address, for aborts.
    pub far: u64,
    /// Keeps the frame a multiple of 16 bytes.
    pub _pad: u64,
}

/// Size of [`Frame`]; the assembly below depends on it.
pub const FRAME_SIZE: usize = core::mem::size_of::<Frame>();
const _: () = assert!(FRAME_SIZE == 36 * 8);
const _: () = assert!(core::mem::offset_of!(Frame, elr) == 31 * 8);
const _: () = assert!(core::mem::offset_of!(Frame, far) == 34 * 8);

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
core::arch::global_asm!(
    r#"
.macro WAVE_VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       wave_exception_entry
.endm

.section .text.wave_vectors, "ax"
.balign 0x800
.global wave_vector_table
wave_vector_table:
    WAVE_VECTOR 0
    WAVE_VECTOR 1
    WAVE_VECTOR 2
    WAVE_VECTOR 3
    WAVE_VECTOR 4
    WAVE_VECTOR 5
    WAVE_VECTOR 6
    WAVE_VECTOR 7
    WAVE_VECTOR 8
    WAVE_VECTOR 9
    WAVE_VECTOR 10
    WAVE_VECTOR 11
    WAVE_VECTOR 12
    WAVE_VECTOR 13
    WAVE_VECTOR 14
    WAVE_VECTOR 15

// x0 = kind; x0/x1 of the interrupted context already saved at [sp].
wave_exception_entry:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    stp     x30, x2, [sp, #240]
    mrs     x2, spsr_el1
    mrs     x3, esr_el1
    stp     x2, x3, [sp, #256]
    mrs     x2, far_el1
    str     x2, [sp, #272]
    mov     x1, sp
    bl      wave_exception
    ldp     x30, x2, [sp, #240]
    msr     elr_el1, x2
    ldr     x2, [sp, #256]
    msr     spsr_el1, x2
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    add     sp, sp, #{frame}
    eret
"#,
    frame = const FRAME_SIZE,
);
