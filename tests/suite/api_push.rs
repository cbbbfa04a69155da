//! Blob uploads: monolithic, session, chunked and streamed uploads, upload
//! status, cancellation, mounts and digest validation.

use crate::common::sha256_digest;
use crate::common_api::*;

const REPO: &str = "library/app";

/// Asserts a new upload session (202 with the session's Location, its UUID,
/// Range `0-0`, an empty body and the API version header); returns the Location.
fn expect_session(resp: &reqwest::Response, repo: &str) -> String {
    assert_eq!(resp.status().as_u16(), 202, "POST upload session");
    let location = must_header(resp, "location");
    let uuid = must_header(resp, "docker-upload-uuid");
    assert_eq!(
        location,
        format!("/v2/{repo}/blobs/uploads/{uuid}"),
        "session Location"
    );
    assert_eq!(must_header(resp, "range"), "0-0", "Range of a new session");
    assert_eq!(must_header(resp, "content-length"), "0");
    assert_eq!(
        header(resp, "docker-distribution-api-version").as_deref(),
        Some(API_VERSION)
    );
    location
}

/// Starts an upload session and returns its Location (asserting the 202 headers).
async fn start_upload(reg: &Reg, repo: &str) -> String {
    let resp = reg
        .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .await;
    expect_session(&resp, repo)
}

/// POST a mount request (`from` optional) and return the raw response.
async fn mount(reg: &Reg, repo: &str, digest: &str, from: Option<&str>) -> reqwest::Response {
    let from = from.map(|f| format!("&from={f}")).unwrap_or_default();
    let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}{from}");
    reg.send(Method::POST, &path).await
}

/// PATCH a body, with a Content-Range header when `range` is given.
async fn patch(
    reg: &Reg,
    location: &str,
    range: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = reg
        .patch(location)
        .header("content-type", "application/octet-stream");
    if let Some(range) = range {
        req = req.header("content-range", range);
    }
    req.body(body).send().await.unwrap()
}

/// PATCH a chunk with an explicit Content-Range.
async fn patch_range(reg: &Reg, location: &str, start: usize, data: &[u8]) -> reqwest::Response {
    let end = start + data.len() - 1;
    let range = format!("{start}-{end}");
    patch(reg, location, Some(&range), data.to_vec()).await
}

/// `patch_range` that asserts success (see `assert_patch_ok`); returns the
/// new Location.
async fn patch_ok(reg: &Reg, repo: &str, location: &str, start: usize, data: &[u8]) -> String {
    let resp = patch_range(reg, location, start, data).await;
    assert_patch_ok(&resp, repo, start + data.len())
}

/// Starts an upload session and PATCHes its first chunk; returns the new Location.
async fn start_with(reg: &Reg, repo: &str, first: &[u8]) -> String {
    let location = start_upload(reg, repo).await;
    patch_ok(reg, repo, &location, 0, first).await
}

