//! Config error messages that name the key and say what is accepted.
//!
//! serde reports problems in its own words ("invalid type: string \"maybe\",
//! expected a boolean") and `serde_path_to_error` says where. This module
//! joins the two into the messages mlpdrive prints ("config key `io.direct`:
//! expected true or false, got 'maybe'"), so every workload's config struct
//! gets such messages from a plain `#[derive(Deserialize)]`. It also holds the
//! small checks workloads use after deserializing (ranges, non-zero sizes).

use std::fmt::Display;

use crate::error::Error;

/// Whose keys are being deserialized, for the wording of unknown-key errors.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope<'a> {
    /// The common keys (workload, seed, io, …).
    Common,
    /// The keys of the named workload; `common` lists the common keys so a
    /// typo of one of them gets a suggestion too.
    Workload { name: &'a str, common: &'a [&'a str] },
}

/// An error about one config key: "config key `KEY`: MESSAGE".
pub fn key_error(key: &str, message: impl Display) -> Error {
    Error::usage(format!("config key `{key}`: {message}"))
}

/// Checks `min <= value <= max` for an integer key, with the message form
/// "config key `queue_depth`: expected an integer ≥ 1, got 0".
pub fn check_int_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), Error> {
    if value < min {
        Err(key_error(key, format!("expected an integer ≥ {min}, got {value}")))
    } else if value > max {
        Err(key_error(key, format!("expected an integer ≤ {max}, got {value}")))
    } else {
        Ok(())
    }
}

/// Converts a deserialization error into a usage error naming the key path.
pub(crate) fn from_serde(err: serde_path_to_error::Error<serde_yaml_ng::Error>, scope: Scope<'_>) -> Error {
    let path = match err.path().to_string() {
        root if root == "." => String::new(),
        path => path,
    };
    let inner = err.into_inner().to_string();
    Error::usage(describe(&path, &inner, scope))
}

fn describe(path: &str, inner: &str, scope: Scope<'_>) -> String {
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let known = backticked(rest.split_once('`').map_or("", |(_, tail)| tail));
        return unknown_key(path, &known, scope);
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        let full = join_path(path, name);
        return match scope {
            Scope::Workload { name: workload, .. } if path.is_empty() => {
                format!("missing config key `{full}` for workload {workload}")
            }
            _ => format!("missing config key `{full}`"),
        };
    }
    if let Some(rest) = inner.strip_prefix("unknown variant `")
        && let Some((got, tail)) = rest.split_once('`')
    {
        let choices = backticked(tail).join(", ");
        return keyed(path, &format!("expected one of {choices}, got '{got}'"));
    }
    for (prefix, out_of_range) in [("invalid type: ", false), ("invalid value: ", true)] {
        if let Some(rest) = inner.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            let expected = friendly_expected(expected, out_of_range);
            let got = friendly_unexpected(got);
            return keyed(path, &format!("expected {expected}, got {got}"));
        }
    }
    keyed(path, inner)
}

fn keyed(path: &str, message: &str) -> String {
    if path.is_empty() { format!("config: {message}") } else { format!("config key `{path}`: {message}") }
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}.{name}") }
}

/// The message for a key that no struct field takes. `path` already ends
/// with the unknown key (serde_path_to_error records it).
fn unknown_key(path: &str, known: &[String], scope: Scope<'_>) -> String {
    let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
    let mut message = format!("unknown config key `{path}`");
    let mut candidates: Vec<&str> = known.iter().map(String::as_str).collect();
    match scope {
        Scope::Workload { name: workload, common } if parent.is_empty() => {
            message.push_str(&format!(
                " for workload {workload}; known keys: {} (and the common keys: {})",
                known.join(", "),
                common.join(", ")
            ));
            candidates.extend(common);
        }
        _ if parent.is_empty() => {
            message.push_str(&format!("; known keys: {}", known.join(", ")));
        }
        _ => {
            message.push_str(&format!("; known keys under `{parent}`: {}", known.join(", ")));
        }
    }
    if let Some(best) = closest(name, &candidates) {
        message.push_str(&format!("; did you mean `{}`?", join_path(parent, best)));
    }
    message
}

