//! Pulling: blob GET/HEAD and ranges, blob visibility and deletion, manifests
//! of every supported media type by tag and by digest, repository names.

use crate::common::sha256_digest;
use crate::common_api::*;
use serde_json::json;

#[tokio::test]
async fn version_check() {
    let env = Env::start();
    let resp = env.reg.get("/v2/").send().await.unwrap();
    assert_eq!(
        header(&resp, "docker-distribution-api-version").as_deref(),
        Some(API_VERSION)
    );
    let body = expect_status(resp, 200).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, json!({}));
}

/// Status of a HEAD request.
async fn head_status(reg: &Reg, path: &str) -> u16 {
    reg.send(Method::HEAD, path).await.status().as_u16()
}

/// GET with a Range header.
async fn get_range(reg: &Reg, path: &str, range: &str) -> reqwest::Response {
    reg.get(path).header("range", range).send().await.unwrap()
}

#[tokio::test]
async fn blob_get_and_head_headers() {
    let env = Env::start();
    let data = random_bytes(1234);
    let digest = push_blob(&env.reg, "repo", &data).await;
    let path = format!("/v2/repo/blobs/{digest}");

    for method in [Method::GET, Method::HEAD] {
        let resp = env.reg.send(method.clone(), &path).await;
        assert_eq!(resp.status().as_u16(), 200, "{method}");
        assert_eq!(must_header(&resp, "content-length"), "1234");
        assert_eq!(must_header(&resp, "docker-content-digest"), digest);
        assert_eq!(must_header(&resp, "accept-ranges"), "bytes");
        assert_eq!(
            must_header(&resp, "content-type"),
            "application/octet-stream"
        );
        assert_eq!(
            must_header(&resp, "docker-distribution-api-version"),
            API_VERSION
        );
        let body = resp.bytes().await.unwrap();
        if method == Method::HEAD {
            assert!(body.is_empty(), "HEAD has no body");
        } else {
            assert!(body.as_ref() == data.as_slice(), "blob body");
        }
    }

    // HEAD of an unknown blob is a 404 too.
    let path = format!("/v2/repo/blobs/{}", random_digest());
    assert_eq!(head_status(&env.reg, &path).await, 404);
}

#[tokio::test]
async fn blob_range_requests() {
    let env = Env::start();
    let data = random_bytes(100);
    let digest = push_blob(&env.reg, "repo", &data).await;
    let path = format!("/v2/repo/blobs/{digest}");

    let cases: [(&str, usize, usize); 4] = [
        ("bytes=10-19", 10, 19),
        ("bytes=90-", 90, 99),
        ("bytes=-5", 95, 99),
        ("bytes=0-0", 0, 0),
    ];
    for (range, a, b) in cases {
        let resp = get_range(&env.reg, &path, range).await;
        assert_eq!(resp.status().as_u16(), 206, "{range}");
        assert_eq!(
            must_header(&resp, "content-range"),
            format!("bytes {a}-{b}/100"),
            "{range}"
        );
        assert_eq!(
            must_header(&resp, "content-length"),
            (b - a + 1).to_string(),
            "{range}"
        );
        let body = resp.bytes().await.unwrap();
        assert!(body.as_ref() == &data[a..=b], "{range}: body");
    }

    for range in ["bytes=100-", "bytes=200-300", "bytes=150-160"] {
        let resp = get_range(&env.reg, &path, range).await;
        assert_eq!(resp.status().as_u16(), 416, "{range}");
    }
}

#[tokio::test]
async fn blob_visible_only_in_linking_repos() {
    let env = Env::start();
    let data = random_bytes(64);
    let digest = push_blob(&env.reg, "owner", &data).await;
    push_blob(&env.reg, "bystander", b"bystander").await;
    assert_blob(&env.reg, "owner", &digest, &data).await;
    assert_no_blob(&env.reg, "bystander", &digest).await;
    assert_no_blob(&env.reg, "never/pushed", &digest).await;
    let path = format!("/v2/bystander/blobs/{digest}");
    assert_eq!(head_status(&env.reg, &path).await, 404);

    // Pushing the same content into a second repo links it there too.
    push_blob(&env.reg, "bystander", &data).await;
    assert_blob(&env.reg, "bystander", &digest, &data).await;
}

