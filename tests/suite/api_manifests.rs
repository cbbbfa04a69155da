//! Manifest validation, subjects, deletion and tag moves.

use crate::common::sha256_digest;
use crate::common_api::*;
use serde_json::json;

const REPO: &str = "team/service";

/// The path of a manifest in `REPO`.
fn manifest_path(reference: &str) -> String {
    format!("/v2/{REPO}/manifests/{reference}")
}

/// Pushes an OCI config blob and a random layer of `layer_size` bytes into
/// `REPO`; returns their descriptors.
async fn push_config_and_layer(reg: &Reg, config: &[u8], layer_size: usize) -> (Desc, Desc) {
    let config = push_desc(reg, REPO, OCI_CONFIG, config).await;
    let layer = push_desc(reg, REPO, OCI_LAYER, &random_bytes(layer_size)).await;
    (config, layer)
}

/// DELETE a manifest of `REPO` and assert the status.
async fn delete_manifest(reg: &Reg, reference: &str, status: u16) {
    reg.expect_status(Method::DELETE, &manifest_path(reference), status)
        .await;
}

/// DELETE a manifest of `REPO` that does not exist (404 MANIFEST_UNKNOWN).
async fn delete_unknown(reg: &Reg, reference: &str) {
    let path = manifest_path(reference);
    reg.expect_error(Method::DELETE, &path, 404, "MANIFEST_UNKNOWN")
        .await;
}

#[tokio::test]
async fn invalid_json_is_manifest_invalid() {
    let env = Env::start();
    for body in [
        &b"{not json"[..],
        b"",
        b"[]",
        b"\"string\"",
        b"{\"schemaVersion\":2,",
    ] {
        let resp = put_manifest(&env.reg, REPO, "bad", OCI_MANIFEST, body).await;
        expect_error(resp, 400, "MANIFEST_INVALID").await;
    }
    assert_no_manifest(&env.reg, REPO, "bad").await;
}

#[tokio::test]
async fn missing_fields_are_manifest_invalid() {
    let env = Env::start();
    let (config, layer) = push_config_and_layer(&env.reg, b"{}", 10).await;
    let bodies = [
        // No config.
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [layer.json()]}),
        // No schemaVersion.
        json!({"mediaType": OCI_MANIFEST, "config": config.json(), "layers": [layer.json()]}),
        // Config descriptor without a digest.
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "size": 2}, "layers": [layer.json()]}),
        // Index without manifests.
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX}),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let media_type = body["mediaType"].as_str().unwrap();
        let bytes = serde_json::to_vec(body).unwrap();
        let resp = put_manifest(&env.reg, REPO, &format!("t{i}"), media_type, &bytes).await;
        expect_error(resp, 400, "MANIFEST_INVALID").await;
    }
}

