//! Cached tag lists and catalog of one storage root, so that `tags/list` and
//! `_catalog` cost a `stat` or a small read instead of a walk, while other
//! processes (`berth gc`, `berth fsck --repair`, another registry on the
//! same root) change the tree under the running server.
//!
//! - Tags: a repository's sorted tag names are kept with the stamp (inode,
//!   mtime in ns) of its `_manifests/tags` directory, which changes whenever
//!   an entry is created or removed, by whichever process. Re-pointing a tag
//!   changes no name. File-system timestamps are coarse (a kernel tick, a
//!   second on some file systems), so a change in the same tick as the one
//!   before leaves the mtime as it was: a list read while the directory's
//!   mtime is less than [`RACY`] old is not kept (git's "racy" rule). Tag
//!   directories without `current/link` yet (a push between creating the tag
//!   directory and writing its link) are checked again on every read. At
//!   most [`MAX_CACHED_TAGS`] names are kept; the least recently listed
//!   repositories go first.
//! - Catalog: the sorted repository names, walked again when the token in
//!   `<root>/berth/repositories.changed` differs from the one read before
//!   the last walk (garbage collection writes a new one after removing
//!   repositories, from whichever process it runs), or when the walk is
//!   older than [`CATALOG_MAX_AGE`] (which bounds how long changes by
//!   programs that write no token stay unseen). Repositories this process
//!   creates are added at once ([`Listings::repository_added`]).

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;

use super::FsStore;
use crate::oci::RepoName;

/// A directory modified less than this long before it was read may change
/// again without its mtime changing: well above a kernel tick, and the
/// 1–2 s granularity of coarse file systems.
pub const RACY: Duration = Duration::from_secs(2);

/// Tag names kept across all repositories (a few MiB).
pub const MAX_CACHED_TAGS: usize = 50_000;

/// Longest time a catalog walk is trusted without a new token.
pub const CATALOG_MAX_AGE: Duration = Duration::from_secs(30);

/// A sorted list of names, shared by the cache and the requests reading it.
pub type Names = Arc<Vec<String>>;

/// The cached listings of one storage root.
pub struct Listings {
    tags: Mutex<TagCache>,
    catalog: Mutex<Catalog>,
    /// Held by the one request that walks the repositories; the others
    /// wait and take its result.
    walking: Mutex<()>,
}

struct TagCache {
    lists: LruCache<String, TagList>,
    /// Names in `lists`.
    names: usize,
}

#[derive(Clone)]
struct TagList {
    stamp: Stamp,
    tags: Names,
    /// Tag directories that had no `current/link` yet.
    unlinked: Arc<Vec<String>>,
}

/// What changes when entries of a directory are created or removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &Metadata) -> Self {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

#[derive(Default)]
struct Catalog {
    walked: Option<Walk>,
    /// Bumped by [`Listings::repository_added`], so that a walk that began
    /// before a repository was created is not kept.
    generation: u64,
}

struct Walk {
    names: Names,
    token: Option<Vec<u8>>,
    at: Instant,
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            tags: Mutex::new(TagCache {
                lists: LruCache::unbounded(),
                names: 0,
            }),
            catalog: Mutex::default(),
            walking: Mutex::new(()),
        }
    }
}

