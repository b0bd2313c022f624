//! Parsing memory sizes for `--mem` (`1G`, `512M`, `2048`, `1.5G`, `1GiB`) and rendering them for
//! QEMU's `-m`. A bare number means MiB, as it does for QEMU.

/// Smallest guest RAM the runner accepts; the firmware, its stacks and the 1 MiB device tree need
/// more than this anyway.
pub const MIN_MEM: u64 = 16 << 20;

/// Parses a size into bytes. Accepts an optional `K`, `M`, `G` or `T` suffix (any case, optionally
/// followed by `B` or `iB`; all powers of 1024). The result must be a whole number of MiB and at
/// least [`MIN_MEM`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" => 20,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use a number with K, M, G or T, e.g. 1G or 512M"
            ))
        }
    };
    let bytes = if let Some((whole, frac)) = number.split_once('.') {
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("`{text}` is not a size"))?
        };
        if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{text}` is not a size; e.g. 1G, 512M, 1.5G"));
        }
        let scale = 10u64.pow(frac.len() as u32);
        let frac: u64 = frac
            .parse()
            .map_err(|_| format!("`{text}` is not a size"))?;
        let unit = 1u64 << shift;
        whole
            .checked_mul(unit)
            .and_then(|w| w.checked_add(frac.checked_mul(unit)? / scale))
            .ok_or_else(|| format!("`{text}` is too large"))?
    } else {
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size; e.g. 1G, 512M or 2048 (MiB)"))?;
        n.checked_mul(1 << shift)
            .ok_or_else(|| format!("`{text}` is too large"))?
    };
    if !bytes.is_multiple_of(1 << 20) {
        return Err(format!("`{text}` is not a whole number of MiB"));
    }
    if bytes < MIN_MEM {
        return Err(format!(
            "`{text}` is too small: the guest needs at least {} MiB",
            MIN_MEM >> 20
        ));
    }
    Ok(bytes)
}

/// Renders a byte count for QEMU's `-m` in the largest unit that divides it (`1G`, `1536M`).
pub fn qemu_size(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2048"), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(1536 << 20));
        assert_eq!(parse_size("65536K"), Ok(64 << 20));
        assert_eq!(parse_size(" 2T "), Ok(2 << 40));
    }

    #[test]
    fn rejects_bad_sizes_with_a_reason() {
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("1.2.3G").is_err());
        assert!(parse_size("1000K")
            .unwrap_err()
            .contains("whole number of MiB"));
        assert!(parse_size("8M").unwrap_err().contains("too small"));
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("9999999999T").unwrap_err().contains("too large"));
        assert!(parse_size("-1G").is_err());
    }

    #[test]
    fn renders_for_qemu() {
        assert_eq!(qemu_size(1 << 30), "1G");
        assert_eq!(qemu_size(1536 << 20), "1536M");
        assert_eq!(qemu_size(4 << 30), "4G");
    }
}
