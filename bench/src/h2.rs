//! An HTTP/2 client over TLS (hyper's, ALPN `h2`), for the rows where both
//! servers offer HTTP/2: many requests as streams of few connections, and
//! a blob pulled as one stream. Bodies of GETs are counted (and kept when
//! asked), as by the HTTP/1.1 client of [`crate::http`].

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::http::Endpoint;
use crate::workloads::{Rate, Request};

/// Flow-control windows: large enough that one stream can carry a blob at
/// full speed (hyper's default window is 64 KiB).
const STREAM_WINDOW: u32 = 8 << 20;
const CONN_WINDOW: u32 = 32 << 20;

/// One HTTP/2 connection; cloned, it sends more streams on it.
#[derive(Clone)]
pub struct H2 {
    send: SendRequest<Empty<Bytes>>,
    authority: String,
    auth: String,
}

impl H2 {
    pub async fn connect(to: &Endpoint, auth: &str) -> Result<H2> {
        let to = to
            .h2()
            .ok_or_else(|| anyhow!("HTTP/2 is measured over TLS only"))?;
        let (stream, alpn) = to.connect().await?;
        ensure!(
            alpn.as_deref() == Some(b"h2"),
            "{to} did not choose HTTP/2 by ALPN"
        );
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/2 handshake with {to}"))?;
        tokio::spawn(conn);
        Ok(H2 {
            send,
            authority: to.host(),
            auth: auth.to_string(),
        })
    }

    /// `GET path` with `Accept: accept`: the status, the body's length and
    /// (when `keep`) the body.
    pub async fn get(
        &mut self,
        path: &str,
        accept: &str,
        keep: bool,
    ) -> Result<(u16, u64, Vec<u8>)> {
        let req = hyper::Request::get(format!("https://{}{path}", self.authority))
            .header("authorization", &self.auth)
            .header("accept", accept)
            .header("user-agent", "berth-bench")
            .body(Empty::new())?;
        self.send.ready().await?;
        let resp = self
            .send
            .send_request(req)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let (mut len, mut kept) = (0u64, Vec::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len() as u64;
                if keep {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Ok((status, len, kept))
    }
}

/// `GET` of a blob as one stream of a new connection; the time taken.
pub async fn pull(
    to: &Endpoint,
    auth: &str,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<Duration> {
    let mut c = H2::connect(to, auth).await?;
    let t = Instant::now();
    let (status, len, _) = c
        .get(&format!("/v2/{repo}/blobs/{digest}"), "*/*", false)
        .await?;
    ensure!(status == 200, "GET blob over HTTP/2: {status}");
    ensure!(len == size, "GET blob over HTTP/2: {len} bytes, not {size}");
    Ok(t.elapsed())
}

/// `streams` streams on each of `conns` connections repeat the GET of
/// `req` for `duration` (after one request each to warm up).
pub async fn rate(
    to: &Endpoint,
    auth: &str,
    req: &Request,
    conns: usize,
    streams: usize,
    duration: Duration,
) -> Result<Rate> {
    let Request::Get { path, accept } = req else {
        bail!("HTTP/2 rate workloads are single GETs");
    };
    let accept: &'static str = accept;
    let mut warm = Vec::new();
    for _ in 0..conns {
        let mut c = H2::connect(to, auth).await?;
        let (status, ..) = c.get(path, accept, false).await?;
        ensure!(status == 200, "GET {path} over HTTP/2: {status}");
        warm.push(c);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in &warm {
        for _ in 0..streams {
            let (mut c, path) = (c.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                while t0.elapsed() < duration {
                    let t = Instant::now();
                    let (status, ..) = c.get(&path, accept, false).await?;
                    ensure!(status == 200, "GET {path} over HTTP/2: {status}");
                    lat.push(t.elapsed().as_micros() as u32);
                }
                anyhow::Ok(lat)
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(Rate::of(all, t0.elapsed()))
}
