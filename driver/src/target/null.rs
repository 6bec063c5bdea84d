//! `null://`: completes every op at once and stores nothing (fio's null
//! engine). Running a workload against it measures mlpdrive's own ceiling:
//! op generation, data generation, accounting. Reads return the buffer as
//! it was, so read verification is skipped (and the results say so).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Capabilities, Completion, IoMode, ObjectHandle, Op, Queue, QueueFull, Target, TargetError, TargetInfo};
use crate::buf::{AlignedBuf, BufPool};

pub struct NullTarget {
    objects: Mutex<Vec<(String, u64)>>,
    info: TargetInfo,
}

impl Default for NullTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl NullTarget {
    pub fn new() -> NullTarget {
        let info = TargetInfo {
            kind: "null",
            location: "null://".into(),
            caps: Capabilities { align: 512, ranged_writes: true, stores_data: false, max_object_bytes: None },
        };
        NullTarget { objects: Mutex::new(Vec::new()), info }
    }
}

impl Target for NullTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn create(&self, name: &str, _size_hint: u64) -> Result<ObjectHandle, TargetError> {
        let mut o = self.objects.lock().expect("null table poisoned");
        if let Some(i) = o.iter().position(|(n, _)| n == name) {
            o[i].1 = 0;
            return Ok(ObjectHandle(i as u32));
        }
        o.push((name.to_owned(), 0));
        Ok(ObjectHandle(o.len() as u32 - 1))
    }

    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        let o = self.objects.lock().expect("null table poisoned");
        Ok(o.iter().position(|(n, _)| n == name).map(|i| (ObjectHandle(i as u32), o[i].1)))
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        let mut o = self.objects.lock().expect("null table poisoned");
        if let Some(e) = o.iter_mut().find(|(n, _)| n == name) {
            e.0.clear();
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let o = self.objects.lock().expect("null table poisoned");
        let mut v: Vec<_> = o.iter().filter(|(n, _)| !n.is_empty() && n.starts_with(prefix)).cloned().collect();
        v.sort();
        Ok(v)
    }

    fn queue(&self, depth: usize, _pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        Ok(Box::new(NullQueue { depth, done: VecDeque::with_capacity(depth) }))
    }
}

struct NullQueue {
    depth: usize,
    done: VecDeque<(u64, Op, Option<AlignedBuf>, Instant)>,
}

impl Queue for NullQueue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
        if self.done.len() >= self.depth {
            return Err(QueueFull { op, buf });
        }
        self.done.push_back((tag, op, buf, Instant::now()));
        Ok(())
    }

    fn reap(&mut self, _min: usize, _timeout: Duration, out: &mut Vec<Completion>) -> Result<usize, TargetError> {
        let now = Instant::now();
        let n = self.done.len();
        for (tag, op, buf, submitted) in self.done.drain(..) {
            let bytes = match op {
                Op::Read { len, .. } | Op::Write { len, .. } => len,
                Op::Commit { .. } => 0,
            };
            out.push(Completion { tag, op, result: Ok(bytes), buf, data_start: 0, submitted, completed: now });
        }
        Ok(n)
    }

    fn io_mode(&self) -> IoMode {
        IoMode { direct: false, engine: "null".into(), registered_buffers: false, note: None }
    }
}
