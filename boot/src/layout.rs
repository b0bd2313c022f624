//! Sizes shared by the entry code, the page-table setup and the firmware: how many cores the
//! image supports and how each core's stacks are laid out.

/// Most cores one image brings up. A device tree listing more is a boot error.
pub const MAX_CORES: usize = 16;
/// Bytes of one page (the granule of guard pages).
pub const PAGE_SIZE: usize = 4096;
/// Main (thread) stack per core: `SP_EL0`, used by all normal code.
pub const MAIN_STACK_SIZE: usize = 256 * 1024;
/// Exception stack per core: `SP_EL1`, used by the vectors, so that a main-stack overflow
/// into its guard page can still be reported.
pub const EXCEPTION_STACK_SIZE: usize = 16 * 1024;

/// One core's stacks. Each stack sits above an unmapped guard page, so running off its bottom
/// faults instead of silently corrupting the neighbour.
#[repr(C, align(4096))]
pub struct CoreStacks {
    /// Unmapped below the main stack.
    pub main_guard: [u8; PAGE_SIZE],
    /// The main stack (grows down from the end).
    pub main: [u8; MAIN_STACK_SIZE],
    /// Unmapped below the exception stack.
    pub exception_guard: [u8; PAGE_SIZE],
    /// The exception stack (grows down from the end).
    pub exception: [u8; EXCEPTION_STACK_SIZE],
}

/// Distance between two cores' stacks.
pub const CORE_STACKS_STRIDE: usize = core::mem::size_of::<CoreStacks>();
/// Offset of the main stack's top inside [`CoreStacks`].
pub const MAIN_STACK_TOP: usize = PAGE_SIZE + MAIN_STACK_SIZE;
/// Offset of the exception stack's top inside [`CoreStacks`].
pub const EXCEPTION_STACK_TOP: usize = CORE_STACKS_STRIDE;

const _: () = assert!(CORE_STACKS_STRIDE == 2 * PAGE_SIZE + MAIN_STACK_SIZE + EXCEPTION_STACK_SIZE);
const _: () = assert!(CORE_STACKS_STRIDE.is_multiple_of(PAGE_SIZE));
