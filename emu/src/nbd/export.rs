//! Where an NBD export keeps its bytes: in memory (sparse) or in a file.
//!
//! The device model decides *when* and *whether* an op completes; a
//! [`Store`] only moves bytes, and only for ops the model let succeed.
//!
//! - [`MemStore`] holds the export in 1 MiB chunks allocated on first write;
//!   never-written ranges read as zeros, and a trim that covers a whole chunk
//!   frees it. Memory use is therefore bounded by the export size, and only
//!   what was written is allocated.
//! - [`FileStore`] reads and writes a regular file (or, when the user allows
//!   it, a block device) with `pread`/`pwrite`; a flush is `fdatasync`.
//!   Trim is accepted and ignored (the protocol makes it a hint), so the file
//!   never changes except through writes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::sync::Mutex;

/// Bytes of one memory chunk.
const CHUNK_BYTES: u64 = 1 << 20;
/// Independent locks over the chunk map, so concurrent ops rarely contend.
const SHARDS: usize = 64;

/// The bytes behind an export. Ranges are checked by the caller (they lie
/// within the export).
pub trait Store: Send + Sync {
    /// Fills `buf` from `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset`; with `durable`, returns once it is on stable storage.
    fn write(&self, offset: u64, data: &[u8], durable: bool) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Discards a range (a hint: the contents afterwards are unspecified).
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes a range read as zeros.
    fn write_zeroes(&self, offset: u64, len: u64, durable: bool) -> io::Result<()>;
    /// What the store is, for messages (`mem`, `file /path`).
    fn describe(&self) -> String;
}

/// A sparse in-memory export.
pub struct MemStore {
    shards: Vec<Mutex<HashMap<u64, Box<[u8]>>>>,
}

impl MemStore {
    /// An empty (all-zero) store.
    pub fn new() -> MemStore {
        MemStore { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, chunk: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Box<[u8]>>> {
        // A panic while holding the lock cannot leave a chunk half-valid in a
        // way that matters more than the panic itself; keep serving.
        self.shards[(chunk % SHARDS as u64) as usize].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `f(chunk, offset in chunk, range of the caller's buffer)` for
    /// each chunk that `offset..offset+len` touches.
    fn each_chunk(offset: u64, len: u64, mut f: impl FnMut(u64, usize, std::ops::Range<usize>)) {
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let chunk = pos / CHUNK_BYTES;
            let within = pos % CHUNK_BYTES;
            let n = (CHUNK_BYTES - within).min(len - done);
            f(chunk, within as usize, done as usize..(done + n) as usize);
            done += n;
        }
    }

    /// Chunks allocated so far (for tests and the exit summary).
    pub fn allocated_chunks(&self) -> usize {
        (0..SHARDS as u64).map(|s| self.shard(s).len()).sum()
    }
}

impl Default for MemStore {
    fn default() -> MemStore {
        MemStore::new()
    }
}

impl Store for MemStore {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        MemStore::each_chunk(offset, buf.len() as u64, |chunk, within, range| {
            let out = &mut buf[range];
            match self.shard(chunk).get(&chunk) {
                Some(c) => out.copy_from_slice(&c[within..within + out.len()]),
                None => out.fill(0),
            }
        });
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], _durable: bool) -> io::Result<()> {
        MemStore::each_chunk(offset, data.len() as u64, |chunk, within, range| {
            let src = &data[range];
            let mut shard = self.shard(chunk);
            let c = shard.entry(chunk).or_insert_with(|| vec![0u8; CHUNK_BYTES as usize].into_boxed_slice());
            c[within..within + src.len()].copy_from_slice(src);
        });
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, false)
    }

    fn write_zeroes(&self, offset: u64, len: u64, _durable: bool) -> io::Result<()> {
        MemStore::each_chunk(offset, len, |chunk, within, range| {
            let mut shard = self.shard(chunk);
            if range.len() as u64 == CHUNK_BYTES {
                shard.remove(&chunk);
            } else if let Some(c) = shard.get_mut(&chunk) {
                c[within..within + range.len()].fill(0);
            }
        });
        Ok(())
    }

    fn describe(&self) -> String {
        "mem".to_string()
    }
}

/// An export backed by a file (or a block device).
pub struct FileStore {
    file: File,
    label: String,
}

/// Why a backing file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    /// Opening, creating or sizing failed.
    #[error("backing file {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Not a regular file, or a block device without permission.
    #[error("backing file {path}: {why}")]
    Refused {
        /// The path given.
        path: String,
        /// What is wrong and how to fix it.
        why: String,
    },
}

