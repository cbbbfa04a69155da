//! The audit log: one line (target `audit`) for every delete of content —
//! a tag, a manifest or a blob — whoever made it: a user through the API or
//! the web UI, retention, garbage collection. Each line says who (`user`),
//! what (`kind` and `object`) and why, in the access log's format: the same
//! `instance` and `user` fields first, then the facts, as text or JSON as
//! `[log] format` says; a line logged while a request is served carries
//! its span (request id, path) too.
//!
//! Owns the shape of those lines. Must not decide what is deleted, nor
//! delete anything.

use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::registry::gc::Report;

/// One line.
fn line(instance: &str, user: &str, kind: &str, object: &str, why: &str) {
    tracing::info!(target: "audit", instance, user, action = "delete", kind, object, why);
}

/// A user's deletes in one instance (`-` for an anonymous user, as in the
/// access log), and how they were asked for ("the API", "the web UI").
pub struct ByUser<'a> {
    pub instance: &'a str,
    pub user: Option<&'a str>,
    pub through: &'a str,
}

impl ByUser<'_> {
    fn user(&self) -> &str {
        self.user.unwrap_or("-")
    }

    /// A tag or a manifest deleted, and `tags`, the tags that went with
    /// a manifest.
    pub fn manifest(&self, repo: &RepoName, reference: &Reference, tags: &[Tag]) {
        let why = format!("requested through {}", self.through);
        let (kind, object) = match reference {
            Reference::Tag(t) => ("tag", format!("{repo}:{t}")),
            Reference::Digest(d) => ("manifest", format!("{repo}@{d}")),
        };
        line(self.instance, self.user(), kind, &object, &why);
        for t in tags {
            let object = format!("{repo}:{t}");
            let why = format!("its manifest was deleted, {why}");
            line(self.instance, self.user(), "tag", &object, &why);
        }
    }

    /// A blob unlinked from a repository.
    pub fn blob(&self, repo: &RepoName, digest: &Digest) {
        let why = format!("requested through {}", self.through);
        line(
            self.instance,
            self.user(),
            "blob",
            &format!("{repo}@{digest}"),
            &why,
        );
    }
}

/// Every delete of a collection that ran (`run`: "scheduled", "berth gc",
/// "started by USER in the web UI"): the tags retention deleted (user
/// `retention`), the manifests and blobs garbage collection deleted (user
/// `gc`). A dry run deleted nothing and logs nothing.
pub fn collection(instance: &str, report: &Report, run: &str) {
    if report.dry_run {
        return;
    }
    for t in &report.tags {
        let why = format!("no retention rule keeps it ({run})");
        line(instance, "retention", "tag", t, &why);
    }
    for m in &report.manifests {
        let why = format!("no kept tag or index references it ({run})");
        line(instance, "gc", "manifest", m, &why);
    }
    for b in &report.blobs {
        let why = format!("no kept manifest references it ({run})");
        line(instance, "gc", "blob", b, &why);
    }
}
