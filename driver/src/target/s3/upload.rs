//! Writes of one object, buffered into parts.
//!
//! The target trait writes an object as chunks at offsets; S3 stores whole
//! objects. Each chunk is copied into the buffer of the part it falls in
//! (part k covers `[k·part, (k+1)·part)`); a part that is complete is
//! uploaded at once (`UploadPart`, concurrently with others, in any order,
//! so a writer that writes its first chunk last still streams), and the
//! commit uploads the last, short part and completes the upload. An object
//! that ends up no larger than one part is sent as one `PutObject` at the
//! commit instead. Any failure aborts the multipart upload, and uploads
//! that are still open when the target finishes (an error stopped the run,
//! or Ctrl-C) are aborted too, so no orphaned parts stay behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use super::Shared;
use super::errors::{Kind, S3Failure};
use crate::buf::AlignedBuf;

/// Alignment of part buffers (a page: large ones are mappings of their own,
/// see [`AlignedBuf`]).
const PART_ALIGN: usize = 4096;

/// Part buffers kept for reuse: a part's bytes go to the SDK as [`Bytes`]
/// whose owner hands the buffer back here when the request is done with
/// it, so the next object's parts reuse memory that is already mapped
/// instead of page-faulting in a fresh allocation for every object.
pub(super) struct PartPool {
    free: std::sync::Mutex<Vec<AlignedBuf>>,
    /// Buffers kept at most (more in flight are freed when they return).
    keep: usize,
}

impl PartPool {
    pub fn new(keep: usize) -> Arc<PartPool> {
        Arc::new(PartPool { free: std::sync::Mutex::new(Vec::new()), keep })
    }

    /// A buffer of at least `bytes`: the smallest kept one that is large
    /// enough, else a new one (large ones are zeroed by the kernel, not
    /// written, until used).
    fn take(&self, bytes: usize) -> AlignedBuf {
        let mut free = self.free.lock().expect("part pool poisoned");
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= bytes)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => free.swap_remove(i),
            None => {
                drop(free);
                AlignedBuf::new(bytes, PART_ALIGN)
            }
        }
    }

    fn give(&self, buf: AlignedBuf) {
        let mut free = self.free.lock().expect("part pool poisoned");
        if free.len() < self.keep {
            free.push(buf);
        }
    }

    /// The first `len` bytes of `buf` as [`Bytes`] that return the buffer
    /// to the pool when dropped.
    fn bytes(self: &Arc<Self>, buf: AlignedBuf, len: usize) -> Bytes {
        Bytes::from_owner(Pooled { buf: Some(buf), len, pool: self.clone() })
    }
}

/// A part's buffer on its way through the SDK.
struct Pooled {
    buf: Option<AlignedBuf>,
    len: usize,
    pool: Arc<PartPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.as_slice()[..self.len])
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

/// A part being filled: chunks are written straight into its buffer.
struct PartBuf {
    buf: AlignedBuf,
    /// Bytes written into it so far (chunks never overlap).
    filled: u64,
    /// End of the furthest chunk written.
    end: usize,
}

/// One uploaded (or uploading) part: its 0-based index and the task.
pub(super) type PartTask = (u32, JoinHandle<Result<CompletedPart, S3Failure>>);

/// An object being written.
pub(super) struct Upload {
    pub key: String,
    size_hint: u64,
    part_bytes: u64,
    filling: BTreeMap<u32, PartBuf>,
    /// The multipart upload id, created by the first part that needs it.
    pub mpu: Arc<OnceCell<String>>,
    pub parts: Vec<PartTask>,
    /// First failure of a part upload (later writes and the commit fail).
    pub failed: Arc<std::sync::Mutex<Option<String>>>,
    /// Where part buffers come from and go back to.
    pool: Arc<PartPool>,
}

/// A complete part ready to go: 0-based index and bytes.
pub(super) struct ReadyPart {
    pub index: u32,
    pub data: Bytes,
}

impl Upload {
    pub fn new(key: String, size_hint: u64, part_bytes: u64) -> Upload {
        Upload {
            key,
            size_hint,
            part_bytes,
            filling: BTreeMap::new(),
            mpu: Arc::new(OnceCell::new()),
            parts: Vec::new(),
            failed: Arc::new(std::sync::Mutex::new(None)),
            pool: PartPool::new(0),
        }
    }

    /// Takes part buffers from `pool` and hands them back after the upload.
    pub fn with_pool(mut self, pool: Arc<PartPool>) -> Upload {
        self.pool = pool;
        self
    }

