//! Client-side helpers for the HTTP API tests: an authenticated client for one
//! instance, blob and manifest pushes, manifest builders, OCI error parsing and
//! a raw HTTP/1.1 client for requests reqwest would rewrite (dot segments,
//! custom Host headers).

pub mod churn;
pub mod streamed;

pub use reqwest::Method;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{sha256_digest, ConfigDir, Instance, Server};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const API_VERSION: &str = "registry/2.0";

/// All manifest media types, sent as `Accept` on manifest reads.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// An HTTP client bound to one instance's dedicated listener and credentials.
#[derive(Clone)]
pub struct Reg {
    pub client: Client,
    pub base: String,
    pub user: String,
    pub password: String,
}

impl Reg {
    pub fn new(base: &str, user: &str, password: &str) -> Reg {
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        Reg {
            client,
            base: base.to_string(),
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// Client for the instance named `name` of a server started with the
    /// harness defaults (`NAME-user` / `NAME-secret`).
    pub fn for_instance(server: &Server, name: &str) -> Reg {
        Reg::new(
            &server.url(name),
            &format!("{name}-user"),
            &format!("{name}-secret"),
        )
    }

    /// Absolute URL for a path (or a Location value, which may already be absolute).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .basic_auth(&self.user, Some(&self.password))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.req(Method::GET, path)
    }
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.req(Method::HEAD, path)
    }
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.req(Method::POST, path)
    }
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.req(Method::PUT, path)
    }
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.req(Method::PATCH, path)
    }
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.req(Method::DELETE, path)
    }

    /// Request without credentials.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a request without a body.
    pub async fn send(&self, method: Method, path: &str) -> Response {
        self.req(method, path).send().await.unwrap()
    }

    /// Sends a request without a body and asserts its status (see
    /// `expect_status`); returns the body.
    pub async fn expect_status(&self, method: Method, path: &str, status: u16) -> Vec<u8> {
        expect_status(self.send(method, path).await, status).await
    }

    /// Sends a request without a body and asserts an OCI error (see
    /// `expect_error`); returns the parsed body.
    pub async fn expect_error(&self, method: Method, path: &str, status: u16, code: &str) -> Value {
        expect_error(self.send(method, path).await, status, code).await
    }
}

/// A running server with its config directory. Field order matters: the
/// server is stopped before the directory is removed.
pub struct Env {
    pub server: Server,
    pub cfg: ConfigDir,
    pub reg: Reg,
}

impl Env {
    /// A server with a single instance `ci`.
    pub fn start() -> Env {
        Env::start_with(vec![Instance::new("ci")])
    }

    /// A server with the given instances; `reg` talks to the first one.
    pub fn start_with(instances: Vec<Instance>) -> Env {
        let first = instances[0].name.clone();
        Env::start_in(ConfigDir::new(&instances), &first)
    }

    /// A server on a prepared config directory; `reg` talks to `first`.
    pub fn start_in(cfg: ConfigDir, first: &str) -> Env {
        let server = Server::start(&cfg);
        let reg = Reg::for_instance(&server, first);
        Env { server, cfg, reg }
    }

    pub fn reg(&self, instance: &str) -> Reg {
        Reg::for_instance(&self.server, instance)
    }
}

pub fn sha512_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// A sha256 digest nothing was ever pushed with.
pub fn random_digest() -> String {
    sha256_digest(&random_bytes(64))
}

/// Header value as a string, if present.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("header is ASCII").to_string())
}

/// Header value, panicking with a clear message when it is absent.
pub fn must_header(resp: &Response, name: &str) -> String {
    header(resp, name).unwrap_or_else(|| {
        panic!(
            "response {} {} lacks header {name}; headers: {:?}",
            resp.status(),
            resp.url(),
            resp.headers()
        )
    })
}

