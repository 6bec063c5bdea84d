//! Values with units in configs and on the command line: byte sizes
//! ([`ByteSize`]) and durations ([`Dur`]).
//!
//! Config keys carry their unit in the value (`block_size: 4KiB`,
//! `duration: 10s`) so a reader never has to guess whether `4096` means bytes
//! or blocks. Both types parse from YAML integers (bytes / seconds) or from
//! strings with a unit, and serialize back to one canonical string, which is
//! what the effective-config copy in the results directory shows.
//!
//! Sizes are parsed with the `parse-size` crate under these rules (fio users
//! write `4k` meaning 4096, so a bare prefix letter is binary, like fio):
//! - no unit or `B`: bytes (`4096`, `4096B`);
//! - `KiB`, `MiB`, `GiB`, `TiB`, `PiB`, `EiB` (also `Ki`, `Mi`, …): powers of 1024;
//! - a bare letter `k`, `m`, `g`, `t`, `p`, `e` (either case): powers of 1024;
//! - `KB`, `MB`, `GB`, `TB`, `PB`, `EB`: powers of 1000.
//!
//! Fractions are fine when the result is a whole number of bytes (`1.5GiB`);
//! negative sizes and fractional bytes (`0.5`, `1.1KiB`) are errors.
//! Durations are parsed with `humantime` (`10s`, `250us`, `1m 30s`, `2h`); a
//! bare number means seconds.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The accepted forms of a size, shown in every size error.
pub const SIZE_FORM: &str = "use a number with an optional unit, like 4096, 4KiB, 1MiB, 2GiB";
/// The accepted forms of a duration, shown in every duration error.
pub const DURATION_FORM: &str = "use a number of seconds or a number with a unit, like 10s, 250us, 1m 30s, 2h";

/// A bad size or duration; the message shows the value and the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// A number of bytes, written with a unit in configs (`4KiB`, `256MiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A length of time, written with a unit in configs (`10s`, `250us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

const KIB: u64 = 1 << 10;

/// Binary units from largest to smallest, for formatting.
const BINARY_UNITS: [(u64, &str); 6] =
    [(1 << 60, "EiB"), (1 << 50, "PiB"), (1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (KIB, "KiB")];

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// `n` KiB.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(KIB))
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(1 << 20))
    }

    /// `n` GiB.
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(1 << 30))
    }
}

impl Dur {
    /// `n` seconds.
    pub const fn secs(n: u64) -> Dur {
        Dur(Duration::from_secs(n))
    }
}

/// Parses a size such as `4096`, `4KiB`, `4k`, `1.5GiB` or `10MB` into bytes
/// (rules in the module documentation).
pub fn parse_bytes(input: &str) -> Result<u64, UnitError> {
    let text = input.trim();
    let bad = |why: &str| UnitError(format!("invalid size '{input}': {why}"));
    if text.is_empty() {
        return Err(bad(&format!("the value is empty; {SIZE_FORM}")));
    }
    if text.starts_with('-') {
        return Err(bad("sizes cannot be negative"));
    }
    let unit_start = text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len();
    let (number, unit) = text.split_at(unit_start);
    let number = number.trim_end();
    let Some((binary, factor)) = unit_factor(unit) else {
        return Err(bad(SIZE_FORM));
    };
    let parser =
        if binary { parse_size::Config::new().with_binary() } else { parse_size::Config::new().with_decimal() };
    let bytes = match parser.parse_size(text) {
        Ok(bytes) => bytes,
        Err(parse_size::Error::PosOverflow) => {
            return Err(bad("too large (the largest size is 16 EiB minus one byte)"));
        }
        Err(_) => return Err(bad(SIZE_FORM)),
    };
    // parse-size rounds fractional bytes to the nearest integer; a size that is
    // not a whole number of bytes is almost certainly a mistake, so refuse it.
    match Decimal::parse(number) {
        Some(decimal) => match decimal.is_whole_times(factor) {
            Some(true) => Ok(bytes),
            Some(false) => Err(bad(&format!(
                "that is {} bytes; a size must be a whole number of bytes",
                decimal.approx() * factor as f64
            ))),
            None => Err(bad("too many digits")),
        },
        None => Err(bad(SIZE_FORM)),
    }
}

