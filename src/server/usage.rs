//! The usage the running server keeps for each instance
//! ([`crate::registry::Registry::usage`]), written where `berth usage` (and
//! so `./ctl status`) reads it: `STATE/usage/NAME.json`, with the time it
//! was measured. Reading it costs one small file whatever the store's size;
//! walking the store is the server's, in the background, when writes made
//! the figure old.
//!
//! A file rather than an endpoint: it needs no listener nor credentials,
//! it is there for `status` when the server runs under another user or not
//! at all (the last figure, with its time), and the state directory is the
//! one place the server already writes on the host. Owns that file, its
//! format and the job that keeps it current; must not measure anything
//! itself.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Instance;
use crate::registry::usage::{Measured, Usage};

/// How often the job asks the registry whether a measurement is due.
const TICK: Duration = Duration::from_secs(2);
/// How long the job waits after a measurement failed.
const AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The figure as the file holds it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recorded {
    pub bytes: u64,
    pub blobs: usize,
    pub repositories: usize,
    pub tags: usize,
    /// When it was measured, in seconds since the Unix epoch.
    pub measured: u64,
}

impl Recorded {
    fn of(m: &Measured) -> Recorded {
        let Usage {
            bytes,
            blobs,
            repositories,
            tags,
        } = m.usage.clone();
        Recorded {
            bytes,
            blobs,
            repositories,
            tags,
            measured: m
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// `NAME holds … (measured …)`, as `berth usage` prints it.
    pub fn render(&self, instance: &str, now: SystemTime) -> String {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(self.measured);
        let age = now.duration_since(at).unwrap_or_default().as_secs();
        format!(
            "{instance} holds {} bytes in {} blobs, {} repositories, {} tags (measured {}, {} ago)",
            self.bytes,
            self.blobs,
            self.repositories,
            self.tags,
            humantime::format_rfc3339_seconds(at),
            humantime::format_duration(Duration::from_secs(age))
        )
    }
}

/// Where the usage of `instance` is written.
pub fn path(state_dir: &Path, instance: &str) -> PathBuf {
    state_dir.join("usage").join(format!("{instance}.json"))
}

/// The usage last written for `instance`; `None` when there is none.
pub fn read(state_dir: &Path, instance: &str) -> Result<Option<Recorded>, String> {
    let path = path(state_dir, instance);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn write(state_dir: &Path, instance: &str, m: &Measured) -> std::io::Result<()> {
    let path = path(state_dir, instance);
    std::fs::create_dir_all(path.parent().expect("usage path has a parent"))?;
    let json = serde_json::to_vec(&Recorded::of(m)).expect("plain numbers serialize");
    crate::storage::atomic_write(&path, &json)
}

/// Keeps the usage file of one instance current until the instance goes:
/// writes the figure its registry has (a collection's, one measured
/// before a reload), asks for a measurement whenever one is due, and writes
/// each new figure.
pub(super) async fn keep(instance: Weak<Instance>, name: String, state_dir: PathBuf) {
    let mut written: Option<Measured> = None;
    loop {
        let Some(registry) = instance.upgrade().map(|i| i.registry.clone()) else {
            return;
        };
        let mut wait = TICK;
        if let Err(e) = registry.refresh_usage().await {
            tracing::warn!(instance = %name, "cannot measure the usage: {e}");
            wait = AFTER_FAILURE;
        }
        let current = registry.usage();
        drop(registry);
        if let Some(m) = current.filter(|m| written.as_ref() != Some(m)) {
            match write(&state_dir, &name, &m) {
                Ok(()) => written = Some(m),
                Err(e) => {
                    tracing::warn!(instance = %name, path = %path(&state_dir, &name).display(), "cannot write the usage: {e}");
                    wait = AFTER_FAILURE;
                }
            }
        }
        tokio::time::sleep(wait).await;
    }
}