    /// Bytes part `index` is expected to hold: a whole part, or what the
    /// size hint leaves for it (0: unknown).
    fn expected_bytes(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.part_bytes;
        if self.size_hint > start { self.part_bytes.min(self.size_hint - start) } else { 0 }
    }

    pub fn multipart_started(&self) -> bool {
        !self.parts.is_empty()
    }

    /// Copies a chunk into its part(s); returns the parts it completed that
    /// may go now.
    pub fn absorb(&mut self, offset: u64, data: &[u8]) -> Result<Vec<ReadyPart>, String> {
        self.absorb_with(offset, data.len(), &mut |dst: &mut [u8], at: u64| {
            let from = (at - offset) as usize;
            dst.copy_from_slice(&data[from..from + dst.len()]);
        })
    }

    /// Has `write(dst, at)` put the object's bytes `[at, at + dst.len())`
    /// of a chunk of `len` bytes at `offset` straight into its part
    /// buffer(s) (a generator writes its payload there, with no copy);
    /// returns the parts it completed that may go now.
    pub fn absorb_with(
        &mut self,
        offset: u64,
        len: usize,
        write: &mut dyn FnMut(&mut [u8], u64),
    ) -> Result<Vec<ReadyPart>, String> {
        if let Some(e) = self.failed.lock().expect("upload flag poisoned").as_ref() {
            return Err(format!("an earlier part of this object failed: {e}"));
        }
        let ps = self.part_bytes;
        let mut at = offset;
        let end = offset + len as u64;
        let mut touched = Vec::new();
        while at < end {
            let index = u32::try_from(at / ps).map_err(|_| "offset beyond S3's 10000 parts".to_string())?;
            if index >= 10_000 {
                return Err(format!(
                    "offset {at} needs part {} but S3 allows 10000 parts of s3.part_size={ps}; raise s3.part_size",
                    index + 1
                ));
            }
            if self.parts.iter().any(|(i, _)| *i == index) {
                return Err(format!(
                    "bytes at offset {at} rewrite part {} which was already uploaded; S3 objects are written once, \
                     front to back",
                    index + 1
                ));
            }
            let within = (at - u64::from(index) * ps) as usize;
            let n = ((end - at) as usize).min(ps as usize - within);
            // The part's buffer: as large as the part is expected to be (one
            // allocation, no zero fill, no growing), or larger if a chunk
            // goes beyond that.
            let need = within + n;
            let expected = self.expected_bytes(index) as usize;
            let part = match self.filling.remove(&index) {
                Some(p) if p.buf.capacity() >= need => p,
                Some(p) => {
                    let mut buf = self.pool.take(need.max(expected).max(2 * p.buf.capacity()).min(ps as usize));
                    buf.as_mut_slice()[..p.end].copy_from_slice(&p.buf.as_slice()[..p.end]);
                    self.pool.give(p.buf);
                    PartBuf { buf, filled: p.filled, end: p.end }
                }
                None => PartBuf { buf: self.pool.take(need.max(expected)), filled: 0, end: 0 },
            };
            let part = self.filling.entry(index).or_insert(part);
            write(&mut part.buf.as_mut_slice()[within..need], at);
            part.end = part.end.max(need);
            part.filled += n as u64;
            if part.filled > ps {
                return Err(format!("chunks overlap in part {} (offset {at})", index + 1));
            }
            touched.push(index);
            at += n as u64;
        }
        Ok(self.take_full(&touched))
    }

    /// Full parts among `touched` that may be uploaded now. Part 1 of an
    /// object that may still fit in one part waits for the commit (one
    /// PutObject) until a later part shows the object is larger.
    fn take_full(&mut self, touched: &[u32]) -> Vec<ReadyPart> {
        let ps = self.part_bytes;
        let beyond_first = self.size_hint > ps || self.filling.keys().any(|&i| i > 0) || self.multipart_started();
        let mut out = Vec::new();
        let mut candidates: Vec<u32> = touched.to_vec();
        if beyond_first {
            candidates.push(0);
        }
        candidates.sort_unstable();
        candidates.dedup();
        for index in candidates {
            let full = self.filling.get(&index).is_some_and(|p| p.filled == ps);
            if full && (index > 0 || beyond_first) {
                let p = self.filling.remove(&index).expect("present");
                out.push(ReadyPart { index, data: self.pool.bytes(p.buf, ps as usize) });
            }
        }
        out
    }

