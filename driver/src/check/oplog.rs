//! Reads the FUSE shim's op log: a CSV file with a header line,
//! `start_ns,op,path,path2,offset,length,latency_ns,result,block_hashes,zstd_in_bytes,zstd_out_bytes`,
//! one row per operation the shim served (format in docs/check.md).
//!
//! Rows are streamed, so a long log never has to fit in memory. Every
//! malformed cell is an [`InputError`] naming the line and the column. One
//! fault is tolerated: a log whose last line has no line end (the daemon was
//! killed while writing it) loses that line, with a warning.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

use super::input::InputError;

/// The op log's columns, in the order the shim writes them (one definition,
/// the shim's).
pub use mlpdrive_shim::OPLOG_HEADER as COLUMNS;

/// Bytes per block in `block_hashes`.
pub const BLOCK_BYTES: u64 = 4096;

/// The operations the shim logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Create,
    Open,
    Read,
    Write,
    Fsync,
    Flush,
    Release,
    Truncate,
    Unlink,
    Rename,
    Mkdir,
    Rmdir,
    Readdir,
    Getattr,
    Statfs,
    /// `mlpdrive shim crash` lost the unsynced writes over this range; the
    /// hashes are of the blocks the file holds there now.
    Crash,
}

impl OpKind {
    pub const ALL: [OpKind; 16] = [
        OpKind::Create,
        OpKind::Open,
        OpKind::Read,
        OpKind::Write,
        OpKind::Fsync,
        OpKind::Flush,
        OpKind::Release,
        OpKind::Truncate,
        OpKind::Unlink,
        OpKind::Rename,
        OpKind::Mkdir,
        OpKind::Rmdir,
        OpKind::Readdir,
        OpKind::Getattr,
        OpKind::Statfs,
        OpKind::Crash,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Open => "open",
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Fsync => "fsync",
            OpKind::Flush => "flush",
            OpKind::Release => "release",
            OpKind::Truncate => "truncate",
            OpKind::Unlink => "unlink",
            OpKind::Rename => "rename",
            OpKind::Mkdir => "mkdir",
            OpKind::Rmdir => "rmdir",
            OpKind::Readdir => "readdir",
            OpKind::Getattr => "getattr",
            OpKind::Statfs => "statfs",
            OpKind::Crash => "crash",
        }
    }

    fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One operation as the shim logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRow {
    /// 1-based line of the row in the op log.
    pub line: u64,
    /// Start, ns since the mount (monotonic clock).
    pub start_ns: u64,
    pub op: OpKind,
    /// Path relative to the mount root, '/'-joined, without a leading '/'.
    pub path: String,
    /// Rename destination (empty for other ops).
    pub path2: String,
    /// Byte offset; for truncate, the new size.
    pub offset: u64,
    /// Bytes; for reads, the bytes returned.
    pub length: u64,
    pub latency_ns: u64,
    /// `None` for `ok`, else the errno name (e.g. `EIO`).
    pub errno: Option<String>,
    /// XXH3-64 of each 4 KiB block the op fully covers, in offset order
    /// (reads and writes).
    pub block_hashes: Vec<u64>,
    pub zstd_in_bytes: u64,
    pub zstd_out_bytes: u64,
}

impl OpRow {
    pub fn ok(&self) -> bool {
        self.errno.is_none()
    }

    /// Index of the first block fully covered by [offset, offset+length),
    /// and how many blocks are fully covered.
    pub fn covered_blocks(&self) -> (u64, u64) {
        covered_blocks(self.offset, self.length)
    }
}

/// First fully covered block index and the count of fully covered 4 KiB
/// blocks in the byte range [offset, offset+length).
pub fn covered_blocks(offset: u64, length: u64) -> (u64, u64) {
    let first = offset.div_ceil(BLOCK_BYTES);
    let end = offset.saturating_add(length) / BLOCK_BYTES;
    (first, end.saturating_sub(first))
}

/// Streams [`OpRow`]s out of an op log file.
pub struct OpLogReader {
    path: PathBuf,
    rdr: csv::Reader<BufReader<File>>,
    /// Field index of each column in [`COLUMNS`] order.
    index: [usize; 11],
    /// The next record, read ahead to know whether the current one is last.
    pending: Option<ByteRecord>,
    started: bool,
    /// The file does not end with a line end: its last line was cut short.
    cut_short: bool,
    warnings: Vec<String>,
}

