//! `--set KEY=VALUE` overrides, applied to the config's YAML mapping before
//! anything is deserialized, so an override is checked exactly like the same
//! key written in the file.
//!
//! KEY is a dotted path into nested mappings (`io.direct`); missing
//! intermediate mappings are created. VALUE is parsed as a YAML value, so
//! `queue_depth=64` is an integer, `io.direct=false` a boolean, `rw=randread`
//! a string, `x=[1,2]` a list, and an empty value is null (which unsets an
//! optional key).

use serde_yaml_ng::{Mapping, Value};

use crate::error::Error;

const SET_FORM: &str = "use --set KEY=VALUE, like --set queue_depth=64 or --set io.direct=false";

/// Applies one `--set` argument to the top-level mapping.
pub(crate) fn apply(doc: &mut Mapping, arg: &str) -> Result<(), Error> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(Error::usage(format!("--set '{arg}': missing '='; {SET_FORM}")));
    };
    let key = key.trim();
    let segments: Vec<&str> = key.split('.').map(str::trim).collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Error::usage(format!("--set '{arg}': the key '{key}' is empty or has an empty part; {SET_FORM}")));
    }
    let value: Value = serde_yaml_ng::from_str(value).map_err(|e| {
        Error::usage(format!(
            "--set '{arg}': the value is not valid YAML ({e}); quote it to pass a string, \
             like --set 'description=\"a: b\"'"
        ))
    })?;
    set_path(doc, &segments, value, arg)
}

fn set_path(map: &mut Mapping, segments: &[&str], value: Value, arg: &str) -> Result<(), Error> {
    let (first, rest) = match segments {
        [] => return Ok(()),
        [last] => {
            map.insert(Value::from(*last), value);
            return Ok(());
        }
        [first, rest @ ..] => (*first, rest),
    };
    let slot = map.entry(Value::from(first)).or_insert_with(|| Value::Mapping(Mapping::new()));
    if slot.is_null() {
        *slot = Value::Mapping(Mapping::new());
    }
    match slot {
        Value::Mapping(inner) => set_path(inner, rest, value, arg),
        other => {
            let key = arg.split('=').next().unwrap_or(arg).trim();
            Err(Error::usage(format!(
                "--set '{arg}': `{first}` is {}, not a mapping, so `{key}` cannot be set inside it",
                describe(other)
            )))
        }
    }
}

/// A short description of a YAML value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{s}'"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Mapping {
        serde_yaml_ng::from_str(text).unwrap()
    }

    fn applied(text: &str, sets: &[&str]) -> Mapping {
        let mut map = doc(text);
        for set in sets {
            apply(&mut map, set).unwrap_or_else(|e| panic!("{set}: {e}"));
        }
        map
    }

    #[test]
    fn values_are_yaml_typed() {
        let map = applied("a: 1", &["queue_depth=64", "verify=false", "rw=randread", "x=[1,2]", "size=4KiB", "f=1.5"]);
        assert_eq!(map["queue_depth"], Value::from(64));
        assert_eq!(map["verify"], Value::from(false));
        assert_eq!(map["rw"], Value::from("randread"));
        assert_eq!(map["x"], Value::from(vec![1, 2]));
        assert_eq!(map["size"], Value::from("4KiB"));
        assert_eq!(map["f"], Value::from(1.5));
        assert_eq!(map["a"], Value::from(1));
    }

    #[test]
    fn later_sets_win_and_empty_means_null() {
        let map = applied("duration: 10s", &["queue_depth=1", "queue_depth=2", "duration="]);
        assert_eq!(map["queue_depth"], Value::from(2));
        assert_eq!(map["duration"], Value::Null);
    }

    #[test]
    fn value_may_contain_equals_and_spaces() {
        let map = applied("a: 1", &["description=a=b c", " key = v "]);
        assert_eq!(map["description"], Value::from("a=b c"));
        assert_eq!(map["key"], Value::from("v"));
    }

    #[test]
    fn dotted_paths_create_and_descend() {
        let map = applied("io: {engine: sync}", &["io.direct=false", "a.b.c=3", "n=~", "n.m=1"]);
        assert_eq!(map["io"]["engine"], Value::from("sync"));
        assert_eq!(map["io"]["direct"], Value::from(false));
        assert_eq!(map["a"]["b"]["c"], Value::from(3));
        assert_eq!(map["n"]["m"], Value::from(1));
    }

    #[test]
    fn malformed_sets_are_usage_errors() {
        let mut map = doc("io: 5\nlist: [1]");
        let err = |map: &mut Mapping, arg: &str| {
            let e = apply(map, arg).expect_err(arg);
            assert!(matches!(e, Error::Usage(_)), "{arg}");
            e.to_string()
        };
        let e = err(&mut map, "queue_depth");
        assert!(e.contains("missing '='") && e.contains("--set KEY=VALUE"), "{e}");
        assert!(err(&mut map, "=5").contains("empty"));
        assert!(err(&mut map, "a..b=5").contains("empty part"));
        assert!(err(&mut map, ".a=5").contains("empty part"));
        assert!(err(&mut map, "a.=5").contains("empty part"));
        let e = err(&mut map, "io.direct=false");
        assert!(e.contains("`io` is 5, not a mapping") && e.contains("`io.direct`"), "{e}");
        let e = err(&mut map, "list.x=1");
        assert!(e.contains("`list` is a list, not a mapping"), "{e}");
        let e = err(&mut map, "x=[1");
        assert!(e.contains("not valid YAML") && e.contains("x=[1"), "{e}");
        let e = err(&mut map, "x={a: ");
        assert!(e.contains("not valid YAML"), "{e}");
    }
}
