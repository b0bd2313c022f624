//! PCI enumeration over a configuration-space accessor, and the typed register blocks of PCI
//! configuration space and MSI-X tables.
//!
//! [`enumerate_bus`] walks one bus (with multi-function devices) through the narrow
//! [`ConfigSpace`] trait; the firmware implements it over ECAM ([`Ecam`]: the window as typed
//! [`FunctionConfig`] blocks, made by an unsafe constructor), host tests over fakes or over
//! ordinary memory ([`Ecam::over_memory`]). Under `-kernel` no firmware has assigned BARs, so
//! [`assign_bars`] sizes them and places them in the host bridge's windows ([`BarAllocator`]);
//! [`find_capability`] and [`MsixInfo`] locate a function's MSI-X table, which a driver then
//! owns as an [`MsixTable`].

use core::ptr::NonNull;
use heapless::Vec;
use safe_mmio::fields::ReadPureWrite;
use safe_mmio::{field, field_shared, UniqueMmioPointer};

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Reads and writes 32-bit words of a function's configuration space. Reads have no side
/// effects (`&self`); writes change the device and need the accessor exclusively (`&mut self`).
pub trait ConfigSpace {
    /// The dword at `offset` (4-aligned, < 4096) of `bdf`'s configuration space; all ones
    /// when nothing responds.
    fn read32(&self, bdf: Bdf, offset: u16) -> u32;
    /// Writes the dword at `offset`; ignored when nothing responds.
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);
}

/// One function found on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base class, subclass).
    pub class: (u8, u8),
    /// Header type (0 = endpoint, 1 = PCI-PCI bridge), without the multi-function bit.
    pub header_type: u8,
}

/// Most functions one enumeration records.
pub const MAX_FUNCTIONS: usize = 32;

/// Enumerates every function on `bus`. Stops recording (and says so) past
/// [`MAX_FUNCTIONS`].
pub fn enumerate_bus(cs: &impl ConfigSpace, bus: u8) -> (Vec<Function, MAX_FUNCTIONS>, bool) {
    let mut found = Vec::new();
    let mut overflow = false;
    for device in 0..32u8 {
        for function in 0..8u8 {
            let bdf = Bdf {
                bus,
                device,
                function,
            };
            let id = cs.read32(bdf, 0);
            let vendor = id as u16;
            if vendor == 0xffff || vendor == 0 {
                if function == 0 {
                    break; // no device in this slot
                }
                continue;
            }
            let class = cs.read32(bdf, 8);
            let header = (cs.read32(bdf, 0x0c) >> 16) as u8;
            let f = Function {
                bdf,
                vendor,
                device: (id >> 16) as u16,
                class: ((class >> 24) as u8, (class >> 16) as u8),
                header_type: header & 0x7f,
            };
            if found.push(f).is_err() {
                overflow = true;
            }
            if function == 0 && header & 0x80 == 0 {
                break; // single-function device
            }
        }
    }
    (found, overflow)
}

/// Command register bits.
pub mod command {
    /// Memory space decoding.
    pub const MEMORY: u16 = 1 << 1;
    /// Bus mastering (needed for MSI writes).
    pub const BUS_MASTER: u16 = 1 << 2;
}

/// Enables the given command bits of `bdf`.
pub fn enable(cs: &mut impl ConfigSpace, bdf: Bdf, bits: u16) {
    let v = cs.read32(bdf, 4);
    cs.write32(bdf, 4, (v & 0xffff) | bits as u32);
}

/// Offset of capability `id` in `bdf`'s capability list. The walk is bounded, so a looping
/// or corrupt list ends it instead of hanging.
pub fn find_capability(cs: &impl ConfigSpace, bdf: Bdf, id: u8) -> Option<u16> {
    let status = (cs.read32(bdf, 4) >> 16) as u16;
    if status & (1 << 4) == 0 {
        return None;
    }
    let mut ptr = (cs.read32(bdf, 0x34) & 0xfc) as u16;
    for _ in 0..48 {
        if ptr < 0x40 {
            return None;
        }
        let header = cs.read32(bdf, ptr);
        if header as u8 == id {
            return Some(ptr);
        }
        ptr = ((header >> 8) & 0xfc) as u16;
    }
    None
}

