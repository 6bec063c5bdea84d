//! S3 errors in words a user can act on.
//!
//! The SDK reports an error code (`NoSuchBucket`, `SignatureDoesNotMatch`),
//! an HTTP status, or a transport failure; this module turns each into one
//! line that names the bucket or object and the fix, and says whether the
//! problem is the configuration (exit 2 when found before the run) or the
//! run (exit 1). Every message passes through [`Redactor`], so a credential
//! can never reach a log, a result or the terminal, whatever a server or a
//! library puts into its error text.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// What went wrong, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Endpoint, bucket, credentials, region or clock: fix the setup.
    Config,
    /// Anything else (transient errors after retries, missing objects…).
    Runtime,
}

/// A classified S3 error: a one-line message and its kind.
#[derive(Debug, Clone)]
pub struct S3Failure {
    pub kind: Kind,
    pub message: String,
    /// The S3 error code or a short transport label, for the op log.
    pub code: String,
}

/// Removes secrets (access key id, secret key, session token) from text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        // Short strings would redact ordinary words; real keys are long.
        Redactor { secrets: secrets.into_iter().filter(|s| s.len() >= 8).collect() }
    }

    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[REDACTED]");
            }
        }
        out
    }
}

/// Where a request went: for messages.
pub struct Context<'a> {
    /// `PUT`, `GET`, `LIST`, … as the user would recognise it.
    pub op: &'a str,
    pub bucket: &'a str,
    /// Full object key, or "" for bucket-level requests.
    pub key: &'a str,
    pub endpoint: &'a str,
    pub region: &'a str,
}

impl Context<'_> {
    fn what(&self) -> String {
        if self.key.is_empty() {
            format!("{} s3://{}", self.op, self.bucket)
        } else {
            format!("{} s3://{}/{}", self.op, self.bucket, self.key)
        }
    }
}

/// Classifies an SDK error.
pub fn classify<E, R>(err: &SdkError<E, R>, cx: &Context<'_>, redact: &Redactor) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let what = cx.what();
    let (kind, code, message) = match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status_u16();
            let region_hint = se.raw().header_value("x-amz-bucket-region");
            let code = se.err().code().unwrap_or("").to_string();
            let text = se.err().message().unwrap_or("").to_string();
            let (kind, mut m) = explain_code(&code, status, &text, region_hint.as_deref(), cx);
            if code.is_empty() && text.is_empty() {
                m = format!("{m} ({})", source_chain(err));
            }
            (kind, if code.is_empty() { format!("http-{status}") } else { code }, m)
        }
        SdkError::DispatchFailure(df) => {
            let chain = source_chain(err);
            let m = if df.is_timeout() {
                format!(
                    "the endpoint {} did not answer in time ({chain}); check s3.endpoint / AWS_ENDPOINT_URL and that \
                     the server is up",
                    cx.endpoint
                )
            } else if chain.contains("certificate") || chain.contains("tls") || chain.contains("TLS") {
                format!(
                    "TLS with {} failed ({chain}); if the server's certificate is signed by a private CA, trust it \
                     with --set s3.ca_bundle=FILE.pem (or AWS_CA_BUNDLE); verification is never switched off",
                    cx.endpoint
                )
            } else {
                format!(
                    "cannot connect to the S3 endpoint {} ({chain}); check s3.endpoint / AWS_ENDPOINT_URL (scheme, \
                     host and port) and that the server is running",
                    cx.endpoint
                )
            };
            (Kind::Config, "connect".to_string(), m)
        }
        SdkError::TimeoutError(_) => (
            Kind::Runtime,
            "timeout".to_string(),
            format!("the request timed out at {}; the server is overloaded or unreachable", cx.endpoint),
        ),
        SdkError::ResponseError(re) => {
            let status = re.raw().status_u16();
            (
                Kind::Config,
                format!("http-{status}"),
                format!(
                    "{} answered HTTP {status} with something that is not an S3 response ({}); is s3.endpoint an S3 \
                     server?",
                    cx.endpoint,
                    source_chain(err)
                ),
            )
        }
        SdkError::ConstructionFailure(_) => {
            let chain = source_chain(err);
            let m = if chain.contains("credentials") || chain.contains("identity") {
                format!(
                    "no AWS credentials were found ({chain}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                     name a profile of ~/.aws/credentials with AWS_PROFILE or --set s3.profile=NAME"
                )
            } else {
                format!("the request could not be built ({chain})")
            };
            (Kind::Config, "construction".to_string(), m)
        }
        _ => (Kind::Runtime, "error".to_string(), source_chain(err)),
    };
    S3Failure { kind, code, message: redact.clean(&format!("{what}: {message}")) }
}

