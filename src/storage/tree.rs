//! Distribution's tree read and written through a [`Driver`]: links, the
//! names under a prefix, the linked digests of a directory, the
//! repositories, the catalog and the tags of a repository. Where things
//! are is [`super::keys`]; this module knows what links hold, what makes a
//! repository, a repository of the catalog and a tag. Walks of the
//! repositories take names from [`Driver::list`] as they come; the links
//! of a directory come from one [`Driver::walk`].

use std::future::ready;
use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};

use super::driver::{optional, Driver, StorageError};
use super::keys;
use crate::oci::{Algorithm, Digest, RepoName, Tag};

/// Reads under way at once over one listing: each is a round trip to the
/// store (the blocking pool, or the network).
pub const READ_AHEAD: usize = 16;

/// The child of a repository that puts it in the catalog.
const MANIFESTS: &str = "_manifests";

/// The digest a link holds (`sha256:<hex>`); `None` when the link is
/// absent or holds no valid digest.
pub async fn read_link(d: &dyn Driver, key: &str) -> Result<Option<Digest>, StorageError> {
    Ok(optional(d.get(key).await)?
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .and_then(|s| Digest::parse(s.trim()).ok()))
}

/// Writes a link to `d`.
pub async fn write_link(driver: &dyn Driver, key: &str, d: &Digest) -> Result<(), StorageError> {
    driver.put(key, d.to_string().into()).await
}

/// The names under `prefix`.
pub async fn names(d: &dyn Driver, prefix: &str) -> Result<Vec<String>, StorageError> {
    d.list(prefix).try_collect().await
}

/// Digests linked under `base/<alg>/<hex>/link`, with the link's time,
/// sorted: one walk of `base`, then the links read [`READ_AHEAD`] at a time.
pub async fn links(d: &dyn Driver, base: &str) -> Result<Vec<(Digest, SystemTime)>, StorageError> {
    let found: Vec<(String, SystemTime)> = d
        .walk(base)
        .try_filter_map(|(key, meta)| ready(Ok(link_digest(&key).map(|_| (key, meta.modified)))))
        .try_collect()
        .await?;
    let read = futures_util::stream::iter(found).map(|(key, modified)| async move {
        let digest = read_link(d, &format!("{base}/{key}")).await?;
        Ok::<_, StorageError>(digest.map(|digest| (digest, modified)))
    });
    let mut out: Vec<_> = read
        .buffered(READ_AHEAD)
        .try_filter_map(|link| ready(Ok(link)))
        .try_collect()
        .await?;
    out.sort();
    Ok(out)
}

/// The digest a link's key below its base names (`<alg>/<hex>/link`).
pub fn link_digest(key: &str) -> Option<Digest> {
    let mut parts = key.split('/');
    let (alg, hex, link) = (parts.next()?, parts.next()?, parts.next()?);
    if link != "link" || parts.next().is_some() {
        return None;
    }
    [Algorithm::Sha256, Algorithm::Sha512]
        .iter()
        .any(|a| a.as_str() == alg)
        .then(|| Digest::parse(&format!("{alg}:{hex}")).ok())
        .flatten()
}

/// Every repository: a directory under `repositories/` with a `_`-prefixed
/// child (`_manifests`, `_layers`, `_uploads`, `_referrers`), sorted.
pub async fn repositories(d: &dyn Driver) -> Result<Vec<RepoName>, StorageError> {
    walk_repositories(d, |child| child.starts_with('_')).await
}

/// The repositories of the catalog, as registry:2 lists them: those with
/// `_manifests`, sorted.
pub async fn catalog(d: &dyn Driver) -> Result<Vec<RepoName>, StorageError> {
    walk_repositories(d, |child| child == MANIFESTS).await
}

