//! The interrupt controller, as far as the link needs it: MSI-X doorbells from the host land
//! as interrupts on a chosen core, which only has to wake up and poll.
//!
//! - GICv3: distributor with affinity routing, every core's redistributor (woken, LPIs on,
//!   one shared LPI configuration table, a pending table per core), and the ITS (`its`): each
//!   MSI-X vector is an ITS event of the device (DeviceID = requester ID) mapped to LPI 8192+v
//!   on the collection of the target core. `GICR_PROPBASER.IDbits` stays at 13: QEMU rescans
//!   the whole pending table on every LPI acknowledge (../shared/reference/msi-on-qemu-virt.md).
//! - GICv2 with a v2m frame: each vector is an SPI (`MSI_TYPER` base + v) targeted at the core.
//!
//! The register blocks are typed (`arm-gic`'s distributor, redistributor and CPU interface
//! blocks; this crate's ITS and v2m blocks) and owned by the one driver state behind a lock;
//! [`init`] is the only place that turns the device tree's addresses into pointers. Routing is
//! done once per vector and core, from any core. Tables the GIC reads live in statics.

use crate::board::{Gic as GicInfo, Region};
use crate::its::{self, Its};
use crate::lock::{self, IrqLock};
use arm_gic::gicv2::registers::{Gicc, Gicd as GicdV2, GicdCtlr as GicdCtlrV2};
use arm_gic::gicv3::registers::{Gicd as GicdV3, GicdCtlr, GicrCtlr, GicrSgi, Waker};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use safe_mmio::fields::{ReadPure, WriteOnly};
use safe_mmio::{field, field_shared, UniqueMmioPointer};
use wave_boot::layout::MAX_CORES;

/// First LPI interrupt ID.
const LPI_BASE: u32 = 8192;
/// LPI ID bits minus one (GICR_PROPBASER.IDbits): IDs up to 2^14.
const LPI_ID_BITS: u64 = 13;
/// Most MSI vectors this driver routes.
pub const MAX_VECTORS: usize = 64;
/// Priority of every interrupt this driver enables.
const PRIORITY: u32 = 0xa0;

/// Why the controller could not be set up, or a vector not routed.
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
    /// A device-tree region cannot hold its registers, or [`init`] ran twice.
    Setup(&'static str),
    /// Routing was asked for before [`init`] succeeded.
    NotReady,
    /// No core is in this stack slot.
    UnknownSlot(usize),
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
            GicError::Setup(why) => write!(f, "GIC setup failed: {why}"),
            GicError::NotReady => write!(f, "the GIC is not set up (see the boot log)"),
            GicError::UnknownSlot(s) => write!(f, "no core in slot {s} to route interrupts to"),
        }
    }
}

#[repr(C, align(65536))]
struct LpiTables {
    /// One pending table per core (64 KiB aligned as GICR_PENDBASER requires).
    pending: [[u8; 65536]; MAX_CORES],
    /// LPI configuration: one byte per LPI (priority | enable).
    config: [u8; 8192],
}

struct LpiCell(UnsafeCell<LpiTables>);
// SAFETY: the configuration bytes are written only by the holder of `GIC`; the pending tables
// only by the GIC.
unsafe impl Sync for LpiCell {}
// SAFETY: plain bytes; all-zero is the valid initial state of every table.
static LPI: LpiCell = LpiCell(UnsafeCell::new(unsafe { core::mem::zeroed() }));

/// The v2m MSI frame (Arm "GICv2m" specification); only what this driver uses.
#[repr(C)]
struct V2mRegs {
    _reserved0: [u32; 2],
    /// MSI_TYPER: first SPI (bits 25:16) and number of SPIs (bits 9:0).
    typer: ReadPure<u32>,
    _reserved1: [u32; 13],
    /// MSI_SETSPI_NS: devices write the SPI number here; the CPU never does.
    setspi_ns: WriteOnly<u32>,
}
const _: () = assert!(core::mem::offset_of!(V2mRegs, setspi_ns) == 0x40);

/// Turns a device-tree region into the register block it holds, checking size and alignment.
///
/// # Safety
/// `r` must hold a `T` register block, mapped as device memory for the rest of the run, and
/// nothing else may access it while the pointer lives.
unsafe fn block<T>(
    r: Region,
    what: &'static str,
) -> Result<UniqueMmioPointer<'static, T>, GicError> {
    let ok =
        (r.size as usize) >= size_of::<T>() && (r.base as usize).is_multiple_of(align_of::<T>());
    let ptr = NonNull::new(r.base as *mut T).filter(|_| ok);
    // SAFETY: size and alignment checked; the rest is the caller's contract.
    ptr.map(|p| unsafe { UniqueMmioPointer::new(p) })
        .ok_or(GicError::Setup(what))
}

