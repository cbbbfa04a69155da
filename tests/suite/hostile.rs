//! Hostile input: oversized heads, slow clients, stalled downloads, stalled
//! and oversized uploads, too many upload sessions, path tricks, invalid UTF-8, JSON
//! nesting bombs and inconsistent lengths. Each case must get a clear 4xx
//! (an OCI error body where the request could be parsed at all), and other
//! clients must go on being served.

use std::time::Duration;

use crate::common::{sha256_digest, ConfigDir, Instance};
use crate::common_api::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REPO: &str = "hostile/app";

/// A server with the given instances and short header/body timeouts; `reg`
/// talks to the first instance without reusing connections.
fn start(instances: Vec<Instance>) -> Env {
    let first = instances[0].name.clone();
    let cfg = ConfigDir::new(&instances);
    std::fs::write(
        cfg.path().join("berth.toml"),
        "[listen]\nhttp = \"127.0.0.1:0\"\n[server]\nheader_timeout = \"1s\"\nbody_timeout = \"1s\"\n",
    )
    .unwrap();
    let mut env = Env::start_in(cfg, &first);
    env.reg = unpooled(&env.reg.base, &env.reg.user, &env.reg.password);
    env
}

/// A client that opens a new connection per request: the server closes
/// connections idle for `header_timeout` (1 s here), and a pooled one could
/// be picked just as it closes.
fn unpooled(base: &str, user: &str, password: &str) -> Reg {
    let mut reg = Reg::new(base, user, password);
    reg.client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    reg
}

/// Instance `ci` with `[limits]` set to `limits`.
fn ci_with_limits(limits: &str) -> Instance {
    let mut ci = Instance::new("ci");
    ci.extra.push_str(&format!("[limits]\n{limits}\n"));
    ci
}

/// Another client with the credentials of `reg` can push
/// and pull a small blob.
async fn assert_others_served(reg: &Reg) {
    let other = unpooled(&reg.base, &reg.user, &reg.password);
    other.expect_status(Method::GET, "/v2/", 200).await;
    let data = random_bytes(100);
    let digest = push_blob(&other, "others/served", &data).await;
    assert_blob(&other, "others/served", &digest, &data).await;
}

fn auth(env: &Env) -> String {
    basic_auth_value(&env.reg.user, &env.reg.password)
}

/// Reads one response (head and Content-Length body) without waiting for
/// the connection to close.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let fut = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = parse_raw(&buf[..end + 4], true);
                let len: usize = head
                    .header("content-length")
                    .map_or(0, |v| v.parse().unwrap());
                if buf.len() >= end + 4 + len {
                    return parse_raw(&buf[..end + 4 + len], false);
                }
            }
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed before a whole response");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("no response within 30 s")
}

/// Sends a request head and part of a body, then stops sending (keeping the
/// connection open) and returns the server's response.
async fn send_partial(addr: &str, head: &str, body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let resp = read_response(&mut stream).await;
    drop(stream);
    resp
}

