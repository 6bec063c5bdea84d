//! The S3 target's per-worker queue: each op becomes a task on the
//! target's runtime, and completions come back through a channel that
//! `reap` waits on. Writes are copied into their object's part buffers at
//! submission and complete at once, unless the upload pipeline is full
//! (`s3.max_concurrency` parts in flight): then the write completes when the
//! part it filled has been uploaded, which bounds memory without ever
//! blocking `submit`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::errors::S3Failure;
use super::upload::{self, ReadyPart};
use super::{Obj, Shared};
use crate::buf::AlignedBuf;
use crate::target::{Completion, IoMode, ObjectHandle, Op, Queue, QueueFull, TargetError};

pub(super) struct S3Queue {
    sh: Arc<Shared>,
    depth: usize,
    in_flight: usize,
    tx: Sender<Completion>,
    rx: Receiver<Completion>,
    ready: VecDeque<Completion>,
}

impl S3Queue {
    pub fn new(sh: Arc<Shared>, depth: usize) -> S3Queue {
        let (tx, rx) = channel();
        S3Queue { sh, depth, in_flight: 0, tx, rx, ready: VecDeque::new() }
    }

    fn object(&self, obj: ObjectHandle) -> Option<Arc<Obj>> {
        self.sh.table.get(obj)
    }

    fn fail_now(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>, message: String) {
        let now = Instant::now();
        self.ready.push_back(Completion {
            tag,
            op,
            result: Err(TargetError::namespace(message)),
            buf,
            data_start: 0,
            submitted: now,
            completed: now,
        });
    }

    fn submit_read(&mut self, tag: u64, op: Op, obj: Arc<Obj>, offset: u64, len: u32, buf: Option<AlignedBuf>) {
        let submitted = Instant::now();
        let size = obj.size.load(Ordering::SeqCst);
        let want = u64::from(len).min(size.saturating_sub(offset));
        let Some(mut buf) = buf else {
            return self.fail_now(tag, op, None, "read without a buffer".into());
        };
        if want == 0 {
            self.ready.push_back(Completion {
                tag,
                op,
                result: Ok(0),
                buf: Some(buf),
                data_start: 0,
                submitted,
                completed: Instant::now(),
            });
            return;
        }
        let (sh, tx) = (self.sh.clone(), self.tx.clone());
        self.sh.rt.spawn(async move {
            let result = read_ranges(&sh, &obj.key, offset, want, buf.as_mut_slice()).await;
            let result = result.map(|n| n as u32).map_err(|f| io_err(&f));
            let _ = tx.send(Completion {
                tag,
                op,
                result,
                buf: Some(buf),
                data_start: 0,
                submitted,
                completed: Instant::now(),
            });
        });
    }

    /// A write: its bytes are copied from `buf` into the object's part
    /// buffers, or, with `fill`, generated straight into them (`buf` is
    /// then only handed back).
    fn submit_write(
        &mut self,
        tag: u64,
        op: Op,
        (obj, offset, len): (ObjectHandle, u64, u32),
        buf: Option<AlignedBuf>,
        fill: Option<Fill>,
    ) {
        let submitted = Instant::now();
        let Some(buf) = buf else {
            return self.fail_now(tag, op, None, "write without a buffer".into());
        };
        let mut ups = self.sh.uploads.lock().expect("uploads poisoned");
        let Some(up) = ups.get_mut(&obj.0) else {
            drop(ups);
            return self.fail_now(tag, op, Some(buf), "write to an object that was not created for writing".into());
        };
        let absorbed = match fill {
            Some(f) => up.absorb_with(offset, len as usize, f),
            None => up.absorb(offset, &buf.as_slice()[..len as usize]),
        };
        let ready = match absorbed {
            Ok(r) => r,
            Err(m) => {
                let key = up.key.clone();
                drop(ups);
                let msg = format!("write s3://{}/{key} at offset {offset}: {m}", self.sh.bucket);
                return self.fail_now(tag, op, Some(buf), msg);
            }
        };
        let mut buf = Some(buf);
        let n = ready.len();
        for (i, part) in ready.into_iter().enumerate() {
            let in_flight = self.sh.parts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            // The write waits for the last part it completed when the
            // pipeline is over its bound.
            let hold =
                (i + 1 == n && in_flight > self.sh.max_parts_in_flight).then(|| (tag, op, buf.take(), submitted));
            spawn_part(&self.sh, up, part, hold, self.tx.clone());
        }
        drop(ups);
        if let Some(buf) = buf {
            self.ready.push_back(Completion {
                tag,
                op,
                result: Ok(len),
                buf: Some(buf),
                data_start: 0,
                submitted,
                completed: Instant::now(),
            });
        }
    }

