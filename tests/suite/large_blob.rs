//! A 1 GiB blob through berth without holding it in memory on either side:
//! pushed as a streamed PATCH + PUT and as a monolithic POST, pulled back as
//! a stream and in ranges, while the server's peak resident set stays small.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::{header, StatusCode};
use sha2::{Digest, Sha256};

use crate::common::{ConfigDir, Instance, Server};
use crate::common_api::streamed::*;
use crate::common_api::{expect_blob_created, must_header, Reg};

/// The server's peak resident set (VmHWM) must stay under this. It holds
/// the code pages the requests touch as well (about 19.5 MiB at start, in
/// the debug build the tests run): the uploads themselves add 42–48 MiB.
const RSS_LIMIT_KIB: u64 = 72 * 1024;

async fn check_ranges(reg: &Reg, path: &str, content: &Content) {
    // Across a chunk boundary, the first bytes, an open end, a suffix.
    let cases = [
        (
            format!("bytes={}-{}", 3 * CHUNK - 100, 3 * CHUNK + 99),
            3 * CHUNK - 100,
            3 * CHUNK + 99,
        ),
        ("bytes=0-15".to_string(), 0, 15),
        (format!("bytes={}-", SIZE - 1000), SIZE - 1000, SIZE - 1),
        ("bytes=-4096".to_string(), SIZE - 4096, SIZE - 1),
        (
            format!("bytes={}-{}", SIZE / 2, SIZE / 2 + 2 * CHUNK),
            SIZE / 2,
            SIZE / 2 + 2 * CHUNK,
        ),
    ];
    for (range, start, end) in cases {
        let req = reg.get(path).header(header::RANGE, &range);
        let what = format!("GET {path} {range}");
        let resp = send_expect(req, StatusCode::PARTIAL_CONTENT, &what).await;
        assert_eq!(
            must_header(&resp, "content-range"),
            format!("bytes {start}-{end}/{SIZE}"),
            "{range}"
        );
        assert_eq!(
            must_header(&resp, "content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        let body = resp.bytes().await.unwrap();
        assert!(
            body[..] == content.range(start, end)[..],
            "bytes served for {range}"
        );
    }
    let resp = reg
        .get(path)
        .header(header::RANGE, format!("bytes={SIZE}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "a range past the end"
    );
}

/// Monolithic upload: one POST ?digest= with the whole blob as its body.
async fn push_monolithic(reg: &Reg, repo: &str, content: &Arc<Content>, digest: &str) {
    let start = Instant::now();
    let unused = Arc::new(Mutex::new(Sha256::new()));
    let req = reg
        .post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, SIZE.to_string())
        .body(content.body(0..CHUNKS, unused));
    expect_blob_created(req.send().await.unwrap(), repo, digest).await;
    eprintln!("monolithic POST of 1 GiB in {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_blob_streams_in_and_out_in_bounded_memory() {
    let cfg = ConfigDir::new(&[Instance::new("ci"), Instance::new("cache")]);
    let server = Server::start(&cfg);
    let _log = crate::clients::log_on_panic("berth stderr", &server.stderr_log);
    let content = Content::new();
    let ci = unhurried(&server, "ci");
    let cache = unhurried(&server, "cache");
    assert_rss(&server, "at start", RSS_LIMIT_KIB);

    let digest = push_streamed(&ci, "big/chunked", &content).await;
    assert_rss(&server, "after the streamed upload", RSS_LIMIT_KIB);
    // The same bytes to the other instance, whose storage has nothing to
    // deduplicate them against.
    push_monolithic(&cache, "big/monolithic", &content, &digest).await;
    assert_rss(&server, "after the monolithic upload", RSS_LIMIT_KIB);

    // HEAD, then both pulled back at once, streamed and hashed.
    let blobs = [
        ("ci", format!("/v2/big/chunked/blobs/{digest}")),
        ("cache", format!("/v2/big/monolithic/blobs/{digest}")),
    ];
    for (instance, path) in &blobs {
        let req = unhurried(&server, instance).head(path);
        let resp = send_expect(req, StatusCode::OK, &format!("HEAD {path}")).await;
        assert_whole_blob(&resp, &digest);
    }
    let pulls = blobs.clone().map(|(instance, path)| {
        tokio::spawn(pull_and_verify(
            unhurried(&server, instance),
            path,
            digest.clone(),
        ))
    });
    for pull in pulls {
        pull.await.unwrap();
    }
    assert_rss(&server, "after the pulls", RSS_LIMIT_KIB);

    for (instance, path) in &blobs {
        check_ranges(&unhurried(&server, instance), path, &content).await;
    }
    assert_rss(&server, "at the end", RSS_LIMIT_KIB);
}
