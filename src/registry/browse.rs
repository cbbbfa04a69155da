//! What the web UI shows of a registry, read through the same layer as the
//! API: per repository its tags with what each points at (size, platforms),
//! when it was pushed and last pulled and what retention decides for it;
//! per repository a summary for the home page; per manifest its layers,
//! config, history and referrers; what a delete takes along.
//!
//! A repository's facts are read with the same walk garbage collection
//! uses ([`super::gc::scan::tags_of`]) and the pull log all processes
//! write, and kept (writes through this process drop them at once), so
//! large repositories render fast: for [`FRESH`] they are shown as read;
//! after that, up to [`STALE`], a view still shows them and starts one
//! read in the background that replaces them (reading a repository of
//! thousands of tags takes a second or more, which no view waits for
//! while facts are kept). Retention's verdicts are computed from them on
//! every view ([`super::retention::verdicts`]), as a collection would.
//! What a manifest is (size, platforms, blobs) never changes under its
//! digest and is kept by digest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::manifest::Descriptor;
use super::retention::{verdicts, Retention, TagFacts, Verdict};
use super::{gc, storage_err, Registry};
use crate::oci::{Digest, Reference, RegistryError, RepoName, Tag};

/// How long a repository's facts are shown before they are read again.
pub const FRESH: Duration = Duration::from_secs(5);
/// How old a repository's facts may be shown while they are read again in
/// the background; older ones are read before the view.
pub const STALE: Duration = Duration::from_secs(300);
/// Repositories whose facts are kept at most.
const KEPT_REPOS: usize = 2_000;
/// Manifests whose facts are kept at most.
const KEPT_MANIFESTS: usize = 50_000;

/// What a manifest is, as the pages show it.
#[derive(Debug, Clone, Default)]
pub struct ManifestFacts {
    pub media_type: String,
    pub is_index: bool,
    pub artifact_type: Option<String>,
    /// Bytes of its distinct blobs (an index: those of its manifests).
    pub size: u64,
    /// `os/arch[/variant]` of the image, or of each image of an index.
    pub platforms: Vec<String>,
    /// The blobs it keeps (config and layers), with their sizes.
    pub blobs: Vec<(Digest, u64)>,
}

/// One tag of a repository.
#[derive(Debug, Clone)]
pub struct TagRow {
    /// The tag as read (shared with the facts kept: a row costs no copy).
    pub tagged: Arc<Tagged>,
    pub verdict: Verdict,
}

impl std::ops::Deref for TagRow {
    type Target = Tagged;

    fn deref(&self) -> &Tagged {
        &self.tagged
    }
}

/// One tag as read.
#[derive(Debug)]
pub struct Tagged {
    pub tag: Tag,
    pub digest: Digest,
    pub pushed: SystemTime,
    pub pulled: Option<SystemTime>,
    pub manifest: Arc<ManifestFacts>,
}

/// A repository's tags as read at one moment, and what retention needs
/// of each (made once, not on every view).
struct RepoFacts {
    read: Instant,
    tags: Vec<Arc<Tagged>>,
    retention: Vec<TagFacts>,
}

/// A repository at a glance.
#[derive(Debug, Clone)]
pub struct RepoSummary {
    pub name: String,
    pub tags: usize,
    /// Bytes of the distinct blobs its tags keep.
    pub size: u64,
    pub last_push: Option<SystemTime>,
    pub last_pull: Option<SystemTime>,
}

/// The facts kept between views.
#[derive(Default)]
pub(super) struct Views {
    repos: parking_lot::Mutex<HashMap<String, Arc<RepoFacts>>>,
    manifests: parking_lot::Mutex<HashMap<Digest, Arc<ManifestFacts>>>,
    /// Repositories being read again in the background.
    refreshing: parking_lot::Mutex<HashSet<String>>,
    /// Bumped whenever kept facts are dropped for a write.
    drops: AtomicU64,
}

