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
//! (`.NAME.<uuid>.tmp`, see [`storage::atomic_write`]) and upload
//! directories without a data file, both left by a crash. They are reported,
//! do not change the outcome, and repair removes them. Upload sessions
//! (`_uploads/<id>/data`) are resumable client state, not corruption: they
//! are counted and left alone.
//!
//! Checking is safe on a live server. Repair is meant for a stopped one (or
//! one nobody pushes to): the temp file of a write in progress looks exactly
//! like a leftover.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::manifest;
use crate::oci::{media, Algorithm, Digest};
use crate::storage::{self, FsStore};

/// Bytes read per hashing step.
const BUF: usize = 1 << 20;

/// Directory under the storage root that receives quarantined blobs.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Deepest index nesting followed.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Quarantine corrupt blobs, remove dangling links and leftovers.
    pub repair: bool,
}

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A blob whose bytes do not hash to its name.
    CorruptBlob,
    /// A link (layer, revision, tag, referrer) to something missing or corrupt.
    DanglingLink,
    /// A link whose content is not the digest of its directory.
    BadLink,
    /// A manifest reference whose blob is intact but not linked into the repository.
    MissingLink,
    /// A manifest with a reference that is lost.
    BrokenManifest,
    /// Something that could not be read.
    Unreadable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CorruptBlob => "corrupt-blob",
            Kind::DanglingLink => "dangling-link",
            Kind::BadLink => "bad-link",
            Kind::MissingLink => "missing-link",
            Kind::BrokenManifest => "broken-manifest",
            Kind::Unreadable => "unreadable",
        }
    }
}

/// What became of a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Found; repair was not asked for.
    Found,
    Repaired,
    RepairFailed(String),
    /// Nothing fsck can do.
    Unrepairable,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: Kind,
    pub path: PathBuf,
    pub detail: String,
    /// What repair does (or did).
    pub action: String,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverKind {
    /// A temp file of an interrupted atomic write.
    TempFile,
    /// An upload directory without a data file.
    UploadWithoutData,
}

impl LeftoverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LeftoverKind::TempFile => "temp-file",
            LeftoverKind::UploadWithoutData => "upload-without-data",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Leftover {
    pub kind: LeftoverKind,
    pub path: PathBuf,
    pub bytes: u64,
    pub removed: bool,
    pub error: Option<String>,
}

/// The outcome of one run over one storage root.
#[derive(Debug, Default)]
pub struct Report {
    pub root: PathBuf,
    pub repair: bool,
    pub problems: Vec<Problem>,
    pub leftovers: Vec<Leftover>,
    /// Things worth knowing that are no problem (unsupported algorithms,
    /// schema1 manifests whose references are not checked, ...).
    pub notes: Vec<String>,
    /// Intact blobs and their bytes.
    pub blobs: u64,
    pub blob_bytes: u64,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub links: u64,
    pub upload_sessions: u64,
    pub upload_bytes: u64,
    /// This run's quarantine directory, when something was put there.
    pub quarantine: Option<PathBuf>,
}

impl Report {
    /// Problems still there after this run.
    pub fn unresolved(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.status != Status::Repaired)
            .count()
    }

    /// Whether the storage was consistent (leftovers aside).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report for a human, every line prefixed with `label: `.
    pub fn render(&self, label: &str) -> String {
        let mut out = String::new();
        for p in &self.problems {
            let _ = writeln!(
                out,
                "{label}: {}: {}: {}",
                p.kind.as_str(),
                p.path.display(),
                p.detail
            );
            let _ = match &p.status {
                Status::Found | Status::Unrepairable => writeln!(out, "{label}:     {}", p.action),
                Status::Repaired => writeln!(out, "{label}:     repaired: {}", p.action),
                Status::RepairFailed(e) => {
                    writeln!(out, "{label}:     repair failed ({}): {e}", p.action)
                }
            };
        }
        for l in &self.leftovers {
            let what = match (&l.error, l.removed) {
                (Some(e), _) => format!("could not remove it: {e}"),
                (None, true) => "removed".to_string(),
                (None, false) => "--repair would remove it".to_string(),
            };
            let _ = writeln!(
                out,
                "{label}: leftover {}: {} ({} bytes; left by an interrupted write): {what}",
                l.kind.as_str(),
                l.path.display(),
                l.bytes
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "{label}: note: {n}");
        }
        if let Some(q) = &self.quarantine {
            let _ = writeln!(
                out,
                "{label}: quarantine: {} (with actions.log)",
                q.display()
            );
        }
        let repaired = self.problems.len() - self.unresolved();
        let problems = match (self.problems.len(), self.repair) {
            (0, _) => "no problems".to_string(),
            (n, true) => format!("{n} problem(s), {repaired} repaired"),
            (n, false) => format!("{n} problem(s)"),
        };
        let _ = writeln!(
            out,
            "{label}: {}: {} blob(s) ({}) verified, {} repositor{}, {} manifest(s), {} tag(s), \
             {} link(s); {problems}; {} leftover(s){}; {} upload session(s) ({}, resumable, left alone)",
            self.root.display(),
            self.blobs,
            human_bytes(self.blob_bytes),
            self.repositories,
            if self.repositories == 1 { "y" } else { "ies" },
            self.manifests,
            self.tags,
            self.links,
            self.leftovers.len(),
            if self.repair && !self.leftovers.is_empty() {
                " removed"
            } else {
                ""
            },
            self.upload_sessions,
            human_bytes(self.upload_bytes),
        );
        out
    }
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

