//! What an instance holds ([`Usage`]) as a running registry keeps it: a
//! measurement (the catalog, the tags of each repository and the sizes in
//! the blob store; not the links and manifests a collection reads), taken
//! again when writes may have changed it, and the figure of each
//! collection's report. Knows nothing of where the figure is shown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::gc::scan;
use crate::storage::driver::{Driver, StorageError};
use crate::storage::tree;

/// What an instance holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub blobs: usize,
    pub repositories: usize,
    pub tags: usize,
}

/// The repositories in the catalog and their tags.
pub(super) async fn catalog_counts(d: &dyn Driver) -> Result<(usize, usize), StorageError> {
    let mut repositories = 0;
    let mut tags = 0;
    for repo in tree::repositories(d).await? {
        if tree::in_catalog(d, &repo).await? {
            repositories += 1;
            tags += tree::tags(d, &repo).await?.len();
        }
    }
    Ok((repositories, tags))
}

/// Measures what the store holds now.
pub(super) async fn measure(d: &dyn Driver) -> Result<Usage, StorageError> {
    let (repositories, tags) = catalog_counts(d).await?;
    let blobs = scan::blobs(d).await?;
    Ok(Usage {
        bytes: blobs.iter().map(|b| b.size).sum(),
        blobs: blobs.len(),
        repositories,
        tags,
    })
}

/// Shortest time between two measurements after writes.
const MIN_GAP: Duration = Duration::from_secs(5);
/// A measurement is taken again after this even without writes here
/// (other processes, `berth gc`, may change the store).
const REFRESH: Duration = Duration::from_secs(3600);
/// Measurements take at most a tenth of the time: a store that takes a
/// minute to measure is measured at most every ten minutes.
const DUTY: u32 = 10;

/// A figure and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub usage: Usage,
    pub at: SystemTime,
}

struct Last {
    measured: Measured,
    /// When it was taken, and how long that took.
    taken: Instant,
    took: Duration,
    /// The count of changes it includes.
    changes: u64,
}

/// The usage a registry keeps, and the count of its writes that may have
/// changed it since.
#[derive(Default)]
pub(super) struct Kept {
    changes: AtomicU64,
    last: Mutex<Option<Last>>,
}

impl Kept {
    /// A write that may change the usage was made.
    pub(super) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn current(&self) -> Option<Measured> {
        self.last.lock().as_ref().map(|l| l.measured.clone())
    }

    /// Whether a measurement is due now.
    fn due(&self) -> bool {
        let last = self.last.lock();
        let Some(l) = last.as_ref() else {
            return true;
        };
        let since = l.taken.elapsed();
        let changed = self.changes.load(Ordering::Relaxed) != l.changes;
        (changed && since >= MIN_GAP.max(l.took * DUTY)) || since >= REFRESH.max(l.took * DUTY)
    }

    /// Takes `usage` as the figure (a collection's report), including the
    /// changes counted up to `changes`.
    pub(super) fn set(&self, usage: Usage, changes: u64, took: Duration) {
        *self.last.lock() = Some(Last {
            measured: Measured {
                usage,
                at: SystemTime::now(),
            },
            taken: Instant::now(),
            took,
            changes,
        });
    }

    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Measures `d` when due; the new figure when one was taken.
    pub(super) async fn refresh(&self, d: &dyn Driver) -> Result<Option<Measured>, StorageError> {
        if !self.due() {
            return Ok(None);
        }
        let changes = self.changes();
        let started = Instant::now();
        let usage = measure(d).await?;
        self.set(usage, changes, started.elapsed());
        Ok(self.current())
    }
}
