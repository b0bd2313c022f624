//! PCI enumeration over a configuration-space accessor.
//!
//! [`enumerate_bus`] walks one bus (with multi-function devices) through the narrow
//! [`ConfigSpace`] trait; the firmware implements it over ECAM ([`Ecam`]), host tests over a
//! fake. BAR assignment comes with the link driver.

use heapless::Vec;

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

/// Reads 32-bit words of a function's configuration space.
pub trait ConfigSpace {
    /// The dword at `offset` (4-aligned, < 4096) of `bdf`'s configuration space; all ones
    /// when nothing responds.
    fn read32(&self, bdf: Bdf, offset: u16) -> u32;
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

/// ECAM: each function's 4 KiB of configuration space at `base + (bus << 20 | dev << 15 |
/// fn << 12)`, relative to the first bus of the window.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    base: usize,
    bus_start: u8,
    bus_end: u8,
}

impl Ecam {
    /// # Safety
    /// `base` must be the ECAM window for buses `bus_start..=bus_end`, mapped as device
    /// memory for as long as the accessor is used.
    pub unsafe fn new(base: usize, bus_start: u8, bus_end: u8) -> Self {
        Self {
            base,
            bus_start,
            bus_end,
        }
    }
}

impl ConfigSpace for Ecam {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        if bdf.bus < self.bus_start
            || bdf.bus > self.bus_end
            || bdf.device >= 32
            || bdf.function >= 8
            || offset >= 4096
        {
            return u32::MAX;
        }
        let off = ((bdf.bus - self.bus_start) as usize) << 20
            | (bdf.device as usize) << 15
            | (bdf.function as usize) << 12
            | (offset as usize & !3);
        // SAFETY: `new`'s contract: the window is mapped device memory covering every bus in
        // range, and `off` stays inside it (checked above). The read is 4-byte aligned.
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
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
}
