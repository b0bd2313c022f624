//! The ivshmem-doorbell PCI device (1af4:1110), QEMU's stand-in for the PCIe link to the host:
//! BAR0 holds the registers (IVPosition, Doorbell), BAR1 the MSI-X table and PBA, BAR2 the
//! shared memory. This module finds it, assigns its BARs, and drives its doorbell and MSI-X
//! table; the link protocol on top lives in `link`.

use crate::board::{Pcie, Region, WindowKind};
use crate::pci::{self, Bar, BarAllocator, BarKind, Bdf, ConfigSpace, MsixInfo, Window};
use core::fmt;

/// Vendor and device ID of ivshmem.
pub const ID: (u16, u16) = (0x1af4, 0x1110);

const REG_IVPOSITION: u64 = 0x08;
const REG_DOORBELL: u64 = 0x0c;

/// Why the device is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvshmemError {
    /// BAR assignment failed.
    Bars(pci::BarError),
    /// A BAR the driver needs is missing.
    MissingBar(u8),
    /// No MSI-X capability (plain `ivshmem-plain`, which cannot ring doorbells).
    NoMsix,
}

impl fmt::Display for IvshmemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvshmemError::Bars(e) => write!(f, "ivshmem: {e}"),
            IvshmemError::MissingBar(i) => write!(f, "ivshmem: BAR{i} is missing"),
            IvshmemError::NoMsix => write!(
                f,
                "ivshmem has no MSI-X: use `-device ivshmem-doorbell`, not ivshmem-plain"
            ),
        }
    }
}

/// A found and configured ivshmem-doorbell device.
#[derive(Clone, Copy, Debug)]
pub struct Ivshmem {
    /// Where it is on the bus.
    pub bdf: Bdf,
    /// BAR0: registers.
    pub regs: u64,
    /// The MSI-X table (in BAR1).
    pub msix_table: u64,
    /// The pending-bit array (in BAR1).
    pub msix_pba: u64,
    /// MSI-X layout.
    pub msix: MsixInfo,
    /// BAR2: the shared memory region.
    pub shm: Region,
}

fn bar(bars: &[Bar], i: u8) -> Result<Bar, IvshmemError> {
    bars.iter()
        .copied()
        .find(|b| b.index == i && b.kind != BarKind::Io)
        .ok_or(IvshmemError::MissingBar(i))
}

/// Finds the first ivshmem device on `bus` and assigns its BARs from the bridge windows.
/// `Ok(None)` when there is none. Runs before the MMU is on (config space only).
pub fn probe(cs: &impl ConfigSpace, pcie: &Pcie) -> Result<Option<Ivshmem>, IvshmemError> {
    let (functions, _) = pci::enumerate_bus(cs, pcie.bus_start);
    let Some(f) = functions.iter().find(|f| (f.vendor, f.device) == ID) else {
        return Ok(None);
    };
    let window = |k| {
        pcie.window(k)
            .map(|w| Window::new(w.pci_base, w.cpu_base, w.size))
    };
    let mut alloc = BarAllocator {
        mem32: window(WindowKind::Mem32),
        mem64: window(WindowKind::Mem64),
    };
    let bars = pci::assign_bars(cs, f.bdf, &mut alloc).map_err(IvshmemError::Bars)?;
    let msix = MsixInfo::read(cs, f.bdf).ok_or(IvshmemError::NoMsix)?;
    let regs = bar(&bars, 0)?;
    let table = bar(&bars, msix.table.0)?;
    let pba = bar(&bars, msix.pba.0)?;
    let shm = bar(&bars, 2)?;
    Ok(Some(Ivshmem {
        bdf: f.bdf,
        regs: regs.cpu_addr,
        msix_table: table.cpu_addr + msix.table.1 as u64,
        msix_pba: pba.cpu_addr + msix.pba.1 as u64,
        msix,
        shm: Region {
            base: shm.cpu_addr,
            size: shm.size,
        },
    }))
}

impl Ivshmem {
    /// The regions to map as device memory (BAR0, BAR1).
    pub fn register_regions(&self) -> [Region; 2] {
        [
            Region {
                base: self.regs,
                size: 0x100,
            },
            Region {
                base: self.msix_table & !0xfff,
                size: 0x1000,
            },
        ]
    }

    /// PCI requester ID (the ITS DeviceID).
    pub fn requester_id(&self) -> u32 {
        (self.bdf.bus as u32) << 8 | (self.bdf.device as u32) << 3 | self.bdf.function as u32
    }

    /// Our own peer id, given by the ivshmem server.
    pub fn iv_position(&self) -> u32 {
        // SAFETY: BAR0 is mapped as device memory (`register_regions`); IVPosition is a
        // 4-byte register inside it.
        unsafe { core::ptr::read_volatile((self.regs + REG_IVPOSITION) as *const u32) }
    }

    /// Rings `vector` of `peer`. Orders all earlier shared-memory writes before the doorbell.
    pub fn ring(&self, peer: u16, vector: u16) {
        // SAFETY: a barrier has no memory-safety requirements.
        unsafe { core::arch::asm!("dsb st", options(nostack, preserves_flags)) };
        // SAFETY: BAR0 is mapped as device memory; Doorbell is a 4-byte write-only register.
        unsafe {
            core::ptr::write_volatile(
                (self.regs + REG_DOORBELL) as *mut u32,
                (peer as u32) << 16 | vector as u32,
            )
        }
    }

    fn entry(&self, v: u16) -> u64 {
        self.msix_table + 16 * v as u64
    }

    /// Enables MSI-X with every vector masked, so doorbells that arrive before the vectors
    /// are routed latch in the PBA instead of being lost.
    pub fn enable_msix_masked(&self, cs: &impl ConfigSpace) {
        for v in 0..self.msix.vectors {
            // SAFETY: the entry's Vector Control word is inside the mapped MSI-X table.
            unsafe { core::ptr::write_volatile((self.entry(v) + 12) as *mut u32, 1) };
        }
        self.msix.set_control(cs, self.bdf, true, false);
    }

    /// Programs vector `v` with an MSI message and unmasks it.
    pub fn set_vector(&self, v: u16, addr: u64, data: u32) {
        if v >= self.msix.vectors {
            return;
        }
        let e = self.entry(v);
        // SAFETY: the four words of entry `v` are inside the mapped MSI-X table (checked
        // against the table size).
        unsafe {
            core::ptr::write_volatile(e as *mut u32, addr as u32);
            core::ptr::write_volatile((e + 4) as *mut u32, (addr >> 32) as u32);
            core::ptr::write_volatile((e + 8) as *mut u32, data);
            core::ptr::write_volatile((e + 12) as *mut u32, 0);
        }
    }
}
