//! "Lose unsynced writes on crash" (`--crash-tracking`, then
//! `mlpdrive shim crash MOUNT`).
//!
//! Every write through the mount is recorded, per file, in the device
//! model's [`UnsyncedWrites`] together with an undo record: the bytes the
//! write replaced (read from the backing file just before it, under the
//! file's lock) and the file's size then. A completed `fsync` of the file
//! (the reply sent) makes the writes that had arrived before it durable and
//! drops their undo records. A crash draws, per unsynced write, whether it
//! is lost (`unsynced_write_loss_probability`, 1 by default) and puts the
//! file back to what a device would hold: each byte shows the latest kept
//! write that covered it, else its content at the last sync point; a file
//! that lost an extending write shrinks back. Walking the writes newest
//! first, a lost write's undo bytes are put back wherever no newer kept
//! write covers them: the last undo applied at a byte is that of the oldest
//! lost write newer than its newest kept one, which holds exactly that kept
//! write's data (or the synced content).
//!
//! Metadata (create, rename, unlink, truncate) is not lost: it is durable
//! at once, as on a journalling file system. A truncate shortens the undo
//! records. Memory: the replaced bytes of every unsynced overwrite (new
//! data past the end of a file costs nothing to undo).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mlpdrive_emu::{Extent, FaultPlan, FlushTicket, Prng, UnsyncedWrites};

/// What one write replaced: `old` held bytes `[offset, offset + old.len())`
/// (the part inside the file then), and the file was `old_size` bytes long.
pub(crate) struct Undo {
    old: Vec<u8>,
    old_size: u64,
}

/// One file's unsynced writes.
pub(crate) struct FileLog {
    writes: UnsyncedWrites<Undo>,
    /// The file's size at its last sync point (as changed by truncates).
    base_size: u64,
    /// A plain (not O_DIRECT) read-write descriptor of the backing file.
    file: File,
}

/// The writes of one file at a crash that were lost, after the file was
/// put back.
pub(crate) struct CrashedFile {
    pub ino: u64,
    /// Lost extents (clipped to what the file still has room for).
    pub lost: Vec<Extent>,
    /// The size after the crash, if it changed.
    pub new_size: Option<u64>,
    /// Descriptor to read the post-crash content from.
    pub file: File,
}

/// What a crash did, for the caller and the `shim crash` command.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrashCounts {
    /// Files that lost at least one write.
    pub files: u64,
    /// Unsynced writes lost.
    pub writes_lost: u64,
    /// Bytes those writes covered.
    pub bytes_lost: u64,
    /// Unsynced writes the crash kept (loss probability below 1).
    pub writes_kept: u64,
}

pub(crate) struct CrashLog {
    plan: FaultPlan,
    rng: Prng,
    files: Mutex<HashMap<u64, Arc<Mutex<FileLog>>>>,
    undo_bytes: AtomicU64,
}

fn intervals_minus(start: u64, end: u64, taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(a, b) in taken {
        if b <= at {
            continue;
        }
        if a >= end {
            break;
        }
        if a > at {
            out.push((at, a.min(end)));
        }
        at = at.max(b);
        if at >= end {
            break;
        }
    }
    if at < end {
        out.push((at, end));
    }
    out
}

fn add_interval(taken: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    taken.push((start, end));
    taken.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(taken.len());
    for &(a, b) in taken.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *taken = merged;
}

impl CrashLog {
    pub(crate) fn new(plan: &FaultPlan, seed: u64) -> CrashLog {
        CrashLog {
            plan: plan.clone(),
            rng: Prng::new(seed).fork("shim.crash"),
            files: Mutex::new(HashMap::new()),
            undo_bytes: AtomicU64::new(0),
        }
    }

