//! Live reload (SIGHUP) and graceful shutdown (SIGTERM) of a running server.

use std::time::{Duration, Instant};

use crate::common::{sha256_digest, ConfigDir, Instance, Server};
use futures_util::StreamExt;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn base_status(addr: &str, user: &str, password: &str) -> Option<u16> {
    let resp = client()
        .get(format!("http://{addr}/v2/"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// A body that sends `chunks` pieces of `data`, pausing between them, so the
/// request is still in flight while the test does something else.
fn slow_body(data: Vec<u8>, chunks: usize, pause: Duration) -> reqwest::Body {
    let size = data.len().div_ceil(chunks);
    let pieces: Vec<Vec<u8>> = data.chunks(size).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(pieces).then(move |p| async move {
        tokio::time::sleep(pause).await;
        Ok::<_, std::io::Error>(p)
    });
    reqwest::Body::wrap_stream(stream)
}

/// A request to `path` on `ci`, as its user.
fn ci_request(server: &Server, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    let ci = Instance::new("ci");
    client()
        .request(method, format!("{}{path}", server.url("ci")))
        .basic_auth(ci.user(), Some(ci.password()))
}

/// Sends a request without a body to `path` on `ci`, as its user.
async fn ci_send(server: &Server, method: reqwest::Method, path: &str) -> reqwest::Response {
    ci_request(server, method, path).send().await.unwrap()
}

/// Starts an upload on `ci` and returns its Location path.
async fn start_upload(server: &Server, repo: &str) -> String {
    let path = format!("/v2/{repo}/blobs/uploads/");
    let resp = ci_send(server, reqwest::Method::POST, &path).await;
    assert_eq!(resp.status().as_u16(), 202);
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// Sends `body` to the upload at `location` on `ci` in a PATCH of its own
/// task; the task ends with the status.
fn spawn_patch(
    server: &Server,
    location: &str,
    body: reqwest::Body,
) -> tokio::task::JoinHandle<reqwest::Result<u16>> {
    let send = ci_request(server, reqwest::Method::PATCH, location)
        .body(body)
        .send();
    tokio::spawn(async move { send.await.map(|r| r.status().as_u16()) })
}

#[tokio::test]
async fn reload_adds_changes_and_removes_instances_while_a_push_goes_on() {
    let ci = Instance::new("ci");
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = Server::start(&cfg);
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256_digest(&data);
    let location = start_upload(&server, "app").await;

    // A PATCH that takes about two seconds, in flight across the reloads.
    let patch = spawn_patch(
        &server,
        &location,
        slow_body(data.clone(), 20, Duration::from_millis(100)),
    );

    // Added: a new instance serves on its own listener with its own users.
    let extra = Instance::new("extra");
    cfg.add_instance(&extra);
    server.signal("HUP");
    let extra_addr = server.wait_for_listener("extra");
    assert_eq!(
        base_status(&extra_addr, extra.user(), extra.password()).await,
        Some(200)
    );
    assert_eq!(
        base_status(&extra_addr, ci.user(), ci.password()).await,
        Some(401)
    );

    // Broken: refused as a whole, with file and line; the old config serves on.
    let extra_file = cfg.path().join("instances/extra.toml");
    std::fs::write(&extra_file, "hostnames = [\"extra.test\"\nlisten = 1\n").unwrap();
    server.signal("HUP");
    let log = server.wait_for_stderr("reload refused");
    assert!(log.contains("instances/extra.toml:2:1"), "{log}");
    assert_eq!(
        base_status(&extra_addr, extra.user(), extra.password()).await,
        Some(200)
    );

    // Changed: new users apply, on the same listener.
    let mut changed = Instance::new("extra");
    changed.users = vec![("newcomer".into(), "fresh".into())];
    cfg.add_instance(&changed);
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while base_status(&extra_addr, "newcomer", "fresh").await != Some(200) {
        assert!(Instant::now() < deadline, "changed users never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        base_status(&extra_addr, extra.user(), extra.password()).await,
        Some(401)
    );

    // Removed: its listener closes.
    std::fs::remove_file(&extra_file).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while base_status(&extra_addr, "newcomer", "fresh")
        .await
        .is_some()
    {
        assert!(Instant::now() < deadline, "removed instance still answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The push in flight all along completes and is whole.
    assert_eq!(patch.await.unwrap().unwrap(), 202);
    let put = format!("{location}?digest={digest}");
    let resp = ci_send(&server, reqwest::Method::PUT, &put).await;
    assert_eq!(resp.status().as_u16(), 201);
    let get = format!("/v2/app/blobs/{digest}");
    let pulled = ci_send(&server, reqwest::Method::GET, &get)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_digest(&pulled), digest);
}

#[tokio::test]
async fn sigterm_lets_a_transfer_in_flight_finish() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let mut server = Server::start(&cfg);
    let location = start_upload(&server, "app").await;
    let data = vec![7u8; 1_000_000];
    let patch = spawn_patch(
        &server,
        &location,
        slow_body(data, 10, Duration::from_millis(100)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    assert_eq!(patch.await.unwrap().unwrap(), 202);
    assert!(server.wait_exit().success());
    let log = server.stderr();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    std::fs::write(
        cfg.path().join("berth.toml"),
        "[listen]\nhttp = \"127.0.0.1:0\"\n[server]\ndrain_timeout = \"1s\"\n",
    )
    .unwrap();
    let mut server = Server::start(&cfg);
    let location = start_upload(&server, "app").await;
    // Far slower than the drain timeout: 60 pieces, one every 500 ms.
    let patch = spawn_patch(
        &server,
        &location,
        slow_body(vec![1u8; 60], 60, Duration::from_millis(500)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    server.signal("TERM");
    server.wait_exit();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown waited past the drain timeout"
    );
    server.wait_for_stderr("drain timeout");
    assert!(
        patch.await.unwrap().is_err(),
        "the cut-off request cannot have succeeded"
    );
}
