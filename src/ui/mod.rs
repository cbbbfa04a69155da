//! The web UI of one instance, on its hostnames and listeners beside the
//! API (everything outside `/v2/`): server-rendered pages over
//! [`Registry`] — repositories, tags with retention's verdicts, images,
//! usage and garbage collection — and the forms that log in and out,
//! delete and collect. Same users and access rules as the API; every page
//! works without JavaScript and loads nothing from elsewhere.
//!
//! Paths (repository names cannot contain a `-` segment, so `/-/` never
//! clashes with one):
//!
//! ```text
//! /                              repositories (?q= filter, ?page=)
//! /r/NAME                        tags (?sort=, ?order=, ?page=)
//! /r/NAME/-/image/DIGEST         a manifest
//! /r/NAME/-/delete               GET: what a delete takes along; POST: delete
//! /-/login  /-/logout            the session
//! /-/usage  /-/gc                usage, collections; POST: dry run or run
//! /-/static/berth.{css,js}
//! ```
//!
//! Must not read storage itself, nor know how the API answers.

mod pages;
mod views;
mod who;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use askama::Template;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::auth::{Access, Authenticator};
use crate::oci::{Digest, RepoName};
use crate::registry::retention::Retention;
use crate::registry::Registry;
use views::{MessagePage, PageCtx};
use who::{Turned, Who};

/// Largest form body read.
const MAX_FORM: usize = 64 << 10;

/// What the UI of one instance works with.
pub struct Ui<'a> {
    pub name: &'a str,
    pub registry: &'a Arc<Registry>,
    pub auth: &'a Authenticator,
    pub access: &'a Access,
    pub retention: &'a Retention,
    /// Whether the request came over TLS (`Secure` cookies, origins).
    pub tls: bool,
    /// When the next scheduled collection runs, if one is scheduled.
    pub next_gc: Option<SystemTime>,
    /// How long login sessions last.
    pub sessions: &'a crate::auth::session::Limits,
    /// `[maintenance] read_only`: deletes and collections are refused.
    pub read_only: bool,
    /// Where its events go (deletes, collections).
    pub notify: &'a Arc<crate::notify::Notifier>,
}

/// What a path of the UI names.
#[derive(Debug, PartialEq, Eq)]
enum Page {
    Home,
    Login,
    Logout,
    Usage,
    Gc,
    Asset(&'static str, &'static str),
    Repo(RepoName),
    Image(RepoName, Digest),
    Delete(RepoName),
}

impl Page {
    /// The methods the page is served with, as an `Allow` header says
    /// them; on a read-only instance, without the forms that change
    /// anything.
    fn allow(&self, read_only: bool) -> &'static str {
        match (self, read_only) {
            (Page::Login, _) => "GET, HEAD, POST",
            (Page::Logout, _) => "POST",
            (Page::Gc, true) => "",
            (Page::Gc, false) => "POST",
            (Page::Delete(_), true) => "GET, HEAD",
            (Page::Delete(_), false) => "GET, HEAD, POST",
            (Page::Home | Page::Usage | Page::Asset(..) | Page::Repo(_) | Page::Image(..), _) => {
                "GET, HEAD"
            }
        }
    }
}

fn route(path: &str) -> Option<Page> {
    Some(match path {
        "/" => Page::Home,
        "/-/login" => Page::Login,
        "/-/logout" => Page::Logout,
        "/-/usage" => Page::Usage,
        "/-/gc" => Page::Gc,
        "/-/static/berth.css" => Page::Asset(include_str!("assets/berth.css"), "text/css"),
        "/-/static/berth.js" => Page::Asset(include_str!("assets/berth.js"), "text/javascript"),
        _ => {
            let rest = path.strip_prefix("/r/")?;
            let (name, action) = match rest.split_once("/-/") {
                Some((name, action)) => (name, Some(action)),
                None => (rest.trim_end_matches('/'), None),
            };
            let repo = RepoName::parse(name).ok()?;
            match action {
                None => Page::Repo(repo),
                Some("delete") => Page::Delete(repo),
                Some(a) => {
                    let digest = Digest::parse(a.strip_prefix("image/")?).ok()?;
                    Page::Image(repo, digest)
                }
            }
        }
    })
}

/// One request of the UI.
struct Asked<'a> {
    ui: &'a Ui<'a>,
    who: Who,
    host: String,
    query: HashMap<String, String>,
    /// The form of a POST.
    form: HashMap<String, String>,
    peer: IpAddr,
    parts: &'a Parts,
}

impl Asked<'_> {
    fn page(&self) -> PageCtx {
        PageCtx {
            instance: self.ui.name.to_string(),
            user: self.who.user.clone(),
            session: self.who.session.is_some(),
            csrf: self.who.csrf.clone(),
            host: self.host.clone(),
            notices: Vec::new(),
        }
    }

    fn user(&self) -> Option<&str> {
        self.who.user.as_deref()
    }

    /// A page saying `text`, with `status`.
    fn message(&self, status: StatusCode, title: &str, text: &str) -> Response<Body> {
        html(
            status,
            MessagePage {
                page: self.page(),
                title: title.to_string(),
                text: text.to_string(),
            },
        )
    }

    fn not_found(&self) -> Response<Body> {
        self.message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here, or you may not see it.",
        )
    }

    fn forbidden(&self, text: &str) -> Response<Body> {
        self.message(StatusCode::FORBIDDEN, "Not allowed", text)
    }
}