impl FileStore {
    /// Opens (or creates) the backing at `path` and returns it with its
    /// export size: `size_bytes` if given, else the existing file's size.
    ///
    /// - a missing file is created with `size_bytes` (which is then required);
    /// - an existing regular file smaller than `size_bytes` is extended
    ///   (sparse), never shrunk; a larger one is exported up to `size_bytes`;
    /// - a block device is used only with `allow_raw_device` (its contents
    ///   are overwritten by clients), at its own size or less;
    /// - anything else (directory, character device, FIFO, socket) is refused.
    pub fn open(
        path: &Path,
        size_bytes: Option<u64>,
        allow_raw_device: bool,
    ) -> Result<(FileStore, u64), BackingError> {
        let shown = path.display().to_string();
        let io_err = |source| BackingError::Io { path: shown.clone(), source };
        let refuse = |why: String| BackingError::Refused { path: shown.clone(), why };
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        let Some(meta) = meta else {
            let Some(size) = size_bytes else {
                return Err(refuse("does not exist; pass --size to create it with that size".to_string()));
            };
            let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(io_err)?;
            file.set_len(size).map_err(io_err)?;
            return Ok((FileStore { file, label: format!("file {shown} (created)") }, size));
        };
        let kind = meta.file_type();
        if kind.is_block_device() {
            if !allow_raw_device {
                return Err(refuse(
                    "is a block device; clients would overwrite everything on it. Pass --allow-raw-device if that \
                     is what you want"
                        .to_string(),
                ));
            }
            let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err)?;
            let device_bytes = file.seek(SeekFrom::End(0)).map_err(io_err)?;
            let size = match size_bytes {
                Some(s) if s > device_bytes => {
                    return Err(refuse(format!("--size {s} is larger than the device ({device_bytes} bytes)")));
                }
                Some(s) => s,
                None => device_bytes,
            };
            return Ok((FileStore { file, label: format!("block device {shown}") }, size));
        }
        if !kind.is_file() {
            return Err(refuse(
                "is not a regular file (a directory, character device, FIFO or socket); name a file to create or use"
                    .to_string(),
            ));
        }
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err)?;
        let size = size_bytes.unwrap_or(meta.len());
        if size == 0 {
            return Err(refuse("is empty; pass --size to give the export a size".to_string()));
        }
        if meta.len() < size {
            file.set_len(size).map_err(io_err)?;
        }
        Ok((FileStore { file, label: format!("file {shown}") }, size))
    }
}

impl Store for FileStore {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write(&self, offset: u64, data: &[u8], durable: bool) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        if durable { self.file.sync_data() } else { Ok(()) }
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, durable: bool) -> io::Result<()> {
        let zeros = vec![0u8; CHUNK_BYTES.min(len) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        if durable { self.file.sync_data() } else { Ok(()) }
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_is_sparse_and_reads_zeros_where_nothing_was_written() {
        let s = MemStore::new();
        let mut buf = vec![7u8; 3 << 20];
        s.read(5, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(s.allocated_chunks(), 0);
        // A write across a chunk boundary lands in two chunks.
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8 + 1).collect();
        let at = CHUNK_BYTES - 4096;
        s.write(at, &data, false).unwrap();
        assert_eq!(s.allocated_chunks(), 2);
        let mut back = vec![0u8; 8192];
        s.read(at, &mut back).unwrap();
        assert_eq!(back, data);
        // Zeroing part of a chunk keeps it; zeroing all of one frees it.
        s.write_zeroes(at, 4096, false).unwrap();
        s.read(at, &mut back).unwrap();
        assert!(back[..4096].iter().all(|&b| b == 0) && back[4096..] == data[4096..]);
        s.trim(CHUNK_BYTES, CHUNK_BYTES).unwrap();
        assert_eq!(s.allocated_chunks(), 1);
    }

    #[test]
    fn file_store_creates_extends_and_refuses_non_files() {
        let dir = std::env::temp_dir().join(format!("mlpdrive-emu-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(FileStore::open(&path, None, false), Err(BackingError::Refused { .. })));
        let (s, size) = FileStore::open(&path, Some(1 << 20), false).unwrap();
        assert_eq!(size, 1 << 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        s.write(4096, b"hello", true).unwrap();
        let mut b = [0u8; 5];
        s.read(4096, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        drop(s);
        // Reopened without --size: the file's size; with a larger one: extended.
        assert_eq!(FileStore::open(&path, None, false).unwrap().1, 1 << 20);
        assert_eq!(FileStore::open(&path, Some(2 << 20), false).unwrap().1, 2 << 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 20);
        let e = FileStore::open(&dir, Some(1 << 20), false).err().unwrap().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = FileStore::open(Path::new("/dev/null"), Some(1), true).err().unwrap().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
