//! The content verdict: every 4 KiB block read back must equal the block
//! last written to the same path and offset earlier in the op log (compared
//! by xxh3-64). Blocks whose content the log does not know (never written in
//! this log, or last touched by an unaligned or failed write) are counted as
//! unverifiable, not as failures.

use super::files::{Files, is_housekeeping};
use super::oplog::{BLOCK_BYTES, OpKind, OpRow};
use super::verdict::{Offenders, Verdict};

#[derive(Default)]
pub struct Content {
    blocks_read: u64,
    blocks_verified: u64,
    blocks_unverifiable: u64,
    mismatches: Offenders,
    /// Successful data reads that carried no block hashes although they
    /// covered whole blocks.
    unhashed_reads: u64,
    /// Writes lost to `mlpdrive shim crash` (crash rows) and their bytes.
    crash_lost_writes: u64,
    crash_lost_bytes: u64,
}

impl Content {
    /// Judges a read against the files as they are before `row` applies.
    pub fn observe(&mut self, row: &OpRow, files: &Files) {
        if row.op == OpKind::Crash {
            self.crash_lost_writes += 1;
            self.crash_lost_bytes += row.length;
            return;
        }
        if row.op != OpKind::Read || !row.ok() || is_housekeeping(&row.path) {
            return;
        }
        let (first, covered) = row.covered_blocks();
        if row.block_hashes.is_empty() {
            if covered > 0 {
                self.unhashed_reads += 1;
            }
            return;
        }
        let file = files.get(&row.path);
        for (i, &got) in row.block_hashes.iter().enumerate() {
            let block = first + i as u64;
            self.blocks_read += 1;
            match file.and_then(|f| f.blocks.get(&block)) {
                None => self.blocks_unverifiable += 1,
                Some(&want) if want == got => self.blocks_verified += 1,
                Some(&want) => self.mismatches.push(|| {
                    format!(
                        "line {}: {} offset {}: read block hash {got:016x}, last written {want:016x}",
                        row.line,
                        row.path,
                        block * BLOCK_BYTES
                    )
                }),
            }
        }
    }

    pub fn verdict(self) -> Verdict {
        let mut v = Verdict::new("content");
        let bad = self.mismatches.total;
        v.number("blocks_read", self.blocks_read)
            .number("blocks_verified", self.blocks_verified)
            .number("blocks_mismatched", bad)
            .number("blocks_unverifiable", self.blocks_unverifiable)
            .number("reads_without_hashes", self.unhashed_reads)
            .number("crash_lost_writes", self.crash_lost_writes)
            .number("crash_lost_bytes", self.crash_lost_bytes);
        let crash_note = if self.crash_lost_writes > 0 {
            format!(
                "; a crash lost {} unsynced writes ({} bytes), and reads after it are compared with what the \
                 file held after the crash",
                self.crash_lost_writes, self.crash_lost_bytes
            )
        } else {
            String::new()
        };
        if self.blocks_read == 0 {
            v.status = super::verdict::Status::NotChecked;
            v.reason = "no hashed 4 KiB blocks were read".into();
            return v;
        }
        if self.blocks_verified + bad == 0 {
            v.status = super::verdict::Status::NotChecked;
            v.reason = format!(
                "none of the {} blocks read was written earlier in this op log, so none could be compared",
                self.blocks_read
            );
            return v;
        }
        v.decide(
            bad > 0,
            if bad > 0 {
                format!("{bad} blocks read back differ from what was last written there{crash_note}")
            } else {
                format!(
                    "{} blocks read back match what was written ({} unverifiable: not written in this log){crash_note}",
                    self.blocks_verified, self.blocks_unverifiable
                )
            },
        );
        self.mismatches.into_verdict(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testutil::row;
    use crate::check::verdict::Status;

    fn replay(rows: &[OpRow]) -> Verdict {
        let mut files = Files::default();
        let mut c = Content::default();
        for r in rows {
            c.observe(r, &files);
            files.apply(r);
        }
        c.verdict()
    }

    #[test]
    fn matching_reads_pass_and_unknown_blocks_are_unverifiable() {
        let v = replay(&[
            row(2, "write", "a", "", 0, 8192, "ok", &[1, 2]),
            row(3, "read", "a", "", 0, 12288, "ok", &[1, 2, 77]),
            row(4, "read", "a", "", 4096, 4096, "ok", &[2]),
        ]);
        assert_eq!(v.status, Status::Pass, "{v:?}");
        assert_eq!(v.numbers["blocks_verified"], 3);
        assert_eq!(v.numbers["blocks_unverifiable"], 1);
    }

    #[test]
    fn a_planted_corrupt_block_fails_naming_path_offset_and_line() {
        let v = replay(&[
            row(2, "write", "a", "", 0, 8192, "ok", &[1, 2]),
            row(3, "read", "a", "", 0, 8192, "ok", &[1, 99]),
        ]);
        assert_eq!(v.status, Status::Fail);
        assert_eq!(v.offending_total, 1);
        assert!(v.offending[0].starts_with("line 3: a offset 4096"), "{v:?}");
    }

    #[test]
    fn the_latest_write_counts_and_renames_carry_hashes() {
        let v = replay(&[
            row(2, "write", "d/a", "", 0, 4096, "ok", &[1]),
            row(3, "write", "d/a", "", 0, 4096, "ok", &[5]),
            row(4, "rename", "d/a", "d/b", 0, 0, "ok", &[]),
            row(5, "read", "d/b", "", 0, 4096, "ok", &[5]),
        ]);
        assert_eq!(v.status, Status::Pass, "{v:?}");
        assert_eq!(v.numbers["blocks_verified"], 1);
    }

    #[test]
    fn reads_after_a_crash_must_show_the_post_crash_content() {
        let rows = |after: u64| {
            vec![
                row(2, "write", "a", "", 0, 8192, "ok", &[1, 2]),
                row(3, "fsync", "a", "", 0, 0, "ok", &[]),
                row(4, "write", "a", "", 4096, 4096, "ok", &[3]),
                row(5, "crash", "a", "", 4096, 4096, "ok", &[2]),
                row(6, "read", "a", "", 0, 8192, "ok", &[1, after]),
            ]
        };
        let v = replay(&rows(2));
        assert_eq!(v.status, Status::Pass, "{v:?}");
        assert_eq!(v.numbers["crash_lost_writes"], 1);
        assert_eq!(v.numbers["crash_lost_bytes"], 4096);
        assert!(v.reason.contains("a crash lost 1 unsynced writes (4096 bytes)"), "{v:?}");
        // Still reading the lost write's data after the crash is a failure.
        let v = replay(&rows(3));
        assert_eq!(v.status, Status::Fail, "{v:?}");
    }

    #[test]
    fn truncate_and_unlink_forget_blocks() {
        let v = replay(&[
            row(2, "write", "a", "", 0, 8192, "ok", &[1, 2]),
            row(3, "truncate", "a", "", 4096, 0, "ok", &[]),
            row(4, "read", "a", "", 4096, 4096, "ok", &[0xdead]),
            row(5, "unlink", "a", "", 0, 0, "ok", &[]),
            row(6, "read", "a", "", 0, 4096, "ok", &[0xbeef]),
        ]);
        assert_eq!(v.status, Status::NotChecked, "{v:?}");
        assert_eq!(v.numbers["blocks_unverifiable"], 2);
    }
}
