//! The locks of a store on a local filesystem that several processes of
//! one host serve (`berth serve`, and `berth gc` run by hand or by cron):
//! `flock` on lock files in `<root>/berth/`, which the kernel releases
//! when the process holding them exits.
//!
//! Each lock is first taken in the process's memory ([`super::local`],
//! fair, waiting without a thread), then as a file lock. File locks are
//! only ever tried, never waited for in a thread (opening a lock file and
//! trying it run on the task: neither waits for the disk, the directory
//! being in use on every request): a request whose lock is
//! held by another process tries again every [`RETRY`]. Nothing runs on
//! behalf of a request after it is dropped (a wait cut off by a timeout or
//! a client that went away leaves no thread that takes the lock later), and
//! no pool of waiting threads can leave none to the request holding the
//! lock. `flock` does not queue, so the gc lock has a turnstile in front of
//! it: every taker passes it, and a collection waiting for the exclusive
//! lock holds the turnstile while it waits, so new writers stay out until
//! those inside are done. Repositories share [`super::local::REPO_STRIPES`] lock files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{local, CoordError, Lock, Mode, Request};

/// How often a request tries again a file lock held elsewhere.
const RETRY: Duration = Duration::from_millis(5);

pub(super) struct Files {
    dir: PathBuf,
    local: local::Locks,
    /// The requests of this process try file locks one at a time (waiting
    /// here, not retrying against each other).
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

/// Tries to lock `f`; `false` when it is held in a conflicting mode.
fn try_flock(f: &File, mode: Mode) -> io::Result<bool> {
    let tried = match mode {
        Mode::Shared => f.try_lock_shared(),
        Mode::Exclusive => f.try_lock(),
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
        let failed = |path: &Path, source: io::Error| CoordError::Files {
            path: path.display().to_string(),
            source,
        };
        let file = open(&path).map_err(|e| failed(&path, e))?;
        let gate = match turnstile {
            Some(t) => Some((open(&t).map_err(|e| failed(&t, e))?, t)),
            None => None,
        };
        // An exclusive request that waits keeps the turnstile once passed.
        let keep_gate = r.wait && r.mode == Mode::Exclusive;
        let mut inside = false;
        loop {
            let passage = self.passage.lock().await;
            let mut taken = false;
            if let Some((g, t)) = gate.as_ref().filter(|_| !inside) {
                inside = try_flock(g, Mode::Exclusive).map_err(|e| failed(t, e))?;
            }
            if gate.is_none() || inside {
                taken = try_flock(&file, r.mode).map_err(|e| failed(&path, e))?;
            }
            if let Some((g, t)) = gate.as_ref().filter(|_| inside && (taken || !keep_gate)) {
                g.unlock().map_err(|e| failed(t, e))?;
                inside = false;
            }
            drop(passage);
            match taken {
                true => {
                    return Ok(Some(Held {
                        _file: file,
                        _local: local,
                    }))
                }
                false if r.wait => tokio::time::sleep(RETRY).await,
                false => return Ok(None),
            }
        }
    }
}
