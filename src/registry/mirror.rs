//! Pull-through mirroring: what a mirror instance does when a manifest or
//! blob is not stored yet, or a tag is due to be checked. Manifests by
//! digest and blobs are kept for good (content-addressed); a tag is
//! checked upstream with a `HEAD` once `tag_ttl` has passed and fetched
//! again when its digest moved; clients asking for the same manifest at
//! once share one such check or fetch. Blobs come through
//! [`super::download`], one download per blob however many clients ask.
//! Repositories that map to no upstream are plain local repositories.
//! Pushes to mirrored repositories are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::download::{Downloads, Job};
use super::{gc_shared, manifest, Blob, Registry};
use crate::oci::{Digest, Reference, RegistryError, RepoName};
use crate::storage::driver::optional;
use crate::storage::keys;
use crate::storage::location::Location;
use crate::storage::tree;
use crate::upstream::{ErrorKind, MirrorSpec, UpstreamError, Upstreams};

/// The mirror side of a registry.
pub(super) struct Mirror {
    upstreams: Upstreams,
    /// When each tag (`repo:tag`) was last found current upstream.
    checked: parking_lot::Mutex<HashMap<String, Instant>>,
    downloads: Downloads,
    /// Where downloads keep what they fetched until it is stored.
    spill_dir: PathBuf,
    /// Manifest refreshes under way, by `repo:reference`, with their
    /// outcome once known.
    refreshing: parking_lot::Mutex<HashMap<String, watch::Receiver<Option<Refreshed>>>>,
}

/// What a manifest refresh found: why a cached tag is served stale, if
/// it is.
type Refreshed = Result<Option<String>, RegistryError>;

/// Ends a refresh: its key leaves the map when its leader is done or
/// gone, whoever follows it having had the outcome (or, when the leader
/// was cancelled, being free to lead one of its own).
struct Leading<'a> {
    map: &'a parking_lot::Mutex<HashMap<String, watch::Receiver<Option<Refreshed>>>>,
    key: String,
    outcome: watch::Sender<Option<Refreshed>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.key);
    }
}

/// The error a client gets for what an upstream did not give.
pub(super) fn upstream_error(e: UpstreamError) -> RegistryError {
    match e.kind {
        ErrorKind::Refused => RegistryError::Denied(e.message),
        ErrorKind::Unreachable | ErrorKind::Invalid => RegistryError::Unavailable(e.message),
    }
}

impl Registry {
    /// The registry mirroring the upstreams of `spec`; downloads in flight
    /// are kept under the storage root at `location` (or in the temporary
    /// directory for a bucket).
    pub fn with_mirror(self, spec: MirrorSpec, location: &Location) -> Result<Self, UpstreamError> {
        let spill_dir = match location {
            Location::Filesystem(root) => root.join("berth/mirror-downloads"),
            Location::S3(_) => std::env::temp_dir().join("berth-mirror-downloads"),
        };
        let mirror = Mirror {
            upstreams: Upstreams::new(spec)?,
            checked: parking_lot::Mutex::default(),
            downloads: Downloads::default(),
            spill_dir,
            refreshing: parking_lot::Mutex::default(),
        };
        Ok(Registry {
            mirror: Some(mirror),
            ..self
        })
    }

    /// Whether `repo` maps to an upstream.
    pub(super) fn mirrors(&self, repo: &RepoName) -> bool {
        self.mirror
            .as_ref()
            .is_some_and(|m| m.upstreams.route(repo.as_str()).is_some())
    }

    /// Refuses writes (pushes, deletes) to a mirrored repository, and to
    /// any repository of a mirror without `allow_push`.
    pub fn check_writable(&self, repo: &RepoName) -> Result<(), RegistryError> {
        let Some(m) = &self.mirror else { return Ok(()) };
        let refuse = |what: &str| {
            Err(RegistryError::Denied(format!(
                "this instance mirrors {what}; push to another instance"
            )))
        };
        match m.upstreams.route(repo.as_str()) {
            Some((up, _)) => refuse(&up.spec.registry),
            None if !m.upstreams.spec.allow_push => refuse(&m.upstreams.spec.registries()),
            None => Ok(()),
        }
    }

    /// The repository containerd means by `repo` with `?ns=REGISTRY`, on a
    /// mirror; `repo` itself elsewhere.
    pub fn namespaced(&self, ns: &str, repo: &RepoName) -> Result<RepoName, RegistryError> {
        let Some(m) = &self.mirror else {
            return Ok(repo.clone());
        };
        match m.upstreams.spec.namespaced(ns, repo.as_str()) {
            Some(name) => RepoName::parse(&name),
            None => Err(RegistryError::NameUnknown(format!(
                "this instance mirrors {}, not {ns}",
                m.upstreams.spec.registries()
            ))),
        }
    }

