//! Go's `time.ParseDuration`, step for step, so that the operator reads every duration
//! string exactly as the API server's CEL `duration()` (which calls it) read it at `kubectl
//! apply`.
//!
//! Go is the reference, quirks included: integers overflow into an error, but a fraction
//! keeps only the digits that fit in 63 bits and is scaled in float64, so
//! `.99999999999999999999999999h` is exactly 1 h, not an error and not 197 s. The
//! e2e suite (`tests/durations.rs`) compares this with Go itself on thousands of strings.

/// Nanoseconds in each unit Go knows, by its spelling.
fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        // "us", and "µs" with either mu (U+00B5 micro sign, U+03BC Greek), as UTF-8.
        b"us" | [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

const ONE_63: u64 = 1 << 63;

/// Parses `text` as Go does; `Some(nanoseconds)` (within i64), `None` where Go returns an
/// error.
pub fn parse(text: &str) -> Option<i64> {
    let mut s = text.as_bytes();
    let mut negative = false;
    if let Some(&sign @ (b'-' | b'+')) = s.first() {
        negative = sign == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return None;
        }
        let before = s.len();
        let (whole, rest) = leading_int(s)?;
        s = rest;
        let pre = before != s.len();
        let (mut fraction, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix(b".") {
            let before = rest.len();
            let (f, sc, rest) = leading_fraction(rest);
            (fraction, scale, post) = (f, sc, before != rest.len());
            s = rest;
        }
        if !pre && !post {
            return None;
        }
        let unit_end = s.iter().position(|c| *c == b'.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_end == 0 {
            return None;
        }
        let unit = unit_nanos(&s[..unit_end])?;
        s = &s[unit_end..];
        if whole > ONE_63 / unit {
            return None;
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // Go: `v += uint64(float64(f) * (float64(unit) / scale))`, float64 throughout, the
            // conversion truncating (and saturating, as Rust's `as` does, where Go's would be
            // undefined; the sum is refused then anyway).
            value = value.checked_add((fraction as f64 * (unit as f64 / scale)) as u64)?;
            if value > ONE_63 {
                return None;
            }
        }
        total = total.checked_add(value)?;
        if total > ONE_63 {
            return None;
        }
    }
    if negative {
        // -(1<<63) is the one value whose magnitude exceeds i64::MAX.
        return Some(if total == ONE_63 { i64::MIN } else { -(total as i64) });
    }
    i64::try_from(total).ok()
}

/// Go's `leadingInt`: the leading digits, or `None` on overflow.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut x: u64 = 0;
    let end = s.iter().position(|c| !c.is_ascii_digit()).unwrap_or(s.len());
    for &c in &s[..end] {
        if x > ONE_63 / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > ONE_63 {
            return None;
        }
    }
    Some((x, &s[end..]))
}

/// Go's `leadingFraction`: the leading digits as a numerator and its scale (a power of ten),
/// keeping only the digits that fit; the rest are consumed and ignored.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    let end = s.iter().position(|c| !c.is_ascii_digit()).unwrap_or(s.len());
    for &c in &s[..end] {
        if overflow {
            continue;
        }
        if x > (ONE_63 - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > ONE_63 {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each string with what Go 1.26's `time.ParseDuration` returned for it (nanoseconds, or
    /// `None` for an error), printed by `e2e/durations` (`printf '%s\n' ... |
    /// e2e/.cache/bin/durations`). The e2e test `tests/durations.rs` checks thousands more
    /// against Go on every run.
    const GO_SAYS: &[(&str, Option<i64>)] = &[
        ("0", Some(0)),
        ("-0", Some(0)),
        ("+0", Some(0)),
        ("0s", Some(0)),
        ("15s", Some(15_000_000_000)),
        ("1h", Some(3_600_000_000_000)),
        ("1m30s", Some(90_000_000_000)),
        ("1.5s", Some(1_500_000_000)),
        ("500ms", Some(500_000_000)),
        (".5m", Some(30_000_000_000)),
        ("1.s", Some(1_000_000_000)),
        ("1.000000001s", Some(1_000_000_001)),
        ("1.0000000001s", Some(1_000_000_000)),
        ("3µs", Some(3_000)),
        ("3μs", Some(3_000)),
        ("3us", Some(3_000)),
        ("-1.5h", Some(-5_400_000_000_000)),
        ("1h1h1h", Some(10_800_000_000_000)),
        (".99999999999999999999999999h", Some(3_600_000_000_000)),
        ("0.999999999999999999999999999999h", Some(3_600_000_000_000)),
        (".000000000000000000000000000001h", Some(0)),
        ("1.9999999999999999999s", Some(2_000_000_000)),
        ("0.3333333333333333333333333333h", Some(1_200_000_000_000)),
        ("2562047h", Some(9_223_369_200_000_000_000)),
        ("2562047h47m16.854775807s", Some(i64::MAX)),
        ("2562047h47m16.854775808s", None),
        ("-2562047h47m16.854775808s", Some(i64::MIN)),
        ("2562048h", None),
        ("9223372036854775807ns", Some(i64::MAX)),
        ("9223372036854775808ns", None),
        ("-9223372036854775808ns", Some(i64::MIN)),
        ("99999999999999999999ns", None),
        ("9223372036s854775807ns", Some(i64::MAX)),
        ("", None),
        ("-", None),
        ("+", None),
        ("15", None),
        ("s", None),
        (".s", None),
        ("1d", None),
        ("--1s", None),
        ("1e3s", None),
        ("1.s.s", None),
        ("1s ", None),
        (" 1s", None),
        ("1S", None),
        ("1..5s", None),
    ];

    #[test]
    fn agrees_with_go_on_the_table() {
        for (text, expected) in GO_SAYS {
            assert_eq!(parse(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn thirty_digit_fractions_never_overflow_or_panic() {
        for unit in ["ns", "us", "ms", "s", "m", "h"] {
            for digits in 1..=40 {
                let text = format!("1.{}{unit}", "9".repeat(digits));
                let parsed = parse(&text).unwrap();
                let whole = parse(&format!("1{unit}")).unwrap();
                assert!((whole..=2 * whole).contains(&parsed), "{text}: {parsed}");
            }
        }
    }
}
