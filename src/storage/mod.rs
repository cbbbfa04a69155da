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
//! <root>/quarantine/<run>/                          what `berth fsck --repair` moved aside:
//!     actions.log, <key of each object moved>        (registry::fsck)
//! ```
//!
//! Every file that readers see is written to a temporary name in the same
//! directory, fsynced and renamed into place, so a crash leaves either the old
//! or the new content, never a torn file. This module owns the driver trait
//! and its drivers, the layout as keys, and the atomic file operations the
//! filesystem driver is made of; it knows nothing of manifests or HTTP.

mod append;
pub mod cache;
pub mod driver;
pub mod filesystem;
pub mod hash;
pub mod keys;
pub mod listing;
pub mod location;
pub mod memory;
pub mod pipeline;
mod read;
pub mod s3;
pub mod spill;
pub mod tree;

use append::Appender;
use read::FileRange;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/file");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
    }
}
