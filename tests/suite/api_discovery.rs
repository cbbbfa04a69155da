//! Content discovery: tag listing, the catalog and the referrers API.

use crate::common::{sha256_digest, Instance};
use crate::common_api::*;
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

/// Pages of the list at `base` (`key`: "tags" or "repositories"): for each
/// (query, entries, Link) asserts the entries and the Link header (`None`:
/// no Link).
async fn assert_pages(reg: &Reg, base: &str, key: &str, pages: &[(&str, &[&str], Option<&str>)]) {
    for (query, entries, link) in pages {
        let path = format!("{base}?{query}");
        let (got, v) = get_json(reg, &path).await;
        assert_eq!(strings(&v[key]), *entries, "{path}");
        assert_eq!(got.as_deref(), *link, "{path}: Link");
    }
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

    assert_pages(
        &env.reg,
        "/v2/app/tags/list",
        "tags",
        &[
            (
                "n=2",
                &["a", "b"],
                Some("</v2/app/tags/list?n=2&last=b>; rel=\"next\""),
            ),
            (
                "n=2&last=b",
                &["c", "d"],
                Some("</v2/app/tags/list?n=2&last=d>; rel=\"next\""),
            ),
            // The last page has no Link.
            ("n=2&last=d", &["e"], None),
            // Exactly n left: nothing remains afterwards, so no Link.
            ("n=2&last=c", &["d", "e"], None),
            ("n=5", &["a", "b", "c", "d", "e"], None),
            ("n=100", &["a", "b", "c", "d", "e"], None),
            // last alone: everything after it; last need not be an existing tag.
            ("last=c", &["d", "e"], None),
            ("last=bb", &["c", "d", "e"], None),
            ("last=e", &[], None),
            ("n=0", &[], None),
        ],
    )
    .await;

    let (_, v) = get_json(&env.reg, "/v2/app/tags/list?n=0").await;
    assert_eq!(v["name"], json!("app"));

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
    put_manifest_by_digest(&env.reg, "untagged", OCI_MANIFEST, &body).await;
    let (_, v) = get_json(&env.reg, "/v2/untagged/tags/list").await;
    assert_eq!(v, json!({"name": "untagged", "tags": []}));
}

#[tokio::test]
async fn tags_list_unknown_repo() {
    let env = Env::start();
    push_image(&env.reg, "known", "v1").await;
    for path in ["/v2/unknown/tags/list", "/v2/known/sub/tags/list"] {
        env.reg
            .expect_error(Method::GET, path, 404, "NAME_UNKNOWN")
            .await;
    }
}

#[tokio::test]
async fn tags_list_bad_n() {
    let env = Env::start();
    push_image(&env.reg, "app", "v1").await;
    for path in [
        "/v2/app/tags/list?n=abc",
        "/v2/app/tags/list?n=1x",
        "/v2/app/tags/list?n=ten",
        "/v2/_catalog?n=abc",
    ] {
        env.reg
            .expect_error(Method::GET, path, 400, "PAGINATION_NUMBER_INVALID")
            .await;
    }
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
    assert_pages(
        &env.reg,
        "/v2/_catalog",
        "repositories",
        &[
            (
                "n=2",
                &["a", "b"],
                Some("</v2/_catalog?n=2&last=b>; rel=\"next\""),
            ),
            (
                "n=2&last=b",
                &["b/x", "c"],
                Some("</v2/_catalog?n=2&last=c>; rel=\"next\""),
            ),
            ("n=2&last=c", &["d"], None),
            ("last=b/x", &["c", "d"], None),
            ("n=0", &[], None),
        ],
    )
    .await;
}

#[tokio::test]
async fn catalog_empty_instance() {
    let env = Env::start();
    let (_, v) = get_json(&env.reg, "/v2/_catalog").await;
    assert_eq!(v, json!({"repositories": []}));
}

#[tokio::test]
async fn listings_are_fresh_after_pushes_deletes_and_changes_by_other_processes() {
    let env = Env::start();
    let reg = &env.reg;
    let tags_dir = env.cfg.tags_dir("ci", "app");
    let (body, digest) = push_image(reg, "app", "v1").await;
    // Each step lists twice: once to fill the cache, once after the change.
    assert_eq!(list_tags(reg, "app").await, ["v1"]);
    put_manifest_ok(reg, "app", "v2", OCI_MANIFEST, &body).await;
    assert_eq!(list_tags(reg, "app").await, ["v1", "v2"]);

    // Re-pointing a tag changes no name.
    assert_eq!(list_tags(reg, "app").await, ["v1", "v2"]);
    let other = make_image(reg, "app", OCI_MANIFEST).await;
    put_manifest_ok(reg, "app", "v2", OCI_MANIFEST, &other).await;
    assert_eq!(list_tags(reg, "app").await, ["v1", "v2"]);
    reg.expect_status(Method::DELETE, "/v2/app/manifests/v1", 202)
        .await;
    assert_eq!(list_tags(reg, "app").await, ["v2"]);

    // Another berth process tags the manifest on disk, links last, then
    // renews the repository's token.
    let hex = digest.trim_start_matches("sha256:");
    for link in [
        format!("v3/index/sha256/{hex}/link"),
        "v3/current/link".into(),
    ] {
        let path = tags_dir.join(link);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &digest).unwrap();
    }
    env.cfg.renew_tags_token("ci", "app");
    assert_eq!(list_tags(reg, "app").await, ["v2", "v3"]);

    // ... and removes one.
    assert_eq!(list_tags(reg, "app").await, ["v2", "v3"]);
    std::fs::remove_dir_all(tags_dir.join("v2")).unwrap();
    env.cfg.renew_tags_token("ci", "app");
    assert_eq!(list_tags(reg, "app").await, ["v3"]);

    // A repository created by a push is in the very next catalog.
    assert_eq!(list_catalog(reg).await, ["app"]);
    push_image(reg, "new/repo", "v1").await;
    assert_eq!(list_catalog(reg).await, ["app", "new/repo"]);
    put_manifest_by_digest(
        reg,
        "other",
        OCI_MANIFEST,
        &make_image(reg, "other", OCI_MANIFEST).await,
    )
    .await;
    assert_eq!(list_catalog(reg).await, ["app", "new/repo", "other"]);
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
    let sbom = put_manifest_by_digest(reg, repo, OCI_MANIFEST, &sbom_body).await;

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