/// Capability ID of MSI-X.
pub const CAP_MSIX: u8 = 0x11;

/// Where a function's MSI-X table and pending-bit array live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixInfo {
    /// Offset of the capability in configuration space.
    pub cap: u16,
    /// Number of table entries.
    pub vectors: u16,
    /// BAR holding the table, and the offset in it.
    pub table: (u8, u32),
    /// BAR holding the PBA, and the offset in it.
    pub pba: (u8, u32),
}

impl MsixInfo {
    /// Reads the MSI-X capability of `bdf`, if it has one.
    pub fn read(cs: &impl ConfigSpace, bdf: Bdf) -> Option<Self> {
        let cap = find_capability(cs, bdf, CAP_MSIX)?;
        let control = (cs.read32(bdf, cap) >> 16) as u16;
        let table = cs.read32(bdf, cap + 4);
        let pba = cs.read32(bdf, cap + 8);
        Some(MsixInfo {
            cap,
            vectors: (control & 0x7ff) + 1,
            table: ((table & 7) as u8, table & !7),
            pba: ((pba & 7) as u8, pba & !7),
        })
    }

    /// Sets MSI-X Enable and Function Mask as given (Message Control bits 15 and 14).
    pub fn set_control(
        &self,
        cs: &mut impl ConfigSpace,
        bdf: Bdf,
        enable: bool,
        function_mask: bool,
    ) {
        let v = cs.read32(bdf, self.cap);
        let mut control = (v >> 16) as u16 & !(3 << 14);
        if enable {
            control |= 1 << 15;
        }
        if function_mask {
            control |= 1 << 14;
        }
        cs.write32(bdf, self.cap, (v & 0xffff) | (control as u32) << 16);
    }
}

/// The address space a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory (uses two BAR slots).
    Mem64,
    /// I/O ports (not assigned: nothing here uses them).
    Io,
}

/// One assigned (or, for I/O, only sized) BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index 0..6.
    pub index: u8,
    /// Address space.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Where the CPU reaches it (0 for unassigned I/O BARs).
    pub cpu_addr: u64,
}

/// A bump allocator over one host-bridge window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Next free PCI address.
    next: u64,
    /// End of the window (PCI address).
    end: u64,
    /// CPU address minus PCI address.
    cpu_offset: i128,
}

impl Window {
    /// A window of `size` bytes at PCI address `pci_base`, seen by the CPU at `cpu_base`.
    pub fn new(pci_base: u64, cpu_base: u64, size: u64) -> Self {
        Window {
            next: pci_base,
            end: pci_base.saturating_add(size),
            cpu_offset: cpu_base as i128 - pci_base as i128,
        }
    }

    fn alloc(&mut self, size: u64) -> Option<(u64, u64)> {
        let start = self.next.checked_add(size - 1)? & !(size - 1);
        let end = start.checked_add(size)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some((start, (start as i128 + self.cpu_offset) as u64))
    }
}

/// Places BARs in the host bridge's memory windows: 64-bit BARs in the 64-bit window when
/// there is one (else the 32-bit window), 32-bit BARs in the 32-bit window.
#[derive(Clone, Copy, Debug)]
pub struct BarAllocator {
    /// The 32-bit memory window.
    pub mem32: Option<Window>,
    /// The 64-bit memory window.
    pub mem64: Option<Window>,
}

/// Why BARs could not be assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// No window has room for a BAR of this size.
    NoSpace {
        /// BAR index.
        index: u8,
        /// Its size.
        size: u64,
    },
    /// A 64-bit BAR in the last slot, or a malformed size.
    Malformed {
        /// BAR index.
        index: u8,
    },
}

impl core::fmt::Display for BarError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BarError::NoSpace { index, size } => {
                write!(f, "no PCI window has room for BAR{index} ({size:#x} bytes)")
            }
            BarError::Malformed { index } => write!(f, "BAR{index} reports a malformed size"),
        }
    }
}

