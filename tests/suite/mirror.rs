//! Pull-through mirror instances against real upstreams on 127.0.0.1:
//! Debian's `docker-registry` with Basic auth (pulls through the mirror,
//! pushes refused, the upstream stopped: cached tags served stale,
//! uncached content refused naming the upstream; back again: a moved tag
//! picked up after `tag_ttl`), and another berth instance with Basic auth
//! (20 concurrent pulls of an uncached 256 MiB layer, fetched upstream
//! once).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::clients::*;
use crate::common::{ConfigDir, Instance, Server};
/// The mirror's `tag_ttl` in the first test.
const TAG_TTL: Duration = Duration::from_secs(5);

use crate::common_api::{
    expect_error_for, header, push_blob, random_bytes, Method, Reg, ACCEPT_MANIFESTS,
};

/// A config with a mirror instance `hub` of `url` (all repositories,
/// registry `registry`), logging in upstream as `creds` (USER:PASSWORD).
fn mirror_config(registry: &str, url: &str, creds: &str, cache: &str) -> ConfigDir {
    let cfg = ConfigDir::new(&[]);
    let file = cfg.path().join("credentials/hub-upstream");
    std::fs::write(&file, format!("{creds}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut hub = Instance::new("hub");
    hub.extra = format!(
        "[mirror]\n[[mirror.upstream]]\nregistry = \"{registry}\"\nurl = \"{url}\"\n\
         credentials_file = \"credentials/hub-upstream\"\n[mirror.cache]\n{cache}\n"
    );
    cfg.add_instance(&hub);
    cfg
}

#[test]
fn mirror_of_docker_registry_with_basic_auth() {
    let root = tempfile::tempdir().unwrap();
    let upstream = DistRegistry::start(root.path(), "up", "up-secret");
    let v1 = make_image("v1");
    let v2 = make_image("v2");
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

    let cfg = mirror_config(
        "reference.test",
        &format!("http://{}", upstream.addr),
        &creds,
        "tag_ttl = \"5s\"\nserve_stale = true",
    );
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
    let manifest = |path: &'static str| {
        let reg = reg.clone();
        async move {
            reg.get(path)
                .header("accept", ACCEPT_MANIFESTS)
                .send()
                .await
                .unwrap()
        }
    };
    // The tag moves upstream: the mirror keeps its digest for tag_ttl,
    // then picks up the new one.
    skopeo_push(
        &v2.reference("v2"),
        &upstream.image("team/app:stable"),
        &creds,
        &[],
    );
    rt.block_on(async {
        let resp = manifest("/v2/team/app/manifests/stable").await;
        assert_eq!(
            header(&resp, "docker-content-digest").unwrap(),
            digest,
            "within tag_ttl"
        );
        tokio::time::sleep(TAG_TTL).await;
        let resp = manifest("/v2/team/app/manifests/stable").await;
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
        let resp = manifest("/v2/team/app/manifests/stable").await;
        let warning = header(&resp, "warning").expect("a stale tag says so");
        assert!(
            warning.contains("reference.test cannot be reached"),
            "{warning}"
        );
        let resp = manifest("/v2/team/other/manifests/1").await;
        let err = expect_error_for(resp, 503, "UNAVAILABLE", "uncached tag, upstream down").await;
        assert!(
            err.to_string()
                .contains("upstream reference.test cannot be reached"),
            "{err}"
        );
    });
    let outages = std::fs::read_to_string(&server.stderr_log)
        .unwrap()
        .matches("serving what is cached until it answers again")
        .count();
    assert_eq!(outages, 1, "the outage is logged once");
}

/// Size of the layer pulled by many clients at once.
const LAYER: usize = 256 << 20;

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

    let cfg = mirror_config(
        "berth.test",
        &format!("http://{}", up.addr("up")),
        "up-user:up-secret",
        "",
    );
    let server = Server::start(&cfg);
    let _log = log_on_panic("mirror berth", &server.stderr_log);
    let reg = Reg::new(
        &format!("http://{}", server.addr("hub")),
        "hub-user",
        "hub-secret",
    );
    let path = format!("/v2/big/app/blobs/{layer_digest}");
    rt.block_on(async {
        let pulls = (0..20).map(|_| {
            let reg = reg.clone();
            let path = path.clone();
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
    let fetches = up_log
        .lines()
        .filter(|l| l.contains(&layer_hex) && l.contains("GET") && l.contains("status=200"))
        .count();
    assert_eq!(fetches, 1, "the upstream served the layer once:\n{up_log}");
    // Cached now: served from the mirror's own store.
    rt.block_on(async {
        let resp = reg.send(Method::HEAD, &path).await;
        assert_eq!(resp.status(), 200);
    });
}
