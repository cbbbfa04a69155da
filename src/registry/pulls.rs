//! When each tag ("repo:tag") was last pulled, for retention's
//! `unpulled_for`, across every process serving the store.
//!
//! Each process keeps the pulls it served in memory and writes them, every
//! so often and at shutdown, to an object of its own,
//! `berth/pulls/<process>.json`: processes never write the same object,
//! so two flushing at once lose nothing. A reader merges every such object
//! and `berth/pulls.json` (the compacted log, and what older versions
//! wrote) by the latest time per tag. A garbage collection, which runs one
//! at a time, compacts: it writes the merged log to `berth/pulls.json` and
//! deletes the objects of processes that have not written for
//! [`STALE`] (what they held is in the compacted log by then).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;
use parking_lot::Mutex;

use crate::oci::RegistryError;
use crate::storage::driver::{optional, Driver};

/// The compacted log.
const COMPACTED: &str = "berth/pulls.json";
/// Where each process writes its own.
const PER_PROCESS: &str = "berth/pulls";
/// A process object not written for this long is folded into the
/// compacted log and deleted.
pub const STALE: Duration = Duration::from_secs(3600);

/// Last pull per tag.
pub type Pulls = HashMap<String, SystemTime>;

/// The pulls this process served, and whether some are not written yet.
pub struct PullLog {
    process: String,
    times: Mutex<(Pulls, bool)>,
}

fn parse(bytes: &[u8]) -> Pulls {
    let raw: HashMap<String, u64> = serde_json::from_slice(bytes).unwrap_or_default();
    raw.into_iter()
        .map(|(k, secs)| (k, SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
        .collect()
}

fn render(pulls: &Pulls) -> Bytes {
    let secs: HashMap<&String, u64> = pulls
        .iter()
        .map(|(k, t)| {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            (k, secs)
        })
        .collect();
    serde_json::to_vec(&secs).expect("a map of numbers").into()
}

/// Adds `from` to `into`, keeping the latest time per tag.
fn merge(into: &mut Pulls, from: Pulls) {
    for (k, t) in from {
        let e = into.entry(k).or_insert(t);
        *e = (*e).max(t);
    }
}

impl Default for PullLog {
    fn default() -> Self {
        PullLog {
            process: uuid::Uuid::new_v4().simple().to_string(),
            times: Mutex::default(),
        }
    }
}

impl PullLog {
    pub fn pulled(&self, tag: String, at: SystemTime) {
        let mut log = self.times.lock();
        log.0.insert(tag, at);
        log.1 = true;
    }

    fn own_key(&self) -> String {
        format!("{PER_PROCESS}/{}.json", self.process)
    }

    /// Writes this process's pulls if some are new.
    pub async fn flush(&self, driver: &dyn Driver) -> Result<(), RegistryError> {
        let snapshot = {
            let mut log = self.times.lock();
            if !log.1 {
                return Ok(());
            }
            log.1 = false;
            log.0.clone()
        };
        let written = driver.put(&self.own_key(), render(&snapshot)).await;
        if written.is_err() {
            // Try again next time.
            self.times.lock().1 = true;
        }
        Ok(written?)
    }

    /// Every process's pulls, merged, with this one's in memory.
    pub async fn load(&self, driver: &dyn Driver) -> Result<Pulls, RegistryError> {
        Ok(self.read_all(driver).await?.0)
    }

    /// The merged log and the process objects it came from.
    async fn read_all(&self, driver: &dyn Driver) -> Result<(Pulls, Vec<String>), RegistryError> {
        let mut all = Pulls::new();
        if let Some(b) = optional(driver.get(COMPACTED).await)? {
            merge(&mut all, parse(&b));
        }
        let names: Vec<String> = driver.list(PER_PROCESS).try_collect().await?;
        let mut keys = Vec::new();
        for name in names.iter().filter(|n| n.ends_with(".json")) {
            let key = format!("{PER_PROCESS}/{name}");
            if let Some(b) = optional(driver.get(&key).await)? {
                merge(&mut all, parse(&b));
                keys.push(key);
            }
        }
        merge(&mut all, self.times.lock().0.clone());
        Ok((all, keys))
    }

    /// Folds the objects of processes gone quiet into the compacted log;
    /// returns the merged log. Only one collection runs at a time.
    pub async fn compact(&self, driver: &dyn Driver) -> Result<Pulls, RegistryError> {
        let (all, keys) = self.read_all(driver).await?;
        driver.put(COMPACTED, render(&all)).await?;
        let own = self.own_key();
        for key in keys.iter().filter(|k| **k != own) {
            // Looked at again just before: a process that wrote since keeps
            // its object.
            let Some(meta) = optional(driver.stat(key).await)? else {
                continue;
            };
            let quiet = SystemTime::now()
                .duration_since(meta.modified)
                .is_ok_and(|age| age >= STALE);
            if quiet {
                driver.delete(key).await?;
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemDriver;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn processes_sharing_a_store_see_each_others_pulls() {
        let store = MemDriver::new();
        let (a, b) = (PullLog::default(), PullLog::default());
        a.pulled("r:one".into(), at(100));
        a.pulled("r:both".into(), at(200));
        b.pulled("r:two".into(), at(150));
        b.pulled("r:both".into(), at(300));
        // Both flush "at once": each writes its own object.
        let (fa, fb) = tokio::join!(a.flush(&store), b.flush(&store));
        fa.unwrap();
        fb.unwrap();
        let seen = PullLog::default().load(&store).await.unwrap();
        assert_eq!(seen["r:one"], at(100));
        assert_eq!(seen["r:two"], at(150));
        assert_eq!(seen["r:both"], at(300));
        // Compaction keeps everything (the objects are fresh, so they stay).
        let merged = a.compact(&store).await.unwrap();
        assert_eq!(merged, seen);
        assert_eq!(PullLog::default().load(&store).await.unwrap(), seen);
    }

    #[tokio::test]
    async fn nothing_new_writes_nothing() {
        let store = MemDriver::new();
        let a = PullLog::default();
        a.pulled("r:t".into(), at(5));
        a.flush(&store).await.unwrap();
        // Nothing new: nothing written.
        store.delete(&a.own_key()).await.unwrap();
        a.flush(&store).await.unwrap();
        assert!(store.get(&a.own_key()).await.is_err());
    }
}
