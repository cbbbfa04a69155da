//! Content discovery: tag listing, the catalog and the referrers API.

mod common;
#[path = "common_api/mod.rs"]
mod common_api;

use common::{sha256_digest, Instance};
use common_api::*;
use serde_json::{json, Value};

/// GET a JSON document; returns (Link header, body).
async fn get_json(reg: &Reg, path: &str) -> (Option<String>, Value) {
    let resp = reg.get(path).send().await.unwrap();
    let link = header(&resp, "link");
    let body = expect_status(resp, 200).await;
    (link, serde_json::from_slice(&body).unwrap())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Pushes one manifest and tags it with every tag.
async fn tag_all(reg: &Reg, repo: &str, tags: &[&str]) {
    let body = make_image(reg, repo, OCI_MANIFEST).await;
    for tag in tags {
        put_manifest_ok(reg, repo, tag, OCI_MANIFEST, &body).await;
    }
}

#[tokio::test]
async fn tags_list_sorted() {
    let env = Env::start();
    tag_all(
        &env.reg,
        "app",
        &["v2", "a", "v10", "B", "latest", "1.0", "_z"],
    )
    .await;
    let (link, v) = get_json(&env.reg, "/v2/app/tags/list").await;
    assert_eq!(v["name"], json!("app"));
    assert_eq!(
        strings(&v["tags"]),
        vec!["1.0", "B", "_z", "a", "latest", "v10", "v2"]
    );
    assert_eq!(link, None, "no Link header without pagination");
}

#[tokio::test]
async fn tags_list_pagination() {
    let env = Env::start();
    tag_all(&env.reg, "app", &["e", "c", "a", "d", "b"]).await;

    let (link, v) = get_json(&env.reg, "/v2/app/tags/list?n=2").await;
    assert_eq!(strings(&v["tags"]), vec!["a", "b"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/app/tags/list?n=2&last=b>; rel=\"next\"")
    );

    let (link, v) = get_json(&env.reg, "/v2/app/tags/list?n=2&last=b").await;
    assert_eq!(strings(&v["tags"]), vec!["c", "d"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/app/tags/list?n=2&last=d>; rel=\"next\"")
    );

    let (link, v) = get_json(&env.reg, "/v2/app/tags/list?n=2&last=d").await;
    assert_eq!(strings(&v["tags"]), vec!["e"]);
    assert_eq!(link, None, "last page has no Link");

    // Exactly n left: nothing remains afterwards, so no Link.
    let (link, v) = get_json(&env.reg, "/v2/app/tags/list?n=2&last=c").await;
    assert_eq!(strings(&v["tags"]), vec!["d", "e"]);
    assert_eq!(link, None, "no Link when nothing remains");

    let (link, v) = get_json(&env.reg, "/v2/app/tags/list?n=5").await;
    assert_eq!(strings(&v["tags"]), vec!["a", "b", "c", "d", "e"]);
    assert_eq!(link, None);

    let (link, v) = get_json(&env.reg, "/v2/app/tags/list?n=100").await;
    assert_eq!(strings(&v["tags"]).len(), 5);
    assert_eq!(link, None);

    // last alone: everything after it; last need not be an existing tag.
    let (_, v) = get_json(&env.reg, "/v2/app/tags/list?last=c").await;
    assert_eq!(strings(&v["tags"]), vec!["d", "e"]);
    let (_, v) = get_json(&env.reg, "/v2/app/tags/list?last=bb").await;
    assert_eq!(strings(&v["tags"]), vec!["c", "d", "e"]);
    let (link, v) = get_json(&env.reg, "/v2/app/tags/list?last=e").await;
    assert_eq!(strings(&v["tags"]), Vec::<String>::new());
    assert_eq!(link, None);

    let (_, v) = get_json(&env.reg, "/v2/app/tags/list?n=0").await;
    assert_eq!(v["name"], json!("app"));
    assert_eq!(strings(&v["tags"]), Vec::<String>::new());

    // Following Link headers from the start visits every tag once.
    let mut path = "/v2/app/tags/list?n=2".to_string();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (link, v) = get_json(&env.reg, &path).await;
        seen.extend(strings(&v["tags"]));
        match link {
            Some(l) => {
                path = l
                    .strip_prefix('<')
                    .and_then(|l| l.split_once('>'))
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_else(|| panic!("bad Link {l:?}"));
            }
            None => break,
        }
    }
    assert_eq!(seen, vec!["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn tags_list_nested_name_link() {
    let env = Env::start();
    tag_all(&env.reg, "org/team/app", &["x", "y", "z"]).await;
    let (link, v) = get_json(&env.reg, "/v2/org/team/app/tags/list?n=1").await;
    assert_eq!(v["name"], json!("org/team/app"));
    assert_eq!(strings(&v["tags"]), vec!["x"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/org/team/app/tags/list?n=1&last=x>; rel=\"next\"")
    );
}

#[tokio::test]
async fn tags_list_existing_repo_without_tags() {
    let env = Env::start();
    let body = make_image(&env.reg, "untagged", OCI_MANIFEST).await;
    put_manifest_ok(
        &env.reg,
        "untagged",
        &sha256_digest(&body),
        OCI_MANIFEST,
        &body,
    )
    .await;
    let (_, v) = get_json(&env.reg, "/v2/untagged/tags/list").await;
    assert_eq!(v, json!({"name": "untagged", "tags": []}));
}

#[tokio::test]
async fn tags_list_unknown_repo() {
    let env = Env::start();
    push_image(&env.reg, "known", "v1").await;
    for path in ["/v2/unknown/tags/list", "/v2/known/sub/tags/list"] {
        let resp = env.reg.get(path).send().await.unwrap();
        expect_error(resp, 404, "NAME_UNKNOWN").await;
    }
}

#[tokio::test]
async fn tags_list_bad_n() {
    let env = Env::start();
    push_image(&env.reg, "app", "v1").await;
    for n in ["abc", "1x", "ten"] {
        let resp = env
            .reg
            .get(&format!("/v2/app/tags/list?n={n}"))
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "PAGINATION_NUMBER_INVALID").await;
    }
    let resp = env.reg.get("/v2/_catalog?n=abc").send().await.unwrap();
    expect_error(resp, 400, "PAGINATION_NUMBER_INVALID").await;
}

#[tokio::test]
async fn catalog_lists_repositories_with_manifests() {
    let env = Env::start_with(vec![Instance::new("ci"), Instance::new("cache")]);
    for repo in ["zeta", "alpha", "nested/deep/repo", "mid", "nested"] {
        push_image(&env.reg, repo, "v1").await;
    }
    // Only a blob: not a repository in the catalog yet.
    push_blob(&env.reg, "blobonly", b"blob").await;
    // Another instance's repositories are not listed.
    push_image(&env.reg("cache"), "cache-only", "v1").await;

    let (link, v) = get_json(&env.reg, "/v2/_catalog").await;
    assert_eq!(
        strings(&v["repositories"]),
        vec!["alpha", "mid", "nested", "nested/deep/repo", "zeta"]
    );
    assert_eq!(link, None);

    let (_, v) = get_json(&env.reg("cache"), "/v2/_catalog").await;
    assert_eq!(strings(&v["repositories"]), vec!["cache-only"]);
}

#[tokio::test]
async fn catalog_pagination() {
    let env = Env::start();
    for repo in ["d", "b/x", "a", "c", "b"] {
        push_image(&env.reg, repo, "v1").await;
    }
    let (link, v) = get_json(&env.reg, "/v2/_catalog?n=2").await;
    assert_eq!(strings(&v["repositories"]), vec!["a", "b"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/_catalog?n=2&last=b>; rel=\"next\"")
    );
    let (link, v) = get_json(&env.reg, "/v2/_catalog?n=2&last=b").await;
    assert_eq!(strings(&v["repositories"]), vec!["b/x", "c"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/_catalog?n=2&last=c>; rel=\"next\"")
    );
    let (link, v) = get_json(&env.reg, "/v2/_catalog?n=2&last=c").await;
    assert_eq!(strings(&v["repositories"]), vec!["d"]);
    assert_eq!(link, None);

    let (_, v) = get_json(&env.reg, "/v2/_catalog?last=b/x").await;
    assert_eq!(strings(&v["repositories"]), vec!["c", "d"]);
    let (_, v) = get_json(&env.reg, "/v2/_catalog?n=0").await;
    assert_eq!(strings(&v["repositories"]), Vec::<String>::new());
}

#[tokio::test]
async fn catalog_empty_instance() {
    let env = Env::start();
    let (_, v) = get_json(&env.reg, "/v2/_catalog").await;
    assert_eq!(v, json!({"repositories": []}));
}

struct Referrers {
    subject: String,
    sbom: String,
    sbom_size: usize,
    sig: String,
    sig_size: usize,
}

/// A subject image and two referrers: an SBOM with an explicit artifactType
/// and annotations, and a signature typed only by its config media type.
async fn push_referrers(reg: &Reg, repo: &str) -> Referrers {
    let (subject_body, subject) = push_image(reg, repo, "v1").await;
    let subject_desc = Desc::of(OCI_MANIFEST, &subject_body);

    let empty = push_desc(reg, repo, OCI_EMPTY, b"{}").await;
    let sbom_layer = push_desc(reg, repo, "application/spdx+json", b"{\"spdx\":true}").await;
    let sbom_body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": empty.json(),
        "layers": [sbom_layer.json()],
        "subject": subject_desc.json(),
        "annotations": {"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }))
    .unwrap();
    let sbom = put_manifest_ok(
        reg,
        repo,
        &sha256_digest(&sbom_body),
        OCI_MANIFEST,
        &sbom_body,
    )
    .await;

    let sig_config = push_desc(
        reg,
        repo,
        "application/vnd.example.sig.config+json",
        b"{\"sig\":1}",
    )
    .await;
    let sig_layer = push_desc(reg, repo, "application/octet-stream", b"signature-bytes").await;
    let sig_body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": sig_config.json(),
        "layers": [sig_layer.json()],
        "subject": subject_desc.json(),
    }))
    .unwrap();
    let sig = put_manifest_ok(reg, repo, "sig-tag", OCI_MANIFEST, &sig_body).await;

    Referrers {
        subject,
        sbom,
        sbom_size: sbom_body.len(),
        sig,
        sig_size: sig_body.len(),
    }
}

