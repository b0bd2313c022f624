//! Board discovery: everything board-specific, read from the flattened device tree.
//!
//! Memory, CPUs (their MPIDR values), the PL011 console, the PSCI conduit, the GIC and the
//! PCIe host bridge (ECAM and BAR windows) all come from the DT the boot loader passes in `x0`.
//! Nothing here touches hardware, so it is tested on the host against real QEMU DTBs and
//! hand-built ones. A missing or malformed node is a [`BoardError`] that names it.

use fdt::Fdt;
use heapless::Vec;

/// Most CPUs one image brings up (matches the boot stacks).
pub const MAX_CPUS: usize = 16;

/// A physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Start address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &Region) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// How PSCI calls are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    /// `hvc #0`.
    Hvc,
    /// `smc #0`.
    Smc,
}

/// The interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    /// 2 or 3.
    pub version: u8,
    /// Distributor (GICD).
    pub distributor: Region,
    /// GICv3: redistributors (GICR), all frames.
    pub redistributors: Option<Region>,
    /// GICv2: CPU interface (GICC).
    pub cpu_interface: Option<Region>,
    /// GICv3: the ITS (MSI translation), if present.
    pub its: Option<Region>,
    /// GICv2: the v2m MSI frame, if present.
    pub v2m: Option<Region>,
}

/// The kind of a PCI address window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// I/O space.
    Io,
    /// 32-bit memory space.
    Mem32,
    /// 64-bit memory space.
    Mem64,
}

/// One entry of the host bridge's `ranges`: PCI addresses `pci_base..` appear at CPU
/// address `cpu_base..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    /// Address space.
    pub kind: WindowKind,
    /// Whether the window is prefetchable.
    pub prefetchable: bool,
    /// Address on the PCI side.
    pub pci_base: u64,
    /// Address on the CPU side.
    pub cpu_base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// The PCIe host bridge (`pci-host-ecam-generic`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcie {
    /// The ECAM configuration space.
    pub ecam: Region,
    /// First bus number.
    pub bus_start: u8,
    /// Last bus number.
    pub bus_end: u8,
    /// Address windows for BARs.
    pub windows: Vec<PciWindow, 4>,
}

impl Pcie {
    /// The first window of `kind`.
    pub fn window(&self, kind: WindowKind) -> Option<&PciWindow> {
        self.windows.iter().find(|w| w.kind == kind)
    }
}

/// What the firmware knows about the board it runs on.
#[derive(Clone, Debug)]
pub struct Board<'a> {
    /// `/model` (or `/compatible`).
    pub model: &'a str,
    /// RAM banks.
    pub memory: Vec<Region, 8>,
    /// MPIDR of every CPU, in device-tree order.
    pub cpus: Vec<u64, MAX_CPUS>,
    /// The console UART (PL011).
    pub uart: Region,
    /// PSCI conduit.
    pub psci: PsciMethod,
    /// Interrupt controller.
    pub gic: Gic,
    /// PCIe host bridge.
    pub pcie: Pcie,
    /// `/chosen/bootargs` (empty when absent).
    pub bootargs: &'a str,
    /// The device tree blob itself (base and total size), so it is kept mapped.
    pub dtb: Region,
}

/// Why the board could not be discovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoardError {
    /// The blob is not a valid flattened device tree.
    BadDeviceTree,
    /// A required node is absent.
    MissingNode(&'static str),
    /// A node lacks a property it needs, or the property is malformed.
    BadProperty {
        /// The node.
        node: &'static str,
        /// The property.
        property: &'static str,
    },
    /// The DT lists more CPUs than the image supports.
    TooManyCpus(usize),
}

impl core::fmt::Display for BoardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BoardError::BadDeviceTree => {
                write!(
                    f,
                    "no valid device tree at the address in x0 (bad magic or header)"
                )
            }
            BoardError::MissingNode(n) => write!(f, "device tree has no {n} node"),
            BoardError::BadProperty { node, property } => {
                write!(
                    f,
                    "device tree node {node} has a missing or malformed `{property}`"
                )
            }
            BoardError::TooManyCpus(n) => write!(
                f,
                "device tree lists {n} CPUs but this image supports at most {MAX_CPUS}"
            ),
        }
    }
}

fn be_cells(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

fn first_string(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end])
        .ok()
        .filter(|s| !s.is_empty())
}

fn first_reg(node: &fdt::node::FdtNode<'_, '_>) -> Option<Region> {
    let r = node.reg()?.next()?;
    Some(Region {
        base: r.starting_address as u64,
        size: r.size? as u64,
    })
}

