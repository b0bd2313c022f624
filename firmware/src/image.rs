//! The image's entry points, called by `wave-boot`'s assembly: the boot core's
//! [`wave_primary_main`], every other core's [`wave_secondary_main`], the exception hook and
//! the panic handler.
//!
//! Boot sequence on the boot core: validate the device tree, start the console, read the boot
//! arguments, discover the board, build the page tables and turn the MMU on, start every other
//! core, enumerate PCIe, print the boot report, then end the run (or run an injected failure).

use core::fmt::Write;
use wave_boot::pagetable::Attrs;
use wave_boot::psci::Conduit;
use wave_boot::vectors::{ExceptionKind, Frame};
use wave_firmware::board::{Board, Early, PsciMethod, Region};
use wave_firmware::bootargs::{exit_code, BootArgs, Inject, Services};
use wave_firmware::cpus::{self, StartResult};
use wave_firmware::ivshmem::{self, Ivshmem};
use wave_firmware::pci::{self, Ecam};
use wave_firmware::{console, fault, gic, link, memory, power, println, time};

/// How long secondaries get to report in.
const BRINGUP_TIMEOUT_US: u64 = 5_000_000;

unsafe extern "C" {
    static __wave_image_start: u8;
    static __wave_image_end: u8;
}

fn image_region() -> Region {
    // Only the addresses of the linker-defined symbols are taken, never their contents.
    let (start, end) = (
        &raw const __wave_image_start as u64,
        &raw const __wave_image_end as u64,
    );
    Region {
        base: start,
        size: end - start,
    }
}

fn conduit(m: PsciMethod) -> Conduit {
    match m {
        PsciMethod::Hvc => Conduit::Hvc,
        PsciMethod::Smc => Conduit::Smc,
    }
}

/// Reads the DTB header at `dtb` and returns the whole blob, or why it is not one.
///
/// # Safety
/// `dtb` must be the boot protocol's `x0` (0, or the address of the DTB in RAM, which stays
/// untouched for the rest of the run), read with the MMU off.
unsafe fn dtb_blob(dtb: usize) -> Result<&'static [u8], &'static str> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return Err("x0 holds no device-tree address (boot with QEMU -kernel, U-Boot booti, or pass the DTB in x0)");
    }
    // SAFETY: the caller's contract: x0 points at the DTB in RAM, whose first 8 bytes are the
    // magic and total size, and with the MMU off all of RAM is accessible.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    if header[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
        return Err("no device tree at the address in x0 (bad magic)");
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(40..=16 << 20).contains(&size) {
        return Err("device tree header gives an implausible size");
    }
    // SAFETY: the header says the blob is `size` bytes long, bounded above.
    Ok(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}

