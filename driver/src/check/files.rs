//! A model of the files behind the mount, rebuilt from the op log: for each
//! live path, the hash of every 4 KiB block whose content is known and the
//! file's size; and the history of every file "version" (from its creation
//! to its unlink, its replacement or the end of the log) with its final size
//! and the bytes written to and read from it.
//!
//! Namespace ops move this state the way the filesystem moves data: a
//! rename carries a file (or a whole directory of files) to the new path,
//! truncate drops blocks past the new size, unlink ends the file.

use std::collections::BTreeMap;

use super::oplog::{BLOCK_BYTES, OpKind, OpRow};

/// What is known about one live file.
#[derive(Debug, Default, Clone)]
pub struct FileState {
    /// Block index → xxh3-64 of the block's content, for blocks whose content
    /// is known (last written by an op that hashed them).
    pub blocks: BTreeMap<u64, u64>,
    pub size_bytes: u64,
    pub written_bytes: u64,
    pub read_bytes: u64,
    /// Line of the op that started this version.
    pub first_line: u64,
}

/// How a file version ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionEnd {
    Unlinked,
    /// Replaced by a create, truncate to 0, or a rename onto its path.
    Replaced,
    /// Still there when the log ends.
    Live,
}

/// One file's life under one path, from creation to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The path it had last.
    pub path: String,
    pub size_bytes: u64,
    pub written_bytes: u64,
    pub read_bytes: u64,
    pub first_line: u64,
    /// Line of the op that ended it (0 for live files).
    pub end_line: u64,
    pub end: VersionEnd,
}

#[derive(Debug, Default)]
pub struct Files {
    live: BTreeMap<String, FileState>,
    ended: Vec<Version>,
}

impl Files {
    pub fn get(&self, path: &str) -> Option<&FileState> {
        self.live.get(path)
    }

    /// Applies one op's effect on the files. Failed ops change nothing,
    /// except a failed write: its range's content is unknown afterwards.
    pub fn apply(&mut self, row: &OpRow) {
        match row.op {
            OpKind::Create if row.ok() => {
                self.end(&row.path, VersionEnd::Replaced, row.line);
                self.live.insert(row.path.clone(), FileState { first_line: row.line, ..FileState::default() });
            }
            OpKind::Write => self.write(row),
            OpKind::Read if row.ok() => self.file(&row.path, row.line).read_bytes += row.length,
            OpKind::Truncate if row.ok() => self.truncate(&row.path, row.offset, row.line),
            OpKind::Unlink if row.ok() => self.end(&row.path, VersionEnd::Unlinked, row.line),
            OpKind::Rename if row.ok() => self.rename(&row.path, &row.path2, row.line),
            OpKind::Crash => self.crash(row),
            _ => {}
        }
    }

    /// Ends the log: every live file becomes a version with end `Live`.
    pub fn finish(mut self) -> Vec<Version> {
        let live = std::mem::take(&mut self.live);
        for (path, f) in live {
            self.ended.push(version(path, &f, 0, VersionEnd::Live));
        }
        self.ended
    }

    fn file(&mut self, path: &str, line: u64) -> &mut FileState {
        self.live.entry(path.to_string()).or_insert_with(|| FileState { first_line: line, ..FileState::default() })
    }

    fn write(&mut self, row: &OpRow) {
        let f = self.file(&row.path, row.line);
        let first_touched = row.offset / BLOCK_BYTES;
        let end = row.offset.saturating_add(row.length);
        let last_touched = end.div_ceil(BLOCK_BYTES);
        // Every block the write touched has new content; only the fully
        // covered ones have a hash to know it by.
        let touched: Vec<u64> = f.blocks.range(first_touched..last_touched).map(|(&b, _)| b).collect();
        for b in touched {
            f.blocks.remove(&b);
        }
        if !row.ok() {
            return;
        }
        let (first, covered) = row.covered_blocks();
        if row.block_hashes.len() as u64 == covered {
            for (i, &h) in row.block_hashes.iter().enumerate() {
                f.blocks.insert(first + i as u64, h);
            }
        }
        f.size_bytes = f.size_bytes.max(end);
        f.written_bytes += row.length;
    }

    /// A crash lost the writes over the row's range: the blocks there hold
    /// what the row's hashes say (a prefix of the range's blocks, as far as
    /// the file still reaches), else nothing known.
    fn crash(&mut self, row: &OpRow) {
        let f = self.file(&row.path, row.line);
        let first_touched = row.offset / BLOCK_BYTES;
        let last_touched = row.offset.saturating_add(row.length).div_ceil(BLOCK_BYTES);
        let touched: Vec<u64> = f.blocks.range(first_touched..last_touched).map(|(&b, _)| b).collect();
        for b in touched {
            f.blocks.remove(&b);
        }
        let (first, _) = row.covered_blocks();
        for (i, &h) in row.block_hashes.iter().enumerate() {
            f.blocks.insert(first + i as u64, h);
        }
    }