impl Views {
    /// Forgets what was read of `repo` (it was written to).
    pub(super) fn changed(&self, repo: &RepoName) {
        let mut repos = self.repos.lock();
        repos.remove(repo.as_str());
        self.drops.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets what was read of every repository (a collection ran).
    pub(super) fn clear(&self) {
        let mut repos = self.repos.lock();
        repos.clear();
        self.drops.fetch_add(1, Ordering::SeqCst);
    }

    /// Keeps `facts` of `repo`, read from when `drops` was `drops_before`,
    /// unless a write dropped what was kept of it since (nothing is kept
    /// and facts were dropped since) or newer facts are kept.
    fn keep(&self, repo: &RepoName, facts: &Arc<RepoFacts>, drops_before: u64) {
        let mut kept = self.repos.lock();
        let keep = match kept.get(repo.as_str()) {
            Some(k) => k.read <= facts.read,
            None => self.drops.load(Ordering::SeqCst) == drops_before,
        };
        if !keep {
            return;
        }
        if kept.len() >= KEPT_REPOS {
            kept.clear();
        }
        kept.insert(repo.to_string(), facts.clone());
    }
}

/// A manifest in full, for its page.
#[derive(Debug, Clone)]
pub struct ImageView {
    pub digest: Digest,
    pub facts: Arc<ManifestFacts>,
    /// The manifest as stored, indented when it is JSON.
    pub raw: String,
    /// The manifests of an index: digest, platform, media type, size.
    pub children: Vec<(String, String, String, u64)>,
    /// Config (first) and layers: digest, media type, size.
    pub layers: Vec<(String, String, u64)>,
    pub config: Option<ImageConfig>,
    pub subject: Option<String>,
    pub referrers: Vec<Descriptor>,
    /// Tags of the repository that point at it.
    pub tags: Vec<String>,
}

/// What an image's config says of it.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub created: Option<String>,
    pub platform: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// When, the command, whether it made no layer.
    pub history: Vec<(Option<String>, String, bool)>,
}

