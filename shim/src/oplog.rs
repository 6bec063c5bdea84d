//! The op log: one CSV row per FUSE operation, written by a dedicated
//! thread.
//!
//! FUSE threads hand finished rows to the logger through a bounded channel
//! and never touch the file. When the logger falls behind and the channel
//! is full, the sending FUSE thread blocks until there is room: a slower
//! mount is better than a log with holes, because `mlpdrive check` reads
//! the log as the complete record of what reached storage. The format is
//! in docs/shim.md.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::ShimError;

/// The header; `mlpdrive check` parses exactly these columns.
pub const OPLOG_HEADER: [&str; 11] = [
    "start_ns",
    "op",
    "path",
    "path2",
    "offset",
    "length",
    "latency_ns",
    "result",
    "block_hashes",
    "zstd_in_bytes",
    "zstd_out_bytes",
];

/// Rows in flight between the FUSE threads and the logger at most.
const CHANNEL_ROWS: usize = 1 << 16;
/// Block size of the hashes and the compressibility sample.
pub const HASH_BLOCK_BYTES: u64 = 4096;
/// A covered block is compressed for the sample when `xxh3 % 64 == 0`.
/// (One in 16 cost about as much CPU as hashing every block, and on a
/// 2-vCPU machine the daemon's CPU is its write throughput; one in 64 still
/// samples 16 KiB of every MiB written.)
const ZSTD_SAMPLE_MODULUS: u64 = 64;
const ZSTD_LEVEL: i32 = 3;

/// One op-log row (see docs/shim.md for each column).
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub start_ns: u64,
    pub op: &'static str,
    pub path: String,
    pub path2: String,
    pub offset: u64,
    pub length: u64,
    pub latency_ns: u64,
    pub result: String,
    pub block_hashes: String,
    pub zstd_in_bytes: u64,
    pub zstd_out_bytes: u64,
}

/// The hashes and compression sample of a data op's bytes.
#[derive(Debug, Default, Clone)]
pub(crate) struct BlockDigest {
    pub hashes: String,
    pub zstd_in_bytes: u64,
    pub zstd_out_bytes: u64,
}

/// XXH3-64 (seed 0) of every 4096-byte block that `data` (at file offset
/// `offset`) covers fully and that starts at a multiple of 4096, as
/// lowercase hex joined by `;`; with `sample_zstd`, also the summed zstd
/// level-3 input and output sizes of the covered blocks whose hash is a
/// multiple of 64.
pub(crate) fn digest(offset: u64, data: &[u8], sample_zstd: bool) -> BlockDigest {
    let mut out = BlockDigest { hashes: String::with_capacity(data.len() / 4096 * 17), ..BlockDigest::default() };
    let end = offset + data.len() as u64;
    let mut block_start = offset.next_multiple_of(HASH_BLOCK_BYTES);
    while block_start + HASH_BLOCK_BYTES <= end {
        let at = (block_start - offset) as usize;
        let block = &data[at..at + HASH_BLOCK_BYTES as usize];
        // twox_hash picks AVX2 at run time; the tests check it against
        // xxhash_rust's XXH3 (what `mlpdrive check` recomputes with).
        let h = twox_hash::XxHash3_64::oneshot(block);
        if !out.hashes.is_empty() {
            out.hashes.push(';');
        }
        let _ = write!(out.hashes, "{h:016x}");
        if sample_zstd
            && h.is_multiple_of(ZSTD_SAMPLE_MODULUS)
            && let Some(n) = zstd_size(block)
        {
            out.zstd_in_bytes += HASH_BLOCK_BYTES;
            out.zstd_out_bytes += n as u64;
        }
        block_start += HASH_BLOCK_BYTES;
    }
    out
}

thread_local! {
    /// One zstd context and output buffer per thread: creating a level-3
    /// context per block costs more than compressing the block. A reused
    /// context gives the same output as a fresh one (`ZSTD_compress2`
    /// starts a new frame with the same parameters).
    static ZSTD: RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> = const { RefCell::new(None) };
}

/// Compressed size of `block` at zstd level 3 (None if zstd fails, which a
/// bound-sized buffer rules out in practice).
fn zstd_size(block: &[u8]) -> Option<usize> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?;
            *slot = Some((c, Vec::with_capacity(zstd::zstd_safe::compress_bound(HASH_BLOCK_BYTES as usize))));
        }
        let (c, out) = slot.as_mut()?;
        out.clear();
        c.compress_to_buffer(block, out).ok()
    })
}

