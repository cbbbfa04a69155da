//! Retention and garbage collection of one instance, online: pushes and
//! pulls go on while it runs.
//!
//! 1. Scan: tags (push time = mtime of the tag's `current/link`), manifest
//!    revisions and layer links of every repository; the blob store.
//! 2. Retention decides which tags go ([`super::retention`]).
//! 3. Mark: manifests reachable from the remaining tags (index children,
//!    referrers of reachable subjects), every manifest when `untagged =
//!    "keep"`, and anything younger than `gc_grace`; their blobs are live.
//! 4. Sweep, under the exclusive GC lock (writers that make a blob
//!    referenced hold it shared): manifests and layer links written since the
//!    scan began are marked too, then unmarked blobs older than `gc_grace`
//!    are deleted. A blob that a push refers to is therefore never deleted.
//! 5. Repositories left without tags and manifests disappear (and the
//!    catalog token is renewed, so running servers walk again); upload
//!    sessions older than `upload_ttl` are purged.
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
use crate::storage::{self, FsStore};

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

/// Parsed manifests, read once.
struct Manifests<'s> {
    store: &'s FsStore,
    parsed: HashMap<Digest, Option<manifest::Manifest>>,
}

impl Manifests<'_> {
    fn get(&mut self, d: &Digest) -> Option<&manifest::Manifest> {
        if !self.parsed.contains_key(d) {
            let m = self
                .store
                .read_blob(d)
                .ok()
                .flatten()
                .and_then(|b| manifest::parse(None, &b).ok());
            self.parsed.insert(d.clone(), m);
        }
        self.parsed[d].as_ref()
    }
}