/// `n` bytes for a human: `512 B`, `1.5 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
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

/// The state of a blob in the blob store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobState {
    Intact,
    Missing,
    Corrupt,
}

impl BlobState {
    fn as_str(self) -> &'static str {
        match self {
            BlobState::Intact => "intact",
            BlobState::Missing => "missing",
            BlobState::Corrupt => "corrupt",
        }
    }
}

/// A repair.
enum Fix {
    /// Nothing fsck can do.
    None,
    Quarantine(PathBuf),
    RemoveLink(PathBuf),
    WriteLink(PathBuf, Digest),
    RemoveTag(PathBuf),
    UnlinkManifest {
        revision: PathBuf,
        tags: Vec<PathBuf>,
        referrer: Option<PathBuf>,
    },
}

/// What a manifest references, as far as completeness goes.
struct Refs {
    blobs: Vec<Digest>,
    children: Vec<Digest>,
    subject: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Completeness {
    Complete,
    /// Why it cannot be pulled.
    Broken(String),
    /// Not understood (schema1, unknown media type): not judged.
    Unchecked,
}

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

/// Hashes a file `BUF` bytes at a time, telling `on_bytes` how far it got.
fn hash_file(
    path: &Path,
    alg: Algorithm,
    buf: &mut [u8],
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<Digest> {
    fn run<H: sha2::Digest>(
        mut h: H,
        f: &mut fs::File,
        buf: &mut [u8],
        on_bytes: &mut dyn FnMut(u64),
    ) -> io::Result<String> {
        loop {
            let n = match f.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            on_bytes(n as u64);
        }
        Ok(hex::encode(h.finalize()))
    }
    let mut f = fs::File::open(path)?;
    let hex = match alg {
        Algorithm::Sha256 => run(sha2::Sha256::new(), &mut f, buf, on_bytes)?,
        Algorithm::Sha512 => run(sha2::Sha512::new(), &mut f, buf, on_bytes)?,
    };
    Ok(Digest::from_parts(alg, hex))
}

/// Removes `dir` when it is empty; errors do not matter.
fn remove_if_empty(dir: Option<&Path>) {
    if let Some(dir) = dir {
        let _ = fs::remove_dir(dir);
    }
}

/// Moves a file, across file systems too (copy, fsync, then remove).
fn move_file(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().expect("destination has a parent");
    fs::create_dir_all(dir)?;
    match fs::rename(src, dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV
            fs::copy(src, dst)?;
            fs::File::open(dst)?.sync_all()?;
            fs::remove_file(src)?;
        }
        Err(e) => return Err(e),
    }
    storage::sync_dir(dir)?;
    if let Some(src_dir) = src.parent() {
        storage::sync_dir(src_dir)?;
    }
    Ok(())
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

    fn blob_state(&self, d: &Digest) -> BlobState {
        if self.corrupt.contains(d) {
            BlobState::Corrupt
        } else if self.store.blob_path(d).is_file() {
            BlobState::Intact
        } else {
            BlobState::Missing
        }
    }

    /// This run's quarantine directory, created on first use.
    fn quarantine_dir(&mut self) -> io::Result<PathBuf> {
        if let Some(q) = &self.report.quarantine {
            return Ok(q.clone());
        }
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let base = self.root.join(QUARANTINE_DIR);
        fs::create_dir_all(&base)?;
        let mut n = 0;
        let dir = loop {
            let name = match n {
                0 => stamp.clone(),
                n => format!("{stamp}-{n}"),
            };
            let dir = base.join(name);
            match fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        };
        self.report.quarantine = Some(dir.clone());
        Ok(dir)
    }

    fn log_action(&mut self, line: &str) -> io::Result<()> {
        let dir = self.quarantine_dir()?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("actions.log"))?;
        writeln!(f, "{line}")?;
        f.sync_all()
    }

    fn describe(fix: &Fix) -> String {
        match fix {
            Fix::None => "cannot be repaired by fsck".to_string(),
            Fix::Quarantine(_) => format!("move it to {QUARANTINE_DIR}/"),
            Fix::RemoveLink(_) => "remove the link".to_string(),
            Fix::WriteLink(_, d) => format!("write the link to {d}"),
            Fix::RemoveTag(_) => "remove the tag".to_string(),
            Fix::UnlinkManifest { tags, .. } => {
                if tags.is_empty() {
                    "unlink the manifest from the repository (its bytes stay in blobs/)".to_string()
                } else {
                    format!(
                        "unlink the manifest and its {} tag(s) from the repository (its bytes stay in blobs/)",
                        tags.len()
                    )
                }
            }
        }
    }