/// Boot-core entry (from `wave-boot`): MMU off, BSS zeroed, stacks set, `dtb` from `x0`.
#[unsafe(no_mangle)]
extern "C" fn wave_primary_main(dtb: usize) -> ! {
    let t0 = time::ticks();
    // SAFETY: `dtb` is `x0` as the boot protocol passed it; the MMU is still off.
    let blob = match unsafe { dtb_blob(dtb) } {
        Ok(b) => b,
        Err(e) => early_failure(e),
    };
    let early = match Early::from_fdt(blob) {
        Ok(e) => e,
        Err(e) => early_failure_fmt(format_args!("{e}")),
    };
    let Some(uart) = early.uart else {
        early_failure("device tree has no arm,pl011 UART for the console")
    };
    // SAFETY: the DT names this PL011 as the console; nothing else drives it, and only this
    // core runs.
    unsafe { console::init(uart.base as usize) };
    let args = BootArgs::parse(early.bootargs, &link::SERVICE_NAMES);
    power::configure(args.exit, conduit(early.psci.unwrap_or(PsciMethod::Hvc)));
    println!(
        "wave: firmware {} starting on core 0",
        env!("CARGO_PKG_VERSION")
    );

    let board = match Board::from_fdt(blob) {
        Ok(b) => b,
        Err(e) => boot_error(format_args!("{e}")),
    };
    let image = image_region();
    if board.dtb.overlaps(&image) {
        boot_error(format_args!(
            "the device tree at {:#x} overlaps the image at {:#x}..{:#x}; load it elsewhere",
            board.dtb.base,
            image.base,
            image.end()
        ));
    }
    if !board
        .memory
        .iter()
        .any(|r| r.base <= image.base && image.end() <= r.end())
    {
        boot_error(format_args!(
            "the image at {:#x}..{:#x} is not inside RAM; relink it for this board (linker/)",
            image.base,
            image.end()
        ));
    }

    // Under `-kernel` nobody has assigned BARs: do it now, before the map is built, so the
    // link's BARs get their own attributes.
    // SAFETY: the DT's ECAM window for its buses; the MMU is off, so it is accessible as
    // device memory, and `memory::build` identity-maps it as device memory before the MMU
    // goes on. This is the window's only accessor for the rest of the run.
    let mut ecam = unsafe {
        Ecam::new(
            board.pcie.ecam.base as usize,
            board.pcie.bus_start,
            board.pcie.bus_end,
        )
    };
    let probed = match ivshmem::probe(&mut ecam, &board.pcie) {
        Ok(d) => d,
        Err(e) => boot_error(format_args!("{e}")),
    };
    let mut extra = heapless::Vec::<(Region, Attrs), 4>::new();
    let mut link_dev = None;
    if let Some(p) = probed {
        for r in p.register_regions() {
            let _ = extra.push((r, Attrs::DEVICE));
        }
        let _ = extra.push((p.shared_memory(), Attrs::SHARED));
        // SAFETY: the MMU is off, so the BARs are accessible as they are; `memory::build` maps
        // the register regions as device memory and BAR2 as shared memory (identity) before
        // it goes on, for the rest of the run. Only this driver reaches them.
        let mut dev = match unsafe { Ivshmem::new(p) } {
            Ok(d) => d,
            Err(e) => boot_error(format_args!("{e}")),
        };
        // As early as possible: a doorbell before MSI-X is enabled is lost; one while its
        // vector is masked latches and fires when the vector is routed.
        dev.enable_msix_masked(&mut ecam);
        link_dev = Some(dev);
    }
    let mmu = match memory::build(&board, &extra) {
        Ok(c) => c,
        Err(e) => boot_error(format_args!("building the page tables: {e}")),
    };
    wave_boot::entry::publish_mmu_config(mmu);
    // SAFETY: the map identity-maps all RAM (image, stacks, DTB) and the console.
    unsafe { wave_boot::mmu::enable(&mmu) };
    console::enable_locking();
    // Every core reaches the link device through `ivshmem::device()` from here on (MMU on:
    // its lock and the install flag need exclusive accesses).
    let link_dev = link_dev.map(|d| match ivshmem::install(d) {
        Ok(d) => d,
        Err(_) => boot_error(format_args!("the link device was installed twice")),
    });
    defmt::info!("mmu on: ttbr0={=u64:#x} tcr={=u64:#x}", mmu.ttbr0, mmu.tcr);

    let conduit = conduit(board.psci);
    let boot_cpu = cpus::assign_slots(&board);
    let slots = heapless::Vec::<_, 16>::from_iter(cpus::slots());
    // SAFETY: the DT's GIC regions, identity-mapped as device memory by `memory::build` for
    // the rest of the run; only the `gic` module reaches them.
    let gic_state = unsafe { gic::init(&board.gic, &slots) };
    if let Err(e) = &gic_state {
        println!("wave: interrupts unavailable: {e}");
    }
    if let Some(e) = args.services_error {
        boot_error(format_args!(
            "wave.services: {e} (this firmware has: {})",
            ServiceList(&link::SERVICE_NAMES)
        ));
    }
    // Before the cores start: a core with a service waits for it, the others sleep for good.
    link::plan(&args.services);
    let results = cpus::start_all(&board, conduit, boot_cpu);
    let n = board.cpus.len();
    let online = cpus::wait_online(n, BRINGUP_TIMEOUT_US);
    let boot_ms = time::ticks_to_micros(time::ticks() - t0) as f64 / 1000.0;

    report(
        &board,
        &ecam,
        conduit,
        &results,
        boot_cpu,
        online,
        &args.services,
    );
    if let Some(d) = link_dev {
        println!("link: {d}");
    } else {
        println!("link: no ivshmem-doorbell device (1af4:1110); boot-only run");
    }
    println!(
        "wave: boot {} in {boot_ms:.1} ms",
        if online.count_ones() as usize == n {
            "ok"
        } else {
            "incomplete"
        }
    );
    if online.count_ones() as usize != n {
        power::end(exit_code::CORES_MISSING);
    }

    if !args.services.is_empty() {
        let Some(dev) = link_dev else {
            boot_error(format_args!(
                "wave.services needs the ivshmem-doorbell device (QEMU: -device ivshmem-doorbell,chardev=…)"
            ));
        };
        wave_firmware::pmu::set_wanted(args.pmu);
        match link::run_services(dev, &args.services, args.spin_us) {
            Ok(()) => {}
            Err(e) => boot_error(format_args!("link: {e}")),
        }
        power::end(exit_code::PASS)
    }

    match args.inject {
        None => power::end(exit_code::PASS),
        Some(Inject::Fault) => {
            println!("wave: injecting a fault (wave.test=fault): reading unmapped address 0x1000");
            // SAFETY: deliberately faults; the load is taken as a data abort and reported, so
            // the value is never used.
            unsafe {
                core::arch::asm!("ldr {0}, [{0}]", inout(reg) 0x1000u64 => _, options(nostack))
            };
            power::end(exit_code::PASS)
        }
        Some(Inject::Panic) => panic!("injected panic (wave.test=panic)"),
        Some(Inject::StackOverflow) => {
            println!("wave: overflowing the main stack on purpose (wave.test=stack-overflow)");
            let depth = recurse(u64::MAX);
            power::end(if depth == 0 {
                exit_code::PASS
            } else {
                exit_code::BOOT_ERROR
            })
        }
        Some(Inject::Hang) => {
            println!("wave: hanging on purpose (wave.test=hang)");
            wave_boot::psci::park()
        }
    }
}

