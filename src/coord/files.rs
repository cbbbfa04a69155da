//! The locks of a store on a local filesystem that several processes of
//! one host serve (`berth serve`, and `berth gc` run by hand or by cron):
//! `flock` on lock files in `<root>/berth/`, which the kernel releases
//! when the process holding them exits. `flock` does not queue, so the gc
//! lock has a turnstile in front of it: every taker passes it (it is held
//! only while waiting for the lock itself), and a collection waiting for
//! the exclusive lock holds new writers back until those inside are done.
//! Repositories share [`super::local::REPO_STRIPES`] lock files. A wait
//! cannot be cut off: `flock` waits on the blocking pool, and a wait whose
//! caller gave up takes the lock when it comes and drops it at once.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{local, CoordError, Lock, Mode, Request};

pub(super) struct Files {
    dir: PathBuf,
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

impl Files {
    pub(super) fn new(root: &Path) -> Self {
        Files {
            dir: root.join("berth"),
        }
    }

    /// Takes a lock; `None` when the request does not wait and the lock is
    /// held in a conflicting mode. Waits on the blocking pool.
    pub(super) async fn acquire(&self, r: &Request<'_>) -> Result<Option<File>, CoordError> {
        let path = self.dir.join(match r.lock {
            Lock::GcRun => "gc.run.lock".to_string(),
            Lock::Gc => "gc.lock".to_string(),
            Lock::Repo(_) => format!("locks/repo-{:02x}.lock", local::Locks::stripe(r.key)),
        });
        let turnstile = matches!(r.lock, Lock::Gc).then(|| self.dir.join("gc.turnstile.lock"));
        let (mode, wait) = (r.mode, r.wait);
        let failed = |source: io::Error| CoordError::Files {
            path: path.display().to_string(),
            source,
        };
        let (lock_path, for_error) = (path.clone(), failed);
        let taken = tokio::task::spawn_blocking(move || -> io::Result<Option<File>> {
            let gate = match &turnstile {
                Some(t) => {
                    let gate = open(t)?;
                    if !flock(&gate, Mode::Exclusive, wait)? {
                        return Ok(None);
                    }
                    Some(gate)
                }
                None => None,
            };
            let f = open(&lock_path)?;
            let taken = flock(&f, mode, wait)?;
            drop(gate);
            Ok(taken.then_some(f))
        })
        .await
        .map_err(|e| for_error(io::Error::other(e)))?;
        taken.map_err(for_error)
    }
}
