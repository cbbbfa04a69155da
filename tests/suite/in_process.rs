//! The server in the test's own runtime: the `Server` that `berth serve`
//! runs, started from a config loaded with `berth::config::load`, on
//! listeners the test binds on 127.0.0.1:0, reloaded and shut down through
//! its handle. (Signals, exit codes and stdout are the process's, tested
//! with the real binary in tests/reload.rs and others.)

use std::time::{Duration, Instant};

use crate::common::{sha256_digest, ConfigDir, Instance};
use crate::common_api::{
    assert_blob, assert_manifest_body, expect_status, manifest_refs, push_image, Continued, Reg,
};
use berth::server::{Listen, Listeners, Server, Snapshot};
use tokio::net::{TcpListener, TcpStream};

/// Loads `cfg` and serves it on listeners bound here, each on 127.0.0.1:0.
async fn serve(cfg: &ConfigDir) -> Server {
    let config = berth::config::load(cfg.path()).expect("config loads");
    let snapshot = Snapshot::build(&config, None).expect("instances build");
    let mut listeners = Listeners::new();
    for listen in Listen::all(&config) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(listen, listener);
    }
    Server::start(config, snapshot, listeners)
        .await
        .expect("server starts")
}

/// A client for `inst` on its dedicated listener.
fn reg(server: &Server, inst: &Instance) -> Reg {
    let addr = server.addr(&inst.name).expect("instance listener");
    Reg::new(&format!("http://{addr}"), inst.user(), inst.password())
}

/// Waits (bounded) until nothing accepts connections on `addr` any more.
async fn wait_refused(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn push_and_pull_an_image() {
    let ci = Instance::new("ci");
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = serve(&cfg).await;
    let listeners: Vec<_> = server
        .listeners()
        .iter()
        .map(|o| {
            (
                o.listen.label().to_string(),
                o.local.ip().to_string(),
                o.tls,
            )
        })
        .collect();
    let local = |label: &str| (label.to_string(), "127.0.0.1".to_string(), false);
    assert_eq!(listeners, vec![local("shared"), local("ci")]);

    let reg = reg(&server, &ci);
    let (manifest, digest) = push_image(&reg, "team/app", "v1").await;
    assert_manifest_body(&reg, "team/app", "v1", &manifest).await;
    assert_manifest_body(&reg, "team/app", &digest, &manifest).await;
    let (_, blobs) = manifest_refs(&manifest);
    for blob in &blobs {
        let path = format!("/v2/team/app/blobs/{blob}");
        let body = expect_status(reg.get(&path).send().await.unwrap(), 200).await;
        assert_eq!(&sha256_digest(&body), blob);
    }

    // The shared listener routes by Host to the same instance.
    let shared = server.addr("shared").unwrap();
    let resp = reg
        .client
        .get(format!("http://{shared}/v2/team/app/tags/list"))
        .header("host", "ci.test")
        .basic_auth(ci.user(), Some(ci.password()))
        .send()
        .await
        .unwrap();
    let tags: serde_json::Value = serde_json::from_slice(&expect_status(resp, 200).await).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn reload_through_the_handle() {
    let ci = Instance::new("ci");
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let mut server = serve(&cfg).await;
    let ci_reg = reg(&server, &ci);
    let ci_addr = server.addr("ci").unwrap();

    // Added: the new instance's listener is bound by the server and serves
    // its own users only; ci keeps its listener.
    let extra = Instance::new("extra");
    cfg.add_instance(&extra);
    let config = berth::config::load(cfg.path()).unwrap();
    let opened = server.reload(config).await.expect("reload");
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].listen.label(), "extra");
    let extra_addr = opened[0].local;
    assert_eq!(server.addr("extra"), Some(extra_addr));
    assert_eq!(server.addr("ci"), Some(ci_addr));
    let extra_reg = reg(&server, &extra);
    extra_reg
        .expect_status(reqwest::Method::GET, "/v2/", 200)
        .await;
    let wrong = Reg::new(&extra_reg.base, ci.user(), ci.password());
    wrong.expect_status(reqwest::Method::GET, "/v2/", 401).await;
    let (manifest, _) = push_image(&extra_reg, "app", "latest").await;
    assert_manifest_body(&extra_reg, "app", "latest", &manifest).await;

    // Refused whole: an instance whose htpasswd file does not parse.
    let broken = Instance::new("broken");
    cfg.add_instance(&broken);
    std::fs::write(cfg.path().join("credentials/broken.htpasswd"), "no colon\n").unwrap();
    let config = berth::config::load(cfg.path()).unwrap();
    let errors = server.reload(config).await.expect_err("a broken reload");
    assert!(
        errors.iter().any(|e| e.contains("broken.htpasswd")),
        "{errors:?}"
    );
    assert_eq!(server.addr("broken"), None);
    extra_reg
        .expect_status(reqwest::Method::GET, "/v2/", 200)
        .await;

    // Removed: its listener closes; ci serves on.
    std::fs::remove_file(cfg.path().join("instances/broken.toml")).unwrap();
    std::fs::remove_file(cfg.path().join("instances/extra.toml")).unwrap();
    let config = berth::config::load(cfg.path()).unwrap();
    let opened = server.reload(config).await.expect("reload");
    assert!(opened.is_empty(), "{opened:?}");
    assert_eq!(server.addr("extra"), None);
    wait_refused(extra_addr).await;
    ci_reg
        .expect_status(reqwest::Method::GET, "/v2/", 200)
        .await;

    server.shutdown(Duration::from_secs(5)).await;
}

