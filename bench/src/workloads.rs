//! The workloads, each run against one server at a time.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::http::{with_query, Blob, Body, Conn, Endpoint, Response};
use crate::layout::MANIFEST_MEDIA_TYPE;

fn expect(r: &Response, status: u16, what: &str) -> Result<()> {
    if r.status != status {
        bail!(
            "{what}: expected {status}, got {} {}",
            r.status,
            r.body_text().chars().take(300).collect::<String>()
        );
    }
    Ok(())
}

/// How a blob is uploaded.
#[derive(Clone, Copy)]
pub enum Upload {
    /// Monolithic: `POST` then `PUT ?digest=` with the whole blob.
    Mono,
    /// Docker's way: `POST`, one streamed `PATCH` (chunked transfer
    /// encoding), then an empty `PUT ?digest=`.
    Streamed,
}

/// One blob upload.
pub async fn push(
    how: Upload,
    to: &Endpoint,
    auth: &str,
    repo: &str,
    blob: &Blob,
    digest: &str,
) -> Result<Duration> {
    let mut c = Conn::new(to, auth);
    let t = Instant::now();
    let r = c
        .send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Body::Empty,
            true,
        )
        .await?;
    expect(&r, 202, "POST upload")?;
    let (location, body, what) = match how {
        Upload::Mono => (r.location()?, Body::Blob(blob), "PUT blob"),
        Upload::Streamed => {
            let r = c
                .send("PATCH", &r.location()?, &[], Body::BlobChunked(blob), true)
                .await?;
            expect(&r, 202, "PATCH upload")?;
            (r.location()?, Body::Empty, "PUT upload")
        }
    };
    let put = with_query(&location, &format!("digest={digest}"));
    let r = c.send("PUT", &put, &[], body, true).await?;
    expect(&r, 201, what)?;
    Ok(t.elapsed())
}

/// Runs `jobs` at once; the wall time of all of them.
async fn all_at_once<F>(jobs: impl IntoIterator<Item = F>) -> Result<Duration>
where
    F: std::future::Future<Output = Result<Duration>> + Send + 'static,
{
    let t = Instant::now();
    let tasks: Vec<_> = jobs.into_iter().map(tokio::spawn).collect();
    for task in tasks {
        task.await??;
    }
    Ok(t.elapsed())
}

/// `n` streamed pushes at once; the wall time of all of them.
pub async fn push_concurrent(
    to: &Endpoint,
    auth: &str,
    repo: &str,
    blobs: &[(Blob, String)],
) -> Result<Duration> {
    all_at_once(blobs.iter().map(|(blob, digest)| {
        let (to, auth, repo, blob, digest) = (
            to.clone(),
            auth.to_string(),
            repo.to_string(),
            blob.clone(),
            digest.clone(),
        );
        async move { push(Upload::Streamed, &to, &auth, &repo, &blob, &digest).await }
    }))
    .await
}