    fn apply(&mut self, fix: &Fix) -> io::Result<String> {
        match fix {
            Fix::None => Ok(String::new()),
            Fix::Quarantine(path) => {
                let rel = path.strip_prefix(&self.root).unwrap_or(path).to_path_buf();
                let dst = self.quarantine_dir()?.join(rel);
                move_file(path, &dst)?;
                remove_if_empty(path.parent());
                Ok(format!("moved to {}", dst.display()))
            }
            Fix::RemoveLink(path) => {
                storage::remove_file(path)?;
                remove_if_empty(path.parent());
                Ok("link removed".to_string())
            }
            Fix::WriteLink(path, d) => {
                storage::write_link(path, d)?;
                Ok(format!("link written: {d}"))
            }
            Fix::RemoveTag(dir) => {
                storage::remove_dir_all(dir)?;
                Ok("tag removed".to_string())
            }
            Fix::UnlinkManifest {
                revision,
                tags,
                referrer,
            } => {
                // Tags first, so that no tag ever points at a missing revision.
                let mut names = Vec::new();
                for t in tags {
                    storage::remove_dir_all(t)?;
                    names.push(
                        t.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    );
                }
                if let Some(r) = referrer {
                    storage::remove_file(r)?;
                    remove_if_empty(r.parent());
                }
                storage::remove_file(revision)?;
                remove_if_empty(revision.parent());
                Ok(if names.is_empty() {
                    "manifest unlinked (its bytes stay in blobs/)".to_string()
                } else {
                    format!(
                        "manifest unlinked, tags removed: {} (its bytes stay in blobs/)",
                        names.join(", ")
                    )
                })
            }
        }
    }

    fn problem(&mut self, kind: Kind, path: &Path, detail: String, fix: Fix) {
        let (action, status) = match (&fix, self.repair) {
            (Fix::None, _) => (Self::describe(&fix), Status::Unrepairable),
            (_, false) => (
                format!("--repair would {}", Self::describe(&fix)),
                Status::Found,
            ),
            (_, true) => match self.apply(&fix) {
                Ok(done) => {
                    let line = format!("{}: {}: {detail}: {done}", kind.as_str(), path.display());
                    let status = match self.log_action(&line) {
                        Ok(()) => Status::Repaired,
                        Err(e) => Status::RepairFailed(format!("cannot write actions.log: {e}")),
                    };
                    (done, status)
                }
                Err(e) => (Self::describe(&fix), Status::RepairFailed(e.to_string())),
            },
        };
        self.report.problems.push(Problem {
            kind,
            path: path.to_path_buf(),
            detail,
            action,
            status,
        });
    }

    /// Temp files anywhere in the tree and upload directories without data.
    fn leftover_pass(&mut self) {
        let mut stack = vec![self.store.v2_dir().to_path_buf()];
        while let Some(dir) = stack.pop() {
            let list = match entries(&dir) {
                Ok(l) => l,
                Err(e) => {
                    self.unreadable(&dir, &e);
                    continue;
                }
            };
            let in_uploads = dir.file_name().is_some_and(|n| n == "_uploads");
            for (name, path, ft) in list {
                if ft.is_dir() {
                    if in_uploads && !path.join("data").exists() {
                        self.leftover(LeftoverKind::UploadWithoutData, &path);
                    } else {
                        stack.push(path);
                    }
                } else if ft.is_file() && storage::is_temp_name(&name) {
                    self.leftover(LeftoverKind::TempFile, &path);
                }
            }
        }
        self.report.leftovers.sort_by(|a, b| a.path.cmp(&b.path));
    }

    fn leftover(&mut self, kind: LeftoverKind, path: &Path) {
        let bytes = match kind {
            LeftoverKind::TempFile => fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            LeftoverKind::UploadWithoutData => 0,
        };
        let mut l = Leftover {
            kind,
            path: path.to_path_buf(),
            bytes,
            removed: false,
            error: None,
        };
        if self.repair {
            let r = match kind {
                LeftoverKind::TempFile => storage::remove_file(path),
                LeftoverKind::UploadWithoutData => storage::remove_dir_all(path),
            };
            match r {
                Ok(_) => l.removed = true,
                Err(e) => l.error = Some(e.to_string()),
            }
        }
        self.report.leftovers.push(l);
    }

    /// Calls `f` with every `blobs/<alg>/<xx>/<hex>/data` whose name is a
    /// digest berth knows; returns what did not fit (as notes) when `notes`.
    fn walk_blobs(&mut self, notes: bool, f: &mut dyn FnMut(&mut Ctx, Digest, PathBuf)) {
        let blobs = self.store.blobs_dir();
        let algs = match entries(&blobs) {
            Ok(l) => l,
            Err(e) => {
                if notes {
                    self.unreadable(&blobs, &e);
                }
                return;
            }
        };
        for (alg_name, alg_dir, ft) in algs {
            let Some(alg) = algorithm(&alg_name).filter(|_| ft.is_dir()) else {
                if notes {
                    self.note(format!(
                        "{}: not a digest algorithm berth knows; not verified",
                        alg_dir.display()
                    ));
                }
                continue;
            };
            let prefixes = match entries(&alg_dir) {
                Ok(l) => l,
                Err(e) => {
                    if notes {
                        self.unreadable(&alg_dir, &e);
                    }
                    continue;
                }
            };
            for (prefix, prefix_dir, _) in prefixes {
                let hexes = match entries(&prefix_dir) {
                    Ok(l) => l,
                    Err(e) => {
                        if notes {
                            self.unreadable(&prefix_dir, &e);
                        }
                        continue;
                    }
                };
                for (hex, hex_dir, ft) in hexes {
                    let digest = Digest::parse(&format!("{}:{hex}", alg.as_str()))
                        .ok()
                        .filter(|_| ft.is_dir() && hex.starts_with(&prefix) && prefix.len() == 2);
                    let Some(digest) = digest else {
                        if notes && !storage::is_temp_name(&hex) {
                            self.note(format!(
                                "{}: not a blob directory; ignored",
                                hex_dir.display()
                            ));
                        }
                        continue;
                    };
                    let data = hex_dir.join("data");
                    if data.is_file() {
                        f(self, digest, data);
                    }
                }
            }
        }
    }

