//! Retention and garbage collection of one instance, online: pushes and
//! pulls go on while it runs.
//!
//! 1. Begin: under the exclusive GC lock, open the store's journal; from
//!    then on every request that makes content referenced (a manifest or
//!    tag write, a blob commit or mount) records what it wrote there,
//!    under the shared GC lock and before writing it (`record`).
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
//! 5. Repositories left without tags and manifests leave the catalog. The
//!    tag-list tokens of the repositories that lost tags or left, and the
//!    catalog token when repositories left, are renewed, so running servers
//!    list them again ([`crate::storage::listing`]); upload sessions older
//!    than `upload_ttl` are purged.
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
//! The invariant holds among processes that share their locks: a run is
//! refused, when it begins and again before it decides, while a live
//! process on the store takes its locks elsewhere ([`super::presence`]).
//!
//! A dry run computes the same report and changes nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::SystemTime;

use super::retention::{evict_for_quota, expired, Retention, TagFacts, Untagged};
use super::{manifest, presence, usage};
use crate::coord::{Coordinator, Guard, Lock, Mode};
use crate::oci::{Digest, RegistryError, RepoName, Tag};
use crate::storage::driver::{optional, Driver, StorageError};
use crate::storage::{keys, listing};
use bytes::Bytes;
use scan::{BlobEntry, RepoScan};

pub mod history;
pub(super) mod scan;

pub use super::usage::Usage;

/// What the collections of one process did, added up.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    pub runs: u64,
    pub seconds: f64,
    pub tags: u64,
    pub manifests: u64,
    pub blobs: u64,
    pub bytes: u64,
}

impl Totals {
    /// Adds a run that took `took`.
    pub fn add(&mut self, r: &Report, took: std::time::Duration) {
        self.runs += 1;
        self.seconds += took.as_secs_f64();
        self.tags += r.tags.len() as u64;
        self.manifests += r.manifests.len() as u64;
        self.blobs += r.blobs.len() as u64;
        self.bytes += r.bytes;
    }
}

/// What a run deleted (or, dry, would delete).
#[derive(Debug, Default)]
pub struct Report {
    pub dry_run: bool,
    pub tags: Vec<String>,
    pub manifests: Vec<String>,
    /// Digests of the blobs.
    pub blobs: Vec<String>,
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
            self.blobs.len(),
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

fn young(t: SystemTime, r: &Run) -> bool {
    r.now
        .duration_since(t)
        .map_or(true, |age| age < r.policy.gc_grace)
}

/// Parsed manifests, read once ([`Manifests::load`]) and then looked up.
/// Content never changes under its digest, so what was read stays true; a
/// manifest not found is looked for again by a later load (a request may
/// store it meanwhile), and a read that fails makes the run delete nothing
/// ([`Manifests::check`]): what an unread manifest references is unknown.
#[derive(Default)]
struct Manifests {
    parsed: HashMap<Digest, Option<manifest::Manifest>>,
    failed: Option<StorageError>,
}

impl Manifests {
    /// Reads the manifests of `digests` not read yet.
    async fn load(&mut self, driver: &dyn Driver, digests: Vec<Digest>) {
        for d in &digests {
            if self.parsed.contains_key(d) {
                continue;
            }
            match optional(driver.get(&keys::blob(d)).await) {
                Ok(Some(b)) => {
                    self.parsed
                        .insert(d.clone(), manifest::parse(None, &b).ok());
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed.get_or_insert(e);
                }
            }
        }
    }

    fn get(&self, d: &Digest) -> Option<&manifest::Manifest> {
        self.parsed.get(d).and_then(Option::as_ref)
    }

