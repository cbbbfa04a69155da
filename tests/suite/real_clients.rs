//! berth with the clients people use: skopeo and the Docker daemon, against
//! two instances (`ci`, `cache`) of one berth process.

use crate::clients::*;
use crate::common::{ConfigDir, Instance, Server};

const CI_CREDS: &str = "ci-user:ci-secret";
const CACHE_CREDS: &str = "cache-user:cache-secret";

/// Asserts that `copy` holds the same bytes as `orig` for every layer.
fn assert_same_layers(copy: &OciLayout, orig: &OciLayout, layers: &[String], what: &str) {
    for layer in layers {
        assert_eq!(copy.blob(layer), orig.blob(layer), "layer {layer} {what}");
    }
}

fn start_two() -> (ConfigDir, Server, LogOnPanic) {
    // The wrong-credentials test fails logins on purpose, many times.
    let cfg = ConfigDir::new(&[
        Instance::new("ci").tolerating_failed_logins(),
        Instance::new("cache").tolerating_failed_logins(),
    ]);
    let server = Server::start(&cfg);
    let log = log_on_panic("berth stderr", &server.stderr_log);
    (cfg, server, log)
}

#[test]
fn skopeo_round_trips_through_two_instances() {
    let (_cfg, server, _log) = start_two();
    let ci = server.addr("ci");
    let cache = server.addr("cache");
    let image = make_image("v1");
    let orig = image.digest("v1");
    let orig_digests = image.image_digests(&orig);

    // OCI to ci, Docker schema2 to cache.
    let ci_app = format!("docker://{ci}/e2e/app:v1");
    let cache_app = format!("docker://{cache}/e2e/app:v1");
    let v1 = image.reference("v1");
    skopeo_push(&v1, &ci_app, CI_CREDS, &["--format", "oci"]);
    skopeo_push(&v1, &cache_app, CACHE_CREDS, &["--format", "v2s2"]);

    // inspect --raw: ci serves the OCI manifest byte for byte; cache a
    // schema2 manifest with the same layers.
    let raw_ci = skopeo_raw(&ci_app, CI_CREDS);
    assert_eq!(
        raw_ci.as_bytes(),
        image.blob(&orig),
        "ci serves the manifest as pushed"
    );
    let raw_cache = skopeo_raw(&cache_app, CACHE_CREDS);
    let v2s2: serde_json::Value = serde_json::from_str(&raw_cache).unwrap();
    assert_eq!(v2s2["mediaType"], DOCKER_MANIFEST);
    assert_eq!(ImageDigests::of(&v2s2).layers, orig_digests.layers);
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        CACHE_CREDS,
        &cache_app,
    ]))
    .unwrap();
    assert_eq!(inspect["Layers"], serde_json::json!(orig_digests.layers));
    assert_eq!(inspect["Architecture"], "amd64");

    // Copy back from each instance into a new OCI layout.
    let back_ci = pull_layout(&ci_app, "v1", CI_CREDS, &[]);
    assert_eq!(back_ci.digest("v1"), orig, "manifest digest after ci");
    assert_eq!(back_ci.image_digests(&orig), orig_digests);
    assert_same_layers(&back_ci, &image, &orig_digests.layers, "after ci");
    let back_cache = pull_layout(&cache_app, "v1", CACHE_CREDS, &[]);
    let cache_digests = back_cache.image_digests(&back_cache.digest("v1"));
    assert_eq!(
        cache_digests.layers, orig_digests.layers,
        "layers after cache"
    );
    assert_same_layers(&back_cache, &image, &orig_digests.layers, "after cache");
    assert_eq!(
        back_cache.blob_json(&cache_digests.config)["rootfs"],
        image.blob_json(&orig_digests.config)["rootfs"]
    );

    // list-tags, then delete: skopeo deletes by digest, so every tag on
    // that manifest goes and the other manifest stays.
    let other = make_image("other");
    let ci_other = format!("docker://{ci}/e2e/app:other");
    skopeo_push(&v1, &format!("docker://{ci}/e2e/app:v2"), CI_CREDS, &[]);
    skopeo_push(&other.reference("other"), &ci_other, CI_CREDS, &[]);
    assert_eq!(
        skopeo_tags(&format!("docker://{ci}/e2e/app"), CI_CREDS),
        ["other", "v1", "v2"]
    );
    // Instances do not share repositories: `other` went to ci only.
    let missing = skopeo_raw_fails(&format!("docker://{cache}/e2e/app:other"), CACHE_CREDS);
    assert!(missing.contains("manifest unknown"), "{missing}");

    skopeo(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        CI_CREDS,
        &format!("docker://{ci}/e2e/app:v2"),
    ]);
    for reference in [":v1".to_string(), ":v2".to_string(), format!("@{orig}")] {
        let err = skopeo_raw_fails(&format!("docker://{ci}/e2e/app{reference}"), CI_CREDS);
        assert!(
            err.contains("manifest unknown"),
            "after delete, e2e/app{reference}: {err}"
        );
    }
    assert_eq!(
        skopeo_tags(&format!("docker://{ci}/e2e/app"), CI_CREDS),
        ["other"]
    );
    assert_eq!(
        skopeo_tags(&format!("docker://{cache}/e2e/app"), CACHE_CREDS),
        ["v1"]
    );
    let raw_other = skopeo_raw(&ci_other, CI_CREDS);
    assert_eq!(raw_other.as_bytes(), other.blob(&other.digest("other")));

    // Registry to registry: promote from ci to cache.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        CI_CREDS,
        "--dest-tls-verify=false",
        "--dest-creds",
        CACHE_CREDS,
        &ci_other,
        &format!("docker://{cache}/promoted/app:other"),
    ]);
    assert_eq!(
        skopeo_raw(&format!("docker://{cache}/promoted/app:other"), CACHE_CREDS),
        raw_other
    );

    // Multi-arch, both instances.
    let multi = make_multiarch("multi");
    for (addr, creds) in [(ci, CI_CREDS), (cache, CACHE_CREDS)] {
        let target = format!("docker://{addr}/e2e/deep/multi:1.0");
        skopeo_push(&multi.reference("multi"), &target, creds, &["--all"]);
        let raw = skopeo_raw(&target, creds);
        assert_eq!(
            raw.as_bytes(),
            multi.blob(&multi.digest("multi")),
            "index on {addr}"
        );
        let back = pull_layout(&target, "1.0", creds, &["--all"]);
        assert_same_multiarch(&multi, "multi", &back, "1.0");
        // A single platform out of the index.
        let arm = pull_layout(&target, "arm", creds, &["--override-arch", "arm64"]);
        let arm_digest = multi.digest("multi-arm64");
        assert_eq!(arm.digest("arm"), arm_digest);
    }
}

