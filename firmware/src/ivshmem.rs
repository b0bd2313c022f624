//! The ivshmem-doorbell PCI device (1af4:1110), QEMU's stand-in for the PCIe link to the host:
//! BAR0 holds the registers (IVPosition, Doorbell), BAR1 the MSI-X table and PBA, BAR2 the
//! shared memory. This module finds it and assigns its BARs ([`probe`]), then owns its
//! registers, MSI-X table and shared memory ([`Ivshmem`], made by an unsafe constructor); the
//! link protocol on top lives in `link`.
//!
//! Several cores use one device: [`install`] puts it in a static and [`device`] hands every
//! core `&'static Ivshmem`, whose methods all take `&self` (the doorbell is one store, the
//! MSI-X table sits behind a lock, the shared memory is viewed through atomics).

use crate::board::{Pcie, Region, WindowKind};
use crate::lock::IrqLock;
use crate::pci::{
    self, Bar, BarAllocator, BarKind, Bdf, ConfigSpace, MsixEntry, MsixInfo, MsixTable, Window,
};
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};
use safe_mmio::fields::{ReadPure, ReadPureWrite, ReadWrite, WriteOnly};
use safe_mmio::{split_fields, UniqueMmioPointer};
use wave_abi::region::RegionError;
use wave_abi::SharedRegion;

/// Vendor and device ID of ivshmem.
pub const ID: (u16, u16) = (0x1af4, 0x1110);

/// BAR0 (QEMU docs/specs/ivshmem-spec.rst, "Device registers").
#[repr(C)]
struct Registers {
    interrupt_mask: ReadPureWrite<u32>,
    /// Read-to-clear on ivshmem without MSI-X.
    interrupt_status: ReadWrite<u32>,
    iv_position: ReadPure<u32>,
    doorbell: WriteOnly<u32>,
}

/// Why the device is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvshmemError {
    /// BAR assignment failed.
    Bars(pci::BarError),
    /// A BAR the driver needs is missing.
    MissingBar(u8),
    /// No MSI-X capability (plain `ivshmem-plain`, which cannot ring doorbells).
    NoMsix,
    /// The MSI-X table does not fit the BAR that should hold it.
    MsixOutsideBar,
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
            IvshmemError::MsixOutsideBar => {
                write!(f, "ivshmem: its MSI-X table lies outside its BAR")
            }
        }
    }
}

/// A found device with its BARs assigned: where things are, before anything reaches them.
#[derive(Clone, Copy, Debug)]
pub struct Probed {
    /// Where it is on the bus.
    pub bdf: Bdf,
    /// MSI-X layout.
    pub msix: MsixInfo,
    regs: Region,
    msix_table: Region,
    shm: Region,
}

impl Probed {
    /// The regions to map as device memory (BAR0, the MSI-X table's page).
    pub fn register_regions(&self) -> [Region; 2] {
        [
            Region {
                base: self.regs.base,
                size: 0x100,
            },
            Region {
                base: self.msix_table.base & !0xfff,
                size: 0x1000,
            },
        ]
    }

    /// BAR2, to map as shared memory.
    pub fn shared_memory(&self) -> Region {
        self.shm
    }
}

fn bar(bars: &[Bar], i: u8) -> Result<Bar, IvshmemError> {
    bars.iter()
        .copied()
        .find(|b| b.index == i && b.kind != BarKind::Io)
        .ok_or(IvshmemError::MissingBar(i))
}

/// Finds the first ivshmem device on `bus` and assigns its BARs from the bridge windows.
/// `Ok(None)` when there is none. Runs before the MMU is on (config space only).
pub fn probe(cs: &mut impl ConfigSpace, pcie: &Pcie) -> Result<Option<Probed>, IvshmemError> {
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
    let table_size = 16 * msix.vectors as u64;
    if msix.table.1 as u64 + table_size > table.size || table.size < 0x1000 {
        return Err(IvshmemError::MsixOutsideBar);
    }
    let shm = bar(&bars, 2)?;
    let region = |b: Bar| Region {
        base: b.cpu_addr,
        size: b.size,
    };
    Ok(Some(Probed {
        bdf: f.bdf,
        msix,
        regs: region(regs),
        msix_table: Region {
            base: table.cpu_addr + msix.table.1 as u64,
            size: table_size,
        },
        shm: region(shm),
    }))
}

