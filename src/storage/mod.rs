//! Content storage in the layout of CNCF Distribution's filesystem driver, so
//! a registry:2 data directory is served as is and vice versa:
//!
//! ```text
//! <root>/docker/registry/v2/blobs/<alg>/<hex[0..2]>/<hex>/data
//! <root>/docker/registry/v2/repositories/<name>/
//!     _layers/<alg>/<hex>/link                      blob linked into the repository
//!     _manifests/revisions/<alg>/<hex>/link          manifest in the repository
//!     _manifests/tags/<tag>/current/link             what the tag points at
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link   every manifest the tag had
//!     _uploads/<id>/{data,startedat,owner}           upload in progress (`owner`: berth's)
//!     _referrers/<alg>/<hex>/<alg>/<hex>/link        referrer of a subject (berth's own;
//!                                                    registry:2 skips `_` directories)
//! <root>/berth/                                     berth's own state beside it:
//!     gc.lock, gc.turnstile.lock, gc.run.lock,
//!     locks/repo-XX.lock                             lock files (coord::Coordinator::files)
//!     gc.journal/<id>                                what requests wrote while a GC runs
//!     pulls.json, pulls/<process>.json               last pulls (registry::pulls)
//!     repositories.changed, tags.changed/<name>/_token
//!                                                    tokens of the listings (listing)
//! ```
//!
//! Every file that readers see is written to a temporary name in the same
//! directory, fsynced and renamed into place, so a crash leaves either the old
//! or the new content, never a torn file. This module owns the driver trait
//! and its drivers, the layout as keys and paths, and the atomic file
//! operations; it knows nothing of manifests or HTTP.

mod append;
pub mod driver;
pub mod filesystem;
pub mod hash;
pub mod keys;
pub mod listing;
pub mod memory;
pub mod pipeline;
mod read;
pub mod tree;

pub use append::Appender;
pub use read::FileRange;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::oci::{Algorithm, Digest, RepoName, Tag};

/// One instance's storage root.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// `<root>/docker/registry/v2`
    v2: PathBuf,
}

impl FsStore {
    pub fn new(root: &Path) -> Self {
        FsStore {
            root: root.to_path_buf(),
            v2: root.join(keys::V2),
        }
    }

    fn at(&self, key: String) -> PathBuf {
        self.root.join(key)
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.at(keys::blob(d))
    }

    pub fn repositories_dir(&self) -> PathBuf {
        self.at(keys::repositories())
    }

    /// `<root>/docker/registry/v2`, the top of everything registry:2 reads.
    pub fn v2_dir(&self) -> &Path {
        &self.v2
    }