    /// Bytes held to undo unsynced writes.
    pub(crate) fn undo_bytes(&self) -> u64 {
        self.undo_bytes.load(Ordering::Relaxed)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<u64, Arc<Mutex<FileLog>>>> {
        self.files.lock().expect("crash log poisoned")
    }

    /// The log of inode `ino`, opening its backing file with `open` the
    /// first time.
    pub(crate) fn file(&self, ino: u64, open: impl FnOnce() -> io::Result<File>) -> io::Result<Arc<Mutex<FileLog>>> {
        let mut map = self.map();
        if let Some(f) = map.get(&ino) {
            return Ok(f.clone());
        }
        let file = open()?;
        let rng = self.rng.fork(&format!("ino{ino}"));
        let log = Arc::new(Mutex::new(FileLog { writes: UnsyncedWrites::new(&self.plan, &rng), base_size: 0, file }));
        map.insert(ino, log.clone());
        Ok(log)
    }

    /// The log of `ino` if it has one.
    pub(crate) fn existing(&self, ino: u64) -> Option<Arc<Mutex<FileLog>>> {
        self.map().get(&ino).cloned()
    }

    /// Records a write of `len` bytes at `offset` that is about to be done
    /// (call with the file's log locked, and do the write before unlocking).
    pub(crate) fn before_write(&self, log: &mut FileLog, offset: u64, len: u64) -> io::Result<()> {
        let size = log.file.metadata()?.len();
        if log.writes.is_empty() {
            log.base_size = size;
        }
        let old_len = size.saturating_sub(offset).min(len) as usize;
        let mut old = vec![0u8; old_len];
        log.file.read_exact_at(&mut old, offset)?;
        self.undo_bytes.fetch_add(old_len as u64, Ordering::Relaxed);
        log.writes.record(offset, len, Undo { old, old_size: size });
        Ok(())
    }

    /// The write recorded last failed: forget it.
    pub(crate) fn write_failed(&self, log: &mut FileLog) {
        if let Some(u) = log.writes.unrecord_last() {
            self.undo_bytes.fetch_sub(u.old.len() as u64, Ordering::Relaxed);
        }
    }

    /// An fsync of the file arrived.
    pub(crate) fn fsync_started(log: &FileLog) -> FlushTicket {
        log.writes.flush_started()
    }

    /// That fsync completed (its reply was sent).
    pub(crate) fn fsync_completed(&self, log: &mut FileLog, ticket: FlushTicket) {
        let done = log.writes.flush_completed(ticket);
        let freed: u64 = done.iter().map(|u| u.old.len() as u64).sum();
        self.undo_bytes.fetch_sub(freed, Ordering::Relaxed);
        // The oldest write still pending saw the file as the sync left it.
        if let Some((_, u)) = log.writes.pending_mut().next() {
            log.base_size = log.base_size.max(u.old_size);
        }
    }

    /// The file was truncated to `size` (call with its log locked).
    pub(crate) fn truncated(&self, log: &mut FileLog, size: u64) {
        let mut freed = 0u64;
        for (e, u) in log.writes.pending_mut() {
            e.len = e.len.min(size.saturating_sub(e.offset));
            let keep = (u.old.len() as u64).min(size.saturating_sub(e.offset)) as usize;
            freed += (u.old.len() - keep) as u64;
            u.old.truncate(keep);
            u.old_size = u.old_size.min(size);
        }
        self.undo_bytes.fetch_sub(freed, Ordering::Relaxed);
        log.base_size = size;
    }

    /// The file was unlinked: its unsynced writes cannot be lost any more.
    pub(crate) fn forget(&self, ino: u64) {
        if let Some(log) = self.map().remove(&ino) {
            let mut log = log.lock().expect("crash log poisoned");
            let all: u64 = log.writes.pending_mut().map(|(_, u)| u.old.len() as u64).sum();
            self.undo_bytes.fetch_sub(all, Ordering::Relaxed);
        }
    }

    /// Crashes: every file loses its lost unsynced writes (see the module
    /// docs) and forgets the rest. `on_file` sees each file that lost any,
    /// with its log still locked (so no write slips in before the caller has
    /// told the kernel and the op log).
    pub(crate) fn crash(&self, mut on_file: impl FnMut(CrashedFile)) -> io::Result<CrashCounts> {
        let logs: Vec<(u64, Arc<Mutex<FileLog>>)> = self.map().iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut counts = CrashCounts::default();
        let mut first_err = None;
        for (ino, log) in logs {
            let mut log = log.lock().expect("crash log poisoned");
            let base_size = log.base_size;
            let crashed = log.writes.crash_each();
            let freed: u64 = crashed.iter().map(|w| w.payload.old.len() as u64).sum();
            self.undo_bytes.fetch_sub(freed, Ordering::Relaxed);
            let lost_n = crashed.iter().filter(|w| w.lost).count() as u64;
            counts.writes_kept += crashed.len() as u64 - lost_n;
            if lost_n == 0 {
                continue;
            }
            match restore(&log.file, base_size, &crashed) {
                Ok((lost, new_size)) => {
                    counts.files += 1;
                    counts.writes_lost += lost_n;
                    counts.bytes_lost += lost.iter().map(|e| e.len).sum::<u64>();
                    match log.file.try_clone() {
                        Ok(file) => on_file(CrashedFile { ino, lost, new_size, file }),
                        Err(e) => first_err = first_err.or(Some(e)),
                    }
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(counts),
        }
    }
}

/// Puts `file` back as the crash leaves it; returns the lost extents (as
/// recorded, sorted) and the new size if it changed.
fn restore(
    file: &File,
    base_size: u64,
    crashed: &[mlpdrive_emu::CrashedWrite<Undo>],
) -> io::Result<(Vec<Extent>, Option<u64>)> {
    let mut kept: Vec<(u64, u64)> = Vec::new();
    let mut final_size = base_size;
    let mut lost = Vec::new();
    for w in crashed.iter().rev() {
        let (start, end) = (w.extent.offset, w.extent.end());
        if !w.lost {
            add_interval(&mut kept, start, end);
            final_size = final_size.max(end);
            continue;
        }
        lost.push(w.extent);
        let old_end = start + w.payload.old.len() as u64;
        for (a, b) in intervals_minus(start, end, &kept) {
            // Inside the old file: the replaced bytes; past its end: zeros
            // (and the final size trims them if nothing kept reaches there).
            if a < old_end {
                let upto = b.min(old_end);
                file.write_all_at(&w.payload.old[(a - start) as usize..(upto - start) as usize], a)?;
            }
            if b > old_end.max(a) {
                let from = a.max(old_end);
                let zeros = vec![0u8; (b - from).min(1 << 20) as usize];
                let mut at = from;
                while at < b {
                    let n = (b - at).min(zeros.len() as u64) as usize;
                    file.write_all_at(&zeros[..n], at)?;
                    at += n as u64;
                }
            }
        }
    }
    let size = file.metadata()?.len();
    let new_size = (size != final_size).then_some(final_size);
    if new_size.is_some() {
        file.set_len(final_size)?;
    }
    lost.sort_unstable();
    Ok((lost, new_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(p: f64) -> FaultPlan {
        FaultPlan {
            unsynced_write_loss_probability: mlpdrive_emu::Probability::new(p).unwrap(),
            ..FaultPlan::default()
        }
    }

    fn memfile(bytes: &[u8]) -> File {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(bytes, 0).unwrap();
        f
    }

    fn write(log: &CrashLog, fl: &mut FileLog, offset: u64, data: &[u8]) {
        log.before_write(fl, offset, data.len() as u64).unwrap();
        fl.file.write_all_at(data, offset).unwrap();
    }

    fn content(f: &File) -> Vec<u8> {
        let mut v = vec![0u8; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn interval_arithmetic() {
        assert_eq!(intervals_minus(0, 10, &[(2, 4), (6, 7)]), vec![(0, 2), (4, 6), (7, 10)]);
        assert_eq!(intervals_minus(3, 5, &[(0, 10)]), vec![]);
        let mut t = vec![(0, 2)];
        add_interval(&mut t, 1, 5);
        add_interval(&mut t, 7, 9);
        assert_eq!(t, vec![(0, 5), (7, 9)]);
    }

    #[test]
    fn a_crash_keeps_synced_data_and_drops_the_rest() {
        let log = CrashLog::new(&plan(1.0), 1);
        let fl = log.file(2, || Ok(memfile(b""))).unwrap();
        let mut fl = fl.lock().unwrap();
        write(&log, &mut fl, 0, b"AAAA");
        let t = CrashLog::fsync_started(&fl);
        log.fsync_completed(&mut fl, t);
        write(&log, &mut fl, 2, b"BBBB");
        write(&log, &mut fl, 0, b"C");
        assert_eq!(content(&fl.file), b"CABBBB");
        drop(fl);
        let mut seen = Vec::new();
        let counts = log.crash(|c| seen.push((c.ino, c.lost.len(), c.new_size, content(&c.file)))).unwrap();
        assert_eq!(counts, CrashCounts { files: 1, writes_lost: 2, bytes_lost: 5, writes_kept: 0 });
        assert_eq!(seen, vec![(2, 2, Some(4), b"AAAA".to_vec())]);
        assert_eq!(log.undo_bytes(), 0);
    }

    #[test]
    fn a_partial_loss_keeps_each_byte_of_the_newest_kept_write() {
        // Brute force: random overlapping writes, a seeded partial loss;
        // the result must equal replaying only the kept writes on the
        // synced base.
        for seed in 0..200u64 {
            let log = CrashLog::new(&plan(0.5), seed);
            let base: Vec<u8> = (0..40u8).collect();
            let fl = log.file(9, || Ok(memfile(&base))).unwrap();
            let mut writes = Vec::new();
            {
                let mut fl = fl.lock().unwrap();
                let mut rng = Prng::new(seed);
                for i in 0..6u8 {
                    let off = rng.below(50);
                    let len = 1 + rng.below(20) as usize;
                    let data = vec![100 + i; len];
                    write(&log, &mut fl, off, &data);
                    writes.push((off, data));
                }
            }
            // Replay the tracker's draws to know which were lost.
            let mut probe: UnsyncedWrites<()> =
                UnsyncedWrites::new(&plan(0.5), &Prng::new(seed).fork("shim.crash").fork("ino9"));
            for (off, d) in &writes {
                probe.record_write(*off, d.len() as u64);
            }
            let lost: Vec<bool> = probe.crash_each().iter().map(|w| w.lost).collect();
            let mut want = base.clone();
            for ((off, d), l) in writes.iter().zip(&lost) {
                if !l {
                    let end = *off as usize + d.len();
                    if want.len() < end {
                        want.resize(end, 0);
                    }
                    want[*off as usize..end].copy_from_slice(d);
                }
            }
            log.crash(|_| {}).unwrap();
            assert_eq!(content(&fl.lock().unwrap().file), want, "seed {seed}, lost {lost:?}");
        }
    }

    #[test]
    fn truncate_and_partial_syncs_move_the_durable_size() {
        let log = CrashLog::new(&plan(1.0), 1);
        let fl = log.file(3, || Ok(memfile(b""))).unwrap();
        let mut fl = fl.lock().unwrap();
        write(&log, &mut fl, 0, &[1; 8]);
        let t = CrashLog::fsync_started(&fl);
        write(&log, &mut fl, 8, &[2; 8]);
        log.fsync_completed(&mut fl, t);
        fl.file.set_len(12).unwrap();
        log.truncated(&mut fl, 12);
        drop(fl);
        let mut sizes = Vec::new();
        log.crash(|c| sizes.push((c.new_size, content(&c.file)))).unwrap();
        let mut want = vec![1u8; 8];
        want.extend([0u8; 4]);
        assert_eq!(sizes, vec![(None, want)], "the truncate's size is durable; the lost write's bytes are zeros");
    }
}
