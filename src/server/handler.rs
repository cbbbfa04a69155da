//! One request, from the moment hyper has parsed its head to the response
//! handed back: the limits every request gets ([`limits`]), the early-answer
//! bookkeeping ([`early`]), the instance it is for ([`routing`]), the
//! instance's API, the headers every response carries
//! (`Docker-Distribution-API-Version`, HSTS over TLS) and one access-log
//! line (target `access`).
//!
//! Owns that sequence. Must not touch connections or listeners (`listen`),
//! decide routing itself (`routing`), or look into what the API does.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};

use super::routing::{self, Via};
use super::{early, limits, Snapshot};
use crate::api;

pub(super) async fn handle(
    snapshot: Arc<Snapshot>,
    via: Via,
    req: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    let too_large = limits::check_request(&req).err();
    let req = req.map(|body| limits::idle_timeout(body, snapshot.body_timeout));
    let (req, unread) = early::track(req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (host, bad_host) = match routing::request_host(&req) {
        Ok(host) => (host.unwrap_or_default(), None),
        Err(e) => (String::new(), Some(api::error_response(&e))),
    };
    let (instance, early) = routing::pick(&snapshot, &via, &host, &req);
    drop(snapshot);
    let early = bad_host
        .or(too_large.map(|e| api::error_response(&e)))
        .or(early);
    let mut resp = match (early, &instance) {
        (Some(resp), _) => resp,
        (None, Some(inst)) => {
            let ctx = api::Instance {
                registry: &inst.registry,
                auth: &inst.auth,
                access: &inst.config.access,
                limits: &inst.config.limits,
                upload_ttl: inst.config.retention.upload_ttl,
            };
            api::handle(ctx, req).await
        }
        (None, None) => routing::unknown_host(&host),
    };
    if let Some(unread) = unread {
        unread.settle(&mut resp).await;
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
    let user = resp
        .extensions()
        .get::<api::AuthenticatedUser>()
        .map(|u| u.0.clone());
    let bytes = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    tracing::info!(
        target: "access",
        instance = instance.as_ref().map_or("-", |i| i.config.name.as_str()),
        user = user.as_deref().unwrap_or("-"),
        %method,
        path,
        status = resp.status().as_u16(),
        bytes,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    resp
}