/// The multiplier a size unit stands for, and whether it is binary (1024ⁿ).
/// `None` for anything that is not a unit we accept.
fn unit_factor(unit: &str) -> Option<(bool, u64)> {
    let lower = unit.to_ascii_lowercase();
    let power = |letter: u8| -> Option<u32> { b"kmgtpe".iter().position(|&c| c == letter).map(|i| i as u32 + 1) };
    match lower.as_bytes() {
        [] | [b'b'] => Some((true, 1)),
        [p] | [p, b'i'] | [p, b'i', b'b'] => power(*p).map(|n| (true, 1u64 << (10 * n))),
        [p, b'b'] => power(*p).map(|n| (false, 1000u64.pow(n))),
        _ => None,
    }
}

/// A decimal number `mantissa × 10^exponent`, used to tell whether a size with
/// a fraction is a whole number of bytes.
struct Decimal {
    mantissa: u128,
    exponent: i64,
}

impl Decimal {
    /// Parses `12`, `1.5`, `2.5e3`, `1_000` (the number forms parse-size takes).
    fn parse(number: &str) -> Option<Decimal> {
        let cleaned: String = number.chars().filter(|c| *c != '_' && *c != ' ').collect();
        let (digits, exponent) = match cleaned.find(['e', 'E']) {
            Some(at) => (&cleaned[..at], cleaned[at + 1..].parse::<i64>().ok()?),
            None => (cleaned.as_str(), 0),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let frac_part = frac_part.trim_end_matches('0');
        let all_digits = format!("{int_part}{frac_part}");
        let significant = all_digits.trim_start_matches('0');
        let mantissa = if significant.is_empty() {
            0
        } else if significant.len() > 38 {
            u128::MAX // marker: too many digits, caught by is_whole_times
        } else {
            significant.parse::<u128>().ok()?
        };
        let exponent = exponent.checked_sub(i64::try_from(frac_part.len()).ok()?)?;
        Some(Decimal { mantissa, exponent })
    }

    /// Whether `self × factor` is a whole number; `None` if it cannot tell
    /// (absurdly many digits).
    fn is_whole_times(&self, factor: u64) -> Option<bool> {
        if self.mantissa == 0 || self.exponent >= 0 {
            return Some(true);
        }
        if self.mantissa == u128::MAX {
            return None;
        }
        let scaled = self.mantissa.checked_mul(u128::from(factor))?;
        let divisor_exp = u32::try_from(-self.exponent).ok()?;
        match 10u128.checked_pow(divisor_exp) {
            Some(divisor) => Some(scaled % divisor == 0),
            // 10^k > 2^127 > scaled, so scaled (non-zero) is not a multiple.
            None => Some(false),
        }
    }

    fn approx(&self) -> f64 {
        self.mantissa as f64 * 10f64.powi(self.exponent.clamp(-400, 400) as i32)
    }
}

/// The canonical spelling of a size: the largest binary unit that gives a
/// whole number or at most three decimals (`4KiB`, `1.5GiB`), else exact
/// bytes (`4097B`).
fn canonical_bytes(n: u64) -> String {
    for (unit, name) in BINARY_UNITS {
        if n < unit {
            continue;
        }
        let whole = n / unit;
        let rem = n % unit;
        if rem == 0 {
            return format!("{whole}{name}");
        }
        let thousandths = u128::from(rem) * 1000;
        if thousandths % u128::from(unit) == 0 {
            let frac = thousandths / u128::from(unit);
            let frac = format!("{frac:03}");
            return format!("{whole}.{}{name}", frac.trim_end_matches('0'));
        }
    }
    format!("{n}B")
}

/// A size for people: binary units with two decimals (`1.50 GiB`), or bytes
/// below 1 KiB (`512 B`).
pub fn format_bytes(n: u64) -> String {
    for (unit, name) in BINARY_UNITS {
        if n >= unit {
            return format!("{:.2} {name}", n as f64 / unit as f64);
        }
    }
    format!("{n} B")
}

/// Parses a duration: a bare number is seconds (`10`, `0.5`), otherwise
/// humantime's forms (`10s`, `250us`, `1m 30s`, `2h`).
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let text = input.trim();
    let bad = |why: &str| UnitError(format!("invalid duration '{input}': {why}"));
    if text.is_empty() {
        return Err(bad(&format!("the value is empty; {DURATION_FORM}")));
    }
    if text.starts_with('-') {
        return Err(bad("durations cannot be negative"));
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match text.parse::<f64>() {
            Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| bad(DURATION_FORM)),
            Err(_) => Err(bad(DURATION_FORM)),
        };
    }
    humantime::parse_duration(text).map_err(|_| bad(DURATION_FORM))
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<ByteSize, UnitError> {
        parse_bytes(s).map(ByteSize)
    }
}

