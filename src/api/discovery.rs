//! Content discovery: tag lists, the catalog and the referrers API.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, Response, StatusCode};
use serde::Serialize;

use super::{json_response, query};
use crate::oci::{media, Digest, RegistryError, RepoName};
use crate::registry::{paginate, Page, Registry};

/// `n` and `last` of a list request.
fn page_params(req: &Parts) -> Result<(Option<usize>, Option<String>), RegistryError> {
    let q = query(req);
    let n = q
        .get("n")
        .map(|n| {
            n.parse::<usize>().map_err(|_| {
                RegistryError::PaginationNumberInvalid(format!(
                    "n must be a non-negative number, not '{n}'"
                ))
            })
        })
        .transpose()?;
    Ok((n, q.get("last").cloned()))
}

/// Body of `tags/list`.
#[derive(Serialize)]
struct TagsBody<'a> {
    name: &'a str,
    tags: &'a [&'a str],
}

/// Body of `_catalog`.
#[derive(Serialize)]
struct CatalogBody<'a> {
    repositories: &'a [&'a str],
}

/// A JSON list response with a `Link` header when more pages follow.
fn page_response(
    path: &str,
    n: Option<usize>,
    page: &Page,
    body: &impl Serialize,
) -> Result<Response<Body>, RegistryError> {
    let body = serde_json::to_string(body).map_err(|e| RegistryError::Internal(e.to_string()))?;
    let mut resp = json_response(StatusCode::OK, body);
    if let (Some(n), Some(last)) = (n, page.next_last) {
        let last = percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC);
        let link = format!("<{path}?n={n}&last={last}>; rel=\"next\"");
        resp.headers_mut()
            .insert(header::LINK, link.parse().expect("valid header"));
    }
    Ok(resp)
}

pub(super) async fn tags(
    registry: &Registry,
    repo: &RepoName,
    req: &Parts,
) -> Result<Response<Body>, RegistryError> {
    let (n, last) = page_params(req)?;
    let tags = registry.tags(repo).await?;
    let page = paginate(&tags, n, last.as_deref(), |_| true);
    let body = TagsBody {
        name: repo.as_str(),
        tags: &page.items,
    };
    page_response(&format!("/v2/{repo}/tags/list"), n, &page, &body)
}

/// The repositories `may_pull` lets the user see.
pub(super) async fn catalog(
    registry: &Registry,
    req: &Parts,
    may_pull: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Response<Body>, RegistryError> {
    let (n, last) = page_params(req)?;
    let repos = registry.catalog().await?;
    let page = paginate(&repos, n, last.as_deref(), may_pull);
    let body = CatalogBody {
        repositories: &page.items,
    };
    page_response("/v2/_catalog", n, &page, &body)
}

pub(super) async fn referrers(
    registry: &Registry,
    repo: &RepoName,
    subject: &Digest,
    req: &Parts,
) -> Result<Response<Body>, RegistryError> {
    let q = query(req);
    let artifact_type = q.get("artifactType").map(String::as_str);
    let manifests = registry.referrers(repo, subject, artifact_type).await?;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut resp = json_response(StatusCode::OK, body.to_string());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        media::OCI_INDEX.parse().expect("valid header"),
    );
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            "OCI-Filters-Applied",
            "artifactType".parse().expect("valid header"),
        );
    }
    Ok(resp)
}
