//! Values with units in device profiles: durations ([`Nanos`]), byte counts
//! ([`Bytes`]), bandwidths ([`Bandwidth`]) and capacities ([`Capacity`]).
//!
//! As in the driver's configs, a profile value carries its unit
//! (`80us`, `7GB/s`, `3.84TB`) so nobody has to guess whether `80` means
//! microseconds or milliseconds; the Rust side keeps the unit in the field
//! name (`latency_ns`, `bytes_per_s`). Decimals are exact (`3.84TB` is
//! 3,840,000,000,000 bytes, `1.5us` is 1,500 ns) because parsing is done in
//! integers, not floats.
//!
//! - durations: `ns`, `us` (or `µs`), `ms`, `s`, `min`; a bare `0` is allowed;
//! - sizes: `B`, `KB`/`MB`/`GB`/`TB`/`PB` (powers of 1000),
//!   `KiB`/`MiB`/`GiB`/`TiB`/`PiB` (powers of 1024); a bare integer is bytes;
//! - bandwidths: a size unit followed by `/s` (`500MB/s`), or `unlimited`;
//! - capacities: a size, or `unlimited`.
//!
//! Every type serializes back to one canonical string, so a profile can be
//! echoed into a run's results.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The accepted forms of a duration, shown in every duration error.
pub(crate) const DURATION_FORM: &str =
    "use a number with a unit: ns, us, ms, s or min (like 80us, 1.5ms); a bare 0 is allowed";
/// The accepted forms of a size, shown in every size error.
pub(crate) const SIZE_FORM: &str = "use a whole number of bytes or a number with a unit (like 4096, 4KiB, 3.84TB)";
/// The accepted forms of a bandwidth, shown in every bandwidth error.
pub(crate) const BANDWIDTH_FORM: &str = "use a size per second (like 500MB/s, 2GiB/s) or `unlimited`";

const DURATION_UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("min", 60_000_000_000),
    ("m", 60_000_000_000),
];

const SIZE_UNITS: [(&str, u128); 11] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
];

/// Splits `12.5ms` into ("12.5", "ms") and returns `number × unit` exactly,
/// or `None` if the text is malformed, the unit unknown, the result not a
/// whole number or out of range.
fn parse_scaled(text: &str, units: &[(&str, u128)], bare_unit: Option<u128>) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let scale = if unit.is_empty() {
        bare_unit?
    } else {
        units.iter().find(|(name, _)| *name == unit).map(|(_, scale)| *scale)?
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || frac.len() > 18 {
        return None;
    }
    let digits: u128 = format!("{whole}{frac}").parse().ok()?;
    let divisor = 10u128.pow(u32::try_from(frac.len()).ok()?);
    let scaled = digits.checked_mul(scale)?;
    if scaled % divisor != 0 {
        return None;
    }
    u64::try_from(scaled / divisor).ok()
}

/// Writes `value` with the largest unit of `units` that divides it exactly.
fn format_scaled(f: &mut fmt::Formatter<'_>, value: u64, units: &[(&str, u128)], suffix: &str) -> fmt::Result {
    let value = u128::from(value);
    let best = units
        .iter()
        .filter(|(_, scale)| value.is_multiple_of(*scale))
        .max_by_key(|(_, scale)| *scale)
        .map_or(("", 1), |(name, scale)| (*name, *scale));
    write!(f, "{}{}{}", value / best.1, best.0, suffix)
}

/// A duration in nanoseconds, written with a unit (`80us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Parses `80us`, `1.5ms`, `0`; the error names the accepted forms.
    pub fn parse(text: &str) -> Result<Nanos, String> {
        if text.trim() == "0" {
            return Ok(Nanos(0));
        }
        parse_scaled(text, &DURATION_UNITS, None)
            .map(Nanos)
            .ok_or_else(|| format!("bad duration {text:?}: {DURATION_FORM}"))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        // `m` is an input alias of `min`; print only the canonical names.
        let units: Vec<(&str, u128)> =
            DURATION_UNITS.iter().copied().filter(|(name, _)| *name != "µs" && *name != "m").collect();
        format_scaled(f, self.0, &units, "")
    }
}

/// A number of bytes (`4KiB`, `3.84TB`, `4096`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Parses `4096`, `4KiB`, `3.84TB`.
    pub fn parse(text: &str) -> Result<Bytes, String> {
        parse_scaled(text, &SIZE_UNITS, Some(1)).map(Bytes).ok_or_else(|| format!("bad size {text:?}: {SIZE_FORM}"))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0B");
        }
        format_scaled(f, self.0, &SIZE_UNITS, "")
    }
}