/// The GICv3 redistributor region: one frame pair (RD_base, SGI_base) per core.
struct Redistributors {
    base: NonNull<GicrSgi>,
    len: usize,
}

// SAFETY: the region is device memory owned by this value (see `new`); any core may access it.
unsafe impl Send for Redistributors {}

impl Redistributors {
    /// # Safety
    /// As for [`block`], for the whole region.
    unsafe fn new(r: Region) -> Result<Self, GicError> {
        let base = NonNull::new(r.base as *mut GicrSgi)
            .filter(|_| r.base.is_multiple_of(65536))
            .ok_or(GicError::Setup("the redistributor region is misaligned"))?;
        Ok(Redistributors {
            base,
            len: r.size as usize,
        })
    }

    /// The frames at byte `offset`, if a whole frame pair fits there.
    fn frame(&mut self, offset: usize) -> Option<UniqueMmioPointer<'_, GicrSgi>> {
        let fits =
            offset.is_multiple_of(65536) && offset.checked_add(size_of::<GicrSgi>())? <= self.len;
        // SAFETY: `new`'s contract; the frames are inside the region (checked) and aligned,
        // and the pointer borrows `self` mutably, so it is the only one while it lives.
        fits.then(|| unsafe { UniqueMmioPointer::new(self.base.byte_add(offset)) })
    }

    /// Offset of the frames whose affinity is `mpidr`'s.
    fn find(&mut self, mpidr: u64) -> Result<usize, GicError> {
        let mut offset = 0;
        loop {
            let mut f = self.frame(offset).ok_or(GicError::NoRedistributor(mpidr))?;
            let typer = field_shared!(*field!(f, gicr), typer).read();
            if typer.core_mpidr() == mpidr & 0xff_00ff_ffff {
                return Ok(offset);
            }
            if typer.last_redistributor() {
                return Err(GicError::NoRedistributor(mpidr));
            }
            offset += if typer.virtual_lpis_supported() {
                0x40000
            } else {
                0x20000
            };
        }
    }
}

struct V3 {
    /// Owned so that nothing else reaches it; set up in `new`, not touched afterwards.
    _gicd: UniqueMmioPointer<'static, GicdV3>,
    gicr: Redistributors,
    /// Frame offset and processor number (the ITS's RDbase) of each slot's redistributor.
    slots: [Option<(usize, u16)>; MAX_CORES],
    its: Its,
}

struct V2 {
    gicd: UniqueMmioPointer<'static, GicdV2>,
    /// MSI_SETSPI_NS of the v2m frame.
    msi_address: u64,
    base_spi: u32,
    spis: u32,
}

#[allow(clippy::large_enum_variant, reason = "one instance, in a static")]
enum Controller {
    V3(V3),
    V2(V2),
}

struct State {
    controller: Controller,
    /// The slot each vector is routed to.
    routed: [Option<usize>; MAX_VECTORS],
}

static GIC: IrqLock<Option<State>> = IrqLock::new(None);
static STARTED: AtomicBool = AtomicBool::new(false);
/// What the interrupt handler needs without the lock.
static VERSION: AtomicU8 = AtomicU8::new(0);
static V2M_BASE_SPI: AtomicU32 = AtomicU32::new(0);
static GICC: AtomicPtr<Gicc> = AtomicPtr::new(core::ptr::null_mut());

/// Interrupts taken per MSI vector.
pub static MSI_COUNT: [AtomicU64; MAX_VECTORS] = [const { AtomicU64::new(0) }; MAX_VECTORS];
/// Interrupts whose ID was not an MSI this driver routed.
pub static SPURIOUS: AtomicUsize = AtomicUsize::new(0);
/// Timer interrupts taken.
pub static TIMER_COUNT: AtomicU64 = AtomicU64::new(0);

