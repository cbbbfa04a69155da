//! The client side of the distribution protocol, for mirror instances: a
//! source of content that [`crate::registry`] calls, like `storage`.
//! Owns talking to upstream registries (their URLs, credentials, token
//! flow, whether they answer) and which upstream a repository maps to;
//! must not touch storage or know of the requests it serves. What is
//! fetched once for many clients is the registry's business.

mod auth;
mod client;
mod spec;

use std::sync::Arc;

pub use client::{
    BlobStream, ErrorKind, FetchedBlob, FetchedManifest, ManifestHead, Upstream, UpstreamError,
};
pub use spec::{Credentials, MirrorSpec, UpstreamSpec, DEFAULT_TAG_TTL};

/// The upstreams of one mirror instance and its policy.
pub struct Upstreams {
    pub spec: MirrorSpec,
    clients: Vec<Arc<Upstream>>,
}

impl Upstreams {
    pub fn new(spec: MirrorSpec) -> Result<Self, UpstreamError> {
        let clients = spec
            .upstreams
            .iter()
            .map(|u| Upstream::new(u.clone()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Upstreams { spec, clients })
    }

    /// The upstream `repo` of this instance maps to, and its name there.
    pub fn route(&self, repo: &str) -> Option<(Arc<Upstream>, String)> {
        let (spec, name) = self.spec.route(repo)?;
        let client = self
            .clients
            .iter()
            .find(|c| c.spec.registry == spec.registry)?;
        Some((client.clone(), name))
    }
}