#[tokio::test]
async fn blob_delete() {
    let env = Env::start();
    let data = random_bytes(500);
    let digest = push_blob(&env.reg, "one", &data).await;
    push_blob(&env.reg, "two", &data).await;
    let path = format!("/v2/one/blobs/{digest}");

    env.reg.expect_status(Method::DELETE, &path, 202).await;
    assert_no_blob(&env.reg, "one", &digest).await;
    env.reg
        .expect_error(Method::DELETE, &path, 404, "BLOB_UNKNOWN")
        .await;
    // Unlinking from one repository leaves the other intact.
    assert_blob(&env.reg, "two", &digest, &data).await;

    let path = format!("/v2/two/blobs/{}", random_digest());
    env.reg
        .expect_error(Method::DELETE, &path, 404, "BLOB_UNKNOWN")
        .await;
}

/// Asserts GET and HEAD of a manifest by `reference`.
async fn assert_manifest(reg: &Reg, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let digest = sha256_digest(body);
    let path = format!("/v2/{repo}/manifests/{reference}");
    for method in [Method::GET, Method::HEAD] {
        let resp = reg
            .req(method.clone(), &path)
            .header("accept", ACCEPT_MANIFESTS)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{method} {repo}:{reference}");
        assert_eq!(must_header(&resp, "content-type"), media_type);
        assert_eq!(must_header(&resp, "docker-content-digest"), digest);
        assert_eq!(must_header(&resp, "content-length"), body.len().to_string());
        let got = resp.bytes().await.unwrap();
        if method == Method::HEAD {
            assert!(got.is_empty(), "HEAD has no body");
        } else {
            assert!(
                got.as_ref() == body,
                "GET {repo}:{reference}: body differs:\n{}\nvs pushed\n{}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(body)
            );
        }
    }
}

/// Re-indents JSON oddly so a server that re-serialises would change the bytes.
fn odd_formatting(body: &[u8]) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let compact = serde_json::to_string(&v).unwrap();
    format!(
        "  {}\n\n",
        compact.replace(",\"", ",   \"").replace("\":", "\" :  ")
    )
    .into_bytes()
}

/// Pushes `body` under `tag` and asserts it is served by tag and by digest.
async fn push_and_assert_manifest(reg: &Reg, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
    let digest = put_manifest_ok(reg, repo, tag, media_type, body).await;
    assert_manifest(reg, repo, tag, media_type, body).await;
    assert_manifest(reg, repo, &digest, media_type, body).await;
}

/// An image of `media_type`, oddly formatted, by tag and by digest.
async fn image_by_tag_and_digest(media_type: &str) {
    let env = Env::start();
    let body = odd_formatting(&make_image(&env.reg, "img", media_type).await);
    push_and_assert_manifest(&env.reg, "img", "v1", media_type, &body).await;
}

/// An index of `index_type` over two images of `child_type` (pushed by
/// digest), oddly formatted, by tag and by digest; the children stay
/// reachable by digest with their own type.
async fn index_by_tag_and_digest(index_type: &str, child_type: &str) {
    let env = Env::start();
    let mut children = Vec::new();
    for _ in 0..2 {
        let m = make_image(&env.reg, "multi", child_type).await;
        put_manifest_by_digest(&env.reg, "multi", child_type, &m).await;
        children.push(Desc::of(child_type, &m));
    }
    let body = odd_formatting(&index_manifest(index_type, &children));
    push_and_assert_manifest(&env.reg, "multi", "latest", index_type, &body).await;
    for child in &children {
        let resp = get_manifest(&env.reg, "multi", &child.digest).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(must_header(&resp, "content-type"), child_type);
    }
}

#[tokio::test]
async fn oci_image_manifest_by_tag_and_digest() {
    image_by_tag_and_digest(OCI_MANIFEST).await;
}

