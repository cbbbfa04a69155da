//! A 1 GiB blob through berth without holding it in memory on either side:
//! pushed as a streamed PATCH + PUT and as a monolithic POST, pulled back as
//! a stream and in ranges, while the server's peak resident set stays small.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use rand::RngCore;
use reqwest::{header, Client, StatusCode};
use sha2::{Digest, Sha256};

use crate::common::{ConfigDir, Instance, Server};

const SIZE: u64 = 1 << 30;
const CHUNK: u64 = 1 << 20;
const CHUNKS: u64 = SIZE / CHUNK;
/// The server's peak resident set (VmHWM) must stay under this.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Deterministic blob content made on the fly, one MiB chunk at a time: a
/// random base chunk with the chunk's index and a per-run stamp written over
/// its first bytes, so every chunk differs and any range can be recomputed.
struct Content {
    base: Vec<u8>,
    stamp: u64,
}

impl Content {
    fn new() -> Arc<Content> {
        let mut base = vec![0u8; CHUNK as usize];
        rand::rng().fill_bytes(&mut base);
        Arc::new(Content {
            base,
            stamp: rand::random(),
        })
    }

    fn chunk(&self, index: u64) -> Bytes {
        let mut chunk = self.base.clone();
        chunk[..8].copy_from_slice(&self.stamp.to_be_bytes());
        chunk[8..16].copy_from_slice(&index.to_be_bytes());
        Bytes::from(chunk)
    }

    /// Bytes `start..=end` of the blob.
    fn range(&self, start: u64, end: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity((end - start + 1) as usize);
        for index in start / CHUNK..=end / CHUNK {
            let chunk = self.chunk(index);
            let from = start.saturating_sub(index * CHUNK).min(CHUNK) as usize;
            let to = (end + 1 - index * CHUNK).min(CHUNK) as usize;
            out.extend_from_slice(&chunk[from..to]);
        }
        out
    }

    /// A request body streaming the given chunks, generated as they are
    /// sent and fed to `hasher` on the way.
    fn body(self: &Arc<Self>, chunks: Range<u64>, hasher: Arc<Mutex<Sha256>>) -> reqwest::Body {
        let content = Arc::clone(self);
        let chunks = stream::iter(chunks).map(move |index| {
            let chunk = content.chunk(index);
            hasher.lock().unwrap().update(&chunk);
            Ok::<Bytes, std::io::Error>(chunk)
        });
        reqwest::Body::wrap_stream(chunks)
    }
}

struct Registry {
    client: Client,
    base: String,
    user: String,
    password: String,
}

impl Registry {
    fn new(server: &Server, instance: &str) -> Registry {
        Registry {
            client: Client::new(),
            base: server.url(instance),
            user: format!("{instance}-user"),
            password: format!("{instance}-secret"),
        }
    }

    /// An absolute URL for a path or a Location header value.
    fn url(&self, location: &str) -> String {
        if location.starts_with("http://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn request(&self, method: reqwest::Method, location: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(location))
            .basic_auth(&self.user, Some(&self.password))
    }
}

fn header_str<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {resp:?}"))
        .to_str()
        .unwrap()
}

/// Sends a request and asserts its status; returns the response.
async fn send_expect(
    req: reqwest::RequestBuilder,
    status: StatusCode,
    what: &str,
) -> reqwest::Response {
    let resp = req.send().await.unwrap();
    if resp.status() != status {
        let got = resp.status();
        let body = resp.text().await.unwrap_or_default();
        panic!("{what}: expected {status}, got {got}: {body}");
    }
    resp
}

/// Asserts the headers of the whole blob: its size and digest.
fn assert_whole_blob(resp: &reqwest::Response, digest: &str) {
    assert_eq!(header_str(resp, "content-length"), SIZE.to_string());
    assert_eq!(header_str(resp, "docker-content-digest"), digest);
}

/// Asserts the headers of a completed upload: the digest and the blob's Location.
fn assert_blob_created(resp: &reqwest::Response, repo: &str, digest: &str) {
    assert_eq!(header_str(resp, "docker-content-digest"), digest);
    assert_eq!(
        header_str(resp, "location"),
        format!("/v2/{repo}/blobs/{digest}")
    );
}

fn assert_rss(server: &Server, when: &str) {
    let peak = server.peak_rss_kib();
    eprintln!("server peak RSS {when}: {} KiB", peak);
    assert!(
        peak < RSS_LIMIT_KIB,
        "server peak RSS {when} is {peak} KiB, limit {RSS_LIMIT_KIB} KiB"
    );
}

/// Streams a blob from the registry, hashing it; checks size and digest.
async fn pull_and_verify(reg: Registry, path: String, digest: String) {
    let start = Instant::now();
    let req = reg.request(reqwest::Method::GET, &path);
    let resp = send_expect(req, StatusCode::OK, &format!("GET {path}")).await;
    assert_whole_blob(&resp, &digest);
    let mut body = resp.bytes_stream();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap_or_else(|e| panic!("GET {path} after {len} bytes: {e}"));
        len += piece.len() as u64;
        hasher.update(&piece);
    }
    assert_eq!(len, SIZE, "bytes received from {path}");
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    assert_eq!(got, digest, "digest of what {path} served");
    eprintln!("pulled {path} in {:?}", start.elapsed());
}