/// The names inside backticks in serde's "expected one of `a`, `b`" lists.
fn backticked(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn friendly_expected(expected: &str, out_of_range: bool) -> String {
    let unsigned_max = match expected {
        "u8" => Some(u64::from(u8::MAX)),
        "u16" => Some(u64::from(u16::MAX)),
        "u32" => Some(u64::from(u32::MAX)),
        "u64" | "usize" => Some(u64::MAX),
        _ => None,
    };
    if let Some(max) = unsigned_max {
        return if out_of_range { format!("an integer from 0 to {max}") } else { "an integer".to_string() };
    }
    match expected {
        "a boolean" => "true or false".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" | "map" => "a mapping (key: value pairs)".to_string(),
        other if other.starts_with("struct ") => "a mapping (key: value pairs)".to_string(),
        other => other.to_string(),
    }
}

fn friendly_unexpected(got: &str) -> String {
    if let Some(text) = got.strip_prefix("string ") {
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        return format!("'{text}'");
    }
    for prefix in ["integer ", "floating point ", "boolean ", "char "] {
        if let Some(value) = got.strip_prefix(prefix) {
            return value.trim_matches('`').to_string();
        }
    }
    match got {
        "unit value" => "nothing (null)".to_string(),
        "sequence" => "a list".to_string(),
        "map" => "a mapping".to_string(),
        other => other.to_string(),
    }
}

/// The candidate closest to `name` by edit distance, if it is close enough
/// to be a likely typo.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= 2 && *d < name.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const WL: Scope<'static> = Scope::Workload { name: "raw", common: &["seed", "duration"] };

    #[test]
    fn rewrites_type_errors() {
        assert_eq!(
            describe("io.direct", "invalid type: string \"maybe\", expected a boolean", WL),
            "config key `io.direct`: expected true or false, got 'maybe'"
        );
        assert_eq!(
            describe("queue_depth", "invalid type: string \"x\", expected u32", WL),
            "config key `queue_depth`: expected an integer, got 'x'"
        );
        assert_eq!(
            describe("jobs", "invalid value: integer `-1`, expected u32", WL),
            "config key `jobs`: expected an integer from 0 to 4294967295, got -1"
        );
        assert_eq!(
            describe("io", "invalid type: integer `5`, expected struct IoKeys", Scope::Common),
            "config key `io`: expected a mapping (key: value pairs), got 5"
        );
        assert_eq!(
            describe("seed", "invalid type: unit value, expected u64", Scope::Common),
            "config key `seed`: expected an integer, got nothing (null)"
        );
        assert_eq!(
            describe("x", "invalid type: string \"a, expected b\", expected f64", WL),
            "config key `x`: expected a number, got 'a, expected b'"
        );
    }

    #[test]
    fn rewrites_unknown_and_missing_keys() {
        assert_eq!(
            describe("blok_size", "unknown field `blok_size`, expected one of `rw`, `block_size`", WL),
            "unknown config key `blok_size` for workload raw; known keys: rw, block_size \
             (and the common keys: seed, duration); did you mean `block_size`?"
        );
        assert_eq!(
            describe("durration", "unknown field `durration`, expected `rw`", WL),
            "unknown config key `durration` for workload raw; known keys: rw \
             (and the common keys: seed, duration); did you mean `duration`?"
        );
        assert_eq!(
            describe("io.direc", "unknown field `direc`, expected `direct` or `engine`", Scope::Common),
            "unknown config key `io.direc`; known keys under `io`: direct, engine; did you mean `io.direct`?"
        );
        assert_eq!(
            describe("zzz", "unknown field `zzz`, there are no fields", Scope::Common),
            "unknown config key `zzz`; known keys: "
        );
        assert_eq!(describe("", "missing field `rw`", WL), "missing config key `rw` for workload raw");
        assert_eq!(describe("io", "missing field `x`", WL), "missing config key `io.x`");
        assert_eq!(
            describe("rw", "unknown variant `foo`, expected `read` or `write`", WL),
            "config key `rw`: expected one of read, write, got 'foo'"
        );
        assert_eq!(describe("a", "something custom", WL), "config key `a`: something custom");
        assert_eq!(describe("", "something custom", WL), "config: something custom");
    }

    #[test]
    fn range_checks_name_the_key() {
        assert!(check_int_range("queue_depth", 1, 1, 4096).is_ok());
        assert!(check_int_range("queue_depth", 4096, 1, 4096).is_ok());
        let e = check_int_range("queue_depth", 0, 1, 4096).unwrap_err().to_string();
        assert_eq!(e, "config key `queue_depth`: expected an integer ≥ 1, got 0");
        let e = check_int_range("jobs", 300, 1, 256).unwrap_err().to_string();
        assert_eq!(e, "config key `jobs`: expected an integer ≤ 256, got 300");
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(closest("blok_size", &["rw", "block_size"]), Some("block_size"));
        assert_eq!(closest("zzzzzz", &["rw", "block_size"]), None);
        assert_eq!(closest("x", &["rw", "y"]), None);
    }
}
