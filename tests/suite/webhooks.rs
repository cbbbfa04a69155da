//! Webhooks: a receiver in the test gets push, pull and delete events in
//! Distribution's envelope, in order; stopped while events happen and with
//! berth restarted meanwhile, it gets every one of them once it is back,
//! in order, none lost.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::common::{ConfigDir, Instance, Server};
use crate::common_api::*;

/// What the receiver got: content type and events.
type Got = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on `addr` answering 200 to every POST.
fn receive(listener: TcpListener, got: Got) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let got = got.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let got = got.clone();
                        async move {
                            let ct = req
                                .headers()
                                .get("content-type")
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            for e in v["events"].as_array().unwrap() {
                                got.lock().unwrap().push((ct.clone(), e.clone()));
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// A receiver on a free port of 127.0.0.1: its address, what it got, and
/// its task.
async fn receiver() -> (SocketAddr, Got, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Got = Arc::default();
    let task = receive(listener, got.clone());
    (addr, got, task)
}

/// `action target` of each event, e.g. `push app:v1`, `pull sha256:…`.
fn summary(got: &Got) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(_, e)| {
            let t = &e["target"];
            let what = match t["tag"].as_str() {
                Some(tag) => format!("{}:{tag}", t["repository"].as_str().unwrap()),
                None => format!(
                    "{}@{}",
                    t["repository"].as_str().unwrap(),
                    t["mediaType"].as_str().unwrap_or("")
                ),
            };
            format!("{} {what}", e["action"].as_str().unwrap())
        })
        .collect()
}

async fn wait_for(got: &Got, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {:?} of {n} events",
            summary(got)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pushes an image as `tag`, pulls it by tag, deletes the tag: the events
/// it makes (blob pushes, a manifest push, a pull, a delete).
async fn round(reg: &Reg, tag: &str) -> Vec<String> {
    push_image(reg, "app", tag).await;
    assert_eq!(get_manifest(reg, "app", tag).await.status(), 200);
    reg.expect_status(
        reqwest::Method::DELETE,
        &format!("/v2/app/manifests/{tag}"),
        202,
    )
    .await;
    let blob = "push app@application/octet-stream".to_string();
    vec![
        blob.clone(),
        blob,
        format!("push app:{tag}"),
        format!("pull app:{tag}"),
        format!("delete app:{tag}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_across_a_receiver_outage_and_a_restart() {
    let (addr, got, receiver) = receiver().await;
    let mut ci = Instance::new("ci");
    ci.extra = format!(
        "[[notify]]\nurl = \"http://{addr}/hook\"\nevents = [\"push\", \"pull\", \"delete\"]\n\
         headers = {{ Authorization = \"Bearer s3cret\" }}\ntimeout = \"1s\"\n"
    );
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");

    let mut expected = round(&reg, "v1").await;
    wait_for(&got, expected.len()).await;
    assert_eq!(summary(&got), expected);
    {
        let events = got.lock().unwrap();
        let (ct, push) = &events[2];
        assert_eq!(ct, "application/vnd.docker.distribution.events.v2+json");
        assert_eq!(push["target"]["mediaType"], OCI_MANIFEST);
        assert!(push["target"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
        assert_eq!(push["request"]["method"], "PUT");
        assert_eq!(push["actor"]["name"], "ci-user");
        assert_eq!(push["source"]["instanceID"], "ci");
        assert!(push["id"].as_str().is_some() && push["timestamp"].as_str().is_some());
    }
    assert!(
        !server.stderr().contains("s3cret"),
        "a header is never logged"
    );

    // The receiver goes away; events happen; berth restarts; the
    // receiver comes back on the same address.
    receiver.abort();
    let _ = receiver.await;
    expected.extend(round(&reg, "v2").await);
    server.stop();
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    expected.extend(round(&reg, "v3").await);
    let listener = TcpListener::bind(addr).await.unwrap();
    let receiver = receive(listener, got.clone());
    wait_for(&got, expected.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // At least once: an event may come twice (sent, then berth stopped
    // before it heard the answer) but never out of order or not at all.
    let mut ids: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    for (s, (_, e)) in summary(&got).into_iter().zip(got.lock().unwrap().iter()) {
        let id = e["id"].as_str().unwrap().to_string();
        if !ids.contains(&id) {
            ids.push(id);
            seen.push(s);
        }
    }
    assert_eq!(seen, expected);
    receiver.abort();
    server.stop();
}

/// A delete in the web UI is a `delete` event of its user; a collection
/// started there makes retention's `delete` events and a `gc` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_deletes_and_collections_make_events() {
    let (addr, got, receiver) = receiver().await;
    let mut ci = Instance::new("ci");
    ci.extra = format!(
        "[retention]\nkeep_last = 1\ngc_grace = \"0s\"\n\
         [[notify]]\nurl = \"http://{addr}/hook\"\nevents = [\"delete\", \"gc\"]\n"
    );
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    push_image(&reg, "app", "v1").await;
    push_image(&reg, "app", "v2").await;
    push_image(&reg, "app", "v3").await;
    cfg.age_tag("ci", "app", "v1", Duration::from_secs(86_400));

    let mut b = crate::ui::Browser::new(&server, "ci");
    b.log_in("ci-user", "ci-secret").await;
    let confirm = b.get("/r/app/-/delete?tag=v3").await;
    let done = b
        .post(
            "/r/app/-/delete",
            &[("csrf", &confirm.csrf()), ("tag", "v3")],
        )
        .await;
    assert_eq!(done.status, 303);
    wait_for(&got, 1).await;
    let usage = b.get("/-/usage").await;
    let started = b
        .post("/-/gc", &[("csrf", &usage.csrf()), ("run", "now")])
        .await;
    assert_eq!(started.status, 303);
    wait_for(&got, 3).await;
    let events: Vec<Value> = got.lock().unwrap().iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(summary(&got)[..2], ["delete app:v3", "delete app:v1"]);
    assert_eq!(events[0]["actor"]["name"], "ci-user");
    assert_eq!(events[0]["request"]["method"], "POST");
    assert_eq!(events[1]["actor"]["name"], "retention");
    assert_eq!(events[2]["action"], "gc");
    assert!(events[2]["target"]["length"].as_u64().unwrap() >= 3);
    receiver.abort();
    server.stop();
}

/// A blob mounted from another repository is a `mount` event naming the
/// source, as registry:2 sends it; the default events include it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_blob_is_a_mount_event() {
    let (addr, got, receiver) = receiver().await;
    let mut ci = Instance::new("ci");
    ci.extra = format!("[[notify]]\nurl = \"http://{addr}/hook\"\n");
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    let digest = push_blob(&reg, "src", b"shared layer").await;
    let resp = reg
        .post(&format!("/v2/dst/blobs/uploads/?mount={digest}&from=src"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    wait_for(&got, 2).await;
    let events = got.lock().unwrap().clone();
    let (push, mount) = (&events[0].1, &events[1].1);
    assert_eq!(push["action"], "push");
    assert!(push["target"].get("fromRepository").is_none(), "{push}");
    assert_eq!(mount["action"], "mount");
    assert_eq!(mount["target"]["repository"], "dst");
    assert_eq!(mount["target"]["fromRepository"], "src");
    assert_eq!(mount["target"]["digest"], digest.as_str());
    assert_eq!(mount["target"]["size"], 12);
    receiver.abort();
    server.stop();
}
