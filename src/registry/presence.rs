//! The berth processes serving a store, seen through heartbeat objects
//! (`berth/processes/<process>`), so that garbage collection runs only
//! where every live process takes the same locks.
//!
//! The protocol:
//!
//! - every `berth serve` writes its heartbeat into each instance's store
//!   when it starts and every [`BEAT`] after, and deletes it when it stops.
//!   A heartbeat names the process (host, pid, start time) and its lock
//!   domain ([`Coordinator::domain`]: lock files of one kernel, or a
//!   PostgreSQL server and store name);
//! - a heartbeat not rewritten for [`STALE`] (by its modification time, the
//!   store's clock) is of a process that is gone (killed, or its machine
//!   lost);
//! - before a collection deletes anything (when it begins, and again when
//!   it decides), the collecting process reads every live heartbeat. One in
//!   another domain is a process whose writes its locks cannot hold back
//!   (two hosts on one NFS root with lock files; one process with
//!   `[coordination]` and one without), and the collection is refused with
//!   a message that names the process and what to configure. A dry run
//!   deletes nothing and is not refused.
//!
//! This detects a misconfiguration; it is not a lock. A process that
//! starts between a collection's last check and its deletions is not seen
//! by that collection, and `berth gc` writes no heartbeat (it refuses when
//! it sees a server in another domain, and a server refuses when it sees
//! none — two collections with no server writing lose nothing).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::coord::{self, Coordinator};
use crate::storage::driver::{optional, Driver, StorageError};
use crate::storage::keys;

/// How often a serving process rewrites its heartbeat.
pub const BEAT: Duration = Duration::from_secs(10);

/// A heartbeat older than this is of a process that is gone.
pub const STALE: Duration = Duration::from_secs(60);

/// What a heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub host: String,
    pub pid: u32,
    /// When the process started (RFC 3339).
    pub started: String,
    /// Its lock domain.
    pub domain: String,
}

/// This process: its key in every store, and when it started.
fn this_process() -> &'static (String, String) {
    static PROCESS: OnceLock<(String, String)> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let key = format!("{}/{}", keys::PROCESSES, uuid::Uuid::new_v4().simple());
        let started = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        (key, started)
    })
}

/// Writes (or rewrites) this process's heartbeat into the store.
pub async fn beat(driver: &dyn Driver, coord: &Coordinator) -> Result<(), StorageError> {
    let (key, started) = this_process();
    let beat = Heartbeat {
        host: coord::host().name.clone(),
        pid: std::process::id(),
        started: started.clone(),
        domain: coord.domain(),
    };
    let json = serde_json::to_vec(&beat).expect("a heartbeat serializes");
    driver.put(key, Bytes::from(json)).await
}

/// Deletes this process's heartbeat (it stops serving the store).
pub async fn leave(driver: &dyn Driver) -> Result<(), StorageError> {
    driver.delete(&this_process().0).await.map(drop)
}

/// The live heartbeats in the store at `now`, with their age.
pub async fn live(
    driver: &dyn Driver,
    now: SystemTime,
) -> Result<Vec<(Heartbeat, Duration)>, StorageError> {
    let names: Vec<String> = driver.list(keys::PROCESSES).try_collect().await?;
    let mut out = Vec::new();
    for name in names {
        let key = format!("{}/{name}", keys::PROCESSES);
        let (Some(meta), Some(bytes)) = (
            optional(driver.stat(&key).await)?,
            optional(driver.get(&key).await)?,
        ) else {
            continue;
        };
        // Written in the future by a clock ahead of ours: as good as now.
        let age = now.duration_since(meta.modified).unwrap_or_default();
        // Not berth's, or written half by a crashed store: not a process.
        let Ok(beat) = serde_json::from_slice::<Heartbeat>(&bytes) else {
            continue;
        };
        if age < STALE {
            out.push((beat, age));
        }
    }
    Ok(out)
}

/// Why a collection through `coord` must not run on this store at `now`:
/// a live process that takes its locks elsewhere; `None` when every live
/// process shares them.
pub async fn refusal(
    driver: &dyn Driver,
    coord: &Coordinator,
    now: SystemTime,
) -> Result<Option<String>, StorageError> {
    refusal_in(driver, &coord.domain(), now).await
}

/// [`refusal`] for a process whose lock domain is `ours`.
pub async fn refusal_in(
    driver: &dyn Driver,
    ours: &str,
    now: SystemTime,
) -> Result<Option<String>, StorageError> {
    let others: Vec<String> = live(driver, now)
        .await?
        .into_iter()
        .filter(|(b, _)| b.domain != ours)
        .map(|(b, age)| {
            format!(
                "berth process {} on host {} (started {}, heartbeat {}s ago) takes its locks \
                 through {}",
                b.pid,
                b.host,
                b.started,
                age.as_secs(),
                b.domain
            )
        })
        .collect();
    if others.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "garbage collection refused: {}; this process takes its locks through {ours}, so it \
         cannot hold back that process's writes and could delete what they reference. Give \
         every berth process serving this store the same [coordination] postgres in berth.toml",
        others.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemDriver;

    fn other(domain: &str) -> Bytes {
        let b = Heartbeat {
            host: "elsewhere".into(),
            pid: 7,
            started: "2026-01-01T00:00:00Z".into(),
            domain: domain.into(),
        };
        Bytes::from(serde_json::to_vec(&b).unwrap())
    }

    #[tokio::test]
    async fn a_live_process_in_another_domain_refuses_collection() {
        let d = MemDriver::new();
        let coord = Coordinator::local();
        let now = SystemTime::now();
        beat(&d, &coord).await.unwrap();
        // Only this process: nothing to refuse.
        assert_eq!(refusal(&d, &coord, now).await.unwrap(), None);
        let key = format!("{}/other", keys::PROCESSES);
        d.put(&key, other(&coord.domain())).await.unwrap();
        assert_eq!(refusal(&d, &coord, now).await.unwrap(), None);
        d.put(&key, other("lock files of the kernel booted as x"))
            .await
            .unwrap();
        let why = refusal(&d, &coord, now).await.unwrap().unwrap();
        assert!(why.contains("berth process 7 on host elsewhere"), "{why}");
        assert!(
            why.contains("lock files of the kernel booted as x"),
            "{why}"
        );
        assert!(why.contains("[coordination] postgres"), "{why}");
        // Gone quiet: that process is dead.
        let later = now + STALE + Duration::from_secs(1);
        assert_eq!(refusal(&d, &coord, later).await.unwrap(), None);
        // Something else under the prefix is not a process.
        d.put(&key, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(refusal(&d, &coord, now).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_process_that_leaves_is_gone_at_once() {
        let d = MemDriver::new();
        beat(&d, &Coordinator::local()).await.unwrap();
        let now = SystemTime::now();
        assert_eq!(live(&d, now).await.unwrap().len(), 1);
        leave(&d).await.unwrap();
        assert!(live(&d, now).await.unwrap().is_empty());
    }
}
