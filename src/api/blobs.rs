//! Blob and blob-upload endpoints.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, Response, StatusCode};

use super::limits::UploadLimits;
use super::range::byte_range;
use super::{empty, empty_response, header_str, query};
use crate::audit::ByUser;
use crate::oci::{Digest, RegistryError, RepoName};
use crate::registry::Registry;

const DIGEST_HEADER: &str = "Docker-Content-Digest";
const UPLOAD_UUID_HEADER: &str = "Docker-Upload-UUID";

pub(super) async fn get(
    registry: &Registry,
    repo: &RepoName,
    digest: &Digest,
    req: &Parts,
    head: bool,
) -> Result<Response<Body>, RegistryError> {
    let blob = registry.blob(repo, digest).await?;
    if !head {
        if let Some(url) = blob.redirect().await? {
            return Ok(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, url)
                .header(DIGEST_HEADER, digest.to_string())
                .body(Body::empty())
                .expect("valid response"));
        }
    }
    let range = match byte_range(header_str(req, header::RANGE), blob.size) {
        Ok(r) => r,
        Err(e) => {
            let mut resp = super::error_response(&e);
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                format!("bytes */{}", blob.size)
                    .parse()
                    .expect("valid header"),
            );
            return Ok(resp);
        }
    };
    let (status, start, len) = match range {
        Some((first, last)) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        None => (StatusCode::OK, 0, blob.size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(DIGEST_HEADER, digest.to_string());
    if let Some((first, last)) = range {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {first}-{last}/{}", blob.size),
        );
    }
    if head {
        return Ok(builder.body(Body::empty()).expect("valid response"));
    }
    let data = blob.open(start, len).await?;
    Ok(builder
        .body(Body::from_stream(data))
        .expect("valid response"))
}

/// Unlinks a blob from a repository, on the audit log as `by`.
pub(super) async fn delete(
    registry: &Registry,
    repo: &RepoName,
    digest: &Digest,
    by: &ByUser<'_>,
) -> Result<Response<Body>, RegistryError> {
    registry.delete_blob(repo, digest).await?;
    by.blob(repo, digest);
    Ok(empty(StatusCode::ACCEPTED))
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response<Body> {
    empty_response(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/{digest}"))
        .header(DIGEST_HEADER, digest.to_string())
        .body(Body::empty())
        .expect("valid response")
}

fn upload_accepted(repo: &RepoName, id: &str, size: u64, status: StatusCode) -> Response<Body> {
    empty_response(status)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"))
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header(UPLOAD_UUID_HEADER, id)
        .body(Body::empty())
        .expect("valid response")
}

fn digest_param(req: &Parts) -> Result<Option<Digest>, RegistryError> {
    query(req)
        .get("digest")
        .map(|d| Digest::parse(d))
        .transpose()
}

/// POST: a monolithic upload, a mount, or a new session. A mount takes the
/// blob from `from` when the user may pull there, or without `from` from any
/// repository the user may pull; otherwise a session starts, as the spec
/// asks.
pub(super) async fn start_upload(
    registry: &Registry,
    repo: &RepoName,
    req: &Parts,
    body: Body,
    may_pull: &(dyn Fn(&str) -> bool + Sync),
    limits: &UploadLimits<'_>,
) -> Result<Response<Body>, RegistryError> {
    let q = query(req);
    if let Some(mount) = q.get("mount") {
        let digest = Digest::parse(mount)?;
        let sources = match q.get("from") {
            Some(from) => vec![RepoName::parse(from)?.to_string()],
            None => registry.repositories_with_blobs().await?,
        };
        for source in sources.iter().filter(|s| may_pull(s)) {
            let source = RepoName::parse(source)?;
            if registry.mount_blob(repo, &digest, &source).await? {
                return Ok(blob_created(repo, &digest));
            }
        }
    } else if let Some(digest) = digest_param(req)? {
        let body = limits.body(registry, repo, None, req, None, body).await?;
        registry
            .put_blob(
                repo,
                limits.uploader(),
                &digest,
                body,
                limits.max_blob_size(),
            )
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    let id = limits.start_session(registry, repo).await?;
    Ok(upload_accepted(repo, &id, 0, StatusCode::ACCEPTED))
}

pub(super) async fn upload_status(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    limits: &UploadLimits<'_>,
) -> Result<Response<Body>, RegistryError> {
    let size = registry.uploads().size(repo, id, limits.uploader()).await?;
    Ok(upload_accepted(repo, id, size, StatusCode::NO_CONTENT))
}

/// `Content-Range` of a chunk; see [`super::range::content_range`].
fn content_range(req: &Parts) -> Result<Option<(u64, u64)>, RegistryError> {
    if req
        .headers
        .get_all(header::CONTENT_RANGE)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(RegistryError::BlobUploadInvalid(
            "more than one Content-Range header".into(),
        ));
    }
    let Some(raw) = header_str(req, header::CONTENT_RANGE) else {
        if req.headers.contains_key(header::CONTENT_RANGE) {
            return Err(RegistryError::BlobUploadInvalid(
                "Content-Range is not text".into(),
            ));
        }
        return Ok(None);
    };
    super::range::content_range(raw).map(Some)
}

pub(super) async fn patch_upload(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    req: &Parts,
    body: Body,
    limits: &UploadLimits<'_>,
) -> Result<Response<Body>, RegistryError> {
    let range = content_range(req)?;
    let body = limits
        .body(registry, repo, Some(id), req, range, body)
        .await?;
    let size = registry
        .uploads()
        .append(
            repo,
            id,
            limits.uploader(),
            range,
            body,
            limits.max_blob_size(),
        )
        .await?;
    Ok(upload_accepted(repo, id, size, StatusCode::ACCEPTED))
}

pub(super) async fn put_upload(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    req: &Parts,
    body: Body,
    limits: &UploadLimits<'_>,
) -> Result<Response<Body>, RegistryError> {
    let digest = digest_param(req)?.ok_or_else(|| {
        RegistryError::DigestInvalid(
            "the digest query parameter is required to finish an upload".into(),
        )
    })?;
    let range = content_range(req)?;
    let body = limits
        .body(registry, repo, Some(id), req, range, body)
        .await?;
    registry
        .uploads()
        .finish(
            repo,
            id,
            limits.uploader(),
            &digest,
            range,
            body,
            limits.max_blob_size(),
        )
        .await?;
    Ok(blob_created(repo, &digest))
}

pub(super) async fn cancel_upload(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    limits: &UploadLimits<'_>,
) -> Result<Response<Body>, RegistryError> {
    registry
        .uploads()
        .cancel(repo, id, limits.uploader())
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(v: &str) -> Parts {
        let req = axum::http::Request::builder()
            .header(header::CONTENT_RANGE, v)
            .body(())
            .unwrap();
        req.into_parts().0
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            content_range(&axum::http::Request::new(()).into_parts().0).unwrap(),
            None
        );
        assert_eq!(content_range(&with_range("0-99")).unwrap(), Some((0, 99)));
        assert_eq!(
            content_range(&with_range("bytes 100-199/*")).unwrap(),
            Some((100, 199))
        );
        assert_eq!(
            content_range(&with_range("bytes=5-9")).unwrap(),
            Some((5, 9))
        );
        for bad in ["", "abc", "5", "9-5", "-5", "1-x"] {
            assert!(content_range(&with_range(bad)).is_err(), "{bad}");
        }
    }
}
