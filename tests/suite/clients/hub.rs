//! A fake Docker Hub: Debian's `docker-registry` behind `token` auth, and
//! the token server it sends clients to. The server signs JWTs as Docker
//! Hub's auth service does (`GET /token?service=…&scope=…`, anonymous or
//! with Basic credentials, answered with `token`, `access_token`,
//! `expires_in` and `issued_at`): ES256 with a test key, its self-signed
//! certificate in the `x5c` header and in the registry's `rootcertbundle`.
//! Anonymous clients may pull every repository but those under
//! `private/`; its one user may pull and push everywhere. It runs on a
//! thread of the test on 127.0.0.1 and keeps a record of every token it
//! issued.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use super::{token, DistRegistry};

/// The `iss` of the tokens, which the registry trusts.
pub const ISSUER: &str = "berth-test-token-issuer";
/// Repositories anonymous clients may not pull.
pub const PRIVATE: &str = "private/";
/// How long a token is valid, as `expires_in` says.
const LIFETIME: Duration = Duration::from_secs(300);

/// A token the token server issued, and to whom.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The user of its Basic credentials.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub user_agent: String,
}

struct Issuer {
    key: EcdsaKeyPair,
    /// DER of the certificate of `key`, base64 (the `x5c` entry).
    x5c: String,
    user: (String, String),
    issued: Mutex<Vec<Issued>>,
}

/// The token server, stopped when dropped.
pub struct TokenServer {
    /// "127.0.0.1:PORT"
    pub addr: String,
    issuer: Arc<Issuer>,
    certificate: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    /// Starts it with one user (`user`, `password`) and a new key.
    pub fn start(user: &str, password: &str) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["tokens.test".to_string()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let certificate = dir.path().join("tokens.crt");
        std::fs::write(&certificate, cert.pem()).unwrap();
        let issuer = Arc::new(Issuer {
            key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pair.serialize_der())
                .unwrap(),
            x5c: STANDARD.encode(cert.der()),
            user: (user.to_string(), password.to_string()),
            issued: Mutex::default(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/token", axum::routing::get(issue))
            .with_state(issuer.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        TokenServer {
            addr,
            issuer,
            certificate,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The `realm` registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate of the signing key (PEM): the registry's
    /// `rootcertbundle`.
    pub fn certificate(&self) -> &Path {
        &self.certificate
    }

    pub fn user(&self) -> (&str, &str) {
        (&self.issuer.user.0, &self.issuer.user.1)
    }

    /// Every token issued so far, oldest first.
    pub fn issued(&self) -> Vec<Issued> {
        self.issuer.issued.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /token`: a token for the scopes asked, with the access the caller
/// has; `401` for wrong credentials.
async fn issue(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let param = |name: &'static str| {
        params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let user = match basic.as_deref().map(|b| b.split_once(':')) {
        None => None,
        Some(Some((u, p))) if (u, p) == (issuer.user.0.as_str(), issuer.user.1.as_str()) => {
            Some(u.to_string())
        }
        Some(_) => {
            let body = json!({"details": "incorrect username or password"});
            return json_response(StatusCode::UNAUTHORIZED, &body);
        }
    };
    let scopes: Vec<String> = param("scope").collect();
    issuer.issued.lock().unwrap().push(Issued {
        user: user.clone(),
        scopes: scopes.clone(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    });
    let access: Vec<Value> = scopes
        .iter()
        .filter_map(|scope| granted(scope, user.is_some()))
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": param("service").next().unwrap_or_default(),
        "exp": now + LIFETIME.as_secs(),
        "nbf": now,
        "iat": now,
        "jti": token(),
        "access": access,
    });
    let jwt = issuer.sign(&claims);
    let body = json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": LIFETIME.as_secs(),
        "issued_at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    json_response(StatusCode::OK, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json")];
    (status, json, body.to_string()).into_response()
}

/// The access a scope (`repository:NAME:ACTIONS`) grants: all its actions
/// to the user, pull of public repositories to anyone.
fn granted(scope: &str, user: bool) -> Option<Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions
        .split(',')
        .filter(|a| user || (*a == "pull" && !name.starts_with(PRIVATE)))
        .collect();
    Some(json!({"type": kind, "name": name, "actions": actions}))
}

impl Issuer {
    /// The compact JWS of `claims`: ES256, the certificate in `x5c`.
    fn sign(&self, claims: &Value) -> String {
        let head = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(head.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self.key.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// The fake hub: the token server and the registry trusting it, on its
/// own storage.
pub struct FakeHub {
    pub registry: DistRegistry,
    pub tokens: TokenServer,
    _root: tempfile::TempDir,
}

impl FakeHub {
    pub fn start() -> FakeHub {
        let root = tempfile::tempdir().unwrap();
        let tokens = TokenServer::start("hub-user", "hub-password");
        let registry = DistRegistry::start_with_tokens(root.path(), &tokens);
        FakeHub {
            registry,
            tokens,
            _root: root,
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.registry.addr)
    }

    /// Pushes tag `tag` of `image` as `repo_tag`, as the hub's user.
    pub fn push(&self, image: &super::OciLayout, tag: &str, repo_tag: &str) {
        let creds = self.registry.creds();
        super::skopeo_push(
            &image.reference(tag),
            &self.registry.image(repo_tag),
            &creds,
            &[],
        );
    }
}