fn scan_repo(store: &FsStore, name: &str) -> Result<Option<RepoScan>, RegistryError> {
    let e = io("scanning repository");
    let Ok(repo) = RepoName::parse(name) else {
        return Ok(None);
    };
    let mut tags = Vec::new();
    for t in store.list_tags(&repo).map_err(&e)?.unwrap_or_default() {
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
    let started = SystemTime::now();
    let e = io("garbage collection");
    let mut report = Report {
        dry_run: r.dry_run,
        ..Report::default()
    };
    let mut repos = Vec::new();
    for name in all_repos(store)? {
        repos.extend(scan_repo(store, &name)?);
    }
    let blobs = store.list_blobs().map_err(&e)?;
    let sizes: HashMap<Digest, u64> = blobs.iter().map(|b| (b.digest.clone(), b.size)).collect();
    let mut manifests = Manifests {
        store,
        parsed: HashMap::new(),
    };

    // Retention.
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
            let live = reachable(
                repo,
                HashSet::from([repo.tags[ti].1.clone()]),
                &mut manifests,
            );
            let mut b: Vec<(String, u64)> = Vec::new();
            for d in live {
                for blob in blobs_of(&d, &mut manifests) {
                    b.push((blob.to_string(), sizes.get(&blob).copied().unwrap_or(0)));
                }
            }
            per_tag.push(b);
        }
        let mut base = HashMap::new();
        if r.policy.untagged == Untagged::Keep {
            for repo in &repos {
                for (d, _) in &repo.revisions {
                    for blob in blobs_of(d, &mut manifests) {
                        base.insert(blob.to_string(), sizes.get(&blob).copied().unwrap_or(0));
                    }
                }
            }
        }
        let evicted = evict_for_quota(r.policy, &facts, &per_tag, &base, &gone);
        gone.extend(evicted);
    }
    let gone: HashSet<(usize, usize)> = gone.into_iter().map(|i| owners[i]).collect();

    // Mark.
    let mut marked: HashSet<Digest> = HashSet::new();
    let mut dead_revisions: Vec<(usize, Digest)> = Vec::new();
    let mut emptied = Vec::new();
    for (ri, repo) in repos.iter().enumerate() {
        let mut roots: HashSet<Digest> = repo
            .tags
            .iter()
            .enumerate()
            .filter(|(ti, _)| !gone.contains(&(ri, *ti)))
            .map(|(_, (_, d, _))| d.clone())
            .collect();
        for (d, m) in &repo.revisions {
            if r.policy.untagged == Untagged::Keep || young(*m, r) {
                roots.insert(d.clone());
            }
        }
        let live = reachable(repo, roots, &mut manifests);
        for (d, _) in &repo.revisions {
            if live.contains(d) {
                marked.extend(blobs_of(d, &mut manifests));
            } else {
                dead_revisions.push((ri, d.clone()));
            }
        }
        for (d, m) in &repo.layers {
            if young(*m, r) {
                marked.insert(d.clone());
            }
        }
        let tags_left = (0..repo.tags.len()).any(|ti| !gone.contains(&(ri, ti)));
        if !tags_left && live.is_empty() && !repo.revisions.is_empty() {
            emptied.push(ri);
        }
    }
    for (ri, repo) in repos.iter().enumerate() {
        for (ti, (tag, _, _)) in repo.tags.iter().enumerate() {
            if gone.contains(&(ri, ti)) {
                report.tags.push(format!("{}:{tag}", repo.name));
            }
        }
    }
    report.manifests = dead_revisions
        .iter()
        .map(|(ri, d)| format!("{}@{d}", repos[*ri].name))
        .collect();
    report.repositories = emptied
        .iter()
        .map(|ri| repos[*ri].name.to_string())
        .collect();

    let candidates: Vec<&storage::BlobEntry> = blobs
        .iter()
        .filter(|b| !marked.contains(&b.digest) && !young(b.modified, r))
        .collect();

    if r.dry_run {
        report.blobs = candidates.len();
        report.bytes = candidates.iter().map(|b| b.size).sum();
    } else {
        for (ri, repo) in repos.iter().enumerate() {
            for (ti, (tag, _, _)) in repo.tags.iter().enumerate() {
                if gone.contains(&(ri, ti)) {
                    storage::remove_dir_all(&store.tag_dir(&repo.name, tag)).map_err(&e)?;
                }
            }
        }
        for (ri, d) in &dead_revisions {
            let repo = &repos[*ri].name;
            storage::remove_file(&store.revision_link(repo, d)).map_err(&e)?;
            if let Some(subject) = manifests.get(d).and_then(|m| m.subject.clone()) {
                let link = store.referrer_link(repo, &subject, d);
                storage::remove_dir_all(link.parent().expect("link has a parent")).map_err(&e)?;
            }
        }
        let _lock = store.gc_lock(true).map_err(&e)?;
        // Whatever was written since the scan began is live.
        for name in all_repos(store)? {
            let Some(repo) = scan_repo(store, &name)? else {
                continue;
            };
            for (d, m) in repo.revisions.iter().chain(repo.layers.iter()) {
                if *m >= started || young(*m, r) {
                    marked.extend(blobs_of(d, &mut manifests));
                }
            }
        }
        for b in candidates {
            if marked.contains(&b.digest) {
                continue;
            }
            if store.remove_blob(&b.digest).map_err(&e)? {
                report.blobs += 1;
                report.bytes += b.size;
            }
        }
        // Layer links to blobs that are gone.
        for repo in &repos {
            for (d, _) in &repo.layers {
                if store.blob_size(d).map_err(&e)?.is_none() {
                    storage::remove_file(&store.layer_link(&repo.name, d)).map_err(&e)?;
                }
            }
        }
        for &ri in &emptied {
            remove_repo_if_empty(store, &repos[ri].name).map_err(&e)?;
        }
        if !emptied.is_empty() {
            // After the removals: a server that walks before this sees the
            // old token and walks again.
            store.repositories_changed().map_err(&e)?;
        }
    }
    report.uploads = purge_uploads(store, &repos, r)?;
    report.usage = usage(store, &report, &blobs, r.dry_run)?;
    Ok(report)
}

/// Removes a repository that has no tags and no manifests any more (upload
/// sessions in flight keep its directory, but it leaves the catalog).
fn remove_repo_if_empty(store: &FsStore, repo: &RepoName) -> std::io::Result<()> {
    let revisions = store.list_links(&store.repo_dir(repo).join("_manifests/revisions"))?;
    let tags = store.list_tags(repo)?.unwrap_or_default();
    if !revisions.is_empty() || !tags.is_empty() {
        return Ok(());
    }
    let dir = store.repo_dir(repo);
    storage::remove_dir_all(&dir.join("_manifests"))?;
    storage::remove_dir_all(&dir.join("_layers"))?;
    storage::remove_dir_all(&dir.join("_referrers"))?;
    // Empty directories up to repositories/ go too.
    let mut d: &Path = &dir;
    while d != store.repositories_dir() && std::fs::remove_dir(d).is_ok() {
        d = d.parent().expect("inside repositories/");
    }
    Ok(())
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
