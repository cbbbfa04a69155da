//! Retention and garbage collection of one instance, online: pushes and
//! pulls go on while it runs.
//!
//! 1. Begin: under the exclusive GC lock, open the store's journal; from
//!    then on every request that makes content referenced (a manifest or
//!    tag write, a blob commit or mount) records what it wrote there,
//!    under the shared GC lock and before writing it ([`record`]).
//! 2. Scan, blocking nobody: tags (push time = mtime of the tag's
//!    `current/link`), manifest revisions and layer links of every
//!    repository; the blob store.
//! 3. Retention decides which tags go ([`super::retention`]).
//! 4. Finish, under the exclusive GC lock: read the journal and mark
//!    manifests reachable from the remaining tags (index children,
//!    referrers of reachable subjects), from every manifest and tag the
//!    journal names, from every manifest when `untagged = "keep"`, and from
//!    anything younger than `gc_grace`; their blobs are live, and so are the
//!    blobs the journal names. Then delete the tags, manifests and blobs
//!    left unmarked, and close the journal.
//! 5. Repositories left without tags and manifests leave the catalog (and
//!    the catalog token is renewed, so running servers walk again); upload
//!    sessions older than `upload_ttl` are purged.
//!
//! The invariant: nothing a request wrote after the run began is deleted
//! by it, whatever `gc_grace` is. A writer holds the shared lock from its
//! checks to its last write, so it either finished before the journal
//! opened (the scan sees its write) or recorded it before the decision,
//! which is taken under the exclusive lock. What was written before the run
//! and is not referenced by a kept tag (an untagged manifest, a blob no
//! manifest uses) is garbage once older than `gc_grace`: with `0s`, a blob
//! uploaded before the run for a manifest not pushed yet may go, and that
//! manifest's `PUT` then fails with `MANIFEST_BLOB_UNKNOWN` — never a `201`
//! for content that is gone. One run at a time per store, across processes.
//!
//! A dry run computes the same report and changes nothing.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use super::manifest;
use super::retention::{evict_for_quota, expired, TagFacts};
use crate::config::{Retention, Untagged};
use crate::oci::{Digest, RegistryError, RepoName, Tag};
use crate::storage::driver::{optional, Driver};
use crate::storage::{self, keys, FsStore};

/// What an instance holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub blobs: usize,
    pub repositories: usize,
    pub tags: usize,
}

/// What a run deleted (or, dry, would delete).
#[derive(Debug, Default)]
pub struct Report {
    pub dry_run: bool,
    pub tags: Vec<String>,
    pub manifests: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
    pub repositories: Vec<String>,
    pub uploads: usize,
    /// After the run (or what it would be).
    pub usage: Usage,
}

impl Report {
    pub fn render(&self, instance: &str) -> String {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let mut out = format!(
            "{instance}: {verb} {} tags, {} manifests, {} blobs ({} bytes), {} repositories, {} upload sessions\n",
            self.tags.len(),
            self.manifests.len(),
            self.blobs,
            self.bytes,
            self.repositories.len(),
            self.uploads
        );
        for t in &self.tags {
            let _ = writeln!(out, "  tag {t}");
        }
        for m in &self.manifests {
            let _ = writeln!(out, "  manifest {m}");
        }
        for r in &self.repositories {
            let _ = writeln!(out, "  repository {r}");
        }
        let u = &self.usage;
        let _ = writeln!(
            out,
            "{instance}: usage {} bytes in {} blobs, {} repositories, {} tags",
            u.bytes, u.blobs, u.repositories, u.tags
        );
        out
    }
}

/// The inputs of one run.
pub struct Run<'a> {
    pub policy: &'a Retention,
    /// Last pull of "repo:tag".
    pub pulls: &'a HashMap<String, SystemTime>,
    pub now: SystemTime,
    pub dry_run: bool,
}

struct RepoScan {
    name: RepoName,
    tags: Vec<(Tag, Digest, SystemTime)>,
    /// Every manifest each tag had (`_manifests/tags/<tag>/index`).
    history: Vec<(Tag, Vec<Digest>)>,
    revisions: Vec<(Digest, SystemTime)>,
    layers: Vec<(Digest, SystemTime)>,
}

fn io(context: &'static str) -> impl Fn(std::io::Error) -> RegistryError {
    move |e| RegistryError::io(context, e)
}

