//! `mlpdrive shim mount --verify`: live dedup and content verdicts over the
//! data passing through the shim, from the data generator's block format.
//!
//! - **dedup**: every whole, 4 KiB-aligned block written that carries the
//!   mlpdrive block magic is hashed (XXH3-64); the verdict passes when the
//!   number of distinct hashes equals the number of blocks (mlpdrive data is
//!   unique by construction, so a repeat means a writer reused data).
//!   Blocks without the magic (other programs' data) are counted apart.
//! - **content**: every whole, aligned block read is checked against its own
//!   header with the data generator's verifier: checksum, and that the block
//!   sits at its own index in the file and belongs to the object this path
//!   was last written with. A block without the magic read from a path the
//!   shim saw mlpdrive data written to counts as corrupt; from other paths
//!   it counts as foreign data, not a failure.
//!
//! After `mlpdrive shim crash`, blocks read from a range the crash lost
//! (unsynced writes undone) hold older data or zeros by design: a block
//! there that fails its check is counted as lost to the crash, not as bad
//! (the offline `mlpdrive check` compares them with the exact post-crash
//! content). Partial blocks are not judged. Renames through the mount carry a path's
//! object along (a file's, or every file's under a renamed directory; a
//! replaced target forgets its own). What is not seen through the mount
//! (data written before the mount, renames done in the backing directory)
//! is not known: such a file is checked by its headers alone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use mlpdrive_shim::{Observer, Report};
use serde_json::json;
use xxhash_rust::xxh3::xxh3_64;

use crate::datagen::{self, BLOCK_BYTES, BLOCK_MAGIC, Expect};

const BLOCK: u64 = BLOCK_BYTES as u64;

#[derive(Default)]
struct State {
    blocks_written: u64,
    unique: HashSet<u64>,
    foreign_written: u64,
    first_duplicate: Option<String>,
    blocks_read: u64,
    bad_read: u64,
    foreign_read: u64,
    first_bad: Option<String>,
    /// Object key of the mlpdrive data last written to each path.
    objects: HashMap<String, u64>,
    /// Byte ranges of each path whose writes a crash lost.
    crash_lost: HashMap<String, Vec<(u64, u64)>>,
    crash_lost_writes: u64,
    crash_lost_bytes: u64,
    /// Blocks read from those ranges that no longer pass their check.
    read_lost_to_crash: u64,
}

/// The `--verify` observer.
#[derive(Default)]
pub struct LiveVerifier {
    state: Mutex<State>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whole aligned blocks of `data` (at file `offset`): (file offset, bytes).
fn whole_blocks(offset: u64, data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let first = offset.next_multiple_of(BLOCK);
    let end = offset + data.len() as u64;
    (first..end).step_by(BLOCK_BYTES).filter(move |b| b + BLOCK <= end).map(move |b| {
        let at = (b - offset) as usize;
        (b, &data[at..at + BLOCK_BYTES])
    })
}

/// Removes `path` and every path under it (as a directory) from `objects`;
/// returns them with `path` cut off the front ("" for `path` itself,
/// "/name…" below it).
fn take_tree(objects: &mut HashMap<String, u64>, path: &str) -> Vec<(String, u64)> {
    let below = format!("{path}/");
    let keys: Vec<String> = objects.keys().filter(|k| *k == path || k.starts_with(&below)).cloned().collect();
    keys.into_iter()
        .map(|k| {
            let o = objects.remove(&k).expect("key just listed");
            (k[path.len()..].to_string(), o)
        })
        .collect()
}

impl LiveVerifier {
    pub fn new() -> LiveVerifier {
        LiveVerifier::default()
    }
}

impl Observer for LiveVerifier {
    fn on_write(&self, path: &str, offset: u64, data: &[u8]) {
        let mut hashed = Vec::new();
        let mut foreign = 0;
        let mut object = None;
        for (at, b) in whole_blocks(offset, data) {
            if u64_at(b, 8) == BLOCK_MAGIC {
                hashed.push((at, xxh3_64(b)));
                object = Some(u64_at(b, 24));
            } else {
                foreign += 1;
            }
        }
        let mut st = self.state.lock().expect("verifier poisoned");
        st.foreign_written += foreign;
        if let Some(o) = object {
            st.objects.insert(path.to_string(), o);
        }
        for (at, h) in hashed {
            st.blocks_written += 1;
            if !st.unique.insert(h) && st.first_duplicate.is_none() {
                st.first_duplicate = Some(format!("{path} at offset {at} repeats an earlier block (xxh3 {h:016x})"));
            }
        }
    }

