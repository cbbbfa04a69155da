//! The OCI Distribution HTTP API of one instance: authentication, routing of
//! the parsed path to thin handlers over [`Registry`], and rendering of
//! [`RegistryError`] as OCI error JSON. It must not touch storage directly.

mod blobs;
mod discovery;
mod events;
mod limits;
mod manifests;
pub mod range;
pub mod route;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use futures_util::TryStreamExt;

use axum::extract::ConnectInfo;

use crate::auth::{Access, Action, Anonymous, Authenticator, Refused};
use crate::oci::{RegistryError, RepoName};
use crate::registry::{BodyStream, Registry};
pub use limits::Limits;
use route::Route;

/// The id of a request (its `X-Request-Id`), put in its extensions by the
/// server, for the events it makes.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id of the request of `parts` ("" when the server gave it none).
    pub fn of(parts: &Parts) -> &str {
        parts.extensions.get::<RequestId>().map_or("", |r| &r.0)
    }
}

/// The user a request was authenticated as, left in the response's
/// extensions for the access log.
#[derive(Clone, Debug)]
pub struct AuthenticatedUser(pub String);

/// The user name of a refused login (a wrong password, a throttled
/// client), left in the response's extensions for the access log.
#[derive(Clone, Debug)]
pub struct RefusedUser(pub String);

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

/// What a request is checked against: one instance's content, users and
/// access policy.
pub struct Instance<'a> {
    pub name: &'a str,
    pub registry: &'a Registry,
    pub auth: &'a Authenticator,
    pub access: &'a Access,
    pub limits: &'a Limits,
    /// Upload sessions older than this are abandoned.
    pub upload_ttl: std::time::Duration,
    /// Where the events of its requests go.
    pub notify: &'a crate::notify::Notifier,
    /// `[maintenance] read_only`: every write is refused.
    pub read_only: bool,
    /// `[validation]`: the rules for URLs in pushed manifests, if any.
    pub manifest_urls: Option<&'a crate::registry::urls::ManifestUrls>,
}

/// Handles one request for an instance.
pub async fn handle(inst: Instance<'_>, req: Request<Body>) -> Response<Body> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let user = match crate::auth::basic_credentials(req.headers()) {
        Some((user, password)) => match inst.auth.authenticate(peer, &user, &password).await {
            Ok(()) => Some(user),
            Err(Refused::Invalid) => {
                let mut resp = challenge(
                    inst.auth,
                    error_response(&RegistryError::Unauthorized(
                        "invalid user name or password".into(),
                    )),
                );
                resp.extensions_mut().insert(RefusedUser(user));
                return resp;
            }
            Err(Refused::Throttled(wait)) => {
                tracing::warn!(%peer, user, "too many failed logins: throttled");
                let mut resp = error_response(&RegistryError::TooManyRequests(
                    "too many failed logins; try again later".into(),
                ));
                let secs = wait.as_secs().max(1);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                resp.extensions_mut().insert(RefusedUser(user));
                return resp;
            }
        },
        None => None,
    };
    // Into the server's request span, for every line logged from here on.
    if let Some(user) = &user {
        tracing::Span::current().record("user", user.as_str());
    }
    let mut resp = match dispatch(&inst, user.as_deref(), req).await {
        Ok(r) => r,
        Err(e) => {
            if let RegistryError::Internal(cause) = &e {
                tracing::error!("{cause}");
            }
            error_response(&e)
        }
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp = challenge(inst.auth, resp);
    }
    if let Some(user) = user {
        resp.extensions_mut().insert(AuthenticatedUser(user));
    }
    resp
}

/// Adds the Basic challenge of the instance to a 401.
fn challenge(auth: &Authenticator, mut resp: Response<Body>) -> Response<Body> {
    let value = format!("Basic realm=\"{}\"", auth.realm().replace('"', ""));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&value).expect("realm is a header-safe instance name"),
    );
    resp
}

/// The repository a route acts on and what that needs.
fn needs(route: &Route, method: &Method) -> Option<(RepoName, Action)> {
    let read = *method == Method::GET || *method == Method::HEAD;
    let action = match route {
        Route::Base | Route::Catalog => return None,
        Route::Tags(_) | Route::Referrers(..) => Action::Pull,
        Route::Manifest(..) | Route::BadReference(..) | Route::Blob(..) if read => Action::Pull,
        Route::Manifest(..) | Route::BadReference(..) if *method == Method::PUT => Action::Push,
        Route::Manifest(..) | Route::BadReference(..) | Route::Blob(..) => Action::Delete,
        Route::UploadStart(_) | Route::Upload(..) => Action::Push,
    };
    Some((route.repo()?.clone(), action))
}