/// The hint for an S3 error code (or a bare status, for HEAD requests,
/// which carry no error body).
fn explain_code(code: &str, status: u16, text: &str, region_hint: Option<&str>, cx: &Context<'_>) -> (Kind, String) {
    let said = if text.is_empty() { String::new() } else { format!(" (server: {text})") };
    let bucket = cx.bucket;
    match code {
        "NoSuchBucket" => (
            Kind::Config,
            format!(
                "NoSuchBucket: bucket `{bucket}` does not exist at {}; create it, or add --set s3.create_bucket=true",
                cx.endpoint
            ),
        ),
        "AccessDenied" | "AllAccessDisabled" => (
            Kind::Config,
            format!(
                "AccessDenied{said}: the credentials in use may not {} in bucket `{bucket}`; check the user's or \
                 role's policy and the bucket policy, and that AWS_PROFILE / s3.profile names the intended account",
                cx.op
            ),
        ),
        "InvalidAccessKeyId" | "NotSignedUp" => (
            Kind::Config,
            format!(
                "{code}: the server does not know this access key id; check AWS_ACCESS_KEY_ID or the \
             profile's aws_access_key_id (and that the endpoint is the intended server)"
            ),
        ),
        "SignatureDoesNotMatch" => (
            Kind::Config,
            "SignatureDoesNotMatch: the request signature is wrong, so the secret access key does not belong to the \
             access key id; check AWS_SECRET_ACCESS_KEY or the profile's aws_secret_access_key"
                .to_string(),
        ),
        "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => (
            Kind::Config,
            format!("{code}: the session token is expired or invalid; refresh the credentials (AWS_SESSION_TOKEN)"),
        ),
        "RequestTimeTooSkewed" | "RequestExpired" => (
            Kind::Config,
            format!(
                "{code}: this machine's clock differs from the server's by more than S3 allows (15 minutes); set \
                 the clock right (NTP: timedatectl set-ntp true) and run again"
            ),
        ),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            (Kind::Config, wrong_region(code, region_hint, cx))
        }
        "NoSuchKey" => (Kind::Runtime, format!("NoSuchKey: the object does not exist{said}")),
        "NoSuchUpload" => {
            (Kind::Runtime, "NoSuchUpload: the multipart upload was aborted or expired on the server".to_string())
        }
        "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => (
            Kind::Runtime,
            format!(
                "{code}: the server throttled the request and every retry; lower s3.max_concurrency or raise \
                 s3.max_attempts"
            ),
        ),
        "EntityTooSmall" => (
            Kind::Runtime,
            format!("EntityTooSmall{said}: the server refused a part smaller than its minimum; raise s3.part_size"),
        ),
        "" => match status {
            301 => (Kind::Config, wrong_region("301 Moved Permanently", region_hint, cx)),
            403 => (
                Kind::Config,
                format!(
                    "HTTP 403 Forbidden: access denied or wrong credentials for bucket `{bucket}` (check \
                     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile, and the bucket policy)"
                ),
            ),
            404 => (Kind::Runtime, "HTTP 404 Not Found: the object or bucket does not exist".to_string()),
            s => (Kind::Runtime, format!("HTTP {s}{said}")),
        },
        other => (Kind::Runtime, format!("{other}{said}")),
    }
}

fn wrong_region(code: &str, hint: Option<&str>, cx: &Context<'_>) -> String {
    match hint {
        Some(r) if r != cx.region => format!(
            "{code}: bucket `{}` is in region {r}, not {}; add --set s3.region={r} (or AWS_REGION={r})",
            cx.bucket, cx.region
        ),
        _ => format!(
            "{code}: bucket `{}` is not in region {}; set its region with --set s3.region=REGION (or AWS_REGION)",
            cx.bucket, cx.region
        ),
    }
}

/// The error and its sources, joined with ": " (DisplayErrorContext's form).
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Status and headers of a raw response, whatever its type.
pub trait HasStatus {
    fn status_u16(&self) -> u16;
    fn header_value(&self, name: &str) -> Option<String>;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_u16(&self) -> u16 {
        self.status().as_u16()
    }

    fn header_value(&self, name: &str) -> Option<String> {
        self.headers().get(name).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context { op: "PUT", bucket: "bkt", key: "", endpoint: "http://127.0.0.1:9", region: "us-east-1" }
    }

    #[test]
    fn codes_become_actionable_hints() {
        let (k, m) = explain_code("NoSuchBucket", 404, "", None, &cx());
        assert_eq!(k, Kind::Config);
        assert!(m.contains("s3.create_bucket=true") && m.contains("`bkt`"), "{m}");
        let (_, m) = explain_code("PermanentRedirect", 301, "", Some("eu-west-1"), &cx());
        assert!(m.contains("s3.region=eu-west-1"), "{m}");
        let (_, m) = explain_code("RequestTimeTooSkewed", 403, "", None, &cx());
        assert!(m.contains("clock"), "{m}");
        let (_, m) = explain_code("SignatureDoesNotMatch", 403, "", None, &cx());
        assert!(m.contains("secret access key"), "{m}");
        let (_, m) = explain_code("", 403, "", None, &cx());
        assert!(m.contains("403"), "{m}");
        let (k, _) = explain_code("SlowDown", 503, "", None, &cx());
        assert_eq!(k, Kind::Runtime);
    }

    #[test]
    fn redactor_removes_secrets_but_not_short_words() {
        let r = Redactor::new(["AKIAEXAMPLEKEY123".to_string(), "abc".to_string()]);
        assert_eq!(r.clean("key AKIAEXAMPLEKEY123 abc"), "key [REDACTED] abc");
    }
}
