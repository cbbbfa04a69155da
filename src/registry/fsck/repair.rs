//! The repairs: every change fsck makes to the store is made here, through
//! the driver. A problem found by a pass comes with the [`Fix`] that would
//! mend it; [`Ctx::problem`] records it and, when repairing, applies the fix
//! and appends it to the run's `actions.log` (see the [`super`] module doc
//! for how the log is written). Corrupt blobs go to the run's quarantine,
//! never away; leftovers of interrupted writes are removed.

use std::sync::Arc;

use bytes::Bytes;

use super::{cause, Ctx, Kind, Leftover, LeftoverKind, Problem, Status};
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::driver::{Driver, StorageError};
use crate::storage::{keys, listing, tree};

/// A repair.
pub(super) enum Fix {
    /// Nothing fsck can do.
    None,
    /// Moves the object at this key to the run's quarantine.
    Quarantine(String),
    /// Removes the link at this key.
    RemoveLink(String),
    WriteLink(String, Digest),
    /// Removes a tag whole (its current link and history).
    RemoveTag(RepoName, Tag),
    /// Unlinks a manifest from its repository, with the tags pointing at
    /// it and its referrer link to `subject`.
    UnlinkManifest {
        repo: RepoName,
        manifest: Digest,
        tags: Vec<Tag>,
        subject: Option<Digest>,
    },
}

/// Removes the prefix `key` was in (a link's or a blob's `<hex>`) when
/// nothing else is left in it, as a removal by registry:2 leaves it;
/// errors do not matter.
async fn remove_parent_if_empty(d: &dyn Driver, key: &str) {
    let dir = keys::parent(key);
    let _ = d.prune(dir, keys::parent(dir)).await;
}

/// Removes `tags` of `repo` whole, then renews the repository's tag-list
/// token so that running servers list its tags again.
async fn remove_tags(d: &dyn Driver, repo: &RepoName, tags: &[Tag]) -> Result<(), StorageError> {
    for t in tags {
        d.delete_all(&keys::tag(repo, t)).await?;
    }
    match tags.is_empty() {
        true => Ok(()),
        false => listing::tags_changed(d, repo).await,
    }
}

/// Removes a leftover, noting in it whether that worked.
pub(super) async fn remove_leftover(d: &dyn Driver, l: &mut Leftover) {
    let r = match l.kind {
        LeftoverKind::TempFile => d.delete(&l.key).await,
        LeftoverKind::UploadWithoutData => d.delete_all(&l.key).await,
    };
    match r {
        Ok(_) => l.removed = true,
        Err(e) => l.error = Some(cause(&e)),
    }
}

impl Ctx<'_> {
    /// This run's quarantine, claimed on first use by creating its empty
    /// `actions.log` under a name no earlier run has.
    async fn quarantine_run(&mut self) -> Result<String, StorageError> {
        if let Some(q) = &self.report.quarantine {
            return Ok(q.clone());
        }
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let mut n = 0;
        let run = loop {
            let run = keys::quarantine_run(&match n {
                0 => stamp.clone(),
                n => format!("{stamp}-{n}"),
            });
            let log = keys::quarantine_log(&run);
            if self.driver.put_new(&log, Bytes::new()).await? {
                break run;
            }
            n += 1;
        };
        self.log_len = 0;
        self.report.quarantine = Some(run.clone());
        Ok(run)
    }

    /// Appends `line` to the run's `actions.log`, durably.
    async fn log_action(&mut self, line: &str) -> Result<(), StorageError> {
        let log = keys::quarantine_log(&self.quarantine_run().await?);
        let mut w = self.driver.writer(&log, self.log_len).await?;
        w.write(Arc::new(vec![Bytes::from(format!("{line}\n"))]))
            .await?;
        self.log_len = w.finish().await?;
        Ok(())
    }

    fn describe(fix: &Fix) -> String {
        match fix {
            Fix::None => "cannot be repaired by fsck".to_string(),
            Fix::Quarantine(_) => format!("move it to {}/", keys::QUARANTINE),
            Fix::RemoveLink(_) => "remove the link".to_string(),
            Fix::WriteLink(_, d) => format!("write the link to {d}"),
            Fix::RemoveTag(..) => "remove the tag".to_string(),
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

    async fn apply(&mut self, fix: &Fix) -> Result<String, StorageError> {
        let d = self.driver;
        match fix {
            Fix::None => Ok(String::new()),
            Fix::Quarantine(key) => {
                let dst = keys::quarantined(&self.quarantine_run().await?, key);
                d.rename(key, &dst).await?;
                remove_parent_if_empty(d, key).await;
                Ok(format!("moved to {}", self.show(&dst)))
            }
            Fix::RemoveLink(key) => {
                d.delete(key).await?;
                remove_parent_if_empty(d, key).await;
                Ok("link removed".to_string())
            }
            Fix::WriteLink(key, digest) => {
                tree::write_link(d, key, digest).await?;
                Ok(format!("link written: {digest}"))
            }
            Fix::RemoveTag(repo, tag) => {
                remove_tags(d, repo, std::slice::from_ref(tag)).await?;
                Ok("tag removed".to_string())
            }
            Fix::UnlinkManifest {
                repo,
                manifest,
                tags,
                subject,
            } => {
                // Tags first, so that no tag ever points at a missing revision.
                remove_tags(d, repo, tags).await?;
                if let Some(subject) = subject {
                    let link = keys::referrer_link(repo, subject, manifest);
                    d.delete(&link).await?;
                    remove_parent_if_empty(d, &link).await;
                }
                let revision = keys::revision_link(repo, manifest);
                d.delete(&revision).await?;
                remove_parent_if_empty(d, &revision).await;
                let names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
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

    pub(super) async fn problem(&mut self, kind: Kind, key: &str, detail: String, fix: Fix) {
        let (action, status) = match (&fix, self.repair) {
            (Fix::None, _) => (Self::describe(&fix), Status::Unrepairable),
            (_, false) => (
                format!("--repair would {}", Self::describe(&fix)),
                Status::Found,
            ),
            (_, true) => match self.apply(&fix).await {
                Ok(done) => {
                    let line = format!("{}: {}: {detail}: {done}", kind.as_str(), self.show(key));
                    let status = match self.log_action(&line).await {
                        Ok(()) => Status::Repaired,
                        Err(e) => {
                            Status::RepairFailed(format!("cannot write actions.log: {}", cause(&e)))
                        }
                    };
                    (done, status)
                }
                Err(e) => (Self::describe(&fix), Status::RepairFailed(cause(&e))),
            },
        };
        self.report.problems.push(Problem {
            kind,
            key: key.to_string(),
            detail,
            action,
            status,
        });
    }
}
