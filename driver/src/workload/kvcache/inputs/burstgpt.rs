//! BurstGPT request logs (`--use-burst-trace --burst-trace-path P`, spec
//! §7.1): CSV with the header `Timestamp,Model,Request tokens,Response
//! tokens,Total tokens,Log Type`.
//!
//! - `P` is a file, a directory (every `*.csv` in it, sorted by name), or a
//!   glob whose last component has `*` wildcards (`data/BurstGPT_*.csv`).
//! - Used columns: `Timestamp` (seconds, float; empty means 0), `Request
//!   tokens` → context tokens, `Response tokens` → generated tokens, `Total
//!   tokens`. `Model` and `Log Type` are kept as text and otherwise ignored.
//! - The reference skips rows it cannot parse silently. Here a malformed row
//!   is an error naming the file, line and column, unless the caller asks to
//!   skip them, in which case they are counted and the first is quoted.
//! - A row with 0 response tokens is kept (`generate_tokens` 0); the
//!   workload still gives it one decode batch, as the reference does.
//!
//! [`schedule`] expands the requests into passes (`--replay-cycles`) with
//! their due times (`--trace-speedup`).

use std::path::{Path, PathBuf};

use super::{Cycles, InputError};

/// The header, exactly as BurstGPT writes it (names must match).
pub const COLUMNS: [&str; 6] = ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"];

/// One request row.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstRequest {
    /// Seconds, as logged (relative to the log's start in BurstGPT).
    pub timestamp_s: f64,
    pub model: String,
    /// `Request tokens`.
    pub context_tokens: u64,
    /// `Response tokens` (may be 0).
    pub generate_tokens: u64,
    /// `Total tokens` (informational).
    pub total_tokens: u64,
    pub log_type: String,
}

/// The requests of every input file, in file order then row order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BurstTrace {
    pub requests: Vec<BurstRequest>,
    pub files: Vec<PathBuf>,
    /// Malformed rows skipped (only when asked to skip them).
    pub rows_skipped: u64,
    pub first_skipped: Option<String>,
}