    fn on_crash(&self, path: &str, offset: u64, len: u64, _now: &[u8]) {
        let mut st = self.state.lock().expect("verifier poisoned");
        st.crash_lost.entry(path.to_string()).or_default().push((offset, offset + len));
        st.crash_lost_writes += 1;
        st.crash_lost_bytes += len;
    }

    fn on_read(&self, path: &str, offset: u64, data: &[u8]) {
        let (known_object, lost) = {
            let st = self.state.lock().expect("verifier poisoned");
            (st.objects.get(path).copied(), st.crash_lost.get(path).cloned().unwrap_or_default())
        };
        let in_lost = |at: u64| lost.iter().any(|&(a, b)| at < b && at + BLOCK > a);
        let mut lost_blocks = 0u64;
        let (mut checked, mut bad, mut foreign) = (0u64, 0u64, 0u64);
        let mut first_bad = None;
        for (at, b) in whole_blocks(offset, data) {
            let magic_ok = u64_at(b, 8) == BLOCK_MAGIC;
            if !magic_ok && known_object.is_none() {
                foreign += 1;
                continue;
            }
            checked += 1;
            let expect =
                Expect { seed: u64_at(b, 16), object: known_object.unwrap_or_else(|| u64_at(b, 24)), generation: None };
            let outcome = datagen::verify(b, at, &expect);
            if (!magic_ok || !outcome.is_ok()) && in_lost(at) {
                lost_blocks += 1;
            } else if !magic_ok || !outcome.is_ok() {
                bad += 1;
                if first_bad.is_none() {
                    let why = match outcome.first_error {
                        Some(e) if magic_ok => e.to_string(),
                        _ => "the block header is gone (no mlpdrive block magic)".to_string(),
                    };
                    first_bad = Some(format!("{path} at offset {at}: {why}"));
                }
            }
        }
        let mut st = self.state.lock().expect("verifier poisoned");
        st.blocks_read += checked;
        st.bad_read += bad;
        st.foreign_read += foreign;
        st.read_lost_to_crash += lost_blocks;
        if st.first_bad.is_none() {
            st.first_bad = first_bad;
        }
    }

    fn on_rename(&self, from: &str, to: &str, exchange: bool) {
        let mut st = self.state.lock().expect("verifier poisoned");
        let moved_from = take_tree(&mut st.objects, from);
        let moved_to = take_tree(&mut st.objects, to);
        for (rest, o) in moved_from {
            st.objects.insert(format!("{to}{rest}"), o);
        }
        if exchange {
            for (rest, o) in moved_to {
                st.objects.insert(format!("{from}{rest}"), o);
            }
        }
    }