/// Recurses until the stack runs into its guard page (the frame's buffer keeps each level
/// on the stack).
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    let buf = core::hint::black_box(buf);
    if n == 0 {
        return 0;
    }
    recurse(n - 1).wrapping_add(buf[(n % 64) as usize])
}

fn report(
    board: &Board<'_>,
    ecam: &Ecam<'_>,
    conduit: Conduit,
    results: &[Option<StartResult>],
    boot_cpu: Option<usize>,
    online: u64,
    services: &Services,
) {
    let mut out = console::lock(false);
    let _ = writeln!(out, "wave: boot report");
    let _ = writeln!(out, "  board: {}", board.model);
    for r in &board.memory {
        let _ = writeln!(
            out,
            "  memory: {:#x}..{:#x} ({} MiB)",
            r.base,
            r.end(),
            r.size >> 20
        );
    }
    let _ = writeln!(out, "  memory total: {} MiB", board.memory_size() >> 20);
    let _ = writeln!(out, "  console: pl011 @ {:#x}", board.uart.base);
    let (maj, min) = wave_boot::psci::version(conduit).unwrap_or((0, 0));
    let _ = writeln!(
        out,
        "  psci: {maj}.{min} via {}",
        if conduit == Conduit::Hvc {
            "hvc"
        } else {
            "smc"
        }
    );
    let g = &board.gic;
    let _ = write!(
        out,
        "  gic: v{}, distributor @ {:#x}",
        g.version, g.distributor.base
    );
    if let Some(r) = g.redistributors {
        let _ = write!(out, ", redistributors @ {:#x}", r.base);
    }
    if let Some(r) = g.cpu_interface {
        let _ = write!(out, ", cpu interface @ {:#x}", r.base);
    }
    if let Some(r) = g.its {
        let _ = write!(out, ", its @ {:#x}", r.base);
    }
    if let Some(r) = g.v2m {
        let _ = write!(out, ", v2m @ {:#x}", r.base);
    }
    let _ = writeln!(out);
    let p = &board.pcie;
    let _ = write!(
        out,
        "  pcie: ecam @ {:#x} (buses {}..{})",
        p.ecam.base, p.bus_start, p.bus_end
    );
    for w in &p.windows {
        let _ = write!(out, ", {:?} {:#x}+{:#x}", w.kind, w.cpu_base, w.size);
    }
    let _ = writeln!(out);
    let (functions, overflow) = pci::enumerate_bus(ecam, p.bus_start);
    for f in &functions {
        let _ = writeln!(
            out,
            "  pci {} {:04x}:{:04x} (class {:02x}.{:02x}){}",
            f.bdf,
            f.vendor,
            f.device,
            f.class.0,
            f.class.1,
            if f.header_type == 1 {
                " bridge (not traversed)"
            } else {
                ""
            }
        );
    }
    if overflow {
        let _ = writeln!(out, "  pci: more functions than the report holds");
    }
    for (i, &mpidr) in board.cpus.iter().enumerate() {
        let up = online & (1 << i) != 0;
        let how = match results[i] {
            Some(StartResult::BootCore) => " (boot core)",
            Some(StartResult::Refused(_)) => " (PSCI CPU_ON refused)",
            _ => "",
        };
        let service = cpus::slot_of_cpu(i)
            .and_then(|slot| services.on_core(slot))
            .map_or("", link::service_name);
        let _ = writeln!(
            out,
            "  cpu {i} mpidr {mpidr:#x} {}{how}{}{service}",
            if up { "online" } else { "OFFLINE" },
            if service.is_empty() { "" } else { ", service " }
        );
        if let Some(StartResult::Refused(e)) = results[i] {
            let _ = writeln!(out, "    CPU_ON error: {e:?}");
        }
    }
    if boot_cpu.is_none() {
        let _ = writeln!(
            out,
            "  boot core mpidr {:#x} is not in the device tree",
            cpus::current_mpidr()
        );
    }
    let _ = writeln!(
        out,
        "cores online: {}/{}",
        online.count_ones(),
        board.cpus.len()
    );
}

