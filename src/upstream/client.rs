//! One upstream registry over HTTP: `HEAD`/`GET` of manifests by tag or
//! digest (asking for every OCI and Docker manifest type) and streaming
//! `GET`s of blobs, authenticated as the upstream asks ([`super::auth`]).
//! Also keeps whether the upstream is reachable, so that an outage is
//! logged once, not per request.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::{header, Method, StatusCode};

use super::auth::Auth;
use super::spec::UpstreamSpec;
use crate::oci::error_chain;

/// Every manifest type a mirror stores, as `Accept` of manifest requests.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Bytes of a blob as they arrive.
pub type BlobStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Why an upstream did not give what was asked; the message names the
/// upstream and is meant for clients.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection, a timeout, a 5xx, a broken body.
    Unreachable,
    /// It refused our credentials, or asked for what we do not have.
    Refused,
    /// It answered something that is no valid answer.
    Invalid,
}

impl UpstreamError {
    pub(super) fn unreachable(registry: &str, cause: &str) -> Self {
        UpstreamError {
            kind: ErrorKind::Unreachable,
            message: format!("upstream {registry} cannot be reached: {cause}"),
        }
    }

    pub(super) fn refused(registry: &str, why: &str) -> Self {
        UpstreamError {
            kind: ErrorKind::Refused,
            message: format!("upstream {registry} refused access: {why}"),
        }
    }

    fn invalid(registry: &str, why: &str) -> Self {
        UpstreamError {
            kind: ErrorKind::Invalid,
            message: format!("upstream {registry} answered wrongly: {why}"),
        }
    }
}

/// What a manifest `HEAD` tells.
pub struct ManifestHead {
    /// `Docker-Content-Digest`, when the upstream sends it.
    pub digest: Option<String>,
}

/// A manifest as the upstream sent it.
pub struct FetchedManifest {
    pub media_type: Option<String>,
    pub bytes: Bytes,
}

/// A blob on its way.
pub struct FetchedBlob {
    /// `Content-Length`, when the upstream sends it.
    pub size: Option<u64>,
    pub body: BlobStream,
}

/// One upstream registry.
pub struct Upstream {
    pub spec: UpstreamSpec,
    http: reqwest::Client,
    auth: Auth,
    /// The last request could not reach it.
    down: AtomicBool,
}

impl Upstream {
    pub fn new(spec: UpstreamSpec) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::unreachable(&spec.registry, &e.to_string()))?;
        Ok(Upstream {
            auth: Auth::new(&spec.registry, spec.credentials.clone()),
            spec,
            http,
            down: AtomicBool::new(false),
        })
    }

    /// Whether the last request could not reach the upstream.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Notes the outcome of a request, logging when reachability changes.
    fn note<T>(&self, r: Result<T, UpstreamError>) -> Result<T, UpstreamError> {
        let down = matches!(&r, Err(e) if e.kind == ErrorKind::Unreachable);
        if self.down.swap(down, Ordering::Relaxed) != down {
            match &r {
                Err(e) => tracing::warn!(
                    upstream = %self.spec.registry,
                    "{e}; serving what is cached until it answers again"
                ),
                Ok(_) => tracing::info!(upstream = %self.spec.registry, "upstream answers again"),
            }
        }
        r
    }

    /// Sends a request for `repo`'s content, answering one challenge.
    async fn send(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}/v2/{repo}/{path}", self.spec.url);
        let registry = &self.spec.registry;
        let mut answered = false;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            let sent = self.auth.header(&scope);
            if let Some(auth) = &sent {
                req = req.header(header::AUTHORIZATION, auth);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| UpstreamError::unreachable(registry, &error_chain(&e)))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered {
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                self.auth
                    .answer(&self.http, &challenge, &scope, sent.as_deref())
                    .await?;
                answered = true;
                continue;
            }
            if status.is_server_error() {
                return Err(UpstreamError::unreachable(
                    registry,
                    &format!("it answered {status}"),
                ));
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(UpstreamError::refused(
                    registry,
                    &format!("it answered {status} for {repo}"),
                ));
            }
            return Ok(resp);
        }
    }

    /// A request whose 404 means "not there" (`None`).
    async fn found(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Option<reqwest::Response>, UpstreamError> {
        let r = self
            .send(method, repo, path, accept)
            .await
            .and_then(|resp| match resp.status() {
                StatusCode::NOT_FOUND => Ok(None),
                s if s.is_success() => Ok(Some(resp)),
                s => Err(UpstreamError::invalid(
                    &self.spec.registry,
                    &format!("{s} for {repo}/{path}"),
                )),
            });
        self.note(r)
    }

    /// `HEAD` of the manifest `reference` (a tag or a digest) of `repo`.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, UpstreamError> {
        let path = format!("manifests/{reference}");
        let resp = self
            .found(Method::HEAD, repo, &path, Some(ACCEPT_MANIFESTS))
            .await?;
        Ok(resp.map(|r| ManifestHead {
            digest: header_value(&r, "docker-content-digest"),
        }))
    }

    /// The manifest `reference` of `repo`, at most `limit` bytes.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        limit: usize,
    ) -> Result<Option<FetchedManifest>, UpstreamError> {
        let path = format!("manifests/{reference}");
        let Some(resp) = self
            .found(Method::GET, repo, &path, Some(ACCEPT_MANIFESTS))
            .await?
        else {
            return Ok(None);
        };
        let registry = &self.spec.registry;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(UpstreamError::invalid(
                registry,
                "the manifest is too large",
            ));
        }
        let media_type = header_value(&resp, "content-type")
            .map(|ct| ct.split(';').next().unwrap_or("").trim().to_string());
        let mut body = resp.bytes_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| UpstreamError::unreachable(registry, &error_chain(&e)))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(UpstreamError::invalid(
                    registry,
                    "the manifest is too large",
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(FetchedManifest {
            media_type,
            bytes: bytes.into(),
        }))
    }

    /// The size of blob `digest` of `repo`.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> Result<Option<u64>, UpstreamError> {
        let path = format!("blobs/{digest}");
        let resp = self.found(Method::HEAD, repo, &path, None).await?;
        Ok(resp.map(|r| {
            header_value(&r, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }))
    }

    /// Blob `digest` of `repo`, streaming (redirects to a CDN followed).
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<FetchedBlob>, UpstreamError> {
        let path = format!("blobs/{digest}");
        let Some(resp) = self.found(Method::GET, repo, &path, None).await? else {
            return Ok(None);
        };
        let registry = self.spec.registry.clone();
        Ok(Some(FetchedBlob {
            size: resp.content_length(),
            body: Box::pin(resp.bytes_stream().map_err(move |e| {
                std::io::Error::other(format!(
                    "upstream {registry} broke off: {}",
                    error_chain(&e)
                ))
            })),
        }))
    }
}

fn header_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