impl OpLogReader {
    pub fn open(path: &Path) -> Result<OpLogReader, InputError> {
        let mut file = File::open(path).map_err(|e| InputError::file(path, format!("cannot open the op log: {e}")))?;
        let cut_short =
            ends_without_newline(&mut file).map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
        let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(BufReader::new(file));
        let header = rdr.byte_headers().map_err(|e| csv_error(path, &e))?.clone();
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(InputError::file(path, "empty file: expected a header line naming the op log's columns"));
        }
        let mut by_name = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            by_name.insert(String::from_utf8_lossy(name).trim().to_string(), i);
        }
        let mut index = [0usize; 11];
        for (slot, name) in index.iter_mut().zip(COLUMNS) {
            *slot = *by_name.get(name).ok_or_else(|| {
                InputError::line(
                    path,
                    1,
                    format!("the header has no `{name}` column; an op log's header is `{}`", COLUMNS.join(",")),
                )
            })?;
        }
        let mut warnings = Vec::new();
        let extra: Vec<_> = by_name.keys().filter(|k| !COLUMNS.contains(&k.as_str())).cloned().collect();
        if !extra.is_empty() {
            warnings.push(format!("{}: ignored unknown columns: {}", path.display(), extra.join(", ")));
        }
        Ok(OpLogReader { path: path.to_path_buf(), rdr, index, pending: None, started: false, cut_short, warnings })
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The next row, `None` at the end of the log.
    pub fn next_row(&mut self) -> Result<Option<OpRow>, InputError> {
        if !self.started {
            self.started = true;
            self.pending = self.read_record()?;
        }
        let Some(current) = self.pending.take() else { return Ok(None) };
        self.pending = self.read_record()?;
        if self.pending.is_none() && self.cut_short {
            let line = current.position().map_or(0, |p| p.line());
            self.warnings.push(format!(
                "{} line {line}: the last line has no line end (the shim was stopped while writing it); \
                 it was ignored",
                self.path.display()
            ));
            return Ok(None);
        }
        self.parse(&current).map(Some)
    }

    fn read_record(&mut self) -> Result<Option<ByteRecord>, InputError> {
        let mut rec = ByteRecord::new();
        match self.rdr.read_byte_record(&mut rec) {
            Ok(true) => Ok(Some(rec)),
            Ok(false) => Ok(None),
            Err(e) => Err(csv_error(&self.path, &e)),
        }
    }

    fn parse(&self, rec: &ByteRecord) -> Result<OpRow, InputError> {
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() < COLUMNS.len() {
            return Err(InputError::line(
                &self.path,
                line,
                format!("{} fields, expected {} ({})", rec.len(), COLUMNS.len(), COLUMNS.join(",")),
            ));
        }
        let cell = |c: usize| -> Result<&str, InputError> {
            let i = self.index[c];
            let bytes = rec.get(i).unwrap_or_default();
            std::str::from_utf8(bytes)
                .map_err(|_| InputError::cell(&self.path, line, i + 1, COLUMNS[c], "not valid UTF-8"))
        };
        let err = |c: usize, msg: String| InputError::cell(&self.path, line, self.index[c] + 1, COLUMNS[c], msg);
        let int = |c: usize| -> Result<u64, InputError> {
            let s = cell(c)?;
            s.parse::<u64>().map_err(|_| err(c, format!("`{s}` is not a non-negative integer")))
        };
        let op_text = cell(1)?;
        let op = OpKind::parse(op_text).ok_or_else(|| {
            let names: Vec<_> = OpKind::ALL.iter().map(|k| k.as_str()).collect();
            err(1, format!("unknown op `{op_text}`; expected one of {}", names.join(", ")))
        })?;
        let result = cell(7)?;
        let errno = match result {
            "ok" => None,
            "" => return Err(err(7, "empty; expected `ok` or an errno name such as EIO".into())),
            e if e.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(e.to_string()),
            e => return Err(err(7, format!("`{e}` is neither `ok` nor an errno name such as EIO"))),
        };
        let hashes_text = cell(8)?;
        let mut block_hashes = Vec::new();
        if !hashes_text.is_empty() {
            for h in hashes_text.split(';') {
                if h.len() != 16 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(err(8, format!("`{h}` is not 16 lowercase hex digits (an xxh3-64 block hash)")));
                }
                block_hashes.push(u64::from_str_radix(h, 16).expect("checked hex"));
            }
        }
        let row = OpRow {
            line,
            start_ns: int(0)?,
            op,
            path: cell(2)?.trim_start_matches('/').to_string(),
            path2: cell(3)?.trim_start_matches('/').to_string(),
            offset: int(4)?,
            length: int(5)?,
            latency_ns: int(6)?,
            errno,
            block_hashes,
            zstd_in_bytes: int(9)?,
            zstd_out_bytes: int(10)?,
        };
        if row.path.is_empty() && !matches!(op, OpKind::Statfs | OpKind::Getattr | OpKind::Readdir) {
            return Err(err(2, format!("empty path for a {} op", op.as_str())));
        }
        if op == OpKind::Rename && row.ok() && row.path2.is_empty() {
            return Err(err(3, "a rename needs its destination in path2".into()));
        }
        if !row.block_hashes.is_empty() {
            if !matches!(op, OpKind::Read | OpKind::Write | OpKind::Crash) {
                return Err(err(
                    8,
                    format!("block hashes on a {} op (only reads, writes and crashes carry them)", op.as_str()),
                ));
            }
            let (_, covered) = row.covered_blocks();
            // A crash row hashes what the file still holds of its range: a
            // prefix of the range's blocks when the file shrank back.
            let fits = if op == OpKind::Crash {
                row.block_hashes.len() as u64 <= covered
            } else {
                row.block_hashes.len() as u64 == covered
            };
            if !fits {
                return Err(err(
                    8,
                    format!(
                        "{} hashes, but offset {} length {} fully covers {covered} 4 KiB block(s)",
                        row.block_hashes.len(),
                        row.offset,
                        row.length
                    ),
                ));
            }
        }
        if row.zstd_out_bytes > 0 && row.zstd_in_bytes == 0 {
            return Err(err(10, "compressed bytes without input bytes (zstd_in_bytes is 0)".into()));
        }
        Ok(row)
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> InputError {
    match e.position() {
        Some(p) => InputError::line(path, p.line(), format!("{e}")),
        None => InputError::file(path, format!("{e}")),
    }
}