/// The sending side, cloned into the FUSE threads.
#[derive(Clone)]
pub(crate) struct OpLogSender {
    tx: Sender<Row>,
}

impl OpLogSender {
    /// Queues a row; blocks while the logger is a full channel behind.
    pub(crate) fn send(&self, row: Row) {
        // An error means the logger thread is gone (its error is reported
        // at unmount); nothing more can be written.
        let _ = self.tx.send(row);
    }
}

/// The logger thread; [`OpLog::finish`] flushes and reports write errors.
pub(crate) struct OpLog {
    handle: JoinHandle<Result<u64, String>>,
}

impl OpLog {
    /// Creates (truncates) `path`, writes the header and starts the logger.
    pub(crate) fn start(path: &Path) -> Result<(OpLog, OpLogSender), ShimError> {
        let file = File::create(path)
            .map_err(|e| ShimError::Usage(format!("--oplog {}: cannot create: {e}", path.display())))?;
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_ROWS);
        let display = path.display().to_string();
        let handle = std::thread::Builder::new()
            .name("shim-oplog".into())
            .spawn(move || write_rows(file, rx).map_err(|e| format!("op log {display}: {e}")))
            .map_err(|e| ShimError::Failed(format!("cannot start the op-log thread: {e}")))?;
        Ok((OpLog { handle }, OpLogSender { tx }))
    }

    /// Waits for every queued row to be written (all senders must be
    /// dropped first) and returns the number of rows.
    pub(crate) fn finish(self) -> Result<u64, String> {
        self.handle.join().map_err(|_| "op-log thread panicked".to_string())?
    }
}

fn write_rows(file: File, rx: Receiver<Row>) -> std::io::Result<u64> {
    let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, file));
    w.write_record(OPLOG_HEADER)?;
    let mut rows = 0u64;
    let mut first_error = None;
    for r in rx {
        if first_error.is_some() {
            // Keep draining so senders never block on a dead logger.
            continue;
        }
        let rec = [
            r.start_ns.to_string(),
            r.op.to_string(),
            r.path,
            r.path2,
            r.offset.to_string(),
            r.length.to_string(),
            r.latency_ns.to_string(),
            r.result,
            r.block_hashes,
            r.zstd_in_bytes.to_string(),
            r.zstd_out_bytes.to_string(),
        ];
        match w.write_record(&rec) {
            Ok(()) => rows += 1,
            Err(e) => first_error = Some(std::io::Error::other(e)),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let inner = w.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let mut file = file;
    file.flush()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hashes_only_whole_aligned_blocks() {
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 7 % 251) as u8).collect();
        // At offset 0: three whole blocks, the tail is partial.
        let d = digest(0, &data, false);
        let hashes: Vec<&str> = d.hashes.split(';').collect();
        assert_eq!(hashes.len(), 3);
        assert_eq!(hashes[1], format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&data[4096..8192])));
        // At offset 100: the data covers [100, 12488); whole aligned blocks
        // are [4096, 8192) and [8192, 12288).
        let d = digest(100, &data, false);
        let hashes: Vec<&str> = d.hashes.split(';').collect();
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[0], format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&data[3996..8092])));
        assert!(digest(1, &data[..4096], false).hashes.is_empty());
    }

    #[test]
    fn reused_zstd_context_matches_a_fresh_one() {
        let block: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 13) as u8).collect();
        for _ in 0..3 {
            assert_eq!(zstd_size(&block), Some(zstd::bulk::compress(&block, ZSTD_LEVEL).unwrap().len()));
        }
    }

    #[test]
    fn zstd_sample_takes_blocks_whose_hash_is_a_multiple_of_64() {
        // Many distinct compressible blocks: about 1 in 64 is sampled.
        let mut data = vec![0u8; 4096 * 1024];
        for (i, b) in data.chunks_mut(4096).enumerate() {
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        let d = digest(0, &data, true);
        let sampled = d.hashes.split(';').filter(|h| u64::from_str_radix(h, 16).unwrap() % 64 == 0).count() as u64;
        assert!(sampled > 0);
        assert_eq!(d.zstd_in_bytes, sampled * 4096);
        assert!(d.zstd_out_bytes < d.zstd_in_bytes / 10, "zero-filled blocks compress well");
    }
}
