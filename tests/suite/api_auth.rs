//! Authentication, Host routing on the shared listener, the API version
//! header and htpasswd reloading.

use crate::common::{sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Both instances tolerate many failed logins: these tests make dozens on
/// purpose.
fn two_instances() -> Env {
    Env::start_with(vec![
        Instance::new("ci").tolerating_failed_logins(),
        Instance::new("cache").tolerating_failed_logins(),
    ])
}

/// Asserts a 401 with the exact challenge for `realm`.
async fn expect_unauthorized(resp: reqwest::Response, realm: &str) {
    let challenge = header(&resp, "www-authenticate");
    let what = format!("{} {}", resp.url(), resp.status());
    expect_error(resp, 401, "UNAUTHORIZED").await;
    assert_eq!(
        challenge.as_deref(),
        Some(format!("Basic realm=\"{realm}\"").as_str()),
        "{what}: WWW-Authenticate"
    );
}

/// Asserts a raw 401 with the exact challenge for `realm`.
fn expect_raw_unauthorized(resp: &RawResponse, realm: &str, what: &str) {
    resp.expect_error(401, "UNAUTHORIZED", what);
    assert_eq!(
        resp.header("www-authenticate"),
        Some(format!("Basic realm=\"{realm}\"").as_str()),
        "{what}: WWW-Authenticate"
    );
}

/// Asserts that a response carries the API version header.
fn assert_api_version(resp: &reqwest::Response, what: &str) {
    assert_eq!(
        header(resp, "docker-distribution-api-version").as_deref(),
        Some(API_VERSION),
        "{what} ({}): Docker-Distribution-API-Version",
        resp.status()
    );
}

#[tokio::test]
async fn missing_credentials_are_401() {
    let env = two_instances();
    for instance in ["ci", "cache"] {
        let reg = env.reg(instance);
        for (method, path) in [
            (Method::GET, "/v2/"),
            (Method::GET, "/v2/_catalog"),
            (Method::GET, "/v2/repo/tags/list"),
            (Method::GET, "/v2/repo/manifests/latest"),
            // Auth comes before name validation and routing.
            (Method::GET, "/v2/Upper/tags/list"),
            (Method::GET, "/v2/repo/not-a-known-endpoint"),
            (Method::POST, "/v2/repo/blobs/uploads/"),
        ] {
            let resp = reg.anon(method, path).send().await.unwrap();
            expect_unauthorized(resp, instance).await;
        }
    }
}

#[tokio::test]
async fn wrong_credentials_are_401() {
    let env = two_instances();
    let ci = env.reg("ci");
    let cases = [
        ("ci-user", "wrong"),
        ("ci-user", ""),
        ("ci-user", "ci-secretx"),
        ("nobody", "ci-secret"),
        ("CI-USER", "ci-secret"),
        // The other instance's credentials.
        ("cache-user", "cache-secret"),
    ];
    for (user, password) in cases {
        let reg = Reg::new(&ci.base, user, password);
        for path in ["/v2/", "/v2/_catalog"] {
            expect_unauthorized(reg.send(Method::GET, path).await, "ci").await;
        }
    }
    let cache = env.reg("cache");
    let reg = Reg::new(&cache.base, "ci-user", "ci-secret");
    expect_unauthorized(reg.send(Method::GET, "/v2/").await, "cache").await;

    // Not Basic at all.
    for authorization in ["Bearer abc.def.ghi", "Basic !!!not-base64"] {
        let resp = ci
            .anon(Method::GET, "/v2/")
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        expect_unauthorized(resp, "ci").await;
    }
}

#[tokio::test]
async fn right_credentials_on_both_instances() {
    let env = two_instances();
    for instance in ["ci", "cache"] {
        let reg = env.reg(instance);
        let body = reg.expect_status(Method::GET, "/v2/", 200).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({}));
    }
    // Instances are separate registries.
    let data = random_bytes(99);
    let digest = push_blob(&env.reg("ci"), "same/name", &data).await;
    assert_blob(&env.reg("ci"), "same/name", &digest, &data).await;
    assert_no_blob(&env.reg("cache"), "same/name", &digest).await;
}

