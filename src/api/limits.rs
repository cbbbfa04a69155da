//! An instance's limits on uploads ([`Limits`], set by `[limits]`) and how
//! upload requests are held to them: `max_blob_size`
//! (413 `SIZE_INVALID`, checked against `Content-Length` and
//! `Content-Range` before the body is read, and by the upload while it
//! streams) and
//! `max_upload_sessions` (429 `TOOMANYREQUESTS`).

use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::http::request::Parts;

use super::{body_stream, header_str};
use crate::oci::{RegistryError, RepoName};
use crate::registry::{BodyStream, Registry};

/// An instance's limits on uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest blob a client may upload; `None`: no limit.
    pub max_blob_size: Option<u64>,
    /// Upload sessions one user may hold open at once.
    pub max_upload_sessions: usize,
}

/// Default of `[limits] max_upload_sessions`: a push opens a few sessions at
/// a time (docker: 3 by default, at most 5), so 100 leaves room for a user
/// running many pushes in parallel plus abandoned sessions that wait for
/// their `upload_ttl`.
pub const DEFAULT_MAX_UPLOAD_SESSIONS: usize = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_size: None,
            max_upload_sessions: DEFAULT_MAX_UPLOAD_SESSIONS,
        }
    }
}

/// What an upload request is held to.
pub(super) struct UploadLimits<'a> {
    pub limits: &'a Limits,
    /// Whom sessions are counted for and belong to; pushing needs
    /// credentials, so an anonymous request would count as one shared user.
    pub user: Option<&'a str>,
    /// Sessions older than this no longer count (`[retention] upload_ttl`).
    pub upload_ttl: Duration,
}

impl UploadLimits<'_> {
    /// Opens an upload session, counted against `max_upload_sessions`.
    pub(super) async fn start_session(
        &self,
        registry: &Registry,
        repo: &RepoName,
    ) -> Result<String, RegistryError> {
        let max = self.limits.max_upload_sessions;
        registry
            .start_upload(repo, self.uploader(), max, self.upload_ttl)
            .await
    }

    /// The user sessions are opened for and bound to ("" for anonymous).
    pub(super) fn uploader(&self) -> &str {
        self.user.unwrap_or("")
    }

    /// The body of a request that adds to a blob: to session `id` (whose
    /// data so far counts), or a whole blob when `id` is `None`. Refused
    /// at once when `Content-Range` or `Content-Length` announce more than
    /// `max_blob_size`; a body that passes it while it streams is cut off
    /// by the upload itself (under the session's lock).
    pub(super) async fn body(
        &self,
        registry: &Registry,
        repo: &RepoName,
        id: Option<&str>,
        req: &Parts,
        range: Option<(u64, u64)>,
        body: Body,
    ) -> Result<BodyStream, RegistryError> {
        if let Some(max) = self.limits.max_blob_size {
            let before = match id {
                Some(id) => registry.uploads().size(repo, id, self.uploader()).await?,
                None => 0,
            };
            let length =
                header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
            let announced_end = [
                range.map(|(_, last)| last.saturating_add(1)),
                length.map(|n| before.saturating_add(n)),
            ];
            if announced_end.into_iter().flatten().any(|end| end > max) {
                return Err(RegistryError::blob_too_large(max));
            }
        }
        Ok(body_stream(body))
    }

    /// `max_blob_size`, for the upload to hold the body to.
    pub(super) fn max_blob_size(&self) -> Option<u64> {
        self.limits.max_blob_size
    }
}
