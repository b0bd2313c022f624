//! The interrupt controller, as far as the link needs it: MSI-X doorbells from the host land
//! as interrupts on a chosen core, which only has to wake up and poll.
//!
//! - GICv3: distributor with affinity routing, every core's redistributor (woken, LPIs on,
//!   one shared LPI configuration table, a pending table per core), and the ITS: each MSI-X
//!   vector is an ITS event of the device (DeviceID = requester ID) mapped to LPI 8192+v on
//!   the collection of the target core. `GICR_PROPBASER.IDbits` stays at 13: QEMU rescans the
//!   whole pending table on every LPI acknowledge (../shared/reference/msi-on-qemu-virt.md).
//! - GICv2 with a v2m frame: each vector is an SPI (`MSI_TYPER` base + v) targeted at the core.
//!
//! Register access is by offset from the DT-given bases (mapped Device-nGnRE by `memory`).
//! Tables the GIC reads live in this module's statics.

use crate::board::{Gic as GicInfo, Region};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use wave_boot::layout::MAX_CORES;

/// First LPI interrupt ID.
const LPI_BASE: u32 = 8192;
/// LPI ID bits minus one (GICR_PROPBASER.IDbits): IDs up to 2^14.
const LPI_ID_BITS: u64 = 13;
/// Most MSI vectors this driver routes.
pub const MAX_VECTORS: usize = 64;

/// Why the controller could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// No MSI controller (GICv3 without ITS, or GICv2 without v2m).
    NoMsiController,
    /// A core's redistributor was not found.
    NoRedistributor(u64),
    /// The ITS rejected the table setup or did not process commands.
    Its(&'static str),
    /// More vectors than [`MAX_VECTORS`] or than the v2m frame has.
    TooManyVectors,
}

impl core::fmt::Display for GicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GicError::NoMsiController => write!(
                f,
                "the GIC has no MSI controller (GICv3 needs an ITS, GICv2 a v2m frame)"
            ),
            GicError::NoRedistributor(m) => write!(f, "no GICv3 redistributor for mpidr {m:#x}"),
            GicError::Its(why) => write!(f, "ITS setup failed: {why}"),
            GicError::TooManyVectors => write!(f, "more MSI vectors than the GIC driver routes"),
        }
    }
}