    /// What the commit still has to send for an object of `size` bytes:
    /// either the whole object (one PUT), or the remaining parts.
    pub fn finish(&mut self, size: u64) -> Result<Finish, String> {
        if let Some(e) = self.failed.lock().expect("upload flag poisoned").as_ref() {
            return Err(format!("a part upload failed: {e}"));
        }
        let ps = self.part_bytes;
        if !self.multipart_started() && size <= ps {
            let data = match self.filling.remove(&0) {
                Some(p) if p.filled >= size && p.end as u64 >= size => self.pool.bytes(p.buf, size as usize),
                Some(p) => return Err(holes(size, p.filled)),
                None if size == 0 => Bytes::new(),
                None => return Err(holes(size, 0)),
            };
            return Ok(Finish::Single(data));
        }
        let last = ((size.max(1) - 1) / ps) as u32;
        let mut ready = Vec::new();
        for index in 0..=last {
            if self.parts.iter().any(|(i, _)| *i == index) {
                continue;
            }
            let want = if index == last { size - u64::from(index) * ps } else { ps };
            match self.filling.remove(&index) {
                Some(p) if p.filled >= want && p.end as u64 >= want => {
                    ready.push(ReadyPart { index, data: self.pool.bytes(p.buf, want as usize) });
                }
                Some(p) => return Err(holes(size, u64::from(index) * ps + p.filled)),
                None => return Err(holes(size, u64::from(index) * ps)),
            }
        }
        Ok(Finish::Multipart { ready, last })
    }
}

fn holes(size: u64, have: u64) -> String {
    format!(
        "the object is committed at {size} bytes but only about {have} of them were written; S3 objects cannot \
         have holes"
    )
}

pub(super) enum Finish {
    Single(Bytes),
    Multipart { ready: Vec<ReadyPart>, last: u32 },
}

/// Uploads one part (creating the multipart upload first if no part did).
pub(super) async fn upload_part(
    sh: Arc<Shared>,
    key: String,
    mpu: Arc<OnceCell<String>>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
    part: ReadyPart,
) -> Result<CompletedPart, S3Failure> {
    let id = mpu_id(&sh, &key, &mpu).await;
    let result = match id {
        Ok(id) => {
            let number = part.index as i32 + 1;
            let len = part.data.len() as u64;
            let data = part.data;
            sh.request("UPLOAD_PART", &key, len, |req| {
                let (sh, key, id) = (sh.clone(), key.clone(), id.clone());
                async move {
                    let out = req
                        .client
                        .upload_part()
                        .bucket(&sh.bucket)
                        .key(&key)
                        .upload_id(id)
                        .part_number(number)
                        .content_length(len as i64)
                        .body(ByteStream::from(data))
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| sh.fail(&e, "UPLOAD_PART", &key, req.endpoint))?;
                    let part = CompletedPart::builder().set_e_tag(out.e_tag).part_number(number).build();
                    Ok((part, 0))
                }
            })
            .await
        }
        Err(e) => Err(e),
    };
    sh.parts_in_flight.fetch_sub(1, Ordering::SeqCst);
    if let Err(e) = &result {
        failed.lock().expect("upload flag poisoned").get_or_insert_with(|| e.message.clone());
    }
    result
}

async fn mpu_id(sh: &Arc<Shared>, key: &str, mpu: &OnceCell<String>) -> Result<String, S3Failure> {
    mpu.get_or_try_init(|| async {
        let id = sh
            .request("CREATE_MPU", key, 0, |req| {
                let (sh, key) = (sh.clone(), key.to_string());
                async move {
                    let out = req
                        .client
                        .create_multipart_upload()
                        .bucket(&sh.bucket)
                        .key(&key)
                        .send()
                        .await
                        .map_err(|e| sh.fail(&e, "CREATE_MPU", &key, req.endpoint))?;
                    let id = out.upload_id.ok_or_else(|| S3Failure {
                        kind: Kind::Runtime,
                        code: "no-upload-id".into(),
                        message: format!("CreateMultipartUpload of {key} returned no upload id"),
                    })?;
                    Ok((id, 0))
                }
            })
            .await?;
        sh.stats.multipart_uploads.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    })
    .await
    .cloned()
}