/// `GET` of a blob, body read and dropped.
pub async fn pull(
    to: &Endpoint,
    auth: &str,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<Duration> {
    let mut c = Conn::new(to, auth);
    let t = Instant::now();
    let r = c
        .send(
            "GET",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            Body::Empty,
            false,
        )
        .await?;
    expect(&r, 200, "GET blob")?;
    ensure!(
        r.body_len == size,
        "GET blob: {} bytes, not {size}",
        r.body_len
    );
    Ok(t.elapsed())
}

/// `n` pulls at once; the wall time of all of them.
pub async fn pull_concurrent(
    to: &Endpoint,
    auth: &str,
    repo: &str,
    digest: &str,
    size: u64,
    n: usize,
) -> Result<Duration> {
    all_at_once((0..n).map(|_| {
        let (to, auth, repo, digest) = (
            to.clone(),
            auth.to_string(),
            repo.to_string(),
            digest.to_string(),
        );
        async move { pull(&to, &auth, &repo, &digest, size).await }
    }))
    .await
}

pub struct Rate {
    pub requests: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Rate {
    /// The rate of requests that took `lat` microseconds each, in `wall`.
    pub fn of(mut lat: Vec<u32>, wall: Duration) -> Rate {
        lat.sort_unstable();
        Rate {
            requests: lat.len() as u64,
            per_sec: lat.len() as f64 / wall.as_secs_f64(),
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
        }
    }
}

/// The `p` quantile of latencies in microseconds, sorted, in milliseconds.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// What one request of a rate workload is.
#[derive(Clone)]
pub enum Request {
    /// GET of a path with an Accept header, expecting 200.
    Get { path: String, accept: &'static str },
    /// A full walk of `_catalog` in pages of `n` (each page is one request).
    CatalogWalk { n: usize },
}

impl Request {
    pub fn manifest(repo: &str, tag: &str) -> Request {
        Request::Get {
            path: format!("/v2/{repo}/manifests/{tag}"),
            accept: MANIFEST_ACCEPT,
        }
    }

    pub fn tags(repo: &str) -> Request {
        Request::Get {
            path: format!("/v2/{repo}/tags/list"),
            accept: "application/json",
        }
    }

    /// A page of berth's web UI (`path` with its query).
    pub fn page(path: &str) -> Request {
        Request::Get {
            path: path.to_string(),
            accept: "text/html",
        }
    }

    /// The path asked (a catalog walk: of its first page).
    pub fn path(&self) -> &str {
        match self {
            Request::Get { path, .. } => path,
            Request::CatalogWalk { .. } => "/v2/_catalog",
        }
    }

    /// Makes one request; a catalog walk continues from `cursor` (the next
    /// page) and leaves the page after it there. Returns the body.
    async fn step(
        &self,
        c: &mut Conn,
        lat: &mut Vec<u32>,
        cursor: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let (path, accept) = match self {
            Request::Get { path, accept } => (path.clone(), *accept),
            Request::CatalogWalk { n } => (
                cursor
                    .take()
                    .unwrap_or_else(|| format!("/v2/_catalog?n={n}")),
                "application/json",
            ),
        };
        let t = Instant::now();
        let r = c
            .send("GET", &path, &[("Accept", accept)], Body::Empty, true)
            .await?;
        lat.push(t.elapsed().as_micros() as u32);
        expect(&r, 200, &path)?;
        if let Request::CatalogWalk { .. } = self {
            *cursor = r.header("link").and_then(next_link);
        }
        Ok(r.body)
    }

    /// Runs the request once (a catalog walk: every page); returns the
    /// body (a catalog walk: a JSON list of every repository).
    async fn run(&self, c: &mut Conn) -> Result<Vec<u8>> {
        let mut cursor = None;
        let mut body = self.step(c, &mut Vec::new(), &mut cursor).await?;
        if !matches!(self, Request::CatalogWalk { .. }) {
            return Ok(body);
        }
        let mut names = Vec::new();
        // Bounded: at most 10 000 pages.
        for _ in 0..10_000 {
            let v: serde_json::Value = serde_json::from_slice(&body).context("catalog JSON")?;
            if let Some(list) = v["repositories"].as_array() {
                names.extend(list.iter().filter_map(|x| x.as_str().map(str::to_string)));
            }
            if cursor.is_none() {
                break;
            }
            body = self.step(c, &mut Vec::new(), &mut cursor).await?;
        }
        Ok(serde_json::to_vec(&names)?)
    }
}

/// The target of `Link: <URL>; rel="next"`, as a path.
fn next_link(link: &str) -> Option<String> {
    let start = link.find('<')? + 1;
    let end = link[start..].find('>')? + start;
    Some(crate::http::strip_origin(&link[start..end]))
}

/// Runs the request once (warm-up) and returns its body, for checks.
pub async fn probe(to: &Endpoint, auth: &str, req: &Request) -> Result<Vec<u8>> {
    let mut c = Conn::new(to, auth);
    req.run(&mut c).await
}

/// When the connections of [`rate`] stop.
#[derive(Clone, Copy)]
pub enum Until {
    /// After this long.
    Elapsed(Duration),
    /// After `each` requests on each connection, which first idle for
    /// `idle` after their warm-up (so that what a server keeps for a
    /// while has gone stale when the clock starts).
    Requests { each: u64, idle: Duration },
}

/// `conns` keep-alive connections, each warmed up with one request, repeat
/// `req` until `until`.
pub async fn rate(
    to: &Endpoint,
    auth: &str,
    req: &Request,
    conns: usize,
    until: Until,
) -> Result<Rate> {
    // Open and warm up every connection first (one request each).
    let mut warm = Vec::new();
    for _ in 0..conns {
        let mut c = Conn::new(to, auth);
        req.step(&mut c, &mut Vec::new(), &mut None).await?;
        warm.push(c);
    }
    if let Until::Requests { idle, .. } = until {
        tokio::time::sleep(idle).await;
    }
    let t0 = Instant::now();
    let more = move |n: u64| match until {
        Until::Elapsed(d) => t0.elapsed() < d,
        Until::Requests { each, .. } => n < each,
    };
    let mut tasks = Vec::new();
    for mut c in warm {
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut cursor = None;
            while more(lat.len() as u64) {
                req.step(&mut c, &mut lat, &mut cursor).await?;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(Rate::of(all, t0.elapsed()))
}

/// Checks that a fetched manifest is the benchmark image's.
pub fn check_manifest(body: &[u8]) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body).context("manifest JSON")?;
    ensure!(
        v["mediaType"] == MANIFEST_MEDIA_TYPE,
        "unexpected manifest {v}"
    );
    Ok(())
}
