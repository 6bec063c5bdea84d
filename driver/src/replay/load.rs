//! Loading a trace for replay: read every row (strictly, or skipping and
//! counting malformed rows), keep the tiers being replayed, intern the keys,
//! and sort the rows by timestamp (stable, so rows with equal timestamps keep
//! their file order).

use std::collections::HashMap;
use std::path::Path;

use crate::error::Error;
use crate::kvtrace::{TraceError, TraceOp, TracePhase, TraceReader, TraceTier};

/// How many malformed rows are quoted in the summary with `--skip-bad-rows`.
pub const BAD_ROWS_QUOTED: usize = 5;

/// Which trace tiers are replayed against the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiers {
    /// Only `Tier-2` (the storage tier) rows.
    Storage,
    /// Every row, whatever its tier.
    All,
}

impl Tiers {
    pub fn as_str(self) -> &'static str {
        match self {
            Tiers::Storage => "storage",
            Tiers::All => "all",
        }
    }
}

/// One row to replay, with its key interned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// 1-based line in the trace file.
    pub line: u64,
    pub timestamp_s: f64,
    pub op: TraceOp,
    pub size_bytes: u64,
    pub tier: TraceTier,
    pub phase: TracePhase,
    /// Index into [`Loaded::keys`].
    pub key: u32,
}

/// A trace ready to plan: rows sorted by time, and what was left out.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rows: Vec<Row>,
    /// Key names, indexed by [`Row::key`].
    pub keys: Vec<String>,
    /// Data rows in the file (good and malformed).
    pub rows_total: u64,
    /// Malformed rows skipped (only with `--skip-bad-rows`).
    pub rows_bad: u64,
    /// The first [`BAD_ROWS_QUOTED`] malformed rows' messages.
    pub bad_rows_first: Vec<String>,
    /// Rows of tiers not replayed, by tier.
    pub rows_skipped_gpu_tier: u64,
    pub rows_skipped_cpu_tier: u64,
}

/// Reads and sorts a trace. A malformed row is a usage error naming the
/// file, line and column, unless `skip_bad_rows`; an unreadable file (or a
/// bad header) always is.
pub fn load(path: &Path, tiers: Tiers, skip_bad_rows: bool) -> Result<Loaded, Error> {
    let reader = TraceReader::open(path).map_err(usage)?;
    load_from(path, reader, tiers, skip_bad_rows)
}

/// [`load`] from an open reader; `path` names the trace in messages.
pub fn load_from(path: &Path, reader: TraceReader, tiers: Tiers, skip_bad_rows: bool) -> Result<Loaded, Error> {
    let mut out = Loaded::default();
    let mut ids: HashMap<String, u32> = HashMap::new();
    for item in reader {
        let (line, row) = match item {
            Ok(r) => r,
            Err(e @ TraceError::Io { .. }) => return Err(usage(e)),
            Err(e) => {
                out.rows_total += 1;
                if !skip_bad_rows {
                    return Err(Error::usage(format!("{e} (use --skip-bad-rows to skip and count such rows)")));
                }
                out.rows_bad += 1;
                if out.bad_rows_first.len() < BAD_ROWS_QUOTED {
                    out.bad_rows_first.push(e.to_string());
                }
                continue;
            }
        };
        out.rows_total += 1;
        if let Err(msg) = check_key(&row.key) {
            let e = format!("line {line}: column `Key`: {msg}, found `{}`", row.key);
            if !skip_bad_rows {
                return Err(Error::usage(format!(
                    "trace {}: {e} (use --skip-bad-rows to skip and count such rows)",
                    path.display()
                )));
            }
            out.rows_bad += 1;
            if out.bad_rows_first.len() < BAD_ROWS_QUOTED {
                out.bad_rows_first.push(e);
            }
            continue;
        }
        match (tiers, row.tier) {
            (Tiers::Storage, TraceTier::Gpu) => out.rows_skipped_gpu_tier += 1,
            (Tiers::Storage, TraceTier::Cpu) => out.rows_skipped_cpu_tier += 1,
            _ => {
                let next = out.keys.len() as u32;
                let key = *ids.entry(row.key.clone()).or_insert_with(|| {
                    out.keys.push(row.key.clone());
                    next
                });
                out.rows.push(Row {
                    line,
                    timestamp_s: row.timestamp_s,
                    op: row.op,
                    size_bytes: row.size_bytes,
                    tier: row.tier,
                    phase: row.phase,
                    key,
                });
            }
        }
    }
    // Stable: equal timestamps keep file order (a request's own rows are in
    // program order in kv-cache.py's traces).
    out.rows.sort_by(|a, b| a.timestamp_s.total_cmp(&b.timestamp_s));
    Ok(out)
}

fn usage(e: TraceError) -> Error {
    Error::usage(e.to_string())
}

/// Object names are `kvcache/<key>.npy` inside the target's work directory:
/// a key must be one plain name component.
fn check_key(key: &str) -> Result<(), &'static str> {
    if key.contains('/') || key.contains('\0') {
        return Err("a cache key must not contain `/` or NUL (it names a file)");
    }
    if key == "." || key == ".." {
        return Err("a cache key must not be `.` or `..`");
    }
    if key.len() + ".npy".len() > 255 {
        return Err("a cache key must be at most 251 bytes (it names a file)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::kvtrace::HEADER;

    fn reader(text: &str) -> TraceReader {
        TraceReader::from_reader(Path::new("t.csv"), Box::new(Cursor::new(text.to_string()))).unwrap()
    }

    #[test]
    fn rows_are_sorted_stably_and_other_tiers_counted() {
        let text = format!(
            "{HEADER}\n3.0,Read,10,Tier-2,a,Decode\n1.0,Write,10,Tier-2,a,Prefill\n1.0,Read,10,Tier-2,a,Decode\n\
             0.5,Write,10,Tier-0,b,Prefill\n2.0,Read,10,Tier-1,b,Decode\n"
        );
        let l = load_from(Path::new("t.csv"), reader(&text), Tiers::Storage, false).unwrap();
        assert_eq!(l.rows_total, 5);
        assert_eq!((l.rows_skipped_gpu_tier, l.rows_skipped_cpu_tier), (1, 1));
        let lines: Vec<u64> = l.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4, 2], "sorted by time, ties in file order");
        assert_eq!(l.keys, ["a"]);
        let all = load_from(Path::new("t.csv"), reader(&text), Tiers::All, false).unwrap();
        assert_eq!(all.rows.len(), 5);
        assert_eq!(all.rows[0].line, 5);
    }

    #[test]
    fn a_bad_row_is_an_error_naming_its_line_or_is_skipped_and_counted() {
        let text = format!(
            "{HEADER}\n1.0,Write,10,Tier-2,a,Prefill\n2.0,Write,ten,Tier-2,a,Prefill\n3.0,Read,10,Tier-2,a/b,Decode\n"
        );
        let e = load_from(Path::new("t.csv"), reader(&text), Tiers::Storage, false).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("Object_Size_Bytes") && e.contains("--skip-bad-rows"), "{e}");
        let l = load_from(Path::new("t.csv"), reader(&text), Tiers::Storage, true).unwrap();
        assert_eq!((l.rows_total, l.rows_bad, l.rows.len()), (3, 2, 1));
        assert!(l.bad_rows_first[0].contains("line 3"), "{:?}", l.bad_rows_first);
        assert!(
            l.bad_rows_first[1].contains("line 4") && l.bad_rows_first[1].contains("Key"),
            "{:?}",
            l.bad_rows_first
        );
    }
}