/// PUT `?digest=` (with an optional body) to a session Location.
async fn put_digest(reg: &Reg, location: &str, digest: &str, body: &[u8]) -> reqwest::Response {
    reg.put(&with_query(location, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Asserts that an upload session no longer exists (GET 404 BLOB_UPLOAD_UNKNOWN).
async fn assert_no_session(reg: &Reg, location: &str) {
    reg.expect_error(Method::GET, location, 404, "BLOB_UPLOAD_UNKNOWN")
        .await;
}

/// Asserts a successful PATCH: 202, Location, Range `0-(size-1)`, Docker-Upload-UUID.
/// Returns the new Location.
fn assert_patch_ok(resp: &reqwest::Response, repo: &str, size: usize) -> String {
    assert_eq!(resp.status().as_u16(), 202, "PATCH status");
    let location = must_header(resp, "location");
    let uuid = must_header(resp, "docker-upload-uuid");
    assert_eq!(location, format!("/v2/{repo}/blobs/uploads/{uuid}"));
    assert_eq!(must_header(resp, "range"), format!("0-{}", size - 1));
    location
}

/// GET the upload status and return its Range header (asserting 204).
async fn upload_range(reg: &Reg, location: &str) -> String {
    let resp = reg.get(location).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204, "upload status GET");
    assert_eq!(must_header(&resp, "location"), location);
    assert!(
        location.ends_with(&must_header(&resp, "docker-upload-uuid")),
        "Docker-Upload-UUID matches Location"
    );
    must_header(&resp, "range")
}

/// PUT to finish an upload with `body` as its last chunk; asserts 201 with
/// the blob Location and digest, and that the blob then holds exactly `whole`.
async fn finish(reg: &Reg, repo: &str, location: &str, digest: &str, body: &[u8], whole: &[u8]) {
    let resp = put_digest(reg, location, digest, body).await;
    expect_blob_created(resp, repo, digest).await;
    assert_blob(reg, repo, digest, whole).await;
}

#[tokio::test]
async fn monolithic_post_with_digest() {
    let env = Env::start();
    let data = random_bytes(10_000);
    let digest = sha256_digest(&data);
    let resp = post_blob(&env.reg, REPO, &digest, &data).await;
    expect_blob_created(resp, REPO, &digest).await;
    assert_blob(&env.reg, REPO, &digest, &data).await;
}

#[tokio::test]
async fn monolithic_post_of_empty_blob() {
    let env = Env::start();
    let digest = push_blob(&env.reg, REPO, b"").await;
    assert_eq!(
        digest,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_blob(&env.reg, REPO, &digest, b"").await;
}

#[tokio::test]
async fn session_post_then_single_put() {
    let env = Env::start();
    let data = random_bytes(5000);
    let digest = sha256_digest(&data);
    let location = start_upload(&env.reg, REPO).await;
    finish(&env.reg, REPO, &location, &digest, &data, &data).await;
    // The session is gone once completed.
    assert_no_session(&env.reg, &location).await;
}

#[tokio::test]
async fn chunked_patch_with_content_range_then_put() {
    let env = Env::start();
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);
    let mut location = start_upload(&env.reg, REPO).await;
    for (i, chunk) in data.chunks(1000).enumerate() {
        location = patch_ok(&env.reg, REPO, &location, i * 1000, chunk).await;
        assert_eq!(
            upload_range(&env.reg, &location).await,
            format!("0-{}", (i + 1) * 1000 - 1)
        );
    }
    finish(&env.reg, REPO, &location, &digest, b"", &data).await;
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let env = Env::start();
    let part1 = random_bytes(70_000);
    let part2 = random_bytes(12_345);
    let mut all = part1.clone();
    all.extend_from_slice(&part2);
    let digest = sha256_digest(&all);
    let location = start_upload(&env.reg, REPO).await;

    // First PATCH: a chunked-encoded stream with no Content-Length at all.
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = part1
        .chunks(8192)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let resp = patch(&env.reg, &location, None, body).await;
    let location = assert_patch_ok(&resp, REPO, part1.len());

    // Second PATCH: plain body, no Content-Range; appended.
    let resp = patch(&env.reg, &location, None, part2.clone()).await;
    let location = assert_patch_ok(&resp, REPO, all.len());
    assert_eq!(
        upload_range(&env.reg, &location).await,
        format!("0-{}", all.len() - 1)
    );
    finish(&env.reg, REPO, &location, &digest, b"", &all).await;
}

#[tokio::test]
async fn final_chunk_in_put_body() {
    let env = Env::start();
    let data = random_bytes(2500);
    let digest = sha256_digest(&data);
    let location = start_with(&env.reg, REPO, &data[..1500]).await;
    finish(&env.reg, REPO, &location, &digest, &data[1500..], &data).await;
}

#[tokio::test]
async fn final_chunk_in_put_body_with_content_range() {
    let env = Env::start();
    let data = random_bytes(2000);
    let digest = sha256_digest(&data);
    let location = start_with(&env.reg, REPO, &data[..1200]).await;
    let resp = env
        .reg
        .put(&with_query(&location, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .header("content-range", "1200-1999")
        .body(data[1200..].to_vec())
        .send()
        .await
        .unwrap();
    expect_status(resp, 201).await;
    assert_blob(&env.reg, REPO, &digest, &data).await;
}

#[tokio::test]
async fn upload_status_ranges() {
    let env = Env::start();
    let mut location = start_upload(&env.reg, REPO).await;
    assert_eq!(upload_range(&env.reg, &location).await, "0-0");
    for (start, chunk, range) in [(0, &[7u8; 10][..], "0-9"), (10, &[8u8; 5][..], "0-14")] {
        location = patch_ok(&env.reg, REPO, &location, start, chunk).await;
        assert_eq!(upload_range(&env.reg, &location).await, range);
    }
}

#[tokio::test]
async fn delete_upload_session() {
    let env = Env::start();
    let location = start_with(&env.reg, REPO, b"some bytes").await;
    env.reg.expect_status(Method::DELETE, &location, 204).await;

    assert_no_session(&env.reg, &location).await;
    let resp = patch_range(&env.reg, &location, 10, b"more").await;
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = put_digest(&env.reg, &location, &sha256_digest(b"some bytes"), b"").await;
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    env.reg
        .expect_error(Method::DELETE, &location, 404, "BLOB_UPLOAD_UNKNOWN")
        .await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(b"some bytes")).await;
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_offset_unchanged() {
    let env = Env::start();
    let data = random_bytes(300);
    let digest = sha256_digest(&data);
    let location = start_with(&env.reg, REPO, &data[..100]).await;

    // Skips ahead, then goes back.
    for (start, chunk) in [(200, &data[200..]), (50, &data[50..150])] {
        let resp = patch_range(&env.reg, &location, start, chunk).await;
        expect_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
        assert_eq!(upload_range(&env.reg, &location).await, "0-99");
    }

    // The session still works with the right offset.
    let location = patch_ok(&env.reg, REPO, &location, 100, &data[100..]).await;
    finish(&env.reg, REPO, &location, &digest, b"", &data).await;
}

#[tokio::test]
async fn malformed_content_range_is_400() {
    let env = Env::start();
    let location = start_upload(&env.reg, REPO).await;
    for bad in ["abc", "0-x", "-5", "5", "0_4"] {
        let resp = patch(&env.reg, &location, Some(bad), b"12345".to_vec()).await;
        let what = format!("Content-Range {bad:?}:");
        expect_error_for(resp, 400, "BLOB_UPLOAD_INVALID", &what).await;
        assert_eq!(upload_range(&env.reg, &location).await, "0-0");
    }
}

#[tokio::test]
async fn body_length_mismatch_is_size_invalid_and_chunk_discarded() {
    let env = Env::start();
    let data = random_bytes(40);
    let digest = sha256_digest(&data);
    let location = start_with(&env.reg, REPO, &data[..20]).await;

    // Claims 20 bytes (20-39) but sends 10, then claims 5 (20-24) but sends 20.
    for (range, body) in [("20-39", &data[20..30]), ("20-24", &data[20..])] {
        let resp = patch(&env.reg, &location, Some(range), body.to_vec()).await;
        expect_error(resp, 400, "SIZE_INVALID").await;
        assert_eq!(upload_range(&env.reg, &location).await, "0-19");
    }

    let location = patch_ok(&env.reg, REPO, &location, 20, &data[20..]).await;
    finish(&env.reg, REPO, &location, &digest, b"", &data).await;
}

#[tokio::test]
async fn digest_mismatch_on_put_stores_nothing_and_drops_session() {
    let env = Env::start();
    let data = random_bytes(1000);
    let wrong = sha256_digest(b"something else entirely");
    let location = start_with(&env.reg, REPO, &data).await;
    let resp = put_digest(&env.reg, &location, &wrong, b"").await;
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_blob(&env.reg, REPO, &wrong).await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
    assert_no_session(&env.reg, &location).await;
}

#[tokio::test]
async fn digest_mismatch_on_monolithic_post_stores_nothing() {
    let env = Env::start();
    let data = random_bytes(1000);
    let wrong = sha256_digest(b"not the data");
    let resp = post_blob(&env.reg, REPO, &wrong, &data).await;
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_blob(&env.reg, REPO, &wrong).await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
}

#[tokio::test]
async fn put_without_digest_is_digest_invalid() {
    let env = Env::start();
    let data = random_bytes(100);
    let location = start_with(&env.reg, REPO, &data).await;
    env.reg
        .expect_error(Method::PUT, &location, 400, "DIGEST_INVALID")
        .await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
}

#[tokio::test]
async fn unknown_upload_uuid_all_methods() {
    let env = Env::start();
    // Make sure the repository exists, so only the uuid is unknown.
    push_blob(&env.reg, REPO, b"exists").await;
    let location = format!("/v2/{REPO}/blobs/uploads/6c2bd0b4-44c5-4f4e-9d0e-93a43a2e3f1d");
    let digest = sha256_digest(b"x");

    let responses = [
        env.reg.send(Method::GET, &location).await,
        patch(&env.reg, &location, None, b"x".to_vec()).await,
        patch_range(&env.reg, &location, 0, b"x").await,
        put_digest(&env.reg, &location, &digest, b"x").await,
        env.reg.send(Method::DELETE, &location).await,
    ];
    for resp in responses {
        expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    assert_no_blob(&env.reg, REPO, &digest).await;
}

#[tokio::test]
async fn upload_session_of_one_repo_is_unknown_in_another() {
    let env = Env::start();
    let location = start_upload(&env.reg, REPO).await;
    let uuid = location.rsplit('/').next().unwrap().to_string();
    assert_no_session(&env.reg, &format!("/v2/other/blobs/uploads/{uuid}")).await;
    // The original session is unaffected.
    assert_eq!(upload_range(&env.reg, &location).await, "0-0");
}

/// Every way another user could touch a session (status, chunk with and
/// without Content-Range, finish, cancel) is answered 404
/// BLOB_UPLOAD_UNKNOWN, and leaves the session as it was.
async fn assert_refused_to(other: &Reg, location: &str) {
    let digest = sha256_digest(b"theirs");
    let responses = [
        other.send(Method::GET, location).await,
        patch(other, location, None, b"theirs".to_vec()).await,
        patch_range(other, location, 3, b"theirs").await,
        put_digest(other, location, &digest, b"theirs").await,
        other.send(Method::DELETE, location).await,
    ];
    for resp in responses {
        let what = format!("{} by {}", resp.url(), other.user);
        expect_error_for(resp, 404, "BLOB_UPLOAD_UNKNOWN", &what).await;
    }
    assert_no_blob(other, REPO, &digest).await;
}

/// An upload session belongs to the user who opened it, also across a
/// restart (the owner is kept next to the upload's data); others, with
/// push rights of their own, are told it does not exist.
#[tokio::test]
async fn upload_sessions_belong_to_their_user() {
    let cfg = crate::common::ConfigDir::new(&[
        crate::common::Instance::new("ci").with_users(&["alice", "bob"])
    ]);
    let server = crate::common::Server::start(&cfg);
    let client = |server: &crate::common::Server, user: &str| {
        Reg::new(&server.url("ci"), user, &format!("{user}-pw"))
    };
    let (alice, bob) = (client(&server, "alice"), client(&server, "bob"));
    let whole = random_bytes(9);
    let digest = sha256_digest(&whole);
    let location = start_with(&alice, REPO, &whole[..3]).await;
    let legacy = start_with(&alice, REPO, &whole[..3]).await;
    let bobs = start_upload(&bob, REPO).await;

    assert_refused_to(&bob, &location).await;
    assert_refused_to(&alice, &bobs).await;
    assert_eq!(upload_range(&alice, &location).await, "0-2");
    assert_eq!(upload_range(&bob, &bobs).await, "0-0");
    let id = location.rsplit('/').next().unwrap();
    let uploads = cfg
        .storage_root("ci")
        .join(format!("docker/registry/v2/repositories/{REPO}/_uploads"));
    assert_eq!(
        std::fs::read_to_string(uploads.join(id).join("owner")).unwrap(),
        "alice"
    );

    // After a restart, the sessions are recovered from disk with their
    // owners. One without an owner file (as registry:2 and older berth
    // leave them) is open to every user with push rights, as before.
    server.stop();
    let legacy_id = legacy.rsplit('/').next().unwrap();
    std::fs::remove_file(uploads.join(legacy_id).join("owner")).unwrap();
    let server = crate::common::Server::start(&cfg);
    let (alice, bob) = (client(&server, "alice"), client(&server, "bob"));
    assert_refused_to(&bob, &location).await;
    assert_refused_to(&alice, &bobs).await;
    let location = patch_ok(&alice, REPO, &location, 3, &whole[3..6]).await;
    finish(&alice, REPO, &location, &digest, &whole[6..], &whole).await;
    assert_no_session(&alice, &location).await;

    assert_eq!(upload_range(&bob, &legacy).await, "0-2");
    let legacy = patch_ok(&bob, REPO, &legacy, 3, &whole[3..]).await;
    finish(&alice, REPO, &legacy, &digest, b"", &whole).await;
}

#[tokio::test]
async fn cross_repo_mount_with_from() {
    let env = Env::start();
    let data = random_bytes(4096);
    let digest = push_blob(&env.reg, "src/repo", &data).await;
    let resp = mount(&env.reg, "dst/repo", &digest, Some("src/repo")).await;
    expect_blob_created(resp, "dst/repo", &digest).await;
    assert_blob(&env.reg, "dst/repo", &digest, &data).await;
    assert_blob(&env.reg, "src/repo", &digest, &data).await;
}

#[tokio::test]
async fn cross_repo_mount_from_repo_lacking_blob_opens_session() {
    let env = Env::start();
    let data = random_bytes(2048);
    // The blob exists in the instance, but not in the `from` repository.
    let digest = push_blob(&env.reg, "holder", &data).await;
    push_blob(&env.reg, "unrelated", b"other content").await;
    let resp = mount(&env.reg, "dst", &digest, Some("unrelated")).await;
    let location = expect_session(&resp, "dst");
    assert_no_blob(&env.reg, "dst", &digest).await;

    // The session is usable.
    finish(&env.reg, "dst", &location, &digest, &data, &data).await;
}

#[tokio::test]
async fn mount_without_from() {
    let env = Env::start();
    let data = random_bytes(1024);
    let digest = push_blob(&env.reg, "somewhere/else", &data).await;
    let resp = mount(&env.reg, "target", &digest, None).await;
    expect_blob_created(resp, "target", &digest).await;
    assert_blob(&env.reg, "target", &digest, &data).await;

    // A digest that exists nowhere: a new session instead.
    let missing = random_digest();
    let resp = mount(&env.reg, "target", &missing, None).await;
    expect_session(&resp, "target");
    assert_no_blob(&env.reg, "target", &missing).await;
}

#[tokio::test]
async fn mount_does_not_cross_instances() {
    let env = Env::start_with(vec![
        crate::common::Instance::new("ci"),
        crate::common::Instance::new("cache"),
    ]);
    let cache = env.reg("cache");
    let data = random_bytes(512);
    let digest = push_blob(&env.reg, "shared/name", &data).await;
    let resp = mount(&cache, "shared/name", &digest, Some("shared/name")).await;
    expect_session(&resp, "shared/name");
    let resp = mount(&cache, "mine", &digest, None).await;
    expect_session(&resp, "mine");
    assert_no_blob(&cache, "shared/name", &digest).await;
    assert_no_blob(&cache, "mine", &digest).await;
}

#[tokio::test]
async fn sha512_monolithic_and_session() {
    let env = Env::start();
    let data = random_bytes(3333);
    let digest = sha512_digest(&data);
    let resp = post_blob(&env.reg, REPO, &digest, &data).await;
    expect_blob_created(resp, REPO, &digest).await;
    assert_blob(&env.reg, REPO, &digest, &data).await;

    let data2 = random_bytes(5000);
    let digest2 = sha512_digest(&data2);
    let location = start_with(&env.reg, REPO, &data2[..2500]).await;
    let location = patch_ok(&env.reg, REPO, &location, 2500, &data2[2500..]).await;
    finish(&env.reg, REPO, &location, &digest2, b"", &data2).await;

    // A sha512 mismatch is rejected like a sha256 one.
    let wrong = sha512_digest(b"nope");
    let resp = post_blob(&env.reg, REPO, &wrong, &data).await;
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_blob(&env.reg, REPO, &wrong).await;
}

#[tokio::test]
async fn unsupported_digest_algorithm() {
    let env = Env::start();
    let data = b"hello".to_vec();
    let sha384 = format!("sha384:{}", "ab".repeat(48));
    let md5 = format!("md5:{}", "0f".repeat(16));
    for digest in [&sha384, &md5] {
        let resp = post_blob(&env.reg, REPO, digest, &data).await;
        expect_error(resp, 400, "UNSUPPORTED").await;

        let location = start_upload(&env.reg, REPO).await;
        let resp = put_digest(&env.reg, &location, digest, &data).await;
        expect_error(resp, 400, "UNSUPPORTED").await;

        let path = format!("/v2/{REPO}/blobs/{digest}");
        env.reg
            .expect_error(Method::GET, &path, 400, "UNSUPPORTED")
            .await;
    }
}

#[tokio::test]
async fn malformed_digest_is_digest_invalid() {
    let env = Env::start();
    let data = b"hello".to_vec();
    let good_hex = &sha256_digest(&data)["sha256:".len()..];
    let malformed = [
        "nocolon".to_string(),
        "sha256:xyz".to_string(),
        format!("sha256:{}", &good_hex[..63]),
        format!("sha256:{good_hex}0"),
        format!("sha256:{}", good_hex.to_uppercase()),
        format!("sha512:{good_hex}"),
        format!(":{good_hex}"),
    ];
    for digest in &malformed {
        let resp = post_blob(&env.reg, REPO, digest, &data).await;
        expect_error_for(
            resp,
            400,
            "DIGEST_INVALID",
            &format!("POST digest {digest:?}:"),
        )
        .await;
        let resp = env
            .reg
            .send(Method::GET, &format!("/v2/{REPO}/blobs/{digest}"))
            .await;
        expect_error_for(
            resp,
            400,
            "DIGEST_INVALID",
            &format!("GET blob {digest:?}:"),
        )
        .await;
    }
    // Nothing was stored under the real digest either.
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
}
