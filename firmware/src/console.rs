//! The console: the PL011 UART from the device tree, one lock that serializes every core's
//! output, the `println!` macro, and the `defmt` global logger.
//!
//! Wire format (docs/firmware.md): plain text, plus `defmt` frames sent as `0x01`, the
//! rzCOBS-encoded frame, `0x00`. Text is filtered so it never contains those two bytes.
//!
//! Before the MMU is on, memory is Device-typed and exclusive (atomic read-modify-write)
//! accesses are not usable, so the lock is bypassed until [`enable_locking`]; only the boot
//! core runs then.

use arm_pl011_uart::{PL011Registers, Uart};
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use safe_mmio::UniqueMmioPointer;

struct Cell(UnsafeCell<Option<Uart<'static>>>);
// SAFETY: the UART is only touched by the holder of LOCK (or, before locking is enabled, by
// the only running core).
unsafe impl Sync for Cell {}

static UART: Cell = Cell(UnsafeCell::new(None));
static LOCK: AtomicBool = AtomicBool::new(false);
/// Stack slot + 1 of the core holding the lock; 0 when free.
static OWNER: AtomicUsize = AtomicUsize::new(0);
static LOCKING: AtomicBool = AtomicBool::new(false);

/// Starts the console on the PL011 at `base`.
///
/// # Safety
/// `base` must be a PL011's register block, accessible (identity-mapped device memory, or the
/// MMU off), and nothing else may drive that UART. Call once, on the boot core, before any
/// other core runs.
pub unsafe fn init(base: usize) {
    let Some(ptr) = NonNull::new(base as *mut PL011Registers) else {
        return;
    };
    // SAFETY: the caller guarantees `base` is an exclusively owned PL011 register block.
    let regs = unsafe { UniqueMmioPointer::new(ptr) };
    // SAFETY: single core, no lock holder yet (caller's contract).
    unsafe { *UART.0.get() = Some(Uart::new(regs)) };
}

/// Turns on the cross-core lock; call once the MMU (and so atomics) work, before starting
/// other cores.
pub fn enable_locking() {
    LOCKING.store(true, Ordering::Release);
}

/// This core's stack slot (set by the entry code in TPIDR_EL1).
pub fn current_slot() -> usize {
    let slot: usize;
    // SAFETY: reading TPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, tpidr_el1", out(reg) slot, options(nomem, nostack)) };
    slot
}

/// Exclusive use of the console until dropped. Interrupts are masked while it is held.
pub struct ConsoleGuard {
    daif: u64,
    took: bool,
}

/// Takes the console lock. If this core already holds it (a fault while printing), output
/// goes ahead without it. With `emergency`, gives up waiting after a bounded spin so a panic
/// or fault report gets out even if another core died holding the lock.
pub fn lock(emergency: bool) -> ConsoleGuard {
    let daif: u64;
    // SAFETY: saving DAIF and masking interrupts affects only this core's interrupt state,
    // which the guard restores.
    unsafe {
        core::arch::asm!("mrs {}, daif", "msr daifset, #0xf", out(reg) daif, options(nostack));
    }
    let me = current_slot() + 1;
    if !LOCKING.load(Ordering::Acquire) || OWNER.load(Ordering::Relaxed) == me {
        return ConsoleGuard { daif, took: false };
    }
    let mut spins: u64 = 0;
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
        spins += 1;
        if emergency && spins > 50_000_000 {
            return ConsoleGuard { daif, took: false };
        }
    }
    OWNER.store(me, Ordering::Relaxed);
    ConsoleGuard { daif, took: true }
}

impl ConsoleGuard {
    /// Sends raw bytes (used by the defmt logger for frames).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        // SAFETY: holding the guard gives exclusive use of the UART (see `lock`).
        if let Some(uart) = unsafe { (*UART.0.get()).as_mut() } {
            for &b in bytes {
                uart.write_word(b);
            }
        }
    }
}

impl fmt::Write for ConsoleGuard {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            // Keep the framing bytes out of text.
            let b = if b == 0x00 || b == 0x01 { b'?' } else { b };
            if b == b'\n' {
                self.write_raw(b"\r");
            }
            self.write_raw(&[b]);
        }
        Ok(())
    }
}

impl Drop for ConsoleGuard {
    fn drop(&mut self) {
        if self.took {
            OWNER.store(0, Ordering::Relaxed);
            LOCK.store(false, Ordering::Release);
        }
        // SAFETY: restores the interrupt mask saved in `lock`.
        unsafe { core::arch::asm!("msr daif, {}", in(reg) self.daif, options(nostack)) };
    }
}

/// Prints a formatted line to the console, atomically with respect to other cores.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut guard = $crate::console::lock(false);
        let _ = writeln!(guard, $($arg)*);
    }};
}

/// The `defmt` logger: frames go out between `0x01` and the encoder's `0x00` terminator.
#[defmt::global_logger]
struct DefmtLogger;

struct DefmtState {
    encoder: defmt::Encoder,
    guard: Option<ConsoleGuard>,
    /// Frames started on this core while one was already open (a log call from an exception
    /// taken in the middle of a frame): they are dropped whole, so the open frame survives.
    nested: u32,
}

struct DefmtCell(UnsafeCell<DefmtState>);
// SAFETY: only used between acquire and release, i.e. while holding the console lock with
// interrupts masked.
unsafe impl Sync for DefmtCell {}

static DEFMT: DefmtCell = DefmtCell(UnsafeCell::new(DefmtState {
    encoder: defmt::Encoder::new(),
    guard: None,
    nested: 0,
}));

// SAFETY: acquire takes the console lock (masking interrupts), so frames from different
// cores never interleave; release ends the frame and drops the lock.
unsafe impl defmt::Logger for DefmtLogger {
    fn acquire() {
        let mut guard = lock(false);
        // SAFETY: we hold the console lock (see the Sync impl), or are the core that holds it.
        let state = unsafe { &mut *DEFMT.0.get() };
        if state.guard.is_some() {
            state.nested += 1;
            return;
        }
        guard.write_raw(&[0x01]);
        // The encoder's very first frame starts with a 0x00 resynchronisation byte; our framing
        // already starts every frame with 0x01, so drop it.
        state.encoder.start_frame(|b| {
            if b.iter().any(|&x| x != 0) {
                guard.write_raw(b)
            }
        });
        state.guard = Some(guard);
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: called after `acquire` on this core, which holds the lock.
        let state = unsafe { &mut *DEFMT.0.get() };
        if state.nested > 0 {
            state.nested -= 1;
            return;
        }
        if let Some(mut guard) = state.guard.take() {
            state.encoder.end_frame(|b| guard.write_raw(b));
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called between `acquire` and `release` on this core.
        let state = unsafe { &mut *DEFMT.0.get() };
        if state.nested > 0 {
            return;
        }
        if let Some(guard) = state.guard.as_mut() {
            state.encoder.write(bytes, |b| guard.write_raw(b));
        }
    }
}

defmt::timestamp!(
    "core {=usize} {=u64:us}",
    current_slot(),
    crate::time::micros()
);
