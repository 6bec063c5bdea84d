//! The `s3` keys: how an `s3://` target reaches its store. They are common
//! keys (any workload may run on S3) but only an `s3://` target accepts
//! them; `run` refuses them for other targets so a typo never silently does
//! nothing. Credentials are never config keys: they come from the standard
//! AWS chain (environment, shared credentials/config files and profiles).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::errors::key_error;
use crate::error::Error;
use crate::units::ByteSize;

/// Default `s3.part_size`: multipart part size and ranged-GET split size.
pub const DEFAULT_PART_BYTES: u64 = 8 << 20;
/// S3's smallest part (all parts but the last).
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_BYTES: u64 = 5 << 30;
/// Default `s3.max_concurrency`: HTTP requests in flight per run.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 32;
/// Largest `s3.max_concurrency`.
pub const MAX_CONCURRENCY: u32 = 4096;
/// Default `s3.max_attempts` (first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// How a request picks one of several `s3.endpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointSelect {
    /// Each request takes the next endpoint in turn.
    #[default]
    RoundRobin,
    /// Each request takes the endpoint with the fewest requests in flight.
    LeastConnections,
}

impl EndpointSelect {
    pub const NAMES: &'static [&'static str] = &["round_robin", "least_connections"];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointSelect::RoundRobin => "round_robin",
            EndpointSelect::LeastConnections => "least_connections",
        }
    }
}

impl fmt::Display for EndpointSelect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndpointSelect {
    type Err = String;

    fn from_str(s: &str) -> Result<EndpointSelect, String> {
        match s {
            "round_robin" => Ok(EndpointSelect::RoundRobin),
            "least_connections" => Ok(EndpointSelect::LeastConnections),
            other => Err(format!("expected one of {}, got '{other}'", EndpointSelect::NAMES.join(", "))),
        }
    }
}

impl Serialize for EndpointSelect {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EndpointSelect {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EndpointSelect, D::Error> {
        super::deserialize_from_str(deserializer, EndpointSelect::NAMES)
    }
}

/// The `s3` keys as written (every key optional; the AWS environment and
/// files fill in what is missing when the target opens).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Keys {
    /// Endpoint URL (`http://127.0.0.1:9000`); else `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, the profile's, or AWS's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Several endpoint URLs of one store, picked per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// How `endpoints` are picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_select: Option<EndpointSelect>,
    /// Region; else `AWS_REGION`, the profile's, or us-east-1 with a custom
    /// endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Named profile of the shared config/credentials files; else
    /// `AWS_PROFILE`, else `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`); default: on with a
    /// custom endpoint, off for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Multipart part size and ranged-GET split size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<ByteSize>,
    /// HTTP requests in flight at once, over the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Attempts per request (first try included) for throttling and
    /// transient errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// PEM file of CA certificates to trust in addition to the system's
    /// (also `AWS_CA_BUNDLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// Create the bucket if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_bucket: Option<bool>,
    /// Write one row per S3 request to this CSV file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_log: Option<PathBuf>,
}

/// The `s3` keys checked, with defaults applied where no environment is
/// involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URLs given in the config (`endpoint` or `endpoints`); empty:
    /// from the AWS environment.
    pub endpoints: Vec<String>,
    pub endpoint_select: EndpointSelect,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub path_style: Option<bool>,
    pub part_bytes: u64,
    pub max_concurrency: u32,
    pub max_attempts: u32,
    pub ca_bundle: Option<PathBuf>,
    pub create_bucket: bool,
    pub op_log: Option<PathBuf>,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Keys::default().resolve().expect("defaults are valid")
    }
}

