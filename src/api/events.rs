//! The webhook event of an API request that succeeded, read from the
//! request and its response as Distribution reports them: push of a
//! manifest (`201` to a PUT) or of a blob (`201` ending an upload), mount
//! of a blob from another repository (`201` to a POST with `mount`), pull
//! of a manifest or a whole blob (`200` to a GET), delete of a manifest, a
//! tag or a blob (`202`). Other requests make none.

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};

use super::route::Route;
use super::RequestId;
use crate::notify::{Action, Event, Request, Target};
use crate::registry::Registry;

/// Blobs have no media type of their own.
const BLOB_TYPE: &str = "application/octet-stream";

fn header(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn length(h: &HeaderMap) -> u64 {
    header(h, header::CONTENT_LENGTH).parse().unwrap_or(0)
}

/// The event of `req` answered with `resp`, if it makes one.
pub(super) async fn of(
    registry: &Registry,
    user: Option<&str>,
    route: &Route,
    req: &Parts,
    status: StatusCode,
    answered: &HeaderMap,
) -> Option<Event> {
    let method = &req.method;
    let digest = header(answered, "docker-content-digest".parse().ok()?).to_string();
    let mut target = Target {
        repository: route.repo()?.to_string(),
        ..Target::default()
    };
    let action = match (route, method, status) {
        (Route::Manifest(repo, r), &Method::PUT, StatusCode::CREATED) => {
            target = Target::of_reference(repo, r);
            target.media_type = header(&req.headers, header::CONTENT_TYPE)
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            target.size = length(&req.headers);
            Action::Push
        }
        (
            Route::UploadStart(_) | Route::Upload(..),
            &Method::POST | &Method::PUT,
            StatusCode::CREATED,
        ) => {
            let repo = route.repo()?;
            let d = crate::oci::Digest::parse(&digest).ok()?;
            target.media_type = BLOB_TYPE.to_string();
            target.size = registry.blob(repo, &d).await.ok()?.size;
            let q = super::query(req);
            match q.get("mount") {
                // The source is named when the client named it.
                Some(_) => {
                    target.from_repository = q.get("from").cloned().unwrap_or_default();
                    Action::Mount
                }
                None => Action::Push,
            }
        }
        (Route::Manifest(repo, r), &Method::GET, StatusCode::OK) => {
            target = Target::of_reference(repo, r);
            target.media_type = header(answered, header::CONTENT_TYPE).to_string();
            target.size = length(answered);
            Action::Pull
        }
        (Route::Blob(..), &Method::GET, StatusCode::OK) => {
            target.media_type = BLOB_TYPE.to_string();
            target.size = length(answered);
            Action::Pull
        }
        (Route::Manifest(repo, r), &Method::DELETE, StatusCode::ACCEPTED) => {
            target = Target::of_reference(repo, r);
            Action::Delete
        }
        (Route::Blob(_, d), &Method::DELETE, StatusCode::ACCEPTED) => {
            target.digest = d.to_string();
            target.media_type = BLOB_TYPE.to_string();
            Action::Delete
        }
        _ => return None,
    };
    if target.digest.is_empty() {
        target.digest = digest;
    }
    target.length = target.size;
    let host = header(&req.headers, header::HOST).to_string();
    target.url = match target.digest.is_empty() {
        true => String::new(),
        false => format!(
            "http://{host}/v2/{}/{}/{}",
            target.repository,
            if target.media_type == BLOB_TYPE {
                "blobs"
            } else {
                "manifests"
            },
            target.digest
        ),
    };
    let request = Request::of(req, RequestId::of(req));
    Some(Event::new(action, target, request, user.unwrap_or("")))
}
