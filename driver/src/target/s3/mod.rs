//! `s3://BUCKET[/PREFIX]`: objects in an S3 bucket, through aws-sdk-s3 on
//! a tokio runtime the target owns.
//!
//! Object `NAME` of a workload is the key `PREFIX/mlpdrive/NAME` (like the
//! `mlpdrive/` work directory of `file://`), so a run never touches keys
//! outside that prefix. Reads are ranged GETs (a read larger than
//! `s3.part_size` is split into concurrent ranges); writes are buffered into
//! parts and sent as one PUT or a multipart upload ([`upload`]); `delete`
//! and `list` are DeleteObject(s) and paginated ListObjectsV2. Every request
//! takes a slot of `s3.max_concurrency` and goes to one of the endpoints
//! (`round_robin` or `least_connections`). Opening the target checks the
//! setup with one LIST request, so a bad endpoint, a missing bucket, wrong
//! credentials, a wrong region or a skewed clock stop the run before it
//! starts, with the fix (docs/targets/s3.md).

mod client;
pub mod errors;
mod queue;
pub mod stats;
mod upload;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::table::HandleTable;
use super::uri::S3Spec;
use super::{Capabilities, ObjectHandle, Queue, Target, TargetError, TargetInfo};
use crate::buf::BufPool;
use crate::config::s3::{EndpointSelect, S3Keys, S3Settings};
use crate::error::Error;
use client::Clients;
pub use client::StaticCredentials;
use errors::{Context, Kind, S3Failure};
use stats::{OpLog, S3Stats};
use upload::Upload;

/// Keys of a run live below this component of the prefix.
pub const WORK_PREFIX: &str = "mlpdrive/";
/// Alignment the target asks of buffers and offsets (S3 needs none; this is
/// the generator's block granularity's divisor every workload already uses).
const ALIGN: usize = 512;
/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// One object the target knows: its key and current size.
pub(crate) struct Obj {
    key: String,
    size: AtomicU64,
}

/// State shared by the target, its queues and their tasks.
pub(crate) struct Shared {
    /// The target's runtime (owned by [`S3Target`], so the last task to drop
    /// a `Shared` never drops a runtime from inside it).
    rt: tokio::runtime::Handle,
    bucket: String,
    key_prefix: String,
    clients: Clients,
    select: EndpointSelect,
    next_rr: AtomicUsize,
    permits: Arc<Semaphore>,
    part_bytes: u64,
    max_parts_in_flight: usize,
    parts_in_flight: AtomicUsize,
    stats: S3Stats,
    table: HandleTable<Arc<Obj>>,
    uploads: Mutex<HashMap<u32, Upload>>,
    /// Part buffers for reuse (about one per part upload in flight).
    part_pool: Arc<upload::PartPool>,
    oplog: Option<OpLog>,
}

/// What a request closure gets: a client and its endpoint's index.
pub(crate) struct Req {
    client: aws_sdk_s3::Client,
    endpoint: usize,
}

