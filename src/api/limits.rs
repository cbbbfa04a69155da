//! An instance's `[limits]` applied to upload requests: `max_blob_size`
//! (413 `SIZE_INVALID`, checked against `Content-Length` and
//! `Content-Range` before the body is read, and while it streams) and
//! `max_upload_sessions` (429 `TOOMANYREQUESTS`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::http::request::Parts;
use futures_util::StreamExt;

use super::{body_stream, header_str};
use crate::config::Limits;
use crate::oci::{RegistryError, RepoName};
use crate::registry::{BodyStream, Registry};

/// What an upload request is held to.
pub(super) struct UploadLimits<'a> {
    pub limits: &'a Limits,
    /// Whom sessions are counted for; pushing needs credentials, so an
    /// anonymous request would count as one shared user.
    pub user: Option<&'a str>,
    /// Sessions older than this no longer count (`[retention] upload_ttl`).
    pub upload_ttl: Duration,
}

/// Tells whether a body was cut off for passing the size limit.
pub(super) struct SizeGuard {
    max: Option<u64>,
    passed: Arc<AtomicBool>,
}

fn too_large(max: u64) -> RegistryError {
    RegistryError::BlobTooLarge(format!(
        "the blob would exceed this registry's limit of {max} bytes (max_blob_size)"
    ))
}

impl SizeGuard {
    /// The outcome of storing the guarded body: 413 when the body passed the
    /// limit (the storage layer has rolled the chunk back).
    pub(super) fn outcome<T>(&self, r: Result<T, RegistryError>) -> Result<T, RegistryError> {
        match (self.max, r) {
            (Some(max), Err(_)) if self.passed.load(Ordering::Relaxed) => Err(too_large(max)),
            (_, r) => r,
        }
    }
}

impl UploadLimits<'_> {
    /// Opens an upload session, counted against `max_upload_sessions`.
    pub(super) async fn start_session(
        &self,
        registry: &Registry,
        repo: &RepoName,
    ) -> Result<String, RegistryError> {
        let user = self.user.unwrap_or("");
        let max = self.limits.max_upload_sessions;
        registry
            .start_upload(repo, user, max, self.upload_ttl)
            .await
    }

    /// The body of a request that adds to a blob: to session `id` (whose
    /// data so far counts), or a whole blob when `id` is `None`. Refused
    /// at once when `Content-Range` or `Content-Length` announce more than
    /// `max_blob_size`; otherwise it ends with an error as soon as it
    /// passes the limit.
    pub(super) async fn body(
        &self,
        registry: &Registry,
        repo: &RepoName,
        id: Option<&str>,
        req: &Parts,
        range: Option<(u64, u64)>,
        body: Body,
    ) -> Result<(BodyStream, SizeGuard), RegistryError> {
        let passed = Arc::new(AtomicBool::new(false));
        let Some(max) = self.limits.max_blob_size else {
            let guard = SizeGuard { max: None, passed };
            return Ok((body_stream(body), guard));
        };
        let before = match id {
            Some(id) => registry.uploads().size(repo, id).await?,
            None => 0,
        };
        let length = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        let announced_end = [
            range.map(|(_, last)| last.saturating_add(1)),
            length.map(|n| before.saturating_add(n)),
        ];
        if announced_end.into_iter().flatten().any(|end| end > max) {
            return Err(too_large(max));
        }
        let allowed = max - before.min(max);
        let flag = passed.clone();
        let mut seen = 0u64;
        let limited = body_stream(body).map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            if seen > allowed {
                flag.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other(format!(
                    "the body passed the limit of {max} bytes"
                )));
            }
            Ok(chunk)
        });
        let guard = SizeGuard {
            max: Some(max),
            passed,
        };
        Ok((Box::pin(limited), guard))
    }
}