    fn blob_pass(&mut self, progress: &mut dyn FnMut(&Progress)) {
        let (mut total, mut bytes_total) = (0u64, 0u64);
        self.walk_blobs(false, &mut |_, _, path| {
            total += 1;
            bytes_total += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        });
        let mut p = Progress {
            phase: Phase::Blobs,
            done: 0,
            total,
            bytes_done: 0,
            bytes_total,
        };
        progress(&p);
        let mut buf = vec![0u8; BUF];
        self.walk_blobs(true, &mut |ctx, digest, path| {
            let result = hash_file(&path, digest.algorithm(), &mut buf, &mut |n| {
                p.bytes_done += n;
                progress(&p);
            });
            p.done += 1;
            progress(&p);
            match result {
                Ok(actual) if actual == digest => {
                    ctx.report.blobs += 1;
                    ctx.report.blob_bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                }
                Ok(actual) => {
                    ctx.corrupt.insert(digest.clone());
                    ctx.problem(
                        Kind::CorruptBlob,
                        &path,
                        format!("the bytes hash to {actual}, not {digest}"),
                        Fix::Quarantine(path.clone()),
                    );
                }
                Err(e) => ctx.unreadable(&path, &e),
            }
        });
    }

    fn repository_pass(&mut self, progress: &mut dyn FnMut(&Progress)) {
        let repos = match self.store.list_repository_dirs() {
            Ok(r) => r,
            Err(e) => {
                let dir = self.store.repositories_dir();
                self.unreadable(&dir, &e);
                return;
            }
        };
        let mut p = Progress {
            phase: Phase::Repositories,
            done: 0,
            total: repos.len() as u64,
            bytes_done: 0,
            bytes_total: 0,
        };
        for name in repos {
            progress(&p);
            self.check_repository(&name);
            p.done += 1;
        }
        progress(&p);
    }

    /// `<base>/<alg>/<hex>` directories: (digest, `link` path), sorted.
    fn digest_links(&mut self, base: &Path) -> Vec<(Digest, PathBuf)> {
        let mut out = Vec::new();
        let algs = match entries(base) {
            Ok(l) => l,
            Err(e) => {
                self.unreadable(base, &e);
                return out;
            }
        };
        for (alg_name, alg_dir, ft) in algs {
            if !ft.is_dir() || storage::is_temp_name(&alg_name) {
                continue;
            }
            let Some(alg) = algorithm(&alg_name) else {
                self.note(format!(
                    "{}: not a digest algorithm berth knows; not checked",
                    alg_dir.display()
                ));
                continue;
            };
            let hexes = match entries(&alg_dir) {
                Ok(l) => l,
                Err(e) => {
                    self.unreadable(&alg_dir, &e);
                    continue;
                }
            };
            for (hex, hex_dir, ft) in hexes {
                if !ft.is_dir() {
                    continue;
                }
                match Digest::parse(&format!("{}:{hex}", alg.as_str())) {
                    Ok(d) => out.push((d, hex_dir.join("link"))),
                    Err(_) => self.note(format!(
                        "{}: not a digest directory; ignored",
                        hex_dir.display()
                    )),
                }
            }
        }
        out
    }

    /// Reads a link file: `Ok(None)` when there is none, `Ok(Some(text))`
    /// with its (trimmed) content otherwise.
    fn read_link_text(path: &Path) -> io::Result<Option<String>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks a link `<...>/<alg>/<hex>/link` that must name `d` and point
    /// at an intact blob. Returns whether it is a usable link afterwards
    /// (`false` when absent or dangling).
    fn check_blob_link(&mut self, link: &Path, d: &Digest, what: &str) -> bool {
        let text = match Self::read_link_text(link) {
            Ok(Some(t)) => t,
            Ok(None) => return false,
            Err(e) => {
                self.unreadable(link, &e);
                return true;
            }
        };
        self.report.links += 1;
        let state = self.blob_state(d);
        if state != BlobState::Intact {
            self.problem(
                Kind::DanglingLink,
                link,
                format!("{what} link to {d}, whose blob is {}", state.as_str()),
                Fix::RemoveLink(link.to_path_buf()),
            );
            return false;
        }
        if Digest::parse(&text).ok().as_ref() != Some(d) {
            self.problem(
                Kind::BadLink,
                link,
                format!("{what} link holds {text:?}, not {d}"),
                Fix::WriteLink(link.to_path_buf(), d.clone()),
            );
        }
        true
    }