fn young(t: SystemTime, r: &Run) -> bool {
    r.now
        .duration_since(t)
        .map_or(true, |age| age < r.policy.gc_grace)
}

/// Parsed manifests, read once. Content never changes under its digest,
/// so what was read stays true; a manifest not found is looked for again
/// (a request may store it meanwhile), and a read that fails makes the run
/// delete nothing ([`Manifests::check`]): what an unread manifest
/// references is unknown.
struct Manifests<'s> {
    store: &'s FsStore,
    parsed: HashMap<Digest, Option<manifest::Manifest>>,
    failed: Option<std::io::Error>,
}

impl Manifests<'_> {
    fn get(&mut self, d: &Digest) -> Option<&manifest::Manifest> {
        if !self.parsed.contains_key(d) {
            match self.store.read_blob(d) {
                Ok(Some(b)) => {
                    self.parsed
                        .insert(d.clone(), manifest::parse(None, &b).ok());
                }
                Ok(None) => return None,
                Err(e) => {
                    self.failed.get_or_insert(e);
                    return None;
                }
            }
        }
        self.parsed[d].as_ref()
    }

    /// Fails if a manifest could not be read.
    fn check(&mut self) -> Result<(), RegistryError> {
        match self.failed.take() {
            Some(e) => Err(RegistryError::io("reading a manifest", e)),
            None => Ok(()),
        }
    }
}

fn scan_repo(store: &FsStore, name: &str) -> Result<Option<RepoScan>, RegistryError> {
    let e = io("scanning repository");
    let Ok(repo) = RepoName::parse(name) else {
        return Ok(None);
    };
    let mut tags = Vec::new();
    let mut history = Vec::new();
    let scanned = store.scan_tags(&repo).map_err(&e)?;
    for t in scanned.unlinked.iter().chain(&scanned.tags) {
        let Ok(tag) = Tag::parse(t) else { continue };
        let index = store.tag_dir(&repo, &tag).join("index");
        history.push((tag.clone(), store.list_links(&index).map_err(&e)?));
    }
    for t in scanned.tags {
        let Ok(tag) = Tag::parse(&t) else { continue };
        let link = store.tag_current_link(&repo, &tag);
        if let (Some(d), Some(m)) = (
            storage::read_link(&link).map_err(&e)?,
            storage::modified(&link).map_err(&e)?,
        ) {
            tags.push((tag, d, m));
        }
    }
    let dir = store.repo_dir(&repo);
    let with_times = |sub: &str| -> Result<Vec<(Digest, SystemTime)>, RegistryError> {
        let base = dir.join(sub);
        let mut out = Vec::new();
        for d in store.list_links(&base).map_err(&e)? {
            let link = base.join(d.algorithm().as_str()).join(d.hex()).join("link");
            if let Some(m) = storage::modified(&link).map_err(&e)? {
                out.push((d, m));
            }
        }
        Ok(out)
    };
    Ok(Some(RepoScan {
        revisions: with_times("_manifests/revisions")?,
        layers: with_times("_layers")?,
        tags,
        history,
        name: repo,
    }))
}