/// Resolves `P` to the files it names: a file; a directory's `*.csv`
/// sorted; or a glob (wildcards `*` in the last path component only).
pub fn resolve(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let err = |msg: String| InputError::new(path, "path", msg);
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let (dir, pattern) = if path.is_dir() {
        (path.to_path_buf(), "*.csv".to_string())
    } else {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.contains('*') {
            return Err(err("no such file or directory".into()));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if dir.to_string_lossy().contains('*') {
            return Err(err("wildcards are supported in the file name only".into()));
        }
        (dir, name)
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| err(format!("cannot list {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| wildcard_match(&pattern, &n.to_string_lossy())))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err(format!("no file matches {pattern} in {}", dir.display())));
    }
    Ok(files)
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Reads every file `path` names (see [`resolve`]).
pub fn load(path: &Path, skip_bad_rows: bool) -> Result<BurstTrace, InputError> {
    let mut trace = BurstTrace::default();
    for f in resolve(path)? {
        let text = std::fs::read(&f).map_err(|e| InputError::new(&f, "file", format!("cannot read: {e}")))?;
        parse_into(&f, &text, skip_bad_rows, &mut trace)?;
        trace.files.push(f);
    }
    Ok(trace)
}

/// Parses one CSV file's bytes (`path` names it in errors).
pub fn parse(path: &Path, text: &[u8], skip_bad_rows: bool) -> Result<BurstTrace, InputError> {
    let mut trace = BurstTrace::default();
    parse_into(path, text, skip_bad_rows, &mut trace)?;
    Ok(trace)
}

fn parse_into(path: &Path, text: &[u8], skip_bad_rows: bool, out: &mut BurstTrace) -> Result<(), InputError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text);
    let headers = rdr.headers().map_err(|e| InputError::new(path, "line 1", format!("cannot read the header: {e}")))?;
    let found: Vec<&str> = headers.iter().collect();
    if found != COLUMNS {
        return Err(InputError::new(
            path,
            "line 1",
            format!("the header must be exactly `{}`, found `{}`", COLUMNS.join(","), found.join(",")),
        ));
    }
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(InputError::new(path, format!("line {line}"), format!("malformed CSV: {e}")));
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        match parse_row(&record) {
            Ok(r) => out.requests.push(r),
            Err((col, msg)) => {
                let e = InputError::new(path, format!("line {line}, column `{}`", COLUMNS[col]), msg);
                if !skip_bad_rows {
                    return Err(e);
                }
                out.rows_skipped += 1;
                out.first_skipped.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn parse_row(r: &csv::StringRecord) -> Result<BurstRequest, (usize, String)> {
    if r.len() != COLUMNS.len() {
        return Err((r.len().min(COLUMNS.len() - 1), format!("expected {} fields, found {}", COLUMNS.len(), r.len())));
    }
    let field = |i: usize| r.get(i).unwrap_or("").trim();
    let ts = field(0);
    let timestamp_s = if ts.is_empty() {
        0.0
    } else {
        match ts.parse::<f64>() {
            Ok(t) if t.is_finite() && t >= 0.0 => t,
            _ => return Err((0, format!("expected seconds (a number ≥ 0), found `{ts}`"))),
        }
    };
    let tokens = |i: usize| -> Result<u64, (usize, String)> {
        let v = field(i);
        // BurstGPT writes whole numbers; some exports write `12.0`.
        match v.parse::<u64>() {
            Ok(n) => Ok(n),
            Err(_) => match v.parse::<f64>() {
                Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
                _ => Err((i, format!("expected a whole number of tokens, found `{v}`"))),
            },
        }
    };
    Ok(BurstRequest {
        timestamp_s,
        model: field(1).to_string(),
        context_tokens: tokens(2)?,
        generate_tokens: tokens(3)?,
        total_tokens: tokens(4)?,
        log_type: field(5).to_string(),
    })
}

/// One request of a pass, with when it is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    /// 0-based pass over the trace.
    pub pass: u64,
    /// Index of the row in [`BurstTrace::requests`].
    pub row: usize,
    /// Running request number over all passes (0-based).
    pub seq: u64,
    /// Seconds after the start of the run at which the request is enqueued.
    pub due_s: f64,
}

/// The requests of `cycles` passes over `trace`, in order, with due times:
/// within a pass, each request is due `max(0, ts − previous ts) / speedup`
/// after the one before (the reference's sleep); the first request of a pass
/// is due when the previous pass's last one was. `speedup` 0 means no
/// pacing (every request due at 0). A finite `cycles` yields exactly
/// `cycles × rows` requests; an empty trace yields none.
pub fn schedule(trace: &BurstTrace, cycles: Cycles, speedup: f64) -> impl Iterator<Item = Scheduled> + '_ {
    let n = trace.requests.len();
    let mut seq = 0u64;
    let mut due_s = 0.0f64;
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let pass = seq / n as u64;
        if !cycles.allows(pass) {
            return None;
        }
        let row = (seq % n as u64) as usize;
        if row > 0 && speedup > 0.0 {
            let gap = trace.requests[row].timestamp_s - trace.requests[row - 1].timestamp_s;
            due_s += gap.max(0.0) / speedup;
        }
        let s = Scheduled { pass, row, seq, due_s };
        seq += 1;
        Some(s)
    })
}

/// The reference's user id of a BurstGPT row: `trace_user_{row % 1000}`.
pub fn user_id(row: usize) -> String {
    format!("trace_user_{}", row % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n";

    fn parse_str(text: &str, skip: bool) -> Result<BurstTrace, InputError> {
        parse(Path::new("b.csv"), text.as_bytes(), skip)
    }

    #[test]
    fn rows_parse_into_requests() {
        let t = parse_str(
            &format!(
                "{HEADER}5,ChatGPT,472,18,490,Conversation log\n,GPT-4,12000,0,12000,API log\n7.5,ChatGPT,10,2.0,12,x\n"
            ),
            false,
        )
        .unwrap();
        assert_eq!(t.requests.len(), 3);
        let r = &t.requests[0];
        assert_eq!((r.timestamp_s, r.context_tokens, r.generate_tokens, r.total_tokens), (5.0, 472, 18, 490));
        assert_eq!((r.model.as_str(), r.log_type.as_str()), ("ChatGPT", "Conversation log"));
        assert_eq!(t.requests[1].timestamp_s, 0.0, "an empty timestamp is 0");
        assert_eq!(t.requests[1].generate_tokens, 0, "0 response tokens are kept");
        assert_eq!(t.requests[2].generate_tokens, 2);
    }

    #[test]
    fn malformed_input_names_the_line_and_column() {
        let e = parse_str("Timestamp,Model,Request,Response tokens,Total tokens,Log Type\n", false).unwrap_err();
        assert!(e.to_string().contains("line 1") && e.to_string().contains("header must be exactly"), "{e}");
        let text = format!("{HEADER}1,m,10,2,12,x\n2,m,ten,2,12,x\n3,m,10,2\n-4,m,1,1,2,x\n");
        let e = parse_str(&text, false).unwrap_err().to_string();
        assert!(e.starts_with("b.csv: line 3, column `Request tokens`") && e.contains("`ten`"), "{e}");
        let t = parse_str(&text, true).unwrap();
        assert_eq!((t.requests.len(), t.rows_skipped), (1, 3));
        assert!(t.first_skipped.unwrap().contains("line 3"));
        let e = parse_str(&format!("{HEADER}-4,m,1,1,2,x\n"), false).unwrap_err().to_string();
        assert!(e.contains("line 2, column `Timestamp`"), "{e}");
    }

    #[test]
    fn k_replay_cycles_yield_k_complete_passes_even_unpaced() {
        let t = parse_str(&format!("{HEADER}10,m,1,1,2,x\n12,m,1,1,2,x\n11,m,1,1,2,x\n"), false).unwrap();
        // The reference stopped once the K-th pass was enqueued; with
        // speedup 0 that was before anything completed. Here the schedule
        // holds every request of every pass.
        let s: Vec<_> = schedule(&t, Cycles::Exactly(3), 0.0).collect();
        assert_eq!(s.len(), 9);
        assert_eq!(s.iter().filter(|x| x.pass == 2).count(), 3);
        assert!(s.iter().all(|x| x.due_s == 0.0));
        assert_eq!(s.last().unwrap().seq, 8);
        // Paced at 2×: gaps 2 s and (−1 → 0) s within a pass, none between
        // passes.
        let d: Vec<f64> = schedule(&t, Cycles::Exactly(2), 2.0).map(|x| x.due_s).collect();
        assert_eq!(d, [0.0, 1.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(schedule(&t, Cycles::Forever, 0.0).take(1000).count(), 1000);
        assert_eq!(schedule(&BurstTrace::default(), Cycles::Forever, 1.0).count(), 0);
        assert_eq!(user_id(1234), "trace_user_234");
    }

    #[test]
    fn a_directory_or_glob_names_its_csv_files_sorted() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b_2.csv", "b_1.csv", "notes.txt"] {
            std::fs::write(d.path().join(n), format!("{HEADER}1,m,1,1,2,x\n")).unwrap();
        }
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
        };
        assert_eq!(names(resolve(d.path()).unwrap()), ["b_1.csv", "b_2.csv"]);
        assert_eq!(names(resolve(&d.path().join("b_*.csv")).unwrap()), ["b_1.csv", "b_2.csv"]);
        assert_eq!(names(resolve(&d.path().join("b_2.csv")).unwrap()), ["b_2.csv"]);
        assert!(resolve(&d.path().join("x_*.csv")).unwrap_err().to_string().contains("no file matches"));
        assert!(resolve(&d.path().join("missing.csv")).is_err());
        let t = load(d.path(), false).unwrap();
        assert_eq!((t.requests.len(), t.files.len()), (2, 2));
        assert!(wildcard_match("a*b*c", "aXbYc") && !wildcard_match("a*b", "ab_") && wildcard_match("*", "x"));
    }
}
