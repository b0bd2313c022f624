//! Errors a user of the host shim can hit, each saying what went wrong and what to do.

use std::path::PathBuf;

/// Host-shim setup and runtime errors.
#[derive(Debug)]
pub enum ShimError {
    /// Another server is listening on the socket.
    SocketInUse(PathBuf),
    /// A file is in the way of the socket (a stale socket from a previous run, or anything else).
    SocketPathExists(PathBuf),
    /// Binding the socket failed.
    Bind(PathBuf, std::io::Error),
    /// The shared memory size is below what the layout needs.
    ShmTooSmall {
        /// Requested bytes.
        requested: usize,
        /// Minimum bytes.
        minimum: usize,
    },
    /// The shared memory size is not a power of two (a PCI BAR must be).
    ShmNotPowerOfTwo(usize),
    /// The shared memory size is above [`crate::ivshmem::MAX_SHM_SIZE`].
    ShmTooLarge(usize),
    /// Vector count outside what the layout and QEMU support.
    Vectors {
        /// Requested.
        requested: u16,
        /// Minimum.
        minimum: u16,
        /// Maximum.
        maximum: u16,
    },
    /// Creating or mapping the shared memory failed.
    Shm(std::io::Error),
    /// Anything else from the OS, with what was being done.
    Io(&'static str, std::io::Error),
}

impl std::fmt::Display for ShimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShimError::SocketInUse(p) => write!(
                f,
                "socket {} is in use by a running server; stop it or pass another --socket path",
                p.display()
            ),
            ShimError::SocketPathExists(p) => write!(
                f,
                "socket path {} already exists (probably left by an earlier run); remove it \
                 (`rm {}`) or pass another --socket path",
                p.display(),
                p.display()
            ),
            ShimError::Bind(p, e) => write!(
                f,
                "cannot listen on {}: {e}; check that the directory exists and is writable, \
                 or pass another --socket path",
                p.display()
            ),
            ShimError::ShmTooSmall { requested, minimum } => write!(
                f,
                "shared memory of {requested} bytes is too small: the layout needs at least \
                 {minimum} bytes ({} KiB); pass --shm-size {}K or more",
                minimum / 1024,
                minimum / 1024
            ),
            ShimError::ShmTooLarge(s) => write!(
                f,
                "shared memory of {s} bytes is too large: at most {} MiB (the layout uses \
                 well under 1 MiB; more only costs memory)",
                crate::ivshmem::MAX_SHM_SIZE >> 20
            ),
            ShimError::ShmNotPowerOfTwo(s) => write!(
                f,
                "shared memory size {s} is not a power of two (it becomes a PCI BAR); use e.g. {}",
                s.next_power_of_two()
            ),
            ShimError::Vectors {
                requested,
                minimum,
                maximum,
            } => write!(
                f,
                "{requested} doorbell vectors requested; use {minimum}..={maximum} \
                 (QEMU decodes 8-bit vectors; the layout uses vectors 0..{minimum})"
            ),
            ShimError::Shm(e) => write!(f, "cannot create the shared memory (memfd): {e}"),
            ShimError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for ShimError {}
