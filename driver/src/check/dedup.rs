//! The dedup and compressibility verdicts, over the blocks written.
//!
//! dedup: every fully written 4 KiB block's xxh3-64 (the `block_hashes` of
//! write rows) goes into a set; mlpdrive's data generator puts the object,
//! block index, generation and seed in every block's header, so no two
//! blocks it writes are equal and unique/total must be exactly 1. One
//! repeated hash fails the verdict. (Two distinct blocks share a 64-bit
//! hash with probability about n²/2^65 for n blocks: 3e-6 for 10^7 blocks,
//! 40 GiB.)
//!
//! compressibility: the shim compresses a sample of written blocks with zstd
//! level 3 and logs input and output sizes. Pseudo-random payload does not
//! compress; only the 48-byte header of each 4 KiB block has structure, so
//! mlpdrive data compresses to at least 0.98 of its size even if the headers
//! vanished entirely. The verdict fails below [`MIN_COMPRESSED_FRACTION`]
//! (0.95): data a storage system could shrink by more than 5 % would flatter
//! its throughput, and 0.95 leaves room for compressor framing differences.

use std::collections::HashMap;

use super::files::is_housekeeping;
use super::oplog::{BLOCK_BYTES, OpKind, OpRow};
use super::verdict::{Offenders, Verdict, ratio};

/// Sampled data must compress to at least this fraction of its size.
pub const MIN_COMPRESSED_FRACTION: f64 = 0.95;

#[derive(Default)]
pub struct Dedup {
    /// Hash → (line, path, block offset) of its first write.
    first_seen: HashMap<u64, (u64, String, u64)>,
    blocks_total: u64,
    duplicates: Offenders,
    zstd_in_bytes: u64,
    zstd_out_bytes: u64,
    /// Successful data writes that carried no block hashes although they
    /// covered whole blocks.
    unhashed_writes: u64,
}

impl Dedup {
    pub fn observe(&mut self, row: &OpRow) {
        if row.op != OpKind::Write || !row.ok() || is_housekeeping(&row.path) {
            return;
        }
        self.zstd_in_bytes += row.zstd_in_bytes;
        self.zstd_out_bytes += row.zstd_out_bytes;
        let (first, covered) = row.covered_blocks();
        if row.block_hashes.is_empty() && covered > 0 {
            self.unhashed_writes += 1;
        }
        for (i, &h) in row.block_hashes.iter().enumerate() {
            self.blocks_total += 1;
            let offset = (first + i as u64) * BLOCK_BYTES;
            match self.first_seen.get(&h) {
                Some((line, path, off)) => self.duplicates.push(|| {
                    format!(
                        "line {}: block {h:016x} of {} at offset {offset} repeats line {line}'s block of {path} at offset {off}",
                        row.line, row.path
                    )
                }),
                None => {
                    self.first_seen.insert(h, (row.line, row.path.clone(), offset));
                }
            }
        }
    }

    pub fn verdicts(self) -> [Verdict; 2] {
        let unique = self.first_seen.len() as u64;
        let mut dedup = Verdict::new("dedup");
        dedup
            .number("blocks_written", self.blocks_total)
            .number("blocks_unique", unique)
            .number("unique_ratio", ratio(unique, self.blocks_total))
            .number("writes_without_hashes", self.unhashed_writes);
        if self.blocks_total == 0 {
            dedup =
                Verdict { numbers: dedup.numbers, ..Verdict::not_checked("dedup", "no hashed 4 KiB blocks written") };
        } else {
            let dups = self.duplicates.total;
            dedup.decide(
                dups > 0,
                if dups > 0 {
                    format!("{dups} of {} written blocks repeat an earlier block (must be unique)", self.blocks_total)
                } else {
                    format!("all {} written 4 KiB blocks are unique", self.blocks_total)
                },
            );
            self.duplicates.into_verdict(&mut dedup);
        }

        let mut comp = Verdict::new("compressibility");
        let fraction = ratio(self.zstd_out_bytes, self.zstd_in_bytes);
        comp.number("sampled_bytes", self.zstd_in_bytes)
            .number("compressed_bytes", self.zstd_out_bytes)
            .number("compressed_fraction", fraction)
            .number("min_compressed_fraction", MIN_COMPRESSED_FRACTION);
        if self.zstd_in_bytes == 0 {
            comp.status = super::verdict::Status::NotChecked;
            comp.reason = "the op log has no zstd sample (zstd_in_bytes is 0 on every write)".into();
        } else {
            let bad = fraction < MIN_COMPRESSED_FRACTION;
            comp.decide(
                bad,
                format!(
                    "sampled data compresses to {fraction:.4} of its size with zstd level 3 ({} the {MIN_COMPRESSED_FRACTION} floor)",
                    if bad { "below" } else { "at or above" }
                ),
            );
        }
        [dedup, comp]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testutil::{row, with_zstd};
    use crate::check::verdict::Status;

    #[test]
    fn unique_blocks_pass() {
        let mut d = Dedup::default();
        d.observe(&with_zstd(row(2, "write", "a", "", 0, 8192, "ok", &[1, 2]), 4096, 4105));
        d.observe(&row(3, "write", "b", "", 8192, 4096, "ok", &[3]));
        let [dedup, comp] = d.verdicts();
        assert_eq!(dedup.status, Status::Pass, "{dedup:?}");
        assert_eq!(dedup.numbers["blocks_written"], 3);
        assert_eq!(dedup.numbers["unique_ratio"], 1.0);
        assert_eq!(comp.status, Status::Pass, "{comp:?}");
    }

    #[test]
    fn a_planted_duplicate_fails_and_names_both_lines() {
        let mut d = Dedup::default();
        d.observe(&row(2, "write", "a", "", 0, 8192, "ok", &[1, 2]));
        d.observe(&row(7, "write", "b", "", 4096, 4096, "ok", &[2]));
        let [dedup, _] = d.verdicts();
        assert_eq!(dedup.status, Status::Fail);
        assert_eq!(dedup.offending_total, 1);
        assert!(dedup.offending[0].contains("line 7") && dedup.offending[0].contains("line 2"), "{dedup:?}");
        assert_eq!(dedup.numbers["blocks_unique"], 2);
    }

    #[test]
    fn housekeeping_and_failed_writes_are_skipped() {
        let mut d = Dedup::default();
        d.observe(&row(2, "write", "mlpdrive/.direct-probe", "", 0, 4096, "ok", &[9]));
        d.observe(&row(3, "write", "mlpdrive/.direct-probe", "", 0, 4096, "ok", &[9]));
        d.observe(&row(4, "write", "a", "", 0, 4096, "EIO", &[]));
        let [dedup, comp] = d.verdicts();
        assert_eq!(dedup.status, Status::NotChecked);
        assert_eq!(comp.status, Status::NotChecked);
    }

    #[test]
    fn compressible_data_fails() {
        let mut d = Dedup::default();
        d.observe(&with_zstd(row(2, "write", "a", "", 0, 4096, "ok", &[1]), 4096, 30));
        let [_, comp] = d.verdicts();
        assert_eq!(comp.status, Status::Fail, "{comp:?}");
    }
}