impl Listings {
    /// Sorted tags of `repo`; `None` when the repository does not exist.
    pub fn tags(&self, store: &FsStore, repo: &RepoName) -> io::Result<Option<Names>> {
        let meta = match fs::metadata(store.tags_dir(repo)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget_tags(repo);
                let exists = store.repo_dir(repo).join("_manifests").is_dir();
                return Ok(exists.then(Names::default));
            }
            Err(e) => return Err(e),
        };
        let stamp = Stamp::of(&meta);
        if let Some(tags) = self.cached_tags(store, repo, stamp) {
            return Ok(Some(tags));
        }
        let read_at = SystemTime::now();
        let scan = store.scan_tags(repo)?;
        let tags = Arc::new(scan.tags);
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| read_at.duration_since(m).ok())
            .is_some_and(|age| age >= RACY);
        if settled {
            self.keep_tags(
                repo,
                TagList {
                    stamp,
                    tags: tags.clone(),
                    unlinked: Arc::new(scan.unlinked),
                },
            );
        }
        Ok(Some(tags))
    }

    /// The kept list of `repo` when its directory still has `stamp` and
    /// none of its unlinked tag directories got a link since.
    fn cached_tags(&self, store: &FsStore, repo: &RepoName, stamp: Stamp) -> Option<Names> {
        let hit = self.tags.lock().lists.get(repo.as_str()).cloned()?;
        let fresh = hit.stamp == stamp
            && !hit
                .unlinked
                .iter()
                .any(|name| store.tag_is_linked(repo, name));
        fresh.then_some(hit.tags)
    }

    fn keep_tags(&self, repo: &RepoName, list: TagList) {
        let mut cache = self.tags.lock();
        let added = list.tags.len();
        if let Some(old) = cache.lists.put(repo.to_string(), list) {
            cache.names -= old.tags.len();
        }
        cache.names += added;
        while cache.names > MAX_CACHED_TAGS {
            let Some((_, old)) = cache.lists.pop_lru() else {
                break;
            };
            cache.names -= old.tags.len();
        }
    }

    fn forget_tags(&self, repo: &RepoName) {
        let mut cache = self.tags.lock();
        if let Some(old) = cache.lists.pop(repo.as_str()) {
            cache.names -= old.tags.len();
        }
    }

    /// Sorted names of every repository (a directory with `_manifests`).
    pub fn catalog(&self, store: &FsStore) -> io::Result<Names> {
        self.catalog_at(store, Instant::now())
    }

    fn catalog_at(&self, store: &FsStore, now: Instant) -> io::Result<Names> {
        let token = store.repositories_token()?;
        if let Some(names) = self.walked(&token, now) {
            return Ok(names);
        }
        let _walking = self.walking.lock();
        if let Some(names) = self.walked(&token, now) {
            return Ok(names);
        }
        let generation = self.catalog.lock().generation;
        let names = Arc::new(store.list_repositories()?);
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
    fn walked(&self, token: &Option<Vec<u8>>, now: Instant) -> Option<Names> {
        let catalog = self.catalog.lock();
        let walk = catalog.walked.as_ref()?;
        let fresh =
            &walk.token == token && now.saturating_duration_since(walk.at) < CATALOG_MAX_AGE;
        fresh.then(|| walk.names.clone())
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
    use std::path::Path;

    use super::*;
    use crate::oci::{Digest, Tag};
    use crate::storage::write_link;

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap()
    }

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    fn tag(store: &FsStore, repo: &RepoName, name: &str) {
        let t = Tag::parse(name).unwrap();
        write_link(&store.tag_current_link(repo, &t), &digest()).unwrap();
    }

    fn untag(store: &FsStore, repo: &RepoName, name: &str) {
        fs::remove_dir_all(store.tag_dir(repo, &Tag::parse(name).unwrap())).unwrap();
    }

    /// Sets the mtime of a directory, as a change within one timestamp tick
    /// leaves it.
    fn set_mtime(dir: &Path, t: SystemTime) {
        fs::File::open(dir).unwrap().set_modified(t).unwrap();
    }

    fn tags(l: &Listings, store: &FsStore, repo: &RepoName) -> Vec<String> {
        l.tags(store, repo).unwrap().unwrap().to_vec()
    }

    #[test]
    fn tag_lists_follow_entries_created_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        let l = Listings::default();
        let app = repo("app");
        assert_eq!(l.tags(&store, &app).unwrap(), None);
        write_link(&store.revision_link(&app, &digest()), &digest()).unwrap();
        assert!(tags(&l, &store, &app).is_empty());

        tag(&store, &app, "b");
        tag(&store, &app, "a");
        // Settled directories (one mtime per state: each is kept).
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let old = |n: u64| hour_ago + Duration::from_secs(n);
        set_mtime(&store.tags_dir(&app), old(1));
        assert_eq!(tags(&l, &store, &app), ["a", "b"]);
        tag(&store, &app, "c");
        assert_eq!(tags(&l, &store, &app), ["a", "b", "c"]);
        untag(&store, &app, "a");
        assert_eq!(tags(&l, &store, &app), ["b", "c"]);

        // A tag directory whose link comes later, without the directory
        // changing again.
        let d = store.tags_dir(&app).join("d");
        fs::create_dir_all(d.join("index")).unwrap();
        set_mtime(&store.tags_dir(&app), old(2));
        assert_eq!(tags(&l, &store, &app), ["b", "c"]);
        tag(&store, &app, "d");
        assert_eq!(
            fs::metadata(store.tags_dir(&app))
                .unwrap()
                .modified()
                .unwrap(),
            old(2)
        );
        assert_eq!(tags(&l, &store, &app), ["b", "c", "d"]);

        fs::remove_dir_all(store.repo_dir(&app).join("_manifests")).unwrap();
        assert_eq!(l.tags(&store, &app).unwrap(), None);
    }

    #[test]
    fn racy_directories_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        let l = Listings::default();
        let app = repo("app");
        tag(&store, &app, "a");
        let tags_dir = store.tags_dir(&app);

        // Read within RACY of its mtime: a change in the same tick that
        // leaves the mtime as it was is still seen.
        let recent = SystemTime::now();
        set_mtime(&tags_dir, recent);
        assert_eq!(tags(&l, &store, &app), ["a"]);
        tag(&store, &app, "b");
        set_mtime(&tags_dir, recent);
        assert_eq!(tags(&l, &store, &app), ["a", "b"]);

        // A settled directory is served from the cache while its stamp
        // stays: a list is one stat.
        let old = recent - Duration::from_secs(3600);
        set_mtime(&tags_dir, old);
        assert_eq!(tags(&l, &store, &app), ["a", "b"]);
        tag(&store, &app, "c");
        set_mtime(&tags_dir, old);
        assert_eq!(tags(&l, &store, &app), ["a", "b"]);
    }

    #[test]
    fn tag_cache_keeps_at_most_max_names() {
        let dir = tempfile::tempdir().unwrap();
        let l = Listings::default();
        let big = (0..MAX_CACHED_TAGS / 2 + 1)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>();
        for name in ["a", "b", "c"] {
            let r = repo(name);
            l.keep_tags(
                &r,
                TagList {
                    stamp: Stamp::of(&fs::metadata(dir.path()).unwrap()),
                    tags: Arc::new(big.clone()),
                    unlinked: Arc::default(),
                },
            );
        }
        let cache = l.tags.lock();
        assert_eq!(cache.names, big.len());
        let kept: Vec<&String> = cache.lists.iter().map(|(k, _)| k).collect();
        assert_eq!(kept, ["c"]);
    }

    #[test]
    fn catalog_is_walked_again_on_a_new_token_or_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        let l = Listings::default();
        let add = |name: &str| {
            write_link(&store.revision_link(&repo(name), &digest()), &digest()).unwrap();
        };
        add("b");
        add("d");
        assert_eq!(*l.catalog(&store).unwrap(), ["b", "d"]);

        // This process's own new repositories show at once.
        add("c");
        l.repository_added(&repo("c"));
        l.repository_added(&repo("d"));
        assert_eq!(*l.catalog(&store).unwrap(), ["b", "c", "d"]);

        // Removed by another process: seen once it writes a new token.
        fs::remove_dir_all(store.repo_dir(&repo("b"))).unwrap();
        assert_eq!(*l.catalog(&store).unwrap(), ["b", "c", "d"]);
        store.repositories_changed().unwrap();
        assert_eq!(*l.catalog(&store).unwrap(), ["c", "d"]);

        // Added by a program that writes no token: seen after the maximum age.
        add("a");
        let now = Instant::now();
        assert_eq!(*l.catalog_at(&store, now).unwrap(), ["c", "d"]);
        let later = now + CATALOG_MAX_AGE;
        assert_eq!(*l.catalog_at(&store, later).unwrap(), ["a", "c", "d"]);
    }
}
