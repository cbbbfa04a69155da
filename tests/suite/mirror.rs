//! Pull-through mirror instances against real upstreams on 127.0.0.1:
//! Debian's `docker-registry` with Basic auth (pulls through the mirror,
//! pushes refused, a moved tag picked up after `tag_ttl`; the upstream
//! stopped: cached tags served stale, uncached content refused naming the
//! upstream; the tag moved meanwhile, and picked up once it is back), the
//! same behind token auth as a fake Docker Hub (anonymous and with
//! credentials, one token per repository however many blobs), and another
//! berth instance with Basic auth (20 clients at once asking for an
//! uncached tag, then pulling an uncached 256 MiB layer: each fetched
//! upstream once; a prefix of it beside repositories that take pushes). Real clients pulling through a mirror are in
//! `mirror_clients`.

use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::clients::hub::{FakeHub, PRIVATE};
use crate::clients::*;
use crate::common::{ConfigDir, Instance, Server};
use crate::common_api::{
    expect_error_for, header, push_blob, push_image, random_bytes, Method, Reg, ACCEPT_MANIFESTS,
};

/// The mirror's `tag_ttl` in the first test.
const TAG_TTL: Duration = Duration::from_secs(5);

/// `GET` of a manifest with every manifest type accepted.
async fn get_manifest(reg: &Reg, path: &str) -> reqwest::Response {
    reg.get(path)
        .header("accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .unwrap()
}

/// How many lines of `log` contain `needle`.
fn count_in(log: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .matches(needle)
        .count()
}

#[test]
fn mirror_of_docker_registry_with_basic_auth_through_an_outage() {
    let root = tempfile::tempdir().unwrap();
    let mut upstream = DistRegistry::start(root.path(), "up", "up-secret");
    let v1 = make_image("v1");
    let v2 = make_image("v2");
    let v3 = make_image("v3");
    let creds = upstream.creds();
    skopeo_push(
        &v1.reference("v1"),
        &upstream.image("team/app:stable"),
        &creds,
        &[],
    );
    skopeo_push(
        &v1.reference("v1"),
        &upstream.image("team/other:1"),
        &creds,
        &[],
    );

    let cfg = ConfigDir::new(&[]);
    let url = format!("http://{}", upstream.addr);
    let upstreams = [cfg.mirror_upstream("reference.test", &url, "", Some(&creds))];
    let cache = "[mirror.cache]\ntag_ttl = \"5s\"\nserve_stale = true\n";
    cfg.add_instance(&Instance::mirror("hub", "", &upstreams, cache));
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth", &server.stderr_log);
    let hub = server.addr("hub").to_string();
    let hub_creds = "hub-user:hub-secret";
    let through = |repo_tag: &str| format!("docker://{hub}/{repo_tag}");

    // Pulled through the mirror, byte for byte.
    let pulled = pull_layout(&through("team/app:stable"), "stable", hub_creds, &[]);
    let digest = v1.digest("v1");
    assert_eq!(pulled.digest("stable"), digest);
    pulled.assert_layers_intact(&digest);

    // Pushes are refused, naming what is mirrored.
    let refused = skopeo_push_fails(&v2.reference("v2"), &through("team/app:mine"), hub_creds);
    assert!(
        refused.contains("this instance mirrors reference.test"),
        "{refused}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = Reg::new(&format!("http://{hub}"), "hub-user", "hub-secret");
    let stable = "/v2/team/app/manifests/stable";
    // The tag moves upstream: the mirror keeps its digest for tag_ttl,
    // then picks up the new one.
    skopeo_push(
        &v2.reference("v2"),
        &upstream.image("team/app:stable"),
        &creds,
        &[],
    );
    rt.block_on(async {
        let resp = get_manifest(&reg, stable).await;
        assert_eq!(
            header(&resp, "docker-content-digest").unwrap(),
            digest,
            "within tag_ttl"
        );
        tokio::time::sleep(TAG_TTL).await;
        let resp = get_manifest(&reg, stable).await;
        assert_eq!(
            header(&resp, "docker-content-digest").unwrap(),
            v2.digest("v2"),
            "after tag_ttl"
        );
    });
    let pulled = pull_layout(&through("team/app:stable"), "stable", hub_creds, &[]);
    pulled.assert_layers_intact(&v2.digest("v2"));

    // The upstream gone: the cached tag is still served (once its
    // tag_ttl passed, stale, with a Warning), what was never pulled is
    // refused naming the upstream.
    upstream.stop();
    std::thread::sleep(TAG_TTL);
    let stale = pull_layout(&through("team/app:stable"), "stable", hub_creds, &[]);
    assert_eq!(stale.digest("stable"), v2.digest("v2"));
    rt.block_on(async {
        let resp = get_manifest(&reg, stable).await;
        let warning = header(&resp, "warning").expect("a stale tag says so");
        assert!(
            warning.contains("reference.test cannot be reached"),
            "{warning}"
        );
        let resp = get_manifest(&reg, "/v2/team/other/manifests/1").await;
        let err = expect_error_for(resp, 503, "UNAVAILABLE", "uncached tag, upstream down").await;
        assert!(
            err.to_string()
                .contains("upstream reference.test cannot be reached"),
            "{err}"
        );
    });
    // (skopeo shows the status only, not the body's message)
    let uncached = skopeo_raw_fails(&through("team/other:1"), hub_creds);
    assert!(uncached.contains("503"), "{uncached}");

    // The tag moves while the mirror cannot reach the upstream (another
    // registry process on its storage takes the push).
    {
        let beside = DistRegistry::start(root.path(), "up", "up-secret");
        skopeo_push(
            &v3.reference("v3"),
            &beside.image("team/app:stable"),
            &creds,
            &[],
        );
    }
    // Back: the tag, last checked longer than tag_ttl ago, is checked at
    // the next pull and its new digest served, no longer stale; what was
    // never cached is fetched.
    upstream.restart();
    rt.block_on(async {
        let resp = get_manifest(&reg, stable).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "warning"), None, "fresh again");
        assert_eq!(
            header(&resp, "docker-content-digest").unwrap(),
            v3.digest("v3"),
            "the tag moved while the upstream was down"
        );
    });
    let pulled = pull_layout(&through("team/app:stable"), "stable", hub_creds, &[]);
    pulled.assert_layers_intact(&v3.digest("v3"));
    let other = pull_layout(&through("team/other:1"), "1", hub_creds, &[]);
    assert_eq!(other.digest("1"), digest);
    let log = &server.stderr_log;
    let down = count_in(log, "serving what is cached until it answers again");
    let back = count_in(log, "upstream answers again");
    assert_eq!(
        (down, back),
        (1, 1),
        "the outage is logged once, its end too"
    );
}

