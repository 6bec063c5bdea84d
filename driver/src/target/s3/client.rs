//! Building the S3 clients the way AWS users expect: the standard chain
//! (environment variables, shared config and credentials files, profiles,
//! web identity, container and instance credentials) through `aws-config`,
//! with the `s3.*` keys on top. One client per endpoint; TLS through rustls
//! with the system's roots plus an optional CA bundle (`s3.ca_bundle` or
//! `AWS_CA_BUNDLE`); certificate verification is always on.

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_smithy_http_client::tls;

use super::errors::Redactor;
use super::stats::{AttemptCounter, EndpointStats};
use crate::config::s3::S3Settings;
use crate::error::Error;

/// A client and its endpoint.
pub struct Endpoint {
    pub client: aws_sdk_s3::Client,
    /// The URL, for messages and results ("AWS (REGION)" for AWS's own).
    pub url: String,
    pub stats: Arc<EndpointStats>,
}

/// Everything the target needs from the environment.
pub struct Clients {
    pub endpoints: Vec<Endpoint>,
    pub region: String,
    pub path_style: bool,
    pub redactor: Redactor,
    /// Where the credentials came from (provider name; never the values).
    pub credentials_source: String,
}

/// Credentials handed in by a library caller (tests, embedding programs);
/// the CLI always uses the standard chain. Debug never shows the secret.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticCredentials([REDACTED])")
    }
}

/// Environment variables that name an endpoint for S3, in the SDK's order.
const ENDPOINT_ENV: &[&str] = &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"];

/// Loads the AWS configuration and builds one client per endpoint. Runs on
/// the target's runtime. Errors are usage errors: the setup is wrong.
pub async fn build(s: &S3Settings, creds: Option<&StaticCredentials>) -> Result<Clients, Error> {
    let http = http_client(s)?;
    let given = creds.is_some();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(s.max_attempts))
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build());
    if let Some(p) = &s.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(c) = creds {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            None,
            None,
            "mlpdrive-library",
        ));
    }
    let sdk = loader.load().await;

    let env_endpoint = ENDPOINT_ENV.iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let custom_endpoint = !s.endpoints.is_empty() || env_endpoint.is_some() || sdk.endpoint_url().is_some();
    let region = match sdk.region() {
        Some(r) => r.to_string(),
        None if custom_endpoint => "us-east-1".to_string(),
        None => {
            return Err(Error::usage(
                "S3: no AWS region is configured; set AWS_REGION, a `region` in the profile of ~/.aws/config, or \
                 --set s3.region=REGION",
            ));
        }
    };

    // Credentials: resolve once now, so a missing or broken chain is a clear
    // setup error, and so their values can be scrubbed from every message.
    let Some(provider) = sdk.credentials_provider() else {
        return Err(Error::usage("S3: no credentials provider is configured"));
    };
    use aws_sdk_s3::config::ProvideCredentials;
    let creds = match provider.provide_credentials().await {
        Ok(c) => c,
        Err(e) => {
            let why = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
            let why = first_line(&why);
            if let Some(name) = sso_profile(s.profile.as_deref()).await {
                return Err(Error::usage(format!(
                    "S3: profile `{name}` signs in through AWS IAM Identity Center (SSO) and has no valid cached SSO \
                     token ({}); run `aws sso login --profile {name}`, then start the run again",
                    without_debug(why)
                )));
            }
            return Err(Error::usage(format!(
                "S3: no usable AWS credentials ({why}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a \
                 profile of ~/.aws/credentials with AWS_PROFILE or --set s3.profile=NAME"
            )));
        }
    };
    let mut secrets = vec![creds.access_key_id().to_string(), creds.secret_access_key().to_string()];
    if let Some(t) = creds.session_token() {
        secrets.push(t.to_string());
    }
    let redactor = Redactor::new(secrets);
    // The chain tries the environment first; otherwise the profile (or a
    // later provider) supplied them.
    let credentials_source = if given {
        "given by the caller".to_string()
    } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty()) {
        "environment".to_string()
    } else {
        let profile = s.profile.clone().or_else(|| std::env::var("AWS_PROFILE").ok()).unwrap_or("default".into());
        format!("default chain, profile {profile}")
    };
    drop(creds);

    let path_style = s.path_style.unwrap_or(custom_endpoint);
    let urls: Vec<Option<String>> =
        if s.endpoints.is_empty() { vec![None] } else { s.endpoints.iter().cloned().map(Some).collect() };
    let mut endpoints = Vec::new();
    for url in urls {
        let stats = Arc::new(EndpointStats::default());
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            // mlpdrive verifies every byte it reads against the generator;
            // per-request CRCs would cost CPU the benchmark should not pay.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .interceptor(AttemptCounter(stats.clone()));
        if let Some(u) = &url {
            b = b.endpoint_url(u);
        }
        let shown = url
            .or_else(|| env_endpoint.clone())
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| format!("AWS S3 ({region})"));
        endpoints.push(Endpoint {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            url: redactor.clean(&shown),
            stats,
        });
    }
    Ok(Clients { endpoints, region, path_style, redactor, credentials_source })
}

/// rustls on ring with the system's roots, plus the CA bundle if one is
/// named. http:// endpoints work through the same client.
fn http_client(s: &S3Settings) -> Result<aws_sdk_s3::config::SharedHttpClient, Error> {
    let bundle = s.ca_bundle.clone().or_else(|| std::env::var_os("AWS_CA_BUNDLE").map(Into::into));
    let mut trust = tls::TrustStore::default();
    if let Some(path) = &bundle {
        let pem = std::fs::read(path).map_err(|e| {
            Error::usage(format!("S3 CA bundle {}: cannot read it ({e}); name a PEM file", path.display()))
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(Error::usage(format!(
                "S3 CA bundle {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )));
        }
        trust = trust.with_pem_certificate(pem);
    }
    let ctx = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| Error::usage(format!("S3 TLS setup failed: {e}")))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .tls_context(ctx)
        .build_https())
}

/// The profile the chain reads (`s3.profile`, else `AWS_PROFILE`, else
/// `default`) if it is an IAM Identity Center (SSO) profile: one with
/// `sso_session` or the legacy `sso_start_url` / `sso_account_id`.
async fn sso_profile(chosen: Option<&str>) -> Option<String> {
    use aws_types::os_shim_internal::{Env, Fs};
    let files = aws_runtime::env_config::file::EnvConfigFiles::default();
    let set = aws_config::profile::load(&Fs::real(), &Env::real(), &files, chosen.map(|p| p.to_string().into()))
        .await
        .ok()?;
    let name = set.selected_profile();
    let profile = set.get_profile(name)?;
    ["sso_session", "sso_start_url", "sso_account_id"]
        .iter()
        .any(|k| profile.get(k).is_some())
        .then(|| name.to_string())
}

/// The SDK's error chain without the Debug dump it appends
/// (` (ProviderError(…))`).
fn without_debug(s: &str) -> &str {
    let cut = s.match_indices(" (").find(|(i, _)| s[i + 2..].starts_with(|c: char| c.is_ascii_uppercase()));
    cut.map_or(s, |(i, _)| &s[..i])
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::without_debug;

    #[test]
    fn the_debug_dump_of_an_sdk_error_is_cut() {
        let s = "failed to read `/h/.aws/sso/cache/x.json`: No such file (os error 2) (ProviderError(IoError { .. }))";
        assert_eq!(without_debug(s), "failed to read `/h/.aws/sso/cache/x.json`: No such file (os error 2)");
        assert_eq!(without_debug("plain (lower case) text"), "plain (lower case) text");
    }
}