async fn check_ranges(reg: &Registry, path: &str, content: &Content) {
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
        let req = reg
            .request(reqwest::Method::GET, path)
            .header(header::RANGE, &range);
        let what = format!("GET {path} {range}");
        let resp = send_expect(req, StatusCode::PARTIAL_CONTENT, &what).await;
        assert_eq!(
            header_str(&resp, "content-range"),
            format!("bytes {start}-{end}/{SIZE}"),
            "{range}"
        );
        assert_eq!(
            header_str(&resp, "content-length"),
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
        .request(reqwest::Method::GET, path)
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

/// Streamed upload: half as a PATCH without Content-Range (chunked transfer
/// encoding), half as a PATCH with Content-Range, then PUT ?digest= with the
/// digest computed while sending. Returns the digest.
async fn push_streamed(reg: &Registry, repo: &str, content: &Arc<Content>) -> String {
    let start = Instant::now();
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let req = reg.request(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"));
    let resp = send_expect(req, StatusCode::ACCEPTED, "POST upload").await;
    let location = header_str(&resp, "location").to_string();
    let half = CHUNKS / 2;
    let req = reg
        .request(reqwest::Method::PATCH, &location)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(content.body(0..half, hasher.clone()));
    let resp = send_expect(req, StatusCode::ACCEPTED, "streamed PATCH").await;
    assert_eq!(
        header_str(&resp, "range"),
        format!("0-{}", half * CHUNK - 1)
    );
    let location = header_str(&resp, "location").to_string();
    let req = reg
        .request(reqwest::Method::PATCH, &location)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(
            header::CONTENT_RANGE,
            format!("{}-{}", half * CHUNK, SIZE - 1),
        )
        .header(header::CONTENT_LENGTH, (SIZE - half * CHUNK).to_string())
        .body(content.body(half..CHUNKS, hasher.clone()));
    let resp = send_expect(req, StatusCode::ACCEPTED, "PATCH with Content-Range").await;
    assert_eq!(header_str(&resp, "range"), format!("0-{}", SIZE - 1));
    let location = header_str(&resp, "location").to_string();
    let req = reg.request(reqwest::Method::GET, &location);
    let resp = send_expect(req, StatusCode::NO_CONTENT, "GET upload status").await;
    assert_eq!(header_str(&resp, "range"), format!("0-{}", SIZE - 1));
    let hasher = std::mem::take(&mut *hasher.lock().unwrap());
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let sep = if location.contains('?') { '&' } else { '?' };
    let req = reg.request(
        reqwest::Method::PUT,
        &format!("{location}{sep}digest={digest}"),
    );
    let resp = send_expect(req, StatusCode::CREATED, "PUT to finish the upload").await;
    assert_blob_created(&resp, repo, &digest);
    eprintln!("streamed PATCH + PUT of 1 GiB in {:?}", start.elapsed());
    digest
}

/// Monolithic upload: one POST ?digest= with the whole blob as its body.
async fn push_monolithic(reg: &Registry, repo: &str, content: &Arc<Content>, digest: &str) {
    let start = Instant::now();
    let unused = Arc::new(Mutex::new(Sha256::new()));
    let req = reg
        .request(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        )
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, SIZE.to_string())
        .body(content.body(0..CHUNKS, unused));
    let resp = send_expect(req, StatusCode::CREATED, "monolithic POST").await;
    assert_blob_created(&resp, repo, digest);
    eprintln!("monolithic POST of 1 GiB in {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_blob_streams_in_and_out_in_bounded_memory() {
    let cfg = ConfigDir::new(&[Instance::new("ci"), Instance::new("cache")]);
    let server = Server::start(&cfg);
    let _log = crate::clients::log_on_panic("berth stderr", &server.stderr_log);
    let content = Content::new();
    let ci = Registry::new(&server, "ci");
    let cache = Registry::new(&server, "cache");
    assert_rss(&server, "at start");

    let digest = push_streamed(&ci, "big/chunked", &content).await;
    assert_rss(&server, "after the streamed upload");
    // The same bytes to the other instance, whose storage has nothing to
    // deduplicate them against.
    push_monolithic(&cache, "big/monolithic", &content, &digest).await;
    assert_rss(&server, "after the monolithic upload");

    // HEAD, then both pulled back at once, streamed and hashed.
    let blobs = [
        ("ci", format!("/v2/big/chunked/blobs/{digest}")),
        ("cache", format!("/v2/big/monolithic/blobs/{digest}")),
    ];
    for (instance, path) in &blobs {
        let req = Registry::new(&server, instance).request(reqwest::Method::HEAD, path);
        let resp = send_expect(req, StatusCode::OK, &format!("HEAD {path}")).await;
        assert_whole_blob(&resp, &digest);
    }
    let pulls = blobs.clone().map(|(instance, path)| {
        tokio::spawn(pull_and_verify(
            Registry::new(&server, instance),
            path,
            digest.clone(),
        ))
    });
    for pull in pulls {
        pull.await.unwrap();
    }
    assert_rss(&server, "after the pulls");

    for (instance, path) in &blobs {
        check_ranges(&Registry::new(&server, instance), path, &content).await;
    }
    assert_rss(&server, "at the end");
}