impl S3Keys {
    /// Checks every key; errors name it (`config key `s3.part_size`: …`).
    pub fn resolve(&self) -> Result<S3Settings, Error> {
        let mut endpoints = Vec::new();
        match (&self.endpoint, &self.endpoints) {
            (Some(_), Some(_)) => {
                return Err(key_error(
                    "s3.endpoints",
                    "give either s3.endpoint (one URL) or s3.endpoints (a list), not both",
                ));
            }
            (Some(one), None) => endpoints.push(check_endpoint("s3.endpoint", one)?),
            (None, Some(list)) => {
                if list.is_empty() {
                    return Err(key_error("s3.endpoints", "the list is empty; give at least one URL"));
                }
                for (i, url) in list.iter().enumerate() {
                    endpoints.push(check_endpoint(&format!("s3.endpoints[{i}]"), url)?);
                }
            }
            (None, None) => {}
        }
        if self.endpoint_select.is_some() && endpoints.len() < 2 {
            return Err(key_error(
                "s3.endpoint_select",
                "only applies with two or more s3.endpoints, like --set 's3.endpoints=[http://a:9000,http://b:9000]'",
            ));
        }
        let part_bytes = self.part_size.map_or(DEFAULT_PART_BYTES, |b| b.0);
        if !(MIN_PART_BYTES..=MAX_PART_BYTES).contains(&part_bytes) {
            return Err(key_error(
                "s3.part_size",
                format!("{part_bytes} bytes is outside S3's part size limits (5 MiB to 5 GiB); use e.g. 8MiB"),
            ));
        }
        if !part_bytes.is_multiple_of(4096) {
            return Err(key_error("s3.part_size", format!("{part_bytes} bytes is not a multiple of 4 KiB")));
        }
        let max_concurrency = self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        super::check_int_range("s3.max_concurrency", u64::from(max_concurrency), 1, u64::from(MAX_CONCURRENCY))?;
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        super::check_int_range("s3.max_attempts", u64::from(max_attempts), 1, 20)?;
        if let Some(region) = &self.region
            && (region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(key_error("s3.region", format!("'{region}' is not a region name, like us-east-1")));
        }
        if let Some(profile) = &self.profile
            && profile.trim().is_empty()
        {
            return Err(key_error("s3.profile", "is empty; name a profile of ~/.aws/config, or remove the key"));
        }
        if let Some(ca) = &self.ca_bundle
            && !ca.is_file()
        {
            return Err(key_error(
                "s3.ca_bundle",
                format!("{} is not a readable file of PEM certificates", ca.display()),
            ));
        }
        if let Some(log) = &self.op_log {
            let parent = match log.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() || log.is_dir() {
                return Err(key_error(
                    "s3.op_log",
                    format!("{}: give a file path in an existing directory", log.display()),
                ));
            }
        }
        Ok(S3Settings {
            endpoints,
            endpoint_select: self.endpoint_select.unwrap_or_default(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            path_style: self.path_style,
            part_bytes,
            max_concurrency,
            max_attempts,
            ca_bundle: self.ca_bundle.clone(),
            create_bucket: self.create_bucket.unwrap_or(false),
            op_log: self.op_log.clone(),
        })
    }
}

/// An endpoint must be an http(s) URL with a host; credentials in it are
/// refused (they would end up in results and logs).
fn check_endpoint(key: &str, url: &str) -> Result<String, Error> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(key_error(key, format!("'{url}' is not a URL; write http://HOST:PORT or https://HOST")));
    };
    if scheme != "http" && scheme != "https" {
        return Err(key_error(key, format!("'{url}': the scheme must be http or https")));
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(key_error(
            key,
            "the URL contains user information; credentials belong in the AWS environment or credentials file, \
             never in a URL",
        ));
    }
    if authority.is_empty() {
        return Err(key_error(key, format!("'{url}' has no host")));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let s = S3Settings::default();
        assert_eq!(s.part_bytes, DEFAULT_PART_BYTES);
        assert!(s.endpoints.is_empty());
        assert!(!s.create_bucket);
    }

    #[test]
    fn bad_keys_are_named() {
        let k = S3Keys { part_size: Some(ByteSize(1 << 20)), ..S3Keys::default() };
        assert!(k.resolve().unwrap_err().to_string().contains("s3.part_size"));
        let k = S3Keys { endpoint: Some("localhost:9000".into()), ..S3Keys::default() };
        assert!(k.resolve().unwrap_err().to_string().contains("s3.endpoint"));
        let k = S3Keys { endpoint: Some("http://AKIA:secret@host".into()), ..S3Keys::default() };
        let m = k.resolve().unwrap_err().to_string();
        assert!(m.contains("user information") && !m.contains("secret"), "{m}");
        let k = S3Keys { endpoints: Some(vec![]), ..S3Keys::default() };
        assert!(k.resolve().unwrap_err().to_string().contains("s3.endpoints"));
        let k = S3Keys { endpoint_select: Some(EndpointSelect::LeastConnections), ..S3Keys::default() };
        assert!(k.resolve().unwrap_err().to_string().contains("s3.endpoint_select"));
        let k = S3Keys { max_concurrency: Some(0), ..S3Keys::default() };
        assert!(k.resolve().unwrap_err().to_string().contains("s3.max_concurrency"));
    }

    #[test]
    fn endpoints_list_is_checked_and_trimmed() {
        let k = S3Keys {
            endpoints: Some(vec!["http://a:1/".into(), "https://b".into()]),
            endpoint_select: Some(EndpointSelect::LeastConnections),
            ..S3Keys::default()
        };
        let s = k.resolve().unwrap();
        assert_eq!(s.endpoints, vec!["http://a:1".to_string(), "https://b".to_string()]);
        assert_eq!(s.endpoint_select, EndpointSelect::LeastConnections);
    }
}