/// Starts an upload session and PATCHes `first` into it; the new Location.
async fn session_with(reg: &Reg, first: &[u8]) -> String {
    let resp = reg
        .post(&format!("/v2/{REPO}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "POST upload session");
    let location = must_header(&resp, "location");
    if first.is_empty() {
        return location;
    }
    let resp = reg
        .patch(&location)
        .header("content-range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "PATCH first chunk");
    must_header(&resp, "location")
}

/// The `Range` an upload session reports (asserting 204).
async fn upload_range(reg: &Reg, location: &str) -> String {
    let resp = reg.get(location).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204, "upload status of {location}");
    must_header(&resp, "range")
}

/// The upload directories left in a repository of instance `ci`.
fn upload_dirs(env: &Env, repo: &str) -> Vec<std::path::PathBuf> {
    let dir = env
        .cfg
        .storage_root("ci")
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_uploads");
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn oversized_request_heads() {
    let env = start(vec![Instance::new("ci")]);
    let addr = env.server.addr("ci").to_string();
    let auth = auth(&env);

    // One huge header: parsed, then refused with an OCI error.
    let big = "x".repeat(100 << 10);
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: ci\r\nAuthorization: {auth}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    raw_exchange(&addr, req.as_bytes(), false)
        .await
        .expect_error(431, "UNSUPPORTED", "100 KiB header");

    // Too many header fields: refused by the HTTP layer itself.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: ci\r\n{many}Connection: close\r\n\r\n");
    let resp = raw_exchange(&addr, req.as_bytes(), false).await;
    assert_eq!(resp.status, 431, "150 headers: {}", resp.text());

    // Long request targets.
    let long_name = vec!["a"; 5000].join("/");
    let path = format!("/v2/{long_name}/tags/list");
    let resp = raw_request(
        &addr,
        "GET",
        &path,
        "ci",
        Some((&env.reg.user, &env.reg.password)),
        b"",
    )
    .await;
    resp.expect_error(414, "UNSUPPORTED", "10 KB path");
    let path = format!("/v2/_catalog?last={}", "b".repeat(100 << 10));
    let resp = raw_request(&addr, "GET", &path, "ci", None, b"").await;
    assert_eq!(resp.status, 414, "100 KiB target: {}", resp.text());

    assert_others_served(&env.reg).await;
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let env = start(vec![Instance::new("ci")]);
    let addr = env.server.addr("ci").to_string();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: ci\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = slow.into_split();
    // Trickle a header byte at a time while normal clients are served.
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if wr.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_others_served(&env.reg).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut buf))
        .await
        .expect("the server never closed the slow connection");
    // Closed without a response (or reset while bytes were still coming).
    assert!(
        read.is_err() || buf.is_empty(),
        "slow client got {:?}",
        String::from_utf8_lossy(&buf)
    );
    trickle.abort();
    assert_others_served(&env.reg).await;
}

#[tokio::test]
async fn downloads_nobody_reads_are_cut_off() {
    let env = start(vec![Instance::new("ci")]);
    let addr = env.server.addr("ci").to_string();
    // More than the kernel's socket buffers on both ends hold.
    let size = 48 << 20;
    let data = random_bytes(size);
    let digest = push_blob(&env.reg, REPO, &data).await;
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: ci\r\nAuthorization: {}\r\n\r\n",
        auth(&env)
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    // The client takes nothing for well over body_timeout (1 s) ...
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_others_served(&env.reg).await;
    // ... and then gets only what was in the buffers before the server
    // gave up on it.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut buf))
        .await
        .expect("the server never closed the stalled download");
    assert!(
        read.is_err() || buf.len() < size,
        "the stalled client still got all {} bytes",
        buf.len()
    );
    assert_others_served(&env.reg).await;
}

/// The head of an upload request to `path` announcing 1000 bytes, with
/// `range` (a `Content-Range` line, or nothing).
fn upload_head(method: &str, path: &str, auth: &str, range: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: ci\r\nAuthorization: {auth}\r\n{range}Content-Length: 1000\r\n\r\n"
    )
}

