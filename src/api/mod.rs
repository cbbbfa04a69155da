//! The OCI Distribution HTTP API of one instance: authentication, routing of
//! the parsed path to thin handlers over [`Registry`], and rendering of
//! [`RegistryError`] as OCI error JSON. It must not touch storage directly.

mod blobs;
mod discovery;
mod manifests;
pub mod route;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use base64::Engine as _;
use futures_util::TryStreamExt;

use crate::auth::Authenticator;
use crate::oci::RegistryError;
use crate::registry::{BodyStream, Registry};
use route::Route;

/// The user a request was authenticated as, left in the response's
/// extensions for the access log.
#[derive(Clone, Debug)]
pub struct AuthenticatedUser(pub String);

/// Renders an error as `{"errors":[{code,message,detail}]}`.
pub fn error_response(err: &RegistryError) -> Response<Body> {
    let body = serde_json::json!({
        "errors": [{
            "code": err.code(),
            "message": err.public_message(),
            "detail": serde_json::Value::Null,
        }]
    });
    Response::builder()
        .status(StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

fn unauthorized(realm: &str, message: &str) -> Response<Body> {
    let mut resp = error_response(&RegistryError::Unauthorized(message.to_string()));
    let challenge = format!("Basic realm=\"{}\"", realm.replace('"', ""));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("realm is a header-safe instance name"),
    );
    resp
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Handles one request for an instance.
pub async fn handle(
    registry: &Registry,
    auth: &Arc<Authenticator>,
    req: Request<Body>,
) -> Response<Body> {
    let Some((user, password)) = basic_credentials(req.headers()) else {
        return unauthorized(auth.realm(), "authentication required");
    };
    if !auth.verify(&user, &password).await {
        return unauthorized(auth.realm(), "invalid user name or password");
    }
    let mut resp = match dispatch(registry, req).await {
        Ok(r) => r,
        Err(e) => {
            if let RegistryError::Internal(cause) = &e {
                tracing::error!("{cause}");
            }
            error_response(&e)
        }
    };
    resp.extensions_mut().insert(AuthenticatedUser(user));
    resp
}

async fn dispatch(
    registry: &Registry,
    req: Request<Body>,
) -> Result<Response<Body>, RegistryError> {
    let (req, body) = req.into_parts();
    let route = route::parse(req.uri.path())?;
    let method = req.method.clone();
    let not_allowed = || {
        Err(RegistryError::MethodNotAllowed(format!(
            "{method} is not allowed here"
        )))
    };
    match (&route, &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => Ok(json_response(StatusCode::OK, "{}")),
        (Route::Catalog, &Method::GET) => discovery::catalog(registry, &req).await,
        (Route::Tags(repo), &Method::GET) => discovery::tags(registry, repo, &req).await,
        (Route::Referrers(repo, d), &Method::GET) => {
            discovery::referrers(registry, repo, d, &req).await
        }
        (Route::Manifest(repo, r), &Method::GET | &Method::HEAD) => {
            manifests::get(registry, repo, r, method == Method::HEAD).await
        }
        (Route::Manifest(repo, r), &Method::PUT) => {
            manifests::put(registry, repo, r, &req, body).await
        }
        (Route::Manifest(repo, r), &Method::DELETE) => manifests::delete(registry, repo, r).await,
        (Route::Blob(repo, d), &Method::GET | &Method::HEAD) => {
            blobs::get(registry, repo, d, &req, method == Method::HEAD).await
        }
        (Route::Blob(repo, d), &Method::DELETE) => blobs::delete(registry, repo, d).await,
        (Route::UploadStart(repo), &Method::POST) => {
            blobs::start_upload(registry, repo, &req, body).await
        }
        (Route::Upload(repo, id), &Method::GET) => blobs::upload_status(registry, repo, id).await,
        (Route::Upload(repo, id), &Method::PATCH) => {
            blobs::patch_upload(registry, repo, id, &req, body).await
        }
        (Route::Upload(repo, id), &Method::PUT) => {
            blobs::put_upload(registry, repo, id, &req, body).await
        }
        (Route::Upload(repo, id), &Method::DELETE) => {
            blobs::cancel_upload(registry, repo, id).await
        }
        _ => not_allowed(),
    }
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("valid response")
}

fn empty_response(status: StatusCode) -> axum::http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, "0")
}

fn empty(status: StatusCode) -> Response<Body> {
    empty_response(status)
        .body(Body::empty())
        .expect("valid response")
}

fn query(req: &Parts) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(&req.uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn body_stream(body: Body) -> BodyStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

fn header_str(req: &Parts, name: header::HeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}
