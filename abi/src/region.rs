//! `SharedRegion`: a bounds-checked view of the shared memory window as 64-bit atomic words.
//!
//! Both sides build one from whatever they have: the firmware from the BAR2 base pointer and
//! length, the host from its mmap'd memfd. Every access to shared memory in this crate goes
//! through this view, one naturally aligned 64-bit atomic at a time, so that nothing the peer
//! does (including writing garbage at any moment) can cause a data race or undefined behaviour
//! on this side. The one exception is the ring's whole-entry copy on x86_64 (`ring::copy_in`,
//! `ring::copy_out`): 16-byte accesses to slots that the ring protocol hands to one side at a
//! time, whose result is validated like any other read. Values are little-endian on the link (see `docs/abi.md`, "Byte order").

use crate::sync::{AtomicU64, Ordering};

/// Why a region cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The base address is not 8-byte aligned.
    Misaligned,
    /// The length is not a multiple of 8 bytes.
    BadLength,
    /// The region is smaller than the layout needs.
    TooSmall {
        /// Bytes available.
        have: usize,
        /// Minimum bytes required.
        need: usize,
    },
    /// An offset/size pair falls outside the region or is not aligned as required.
    OutOfBounds {
        /// Byte offset asked for.
        offset: usize,
        /// Byte length asked for.
        len: usize,
    },
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegionError::Misaligned => write!(f, "shared region base is not 8-byte aligned"),
            RegionError::BadLength => write!(f, "shared region length is not a multiple of 8"),
            RegionError::TooSmall { have, need } => write!(
                f,
                "shared region is {have} bytes but the layout needs at least {need} bytes"
            ),
            RegionError::OutOfBounds { offset, len } => write!(
                f,
                "range {offset:#x}+{len:#x} is outside the shared region or misaligned"
            ),
        }
    }
}

/// A view of the shared region as little-endian 64-bit words.
#[derive(Clone, Copy)]
pub struct SharedRegion<'a> {
    words: &'a [AtomicU64],
}

impl core::fmt::Debug for SharedRegion<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedRegion")
            .field("len", &self.len())
            .finish()
    }
}

impl<'a> SharedRegion<'a> {
    /// Builds a view over raw shared memory (the firmware's BAR2 mapping, the host's mmap).
    ///
    /// # Safety
    ///
    /// - `base` must be valid for reads and writes of `len` bytes for the whole lifetime `'a`,
    ///   and the mapping must not be unmapped or remapped while any view derived from it lives.
    /// - This process must access those bytes only through atomics (this view, or other
    ///   `AtomicU64` views) while `'a` lasts: no plain `&`/`&mut` references to them.
    /// - The memory must support naturally aligned 64-bit single-copy-atomic loads and stores
    ///   (true for RAM and for a Normal (cacheable or non-cacheable) mapping of a PCIe BAR;
    ///   not for Device memory on every core).
    ///
    /// The other side of the link may write anything at any time: that is expected and is why
    /// every access is atomic.
    #[cfg(not(loom))]
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> Result<Self, RegionError> {
        if !(base as usize).is_multiple_of(8) {
            return Err(RegionError::Misaligned);
        }
        if !len.is_multiple_of(8) {
            return Err(RegionError::BadLength);
        }
        // SAFETY: the caller guarantees `base..base+len` is valid, live for `'a` and only
        // accessed atomically; we checked 8-byte alignment and that `len` is a whole number of
        // words. `AtomicU64` has the same size and alignment as `u64`, so the memory may be
        // viewed as `len / 8` atomics.
        let words = unsafe { core::slice::from_raw_parts(base as *const AtomicU64, len / 8) };
        Ok(Self { words })
    }

    /// Builds a view over words the caller already owns (tests, loom models, a heap buffer
    /// standing in for shared memory). Safe: the slice is already a valid set of atomics.
    pub fn from_words(words: &'a [AtomicU64]) -> Self {
        Self { words }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.words.len() * 8
    }

    /// True if the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words covering `offset..offset+len` (both multiples of 8).
    pub fn words(&self, offset: usize, len: usize) -> Result<&'a [AtomicU64], RegionError> {
        let err = RegionError::OutOfBounds { offset, len };
        if !offset.is_multiple_of(8) || !len.is_multiple_of(8) {
            return Err(err);
        }
        let end = offset.checked_add(len).ok_or(err)?;
        self.words.get(offset / 8..end / 8).ok_or(err)
    }

    /// The single word at byte `offset` (a multiple of 8).
    pub fn word(&self, offset: usize) -> Result<&'a AtomicU64, RegionError> {
        Ok(&self.words(offset, 8)?[0])
    }

    /// Copies `out.len()` bytes (a multiple of 8) starting at `offset` out of shared memory.
    /// Each word is read with a relaxed atomic load: the result may be torn between words if
    /// the peer is writing, which is why callers validate what they copy.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<(), RegionError> {
        let words = self.words(offset, out.len())?;
        read_words(words, out);
        Ok(())
    }

    /// Copies `data` (a multiple of 8 bytes) into shared memory at `offset`, word by word with
    /// relaxed stores. Publish it with a release store of some flag word afterwards.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        let words = self.words(offset, data.len())?;
        write_words(words, data);
        Ok(())
    }

    /// Stores zero into every word of `offset..offset+len`.
    pub fn zero(&self, offset: usize, len: usize) -> Result<(), RegionError> {
        for w in self.words(offset, len)? {
            w.store(0, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Loads a little-endian 64-bit value.
#[inline]
pub fn load_le(word: &AtomicU64, order: Ordering) -> u64 {
    u64::from_le(word.load(order))
}

/// Stores a 64-bit value little-endian.
#[inline]
pub fn store_le(word: &AtomicU64, value: u64, order: Ordering) {
    word.store(value.to_le(), order)
}

/// Copies words into bytes so that the bytes are exactly the memory contents.
#[inline]
pub(crate) fn read_words(words: &[AtomicU64], out: &mut [u8]) {
    for (w, chunk) in words.iter().zip(out.chunks_exact_mut(8)) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
}

/// Copies bytes into words so that the memory contents are exactly the bytes.
#[inline]
pub(crate) fn write_words(words: &[AtomicU64], data: &[u8]) {
    for (w, chunk) in words.iter().zip(data.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
}
