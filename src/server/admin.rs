//! The admin listener (`[listen] admin`): `/metrics` in the Prometheus text
//! format ([`super::metrics`]), `/healthz` (the process serves) and
//! `/readyz` (every instance can use its storage: each is probed — a small
//! object written, read and deleted — at most every [`PROBE_EVERY`]; `503`
//! with the instances that are not ready and why). Basic credentials from
//! `[admin] htpasswd` when it is set; anyone who reaches it otherwise (it
//! listens where the operator puts it, 127.0.0.1 by the examples).
//!
//! Owns those three answers. Must not serve an instance's API or UI.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};

use super::Snapshot;
use crate::auth::Refused;

/// How long a readiness probe's outcome is reused.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .expect("valid response")
}

/// One request of the admin listener.
pub(super) async fn handle(snapshot: Arc<Snapshot>, req: Request<Body>) -> Response<Body> {
    if let Some(auth) = &snapshot.admin_auth {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let refused = match crate::auth::basic_credentials(req.headers()) {
            Some((user, password)) => auth.authenticate(peer, &user, &password).await.err(),
            None => Some(Refused::Invalid),
        };
        if let Some(why) = refused {
            let status = match why {
                Refused::Invalid => StatusCode::UNAUTHORIZED,
                Refused::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            };
            let mut resp = text(status, "text/plain", "credentials needed\n".into());
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"berth admin\""),
            );
            return resp;
        }
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            snapshot.metrics.render(&snapshot),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => ready(&snapshot).await,
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the admin listener serves /metrics, /healthz and /readyz\n".into(),
        ),
    }
}

/// `200` with one line per instance when all can use their storage, else
/// `503` naming those that cannot, and why.
async fn ready(snapshot: &Snapshot) -> Response<Body> {
    let mut lines = Vec::new();
    let mut all = true;
    for (name, inst) in &snapshot.instances {
        match inst.readiness(Instant::now()).await {
            None => lines.push(format!("{name}: ready")),
            Some(why) => {
                all = false;
                lines.push(format!("{name}: not ready: {why}"));
            }
        }
    }
    let status = match all {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, "text/plain", lines.join("\n") + "\n")
}