#[tokio::test]
async fn content_type_disagreeing_with_media_type() {
    let env = Env::start();
    let body = make_image(&env.reg, REPO, OCI_MANIFEST).await;
    for ctype in [DOCKER_MANIFEST, OCI_INDEX] {
        let resp = put_manifest(&env.reg, REPO, "v1", ctype, &body).await;
        expect_error(resp, 400, "MANIFEST_INVALID").await;
    }
    assert_no_manifest(&env.reg, REPO, "v1").await;
    // The same body with the matching Content-Type is fine.
    put_manifest_ok(&env.reg, REPO, "v1", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn schema1_is_refused() {
    let env = Env::start();
    let schema1 = serde_json::to_vec(&json!({
        "schemaVersion": 1,
        "name": REPO,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": sha256_digest(b"layer")}],
        "history": [{"v1Compatibility": "{}"}],
    }))
    .unwrap();
    for ctype in [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        OCI_MANIFEST,
        DOCKER_MANIFEST,
    ] {
        let resp = put_manifest(&env.reg, REPO, "old", ctype, &schema1).await;
        let v = expect_error(resp, 400, "MANIFEST_INVALID").await;
        let message = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["message"].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            message.contains("schema1"),
            "Content-Type {ctype}: message {message:?} lacks \"schema1\""
        );
    }
    assert_no_manifest(&env.reg, REPO, "old").await;
}

#[tokio::test]
async fn oversized_manifest_is_413() {
    let env = Env::start();
    let (config, layer) = push_config_and_layer(&env.reg, b"{}", 10).await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&image_manifest(OCI_MANIFEST, &config, &[layer])).unwrap();
    v["annotations"] = json!({"filler": "x".repeat(4 * 1024 * 1024 + 100)});
    let body = serde_json::to_vec(&v).unwrap();
    assert!(body.len() > 4 * 1024 * 1024);
    let resp = raw_put_expect_continue(
        env.server.addr("ci"),
        &format!("/v2/{REPO}/manifests/huge"),
        ("ci-user", "ci-secret"),
        OCI_MANIFEST,
        &body,
    )
    .await;
    resp.expect_error(413, "SIZE_INVALID", "manifest over 4 MiB");
    assert_no_manifest(&env.reg, REPO, "huge").await;

    // Just under the limit is accepted.
    v["annotations"] = json!({"filler": ""});
    let base = serde_json::to_vec(&v).unwrap().len();
    v["annotations"] = json!({"filler": "y".repeat(4 * 1024 * 1024 - base)});
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(body.len(), 4 * 1024 * 1024);
    put_manifest_ok(&env.reg, REPO, "big", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn missing_layer_or_config_is_manifest_blob_unknown() {
    let env = Env::start();
    let (config, layer) = push_config_and_layer(&env.reg, b"{\"a\":1}", 50).await;
    let absent_layer = Desc::of(OCI_LAYER, &random_bytes(50));
    let absent_config = Desc::of(OCI_CONFIG, b"{\"never\":\"pushed\"}");

    // A blob that exists only in another repository does not count.
    let elsewhere = push_desc(&env.reg, "other", OCI_LAYER, &random_bytes(50)).await;
    let cases = [
        (OCI_MANIFEST, &config, vec![layer.clone(), absent_layer]),
        (OCI_MANIFEST, &absent_config, vec![layer.clone()]),
        // Docker schema2 is checked the same way.
        (DOCKER_MANIFEST, &absent_config, vec![layer]),
        (OCI_MANIFEST, &config, vec![elsewhere]),
    ];
    for (media_type, config, layers) in cases {
        let body = image_manifest(media_type, config, &layers);
        let resp = put_manifest(&env.reg, REPO, "v1", media_type, &body).await;
        expect_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    }

    assert_no_manifest(&env.reg, REPO, "v1").await;
}

#[tokio::test]
async fn index_with_missing_child_is_manifest_blob_unknown() {
    let env = Env::start();
    let present = make_image(&env.reg, REPO, OCI_MANIFEST).await;
    put_manifest_by_digest(&env.reg, REPO, OCI_MANIFEST, &present).await;
    let absent = make_image(&env.reg, REPO, OCI_MANIFEST).await; // blobs pushed, manifest not
    let body = index_manifest(
        OCI_INDEX,
        &[
            Desc::of(OCI_MANIFEST, &present),
            Desc::of(OCI_MANIFEST, &absent),
        ],
    );
    // A child manifest that lives in another repository does not count.
    let (other_body, _) = push_image(&env.reg, "elsewhere", "v1").await;
    let elsewhere = index_manifest(DOCKER_LIST, &[Desc::of(OCI_MANIFEST, &other_body)]);
    for (media_type, body) in [(OCI_INDEX, &body), (DOCKER_LIST, &elsewhere)] {
        let resp = put_manifest(&env.reg, REPO, "multi", media_type, body).await;
        expect_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    }
    assert_no_manifest(&env.reg, REPO, "multi").await;

    // With the child present it is accepted.
    let body = index_manifest(OCI_INDEX, &[Desc::of(OCI_MANIFEST, &present)]);
    put_manifest_ok(&env.reg, REPO, "multi", OCI_INDEX, &body).await;
}

#[tokio::test]
async fn digest_reference_mismatch_is_digest_invalid() {
    let env = Env::start();
    let body = make_image(&env.reg, REPO, OCI_MANIFEST).await;
    let other = random_digest();
    let resp = put_manifest(&env.reg, REPO, &other, OCI_MANIFEST, &body).await;
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_manifest(&env.reg, REPO, &other).await;
    assert_no_manifest(&env.reg, REPO, &sha256_digest(&body)).await;

    // A sha512 reference that matches is accepted and served under it.
    let d512 = sha512_digest(&body);
    let resp = put_manifest(&env.reg, REPO, &d512, OCI_MANIFEST, &body).await;
    let dcd = header(&resp, "docker-content-digest");
    expect_status(resp, 201).await;
    assert_eq!(dcd.as_deref(), Some(d512.as_str()));
    assert_manifest_body(&env.reg, REPO, &d512, &body).await;
}

/// A reference that is neither a valid tag nor a valid digest names no
/// manifest: reads and deletes find nothing (404 MANIFEST_UNKNOWN, as the
/// conformance suite asks with `.INVALID_MANIFEST_NAME`), a push under it is
/// refused as an invalid tag or digest.
#[tokio::test]
async fn bad_reference_names_no_manifest() {
    let env = Env::start();
    let body = make_image(&env.reg, REPO, OCI_MANIFEST).await;
    let long = "a".repeat(129);
    for tag in [
        ".INVALID_MANIFEST_NAME",
        ".bad",
        "-bad",
        "bad!",
        long.as_str(),
    ] {
        let resp = put_manifest(&env.reg, REPO, tag, OCI_MANIFEST, &body).await;
        expect_error_for(resp, 400, "TAG_INVALID", "PUT").await;
        let resp = get_manifest(&env.reg, REPO, tag).await;
        expect_error_for(resp, 404, "MANIFEST_UNKNOWN", "GET").await;
        delete_unknown(&env.reg, tag).await;
        let resp = env.reg.send(Method::HEAD, &manifest_path(tag)).await;
        assert_eq!(resp.status(), 404, "HEAD {tag}");
    }
    for digest in ["sha256:totallywrong", "sha256%3Azz", "sha256:"] {
        let resp = put_manifest(&env.reg, REPO, digest, OCI_MANIFEST, &body).await;
        expect_error_for(resp, 400, "DIGEST_INVALID", "PUT").await;
        let resp = get_manifest(&env.reg, REPO, digest).await;
        expect_error_for(resp, 404, "MANIFEST_UNKNOWN", "GET").await;
        delete_unknown(&env.reg, digest).await;
    }

    // HEAD: the status and no body at all.
    let addr = env.server.addr("ci");
    let auth = (env.reg.user.as_str(), env.reg.password.as_str());
    let path = manifest_path(".INVALID_MANIFEST_NAME");
    let raw = format!(
        "HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
        basic_auth_value(auth.0, auth.1)
    );
    let head = raw_exchange(addr, raw.as_bytes(), false).await;
    assert_eq!(head.status, 404, "HEAD {path}");
    assert!(head.body.is_empty(), "HEAD sent a body: {}", head.text());

    // Access is checked as for any manifest: no credentials, 401.
    let resp = env.reg.anon(Method::GET, &path).send().await.unwrap();
    expect_error(resp, 401, "UNAUTHORIZED").await;

    // Edge cases of the grammar that are valid.
    for tag in ["_x", "A.b-c_D", "1", &"b".repeat(128)] {
        put_manifest_ok(&env.reg, REPO, tag, OCI_MANIFEST, &body).await;
    }
}

#[tokio::test]
async fn subject_sets_oci_subject_header() {
    let env = Env::start();
    let (_, subject) = push_image(&env.reg, REPO, "base").await;
    let config = push_desc(&env.reg, REPO, OCI_EMPTY, b"{}").await;
    let layer = push_desc(&env.reg, REPO, "application/spdx+json", b"{\"spdx\":1}").await;
    let subject_body = get_manifest(&env.reg, REPO, "base")
        .await
        .bytes()
        .await
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&image_manifest(
        OCI_MANIFEST,
        &config,
        std::slice::from_ref(&layer),
    ))
    .unwrap();
    v["artifactType"] = json!("application/spdx+json");
    v["subject"] = Desc::of(OCI_MANIFEST, &subject_body).json();
    let body = serde_json::to_vec(&v).unwrap();
    let oci_subject =
        put_manifest_subject(&env.reg, REPO, &sha256_digest(&body), OCI_MANIFEST, &body).await;
    assert_eq!(oci_subject.as_deref(), Some(subject.as_str()));

    // The subject need not exist.
    let missing = random_digest();
    v["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": missing, "size": 123});
    let body = serde_json::to_vec(&v).unwrap();
    let oci_subject = put_manifest_subject(&env.reg, REPO, "dangling", OCI_MANIFEST, &body).await;
    assert_eq!(oci_subject.as_deref(), Some(missing.as_str()));

    // No subject, no header.
    let plain = make_image(&env.reg, REPO, OCI_MANIFEST).await;
    let oci_subject = put_manifest_subject(&env.reg, REPO, "plain", OCI_MANIFEST, &plain).await;
    assert_eq!(oci_subject, None);
}

