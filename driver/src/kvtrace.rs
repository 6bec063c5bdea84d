//! The KV cache I/O trace: kv-cache.py's `--io-trace-log` CSV schema
//! (`Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase`), plain or zstd
//! (`.zst`). The KV workload writes it (trace export and the run journal
//! that `mlpdrive check` reads); `mlpdrive replay` and `check` read it.
//!
//! mlpdrive extension: an `Operation` of `Delete` (Tier-2, Phase `Evict`)
//! records a terminal eviction. kv-cache.py never writes it; mlpdrive writes
//! it only when asked (`trace.deletes=true`).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The header row, in kv-cache.py's column order.
pub const HEADER: &str = "Timestamp,Operation,Object_Size_Bytes,Tier,Key,Phase";

const COLUMNS: [&str; 6] = ["Timestamp", "Operation", "Object_Size_Bytes", "Tier", "Key", "Phase"];

/// zstd level kv-cache.py uses for `.zst` traces.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TraceOp {
    Write,
    Read,
    /// mlpdrive extension: the entry left its last tier (file deleted).
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TraceTier {
    /// `Tier-0`
    Gpu,
    /// `Tier-1`
    Cpu,
    /// `Tier-2`
    Storage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TracePhase {
    Prefill,
    Decode,
    Evict,
}

/// One trace row.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Seconds (kv-cache.py: Unix time with 6 decimals).
    pub timestamp_s: f64,
    pub op: TraceOp,
    pub size_bytes: u64,
    pub tier: TraceTier,
    pub key: String,
    pub phase: TracePhase,
}

impl TraceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceOp::Write => "Write",
            TraceOp::Read => "Read",
            TraceOp::Delete => "Delete",
        }
    }
}

impl TraceTier {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceTier::Gpu => "Tier-0",
            TraceTier::Cpu => "Tier-1",
            TraceTier::Storage => "Tier-2",
        }
    }
}

impl TracePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TracePhase::Prefill => "Prefill",
            TracePhase::Decode => "Decode",
            TracePhase::Evict => "Evict",
        }
    }
}

/// A trace that cannot be read or written, with the file and (for bad rows)
/// the 1-based line and the column.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("trace {path}: line {line}: {msg}")]
    Row { path: PathBuf, line: u64, msg: String },
}

impl TraceError {
    /// Line number of a bad row (None for I/O errors).
    pub fn line(&self) -> Option<u64> {
        match self {
            TraceError::Row { line, .. } => Some(*line),
            TraceError::Io { .. } => None,
        }
    }
}

fn is_zst(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "zst")
}

/// Writes trace rows (plain CSV, or zstd level 3 when the path ends in
/// `.zst`). Rows are written in the order given; the caller orders them.
pub struct TraceWriter {
    path: PathBuf,
    out: Sink,
    rows: u64,
}

enum Sink {
    Plain(BufWriter<File>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w,
        }
    }
}

impl TraceWriter {
    /// Creates (or truncates) the trace file and writes the header.
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let io_err = |source| TraceError::Io { path: path.to_path_buf(), source };
        let file = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io_err)?);
        let out = if is_zst(path) {
            Sink::Zstd(zstd::stream::write::Encoder::new(file, ZSTD_LEVEL).map_err(io_err)?)
        } else {
            Sink::Plain(file)
        };
        let mut w = Self { path: path.to_path_buf(), out, rows: 0 };
        writeln!(w.out.writer(), "{HEADER}").map_err(io_err)?;
        Ok(w)
    }

    /// Appends one row.
    pub fn write(&mut self, row: &TraceRow) -> Result<(), TraceError> {
        writeln!(
            self.out.writer(),
            "{:.6},{},{},{},{},{}",
            row.timestamp_s,
            row.op.as_str(),
            row.size_bytes,
            row.tier.as_str(),
            row.key,
            row.phase.as_str()
        )
        .map_err(|source| TraceError::Io { path: self.path.clone(), source })?;
        self.rows += 1;
        Ok(())
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(self) -> Result<u64, TraceError> {
        let io_err = |source| TraceError::Io { path: self.path.clone(), source };
        let file = match self.out {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w.finish().map_err(io_err)?,
        };
        file.into_inner().map_err(|e| io_err(e.into_error()))?.sync_all().map_err(io_err)?;
        Ok(self.rows)
    }
}