#[test]
fn mirror_of_a_token_auth_hub_anonymous_and_with_credentials() {
    let hub = FakeHub::start();
    let tags = ["3.1", "3.2", "3.3", "3.4"];
    let images: Vec<OciLayout> = tags.iter().map(|t| make_image(t)).collect();
    for (image, tag) in images.iter().zip(tags) {
        hub.push(image, tag, &format!("library/alpine:{tag}"));
    }
    let private = format!("{PRIVATE}app");
    hub.push(&images[0], tags[0], &format!("{private}:1"));
    let pushes = hub.tokens.issued().len();

    // Mirrors of the hub: anonymous, logging in, and with a wrong password.
    let cfg = ConfigDir::new(&[]);
    let hub_creds = hub.registry.creds();
    let wrong_creds = format!("{}:not-the-password", hub.registry.user);
    for (name, creds) in [
        ("anon", None),
        ("authed", Some(hub_creds.as_str())),
        ("wrong", Some(wrong_creds.as_str())),
    ] {
        let upstreams = [cfg.mirror_upstream("docker.io", &hub.url(), "", creds)];
        cfg.add_instance(&Instance::mirror(name, "", &upstreams, ""));
    }
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth", &server.stderr_log);
    let through =
        |instance: &str, repo_tag: &str| format!("docker://{}/{repo_tag}", server.addr(instance));

    // Anonymously: Docker Hub's one-word names, every layer of four
    // images (twelve blobs and four manifests fetched upstream).
    for (image, tag) in images.iter().zip(tags) {
        let src = through("anon", &format!("alpine:{tag}"));
        let pulled = pull_layout(&src, tag, "anon-user:anon-secret", &[]);
        assert_eq!(pulled.digest(tag), image.digest(tag));
        pulled.assert_layers_intact(&image.digest(tag));
    }
    // A private repository needs the credentials: the anonymous mirror
    // is refused, naming the upstream.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let anon = Reg::for_instance(&server, "anon");
    rt.block_on(async {
        let resp = get_manifest(&anon, &format!("/v2/{private}/manifests/1")).await;
        let err = expect_error_for(resp, 403, "DENIED", "private, anonymously").await;
        assert!(
            err.to_string()
                .contains("upstream docker.io refused access"),
            "{err}"
        );
    });
    let src = through("authed", &format!("{private}:1"));
    let pulled = pull_layout(&src, "1", "authed-user:authed-secret", &[]);
    pulled.assert_layers_intact(&images[0].digest(tags[0]));
    // Credentials the token server refuses: nothing is served, and the
    // error says why.
    let wrong = Reg::for_instance(&server, "wrong");
    rt.block_on(async {
        let resp = get_manifest(&wrong, "/v2/alpine/manifests/3.1").await;
        let err = expect_error_for(resp, 403, "DENIED", "wrong upstream password").await;
        assert!(
            err.to_string()
                .contains("upstream docker.io refused access: its token server answered 401"),
            "{err}"
        );
    });

    // Tokens are kept: one per repository and mirror, however many
    // requests they served.
    let asked: Vec<_> = hub.tokens.issued()[pushes..]
        .iter()
        .filter(|r| r.user_agent.starts_with("berth/"))
        .map(|r| (r.user.clone(), r.scopes.join(" ")))
        .collect();
    let (user, _) = hub.tokens.user();
    let alpine = "repository:library/alpine:pull".to_string();
    let private_scope = format!("repository:{private}:pull");
    assert_eq!(
        asked,
        [
            (None, alpine),
            (None, private_scope.clone()),
            (Some(user.to_string()), private_scope)
        ],
        "token requests of the mirrors"
    );
}

