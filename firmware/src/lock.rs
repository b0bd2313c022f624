//! A spin lock for driver state several cores share (the GIC's routing state, a device's
//! MSI-X table). The holder runs with IRQs masked, so an interrupt handler on the same core can
//! never wait for a lock its own core holds. Needs the MMU on (exclusive accesses), like every
//! cross-core atomic in the image; before that, drivers are reached through `&mut`.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// Runs `f` with IRQs masked on this core, restoring the previous mask afterwards.
pub fn without_irqs<R>(f: impl FnOnce() -> R) -> R {
    let daif = mask_irqs();
    let r = f();
    restore(daif);
    r
}

fn mask_irqs() -> u64 {
    let daif: u64;
    // SAFETY: saving DAIF and masking IRQs affects only this core's interrupt state, which
    // the caller restores. No `nomem`: memory accesses must not move across the mask.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nostack)) };
    daif
}

fn restore(daif: u64) {
    // SAFETY: restores an interrupt mask saved by `mask_irqs` on this core.
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nostack)) };
}

/// A value behind a spin lock whose holder runs with IRQs masked.
pub struct IrqLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and `lock` hands out at most one guard at
// a time (the flag is taken with acquire ordering and released with release ordering), so
// moving `T` between cores is all sharing the lock requires.
unsafe impl<T: Send> Sync for IrqLock<T> {}

impl<T> IrqLock<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        IrqLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Waits for the lock, with IRQs masked on this core until the guard is dropped. Never
    /// call from an interrupt handler, nor while this core already holds the lock.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let daif = mask_irqs();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        IrqGuard { lock: self, daif }
    }

    /// The value, without locking: `&mut self` proves nobody else can reach it.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// Exclusive access to an [`IrqLock`]'s value; unlocks and restores the IRQ mask on drop.
pub struct IrqGuard<'a, T> {
    lock: &'a IrqLock<T>,
    daif: u64,
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only use of the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        restore(self.daif);
    }
}
