//! The registry domain of one instance: repositories, blobs, uploads,
//! manifests, tags and referrers over a storage [`Driver`], with its locks
//! taken through [`Coordinator`], and its tag lists and catalog kept in
//! memory ([`Listings`]); for a mirror instance, what is not stored yet
//! comes from its upstream ([`mirror`]). Nothing here touches a file: the same registry
//! runs on the filesystem driver and, in its unit tests, in memory. Knows
//! nothing of HTTP.

pub mod browse;
mod download;
pub mod fsck;
pub mod gc;
pub mod manifest;
mod mirror;
mod paginate;
pub mod presence;
mod pulls;
mod quota;
pub mod retention;
#[cfg(test)]
mod tests;
mod uploads;
pub mod urls;
pub mod usage;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;
pub use paginate::{paginate, Page};
use pulls::PullLog;
pub use uploads::BodyStream;
pub use uploads::Uploads;

use self::manifest::Descriptor;
use crate::coord::{Coordinator, Guard, Lock, Mode};
use crate::oci::{Digest, Reference, RegistryError, RepoName};
use crate::storage::cache::BlobCache;
use crate::storage::driver::{optional, ByteStream, Driver, StorageError};
use crate::storage::listing::{self, Listings, Names};
use crate::storage::location::Location;
use crate::storage::{keys, tree};

/// One instance's registry.
pub struct Registry {
    /// Where everything is.
    driver: Arc<dyn Driver>,
    /// The locks between requests and garbage collection.
    coord: Coordinator,
    uploads: Arc<Uploads>,
    pulls: PullLog,
    listings: Listings,
    sessions: quota::SessionQuota,
    /// Manifests read lately, by digest.
    manifests: ManifestCache,
    /// This host's copies of the blobs pulled from a remote store.
    cache: Option<Arc<BlobCache>>,
    /// What the web UI was shown lately.
    views: browse::Views,
    /// What this process's collections did, for metrics.
    gc_totals: parking_lot::Mutex<gc::Totals>,
    /// What the instance holds, as last measured.
    usage: Arc<usage::Kept>,
    /// The upstreams of a mirror instance, and what it fetches from them.
    mirror: Option<mirror::Mirror>,
}

/// Manifests by digest, the most recently read up to [`MANIFEST_CACHE`]
/// bytes. Content never changes under its digest, so an entry is never
/// stale; whether a manifest is still in a repository is read from the
/// store on every request, never from here.
struct ManifestCache(parking_lot::Mutex<(lru::LruCache<Digest, Bytes>, usize)>);

impl Default for ManifestCache {
    fn default() -> Self {
        ManifestCache(parking_lot::Mutex::new((lru::LruCache::unbounded(), 0)))
    }
}

/// Bytes of manifests kept in memory per instance.
const MANIFEST_CACHE: usize = 16 << 20;

impl ManifestCache {
    fn get(&self, d: &Digest) -> Option<Bytes> {
        self.0.lock().0.get(d).cloned()
    }

    fn put(&self, d: &Digest, bytes: Bytes) {
        if bytes.len() > MANIFEST_CACHE / 16 {
            return;
        }
        let mut c = self.0.lock();
        c.1 += bytes.len();
        if let Some(old) = c.0.put(d.clone(), bytes) {
            c.1 -= old.len();
        }
        while c.1 > MANIFEST_CACHE {
            let Some((_, old)) = c.0.pop_lru() else { break };
            c.1 -= old.len();
        }
    }
}

/// A blob of a repository, found and ready to be read.
pub struct Blob {
    pub size: u64,
    digest: Digest,
    driver: Arc<dyn Driver>,
    cache: Option<Arc<BlobCache>>,
    /// The download from the upstream it comes from, while not stored yet.
    download: Option<Arc<download::Download>>,
}

impl Blob {
    /// `len` bytes from `start`. A blob collected since it was found is
    /// `BLOB_UNKNOWN`, like one never there.
    pub async fn open(&self, start: u64, len: u64) -> Result<ByteStream, RegistryError> {
        if let Some(d) = &self.download {
            return Ok(d.clone().read(start, len));
        }
        let key = keys::blob(&self.digest);
        let fetch = self.driver.read(&key, start, len);
        let read = match &self.cache {
            Some(cache) => cache.read(&self.digest, self.size, start, len, fetch).await,
            None => fetch.await,
        };
        match read {
            Err(e) if e.is_not_found() => Err(RegistryError::BlobUnknown(format!(
                "blob {} is not here any more",
                self.digest
            ))),
            other => Ok(other?),
        }
    }