/// A rendered page with the headers every page carries: no caching, no
/// framing, nothing loaded from elsewhere.
fn html(status: StatusCode, page: impl Template) -> Response<Body> {
    let body = page
        .render()
        .unwrap_or_else(|e| format!("<p>the page could not be rendered: {e}</p>"));
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .expect("valid response");
    secure_headers(&mut resp);
    resp
}

fn secure_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "max-age=3600")
        .body(Body::from(text))
        .expect("valid response");
    secure_headers(&mut resp);
    resp
}

fn query(parts: &Parts) -> HashMap<String, String> {
    parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// Whether a path is the UI's (everything but the API).
pub fn serves(path: &str) -> bool {
    path != "/v2" && !path.starts_with("/v2/")
}

/// Serves one request of the UI.
pub async fn handle(ui: Ui<'_>, req: Request<Body>) -> Response<Body> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let (parts, body) = req.into_parts();
    let Some(page) = route(parts.uri.path()) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let allow = page.allow(ui.read_only);
    let method_allowed = [Method::GET, Method::HEAD, Method::POST].contains(&parts.method);
    if !method_allowed || (matches!(page, Page::Asset(..)) && parts.method == Method::POST) {
        return crate::api::with_allow(
            plain(StatusCode::METHOD_NOT_ALLOWED, "not allowed here\n"),
            allow,
        );
    }
    if let Page::Asset(text, content_type) = page {
        return asset(text, content_type);
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(ui.name)
        .to_string();
    let who = match who::identify(ui.auth, ui.sessions, &parts.headers, peer).await {
        Ok(who) => who,
        Err(Turned::Invalid) => {
            let mut resp = plain(StatusCode::UNAUTHORIZED, "invalid user name or password\n");
            let challenge = format!("Basic realm=\"{}\"", ui.auth.realm().replace('"', ""));
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return resp;
        }
        Err(Turned::Throttled(secs)) => {
            let mut resp = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins; try again later\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        }
    };
    if let Some(user) = &who.user {
        tracing::Span::current().record("user", user.as_str());
    }
    let post = parts.method == Method::POST;
    let form = match post {
        true => match read_form(body).await {
            Some(f) => f,
            None => return plain(StatusCode::BAD_REQUEST, "an unreadable form\n"),
        },
        false => HashMap::new(),
    };
    let asked = Asked {
        ui: &ui,
        who,
        host,
        query: query(&parts),
        form,
        peer,
        parts: &parts,
    };
    if post {
        if !who::same_origin(&parts.headers, ui.tls, &asked.host) {
            return asked.forbidden("This form was sent from another site.");
        }
        if page != Page::Login && !who::token_ok(&asked.who, asked.form_value("csrf")) {
            return asked.forbidden(
                "This form is out of date or was not made by this registry; reload the page and try again.",
            );
        }
    }
    let anonymous_ok = ui.access.allowed(None, "") > crate::auth::Action::None;
    if asked.who.user.is_none() && !anonymous_ok && page != Page::Login {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let to = format!("/-/login?next={}", pages::encode(&next));
        return who::see_other(&to);
    }
    let mut resp = pages::serve(&asked, page, post).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        resp = crate::api::with_allow(resp, allow);
    }
    match asked.who.user {
        Some(user) => {
            let mut resp = resp;
            resp.extensions_mut()
                .insert(crate::api::AuthenticatedUser(user));
            resp
        }
        None => resp,
    }
}

impl Asked<'_> {
    fn form_value(&self, name: &str) -> &str {
        self.form.get(name).map_or("", String::as_str)
    }

    fn query_value(&self, name: &str) -> &str {
        self.query.get(name).map_or("", String::as_str)
    }
}

async fn read_form(body: Body) -> Option<HashMap<String, String>> {
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let bytes = limited.collect().await.ok()?.to_bytes();
    serde_urlencoded::from_bytes(&bytes).ok()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("valid response");
    secure_headers(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let repo = |s: &str| RepoName::parse(s).unwrap();
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(route("/"), Some(Page::Home));
        assert_eq!(route("/r/a/b/c"), Some(Page::Repo(repo("a/b/c"))));
        assert_eq!(route("/r/a/b/"), Some(Page::Repo(repo("a/b"))));
        assert_eq!(
            route(&format!("/r/a/b/-/image/{d}")),
            Some(Page::Image(repo("a/b"), Digest::parse(&d).unwrap()))
        );
        assert_eq!(route("/r/a/-/delete"), Some(Page::Delete(repo("a"))));
        assert_eq!(route("/r/a/-/image/sha256:zz"), None);
        assert_eq!(route("/r/A/-/delete"), None);
        assert_eq!(route("/r/a/-/other"), None);
        assert_eq!(route("/nothing"), None);
        assert!(serves("/") && serves("/-/login") && !serves("/v2/") && !serves("/v2"));
    }
}