/// Sends bytes 1000..2000 of `data` to the session at `location` (which
/// holds the first 1000) and finishes it with the rest; the blob must then
/// be whole.
async fn resume_and_finish(reg: &Reg, location: &str, data: &[u8]) {
    let digest = sha256_digest(data);
    let resp = reg
        .patch(location)
        .header("content-range", "1000-1999")
        .body(data[1000..2000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let location = must_header(&resp, "location");
    let resp = reg
        .put(&with_query(&location, &format!("digest={digest}")))
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    expect_blob_created(resp, REPO, &digest).await;
    assert_blob(reg, REPO, &digest, data).await;
}

/// A client that goes away in the middle of a chunk (its connection
/// closed, for PATCH with and without Content-Range, and for the final
/// PUT): the session stays at its last good offset, every time, and the
/// upload can be finished.
#[tokio::test]
async fn an_upload_body_cut_by_a_closed_connection_is_rolled_back() {
    let env = start(vec![Instance::new("ci")]);
    let addr = env.server.addr("ci").to_string();
    let auth = auth(&env);
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);
    let location = session_with(&env.reg, &data[..1000]).await;
    let put_path = with_query(&location, &format!("digest={digest}"));
    for round in 0..5 {
        for (method, path, range) in [
            ("PATCH", location.as_str(), "Content-Range: 1000-1999\r\n"),
            ("PATCH", location.as_str(), ""),
            ("PUT", put_path.as_str(), ""),
        ] {
            let head = upload_head(method, path, &auth, range);
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&data[1000..1300]).await.unwrap();
            drop(stream);
            // Whatever the server is still doing with that request, the
            // session is where it was once it is done.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let range = upload_range(&env.reg, &location).await;
                if range == "0-999" {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}, {method} {range:?}: the session kept {range} of a cut chunk"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    resume_and_finish(&env.reg, &location, &data).await;
}

#[tokio::test]
async fn stalled_upload_body_is_rolled_back_and_resumable() {
    let env = start(vec![Instance::new("ci")]);
    let addr = env.server.addr("ci").to_string();
    let auth = auth(&env);
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);
    let location = session_with(&env.reg, &data[..1000]).await;

    // A chunk announced as 1000 bytes stops after 300 (PATCH), and a final
    // chunk stops after 200 (PUT): each fails after the body timeout and
    // leaves the session at its last good offset.
    let put_path = with_query(&location, &format!("digest={digest}"));
    for (method, path, range) in [
        ("PATCH", location.as_str(), "Content-Range: 1000-1999\r\n"),
        ("PUT", put_path.as_str(), ""),
    ] {
        let head = upload_head(method, path, &auth, range);
        let resp = send_partial(&addr, &head, &data[1000..1300]).await;
        resp.expect_error(400, "BLOB_UPLOAD_INVALID", &format!("stalled {method}"));
        assert!(resp.text().contains("no data for 1s"), "{}", resp.text());
        assert_eq!(upload_range(&env.reg, &location).await, "0-999");
        let [dir] = &upload_dirs(&env, REPO)[..] else {
            panic!("expected one upload directory")
        };
        assert_eq!(std::fs::metadata(dir.join("data")).unwrap().len(), 1000);
        assert_others_served(&env.reg).await;
    }

    // The client resumes and finishes.
    resume_and_finish(&env.reg, &location, &data).await;

    // A stalled monolithic upload leaves nothing behind.
    let other = random_bytes(500);
    let path = format!("/v2/{REPO}/blobs/uploads/?digest={}", sha256_digest(&other));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: ci\r\nAuthorization: {auth}\r\nContent-Length: 500\r\n\r\n"
    );
    send_partial(&addr, &head, &other[..100])
        .await
        .expect_error(400, "BLOB_UPLOAD_INVALID", "stalled POST");
    assert_no_blob(&env.reg, REPO, &sha256_digest(&other)).await;
    assert!(upload_dirs(&env, REPO).is_empty());
}

