//! Inode numbers ↔ paths, kept through renames, plus what the shim tracks
//! per inode: the passthrough backing file and the size used for capacity
//! accounting.
//!
//! Inode numbers are the shim's own (the root is 1) and are never reused
//! during a mount; the kernel's `forget` is not needed to keep the table
//! small for the workloads the shim serves (one entry per path ever seen).

use std::collections::HashMap;
use std::sync::Arc;

use fuser::BackingId;

pub(crate) const ROOT_INO: u64 = 1;

pub(crate) struct Node {
    /// Path relative to the mount root ("" for the root).
    pub path: String,
    /// False once unlinked (or replaced by a rename): the path is only the
    /// last name it had, kept for the op log of still-open handles.
    pub linked: bool,
    /// The kernel passthrough backing file shared by all open handles.
    pub backing: Option<Arc<BackingId>>,
    pub backing_users: u32,
    /// Logical size as the capacity accounting knows it (None: not yet
    /// looked at).
    pub size_bytes: Option<u64>,
}

pub(crate) struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next_ino: u64,
    /// Bytes the files hold, for capacity accounting.
    pub used_bytes: u64,
}

/// `parent/name` ('/'-joined; `name` alone under the root).
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
}

fn under(dir: &str, path: &str) -> bool {
    path.len() > dir.len() + 1 && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

impl Inodes {
    pub(crate) fn new(used_bytes: u64) -> Inodes {
        let mut t = Inodes { by_ino: HashMap::new(), by_path: HashMap::new(), next_ino: ROOT_INO + 1, used_bytes };
        t.by_ino.insert(
            ROOT_INO,
            Node { path: String::new(), linked: true, backing: None, backing_users: 0, size_bytes: None },
        );
        t.by_path.insert(String::new(), ROOT_INO);
        t
    }

    pub(crate) fn get(&self, ino: u64) -> Option<&Node> {
        self.by_ino.get(&ino)
    }

    pub(crate) fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.by_ino.get_mut(&ino)
    }

    /// The current path of a linked inode.
    pub(crate) fn path(&self, ino: u64) -> Option<String> {
        self.by_ino.get(&ino).filter(|n| n.linked).map(|n| n.path.clone())
    }

    /// The path for the op log: the current one, or the last one it had.
    pub(crate) fn log_path(&self, ino: u64) -> String {
        self.by_ino.get(&ino).map(|n| n.path.clone()).unwrap_or_default()
    }

    /// The inode of `path`, assigning a new number on first sight.
    pub(crate) fn ino_for(&mut self, path: &str) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_ino.insert(
            ino,
            Node { path: path.to_string(), linked: true, backing: None, backing_users: 0, size_bytes: None },
        );
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    /// `path` no longer names anything (unlink, rmdir); returns its inode.
    pub(crate) fn unlinked(&mut self, path: &str) -> Option<u64> {
        let ino = self.by_path.remove(path)?;
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.linked = false;
        }
        Some(ino)
    }

    /// `from` (and everything under it) is now called `to`; whatever `to`
    /// named before is unlinked.
    pub(crate) fn renamed(&mut self, from: &str, to: &str) {
        if from == to {
            return;
        }
        self.unlinked(to);
        let moved: Vec<String> =
            self.by_path.keys().filter(|p| p.as_str() == from || under(from, p)).cloned().collect();
        for old in moved {
            let Some(ino) = self.by_path.remove(&old) else { continue };
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.path = new.clone();
            }
            self.by_path.insert(new, ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_carry_inodes_and_descendants() {
        let mut t = Inodes::new(0);
        let d = t.ino_for("d");
        let f = t.ino_for("d/f");
        let g = t.ino_for("g");
        t.renamed("d", "e");
        assert_eq!(t.ino_for("e"), d);
        assert_eq!(t.ino_for("e/f"), f);
        assert_eq!(t.path(f).as_deref(), Some("e/f"));
        // Renaming over an existing name unlinks the old one.
        t.renamed("e/f", "g");
        assert_eq!(t.path(f).as_deref(), Some("g"));
        assert_eq!(t.path(g), None);
        assert_eq!(t.log_path(g), "g");
        assert_ne!(t.ino_for("d"), d, "a new file at an old name gets a new inode");
    }
}