/// Directories under `repositories/` with a child that `marks` them,
/// sorted. `_`-prefixed children are never walked into.
async fn walk_repositories(
    d: &dyn Driver,
    marks: fn(&str) -> bool,
) -> Result<Vec<RepoName>, StorageError> {
    let root = keys::repositories();
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(path) = todo.pop() {
        let dir = match path.is_empty() {
            true => root.clone(),
            false => format!("{root}/{path}"),
        };
        let mut marked = false;
        let mut children = d.list(&dir);
        while let Some(name) = children.try_next().await? {
            if name.starts_with('_') {
                marked |= marks(&name);
            } else if path.is_empty() {
                todo.push(name);
            } else {
                todo.push(format!("{path}/{name}"));
            }
        }
        if marked {
            if let Ok(repo) = RepoName::parse(&path) {
                out.push(repo);
            }
        }
    }
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(out)
}

/// Whether `repo` is in the catalog (has `_manifests`).
pub async fn in_catalog(d: &dyn Driver, repo: &RepoName) -> Result<bool, StorageError> {
    let dir = keys::repo(repo);
    let mut children = d.list(&dir);
    while let Some(name) = children.try_next().await? {
        if name == MANIFESTS {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Tags of `repo` that point at something (have a `current/link`),
/// sorted. Names that are no valid tag (a registry:2 root may hold such
/// directories) are skipped; links are looked at [`READ_AHEAD`] at a time.
pub async fn tags(d: &dyn Driver, repo: &RepoName) -> Result<Vec<Tag>, StorageError> {
    let dir = keys::tags(repo);
    let mut out: Vec<Tag> = d
        .list(&dir)
        .try_filter_map(|name| ready(Ok(Tag::parse(&name).ok())))
        .map_ok(|tag| async move {
            let link = keys::tag_current_link(repo, &tag);
            Ok(optional(d.stat(&link).await)?.map(|_| tag))
        })
        .try_buffer_unordered(READ_AHEAD)
        .try_filter_map(|linked| ready(Ok(linked)))
        .try_collect()
        .await?;
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use crate::storage::memory::MemDriver;
    use bytes::Bytes;

    #[tokio::test]
    async fn repositories_nest_and_need_an_underscore_child() {
        let d = MemDriver::new();
        let digest = Digest::of(Algorithm::Sha256, b"x");
        for name in ["a", "a/b", "c/d/e"] {
            let r = RepoName::parse(name).unwrap();
            write_link(&d, &keys::layer_link(&r, &digest), &digest)
                .await
                .unwrap();
        }
        d.put(&format!("{}/f/readme", keys::repositories()), Bytes::new())
            .await
            .unwrap();
        let found: Vec<String> = repositories(&d)
            .await
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(found, ["a", "a/b", "c/d/e"]);
    }

    fn strings<T: ToString>(v: Vec<T>) -> Vec<String> {
        v.iter().map(T::to_string).collect()
    }

    #[tokio::test]
    async fn the_catalog_needs_manifests_and_tags_a_current_link() {
        let d = MemDriver::new();
        let digest = Digest::of(Algorithm::Sha256, b"x");
        let (a, ab) = (
            RepoName::parse("a").unwrap(),
            RepoName::parse("a/b").unwrap(),
        );
        write_link(&d, &keys::layer_link(&a, &digest), &digest)
            .await
            .unwrap();
        write_link(&d, &keys::revision_link(&ab, &digest), &digest)
            .await
            .unwrap();
        assert_eq!(strings(catalog(&d).await.unwrap()), ["a/b"]);
        assert!(!in_catalog(&d, &a).await.unwrap());
        assert!(in_catalog(&d, &ab).await.unwrap());

        for name in ["v2", "v1"] {
            let tag = Tag::parse(name).unwrap();
            write_link(&d, &keys::tag_current_link(&ab, &tag), &digest)
                .await
                .unwrap();
        }
        // History without a current link, and a name that is no tag.
        let old = Tag::parse("old").unwrap();
        write_link(&d, &keys::tag_index_link(&ab, &old, &digest), &digest)
            .await
            .unwrap();
        let bad = format!("{}/-bad/current/link", keys::tags(&ab));
        d.put(&bad, Bytes::from(digest.to_string())).await.unwrap();
        assert_eq!(strings(tags(&d, &ab).await.unwrap()), ["v1", "v2"]);
        assert!(tags(&d, &a).await.unwrap().is_empty());
    }
}
