//! Distribution's tree read and written through a [`Driver`]: links, the
//! names under a prefix, the linked digests of a directory, the
//! repositories. Where things are is [`super::keys`]; this module knows
//! what links hold and what makes a repository.

use std::time::SystemTime;

use futures_util::TryStreamExt;

use super::driver::{optional, Driver, StorageError};
use super::keys;
use crate::oci::{Algorithm, Digest, RepoName};

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

/// Digests linked under `base/<alg>/<hex>/link`, with the link's time.
pub async fn links(d: &dyn Driver, base: &str) -> Result<Vec<(Digest, SystemTime)>, StorageError> {
    let mut out = Vec::new();
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let dir = format!("{base}/{}", alg.as_str());
        for hex in names(d, &dir).await? {
            let link = format!("{dir}/{hex}/link");
            let (Some(digest), Some(meta)) =
                (read_link(d, &link).await?, optional(d.stat(&link).await)?)
            else {
                continue;
            };
            out.push((digest, meta.modified));
        }
    }
    out.sort();
    Ok(out)
}

/// Every repository: a directory under `repositories/` with a `_`-prefixed
/// child (`_manifests`, `_layers`, `_uploads`, `_referrers`), sorted.
pub async fn repositories(d: &dyn Driver) -> Result<Vec<RepoName>, StorageError> {
    let root = keys::repositories();
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(path) = todo.pop() {
        let dir = match path.is_empty() {
            true => root.clone(),
            false => format!("{root}/{path}"),
        };
        let mut is_repo = false;
        for name in names(d, &dir).await? {
            if name.starts_with('_') {
                is_repo = true;
            } else if path.is_empty() {
                todo.push(name);
            } else {
                todo.push(format!("{path}/{name}"));
            }
        }
        if is_repo {
            if let Ok(repo) = RepoName::parse(&path) {
                out.push(repo);
            }
        }
    }
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
}
