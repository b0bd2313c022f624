//! Raw Linux uapi the memory mechanism needs and `libc` 0.2 does not expose: userfaultfd
//! (`include/uapi/linux/userfaultfd.h`) and the `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`
//! (`include/uapi/linux/fs.h`, Linux 6.7+). Structures are `#[repr(C)]` copies of the kernel's;
//! ioctl numbers are computed with the kernel's `_IOC` encoding from their sizes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `_IOC(dir, type, nr, size)` from `include/uapi/asm-generic/ioctl.h` (x86-64, arm64).
const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

// ---- userfaultfd.h ----
/// `UFFD_API`.
pub const UFFD_API: u64 = 0xAA;
/// `UFFD_USER_MODE_ONLY` (flag of the `userfaultfd` syscall).
pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
/// `UFFD_FEATURE_WP_UNPOPULATED` (1 << 13): WP also marks not-yet-populated anon pages.
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC` (1 << 15): the kernel resolves WP faults itself (no handler).
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFD_FEATURE_MOVE` (1 << 16): `UFFDIO_MOVE` (Linux 6.8+).
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;
/// `UFFDIO_REGISTER_MODE_MISSING`.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// `UFFDIO_COPY_MODE_WP`: install the copied page write-protected.
pub const UFFDIO_COPY_MODE_WP: u64 = 1 << 1;
/// `UFFD_EVENT_PAGEFAULT` (`uffd_msg.event`).
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFDIO_REGISTER_MODE_WP`.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Default)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct UffdioRange {
    pub start: u64,
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Default)]
pub struct UffdioRegister {
    pub range: UffdioRange,
    pub mode: u64,
    pub ioctls: u64,
}

/// `struct uffdio_copy` (`copy` is the kernel's result: bytes copied or -errno).
#[repr(C)]
#[derive(Default)]
pub struct UffdioCopy {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    pub copy: i64,
}

/// `struct uffdio_move` (same shape as `uffdio_copy`; `moved` is the result).
#[repr(C)]
#[derive(Default)]
pub struct UffdioMove {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    pub moved: i64,
}

/// `struct uffd_msg` (packed, 32 bytes); only the page-fault member is decoded.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct UffdMsg {
    pub event: u8,
    pub reserved: [u8; 7],
    /// `arg.pagefault.flags`.
    pub flags: u64,
    /// `arg.pagefault.address`.
    pub address: u64,
    pub rest: u64,
}

const UFFDIO: u64 = 0xAA;
/// `UFFDIO_API`: `_IOWR(UFFDIO, 0x3F, struct uffdio_api)`.
pub const UFFDIO_API: u64 = ioc(IOC_READ | IOC_WRITE, UFFDIO, 0x3F, size_of::<UffdioApi>());
/// `UFFDIO_REGISTER`: `_IOWR(UFFDIO, 0x00, struct uffdio_register)`.
pub const UFFDIO_REGISTER: u64 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    0x00,
    size_of::<UffdioRegister>(),
);
/// `UFFDIO_UNREGISTER`: `_IOR(UFFDIO, 0x01, struct uffdio_range)`.
pub const UFFDIO_UNREGISTER: u64 = ioc(IOC_READ, UFFDIO, 0x01, size_of::<UffdioRange>());
/// `UFFDIO_WAKE`: `_IOR(UFFDIO, 0x02, struct uffdio_range)`.
pub const UFFDIO_WAKE: u64 = ioc(IOC_READ, UFFDIO, 0x02, size_of::<UffdioRange>());
/// `UFFDIO_COPY`: `_IOWR(UFFDIO, 0x03, struct uffdio_copy)`.
pub const UFFDIO_COPY: u64 = ioc(IOC_READ | IOC_WRITE, UFFDIO, 0x03, size_of::<UffdioCopy>());
/// `UFFDIO_MOVE`: `_IOWR(UFFDIO, 0x05, struct uffdio_move)`.
pub const UFFDIO_MOVE: u64 = ioc(IOC_READ | IOC_WRITE, UFFDIO, 0x05, size_of::<UffdioMove>());

// ---- fs.h: PAGEMAP_SCAN ----
/// `PAGE_IS_WRITTEN`: written since last write-protected (uffd-wp async).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// `PAGE_IS_PRESENT`.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// `PAGE_IS_SWAPPED`.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// `PAGE_IS_HUGE`.
pub const PAGE_IS_HUGE: u64 = 1 << 6;
/// `PM_SCAN_WP_MATCHING`: write-protect the pages that matched.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PM_SCAN_CHECK_WPASYNC`: fail if a page is not in an async-WP registered range.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// `struct page_region`: a run of pages `[start, end)` with the same categories.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
pub const PAGEMAP_SCAN: u64 = ioc(
    IOC_READ | IOC_WRITE,
    b'f' as u64,
    16,
    size_of::<PmScanArg>(),
);

/// `ioctl(fd, req, arg)` returning the non-negative result or the OS error.
pub fn ioctl<T>(fd: &OwnedFd, req: u64, arg: &mut T) -> io::Result<i64> {
    // SAFETY: `arg` is a live, exclusive `#[repr(C)]` struct of the size encoded in `req`
    // (all `req` values above are built from `size_of` of the struct the caller passes).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

/// Open a userfaultfd (user-mode faults only, so it works with `unprivileged_userfaultfd=0`).
pub fn userfaultfd() -> io::Result<OwnedFd> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
    // SAFETY: a plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `madvise(addr, len, advice)`.
pub fn madvise(addr: usize, len: usize, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: madvise does not dereference memory for us; the kernel validates the range and
    // the advices used here (PAGEOUT, POPULATE_READ, WILLNEED, COLLAPSE) keep the contents.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The computed numbers match the kernel's: the userfaultfd ones as printed from the system
    /// `<linux/userfaultfd.h>` (`UFFDIO_MOVE`, newer than that header, by hand), `PAGEMAP_SCAN` computed by hand from `fs.h` (`_IOWR('f', 16, 96 bytes)`).
    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_AA01);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_MOVE, 0xC028_AA05);
        assert_eq!(size_of::<UffdMsg>(), 32);
        assert_eq!(PAGEMAP_SCAN, 0xC060_6610);
        assert_eq!(size_of::<PmScanArg>(), 96);
        assert_eq!(size_of::<PageRegion>(), 24);
    }
}