fn nth_reg(node: &fdt::node::FdtNode<'_, '_>, n: usize) -> Option<Region> {
    let r = node.reg()?.nth(n)?;
    Some(Region {
        base: r.starting_address as u64,
        size: r.size? as u64,
    })
}

/// What the firmware needs before full discovery, so that a discovery error can still be
/// printed and end the run the way the boot arguments ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Early<'a> {
    /// The console UART, if the DT has one.
    pub uart: Option<Region>,
    /// The PSCI conduit, if the DT names one.
    pub psci: Option<PsciMethod>,
    /// `/chosen/bootargs` (empty when absent).
    pub bootargs: &'a str,
}

impl<'a> Early<'a> {
    /// Reads what it can; never fails on a missing node.
    pub fn from_fdt(blob: &'a [u8]) -> Result<Self, BoardError> {
        let fdt = Fdt::new(blob).map_err(|_| BoardError::BadDeviceTree)?;
        Ok(Early {
            uart: Board::console(&fdt).ok(),
            psci: Board::psci(&fdt).ok(),
            bootargs: Board::bootargs(&fdt),
        })
    }
}

impl<'a> Board<'a> {
    fn bootargs<'b>(fdt: &Fdt<'b>) -> &'b str {
        // (fdt's `chosen()` panics when /chosen is absent, so look it up directly.)
        fdt.find_node("/chosen")
            .and_then(|c| c.property("bootargs"))
            .and_then(|p| first_string(p.value))
            .unwrap_or("")
    }

    /// Discovers the board from a device-tree blob.
    pub fn from_fdt(blob: &'a [u8]) -> Result<Self, BoardError> {
        let fdt = Fdt::new(blob).map_err(|_| BoardError::BadDeviceTree)?;
        let dtb = Region {
            base: blob.as_ptr() as u64,
            size: fdt.total_size() as u64,
        };
        let root = fdt.root();
        let model = root
            .property("model")
            .and_then(|p| p.as_str())
            .or_else(|| {
                root.property("compatible")
                    .and_then(|p| first_string(p.value))
            })
            .unwrap_or("unknown board");

        let mut memory = Vec::new();
        for node in fdt
            .all_nodes()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
        {
            for r in node.reg().into_iter().flatten() {
                if let Some(size) = r.size.filter(|&s| s > 0) {
                    let _ = memory.push(Region {
                        base: r.starting_address as u64,
                        size: size as u64,
                    });
                }
            }
        }
        if memory.is_empty() {
            return Err(BoardError::MissingNode("/memory"));
        }

        let cpus = Self::cpus(&fdt)?;
        let uart = Self::console(&fdt)?;
        let psci = Self::psci(&fdt)?;
        let gic = Self::gic(&fdt)?;
        let pcie = Self::pcie(&fdt)?;
        let bootargs = Self::bootargs(&fdt);
        Ok(Board {
            model,
            memory,
            cpus,
            uart,
            psci,
            gic,
            pcie,
            bootargs,
            dtb,
        })
    }

    /// Total RAM in bytes.
    pub fn memory_size(&self) -> u64 {
        self.memory.iter().map(|r| r.size).sum()
    }

    fn cpus(fdt: &Fdt<'_>) -> Result<Vec<u64, MAX_CPUS>, BoardError> {
        let node = fdt
            .find_node("/cpus")
            .ok_or(BoardError::MissingNode("/cpus"))?;
        let mut cpus = Vec::new();
        let mut count = 0;
        for cpu in node
            .children()
            .filter(|c| c.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
        {
            count += 1;
            let reg = cpu.property("reg").ok_or(BoardError::BadProperty {
                node: "/cpus/cpu",
                property: "reg",
            })?;
            let mpidr = match reg.value.len() {
                4 => u32::from_be_bytes(reg.value.try_into().unwrap_or([0; 4])) as u64,
                8 => u64::from_be_bytes(reg.value.try_into().unwrap_or([0; 8])),
                _ => {
                    return Err(BoardError::BadProperty {
                        node: "/cpus/cpu",
                        property: "reg",
                    })
                }
            };
            let _ = cpus.push(mpidr);
        }
        if count > MAX_CPUS {
            return Err(BoardError::TooManyCpus(count));
        }
        if cpus.is_empty() {
            return Err(BoardError::MissingNode("/cpus/cpu"));
        }
        Ok(cpus)
    }

    fn console(fdt: &Fdt<'_>) -> Result<Region, BoardError> {
        let stdout = fdt
            .find_node("/chosen")
            .and_then(|c| c.property("stdout-path"))
            .and_then(|p| first_string(p.value))
            .map(|path| path.split(':').next().unwrap_or(path))
            .and_then(|path| {
                // Either a full path or an alias.
                let path = if path.starts_with('/') {
                    path
                } else {
                    fdt.find_node("/aliases")?
                        .property(path)
                        .and_then(|p| first_string(p.value))?
                };
                fdt.find_node(path)
            });
        let node = stdout
            .filter(|n| {
                n.compatible()
                    .is_some_and(|c| c.all().any(|c| c == "arm,pl011"))
            })
            .or_else(|| fdt.find_compatible(&["arm,pl011"]))
            .ok_or(BoardError::MissingNode("arm,pl011 UART"))?;
        first_reg(&node).ok_or(BoardError::BadProperty {
            node: "arm,pl011 UART",
            property: "reg",
        })
    }

    fn psci(fdt: &Fdt<'_>) -> Result<PsciMethod, BoardError> {
        let node = fdt
            .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
            .or_else(|| fdt.find_node("/psci"))
            .ok_or(BoardError::MissingNode("/psci"))?;
        match node.property("method").and_then(|p| p.as_str()) {
            Some("hvc") => Ok(PsciMethod::Hvc),
            Some("smc") => Ok(PsciMethod::Smc),
            _ => Err(BoardError::BadProperty {
                node: "/psci",
                property: "method",
            }),
        }
    }

    fn gic(fdt: &Fdt<'_>) -> Result<Gic, BoardError> {
        const BAD: BoardError = BoardError::BadProperty {
            node: "interrupt-controller",
            property: "reg",
        };
        if let Some(node) = fdt.find_compatible(&["arm,gic-v3"]) {
            let its = node
                .children()
                .find(|c| {
                    c.compatible()
                        .is_some_and(|c| c.all().any(|s| s == "arm,gic-v3-its"))
                })
                .and_then(|c| first_reg(&c));
            return Ok(Gic {
                version: 3,
                distributor: nth_reg(&node, 0).ok_or(BAD)?,
                redistributors: Some(nth_reg(&node, 1).ok_or(BAD)?),
                cpu_interface: None,
                its,
                v2m: None,
            });
        }
        if let Some(node) =
            fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"])
        {
            let v2m = node
                .children()
                .find(|c| {
                    c.compatible()
                        .is_some_and(|c| c.all().any(|s| s == "arm,gic-v2m-frame"))
                })
                .and_then(|c| first_reg(&c));
            return Ok(Gic {
                version: 2,
                distributor: nth_reg(&node, 0).ok_or(BAD)?,
                redistributors: None,
                cpu_interface: Some(nth_reg(&node, 1).ok_or(BAD)?),
                its: None,
                v2m,
            });
        }
        Err(BoardError::MissingNode(
            "interrupt-controller (GICv2/GICv3)",
        ))
    }

    fn pcie(fdt: &Fdt<'_>) -> Result<Pcie, BoardError> {
        const NODE: &str = "pci-host-ecam-generic";
        let node =
            fdt.find_compatible(&["pci-host-ecam-generic"])
                .ok_or(BoardError::MissingNode(
                    "PCIe host bridge (pci-host-ecam-generic)",
                ))?;
        let ecam = first_reg(&node).ok_or(BoardError::BadProperty {
            node: NODE,
            property: "reg",
        })?;
        let (bus_start, bus_end) = match node.property("bus-range") {
            Some(p) => {
                let mut c = be_cells(p.value);
                match (c.next(), c.next()) {
                    (Some(a), Some(b)) if a <= b && b <= 255 => (a as u8, b as u8),
                    _ => {
                        return Err(BoardError::BadProperty {
                            node: NODE,
                            property: "bus-range",
                        })
                    }
                }
            }
            // Without bus-range, ECAM's size says how many buses (1 MiB each).
            None => (0, ((ecam.size >> 20).clamp(1, 256) - 1) as u8),
        };
        // `ranges`: (3 PCI address cells, parent address cells, 2 size cells) per entry.
        let parent_cells = fdt.root().cell_sizes().address_cells;
        let size_cells = node.cell_sizes().size_cells;
        let ranges = node.property("ranges").ok_or(BoardError::BadProperty {
            node: NODE,
            property: "ranges",
        })?;
        let entry_cells = 3 + parent_cells + size_cells;
        if parent_cells > 2 || size_cells > 2 || ranges.value.len() % (entry_cells * 4) != 0 {
            return Err(BoardError::BadProperty {
                node: NODE,
                property: "ranges",
            });
        }
        let cells: Vec<u32, 64> = be_cells(ranges.value).take(64).collect();
        let mut windows = Vec::new();
        for e in cells.chunks_exact(entry_cells) {
            let read = |c: &[u32]| c.iter().fold(0u64, |acc, &v| (acc << 32) | v as u64);
            let flags = e[0];
            let kind = match (flags >> 24) & 3 {
                1 => WindowKind::Io,
                2 => WindowKind::Mem32,
                3 => WindowKind::Mem64,
                _ => continue, // configuration space: not a BAR window
            };
            let w = PciWindow {
                kind,
                prefetchable: flags & (1 << 30) != 0,
                pci_base: read(&e[1..3]),
                cpu_base: read(&e[3..3 + parent_cells]),
                size: read(&e[3 + parent_cells..]),
            };
            let _ = windows.push(w);
        }
        Ok(Pcie {
            ecam,
            bus_start,
            bus_end,
            windows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRT_GICV3_SMP4: &[u8] = include_bytes!("../tests/data/virt-gicv3-smp4.dtb");
    const VIRT_GICV2_SMP1: &[u8] = include_bytes!("../tests/data/virt-gicv2-smp1.dtb");

    #[test]
    fn qemu_virt_gicv3_four_cores() {
        let b = Board::from_fdt(VIRT_GICV3_SMP4).unwrap();
        assert_eq!(b.model, "linux,dummy-virt");
        assert_eq!(b.cpus.as_slice(), &[0, 1, 2, 3]);
        assert_eq!(
            b.memory.as_slice(),
            &[Region {
                base: 0x4000_0000,
                size: 1 << 30
            }]
        );
        assert_eq!(b.memory_size(), 1 << 30);
        assert_eq!(
            b.uart,
            Region {
                base: 0x0900_0000,
                size: 0x1000
            }
        );
        assert_eq!(b.psci, PsciMethod::Hvc);
        assert_eq!(b.gic.version, 3);
        assert_eq!(b.gic.distributor.base, 0x0800_0000);
        assert_eq!(b.gic.redistributors.unwrap().base, 0x080a_0000);
        assert_eq!(b.gic.its.unwrap().base, 0x0808_0000);
        assert_eq!(
            b.pcie.ecam,
            Region {
                base: 0x40_1000_0000,
                size: 0x1000_0000
            }
        );
        assert_eq!((b.pcie.bus_start, b.pcie.bus_end), (0, 255));
        let m32 = b.pcie.window(WindowKind::Mem32).unwrap();
        assert_eq!(
            (m32.cpu_base, m32.pci_base, m32.size),
            (0x1000_0000, 0x1000_0000, 0x2eff_0000)
        );
        let m64 = b.pcie.window(WindowKind::Mem64).unwrap();
        assert_eq!((m64.cpu_base, m64.size), (0x80_0000_0000, 0x80_0000_0000));
        let io = b.pcie.window(WindowKind::Io).unwrap();
        assert_eq!(
            (io.cpu_base, io.pci_base, io.size),
            (0x3eff_0000, 0, 0x1_0000)
        );
        assert_eq!(b.bootargs, "wave.exit=semihosting");
        assert_eq!(b.dtb.base, VIRT_GICV3_SMP4.as_ptr() as u64);
    }

    #[test]
    fn qemu_virt_gicv2_one_core() {
        let b = Board::from_fdt(VIRT_GICV2_SMP1).unwrap();
        assert_eq!(b.cpus.as_slice(), &[0]);
        assert_eq!(b.gic.version, 2);
        assert_eq!(b.gic.cpu_interface.unwrap().base, 0x0801_0000);
        assert_eq!(b.gic.v2m.unwrap().base, 0x0802_0000);
        assert_eq!(b.bootargs, "");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert_eq!(
            Board::from_fdt(&[0u8; 64]).unwrap_err(),
            BoardError::BadDeviceTree
        );
        assert_eq!(Board::from_fdt(&[]).unwrap_err(), BoardError::BadDeviceTree);
        let mut truncated = VIRT_GICV3_SMP4.to_vec();
        truncated.truncate(100);
        assert_eq!(
            Board::from_fdt(&truncated).unwrap_err(),
            BoardError::BadDeviceTree
        );
    }

    /// Builds a small DT like QEMU's, leaving out `skip` (a node name) to test errors.
    fn synthetic(skip: &str, cpus: u32, psci_method: &str) -> std::vec::Vec<u8> {
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("compatible", "wave,test-board").unwrap();
        if skip != "memory" {
            let n = w.begin_node("memory@40000000").unwrap();
            w.property_string("device_type", "memory").unwrap();
            w.property_array_u64("reg", &[0x4000_0000, 0x1000_0000])
                .unwrap();
            w.end_node(n).unwrap();
        }
        if skip != "cpus" {
            let n = w.begin_node("cpus").unwrap();
            w.property_u32("#address-cells", 1).unwrap();
            w.property_u32("#size-cells", 0).unwrap();
            for i in 0..cpus {
                let c = w.begin_node(&format!("cpu@{i}")).unwrap();
                w.property_string("device_type", "cpu").unwrap();
                w.property_u32("reg", i << 8).unwrap();
                w.end_node(c).unwrap();
            }
            w.end_node(n).unwrap();
        }
        if skip != "uart" {
            let n = w.begin_node("pl011@9000000").unwrap();
            w.property_string_list(
                "compatible",
                vec!["arm,pl011".into(), "arm,primecell".into()],
            )
            .unwrap();
            w.property_array_u64("reg", &[0x0900_0000, 0x1000]).unwrap();
            w.end_node(n).unwrap();
        }
        if skip != "psci" {
            let n = w.begin_node("psci").unwrap();
            w.property_string("compatible", "arm,psci-1.0").unwrap();
            w.property_string("method", psci_method).unwrap();
            w.end_node(n).unwrap();
        }
        if skip != "gic" {
            let n = w.begin_node("intc@8000000").unwrap();
            w.property_string("compatible", "arm,gic-v3").unwrap();
            w.property_array_u64("reg", &[0x0800_0000, 0x1_0000, 0x080a_0000, 0xf6_0000])
                .unwrap();
            w.end_node(n).unwrap();
        }
        if skip != "pcie" {
            let n = w.begin_node("pcie@10000000").unwrap();
            w.property_string("compatible", "pci-host-ecam-generic")
                .unwrap();
            w.property_u32("#address-cells", 3).unwrap();
            w.property_u32("#size-cells", 2).unwrap();
            w.property_array_u64("reg", &[0x40_1000_0000, 0x1000_0000])
                .unwrap();
            w.property_array_u32("bus-range", &[0, 15]).unwrap();
            w.property_array_u32(
                "ranges",
                &[0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2eff_0000],
            )
            .unwrap();
            w.end_node(n).unwrap();
        }
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn synthetic_board_with_affinity_mpidrs() {
        let blob = synthetic("", 3, "smc");
        let b = Board::from_fdt(&blob).unwrap();
        assert_eq!(b.cpus.as_slice(), &[0, 0x100, 0x200]);
        assert_eq!(b.psci, PsciMethod::Smc);
        assert_eq!(b.model, "wave,test-board");
        assert_eq!(b.gic.its, None);
        assert_eq!((b.pcie.bus_start, b.pcie.bus_end), (0, 15));
        assert_eq!(b.pcie.windows.len(), 1);
        assert_eq!(b.pcie.window(WindowKind::Mem64), None);
    }

    #[test]
    fn each_missing_node_is_named() {
        let cases = [
            ("memory", BoardError::MissingNode("/memory")),
            ("cpus", BoardError::MissingNode("/cpus")),
            ("uart", BoardError::MissingNode("arm,pl011 UART")),
            ("psci", BoardError::MissingNode("/psci")),
            (
                "gic",
                BoardError::MissingNode("interrupt-controller (GICv2/GICv3)"),
            ),
            (
                "pcie",
                BoardError::MissingNode("PCIe host bridge (pci-host-ecam-generic)"),
            ),
        ];
        for (skip, want) in cases {
            let blob = synthetic(skip, 2, "hvc");
            assert_eq!(Board::from_fdt(&blob).unwrap_err(), want, "without {skip}");
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn early_info_survives_missing_nodes() {
        let blob = synthetic("gic", 1, "smc");
        let e = Early::from_fdt(&blob).unwrap();
        assert_eq!(
            e.uart,
            Some(Region {
                base: 0x0900_0000,
                size: 0x1000
            })
        );
        assert_eq!(e.psci, Some(PsciMethod::Smc));
        let blob = synthetic("uart", 1, "hvc");
        assert_eq!(Early::from_fdt(&blob).unwrap().uart, None);
        assert_eq!(
            Early::from_fdt(VIRT_GICV3_SMP4).unwrap().bootargs,
            "wave.exit=semihosting"
        );
    }

    #[test]
    fn bad_psci_method_and_too_many_cpus() {
        let blob = synthetic("", 2, "carrier-pigeon");
        assert_eq!(
            Board::from_fdt(&blob).unwrap_err(),
            BoardError::BadProperty {
                node: "/psci",
                property: "method"
            }
        );
        let blob = synthetic("", MAX_CPUS as u32 + 1, "hvc");
        assert_eq!(
            Board::from_fdt(&blob).unwrap_err(),
            BoardError::TooManyCpus(MAX_CPUS + 1)
        );
    }
}