#[tokio::test]
async fn shared_listener_routes_by_host() {
    let env = two_instances();
    let shared = env
        .server
        .shared_addr
        .clone()
        .expect("server reported a shared listener");
    let ci_auth = Some(("ci-user", "ci-secret"));
    let cache_auth = Some(("cache-user", "cache-secret"));

    // (Host, instance, its credentials, credentials it refuses)
    let cases = [
        ("ci.test", "ci", ci_auth, vec![cache_auth, None]),
        ("ci.test:5000", "ci", ci_auth, vec![cache_auth, None]),
        ("ci.test:1", "ci", ci_auth, vec![cache_auth, None]),
        ("cache.test", "cache", cache_auth, vec![ci_auth]),
        ("cache.test:443", "cache", cache_auth, vec![ci_auth]),
    ];
    for (host, realm, good, refused) in cases {
        let resp = raw_request(&shared, "GET", "/v2/", host, good, b"").await;
        assert_eq!(resp.status, 200, "Host {host}: {}", resp.text());
        assert_eq!(resp.text().trim(), "{}", "Host {host}");
        for auth in refused {
            let resp = raw_request(&shared, "GET", "/v2/", host, auth, b"").await;
            expect_raw_unauthorized(&resp, realm, host);
        }
    }

    // Content pushed through the shared listener lands in the routed instance.
    let data = random_bytes(321);
    let digest = sha256_digest(&data);
    let resp = raw_request(
        &shared,
        "POST",
        &format!("/v2/routed/blobs/uploads/?digest={digest}"),
        "cache.test:8080",
        cache_auth,
        &data,
    )
    .await;
    assert_eq!(resp.status, 201, "push via shared: {}", resp.text());
    assert_blob(&env.reg("cache"), "routed", &digest, &data).await;
    assert_no_blob(&env.reg("ci"), "routed", &digest).await;
    let blob = format!("/v2/routed/blobs/{digest}");
    let resp = raw_request(&shared, "GET", &blob, "cache.test", cache_auth, b"").await;
    assert_eq!(resp.status, 200);
    assert!(resp.body == data);
    let resp = raw_request(&shared, "GET", &blob, "ci.test", ci_auth, b"").await;
    resp.expect_error(404, "BLOB_UNKNOWN", "ci via shared");
}

#[tokio::test]
async fn shared_listener_unknown_host() {
    let env = two_instances();
    let shared = env.server.shared_addr.clone().expect("shared listener");
    for host in [
        "unknown.test",
        "unknown.test:5000",
        "127.0.0.1",
        "ci.test.evil",
    ] {
        for auth in [None, Some(("ci-user", "ci-secret"))] {
            let resp = raw_request(&shared, "GET", "/v2/", host, auth, b"").await;
            resp.expect_error(404, "NAME_UNKNOWN", &format!("Host {host}"));
        }
    }
}

/// `GET /v2/` with the credentials of `ci` and exactly these header lines
/// for the host (`Name: value`, none for no Host at all).
fn get_with_hosts(host_lines: &[&str]) -> Vec<u8> {
    let mut req = String::from("GET /v2/ HTTP/1.1\r\nConnection: close\r\n");
    for line in host_lines {
        req.push_str(&format!("{line}\r\n"));
    }
    req.push_str(&format!(
        "Authorization: {}\r\n\r\n",
        basic_auth_value("ci-user", "ci-secret")
    ));
    req.into_bytes()
}

/// RFC 9112 §3.2: a request with more than one Host header, a Host that is
/// not `host[:port]`, or (HTTP/1.1) no Host is refused with 400, never
/// routed on a guess; the instance it seemed to name is not reached.
#[tokio::test]
async fn ambiguous_or_invalid_host_is_400() {
    let env = two_instances();
    let shared = env.server.shared_addr.clone().expect("shared listener");
    let refused: &[&[&str]] = &[
        &["Host: ci.test", "Host: cache.test"],
        &["Host: cache.test", "Host: ci.test"],
        &["Host: ci.test", "Host: ci.test"],
        &["Host: ci.test", "host: ci.test:5000"],
        &["Host: ci.test:cache.test"],
        &["Host: cache.test:ci.test"],
        &["Host: ci.test:"],
        &["Host: ci.test:65536"],
        &["Host: ci.test:123456"],
        &["Host: ci.test:80x"],
        &["Host: ci.test:80:80"],
        &["Host: ci.test extra"],
        &["Host: ci.test/x"],
        &["Host: ::1"],
        &["Host: [::1"],
        &["Host: [::1]x"],
        &["Host: [::1]:99999"],
        &["Host: [ci.test]"],
        &[],
    ];
    for lines in refused {
        let what = format!("{lines:?}");
        let resp = raw_exchange(&shared, &get_with_hosts(lines), false).await;
        resp.expect_error(400, "UNSUPPORTED", &what);
        // Also on a dedicated listener, which does not route by Host.
        let resp = raw_exchange(env.server.addr("ci"), &get_with_hosts(lines), false).await;
        resp.expect_error(400, "UNSUPPORTED", &format!("dedicated {what}"));
    }
    // Valid forms still route (or find no instance).
    for (line, status) in [
        ("Host: ci.test:65535", 200),
        ("Host: CI.test:0", 200),
        ("Host: [::1]:5000", 404),
        ("Host: [::1]", 404),
        ("Host: 127.0.0.1:80", 404),
    ] {
        let resp = raw_exchange(&shared, &get_with_hosts(&[line]), false).await;
        assert_eq!(resp.status, status, "{line}: {}", resp.text());
    }
    // HTTP/1.0 needs no Host; it names no instance on the shared listener.
    let req = b"GET /v2/ HTTP/1.0\r\n\r\n";
    raw_exchange(&shared, req, false).await.expect_error(
        404,
        "NAME_UNKNOWN",
        "HTTP/1.0 without Host",
    );
}