#[tokio::test]
async fn uploads_over_max_blob_size_are_413() {
    let env = start(vec![ci_with_limits("max_blob_size = \"1KiB\"")]);
    let addr = env.server.addr("ci").to_string();
    let creds = (env.reg.user.as_str(), env.reg.password.as_str());
    let auth = auth(&env);
    let data = random_bytes(1024);
    let big = random_bytes(2000);

    // Monolithic: Content-Length over the limit is refused before the body.
    let path = format!("/v2/{REPO}/blobs/uploads/?digest={}", sha256_digest(&big));
    raw_expect_continue(&addr, "POST", &path, creds, "", &big)
        .await
        .expect_error(413, "SIZE_INVALID", "monolithic POST over the limit");
    assert_no_blob(&env.reg, REPO, &sha256_digest(&big)).await;
    assert!(upload_dirs(&env, REPO).is_empty());
    // Exactly the limit is fine.
    let digest = push_blob(&env.reg, REPO, &data).await;
    assert_blob(&env.reg, REPO, &digest, &data).await;

    // Sessions: a Content-Range or Content-Length past the limit.
    let location = session_with(&env.reg, &data[..600]).await;
    let range = "Content-Range: 600-1999\r\n";
    raw_expect_continue(&addr, "PATCH", &location, creds, range, &big[..1400])
        .await
        .expect_error(413, "SIZE_INVALID", "Content-Range past the limit");
    raw_expect_continue(&addr, "PATCH", &location, creds, "", &big[..600])
        .await
        .expect_error(413, "SIZE_INVALID", "Content-Length past the limit");
    let put = with_query(&location, &format!("digest={}", sha256_digest(&big)));
    raw_expect_continue(&addr, "PUT", &put, creds, "", &big[..600])
        .await
        .expect_error(413, "SIZE_INVALID", "final chunk past the limit");
    assert_eq!(upload_range(&env.reg, &location).await, "0-599");

    // A streamed (chunked) body is cut off once it passes the limit.
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: ci\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunk = format!("{:x}\r\n", 600).into_bytes();
    chunk.extend_from_slice(&big[..600]);
    chunk.extend_from_slice(b"\r\n");
    send_partial(&addr, &head, &chunk).await.expect_error(
        413,
        "SIZE_INVALID",
        "streamed PATCH past the limit",
    );
    assert_eq!(upload_range(&env.reg, &location).await, "0-599");
    let [dir] = &upload_dirs(&env, REPO)[..] else {
        panic!("expected one upload directory")
    };
    assert_eq!(std::fs::metadata(dir.join("data")).unwrap().len(), 600);

    // The session goes on up to the limit.
    let resp = env
        .reg
        .put(&with_query(&location, &format!("digest={digest}")))
        .body(data[600..].to_vec())
        .send()
        .await
        .unwrap();
    expect_blob_created(resp, REPO, &digest).await;

    // Manifests keep their own limit (4 MiB), whatever max_blob_size says.
    let config = push_desc(&env.reg, REPO, OCI_CONFIG, b"{}").await;
    let layer = push_desc(&env.reg, REPO, OCI_LAYER, &data[..10]).await;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&image_manifest(OCI_MANIFEST, &config, &[layer])).unwrap();
    manifest["annotations"] = serde_json::json!({ "pad": "p".repeat(5000) });
    let body = serde_json::to_vec(&manifest).unwrap();
    put_manifest_ok(&env.reg, REPO, "big", OCI_MANIFEST, &body).await;

    assert_others_served(&env.reg).await;
}