/// Asserts status and returns the body.
pub async fn expect_status(resp: Response, status: u16) -> Vec<u8> {
    let got = resp.status();
    let url = resp.url().clone();
    let body = resp.bytes().await.expect("read body").to_vec();
    assert_eq!(
        got,
        StatusCode::from_u16(status).unwrap(),
        "{url}: expected {status}, got {got}; body: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// The `code` of every error in an OCI error body.
pub fn error_codes(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {v}"))
        .iter()
        .map(|e| e["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Asserts an OCI error response: status, JSON Content-Type, the API version
/// header and that `code` is among the error codes. Returns the parsed body.
pub async fn expect_error(resp: Response, status: u16, code: &str) -> Value {
    expect_error_for(resp, status, code, "").await
}

/// `expect_error` with `what` (e.g. the input under test) in its messages.
pub async fn expect_error_for(resp: Response, status: u16, code: &str, what: &str) -> Value {
    let got = resp.status();
    let url = match what {
        "" => resp.url().to_string(),
        _ => format!("{what} {}", resp.url()),
    };
    let api = header(&resp, "docker-distribution-api-version");
    let ctype = header(&resp, "content-type").unwrap_or_default();
    let body = resp.bytes().await.expect("read body").to_vec();
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(
        got.as_u16(),
        status,
        "{url}: expected {status} {code}, got {got}; body: {text}"
    );
    assert!(
        ctype.starts_with("application/json"),
        "{url}: error Content-Type is {ctype:?}; body: {text}"
    );
    assert_eq!(
        api.as_deref(),
        Some(API_VERSION),
        "{url}: API version header"
    );
    let codes = error_codes(&body);
    assert!(
        codes.iter().any(|c| c == code),
        "{url}: expected error code {code}, got {codes:?}; body: {text}"
    );
    serde_json::from_slice(&body).unwrap()
}

/// Appends a query parameter to a path or Location value.
pub fn with_query(location: &str, query: &str) -> String {
    if location.contains('?') {
        format!("{location}&{query}")
    } else {
        format!("{location}?{query}")
    }
}

/// A monolithic `POST ?digest=` upload of `data` (which need not match `digest`).
pub async fn post_blob(reg: &Reg, repo: &str, digest: &str, data: &[u8]) -> Response {
    reg.post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

/// Asserts a completed blob upload or mount: 201 with the blob's Location and
/// Docker-Content-Digest.
pub async fn expect_blob_created(resp: Response, repo: &str, digest: &str) {
    let location = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    expect_status(resp, 201).await;
    assert_eq!(
        location.as_deref(),
        Some(format!("/v2/{repo}/blobs/{digest}").as_str()),
        "blob Location"
    );
    assert_eq!(dcd.as_deref(), Some(digest), "blob Docker-Content-Digest");
}

/// Pushes a blob with a monolithic `POST ?digest=` and returns its digest.
pub async fn push_blob(reg: &Reg, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let resp = post_blob(reg, repo, &digest, data).await;
    expect_blob_created(resp, repo, &digest).await;
    digest
}

/// Opens an upload session in `repo`; its location.
pub async fn open_session(reg: &Reg, repo: &str) -> String {
    let resp = reg
        .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .await;
    let session = must_header(&resp, "location");
    expect_status(resp, 202).await;
    session
}

/// PATCHes `data` as the chunk at `start` of a session; the next location.
pub async fn patch_chunk(reg: &Reg, session: &str, start: usize, data: &[u8]) -> String {
    let resp = reg
        .patch(session)
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{start}-{}", start + data.len() - 1),
        )
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    let location = must_header(&resp, "location");
    expect_status(resp, 202).await;
    location
}

/// Finishes a session with a PUT `?digest=` without a body.
pub async fn finish_upload(reg: &Reg, session: &str, digest: &str) {
    let resp = reg
        .put(&with_query(session, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    expect_status(resp, 201).await;
}

/// Pushes a blob as an upload session: PATCHes of `chunk` bytes with their
/// Content-Range, then a PUT `?digest=` without a body. Returns its digest.
pub async fn push_chunked(reg: &Reg, repo: &str, data: &[u8], chunk: usize) -> String {
    let digest = sha256_digest(data);
    let mut location = open_session(reg, repo).await;
    for (i, piece) in data.chunks(chunk).enumerate() {
        location = patch_chunk(reg, &location, i * chunk, piece).await;
    }
    finish_upload(reg, &location, &digest).await;
    digest
}

/// GETs a blob and asserts that it has exactly `data` and the digest header.
pub async fn assert_blob(reg: &Reg, repo: &str, digest: &str, data: &[u8]) {
    let resp = reg
        .send(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
        .await;
    let dcd = header(&resp, "docker-content-digest");
    let body = expect_status(resp, 200).await;
    assert_eq!(
        dcd.as_deref(),
        Some(digest),
        "Docker-Content-Digest of blob"
    );
    assert_eq!(body.len(), data.len(), "blob length");
    assert!(body == data, "blob content differs from what was pushed");
}

/// Asserts that a blob is not available in a repository (404 BLOB_UNKNOWN).
pub async fn assert_no_blob(reg: &Reg, repo: &str, digest: &str) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    reg.expect_error(Method::GET, &path, 404, "BLOB_UNKNOWN")
        .await;
}

/// A descriptor of pushed content.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Desc {
    pub fn of(media_type: &str, data: &[u8]) -> Desc {
        Desc {
            media_type: media_type.to_string(),
            digest: sha256_digest(data),
            size: data.len(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// Pushes `data` as a blob and returns its descriptor.
pub async fn push_desc(reg: &Reg, repo: &str, media_type: &str, data: &[u8]) -> Desc {
    push_blob(reg, repo, data).await;
    Desc::of(media_type, data)
}

/// An image manifest (OCI or Docker schema2, by `media_type`) as JSON bytes.
pub fn image_manifest(media_type: &str, config: &Desc, layers: &[Desc]) -> Vec<u8> {
    let v = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.json(),
        "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
    });
    serde_json::to_vec_pretty(&v).unwrap()
}

/// An index (OCI index or Docker manifest list, by `media_type`) as JSON bytes.
pub fn index_manifest(media_type: &str, children: &[Desc]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut v = d.json();
            v["platform"] = json!({"architecture": format!("arch{i}"), "os": "linux"});
            v
        })
        .collect();
    let v = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    serde_json::to_vec_pretty(&v).unwrap()
}

/// PUT a manifest; returns the raw response.
pub async fn put_manifest(
    reg: &Reg,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    reg.put(&format!("/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// PUT a manifest, assert 201 with the right Location / digest; returns the digest.
pub async fn put_manifest_ok(
    reg: &Reg,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let digest = sha256_digest(body);
    let resp = put_manifest(reg, repo, reference, media_type, body).await;
    let location = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    expect_status(resp, 201).await;
    assert_eq!(dcd.as_deref(), Some(digest.as_str()), "manifest PUT digest");
    assert_eq!(
        location.as_deref(),
        Some(format!("/v2/{repo}/manifests/{digest}").as_str()),
        "manifest PUT Location"
    );
    digest
}

/// PUT a manifest by its own sha256 digest (`put_manifest_ok`); returns the digest.
pub async fn put_manifest_by_digest(
    reg: &Reg,
    repo: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    put_manifest_ok(reg, repo, &sha256_digest(body), media_type, body).await
}

/// PUT a manifest, assert 201 and return its OCI-Subject header (if any).
pub async fn put_manifest_subject(
    reg: &Reg,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Option<String> {
    let resp = put_manifest(reg, repo, reference, media_type, body).await;
    let subject = header(&resp, "oci-subject");
    expect_status(resp, 201).await;
    subject
}

/// Pushes a config and one layer (unique content) and returns the manifest bytes.
pub async fn make_image(reg: &Reg, repo: &str, media_type: &str) -> Vec<u8> {
    let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
        (DOCKER_CONFIG, DOCKER_LAYER)
    } else {
        (OCI_CONFIG, OCI_LAYER)
    };
    let config_bytes = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "nonce": hex::encode(random_bytes(8)),
    }))
    .unwrap();
    let config = push_desc(reg, repo, config_type, &config_bytes).await;
    let layer = push_desc(reg, repo, layer_type, &random_bytes(300)).await;
    image_manifest(media_type, &config, &[layer])
}

/// Pushes a complete OCI image under `reference`; returns (manifest bytes, digest).
pub async fn push_image(reg: &Reg, repo: &str, reference: &str) -> (Vec<u8>, String) {
    let manifest = make_image(reg, repo, OCI_MANIFEST).await;
    let digest = put_manifest_ok(reg, repo, reference, OCI_MANIFEST, &manifest).await;
    (manifest, digest)
}

/// GET a manifest with a full Accept header.
/// What a manifest refers to: the digests of its child manifests (an
/// index's) and of its blobs (the layers, then the config).
pub fn manifest_refs(manifest: &[u8]) -> (Vec<String>, Vec<String>) {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let digests = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let mut blobs = digests(&m["layers"]);
    if m["config"].is_object() {
        blobs.push(m["config"]["digest"].as_str().unwrap().to_string());
    }
    (digests(&m["manifests"]), blobs)
}

pub async fn get_manifest(reg: &Reg, repo: &str, reference: &str) -> Response {
    reg.get(&format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .unwrap()
}

/// GETs a manifest and asserts 200 with exactly `body`.
pub async fn assert_manifest_body(reg: &Reg, repo: &str, reference: &str, body: &[u8]) {
    let got = expect_status(get_manifest(reg, repo, reference).await, 200).await;
    assert!(
        got == body,
        "{repo}:{reference} serves other bytes than expected:\n{}",
        String::from_utf8_lossy(&got)
    );
}

/// Asserts that a manifest is gone (404 MANIFEST_UNKNOWN).
pub async fn assert_no_manifest(reg: &Reg, repo: &str, reference: &str) {
    let resp = get_manifest(reg, repo, reference).await;
    expect_error(resp, 404, "MANIFEST_UNKNOWN").await;
}

/// GET a name list (asserts 200); returns the document and its `key` list.
async fn get_list(reg: &Reg, path: &str, key: &str) -> (Value, Vec<String>) {
    let body = reg.expect_status(Method::GET, path, 200).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let list = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array: {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    (v, list)
}

/// The tags of a repository (asserts 200).
pub async fn list_tags(reg: &Reg, repo: &str) -> Vec<String> {
    let (v, tags) = get_list(reg, &format!("/v2/{repo}/tags/list"), "tags").await;
    assert_eq!(v["name"], json!(repo), "tags/list name");
    tags
}

/// The repositories of the whole catalog (asserts 200).
pub async fn list_catalog(reg: &Reg) -> Vec<String> {
    get_list(reg, "/v2/_catalog", "repositories").await.1
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 client

pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn error_codes(&self) -> Vec<String> {
        error_codes(&self.body)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// Asserts an OCI error: status, JSON body with `code`, API version header.
    pub fn expect_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(
            self.status,
            status,
            "{what}: expected {status} {code}; body: {}",
            self.text()
        );
        let ctype = self.header("content-type").unwrap_or_default();
        assert!(
            ctype.starts_with("application/json"),
            "{what}: error Content-Type is {ctype:?}"
        );
        assert_eq!(
            self.header("docker-distribution-api-version"),
            Some(API_VERSION),
            "{what}: API version header"
        );
        let codes = self.error_codes();
        assert!(
            codes.iter().any(|c| c == code),
            "{what}: expected code {code}, got {codes:?}"
        );
    }
}

pub fn basic_auth_value(user: &str, password: &str) -> String {
    use base64::Engine;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Sends one request exactly as given (path not normalised, Host as given)
/// and reads the whole response.
pub async fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    auth: Option<(&str, &str)>,
    body: &[u8],
) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        req.push_str(&format!(
            "Authorization: {}\r\n",
            basic_auth_value(user, password)
        ));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" || method == "PATCH" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw_exchange(addr, &bytes, method == "HEAD").await
}

/// Sends `request` (head and body, exactly as given) on a new connection and
/// reads the whole response.
pub async fn raw_exchange(addr: &str, request: &[u8], head: bool) -> RawResponse {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("raw request timed out");
    parse_raw(&buf, head)
}

/// PUTs a body with `Expect: 100-continue`: the body is only sent when the
/// server asks for it, so an early rejection (e.g. 413 on Content-Length) is
/// read reliably instead of racing a connection reset.
pub async fn raw_put_expect_continue(
    addr: &str,
    path: &str,
    auth: (&str, &str),
    content_type: &str,
    body: &[u8],
) -> RawResponse {
    let headers = format!("Content-Type: {content_type}\r\n");
    raw_expect_continue(addr, "PUT", path, auth, &headers, body).await
}

/// Sends a request with `Expect: 100-continue` (see
/// `raw_put_expect_continue`); `headers` are extra `Name: value\r\n` lines.
pub async fn raw_expect_continue(
    addr: &str,
    method: &str,
    path: &str,
    auth: (&str, &str),
    headers: &str,
    body: &[u8],
) -> RawResponse {
    let fut = async {
        match Continued::start(addr, method, path, auth, headers, body.len()).await {
            Ok(continued) => continued.finish(body).await,
            Err(answer) => answer,
        }
    };
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("raw request timed out")
}

/// A request with `Expect: 100-continue` that the server answered with
/// `100 Continue`: it is being handled, and the server waits for its body.
pub struct Continued {
    stream: tokio::net::TcpStream,
    /// What came after `100 Continue` (normally nothing).
    rest: Vec<u8>,
}

impl Continued {
    /// Sends the head of a request whose body has `len` bytes and waits for
    /// `100 Continue`; `Err` with the response when the server answered
    /// without asking for the body. `headers` are extra `Name: value\r\n`
    /// lines.
    pub async fn start(
        addr: &str,
        method: &str,
        path: &str,
        auth: (&str, &str),
        headers: &str,
        len: usize,
    ) -> Result<Continued, RawResponse> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Authorization: {}\r\n{headers}\
             Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n",
            basic_auth_value(auth.0, auth.1),
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed before a response");
            buf.extend_from_slice(&chunk[..n]);
        };
        if !buf.starts_with(b"HTTP/1.1 100") {
            stream.read_to_end(&mut buf).await.expect("read response");
            return Err(parse_raw(&buf, false));
        }
        buf.drain(..head_end);
        Ok(Continued { stream, rest: buf })
    }

    /// Sends the body and reads the whole response.
    pub async fn finish(self, body: &[u8]) -> RawResponse {
        let buf = self
            .send_body(body)
            .await
            .expect("send body, read response");
        parse_raw(&buf, false)
    }

    /// Sends the body and reads what comes back, unparsed: for a connection
    /// that may have been cut.
    pub async fn send_body(mut self, body: &[u8]) -> std::io::Result<Vec<u8>> {
        self.stream.write_all(body).await?;
        let mut buf = self.rest;
        self.stream.read_to_end(&mut buf).await?;
        Ok(buf)
    }
}

/// Parses one HTTP/1.1 response (head, and body unless `head`).
pub fn parse_raw(buf: &[u8], head: bool) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head_text = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head {
        Vec::new()
    } else if chunked {
        decode_chunked(rest)
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..pos]).to_string();
        let size_text = size_text.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}