/// Sets up the distributor, every core's redistributor (GICv3) and the MSI controller for the
/// cores `cpus` (stack slot, MPIDR). Boot core, MMU on, before any core unmasks interrupts.
///
/// # Safety
/// The regions in `info` must be this board's GIC (from the device tree), mapped as device
/// memory for the rest of the run, and nothing but this module may access them.
pub unsafe fn init(info: &GicInfo, cpus: &[(usize, u64)]) -> Result<(), GicError> {
    if STARTED.swap(true, Ordering::AcqRel) {
        return Err(GicError::Setup("the GIC is already set up"));
    }
    let controller = if info.version == 3 {
        // SAFETY: the caller's contract.
        Controller::V3(unsafe { V3::new(info, cpus)? })
    } else {
        // SAFETY: the caller's contract.
        Controller::V2(unsafe { V2::new(info)? })
    };
    VERSION.store(info.version, Ordering::Relaxed);
    *GIC.lock() = Some(State {
        controller,
        routed: [None; MAX_VECTORS],
    });
    Ok(())
}

impl V3 {
    /// # Safety
    /// As for [`init`].
    unsafe fn new(info: &GicInfo, cpus: &[(usize, u64)]) -> Result<V3, GicError> {
        let its = info.its.ok_or(GicError::NoMsiController)?;
        let gicr = info.redistributors.ok_or(GicError::NoMsiController)?;
        // SAFETY: the caller's contract, for the distributor.
        let mut gicd = unsafe { block::<GicdV3>(info.distributor, "distributor region")? };
        // ARE | EnableGrp1 (QEMU's GIC has DS=1: one security state, bits 4 and 1).
        field!(gicd, ctlr).write(GicdCtlr::ARE_S | GicdCtlr::EnableGrp1NS);
        its::spin_until(|| !field_shared!(*gicd, ctlr).read().contains(GicdCtlr::RWP));
        let mut v3 = V3 {
            _gicd: gicd,
            // SAFETY: the caller's contract, for the redistributors.
            gicr: unsafe { Redistributors::new(gicr)? },
            slots: [None; MAX_CORES],
            // SAFETY: the caller's contract, for the ITS.
            its: unsafe { Its::new(its) }.map_err(GicError::Its)?,
        };
        for &(slot, mpidr) in cpus {
            v3.init_redistributor(slot, mpidr)?;
        }
        Ok(v3)
    }

    fn init_redistributor(&mut self, slot: usize, mpidr: u64) -> Result<(), GicError> {
        let slot_ref = self
            .slots
            .get_mut(slot)
            .ok_or(GicError::UnknownSlot(slot))?;
        let offset = self.gicr.find(mpidr)?;
        let mut frame = self
            .gicr
            .frame(offset)
            .ok_or(GicError::NoRedistributor(mpidr))?;
        let mut rd = field!(frame, gicr);
        let proc = field_shared!(*rd, typer).read().processor_number();
        *slot_ref = Some((offset, proc));
        field!(rd, waker).modify(|w| w - Waker::PROCESSOR_SLEEP);
        its::spin_until(|| {
            !field_shared!(*rd, waker)
                .read()
                .contains(Waker::CHILDREN_ASLEEP)
        });
        let t = LPI.0.get();
        // SAFETY: addresses of the static's fields only; nothing is dereferenced.
        let (config, pending) = unsafe {
            (
                &raw mut (*t).config as u64,
                &raw mut (*t).pending[slot] as u64,
            )
        };
        field!(rd, propbaser).write(config | LPI_ID_BITS);
        field!(rd, pendbaser).write(pending | (1 << 62)); // PTZ
        field!(rd, ctlr).modify(|c| c | GicrCtlr::EnableLPIs);
        Ok(())
    }

    /// Maps event `vector` of `device` to LPI 8192+`vector` on `slot`'s collection, or moves
    /// it there if it was routed to `from`.
    fn route(
        &mut self,
        device: u32,
        vector: u32,
        slot: usize,
        from: Option<usize>,
    ) -> Result<(u64, u32), GicError> {
        let (_, rdbase) = self
            .slots
            .get(slot)
            .copied()
            .flatten()
            .ok_or(GicError::UnknownSlot(slot))?;
        let (rdbase, icid) = (rdbase as u64, slot as u16);
        let e = GicError::Its;
        self.its.map_collection(icid, rdbase).map_err(e)?;
        self.its.map_device(device, 6).map_err(e)?;
        if from.is_some() {
            self.its
                .command(its::movi(device, vector, icid))
                .map_err(e)?;
        } else {
            // SAFETY: the byte is inside the configuration table (vector < MAX_VECTORS), which
            // only the holder of `GIC` writes.
            unsafe {
                (&raw mut (*LPI.0.get()).config[vector as usize]).write_volatile(PRIORITY as u8 | 1)
            };
            self.its
                .command(its::mapti(device, vector, LPI_BASE + vector, icid))
                .map_err(e)?;
            self.its.command(its::inv(device, vector)).map_err(e)?;
        }
        self.its.command(its::sync(rdbase)).map_err(e)?;
        Ok((self.its.doorbell_address(), vector))
    }

