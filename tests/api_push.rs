//! Blob uploads: monolithic, session, chunked and streamed uploads, upload
//! status, cancellation, mounts and digest validation.

mod common;
#[path = "common_api/mod.rs"]
mod common_api;

use common::sha256_digest;
use common_api::*;

const REPO: &str = "library/app";

/// Starts an upload session and returns its Location (asserting the 202 headers).
async fn start_upload(reg: &Reg, repo: &str) -> String {
    let resp = reg
        .post(&format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "POST upload session");
    let location = must_header(&resp, "location");
    let uuid = must_header(&resp, "docker-upload-uuid");
    assert_eq!(
        location,
        format!("/v2/{repo}/blobs/uploads/{uuid}"),
        "session Location"
    );
    assert_eq!(must_header(&resp, "range"), "0-0", "Range of a new session");
    assert_eq!(must_header(&resp, "content-length"), "0");
    assert_eq!(
        header(&resp, "docker-distribution-api-version").as_deref(),
        Some(API_VERSION)
    );
    location
}

/// PATCH a chunk with an explicit Content-Range.
async fn patch_range(reg: &Reg, location: &str, start: usize, data: &[u8]) -> reqwest::Response {
    let end = start + data.len() - 1;
    reg.patch(location)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
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

/// PUT to finish an upload; asserts 201 with the blob Location and digest.
async fn finish(reg: &Reg, repo: &str, location: &str, digest: &str, body: &[u8]) {
    let resp = reg
        .put(&with_query(location, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let loc = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    expect_status(resp, 201).await;
    assert_eq!(
        loc.as_deref(),
        Some(format!("/v2/{repo}/blobs/{digest}").as_str())
    );
    assert_eq!(dcd.as_deref(), Some(digest));
}

#[tokio::test]
async fn monolithic_post_with_digest() {
    let env = Env::start();
    let data = random_bytes(10_000);
    let digest = sha256_digest(&data);
    let resp = env
        .reg
        .post(&format!("/v2/{REPO}/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let location = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    expect_status(resp, 201).await;
    assert_eq!(
        location.as_deref(),
        Some(format!("/v2/{REPO}/blobs/{digest}").as_str())
    );
    assert_eq!(dcd.as_deref(), Some(digest.as_str()));
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
    finish(&env.reg, REPO, &location, &digest, &data).await;
    assert_blob(&env.reg, REPO, &digest, &data).await;
    // The session is gone once completed.
    let resp = env.reg.get(&location).send().await.unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn chunked_patch_with_content_range_then_put() {
    let env = Env::start();
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);
    let mut location = start_upload(&env.reg, REPO).await;
    for (i, chunk) in data.chunks(1000).enumerate() {
        let resp = patch_range(&env.reg, &location, i * 1000, chunk).await;
        location = assert_patch_ok(&resp, REPO, (i + 1) * 1000);
        assert_eq!(
            upload_range(&env.reg, &location).await,
            format!("0-{}", (i + 1) * 1000 - 1)
        );
    }
    finish(&env.reg, REPO, &location, &digest, b"").await;
    assert_blob(&env.reg, REPO, &digest, &data).await;
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
    let resp = env
        .reg
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let location = assert_patch_ok(&resp, REPO, part1.len());

    // Second PATCH: plain body, no Content-Range; appended.
    let resp = env
        .reg
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(part2.clone())
        .send()
        .await
        .unwrap();
    let location = assert_patch_ok(&resp, REPO, all.len());
    assert_eq!(
        upload_range(&env.reg, &location).await,
        format!("0-{}", all.len() - 1)
    );
    finish(&env.reg, REPO, &location, &digest, b"").await;
    assert_blob(&env.reg, REPO, &digest, &all).await;
}

#[tokio::test]
async fn final_chunk_in_put_body() {
    let env = Env::start();
    let data = random_bytes(2500);
    let digest = sha256_digest(&data);
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, &data[..1500]).await;
    let location = assert_patch_ok(&resp, REPO, 1500);
    finish(&env.reg, REPO, &location, &digest, &data[1500..]).await;
    assert_blob(&env.reg, REPO, &digest, &data).await;
}

#[tokio::test]
async fn final_chunk_in_put_body_with_content_range() {
    let env = Env::start();
    let data = random_bytes(2000);
    let digest = sha256_digest(&data);
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, &data[..1200]).await;
    let location = assert_patch_ok(&resp, REPO, 1200);
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
    let location = start_upload(&env.reg, REPO).await;
    assert_eq!(upload_range(&env.reg, &location).await, "0-0");
    let resp = patch_range(&env.reg, &location, 0, &[7u8; 10]).await;
    let location = assert_patch_ok(&resp, REPO, 10);
    assert_eq!(upload_range(&env.reg, &location).await, "0-9");
    let resp = patch_range(&env.reg, &location, 10, &[8u8; 5]).await;
    let location = assert_patch_ok(&resp, REPO, 15);
    assert_eq!(upload_range(&env.reg, &location).await, "0-14");
}

#[tokio::test]
async fn delete_upload_session() {
    let env = Env::start();
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, b"some bytes").await;
    let location = assert_patch_ok(&resp, REPO, 10);
    let resp = env.reg.delete(&location).send().await.unwrap();
    expect_status(resp, 204).await;

    let resp = env.reg.get(&location).send().await.unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = patch_range(&env.reg, &location, 10, b"more").await;
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = env
        .reg
        .put(&with_query(
            &location,
            &format!("digest={}", sha256_digest(b"some bytes")),
        ))
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = env.reg.delete(&location).send().await.unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(b"some bytes")).await;
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_offset_unchanged() {
    let env = Env::start();
    let data = random_bytes(300);
    let digest = sha256_digest(&data);
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, &data[..100]).await;
    let location = assert_patch_ok(&resp, REPO, 100);

    // Skips ahead.
    let resp = patch_range(&env.reg, &location, 200, &data[200..]).await;
    expect_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    assert_eq!(upload_range(&env.reg, &location).await, "0-99");
    // Goes back.
    let resp = patch_range(&env.reg, &location, 50, &data[50..150]).await;
    expect_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    assert_eq!(upload_range(&env.reg, &location).await, "0-99");

    // The session still works with the right offset.
    let resp = patch_range(&env.reg, &location, 100, &data[100..]).await;
    let location = assert_patch_ok(&resp, REPO, 300);
    finish(&env.reg, REPO, &location, &digest, b"").await;
    assert_blob(&env.reg, REPO, &digest, &data).await;
}

#[tokio::test]
async fn malformed_content_range_is_400() {
    let env = Env::start();
    let location = start_upload(&env.reg, REPO).await;
    for bad in ["abc", "0-x", "-5", "5", "0_4"] {
        let resp = env
            .reg
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .header("content-range", bad)
            .body(b"12345".to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            status.as_u16(),
            400,
            "Content-Range {bad:?}: {}",
            String::from_utf8_lossy(&body)
        );
        let codes = error_codes(&body);
        assert!(
            codes.iter().any(|c| c == "BLOB_UPLOAD_INVALID"),
            "Content-Range {bad:?}: codes {codes:?}"
        );
        assert_eq!(upload_range(&env.reg, &location).await, "0-0");
    }
}

#[tokio::test]
async fn body_length_mismatch_is_size_invalid_and_chunk_discarded() {
    let env = Env::start();
    let data = random_bytes(40);
    let digest = sha256_digest(&data);
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, &data[..20]).await;
    let location = assert_patch_ok(&resp, REPO, 20);

    // Claims 20 bytes (20-39), sends 10.
    let resp = env
        .reg
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .header("content-range", "20-39")
        .body(data[20..30].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "SIZE_INVALID").await;
    assert_eq!(upload_range(&env.reg, &location).await, "0-19");

    // Claims 5 bytes (20-24), sends 20.
    let resp = env
        .reg
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .header("content-range", "20-24")
        .body(data[20..].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "SIZE_INVALID").await;
    assert_eq!(upload_range(&env.reg, &location).await, "0-19");

    let resp = patch_range(&env.reg, &location, 20, &data[20..]).await;
    let location = assert_patch_ok(&resp, REPO, 40);
    finish(&env.reg, REPO, &location, &digest, b"").await;
    assert_blob(&env.reg, REPO, &digest, &data).await;
}

