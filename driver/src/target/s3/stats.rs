//! What the S3 target counts: requests, attempts (so retries), throttled
//! answers, failures and bytes, per endpoint too; and the optional op log
//! (one CSV row per request). The counts reach results.json as
//! `target.s3` (docs/results-schema.md).

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use aws_sdk_s3::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

/// Counters of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Requests (operations, not attempts) sent to this endpoint.
    pub requests: AtomicU64,
    /// Requests in flight now (for `least_connections`).
    pub in_flight: AtomicU64,
    /// HTTP attempts, retries included.
    pub attempts: AtomicU64,
    /// Attempts answered 503 SlowDown or 429.
    pub throttled: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

/// Counters of the whole target.
#[derive(Debug, Default)]
pub struct S3Stats {
    /// Requests that failed after their last attempt.
    pub failed_requests: AtomicU64,
    /// Multipart uploads aborted (after a failure or an interrupted run).
    pub aborted_uploads: AtomicU64,
    pub multipart_uploads: AtomicU64,
    pub single_puts: AtomicU64,
    /// CompleteMultipartUpload answers that were not standard XML, accepted
    /// after a HEAD showed the object complete.
    pub nonstandard_completes: AtomicU64,
}

/// Counts every HTTP attempt and every throttled answer of one endpoint's
/// client, so retries (attempts − requests) are reported, not hidden in
/// latency.
#[derive(Debug)]
pub struct AttemptCounter(pub std::sync::Arc<EndpointStats>);

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "mlpdrive-attempt-counter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(resp) = context.response() {
            let status = resp.status().as_u16();
            if status == 503 || status == 429 {
                self.0.throttled.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// The per-request CSV log (`s3.op_log`). Columns, documented in
/// docs/targets/s3.md: `start_unix_us,op,key,bytes,duration_us,status,endpoint`.
pub struct OpLog {
    out: Mutex<std::io::BufWriter<std::fs::File>>,
    /// Wall-clock time of `base`, so rows carry Unix times from a monotonic clock.
    base_unix_us: u64,
    base: Instant,
}

pub const OP_LOG_HEADER: &str = "start_unix_us,op,key,bytes,duration_us,status,endpoint";

impl OpLog {
    pub fn create(path: &std::path::Path) -> std::io::Result<OpLog> {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(path)?);
        writeln!(out, "{OP_LOG_HEADER}")?;
        let base_unix_us = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Ok(OpLog { out: Mutex::new(out), base_unix_us, base: Instant::now() })
    }

    /// One row. `status` is `ok` or the error code (no spaces or commas).
    pub fn row(&self, start: Instant, op: &str, key: &str, bytes: u64, status: &str, endpoint: usize) {
        let start_us = self.base_unix_us + start.saturating_duration_since(self.base).as_micros() as u64;
        let duration_us = start.elapsed().as_micros();
        let key = csv_field(key);
        let status = csv_field(status);
        let mut out = self.out.lock().expect("op log poisoned");
        // A failed log write must not fail the run's I/O; it shows at flush.
        let _ = writeln!(out, "{start_us},{op},{key},{bytes},{duration_us},{status},{endpoint}");
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.out.lock().expect("op log poisoned").flush()
    }
}

/// Quotes a CSV field if it needs it (RFC 4180).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        std::borrow::Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a/b.dat"), "a/b.dat");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