    /// `<root>/docker/registry/v2/blobs`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.at(keys::blobs())
    }

    pub fn layer_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.at(keys::layer_link(repo, d))
    }

    pub fn revision_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.at(keys::revision_link(repo, d))
    }

    pub fn tag_current_link(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.at(keys::tag_current_link(repo, tag))
    }

    pub fn tag_index_link(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> PathBuf {
        self.at(keys::tag_index_link(repo, tag, d))
    }

    pub fn upload_dir(&self, repo: &RepoName, id: &str) -> PathBuf {
        self.at(keys::upload(repo, id))
    }

    pub fn referrer_link(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> PathBuf {
        self.at(keys::referrer_link(repo, subject, referrer))
    }

    /// Size of a stored blob, `None` when absent.
    pub fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `bytes` as the blob `d` (the caller has verified the digest).
    pub fn write_blob(&self, d: &Digest, bytes: &[u8]) -> io::Result<()> {
        let path = self.blob_path(d);
        if path.exists() {
            return Ok(());
        }
        atomic_write(&path, bytes)
    }

    /// Moves a verified, fsynced upload file into the blob store.
    pub fn commit_blob_file(&self, d: &Digest, src: &Path) -> io::Result<()> {
        let path = self.blob_path(d);
        let dir = path.parent().expect("blob path has a parent");
        fs::create_dir_all(dir)?;
        fs::rename(src, &path)?;
        sync_dir(dir)
    }

    /// Every repository directory, whatever it holds: a directory with at
    /// least one `_`-prefixed subdirectory (`_manifests`, `_layers`,
    /// `_uploads`, `_referrers`). Sorted.
    pub fn list_repository_dirs(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.repositories_dir(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut is_repo = false;
            for entry in entries {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('_') {
                    is_repo = true;
                } else {
                    let child = if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
            if is_repo && !prefix.is_empty() {
                out.push(prefix);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Names of the tags of a repository that point at something, sorted;
    /// `None` when the repository does not exist (read by fsck's tests).
    #[cfg(test)]
    pub fn list_tags(&self, repo: &RepoName) -> io::Result<Option<Vec<String>>> {
        if !self.at(keys::repo(repo)).join("_manifests").is_dir() {
            return Ok(None);
        }
        let mut tags = Vec::new();
        let entries = match fs::read_dir(self.at(keys::tags(repo))) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(tags)),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.path().join("current/link").is_file() {
                tags.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        tags.sort();
        Ok(Some(tags))
    }

    /// Renews the tag-list token of `repo` ([`listing::tags_changed`]), for
    /// what still changes tags through paths (fsck).
    pub fn tags_changed(&self, repo: &RepoName) -> io::Result<()> {
        atomic_write(&self.at(keys::tags_changed(repo)), &listing::new_token())
    }
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a link file (`sha256:<hex>`); `None` when absent or not a valid digest.
pub fn read_link(path: &Path) -> io::Result<Option<Digest>> {
    Ok(read_optional(path)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| Digest::parse(s.trim()).ok()))
}

/// Writes a link file atomically.
pub fn write_link(path: &Path, d: &Digest) -> io::Result<()> {
    atomic_write(path, d.to_string().as_bytes())
}

/// Removes a file; `false` when it was not there.
pub fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a directory tree; `false` when it was not there.
pub fn remove_dir_all(path: &Path) -> io::Result<bool> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it and renames it
/// over `path`, then fsyncs the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("path has a parent");
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether a file name is one of [`atomic_write`]'s temporary names
/// (`.NAME.<uuid>.tmp`); one that outlives its write was left by a crash.
pub fn is_temp_name(name: &str) -> bool {
    name.len() > ".x.tmp".len() && name.starts_with('.') && name.ends_with(".tmp")
}

/// fsyncs a directory so that a rename into it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens an upload's data file for appending at `offset`, cutting off any
/// bytes past it (left by a chunk that failed half-way).
pub fn open_upload_at(path: &Path, offset: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.set_len(offset)?;
    let mut f = f;
    io::Seek::seek(&mut f, io::SeekFrom::Start(offset))?;
    Ok(f)
}

/// Hashes a file from disk with `algorithm`.
pub fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    use sha2::Digest as _;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    macro_rules! run {
        ($h:expr) => {{
            let mut h = $h;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            hex::encode(h.finalize())
        }};
    }
    let hex = match algorithm {
        Algorithm::Sha256 => run!(sha2::Sha256::new()),
        Algorithm::Sha512 => run!(sha2::Sha512::new()),
    };
    Ok(Digest::from_parts(algorithm, hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    #[test]
    fn layout_matches_distribution() {
        let s = FsStore::new(Path::new("/r"));
        let d = digest('a');
        let repo = RepoName::parse("a/b").unwrap();
        let tag = Tag::parse("v1").unwrap();
        let h = "a".repeat(64);
        assert_eq!(
            s.blob_path(&d),
            PathBuf::from(format!("/r/docker/registry/v2/blobs/sha256/aa/{h}/data"))
        );
        assert_eq!(
            s.layer_link(&repo, &d),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/a/b/_layers/sha256/{h}/link"
            ))
        );
        assert_eq!(
            s.revision_link(&repo, &d),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/a/b/_manifests/revisions/sha256/{h}/link"
            ))
        );
        assert_eq!(
            s.tag_current_link(&repo, &tag),
            PathBuf::from("/r/docker/registry/v2/repositories/a/b/_manifests/tags/v1/current/link")
        );
        assert_eq!(
            s.tag_index_link(&repo, &tag, &d),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/a/b/_manifests/tags/v1/index/sha256/{h}/link"
            ))
        );
        assert_eq!(
            s.upload_dir(&repo, "u1"),
            PathBuf::from("/r/docker/registry/v2/repositories/a/b/_uploads/u1")
        );
    }

    #[test]
    fn links_round_trip_and_tags_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path());
        let d = digest('b');
        for name in ["x", "x/y", "z/w/v"] {
            let repo = RepoName::parse(name).unwrap();
            write_link(&s.revision_link(&repo, &d), &d).unwrap();
            assert_eq!(
                read_link(&s.revision_link(&repo, &d)).unwrap(),
                Some(d.clone())
            );
        }
        let repo = RepoName::parse("x").unwrap();
        assert_eq!(s.list_tags(&repo).unwrap(), Some(vec![]));
        write_link(&s.tag_current_link(&repo, &Tag::parse("b").unwrap()), &d).unwrap();
        write_link(&s.tag_current_link(&repo, &Tag::parse("a").unwrap()), &d).unwrap();
        assert_eq!(
            s.list_tags(&repo).unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            s.list_tags(&RepoName::parse("nope").unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn atomic_write_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/file");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn upload_reopen_truncates_past_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        fs::write(&p, b"hello world").unwrap();
        let mut f = open_upload_at(&p, 5).unwrap();
        f.write_all(b"!").unwrap();
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"hello!");
        assert_eq!(
            hash_file(&p, Algorithm::Sha256).unwrap(),
            Digest::of(Algorithm::Sha256, b"hello!")
        );
    }
}