    fn submit_commit(&mut self, tag: u64, op: Op, obj: ObjectHandle, size: u64, buf: Option<AlignedBuf>) {
        let submitted = Instant::now();
        let up = self.sh.uploads.lock().expect("uploads poisoned").remove(&obj.0);
        let Some(up) = up else {
            // Committing an object that was opened, not created: its bytes
            // are already durable on the server.
            self.ready.push_back(Completion {
                tag,
                op,
                result: Ok(0),
                buf,
                data_start: 0,
                submitted,
                completed: Instant::now(),
            });
            return;
        };
        let entry = self.object(obj);
        let (sh, tx) = (self.sh.clone(), self.tx.clone());
        self.sh.rt.spawn(async move {
            let result = upload::commit(sh, up, size).await;
            if result.is_ok()
                && let Some(o) = entry
            {
                o.size.store(size, Ordering::SeqCst);
            }
            let result = result.map(|()| 0).map_err(|f| io_err(&f));
            let _ = tx.send(Completion { tag, op, result, buf, data_start: 0, submitted, completed: Instant::now() });
        });
    }
}

type Held = (u64, Op, Option<AlignedBuf>, Instant);
/// Writes the object's bytes at an offset into a buffer (a generator).
type Fill<'a> = &'a mut dyn FnMut(&mut [u8], u64);

/// Starts a part upload; `hold` is a write whose completion waits for it.
fn spawn_part(sh: &Arc<Shared>, up: &mut upload::Upload, part: ReadyPart, hold: Option<Held>, tx: Sender<Completion>) {
    let index = part.index;
    let fut = upload::upload_part(sh.clone(), up.key.clone(), up.mpu.clone(), up.failed.clone(), part);
    let task = sh.rt.spawn(async move {
        let r = fut.await;
        if let Some((tag, op, buf, submitted)) = hold {
            let result = match (&r, op) {
                (Ok(_), Op::Write { len, .. }) => Ok(len),
                (Ok(_), _) => Ok(0),
                (Err(f), _) => Err(io_err(f)),
            };
            let _ = tx.send(Completion { tag, op, result, buf, data_start: 0, submitted, completed: Instant::now() });
        }
        r
    });
    up.parts.push((index, task));
}