/// Sizes every BAR of endpoint `bdf`, assigns the memory BARs from `alloc`, and enables
/// memory decoding and bus mastering. Returns the BARs found.
pub fn assign_bars(
    cs: &mut impl ConfigSpace,
    bdf: Bdf,
    alloc: &mut BarAllocator,
) -> Result<Vec<Bar, 6>, BarError> {
    // Decoding off while BARs hold sizing patterns.
    let cmd = cs.read32(bdf, 4);
    // (Status is write-1-to-clear: write zeros there.)
    cs.write32(bdf, 4, cmd & 0xffff & !(command::MEMORY as u32 | 1));
    let mut bars = Vec::new();
    let mut i = 0u8;
    while i < 6 {
        let off = 0x10 + 4 * i as u16;
        let orig = cs.read32(bdf, off);
        if orig & 1 == 1 {
            cs.write32(bdf, off, u32::MAX);
            let mask = cs.read32(bdf, off) & !3;
            cs.write32(bdf, off, orig);
            if mask != 0 {
                let size = (!mask as u64 & 0xffff) + 1;
                let _ = bars.push(Bar {
                    index: i,
                    kind: BarKind::Io,
                    prefetchable: false,
                    size,
                    cpu_addr: 0,
                });
            }
            i += 1;
            continue;
        }
        let is64 = (orig >> 1) & 3 == 2;
        let prefetchable = orig & 8 != 0;
        cs.write32(bdf, off, u32::MAX);
        let lo = cs.read32(bdf, off) & !0xf;
        let hi = if is64 {
            if i == 5 {
                return Err(BarError::Malformed { index: i });
            }
            cs.write32(bdf, off + 4, u32::MAX);
            cs.read32(bdf, off + 4)
        } else {
            u32::MAX
        };
        let mask = (hi as u64) << 32 | lo as u64;
        if lo == 0 && (!is64 || hi == 0) {
            i += if is64 { 2 } else { 1 };
            continue; // unimplemented BAR
        }
        let size = (!mask).wrapping_add(1);
        if size == 0 || !size.is_power_of_two() || (!is64 && size > 1 << 31) {
            return Err(BarError::Malformed { index: i });
        }
        let placed = if is64 {
            alloc
                .mem64
                .as_mut()
                .and_then(|w| w.alloc(size))
                .or_else(|| alloc.mem32.as_mut().and_then(|w| w.alloc(size)))
        } else {
            alloc
                .mem32
                .as_mut()
                .and_then(|w| w.alloc(size))
                .filter(|(pci, _)| *pci < 1 << 32)
        };
        let Some((pci, cpu)) = placed else {
            return Err(BarError::NoSpace { index: i, size });
        };
        cs.write32(bdf, off, (pci as u32 & !0xf) | (orig & 0xf));
        if is64 {
            cs.write32(bdf, off + 4, (pci >> 32) as u32);
        }
        let kind = if is64 { BarKind::Mem64 } else { BarKind::Mem32 };
        let _ = bars.push(Bar {
            index: i,
            kind,
            prefetchable,
            size,
            cpu_addr: cpu,
        });
        i += if is64 { 2 } else { 1 };
    }
    enable(cs, bdf, command::MEMORY | command::BUS_MASTER);
    Ok(bars)
}

/// One function's 4 KiB of configuration space as ECAM maps it. Configuration reads have no
/// side effects, so every dword is `ReadPureWrite`.
#[repr(C, align(4096))]
pub struct FunctionConfig {
    dwords: [ReadPureWrite<u32>; 1024],
}

impl FunctionConfig {
    /// A function whose every dword reads `fill` (host tests stand it in for device memory).
    pub fn filled(fill: u32) -> Self {
        FunctionConfig {
            dwords: core::array::from_fn(|_| ReadPureWrite(fill)),
        }
    }
}

/// ECAM: each function's [`FunctionConfig`] at `base + (bus << 20 | dev << 15 | fn << 12)`,
/// relative to the first bus of the window. Owns the window: every access goes through it.
pub struct Ecam<'a> {
    functions: UniqueMmioPointer<'a, [FunctionConfig]>,
    bus_start: u8,
    bus_end: u8,
}