    /// Brings the manifest `reference` of `repo` into the store when it
    /// is not there, or is a tag due to be checked. `Some(why)` when a
    /// cached tag is served unchecked because its upstream is down.
    /// Requests for the same reference at once share one refresh.
    pub(super) async fn refresh_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<String>, RegistryError> {
        let Some(m) = &self.mirror else {
            return Ok(None);
        };
        if m.upstreams.route(repo.as_str()).is_none() || self.current(m, repo, reference).await? {
            return Ok(None);
        }
        let key = format!("{repo}:{reference}");
        let leading = loop {
            let mut follow = {
                let mut map = m.refreshing.lock();
                match map.get(&key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (outcome, rx) = watch::channel(None);
                        map.insert(key.clone(), rx);
                        break Leading {
                            map: &m.refreshing,
                            key,
                            outcome,
                        };
                    }
                }
            };
            let outcome = match follow.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                // Its leader was cancelled: lead one.
                Err(_) => None,
            };
            if let Some(outcome) = outcome {
                return outcome;
            }
        };
        // Another refresh may have ended between the check above and
        // taking the lead.
        let outcome = match self.current(m, repo, reference).await {
            Ok(true) => Ok(None),
            Ok(false) => self.refresh_upstream(m, repo, reference).await,
            Err(e) => Err(e),
        };
        leading.outcome.send_replace(Some(outcome.clone()));
        outcome
    }

    /// Whether the store has manifest `reference` of `repo` and, for a
    /// tag, checked it upstream less than `tag_ttl` ago.
    async fn current(
        &self,
        m: &Mirror,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool, RegistryError> {
        if self.resolve(repo, reference).await?.is_none() {
            return Ok(false);
        }
        Ok(match reference {
            Reference::Digest(_) => true,
            Reference::Tag(_) => m
                .checked
                .lock()
                .get(&format!("{repo}:{reference}"))
                .is_some_and(|at| at.elapsed() < m.upstreams.spec.tag_ttl),
        })
    }

    /// [`Self::refresh_manifest`] once it is known that the upstream must
    /// be asked.
    async fn refresh_upstream(
        &self,
        m: &Mirror,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<String>, RegistryError> {
        let (up, name) = m
            .upstreams
            .route(repo.as_str())
            .expect("called for mirrored repositories");
        let local = self.resolve(repo, reference).await?;
        let key = format!("{repo}:{reference}");
        let tag = match reference {
            Reference::Digest(_) => None,
            Reference::Tag(t) => Some(t),
        };
        let fetched = async {
            if let (Some(current), Some(_)) = (&local, tag) {
                let head = up.head_manifest(&name, &reference.to_string()).await?;
                if head.is_some_and(|h| h.digest.as_deref() == Some(&current.to_string())) {
                    return Ok(Ok(true));
                }
            }
            let limit = manifest::MAX_MANIFEST_SIZE;
            let Some(f) = up
                .get_manifest(&name, &reference.to_string(), limit)
                .await?
            else {
                return Ok(Ok(false));
            };
            Ok::<_, UpstreamError>(
                self.store_fetched(repo, reference, f.bytes)
                    .await
                    .map(|_| true),
            )
        }
        .await;
        match fetched {
            Ok(Ok(true)) => {
                if tag.is_some() {
                    m.checked.lock().insert(key, Instant::now());
                }
                Ok(None)
            }
            Ok(Ok(false)) => Err(RegistryError::ManifestUnknown(format!(
                "manifest {reference} is not in {repo}, nor in {name} on {}",
                up.spec.registry
            ))),
            Ok(Err(e)) => Err(e),
            Err(e) if e.kind == ErrorKind::Unreachable && local.is_some() => {
                if m.upstreams.spec.serve_stale {
                    Ok(Some(format!(
                        "{}; {repo}:{reference} is served from the cache",
                        e.message
                    )))
                } else {
                    Err(upstream_error(e))
                }
            }
            Err(e) => Err(upstream_error(e)),
        }
    }

    /// Stores a manifest fetched for `reference`, once its digest checks.
    async fn store_fetched(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: bytes::Bytes,
    ) -> Result<(), RegistryError> {
        let digest = super::manifest_digest(reference, &bytes).map_err(|(actual, d)| {
            RegistryError::Unavailable(format!("the upstream sent manifest {actual} for {d}"))
        })?;
        let parsed = manifest::parse(None, &bytes)?;
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let gc = gc_shared(&self.coord).await?;
        let _repo = Self::repo_locked(&gc, repo).await?;
        self.write_manifest(repo, tag, &digest, bytes, parsed.subject.as_ref())
            .await
    }

    /// A blob of a mirrored repository that is not linked into it: linked
    /// when the store has it already, else followed as it downloads.
    pub(super) async fn mirror_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Blob, RegistryError> {
        let m = self
            .mirror
            .as_ref()
            .expect("called for mirrored repositories");
        let (up, name) = m
            .upstreams
            .route(repo.as_str())
            .expect("called for mirrored repositories");
        if let Some(meta) = optional(self.driver.stat(&keys::blob(digest)).await)? {
            let gc = gc_shared(&self.coord).await?;
            super::gc::record(&*self.driver, repo, super::gc::Written::Blob(digest)).await?;
            tree::write_link(&*self.driver, &keys::layer_link(repo, digest), digest).await?;
            drop(gc);
            return Ok(self.stored_blob(digest, meta.size));
        }
        let job = Job {
            repo: repo.clone(),
            digest: digest.clone(),
            uploads: Arc::clone(&self.uploads),
            spill_dir: m.spill_dir.clone(),
        };
        let fetch = {
            let digest = digest.to_string();
            async move { up.get_blob(&name, &digest).await }
        };
        let download = m.downloads.join(job, fetch);
        let size = download.size().await?;
        let mut blob = self.stored_blob(digest, size);
        blob.download = Some(download);
        Ok(blob)
    }
}