/// Reads trace rows from a plain or `.zst` CSV. The header must name the six
/// columns (in any order; extra columns are ignored). Yields
/// `(line number, row)`.
pub struct TraceReader {
    path: PathBuf,
    lines: Box<dyn BufRead + Send>,
    /// Column index of each of [`COLUMNS`].
    index: [usize; 6],
    line: u64,
    buf: String,
}

impl TraceReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let io_err = |source| TraceError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        let input: Box<dyn Read + Send> = if is_zst(path) {
            Box::new(zstd::stream::read::Decoder::new(file).map_err(io_err)?)
        } else {
            Box::new(file)
        };
        Self::from_reader(path, Box::new(BufReader::with_capacity(1 << 20, input)))
    }

    /// Reads from any buffered source; `path` names it in errors.
    pub fn from_reader(path: &Path, mut lines: Box<dyn BufRead + Send>) -> Result<Self, TraceError> {
        let mut header = String::new();
        lines.read_line(&mut header).map_err(|source| TraceError::Io { path: path.to_path_buf(), source })?;
        let row_err = |msg: String| TraceError::Row { path: path.to_path_buf(), line: 1, msg };
        if header.trim().is_empty() {
            return Err(row_err(format!("empty file: expected the header `{HEADER}`")));
        }
        let names: Vec<&str> = header.trim_end_matches(['\r', '\n']).split(',').map(str::trim).collect();
        let mut index = [0; 6];
        for (i, col) in COLUMNS.iter().enumerate() {
            index[i] = names.iter().position(|n| n == col).ok_or_else(|| {
                row_err(format!("header has no `{col}` column (expected `{HEADER}`, found `{}`)", names.join(",")))
            })?;
        }
        Ok(Self { path: path.to_path_buf(), lines, index, line: 1, buf: String::new() })
    }

    fn parse(&self, text: &str) -> Result<TraceRow, String> {
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        let get = |i: usize| -> Result<&str, String> {
            fields.get(self.index[i]).copied().ok_or_else(|| {
                format!("column {} `{}` is missing ({} fields in the row)", self.index[i] + 1, COLUMNS[i], fields.len())
            })
        };
        let bad = |i: usize, v: &str, want: &str| {
            format!("column {} `{}`: {want}, found `{v}`", self.index[i] + 1, COLUMNS[i])
        };
        let ts = get(0)?;
        let timestamp_s: f64 = ts.parse().map_err(|_| bad(0, ts, "expected a number of seconds"))?;
        if !timestamp_s.is_finite() {
            return Err(bad(0, ts, "expected a finite number of seconds"));
        }
        let op = match get(1)? {
            "Write" => TraceOp::Write,
            "Read" => TraceOp::Read,
            "Delete" => TraceOp::Delete,
            v => return Err(bad(1, v, "expected Write, Read or Delete")),
        };
        let sz = get(2)?;
        let size_bytes = sz.parse().map_err(|_| bad(2, sz, "expected a whole number of bytes"))?;
        let tier = match get(3)? {
            "Tier-0" => TraceTier::Gpu,
            "Tier-1" => TraceTier::Cpu,
            "Tier-2" => TraceTier::Storage,
            v => return Err(bad(3, v, "expected Tier-0, Tier-1 or Tier-2")),
        };
        let key = get(4)?;
        if key.is_empty() {
            return Err(bad(4, key, "expected a cache key"));
        }
        let phase = match get(5)? {
            "Prefill" => TracePhase::Prefill,
            "Decode" => TracePhase::Decode,
            "Evict" => TracePhase::Evict,
            v => return Err(bad(5, v, "expected Prefill, Decode or Evict")),
        };
        Ok(TraceRow { timestamp_s, op, size_bytes, tier, key: key.to_string(), phase })
    }
}

impl Iterator for TraceReader {
    type Item = Result<(u64, TraceRow), TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            match self.lines.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => return Some(Err(TraceError::Io { path: self.path.clone(), source })),
            }
            self.line += 1;
            let text = self.buf.trim_end_matches(['\r', '\n']);
            if text.trim().is_empty() {
                continue;
            }
            let line = self.line;
            return Some(self.parse(text).map(|row| (line, row)).map_err(|msg| TraceError::Row {
                path: self.path.clone(),
                line,
                msg,
            }));
        }
    }
}