#[tokio::test]
async fn delete_by_digest_removes_tags() {
    let env = Env::start();
    let (_, digest) = push_image(&env.reg, REPO, "t1").await;
    let body = get_manifest(&env.reg, REPO, "t1")
        .await
        .bytes()
        .await
        .unwrap();
    put_manifest_ok(&env.reg, REPO, "t2", OCI_MANIFEST, &body).await;
    push_image(&env.reg, REPO, "keep").await;
    assert_eq!(list_tags(&env.reg, REPO).await, vec!["keep", "t1", "t2"]);

    delete_manifest(&env.reg, &digest, 202).await;
    assert_no_manifest(&env.reg, REPO, &digest).await;
    assert_no_manifest(&env.reg, REPO, "t1").await;
    assert_no_manifest(&env.reg, REPO, "t2").await;
    assert_eq!(list_tags(&env.reg, REPO).await, vec!["keep"]);
    let resp = get_manifest(&env.reg, REPO, "keep").await;
    expect_status(resp, 200).await;

    // Deleting again: unknown.
    delete_unknown(&env.reg, &digest).await;
}

#[tokio::test]
async fn delete_by_tag_keeps_digest() {
    let env = Env::start();
    let (body, digest) = push_image(&env.reg, REPO, "t1").await;
    put_manifest_ok(&env.reg, REPO, "t2", OCI_MANIFEST, &body).await;

    delete_manifest(&env.reg, "t1", 202).await;
    assert_no_manifest(&env.reg, REPO, "t1").await;
    assert_manifest_body(&env.reg, REPO, "t2", &body).await;
    assert_manifest_body(&env.reg, REPO, &digest, &body).await;
    assert_eq!(list_tags(&env.reg, REPO).await, vec!["t2"]);

    delete_unknown(&env.reg, "t1").await;

    // Removing the last tag still leaves the manifest by digest.
    delete_manifest(&env.reg, "t2", 202).await;
    assert_manifest_body(&env.reg, REPO, &digest, &body).await;
    assert_eq!(list_tags(&env.reg, REPO).await, Vec::<String>::new());
}

