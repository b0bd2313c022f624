//! The flashable image: build the firmware, convert its ELF into the raw arm64 `Image`, check the
//! header, and write `<target>/wave/wave-firmware.{bin,elf}`. [`image`] does that once per
//! process so that many boots (the end-to-end tests) share one build.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{elf, firmware, workspace};
use crate::{Error, Result};

/// Offset of the arm64 `Image` header magic.
pub const MAGIC_OFFSET: usize = 0x38;
/// The arm64 `Image` header magic, `ARM\x64`.
pub const MAGIC: [u8; 4] = *b"ARM\x64";
/// File names under the output directory.
pub const BIN_NAME: &str = "wave-firmware.bin";
pub const ELF_NAME: &str = "wave-firmware.elf";

/// The fields of the 64-byte arm64 `Image` header that matter to a loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
}

/// A built image on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The raw image (`-kernel`, U-Boot `booti`).
    pub bin: PathBuf,
    /// The ELF (symbols, `defmt` table).
    pub elf: PathBuf,
    pub bin_len: u64,
    pub elf_len: u64,
    /// Physical address the image is linked to load at.
    pub load_addr: u64,
    pub header: ImageHeader,
}

/// Checks the arm64 `Image` header of a raw image.
pub fn check_header(raw: &elf::RawImage) -> Result<ImageHeader> {
    let data = &raw.data;
    if data.len() < 64 {
        return Err(Error::Image(format!(
            "the raw image is only {} bytes, too short for the 64-byte arm64 Image header; the \
             header must be the first thing in the image (see docs/firmware.md, \"The image\")",
            data.len()
        )));
    }
    let magic = &data[MAGIC_OFFSET..MAGIC_OFFSET + 4];
    if magic != MAGIC {
        return Err(Error::Image(format!(
            "no arm64 Image magic at offset {MAGIC_OFFSET:#x} (found {magic:02x?}, want \
             \"ARM\\x64\"): the image would not boot with QEMU -kernel or U-Boot booti; the \
             firmware's boot code must start with the Image header (docs/firmware.md)"
        )));
    }
    let word = |off: usize| u64::from_le_bytes(data[off..off + 8].try_into().expect("8 bytes"));
    let header = ImageHeader {
        text_offset: word(8),
        image_size: word(16),
        flags: word(24),
    };
    if header.image_size != 0 && header.image_size < data.len() as u64 {
        return Err(Error::Image(format!(
            "the Image header says image_size = {:#x}, smaller than the file ({:#x} bytes); a \
             loader would overwrite the image's tail; fix image_size in the boot header",
            header.image_size,
            data.len()
        )));
    }
    Ok(header)
}

/// Converts `elf_path` into the raw image and writes both files into `out_dir`.
pub fn write_image(elf_path: &Path, out_dir: &Path) -> Result<Image> {
    let elf_bytes = std::fs::read(elf_path).map_err(|e| Error::io(elf_path, e))?;
    let raw = elf::to_raw_image(&elf_bytes).map_err(|source| Error::Elf {
        path: elf_path.to_path_buf(),
        source,
    })?;
    let header = check_header(&raw)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let bin = out_dir.join(BIN_NAME);
    let elf = out_dir.join(ELF_NAME);
    std::fs::write(&bin, &raw.data).map_err(|e| Error::io(&bin, e))?;
    std::fs::write(&elf, &elf_bytes).map_err(|e| Error::io(&elf, e))?;
    Ok(Image {
        bin,
        elf,
        bin_len: raw.data.len() as u64,
        elf_len: elf_bytes.len() as u64,
        load_addr: raw.base,
        header,
    })
}

/// Builds the firmware and writes the image into `out_dir` (default `<target>/wave`).
/// Always runs the build (cargo makes an up-to-date build cheap).
pub fn build_image(out_dir: Option<&Path>) -> Result<Image> {
    build_image_with(out_dir, false)
}

fn build_image_with(out_dir: Option<&Path>, quiet: bool) -> Result<Image> {
    let root = workspace::root()?;
    let elf_path = firmware::build(&root, quiet)?;
    let out = out_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace::wave_dir(&root));
    write_image(&elf_path, &out)
}

/// The image in `<target>/wave`, built at most once per process (quietly: this is the library
/// path the end-to-end tests use). Later calls return the same image (or the same error).
pub fn image() -> Result<Image> {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_image_with(None, true).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(image_size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +0x40
        h[8..16].copy_from_slice(&0x8_0000u64.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&0xau64.to_le_bytes());
        h[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
        h
    }

    #[test]
    fn converts_a_synthetic_elf_and_writes_both_files() {
        let mut text = header(0x10_0000);
        text.extend_from_slice(b"code");
        let elf_bytes = elf::synthetic_elf(&[(0x4008_0000, &text, 0x10_0000)]);
        let dir = std::env::temp_dir().join(format!("wave-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let elf_path = dir.join("fw");
        std::fs::write(&elf_path, &elf_bytes).unwrap();
        let img = write_image(&elf_path, &dir.join("out")).unwrap();
        assert_eq!(img.load_addr, 0x4008_0000);
        assert_eq!(img.header.text_offset, 0x8_0000);
        assert_eq!(img.header.image_size, 0x10_0000);
        assert_eq!(std::fs::read(&img.bin).unwrap(), text);
        assert_eq!(std::fs::read(&img.elf).unwrap(), elf_bytes);
        assert_eq!(img.bin_len, text.len() as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_missing_magic_and_short_image_size() {
        let mut text = header(0x1000);
        text[MAGIC_OFFSET] = b'X';
        let raw = elf::to_raw_image(&elf::synthetic_elf(&[(0x4008_0000, &text, 64)])).unwrap();
        let err = check_header(&raw).unwrap_err().to_string();
        assert!(err.contains("no arm64 Image magic"), "{err}");

        let text = header(16);
        let raw = elf::to_raw_image(&elf::synthetic_elf(&[(0x4008_0000, &text, 64)])).unwrap();
        let err = check_header(&raw).unwrap_err().to_string();
        assert!(err.contains("image_size"), "{err}");

        let raw = elf::to_raw_image(&elf::synthetic_elf(&[(0x4008_0000, b"tiny", 4)])).unwrap();
        assert!(check_header(&raw).is_err());
    }
}