/// The commit: the last parts and CompleteMultipartUpload, or one
/// PutObject. A failure aborts the multipart upload.
pub(super) async fn commit(sh: Arc<Shared>, mut up: Upload, size: u64) -> Result<(), S3Failure> {
    let key = up.key.clone();
    let plan = up.finish(size).map_err(|m| S3Failure {
        kind: Kind::Runtime,
        code: "incomplete".into(),
        message: format!("commit s3://{}/{key}: {m}", sh.bucket),
    });
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            abort(&sh, &mut up).await;
            return Err(e);
        }
    };
    match plan {
        Finish::Single(data) => {
            let len = data.len() as u64;
            sh.request("PUT", &key, len, |req| {
                let (sh, key) = (sh.clone(), key.clone());
                async move {
                    req.client
                        .put_object()
                        .bucket(&sh.bucket)
                        .key(&key)
                        .content_length(len as i64)
                        .body(ByteStream::from(data))
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| sh.fail(&e, "PUT", &key, req.endpoint))?;
                    Ok(((), 0))
                }
            })
            .await?;
            sh.stats.single_puts.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Finish::Multipart { ready, last } => {
            for part in ready {
                sh.parts_in_flight.fetch_add(1, Ordering::SeqCst);
                let index = part.index;
                let task = sh.rt.spawn(upload_part(sh.clone(), key.clone(), up.mpu.clone(), up.failed.clone(), part));
                up.parts.push((index, task));
            }
            let mut done = Vec::new();
            let mut first_err = None;
            for (index, task) in std::mem::take(&mut up.parts) {
                match task.await {
                    Ok(Ok(p)) if index <= last => done.push(p),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(j) => {
                        first_err.get_or_insert(S3Failure {
                            kind: Kind::Runtime,
                            code: "task".into(),
                            message: format!("part {} of {key}: upload task failed: {j}", index + 1),
                        });
                    }
                }
            }
            if let Some(e) = first_err {
                abort(&sh, &mut up).await;
                return Err(e);
            }
            done.sort_by_key(|p| p.part_number);
            let id = up.mpu.get().cloned().unwrap_or_default();
            let result = sh
                .request("COMPLETE_MPU", &key, 0, |req| {
                    let (sh, key, id) = (sh.clone(), key.clone(), id.clone());
                    let parts = CompletedMultipartUpload::builder().set_parts(Some(done)).build();
                    async move {
                        req.client
                            .complete_multipart_upload()
                            .bucket(&sh.bucket)
                            .key(&key)
                            .upload_id(id)
                            .multipart_upload(parts)
                            .send()
                            .await
                            .map_err(|e| sh.fail(&e, "COMPLETE_MPU", &key, req.endpoint))?;
                        Ok(((), 0))
                    }
                })
                .await;
            // A server that completed the upload but answered with XML the
            // SDK does not accept (moto's CompleteMultipartUploadResponse
            // root) is believed only if the object is there at its size.
            let result = match result {
                Err(e) if e.code == "http-200" => match sh.head(&key).await {
                    Ok(Some(n)) if n == size => {
                        sh.stats.nonstandard_completes.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    _ => Err(e),
                },
                other => other,
            };
            if result.is_err() {
                abort(&sh, &mut up).await;
            }
            result
        }
    }
}

