//! Who is asking, for the web UI: a session from the login form (cookie
//! [`COOKIE`]), Basic credentials (curl), or nobody (anonymous, when the
//! instance lets anonymous clients pull). The login and logout actions,
//! and the checks every form post passes: the `Origin` (or `Referer`) is
//! this registry, and the CSRF token is the one of this user's session.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::auth::session::{same_token, Limits, Session};
use crate::auth::{Authenticator, Refused};

/// The session cookie.
pub const COOKIE: &str = "berth_session";

/// The asker of one request.
pub struct Who {
    pub user: Option<String>,
    /// The cookie id and session, when logged in through the form.
    pub session: Option<(String, Session)>,
    /// What this asker's posts must carry (empty for anonymous).
    pub csrf: String,
}

/// Why a request gets no page.
pub enum Turned {
    /// Wrong Basic credentials.
    Invalid,
    /// Too many failed logins; seconds to wait.
    Throttled(u64),
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who sent `headers` from `peer`.
pub async fn identify(
    auth: &Authenticator,
    limits: &Limits,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<Who, Turned> {
    if let Some((user, password)) = crate::auth::basic_credentials(headers) {
        return match auth.authenticate(peer, &user, &password).await {
            Ok(()) => Ok(Who {
                csrf: auth.sessions().basic_token(&user),
                user: Some(user),
                session: None,
            }),
            Err(Refused::Invalid) => Err(Turned::Invalid),
            Err(Refused::Throttled(wait)) => Err(Turned::Throttled(wait.as_secs().max(1))),
        };
    }
    let session = cookie(headers, COOKIE).and_then(|id| {
        let s = auth.sessions().get(id, limits)?;
        // A user removed from the htpasswd file is logged out.
        auth.has_user(&s.user).then(|| (id.to_string(), s))
    });
    Ok(match session {
        Some((id, s)) => Who {
            user: Some(s.user.clone()),
            csrf: s.csrf.clone(),
            session: Some((id, s)),
        },
        None => Who {
            user: None,
            session: None,
            csrf: String::new(),
        },
    })
}

/// Whether a form post comes from a page of this registry: its `Origin`,
/// else its `Referer`, names `scheme://host`; a post with neither (an old
/// browser, curl) is judged by its token alone.
pub fn same_origin(headers: &HeaderMap, tls: bool, host: &str) -> bool {
    let ours = format!("{}://{host}", if tls { "https" } else { "http" });
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match (header(header::ORIGIN), header(header::REFERER)) {
        (Some(origin), _) => origin == ours,
        (None, Some(referer)) => referer == ours || referer.starts_with(&format!("{ours}/")),
        (None, None) => true,
    }
}

/// Whether `token` is the one `who`'s posts must carry.
pub fn token_ok(who: &Who, token: &str) -> bool {
    !who.csrf.is_empty() && same_token(&who.csrf, token)
}

/// The `Set-Cookie` of a new session (`id`), or of none (`None`: logout).
pub fn set_cookie(id: Option<&str>, tls: bool, limits: &Limits) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let value = match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            limits.max_age.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&value).expect("hex id")
}

/// A `303 See Other` to `to`.
pub fn see_other(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .expect("valid response")
}

/// Where to go after logging in: a path of this site, else home.
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if local {
        next
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn origins_cookies_and_next() {
        let host = "ci.example.com";
        assert!(same_origin(
            &headers(&[("origin", "https://ci.example.com")]),
            true,
            host
        ));
        assert!(!same_origin(
            &headers(&[("origin", "http://ci.example.com")]),
            true,
            host
        ));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example")]),
            true,
            host
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), true, host));
        assert!(same_origin(
            &headers(&[("referer", "https://ci.example.com/r/app")]),
            true,
            host
        ));
        assert!(!same_origin(
            &headers(&[("referer", "https://ci.example.com.evil.example/")]),
            true,
            host
        ));
        assert!(same_origin(&headers(&[]), true, host));
        let h = headers(&[("cookie", "a=1; berth_session=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(safe_next("/r/app"), "/r/app");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        let c = set_cookie(Some("abc"), true, &Limits::default());
        assert!(c.to_str().unwrap().contains("HttpOnly; SameSite=Strict"));
        assert!(c.to_str().unwrap().ends_with("; Secure"));
    }
}
