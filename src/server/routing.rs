//! Which instance a request or a TLS handshake is for: the [`Target`] of a
//! listener, how a connection arrived ([`Via`]), the host a request names
//! (RFC 9112 §3.2: two `Host` headers, one that is not `host[:port]`, or
//! none in HTTP/1.1 is refused), and the choice of instance from these and
//! the current [`Snapshot`]. On the shared plain listener a TLS instance is
//! not served but answers ACME HTTP-01 challenges and redirects to https;
//! on the shared TLS listener a `Host` of another instance than the SNI
//! name gets 421.
//!
//! Owns that choice and the answers given instead of serving (404 for an
//! unknown host, 400, 421, the redirect). Must not touch connections, the
//! request body or what the instance does with a request: that is
//! `listen`'s and `handler`'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};

use super::{Instance, Snapshot};
use crate::api;
use crate::oci::RegistryError;

/// Which instance a listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The shared plain listener: the instance owning the request's `Host`.
    ByHost,
    /// The shared TLS listener: the instance owning the SNI name.
    Https,
    /// A dedicated listener of the named instance.
    Instance(String),
    /// The admin listener: metrics, health, readiness.
    Admin,
}

impl Target {
    pub fn label(&self) -> &str {
        match self {
            Target::ByHost => "shared",
            Target::Https => "shared-tls",
            Target::Instance(name) => name,
            Target::Admin => "admin",
        }
    }
}

/// How a request arrived.
#[derive(Clone, Debug)]
pub(super) enum Via {
    /// Plain HTTP on a listener.
    Plain(Target),
    /// TLS: the instance was chosen by SNI (shared listener, `host_checked`)
    /// or by the dedicated listener.
    Tls {
        instance: String,
        host_checked: bool,
    },
}

/// The host a request is for, lowercased and without port: from the
/// request target when it has an authority (absolute form, h2
/// `:authority`), else from the `Host` header; `None` when neither names
/// one (HTTP/1.0, h2). A request with more than one `Host` header, a `Host`
/// that is not `host[:port]`, or (HTTP/1.1) none at all is refused, as RFC
/// 9112 §3.2 requires: it must not be routed on a guess.
pub(super) fn request_host(req: &Request<Body>) -> Result<Option<String>, RegistryError> {
    let mut headers = req.headers().get_all(header::HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(RegistryError::HostInvalid(
            "more than one Host header".into(),
        ));
    }
    let invalid = |value: &str| {
        RegistryError::HostInvalid(format!(
            "invalid Host '{value}': expected host[:port] (port 0-65535)"
        ))
    };
    let from_header = match header {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| invalid(&String::from_utf8_lossy(v.as_bytes())))?;
            Some(host_of(text).ok_or_else(|| invalid(text))?)
        }
        None => None,
    };
    match req.uri().authority() {
        Some(a) => host_of(a.as_str())
            .map(Some)
            .ok_or_else(|| invalid(a.as_str())),
        None if from_header.is_none() && req.version() == axum::http::Version::HTTP_11 => Err(
            RegistryError::HostInvalid("an HTTP/1.1 request needs a Host header".into()),
        ),
        None => Ok(from_header),
    }
}

/// The host of an authority `host[:port]` (RFC 3986 §3.2.2: a registered
/// name or IPv4 address, or an IPv6 address in brackets; the port 1 to 5
/// digits up to 65535), lowercased; `None` when it is not one.
fn host_of(authority: &str) -> Option<String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (v6, port)
        }
        None => {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if !is_reg_name(host) {
                return None;
            }
            (host, port)
        }
    };
    if let Some(p) = port {
        let digits = (1..=5).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit());
        if !digits || p.parse::<u32>().ok()? > u32::from(u16::MAX) {
            return None;
        }
    }
    Some(host.to_ascii_lowercase())
}

/// `reg-name` of RFC 3986: unreserved characters, sub-delims and
/// percent-encoded octets (an IPv4 address is one too).
fn is_reg_name(host: &str) -> bool {
    let b = host.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c) => i += 1,
            _ => return false,
        }
    }
    true
}

fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

/// A TLS instance on the plain listener: ACME HTTP-01 answers, else https.
fn plain_for_tls(
    snapshot: &Snapshot,
    inst: &Instance,
    host: &str,
    req: &Request<Body>,
) -> Response<Body> {
    let tls = inst.tls.as_ref().expect("called for TLS instances");
    if let Some(token) = req
        .uri()
        .path()
        .strip_prefix("/.well-known/acme-challenge/")
    {
        return match tls.http01_key_auth(token) {
            Some(key_auth) => Response::builder()
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(key_auth))
                .expect("valid response"),
            None => api::error_response(&RegistryError::NotFound("no such ACME challenge".into())),
        };
    }
    let port = match snapshot.https_port.load(Ordering::Relaxed) {
        0 | 443 => String::new(),
        p => format!(":{p}"),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    redirect(&format!("https://{host}{port}{path}"))
}