/// A transfer rate: bytes per second, or no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bandwidth {
    /// Transfers take no time.
    Unlimited,
    /// At most this many bytes per second (never 0).
    BytesPerS(u64),
}

impl Bandwidth {
    /// Parses `500MB/s`, `2GiB/s`, `unlimited`. Zero is rejected: a device
    /// that moves no bytes would never complete anything.
    pub fn parse(text: &str) -> Result<Bandwidth, String> {
        let text = text.trim();
        if text == "unlimited" {
            return Ok(Bandwidth::Unlimited);
        }
        let bad = || format!("bad bandwidth {text:?}: {BANDWIDTH_FORM}");
        let per_s = text.strip_suffix("/s").ok_or_else(bad)?;
        match parse_scaled(per_s, &SIZE_UNITS, None) {
            Some(0) => Err(format!("bad bandwidth {text:?}: must be more than 0 (or `unlimited`)")),
            Some(bytes_per_s) => Ok(Bandwidth::BytesPerS(bytes_per_s)),
            None => Err(bad()),
        }
    }

    /// Nanoseconds to move `len_bytes` at this rate, rounded up.
    pub fn transfer_ns(self, len_bytes: u64) -> u64 {
        match self {
            Bandwidth::Unlimited => 0,
            Bandwidth::BytesPerS(bytes_per_s) => {
                let ns = (u128::from(len_bytes) * 1_000_000_000).div_ceil(u128::from(bytes_per_s));
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        }
    }

    /// Bytes that flow in `ns` nanoseconds at this rate (rounded down).
    pub fn bytes_in(self, ns: u64) -> u64 {
        match self {
            Bandwidth::Unlimited => u64::MAX,
            Bandwidth::BytesPerS(bytes_per_s) => {
                u64::try_from(u128::from(ns) * u128::from(bytes_per_s) / 1_000_000_000).unwrap_or(u64::MAX)
            }
        }
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Bandwidth::Unlimited => f.write_str("unlimited"),
            Bandwidth::BytesPerS(bytes_per_s) => format_scaled(f, bytes_per_s, &SIZE_UNITS, "/s"),
        }
    }
}

/// How many bytes a device holds: a size, or no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capacity {
    /// Writes never run out of space.
    Unlimited,
    /// Writes ending beyond this many bytes fail with ENOSPC.
    Bytes(u64),
}

impl Capacity {
    /// Parses a size or `unlimited`.
    pub fn parse(text: &str) -> Result<Capacity, String> {
        if text.trim() == "unlimited" {
            return Ok(Capacity::Unlimited);
        }
        Bytes::parse(text).map(|b| Capacity::Bytes(b.0)).map_err(|e| format!("{e}, or `unlimited`"))
    }

    /// The limit in bytes, if any.
    pub fn bytes(self) -> Option<u64> {
        match self {
            Capacity::Unlimited => None,
            Capacity::Bytes(bytes) => Some(bytes),
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Capacity::Unlimited => f.write_str("unlimited"),
            Capacity::Bytes(bytes) => Bytes(bytes).fmt(f),
        }
    }
}

/// A probability in `[0, 1]` (unitless; written as a plain number).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct Probability(f64);

impl Probability {
    /// Never.
    pub const NEVER: Probability = Probability(0.0);
    /// Always.
    pub const ALWAYS: Probability = Probability(1.0);

    /// `p` if it lies in `[0, 1]`.
    pub fn new(p: f64) -> Result<Probability, String> {
        if (0.0..=1.0).contains(&p) {
            Ok(Probability(p))
        } else {
            Err(format!("bad probability {p}: use a number from 0 to 1 (0.001 means one op in a thousand)"))
        }
    }

