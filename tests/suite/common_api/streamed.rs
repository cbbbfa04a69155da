//! A 1 GiB blob that neither side holds in memory: its content made on the
//! fly one MiB chunk at a time, pushed as streamed requests and pulled back
//! as a stream, hashed on the way; and the server's peak resident set
//! checked against a limit.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use rand::RngCore;
use reqwest::{header, Client, StatusCode};
use sha2::{Digest, Sha256};

use super::{expect_blob_created, must_header, with_query, Reg};
use crate::common::Server;

pub const SIZE: u64 = 1 << 30;
pub const CHUNK: u64 = 1 << 20;
pub const CHUNKS: u64 = SIZE / CHUNK;

/// Deterministic blob content made on the fly, one MiB chunk at a time: a
/// random base chunk with the chunk's index and a per-run stamp written over
/// its first bytes, so every chunk differs and any range can be recomputed.
pub struct Content {
    base: Vec<u8>,
    stamp: u64,
}

impl Content {
    pub fn new() -> Arc<Content> {
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
    pub fn range(&self, start: u64, end: u64) -> Vec<u8> {
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
    pub fn body(self: &Arc<Self>, chunks: Range<u64>, hasher: Arc<Mutex<Sha256>>) -> reqwest::Body {
        let content = Arc::clone(self);
        let chunks = stream::iter(chunks).map(move |index| {
            let chunk = content.chunk(index);
            hasher.lock().unwrap().update(&chunk);
            Ok::<Bytes, std::io::Error>(chunk)
        });
        reqwest::Body::wrap_stream(chunks)
    }
}

/// A client of an instance (as [`Reg::for_instance`]) with no overall
/// timeout: moving 1 GiB may take longer than `Reg`'s 60 s.
pub fn unhurried(server: &Server, instance: &str) -> Reg {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client");
    Reg {
        client,
        ..Reg::for_instance(server, instance)
    }
}

/// Sends a request and asserts its status; returns the response.
pub async fn send_expect(
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
pub fn assert_whole_blob(resp: &reqwest::Response, digest: &str) {
    assert_eq!(must_header(resp, "content-length"), SIZE.to_string());
    assert_eq!(must_header(resp, "docker-content-digest"), digest);
}

/// Asserts that the server's peak resident set (VmHWM) is under
/// `limit_kib`, and prints it.
pub fn assert_rss(server: &Server, when: &str, limit_kib: u64) {
    let peak = server.peak_rss_kib();
    eprintln!("server peak RSS {when}: {peak} KiB");
    assert!(
        peak < limit_kib,
        "server peak RSS {when} is {peak} KiB, limit {limit_kib} KiB"
    );
}

/// Streams a blob from the registry, hashing it; checks size and digest.
pub async fn pull_and_verify(reg: Reg, path: String, digest: String) {
    let start = Instant::now();
    let resp = send_expect(reg.get(&path), StatusCode::OK, &format!("GET {path}")).await;
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

/// Streamed upload: half as a PATCH without Content-Range (chunked transfer
/// encoding), half as a PATCH with Content-Range, then PUT ?digest= with the
/// digest computed while sending. Returns the digest.
pub async fn push_streamed(reg: &Reg, repo: &str, content: &Arc<Content>) -> String {
    let start = Instant::now();
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let req = reg.post(&format!("/v2/{repo}/blobs/uploads/"));
    let resp = send_expect(req, StatusCode::ACCEPTED, "POST upload").await;
    let location = must_header(&resp, "location");
    let half = CHUNKS / 2;
    let req = reg
        .patch(&location)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(content.body(0..half, hasher.clone()));
    let resp = send_expect(req, StatusCode::ACCEPTED, "streamed PATCH").await;
    assert_eq!(
        must_header(&resp, "range"),
        format!("0-{}", half * CHUNK - 1)
    );
    let location = must_header(&resp, "location");
    let req = reg
        .patch(&location)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(
            header::CONTENT_RANGE,
            format!("{}-{}", half * CHUNK, SIZE - 1),
        )
        .header(header::CONTENT_LENGTH, (SIZE - half * CHUNK).to_string())
        .body(content.body(half..CHUNKS, hasher.clone()));
    let resp = send_expect(req, StatusCode::ACCEPTED, "PATCH with Content-Range").await;
    assert_eq!(must_header(&resp, "range"), format!("0-{}", SIZE - 1));
    let location = must_header(&resp, "location");
    let resp = send_expect(
        reg.get(&location),
        StatusCode::NO_CONTENT,
        "GET upload status",
    )
    .await;
    assert_eq!(must_header(&resp, "range"), format!("0-{}", SIZE - 1));
    let hasher = std::mem::take(&mut *hasher.lock().unwrap());
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let req = reg.put(&with_query(&location, &format!("digest={digest}")));
    expect_blob_created(req.send().await.unwrap(), repo, &digest).await;
    eprintln!("streamed PATCH + PUT of 1 GiB in {:?}", start.elapsed());
    digest
}
