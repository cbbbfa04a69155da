//! The last collections of a store, kept in it (`berth/gc/history.json`,
//! the newest [`KEPT`]) so that every process serving the store, and the
//! next one started, can show them. Written after each run that was not
//! dry; one run at a time per store, so writers do not race.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Report, Usage};
use crate::oci::RegistryError;
use crate::storage::driver::{optional, Driver};

const KEY: &str = "berth/gc/history.json";
/// Runs kept.
pub const KEPT: usize = 20;

/// One run, as the history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PastRun {
    /// When it finished, in seconds since the epoch.
    pub finished: u64,
    pub tags: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub repositories: usize,
    pub uploads: usize,
    /// What the store held after it.
    pub usage: Usage,
}

impl PastRun {
    pub fn finished_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.finished)
    }
}

/// The runs kept, newest first; none when nothing readable is there.
pub async fn read(d: &dyn Driver) -> Result<Vec<PastRun>, RegistryError> {
    let bytes = optional(d.get(KEY).await)?.unwrap_or_default();
    Ok(serde_json::from_slice(&bytes).unwrap_or_default())
}

/// Adds the run `report`, finished at `finished`.
pub(super) async fn record(
    d: &dyn Driver,
    report: &Report,
    finished: SystemTime,
) -> Result<(), RegistryError> {
    let mut runs = read(d).await?;
    runs.insert(
        0,
        PastRun {
            finished: finished
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |t| t.as_secs()),
            tags: report.tags.len(),
            manifests: report.manifests.len(),
            blobs: report.blobs.len(),
            bytes: report.bytes,
            repositories: report.repositories.len(),
            uploads: report.uploads,
            usage: report.usage.clone(),
        },
    );
    runs.truncate(KEPT);
    let json = serde_json::to_vec(&runs).expect("plain data");
    Ok(d.put(KEY, Bytes::from(json)).await?)
}
