//! The GICv3 ITS: its register block ([`GitsRegs`]) and command encoding (portable, tested on
//! the host), and the driver that owns both and the tables the ITS reads ([`Its`], built for
//! the image only). `gic` decides what to map; this module issues the commands.
//!
//! Each command is four little-endian doublewords (GIC architecture spec, "ITS commands").

use safe_mmio::fields::{ReadPure, ReadPureWrite, WriteOnly};

/// The ITS control frame and, 64 KiB on, its translation frame (GIC architecture spec,
/// "ITS register map"). Only the registers this driver uses are named.
#[repr(C, align(65536))]
pub struct GitsRegs {
    /// GITS_CTLR (bit 0: Enabled).
    pub ctlr: ReadPureWrite<u32>,
    /// GITS_IIDR.
    pub iidr: ReadPure<u32>,
    /// GITS_TYPER.
    pub typer: ReadPure<u64>,
    _reserved0: [u32; 28],
    /// GITS_CBASER: the command queue.
    pub cbaser: ReadPureWrite<u64>,
    /// GITS_CWRITER: where software has written up to.
    pub cwriter: ReadPureWrite<u64>,
    /// GITS_CREADR: where the ITS has read up to (bit 0: stalled).
    pub creadr: ReadPure<u64>,
    _reserved1: [u64; 13],
    /// GITS_BASER<n>: the ITS's own tables.
    pub baser: [ReadPureWrite<u64>; 8],
    _reserved2: [u32; (0x1_0040 - 0x140) / 4],
    /// GITS_TRANSLATER: devices write MSI data here; the CPU never does.
    pub translater: WriteOnly<u32>,
}

const _: () = {
    assert!(core::mem::offset_of!(GitsRegs, cbaser) == 0x80);
    assert!(core::mem::offset_of!(GitsRegs, creadr) == 0x90);
    assert!(core::mem::offset_of!(GitsRegs, baser) == 0x100);
    assert!(core::mem::offset_of!(GitsRegs, translater) == 0x1_0040);
};

/// One 32-byte ITS command.
pub type Command = [u64; 4];

/// MAPC: map collection `icid` to the redistributor `rdbase` (its processor number when
/// GITS_TYPER.PTA = 0).
pub fn mapc(icid: u16, rdbase: u64) -> Command {
    [0x09, 0, (1 << 63) | (rdbase << 16) | icid as u64, 0]
}

/// MAPD: map `device` to an interrupt translation table at `itt` holding `2^event_bits`
/// events.
pub fn mapd(device: u32, event_bits: u8, itt: u64) -> Command {
    [
        0x08 | (device as u64) << 32,
        (event_bits.saturating_sub(1) & 0x1f) as u64,
        (1 << 63) | (itt & 0x000f_ffff_ffff_ff00),
        0,
    ]
}

/// MAPTI: event `event` of `device` raises physical LPI `intid` on collection `icid`.
pub fn mapti(device: u32, event: u32, intid: u32, icid: u16) -> Command {
    [
        0x0a | (device as u64) << 32,
        event as u64 | (intid as u64) << 32,
        icid as u64,
        0,
    ]
}

/// MOVI: move event `event` of `device` to collection `icid` (re-routing a mapped vector).
pub fn movi(device: u32, event: u32, icid: u16) -> Command {
    [0x01 | (device as u64) << 32, event as u64, icid as u64, 0]
}

/// INV: reload the configuration of `device`'s `event`.
pub fn inv(device: u32, event: u32) -> Command {
    [0x0c | (device as u64) << 32, event as u64, 0, 0]
}

/// SYNC: wait until earlier commands' effects are visible at redistributor `rdbase`.
pub fn sync(rdbase: u64) -> Command {
    [0x05, 0, rdbase << 16, 0]
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod driver;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use driver::{spin_until, Its};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_sequence_measured_on_qemu() {
        // docs: ../shared/reference/msi-on-qemu-virt.md, "Register sequence that worked".
        assert_eq!(mapc(0, 0), [0x09, 0, 1 << 63, 0]);
        assert_eq!(mapc(3, 2), [0x09, 0, (1 << 63) | (2 << 16) | 3, 0]);
        assert_eq!(
            mapd(8, 4, 0x4105_0000),
            [0x8_0000_0008, 3, (1 << 63) | 0x4105_0000, 0]
        );
        assert_eq!(
            mapti(8, 2, 8194, 1),
            [0x8_0000_000a, 2 | (8194 << 32), 1, 0]
        );
        assert_eq!(inv(8, 2), [0x8_0000_000c, 2, 0, 0]);
        assert_eq!(sync(1), [0x05, 0, 1 << 16, 0]);
        assert_eq!(movi(8, 2, 3), [0x8_0000_0001, 2, 3, 0]);
    }

    #[test]
    fn itt_address_is_masked_to_its_field() {
        let c = mapd(1, 1, 0xffff_ffff_ffff_ffff);
        assert_eq!(c[2], (1 << 63) | 0x000f_ffff_ffff_ff00);
        assert_eq!(c[1], 0);
    }
}