#[test]
fn skopeo_is_refused_with_wrong_credentials() {
    let (_cfg, server, _log) = start_two();
    let ci = server.addr("ci");
    let cache = server.addr("cache");
    let image = make_image("v1");
    for (addr, creds) in [(ci, CI_CREDS), (cache, CACHE_CREDS)] {
        skopeo_push(
            &image.reference("v1"),
            &format!("docker://{addr}/e2e/app:v1"),
            creds,
            &[],
        );
    }

    let refused = [
        (ci, CACHE_CREDS, "cache's credentials on ci"),
        (cache, CI_CREDS, "ci's credentials on cache"),
        (ci, "ci-user:wrong", "a wrong password on ci"),
        (
            cache,
            "cache-user:ci-secret",
            "another instance's password on cache",
        ),
        (ci, "nobody:ci-secret", "an unknown user on ci"),
    ];
    for (addr, creds, what) in refused {
        assert_auth_error(&skopeo_raw_fails(
            &format!("docker://{addr}/e2e/app:v1"),
            creds,
        ));
        assert_auth_error(&skopeo_push_fails(
            &image.reference("v1"),
            &format!("docker://{addr}/e2e/refused:v1"),
            creds,
        ));
        assert_auth_error(&skopeo_tags_fails(
            &format!("docker://{addr}/e2e/app"),
            creds,
        ));
        eprintln!("refused as expected: {what}");
    }
    // No credentials at all.
    let err = skopeo_fails(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{ci}/e2e/app:v1"),
    ]);
    assert_auth_error(&err);
    // Nothing was written by the refused pushes.
    assert_eq!(
        skopeo_tags(&format!("docker://{ci}/e2e/app"), CI_CREDS),
        ["v1"]
    );
    let err = skopeo_tags_fails(&format!("docker://{ci}/e2e/refused"), CI_CREDS);
    assert!(
        err.contains("404"),
        "a refused push created e2e/refused: {err}"
    );
}

