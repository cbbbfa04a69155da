//! Cached tag lists and catalog of one store, so that `tags/list` and
//! `_catalog` cost one small read instead of a walk, while other processes
//! (another `berth serve` on the same store, `berth gc`, `berth fsck
//! --repair`) change the store under the running server. Everything goes
//! through a [`Driver`]: no directory, no modification time of one (object
//! stores have neither). This module owns the caches and the generation
//! objects they are checked against.
//!
//! Generation objects: small objects holding a random token, rewritten with
//! a new one by every berth write that changes what a listing shows:
//!
//! - per repository, [`keys::tags_changed`], by every write that creates or
//!   removes a tag name of it ([`tags_changed`]): a tag push that creates
//!   the tag, tag and manifest deletes, garbage collection removing tags or
//!   the whole repository, fsck removing tags. Re-pointing a tag changes no
//!   name and renews nothing;
//! - [`keys::REPOSITORIES_CHANGED`], by whatever removes repositories
//!   (garbage collection, [`repositories_changed`]).
//!
//! Both live under `berth/`, outside what registry:2 reads. A listing is
//! kept with the token read before it was walked and served while the
//! token read now is the same. A missing object (a store berth never
//! changed) is a token value of its own; no generation object is ever
//! deleted, which could bring "missing" back under a list kept with it.
//!
//! Why no change is missed, on a store that reads its own writes (a
//! filesystem, S3): a writer renews the token *after* its change is
//! visible (the tag link written or removed), a reader reads the token
//! *before* it walks. Say a reader reads T0, then walks. A writer that
//! renews the token to T1 after that read makes the next reader read
//! T1 != T0 and walk again, whatever the first walk saw. A writer that
//! renewed it before that read (the reader read T1 itself) made its change
//! visible before that, so before the walk, which sees it. Either way a
//! change is in every list served from the first request that reads the
//! writer's token on. Tokens are random (128 bits), so a renewal never
//! brings back an old one; two walks kept out of order at worst keep an
//! older token, which the next request finds changed, and walks again.
//!
//! A tag directory without `current/link` yet (a push between writing the
//! tag's history and its link) is no tag. It needs no watching, as it did
//! when directory times were the stamp: the push renews the token after
//! writing the link, so a list walked before the link is walked again.
//!
//! Programs that write no token (registry:2 on the same root, files copied
//! in or removed by hand, a berth older than the tokens) are seen once a
//! walk is [`MAX_AGE`] old: a tag list or the catalog read that long after
//! its walk is walked again, whatever the token.
//!
//! - Tags: at most [`MAX_CACHED_TAGS`] names are kept; the least recently
//!   listed repositories go first. That a repository does not exist is not
//!   kept (its first push may be a manifest without a tag).
//! - Catalog: one request walks at a time; the others wait and take its
//!   result. Repositories this process gives manifests are added at once
//!   ([`Listings::repository_added`]); those another process creates show
//!   with the next walk, by [`MAX_AGE`].
//!
//! Walks take names from [`Driver::list`] a page at a time ([`tree`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use super::driver::{optional, Driver, StorageError};
use super::{keys, tree};
use crate::oci::RepoName;

/// Tag names kept across all repositories (a few MiB).
pub const MAX_CACHED_TAGS: usize = 50_000;

/// Longest time a walk is trusted while its token stays: how long changes
/// by programs that write no token can go unseen.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// A sorted list of names, shared by the cache and the requests reading it.
pub type Names = Arc<Vec<String>>;

/// What a generation object held when read; `None` when there was none.
type Token = Option<Bytes>;

/// A new random token.
pub fn new_token() -> Bytes {
    Bytes::from(uuid::Uuid::new_v4().simple().to_string())
}

/// Renews the tag-list token of `repo`: done by every write that creates
/// or removes a tag name of it, once that is visible in the store.
pub async fn tags_changed(d: &dyn Driver, repo: &RepoName) -> Result<(), StorageError> {
    d.put(&keys::tags_changed(repo), new_token()).await
}

/// Renews the catalog token: done by whatever removes repositories, once
/// they are gone.
pub async fn repositories_changed(d: &dyn Driver) -> Result<(), StorageError> {
    d.put(keys::REPOSITORIES_CHANGED, new_token()).await
}