impl Ecam<'static> {
    /// The accessor for the ECAM window at `base`.
    ///
    /// # Safety
    /// `base` must be the ECAM window for buses `bus_start..=bus_end` (4096-aligned, 1 MiB per
    /// bus), accessible as device memory (MMU off, or mapped Device-nGnRE) for the rest of the
    /// run, and nothing else may access the window while this accessor lives.
    pub unsafe fn new(base: usize, bus_start: u8, bus_end: u8) -> Self {
        let functions = if base == 0 || bus_end < bus_start {
            0
        } else {
            ((bus_end - bus_start) as usize + 1) << 8
        };
        let slice = core::ptr::slice_from_raw_parts_mut(base as *mut FunctionConfig, functions);
        let ptr =
            NonNull::new(slice).unwrap_or(NonNull::slice_from_raw_parts(NonNull::dangling(), 0));
        Ecam {
            // SAFETY: the caller guarantees the window covers every function of the buses, is
            // device memory for the rest of the run and is not accessed by anything else (an
            // empty slice when there is no window: nothing can be accessed through it).
            functions: unsafe { UniqueMmioPointer::new(ptr) },
            bus_start,
            bus_end,
        }
    }
}

impl<'a> Ecam<'a> {
    /// An accessor over ordinary memory standing in for the window: `functions` holds 256
    /// functions per bus from `bus_start` on (host tests).
    pub fn over_memory(functions: &'a mut [FunctionConfig], bus_start: u8) -> Self {
        let (bus_start, bus_end) = match functions.len() >> 8 {
            0 => (1, 0), // no whole bus: an empty range
            n => (bus_start, (bus_start as usize + n - 1).min(255) as u8),
        };
        Ecam {
            functions: UniqueMmioPointer::from(functions),
            bus_start,
            bus_end,
        }
    }

    /// Index of `bdf`'s function in the window and of the dword at `offset`; `None` outside
    /// the window's buses or a function's 4 KiB.
    fn index(&self, bdf: Bdf, offset: u16) -> Option<(usize, usize)> {
        if bdf.bus < self.bus_start
            || bdf.bus > self.bus_end
            || bdf.device >= 32
            || bdf.function >= 8
            || offset >= 4096
        {
            return None;
        }
        let function = ((bdf.bus - self.bus_start) as usize) << 8
            | (bdf.device as usize) << 3
            | bdf.function as usize;
        Some((function, offset as usize / 4))
    }
}

impl ConfigSpace for Ecam<'_> {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        let Some((f, dword)) = self.index(bdf, offset) else {
            return u32::MAX;
        };
        let Some(function) = (*self.functions).get(f) else {
            return u32::MAX;
        };
        let dwords = field_shared!(function, dwords);
        dwords.get(dword).map_or(u32::MAX, |d| d.read())
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        let Some((f, dword)) = self.index(bdf, offset) else {
            return;
        };
        if let Some(mut function) = self.functions.get(f) {
            if let Some(mut d) = field!(function, dwords).get(dword) {
                d.write(value);
            }
        }
    }
}

/// One MSI-X table entry (PCIe base spec, "MSI-X Table Structure").
#[repr(C)]
pub struct MsixEntry {
    address_lo: ReadPureWrite<u32>,
    address_hi: ReadPureWrite<u32>,
    data: ReadPureWrite<u32>,
    /// Bit 0: masked.
    control: ReadPureWrite<u32>,
}

impl MsixEntry {
    /// An entry as a device resets it: no message, masked (host tests).
    pub fn reset() -> Self {
        MsixEntry {
            address_lo: ReadPureWrite(0),
            address_hi: ReadPureWrite(0),
            data: ReadPureWrite(0),
            control: ReadPureWrite(1),
        }
    }
}

/// A function's MSI-X table, owned by its driver.
pub struct MsixTable<'a> {
    entries: UniqueMmioPointer<'a, [MsixEntry]>,
}

