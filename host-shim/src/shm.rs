//! Shared memory backed by a memfd, mapped MAP_SHARED: the host's view of the IPU's BAR2.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use wave_abi::SharedRegion;

/// A memfd and its shared mapping.
pub struct SharedMemory {
    fd: OwnedFd,
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access from Rust goes
// through `SharedRegion`, i.e. through atomics, so sharing or sending it between threads cannot
// create a data race.
unsafe impl Send for SharedMemory {}
// SAFETY: see `Send` above: `&SharedMemory` only hands out atomic views.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates a zeroed memfd of `len` bytes and maps it.
    pub fn create(name: &str, len: usize) -> std::io::Result<Self> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        Self::map(fd, len)
    }

    /// Maps an existing memfd (or any shareable file) of its current size.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
        let len = nix::sys::stat::fstat(&fd)?.st_size as usize;
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> std::io::Result<Self> {
        let nz = NonZeroUsize::new(len)
            .ok_or_else(|| std::io::Error::other("shared memory size is zero"))?;
        if !len.is_multiple_of(8) {
            return Err(std::io::Error::other(
                "shared memory size must be a multiple of 8 bytes",
            ));
        }
        // SAFETY: a fresh shared mapping of a file we own, at an address the kernel picks; it
        // aliases no Rust object. It is unmapped only in Drop.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }?;
        Ok(Self { fd, ptr, len })
    }

    /// The region view.
    pub fn region(&self) -> SharedRegion<'_> {
        // SAFETY: the mapping is valid for `len` bytes while `self` lives (unmapped only in
        // Drop, which cannot run while this borrow exists), page-aligned, RAM-backed, and this
        // crate accesses it only through the atomic `SharedRegion` view.
        unsafe { SharedRegion::from_raw(self.ptr.as_ptr().cast(), self.len) }
            .expect("mmap returns page-aligned memory and len is a multiple of the page size")
    }

    /// The memfd (to send to QEMU).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if zero-sized (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no view of it can
        // outlive `self`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}