#[tokio::test]
async fn digest_mismatch_on_put_stores_nothing_and_drops_session() {
    let env = Env::start();
    let data = random_bytes(1000);
    let wrong = sha256_digest(b"something else entirely");
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, &data).await;
    let location = assert_patch_ok(&resp, REPO, 1000);
    let resp = env
        .reg
        .put(&with_query(&location, &format!("digest={wrong}")))
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_blob(&env.reg, REPO, &wrong).await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
    let resp = env.reg.get(&location).send().await.unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn digest_mismatch_on_monolithic_post_stores_nothing() {
    let env = Env::start();
    let data = random_bytes(1000);
    let wrong = sha256_digest(b"not the data");
    let resp = env
        .reg
        .post(&format!("/v2/{REPO}/blobs/uploads/?digest={wrong}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_blob(&env.reg, REPO, &wrong).await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
}

#[tokio::test]
async fn put_without_digest_is_digest_invalid() {
    let env = Env::start();
    let data = random_bytes(100);
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, &data).await;
    let location = assert_patch_ok(&resp, REPO, 100);
    let resp = env.reg.put(&location).send().await.unwrap();
    expect_error(resp, 400, "DIGEST_INVALID").await;
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
}

#[tokio::test]
async fn unknown_upload_uuid_all_methods() {
    let env = Env::start();
    // Make sure the repository exists, so only the uuid is unknown.
    push_blob(&env.reg, REPO, b"exists").await;
    let location = format!("/v2/{REPO}/blobs/uploads/6c2bd0b4-44c5-4f4e-9d0e-93a43a2e3f1d");
    let digest = sha256_digest(b"x");

    let resp = env.reg.get(&location).send().await.unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = env
        .reg
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = patch_range(&env.reg, &location, 0, b"x").await;
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = env
        .reg
        .put(&format!("{location}?digest={digest}"))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = env.reg.delete(&location).send().await.unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_no_blob(&env.reg, REPO, &digest).await;
}

#[tokio::test]
async fn upload_session_of_one_repo_is_unknown_in_another() {
    let env = Env::start();
    let location = start_upload(&env.reg, REPO).await;
    let uuid = location.rsplit('/').next().unwrap().to_string();
    let other = format!("/v2/other/blobs/uploads/{uuid}");
    let resp = env.reg.get(&other).send().await.unwrap();
    expect_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // The original session is unaffected.
    assert_eq!(upload_range(&env.reg, &location).await, "0-0");
}

#[tokio::test]
async fn cross_repo_mount_with_from() {
    let env = Env::start();
    let data = random_bytes(4096);
    let digest = push_blob(&env.reg, "src/repo", &data).await;
    let resp = env
        .reg
        .post(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo"
        ))
        .send()
        .await
        .unwrap();
    let location = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    expect_status(resp, 201).await;
    assert_eq!(
        location.as_deref(),
        Some(format!("/v2/dst/repo/blobs/{digest}").as_str())
    );
    assert_eq!(dcd.as_deref(), Some(digest.as_str()));
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
    let resp = env
        .reg
        .post(&format!(
            "/v2/dst/blobs/uploads/?mount={digest}&from=unrelated"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let location = must_header(&resp, "location");
    let uuid = must_header(&resp, "docker-upload-uuid");
    assert_eq!(location, format!("/v2/dst/blobs/uploads/{uuid}"));
    assert_no_blob(&env.reg, "dst", &digest).await;

    // The session is usable.
    finish(&env.reg, "dst", &location, &digest, &data).await;
    assert_blob(&env.reg, "dst", &digest, &data).await;
}

#[tokio::test]
async fn mount_without_from() {
    let env = Env::start();
    let data = random_bytes(1024);
    let digest = push_blob(&env.reg, "somewhere/else", &data).await;
    let resp = env
        .reg
        .post(&format!("/v2/target/blobs/uploads/?mount={digest}"))
        .send()
        .await
        .unwrap();
    let location = header(&resp, "location");
    expect_status(resp, 201).await;
    assert_eq!(
        location.as_deref(),
        Some(format!("/v2/target/blobs/{digest}").as_str())
    );
    assert_blob(&env.reg, "target", &digest, &data).await;

    // A digest that exists nowhere: a new session instead.
    let missing = random_digest();
    let resp = env
        .reg
        .post(&format!("/v2/target/blobs/uploads/?mount={missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let location = must_header(&resp, "location");
    assert!(
        location.starts_with("/v2/target/blobs/uploads/"),
        "{location}"
    );
    assert_no_blob(&env.reg, "target", &missing).await;
}

#[tokio::test]
async fn mount_does_not_cross_instances() {
    let env = Env::start_with(vec![
        common::Instance::new("ci"),
        common::Instance::new("cache"),
    ]);
    let cache = env.reg("cache");
    let data = random_bytes(512);
    let digest = push_blob(&env.reg, "shared/name", &data).await;
    let resp = cache
        .post(&format!(
            "/v2/shared/name/blobs/uploads/?mount={digest}&from=shared/name"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let resp = cache
        .post(&format!("/v2/mine/blobs/uploads/?mount={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_no_blob(&cache, "shared/name", &digest).await;
    assert_no_blob(&cache, "mine", &digest).await;
}

#[tokio::test]
async fn sha512_monolithic_and_session() {
    let env = Env::start();
    let data = random_bytes(3333);
    let digest = sha512_digest(&data);
    let resp = env
        .reg
        .post(&format!("/v2/{REPO}/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let dcd = header(&resp, "docker-content-digest");
    expect_status(resp, 201).await;
    assert_eq!(dcd.as_deref(), Some(digest.as_str()));
    assert_blob(&env.reg, REPO, &digest, &data).await;

    let data2 = random_bytes(5000);
    let digest2 = sha512_digest(&data2);
    let location = start_upload(&env.reg, REPO).await;
    let resp = patch_range(&env.reg, &location, 0, &data2[..2500]).await;
    let location = assert_patch_ok(&resp, REPO, 2500);
    let resp = patch_range(&env.reg, &location, 2500, &data2[2500..]).await;
    let location = assert_patch_ok(&resp, REPO, 5000);
    finish(&env.reg, REPO, &location, &digest2, b"").await;
    assert_blob(&env.reg, REPO, &digest2, &data2).await;

    // A sha512 mismatch is rejected like a sha256 one.
    let wrong = sha512_digest(b"nope");
    let resp = env
        .reg
        .post(&format!("/v2/{REPO}/blobs/uploads/?digest={wrong}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
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
        let resp = env
            .reg
            .post(&format!("/v2/{REPO}/blobs/uploads/?digest={digest}"))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "UNSUPPORTED").await;

        let location = start_upload(&env.reg, REPO).await;
        let resp = env
            .reg
            .put(&with_query(&location, &format!("digest={digest}")))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "UNSUPPORTED").await;

        let resp = env
            .reg
            .get(&format!("/v2/{REPO}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "UNSUPPORTED").await;
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
        let resp = env
            .reg
            .post(&format!("/v2/{REPO}/blobs/uploads/?digest={digest}"))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            status.as_u16(),
            400,
            "POST digest {digest:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            error_codes(&body).iter().any(|c| c == "DIGEST_INVALID"),
            "POST digest {digest:?}: {}",
            String::from_utf8_lossy(&body)
        );

        let resp = env
            .reg
            .get(&format!("/v2/{REPO}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            status.as_u16(),
            400,
            "GET blob {digest:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            error_codes(&body).iter().any(|c| c == "DIGEST_INVALID"),
            "GET blob {digest:?}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Nothing was stored under the real digest either.
    assert_no_blob(&env.reg, REPO, &sha256_digest(&data)).await;
}
