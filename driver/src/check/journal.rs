//! Reads the KV cache workload's trace (the "journal": what the driver
//! believed it did, per tier), plain CSV or zstd-compressed (`.zst`):
//! header `Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase`, the
//! reference kv-cache.py schema, plus mlpdrive's `Delete` operation.
//!
//! Kept behind [`read`] so the shared trace module can replace it without
//! touching the verdicts.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::input::InputError;

pub const COLUMNS: [&str; 6] = ["Timestamp", "Operation", "Object_Size_Bytes", "Tier", "Key", "Phase"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Write,
    Read,
    Delete,
}

/// Tier-0 (GPU), Tier-1 (CPU), Tier-2 (storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Gpu,
    Cpu,
    Storage,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Gpu, Tier::Cpu, Tier::Storage];

    /// The trace's name for the tier.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Gpu => "Tier-0",
            Tier::Cpu => "Tier-1",
            Tier::Storage => "Tier-2",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JournalRow {
    /// 1-based line in the (decompressed) trace.
    pub line: u64,
    pub timestamp_s: f64,
    pub op: Operation,
    pub size_bytes: u64,
    pub tier: Tier,
    pub key: String,
}

/// Reads a whole trace. Rows keep the file's order (which need not be
/// timestamp order).
pub fn read(path: &Path) -> Result<Vec<JournalRow>, InputError> {
    let file = File::open(path).map_err(|e| InputError::file(path, format!("cannot open the journal: {e}")))?;
    let input: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "zst") {
        let dec = zstd::Decoder::new(file)
            .map_err(|e| InputError::file(path, format!("cannot start zstd decompression: {e}")))?;
        Box::new(dec)
    } else {
        Box::new(BufReader::new(file))
    };
    parse(path, input)
}

fn parse(path: &Path, input: Box<dyn std::io::Read>) -> Result<Vec<JournalRow>, InputError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(input);
    let header = rdr.headers().map_err(|e| csv_error(path, &e))?.clone();
    let by_name: HashMap<&str, usize> = header.iter().enumerate().map(|(i, n)| (n.trim(), i)).collect();
    let mut index = [0usize; 6];
    for (slot, name) in index.iter_mut().zip(COLUMNS) {
        *slot = *by_name.get(name).ok_or_else(|| {
            InputError::line(
                path,
                1,
                format!("the header has no `{name}` column; a journal's header is `{}`", COLUMNS.join(",")),
            )
        })?;
    }
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(path, &e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let cell = |c: usize| rec.get(index[c]).unwrap_or_default().trim();
        let err = |c: usize, msg: String| InputError::cell(path, line, index[c] + 1, COLUMNS[c], msg);
        if rec.len() < COLUMNS.len() {
            return Err(InputError::line(path, line, format!("{} fields, expected {}", rec.len(), COLUMNS.len())));
        }
        let timestamp_s = cell(0)
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| err(0, format!("`{}` is not a number of seconds", cell(0))))?;
        let op = match cell(1) {
            "Write" => Operation::Write,
            "Read" => Operation::Read,
            "Delete" => Operation::Delete,
            s => return Err(err(1, format!("`{s}` is not Write, Read or Delete"))),
        };
        let size_bytes = cell(2).parse::<u64>().map_err(|_| err(2, format!("`{}` is not a byte count", cell(2))))?;
        let tier = match cell(3) {
            "Tier-0" => Tier::Gpu,
            "Tier-1" => Tier::Cpu,
            "Tier-2" => Tier::Storage,
            s => return Err(err(3, format!("`{s}` is not Tier-0, Tier-1 or Tier-2"))),
        };
        let key = cell(4);
        if key.is_empty() {
            return Err(err(4, "empty key".into()));
        }
        match cell(5) {
            "Prefill" | "Decode" | "Evict" => {}
            s => return Err(err(5, format!("`{s}` is not Prefill, Decode or Evict"))),
        }
        rows.push(JournalRow { line, timestamp_s, op, size_bytes, tier, key: key.to_string() });
    }
    Ok(rows)
}

fn csv_error(path: &Path, e: &csv::Error) -> InputError {
    match e.position() {
        Some(p) => InputError::line(path, p.line(), format!("{e}")),
        None => InputError::file(path, format!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_zstd_traces() {
        let dir = tempfile::tempdir().unwrap();
        let text = "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase\n\
                    2.5,Write,100,Tier-2,k1,Prefill\n\
                    1.0,Read,100,Tier-0,k2,Decode\n\
                    3.0,Delete,100,Tier-2,k1,Evict\n";
        let plain = dir.path().join("t.csv");
        std::fs::write(&plain, text).unwrap();
        let zst = dir.path().join("t.csv.zst");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        for p in [plain, zst] {
            let rows = read(&p).unwrap();
            assert_eq!(rows.len(), 3);
            assert_eq!(rows[0].op, Operation::Write);
            assert_eq!(rows[0].tier, Tier::Storage);
            assert_eq!(rows[1].line, 3);
            assert_eq!(rows[2].op, Operation::Delete);
        }
    }

    #[test]
    fn bad_cells_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase\n1,Write,100,Tier-2,k,Prefill\n1,Write,100,Tier-3,k,Prefill\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.ends_with("line 3, column 4 (Tier): `Tier-3` is not Tier-0, Tier-1 or Tier-2"), "{e}");
        std::fs::write(&p, "Timestamp,Operation,Size,Tier,Key,Phase\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("line 1: the header has no `Object_Size_Bytes` column"), "{e}");
    }
}