impl Shared {
    /// Runs one S3 request: waits for a concurrency slot, picks an
    /// endpoint, counts it, logs it. `f` returns its value and the bytes it
    /// received; `sent` is the bytes it sends.
    async fn request<T, F, Fut>(self: &Arc<Self>, op: &'static str, key: &str, sent: u64, f: F) -> Result<T, S3Failure>
    where
        F: FnOnce(Req) -> Fut,
        Fut: Future<Output = Result<(T, u64), S3Failure>>,
    {
        let _permit = self.permits.acquire().await.expect("semaphore never closed");
        let endpoint = self.pick();
        let ep = &self.clients.endpoints[endpoint];
        ep.stats.requests.fetch_add(1, Ordering::Relaxed);
        ep.stats.in_flight.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        let result = f(Req { client: ep.client.clone(), endpoint }).await;
        ep.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        let (status, received) = match &result {
            Ok((_, n)) => ("ok", *n),
            Err(e) => (e.code.as_str(), 0),
        };
        if result.is_ok() {
            ep.stats.bytes_sent.fetch_add(sent, Ordering::Relaxed);
            ep.stats.bytes_received.fetch_add(received, Ordering::Relaxed);
        } else {
            self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(log) = &self.oplog {
            log.row(start, op, key, if op == "GET" { received } else { sent }, status, endpoint);
        }
        result.map(|(v, _)| v)
    }

    fn pick(&self) -> usize {
        let n = self.clients.endpoints.len();
        if n == 1 {
            return 0;
        }
        match self.select {
            EndpointSelect::RoundRobin => self.next_rr.fetch_add(1, Ordering::Relaxed) % n,
            EndpointSelect::LeastConnections => {
                // Ties go round robin, so idle endpoints share the load.
                let start = self.next_rr.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| self.clients.endpoints[i].stats.in_flight.load(Ordering::SeqCst))
                    .unwrap_or(0)
            }
        }
    }

    /// Classifies an SDK error of a request on `key`.
    fn fail<E, R>(&self, err: &SdkError<E, R>, op: &str, key: &str, endpoint: usize) -> S3Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + errors::HasStatus,
    {
        let cx = Context {
            op,
            bucket: &self.bucket,
            key,
            endpoint: &self.clients.endpoints[endpoint].url,
            region: &self.clients.region,
        };
        errors::classify(err, &cx, &self.clients.redactor)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }

    /// HEAD: the object's size, or None if it does not exist.
    async fn head(self: &Arc<Self>, key: &str) -> Result<Option<u64>, S3Failure> {
        self.request("HEAD", key, 0, |req| {
            let (sh, key) = (self.clone(), key.to_string());
            async move {
                match req.client.head_object().bucket(&sh.bucket).key(&key).send().await {
                    Ok(out) => Ok((Some(out.content_length.unwrap_or(0).max(0) as u64), 0)),
                    Err(SdkError::ServiceError(se)) if se.err().is_not_found() => Ok((None, 0)),
                    Err(e) => Err(sh.fail(&e, "HEAD", &key, req.endpoint)),
                }
            }
        })
        .await
    }

    /// Every key under `prefix` with its size (ListObjectsV2, all pages).
    async fn list_keys(self: &Arc<Self>, prefix: &str) -> Result<Vec<(String, u64)>, S3Failure> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .request("LIST", prefix, 0, |req| {
                    let (sh, prefix, token) = (self.clone(), prefix.to_string(), token.clone());
                    async move {
                        let r = req
                            .client
                            .list_objects_v2()
                            .bucket(&sh.bucket)
                            .prefix(&prefix)
                            .set_continuation_token(token)
                            .send()
                            .await
                            .map_err(|e| sh.fail(&e, "LIST", &prefix, req.endpoint))?;
                        Ok((r, 0))
                    }
                })
                .await?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// DeleteObjects in batches of 1000; per-key errors are reported.
    async fn delete_keys(self: &Arc<Self>, keys: Vec<String>) -> Result<(), S3Failure> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for batch in keys.chunks(DELETE_BATCH) {
            let ids: Vec<ObjectIdentifier> =
                batch.iter().filter_map(|k| ObjectIdentifier::builder().key(k).build().ok()).collect();
            let first = batch.first().cloned().unwrap_or_default();
            let log_key = first.clone();
            self.request("DELETE_MANY", &log_key, 0, |req| {
                let sh = self.clone();
                async move {
                    let delete =
                        Delete::builder().set_objects(Some(ids)).quiet(true).build().map_err(|e| S3Failure {
                            kind: Kind::Runtime,
                            code: "build".into(),
                            message: format!("DeleteObjects request: {e}"),
                        })?;
                    let out = req
                        .client
                        .delete_objects()
                        .bucket(&sh.bucket)
                        .delete(delete)
                        .send()
                        .await
                        .map_err(|e| sh.fail(&e, "DELETE", &first, req.endpoint))?;
                    if let Some(e) = out.errors().first() {
                        return Err(S3Failure {
                            kind: Kind::Runtime,
                            code: e.code().unwrap_or("error").to_string(),
                            message: format!(
                                "DELETE s3://{}/{}: {} {}",
                                sh.bucket,
                                e.key().unwrap_or("?"),
                                e.code().unwrap_or(""),
                                e.message().unwrap_or("")
                            ),
                        });
                    }
                    Ok(((), 0))
                }
            })
            .await?;
        }
        Ok(())
    }
}