/// Every repository directory (with manifests, layers or uploads).
fn all_repos(store: &FsStore) -> Result<Vec<String>, RegistryError> {
    let mut names = Vec::new();
    for marker in ["_manifests", "_layers", "_uploads"] {
        names.extend(
            store
                .list_repositories_with(marker)
                .map_err(io("listing repositories"))?,
        );
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Manifests reachable from `roots` inside one repository, with referrers.
fn reachable(
    repo: &RepoScan,
    roots: HashSet<Digest>,
    manifests: &mut Manifests,
) -> HashSet<Digest> {
    let present: HashSet<&Digest> = repo.revisions.iter().map(|(d, _)| d).collect();
    let mut live: HashSet<Digest> = HashSet::new();
    let mut todo: Vec<Digest> = roots.into_iter().filter(|d| present.contains(d)).collect();
    loop {
        while let Some(d) = todo.pop() {
            if !live.insert(d.clone()) {
                continue;
            }
            if let Some(m) = manifests.get(&d) {
                todo.extend(m.children.iter().filter(|c| present.contains(c)).cloned());
            }
        }
        // Referrers go with their subject.
        for (d, _) in &repo.revisions {
            if !live.contains(d)
                && manifests
                    .get(d)
                    .and_then(|m| m.subject.clone())
                    .is_some_and(|s| live.contains(&s))
            {
                todo.push(d.clone());
            }
        }
        if todo.is_empty() {
            return live;
        }
    }
}

/// Blobs a manifest keeps alive: itself and its config and layers.
fn blobs_of(d: &Digest, manifests: &mut Manifests) -> Vec<Digest> {
    let mut out = vec![d.clone()];
    if let Some(m) = manifests.get(d) {
        out.extend(m.blobs.iter().cloned());
    }
    out
}

/// Runs retention and garbage collection once.
pub fn run(store: &FsStore, r: &Run) -> Result<Report, RegistryError> {
    Collection::begin(store, r)?.finish()
}

/// What requests wrote since a collection began, read from the store's
/// journal (see [`record`]).
#[derive(Default)]
struct Journal {
    /// Manifests stored, by repository.
    manifests: HashMap<String, HashSet<Digest>>,
    /// Tags written, as "repo:tag".
    tags: HashSet<String>,
    /// Blobs committed or linked into a repository.
    blobs: HashSet<Digest>,
}

impl Journal {
    fn read(store: &FsStore) -> Result<Journal, RegistryError> {
        let mut j = Journal::default();
        for record in store.read_journal().map_err(io("reading the journal"))? {
            for line in record.lines() {
                let mut words = line.split(' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("manifest"), Some(repo), Some(d)) => {
                        if let Ok(d) = Digest::parse(d) {
                            j.manifests.entry(repo.to_string()).or_default().insert(d);
                        }
                    }
                    (Some("tag"), Some(repo), Some(tag)) => {
                        j.tags.insert(format!("{repo}:{tag}"));
                    }
                    (Some("blob"), Some(_), Some(d)) => {
                        if let Ok(d) = Digest::parse(d) {
                            j.blobs.insert(d);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(j)
    }
}

/// A write that makes content referenced, as the journal records it.
pub(super) enum Written<'a> {
    /// A manifest stored in a repository, and the tag that now points at it.
    Manifest(&'a Digest, Option<&'a Tag>),
    /// A blob committed or linked into a repository.
    Blob(&'a Digest),
}

/// Records `what` for a collection that may be running, so that it keeps
/// what the write references. Called under the shared GC lock, before the
/// write itself: a write that fails after its record only keeps more.
pub(super) async fn record(
    driver: &dyn Driver,
    repo: &RepoName,
    what: Written<'_>,
) -> Result<(), RegistryError> {
    if optional(driver.stat(keys::JOURNAL_OPEN).await)?.is_none() {
        return Ok(());
    }
    let text = match what {
        Written::Manifest(d, None) => format!("manifest {repo} {d}\n"),
        Written::Manifest(d, Some(tag)) => format!("manifest {repo} {d}\ntag {repo} {tag}\n"),
        Written::Blob(d) => format!("blob {repo} {d}\n"),
    };
    let key = format!("{}/{}", keys::JOURNAL, uuid::Uuid::new_v4().simple());
    Ok(driver.put(&key, text.into()).await?)
}

/// What the mark phase decided.
#[derive(Default)]
struct Marked {
    /// Tags to remove, as (repository, tag) indexes.
    tags: Vec<(usize, usize)>,
    /// Manifests to unlink, with their repository's index.
    revisions: Vec<(usize, Digest)>,
    /// Repositories that end up without tags and manifests.
    emptied: Vec<usize>,
    /// Blobs that stay.
    blobs: HashSet<Digest>,
}

/// One run, between its scan and its sweep. [`Collection::begin`] scans
/// without blocking anyone; [`Collection::finish`] decides again, under the
/// exclusive lock, with what was written in between, and deletes.
pub struct Collection<'a> {
    store: &'a FsStore,
    r: &'a Run<'a>,
    /// One collection at a time per store (a dry run writes nothing and
    /// takes no lock).
    _running: Option<std::fs::File>,
    repos: Vec<RepoScan>,
    blobs: Vec<storage::BlobEntry>,
    manifests: Manifests<'a>,
    /// Tags retention removes, as (repository, tag) indexes.
    gone: HashSet<(usize, usize)>,
}

impl<'a> Collection<'a> {
    /// Opens the journal, scans the store and applies retention.
    pub fn begin(store: &'a FsStore, r: &'a Run<'a>) -> Result<Self, RegistryError> {
        let e = io("garbage collection");
        let running = (!r.dry_run)
            .then(|| store.gc_run_lock())
            .transpose()
            .map_err(&e)?;
        if !r.dry_run {
            // Under the exclusive lock: a writer either finished before
            // (and the scan below sees its write) or records it.
            let _lock = store.gc_lock(true).map_err(&e)?;
            store.open_journal().map_err(&e)?;
        }
        let mut repos = Vec::new();
        for name in all_repos(store)? {
            repos.extend(scan_repo(store, &name)?);
        }
        let blobs = store.list_blobs().map_err(&e)?;
        let mut c = Collection {
            store,
            r,
            _running: running,
            repos,
            blobs,
            manifests: Manifests {
                store,
                parsed: HashMap::new(),
                failed: None,
            },
            gone: HashSet::new(),
        };
        c.gone = c.retention();
        // Read every manifest now, so that the decision under the lock
        // reads only those the journal adds.
        for repo in &c.repos {
            for (d, _) in &repo.revisions {
                c.manifests.get(d);
            }
        }
        Ok(c)
    }

    /// The tags retention removes.
    fn retention(&mut self) -> HashSet<(usize, usize)> {
        let (r, repos, manifests) = (self.r, &self.repos, &mut self.manifests);
        let sizes: HashMap<&Digest, u64> = self.blobs.iter().map(|b| (&b.digest, b.size)).collect();
        let mut facts = Vec::new();
        let mut owners = Vec::new();
        for (ri, repo) in repos.iter().enumerate() {
            for (ti, (tag, _, pushed)) in repo.tags.iter().enumerate() {
                let key = format!("{}:{tag}", repo.name);
                facts.push(TagFacts {
                    repo: repo.name.to_string(),
                    tag: tag.to_string(),
                    pushed: *pushed,
                    pulled: r.pulls.get(&key).copied(),
                });
                owners.push((ri, ti));
            }
        }
        let mut gone = expired(r.policy, &facts, r.now);
        if r.policy.max_size.is_some() {
            let mut per_tag = Vec::new();
            for &(ri, ti) in &owners {
                let repo = &repos[ri];
                let live = reachable(repo, HashSet::from([repo.tags[ti].1.clone()]), manifests);
                let mut b: Vec<(String, u64)> = Vec::new();
                for d in live {
                    for blob in blobs_of(&d, manifests) {
                        b.push((blob.to_string(), sizes.get(&blob).copied().unwrap_or(0)));
                    }
                }
                per_tag.push(b);
            }
            let mut base = HashMap::new();
            if r.policy.untagged == Untagged::Keep {
                for repo in repos {
                    for (d, _) in &repo.revisions {
                        for blob in blobs_of(d, manifests) {
                            base.insert(blob.to_string(), sizes.get(&blob).copied().unwrap_or(0));
                        }
                    }
                }
            }
            let evicted = evict_for_quota(r.policy, &facts, &per_tag, &base, &gone);
            gone.extend(evicted);
        }
        gone.into_iter().map(|i| owners[i]).collect()
    }

    /// Marks what stays: the scan, with everything `written` since the run
    /// began added as roots (its tags, manifests and blobs all stay).
    fn mark(&mut self, written: &Journal) -> Marked {
        let r = self.r;
        let mut extra_roots: HashMap<usize, HashSet<Digest>> = HashMap::new();
        for (name, digests) in &written.manifests {
            let ri = match self.repos.iter().position(|p| p.name.as_str() == name) {
                Some(ri) => ri,
                None => match RepoName::parse(name) {
                    Ok(repo) => {
                        self.repos.push(RepoScan {
                            name: repo,
                            tags: Vec::new(),
                            history: Vec::new(),
                            revisions: Vec::new(),
                            layers: Vec::new(),
                        });
                        self.repos.len() - 1
                    }
                    Err(_) => continue,
                },
            };
            let repo = &mut self.repos[ri];
            for d in digests {
                if !repo.revisions.iter().any(|(p, _)| p == d) {
                    repo.revisions.push((d.clone(), r.now));
                }
            }
            extra_roots.insert(ri, digests.clone());
        }
        let mut m = Marked {
            blobs: written.blobs.clone(),
            ..Marked::default()
        };
        for (ri, repo) in self.repos.iter().enumerate() {
            let mut tags_left = false;
            let mut roots = extra_roots.remove(&ri).unwrap_or_default();
            for (ti, (tag, d, _)) in repo.tags.iter().enumerate() {
                let rewritten = written.tags.contains(&format!("{}:{tag}", repo.name));
                if self.gone.contains(&(ri, ti)) && !rewritten {
                    m.tags.push((ri, ti));
                } else {
                    tags_left = true;
                    roots.insert(d.clone());
                }
            }
            for (d, t) in &repo.revisions {
                if r.policy.untagged == Untagged::Keep || young(*t, r) {
                    roots.insert(d.clone());
                }
            }
            let live = reachable(repo, roots, &mut self.manifests);
            for (d, _) in &repo.revisions {
                if live.contains(d) {
                    m.blobs.extend(blobs_of(d, &mut self.manifests));
                } else {
                    m.revisions.push((ri, d.clone()));
                }
            }
            for (d, t) in &repo.layers {
                if young(*t, r) {
                    m.blobs.insert(d.clone());
                }
            }
            if !tags_left && live.is_empty() && !repo.revisions.is_empty() {
                m.emptied.push(ri);
            }
        }
        m
    }

    /// Decides again with what was written since [`Collection::begin`]
    /// and deletes, all under the exclusive lock; then purges abandoned
    /// uploads and measures what is left.
    pub fn finish(mut self) -> Result<Report, RegistryError> {
        let e = io("garbage collection");
        let mut report = Report {
            dry_run: self.r.dry_run,
            ..Report::default()
        };
        if self.r.dry_run {
            let m = self.mark(&Journal::default());
            let candidates = self.candidates(&m);
            report.blobs = candidates.len();
            report.bytes = candidates.iter().map(|b| b.size).sum();
            report.tags = m.tags.iter().map(|&t| self.tag_name(t)).collect();
            report.manifests = m
                .revisions
                .iter()
                .map(|(ri, d)| self.revision_name(*ri, d))
                .collect();
            report.repositories = m
                .emptied
                .iter()
                .map(|&ri| self.repos[ri].name.to_string())
                .collect();
        } else {
            let lock = self.store.gc_lock(true).map_err(&e)?;
            let written = Journal::read(self.store)?;
            let m = self.mark(&written);
            self.manifests.check()?;
            self.sweep(&m, &mut report)?;
            self.store.close_journal().map_err(&e)?;
            drop(lock);
        }
        report.uploads = purge_uploads(self.store, &self.repos, self.r)?;
        report.usage = usage(self.store, &report, &self.blobs, self.r.dry_run)?;
        Ok(report)
    }

    fn tag_name(&self, (ri, ti): (usize, usize)) -> String {
        format!("{}:{}", self.repos[ri].name, self.repos[ri].tags[ti].0)
    }

    fn revision_name(&self, ri: usize, d: &Digest) -> String {
        format!("{}@{d}", self.repos[ri].name)
    }

    /// Blobs of the scan that nothing keeps and that are past the grace.
    fn candidates(&self, m: &Marked) -> Vec<&storage::BlobEntry> {
        self.blobs
            .iter()
            .filter(|b| !m.blobs.contains(&b.digest) && !young(b.modified, self.r))
            .collect()
    }

    /// Deletes what `m` leaves unmarked; the report lists what was there to
    /// delete (a request may have deleted it first).
    fn sweep(&mut self, m: &Marked, report: &mut Report) -> Result<(), RegistryError> {
        let e = io("garbage collection");
        let store = self.store;
        for &(ri, ti) in &m.tags {
            let repo = &self.repos[ri];
            if storage::remove_dir_all(&store.tag_dir(&repo.name, &repo.tags[ti].0)).map_err(&e)? {
                report.tags.push(self.tag_name((ri, ti)));
            }
        }
        for (ri, d) in &m.revisions {
            let repo = &self.repos[*ri].name;
            if storage::remove_file(&store.revision_link(repo, d)).map_err(&e)? {
                report.manifests.push(self.revision_name(*ri, d));
            }
            if let Some(subject) = self.manifests.get(d).and_then(|m| m.subject.clone()) {
                let link = store.referrer_link(repo, &subject, d);
                storage::remove_dir_all(link.parent().expect("link has a parent")).map_err(&e)?;
            }
            // Tags that once pointed at it forget it, as registry:2's
            // collection does.
            for (tag, had) in &self.repos[*ri].history {
                if had.contains(d) {
                    let link = store.tag_index_link(repo, tag, d);
                    storage::remove_dir_all(link.parent().expect("link has a parent"))
                        .map_err(&e)?;
                }
            }
        }
        for b in self.candidates(m) {
            if store.remove_blob(&b.digest).map_err(&e)? {
                report.blobs += 1;
                report.bytes += b.size;
            }
        }
        // Layer links to blobs that are gone.
        for repo in &self.repos {
            for (d, _) in &repo.layers {
                if store.blob_size(d).map_err(&e)?.is_none() {
                    storage::remove_file(&store.layer_link(&repo.name, d)).map_err(&e)?;
                }
            }
        }
        for &ri in &m.emptied {
            let name = &self.repos[ri].name;
            if remove_repo_if_empty(store, name).map_err(&e)? {
                report.repositories.push(name.to_string());
            }
        }
        if !report.repositories.is_empty() {
            // After the removals: a server that walks before this sees the
            // old token and walks again.
            store.repositories_changed().map_err(&e)?;
        }
        Ok(())
    }
}

/// Removes a repository that has no tags and no manifests any more: it
/// leaves the catalog. Its layer links go only when none is left (a push
/// whose blobs are in and whose manifest is not yet keeps them), and
/// upload sessions in flight keep its directory. Whether it was removed.
fn remove_repo_if_empty(store: &FsStore, repo: &RepoName) -> std::io::Result<bool> {
    let dir = store.repo_dir(repo);
    let revisions = store.list_links(&dir.join("_manifests/revisions"))?;
    let tags = store.list_tags(repo)?.unwrap_or_default();
    if !revisions.is_empty() || !tags.is_empty() {
        return Ok(false);
    }
    storage::remove_dir_all(&dir.join("_manifests"))?;
    storage::remove_dir_all(&dir.join("_referrers"))?;
    if store.list_links(&dir.join("_layers"))?.is_empty() {
        storage::remove_dir_all(&dir.join("_layers"))?;
    }
    // Empty directories up to repositories/ go too.
    let mut d: &Path = &dir;
    while d != store.repositories_dir() && std::fs::remove_dir(d).is_ok() {
        d = d.parent().expect("inside repositories/");
    }
    Ok(true)
}

fn purge_uploads(store: &FsStore, repos: &[RepoScan], r: &Run) -> Result<usize, RegistryError> {
    let e = io("purging uploads");
    let mut purged = 0;
    for repo in repos {
        let dir = store.repo_dir(&repo.name).join("_uploads");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.map_err(&e)?.path();
            let started = std::fs::read_to_string(path.join("startedat"))
                .ok()
                .and_then(|s| humantime::parse_rfc3339_weak(s.trim()).ok())
                .or_else(|| storage::modified(&path).ok().flatten());
            let old = started.is_some_and(|t| {
                r.now
                    .duration_since(t)
                    .is_ok_and(|age| age >= r.policy.upload_ttl)
            });
            if old {
                if !r.dry_run {
                    storage::remove_dir_all(&path).map_err(&e)?;
                }
                purged += 1;
            }
        }
    }
    Ok(purged)
}

fn usage(
    store: &FsStore,
    report: &Report,
    before: &[storage::BlobEntry],
    dry_run: bool,
) -> Result<Usage, RegistryError> {
    let e = io("measuring usage");
    let repos = store.list_repositories().map_err(&e)?;
    let mut tags = 0;
    for name in &repos {
        if let Ok(repo) = RepoName::parse(name) {
            tags += store.list_tags(&repo).map_err(&e)?.map_or(0, |t| t.len());
        }
    }
    let (bytes, blobs) = if dry_run {
        (
            before.iter().map(|b| b.size).sum::<u64>() - report.bytes,
            before.len() - report.blobs,
        )
    } else {
        let now = store.list_blobs().map_err(&e)?;
        (now.iter().map(|b| b.size).sum(), now.len())
    };
    let (repositories, tags) = if dry_run {
        (
            repos.len() - report.repositories.len(),
            tags - report.tags.len(),
        )
    } else {
        (repos.len(), tags)
    };
    Ok(Usage {
        bytes,
        blobs,
        repositories,
        tags,
    })
}