/// Names separated by ", ".
struct ServiceList<'a>(&'a [&'a str]);

impl core::fmt::Display for ServiceList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

/// A boot error once the console works: print it and end the run (exit code 1).
fn boot_error(msg: core::fmt::Arguments<'_>) -> ! {
    println!("wave: boot error: {msg}");
    power::end(exit_code::BOOT_ERROR)
}

/// A boot error before there is a console or any boot arguments.
fn early_failure(msg: &str) -> ! {
    early_failure_fmt(format_args!("{msg}"))
}

/// Before the device tree gives a console, there is nowhere to print; the message goes to the
/// board's early console if the build has one, and the run ends with PSCI SYSTEM_RESET over
/// HVC (the QEMU `virt` conduit).
fn early_failure_fmt(msg: core::fmt::Arguments<'_>) -> ! {
    // QEMU virt's PL011 (linker/qemu-virt.ld's board) as the early console.
    // SAFETY: on this board the PL011 lives here; nothing else uses it yet.
    unsafe { console::init(0x0900_0000) };
    println!("wave: boot error before the console was known: {msg}");
    power::end(exit_code::BOOT_ERROR)
}

/// Entry of every other core (from `wave-boot`): MMU on, stacks set, `slot` from PSCI.
#[unsafe(no_mangle)]
extern "C" fn wave_secondary_main(slot: usize) -> ! {
    gic::enable_cpu();
    cpus::report_in(slot);
    if link::has_service(slot) {
        link::serve_secondary(slot);
    }
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Every exception lands here (from `wave-boot`'s vectors). IRQs (doorbells) are handled and
/// return; everything else is reported as a failure.
#[unsafe(no_mangle)]
extern "C" fn wave_exception(kind: u64, frame: &mut Frame) {
    let kind = ExceptionKind(kind);
    if kind.class() == ExceptionKind::IRQ {
        gic::handle_irq();
        return;
    }
    fault::report_exception(kind, frame)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fault::report_panic(info)
}