/// True if the file is not empty and its last byte is not a line end.
fn ends_without_newline(file: &mut File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "start_ns,op,path,path2,offset,length,latency_ns,result,block_hashes,zstd_in_bytes,zstd_out_bytes\n";

    fn read_all(text: &str) -> Result<(Vec<OpRow>, Vec<String>), InputError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("op.csv");
        std::fs::write(&p, text).unwrap();
        let mut r = OpLogReader::open(&p)?;
        let mut rows = Vec::new();
        while let Some(row) = r.next_row()? {
            rows.push(row);
        }
        Ok((rows, r.warnings().to_vec()))
    }

    #[test]
    fn parses_rows() {
        let text = format!(
            "{HEADER}10,create,/mlpdrive/a.npy,,0,0,500,ok,,0,0\n\
             20,write,mlpdrive/a.npy,,0,8192,900,ok,00000000000000ff;0123456789abcdef,4096,4107\n\
             30,rename,mlpdrive/a.npy,mlpdrive/b.npy,0,0,100,ok,,0,0\n\
             40,read,mlpdrive/b.npy,,4096,100,50,EIO,,0,0\n"
        );
        let (rows, warnings) = read_all(&text).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].path, "mlpdrive/a.npy");
        assert_eq!(rows[1].line, 3);
        assert_eq!(rows[1].block_hashes, vec![0xff, 0x0123_4567_89ab_cdef]);
        assert_eq!((rows[1].zstd_in_bytes, rows[1].zstd_out_bytes), (4096, 4107));
        assert_eq!(rows[2].path2, "mlpdrive/b.npy");
        assert_eq!(rows[3].errno.as_deref(), Some("EIO"));
    }

    #[test]
    fn a_cut_last_line_is_dropped_with_a_warning() {
        let text = format!("{HEADER}10,create,a,,0,0,500,ok,,0,0\n20,write,a,,0,40");
        let (rows, warnings) = read_all(&text).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(warnings[0].contains("line 3: the last line has no line end"), "{warnings:?}");
        // The same cut in the middle of the log is an error.
        let text = format!("{HEADER}20,write,a,,0,40\n10,create,a,,0,0,500,ok,,0,0\n");
        let e = read_all(&text).unwrap_err().to_string();
        assert!(e.ends_with("line 2: 6 fields, expected 11 (start_ns,op,path,path2,offset,length,latency_ns,result,block_hashes,zstd_in_bytes,zstd_out_bytes)"), "{e}");
    }

    #[test]
    fn malformed_cells_name_line_and_column() {
        let cases = [
            ("10,write,a,,0,4096,x9,ok,,0,0", "line 2, column 7 (latency_ns): `x9` is not a non-negative integer"),
            ("10,chmod,a,,0,0,1,ok,,0,0", "line 2, column 2 (op): unknown op `chmod`"),
            (
                "10,write,a,,0,4096,1,ok,00ff,0,0",
                "line 2, column 9 (block_hashes): `00ff` is not 16 lowercase hex digits",
            ),
            (
                "10,write,a,,0,8192,1,ok,00000000000000ff,0,0",
                "line 2, column 9 (block_hashes): 1 hashes, but offset 0 length 8192 fully covers 2",
            ),
            ("10,write,a,,0,4096,1,,,0,0", "line 2, column 8 (result): empty"),
            ("10,rename,a,,0,0,1,ok,,0,0", "line 2, column 4 (path2): a rename needs its destination"),
        ];
        for (line, want) in cases {
            let e = read_all(&format!("{HEADER}{line}\n")).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
        let e = read_all("start_ns,op\n").unwrap_err().to_string();
        assert!(e.contains("line 1: the header has no `path` column"), "{e}");
        let e = read_all("").unwrap_err().to_string();
        assert!(e.contains("empty file"), "{e}");
    }

    #[test]
    fn covered_blocks_counts_whole_aligned_blocks() {
        assert_eq!(covered_blocks(0, 4096), (0, 1));
        assert_eq!(covered_blocks(0, 4095), (0, 0));
        assert_eq!(covered_blocks(100, 8192), (1, 1));
        assert_eq!(covered_blocks(8192, 1 << 20), (2, 256));
    }
}
