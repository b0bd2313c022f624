//! A tiny ELF64 little-endian reader (file header + program headers only) and the ELF → raw
//! image conversion: `PT_LOAD` segments laid out by physical address, gaps zero-filled, BSS
//! (the part of a segment beyond its file size) left out, as `objcopy -O binary` does.

/// `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;
/// `p_type` of a loadable segment.
pub const PT_LOAD: u32 = 1;
/// A raw image larger than this means a segment is at a far-away address (a linker-script bug),
/// not a real firmware.
pub const MAX_IMAGE: u64 = 256 << 20;

/// What went wrong reading the ELF or laying it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("the file is too short to be an ELF ({0} bytes)")]
    TooShort(usize),
    #[error("not an ELF file (bad magic)")]
    NotElf,
    #[error("not a 64-bit little-endian ELF")]
    NotElf64Le,
    #[error(
        "built for machine {0}, not AArch64 ({EM_AARCH64}); was it built for the wrong target?"
    )]
    WrongMachine(u16),
    #[error("malformed program header table: {0}")]
    BadProgramHeaders(String),
    #[error("segment {index} claims bytes {offset:#x}..+{size:#x} but the file has {file_len:#x}")]
    SegmentOutsideFile {
        index: usize,
        offset: u64,
        size: u64,
        file_len: usize,
    },
    #[error("no PT_LOAD segment with contents")]
    NoLoadSegments,
    #[error("PT_LOAD segments at {a:#x} and {b:#x} overlap")]
    Overlap { a: u64, b: u64 },
    #[error("the image would span {size:#x} bytes from {base:#x} (more than {MAX_IMAGE:#x}); check the linker script's load addresses")]
    TooLarge { base: u64, size: u64 },
}

/// One `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// The parts of an ELF the runner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub entry: u64,
    pub machine: u16,
    pub loads: Vec<LoadSegment>,
}

/// The raw image: `data` is loaded at physical address `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawImage {
    pub base: u64,
    pub data: Vec<u8>,
    /// Highest physical address (exclusive) any segment occupies in memory, BSS included.
    pub mem_end: u64,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Parses the ELF64 header and its `PT_LOAD` program headers.
pub fn parse(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(if bytes.len() < 4 {
            ElfError::TooShort(bytes.len())
        } else {
            ElfError::NotElf
        });
    }
    if bytes.len() < 64 {
        return Err(ElfError::TooShort(bytes.len()));
    }
    // EI_CLASS = ELFCLASS64 (2), EI_DATA = ELFDATA2LSB (1).
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(ElfError::NotElf64Le);
    }
    let machine = u16_at(bytes, 18);
    if machine != EM_AARCH64 {
        return Err(ElfError::WrongMachine(machine));
    }
    let entry = u64_at(bytes, 24);
    let phoff = u64_at(bytes, 32);
    let phentsize = u16_at(bytes, 54) as u64;
    let phnum = u16_at(bytes, 56) as u64;
    if phnum == 0 {
        return Err(ElfError::NoLoadSegments);
    }
    if phentsize < 56 {
        return Err(ElfError::BadProgramHeaders(format!(
            "entry size {phentsize} < 56"
        )));
    }
    phentsize
        .checked_mul(phnum)
        .and_then(|n| n.checked_add(phoff))
        .filter(|&end| end <= bytes.len() as u64)
        .ok_or_else(|| {
            ElfError::BadProgramHeaders(format!(
                "{phnum} entries of {phentsize} bytes at {phoff:#x} do not fit in the file"
            ))
        })?;
    let mut loads = Vec::new();
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        if u32_at(bytes, ph) != PT_LOAD {
            continue;
        }
        loads.push(LoadSegment {
            offset: u64_at(bytes, ph + 8),
            vaddr: u64_at(bytes, ph + 16),
            paddr: u64_at(bytes, ph + 24),
            filesz: u64_at(bytes, ph + 32),
            memsz: u64_at(bytes, ph + 40),
        });
    }
    Ok(ElfInfo {
        entry,
        machine,
        loads,
    })
}

/// Lays out the `PT_LOAD` segments that have file contents by physical address.
pub fn to_raw_image(bytes: &[u8]) -> Result<RawImage, ElfError> {
    let info = parse(bytes)?;
    let mut loads: Vec<(usize, LoadSegment)> = info
        .loads
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| s.filesz > 0)
        .collect();
    if loads.is_empty() {
        return Err(ElfError::NoLoadSegments);
    }
    for &(index, s) in &loads {
        let inside = s
            .offset
            .checked_add(s.filesz)
            .is_some_and(|end| end <= bytes.len() as u64);
        if !inside || s.paddr.checked_add(s.memsz.max(s.filesz)).is_none() {
            return Err(ElfError::SegmentOutsideFile {
                index,
                offset: s.offset,
                size: s.filesz,
                file_len: bytes.len(),
            });
        }
    }
    loads.sort_by_key(|(_, s)| s.paddr);
    for pair in loads.windows(2) {
        let (a, b) = (pair[0].1, pair[1].1);
        if a.paddr + a.filesz > b.paddr {
            return Err(ElfError::Overlap {
                a: a.paddr,
                b: b.paddr,
            });
        }
    }
    let base = loads[0].1.paddr;
    let end = loads
        .iter()
        .map(|(_, s)| s.paddr + s.filesz)
        .max()
        .expect("non-empty");
    let size = end - base;
    if size > MAX_IMAGE {
        return Err(ElfError::TooLarge { base, size });
    }
    let mem_end = info
        .loads
        .iter()
        .filter(|s| s.paddr >= base)
        .map(|s| s.paddr.saturating_add(s.memsz.max(s.filesz)))
        .max()
        .unwrap_or(end)
        .max(end);
    let mut data = vec![0u8; size as usize];
    for (_, s) in &loads {
        let dst = (s.paddr - base) as usize;
        let src = s.offset as usize;
        data[dst..dst + s.filesz as usize].copy_from_slice(&bytes[src..src + s.filesz as usize]);
    }
    Ok(RawImage {
        base,
        data,
        mem_end,
    })
}

