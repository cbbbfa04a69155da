//! Reading the store for a collection, through the storage driver: the
//! repositories and what each holds (tags with their push times, manifest
//! revisions, layer links, tag histories), the blobs, and upload sessions.
//! Reads only; [`super`] decides and deletes.

use std::time::SystemTime;

use std::collections::BTreeMap;
use std::future::ready;

use futures_util::{StreamExt, TryStreamExt};

use crate::oci::{Digest, RegistryError, RepoName, Tag};
use crate::storage::driver::{optional, Driver, StorageError};
use crate::storage::keys;
use crate::storage::tree::{self, READ_AHEAD};
pub(super) use crate::storage::tree::{links, names, repositories, tags};

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
pub(in crate::registry) struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// What one repository holds: its tags ([`tags_of`]), and the revision
/// and layer links.
pub(super) async fn repository(d: &dyn Driver, repo: RepoName) -> Result<RepoScan, StorageError> {
    let mut scan = RepoScan::empty(repo);
    (scan.tags, scan.history) = tags_of(d, &scan.name).await?;
    scan.revisions = links(d, &keys::revisions(&scan.name)).await?;
    scan.layers = links(d, &keys::layers(&scan.name)).await?;
    Ok(scan)
}

/// The tags of a repository that point at something, with their push time
/// (the time of each tag's `current/link`), sorted, and every manifest each
/// tag had: one walk of its tags (the history from the keys of its index),
/// the current links read [`READ_AHEAD`] at a time.
pub(in crate::registry) async fn tags_of(
    d: &dyn Driver,
    repo: &RepoName,
) -> Result<TagsOf, StorageError> {
    let mut current = Vec::new();
    let mut history: BTreeMap<Tag, Vec<Digest>> = BTreeMap::new();
    let tags_key = keys::tags(repo);
    let mut walk = d.walk(&tags_key);
    while let Some((key, meta)) = walk.try_next().await? {
        // A registry:2 root may hold directories that are no valid tag.
        let Some((tag, rest)) = key.split_once('/') else {
            continue;
        };
        let Ok(tag) = Tag::parse(tag) else { continue };
        if rest == "current/link" {
            current.push((tag.clone(), meta.modified));
            history.entry(tag).or_default();
        } else if let Some(digest) = rest.strip_prefix("index/").and_then(tree::link_digest) {
            history.entry(tag).or_default().push(digest);
        }
    }
    drop(walk);
    current.sort();
    let read = futures_util::stream::iter(current)
        .map(|(tag, modified)| async move {
            let digest = tree::read_link(d, &keys::tag_current_link(repo, &tag)).await?;
            Ok::<_, StorageError>(digest.map(|digest| (tag, digest, modified)))
        })
        .buffered(READ_AHEAD);
    let tags = read.try_filter_map(|t| ready(Ok(t))).try_collect().await?;
    let history = history
        .into_iter()
        .map(|(tag, mut had)| {
            had.sort();
            (tag, had)
        })
        .collect();
    Ok((tags, history))
}

/// Tags with what each points at and when it was pushed; every manifest
/// each tag had.
pub(in crate::registry) type TagsOf = (Vec<(Tag, Digest, SystemTime)>, Vec<(Tag, Vec<Digest>)>);

/// Every blob with its size and time: one walk of the blob store.
pub(in crate::registry) async fn blobs(d: &dyn Driver) -> Result<Vec<BlobEntry>, StorageError> {
    d.walk(&keys::blobs())
        .try_filter_map(|(key, meta)| {
            // `<alg>/<hex[..2]>/<hex>/data`
            let parts: Vec<&str> = key.split('/').collect();
            let digest = match parts.as_slice() {
                [alg, _, hex, "data"] => Digest::parse(&format!("{alg}:{hex}")).ok(),
                _ => None,
            };
            ready(Ok(digest.map(|digest| BlobEntry {
                digest,
                size: meta.size,
                modified: meta.modified,
            })))
        })
        .try_collect()
        .await
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