    /// Where the client may fetch the blob itself, when the store is set
    /// to send clients there (a presigned URL of an object store).
    pub async fn redirect(&self) -> Result<Option<String>, RegistryError> {
        if self.download.is_some() {
            return Ok(None);
        }
        Ok(self.driver.redirect(&keys::blob(&self.digest)).await?)
    }
}

/// A stored manifest.
pub struct StoredManifest {
    /// Why a cached tag is served unchecked, when its upstream is down.
    pub stale: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// The result of a manifest push.
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// The GC lock, shared: held by every request that makes content
/// referenced, from its checks to its last write ([`gc`]).
async fn gc_shared(coord: &Coordinator) -> Result<Guard, RegistryError> {
    Ok(coord.lock(Lock::Gc, Mode::Shared).await?)
}

/// The digest manifest `bytes` are stored under for `reference`: a
/// digest reference's own (`Err((actual, expected))` when they differ),
/// sha256 for a tag.
fn manifest_digest(reference: &Reference, bytes: &[u8]) -> Result<Digest, (Digest, Digest)> {
    match reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), bytes);
            match &actual == d {
                true => Ok(actual),
                false => Err((actual, d.clone())),
            }
        }
        Reference::Tag(_) => Ok(Digest::of(crate::oci::Algorithm::Sha256, bytes)),
    }
}

/// A storage failure of `context`, named in the internal error.
fn storage_err(context: &'static str) -> impl Fn(StorageError) -> RegistryError {
    move |e| match RegistryError::from(e) {
        RegistryError::Internal(cause) => RegistryError::Internal(format!("{context}: {cause}")),
        other => other,
    }
}

impl Registry {
    /// The registry of the store `driver` serves, its locks taken through
    /// `coord`.
    pub fn new(driver: Arc<dyn Driver>, coord: Coordinator) -> Self {
        let usage = Arc::new(usage::Kept::default());
        Registry {
            uploads: Arc::new(Uploads::new(driver.clone(), coord.clone(), usage.clone())),
            usage,
            driver,
            coord,
            pulls: PullLog::default(),
            listings: Listings::default(),
            sessions: quota::SessionQuota::default(),
            manifests: ManifestCache::default(),
            cache: None,
            views: browse::Views::default(),
            gc_totals: parking_lot::Mutex::default(),
            mirror: None,
        }
    }

    /// The registry serving pulls of whole blobs from `cache` when it has
    /// them, and keeping copies in it of those it does not.
    pub fn with_cache(self, cache: Option<Arc<BlobCache>>) -> Self {
        Registry { cache, ..self }
    }

    /// The registry of the store at `location`, its locks taken through
    /// `coord`; without one, as lock files in a local directory (for the
    /// processes of one host), or in this process alone for a bucket (a
    /// process of another lock domain on it then keeps collections from
    /// running: [`presence`]).
    pub fn open(location: &Location, coord: Option<Coordinator>) -> Result<Self, StorageError> {
        let coord = coord.unwrap_or_else(|| match location {
            Location::Filesystem(root) => Coordinator::files(root),
            Location::S3(_) => Coordinator::local().for_store(&location.identity()),
        });
        Ok(Self::new(location.open()?, coord))
    }

    /// The lock of one repository's manifests and tags, taken under the
    /// GC lock `gc`.
    async fn repo_locked(gc: &Guard, repo: &RepoName) -> Result<Guard, RegistryError> {
        Ok(gc
            .lock(Lock::Repo(repo.to_string()), Mode::Exclusive)
            .await?)
    }