/// The `s3://` target.
pub struct S3Target {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    info: TargetInfo,
    finished: std::sync::atomic::AtomicBool,
}

/// The S3 part of results.json (`target.s3`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct S3Record {
    pub bucket: String,
    pub key_prefix: String,
    pub region: String,
    pub path_style: bool,
    pub part_bytes: u64,
    pub max_concurrency: u32,
    pub endpoint_select: String,
    /// Provider the credentials came from (e.g. "EnvironmentVariable",
    /// "ProfileFile"); never the credentials.
    pub credentials_source: String,
    pub requests: u64,
    /// HTTP attempts beyond the first of each request.
    pub retries: u64,
    /// Attempts answered 503/429 (throttling).
    pub throttled: u64,
    pub failed_requests: u64,
    pub single_puts: u64,
    pub multipart_uploads: u64,
    pub aborted_uploads: u64,
    /// CompleteMultipartUpload answers the SDK could not parse, accepted
    /// because a HEAD then showed the object at its full size.
    pub nonstandard_completes: u64,
    pub endpoints: Vec<EndpointRecord>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EndpointRecord {
    pub url: String,
    pub requests: u64,
    pub retries: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl S3Target {
    /// Builds the clients from the AWS environment and `s3.*`, then checks
    /// the setup with one LIST (creating the bucket if asked and missing).
    pub fn open(spec: &S3Spec, display: &str, keys: Option<&S3Keys>) -> Result<S3Target, Error> {
        S3Target::open_with(spec, display, keys, None)
    }

    /// As [`S3Target::open`], with credentials from the caller instead of
    /// the AWS chain (for programs that embed the library, and tests).
    pub fn open_with(
        spec: &S3Spec,
        display: &str,
        keys: Option<&S3Keys>,
        creds: Option<&StaticCredentials>,
    ) -> Result<S3Target, Error> {
        let settings: S3Settings = keys.map(S3Keys::resolve).transpose()?.unwrap_or_default();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("mlpdrive-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::failed(format!("S3: cannot start the I/O runtime: {e}")))?;
        let clients = rt.block_on(client::build(&settings, creds))?;
        let handle = rt.handle().clone();
        let key_prefix =
            if spec.prefix.is_empty() { WORK_PREFIX.to_string() } else { format!("{}/{WORK_PREFIX}", spec.prefix) };
        let oplog = match &settings.op_log {
            Some(p) => Some(OpLog::create(p).map_err(|e| Error::usage(format!("s3.op_log {}: {e}", p.display())))?),
            None => None,
        };
        let shared = Arc::new(Shared {
            rt: handle,
            bucket: spec.bucket.clone(),
            key_prefix,
            clients,
            select: settings.endpoint_select,
            next_rr: AtomicUsize::new(0),
            permits: Arc::new(Semaphore::new(settings.max_concurrency as usize)),
            part_bytes: settings.part_bytes,
            max_parts_in_flight: settings.max_concurrency as usize,
            parts_in_flight: AtomicUsize::new(0),
            stats: S3Stats::default(),
            table: HandleTable::default(),
            uploads: Mutex::new(HashMap::new()),
            part_pool: upload::PartPool::new(settings.max_concurrency as usize + 1),
            oplog,
        });
        let urls: Vec<&str> = shared.clients.endpoints.iter().map(|e| e.url.as_str()).collect();
        let location = format!("{display}/{WORK_PREFIX} at {}", urls.join(", ")).replace("//mlpdrive", "/mlpdrive");
        let info = TargetInfo {
            kind: "s3",
            location,
            caps: Capabilities { align: ALIGN, ranged_writes: false, stores_data: true, max_object_bytes: None },
        };
        let target = S3Target { shared, rt: Some(rt), info, finished: false.into() };
        target.preflight(settings.create_bucket)?;
        Ok(target)
    }

    /// One LIST on the work prefix from every endpoint: the cheapest
    /// request that exercises endpoint, credentials, region and bucket,
    /// with an error body to explain a refusal.
    fn preflight(&self, create_bucket: bool) -> Result<(), Error> {
        let sh = &self.shared;
        for endpoint in 0..sh.clients.endpoints.len() {
            let client = sh.clients.endpoints[endpoint].client.clone();
            sh.clients.endpoints[endpoint].stats.requests.fetch_add(1, Ordering::Relaxed);
            let r =
                sh.rt.block_on(client.list_objects_v2().bucket(&sh.bucket).prefix(&sh.key_prefix).max_keys(1).send());
            let Err(e) = r else { continue };
            let f = sh.fail(&e, "LIST", "", endpoint);
            if create_bucket && f.code == "NoSuchBucket" {
                self.create_bucket(endpoint)?;
                continue;
            }
            return Err(match f.kind {
                Kind::Config => Error::usage(format!("S3 target: {}", f.message)),
                Kind::Runtime => Error::failed(format!("S3 target: {}", f.message)),
            });
        }
        Ok(())
    }

    fn create_bucket(&self, endpoint: usize) -> Result<(), Error> {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let sh = &self.shared;
        let client = sh.clients.endpoints[endpoint].client.clone();
        sh.clients.endpoints[endpoint].stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = client.create_bucket().bucket(&sh.bucket);
        if sh.clients.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(sh.clients.region.as_str()))
                    .build(),
            );
        }
        match sh.rt.block_on(req.send()) {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => {
                let f = sh.fail(&e, "CREATE_BUCKET", "", endpoint);
                Err(Error::usage(format!("S3 target: s3.create_bucket=true, but {}", f.message)))
            }
        }
    }

    fn obj(&self, name: &str, key: String, size: u64) -> ObjectHandle {
        self.shared.table.insert(name, Arc::new(Obj { key, size: AtomicU64::new(size) }))
    }

    fn namespace_err(f: S3Failure) -> TargetError {
        TargetError::namespace(f.message)
    }

    /// The counters for results.json.
    pub fn record(&self) -> S3Record {
        let sh = &self.shared;
        let endpoints: Vec<EndpointRecord> = sh
            .clients
            .endpoints
            .iter()
            .map(|e| {
                let requests = e.stats.requests.load(Ordering::Relaxed);
                let attempts = e.stats.attempts.load(Ordering::Relaxed);
                EndpointRecord {
                    url: e.url.clone(),
                    requests,
                    retries: attempts.saturating_sub(requests),
                    bytes_sent: e.stats.bytes_sent.load(Ordering::Relaxed),
                    bytes_received: e.stats.bytes_received.load(Ordering::Relaxed),
                }
            })
            .collect();
        S3Record {
            bucket: sh.bucket.clone(),
            key_prefix: sh.key_prefix.clone(),
            region: sh.clients.region.clone(),
            path_style: sh.clients.path_style,
            part_bytes: sh.part_bytes,
            max_concurrency: sh.max_parts_in_flight as u32,
            endpoint_select: sh.select.as_str().to_string(),
            credentials_source: sh.clients.credentials_source.clone(),
            requests: endpoints.iter().map(|e| e.requests).sum(),
            retries: endpoints.iter().map(|e| e.retries).sum(),
            throttled: sh.clients.endpoints.iter().map(|e| e.stats.throttled.load(Ordering::Relaxed)).sum(),
            failed_requests: sh.stats.failed_requests.load(Ordering::Relaxed),
            single_puts: sh.stats.single_puts.load(Ordering::Relaxed),
            multipart_uploads: sh.stats.multipart_uploads.load(Ordering::Relaxed),
            aborted_uploads: sh.stats.aborted_uploads.load(Ordering::Relaxed),
            nonstandard_completes: sh.stats.nonstandard_completes.load(Ordering::Relaxed),
            endpoints,
        }
    }

    /// Aborts every multipart upload still open (its object was never
    /// committed: an error stopped the run, or Ctrl-C) and flushes the op
    /// log. Returns notes for the results. Idempotent.
    pub fn close(&self) -> Vec<String> {
        if self.finished.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        let sh = self.shared.clone();
        let open: Vec<Upload> = sh.uploads.lock().expect("uploads poisoned").drain().map(|(_, u)| u).collect();
        let mut notes = Vec::new();
        let before = sh.stats.aborted_uploads.load(Ordering::Relaxed);
        let started = open.iter().filter(|u| u.multipart_started() || u.mpu.initialized()).count();
        if started > 0 {
            let sh2 = sh.clone();
            let work = async move {
                for mut u in open {
                    upload::abort(&sh2, &mut u).await;
                }
            };
            if sh.rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), work).await }).is_err() {
                notes.push("S3: aborting unfinished multipart uploads timed out after 60 s; some may remain".into());
            }
            let aborted = sh.stats.aborted_uploads.load(Ordering::Relaxed) - before;
            notes.push(format!(
                "S3: {aborted} of {started} unfinished multipart upload(s) aborted (their objects were never committed)"
            ));
        }
        if let Some(log) = &sh.oplog
            && let Err(e) = log.flush()
        {
            notes.push(format!("S3: the op log could not be written completely: {e}"));
        }
        notes
    }
}