/// Size of the layer pulled by many clients at once.
const LAYER: usize = 256 << 20;

/// How many lines of an access log are `GET`s of `path` answered `200`.
fn gets_served(log: &str, path: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(&format!("method=GET path=\"{path}\" status=200")))
        .count()
}

#[test]
fn one_upstream_fetch_for_many_concurrent_pulls() {
    let up_cfg = ConfigDir::new(&[Instance::new("up")]);
    let up = Server::start(&up_cfg);
    let _up_log = log_on_panic("upstream berth", &up.stderr_log);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up_reg = Reg::for_instance(&up, "up");
    let layer = random_bytes(LAYER);
    let layer_digest = rt.block_on(push_blob(&up_reg, "big/app", &layer));
    let layer_hex = layer_digest.trim_start_matches("sha256:").to_string();
    drop(layer);
    let (_, manifest_digest) = rt.block_on(push_image(&up_reg, "big/app", "1"));

    let cfg = ConfigDir::new(&[]);
    let upstreams =
        [cfg.mirror_upstream("berth.test", &up.url("up"), "", Some("up-user:up-secret"))];
    cfg.add_instance(&Instance::mirror("hub", "", &upstreams, ""));
    let server = Server::start(&cfg);
    let _log = log_on_panic("mirror berth", &server.stderr_log);
    let reg = Reg::for_instance(&server, "hub");
    let blob = format!("/v2/big/app/blobs/{layer_digest}");
    let manifest = "/v2/big/app/manifests/1";
    rt.block_on(async {
        // The tag, new to the mirror, asked for by 20 clients at once.
        let gets = (0..20).map(|_| {
            let reg = reg.clone();
            tokio::spawn(async move { get_manifest(&reg, manifest).await })
        });
        for get in futures_util::future::join_all(gets).await {
            let resp = get.unwrap();
            assert_eq!(resp.status(), 200, "GET {manifest}");
            assert_eq!(
                header(&resp, "docker-content-digest").as_deref(),
                Some(manifest_digest.as_str())
            );
        }
        // The layer, by 20 clients at once.
        let pulls = (0..20).map(|_| {
            let reg = reg.clone();
            let path = blob.clone();
            tokio::spawn(async move {
                let resp = reg
                    .client
                    .get(reg.url(&path))
                    .basic_auth(&reg.user, Some(&reg.password))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200, "GET {path}");
                let mut body = resp.bytes_stream();
                let mut hasher = Sha256::new();
                let mut len = 0;
                while let Some(piece) = body.next().await {
                    let piece = piece.unwrap();
                    len += piece.len();
                    hasher.update(&piece);
                }
                assert_eq!(len, LAYER);
                hex::encode(hasher.finalize())
            })
        });
        for pull in futures_util::future::join_all(pulls).await {
            assert_eq!(
                pull.unwrap(),
                layer_hex,
                "every client gets the right bytes"
            );
        }
    });
    let up_log = std::fs::read_to_string(&up.stderr_log).unwrap();
    assert_eq!(
        (gets_served(&up_log, manifest), gets_served(&up_log, &blob)),
        (1, 1),
        "the upstream served the manifest and the layer once:\n{up_log}"
    );
    // Cached now: served from the mirror's own store.
    rt.block_on(async {
        let resp = reg.send(Method::HEAD, &blob).await;
        assert_eq!(resp.status(), 200);
    });
}