/// The answer to a request for `host` that names no instance.
pub(super) fn unknown_host(host: &str) -> Response<Body> {
    api::error_response(&RegistryError::NameUnknown(format!(
        "no registry is served for host '{host}'"
    )))
}

/// The instance a request for `host` that arrived `via` is for, and the
/// answer to give instead of serving it there (ACME or redirect, 404, 421).
pub(super) fn pick(
    snapshot: &Snapshot,
    via: &Via,
    host: &str,
    req: &Request<Body>,
) -> (Option<Arc<Instance>>, Option<Response<Body>>) {
    match via {
        Via::Plain(Target::Instance(name)) => (snapshot.instances.get(name).cloned(), None),
        Via::Plain(_) => match snapshot.by_host.get(host) {
            Some(inst) if inst.tls.is_some() => (
                Some(inst.clone()),
                Some(plain_for_tls(snapshot, inst, host, req)),
            ),
            Some(inst) => (Some(inst.clone()), None),
            None => (None, Some(unknown_host(host))),
        },
        Via::Tls {
            instance,
            host_checked,
        } => {
            let inst = snapshot.instances.get(instance).cloned();
            let misdirected = *host_checked
                && snapshot
                    .by_host
                    .get(host)
                    .is_none_or(|h| h.config.name != *instance);
            let early = misdirected.then(|| {
                api::error_response(&RegistryError::Misdirected(format!(
                    "host '{host}' is not served on this connection (TLS name of {instance}); connect to it by its own name"
                )))
            });
            (inst, early)
        }
    }
}

/// The instance whose certificate a TLS handshake on a `target` listener
/// gets, from the SNI name on the shared listener, and whether requests on
/// that connection must then name a host of that instance.
pub(super) fn for_handshake(
    snapshot: &Snapshot,
    target: &Target,
    sni: Option<&str>,
) -> (Option<Arc<Instance>>, bool) {
    match target {
        Target::Instance(name) => (snapshot.instances.get(name).cloned(), false),
        _ => {
            let sni = sni.map(str::to_ascii_lowercase);
            (sni.and_then(|n| snapshot.by_host.get(&n).cloned()), true)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn hosts_of_authorities() {
        for (authority, host) in [
            ("ci.test", "ci.test"),
            ("CI.Test:5000", "ci.test"),
            ("ci.test:0", "ci.test"),
            ("ci.test:65535", "ci.test"),
            ("ci.test:00080", "ci.test"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]", "::1"),
            ("[::1]:8080", "::1"),
            ("[FE80::1]:443", "fe80::1"),
            ("", ""),
            ("a%2Eb", "a%2eb"),
        ] {
            assert_eq!(host_of(authority).as_deref(), Some(host), "{authority:?}");
        }
        for bad in [
            "b.test:a.test",
            "ci.test:",
            "ci.test:65536",
            "ci.test:123456",
            "ci.test:-1",
            "ci.test:+80",
            "ci.test: 80",
            "ci.test:80:80",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:99999",
            "[ci.test]:80",
            "a b",
            "a/b",
            "user@ci.test",
            "a%zz",
            "a%2",
            "\u{e9}.test",
        ] {
            assert_eq!(host_of(bad), None, "{bad:?}");
        }
    }

    fn request(version: axum::http::Version, uri: &str, hosts: &[&[u8]]) -> Request<Body> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, HeaderValue::from_bytes(h).unwrap());
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn request_hosts() {
        use axum::http::Version;
        let host = |v, uri, hosts: &[&[u8]]| request_host(&request(v, uri, hosts));
        assert_eq!(
            host(Version::HTTP_11, "/v2/", &[b"B.test:80"]).unwrap(),
            Some("b.test".into())
        );
        assert_eq!(
            host(Version::HTTP_11, "http://a.test:81/v2/", &[b"b.test"]).unwrap(),
            Some("a.test".into())
        );
        assert_eq!(host(Version::HTTP_10, "/v2/", &[]).unwrap(), None);
        assert_eq!(host(Version::HTTP_2, "/v2/", &[]).unwrap(), None);
        for (v, uri, hosts) in [
            (Version::HTTP_11, "/v2/", &[&b"a.test"[..], b"b.test"][..]),
            (Version::HTTP_11, "/v2/", &[b"a.test", b"a.test"]),
            (Version::HTTP_10, "/v2/", &[b"a.test", b"b.test"]),
            (
                Version::HTTP_11,
                "http://a.test/v2/",
                &[b"a.test", b"a.test"],
            ),
            (Version::HTTP_11, "/v2/", &[b"b.test:a.test"]),
            (Version::HTTP_11, "/v2/", &[b"\xff.test"]),
            (Version::HTTP_11, "http://a.test/v2/", &[b"b.test:x"]),
            (Version::HTTP_11, "/v2/", &[]),
        ] {
            assert!(
                matches!(host(v, uri, hosts), Err(RegistryError::HostInvalid(_))),
                "{v:?} {uri} {hosts:?}"
            );
        }
    }
}