/// GETs `[offset, offset + len)` of `key` into `dst`, split into
/// `part_bytes` ranges fetched concurrently when it is larger.
async fn read_ranges(sh: &Arc<Shared>, key: &str, offset: u64, len: u64, dst: &mut [u8]) -> Result<usize, S3Failure> {
    let ps = sh.part_bytes;
    if len <= ps {
        // One range: each body chunk is copied into `dst` as it arrives, so
        // the HTTP client reuses its read buffer instead of allocating (and
        // page-faulting in) a new one for every chunk of the range.
        let mut at = 0;
        get_range(sh.clone(), key.to_string(), offset, len, |c: Bytes| {
            let n = c.len().min(dst.len() - at);
            dst[at..at + n].copy_from_slice(&c[..n]);
            at += n;
        })
        .await?;
        return Ok(at);
    }
    let mut set = tokio::task::JoinSet::new();
    let mut at = 0;
    while at < len {
        let n = ps.min(len - at);
        let (sh, key) = (sh.clone(), key.to_string());
        set.spawn(async move {
            let mut chunks = Vec::new();
            let r = get_range(sh, key, offset + at, n, |c| chunks.push(c)).await;
            (at, r.map(|_| chunks))
        });
        at += n;
    }
    let mut total = 0;
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((at, Ok(chunks))) => total += copy_chunks(&chunks, &mut dst[at as usize..]),
            Ok((_, Err(e))) => {
                first_err.get_or_insert(e);
            }
            Err(j) => {
                first_err.get_or_insert(S3Failure {
                    kind: super::errors::Kind::Runtime,
                    code: "task".into(),
                    message: format!("GET {key}: range task failed: {j}"),
                });
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

fn copy_chunks(chunks: &[Bytes], dst: &mut [u8]) -> usize {
    let mut at = 0;
    for c in chunks {
        let n = c.len().min(dst.len() - at);
        dst[at..at + n].copy_from_slice(&c[..n]);
        at += n;
    }
    at
}

/// One ranged GET; hands each body chunk to `sink` as it arrives. Returns
/// the bytes received.
async fn get_range(
    sh: Arc<Shared>,
    key: String,
    offset: u64,
    len: u64,
    mut sink: impl FnMut(Bytes) + Send,
) -> Result<u64, S3Failure> {
    let range = format!("bytes={offset}-{}", offset + len - 1);
    let log_key = key.clone();
    sh.clone()
        .request("GET", &log_key, 0, |req| async move {
            let out = req
                .client
                .get_object()
                .bucket(&sh.bucket)
                .key(&key)
                .range(range)
                .send()
                .await
                .map_err(|e| sh.fail(&e, "GET", &key, req.endpoint))?;
            let mut body = out.body;
            let mut n = 0u64;
            loop {
                match body.try_next().await {
                    Ok(Some(b)) => {
                        n += b.len() as u64;
                        sink(b);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(S3Failure {
                            kind: super::errors::Kind::Runtime,
                            code: "body".into(),
                            message: sh.clients.redactor.clean(&format!(
                                "GET s3://{}/{key}: the response body broke off after {n} bytes: {e}",
                                sh.bucket
                            )),
                        });
                    }
                }
            }
            Ok((n, n))
        })
        .await
}

/// S3 failures reach the engine with their message (which names the
/// request, the object and the fix).
fn io_err(f: &S3Failure) -> TargetError {
    TargetError::namespace(f.message.clone())
}

impl Queue for S3Queue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn submit(&mut self, tag: u64, op: Op, buf: Option<AlignedBuf>) -> Result<(), QueueFull> {
        if self.in_flight >= self.depth {
            return Err(QueueFull { op, buf });
        }
        self.in_flight += 1;
        match op {
            Op::Read { obj, offset, len } => match self.object(obj) {
                Some(o) => self.submit_read(tag, op, o, offset, len, buf),
                None => self.fail_now(tag, op, buf, format!("read of unknown object handle {}", obj.0)),
            },
            Op::Write { obj, offset, len } => self.submit_write(tag, op, (obj, offset, len), buf, None),
            Op::Commit { obj, size } => self.submit_commit(tag, op, obj, size, buf),
        }
        Ok(())
    }

    fn submit_fill(
        &mut self,
        tag: u64,
        op: Op,
        buf: Option<AlignedBuf>,
        fill: &mut dyn FnMut(&mut [u8], u64),
    ) -> Result<(), QueueFull> {
        let Op::Write { obj, offset, len } = op else { return self.submit(tag, op, buf) };
        if self.in_flight >= self.depth {
            return Err(QueueFull { op, buf });
        }
        self.in_flight += 1;
        self.submit_write(tag, op, (obj, offset, len), buf, Some(fill));
        Ok(())
    }

    fn reap(
        &mut self,
        min_complete: usize,
        timeout: Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, TargetError> {
        let mut n = 0;
        while let Some(c) = self.ready.pop_front() {
            out.push(c);
            n += 1;
        }
        while let Ok(c) = self.rx.try_recv() {
            out.push(c);
            n += 1;
        }
        let deadline = Instant::now() + timeout;
        while n < min_complete.min(self.in_flight) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(c) => {
                    out.push(c);
                    n += 1;
                    while let Ok(c) = self.rx.try_recv() {
                        out.push(c);
                        n += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => unreachable!("the queue holds a sender"),
            }
        }
        self.in_flight -= n;
        Ok(n)
    }

    fn io_mode(&self) -> IoMode {
        IoMode { direct: false, engine: "s3".into(), registered_buffers: false, note: None }
    }
}