async fn read_token(d: &dyn Driver, key: &str) -> Result<Token, StorageError> {
    optional(d.get(key).await)
}

/// The cached listings of one store.
pub struct Listings {
    tags: Mutex<TagCache>,
    catalog: Mutex<Catalog>,
    /// Held by the one request that walks the repositories; the others
    /// wait and take its result.
    walking: tokio::sync::Mutex<()>,
}

struct TagCache {
    lists: LruCache<String, Walk>,
    /// Names in `lists`.
    names: usize,
}

#[derive(Default)]
struct Catalog {
    walked: Option<Walk>,
    /// Bumped by [`Listings::repository_added`], so that a walk that began
    /// before a repository was created is not kept.
    generation: u64,
}

/// The names one walk found, with the token read before it.
struct Walk {
    names: Names,
    token: Token,
    /// When the token was read.
    at: Instant,
}

impl Walk {
    /// Its names, while `token` is the one read before it and it is younger
    /// than [`MAX_AGE`] at `now`.
    fn fresh(&self, token: &Token, now: Instant) -> Option<Names> {
        let fresh = &self.token == token && now.saturating_duration_since(self.at) < MAX_AGE;
        fresh.then(|| self.names.clone())
    }
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            tags: Mutex::new(TagCache {
                lists: LruCache::unbounded(),
                names: 0,
            }),
            catalog: Mutex::default(),
            walking: tokio::sync::Mutex::new(()),
        }
    }
}

impl Listings {
    /// Sorted tags of `repo`; `None` when the repository does not exist.
    pub async fn tags(
        &self,
        d: &dyn Driver,
        repo: &RepoName,
    ) -> Result<Option<Names>, StorageError> {
        self.tags_at(d, repo, Instant::now()).await
    }

    async fn tags_at(
        &self,
        d: &dyn Driver,
        repo: &RepoName,
        now: Instant,
    ) -> Result<Option<Names>, StorageError> {
        let token = read_token(d, &keys::tags_changed(repo)).await?;
        let kept = self
            .tags
            .lock()
            .lists
            .get(repo.as_str())
            .map(|w| w.fresh(&token, now));
        if let Some(Some(names)) = kept {
            return Ok(Some(names));
        }
        let tags = tree::tags(d, repo).await?;
        if tags.is_empty() && !tree::in_catalog(d, repo).await? {
            self.forget_tags(repo);
            return Ok(None);
        }
        let names: Names = Arc::new(tags.iter().map(|t| t.to_string()).collect());
        let walk = Walk {
            names: names.clone(),
            token,
            at: now,
        };
        self.keep_tags(repo, walk);
        Ok(Some(names))
    }

    fn keep_tags(&self, repo: &RepoName, walk: Walk) {
        let mut cache = self.tags.lock();
        let added = walk.names.len();
        if let Some(old) = cache.lists.put(repo.to_string(), walk) {
            cache.names -= old.names.len();
        }
        cache.names += added;
        while cache.names > MAX_CACHED_TAGS {
            let Some((_, old)) = cache.lists.pop_lru() else {
                break;
            };
            cache.names -= old.names.len();
        }
    }

    fn forget_tags(&self, repo: &RepoName) {
        let mut cache = self.tags.lock();
        if let Some(old) = cache.lists.pop(repo.as_str()) {
            cache.names -= old.names.len();
        }
    }

    /// Sorted names of the repositories of the catalog (those with
    /// `_manifests`).
    pub async fn catalog(&self, d: &dyn Driver) -> Result<Names, StorageError> {
        self.catalog_at(d, Instant::now()).await
    }

    async fn catalog_at(&self, d: &dyn Driver, now: Instant) -> Result<Names, StorageError> {
        let token = read_token(d, keys::REPOSITORIES_CHANGED).await?;
        if let Some(names) = self.walked(&token, now) {
            return Ok(names);
        }
        let _walking = self.walking.lock().await;
        if let Some(names) = self.walked(&token, now) {
            return Ok(names);
        }
        let generation = self.catalog.lock().generation;
        let repos = tree::catalog(d).await?;
        let names: Names = Arc::new(repos.iter().map(|r| r.to_string()).collect());
        let mut catalog = self.catalog.lock();
        if catalog.generation == generation {
            catalog.walked = Some(Walk {
                names: names.clone(),
                token,
                at: now,
            });
        }
        Ok(names)
    }