    fn check_repository(&mut self, name: &str) {
        let dir = self.store.repositories_dir().join(name);
        self.report.repositories += 1;

        for (d, link) in self.digest_links(&dir.join("_layers")) {
            self.check_blob_link(&link, &d, "layer");
        }

        let mut revisions = Vec::new();
        for (d, link) in self.digest_links(&dir.join("_manifests/revisions")) {
            if self.check_blob_link(&link, &d, "manifest revision") {
                revisions.push(d);
            }
        }
        let mut linked: HashSet<Digest> = revisions.iter().cloned().collect();
        self.report.manifests += revisions.len() as u64;

        let mut memo = HashMap::new();
        let mut refs = HashMap::new();
        let mut relinked = HashSet::new();
        let mut broken = Vec::new();
        for d in &revisions {
            let state = self.completeness(&dir, d, &linked, &mut memo, &mut refs, &mut relinked, 0);
            if let Completeness::Broken(why) = state {
                broken.push((d.clone(), why));
            }
        }
        for (d, why) in broken {
            let tags = self.tags_pointing_at(&dir, &d);
            let tag_names: Vec<String> = tags
                .iter()
                .filter_map(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            let referrer = refs
                .get(&d)
                .and_then(|r: &Option<Refs>| r.as_ref())
                .and_then(|r| r.subject.as_ref())
                .map(|s| {
                    dir.join("_referrers")
                        .join(s.algorithm().as_str())
                        .join(s.hex())
                        .join(d.algorithm().as_str())
                        .join(d.hex())
                        .join("link")
                });
            let revision = revision_link(&dir, &d);
            let tagged = if tag_names.is_empty() {
                "untagged".to_string()
            } else {
                format!("tags: {}", tag_names.join(", "))
            };
            self.problem(
                Kind::BrokenManifest,
                &revision,
                format!("manifest {d} ({tagged}) cannot be pulled: {why}"),
                Fix::UnlinkManifest {
                    revision: revision.clone(),
                    tags,
                    referrer,
                },
            );
            if self.repair {
                linked.remove(&d);
            }
        }

        self.check_tags(&dir, &linked);
        self.check_referrers(&dir, &linked);
        self.count_uploads(&dir);
    }

    /// Whether manifest `d` of the repository in `dir` can be pulled whole.
    #[allow(clippy::too_many_arguments)]
    fn completeness(
        &mut self,
        dir: &Path,
        d: &Digest,
        linked: &HashSet<Digest>,
        memo: &mut HashMap<Digest, Completeness>,
        refs: &mut HashMap<Digest, Option<Refs>>,
        relinked: &mut HashSet<Digest>,
        depth: usize,
    ) -> Completeness {
        if let Some(c) = memo.get(d) {
            return c.clone();
        }
        if depth > MAX_DEPTH {
            return Completeness::Unchecked;
        }
        if !refs.contains_key(d) {
            let r = self.load_refs(d);
            refs.insert(d.clone(), r);
        }
        let Some(r) = refs.get(d).and_then(Option::as_ref) else {
            memo.insert(d.clone(), Completeness::Unchecked);
            return Completeness::Unchecked;
        };
        let (blobs, children) = (r.blobs.clone(), r.children.clone());
        let mut why = Vec::new();
        for b in &blobs {
            match self.blob_state(b) {
                BlobState::Intact => {
                    let layer = layer_link(dir, b);
                    if !layer.is_file()
                        && !revision_link(dir, b).is_file()
                        && relinked.insert(b.clone())
                    {
                        self.problem(
                            Kind::MissingLink,
                            &layer,
                            format!(
                                "manifest {d} references blob {b}, which is intact but not linked into the repository"
                            ),
                            Fix::WriteLink(layer.clone(), b.clone()),
                        );
                    }
                }
                state => why.push(format!("its blob {b} is {}", state.as_str())),
            }
        }
        for c in &children {
            let state = self.blob_state(c);
            if state != BlobState::Intact {
                why.push(format!("its child manifest {c} is {}", state.as_str()));
                continue;
            }
            let child = self.completeness(dir, c, linked, memo, refs, relinked, depth + 1);
            if let Completeness::Broken(_) = child {
                why.push(format!("its child manifest {c} cannot be pulled"));
            } else if !linked.contains(c) && relinked.insert(c.clone()) {
                let link = revision_link(dir, c);
                self.problem(
                    Kind::MissingLink,
                    &link,
                    format!(
                        "index {d} references manifest {c}, which is intact but not linked into the repository"
                    ),
                    Fix::WriteLink(link.clone(), c.clone()),
                );
            }
        }
        let c = if why.is_empty() {
            Completeness::Complete
        } else {
            Completeness::Broken(why.join("; "))
        };
        memo.insert(d.clone(), c.clone());
        c
    }

    /// The references of a stored manifest; `None` (with a note) when it is
    /// nothing berth can judge.
    fn load_refs(&mut self, d: &Digest) -> Option<Refs> {
        let path = self.store.blob_path(d);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > manifest::MAX_MANIFEST_SIZE as u64 {
            self.note(format!(
                "manifest {d} is {size} bytes, more than any manifest berth accepts; references not checked"
            ));
            return None;
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                self.unreadable(&path, &e);
                return None;
            }
        };
        let mt = manifest::stored_media_type(&bytes);
        if mt == media::DOCKER_SCHEMA1 || mt == media::DOCKER_SCHEMA1_SIGNED {
            self.note(format!(
                "manifest {d} is Docker schema1; references not checked"
            ));
            return None;
        }
        match manifest::parse(None, &bytes) {
            Ok(m) => Some(Refs {
                blobs: m.blobs,
                children: m.children,
                subject: m.subject,
            }),
            Err(e) => {
                self.note(format!(
                    "manifest {d} is not one berth understands ({}); references not checked",
                    e.public_message()
                ));
                None
            }
        }
    }