/// Refuses what `user` may not do: 401 (so that the client logs in) without
/// credentials, 403 with them.
fn authorize(
    access: &Access,
    user: Option<&str>,
    repo: &RepoName,
    needed: Action,
) -> Result<(), RegistryError> {
    if access.permits(user, repo.as_str(), needed) {
        return Ok(());
    }
    Err(match user {
        None => RegistryError::Unauthorized("authentication required".into()),
        Some(u) => RegistryError::Denied(format!(
            "user '{u}' may not {} repository '{repo}'",
            match needed {
                Action::None | Action::Pull => "pull from",
                Action::Push => "push to",
                Action::Delete => "delete in",
            }
        )),
    })
}

async fn dispatch(
    inst: &Instance<'_>,
    user: Option<&str>,
    req: Request<Body>,
) -> Result<Response<Body>, RegistryError> {
    let (req, body) = req.into_parts();
    let registry = inst.registry;
    if user.is_none() && inst.access.anonymous == Anonymous::None {
        return Err(RegistryError::Unauthorized(
            "authentication required".into(),
        ));
    }
    let mut route = route::parse(req.uri.path())?;
    // containerd names the registry a mirror stands in for: the path's
    // repository is that registry's, which this instance may keep under
    // a prefix.
    if let (Some(ns), Some(repo)) = (query(&req).get("ns"), route.repo()) {
        let ours = registry.namespaced(ns, repo)?;
        if ours != *repo {
            let path = req
                .uri
                .path()
                .replacen(&format!("/v2/{repo}/"), &format!("/v2/{ours}/"), 1);
            route = route::parse(&path)?;
        }
    }
    let method = req.method.clone();
    if let Some((repo, needed)) = needs(&route, &method) {
        authorize(inst.access, user, &repo, needed)?;
        if matches!(needed, Action::Push | Action::Delete) {
            if inst.read_only {
                return Ok(not_allowed(&RegistryError::read_only(), &route, true));
            }
            registry.check_writable(&repo)?;
        }
    }
    let may_pull = |r: &str| inst.access.permits(user, r, Action::Pull);
    let limits = limits::UploadLimits {
        limits: inst.limits,
        user,
        upload_ttl: inst.upload_ttl,
    };
    let deleter = crate::audit::ByUser {
        instance: inst.name,
        user,
        through: "the API",
    };
    let resp = match (&route, &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => Ok(json_response(StatusCode::OK, "{}")),
        (Route::Catalog, &Method::GET) => discovery::catalog(registry, &req, &may_pull).await,
        (Route::Tags(repo), &Method::GET) => discovery::tags(registry, repo, &req).await,
        (Route::Referrers(repo, d), &Method::GET) => {
            discovery::referrers(registry, repo, d, &req).await
        }
        (Route::Manifest(repo, r), &Method::GET | &Method::HEAD) => {
            manifests::get(registry, repo, r, method == Method::HEAD).await
        }
        (Route::Manifest(repo, r), &Method::PUT) => {
            manifests::put(registry, repo, r, &req, body, inst.manifest_urls).await
        }
        (Route::Manifest(repo, r), &Method::DELETE) => {
            manifests::delete(registry, repo, r, &deleter).await
        }
        (Route::BadReference(_, r), &Method::GET | &Method::HEAD | &Method::DELETE) => {
            Err(r.unknown())
        }
        (Route::BadReference(_, r), &Method::PUT) => Err(r.invalid()),
        (Route::Blob(repo, d), &Method::GET | &Method::HEAD) => {
            blobs::get(registry, repo, d, &req, method == Method::HEAD).await
        }
        (Route::Blob(repo, d), &Method::DELETE) => blobs::delete(registry, repo, d, &deleter).await,
        (Route::UploadStart(repo), &Method::POST) => {
            blobs::start_upload(registry, repo, &req, body, &may_pull, &limits).await
        }
        (Route::Upload(repo, id), &Method::GET) => {
            blobs::upload_status(registry, repo, id, &limits).await
        }
        (Route::Upload(repo, id), &Method::PATCH) => {
            blobs::patch_upload(registry, repo, id, &req, body, &limits).await
        }
        (Route::Upload(repo, id), &Method::PUT) => {
            blobs::put_upload(registry, repo, id, &req, body, &limits).await
        }
        (Route::Upload(repo, id), &Method::DELETE) => {
            blobs::cancel_upload(registry, repo, id, &limits).await
        }
        _ => {
            let e = RegistryError::MethodNotAllowed(format!("{method} is not allowed here"));
            Ok(not_allowed(&e, &route, inst.read_only))
        }
    }?;
    if inst.notify.active() {
        let (status, answered) = (resp.status(), resp.headers().clone());
        if let Some(event) = events::of(registry, user, &route, &req, status, &answered).await {
            inst.notify.emit(event);
        }
    }
    Ok(resp)
}

/// A 405 with the `Allow` header HTTP asks of it: the methods `route`
/// is served with (RFC 9110 §15.5.6).
fn not_allowed(e: &RegistryError, route: &Route, read_only: bool) -> Response<Body> {
    with_allow(error_response(e), route.allow(read_only))
}

/// `resp` (a 405) with the methods its address takes in `Allow`; the web
/// UI's 405s too.
pub fn with_allow(mut resp: Response<Body>, allow: &'static str) -> Response<Body> {
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
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
