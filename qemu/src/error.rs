//! The library's error type: every failure a user can hit, each saying what went wrong and what
//! to do about it.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Errors from building the image or running QEMU. (A firmware that boots and then fails is not
/// an error: that is a [`crate::BootOutcome`] with a non-zero status.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Cargo workspace (and with it `firmware/`) could not be located.
    #[error("{0}")]
    Workspace(String),

    /// A helper program could not be started at all.
    #[error("could not start `{program}`: {source}. {hint}")]
    Spawn {
        program: String,
        hint: &'static str,
        #[source]
        source: io::Error,
    },

    /// The nested `cargo build` of the firmware failed.
    #[error("building the firmware failed: `{command}` exited with {status}. The compiler output is above; fix the error and run again")]
    BuildFailed { command: String, status: ExitStatus },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The firmware ELF cannot be turned into a raw image.
    #[error("{}: cannot make a raw image from this ELF: {source}", path.display())]
    Elf {
        path: PathBuf,
        #[source]
        source: crate::elf::ElfError,
    },

    /// The raw image does not look like an arm64 `Image` (see docs/firmware.md, "The image").
    #[error("{0}")]
    Image(String),

    /// `qemu-system-aarch64` is missing, unusable, or its installation failed.
    #[error("{0}")]
    Qemu(String),

    /// A [`crate::BootConfig`] value that QEMU or the firmware cannot use.
    #[error("invalid boot configuration: {0}")]
    Config(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
