//! The registry:2 settings an instance takes over, against the real
//! server: `[maintenance] read_only` (writes get 405 UNSUPPORTED, pulls
//! work, toggled by reload while a pull streams), `[http] headers` (on API
//! answers, errors and the web UI) and `[validation]` (the URLs of layers
//! in pushed manifests).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;

use crate::common::{sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;
use crate::ui::Browser;

/// Rewrites instance `ci` with `extra`, reloads, and waits until the
/// server says the `n`th reload is done.
fn reconfigure(cfg: &ConfigDir, server: &Server, extra: &str, n: usize) {
    let mut inst = Instance::new("ci");
    inst.extra = extra.to_string();
    cfg.add_instance(&inst);
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stderr().matches("configuration reloaded").count() < n {
        assert!(Instant::now() < deadline, "no reload:\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A read-only refusal, whose `Allow` lists what the route still serves.
async fn read_only_refusal(resp: reqwest::Response, allow: &str) {
    assert_eq!(resp.headers()["allow"], allow, "Allow of a read-only 405");
    let body = expect_error(resp, 405, "UNSUPPORTED").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("read-only"), "{message}");
}

#[tokio::test]
async fn read_only_refuses_writes_and_serves_pulls_and_a_reload_toggles_it() {
    let env = Env::start();
    let reg = &env.reg;
    let big = random_bytes(48 << 20);
    let big_digest = push_blob(reg, "app", &big).await;
    let config = push_desc(reg, "app", OCI_CONFIG, b"{}").await;
    let layer = push_desc(reg, "app", OCI_LAYER, b"layer").await;
    let manifest = image_manifest(OCI_MANIFEST, &config, std::slice::from_ref(&layer));
    let manifest_digest = put_manifest_ok(reg, "app", "v1", OCI_MANIFEST, &manifest).await;
    let session = open_session(reg, "app").await;

    // A pull that streams across both reloads, read slowly.
    let resp = reg
        .get(&format!("/v2/app/blobs/{big_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut pulled = stream.next().await.unwrap().unwrap().to_vec();

    reconfigure(
        &env.cfg,
        &env.server,
        "[maintenance]\nread_only = true\n",
        1,
    );
    let other = random_bytes(100);
    read_only_refusal(reg.send(Method::POST, "/v2/app/blobs/uploads/").await, "").await;
    read_only_refusal(
        post_blob(reg, "app", &sha256_digest(&other), &other).await,
        "",
    )
    .await;
    let mount = format!("/v2/other/blobs/uploads/?mount={}&from=app", layer.digest);
    read_only_refusal(reg.send(Method::POST, &mount).await, "").await;
    read_only_refusal(
        reg.patch(&session)
            .body(other.clone())
            .send()
            .await
            .unwrap(),
        "",
    )
    .await;
    read_only_refusal(reg.send(Method::DELETE, &session).await, "").await;
    read_only_refusal(
        put_manifest(reg, "app", "v2", OCI_MANIFEST, &manifest).await,
        "GET, HEAD",
    )
    .await;
    read_only_refusal(
        reg.send(
            Method::DELETE,
            &format!("/v2/app/manifests/{manifest_digest}"),
        )
        .await,
        "GET, HEAD",
    )
    .await;
    read_only_refusal(
        reg.send(Method::DELETE, &format!("/v2/app/blobs/{}", layer.digest))
            .await,
        "GET, HEAD",
    )
    .await;
    // Pulls, tag lists and the catalog are served.
    reg.expect_status(Method::GET, "/v2/app/manifests/v1", 200)
        .await;
    reg.expect_status(
        Method::HEAD,
        &format!("/v2/app/blobs/{}", layer.digest),
        200,
    )
    .await;
    reg.expect_status(Method::GET, "/v2/app/tags/list", 200)
        .await;
    reg.expect_status(Method::GET, "/v2/_catalog", 200).await;
    // The web UI refuses its deletes and collections too.
    let mut ui = Browser::new(&env.server, "ci");
    ui.log_in("ci-user", "ci-secret").await;
    let form = ui
        .get(&format!("/r/app/-/delete?digest={manifest_digest}"))
        .await;
    let csrf = form.csrf();
    let done = ui
        .post(
            "/r/app/-/delete",
            &[("digest", &manifest_digest), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status, 405, "{}", done.body);
    assert_eq!(
        done.headers["allow"], "GET, HEAD",
        "the delete page still shows"
    );
    assert!(done.has("read-only"), "{}", done.body);
    let gc = ui.post("/-/gc", &[("run", "now"), ("csrf", &csrf)]).await;
    assert_eq!(gc.status, 405, "{}", gc.body);
    assert_eq!(gc.headers["allow"], "", "collections are off");
    reg.expect_status(
        Method::GET,
        &format!("/v2/app/manifests/{manifest_digest}"),
        200,
    )
    .await;

    reconfigure(&env.cfg, &env.server, "", 2);
    // The pull in flight all along ends whole.
    while let Some(chunk) = stream.next().await {
        pulled.extend_from_slice(&chunk.unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(pulled.len(), big.len());
    assert_eq!(sha256_digest(&pulled), big_digest);
    // Writes work again, on the session opened before.
    finish_upload(reg, &session, &sha256_digest(b"")).await;
    put_manifest_ok(reg, "app", "v2", OCI_MANIFEST, &manifest).await;
    reg.expect_status(Method::DELETE, "/v2/app/manifests/v2", 202)
        .await;
}

#[tokio::test]
async fn configured_headers_are_on_every_response() {
    let mut inst = Instance::new("ci");
    inst.extra = "[http]\nheaders = { \"X-Content-Type-Options\" = \"nosniff\", \
                  \"Cache-Control\" = \"no-store\", \"Content-Security-Policy\" = \"default-src 'self'\" }\n"
        .into();
    let env = Env::start_with(vec![inst, Instance::new("plain")]);
    let reg = &env.reg;
    let answers = [
        reg.send(Method::GET, "/v2/").await,
        reg.send(Method::GET, "/v2/nothing/manifests/latest").await,
        reg.anon(Method::GET, "/v2/").send().await.unwrap(),
        reg.send(Method::PUT, "/v2/").await,
        reg.send(Method::GET, "/-/login").await,
        reg.send(Method::GET, "/r/nothing").await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 404, 401, 405, 200, 404]);
    for resp in &answers {
        assert_eq!(
            header(resp, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{}",
            resp.url()
        );
        assert_eq!(
            header(resp, "cache-control").as_deref(),
            Some("no-store"),
            "{}",
            resp.url()
        );
        assert_eq!(
            header(resp, "docker-distribution-api-version").as_deref(),
            Some(API_VERSION)
        );
    }
    // The UI's own policy is kept; the API gets the configured one.
    assert_eq!(
        header(&answers[0], "content-security-policy").as_deref(),
        Some("default-src 'self'")
    );
    assert!(header(&answers[4], "content-security-policy")
        .unwrap()
        .starts_with("default-src 'none'"));
    // Another instance gets none of them.
    let plain = env.reg("plain").send(Method::GET, "/v2/").await;
    assert!(header(&plain, "cache-control").is_none());
}

/// An image manifest of `repo` whose one layer lives at `urls`.
async fn manifest_with_urls(reg: &Reg, repo: &str, urls: &[&str]) -> Vec<u8> {
    let config = push_desc(reg, repo, OCI_CONFIG, b"{}").await;
    let layer = json!({
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "digest": random_digest(),
        "size": 1234,
        "urls": urls,
    });
    let v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.json(),
        "layers": [layer],
    });
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn layer_urls_are_held_to_the_validation_patterns() {
    let mut checked = Instance::new("ci");
    checked.extra = "[validation]\nmanifest_urls_allow = ['^https://([^/]+\\.)*example\\.com/']\n\
                     manifest_urls_deny = ['^https://private\\.example\\.com/']\n"
        .into();
    let mut none = Instance::new("strict");
    none.extra = "[validation]\n".into();
    let env = Env::start_with(vec![checked, none, Instance::new("open")]);
    let reg = &env.reg;
    for (urls, ok) in [
        (&["https://cdn.example.com/l.tgz"][..], true),
        (
            &["https://example.com/a", "https://mirror.example.com/b"],
            true,
        ),
        (&["https://example.org/l.tgz"], false),
        (
            &["https://cdn.example.com/a", "https://private.example.com/b"],
            false,
        ),
        (&["ftp://cdn.example.com/l.tgz"], false),
    ] {
        let body = manifest_with_urls(reg, "win", urls).await;
        let resp = put_manifest(reg, "win", "t", OCI_MANIFEST, &body).await;
        if ok {
            expect_status(resp, 201).await;
        } else {
            let e = expect_error_for(resp, 400, "MANIFEST_INVALID", &format!("{urls:?}")).await;
            assert!(
                e["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("layer URL"),
                "{e}"
            );
        }
    }
    // An empty [validation] allows no URL, and takes manifests without any.
    let strict = env.reg("strict");
    let body = manifest_with_urls(&strict, "win", &["https://cdn.example.com/l"]).await;
    expect_error(
        put_manifest(&strict, "win", "t", OCI_MANIFEST, &body).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    let config = push_desc(&strict, "win", OCI_CONFIG, b"{}").await;
    let layer = push_desc(&strict, "win", OCI_LAYER, b"l").await;
    put_manifest_ok(
        &strict,
        "win",
        "t",
        OCI_MANIFEST,
        &image_manifest(OCI_MANIFEST, &config, &[layer]),
    )
    .await;
    // Without the table, any URL is taken unchecked.
    let open = env.reg("open");
    let body = manifest_with_urls(&open, "win", &["https://anywhere.test/l"]).await;
    expect_status(
        put_manifest(&open, "win", "t", OCI_MANIFEST, &body).await,
        201,
    )
    .await;
}