impl FromStr for Dur {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Dur, UnitError> {
        parse_duration(s).map(Dur)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&canonical_bytes(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

impl From<Dur> for Duration {
    fn from(dur: Dur) -> Duration {
        dur.0
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a size ({SIZE_FORM})")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v).map(ByteSize).map_err(|_| E::custom(format!("invalid size '{v}': sizes cannot be negative")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
        let bad = |why: &str| E::custom(format!("invalid size '{v}': {why}"));
        if v.is_nan() || v.is_infinite() {
            Err(bad(SIZE_FORM))
        } else if v < 0.0 {
            Err(bad("sizes cannot be negative"))
        } else if v.fract() != 0.0 {
            Err(bad("a size must be a whole number of bytes"))
        } else if v >= 18_446_744_073_709_551_616.0 {
            Err(bad("too large (the largest size is 16 EiB minus one byte)"))
        } else {
            Ok(ByteSize(v as u64))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

struct DurVisitor;

impl Visitor<'_> for DurVisitor {
    type Value = Dur;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration ({DURATION_FORM})")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
        Ok(Dur::secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
        u64::try_from(v)
            .map(Dur::secs)
            .map_err(|_| E::custom(format!("invalid duration '{v}': durations cannot be negative")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
        if v < 0.0 {
            return Err(E::custom(format!("invalid duration '{v}': durations cannot be negative")));
        }
        Duration::try_from_secs_f64(v)
            .map(Dur)
            .map_err(|_| E::custom(format!("invalid duration '{v}': {DURATION_FORM}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Dur, D::Error> {
        deserializer.deserialize_any(DurVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> u64 {
        parse_bytes(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn size_err(s: &str) -> String {
        match parse_bytes(s) {
            Ok(n) => panic!("{s} parsed as {n}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sizes_plain_bytes() {
        assert_eq!(size("0"), 0);
        assert_eq!(size("4096"), 4096);
        assert_eq!(size("4096B"), 4096);
        assert_eq!(size("4096 b"), 4096);
        assert_eq!(size(" 1_000 "), 1000);
        assert_eq!(size("18446744073709551615"), u64::MAX);
    }

    #[test]
    fn sizes_binary_units() {
        assert_eq!(size("4KiB"), 4096);
        assert_eq!(size("4kib"), 4096);
        assert_eq!(size("4 KiB"), 4096);
        assert_eq!(size("4Ki"), 4096);
        assert_eq!(size("1MiB"), 1 << 20);
        assert_eq!(size("2GiB"), 2 << 30);
        assert_eq!(size("3TiB"), 3 << 40);
        assert_eq!(size("1PiB"), 1 << 50);
        assert_eq!(size("1EiB"), 1 << 60);
    }

    #[test]
    fn sizes_bare_letters_are_binary_like_fio() {
        assert_eq!(size("4k"), 4096);
        assert_eq!(size("4K"), 4096);
        assert_eq!(size("1m"), 1 << 20);
        assert_eq!(size("1M"), 1 << 20);
        assert_eq!(size("2g"), 2 << 30);
        assert_eq!(size("1t"), 1 << 40);
    }

    #[test]
    fn sizes_decimal_units() {
        assert_eq!(size("4KB"), 4000);
        assert_eq!(size("4kb"), 4000);
        assert_eq!(size("1MB"), 1_000_000);
        assert_eq!(size("2GB"), 2_000_000_000);
        assert_eq!(size("1TB"), 1_000_000_000_000);
    }

    #[test]
    fn sizes_with_exact_fractions() {
        assert_eq!(size("1.5GiB"), 3 << 29);
        assert_eq!(size("0.5KiB"), 512);
        assert_eq!(size("1.5KB"), 1500);
        assert_eq!(size("2.5e3"), 2500);
        assert_eq!(size("1e3KiB"), 1_024_000);
        assert_eq!(size("4.000"), 4);
        assert_eq!(size("0.0"), 0);
    }

    #[test]
    fn sizes_rejects_fractional_bytes() {
        let e = size_err("0.5");
        assert!(e.contains("'0.5'") && e.contains("whole number of bytes"), "{e}");
        let e = size_err("1.1KiB");
        assert!(e.contains("1126.4 bytes"), "{e}");
        assert!(size_err("0.2MiB").contains("whole number"));
        assert!(size_err("1.0001KB").contains("whole number"));
        assert!(size_err("15e-1").contains("whole number"));
    }

    #[test]
    fn sizes_rejects_negative_and_garbage() {
        assert_eq!(
            size_err("4KX"),
            "invalid size '4KX': use a number with an optional unit, like 4096, 4KiB, 1MiB, 2GiB"
        );
        assert!(size_err("-4KiB").contains("cannot be negative"));
        assert!(size_err("-1").contains("cannot be negative"));
        assert!(size_err("").contains("empty"));
        assert!(size_err("   ").contains("empty"));
        assert!(size_err("KiB").contains(SIZE_FORM));
        assert!(size_err("abc").contains(SIZE_FORM));
        assert!(size_err("4 kbit").contains(SIZE_FORM));
        assert!(size_err("4ZiB").contains(SIZE_FORM));
        assert!(size_err("1.2.3").contains(SIZE_FORM));
        assert!(size_err("0x10").contains(SIZE_FORM));
        assert!(size_err("nan").contains(SIZE_FORM));
        assert!(size_err("inf").contains(SIZE_FORM));
        assert!(size_err("4 KiB B").contains(SIZE_FORM));
    }

    #[test]
    fn sizes_rejects_overflow() {
        assert!(size_err("16EiB").contains("too large"));
        assert!(size_err("18446744073709551616").contains("too large"));
        assert!(size_err("99999999999999999999999999999999999999999999").contains("too large"));
    }

    #[test]
    fn canonical_size_strings() {
        assert_eq!(ByteSize(0).to_string(), "0B");
        assert_eq!(ByteSize(1).to_string(), "1B");
        assert_eq!(ByteSize(1023).to_string(), "1023B");
        assert_eq!(ByteSize(4096).to_string(), "4KiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5KiB");
        assert_eq!(ByteSize(4097).to_string(), "4097B");
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.5GiB");
        assert_eq!(ByteSize((1 << 30) + (1 << 28)).to_string(), "1.25GiB");
        assert_eq!(ByteSize((3 << 29) + 4096).to_string(), "1572868KiB");
        assert_eq!(ByteSize(1 << 60).to_string(), "1EiB");
        assert_eq!(ByteSize(u64::MAX).to_string(), "18446744073709551615B");
    }

    #[test]
    fn canonical_sizes_round_trip() {
        let samples =
            [0, 1, 512, 4096, 4097, 1536, 3 << 29, (3 << 29) + 4096, 1_000_000, 123_456_789, u64::MAX, 1 << 63];
        for n in samples {
            let text = ByteSize(n).to_string();
            assert_eq!(size(&text), n, "{text}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(4096), "4.00 KiB");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
        assert_eq!(format_bytes(256 << 20), "256.00 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.00 EiB");
    }

    #[test]
    fn durations_parse() {
        let d = |s: &str| parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("250us"), Duration::from_micros(250));
        assert_eq!(d("1m 30s"), Duration::from_secs(90));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("10"), Duration::from_secs(10));
        assert_eq!(d("0.25"), Duration::from_millis(250));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d(" 5ms "), Duration::from_millis(5));
    }

    #[test]
    fn durations_reject_bad_input() {
        let e = |s: &str| parse_duration(s).expect_err(s).to_string();
        assert_eq!(
            e("10x"),
            "invalid duration '10x': use a number of seconds or a number with a unit, like 10s, 250us, 1m 30s, 2h"
        );
        assert!(e("-5s").contains("cannot be negative"));
        assert!(e("-5").contains("cannot be negative"));
        assert!(e("").contains("empty"));
        assert!(e("s").contains(DURATION_FORM));
        assert!(e("1.2.3").contains(DURATION_FORM));
        assert!(e("ten seconds").contains(DURATION_FORM));
        assert!(e("99999999999999999999999").contains(DURATION_FORM));
    }

    #[test]
    fn canonical_durations_round_trip() {
        for (dur, text) in [
            (Duration::from_secs(10), "10s"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1500), "1s 500ms"),
        ] {
            assert_eq!(Dur(dur).to_string(), text);
            assert_eq!(text.parse::<Dur>(), Ok(Dur(dur)));
        }
        let odd = Duration::new(86_400 * 400 + 7, 123_456_789);
        assert_eq!(Dur(odd).to_string().parse::<Dur>(), Ok(Dur(odd)));
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Both {
        size: ByteSize,
        time: Dur,
    }

    fn from_yaml(text: &str) -> Result<Both, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn serde_from_integers_and_strings() {
        assert_eq!(from_yaml("size: 4096\ntime: 10"), Ok(Both { size: ByteSize(4096), time: Dur::secs(10) }));
        assert_eq!(
            from_yaml("size: 4KiB\ntime: 250us"),
            Ok(Both { size: ByteSize(4096), time: Dur(Duration::from_micros(250)) })
        );
        assert_eq!(
            from_yaml("size: '4k'\ntime: 1.5"),
            Ok(Both { size: ByteSize(4096), time: Dur(Duration::from_millis(1500)) })
        );
        assert_eq!(from_yaml("size: 8192.0\ntime: 1m 30s"), Ok(Both { size: ByteSize(8192), time: Dur::secs(90) }));
    }

    #[test]
    fn serde_rejects_bad_values() {
        let e = from_yaml("size: -4096\ntime: 1").unwrap_err();
        assert!(e.contains("cannot be negative"), "{e}");
        let e = from_yaml("size: 0.5\ntime: 1").unwrap_err();
        assert!(e.contains("whole number of bytes"), "{e}");
        let e = from_yaml("size: 4KX\ntime: 1").unwrap_err();
        assert!(e.contains("invalid size '4KX'"), "{e}");
        let e = from_yaml("size: true\ntime: 1").unwrap_err();
        assert!(e.contains(SIZE_FORM), "{e}");
        let e = from_yaml("size: 1\ntime: -3").unwrap_err();
        assert!(e.contains("cannot be negative"), "{e}");
        let e = from_yaml("size: 1\ntime: -0.5").unwrap_err();
        assert!(e.contains("cannot be negative"), "{e}");
        let e = from_yaml("size: 1\ntime: 10 parsecs").unwrap_err();
        assert!(e.contains("invalid duration '10 parsecs'"), "{e}");
        let e = from_yaml("size: 1\ntime: [1]").unwrap_err();
        assert!(e.contains(DURATION_FORM), "{e}");
    }

    #[test]
    fn serde_writes_canonical_strings() {
        let both = Both { size: ByteSize(3 << 29), time: Dur(Duration::from_micros(250)) };
        let text = serde_yaml_ng::to_string(&both).unwrap();
        assert_eq!(text, "size: 1.5GiB\ntime: 250us\n");
        assert_eq!(from_yaml(&text), Ok(both));
    }
}
