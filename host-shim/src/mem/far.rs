//! The far tier behind `MADV_PAGEOUT`: a zram swap device (compressed, in DRAM) that the shim
//! sets up and tears down itself. Needs root; without it, or if zram0 is in use, setup says so
//! and the mechanism's reclaims fail with a counted "no far tier" outcome.

use std::fs;
use std::io;
use std::process::Command;

const ZRAM: &str = "/sys/block/zram0";
const DEV: &str = "/dev/zram0";

/// An active zram swap device; swapped off and reset on drop.
pub struct ZramSwap {
    _private: (),
}

/// zram's own view of what it stores (`/sys/block/zram0/mm_stat`), in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZramStat {
    /// Uncompressed bytes stored.
    pub orig: u64,
    /// Compressed bytes.
    pub compressed: u64,
    /// DRAM the device uses (its footprint: subtract it from the memory saved).
    pub mem_used: u64,
}

fn err(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl ZramSwap {
    /// Set up `/dev/zram0` as a swap device of `disk_bytes` (uncompressed capacity).
    pub fn setup(disk_bytes: u64) -> io::Result<ZramSwap> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(err("the zram far tier needs root (it sets up /dev/zram0 as swap); run as root, or run without a far tier (reclaims then fail as 'no far tier')".into()));
        }
        let size = fs::read_to_string(format!("{ZRAM}/disksize")).map_err(|e| {
            err(format!(
                "{ZRAM} not found ({e}); load the zram module (modprobe zram)"
            ))
        })?;
        if size.trim() != "0" {
            return Err(err(format!(
                "{DEV} is already in use (disksize {}); swapoff it and write 1 to {ZRAM}/reset",
                size.trim()
            )));
        }
        fs::write(format!("{ZRAM}/disksize"), disk_bytes.to_string())
            .map_err(|e| err(format!("setting {ZRAM}/disksize: {e}")))?;
        let guard = ZramSwap { _private: () }; // resets the device if anything below fails
        let out = Command::new("mkswap")
            .arg(DEV)
            .output()
            .map_err(|e| err(format!("running mkswap: {e}; install util-linux")))?;
        if !out.status.success() {
            return Err(err(format!(
                "mkswap {DEV} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let path = std::ffi::CString::new(DEV).expect("no NUL in a constant path");
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::swapon(path.as_ptr(), 0) } != 0 {
            return Err(err(format!("swapon {DEV}: {}", io::Error::last_os_error())));
        }
        Ok(guard)
    }

    /// What zram stores now.
    pub fn stat(&self) -> io::Result<ZramStat> {
        read_stat()
    }
}

/// What zram0 stores now (zeros when it is not set up).
pub fn read_stat() -> io::Result<ZramStat> {
    let s = fs::read_to_string(format!("{ZRAM}/mm_stat"))?;
    let v: Vec<u64> = s
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if v.len() < 3 {
        return Err(err(format!("{ZRAM}/mm_stat: unexpected format {s:?}")));
    }
    Ok(ZramStat {
        orig: v[0],
        compressed: v[1],
        mem_used: v[2],
    })
}

impl Drop for ZramSwap {
    fn drop(&mut self) {
        let path = std::ffi::CString::new(DEV).expect("no NUL in a constant path");
        // SAFETY: as in `setup`. Failing (not swapped on yet) is fine: the reset follows.
        unsafe { libc::swapoff(path.as_ptr()) };
        if let Err(e) = fs::write(format!("{ZRAM}/reset"), "1") {
            eprintln!(
                "wave mem: could not reset {ZRAM} ({e}); reset it by hand: echo 1 > {ZRAM}/reset"
            );
        }
    }
}
