//! The locks of a store served by one process: tokio read-write locks,
//! fair like PostgreSQL's queue (a waiting writer is not overtaken by later
//! readers). Repositories share [`REPO_STRIPES`] locks by their key, so
//! memory stays bounded; two repositories on one stripe only wait for each
//! other, and a holder takes one repository at a time, so stripes never
//! deadlock.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::{Lock, Mode, Request};

/// Locks shared by the repositories of one store.
pub(super) const REPO_STRIPES: usize = 256;

pub(super) struct Locks {
    gc_run: Arc<RwLock<()>>,
    gc: Arc<RwLock<()>>,
    repos: Vec<Arc<RwLock<()>>>,
}

/// A held lock (one of the two); released when dropped.
pub(super) struct Held {
    _shared: Option<OwnedRwLockReadGuard<()>>,
    _exclusive: Option<OwnedRwLockWriteGuard<()>>,
}

impl Held {
    fn shared(g: OwnedRwLockReadGuard<()>) -> Self {
        Held {
            _shared: Some(g),
            _exclusive: None,
        }
    }

    fn exclusive(g: OwnedRwLockWriteGuard<()>) -> Self {
        Held {
            _shared: None,
            _exclusive: Some(g),
        }
    }
}

impl Default for Locks {
    fn default() -> Self {
        Locks {
            gc_run: Arc::default(),
            gc: Arc::default(),
            repos: (0..REPO_STRIPES).map(|_| Arc::default()).collect(),
        }
    }
}

/// The locks of every store of a process (a handful: one per instance), by
/// name.
#[derive(Default)]
pub(super) struct Stores(Mutex<HashMap<String, Arc<Locks>>>);

impl Stores {
    pub(super) fn of(&self, store: &str) -> Arc<Locks> {
        self.0.lock().entry(store.to_string()).or_default().clone()
    }
}

impl Locks {
    pub(super) fn stripe(key: i64) -> usize {
        key.rem_euclid(REPO_STRIPES as i64) as usize
    }

    /// Takes a lock; `None` when the request does not wait and the lock is
    /// held in a conflicting mode.
    pub(super) async fn acquire(&self, r: &Request<'_>) -> Option<Held> {
        let l = match r.lock {
            Lock::GcRun => &self.gc_run,
            Lock::Gc => &self.gc,
            Lock::Repo(_) => &self.repos[Self::stripe(r.key)],
        }
        .clone();
        match (r.mode, r.wait) {
            (Mode::Shared, true) => Some(Held::shared(l.read_owned().await)),
            (Mode::Exclusive, true) => Some(Held::exclusive(l.write_owned().await)),
            (Mode::Shared, false) => l.try_read_owned().ok().map(Held::shared),
            (Mode::Exclusive, false) => l.try_write_owned().ok().map(Held::exclusive),
        }
    }
}