    /// The last walk's names when it is still good for `token` at `now`.
    fn walked(&self, token: &Token, now: Instant) -> Option<Names> {
        let catalog = self.catalog.lock();
        catalog.walked.as_ref()?.fresh(token, now)
    }

    /// Records that this process gave `repo` a `_manifests` directory
    /// (called after every manifest write; cheap when it is known).
    pub fn repository_added(&self, repo: &RepoName) {
        let mut catalog = self.catalog.lock();
        catalog.generation += 1;
        if let Some(walk) = &mut catalog.walked {
            if let Err(at) = walk
                .names
                .binary_search_by(|n| n.as_str().cmp(repo.as_str()))
            {
                Arc::make_mut(&mut walk.names).insert(at, repo.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Digest, Tag};
    use crate::storage::memory::MemDriver;
    use crate::storage::tree::write_link;

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap()
    }

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    /// Gives `repo` a manifest, as a push by digest does.
    async fn add_repo(d: &dyn Driver, repo: &RepoName) {
        write_link(d, &keys::revision_link(repo, &digest()), &digest())
            .await
            .unwrap();
    }

    /// Tags as registry:2 or a copy does: no token.
    async fn tag_quietly(d: &dyn Driver, repo: &RepoName, name: &str) {
        let t = Tag::parse(name).unwrap();
        write_link(d, &keys::tag_current_link(repo, &t), &digest())
            .await
            .unwrap();
    }

    async fn untag_quietly(d: &dyn Driver, repo: &RepoName, name: &str) {
        let t = Tag::parse(name).unwrap();
        assert!(d.delete_all(&keys::tag(repo, &t)).await.unwrap());
    }

    /// Tags as berth does: the link, then a new token.
    async fn tag(d: &dyn Driver, repo: &RepoName, name: &str) {
        tag_quietly(d, repo, name).await;
        tags_changed(d, repo).await.unwrap();
    }

    async fn untag(d: &dyn Driver, repo: &RepoName, name: &str) {
        untag_quietly(d, repo, name).await;
        tags_changed(d, repo).await.unwrap();
    }

    async fn tags_at(l: &Listings, d: &dyn Driver, repo: &RepoName, now: Instant) -> Vec<String> {
        l.tags_at(d, repo, now).await.unwrap().unwrap().to_vec()
    }

    async fn catalog_at(l: &Listings, d: &dyn Driver, now: Instant) -> Vec<String> {
        l.catalog_at(d, now).await.unwrap().to_vec()
    }

    #[tokio::test]
    async fn tag_lists_follow_changes_made_through_any_process() {
        // Two servers on one store.
        let d = MemDriver::new();
        let (a, b) = (Listings::default(), Listings::default());
        let app = repo("app");
        let now = Instant::now();
        assert_eq!(a.tags_at(&d, &app, now).await.unwrap(), None);
        add_repo(&d, &app).await;
        assert!(tags_at(&a, &d, &app, now).await.is_empty());

        tag(&d, &app, "b").await;
        tag(&d, &app, "a").await;
        for l in [&a, &b] {
            assert_eq!(tags_at(l, &d, &app, now).await, ["a", "b"]);
        }
        // Through one server, seen by both at the next list.
        tag(&d, &app, "c").await;
        for l in [&a, &b] {
            assert_eq!(tags_at(l, &d, &app, now).await, ["a", "b", "c"]);
        }
        untag(&d, &app, "a").await;
        for l in [&a, &b] {
            assert_eq!(tags_at(l, &d, &app, now).await, ["b", "c"]);
        }
        // A tag directory whose link comes later (walked meanwhile, as
        // another tag changed): not a tag until then.
        let d_tag = Tag::parse("d").unwrap();
        write_link(
            &d,
            &keys::tag_index_link(&app, &d_tag, &digest()),
            &digest(),
        )
        .await
        .unwrap();
        tags_changed(&d, &app).await.unwrap();
        assert_eq!(tags_at(&a, &d, &app, now).await, ["b", "c"]);
        tag(&d, &app, "d").await;
        assert_eq!(tags_at(&a, &d, &app, now).await, ["b", "c", "d"]);

        // The repository removed (garbage collection): unknown at once.
        assert!(d.delete_all(&keys::repo(&app)).await.unwrap());
        tags_changed(&d, &app).await.unwrap();
        assert_eq!(a.tags_at(&d, &app, now).await.unwrap(), None);
        assert_eq!(a.tags.lock().names, 0);
    }

    #[tokio::test]
    async fn changes_without_a_token_are_seen_after_the_maximum_age() {
        // A store berth never wrote to: no token object at all.
        let d = MemDriver::new();
        let l = Listings::default();
        let app = repo("app");
        tag_quietly(&d, &app, "a").await;
        tag_quietly(&d, &app, "b").await;
        let now = Instant::now();
        assert_eq!(tags_at(&l, &d, &app, now).await, ["a", "b"]);

        // registry:2 removes a tag: the kept list is served (no walk)...
        untag_quietly(&d, &app, "a").await;
        let soon = now + MAX_AGE - Duration::from_millis(1);
        assert_eq!(tags_at(&l, &d, &app, soon).await, ["a", "b"]);
        // ... until it is MAX_AGE old.
        let later = now + MAX_AGE;
        assert_eq!(tags_at(&l, &d, &app, later).await, ["b"]);

        // "No token" was kept as a token: berth's first write is seen at once.
        tag(&d, &app, "c").await;
        assert_eq!(tags_at(&l, &d, &app, later).await, ["b", "c"]);
        // And so is the next, without token, once MAX_AGE after that walk.
        tag_quietly(&d, &app, "e").await;
        assert_eq!(tags_at(&l, &d, &app, later).await, ["b", "c"]);
        assert_eq!(
            tags_at(&l, &d, &app, later + MAX_AGE).await,
            ["b", "c", "e"]
        );
    }

    #[test]
    fn tag_cache_keeps_at_most_max_names() {
        let l = Listings::default();
        let big = (0..MAX_CACHED_TAGS / 2 + 1)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>();
        for name in ["a", "b", "c"] {
            let walk = Walk {
                names: Arc::new(big.clone()),
                token: None,
                at: Instant::now(),
            };
            l.keep_tags(&repo(name), walk);
        }
        let cache = l.tags.lock();
        assert_eq!(cache.names, big.len());
        let kept: Vec<&String> = cache.lists.iter().map(|(k, _)| k).collect();
        assert_eq!(kept, ["c"]);
    }

    #[tokio::test]
    async fn catalog_is_walked_again_on_a_new_token_or_age() {
        let d = MemDriver::new();
        let (l, other) = (Listings::default(), Listings::default());
        for name in ["b", "d"] {
            add_repo(&d, &repo(name)).await;
        }
        // Blobs only: not in the catalog.
        let blob_only = repo("blobs/only");
        write_link(&d, &keys::layer_link(&blob_only, &digest()), &digest())
            .await
            .unwrap();
        let now = Instant::now();
        assert_eq!(catalog_at(&l, &d, now).await, ["b", "d"]);
        assert_eq!(catalog_at(&other, &d, now).await, ["b", "d"]);

        // This process's own new repositories show at once.
        add_repo(&d, &repo("c")).await;
        l.repository_added(&repo("c"));
        l.repository_added(&repo("d"));
        assert_eq!(catalog_at(&l, &d, now).await, ["b", "c", "d"]);

        // Removed by another process: seen by every server once it writes
        // a new token.
        assert!(d.delete_all(&keys::repo(&repo("b"))).await.unwrap());
        assert_eq!(catalog_at(&l, &d, now).await, ["b", "c", "d"]);
        repositories_changed(&d).await.unwrap();
        assert_eq!(catalog_at(&l, &d, now).await, ["c", "d"]);
        assert_eq!(catalog_at(&other, &d, now).await, ["c", "d"]);

        // Added by a program that writes no token: seen after the maximum age.
        add_repo(&d, &repo("a")).await;
        let soon = now + MAX_AGE - Duration::from_millis(1);
        assert_eq!(catalog_at(&l, &d, soon).await, ["c", "d"]);
        let later = now + MAX_AGE;
        assert_eq!(catalog_at(&l, &d, later).await, ["a", "c", "d"]);
    }
}