#[test]
fn allow_push_takes_pushes_where_no_upstream_maps() {
    let up_cfg = ConfigDir::new(&[Instance::new("up")]);
    let up = Server::start(&up_cfg);
    let _up_log = log_on_panic("upstream berth", &up.stderr_log);
    let app = make_image("1");
    let own = make_image("own");
    let up_creds = "up-user:up-secret";
    let up_image = format!("docker://{}/team/app:1", up.addr("up"));
    skopeo_push(&app.reference("1"), &up_image, up_creds, &[]);

    let cfg = ConfigDir::new(&[]);
    let upstreams = [cfg.mirror_upstream("berth.test", &up.url("up"), "mirrored/", Some(up_creds))];
    cfg.add_instance(&Instance::mirror(
        "hub",
        "allow_push = true\n",
        &upstreams,
        "",
    ));
    let server = Server::start(&cfg);
    let _log = log_on_panic("mirror berth", &server.stderr_log);
    let hub = server.addr("hub").to_string();
    let creds = "hub-user:hub-secret";
    let at = |repo_tag: &str| format!("docker://{hub}/{repo_tag}");

    // The prefix maps to the upstream's repositories.
    let pulled = pull_layout(&at("mirrored/team/app:1"), "1", creds, &[]);
    assert_eq!(pulled.digest("1"), app.digest("1"));
    pulled.assert_layers_intact(&app.digest("1"));

    // Elsewhere the instance is a registry like any other.
    skopeo_push(&own.reference("own"), &at("own/app:1"), creds, &[]);
    let back = pull_layout(&at("own/app:1"), "1", creds, &[]);
    assert_eq!(back.digest("1"), own.digest("own"));

    // Under the prefix, pushes and deletes are refused.
    let refused = skopeo_push_fails(&own.reference("own"), &at("mirrored/team/app:2"), creds);
    assert!(
        refused.contains("this instance mirrors berth.test"),
        "{refused}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = Reg::for_instance(&server, "hub");
    rt.block_on(async {
        let mirrored = format!("/v2/mirrored/team/app/manifests/{}", app.digest("1"));
        let resp = reg.send(Method::DELETE, &mirrored).await;
        let err = expect_error_for(resp, 403, "DENIED", "delete of a mirrored manifest").await;
        assert!(
            err.to_string().contains("this instance mirrors berth.test"),
            "{err}"
        );
        let own_path = format!("/v2/own/app/manifests/{}", own.digest("own"));
        let resp = reg.send(Method::DELETE, &own_path).await;
        assert_eq!(resp.status(), 202, "delete of a pushed manifest");
    });
}