/// GET referrers; asserts 200 and the index envelope; returns (headers, descriptors).
async fn get_referrers(reg: &Reg, path: &str) -> (reqwest::header::HeaderMap, Vec<Value>) {
    let resp = reg.get(path).send().await.unwrap();
    let headers = resp.headers().clone();
    let body = expect_status(resp, 200).await;
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some(OCI_INDEX),
        "referrers Content-Type"
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["schemaVersion"], json!(2));
    assert_eq!(v["mediaType"], json!(OCI_INDEX));
    let mut manifests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests is not an array: {v}"))
        .clone();
    manifests.sort_by_key(|d| d["digest"].as_str().unwrap_or_default().to_string());
    (headers, manifests)
}

#[tokio::test]
async fn referrers_list_descriptors() {
    let env = Env::start();
    let r = push_referrers(&env.reg, "signed").await;
    let (_, manifests) =
        get_referrers(&env.reg, &format!("/v2/signed/referrers/{}", r.subject)).await;
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let sbom = manifests
        .iter()
        .find(|d| d["digest"] == json!(r.sbom))
        .unwrap_or_else(|| panic!("sbom missing from {manifests:?}"));
    assert_eq!(sbom["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(sbom["size"], json!(r.sbom_size));
    assert_eq!(sbom["artifactType"], json!("application/vnd.example.sbom"));
    assert_eq!(
        sbom["annotations"],
        json!({"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    );

    let sig = manifests
        .iter()
        .find(|d| d["digest"] == json!(r.sig))
        .unwrap_or_else(|| panic!("signature missing from {manifests:?}"));
    assert_eq!(sig["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(sig["size"], json!(r.sig_size));
    assert_eq!(
        sig["artifactType"],
        json!("application/vnd.example.sig.config+json")
    );
    assert!(
        sig.get("annotations").is_none() || sig["annotations"] == json!({}),
        "signature has no annotations: {sig}"
    );
}

#[tokio::test]
async fn referrers_filter_by_artifact_type() {
    let env = Env::start();
    let r = push_referrers(&env.reg, "signed").await;
    let (headers, manifests) = get_referrers(
        &env.reg,
        &format!(
            "/v2/signed/referrers/{}?artifactType=application/vnd.example.sbom",
            r.subject
        ),
    )
    .await;
    assert_eq!(
        headers
            .get("oci-filters-applied")
            .and_then(|v| v.to_str().ok()),
        Some("artifactType")
    );
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(manifests[0]["digest"], json!(r.sbom));

    let (headers, manifests) = get_referrers(
        &env.reg,
        &format!(
            "/v2/signed/referrers/{}?artifactType=application%2Fvnd.example.sig.config%2Bjson",
            r.subject
        ),
    )
    .await;
    assert_eq!(
        headers
            .get("oci-filters-applied")
            .and_then(|v| v.to_str().ok()),
        Some("artifactType")
    );
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(manifests[0]["digest"], json!(r.sig));

    let (_, manifests) = get_referrers(
        &env.reg,
        &format!(
            "/v2/signed/referrers/{}?artifactType=application/none",
            r.subject
        ),
    )
    .await;
    assert!(manifests.is_empty(), "{manifests:?}");
}

#[tokio::test]
async fn referrers_of_unknown_subject_is_empty() {
    let env = Env::start();
    let r = push_referrers(&env.reg, "signed").await;
    let (_, manifests) = get_referrers(
        &env.reg,
        &format!("/v2/signed/referrers/{}", random_digest()),
    )
    .await;
    assert!(manifests.is_empty());
    // The referrers live in "signed" only.
    push_image(&env.reg, "other", "v1").await;
    let (_, manifests) =
        get_referrers(&env.reg, &format!("/v2/other/referrers/{}", r.subject)).await;
    assert!(manifests.is_empty(), "{manifests:?}");
    // A referrer's own digest has no referrers.
    let (_, manifests) = get_referrers(&env.reg, &format!("/v2/signed/referrers/{}", r.sbom)).await;
    assert!(manifests.is_empty());
}

#[tokio::test]
async fn referrer_removed_after_delete() {
    let env = Env::start();
    let r = push_referrers(&env.reg, "signed").await;
    let resp = env
        .reg
        .delete(&format!("/v2/signed/manifests/{}", r.sbom))
        .send()
        .await
        .unwrap();
    expect_status(resp, 202).await;
    let (_, manifests) =
        get_referrers(&env.reg, &format!("/v2/signed/referrers/{}", r.subject)).await;
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(manifests[0]["digest"], json!(r.sig));

    // Deleting the tagged signature by digest removes it too.
    let resp = env
        .reg
        .delete(&format!("/v2/signed/manifests/{}", r.sig))
        .send()
        .await
        .unwrap();
    expect_status(resp, 202).await;
    let (_, manifests) =
        get_referrers(&env.reg, &format!("/v2/signed/referrers/{}", r.subject)).await;
    assert!(manifests.is_empty(), "{manifests:?}");
}

#[tokio::test]
async fn referrers_bad_digest() {
    let env = Env::start();
    push_image(&env.reg, "signed", "v1").await;
    for digest in ["nocolon", "sha256:1234", "sha256:XYZ", "latest"] {
        let resp = env
            .reg
            .get(&format!("/v2/signed/referrers/{digest}"))
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "DIGEST_INVALID").await;
    }
}

#[tokio::test]
async fn index_referrer_is_listed_with_its_artifact_type() {
    let env = Env::start();
    let (subject_body, subject) = push_image(&env.reg, "signed", "v1").await;
    // Two child artifacts, then an index bundling them that refers to the subject.
    let mut children = Vec::new();
    for kind in ["a", "b"] {
        let m = make_image(&env.reg, "signed", OCI_MANIFEST).await;
        put_manifest_ok(&env.reg, "signed", &sha256_digest(&m), OCI_MANIFEST, &m).await;
        children.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": sha256_digest(&m),
            "size": m.len(),
            "annotations": {"kind": kind},
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": children,
        "subject": Desc::of(OCI_MANIFEST, &subject_body).json(),
        "annotations": {"org.example.bundle": "yes"},
    }))
    .unwrap();
    let resp = put_manifest(&env.reg, "signed", "bundle", OCI_INDEX, &index).await;
    assert_eq!(
        header(&resp, "oci-subject").as_deref(),
        Some(subject.as_str())
    );
    expect_status(resp, 201).await;

    let (_, manifests) = get_referrers(&env.reg, &format!("/v2/signed/referrers/{subject}")).await;
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let d = &manifests[0];
    assert_eq!(d["mediaType"], json!(OCI_INDEX));
    assert_eq!(d["digest"], json!(sha256_digest(&index)));
    assert_eq!(d["size"], json!(index.len()));
    assert_eq!(d["artifactType"], json!("application/vnd.example.bundle"));
    assert_eq!(d["annotations"], json!({"org.example.bundle": "yes"}));

    // Deleting the tag alone keeps the referrer (the manifest still exists).
    let resp = env
        .reg
        .delete("/v2/signed/manifests/bundle")
        .send()
        .await
        .unwrap();
    expect_status(resp, 202).await;
    let (_, manifests) = get_referrers(&env.reg, &format!("/v2/signed/referrers/{subject}")).await;
    assert_eq!(manifests.len(), 1, "{manifests:?}");
}