/// GET the referrers of `subject` in `repo`, optionally filtered by an
/// (already URL-encoded) artifactType. Asserts 200, the index envelope and,
/// when filtering, `OCI-Filters-Applied: artifactType`. Returns the
/// descriptors sorted by digest.
async fn referrers(
    reg: &Reg,
    repo: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> Vec<Value> {
    let mut path = format!("/v2/{repo}/referrers/{subject}");
    if let Some(t) = artifact_type {
        path = format!("{path}?artifactType={t}");
    }
    let resp = reg.get(&path).send().await.unwrap();
    let ctype = header(&resp, "content-type");
    let applied = header(&resp, "oci-filters-applied");
    let body = expect_status(resp, 200).await;
    assert_eq!(ctype.as_deref(), Some(OCI_INDEX), "referrers Content-Type");
    if artifact_type.is_some() {
        assert_eq!(
            applied.as_deref(),
            Some("artifactType"),
            "{path}: OCI-Filters-Applied"
        );
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["schemaVersion"], json!(2));
    assert_eq!(v["mediaType"], json!(OCI_INDEX));
    let mut manifests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests is not an array: {v}"))
        .clone();
    manifests.sort_by_key(|d| d["digest"].as_str().unwrap_or_default().to_string());
    manifests
}

/// The digests of referrer descriptors, in order.
fn digests(manifests: &[Value]) -> Vec<&str> {
    manifests
        .iter()
        .map(|d| d["digest"].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn referrers_list_descriptors() {
    let env = Env::start();
    let r = push_referrers(&env.reg, "signed").await;
    let manifests = referrers(&env.reg, "signed", &r.subject, None).await;
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
    let cases = [
        ("application/vnd.example.sbom", vec![r.sbom.as_str()]),
        (
            "application%2Fvnd.example.sig.config%2Bjson",
            vec![r.sig.as_str()],
        ),
        ("application/none", vec![]),
    ];
    for (artifact_type, expected) in cases {
        let manifests = referrers(&env.reg, "signed", &r.subject, Some(artifact_type)).await;
        assert_eq!(
            digests(&manifests),
            expected,
            "artifactType={artifact_type}"
        );
    }
}

#[tokio::test]
async fn referrers_of_unknown_subject_is_empty() {
    let env = Env::start();
    let r = push_referrers(&env.reg, "signed").await;
    push_image(&env.reg, "other", "v1").await;
    let cases = [
        ("signed", random_digest(), "an unknown subject"),
        (
            "other",
            r.subject.clone(),
            "the referrers live in \"signed\" only",
        ),
        ("signed", r.sbom.clone(), "a referrer's own digest"),
    ];
    for (repo, subject, what) in cases {
        let manifests = referrers(&env.reg, repo, &subject, None).await;
        assert!(manifests.is_empty(), "{what}: {manifests:?}");
    }
}

#[tokio::test]
async fn referrer_removed_after_delete() {
    let env = Env::start();
    let r = push_referrers(&env.reg, "signed").await;
    // Deleting a referrer by digest (the SBOM, then the tagged signature)
    // removes it from the list.
    for (deleted, left) in [(&r.sbom, vec![r.sig.as_str()]), (&r.sig, vec![])] {
        let path = format!("/v2/signed/manifests/{deleted}");
        env.reg.expect_status(Method::DELETE, &path, 202).await;
        let manifests = referrers(&env.reg, "signed", &r.subject, None).await;
        assert_eq!(digests(&manifests), left, "after deleting {deleted}");
    }
}

#[tokio::test]
async fn referrers_bad_digest() {
    let env = Env::start();
    push_image(&env.reg, "signed", "v1").await;
    for digest in ["nocolon", "sha256:1234", "sha256:XYZ", "latest"] {
        let path = format!("/v2/signed/referrers/{digest}");
        env.reg
            .expect_error(Method::GET, &path, 400, "DIGEST_INVALID")
            .await;
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
        let digest = put_manifest_by_digest(&env.reg, "signed", OCI_MANIFEST, &m).await;
        children.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest,
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
    let oci_subject = put_manifest_subject(&env.reg, "signed", "bundle", OCI_INDEX, &index).await;
    assert_eq!(oci_subject.as_deref(), Some(subject.as_str()));

    let manifests = referrers(&env.reg, "signed", &subject, None).await;
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let d = &manifests[0];
    assert_eq!(d["mediaType"], json!(OCI_INDEX));
    assert_eq!(d["digest"], json!(sha256_digest(&index)));
    assert_eq!(d["size"], json!(index.len()));
    assert_eq!(d["artifactType"], json!("application/vnd.example.bundle"));
    assert_eq!(d["annotations"], json!({"org.example.bundle": "yes"}));

    // Deleting the tag alone keeps the referrer (the manifest still exists).
    env.reg
        .expect_status(Method::DELETE, "/v2/signed/manifests/bundle", 202)
        .await;
    let manifests = referrers(&env.reg, "signed", &subject, None).await;
    assert_eq!(manifests.len(), 1, "{manifests:?}");
}
