//! Units shared by every scenario: byte sizes on the command line ("2G", "512M", "1k") and the MiB
//! that every throughput figure is reported in.
//!
//! Throughput is reported in MiB/s (2^20 bytes) and compared with the "MB/s" targets as if they
//! were MiB/s: the stricter reading, so a figure that passes here passes under either definition.

/// Bytes in one MiB, as a float for rates.
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// Parses a byte size: a whole number with an optional binary suffix `k`, `m`, `g` or `t` (case
/// insensitive, optionally followed by `i`, `b` or `ib`): `1024`, `1k`, `512M`, `2G`, `2GiB`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("size {text:?} does not start with a number"));
    }
    let number: u64 = digits
        .parse()
        .map_err(|err| format!("size {text:?}: {err}"))?;
    let suffix = suffix.to_ascii_lowercase();
    let unit_letter = suffix
        .strip_suffix("ib")
        .or_else(|| suffix.strip_suffix('b'))
        .or_else(|| suffix.strip_suffix('i'))
        .unwrap_or(&suffix);
    let shift = match unit_letter {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("size {text:?} has an unknown unit {suffix:?}")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} overflows 64 bits"))
}

/// Formats a byte count the way `parse_size` reads it back when it is a whole number of units.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "k"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// MiB per second for `bytes` moved in `seconds`; 0 when no time elapsed (an empty run).
pub(crate) fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / MIB / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3gb"), Ok(3 << 30));
        assert_eq!(parse_size(" 4mi "), Ok(4 << 20));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("12x").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn format_round_trips() {
        for size in [1u64, 1000, 1024, 16 << 10, 1 << 20, 2 << 30, (1 << 20) + 1] {
            assert_eq!(parse_size(&format_size(size)), Ok(size));
        }
        assert_eq!(format_size(1 << 20), "1M");
        assert_eq!(format_size(16 << 10), "16k");
    }

    #[test]
    fn rate_of_empty_run_is_zero() {
        assert_eq!(mib_per_s(123, 0.0), 0.0);
        assert!((mib_per_s(10 << 20, 2.0) - 5.0).abs() < 1e-9);
    }
}
