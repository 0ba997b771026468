//! The archive's object store: construction from [`StoreConfig`], keys, and the retry
//! policy around every call.
//!
//! - Local directory: object_store's `LocalFileSystem` rooted at the directory (writes go
//!   to a temporary file renamed into place, so a crash never leaves a torn object).
//! - S3 / R2: `AmazonS3Builder` with the endpoint (path-style requests, which R2, MinIO
//!   and moto all accept), the region (`auto` for R2) and credentials from the
//!   environment. object_store retries 5xx and connection errors itself (bounded here to
//!   [`CLIENT_RETRIES`] tries within [`CLIENT_RETRY_TIMEOUT`]).
//!
//! On top of that, [`Store::retry`] retries a whole operation (an upload with its
//! verification, a download) after a growing pause when the error is
//! [`ErrorKind::Retryable`]; permanent errors (4xx: credentials, permissions, a missing
//! bucket, a bad request) are never retried, as STYLE.md asks.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::config::{ArchiveConfig, StoreConfig};
use super::{ArchiveError, ErrorKind, Result};
use crate::progress::Progress;

/// Tries object_store makes of one request on 5xx and connection errors.
pub const CLIENT_RETRIES: usize = 4;
/// Longest object_store keeps retrying one request.
pub const CLIENT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries of a whole operation (upload + verify, download) on retryable errors.
pub const OP_ATTEMPTS: u32 = 3;
/// Pause before the second try of an operation; doubles each time.
pub const OP_BACKOFF: Duration = Duration::from_secs(1);
/// Directory of the lake's own records inside the archive (manifests), beside `tables/`.
pub const META_DIR: &str = "_lake";

/// The archive store with its key prefix.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
    /// Operations retried after a retryable error.
    pub retries: Arc<AtomicU64>,
}

impl Store {
    /// Opens the configured store. Fails when S3 credentials are missing or the local
    /// directory cannot be created.
    pub fn open(cfg: &ArchiveConfig) -> Result<Store> {
        let (inner, describe): (Arc<dyn ObjectStore>, String) = match &cfg.store {
            StoreConfig::Local { path } => {
                std::fs::create_dir_all(path).map_err(|source| ArchiveError::Io {
                    op: "create",
                    path: path.clone(),
                    source,
                })?;
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| ArchiveError::Config(format!("archive.path {}: {e}", path.display())))?;
                (Arc::new(fs), format!("file://{}", path.display()))
            }
            StoreConfig::S3 { bucket, endpoint, region, allow_http, credentials } => {
                let creds = credentials.as_ref().ok_or_else(|| {
                    ArchiveError::Config(
                        "archive store s3/r2 needs credentials: set LAKE_ARCHIVE_ACCESS_KEY_ID and \
                         LAKE_ARCHIVE_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) \
                         in the lake's environment"
                            .into(),
                    )
                })?;
                let retry = RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(200),
                        max_backoff: Duration::from_secs(10),
                        base: 2.0,
                    },
                    max_retries: CLIENT_RETRIES,
                    retry_timeout: CLIENT_RETRY_TIMEOUT,
                };
                let options = ClientOptions::new()
                    .with_allow_http(*allow_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(120));
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(&creds.access_key_id.0)
                    .with_secret_access_key(&creds.secret_access_key.0)
                    .with_virtual_hosted_style_request(false)
                    .with_retry(retry)
                    .with_client_options(options);
                if let Some(t) = &creds.session_token {
                    b = b.with_token(&t.0);
                }
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                let s3 = b.build().map_err(|e| ArchiveError::Config(format!("archive store: {e}")))?;
                let host = endpoint.as_deref().unwrap_or("aws");
                (Arc::new(s3), format!("s3://{bucket} at {host}"))
            }
        };
        let describe = if cfg.prefix.is_empty() { describe } else { format!("{describe} prefix {}", cfg.prefix) };
        Ok(Store { inner, prefix: cfg.prefix.clone(), describe, retries: Arc::default() })
    }

    /// Wraps any object store (tests).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, prefix: &str, describe: &str) -> Store {
        Store { inner, prefix: prefix.to_string(), describe: describe.to_string(), retries: Arc::default() }
    }

    /// The store for people and the manifest: `s3://bucket at https://… prefix p`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The object store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The key of `rel` (e.g. `tables/http/date=2026-11-01/f-….parquet`) under the prefix.
    pub fn key(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Runs `op` up to [`OP_ATTEMPTS`] times while it fails with a retryable error,
    /// pausing [`OP_BACKOFF`] × 2ⁿ between tries and telling `progress` about each retry.
    pub async fn retry<T, F, Fut>(&self, what: &str, progress: &dyn Progress, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pause = OP_BACKOFF;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == ErrorKind::Retryable && attempt < OP_ATTEMPTS => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(what, attempt, error = %e, "archive operation failed; retrying");
                    progress.message(&format!("{what}: {e}; retrying in {}s", pause.as_secs()));
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether an object_store error is worth retrying. 4xx answers (and errors that cannot
/// change by themselves: a bad path, an unsupported call) are permanent; 5xx, time-outs
/// and connection trouble are retryable.
pub fn classify(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => ErrorKind::Permanent,
        E::JoinError { .. } => ErrorKind::Retryable,
        _ => classify_chain(e),
    }
}

/// A generic error: look for an HTTP status in the message chain (object_store's retry
/// error says "Server returned non-2xx status code: 400 Bad Request").
fn classify_chain(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(rest) = text.split("status code: ").nth(1) {
            if let Some(code) = rest.get(..3).and_then(|c| c.parse::<u16>().ok()) {
                return if (400..500).contains(&code) && code != 408 && code != 429 {
                    ErrorKind::Permanent
                } else {
                    ErrorKind::Retryable
                };
            }
        }
        if text.contains("redirect without LOCATION") {
            return ErrorKind::Permanent;
        }
        cur = err.source();
    }
    ErrorKind::Retryable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Msg(&'static str);
    impl std::fmt::Display for Msg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Msg {}

    fn generic(m: &'static str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: Box::new(Msg(m)) }
    }

    #[test]
    fn four_hundreds_are_permanent_the_rest_retryable() {
        let bad = generic(
            "Error performing PUT http://x in 2ms - Server returned non-2xx status code: 400 Bad Request: <Error/>",
        );
        assert_eq!(classify(&bad), ErrorKind::Permanent);
        let slow =
            generic("Error performing PUT http://x - Server returned non-2xx status code: 429 Too Many Requests");
        assert_eq!(classify(&slow), ErrorKind::Retryable);
        let down =
            generic("Error performing PUT http://x - Server returned non-2xx status code: 503 Service Unavailable");
        assert_eq!(classify(&down), ErrorKind::Retryable);
        assert_eq!(classify(&generic("error sending request: connection refused")), ErrorKind::Retryable);
        let denied = object_store::Error::PermissionDenied { path: "p".into(), source: Box::new(Msg("403")) };
        assert_eq!(classify(&denied), ErrorKind::Permanent);
    }

    #[test]
    fn keys_carry_the_prefix() {
        let s = Store::from_object_store(Arc::new(object_store::memory::InMemory::new()), "lake", "mem");
        assert_eq!(
            s.key("tables/http/date=2026-11-01/f.parquet").as_ref(),
            "lake/tables/http/date=2026-11-01/f.parquet"
        );
        let s = Store::from_object_store(Arc::new(object_store::memory::InMemory::new()), "", "mem");
        assert_eq!(s.key("_lake/x.json").as_ref(), "_lake/x.json");
    }
}