/// Aborts the object's multipart upload, if one was created: waits for its
/// part tasks first (one may be creating the upload right now), then sends
/// AbortMultipartUpload. Best effort; failures are counted, not raised.
pub(super) async fn abort(sh: &Arc<Shared>, up: &mut Upload) {
    for (_, task) in std::mem::take(&mut up.parts) {
        let _ = task.await;
    }
    let Some(id) = up.mpu.get().cloned() else { return };
    let key = up.key.clone();
    let r = sh
        .request("ABORT_MPU", &key, 0, |req| {
            let (sh, key) = (sh.clone(), key.clone());
            async move {
                req.client
                    .abort_multipart_upload()
                    .bucket(&sh.bucket)
                    .key(&key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| sh.fail(&e, "ABORT_MPU", &key, req.endpoint))?;
                Ok(((), 0))
            }
        })
        .await;
    if r.is_ok() {
        sh.stats.aborted_uploads.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: u64 = 8;

    #[test]
    fn small_objects_wait_for_one_put() {
        let mut u = Upload::new("k".into(), 0, PS);
        assert!(u.absorb(0, &[1; 8]).unwrap().is_empty(), "a one-part object waits for the commit");
        match u.finish(8).unwrap() {
            Finish::Single(b) => assert_eq!(&b[..], &[1; 8]),
            Finish::Multipart { .. } => panic!("expected one PUT"),
        }
    }

    #[test]
    fn parts_go_when_full_in_any_order() {
        let mut u = Upload::new("k".into(), 20, PS);
        // Second part first, then the first (as raw's layout does).
        let r = u.absorb(8, &[2; 8]).unwrap();
        assert_eq!(r.iter().map(|p| p.index).collect::<Vec<_>>(), vec![1]);
        let r = u.absorb(0, &[1; 4]).unwrap();
        assert!(r.is_empty());
        let r = u.absorb(4, &[1; 4]).unwrap();
        assert_eq!(r.iter().map(|p| p.index).collect::<Vec<_>>(), vec![0]);
        // A chunk across a part boundary fills part 2 partly.
        let r = u.absorb(16, &[3; 4]).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn chunks_of_a_part_in_any_order_give_its_bytes() {
        let mut u = Upload::new("k".into(), 0, PS);
        u.absorb(4, &[2; 4]).unwrap();
        u.absorb(0, &[1; 4]).unwrap();
        match u.finish(8).unwrap() {
            Finish::Single(b) => assert_eq!(&b[..], &[1, 1, 1, 1, 2, 2, 2, 2]),
            Finish::Multipart { .. } => panic!("expected one PUT"),
        }
        // An object smaller than a part: a buffer of its size only.
        let mut u = Upload::new("k".into(), 3, PS);
        u.absorb(0, &[7; 3]).unwrap();
        match u.finish(3).unwrap() {
            Finish::Single(b) => assert_eq!(&b[..], &[7; 3]),
            Finish::Multipart { .. } => panic!("expected one PUT"),
        }
    }

    #[test]
    fn holes_and_rewrites_are_refused() {
        let mut u = Upload::new("k".into(), 0, PS);
        u.absorb(0, &[1; 4]).unwrap();
        assert!(u.finish(8).is_err_and(|m| m.contains("holes")));
    }

    #[test]
    fn part_buffers_return_to_the_pool_when_the_request_drops_them() {
        let pool = PartPool::new(2);
        let mut u = Upload::new("k".into(), 8, PS).with_pool(pool.clone());
        u.absorb(0, &[5; 8]).unwrap();
        let Finish::Single(b) = u.finish(8).unwrap() else { panic!("expected one PUT") };
        assert_eq!(&b[..], &[5; 8]);
        let addr = b.as_ptr();
        let clone = b.clone();
        drop(b);
        assert!(pool.free.lock().unwrap().is_empty(), "still referenced by the clone");
        drop(clone);
        // The next object's part gets the same (already mapped) memory.
        let mut u = Upload::new("k2".into(), 8, PS).with_pool(pool.clone());
        u.absorb(0, &[6; 8]).unwrap();
        let Finish::Single(b) = u.finish(8).unwrap() else { panic!("expected one PUT") };
        assert_eq!(&b[..], &[6; 8]);
        assert_eq!(b.as_ptr(), addr);
        drop(b);
        // At most `keep` buffers are kept.
        let parts: Vec<Bytes> = (0..4).map(|_| pool.bytes(pool.take(4), 4)).collect();
        drop(parts);
        assert_eq!(pool.free.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_generator_writes_straight_into_the_parts() {
        // Object offsets reach the writer, split at the part boundary.
        let mut u = Upload::new("k".into(), 12, PS);
        let mut seen = Vec::new();
        let r = u
            .absorb_with(4, 8, &mut |dst: &mut [u8], at: u64| {
                seen.push((at, dst.len()));
                for (i, b) in dst.iter_mut().enumerate() {
                    *b = (at as usize + i) as u8;
                }
            })
            .unwrap();
        assert_eq!(seen, vec![(4, 4), (8, 4)]);
        assert!(r.is_empty(), "part 1 is not complete yet");
        let r = u.absorb(0, &[0, 1, 2, 3]).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(&r[0].data[..], &[0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_part_larger_than_its_hint_grows_and_keeps_its_bytes() {
        // The hint says 2 bytes (a one-page buffer); the object turns out
        // to be three pages.
        let ps = 4 * PART_ALIGN as u64;
        let mut u = Upload::new("k".into(), 2, ps);
        u.absorb(0, &[1; PART_ALIGN]).unwrap();
        u.absorb(PART_ALIGN as u64, &[2; 2 * PART_ALIGN]).unwrap();
        match u.finish(3 * PART_ALIGN as u64).unwrap() {
            Finish::Single(b) => {
                assert_eq!(b.len(), 3 * PART_ALIGN);
                assert!(b[..PART_ALIGN].iter().all(|&x| x == 1));
                assert!(b[PART_ALIGN..].iter().all(|&x| x == 2));
            }
            Finish::Multipart { .. } => panic!("expected one PUT"),
        }
    }
}