impl fmt::Display for TraceRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.6},{},{},{},{},{}",
            self.timestamp_s,
            self.op.as_str(),
            self.size_bytes,
            self.tier.as_str(),
            self.key,
            self.phase.as_str()
        )
    }
}

/// Reads a whole trace, failing at the first bad row.
pub fn read_all(path: &Path) -> Result<Vec<TraceRow>, TraceError> {
    TraceReader::open(path)?.map(|r| r.map(|(_, row)| row)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<TraceRow> {
        vec![
            TraceRow {
                timestamp_s: 1_700_000_000.123456,
                op: TraceOp::Write,
                size_bytes: 131_200,
                tier: TraceTier::Gpu,
                key: "user_3_turn_1".into(),
                phase: TracePhase::Prefill,
            },
            TraceRow {
                timestamp_s: 1_700_000_000.2,
                op: TraceOp::Read,
                size_bytes: 131_200,
                tier: TraceTier::Storage,
                key: "user_3_turn_1".into(),
                phase: TracePhase::Decode,
            },
            TraceRow {
                timestamp_s: 1_700_000_001.0,
                op: TraceOp::Delete,
                size_bytes: 131_200,
                tier: TraceTier::Storage,
                key: "user_3_turn_1".into(),
                phase: TracePhase::Evict,
            },
        ]
    }

    #[test]
    fn rows_round_trip_through_plain_and_zstd_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["t.csv", "t.csv.zst"] {
            let path = dir.path().join(name);
            let mut w = TraceWriter::create(&path).unwrap();
            for r in rows() {
                w.write(&r).unwrap();
            }
            assert_eq!(w.finish().unwrap(), 3);
            let back = read_all(&path).unwrap();
            assert_eq!(back.len(), 3);
            for (a, b) in back.iter().zip(rows()) {
                assert_eq!(
                    (a.op, a.size_bytes, a.tier, &a.key, a.phase),
                    (b.op, b.size_bytes, b.tier, &b.key, b.phase)
                );
                assert!((a.timestamp_s - b.timestamp_s).abs() < 1e-6);
            }
        }
        let plain = std::fs::read_to_string(dir.path().join("t.csv")).unwrap();
        assert!(plain.starts_with(&format!("{HEADER}\n1700000000.123456,Write,131200,Tier-0,user_3_turn_1,Prefill\n")));
    }

    #[test]
    fn columns_are_found_by_header_name() {
        let text = "Key,Phase,Tier,Object_Size_Bytes,Operation,Timestamp\nk1,Decode,Tier-1,10,Read,5.5\n";
        let r = TraceReader::from_reader(Path::new("x.csv"), Box::new(io::Cursor::new(text))).unwrap();
        let got: Vec<_> = r.collect::<Result<_, _>>().unwrap();
        assert_eq!(got[0].0, 2);
        assert_eq!(got[0].1.tier, TraceTier::Cpu);
        assert_eq!(got[0].1.size_bytes, 10);
    }

    #[test]
    fn bad_rows_name_the_line_and_column() {
        let text = format!("{HEADER}\n1.0,Write,10,Tier-2,k,Prefill\n\n2.0,Write,ten,Tier-2,k,Prefill\n");
        let r = TraceReader::from_reader(Path::new("x.csv"), Box::new(io::Cursor::new(text))).unwrap();
        let got: Vec<_> = r.collect();
        assert!(got[0].is_ok());
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.line(), Some(4));
        let msg = e.to_string();
        assert!(msg.contains("line 4") && msg.contains("Object_Size_Bytes") && msg.contains("`ten`"), "{msg}");

        let e = TraceReader::from_reader(Path::new("x.csv"), Box::new(io::Cursor::new("a,b\n"))).err().unwrap();
        assert!(e.to_string().contains("no `Timestamp` column"), "{e}");
        for (row, what) in
            [("1,Copy,1,Tier-2,k,Prefill", "Operation"), ("1,Read,1,Tier-9,k,Prefill", "Tier"), ("1,Read,1", "Tier")]
        {
            let text = format!("{HEADER}\n{row}\n");
            let mut r = TraceReader::from_reader(Path::new("x.csv"), Box::new(io::Cursor::new(text))).unwrap();
            let e = r.next().unwrap().unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("line 2"), "{e}");
        }
    }
}
