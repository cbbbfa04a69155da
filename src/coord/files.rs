//! The locks of a store on a local filesystem that several processes of
//! one host serve (`berth serve`, and `berth gc` run by hand or by cron):
//! `flock` on lock files in `<root>/berth/`, which the kernel releases
//! when the process holding them exits.
//!
//! Each lock is first taken in the process's memory ([`super::local`],
//! fair, waiting without a thread), then as a file lock, so that a file
//! lock is waited for by at most one task of a process per exclusive lock,
//! and never by a task that shares: a shared request tries the file lock
//! and, while another process holds it exclusively, tries again every
//! [`RETRY`] instead of holding a thread of the blocking pool (a pool of
//! waiting writers would leave none to the request holding the lock).
//! `flock` does not queue, so the gc lock has a turnstile in front of it:
//! every taker passes it, and a collection waiting for the exclusive lock
//! holds the turnstile, so new writers stay out until those inside are
//! done. Repositories share [`super::local::REPO_STRIPES`] lock files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{local, CoordError, Lock, Mode, Request};

/// How often a shared request tries a file lock held elsewhere.
const RETRY: Duration = Duration::from_millis(5);

pub(super) struct Files {
    dir: PathBuf,
    local: local::Locks,
    /// Shared requests of this process pass the turnstile one at a time
    /// (waiting here, not retrying against each other).
    passage: tokio::sync::Mutex<()>,
}

/// A lock taken: in memory and as a file.
pub(super) struct Held {
    _file: File,
    _local: local::Held,
}

/// Opens (creating it and its directory) a lock file.
fn open(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(path.parent().expect("lock file has a parent"))?;
            open()
        }
        other => other,
    }
}

/// Locks `f`; `false` when it does not wait and the lock is held in a
/// conflicting mode.
fn flock(f: &File, mode: Mode, wait: bool) -> io::Result<bool> {
    let tried = match (mode, wait) {
        (Mode::Shared, true) => return f.lock_shared().map(|()| true),
        (Mode::Exclusive, true) => return f.lock().map(|()| true),
        (Mode::Shared, false) => f.try_lock_shared(),
        (Mode::Exclusive, false) => f.try_lock(),
    };
    match tried {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Takes the file lock at `path` (behind `turnstile`, if any) in `mode`;
/// `None` when `wait` is false and it is held elsewhere.
fn take(path: &Path, turnstile: Option<&Path>, mode: Mode, wait: bool) -> io::Result<Option<File>> {
    let gate = match turnstile {
        Some(t) => {
            let gate = open(t)?;
            if !flock(&gate, Mode::Exclusive, wait)? {
                return Ok(None);
            }
            Some(gate)
        }
        None => None,
    };
    let f = open(path)?;
    let taken = flock(&f, mode, wait)?;
    drop(gate);
    Ok(taken.then_some(f))
}

impl Files {
    pub(super) fn new(root: &Path) -> Self {
        Files {
            dir: root.join("berth"),
            local: local::Locks::default(),
            passage: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes a lock; `None` when the request does not wait and the lock is
    /// held in a conflicting mode.
    pub(super) async fn acquire(&self, r: &Request<'_>) -> Result<Option<Held>, CoordError> {
        let Some(local) = self.local.acquire(r).await else {
            return Ok(None);
        };
        let path = self.dir.join(match r.lock {
            Lock::GcRun => "gc.run.lock".to_string(),
            Lock::Gc => "gc.lock".to_string(),
            Lock::Repo(_) => format!("locks/repo-{:02x}.lock", local::Locks::stripe(r.key)),
        });
        let turnstile = matches!(r.lock, Lock::Gc).then(|| self.dir.join("gc.turnstile.lock"));
        let failed = |source: io::Error| CoordError::Files {
            path: path.display().to_string(),
            source,
        };
        // Shared requests never wait in the blocking pool (see the module doc).
        let block = r.wait && r.mode == Mode::Exclusive;
        loop {
            let (p, t, mode) = (path.clone(), turnstile.clone(), r.mode);
            let passage = match block {
                true => None,
                false => Some(self.passage.lock().await),
            };
            let taken = tokio::task::spawn_blocking(move || take(&p, t.as_deref(), mode, block))
                .await
                .map_err(|e| failed(io::Error::other(e)))?
                .map_err(failed)?;
            drop(passage);
            match taken {
                Some(file) => {
                    return Ok(Some(Held {
                        _file: file,
                        _local: local,
                    }))
                }
                None if r.wait => tokio::time::sleep(RETRY).await,
                None => return Ok(None),
            }
        }
    }
}