    fn report(&self) -> Report {
        let st = self.state.lock().expect("verifier poisoned");
        let unique = st.unique.len() as u64;
        let dedup_ok = unique == st.blocks_written;
        let ratio = if st.blocks_written == 0 { 1.0 } else { unique as f64 / st.blocks_written as f64 };
        let content_ok = st.bad_read == 0;
        let verdict = |ok: bool, n: u64| {
            if n == 0 {
                "no data"
            } else if ok {
                "pass"
            } else {
                "fail"
            }
        };
        let mut text = format!(
            "dedup:   {} — {} mlpdrive blocks written, {} unique (ratio {:.4}); {} other blocks\n",
            verdict(dedup_ok, st.blocks_written),
            st.blocks_written,
            unique,
            ratio,
            st.foreign_written
        );
        if let Some(d) = &st.first_duplicate {
            text.push_str(&format!("         first duplicate: {d}\n"));
        }
        text.push_str(&format!(
            "content: {} — {} blocks read and checked, {} bad; {} other blocks\n",
            verdict(content_ok, st.blocks_read),
            st.blocks_read,
            st.bad_read,
            st.foreign_read
        ));
        if let Some(b) = &st.first_bad {
            text.push_str(&format!("         first bad block: {b}\n"));
        }
        if st.crash_lost_writes > 0 {
            text.push_str(&format!(
                "crash:   {} unsynced writes ({} bytes) lost; {} blocks read from those ranges no longer \
                 hold the lost data (expected, not counted as bad)\n",
                st.crash_lost_writes, st.crash_lost_bytes, st.read_lost_to_crash
            ));
        }
        let doc = json!({
            "ok": dedup_ok && content_ok,
            "dedup": {
                "verdict": verdict(dedup_ok, st.blocks_written),
                "blocks_written": st.blocks_written,
                "blocks_unique": unique,
                "ratio": ratio,
                "other_blocks_written": st.foreign_written,
                "first_duplicate": st.first_duplicate,
            },
            "content": {
                "verdict": verdict(content_ok, st.blocks_read),
                "blocks_checked": st.blocks_read,
                "blocks_bad": st.bad_read,
                "other_blocks_read": st.foreign_read,
                "first_bad": st.first_bad,
                "blocks_lost_to_crash": st.read_lost_to_crash,
            },
            "crash": {
                "writes_lost": st.crash_lost_writes,
                "bytes_lost": st.crash_lost_bytes,
            },
        });
        Report { ok: dedup_ok && content_ok, text, json: serde_json::to_string_pretty(&doc).unwrap_or_default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(object: &str, generation: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n * BLOCK_BYTES];
        datagen::fill(&mut v, 1, datagen::object_key(object), generation, 0);
        v
    }

    #[test]
    fn unique_data_passes_and_a_repeat_fails_dedup() {
        let v = LiveVerifier::new();
        let d = blocks("a", 1, 4);
        v.on_write("a", 0, &d);
        v.on_read("a", 0, &d);
        let r = v.report();
        assert!(r.ok, "{}", r.text);
        v.on_write("b", 0, &d[..BLOCK_BYTES]);
        let r = v.report();
        assert!(!r.ok);
        assert!(r.text.contains("first duplicate: b at offset 0"), "{}", r.text);
    }

    #[test]
    fn blocks_a_crash_lost_are_counted_apart_not_as_bad() {
        let v = LiveVerifier::new();
        let d = blocks("a", 1, 2);
        v.on_write("a", 0, &d);
        v.on_crash("a", 4096, 4096, &[0u8; 4096]);
        let mut after = d.clone();
        after[4096..].fill(0);
        v.on_read("a", 0, &after);
        let r = v.report();
        assert!(r.ok, "{}", r.text);
        assert!(r.text.contains("1 unsynced writes (4096 bytes) lost; 1 blocks read"), "{}", r.text);
        // Outside the lost range a bad block still fails.
        let mut bad = after.clone();
        bad[10] ^= 1;
        v.on_read("a", 0, &bad);
        assert!(!v.report().ok);
    }

    #[test]
    fn corrupt_and_misplaced_blocks_fail_content() {
        let v = LiveVerifier::new();
        let d = blocks("a", 1, 2);
        v.on_write("a", 0, &d);
        let mut bad = d.clone();
        bad[5000] ^= 1;
        v.on_read("a", 0, &bad);
        assert!(!v.report().ok);
        // Block 0's bytes read back at offset 4096: misplaced.
        let v = LiveVerifier::new();
        v.on_write("a", 0, &d);
        v.on_read("a", 4096, &d[..BLOCK_BYTES]);
        let r = v.report();
        assert!(!r.ok && r.text.contains("misplaced"), "{}", r.text);
        // Foreign (non-mlpdrive) data on an unknown path is not a failure.
        let v = LiveVerifier::new();
        v.on_read("z", 0, &[7u8; 8192]);
        let r = v.report();
        assert!(r.ok && r.json.contains("\"other_blocks_read\": 2"), "{}", r.json);
    }

    /// Another object's (valid) blocks read from a renamed file fail: the
    /// file's object followed the rename. Without that the read would be
    /// checked by its own headers alone and pass.
    #[test]
    fn renames_carry_the_written_object_along() {
        let (a, b) = (blocks("a", 1, 2), blocks("b", 1, 2));
        let stale_read_after = |renames: &[(&str, &str, bool)], read_path: &str, data: &[u8]| {
            let v = LiveVerifier::new();
            v.on_write("d/a", 0, &a);
            v.on_write("b", 0, &b);
            for (from, to, x) in renames {
                v.on_rename(from, to, *x);
            }
            v.on_read(read_path, 0, data);
            v.report()
        };
        // File renamed: b's blocks at the new name of a are wrong, a's are right.
        assert!(!stale_read_after(&[("d/a", "c", false)], "c", &b).ok);
        assert!(stale_read_after(&[("d/a", "c", false)], "c", &a).ok);
        // The old name is forgotten (checked by headers alone), a replaced
        // target takes the renamed file's object.
        assert!(stale_read_after(&[("d/a", "c", false)], "d/a", &b).ok);
        assert!(!stale_read_after(&[("d/a", "b", false)], "b", &b).ok);
        // Directory renamed: the files below it follow.
        assert!(!stale_read_after(&[("d", "e", false)], "e/a", &b).ok);
        assert!(stale_read_after(&[("d", "e", false)], "e/a", &a).ok);
        // Exchange: the two names swap objects.
        let r = stale_read_after(&[("d/a", "b", true)], "d/a", &a);
        assert!(!r.ok && r.text.contains("d/a at offset 0"), "{}", r.text);
        assert!(stale_read_after(&[("d/a", "b", true)], "d/a", &b).ok);
    }
}