/// The doorbell register: one 32-bit store per doorbell, so any core may ring through `&self`.
struct Doorbell(UniqueMmioPointer<'static, WriteOnly<u32>>);

impl Doorbell {
    fn ring(&self, value: u32) {
        // SAFETY: the pointer is the device's Doorbell register, owned by this value (split
        // from BAR0 in `Ivshmem::new`). A write-only register whose every store is one
        // independent doorbell: stores from several cores at once need no ordering among
        // themselves, and nothing else reaches the register.
        unsafe { self.0.ptr().cast::<u32>().cast_mut().write_volatile(value) }
    }
}

/// A configured ivshmem-doorbell device: owns BAR0, the MSI-X table and BAR2.
pub struct Ivshmem {
    /// Where it is on the bus.
    pub bdf: Bdf,
    /// MSI-X layout.
    pub msix: MsixInfo,
    /// BAR0's address, for the boot report only.
    regs_base: u64,
    iv_position: UniqueMmioPointer<'static, ReadPure<u32>>,
    doorbell: Doorbell,
    table: IrqLock<MsixTable<'static>>,
    shm: Region,
}

// SAFETY: through `&self` the device is only read through `ReadPure` IVPosition (no side
// effects), rung through `Doorbell` (independent single stores) and reprogrammed through the
// MSI-X table's lock; BAR2 is only handed out as an atomic `SharedRegion`.
unsafe impl Sync for Ivshmem {}
// SAFETY: every field is MMIO owned by this value, reachable from any core.
unsafe impl Send for Ivshmem {}

impl Ivshmem {
    /// Takes over the device `probed` describes.
    ///
    /// # Safety
    /// `probed.register_regions()` must be accessible as device memory and
    /// `probed.shared_memory()` as memory that supports 64-bit atomics (MMU off, or mapped
    /// Device / Normal non-cacheable) for the rest of the run, identity-mapped; nothing else
    /// may access BAR0, the MSI-X table or BAR2, and `probed` must not be used for another
    /// `Ivshmem`.
    pub unsafe fn new(probed: Probed) -> Result<Ivshmem, IvshmemError> {
        let regs = NonNull::new(probed.regs.base as *mut Registers);
        let regs = regs.ok_or(IvshmemError::MissingBar(0))?;
        let table = NonNull::new(probed.msix_table.base as *mut MsixEntry);
        let table = table.ok_or(IvshmemError::MissingBar(probed.msix.table.0))?;
        let entries = NonNull::slice_from_raw_parts(table, probed.msix.vectors as usize);
        // SAFETY: the caller's contract; BAR0 is 256 bytes, larger than `Registers`.
        let regs = unsafe { UniqueMmioPointer::new(regs) };
        // SAFETY: each field is named once; `regs` is not used afterwards.
        let (iv_position, doorbell) = unsafe { split_fields!(regs, iv_position, doorbell) };
        Ok(Ivshmem {
            bdf: probed.bdf,
            msix: probed.msix,
            regs_base: probed.regs.base,
            iv_position,
            doorbell: Doorbell(doorbell),
            // SAFETY: the caller's contract; `probe` checked the table lies inside its BAR.
            table: IrqLock::new(MsixTable::new(unsafe { UniqueMmioPointer::new(entries) })),
            shm: probed.shm,
        })
    }

    /// PCI requester ID (the ITS DeviceID).
    pub fn requester_id(&self) -> u32 {
        (self.bdf.bus as u32) << 8 | (self.bdf.device as u32) << 3 | self.bdf.function as u32
    }

    /// Our own peer id, given by the ivshmem server.
    pub fn iv_position(&self) -> u32 {
        self.iv_position.read()
    }

    /// Rings `vector` of `peer`, from any core. Orders all earlier shared-memory writes before
    /// the doorbell.
    pub fn ring(&self, peer: u16, vector: u16) {
        // SAFETY: a barrier has no memory-safety requirements.
        unsafe { core::arch::asm!("dsb st", options(nostack, preserves_flags)) };
        self.doorbell.ring((peer as u32) << 16 | vector as u32);
    }

    /// Enables MSI-X with every vector masked, so doorbells that arrive before the vectors
    /// are routed latch in the PBA instead of being lost. Boot core, before sharing the device.
    pub fn enable_msix_masked(&mut self, cs: &mut impl ConfigSpace) {
        self.table.get_mut().mask_all();
        self.msix.set_control(cs, self.bdf, true, false);
    }

    /// Programs vector `v` with an MSI message and unmasks it, from any core. Vectors the
    /// table does not have are ignored.
    pub fn set_vector(&self, v: u16, addr: u64, data: u32) {
        self.table.lock().set(v, addr, data);
    }

    /// A view of the shared-memory BAR, for any core.
    pub fn shared_region(&self) -> Result<SharedRegion<'static>, RegionError> {
        // SAFETY: `new`'s contract: BAR2 is identity-mapped memory with 64-bit atomics for the
        // rest of the run, reached by nothing but this device's views; `SharedRegion` only
        // ever accesses it atomically, so views on several cores may coexist.
        unsafe { SharedRegion::from_raw(self.shm.base as *mut u8, self.shm.size as usize) }
    }

    /// Size of the shared-memory BAR in bytes.
    pub fn shared_size(&self) -> u64 {
        self.shm.size
    }
}

impl fmt::Display for Ivshmem {
    /// One line for the boot report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ivshmem-doorbell at {} (requester id {:#x}): registers @ {:#x}, shared memory {:#x}+{:#x} ({} MiB), {} MSI-X vectors, peer id {}",
            self.bdf,
            self.requester_id(),
            self.regs_base,
            self.shm.base,
            self.shm.size,
            self.shm.size >> 20,
            self.msix.vectors,
            self.iv_position()
        )
    }
}

/// The one installed device.
struct Slot {
    state: AtomicU8,
    device: UnsafeCell<MaybeUninit<Ivshmem>>,
}
// SAFETY: the device is written once, before `state` becomes READY (release), and only read
// (as `&Ivshmem`, which is `Sync`) after `state` is seen READY (acquire).
unsafe impl Sync for Slot {}
const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;
static INSTALLED: Slot = Slot {
    state: AtomicU8::new(EMPTY),
    device: UnsafeCell::new(MaybeUninit::uninit()),
};

/// Makes `dev` the device every core reaches through [`device`]. MMU on. Gives `dev` back if
/// one is already installed.
pub fn install(dev: Ivshmem) -> Result<&'static Ivshmem, Ivshmem> {
    if INSTALLED
        .state
        .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return Err(dev);
    }
    // SAFETY: winning EMPTY -> WRITING makes this the only writer, and nobody reads before
    // READY; the device is only reached through shared references from here on.
    let dev: &'static Ivshmem = unsafe { (*INSTALLED.device.get()).write(dev) };
    INSTALLED.state.store(READY, Ordering::Release);
    Ok(dev)
}

/// The installed device, from any core.
pub fn device() -> Option<&'static Ivshmem> {
    if INSTALLED.state.load(Ordering::Acquire) != READY {
        return None;
    }
    // SAFETY: READY means the device was written and is never written again.
    Some(unsafe { (*INSTALLED.device.get()).assume_init_ref() })
}