#[tokio::test]
async fn delete_unknown_manifest() {
    let env = Env::start();
    push_image(&env.reg, REPO, "exists").await;
    for reference in ["nope".to_string(), random_digest()] {
        delete_unknown(&env.reg, &reference).await;
    }
}

#[tokio::test]
async fn overwriting_a_tag_moves_it() {
    let env = Env::start();
    let (first, first_digest) = push_image(&env.reg, REPO, "latest").await;
    let second = make_image(&env.reg, REPO, OCI_MANIFEST).await;
    let second_digest = put_manifest_ok(&env.reg, REPO, "latest", OCI_MANIFEST, &second).await;
    assert_ne!(first_digest, second_digest);

    let resp = get_manifest(&env.reg, REPO, "latest").await;
    assert_eq!(must_header(&resp, "docker-content-digest"), second_digest);
    let got = expect_status(resp, 200).await;
    assert!(got == second, "latest now serves the second manifest");
    // The first one is still there by digest.
    assert_manifest_body(&env.reg, REPO, &first_digest, &first).await;
    assert_eq!(list_tags(&env.reg, REPO).await, vec!["latest"]);

    // Moving the tag to a different media type works too.
    let docker = make_image(&env.reg, REPO, DOCKER_MANIFEST).await;
    let docker_digest = put_manifest_ok(&env.reg, REPO, "latest", DOCKER_MANIFEST, &docker).await;
    let resp = get_manifest(&env.reg, REPO, "latest").await;
    assert_eq!(must_header(&resp, "docker-content-digest"), docker_digest);
    assert_eq!(must_header(&resp, "content-type"), DOCKER_MANIFEST);
}