/// Starts a monolithic upload of `data` to `app` on `ci` and waits until
/// the server asks for its body: from then on the request is in flight.
async fn upload_in_flight(server: &Server, ci: &Instance, data: &[u8]) -> Continued {
    let addr = server.addr("ci").unwrap().to_string();
    let path = format!("/v2/app/blobs/uploads/?digest={}", sha256_digest(data));
    let auth = (ci.user(), ci.password());
    let start = Continued::start(&addr, "POST", &path, auth, "", data.len());
    match tokio::time::timeout(Duration::from_secs(10), start).await {
        Ok(Ok(continued)) => continued,
        Ok(Err(answer)) => panic!("answered before the body: {}", answer.text()),
        Err(_) => panic!("no 100 Continue"),
    }
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_refuses_new_ones() {
    let ci = Instance::new("ci");
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = serve(&cfg).await;
    let addrs: Vec<_> = server.listeners().iter().map(|o| o.local).collect();
    let data = b"finished after the shutdown began".to_vec();
    let upload = upload_in_flight(&server, &ci, &data).await;

    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    for addr in &addrs {
        wait_refused(*addr).await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the upload"
    );
    let resp = upload.finish(&data).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown ends once the upload is done")
        .unwrap();
    for addr in &addrs {
        assert!(TcpStream::connect(addr).await.is_err(), "{addr} accepts");
    }

    // What was pushed is there for the next server on the same config.
    let server = serve(&cfg).await;
    assert_blob(&reg(&server, &ci), "app", &sha256_digest(&data), &data).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn drain_timeout_cuts_off_what_is_still_in_flight() {
    let ci = Instance::new("ci");
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = serve(&cfg).await;
    let data = b"never sent".to_vec();
    let upload = upload_in_flight(&server, &ci, &data).await;

    let asked = Instant::now();
    server.shutdown(Duration::from_millis(100)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    // The connection was cut: no answer to the body, however it is sent.
    let answer = upload.send_body(&data).await.unwrap_or_default();
    assert!(
        !answer.starts_with(b"HTTP/1.1 2"),
        "a cut-off upload succeeded: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn start_wants_exactly_the_listeners_of_the_config() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let config = berth::config::load(cfg.path()).unwrap();
    let all = Listen::all(&config);
    assert_eq!(
        all.iter().map(Listen::label).collect::<Vec<_>>(),
        ["shared", "ci"]
    );

    // One missing.
    let mut listeners = Listeners::new();
    let bound = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listeners.insert(all[0].clone(), bound);
    let snapshot = Snapshot::build(&config, None).unwrap();
    let err = Server::start(config.clone(), snapshot, listeners)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("no listener was given for ci"),
        "{err}"
    );

    // One the config does not ask for.
    let mut listeners = Listeners::bind(&config).await.unwrap();
    let other = Listen {
        addr: "127.0.0.1:0".parse().unwrap(),
        target: berth::server::Target::Instance("other".into()),
    };
    let bound = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listeners.insert(other, bound);
    let snapshot = Snapshot::build(&config, None).unwrap();
    let err = Server::start(config, snapshot, listeners)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("for other on"), "{err}");
}
