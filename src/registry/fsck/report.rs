//! What one fsck run found: the problems (what is wrong, and what became of
//! it), the leftovers of interrupted writes, the counts, and the text for a
//! human. Owns no checking and no repair: the passes fill a [`Report`], and
//! `repair` sets what became of each problem. Things are named by their
//! storage keys; the text shows them below the store's root
//! ([`Report::path`]), as paths for the filesystem driver.

use std::fmt::Write as _;

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
    /// Where: a storage key.
    pub key: String,
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
    pub key: String,
    pub bytes: u64,
    pub removed: bool,
    pub error: Option<String>,
}

/// The outcome of one run over one storage root.
#[derive(Debug, Default)]
pub struct Report {
    /// The store's root as the report names it (a directory, for the
    /// filesystem driver).
    pub root: String,
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
    /// The key of this run's quarantine, when something was put there.
    pub quarantine: Option<String>,
}

impl Report {
    /// `key` below the root, for a human: `<root>/<key>`.
    pub fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.root.trim_end_matches('/'))
    }

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
                self.path(&p.key),
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
                self.path(&l.key),
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
                self.path(q)
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
            self.root,
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
