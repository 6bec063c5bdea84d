//! The handle table shared by targets: handle → entry (an open file, a
//! device extent), name → handle. Lookups take a read lock, but each worker's queue
//! caches what it resolved, so the lock is touched once per object per
//! worker, not once per I/O.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::io::Resolved;
use crate::target::ObjectHandle;

pub struct HandleTable<T = Resolved> {
    inner: RwLock<Inner<T>>,
}

struct Inner<T> {
    entries: Vec<Option<T>>,
    by_name: HashMap<String, u32>,
}

impl<T> Default for HandleTable<T> {
    fn default() -> HandleTable<T> {
        HandleTable { inner: RwLock::new(Inner { entries: Vec::new(), by_name: HashMap::new() }) }
    }
}

impl<T: Clone> HandleTable<T> {
    /// Inserts the entry for `name` under a new handle and returns it. A
    /// name that is re-created gets a new handle (the old one keeps its old
    /// file until dropped): handles are never reused, so queues may cache
    /// what a handle resolved to.
    pub fn insert(&self, name: &str, r: T) -> ObjectHandle {
        let mut t = self.inner.write().expect("handle table poisoned");
        if let Some(&old) = t.by_name.get(name) {
            t.entries[old as usize] = None;
        }
        let i = t.entries.len() as u32;
        t.entries.push(Some(r));
        t.by_name.insert(name.to_owned(), i);
        ObjectHandle(i)
    }

    pub fn get(&self, h: ObjectHandle) -> Option<T> {
        let t = self.inner.read().expect("handle table poisoned");
        t.entries.get(h.0 as usize).cloned().flatten()
    }

    pub fn lookup(&self, name: &str) -> Option<(ObjectHandle, T)> {
        let t = self.inner.read().expect("handle table poisoned");
        let i = *t.by_name.get(name)?;
        t.entries[i as usize].clone().map(|r| (ObjectHandle(i), r))
    }

    /// Forgets `name` (its handle becomes invalid).
    pub fn remove(&self, name: &str) -> Option<T> {
        let mut t = self.inner.write().expect("handle table poisoned");
        let i = t.by_name.remove(name)?;
        t.entries[i as usize].take()
    }

    /// Every live entry, for targets without a persistent namespace.
    pub fn all(&self) -> Vec<(ObjectHandle, T)> {
        let t = self.inner.read().expect("handle table poisoned");
        t.entries.iter().enumerate().filter_map(|(i, e)| e.clone().map(|r| (ObjectHandle(i as u32), r))).collect()
    }
}
