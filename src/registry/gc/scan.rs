//! Reading the store for a collection, through the storage driver: the
//! repositories and what each holds (tags with their push times, manifest
//! revisions, layer links, tag histories), the blobs, and upload sessions.
//! Reads only; [`super`] decides and deletes.

use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};

use crate::oci::{Algorithm, Digest, RegistryError, RepoName, Tag};
use crate::storage::driver::{optional, Driver, StorageError};
use crate::storage::keys;
use crate::storage::tree::{self, READ_AHEAD};
pub(super) use crate::storage::tree::{in_catalog, links, names, repositories, tags};

/// One repository as the scan found it.
pub(super) struct RepoScan {
    pub name: RepoName,
    /// Tags that point at something, with their push time (the time of
    /// the tag's `current/link`).
    pub tags: Vec<(Tag, Digest, SystemTime)>,
    /// Every manifest each tag had (`_manifests/tags/<tag>/index`).
    pub history: Vec<(Tag, Vec<Digest>)>,
    pub revisions: Vec<(Digest, SystemTime)>,
    pub layers: Vec<(Digest, SystemTime)>,
}

impl RepoScan {
    pub fn empty(name: RepoName) -> RepoScan {
        RepoScan {
            name,
            tags: Vec::new(),
            history: Vec::new(),
            revisions: Vec::new(),
            layers: Vec::new(),
        }
    }
}

/// A stored blob.
pub(super) struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// What one repository holds.
pub(super) async fn repository(d: &dyn Driver, repo: RepoName) -> Result<RepoScan, StorageError> {
    let mut scan = RepoScan::empty(repo);
    let repo = &scan.name;
    // A registry:2 root may hold directories that are no valid tag.
    let tags: Vec<Tag> = names(d, &keys::tags(repo))
        .await?
        .iter()
        .filter_map(|n| Tag::parse(n).ok())
        .collect();
    let read = futures_util::stream::iter(tags)
        .map(|tag| async move {
            let had = links(d, &keys::tag_index(repo, &tag)).await?;
            let link = keys::tag_current_link(repo, &tag);
            let current = match tree::read_link(d, &link).await? {
                Some(digest) => optional(d.stat(&link).await)?.map(|m| (digest, m.modified)),
                None => None,
            };
            Ok::<_, StorageError>((tag, had, current))
        })
        .buffered(READ_AHEAD);
    let read: Vec<_> = read.try_collect().await?;
    for (tag, had, current) in read {
        scan.history
            .push((tag.clone(), had.into_iter().map(|(d, _)| d).collect()));
        if let Some((digest, modified)) = current {
            scan.tags.push((tag, digest, modified));
        }
    }
    scan.revisions = links(d, &keys::revisions(repo)).await?;
    scan.layers = links(d, &keys::layers(repo)).await?;
    Ok(scan)
}

/// Every blob with its size and time.
pub(super) async fn blobs(d: &dyn Driver) -> Result<Vec<BlobEntry>, StorageError> {
    let mut out = Vec::new();
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let dir = format!("{}/{}", keys::blobs(), alg.as_str());
        for prefix in names(d, &dir).await? {
            for hex in names(d, &format!("{dir}/{prefix}")).await? {
                let Ok(digest) = Digest::parse(&format!("{}:{hex}", alg.as_str())) else {
                    continue;
                };
                if let Some(meta) = optional(d.stat(&keys::blob(&digest)).await)? {
                    out.push(BlobEntry {
                        digest,
                        size: meta.size,
                        modified: meta.modified,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Upload sessions of a repository with the time each began (its
/// `startedat`, else the time of its data).
pub(super) async fn uploads(
    d: &dyn Driver,
    repo: &RepoName,
) -> Result<Vec<(String, Option<SystemTime>)>, RegistryError> {
    let mut out = Vec::new();
    for id in names(d, &keys::uploads(repo)).await? {
        let dir = keys::upload(repo, &id);
        let started = optional(d.get(&format!("{dir}/startedat")).await)?
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .and_then(|s| humantime::parse_rfc3339_weak(s.trim()).ok());
        let started = match started {
            Some(t) => Some(t),
            None => optional(d.stat(&keys::upload_data(repo, &id)).await)?.map(|m| m.modified),
        };
        out.push((id, started));
    }
    Ok(out)
}