/// What deleting a tag or a manifest takes along.
#[derive(Debug, Clone, Default)]
pub struct DeletePreview {
    /// The tags that go.
    pub tags: Vec<String>,
    /// The manifest removed (a delete by digest).
    pub manifest: Option<String>,
    /// Manifests left without a tag, which the next collection deletes
    /// with their blobs unless `untagged = "keep"`.
    pub untagged: Vec<String>,
    /// Referrers (signatures, SBOMs) of the manifest removed or left
    /// untagged: they go with it.
    pub referrers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
    #[serde(default)]
    manifests: Vec<RawDescriptor>,
    subject: Option<RawDescriptor>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize, Default, Clone)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl RawPlatform {
    fn render(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct RawHistory {
    created: Option<String>,
    created_by: Option<String>,
    comment: Option<String>,
    #[serde(default)]
    empty_layer: bool,
}

#[derive(Deserialize, Default)]
struct RawConfig {
    created: Option<String>,
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
    config: Option<RawRunConfig>,
    #[serde(default)]
    history: Vec<RawHistory>,
}

fn parse<T: for<'de> Deserialize<'de> + Default>(bytes: &[u8]) -> T {
    serde_json::from_slice(bytes).unwrap_or_default()
}

/// Platforms an index lists, without the `unknown/unknown` entries of
/// build attestations.
fn real_platform(p: &str) -> bool {
    p != "unknown/unknown" && p != "/"
}

impl Registry {
    /// What the manifest `digest` is (kept by digest).
    pub async fn manifest_facts(
        &self,
        digest: &Digest,
    ) -> Result<Arc<ManifestFacts>, RegistryError> {
        if let Some(f) = self.views.manifests.lock().get(digest) {
            return Ok(f.clone());
        }
        let bytes = self.object(digest).await?.unwrap_or_default();
        let raw: RawManifest = parse(&bytes);
        let mut facts = ManifestFacts {
            media_type: raw
                .media_type
                .clone()
                .unwrap_or_else(|| super::manifest::stored_media_type(&bytes)),
            is_index: !raw.manifests.is_empty() || raw.config.is_none() && raw.layers.is_empty(),
            artifact_type: raw.artifact_type.clone(),
            ..ManifestFacts::default()
        };
        let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
        if let Some(config) = &raw.config {
            facts.is_index = false;
            for d in std::iter::once(config).chain(&raw.layers) {
                if let Ok(digest) = Digest::parse(&d.digest) {
                    blobs.insert(digest, d.size);
                }
            }
            if let Ok(cd) = Digest::parse(&config.digest) {
                if config.size <= 1 << 20 {
                    let cfg: RawConfig = parse(&self.object(&cd).await?.unwrap_or_default());
                    let p = RawPlatform {
                        os: cfg.os,
                        architecture: cfg.architecture,
                        variant: cfg.variant,
                    };
                    if real_platform(&p.render()) {
                        facts.platforms.push(p.render());
                    }
                }
            }
        } else {
            for child in &raw.manifests {
                if let Some(p) = &child.platform {
                    if real_platform(&p.render()) {
                        facts.platforms.push(p.render());
                    }
                }
                let Ok(cd) = Digest::parse(&child.digest) else {
                    continue;
                };
                if &cd == digest {
                    continue;
                }
                let inner = Box::pin(self.manifest_facts(&cd)).await?;
                blobs.extend(inner.blobs.iter().cloned());
            }
        }
        facts.size = blobs.values().sum();
        facts.blobs = blobs.into_iter().collect();
        let facts = Arc::new(facts);
        let mut kept = self.views.manifests.lock();
        if kept.len() >= KEPT_MANIFESTS {
            kept.clear();
        }
        kept.insert(digest.clone(), facts.clone());
        Ok(facts)
    }

    /// A repository's tags as read at most [`FRESH`] ago, or at most
    /// [`STALE`] ago while they are read again in the background.
    async fn repo_facts(
        self: &Arc<Self>,
        repo: &RepoName,
    ) -> Result<Arc<RepoFacts>, RegistryError> {
        let kept = self.views.repos.lock().get(repo.as_str()).cloned();
        if let Some(f) = kept {
            let age = f.read.elapsed();
            if age < FRESH {
                return Ok(f);
            }
            if age < STALE {
                self.refresh(repo);
                return Ok(f);
            }
        }
        self.read_repo_facts(repo).await
    }

    /// Reads `repo`'s facts again in the background, unless that is under
    /// way.
    fn refresh(self: &Arc<Self>, repo: &RepoName) {
        if !self.views.refreshing.lock().insert(repo.to_string()) {
            return;
        }
        let (registry, repo) = (self.clone(), repo.clone());
        tokio::spawn(async move {
            if let Err(e) = registry.read_repo_facts(&repo).await {
                tracing::warn!(repository = %repo, "reading what the UI shows: {e}");
            }
            registry.views.refreshing.lock().remove(repo.as_str());
        });
    }

    /// Reads a repository's tags and keeps them.
    async fn read_repo_facts(&self, repo: &RepoName) -> Result<Arc<RepoFacts>, RegistryError> {
        let drops_before = self.views.drops.load(Ordering::SeqCst);
        let read = Instant::now();
        let (tags, _) = gc::scan::tags_of(&*self.driver, repo)
            .await
            .map_err(storage_err("reading tags"))?;
        let pulls = self.pulls.load(&*self.driver).await?;
        let mut rows = Vec::with_capacity(tags.len());
        for (tag, digest, pushed) in tags {
            let pulled = pulls.get(&format!("{repo}:{tag}")).copied();
            let manifest = self.manifest_facts(&digest).await?;
            rows.push(Arc::new(Tagged {
                tag,
                digest,
                pushed,
                pulled,
                manifest,
            }));
        }
        let retention = rows
            .iter()
            .map(|t| TagFacts {
                repo: repo.to_string(),
                tag: t.tag.to_string(),
                pushed: t.pushed,
                pulled: t.pulled,
            })
            .collect();
        let facts = Arc::new(RepoFacts {
            read,
            tags: rows,
            retention,
        });
        self.views.keep(repo, &facts, drops_before);
        Ok(facts)
    }

    /// The tags of `repo` with retention's verdict on each under `policy`
    /// at `now`, sorted by tag.
    pub async fn tag_rows(
        self: &Arc<Self>,
        repo: &RepoName,
        policy: &Retention,
        now: SystemTime,
    ) -> Result<Vec<TagRow>, RegistryError> {
        let facts = self.repo_facts(repo).await?;
        let verdicts = verdicts(policy, &facts.retention, now);
        Ok(facts
            .tags
            .iter()
            .zip(verdicts)
            .map(|(t, verdict)| TagRow {
                tagged: t.clone(),
                verdict,
            })
            .collect())
    }

    /// A summary of each repository named.
    pub async fn summaries(
        self: &Arc<Self>,
        names: &[String],
    ) -> Result<Vec<RepoSummary>, RegistryError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Ok(repo) = RepoName::parse(name) else {
                continue;
            };
            let facts = self.repo_facts(&repo).await?;
            let mut blobs: HashMap<&Digest, u64> = HashMap::new();
            for t in &facts.tags {
                blobs.extend(t.manifest.blobs.iter().map(|(d, s)| (d, *s)));
            }
            out.push(RepoSummary {
                name: name.clone(),
                tags: facts.tags.len(),
                size: blobs.values().sum(),
                last_push: facts.tags.iter().map(|t| t.pushed).max(),
                last_pull: facts.tags.iter().filter_map(|t| t.pulled).max(),
            });
        }
        Ok(out)
    }

    /// The manifest `digest` of `repo` in full.
    pub async fn image(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<ImageView, RegistryError> {
        let stored = self
            .manifest(repo, &Reference::Digest(digest.clone()))
            .await?;
        let facts = self.manifest_facts(digest).await?;
        let raw: RawManifest = parse(&stored.bytes);
        let pretty = serde_json::from_slice::<serde_json::Value>(&stored.bytes)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&stored.bytes).into_owned());
        let mut children = Vec::new();
        for c in &raw.manifests {
            let size = match Digest::parse(&c.digest) {
                Ok(d) if &d != digest => self.manifest_facts(&d).await?.size,
                _ => 0,
            };
            let platform = c
                .platform
                .as_ref()
                .map(RawPlatform::render)
                .unwrap_or_default();
            children.push((c.digest.clone(), platform, c.media_type.clone(), size));
        }
        let layers = raw
            .config
            .iter()
            .chain(&raw.layers)
            .map(|d| (d.digest.clone(), d.media_type.clone(), d.size))
            .collect();
        let config = match raw.config.as_ref().map(|c| Digest::parse(&c.digest)) {
            Some(Ok(cd)) => self.object(&cd).await?.map(|b| image_config(&b)),
            _ => None,
        };
        let referrers = self.referrers(repo, digest, None).await?;
        let tags = self
            .repo_facts(repo)
            .await?
            .tags
            .iter()
            .filter(|t| &t.digest == digest)
            .map(|t| t.tag.to_string())
            .collect();
        Ok(ImageView {
            digest: digest.clone(),
            facts,
            raw: pretty,
            children,
            layers,
            config,
            subject: raw.subject.map(|s| s.digest),
            referrers,
            tags,
        })
    }

    /// What deleting `reference` from `repo` takes along.
    pub async fn delete_preview(
        self: &Arc<Self>,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<DeletePreview, RegistryError> {
        let facts = self.repo_facts(repo).await?;
        let mut preview = DeletePreview::default();
        let target = match reference {
            Reference::Tag(tag) => {
                let Some(t) = facts.tags.iter().find(|t| &t.tag == tag) else {
                    return Err(RegistryError::ManifestUnknown(format!(
                        "tag {tag} is not in {repo}"
                    )));
                };
                preview.tags.push(tag.to_string());
                t.digest.clone()
            }
            Reference::Digest(d) => {
                self.manifest(repo, reference).await?;
                preview.manifest = Some(d.to_string());
                preview.tags = facts
                    .tags
                    .iter()
                    .filter(|t| &t.digest == d)
                    .map(|t| t.tag.to_string())
                    .collect();
                d.clone()
            }
        };
        let still_tagged = facts
            .tags
            .iter()
            .any(|t| t.digest == target && !preview.tags.contains(&t.tag.to_string()));
        if preview.manifest.is_none() && !still_tagged {
            preview.untagged.push(target.to_string());
        }
        if !still_tagged || preview.manifest.is_some() {
            preview.referrers = self.referrers(repo, &target, None).await?;
        }
        Ok(preview)
    }
}

/// What an image config says, for its page.
fn image_config(bytes: &[u8]) -> ImageConfig {
    let raw: RawConfig = parse(bytes);
    let run = raw.config.unwrap_or_default();
    let platform = RawPlatform {
        os: raw.os,
        architecture: raw.architecture,
        variant: raw.variant,
    }
    .render();
    ImageConfig {
        created: raw.created,
        platform,
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir.filter(|w| !w.is_empty()),
        user: run.user.filter(|u| !u.is_empty()),
        exposed_ports: run
            .exposed_ports
            .unwrap_or_default()
            .into_keys()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        labels: run.labels.unwrap_or_default(),
        history: raw
            .history
            .into_iter()
            .map(|h| {
                let command = h.created_by.or(h.comment).unwrap_or_default();
                (h.created, command, h.empty_layer)
            })
            .collect(),
    }
}