    /// The value in `[0, 1]`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Serialize for Probability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Probability, D::Error> {
        Probability::new(f64::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// Serde glue: each unit type deserializes from a string (or an integer,
/// where a bare integer is meaningful) through its `parse` and serializes as
/// its `Display` string.
macro_rules! unit_serde {
    ($ty:ty, $expecting:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$ty, E> {
                        <$ty>::parse(text).map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, value: u64) -> Result<$ty, E> {
                        <$ty>::parse(&value.to_string()).map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, value: i64) -> Result<$ty, E> {
                        <$ty>::parse(&value.to_string()).map_err(E::custom)
                    }
                    fn visit_f64<E: de::Error>(self, value: f64) -> Result<$ty, E> {
                        <$ty>::parse(&value.to_string()).map_err(E::custom)
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
    };
}

unit_serde!(Nanos, DURATION_FORM);
unit_serde!(Bytes, SIZE_FORM);
unit_serde!(Bandwidth, BANDWIDTH_FORM);
unit_serde!(Capacity, SIZE_FORM);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_exactly_and_print_canonically() {
        assert_eq!(Nanos::parse("80us"), Ok(Nanos(80_000)));
        assert_eq!(Nanos::parse("80µs"), Ok(Nanos(80_000)));
        assert_eq!(Nanos::parse("1.5ms"), Ok(Nanos(1_500_000)));
        assert_eq!(Nanos::parse("0"), Ok(Nanos(0)));
        assert_eq!(Nanos::parse("2 s"), Ok(Nanos(2_000_000_000)));
        assert_eq!(Nanos::parse("1min"), Ok(Nanos(60_000_000_000)));
        for bad in ["80", "1.5", "ms", "0.5ns", "-1ms", "1.2.3ms", "5 parsecs", ""] {
            let err = Nanos::parse(bad).unwrap_err();
            assert!(err.contains("like 80us"), "{bad}: {err}");
        }
        assert_eq!(Nanos(80_000).to_string(), "80us");
        assert_eq!(Nanos(1_500_000).to_string(), "1500us");
        assert_eq!(Nanos(2_000_000).to_string(), "2ms");
        assert_eq!(Nanos(0).to_string(), "0s");
    }

    #[test]
    fn sizes_and_bandwidths() {
        assert_eq!(Bytes::parse("4096"), Ok(Bytes(4096)));
        assert_eq!(Bytes::parse("4KiB"), Ok(Bytes(4096)));
        assert_eq!(Bytes::parse("3.84TB"), Ok(Bytes(3_840_000_000_000)));
        assert!(Bytes::parse("1.1KiB").is_err(), "fractional bytes");
        assert!(Bytes::parse("4kb").is_err(), "unit names are case-sensitive");
        assert_eq!(Bytes(1 << 30).to_string(), "1GiB");
        assert_eq!(Bytes(3_840_000_000_000).to_string(), "3840GB");

        assert_eq!(Bandwidth::parse("500MB/s"), Ok(Bandwidth::BytesPerS(500_000_000)));
        assert_eq!(Bandwidth::parse("unlimited"), Ok(Bandwidth::Unlimited));
        assert!(Bandwidth::parse("500MB").unwrap_err().contains("per second"));
        assert!(Bandwidth::parse("0MB/s").unwrap_err().contains("more than 0"));
        assert_eq!(Bandwidth::BytesPerS(7_000_000_000).to_string(), "7GB/s");
        assert_eq!(Bandwidth::BytesPerS(100_000_000).transfer_ns(100_000_000), 1_000_000_000);
        assert_eq!(Bandwidth::BytesPerS(3).transfer_ns(1), 333_333_334, "rounds up");
        assert_eq!(Bandwidth::Unlimited.transfer_ns(u64::MAX), 0);
        assert_eq!(Bandwidth::BytesPerS(1_000).bytes_in(2_000_000_000), 2_000);

        assert_eq!(Capacity::parse("unlimited"), Ok(Capacity::Unlimited));
        assert_eq!(Capacity::parse("1GiB"), Ok(Capacity::Bytes(1 << 30)));

        assert_eq!(Probability::new(0.25).map(Probability::get), Ok(0.25));
        assert!(Probability::new(1.5).unwrap_err().contains("from 0 to 1"));
        assert!(serde_yaml_ng::from_str::<Probability>("-0.1").is_err());
    }

    #[test]
    fn serde_round_trip() {
        let n: Nanos = serde_yaml_ng::from_str("250us").unwrap();
        assert_eq!(n, Nanos(250_000));
        assert_eq!(serde_yaml_ng::to_string(&n).unwrap().trim(), "250us");
        let zero: Nanos = serde_yaml_ng::from_str("0").unwrap();
        assert_eq!(zero, Nanos(0));
        let err = serde_yaml_ng::from_str::<Nanos>("80").unwrap_err().to_string();
        assert!(err.contains("bad duration"), "{err}");
        let b: Bytes = serde_yaml_ng::from_str("4096").unwrap();
        assert_eq!(b, Bytes(4096));
    }
}
