//! `berth fsck`: verifies one instance's storage and, on request, repairs it,
//! all through the storage [`Driver`] (so it runs on the in-memory driver
//! in tests as on a directory).
//!
//! Checked, in this order:
//!
//! 1. every blob under `blobs/` hashes to its name (streamed as the driver
//!    reads it, so memory stays flat whatever the blob size);
//! 2. per repository, every `_layers`, `_manifests/revisions`, tag
//!    (`current` and `index`) and `_referrers` link holds the digest of its
//!    directory and points at a blob that is present and intact;
//! 3. every manifest of a repository has its config and layers linked into
//!    the repository and intact, and every child of an index is a complete
//!    manifest of the repository;
//! 4. every tag resolves to a manifest revision of its repository.
//!
//! Repair ([`Options::repair`]):
//!
//! - a corrupt blob is moved ([`Driver::rename`]) to
//!   `quarantine/<run>/<its key>`. `quarantine/` is outside `docker/`, which
//!   is all that registry:2 and berth read, so neither serves nor collects
//!   it; nothing is deleted;
//! - a link whose blob is missing or corrupt is removed, and so is a tag
//!   whose manifest is not in the repository;
//! - a link that holds something else than its directory's digest is
//!   rewritten;
//! - a manifest reference whose blob is intact but not linked into the
//!   repository is linked again;
//! - a manifest one of whose references is lost (blob missing or corrupt,
//!   child manifest incomplete) is unlinked from its repository together
//!   with the tags pointing at it, since it cannot be pulled any more. Its
//!   bytes stay in `blobs/` and the report names its digest and tags, so it
//!   can be pushed again once the lost content is back.
//!
//! Every action is also appended to `quarantine/<run>/actions.log`, one
//! line each. The run claims its name by creating the empty log
//! ([`Driver::put_new`]: a run of the same second takes the next name);
//! each action is applied, then its line appended with the driver's writer
//! and made durable before the next change, as an upload's chunk is. A
//! crash mid-run thus leaves the lines of every action done but the one
//! under way (whose line may be missing or cut short). Rewriting the whole
//! log at each action would cost writes quadratic in the number of actions,
//! and writing it once at the end would lose it in a crash; one object per
//! action would be as safe, but leaves no single log to read.
//!
//! Leftovers are not problems: temp files of interrupted atomic writes
//! (`.NAME.<uuid>.tmp`, see [`crate::storage::atomic_write`]) and upload
//! directories without a data file, both left by a crash; temp files are
//! found by their names in listings that show them
//! ([`Driver::list_with_temp`]). They are reported, do not change the
//! outcome, and repair removes them. Upload sessions (`_uploads/<id>/data`)
//! are resumable client state, not corruption: they are counted and left
//! alone.
//!
//! Checking is safe on a live server. Repair is meant for a stopped one (or
//! one nobody pushes to): the temp file of a write in progress looks exactly
//! like a leftover.
//!
//! fsck must not touch the bytes of any blob (a corrupt one is moved, a
//! broken manifest only unlinked), upload sessions that hold data, or
//! anything outside `docker/registry/v2/` but its own run under
//! `quarantine/` and the tag-list tokens of the repositories it removes
//! tags from (`berth/tags.changed/`, see [`crate::storage::listing`]).
//!
//! The parts: `report` (what a run found, and its text); `leftovers`,
//! `blobs` and `repositories` (the passes, in the order they run, with
//! `manifests` judging whether a repository's manifests can be pulled
//! whole); `repair` (every change fsck makes to the store). This module
//! holds the entry point, [`check`], the state the passes share and the
//! reads they all make (sorted listings, links, existence).
//! Drawing progress on a terminal is the command line's; fsck only reports
//! [`Progress`] values through a callback.

mod blobs;
mod leftovers;
mod manifests;
mod repair;
mod report;
mod repositories;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use futures_util::{StreamExt, TryStreamExt};

use repair::Fix;
pub(crate) use report::human_bytes;
pub use report::{Kind, Leftover, LeftoverKind, Problem, Report, Status};

use crate::oci::Digest;
use crate::storage::driver::{optional, Driver, StorageError};
use crate::storage::keys;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Quarantine corrupt blobs, remove dangling links and leftovers.
    pub repair: bool,
}

/// Where a run is, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Blobs,
    Repositories,
}

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
    /// Blob bytes hashed so far and in all (phase `Blobs`).
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Checks (and with `opts.repair`, repairs) the store of `driver`, whose
/// root the report names `root` (keys show as `<root>/<key>`: for the
/// filesystem driver, the directory that holds `docker/`). Never fails:
/// what cannot be read is a problem of the report.
pub async fn check(
    driver: &dyn Driver,
    root: &str,
    opts: &Options,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Report {
    let mut ctx = Ctx {
        driver,
        repair: opts.repair,
        report: Report {
            root: root.to_string(),
            repair: opts.repair,
            ..Report::default()
        },
        corrupt: HashSet::new(),
        log_len: 0,
    };
    if driver.list(keys::V2).next().await.is_none() {
        ctx.note(format!("{root} holds no registry data yet"));
        return ctx.report;
    }
    ctx.leftover_pass().await;
    ctx.blob_pass(progress).await;
    ctx.repository_pass(progress).await;
    // As paths sort: part by part.
    ctx.report
        .leftovers
        .sort_by(|a, b| a.key.split('/').cmp(b.key.split('/')));
    ctx.report
}

/// What one run's passes share: the store, the report they fill, and the
/// blobs the blob pass found corrupt.
struct Ctx<'a> {
    driver: &'a dyn Driver,
    repair: bool,
    report: Report,
    /// Blobs found corrupt (quarantined, when repairing).
    corrupt: HashSet<Digest>,
    /// Bytes in this run's `actions.log`.
    log_len: u64,
}

/// The names under `prefix`, sorted, so that reports come in one order.
/// One directory's names at a time are held (the largest, a
/// `blobs/<alg>/<xx>`, has a 256th of the blobs), never a whole walk's.
async fn sorted_names(d: &dyn Driver, prefix: &str) -> Result<Vec<String>, StorageError> {
    let mut names: Vec<String> = d.list(prefix).try_collect().await?;
    names.sort();
    Ok(names)
}

/// What went wrong, as the report says it: the I/O error itself when there
/// is one (the report already names the key).
fn cause(e: &StorageError) -> String {
    match e {
        StorageError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

impl Ctx<'_> {
    /// The names under `prefix`, sorted; none, and a problem, when they
    /// cannot be listed.
    async fn names(&mut self, prefix: &str) -> Vec<String> {
        match sorted_names(self.driver, prefix).await {
            Ok(names) => names,
            Err(e) => {
                self.unreadable(prefix, &e).await;
                Vec::new()
            }
        }
    }

    /// Whether the object `key` is there.
    async fn exists(&self, key: &str) -> bool {
        self.driver.stat(key).await.is_ok()
    }

    /// The (trimmed) text of the link `key`; `None` when there is none.
    async fn link_text(&self, key: &str) -> Result<Option<String>, StorageError> {
        Ok(optional(self.driver.get(key).await)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string()))
    }

    /// `key` for a human (see [`Report::path`]).
    fn show(&self, key: &str) -> String {
        self.report.path(key)
    }

    async fn unreadable(&mut self, key: &str, e: &StorageError) {
        let detail = format!("cannot read: {}", cause(e));
        self.problem(Kind::Unreadable, key, detail, Fix::None).await;
    }

    fn note(&mut self, n: String) {
        self.report.notes.push(n);
    }
}