    fn truncate(&mut self, path: &str, size_bytes: u64, line: u64) {
        if size_bytes == 0 && self.live.get(path).is_some_and(|f| f.written_bytes > 0 || f.size_bytes > 0) {
            // Truncating to nothing starts the object over (open with O_TRUNC).
            self.end(path, VersionEnd::Replaced, line);
        }
        let f = self.file(path, line);
        let keep = size_bytes / BLOCK_BYTES;
        f.blocks.retain(|&b, _| b < keep);
        f.size_bytes = size_bytes;
    }

    fn end(&mut self, path: &str, end: VersionEnd, line: u64) {
        if let Some(f) = self.live.remove(path) {
            self.ended.push(version(path.to_string(), &f, line, end));
        }
    }

    fn rename(&mut self, from: &str, to: &str, line: u64) {
        if from == to {
            return;
        }
        // The path itself (a file) and everything under it (a directory).
        let prefix = format!("{from}/");
        let moving: Vec<String> = self
            .live
            .range(from.to_string()..)
            .take_while(|(p, _)| p.as_str() == from || p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for old in moving {
            let new = format!("{to}{}", &old[from.len()..]);
            let state = self.live.remove(&old).expect("listed above");
            self.end(&new, VersionEnd::Replaced, line);
            self.live.insert(new, state);
        }
    }
}

fn version(path: String, f: &FileState, end_line: u64, end: VersionEnd) -> Version {
    Version {
        path,
        size_bytes: f.size_bytes,
        written_bytes: f.written_bytes,
        read_bytes: f.read_bytes,
        first_line: f.first_line,
        end_line,
        end,
    }
}

/// True for the driver's housekeeping files (a last path component starting
/// with '.': the work directory marker, the O_DIRECT probe): they are not
/// workload data, so the data verdicts skip them.
pub fn is_housekeeping(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testutil::row;

    #[test]
    fn write_truncate_rename_unlink() {
        let mut fs = Files::default();
        fs.apply(&row(2, "create", "d/a", "", 0, 0, "ok", &[]));
        fs.apply(&row(3, "write", "d/a", "", 0, 12288, "ok", &[1, 2, 3]));
        assert_eq!(fs.get("d/a").unwrap().blocks.len(), 3);
        fs.apply(&row(4, "truncate", "d/a", "", 10000, 0, "ok", &[]));
        let a = fs.get("d/a").unwrap();
        assert_eq!(a.size_bytes, 10000);
        assert_eq!(a.blocks.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        fs.apply(&row(5, "rename", "d", "e", 0, 0, "ok", &[]));
        assert!(fs.get("d/a").is_none());
        assert_eq!(fs.get("e/a").unwrap().blocks[&1], 2);
        fs.apply(&row(6, "unlink", "e/a", "", 0, 0, "ok", &[]));
        let versions = fs.finish();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].path, "e/a");
        assert_eq!(versions[0].size_bytes, 10000);
        assert_eq!(versions[0].written_bytes, 12288);
        assert_eq!(versions[0].end, VersionEnd::Unlinked);
        assert_eq!(versions[0].end_line, 6);
    }

    #[test]
    fn unaligned_and_failed_writes_forget_touched_blocks() {
        let mut fs = Files::default();
        fs.apply(&row(2, "write", "a", "", 0, 8192, "ok", &[1, 2]));
        fs.apply(&row(3, "write", "a", "", 100, 10, "ok", &[]));
        assert_eq!(fs.get("a").unwrap().blocks.keys().copied().collect::<Vec<_>>(), vec![1]);
        fs.apply(&row(4, "write", "a", "", 4096, 4096, "EIO", &[]));
        assert!(fs.get("a").unwrap().blocks.is_empty());
    }

    #[test]
    fn truncate_to_zero_and_create_start_new_versions() {
        let mut fs = Files::default();
        fs.apply(&row(2, "write", "a", "", 0, 4096, "ok", &[1]));
        fs.apply(&row(3, "truncate", "a", "", 0, 0, "ok", &[]));
        fs.apply(&row(4, "write", "a", "", 0, 8192, "ok", &[5, 6]));
        fs.apply(&row(5, "create", "a", "", 0, 0, "ok", &[]));
        let v = fs.finish();
        let sizes: Vec<_> = v.iter().map(|v| (v.size_bytes, v.end)).collect();
        assert_eq!(sizes, vec![(4096, VersionEnd::Replaced), (8192, VersionEnd::Replaced), (0, VersionEnd::Live)]);
    }

    #[test]
    fn housekeeping_files() {
        assert!(is_housekeeping("mlpdrive/.mlpdrive-workdir"));
        assert!(is_housekeeping("mlpdrive/.direct-probe"));
        assert!(!is_housekeeping("mlpdrive/raw/job0.dat"));
    }
}
