//! `berth fsck`: verifies one instance's storage and, on request, repairs it.
//!
//! Checked, in this order:
//!
//! 1. every blob under `blobs/` hashes to its name (streamed 1 MiB at a
//!    time, so memory stays flat whatever the blob size);
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
//! - a corrupt blob is moved to `<root>/quarantine/<run>/<its path below
//!   root>`. `quarantine/` is outside `docker/`, which is all that registry:2
//!   and berth read, so neither serves nor collects it; nothing is deleted;
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
//! Every action is also appended to `<root>/quarantine/<run>/actions.log`.
//!
//! Leftovers are not problems: temp files of interrupted atomic writes
//! (`.NAME.<uuid>.tmp`, see [`crate::storage::atomic_write`]) and upload
//! directories without a data file, both left by a crash. They are reported,
//! do not change the outcome, and repair removes them. Upload sessions
//! (`_uploads/<id>/data`) are resumable client state, not corruption: they
//! are counted and left alone.
//!
//! Checking is safe on a live server. Repair is meant for a stopped one (or
//! one nobody pushes to): the temp file of a write in progress looks exactly
//! like a leftover.
//!
//! fsck must not touch the bytes of any blob (a corrupt one is moved, a
//! broken manifest only unlinked), upload sessions that hold data, or
//! anything outside `<root>/docker/registry/v2/` but its own run directory
//! under `<root>/quarantine/` and the tag-list tokens of the repositories
//! it removes tags from (`<root>/berth/tags.changed/`, see
//! [`crate::storage::listing`]).
//!
//! The parts: `report` (what a run found, and its text); `leftovers`,
//! `blobs` and `repositories` (the passes, in the order they run, with
//! `manifests` judging whether a repository's manifests can be pulled
//! whole); `repair` (every change fsck makes to the store). This module
//! holds the entry point, [`check`], and the state the passes share.
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
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use repair::Fix;
pub use repair::QUARANTINE_DIR;
pub(crate) use report::human_bytes;
pub use report::{Kind, Leftover, LeftoverKind, Problem, Report, Status};

use crate::oci::{Algorithm, Digest};
use crate::storage::FsStore;

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

/// Checks (and with `opts.repair`, repairs) the storage under `root`, the
/// directory that holds `docker/`. Never fails: what cannot be read is a
/// problem of the report.
pub fn check(root: &Path, opts: &Options, progress: &mut dyn FnMut(&Progress)) -> Report {
    let mut ctx = Ctx {
        store: FsStore::new(root),
        root: root.to_path_buf(),
        repair: opts.repair,
        report: Report {
            root: root.to_path_buf(),
            repair: opts.repair,
            ..Report::default()
        },
        corrupt: HashSet::new(),
    };
    if !ctx.store.v2_dir().is_dir() {
        ctx.report
            .notes
            .push(format!("{} holds no registry data yet", root.display()));
        return ctx.report;
    }
    ctx.leftover_pass();
    ctx.blob_pass(progress);
    ctx.repository_pass(progress);
    ctx.report
}

/// What one run's passes share: the store, the report they fill, and the
/// blobs the blob pass found corrupt.
struct Ctx {
    store: FsStore,
    root: PathBuf,
    repair: bool,
    report: Report,
    /// Blobs found corrupt (quarantined, when repairing).
    corrupt: HashSet<Digest>,
}

/// `dir`'s entries, sorted by name; empty when `dir` does not exist.
fn entries(dir: &Path) -> io::Result<Vec<(String, PathBuf, fs::FileType)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
            entry.file_type()?,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "sha256" => Some(Algorithm::Sha256),
        "sha512" => Some(Algorithm::Sha512),
        _ => None,
    }
}

impl Ctx {
    fn unreadable(&mut self, path: &Path, e: &io::Error) {
        self.problem(
            Kind::Unreadable,
            path,
            format!("cannot read: {e}"),
            Fix::None,
        );
    }

    fn note(&mut self, n: String) {
        self.report.notes.push(n);
    }
}