#[test]
fn docker_push_and_pull_through_two_instances() {
    let (_cfg, server, _log) = start_two();
    let ci = server.addr("ci").to_string();
    let cache = server.addr("cache").to_string();
    let image = make_image("v1");

    let docker = Dockerd::start(&[&ci, &cache]);
    let _dockerd_log = log_on_panic("dockerd log", &docker.log_path());
    let loaded = docker.load(&image, "v1", "e2e/docker-app:v1");
    assert!(loaded.contains("e2e/docker-app:v1"), "{loaded}");
    let id = docker.image_id("e2e/docker-app:v1");
    assert_eq!(
        id,
        image.image_digests(&image.digest("v1")).config,
        "image id after docker load"
    );

    // Logins: the right password works, the other instance's does not.
    let err = docker
        .login(&ci, "ci-user", "cache-secret")
        .expect_err("login with cache's password");
    assert_auth_error(&err);
    let err = docker
        .login(&cache, "ci-user", "ci-secret")
        .expect_err("login with ci's user");
    assert_auth_error(&err);
    let out = docker
        .login(&ci, "ci-user", "ci-secret")
        .expect("login to ci");
    assert!(out.contains("Login Succeeded"), "{out}");
    let out = docker
        .login(&cache, "cache-user", "cache-secret")
        .expect("login to cache");
    assert!(out.contains("Login Succeeded"), "{out}");

    let targets = [
        format!("{ci}/e2e/docker-app:v1"),
        format!("{cache}/team/e2e/docker-app:v1"),
    ];
    let mut pushed_digests = Vec::new();
    for target in &targets {
        let out = docker.tag_and_push("e2e/docker-app:v1", target);
        let digest = out
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
            .to_string();
        pushed_digests.push(digest);
    }

    // The pushed manifests are schema2 with docker's own compression of the
    // layers; the config (image id) is the same.
    for ((target, digest), creds) in targets
        .iter()
        .zip(&pushed_digests)
        .zip([CI_CREDS, CACHE_CREDS])
    {
        let raw = skopeo_raw(&format!("docker://{target}"), creds);
        assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), *digest);
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
        assert_eq!(m["config"]["digest"], id.as_str());
    }

    docker.run(&["rmi", "e2e/docker-app:v1", &targets[0], &targets[1]]);
    docker.run_fails(&["image", "inspect", &id]);

    for (target, digest) in targets.iter().zip(&pushed_digests) {
        let out = docker.run(&["pull", target]);
        assert!(
            out.contains(digest.as_str()),
            "docker pull {target}:\n{out}"
        );
        assert_eq!(
            docker.image_id(target),
            id,
            "image id after pulling {target}"
        );
        docker.run(&["rmi", target]);
    }
    // Pull by digest too.
    let by_digest = format!("{ci}/e2e/docker-app@{}", pushed_digests[0]);
    docker.run(&["pull", &by_digest]);
    assert_eq!(docker.image_id(&by_digest), id);

    // Another repository of the same instance: docker mounts the layers
    // from the repository it pushed them to instead of uploading them.
    let sibling = format!("{ci}/e2e/sibling:v1");
    let out = docker.tag_and_push(&by_digest, &sibling);
    assert!(
        out.contains("Mounted from e2e/docker-app"),
        "docker push {sibling}:\n{out}"
    );
    let out = docker.run(&["push", &sibling]);
    assert!(
        out.contains("Layer already exists"),
        "docker push {sibling} again:\n{out}"
    );
    let raw = skopeo_raw(&format!("docker://{sibling}"), CI_CREDS);
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        pushed_digests[0]
    );

    docker.run(&["logout", &ci]);
    let err = docker.run_fails(&["pull", &targets[0]]);
    assert!(
        err.contains("no basic auth credentials") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
}