    /// Tag directories of the repository in `dir` whose current link is `d`.
    fn tags_pointing_at(&mut self, dir: &Path, d: &Digest) -> Vec<PathBuf> {
        let tags_dir = dir.join("_manifests/tags");
        let list = match entries(&tags_dir) {
            Ok(l) => l,
            Err(e) => {
                self.unreadable(&tags_dir, &e);
                return Vec::new();
            }
        };
        list.into_iter()
            .filter(|(_, path, ft)| {
                ft.is_dir()
                    && storage::read_link(&path.join("current/link"))
                        .ok()
                        .flatten()
                        .as_ref()
                        == Some(d)
            })
            .map(|(_, path, _)| path)
            .collect()
    }

    fn check_tags(&mut self, dir: &Path, linked: &HashSet<Digest>) {
        let tags_dir = dir.join("_manifests/tags");
        let list = match entries(&tags_dir) {
            Ok(l) => l,
            Err(e) => {
                self.unreadable(&tags_dir, &e);
                return;
            }
        };
        for (tag, tag_dir, ft) in list {
            if !ft.is_dir() {
                continue;
            }
            let current = tag_dir.join("current/link");
            let text = match Self::read_link_text(&current) {
                Ok(Some(t)) => t,
                // Not a tag (registry:2 may leave history without a current link).
                Ok(None) => continue,
                Err(e) => {
                    self.unreadable(&current, &e);
                    continue;
                }
            };
            self.report.links += 1;
            self.report.tags += 1;
            match Digest::parse(&text) {
                Err(_) => {
                    self.problem(
                        Kind::BadLink,
                        &current,
                        format!("tag {tag} holds {text:?}, which is no digest"),
                        Fix::RemoveTag(tag_dir.clone()),
                    );
                    continue;
                }
                Ok(d) if !linked.contains(&d) => {
                    let why = if revision_link(dir, &d).is_file() {
                        format!("whose blob is {}", self.blob_state(&d).as_str())
                    } else {
                        "which is not in the repository".to_string()
                    };
                    self.problem(
                        Kind::DanglingLink,
                        &current,
                        format!("tag {tag} points at manifest {d}, {why}"),
                        Fix::RemoveTag(tag_dir.clone()),
                    );
                    continue;
                }
                Ok(_) => {}
            }
            for (d, link) in self.digest_links(&tag_dir.join("index")) {
                self.check_blob_link(&link, &d, &format!("tag {tag} history"));
            }
        }
    }

    fn check_referrers(&mut self, dir: &Path, linked: &HashSet<Digest>) {
        let base = dir.join("_referrers");
        for (subject, subject_link) in self.digest_links(&base) {
            let subject_dir = subject_link
                .parent()
                .expect("link has a parent")
                .to_path_buf();
            for (d, link) in self.digest_links(&subject_dir) {
                let text = match Self::read_link_text(&link) {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(e) => {
                        self.unreadable(&link, &e);
                        continue;
                    }
                };
                self.report.links += 1;
                if !linked.contains(&d) {
                    self.problem(
                        Kind::DanglingLink,
                        &link,
                        format!(
                            "referrer link of {subject} to manifest {d}, which is not in the repository"
                        ),
                        Fix::RemoveLink(link.clone()),
                    );
                } else if Digest::parse(&text).ok().as_ref() != Some(&d) {
                    self.problem(
                        Kind::BadLink,
                        &link,
                        format!("referrer link holds {text:?}, not {d}"),
                        Fix::WriteLink(link.clone(), d.clone()),
                    );
                }
            }
        }
    }

    fn count_uploads(&mut self, dir: &Path) {
        let uploads = dir.join("_uploads");
        let list = match entries(&uploads) {
            Ok(l) => l,
            Err(e) => {
                self.unreadable(&uploads, &e);
                return;
            }
        };
        for (_, path, ft) in list {
            if !ft.is_dir() {
                continue;
            }
            if let Ok(m) = fs::metadata(path.join("data")) {
                self.report.upload_sessions += 1;
                self.report.upload_bytes += m.len();
            }
        }
    }
}

fn layer_link(repo_dir: &Path, d: &Digest) -> PathBuf {
    repo_dir
        .join("_layers")
        .join(d.algorithm().as_str())
        .join(d.hex())
        .join("link")
}

