//! Reporting what went wrong: CPU exceptions (with the decoded syndrome) and panics. Both
//! print readable text on the console, then end the run as a failure.

use crate::bootargs::exit_code;
use crate::console::{current_slot, lock};
use core::fmt::Write;
use wave_boot::esr::Syndrome;
use wave_boot::vectors::{ExceptionKind, Frame};

/// Prints the exception and ends the run (exit code 3).
pub fn report_exception(kind: ExceptionKind, frame: &Frame) -> ! {
    let slot = current_slot();
    let syn = Syndrome::new(frame.esr);
    {
        let mut out = lock(true);
        let _ = writeln!(
            out,
            "wave: CPU exception on core {slot} (mpidr {:#x}): {} from {}",
            crate::cpus::current_mpidr(),
            kind.class_name(),
            kind.origin()
        );
        let _ = write!(
            out,
            "  ESR {:#010x}: EC {:#04x} {}",
            frame.esr,
            syn.ec,
            syn.class_name()
        );
        if let Some(status) = syn.fault_status() {
            let _ = write!(out, ": {status}");
            if let Some(level) = syn.fault_level() {
                let _ = write!(out, " at level {level}");
            }
            match syn.is_write() {
                Some(true) => {
                    let _ = write!(out, ", write");
                }
                Some(false) => {
                    let _ = write!(out, ", read");
                }
                None => {}
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  ELR {:#018x}  FAR {:#018x}  SPSR {:#010x}",
            frame.elr, frame.far, frame.spsr
        );
        if let Some((which, core)) = guard_page_owner(frame.far) {
            let _ = writeln!(
                out,
                "  FAR is in core {core}'s {which} stack guard page: stack overflow"
            );
        }
        let _ = writeln!(
            out,
            "  x0 {:#x} x1 {:#x} x29 {:#x} x30 {:#x}",
            frame.x[0], frame.x[1], frame.x[29], frame.x[30]
        );
    }
    crate::power::end(exit_code::EXCEPTION)
}

/// Prints the panic (core, file, line, message) and ends the run (exit code 2).
pub fn report_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    {
        let mut out = lock(true);
        let _ = write!(out, "wave: panic on core {}", current_slot());
        if let Some(loc) = info.location() {
            let _ = write!(out, " at {}:{}:{}", loc.file(), loc.line(), loc.column());
        }
        let _ = writeln!(out, ": {}", info.message());
    }
    crate::power::end(exit_code::PANIC)
}

fn guard_page_owner(far: u64) -> Option<(&'static str, usize)> {
    let (start, end) = wave_boot::entry::stacks_range();
    let far = far as usize;
    if far < start || far >= end {
        return None;
    }
    let slot = (far - start) / wave_boot::layout::CORE_STACKS_STRIDE;
    let [main, exc] = wave_boot::entry::guard_pages(slot);
    let page = far & !(wave_boot::layout::PAGE_SIZE - 1);
    if page == main {
        Some(("main", slot))
    } else if page == exc {
        Some(("exception", slot))
    } else {
        None
    }
}