    /// Fails if a manifest could not be read.
    fn check(&mut self) -> Result<(), RegistryError> {
        match self.failed.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Manifests reachable from `roots` inside one repository, with referrers.
fn reachable(repo: &RepoScan, roots: HashSet<Digest>, manifests: &Manifests) -> HashSet<Digest> {
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
fn blobs_of(d: &Digest, manifests: &Manifests) -> Vec<Digest> {
    let mut out = vec![d.clone()];
    if let Some(m) = manifests.get(d) {
        out.extend(m.blobs.iter().cloned());
    }
    out
}

/// Runs retention and garbage collection once.
pub async fn run(
    driver: &dyn Driver,
    coord: &Coordinator,
    r: &Run<'_>,
) -> Result<Report, RegistryError> {
    let report = Collection::begin(driver, coord, r).await?.finish().await?;
    if !r.dry_run {
        if let Err(e) = history::record(driver, &report, SystemTime::now()).await {
            tracing::warn!("cannot keep the run in the collection history: {e}");
        }
    }
    Ok(report)
}

/// What requests wrote since a collection began, read from the store's
/// journal (see `record`).
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
    /// Every record since the journal was opened; read under the
    /// exclusive lock, when no writer is half-way.
    async fn read(driver: &dyn Driver) -> Result<Journal, RegistryError> {
        let mut j = Journal::default();
        let mut records = Vec::new();
        for name in scan::names(driver, keys::JOURNAL).await? {
            let key = format!("{}/{name}", keys::JOURNAL);
            if key != keys::JOURNAL_OPEN {
                records.extend(optional(driver.get(&key).await)?);
            }
        }
        for record in records {
            let record = String::from_utf8_lossy(&record);
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
    driver: &'a dyn Driver,
    r: &'a Run<'a>,
    /// One collection at a time per store (a dry run writes nothing and
    /// takes no lock).
    running: Option<Guard>,
    repos: Vec<RepoScan>,
    blobs: Vec<BlobEntry>,
    manifests: Manifests,
    /// Tags retention removes, as (repository, tag) indexes.
    gone: HashSet<(usize, usize)>,
    /// The lock domain of this process ([`presence`]).
    domain: String,
}

/// Refuses a run while a live process on the store takes its locks in
/// another domain ([`presence`]).
async fn refuse_if_shared(driver: &dyn Driver, domain: &str) -> Result<(), RegistryError> {
    match presence::refusal_in(driver, domain, SystemTime::now()).await? {
        Some(why) => Err(RegistryError::Denied(why)),
        None => Ok(()),
    }
}

impl<'a> Collection<'a> {
    /// Opens the journal, scans the store and applies retention.
    pub async fn begin(
        driver: &'a dyn Driver,
        coord: &Coordinator,
        r: &'a Run<'a>,
    ) -> Result<Self, RegistryError> {
        let running = match r.dry_run {
            true => None,
            false => Some(coord.lock(Lock::GcRun, Mode::Exclusive).await?),
        };
        let domain = coord.domain();
        if let Some(running) = &running {
            refuse_if_shared(driver, &domain).await?;
            // Under the exclusive lock: a writer either finished before
            // (and the scan below sees its write) or records it.
            let _lock = running.lock(Lock::Gc, Mode::Exclusive).await?;
            driver.delete_all(keys::JOURNAL).await?;
            driver.put(keys::JOURNAL_OPEN, Bytes::new()).await?;
        }
        let mut repos = Vec::new();
        for name in scan::repositories(driver).await? {
            repos.push(scan::repository(driver, name).await?);
        }
        let blobs = scan::blobs(driver).await?;
        let mut manifests = Manifests::default();
        // Every manifest now, so that the decision under the lock reads
        // only those the journal adds.
        let revisions = repos
            .iter()
            .flat_map(|r| r.revisions.iter().map(|(d, _)| d.clone()));
        manifests.load(driver, revisions.collect()).await;
        let mut c = Collection {
            driver,
            r,
            running,
            repos,
            blobs,
            manifests,
            gone: HashSet::new(),
            domain,
        };
        c.gone = c.retention();
        Ok(c)
    }

    /// The tags retention removes.
    fn retention(&mut self) -> HashSet<(usize, usize)> {
        let (r, repos, manifests) = (self.r, &self.repos, &self.manifests);
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
                        self.repos.push(RepoScan::empty(repo));
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
            let live = reachable(repo, roots, &self.manifests);
            for (d, _) in &repo.revisions {
                if live.contains(d) {
                    m.blobs.extend(blobs_of(d, &self.manifests));
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
    pub async fn finish(mut self) -> Result<Report, RegistryError> {
        let mut report = Report {
            dry_run: self.r.dry_run,
            ..Report::default()
        };
        if self.r.dry_run {
            let m = self.mark(&Journal::default());
            let candidates = self.candidates(&m);
            report.blobs = candidates.iter().map(|b| b.digest.to_string()).collect();
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
            let running = self
                .running
                .as_ref()
                .expect("a real run holds the run lock");
            let lock = running.lock(Lock::Gc, Mode::Exclusive).await?;
            if let Err(e) = refuse_if_shared(self.driver, &self.domain).await {
                self.driver.delete_all(keys::JOURNAL).await?;
                return Err(e);
            }
            let written = Journal::read(self.driver).await?;
            let added = written.manifests.values().flatten().cloned().collect();
            self.manifests.load(self.driver, added).await;
            let m = self.mark(&written);
            self.manifests.check()?;
            self.sweep(&m, &mut report).await?;
            self.driver.delete_all(keys::JOURNAL).await?;
            drop(lock);
        }
        report.uploads = self.purge_uploads().await?;
        report.usage = self.usage(&report).await?;
        Ok(report)
    }

    fn tag_name(&self, (ri, ti): (usize, usize)) -> String {
        format!("{}:{}", self.repos[ri].name, self.repos[ri].tags[ti].0)
    }

    fn revision_name(&self, ri: usize, d: &Digest) -> String {
        format!("{}@{d}", self.repos[ri].name)
    }

    /// Blobs of the scan that nothing keeps and that are past the grace.
    fn candidates(&self, m: &Marked) -> Vec<&BlobEntry> {
        self.blobs
            .iter()
            .filter(|b| !m.blobs.contains(&b.digest) && !young(b.modified, self.r))
            .collect()
    }

    /// Deletes what `m` leaves unmarked; the report lists what was there to
    /// delete (a request may have deleted it first).
    async fn sweep(&self, m: &Marked, report: &mut Report) -> Result<(), RegistryError> {
        let d = self.driver;
        let mut untagged = BTreeSet::new();
        for &(ri, ti) in &m.tags {
            let repo = &self.repos[ri];
            if d.delete_all(&keys::tag(&repo.name, &repo.tags[ti].0))
                .await?
            {
                report.tags.push(self.tag_name((ri, ti)));
                untagged.insert(ri);
            }
        }
        // After the removals, as every change of a tag list (see
        // `storage::listing`).
        for ri in untagged {
            listing::tags_changed(d, &self.repos[ri].name).await?;
        }
        for (ri, digest) in &m.revisions {
            let repo = &self.repos[*ri].name;
            if d.delete(&keys::revision_link(repo, digest)).await? {
                report.manifests.push(self.revision_name(*ri, digest));
            }
            if let Some(subject) = self.manifests.get(digest).and_then(|m| m.subject.clone()) {
                d.delete_all(&keys::referrer_entry(repo, &subject, digest))
                    .await?;
            }
            // Tags that once pointed at it forget it, as registry:2's
            // collection does.
            for (tag, had) in &self.repos[*ri].history {
                if had.contains(digest) {
                    d.delete_all(&keys::tag_index_entry(repo, tag, digest))
                        .await?;
                }
            }
        }
        let mut deleted = BTreeSet::new();
        for b in self.candidates(m) {
            deleted.insert(&b.digest);
            if d.delete_all(&keys::blob_dir(&b.digest)).await? {
                report.blobs.push(b.digest.to_string());
                report.bytes += b.size;
            }
        }
        // Layer links to blobs that are gone. Only collections delete
        // blobs, one at a time: a blob the scan found and this run kept is
        // there, and needs no look.
        let kept: BTreeSet<&Digest> = self
            .blobs
            .iter()
            .map(|b| &b.digest)
            .filter(|d| !deleted.contains(d))
            .collect();
        for repo in &self.repos {
            for (digest, _) in repo.layers.iter().filter(|(dg, _)| !kept.contains(dg)) {
                if optional(d.stat(&keys::blob(digest)).await)?.is_none() {
                    d.delete(&keys::layer_link(&repo.name, digest)).await?;
                }
            }
        }
        for &ri in &m.emptied {
            let name = &self.repos[ri].name;
            if remove_repo_if_empty(d, name).await? {
                report.repositories.push(name.to_string());
                listing::tags_changed(d, name).await?;
            }
        }
        if !report.repositories.is_empty() {
            // After the removals: a server that walks before this sees the
            // old token and walks again.
            listing::repositories_changed(d).await?;
        }
        Ok(())
    }

    /// Purges upload sessions older than `upload_ttl`; how many.
    async fn purge_uploads(&self) -> Result<usize, RegistryError> {
        let mut purged = 0;
        for repo in &self.repos {
            for (id, started) in scan::uploads(self.driver, &repo.name).await? {
                let old = started.is_some_and(|t| {
                    self.r
                        .now
                        .duration_since(t)
                        .is_ok_and(|age| age >= self.r.policy.upload_ttl)
                });
                if old {
                    if !self.r.dry_run {
                        self.driver
                            .delete_all(&keys::upload(&repo.name, &id))
                            .await?;
                    }
                    purged += 1;
                }
            }
        }
        Ok(purged)
    }

    /// What the instance holds after the run (or would, dry).
    async fn usage(&self, report: &Report) -> Result<Usage, RegistryError> {
        if !self.r.dry_run {
            return Ok(usage::measure(self.driver).await?);
        }
        let (repositories, tags) = usage::catalog_counts(self.driver).await?;
        Ok(Usage {
            bytes: self.blobs.iter().map(|b| b.size).sum::<u64>() - report.bytes,
            blobs: self.blobs.len() - report.blobs.len(),
            repositories: repositories - report.repositories.len(),
            tags: tags - report.tags.len(),
        })
    }
}

/// Removes a repository that has no tags and no manifests any more: it
/// leaves the catalog. Its layer links go only when none is left (a push
/// whose blobs are in and whose manifest is not yet keeps them), and
/// upload sessions in flight keep it. Whether it was removed.
async fn remove_repo_if_empty(d: &dyn Driver, repo: &RepoName) -> Result<bool, StorageError> {
    if !scan::links(d, &keys::revisions(repo)).await?.is_empty()
        || !scan::tags(d, repo).await?.is_empty()
    {
        return Ok(false);
    }
    let dir = keys::repo(repo);
    d.delete_all(&format!("{dir}/_manifests")).await?;
    d.delete_all(&format!("{dir}/_referrers")).await?;
    if scan::links(d, &keys::layers(repo)).await?.is_empty() {
        d.delete_all(&keys::layers(repo)).await?;
    }
    // Empty directories up to repositories/ go too.
    d.prune(&dir, &keys::repositories()).await?;
    Ok(true)
}