#[tokio::test]
async fn docker_schema2_manifest_by_tag_and_digest() {
    image_by_tag_and_digest(DOCKER_MANIFEST).await;
}

#[tokio::test]
async fn oci_index_by_tag_and_digest() {
    index_by_tag_and_digest(OCI_INDEX, OCI_MANIFEST).await;
}

#[tokio::test]
async fn docker_manifest_list_by_tag_and_digest() {
    index_by_tag_and_digest(DOCKER_LIST, DOCKER_MANIFEST).await;
}

#[tokio::test]
async fn manifest_put_by_digest() {
    let env = Env::start();
    let body = make_image(&env.reg, "bydigest", OCI_MANIFEST).await;
    let digest = sha256_digest(&body);
    put_manifest_ok(&env.reg, "bydigest", &digest, OCI_MANIFEST, &body).await;
    assert_manifest(&env.reg, "bydigest", &digest, OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn manifests_are_per_repository() {
    let env = Env::start();
    let (body, digest) = push_image(&env.reg, "first", "v1").await;
    push_image(&env.reg, "second", "v2").await;
    assert_manifest(&env.reg, "first", "v1", OCI_MANIFEST, &body).await;
    assert_no_manifest(&env.reg, "second", &digest).await;
    assert_no_manifest(&env.reg, "second", "v1").await;
}

#[tokio::test]
async fn deeply_nested_repository_name() {
    let env = Env::start();
    let repo = "a/b/c/d/e/f/g/h";
    let data = random_bytes(77);
    let digest = push_blob(&env.reg, repo, &data).await;
    assert_blob(&env.reg, repo, &digest, &data).await;
    let body = make_image(&env.reg, repo, OCI_MANIFEST).await;
    push_and_assert_manifest(&env.reg, repo, "deep", OCI_MANIFEST, &body).await;
    assert_eq!(list_tags(&env.reg, repo).await, vec!["deep".to_string()]);
    // A prefix of the name is a different (unknown) repository.
    assert_no_blob(&env.reg, "a/b/c/d", &digest).await;

    // Separators allowed by the grammar.
    for name in ["x.y/z_w", "x__y/z--w", "0/1/2", "ab-c/d.e-f_g"] {
        let d = push_blob(&env.reg, name, &data).await;
        assert_blob(&env.reg, name, &d, &data).await;
    }
}

#[tokio::test]
async fn invalid_repository_names() {
    let env = Env::start();
    let addr = env.server.addr("ci").to_string();
    let auth = Some(("ci-user", "ci-secret"));
    let long = vec!["a"; 128].join("/"); // 255 chars: valid
    let too_long = format!("{long}b"); // 256 chars
    assert_eq!(long.len(), 255);
    let bad_names = [
        "Upper",
        "a//b",
        "a/../b",
        "%2e%2e",
        "a/%2e%2e/b",
        "-a",
        "a-",
        "a/",
        "a..b",
        "a___b",
        "a/.b",
        too_long.as_str(),
    ];
    for name in bad_names {
        for (method, path) in [
            ("GET", format!("/v2/{name}/tags/list")),
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            ("GET", format!("/v2/{name}/blobs/{}", random_digest())),
        ] {
            let resp = raw_request(&addr, method, &path, "127.0.0.1", auth, b"").await;
            resp.expect_error(400, "NAME_INVALID", &format!("{method} {path}"));
        }
    }

    // The longest valid name works.
    let d = push_blob(&env.reg, &long, b"long").await;
    assert_blob(&env.reg, &long, &d, b"long").await;
}

#[tokio::test]
async fn unknown_manifest_is_manifest_unknown() {
    let env = Env::start();
    push_image(&env.reg, "known", "v1").await;
    assert_no_manifest(&env.reg, "known", "nope").await;
    assert_no_manifest(&env.reg, "known", &random_digest()).await;
    assert_eq!(head_status(&env.reg, "/v2/known/manifests/nope").await, 404);
    // A config blob's digest is not a manifest.
    let cfg = push_blob(&env.reg, "known", b"{\"not\":\"a manifest\"}").await;
    assert_no_manifest(&env.reg, "known", &cfg).await;
}