/// bcrypt compares only the first 72 bytes of a password: a login with a
/// longer one that starts like the real password must still fail, and a
/// password of exactly 72 bytes works whole.
#[tokio::test]
async fn passwords_over_72_bytes_never_log_in() {
    let longest = "p".repeat(72);
    let mut ci = Instance::new("ci").tolerating_failed_logins();
    ci.users = vec![("long".into(), longest.clone())];
    let env = Env::start_with(vec![ci]);
    let login = |password: &str| Reg::new(&env.server.url("ci"), "long", password);
    login(&longest)
        .expect_status(Method::GET, "/v2/", 200)
        .await;
    for extra in ["x", "anything at all"] {
        let resp = login(&format!("{longest}{extra}"))
            .send(Method::GET, "/v2/")
            .await;
        expect_unauthorized(resp, "ci").await;
    }
    let shorter = &longest[..71];
    let resp = login(shorter).send(Method::GET, "/v2/").await;
    expect_unauthorized(resp, "ci").await;
}

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let env = Env::start();
    for path in ["/v2/repo/not-a-known-endpoint", "/v2/repo/tags"] {
        env.reg
            .expect_error(Method::GET, path, 404, "UNSUPPORTED")
            .await;
    }
    // Outside /v2/ is the web UI's, which knows no /v3/ either.
    assert_eq!(env.reg.send(Method::GET, "/v3/").await.status(), 404);
    push_image(&env.reg, "repo", "v1").await;
    // Each 405 says what the address takes (RFC 9110 §15.5.6).
    let blob = format!("/v2/repo/blobs/{}", sha256_digest(b"x"));
    for (method, path, allow) in [
        (Method::PUT, "/v2/repo/tags/list", "GET"),
        (
            Method::POST,
            "/v2/repo/manifests/v1",
            "GET, HEAD, PUT, DELETE",
        ),
        (Method::PATCH, "/v2/_catalog", "GET"),
        (Method::DELETE, "/v2/", "GET, HEAD"),
        (Method::PUT, &blob, "GET, HEAD, DELETE"),
        (Method::GET, "/v2/repo/blobs/uploads/", "POST"),
    ] {
        let resp = env.reg.send(method.clone(), path).await;
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        expect_error(resp, 405, "UNSUPPORTED").await;
    }
}

#[tokio::test]
async fn every_response_has_api_version_header() {
    let env = two_instances();
    let reg = env.reg("ci");
    let data = random_bytes(50);
    let digest = sha256_digest(&data);
    let blob = format!("/v2/r/blobs/{digest}");
    let unknown_blob = format!("/v2/r/blobs/{}", random_digest());
    // Sent in this order: the blob is pushed first and deleted last.
    let requests = [
        ("200 /v2/", reg.get("/v2/")),
        ("401", reg.anon(Method::GET, "/v2/")),
        (
            "201 blob",
            reg.post(&format!("/v2/r/blobs/uploads/?digest={digest}"))
                .body(data.clone()),
        ),
        ("202 session", reg.post("/v2/r/blobs/uploads/")),
        ("200 blob", reg.get(&blob)),
        ("200 HEAD blob", reg.head(&blob)),
        ("206 range", reg.get(&blob).header("range", "bytes=0-9")),
        ("416 range", reg.get(&blob).header("range", "bytes=500-")),
        ("404 blob", reg.get(&unknown_blob)),
        ("404 HEAD blob", reg.head(&unknown_blob)),
        ("400 name", reg.get("/v2/Bad/tags/list")),
        ("404 path", reg.get("/v2/r/nothing")),
        ("405", reg.put("/v2/r/tags/list")),
        ("200 catalog", reg.get("/v2/_catalog")),
        ("202 delete", reg.delete(&blob)),
    ];
    for (what, req) in requests {
        assert_api_version(&req.send().await.unwrap(), what);
    }

    // Upload status (204) and cancellation (204).
    let resp = reg.send(Method::POST, "/v2/r/blobs/uploads/").await;
    let location = must_header(&resp, "location");
    for (what, method) in [("upload status", Method::GET), ("cancel", Method::DELETE)] {
        let resp = reg.send(method, &location).await;
        assert_eq!(resp.status().as_u16(), 204, "{what}");
        assert_api_version(&resp, what);
    }
    // The shared listener's own 404, and its 401.
    let shared = env.server.shared_addr.clone().expect("shared listener");
    for (host, status) in [("nowhere.test", 404), ("ci.test", 401)] {
        let resp = raw_request(&shared, "GET", "/v2/", host, None, b"").await;
        assert_eq!(resp.status, status, "Host {host}");
        assert_eq!(
            resp.header("docker-distribution-api-version"),
            Some(API_VERSION),
            "Host {host}"
        );
    }
}