fn rd32(addr: u64) -> u32 {
    // SAFETY: `addr` is a GIC register inside a region the DT describes and `memory` mapped
    // as device memory; GIC registers are 4-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}
fn wr32(addr: u64, v: u32) {
    // SAFETY: as for `rd32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}
fn rd64(addr: u64) -> u64 {
    // SAFETY: as for `rd32`; the 64-bit registers used here are 8-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
fn wr64(addr: u64, v: u64) {
    // SAFETY: as for `rd64`.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = crate::time::deadline_after_micros(100_000);
    while !done() {
        if crate::time::ticks() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

#[repr(C, align(65536))]
struct LpiTables {
    /// One pending table per core (64 KiB aligned as GICR_PENDBASER requires).
    pending: [[u8; 65536]; MAX_CORES],
}
#[repr(C, align(65536))]
struct ItsTables {
    /// LPI configuration: one byte per LPI (priority | enable).
    config: [u8; 8192],
    _pad: [u8; 8192],
    device: [u8; 4096],
    collection: [u8; 4096],
    commands: [u8; 4096],
    /// Interrupt translation table of the one device (256-byte aligned).
    itt: [u8; 4096],
}

struct Tables(UnsafeCell<ItsTables>, UnsafeCell<LpiTables>);
// SAFETY: written only by the boot core during setup (before interrupts are unmasked);
// afterwards read by the GIC.
unsafe impl Sync for Tables {}
static TABLES: Tables = Tables(
    // SAFETY: plain bytes; all-zero is the valid initial state of every table.
    UnsafeCell::new(unsafe { core::mem::zeroed() }),
    // SAFETY: as above.
    UnsafeCell::new(unsafe { core::mem::zeroed() }),
);

static VERSION: AtomicU8 = AtomicU8::new(0);
static GICD: AtomicU64 = AtomicU64::new(0);
static GICC: AtomicU64 = AtomicU64::new(0);
static ITS: AtomicU64 = AtomicU64::new(0);
static V2M: AtomicU64 = AtomicU64::new(0);
static V2M_BASE_SPI: AtomicU32 = AtomicU32::new(0);
static V2M_SPIS: AtomicU32 = AtomicU32::new(0);
static ITS_CWRITER: AtomicU64 = AtomicU64::new(0);
/// Redistributor RD_base of each slot, and its processor number.
static GICR_OF_SLOT: [AtomicU64; MAX_CORES] = [const { AtomicU64::new(0) }; MAX_CORES];
static PROC_OF_SLOT: [AtomicU64; MAX_CORES] = [const { AtomicU64::new(0) }; MAX_CORES];
static READY: AtomicBool = AtomicBool::new(false);
static MAPPED_COLLECTIONS: AtomicU64 = AtomicU64::new(0);
static MAPPED_DEVICE: AtomicU32 = AtomicU32::new(0);

/// Interrupts taken per MSI vector.
pub static MSI_COUNT: [AtomicU64; MAX_VECTORS] = [const { AtomicU64::new(0) }; MAX_VECTORS];
/// Interrupts whose ID was not an MSI this driver routed.
pub static SPURIOUS: AtomicUsize = AtomicUsize::new(0);

/// Sets up the distributor, every core's redistributor (GICv3) and the MSI controller.
/// Boot core only, MMU on, before any core unmasks interrupts.
pub fn init(info: &GicInfo, cpus: &[(usize, u64)]) -> Result<(), GicError> {
    VERSION.store(info.version, Ordering::Relaxed);
    GICD.store(info.distributor.base, Ordering::Relaxed);
    if info.version == 3 {
        let its = info.its.ok_or(GicError::NoMsiController)?;
        let gicr = info.redistributors.ok_or(GicError::NoMsiController)?;
        // GICD_CTLR: ARE | EnableGrp1 (QEMU's GIC has DS=1: one security state).
        wr32(info.distributor.base, (1 << 4) | (1 << 1));
        spin_until(|| rd32(info.distributor.base) & (1 << 31) == 0);
        for &(slot, mpidr) in cpus {
            init_redistributor(gicr, slot, mpidr)?;
        }
        init_its(its.base)?;
    } else {
        let v2m = info.v2m.ok_or(GicError::NoMsiController)?;
        let typer = rd32(v2m.base + 0x8);
        V2M.store(v2m.base, Ordering::Relaxed);
        V2M_BASE_SPI.store((typer >> 16) & 0x3ff, Ordering::Relaxed);
        V2M_SPIS.store(typer & 0x3ff, Ordering::Relaxed);
        GICC.store(info.cpu_interface.map_or(0, |r| r.base), Ordering::Relaxed);
        wr32(info.distributor.base, 1); // GICD_CTLR: enable
    }
    READY.store(true, Ordering::Release);
    Ok(())
}

fn init_redistributor(gicr: Region, slot: usize, mpidr: u64) -> Result<(), GicError> {
    let aff = ((mpidr >> 8) & 0xff00_0000) | (mpidr & 0xff_ffff);
    let mut frame = gicr.base;
    let rd = loop {
        if frame >= gicr.end() {
            return Err(GicError::NoRedistributor(mpidr));
        }
        let typer = rd64(frame + 0x8);
        if typer >> 32 == aff {
            break frame;
        }
        if typer & (1 << 4) != 0 {
            return Err(GicError::NoRedistributor(mpidr)); // Last
        }
        frame += if typer & (1 << 1) != 0 {
            0x40000
        } else {
            0x20000
        };
    };
    GICR_OF_SLOT[slot].store(rd, Ordering::Relaxed);
    PROC_OF_SLOT[slot].store((rd64(rd + 0x8) >> 8) & 0xffff, Ordering::Relaxed);
    // GICR_WAKER: clear ProcessorSleep, wait for ChildrenAsleep to clear.
    wr32(rd + 0x14, rd32(rd + 0x14) & !(1 << 1));
    spin_until(|| rd32(rd + 0x14) & (1 << 2) == 0);
    let t = TABLES.0.get();
    let p = TABLES.1.get();
    // SAFETY: taking field addresses of the statics; nothing is dereferenced.
    let (config, pending) = unsafe {
        (
            &raw mut (*t).config as u64,
            &raw mut (*p).pending[slot] as u64,
        )
    };
    wr64(rd + 0x70, config | LPI_ID_BITS); // PROPBASER
    wr64(rd + 0x78, pending | (1 << 62)); // PENDBASER, PTZ
    wr32(rd, rd32(rd) | 1); // GICR_CTLR.EnableLPIs
    Ok(())
}

fn init_its(its: u64) -> Result<(), GicError> {
    ITS.store(its, Ordering::Relaxed);
    let t = TABLES.0.get();
    // SAFETY: taking field addresses of the static; nothing is dereferenced.
    let (device, collection, commands) = unsafe {
        (
            &raw mut (*t).device as u64,
            &raw mut (*t).collection as u64,
            &raw mut (*t).commands as u64,
        )
    };
    for n in 0..8u64 {
        let reg = its + 0x100 + 8 * n;
        let baser = rd64(reg);
        let pa = match (baser >> 56) & 7 {
            1 => device,
            4 => collection,
            _ => continue,
        };
        // Valid, flat, 4 KiB pages, one page.
        wr64(
            reg,
            (1 << 63) | (baser & (0x1f << 48)) | (baser & (7 << 56)) | pa,
        );
        if rd64(reg) & (1 << 63) == 0 {
            return Err(GicError::Its("GITS_BASER not accepted"));
        }
    }
    wr64(its + 0x80, (1 << 63) | commands); // CBASER: valid, one page
    wr64(its + 0x88, 0); // CWRITER
    ITS_CWRITER.store(0, Ordering::Relaxed);
    wr32(its, rd32(its) | 1); // GITS_CTLR.Enabled
    Ok(())
}

fn its_command(cmd: crate::its::Command) -> Result<(), GicError> {
    let its = ITS.load(Ordering::Relaxed);
    let t = TABLES.0.get();
    let w = ITS_CWRITER.load(Ordering::Relaxed);
    // SAFETY: the queue is this module's static, written only by the boot core during setup;
    // `w` stays inside the 4 KiB page (wrapped below).
    unsafe {
        let slot = (&raw mut (*t).commands as *mut u64).add(w as usize / 8);
        for (i, dw) in cmd.iter().enumerate() {
            slot.add(i).write_volatile(*dw);
        }
    }
    // SAFETY: a barrier has no memory-safety requirements.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
    let next = (w + 32) % 4096;
    ITS_CWRITER.store(next, Ordering::Relaxed);
    wr64(its + 0x88, next);
    if !spin_until(|| rd64(its + 0x90) & !0x1f == next) {
        return Err(GicError::Its("command queue stalled"));
    }
    if rd64(its + 0x90) & 1 != 0 {
        return Err(GicError::Its(
            "a command was rejected (GITS_CREADR.Stalled)",
        ));
    }
    Ok(())
}

/// Routes MSI `vector` of PCI device `device_id` (its requester ID) to the core in `slot`.
/// Returns the MSI-X message (address, data) to program into the device's table.
pub fn route_msi(device_id: u32, vector: u32, slot: usize) -> Result<(u64, u32), GicError> {
    if vector as usize >= MAX_VECTORS {
        return Err(GicError::TooManyVectors);
    }
    if VERSION.load(Ordering::Relaxed) == 3 {
        let its = ITS.load(Ordering::Relaxed);
        let rdbase = PROC_OF_SLOT[slot].load(Ordering::Relaxed);
        let t = TABLES.0.get();
        let intid = LPI_BASE + vector;
        // SAFETY: boot core only, before interrupts are unmasked; the byte is in the table.
        unsafe {
            (&raw mut (*t).config as *mut u8)
                .add(vector as usize)
                .write_volatile(0xa0 | 1)
        };
        // SAFETY: address of the static's field only.
        let itt = unsafe { &raw mut (*t).itt as u64 };
        if MAPPED_COLLECTIONS.fetch_or(1 << slot, Ordering::Relaxed) & (1 << slot) == 0 {
            its_command(crate::its::mapc(slot as u16, rdbase))?;
        }
        // One device (the link) owns the one ITT.
        match MAPPED_DEVICE.load(Ordering::Relaxed) {
            0 => {
                its_command(crate::its::mapd(device_id, 6, itt))?;
                MAPPED_DEVICE.store(device_id + 1, Ordering::Relaxed);
            }
            d if d == device_id + 1 => {}
            _ => return Err(GicError::Its("only one MSI device is supported")),
        }
        its_command(crate::its::mapti(device_id, vector, intid, slot as u16))?;
        its_command(crate::its::inv(device_id, vector))?;
        its_command(crate::its::sync(rdbase))?;
        Ok((its + 0x1_0040, vector))
    } else {
        if vector >= V2M_SPIS.load(Ordering::Relaxed) {
            return Err(GicError::TooManyVectors);
        }
        let spi = V2M_BASE_SPI.load(Ordering::Relaxed) + vector;
        let d = GICD.load(Ordering::Relaxed);
        let cpu = crate::cpus::cpu_of_slot(slot).unwrap_or(0) as u32;
        let byte = |base: u64, v: u32| {
            let reg = base + (spi as u64 & !3);
            let shift = (spi % 4) * 8;
            wr32(reg, (rd32(reg) & !(0xff << shift)) | (v << shift));
        };
        byte(d + 0x400, 0xa0); // GICD_IPRIORITYR
        byte(d + 0x800, 1 << (cpu & 7)); // GICD_ITARGETSR
        let cfg = d + 0xc00 + (spi as u64 / 16) * 4; // GICD_ICFGR: edge
        wr32(cfg, rd32(cfg) | (2 << ((spi % 16) * 2)));
        wr32(d + 0x100 + (spi as u64 / 32) * 4, 1 << (spi % 32)); // GICD_ISENABLER
        Ok((V2M.load(Ordering::Relaxed) + 0x40, spi))
    }
}

/// Turns on this core's CPU interface and unmasks IRQs. Call on each core after [`init`].
pub fn enable_cpu() {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    if VERSION.load(Ordering::Relaxed) == 3 {
        // SAFETY: ICC_* system register writes configure only this core's CPU interface.
        unsafe {
            core::arch::asm!(
                "mrs {t}, S3_0_C12_C12_5", // ICC_SRE_EL1
                "orr {t}, {t}, #1",
                "msr S3_0_C12_C12_5, {t}",
                "isb",
                "mov {t}, #0xff",
                "msr S3_0_C4_C6_0, {t}", // ICC_PMR_EL1
                "msr S3_0_C12_C12_3, xzr", // ICC_BPR1_EL1
                "mov {t}, #1",
                "msr S3_0_C12_C12_7, {t}", // ICC_IGRPEN1_EL1
                "isb",
                t = out(reg) _,
                options(nostack),
            );
        }
    } else {
        let c = GICC.load(Ordering::Relaxed);
        wr32(c + 0x4, 0xff); // GICC_PMR
        wr32(c, 1); // GICC_CTLR
    }
    // SAFETY: unmasking IRQs on this core; the vector table and handler are installed.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nostack)) };
}

/// Enables the virtual timer's PPI for the calling core (used as a bounded-sleep wake-up).
/// Call on the core itself, after [`init`].
pub fn enable_timer(slot: usize) {
    let intid = crate::time::VIRTUAL_TIMER_INTID;
    if VERSION.load(Ordering::Relaxed) == 3 {
        let sgi = GICR_OF_SLOT[slot].load(Ordering::Relaxed) + 0x1_0000;
        if sgi == 0x1_0000 {
            return;
        }
        wr32(sgi + 0x80, rd32(sgi + 0x80) | 1 << intid); // GICR_IGROUPR0: group 1
        let prio = sgi + 0x400 + (intid as u64 & !3); // GICR_IPRIORITYR
        let shift = (intid % 4) * 8;
        wr32(prio, (rd32(prio) & !(0xff << shift)) | 0xa0 << shift);
        wr32(sgi + 0x100, 1 << intid); // GICR_ISENABLER0
    } else {
        let d = GICD.load(Ordering::Relaxed);
        let prio = d + 0x400 + (intid as u64 & !3); // banked per core for PPIs
        let shift = (intid % 4) * 8;
        wr32(prio, (rd32(prio) & !(0xff << shift)) | 0xa0 << shift);
        wr32(d + 0x100, 1 << intid);
    }
}

/// Timer interrupts taken.
pub static TIMER_COUNT: AtomicU64 = AtomicU64::new(0);

/// Called for every IRQ exception: acknowledges and completes everything pending, counting
/// MSI vectors. The work itself happens in the polling loop the interrupt woke.
pub fn handle_irq() {
    let v3 = VERSION.load(Ordering::Relaxed) == 3;
    let gicc = GICC.load(Ordering::Relaxed);
    for _ in 0..64 {
        let intid: u32 = if v3 {
            let v: u64;
            // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority interrupt of
            // this core; it is completed below.
            unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) v, options(nostack)) };
            v as u32 & 0xff_ffff
        } else {
            rd32(gicc + 0xc) & 0x3ff
        };
        if (1020..1024).contains(&intid) {
            return;
        }
        let vector = if intid == crate::time::VIRTUAL_TIMER_INTID {
            crate::time::disarm();
            TIMER_COUNT.fetch_add(1, Ordering::Relaxed);
            None
        } else if v3 {
            intid.checked_sub(LPI_BASE)
        } else {
            intid.checked_sub(V2M_BASE_SPI.load(Ordering::Relaxed))
        };
        match vector.filter(|&v| (v as usize) < MAX_VECTORS) {
            Some(v) => {
                MSI_COUNT[v as usize].fetch_add(1, Ordering::Relaxed);
            }
            None if intid == crate::time::VIRTUAL_TIMER_INTID => {}
            None => {
                SPURIOUS.fetch_add(1, Ordering::Relaxed);
            }
        }
        if v3 {
            // SAFETY: completes the interrupt acknowledged above.
            unsafe {
                core::arch::asm!("msr S3_0_C12_C12_1, {}", in(reg) intid as u64, options(nostack))
            };
        } else {
            wr32(gicc + 0x10, intid);
        }
    }
}