    fn enable_ppi(&mut self, slot: usize, intid: u32) {
        let Some((offset, _)) = self.slots.get(slot).copied().flatten() else {
            return;
        };
        let Some(mut frame) = self.gicr.frame(offset) else {
            return;
        };
        let mut sgi = field!(frame, sgi);
        let bit = 1 << intid;
        if let Some(mut r) = field!(sgi, igroupr).get(0) {
            r.modify(|g| g | bit); // group 1
        }
        if let Some(mut r) = field!(sgi, ipriorityr).get(intid as usize / 4) {
            r.modify(|p| set_byte(p, intid, PRIORITY));
        }
        if let Some(mut r) = field!(sgi, isenabler).get(0) {
            r.write(bit);
        }
    }
}

/// `word` with byte `intid % 4` replaced by `value`.
fn set_byte(word: u32, intid: u32, value: u32) -> u32 {
    let shift = (intid % 4) * 8;
    (word & !(0xff << shift)) | (value << shift)
}

impl V2 {
    /// # Safety
    /// As for [`init`].
    unsafe fn new(info: &GicInfo) -> Result<V2, GicError> {
        let v2m = info.v2m.ok_or(GicError::NoMsiController)?;
        let cpu = info
            .cpu_interface
            .ok_or(GicError::Setup("no GICv2 CPU interface"))?;
        // SAFETY: the caller's contract, for the v2m frame.
        let mut frame = unsafe { block::<V2mRegs>(v2m, "v2m region")? };
        // SAFETY: the caller's contract, for the distributor.
        let mut gicd = unsafe { block::<GicdV2>(info.distributor, "distributor region")? };
        // SAFETY: the caller's contract, for the CPU interface; checked, then kept as a raw
        // pointer: its registers are banked per core (see `with_gicc`).
        let mut gicc = unsafe { block::<Gicc>(cpu, "CPU interface region")? };
        let typer = field_shared!(*frame, typer).read();
        let v2 = V2 {
            msi_address: field!(frame, setspi_ns).ptr_mut() as u64,
            base_spi: (typer >> 16) & 0x3ff,
            spis: typer & 0x3ff,
            gicd: {
                field!(gicd, ctlr).write(GicdCtlrV2::EnableGrp0);
                gicd
            },
        };
        V2M_BASE_SPI.store(v2.base_spi, Ordering::Relaxed);
        GICC.store(gicc.ptr_mut(), Ordering::Release);
        Ok(v2)
    }

    /// Targets SPI `base_spi + vector` at `slot`'s core (edge-triggered, enabled).
    fn route(&mut self, vector: u32, slot: usize) -> Result<(u64, u32), GicError> {
        if vector >= self.spis {
            return Err(GicError::TooManyVectors);
        }
        let cpu = crate::cpus::cpu_of_slot(slot).ok_or(GicError::UnknownSlot(slot))? as u32;
        let spi = self.base_spi + vector;
        let (word, bit) = (spi as usize / 4, spi % 32);
        if let Some(mut r) = field!(self.gicd, ipriorityr).get(word) {
            r.modify(|p| set_byte(p, spi, PRIORITY));
        }
        if let Some(mut r) = field!(self.gicd, itargetsr).get(word) {
            // SAFETY: GICD_ITARGETSR<n> for SPIs is read-write without read side effects
            // (arm-gic declares the array without an access wrapper).
            unsafe {
                let targets = r.read_unsafe();
                r.write_unsafe(set_byte(targets, spi, 1 << (cpu & 7)));
            }
        }
        if let Some(mut r) = field!(self.gicd, icfgr).get(spi as usize / 16) {
            r.modify(|c| c | 2 << ((spi % 16) * 2)); // edge
        }
        if let Some(mut r) = field!(self.gicd, isenabler).get(spi as usize / 32) {
            r.write(1 << bit);
        }
        Ok((self.msi_address, spi))
    }