impl<'a> MsixTable<'a> {
    /// Wraps the table's entries (the driver's unsafe constructor makes the pointer; host
    /// tests pass ordinary memory).
    pub fn new(entries: UniqueMmioPointer<'a, [MsixEntry]>) -> Self {
        MsixTable { entries }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Masks every vector.
    pub fn mask_all(&mut self) {
        for mut e in self.entries.iter() {
            field!(e, control).write(1);
        }
    }

    /// Programs vector `v` with an MSI message and unmasks it. Returns false (and writes
    /// nothing) when the table has no entry `v`.
    pub fn set(&mut self, v: u16, address: u64, data: u32) -> bool {
        let Some(mut e) = self.entries.get(v as usize) else {
            return false;
        };
        field!(e, address_lo).write(address as u32);
        field!(e, address_hi).write((address >> 32) as u32);
        field!(e, data).write(data);
        field!(e, control).write(0);
        true
    }

    /// Whether vector `v` is masked (`None`: no such entry).
    pub fn is_masked(&self, v: u16) -> Option<bool> {
        let e = (*self.entries).get(v as usize)?;
        Some(field_shared!(e, control).read() & 1 != 0)
    }

    /// The message programmed into vector `v`.
    pub fn message(&self, v: u16) -> Option<(u64, u32)> {
        let e = (*self.entries).get(v as usize)?;
        let lo = field_shared!(e, address_lo).read() as u64;
        let hi = field_shared!(e, address_hi).read() as u64;
        Some((hi << 32 | lo, field_shared!(e, data).read()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fake bus: (dev, fn) -> (id dword, class dword, header type byte).
    struct FakeBus(HashMap<(u8, u8), (u32, u32, u8)>);

    impl ConfigSpace for FakeBus {
        fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
            match (bdf.bus, self.0.get(&(bdf.device, bdf.function))) {
                (0, Some(&(id, class, header))) => match offset {
                    0 => id,
                    8 => class,
                    0x0c => (header as u32) << 16,
                    _ => 0,
                },
                _ => u32::MAX,
            }
        }
        fn write32(&mut self, _: Bdf, _: u16, _: u32) {}
    }

    /// One endpoint with real BAR sizing semantics and a capability list.
    struct FakeDevice {
        /// Size of each BAR slot's region (0 = unimplemented); 64-bit BARs use two slots.
        bar_sizes: [u64; 6],
        /// Low type bits of each BAR.
        bar_flags: [u32; 6],
        space: std::cell::RefCell<[u32; 1024]>,
    }

    impl FakeDevice {
        fn ivshmem(shm: u64) -> Self {
            let mut space = [0u32; 1024];
            space[0] = 0x1110_1af4;
            space[1] = 1 << 20; // status: capability list
            space[0x34 / 4] = 0x40;
            space[0x40 / 4] = 0x0003_0011; // MSI-X, next 0, 4 vectors
            space[0x44 / 4] = 0x0000_0001; // table in BAR1 at 0
            space[0x48 / 4] = 0x0000_0801; // PBA in BAR1 at 0x800
            space[0x18 / 4] = 0b1100; // BAR2: 64-bit prefetchable
            FakeDevice {
                bar_sizes: [0x100, 0x1000, shm, 0, 0, 0],
                bar_flags: [0, 0, 0b1100, 0, 0, 0],
                space: std::cell::RefCell::new(space),
            }
        }
    }

    impl ConfigSpace for FakeDevice {
        fn read32(&self, _: Bdf, offset: u16) -> u32 {
            self.space.borrow()[offset as usize / 4]
        }
        fn write32(&mut self, _: Bdf, offset: u16, value: u32) {
            let mut s = self.space.borrow_mut();
            let i = offset as usize / 4;
            if (4..10).contains(&i) {
                let b = i - 4;
                // The slot pair of a 64-bit BAR: size lives in the low slot.
                let (size, flags, high) = if b > 0 && self.bar_flags[b - 1] & 0b110 == 0b100 {
                    (self.bar_sizes[b - 1], 0, true)
                } else {
                    (self.bar_sizes[b], self.bar_flags[b], false)
                };
                let mask = !(size.max(1) - 1);
                s[i] = if size == 0 {
                    0
                } else if high {
                    value & (mask >> 32) as u32
                } else {
                    (value & mask as u32 & !0xf) | flags
                };
            } else if i == 1 {
                // Status (upper half) is write-1-to-clear; the fake keeps it.
                s[1] = (s[1] & 0xffff_0000) | (value & 0xffff);
            } else {
                s[i] = value;
            }
        }
    }

    #[test]
    fn finds_qemu_virt_devices_and_multifunction_functions() {
        let mut m = HashMap::new();
        m.insert((0, 0), (0x0008_1b36, 0x0600_0000, 0x00)); // host bridge
        m.insert((1, 0), (0x1110_1af4, 0x0500_0001, 0x00)); // ivshmem
        m.insert((3, 0), (0x1234_8086, 0x0200_0000, 0x80)); // multi-function, fn 0
        m.insert((3, 2), (0x1235_8086, 0x0200_0000, 0x00)); // fn 2 (fn 1 absent)
        m.insert((4, 1), (0xdead_beef, 0, 0)); // fn 1 without fn 0: not scanned
        m.insert((5, 0), (0x0001_10de, 0x0604_0000, 0x01)); // bridge
        let (found, overflow) = enumerate_bus(&FakeBus(m), 0);
        assert!(!overflow);
        let ids: std::vec::Vec<_> = found
            .iter()
            .map(|f| (f.bdf.device, f.bdf.function, f.vendor, f.device))
            .collect();
        assert_eq!(
            ids,
            [
                (0, 0, 0x1b36, 0x0008),
                (1, 0, 0x1af4, 0x1110),
                (3, 0, 0x8086, 0x1234),
                (3, 2, 0x8086, 0x1235),
                (5, 0, 0x10de, 0x0001),
            ]
        );
        assert_eq!(found[1].class, (0x05, 0x00));
        assert_eq!(found[4].header_type, 1);
        assert_eq!(found[1].bdf.to_string(), "00:01.0");
    }

    const BDF: Bdf = Bdf {
        bus: 0,
        device: 1,
        function: 0,
    };

    #[test]
    fn assigns_ivshmem_bars_and_finds_msix() {
        let mut dev = FakeDevice::ivshmem(16 << 20);
        let mut alloc = BarAllocator {
            mem32: Some(Window::new(0x1000_0000, 0x1000_0000, 0x2eff_0000)),
            mem64: Some(Window::new(0x80_0000_0000, 0x80_0000_0000, 0x80_0000_0000)),
        };
        let bars = assign_bars(&mut dev, BDF, &mut alloc).unwrap();
        assert_eq!(bars.len(), 3);
        assert_eq!(
            (bars[0].index, bars[0].kind, bars[0].size),
            (0, BarKind::Mem32, 0x100)
        );
        assert_eq!(
            (bars[1].index, bars[1].size, bars[1].cpu_addr),
            (1, 0x1000, 0x1000_1000)
        );
        assert_eq!(bars[0].cpu_addr, 0x1000_0000);
        assert_eq!(
            (bars[2].index, bars[2].kind, bars[2].prefetchable),
            (2, BarKind::Mem64, true)
        );
        assert_eq!((bars[2].size, bars[2].cpu_addr), (16 << 20, 0x80_0000_0000));
        // The device now decodes at those addresses, with memory and bus mastering on.
        assert_eq!(dev.read32(BDF, 0x10), 0x1000_0000);
        assert_eq!(dev.read32(BDF, 0x18), 0x0000_000c);
        assert_eq!(dev.read32(BDF, 0x1c), 0x80);
        assert_eq!(dev.read32(BDF, 4) & 6, 6);

        let msix = MsixInfo::read(&dev, BDF).unwrap();
        assert_eq!(
            msix,
            MsixInfo {
                cap: 0x40,
                vectors: 4,
                table: (1, 0),
                pba: (1, 0x800)
            }
        );
        msix.set_control(&mut dev, BDF, true, true);
        assert_eq!(dev.read32(BDF, 0x40) >> 16, 0xc003);
        msix.set_control(&mut dev, BDF, true, false);
        assert_eq!(dev.read32(BDF, 0x40) >> 16, 0x8003);
    }

    #[test]
    fn without_a_64_bit_window_large_bars_go_low_or_fail_cleanly() {
        let mut dev = FakeDevice::ivshmem(1 << 20);
        let mut alloc = BarAllocator {
            mem32: Some(Window::new(0x1000_0000, 0x1000_0000, 0x40_0000)),
            mem64: None,
        };
        let bars = assign_bars(&mut dev, BDF, &mut alloc).unwrap();
        // 1 MiB BAR2 aligned after BAR0/BAR1.
        assert_eq!(bars[2].cpu_addr, 0x1010_0000);
        let mut dev = FakeDevice::ivshmem(64 << 20);
        let mut alloc = BarAllocator {
            mem32: Some(Window::new(0x1000_0000, 0x1000_0000, 0x40_0000)),
            mem64: None,
        };
        assert_eq!(
            assign_bars(&mut dev, BDF, &mut alloc),
            Err(BarError::NoSpace {
                index: 2,
                size: 64 << 20
            })
        );
    }

    #[test]
    fn capability_walk_is_bounded() {
        let mut dev = FakeDevice::ivshmem(1 << 20);
        dev.write32(BDF, 0x40, 0x0000_4005); // MSI, next -> itself
        assert_eq!(find_capability(&dev, BDF, CAP_MSIX), None);
        assert_eq!(find_capability(&dev, BDF, 0x05), Some(0x40));
    }

    #[test]
    fn empty_bus_and_overflow() {
        let (found, overflow) = enumerate_bus(&FakeBus(HashMap::new()), 0);
        assert!(found.is_empty() && !overflow);
        let mut m = HashMap::new();
        for d in 0..32 {
            for f in 0..8 {
                m.insert((d, f), (0x0001_1af4, 0, 0x80));
            }
        }
        let (found, overflow) = enumerate_bus(&FakeBus(m), 0);
        assert_eq!(found.len(), MAX_FUNCTIONS);
        assert!(overflow);
    }

    #[test]
    fn ecam_reads_and_writes_the_addressed_dword_only() {
        let mut functions: std::vec::Vec<_> =
            (0..256).map(|_| FunctionConfig::filled(u32::MAX)).collect();
        functions[1 << 3].dwords[0] = ReadPureWrite(0x1110_1af4);
        let mut ecam = Ecam::over_memory(&mut functions, 0);
        let bdf = BDF; // 00:01.0
        assert_eq!(ecam.read32(bdf, 0), 0x1110_1af4);
        ecam.write32(bdf, 0x10, 0x1000_0000);
        ecam.write32(bdf, 0x13, 0x2000_0000); // unaligned: the dword it falls in
        assert_eq!(ecam.read32(bdf, 0x10), 0x2000_0000);
        // Outside the window's buses, devices, functions or 4 KiB: all ones, writes dropped.
        let outside = [
            Bdf { bus: 1, ..bdf },
            Bdf { device: 32, ..bdf },
            Bdf { function: 8, ..bdf },
        ];
        for b in outside {
            assert_eq!(ecam.read32(b, 0), u32::MAX);
            ecam.write32(b, 0, 0);
        }
        assert_eq!(ecam.read32(bdf, 4096), u32::MAX);
        ecam.write32(bdf, 4096, 0);
        let (found, _) = enumerate_bus(&ecam, 0);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].vendor, found[0].device), (0x1af4, 0x1110));
        let written: std::vec::Vec<_> = functions
            .iter()
            .flat_map(|f| f.dwords.iter().map(|d| d.0))
            .enumerate()
            .filter(|&(_, v)| v != u32::MAX)
            .collect();
        assert_eq!(
            written,
            [(8 << 10, 0x1110_1af4), ((8 << 10) + 4, 0x2000_0000)]
        );
    }