/// Status of GET /v2/ with these credentials.
async fn status_for(base: &str, user: &str, password: &str) -> u16 {
    let reg = Reg::new(base, user, password);
    reg.send(Method::GET, "/v2/").await.status().as_u16()
}

/// Polls until GET /v2/ with these credentials returns `want` (at most 10 s).
async fn wait_for_status(base: &str, user: &str, password: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_for(base, user, password).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user}: still {got} (want {want}) 10 s after the htpasswd change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn htpasswd_line(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())
}

#[tokio::test]
async fn htpasswd_changes_are_picked_up_without_restart() {
    let env = two_instances();
    let base = env.server.url("ci");
    let file = env.cfg.path().join("credentials/ci.htpasswd");
    assert_eq!(status_for(&base, "ci-user", "ci-secret").await, 200);
    assert_eq!(status_for(&base, "new-user", "new-pass").await, 401);

    // Replace the file atomically: ci-user removed, new-user added.
    let tmp = env.cfg.path().join("credentials/ci.htpasswd.tmp");
    std::fs::write(&tmp, htpasswd_line("new-user", "new-pass")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_for_status(&base, "new-user", "new-pass", 200).await;
    wait_for_status(&base, "ci-user", "ci-secret", 401).await;
    let resp = Reg::new(&base, "ci-user", "ci-secret")
        .send(Method::GET, "/v2/")
        .await;
    expect_unauthorized(resp, "ci").await;

    // Rewrite in place: another user added, password of new-user changed.
    let content = format!(
        "{}{}",
        htpasswd_line("new-user", "changed"),
        htpasswd_line("third", "third-pass")
    );
    std::fs::write(&file, content).unwrap();
    wait_for_status(&base, "third", "third-pass", 200).await;
    wait_for_status(&base, "new-user", "new-pass", 401).await;
    assert_eq!(status_for(&base, "new-user", "changed").await, 200);

    // The other instance was never affected.
    assert_eq!(
        status_for(&env.server.url("cache"), "cache-user", "cache-secret").await,
        200
    );
    assert_eq!(
        status_for(&env.server.url("cache"), "new-user", "changed").await,
        401
    );
}

const HTPASSWD: &str = "/usr/bin/htpasswd";

/// Runs `htpasswd -B -C 4 -b [-c] FILE USER PASSWORD`.
fn run_htpasswd(file: &Path, create: bool, user: &str, password: &str) {
    assert!(
        Path::new(HTPASSWD).exists(),
        "{HTPASSWD} is missing: install apache2-utils (Debian/Ubuntu) or \
         httpd-tools (Fedora/RHEL) to run this test"
    );
    let mut cmd = std::process::Command::new(HTPASSWD);
    if create {
        cmd.arg("-c");
    }
    // -B bcrypt; -C 4 keeps it fast; -b password on the command line.
    let status = cmd
        .args(["-B", "-C", "4", "-b"])
        .arg(file)
        .args([user, password])
        .status()
        .expect("run htpasswd");
    assert!(status.success(), "htpasswd for {user} failed: {status}");
}

#[tokio::test]
async fn htpasswd_written_by_apache_htpasswd() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let file = cfg.path().join("credentials/ci.htpasswd");
    std::fs::remove_file(&file).unwrap();
    run_htpasswd(&file, true, "alice", "wonderland");
    run_htpasswd(&file, false, "bob", "p@ss w0rd:with:colons");
    let content = std::fs::read_to_string(&file).unwrap();
    assert!(
        content.contains("alice:$2y$"),
        "htpasswd -B output: {content}"
    );

    let server = Server::start(&cfg);
    let base = server.url("ci");
    assert_eq!(status_for(&base, "alice", "wonderland").await, 200);
    assert_eq!(status_for(&base, "bob", "p@ss w0rd:with:colons").await, 200);
    assert_eq!(status_for(&base, "alice", "wonderland!").await, 401);
    assert_eq!(status_for(&base, "bob", "wonderland").await, 401);
    assert_eq!(status_for(&base, "ci-user", "ci-secret").await, 401);

    // A user added later with htpasswd is picked up too.
    run_htpasswd(&file, false, "carol", "carol-pass");
    wait_for_status(&base, "carol", "carol-pass", 200).await;
    assert_eq!(status_for(&base, "alice", "wonderland").await, 200);
    server.stop();
}
