//! One request, from the moment hyper has parsed its head to the response
//! handed back: the limits every request gets ([`limits`]), the early-answer
//! bookkeeping ([`early`]), the instance it is for ([`routing`]), the
//! instance's API or web UI, the headers every response carries
//! (`Docker-Distribution-API-Version`, `X-Request-Id`, HSTS over TLS, the
//! instance's `[http] headers`) and
//! what its access-log line says ([`access_log`], written once the response
//! is sent).
//!
//! All of it runs in one `request` span (request id, method, path, then the
//! instance and the user once known), so every line logged for a request,
//! the access line included, carries the same id as the response's
//! `X-Request-Id`.
//!
//! Owns that sequence. Must not touch connections or listeners (`listen`),
//! decide routing itself (`routing`), or look into what the API does.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};
use tracing::field::Empty;
use tracing::Instrument;

use super::routing::{self, Target, Via};
use super::{access_log, admin, early, limits, Snapshot};
use crate::oci::RegistryError;
use crate::{api, ui};

/// The header that carries a request's id, both ways.
const REQUEST_ID: &str = "x-request-id";

/// Longest `X-Request-Id` of a client that is taken over.
const MAX_CLIENT_ID: usize = 64;

/// The id of a request: the one the client (or a proxy in front) sent in a
/// single `X-Request-Id` of 1 to [`MAX_CLIENT_ID`] letters, digits, `-`,
/// `_` and `.`, so that its logs and these can be joined; else 16 random
/// hex digits.
fn request_id(req: &Request<Body>) -> HeaderValue {
    let mut sent = req.headers().get_all(REQUEST_ID).iter();
    if let (Some(id), None) = (sent.next(), sent.next()) {
        let b = id.as_bytes();
        let fits = (1..=MAX_CLIENT_ID).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c));
        if fits {
            return id.clone();
        }
    }
    HeaderValue::from_str(&format!("{:016x}", rand::random::<u64>())).expect("hex digits")
}

/// Serves one request that arrived `via`, on the snapshot current when it
/// arrived, inside its `request` span.
pub(super) async fn handle(
    snapshot: Arc<Snapshot>,
    via: Via,
    req: Request<Body>,
) -> Response<Body> {
    if matches!(via, Via::Plain(Target::Admin)) {
        return admin::handle(snapshot, req).await;
    }
    let id = request_id(&req);
    // At ERROR level, the span is enabled whenever any line of the
    // request is, whatever level `RUST_LOG` sets.
    let span = tracing::error_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %req.method(),
        path = req.uri().path(),
        instance = Empty,
        user = Empty,
    );
    serve(snapshot, via, req, id).instrument(span).await
}

async fn serve(
    snapshot: Arc<Snapshot>,
    via: Via,
    req: Request<Body>,
    id: HeaderValue,
) -> Response<Body> {
    let started = Instant::now();
    let too_large = limits::check_request(&req).err();
    let (req, received) = access_log::count_received(req);
    let req = req.map(|body| limits::idle_timeout(body, snapshot.body_timeout));
    let (mut req, unread) = early::track(req);
    req.extensions_mut()
        .insert(api::RequestId(id.to_str().unwrap_or_default().to_string()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (host, bad_host) = match routing::request_host(&req) {
        Ok(host) => (host.unwrap_or_default(), None),
        Err(e) => (String::new(), Some(api::error_response(&e))),
    };
    let (instance, early) = routing::pick(&snapshot, &via, &host, &req);
    if let Some(inst) = &instance {
        tracing::Span::current().record("instance", inst.config.name.as_str());
    }
    let metrics = snapshot.counting.then(|| snapshot.metrics.clone());
    drop(snapshot);
    let early = bad_host
        .or(too_large.map(|e| api::error_response(&e)))
        .or(early);
    let mut resp = match (early, &instance) {
        (Some(resp), _) => resp,
        (None, Some(inst)) if inst.storage_problem().is_some() => {
            api::error_response(&RegistryError::Unavailable(
                "this registry cannot reach its storage now; try again later".into(),
            ))
        }
        (None, Some(inst)) if inst.config.ui.enabled && ui::serves(&path) => {
            let ctx = ui::Ui {
                name: &inst.config.name,
                registry: &inst.registry,
                auth: &inst.auth,
                access: &inst.config.access,
                retention: &inst.config.retention,
                tls: matches!(via, Via::Tls { .. }),
                next_gc: inst.next_gc(),
                sessions: &inst.config.ui.sessions,
                read_only: inst.config.read_only,
                notify: &inst.notifier,
            };
            ui::handle(ctx, req).await
        }
        (None, Some(inst)) => {
            let ctx = api::Instance {
                name: &inst.config.name,
                registry: &inst.registry,
                auth: &inst.auth,
                access: &inst.config.access,
                limits: &inst.config.limits,
                upload_ttl: inst.config.retention.upload_ttl,
                notify: &inst.notifier,
                read_only: inst.config.read_only,
                manifest_urls: inst.config.manifest_urls.as_ref(),
            };
            api::handle(ctx, req).await
        }
        (None, None) => routing::unknown_host(&host),
    };
    if let Some(unread) = unread {
        unread.settle(&mut resp).await;
    }
    if let Some(inst) = &instance {
        for (name, value) in &inst.config.headers {
            // The response's own header (berth's) is kept, as registry:2 does.
            if !resp.headers().contains_key(name) {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if matches!(via, Via::Tls { .. }) {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp.headers_mut().insert(REQUEST_ID, id);
    let user = resp
        .extensions()
        .get::<api::AuthenticatedUser>()
        .map(|u| u.0.clone())
        .or_else(|| {
            resp.extensions()
                .get::<api::RefusedUser>()
                .map(|u| u.0.clone())
        });
    let entry = access_log::Entry {
        instance: instance.as_ref().map(|i| i.config.name.clone()),
        user,
        method,
        path,
        started,
        received,
        metrics,
    };
    access_log::when_sent(resp, entry)
}