fn revision_link(repo_dir: &Path, d: &Digest) -> PathBuf {
    repo_dir
        .join("_manifests/revisions")
        .join(d.algorithm().as_str())
        .join(d.hex())
        .join("link")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{RepoName, Tag};
    use serde_json::json;

    struct Fixture {
        dir: tempfile::TempDir,
        store: FsStore,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = FsStore::new(dir.path());
            fs::create_dir_all(store.blobs_dir()).unwrap();
            Fixture { dir, store }
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn blob(&self, bytes: &[u8]) -> Digest {
            let d = Digest::of(Algorithm::Sha256, bytes);
            self.store.write_blob(&d, bytes).unwrap();
            d
        }

        fn layer(&self, repo: &str, bytes: &[u8]) -> Digest {
            let d = self.blob(bytes);
            let repo = RepoName::parse(repo).unwrap();
            storage::write_link(&self.store.layer_link(&repo, &d), &d).unwrap();
            d
        }

        fn desc(d: &Digest, media_type: &str) -> serde_json::Value {
            json!({"mediaType": media_type, "digest": d.to_string(), "size": 1})
        }

        /// Pushes an image (config + layers) and tags it; returns its digest.
        fn image(&self, repo: &str, tag: Option<&str>, layers: &[&[u8]]) -> (Digest, Vec<Digest>) {
            let config = self.layer(repo, format!("config {}", layers.len()).as_bytes());
            let layer_digests: Vec<Digest> = layers.iter().map(|l| self.layer(repo, l)).collect();
            let m = json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": Self::desc(&config, "application/vnd.oci.image.config.v1+json"),
                "layers": layer_digests.iter().map(|d| Self::desc(d, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
            });
            let d = self.manifest(repo, tag, &serde_json::to_vec(&m).unwrap());
            (d, layer_digests)
        }

        fn manifest(&self, repo: &str, tag: Option<&str>, bytes: &[u8]) -> Digest {
            let d = self.blob(bytes);
            let repo = RepoName::parse(repo).unwrap();
            storage::write_link(&self.store.revision_link(&repo, &d), &d).unwrap();
            if let Some(tag) = tag {
                let tag = Tag::parse(tag).unwrap();
                storage::write_link(&self.store.tag_index_link(&repo, &tag, &d), &d).unwrap();
                storage::write_link(&self.store.tag_current_link(&repo, &tag), &d).unwrap();
            }
            d
        }

        fn run(&self, repair: bool) -> Report {
            check(self.root(), &Options { repair }, &mut |_| {})
        }
    }

    fn kinds(r: &Report) -> Vec<Kind> {
        r.problems.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn clean_store_is_clean() {
        let f = Fixture::new();
        f.image("a/b", Some("v1"), &[b"one", b"two"]);
        f.image("c", None, &[b"three"]);
        let r = f.run(false);
        assert!(r.is_clean(), "{}", r.render("t"));
        assert_eq!(r.repositories, 2);
        assert_eq!(r.manifests, 2);
        assert_eq!(r.tags, 1);
        assert_eq!(r.blobs, 7);
        assert!(r.leftovers.is_empty());
        assert!(r.render("t").contains("no problems"));
    }

    #[test]
    fn missing_root_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let r = check(
            &dir.path().join("nothing"),
            &Options::default(),
            &mut |_| {},
        );
        assert!(r.is_clean());
        assert_eq!(r.unresolved(), 0);
    }

    #[test]
    fn corrupt_blob_is_quarantined_and_its_image_unlinked() {
        let f = Fixture::new();
        let (m, layers) = f.image("app", Some("latest"), &[b"layer bytes"]);
        let path = f.store.blob_path(&layers[0]);
        fs::write(&path, b"layer bytez").unwrap();

        let r = f.run(false);
        assert_eq!(
            kinds(&r),
            [Kind::CorruptBlob, Kind::DanglingLink, Kind::BrokenManifest],
            "{}",
            r.render("t")
        );
        assert_eq!(r.problems[0].path, path);
        assert!(r.problems.iter().all(|p| p.status == Status::Found));
        assert!(path.is_file(), "checking alone changes nothing");

        let r = f.run(true);
        assert_eq!(r.unresolved(), 0, "{}", r.render("t"));
        let q = r.quarantine.clone().unwrap();
        assert!(q.starts_with(f.root().join(QUARANTINE_DIR)));
        let moved = q.join(path.strip_prefix(f.root()).unwrap());
        assert_eq!(fs::read(&moved).unwrap(), b"layer bytez");
        assert!(!path.exists());
        let log = fs::read_to_string(q.join("actions.log")).unwrap();
        assert!(
            log.contains("corrupt-blob") && log.contains(&m.to_string()),
            "{log}"
        );
        let repo = RepoName::parse("app").unwrap();
        assert!(!f.store.revision_link(&repo, &m).exists());
        assert_eq!(f.store.list_tags(&repo).unwrap(), Some(vec![]));
        assert!(f.store.blob_path(&m).is_file(), "manifest bytes are kept");

        let r = f.run(false);
        assert!(r.is_clean(), "{}", r.render("t"));
    }

    #[test]
    fn dangling_links_and_tags_are_removed() {
        let f = Fixture::new();
        let lone = f.layer("app", b"lone layer");
        let (m, _) = f.image("app", Some("v1"), &[b"x"]);
        let repo = RepoName::parse("app").unwrap();
        fs::remove_file(f.store.blob_path(&lone)).unwrap();
        // A tag whose revision is gone.
        let tag = Tag::parse("gone").unwrap();
        let ghost = Digest::of(Algorithm::Sha256, b"never stored");
        storage::write_link(&f.store.tag_current_link(&repo, &tag), &ghost).unwrap();

        let r = f.run(false);
        let paths: Vec<&Path> = r.problems.iter().map(|p| p.path.as_path()).collect();
        assert!(paths.contains(&f.store.layer_link(&repo, &lone).as_path()));
        assert!(paths.contains(&f.store.tag_current_link(&repo, &tag).as_path()));
        assert_eq!(r.unresolved(), 2, "{}", r.render("t"));

        let r = f.run(true);
        assert_eq!(r.unresolved(), 0);
        assert!(!f.store.layer_link(&repo, &lone).exists());
        assert_eq!(f.store.list_tags(&repo).unwrap(), Some(vec!["v1".into()]));
        assert!(f.store.revision_link(&repo, &m).is_file());
        assert!(f.run(false).is_clean());
    }

    #[test]
    fn revision_without_blob_takes_its_tag_and_index_with_it() {
        let f = Fixture::new();
        let (child, _) = f.image("app", None, &[b"c"]);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [Fixture::desc(&child, media::OCI_MANIFEST)],
        });
        let idx = f.manifest("app", Some("multi"), &serde_json::to_vec(&index).unwrap());
        fs::remove_file(f.store.blob_path(&child)).unwrap();
        let r = f.run(false);
        assert_eq!(
            kinds(&r),
            [Kind::DanglingLink, Kind::BrokenManifest],
            "{}",
            r.render("t")
        );
        assert!(r.problems[1].detail.contains(&idx.to_string()));
        assert!(r.problems[1].detail.contains("multi"));
        f.run(true);
        let repo = RepoName::parse("app").unwrap();
        assert!(!f.store.revision_link(&repo, &idx).exists());
        assert_eq!(f.store.list_tags(&repo).unwrap(), Some(vec![]));
        assert!(f.run(false).is_clean());
    }

    #[test]
    fn unlinked_but_intact_layer_is_linked_again() {
        let f = Fixture::new();
        let (_, layers) = f.image("app", Some("v1"), &[b"l"]);
        let repo = RepoName::parse("app").unwrap();
        let link = f.store.layer_link(&repo, &layers[0]);
        fs::remove_file(&link).unwrap();
        let r = f.run(false);
        assert_eq!(kinds(&r), [Kind::MissingLink]);
        assert_eq!(r.problems[0].path, link);
        f.run(true);
        assert!(link.is_file());
        assert!(f.run(false).is_clean());
    }

    #[test]
    fn wrong_link_content_is_rewritten() {
        let f = Fixture::new();
        let d = f.layer("app", b"l");
        let repo = RepoName::parse("app").unwrap();
        let link = f.store.layer_link(&repo, &d);
        fs::write(&link, b"garbage").unwrap();
        let r = f.run(false);
        assert_eq!(kinds(&r), [Kind::BadLink]);
        f.run(true);
        assert_eq!(storage::read_link(&link).unwrap(), Some(d));
        assert!(f.run(false).is_clean());
    }

    #[test]
    fn temp_files_and_uploads_are_no_problems() {
        let f = Fixture::new();
        let (m, _) = f.image("app", Some("v1"), &[b"l"]);
        let repo = RepoName::parse("app").unwrap();
        let link_dir = f.store.revision_link(&repo, &m);
        let tmp = link_dir.parent().unwrap().join(".link.0123abcd.tmp");
        fs::write(&tmp, b"sha256:").unwrap();
        let blob_tmp = f
            .store
            .blob_path(&m)
            .parent()
            .unwrap()
            .join(".data.feed.tmp");
        fs::write(&blob_tmp, b"{").unwrap();
        let session = f.store.upload_dir(&repo, "sess");
        fs::create_dir_all(&session).unwrap();
        fs::write(session.join("data"), b"12345").unwrap();
        let empty = f.store.upload_dir(&repo, "crashed");
        fs::create_dir_all(&empty).unwrap();

        let r = f.run(false);
        assert!(r.is_clean(), "{}", r.render("t"));
        assert_eq!(r.leftovers.len(), 3, "{}", r.render("t"));
        assert_eq!((r.upload_sessions, r.upload_bytes), (1, 5));
        let text = r.render("t");
        assert!(text.contains(&tmp.display().to_string()), "{text}");
        assert!(tmp.exists());

        let r = f.run(true);
        assert!(r.leftovers.iter().all(|l| l.removed));
        assert!(!tmp.exists() && !blob_tmp.exists() && !empty.exists());
        assert!(session.join("data").exists(), "sessions stay resumable");
        let r = f.run(false);
        assert!(r.is_clean() && r.leftovers.is_empty(), "{}", r.render("t"));
    }

    #[test]
    fn dangling_referrer_is_removed() {
        let f = Fixture::new();
        let (subject, _) = f.image("app", Some("v1"), &[b"l"]);
        let repo = RepoName::parse("app").unwrap();
        let ghost = Digest::of(Algorithm::Sha256, b"no such referrer");
        let link = f.store.referrer_link(&repo, &subject, &ghost);
        storage::write_link(&link, &ghost).unwrap();
        let r = f.run(false);
        assert_eq!(kinds(&r), [Kind::DanglingLink]);
        assert_eq!(r.problems[0].path, link);
        f.run(true);
        assert!(!link.exists());
        assert!(f.run(false).is_clean());
    }

    #[test]
    fn hashing_streams_and_reports_progress() {
        let f = Fixture::new();
        let big = vec![7u8; 3 * BUF + 5];
        f.layer("app", &big);
        let mut last = None;
        let r = check(f.root(), &Options::default(), &mut |p| {
            if p.phase == Phase::Blobs {
                last = Some(*p);
            }
        });
        assert!(r.is_clean());
        let p = last.unwrap();
        assert_eq!((p.done, p.total), (1, 1));
        assert_eq!(p.bytes_done, big.len() as u64);
        assert_eq!(p.bytes_total, big.len() as u64);
    }

    #[test]
    fn sha512_blobs_are_verified() {
        let f = Fixture::new();
        let d = Digest::of(Algorithm::Sha512, b"five twelve");
        f.store.write_blob(&d, b"five twelve").unwrap();
        assert!(f.run(false).is_clean());
        fs::write(f.store.blob_path(&d), b"five twelvE").unwrap();
        assert_eq!(kinds(&f.run(false)), [Kind::CorruptBlob]);
    }
}