    /// Enables PPI `intid` (its registers are banked: this core's copy).
    fn enable_ppi(&mut self, intid: u32) {
        if let Some(mut r) = field!(self.gicd, ipriorityr).get(intid as usize / 4) {
            r.modify(|p| set_byte(p, intid, PRIORITY));
        }
        if let Some(mut r) = field!(self.gicd, isenabler).get(0) {
            r.write(1 << intid);
        }
    }
}

/// Routes MSI `vector` of PCI device `device_id` (its requester ID) to the core in `slot`,
/// from any core. Returns the MSI-X message (address, data) to program into the device's
/// table. Routing a vector again to the same core issues nothing; to another core moves it.
pub fn route_msi(device_id: u32, vector: u32, slot: usize) -> Result<(u64, u32), GicError> {
    if vector as usize >= MAX_VECTORS {
        return Err(GicError::TooManyVectors);
    }
    let mut guard = GIC.lock();
    let state = guard.as_mut().ok_or(GicError::NotReady)?;
    let from = state.routed[vector as usize];
    let message = match &mut state.controller {
        Controller::V3(v3) if from == Some(slot) => (v3.its.doorbell_address(), vector),
        Controller::V3(v3) => v3.route(device_id, vector, slot, from)?,
        Controller::V2(v2) => v2.route(vector, slot)?,
    };
    state.routed[vector as usize] = Some(slot);
    Ok(message)
}

/// Runs `f` on this core's GICv2 CPU interface, IRQs masked. Its registers are banked: every
/// core reaches its own copy at the same address.
fn with_gicc<R>(f: impl FnOnce(&mut UniqueMmioPointer<'_, Gicc>) -> R) -> Option<R> {
    let ptr = NonNull::new(GICC.load(Ordering::Acquire))?;
    lock::without_irqs(|| {
        // SAFETY: `init`'s contract makes the CPU interface this module's device memory. Its
        // registers are banked per core, so this core's accesses alias no other core's, and
        // with IRQs masked no other use on this core (`enable_cpu`, `handle_irq`) overlaps
        // this pointer's life.
        let mut gicc = unsafe { UniqueMmioPointer::new(ptr) };
        Some(f(&mut gicc))
    })
}

/// Turns on this core's CPU interface and unmasks IRQs. Call on each core after [`init`].
pub fn enable_cpu() {
    match VERSION.load(Ordering::Relaxed) {
        3 => enable_cpu_v3(),
        2 => {
            with_gicc(|c| {
                field!(*c, pmr).write(0xff);
                field!(*c, ctlr).write(1);
            });
        }
        _ => return, // not set up
    }
    // SAFETY: unmasking IRQs on this core; the vector table and handler are installed.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nostack)) };
}

fn enable_cpu_v3() {
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
}

/// Enables the virtual timer's PPI for the core in `slot` (used as a bounded-sleep wake-up).
/// Call on that core itself, after [`init`].
pub fn enable_timer(slot: usize) {
    let intid = crate::time::VIRTUAL_TIMER_INTID;
    let mut guard = GIC.lock();
    match guard.as_mut().map(|s| &mut s.controller) {
        Some(Controller::V3(v3)) => v3.enable_ppi(slot, intid),
        Some(Controller::V2(v2)) => v2.enable_ppi(intid),
        None => {}
    }
}

/// Acknowledges this core's highest-priority pending interrupt: its ID, 1023 when none.
fn acknowledge(v3: bool) -> u32 {
    if v3 {
        let v: u64;
        // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority interrupt of this
        // core; `complete` ends it.
        unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) v, options(nostack)) };
        v as u32 & 0xff_ffff
    } else {
        with_gicc(|c| field!(*c, iar).read() & 0x3ff).unwrap_or(1023)
    }
}

fn complete(v3: bool, intid: u32) {
    if v3 {
        // SAFETY: completes an interrupt acknowledged by `acknowledge` on this core.
        unsafe {
            core::arch::asm!("msr S3_0_C12_C12_1, {}", in(reg) intid as u64, options(nostack))
        };
    } else {
        with_gicc(|c| field!(*c, eoir).write(intid));
    }
}

/// Called for every IRQ exception: acknowledges and completes everything pending, counting
/// MSI vectors. The work itself happens in the polling loop the interrupt woke.
pub fn handle_irq() {
    let v3 = VERSION.load(Ordering::Relaxed) == 3;
    for _ in 0..64 {
        let intid = acknowledge(v3);
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
        complete(v3, intid);
    }
}
