//! The ITS driver: owns the ITS registers, its tables (device, collection, command queue, the
//! one interrupt translation table) and the command queue's write pointer.

use super::{Command, GitsRegs};
use crate::board::Region;
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use safe_mmio::{field, UniqueMmioPointer};

const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct Tables {
    device: [u8; PAGE],
    collection: [u8; PAGE],
    commands: [Command; PAGE / 32],
    /// Interrupt translation table of the one device (256-byte aligned).
    itt: [u8; PAGE],
}

struct TablesCell(UnsafeCell<Tables>);
// SAFETY: only the one `Its` (see `TAKEN`) writes the tables, through `&mut self`; the ITS
// reads them.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    device: [0; PAGE],
    collection: [0; PAGE],
    commands: [[0; 4]; PAGE / 32],
    itt: [0; PAGE],
}));
/// Set once an `Its` owns `TABLES`.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The ITS, set up with flat one-page tables and an empty command queue.
pub struct Its {
    regs: UniqueMmioPointer<'static, GitsRegs>,
    /// Byte offset of the next command in the queue.
    cwriter: usize,
    /// Collections mapped so far (bit n: ICID n).
    collections: u64,
    /// The device whose events the ITT translates.
    device: Option<u32>,
}

fn table_address<T>(t: *mut T) -> u64 {
    t as u64 // identity map: the physical address is the pointer
}

impl Its {
    /// Takes over the ITS at `region` and points it at this module's tables.
    ///
    /// # Safety
    /// `region` must be the ITS's register frames from the device tree, mapped as device
    /// memory for the rest of the run, and nothing else may access them.
    pub unsafe fn new(region: Region) -> Result<Its, &'static str> {
        if (region.size as usize) < size_of::<GitsRegs>() || !region.base.is_multiple_of(65536) {
            return Err("the device tree's ITS region is too small or misaligned");
        }
        let ptr = NonNull::new(region.base as *mut GitsRegs).ok_or("the ITS is at address 0")?;
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err("the ITS is already set up");
        }
        let mut its = Its {
            // SAFETY: the caller guarantees the frames are the ITS's, mapped device memory
            // for the rest of the run and used by nothing else; size and alignment checked.
            regs: unsafe { UniqueMmioPointer::new(ptr) },
            cwriter: 0,
            collections: 0,
            device: None,
        };
        its.init_tables()?;
        Ok(its)
    }

    fn init_tables(&mut self) -> Result<(), &'static str> {
        let t = TABLES.0.get();
        // SAFETY: addresses of the static's fields only; nothing is dereferenced.
        let (device, collection, commands) = unsafe {
            (
                table_address(&raw mut (*t).device),
                table_address(&raw mut (*t).collection),
                table_address(&raw mut (*t).commands),
            )
        };
        let mut basers = field!(self.regs, baser);
        for mut reg in basers.iter() {
            let baser = reg.read();
            let pa = match (baser >> 56) & 7 {
                1 => device,
                4 => collection,
                _ => continue,
            };
            // Valid, flat, 4 KiB pages, one page.
            reg.write((1 << 63) | (baser & (0x1f << 48)) | (baser & (7 << 56)) | pa);
            if reg.read() & (1 << 63) == 0 {
                return Err("GITS_BASER not accepted");
            }
        }
        field!(self.regs, cbaser).write((1 << 63) | commands); // valid, one page
        field!(self.regs, cwriter).write(0);
        self.cwriter = 0;
        field!(self.regs, ctlr).modify(|c| c | 1); // Enabled
        Ok(())
    }

    /// The address devices write MSI data to (GITS_TRANSLATER).
    pub fn doorbell_address(&mut self) -> u64 {
        field!(self.regs, translater).ptr_mut() as u64
    }

    /// The interrupt translation table's address, for MAPD.
    pub fn itt_address(&self) -> u64 {
        // SAFETY: address of the static's field only.
        table_address(unsafe { &raw mut (*TABLES.0.get()).itt })
    }

    /// Maps collection `icid` to redistributor `rdbase` unless already done.
    pub fn map_collection(&mut self, icid: u16, rdbase: u64) -> Result<(), &'static str> {
        let bit = 1u64 << (icid & 63);
        if self.collections & bit == 0 {
            self.command(super::mapc(icid, rdbase))?;
            self.collections |= bit;
        }
        Ok(())
    }

    /// Maps `device` to the one ITT (2^`event_bits` events) unless already done; a second
    /// device is refused.
    pub fn map_device(&mut self, device: u32, event_bits: u8) -> Result<(), &'static str> {
        match self.device {
            Some(d) if d == device => Ok(()),
            Some(_) => Err("only one MSI device is supported"),
            None => {
                self.command(super::mapd(device, event_bits, self.itt_address()))?;
                self.device = Some(device);
                Ok(())
            }
        }
    }

    /// Queues `cmd` and waits until the ITS has processed it.
    pub fn command(&mut self, cmd: Command) -> Result<(), &'static str> {
        let w = self.cwriter;
        // SAFETY: the queue is this driver's (see `TAKEN`), written only through `&mut self`;
        // `w` is a multiple of 32 below the page size (wrapped below).
        unsafe {
            (&raw mut (*TABLES.0.get()).commands[w / 32]).write_volatile(cmd);
        }
        // SAFETY: a barrier has no memory-safety requirements.
        unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
        let next = (w + 32) % PAGE;
        self.cwriter = next;
        field!(self.regs, cwriter).write(next as u64);
        let done = spin_until(|| self.creadr() & !0x1f == next as u64);
        if !done {
            return Err("command queue stalled");
        }
        if self.creadr() & 1 != 0 {
            return Err("a command was rejected (GITS_CREADR.Stalled)");
        }
        Ok(())
    }

    fn creadr(&self) -> u64 {
        safe_mmio::field_shared!(*self.regs, creadr).read()
    }
}

/// Polls `done` for up to 100 ms; false if it never held.
pub fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = crate::time::deadline_after_micros(100_000);
    while !done() {
        if crate::time::ticks() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}