    /// Size of `digest` when it is linked into `repo` (as a layer or a
    /// manifest) and present.
    async fn linked_blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let d = &self.driver;
        let linked = optional(d.stat(&keys::layer_link(repo, digest)).await)?.is_some()
            || optional(d.stat(&keys::revision_link(repo, digest)).await)?.is_some();
        if !linked {
            return Ok(None);
        }
        Ok(optional(d.stat(&keys::blob(digest)).await)?.map(|m| m.size))
    }

    /// Finds a blob of `repo` for reading: linked into it (as a layer or
    /// a manifest) and present.
    pub async fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<Blob, RegistryError> {
        match self.linked_blob_size(repo, digest).await? {
            Some(size) => Ok(self.stored_blob(digest, size)),
            None if self.mirrors(repo) => self.mirror_blob(repo, digest).await,
            None => Err(RegistryError::BlobUnknown(format!(
                "blob {digest} is not in {repo}"
            ))),
        }
    }

    fn stored_blob(&self, digest: &Digest, size: u64) -> Blob {
        Blob {
            size,
            digest: digest.clone(),
            driver: self.driver.clone(),
            cache: self.cache.clone(),
            download: None,
        }
    }

    /// Unlinks a blob from `repo` (the data goes with garbage collection).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        if self.driver.delete(&keys::layer_link(repo, digest)).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(format!(
                "blob {digest} is not in {repo}"
            )))
        }
    }

    /// Links a blob of `from` into `repo`; `false` when `from` does not
    /// have it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<bool, RegistryError> {
        let _gc = gc_shared(&self.coord).await?;
        let present = self.linked_blob_size(from, digest).await?.is_some();
        if present {
            gc::record(&*self.driver, repo, gc::Written::Blob(digest)).await?;
            tree::write_link(&*self.driver, &keys::layer_link(repo, digest), digest).await?;
        }
        Ok(present)
    }

    /// Upload sessions of this instance.
    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    /// Opens an upload session for `user`, who may hold at most `max` open
    /// sessions; those older than `ttl` no longer count.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        user: &str,
        max: usize,
        ttl: std::time::Duration,
    ) -> Result<String, RegistryError> {
        let slot = self
            .sessions
            .reserve(user, max, ttl, |r, id| self.uploads.is_open(r, id))?;
        let id = self.uploads.start(repo, user).await?;
        slot.fill(repo, &id);
        Ok(id)
    }

    /// A whole blob in one request by `user` ("" for anonymous).
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        user: &str,
        digest: &Digest,
        body: BodyStream,
        max: Option<u64>,
    ) -> Result<(), RegistryError> {
        let id = self.uploads.start(repo, user).await?;
        let result = self
            .uploads
            .finish(repo, &id, user, digest, None, body, max)
            .await;
        if result.is_err() {
            // finish removes the session on digest errors; other failures leave it.
            let _ = self.uploads.cancel(repo, &id, user).await;
        }
        result
    }

    /// Validates and stores a manifest, tagging it when `reference` is a tag.
    /// With `urls`, the URLs its layers carry are held to those rules;
    /// without, they are taken unchecked.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
        urls: Option<&urls::ManifestUrls>,
    ) -> Result<PutManifest, RegistryError> {
        let parsed = manifest::parse(content_type, &bytes)?;
        if let Some(rules) = urls {
            rules.check(parsed.urls.iter().map(String::as_str))?;
        }
        let digest = manifest_digest(reference, &bytes).map_err(|(actual, d)| {
            RegistryError::DigestInvalid(format!("manifest digest is {actual}, not {d}"))
        })?;
        let subject = parsed.subject.clone();
        // Held while the references are checked and written, so that a
        // concurrent garbage collection sees them before it deletes.
        let gc = gc_shared(&self.coord).await?;
        let _repo = Self::repo_locked(&gc, repo).await?;
        for blob in &parsed.blobs {
            if self.linked_blob_size(repo, blob).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown(format!(
                    "blob {blob} is not in {repo}; push it before the manifest"
                )));
            }
        }
        for child in &parsed.children {
            let d = &self.driver;
            let present = optional(d.stat(&keys::revision_link(repo, child)).await)?.is_some()
                && optional(d.stat(&keys::blob(child)).await)?.is_some();
            if !present {
                return Err(RegistryError::ManifestBlobUnknown(format!(
                    "manifest {child} is not in {repo}; push it before the index"
                )));
            }
        }
        let tag = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        self.write_manifest(repo, tag, &digest, bytes, parsed.subject.as_ref())
            .await?;
        Ok(PutManifest { digest, subject })
    }

    /// Stores a checked manifest under `digest` in `repo`, with its
    /// referrer link and `tag`; the caller holds the GC and repository
    /// locks.
    async fn write_manifest(
        &self,
        repo: &RepoName,
        tag: Option<&crate::oci::Tag>,
        digest: &Digest,
        bytes: Bytes,
        subject: Option<&Digest>,
    ) -> Result<(), RegistryError> {
        let d = &*self.driver;
        gc::record(d, repo, gc::Written::Manifest(digest, tag)).await?;
        d.put_new(&keys::blob(digest), bytes).await?;
        tree::write_link(d, &keys::revision_link(repo, digest), digest).await?;
        self.listings.repository_added(repo);
        if let Some(subject) = subject {
            tree::write_link(d, &keys::referrer_link(repo, subject, digest), digest).await?;
        }
        if let Some(tag) = tag {
            let current = keys::tag_current_link(repo, tag);
            let created = optional(d.stat(&current).await)?.is_none();
            tree::write_link(d, &keys::tag_index_link(repo, tag, digest), digest).await?;
            tree::write_link(d, &current, digest).await?;
            if created {
                listing::tags_changed(d, repo).await?;
            }
        }
        self.views.changed(repo);
        self.usage.changed();
        Ok(())
    }

    /// The manifest `reference` names in `repo`, if it is there.
    async fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Digest>, RegistryError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                match tree::read_link(&*self.driver, &keys::tag_current_link(repo, t)).await? {
                    Some(d) => d,
                    None => return Ok(None),
                }
            }
        };
        let linked = optional(self.driver.stat(&keys::revision_link(repo, &digest)).await)?;
        Ok(linked.map(|_| digest))
    }

    fn manifest_unknown(repo: &RepoName, reference: &Reference) -> RegistryError {
        RegistryError::ManifestUnknown(format!("manifest {reference} is not in {repo}"))
    }

    /// A stored object read whole (manifests and configs), kept
    /// among the manifests read lately, or `None`.
    async fn object(&self, digest: &Digest) -> Result<Option<Bytes>, RegistryError> {
        if let Some(b) = self.manifests.get(digest) {
            return Ok(Some(b));
        }
        let bytes = optional(self.driver.get(&keys::blob(digest)).await)?;
        if let Some(b) = &bytes {
            self.manifests.put(digest, b.clone());
        }
        Ok(bytes)
    }

    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest, RegistryError> {
        let pulled_tag = match reference {
            Reference::Tag(tag) => Some(format!("{repo}:{tag}")),
            Reference::Digest(_) => None,
        };
        let found = async {
            let stale = self.refresh_manifest(repo, reference).await?;
            let unknown = || Self::manifest_unknown(repo, reference);
            let digest = self.resolve(repo, reference).await?.ok_or_else(unknown)?;
            let bytes = self.object(&digest).await?.ok_or_else(unknown)?;
            Ok(StoredManifest {
                stale,
                media_type: manifest::stored_media_type(&bytes),
                digest,
                bytes,
            })
        }
        .await;
        if let (Ok(_), Some(key)) = (&found, pulled_tag) {
            self.pulls.pulled(key, SystemTime::now());
        }
        found
    }

    /// Deletes a tag, or a manifest with every tag pointing at it; the
    /// tags that went with a manifest.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Vec<crate::oci::Tag>, RegistryError> {
        // Whole, between a garbage collection's decision and its
        // deletions, and between writes of the same repository.
        let gc = gc_shared(&self.coord).await?;
        let _repo = Self::repo_locked(&gc, repo).await?;
        let d = &*self.driver;
        let unknown = || Self::manifest_unknown(repo, reference);
        let mut untagged = Vec::new();
        match reference {
            Reference::Tag(tag) => {
                if optional(d.stat(&keys::tag_current_link(repo, tag)).await)?.is_none() {
                    return Err(unknown());
                }
                d.delete_all(&keys::tag(repo, tag)).await?;
                listing::tags_changed(d, repo).await?;
                self.views.changed(repo);
            }
            Reference::Digest(digest) => {
                if !d.delete(&keys::revision_link(repo, digest)).await? {
                    return Err(unknown());
                }
                let tags: Vec<String> = d.list(&keys::tags(repo)).try_collect().await?;
                for tag in tags {
                    // A registry:2 root may hold directories that are no valid tag.
                    let Ok(tag) = crate::oci::Tag::parse(&tag) else {
                        continue;
                    };
                    let current = tree::read_link(d, &keys::tag_current_link(repo, &tag)).await?;
                    if current.as_ref() == Some(digest) {
                        d.delete_all(&keys::tag(repo, &tag)).await?;
                        untagged.push(tag);
                    } else {
                        // Its history forgets the manifest too.
                        d.delete_all(&keys::tag_index_entry(repo, &tag, digest))
                            .await?;
                    }
                }
                if !untagged.is_empty() {
                    listing::tags_changed(d, repo).await?;
                }
                self.views.changed(repo);
                let bytes = optional(d.get(&keys::blob(digest)).await)?.unwrap_or_default();
                if let Ok(parsed) = manifest::parse(None, &bytes) {
                    if let Some(subject) = parsed.subject {
                        d.delete_all(&keys::referrer_entry(repo, &subject, digest))
                            .await?;
                    }
                }
            }
        }
        self.usage.changed();
        Ok(untagged)
    }

    /// Writes this process's pull times if some are new (see the `pulls` module).
    pub async fn flush_pulls(&self) -> Result<(), RegistryError> {
        self.pulls.flush(&*self.driver).await
    }

    /// The store this registry serves, for what keeps its own state there
    /// (the ACME cache).
    pub fn driver(&self) -> Arc<dyn Driver> {
        self.driver.clone()
    }

    /// Writes this process's heartbeat into the store ([`presence`]).
    pub async fn beat(&self) -> Result<(), RegistryError> {
        Ok(presence::beat(&*self.driver, &self.coord).await?)
    }

    /// Removes this process's heartbeat: it stops serving the store.
    pub async fn leave(&self) -> Result<(), RegistryError> {
        Ok(presence::leave(&*self.driver).await?)
    }

    /// Why a collection would be refused now ([`presence`]); `None` when
    /// it would run.
    pub async fn gc_refusal(&self) -> Result<Option<String>, RegistryError> {
        Ok(presence::refusal(&*self.driver, &self.coord, SystemTime::now()).await?)
    }

    /// Runs retention and garbage collection once ([`gc`]); refused while
    /// another process on the store takes its locks elsewhere.
    pub async fn collect_garbage(
        &self,
        policy: &retention::Retention,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<gc::Report, RegistryError> {
        self.flush_pulls().await?;
        // Every process's pulls; a real run also compacts them.
        let pulls = match dry_run {
            true => self.pulls.load(&*self.driver).await?,
            false => self.pulls.compact(&*self.driver).await?,
        };
        let run = gc::Run {
            policy,
            pulls: &pulls,
            now,
            dry_run,
        };
        let changes = self.usage.changes();
        let started = std::time::Instant::now();
        let report = gc::run(&*self.driver, &self.coord, &run).await?;
        if !dry_run {
            // The run measured what is left: the figure of writes before it.
            self.usage
                .set(report.usage.clone(), changes, started.elapsed());
            self.views.clear();
            self.uploads.forget_older_than(policy.upload_ttl);
            self.gc_totals.lock().add(&report, started.elapsed());
        }
        Ok(report)
    }

    /// What this process's collections did since it started.
    pub fn gc_totals(&self) -> gc::Totals {
        self.gc_totals.lock().clone()
    }

    /// The last collections of the store, newest first.
    pub async fn gc_history(&self) -> Result<Vec<gc::history::PastRun>, RegistryError> {
        gc::history::read(&*self.driver).await
    }

    /// What the instance holds, as last measured (or reported by a
    /// collection), with when.
    pub fn usage(&self) -> Option<usage::Measured> {
        self.usage.current()
    }

    /// Measures what the instance holds when due: never measured, or
    /// written to since the last measurement (which is then at least 5 s
    /// old and ten times as old as it took), or an hour old. The new
    /// figure when one was taken.
    pub async fn refresh_usage(&self) -> Result<Option<usage::Measured>, RegistryError> {
        Ok(self.usage.refresh(&*self.driver).await?)
    }

    /// Sorted tags of a repository.
    pub async fn tags(&self, repo: &RepoName) -> Result<Names, RegistryError> {
        self.listings
            .tags(&*self.driver, repo)
            .await
            .map_err(storage_err("listing tags"))?
            .ok_or_else(|| RegistryError::NameUnknown(format!("repository {repo} is not known")))
    }

    /// Repositories that have blobs linked, manifests or not (mount sources).
    pub async fn repositories_with_blobs(&self) -> Result<Vec<String>, RegistryError> {
        let d = &*self.driver;
        let mut out = Vec::new();
        for repo in tree::repositories(d).await? {
            let under = tree::names(d, &keys::repo(&repo)).await?;
            if under.iter().any(|n| n == "_layers") {
                out.push(repo.to_string());
            }
        }
        Ok(out)
    }

    /// Sorted repository names.
    pub async fn catalog(&self) -> Result<Names, RegistryError> {
        self.listings
            .catalog(&*self.driver)
            .await
            .map_err(storage_err("listing repositories"))
    }

    /// Manifests of `repo` whose subject is `subject`, optionally only those
    /// of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let d = &*self.driver;
        let mut out = Vec::new();
        for (digest, _) in tree::links(d, &keys::referrers(repo, subject)).await? {
            if optional(d.stat(&keys::revision_link(repo, &digest)).await)?.is_none() {
                continue;
            }
            let Some(bytes) = optional(d.get(&keys::blob(&digest)).await)? else {
                continue;
            };
            let Ok(m) = manifest::parse(None, &bytes) else {
                continue;
            };
            if artifact_type.is_some() && m.artifact_type.as_deref() != artifact_type {
                continue;
            }
            out.push(Descriptor {
                media_type: m.media_type,
                digest: digest.to_string(),
                size: bytes.len() as i64,
                artifact_type: m.artifact_type,
                annotations: m.annotations,
                urls: None,
            });
        }
        Ok(out)
    }
}