    #[test]
    fn ecam_over_less_than_a_bus_answers_nothing() {
        let mut one = [FunctionConfig::filled(0)];
        let ecam = Ecam::over_memory(&mut one, 0);
        assert_eq!(
            ecam.read32(
                Bdf {
                    bus: 0,
                    device: 0,
                    function: 0
                },
                0
            ),
            u32::MAX
        );
    }

    #[test]
    fn msix_table_masks_programs_and_bounds_vectors() {
        let mut entries: std::vec::Vec<_> = (0..4).map(|_| MsixEntry::reset()).collect();
        let mut table = MsixTable::new(UniqueMmioPointer::from(entries.as_mut_slice()));
        assert_eq!(table.len(), 4);
        assert!(table.set(2, 0x1_0809_0040, 8194));
        assert_eq!(table.is_masked(2), Some(false));
        assert_eq!(table.message(2), Some((0x1_0809_0040, 8194)));
        assert!(!table.set(4, 1, 1), "no entry 4");
        assert_eq!(table.is_masked(4), None);
        table.mask_all();
        assert!((0..4).all(|v| table.is_masked(v) == Some(true)));
        assert_eq!(
            table.message(2),
            Some((0x1_0809_0040, 8194)),
            "masking keeps the message"
        );
        assert_eq!(
            (
                entries[2].address_lo.0,
                entries[2].address_hi.0,
                entries[2].data.0
            ),
            (0x0809_0040, 1, 8194)
        );
    }
}
