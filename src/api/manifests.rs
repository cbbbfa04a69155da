//! Manifest endpoints.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, Response, StatusCode};
use http_body_util::BodyExt;

use super::{empty, empty_response, header_str};
use crate::audit::ByUser;
use crate::oci::{Reference, RegistryError, RepoName};
use crate::registry::manifest::MAX_MANIFEST_SIZE;
use crate::registry::urls::ManifestUrls;
use crate::registry::Registry;

fn too_large() -> RegistryError {
    RegistryError::ManifestTooLarge(format!(
        "manifest exceeds the limit of {MAX_MANIFEST_SIZE} bytes"
    ))
}

pub(super) async fn get(
    registry: &Registry,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
) -> Result<Response<Body>, RegistryError> {
    let m = registry.manifest(repo, reference).await?;
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, m.media_type)
        .header(header::CONTENT_LENGTH, m.bytes.len())
        .header("Docker-Content-Digest", m.digest.to_string());
    if let Some(why) = &m.stale {
        // RFC 7234's "response is stale", with why.
        let text = why.replace(['"', '\\', '\r', '\n'], " ");
        builder = builder.header(header::WARNING, format!("110 berth \"{text}\""));
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.bytes)
    };
    Ok(builder.body(body).expect("valid response"))
}

pub(super) async fn put(
    registry: &Registry,
    repo: &RepoName,
    reference: &Reference,
    req: &Parts,
    body: Body,
    urls: Option<&ManifestUrls>,
) -> Result<Response<Body>, RegistryError> {
    let declared = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST_SIZE as u64) {
        return Err(too_large());
    }
    let content_type = header_str(req, header::CONTENT_TYPE)
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_string());
    let limited = http_body_util::Limited::new(body, MAX_MANIFEST_SIZE);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(RegistryError::ManifestInvalid(format!(
                "manifest body broke off: {e}"
            )))
        }
    };
    let put = registry
        .put_manifest(repo, reference, content_type.as_deref(), bytes, urls)
        .await?;
    let mut builder = empty_response(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{repo}/manifests/{}", put.digest),
        )
        .header("Docker-Content-Digest", put.digest.to_string());
    if let Some(subject) = put.subject {
        builder = builder.header("OCI-Subject", subject.to_string());
    }
    Ok(builder.body(Body::empty()).expect("valid response"))
}

/// Deletes a tag or a manifest, on the audit log as `by`.
pub(super) async fn delete(
    registry: &Registry,
    repo: &RepoName,
    reference: &Reference,
    by: &ByUser<'_>,
) -> Result<Response<Body>, RegistryError> {
    let tags = registry.delete_manifest(repo, reference).await?;
    by.manifest(repo, reference, &tags);
    Ok(empty(StatusCode::ACCEPTED))
}