impl Drop for S3Target {
    fn drop(&mut self) {
        self.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Target for S3Target {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn create(&self, name: &str, size_hint: u64) -> Result<ObjectHandle, TargetError> {
        let key = self.shared.key(name);
        let h = self.obj(name, key.clone(), 0);
        let old = {
            let mut ups = self.shared.uploads.lock().expect("uploads poisoned");
            let stale: Vec<u32> = ups.iter().filter(|(_, u)| u.key == key).map(|(h, _)| *h).collect();
            let old: Vec<Upload> = stale.into_iter().filter_map(|h| ups.remove(&h)).collect();
            ups.insert(
                h.0,
                Upload::new(key, size_hint, self.shared.part_bytes).with_pool(self.shared.part_pool.clone()),
            );
            old
        };
        for mut u in old {
            let sh = self.shared.clone();
            self.shared.rt.block_on(async move { upload::abort(&sh, &mut u).await });
        }
        Ok(h)
    }

    fn open(&self, name: &str) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        if let Some((h, o)) = self.shared.table.lookup(name) {
            return Ok(Some((h, o.size.load(Ordering::SeqCst))));
        }
        let key = self.shared.key(name);
        let sh = self.shared.clone();
        let size = sh.rt.block_on(sh.head(&key)).map_err(Self::namespace_err)?;
        Ok(size.map(|s| (self.obj(name, key, s), s)))
    }

    fn open_listed(&self, name: &str, size: u64) -> Result<Option<(ObjectHandle, u64)>, TargetError> {
        if let Some((h, o)) = self.shared.table.lookup(name) {
            return Ok(Some((h, o.size.load(Ordering::SeqCst))));
        }
        Ok(Some((self.obj(name, self.shared.key(name), size), size)))
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        self.delete_many(&[name.to_string()])
    }

    fn delete_many(&self, names: &[String]) -> Result<(), TargetError> {
        let keys: Vec<String> = names.iter().map(|n| self.shared.key(n)).collect();
        for n in names {
            self.shared.table.remove(n);
        }
        let sh = self.shared.clone();
        sh.rt.block_on(sh.delete_keys(keys)).map_err(Self::namespace_err)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let sh = self.shared.clone();
        let full = sh.key(prefix);
        let mut v: Vec<(String, u64)> = sh
            .rt
            .block_on(sh.list_keys(&full))
            .map_err(Self::namespace_err)?
            .into_iter()
            .filter_map(|(k, s)| k.strip_prefix(&sh.key_prefix).map(|n| (n.to_string(), s)))
            .collect();
        v.sort();
        Ok(v)
    }

    fn queue(&self, depth: usize, _pool: &mut BufPool) -> Result<Box<dyn Queue>, TargetError> {
        Ok(Box::new(queue::S3Queue::new(self.shared.clone(), depth)))
    }

    fn finish(&self) -> Vec<String> {
        self.close()
    }

    fn record(&self) -> Option<serde_json::Value> {
        serde_json::to_value(S3Target::record(self)).ok()
    }
}
