//! The repairs: every change fsck makes to the store is made here. A
//! problem found by a pass comes with the [`Fix`] that would mend it;
//! [`Ctx::problem`] records it and, when repairing, applies the fix and
//! appends it to the run's `actions.log`. Corrupt blobs go to the run's
//! quarantine directory, never away; leftovers of interrupted writes are
//! removed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Ctx, Kind, Leftover, LeftoverKind, Problem, Status};
use crate::oci::{Digest, RepoName};
use crate::storage;

/// Directory under the storage root that receives quarantined blobs.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A repair.
pub(super) enum Fix {
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

/// Removes a leftover, noting in it whether that worked.
pub(super) fn remove_leftover(l: &mut Leftover) {
    let r = match l.kind {
        LeftoverKind::TempFile => storage::remove_file(&l.path),
        LeftoverKind::UploadWithoutData => storage::remove_dir_all(&l.path),
    };
    match r {
        Ok(_) => l.removed = true,
        Err(e) => l.error = Some(e.to_string()),
    }
}

impl Ctx {
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

    /// Renews the tag-list token of the repository of the removed tag
    /// directory `tag_dir` (`<name>/_manifests/tags/<tag>`), so that
    /// running servers list its tags again.
    fn tags_changed(&self, tag_dir: &Path) -> io::Result<()> {
        let repo = tag_dir
            .ancestors()
            .nth(3)
            .and_then(|dir| dir.strip_prefix(self.store.repositories_dir()).ok())
            .and_then(|name| RepoName::parse(name.to_str()?).ok());
        match repo {
            Some(repo) => self.store.tags_changed(&repo),
            None => Ok(()),
        }
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
                self.tags_changed(dir)?;
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
                    self.tags_changed(t)?;
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

    pub(super) fn problem(&mut self, kind: Kind, path: &Path, detail: String, fix: Fix) {
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
}