/// Test helper: builds a minimal ELF64 AArch64 file with the given segments
/// (`(paddr, contents, memsz)`), each stored in the file at its own offset.
#[cfg(test)]
pub(crate) fn synthetic_elf(segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
    let phoff = 64u64;
    let phentsize = 56u64;
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&segments.first().map_or(0, |s| s.0).to_le_bytes());
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
    out[56..58].copy_from_slice(&(segments.len() as u16 + 1).to_le_bytes());
    let mut data_off = phoff + phentsize * (segments.len() as u64 + 1);
    let mut headers = Vec::new();
    let mut blobs = Vec::new();
    for &(paddr, contents, memsz) in segments {
        let mut ph = vec![0u8; phentsize as usize];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&5u32.to_le_bytes());
        ph[8..16].copy_from_slice(&data_off.to_le_bytes());
        ph[16..24].copy_from_slice(&(paddr + 0xffff_0000_0000_0000).to_le_bytes()); // vaddr differs
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&(contents.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        headers.extend_from_slice(&ph);
        blobs.extend_from_slice(contents);
        data_off += contents.len() as u64;
    }
    // A non-LOAD header (PT_GNU_STACK) that must be ignored.
    let mut ph = vec![0u8; phentsize as usize];
    ph[0..4].copy_from_slice(&0x6474_e551u32.to_le_bytes());
    headers.extend_from_slice(&ph);
    out.extend_from_slice(&headers);
    out.extend_from_slice(&blobs);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_segments_by_physical_address_with_zero_gaps() {
        // Given out of order on purpose; the second has BSS (memsz > filesz).
        let elf = synthetic_elf(&[(0x4008_1000, b"DATA", 0x2000), (0x4008_0000, b"TEXT", 4)]);
        let raw = to_raw_image(&elf).unwrap();
        assert_eq!(raw.base, 0x4008_0000);
        assert_eq!(raw.data.len(), 0x1004);
        assert_eq!(&raw.data[..4], b"TEXT");
        assert!(raw.data[4..0x1000].iter().all(|&b| b == 0));
        assert_eq!(&raw.data[0x1000..], b"DATA");
        assert_eq!(raw.mem_end, 0x4008_3000);
    }

    #[test]
    fn ignores_non_load_and_empty_segments() {
        let elf = synthetic_elf(&[(0x4008_0000, b"X", 1), (0x5000_0000, b"", 0x1000)]);
        let raw = to_raw_image(&elf).unwrap();
        assert_eq!(raw.data, b"X");
        assert_eq!(parse(&elf).unwrap().loads.len(), 2);
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        assert_eq!(parse(b"\x7fEL"), Err(ElfError::TooShort(3)));
        assert_eq!(parse(&[0u8; 64]), Err(ElfError::NotElf));
        let mut elf = synthetic_elf(&[(0x4008_0000, b"X", 1)]);
        elf[18] = 62; // x86-64
        assert_eq!(parse(&elf), Err(ElfError::WrongMachine(62)));
        let mut elf = synthetic_elf(&[(0x4008_0000, b"X", 1)]);
        elf[4] = 1; // 32-bit
        assert_eq!(parse(&elf), Err(ElfError::NotElf64Le));
        let elf = synthetic_elf(&[(0x4008_0000, b"AAAA", 4), (0x4008_0002, b"BB", 2)]);
        assert!(matches!(to_raw_image(&elf), Err(ElfError::Overlap { .. })));
        let elf = synthetic_elf(&[(0x4008_0000, b"A", 1), (0x8000_0000_0000, b"B", 1)]);
        assert!(matches!(to_raw_image(&elf), Err(ElfError::TooLarge { .. })));
        let mut elf = synthetic_elf(&[(0x4008_0000, b"A", 1)]);
        elf.truncate(elf.len() - 1);
        assert!(matches!(
            to_raw_image(&elf),
            Err(ElfError::SegmentOutsideFile { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678u32;
        for len in [0usize, 1, 63, 64, 65, 200, 4096] {
            for _ in 0..50 {
                let mut buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                if buf.len() >= 20 {
                    buf[..4].copy_from_slice(b"\x7fELF");
                    buf[4] = 2;
                    buf[5] = 1;
                    buf[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
                }
                let _ = to_raw_image(&buf);
            }
        }
    }
}
