//! The firmware's port under the agent runtime (`wave_policy::runtime::Port`): the link
//! device's doorbells, WFI sleeps bounded by the core's virtual timer, the generic timer as the
//! clock, and the console as the log.
//!
//! The runtime and the services reach the link only through [`LinkDevice`]: the shared memory
//! window, ringing a host doorbell, and routing one of the device's own vectors to a core.
//! Today the ivshmem-doorbell device implements it (below); a real IPU's endpoint function
//! would add its own implementation in a new file (docs/porting.md).

use crate::{gic, ivshmem::Ivshmem, println, time};
use core::sync::atomic::Ordering;
use wave_abi::region::RegionError;
use wave_abi::SharedRegion;
use wave_policy::runtime::{Log, Port};

/// What the firmware needs from the device that carries the link.
pub trait LinkDevice: Sync {
    /// A view of the shared region (mapped normal non-cacheable for the whole run).
    fn shared_region(&self) -> Result<SharedRegion<'static>, RegionError>;
    /// Doorbell vectors this side can be interrupted by.
    fn vectors(&self) -> u16;
    /// Rings the host's doorbell `vector` (after all earlier shared-memory writes).
    fn ring_host(&self, vector: u16);
    /// Routes this side's vector `vector` to the core in stack slot `slot`.
    fn route(&self, vector: u16, slot: usize) -> Result<(), gic::GicError>;
}

impl LinkDevice for Ivshmem {
    fn shared_region(&self) -> Result<SharedRegion<'static>, RegionError> {
        Ivshmem::shared_region(self)
    }
    fn vectors(&self) -> u16 {
        self.msix.vectors.min(gic::MAX_VECTORS as u16)
    }
    fn ring_host(&self, vector: u16) {
        self.ring(0, vector);
    }
    fn route(&self, vector: u16, slot: usize) -> Result<(), gic::GicError> {
        let (addr, data) = gic::route_msi(self.requester_id(), vector as u32, slot)?;
        self.set_vector(vector, addr, data);
        Ok(())
    }
}

/// Turns on the calling core's timer interrupt and CPU interface (its doorbell vectors must
/// already be routed to it).
pub fn enable_this_core(slot: usize) {
    gic::enable_timer(slot);
    gic::enable_cpu();
}

/// Sleeps until an interrupt or `us` microseconds. The caller has masked IRQs: an interrupt
/// that arrives between its last check and WFI stays pending and ends WFI at once.
fn wfi_for(us: u64) {
    time::arm_wakeup(us);
    // SAFETY: WFI only waits; a pending (even masked) interrupt ends it.
    unsafe { core::arch::asm!("wfi", options(nostack, preserves_flags)) };
}

/// Sleeps until an interrupt or `us` microseconds, with IRQs masked around the wait.
pub fn sleep_us(us: u64) {
    let daif: u64;
    // SAFETY: saving DAIF and masking IRQs on this core; restored below. No `nomem`, so the
    // compiler does not move the caller's shared-memory checks across the mask.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nostack)) };
    wfi_for(us);
    // SAFETY: restores this core's interrupt mask; a pending IRQ is taken here if unmasked.
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nostack)) };
}

/// Doorbell interrupts taken on `vectors` (bit v), summed.
pub fn irqs(vectors: u64) -> u64 {
    gic::MSI_COUNT
        .iter()
        .enumerate()
        .filter(|(v, _)| vectors & (1 << v) != 0)
        .map(|(_, c)| c.load(Ordering::Relaxed))
        .sum()
}

/// The port of one agent core.
pub struct IpuPort<'d> {
    dev: &'d dyn LinkDevice,
    /// This core's vectors (bit v), for counting its doorbell interrupts.
    vectors: u64,
}

impl<'d> IpuPort<'d> {
    /// The port of the core that owns `vectors` of `dev`.
    pub fn new(dev: &'d dyn LinkDevice, vectors: u64) -> Self {
        IpuPort { dev, vectors }
    }
}

impl Log for IpuPort<'_> {
    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        println!("{line}");
    }
}

impl Port for IpuPort<'_> {
    fn now_ns(&mut self) -> u64 {
        time::ticks_to_nanos(time::ticks())
    }
    fn notify(&mut self, vector: u16) {
        self.dev.ring_host(vector);
    }
    fn wait(&mut self, _mask: u64, timeout_ns: u64, still_idle: &mut dyn FnMut() -> bool) -> u64 {
        let before = irqs(self.vectors);
        // SAFETY: masking IRQs on this core only; unmasked again below.
        unsafe { core::arch::asm!("msr daifset, #2", options(nostack)) };
        if still_idle() {
            wfi_for((timeout_ns / 1000).max(1));
        }
        // SAFETY: unmasking IRQs on this core; a pending doorbell or timer IRQ is taken here.
        unsafe { core::arch::asm!("msr daifclr, #2", options(nostack)) };
        irqs(self.vectors) - before
    }
}
