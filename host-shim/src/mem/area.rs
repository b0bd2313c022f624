//! The managed memory area: an anonymous mapping aligned to and divided into regions (2 MiB by
//! default). [`managed_area`] splits it into the application's handle ([`AreaMemory`], the
//! bytes) and the mechanism's handle ([`super::Mechanism`], which only issues syscalls on the
//! address range and never reads or writes the bytes).

use std::io;
use std::sync::Arc;

use super::mechanism::Mechanism;

/// Default region size: one PMD-sized huge page.
pub const DEFAULT_REGION_BYTES: usize = 2 << 20;
/// The base page size this mechanism assumes (x86-64 and arm64 with 4 KiB pages).
pub const PAGE: usize = 4096;

/// Shape of a managed area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaConfig {
    /// Bytes in the area (rounded up to whole regions).
    pub bytes: usize,
    /// Region size: a power of two, a multiple of the page size.
    pub region_bytes: usize,
    /// Intervals a collapsed region stays out of write tracking (tracking write-protects
    /// pages, and the first write to a write-protected huge page splits it).
    pub collapse_lease: u32,
    /// Pages per region per interval sampled for reads by userfaultfd faults (0: off; then
    /// reads of resident regions are not seen). With sampling on, the area is populated
    /// (written with zeros) when it is created.
    pub read_samples: u32,
    /// A reclaim pages its region out this many bytes at a time (a multiple of the page
    /// size; the region size or more: all at once) ...
    pub pageout_chunk: usize,
    /// ... with this pause between chunks (µs): bounded work per slice, so the TLB-shootdown
    /// interrupts a pageout sends to every CPU running the process (about one per dirty page)
    /// come spread out instead of in one burst.
    pub pageout_pause_us: u32,
}

impl Default for AreaConfig {
    fn default() -> Self {
        AreaConfig {
            bytes: 1 << 30,
            region_bytes: DEFAULT_REGION_BYTES,
            collapse_lease: 8,
            read_samples: 1,
            pageout_chunk: 64 << 10,
            pageout_pause_us: 50,
        }
    }
}

/// The mapping; unmapped when both handles are gone.
#[derive(Debug)]
pub(super) struct Mapping {
    pub(super) addr: usize,
    pub(super) len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr..addr+len` is a mapping this struct created and owns; no reference into
        // it outlives the last `Arc<Mapping>` (AreaMemory's slices borrow the handle).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

impl Mapping {
    /// Map `len` bytes aligned to `align` (anonymous, private, not reserved).
    fn new(len: usize, align: usize) -> io::Result<Mapping> {
        let span = len + align;
        // SAFETY: a fresh anonymous mapping; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let raw = p as usize;
        let addr = raw.next_multiple_of(align);
        let (head, tail) = (addr - raw, span - (addr - raw) - len);
        // SAFETY: trimming the unaligned slack at both ends of the mapping just made.
        unsafe {
            if head > 0 {
                libc::munmap(raw as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((addr + len) as *mut libc::c_void, tail);
            }
        }
        Ok(Mapping { addr, len })
    }
}

/// The application's handle on the area's bytes.
pub struct AreaMemory {
    map: Arc<Mapping>,
}

impl AreaMemory {
    /// The bytes (zero until written).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live while `self.map` is, readable, `len` bytes long; the only
        // other handle (the mechanism) never creates references into it, and the advices it
        // issues (pageout, populate, collapse) keep the contents.
        unsafe { std::slice::from_raw_parts(self.map.addr as *const u8, self.map.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference (AreaMemory is not
        // Clone, so there is one per area).
        unsafe { std::slice::from_raw_parts_mut(self.map.addr as *mut u8, self.map.len) }
    }

    /// Bytes in the area.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// `true` if the area is empty (never: areas hold at least one region).
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }
}

/// Create a managed area: the application's handle and the mechanism (write tracking armed).
pub fn managed_area(cfg: AreaConfig) -> io::Result<(AreaMemory, Mechanism)> {
    let rb = cfg.region_bytes;
    if !rb.is_power_of_two() || rb < PAGE || cfg.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("managed area: region size {rb} must be a power of two >= {PAGE} and the area non-empty"),
        ));
    }
    let len = cfg.bytes.next_multiple_of(rb);
    let map = Arc::new(Mapping::new(len, rb.max(DEFAULT_REGION_BYTES))?);
    let mech = Mechanism::new(map.clone(), cfg)?;
    Ok((AreaMemory { map }, mech))
}