#[tokio::test]
async fn upload_sessions_per_user_are_bounded() {
    let mut ci = Instance::new("ci").with_users(&["alice", "bob"]);
    ci.extra.push_str("[limits]\nmax_upload_sessions = 3\n");
    let env = start(vec![ci]);
    let alice = unpooled(&env.server.url("ci"), "alice", "alice-pw");
    let bob = unpooled(&env.server.url("ci"), "bob", "bob-pw");
    let post = format!("/v2/{REPO}/blobs/uploads/");

    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(session_with(&alice, b"").await);
    }
    let body = alice
        .expect_error(Method::POST, &post, 429, "TOOMANYREQUESTS")
        .await;
    assert!(
        body.to_string().contains("3 upload sessions open"),
        "{body}"
    );
    // Others have their own slots; monolithic uploads need no session.
    session_with(&bob, b"").await;
    assert_others_served(&bob).await;
    let data = random_bytes(10);
    push_blob(&alice, REPO, &data).await;

    // A cancelled session frees its slot.
    alice.expect_status(Method::DELETE, &open[0], 204).await;
    open[0] = session_with(&alice, b"").await;
    alice
        .expect_error(Method::POST, &post, 429, "TOOMANYREQUESTS")
        .await;
    // So does a finished one.
    let digest = sha256_digest(b"");
    let resp = alice
        .put(&with_query(&open[1], &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    expect_blob_created(resp, REPO, &digest).await;
    session_with(&alice, b"").await;
    alice
        .expect_error(Method::POST, &post, 429, "TOOMANYREQUESTS")
        .await;
}

#[tokio::test]
async fn expired_upload_sessions_stop_counting() {
    let mut ci = ci_with_limits("max_upload_sessions = 1");
    ci.extra.push_str("[retention]\nupload_ttl = \"1s\"\n");
    let env = start(vec![ci]);
    session_with(&env.reg, b"").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first session is past its TTL: a new one may start.
    session_with(&env.reg, b"").await;
}

#[tokio::test]
async fn path_tricks_and_invalid_utf8() {
    let env = start(vec![Instance::new("ci")]);
    let addr = env.server.addr("ci").to_string();
    let creds = Some((env.reg.user.as_str(), env.reg.password.as_str()));
    let d = random_digest();
    for (method, path, status, code) in [
        (
            "GET",
            "/v2/../../etc/passwd/tags/list".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/a/%2e%2e/%2e%2e/tags/list".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2//etc/passwd/tags/list".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/%2Fetc/passwd/tags/list".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/a%00b/tags/list".to_string(),
            400,
            "NAME_INVALID",
        ),
        ("GET", "/v2/a%ff/tags/list".to_string(), 400, "NAME_INVALID"),
        ("GET", format!("/v2/a/blobs/{d}%00"), 400, "DIGEST_INVALID"),
        (
            "GET",
            "/v2/a/blobs/sha256:..%2F..%2Fx".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        ("GET", "/v2/a/blobs/%ff%fe".to_string(), 400, "NAME_INVALID"),
        (
            "GET",
            "/v2/a/manifests/..%2F..%2Fetc".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "PUT",
            "/v2/a/manifests/..%2F..%2Fetc".to_string(),
            400,
            "TAG_INVALID",
        ),
        (
            "GET",
            "/v2/a/manifests/%00".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "DELETE",
            "/v2/a/manifests/%ff%fe".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            "/v2/a/blobs/uploads/..%2F..%2Fdata".to_string(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "PATCH",
            "/v2/a/blobs/uploads/%00".to_string(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "POST",
            "/v2/a/blobs/uploads/?digest=%ff%fe".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "POST",
            "/v2/a/blobs/uploads/?mount=sha256:%00&from=a".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "POST",
            format!("/v2/a/blobs/uploads/?mount={d}&from=..%2Fb"),
            400,
            "NAME_INVALID",
        ),
    ] {
        let resp = raw_request(&addr, method, &path, "ci", creds, b"").await;
        resp.expect_error(status, code, &format!("{method} {path}"));
    }
    // Nothing was written outside the storage root.
    assert!(!env.cfg.path().join("data/etc").exists());

    // Bytes the HTTP layer cannot take as a request line or header: 400.
    let user_pass = (env.reg.user.as_str(), env.reg.password.as_str());
    let auth = basic_auth_value(user_pass.0, user_pass.1);
    for raw in [
        b"GET /v2/\xff\xfe/tags/list HTTP/1.1\r\nHost: ci\r\n\r\n".to_vec(),
        b"GET /v2/a\x00b/tags/list HTTP/1.1\r\nHost: ci\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: ci\r\nX-Nul: a\x00b\r\n\r\n".to_vec(),
    ] {
        let resp = raw_exchange(&addr, &raw, false).await;
        assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(&raw));
    }
    // Header values that are not text.
    let req = b"GET /v2/ HTTP/1.1\r\nHost: ci\r\nConnection: close\r\nAuthorization: Basic \xff\xfe\r\n\r\n";
    raw_exchange(&addr, req, false).await.expect_error(
        401,
        "UNAUTHORIZED",
        "non-UTF-8 Authorization",
    );
    let location = session_with(&env.reg, b"").await;
    let mut req = format!(
        "PATCH {location} HTTP/1.1\r\nHost: ci\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Length: 3\r\nContent-Range: 0-2"
    )
    .into_bytes();
    req.extend_from_slice(b"\xff\r\n\r\nabc");
    raw_exchange(&addr, &req, false).await.expect_error(
        400,
        "BLOB_UPLOAD_INVALID",
        "non-UTF-8 Content-Range",
    );
    assert_eq!(upload_range(&env.reg, &location).await, "0-0");
    let shared = env.server.shared_addr.clone().unwrap();
    raw_exchange(
        &shared,
        b"GET /v2/ HTTP/1.1\r\nHost: \xff.test\r\nConnection: close\r\n\r\n",
        false,
    )
    .await
    .expect_error(400, "UNSUPPORTED", "non-UTF-8 Host");

    assert_others_served(&env.reg).await;
}

#[tokio::test]
async fn json_nesting_bombs_are_manifest_invalid() {
    let env = start(vec![Instance::new("ci")]);
    let config = push_desc(&env.reg, REPO, OCI_CONFIG, b"{}").await;
    let deep = 100_000;
    let arrays = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    let objects = format!("{}1{}", "{\"a\":".repeat(deep), "}".repeat(deep));
    let inside = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{},\"layers\":[],\"annotations\":{{\"x\":{arrays}}}}}",
        config.json()
    );
    let unclosed = "[".repeat(deep);
    for (what, body) in [
        ("nested arrays", arrays.as_str()),
        ("nested objects", objects.as_str()),
        ("nesting inside a manifest", inside.as_str()),
        ("unclosed arrays", unclosed.as_str()),
    ] {
        let resp = put_manifest(&env.reg, REPO, "bomb", OCI_MANIFEST, body.as_bytes()).await;
        expect_error_for(resp, 400, "MANIFEST_INVALID", what).await;
    }
    assert_no_manifest(&env.reg, REPO, "bomb").await;
    assert_others_served(&env.reg).await;
}

#[tokio::test]
async fn inconsistent_lengths_and_ranges() {
    let env = start(vec![Instance::new("ci")]);
    let addr = env.server.addr("ci").to_string();
    let auth = auth(&env);
    let data = random_bytes(100);
    let location = session_with(&env.reg, &data[..10]).await;

    // Two Content-Range headers, conflicting or not: refused.
    for second in ["10-19", "10-29"] {
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: ci\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Range: 10-19\r\nContent-Range: {second}\r\nContent-Length: 10\r\n\r\n"
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(&data[10..20]);
        raw_exchange(&addr, &req, false).await.expect_error(
            400,
            "BLOB_UPLOAD_INVALID",
            "two Content-Range headers",
        );
        assert_eq!(upload_range(&env.reg, &location).await, "0-9");
    }

    // Two different Content-Length headers: refused by the HTTP layer.
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: ci\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n"
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(&data[10..30]);
    let resp = raw_exchange(&addr, &req, false).await;
    assert_eq!(
        resp.status,
        400,
        "conflicting Content-Length: {}",
        resp.text()
    );
    assert_eq!(upload_range(&env.reg, &location).await, "0-9");

    // Content-Range disagreeing with Content-Length.
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: ci\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Range: 10-59\r\nContent-Length: 20\r\n\r\n"
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(&data[10..30]);
    raw_exchange(&addr, &req, false).await.expect_error(
        400,
        "SIZE_INVALID",
        "Content-Range longer than the body",
    );
    assert_eq!(upload_range(&env.reg, &location).await, "0-9");

    // A body shorter than its Content-Length (the client gives up sending).
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: ci\r\nAuthorization: {auth}\r\nContent-Length: 50\r\n\r\n"
    );
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&data[10..30]).await.unwrap();
    stream.shutdown().await.unwrap();
    read_response(&mut stream).await.expect_error(
        400,
        "BLOB_UPLOAD_INVALID",
        "body shorter than Content-Length",
    );
    assert_eq!(upload_range(&env.reg, &location).await, "0-9");

    // A body longer than its Content-Length: the rest is not part of it
    // (it is read as the next request, which is not HTTP: a 400, or the
    // connection just closes).
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: ci\r\nAuthorization: {auth}\r\nContent-Length: 10\r\n\r\n"
    );
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&data[10..20]).await.unwrap();
    stream
        .write_all(b"\x01\x02 not http\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(first.header("range"), Some("0-19"));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest));
    read.await.expect("connection left open").unwrap();
    if !rest.is_empty() {
        let next = parse_raw(&rest, false);
        assert_eq!(next.status, 400, "trailing bytes: {}", next.text());
    }
    assert_eq!(upload_range(&env.reg, &location).await, "0-19");

    // Digest mismatch after all this: nothing stored, session gone.
    let wrong = sha256_digest(b"other");
    let resp = env
        .reg
        .put(&with_query(&location, &format!("digest={wrong}")))
        .body(data[20..].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_blob(&env.reg, REPO, &wrong).await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
    assert!(upload_dirs(&env, REPO).is_empty());

    assert_others_served(&env.reg).await;
}
