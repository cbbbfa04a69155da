//! The repository pass: per repository, its layer, revision, tag and
//! referrer links (each must hold its directory's digest and point at an
//! intact blob, or for tags and referrers at a manifest of the repository),
//! its manifests (see `manifests`), and its upload sessions, which are
//! counted and left alone (those without data are leftovers).

use std::collections::{HashMap, HashSet};

use super::blobs::BlobState;
use super::manifests::{Completeness, Refs};
use super::repair::Fix;
use super::{Ctx, Kind, LeftoverKind, Phase, Progress};
use crate::oci::{Algorithm, Digest, RepoName, Tag};
use crate::storage::driver::optional;
use crate::storage::{keys, tree};

impl Ctx<'_> {
    pub(super) async fn repository_pass(&mut self, progress: &mut (dyn FnMut(&Progress) + Send)) {
        let repos = match tree::repositories(self.driver).await {
            Ok(r) => r,
            Err(e) => {
                self.unreadable(&keys::repositories(), &e).await;
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
        for repo in repos {
            progress(&p);
            self.check_repository(&repo).await;
            p.done += 1;
        }
        progress(&p);
    }

    async fn check_repository(&mut self, repo: &RepoName) {
        self.report.repositories += 1;

        for d in self.digest_dirs(&keys::layers(repo)).await {
            self.check_blob_link(&keys::layer_link(repo, &d), &d, "layer")
                .await;
        }

        let mut revisions = Vec::new();
        for d in self.digest_dirs(&keys::revisions(repo)).await {
            let link = keys::revision_link(repo, &d);
            if self.check_blob_link(&link, &d, "manifest revision").await {
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
            let state = self
                .completeness(repo, d, &linked, &mut memo, &mut refs, &mut relinked, 0)
                .await;
            if let Completeness::Broken(why) = state {
                broken.push((d.clone(), why));
            }
        }
        for (d, why) in broken {
            let tags = self.tags_pointing_at(repo, &d).await;
            let subject = refs
                .get(&d)
                .and_then(|r: &Option<Refs>| r.as_ref())
                .and_then(|r| r.subject.clone());
            let tagged = if tags.is_empty() {
                "untagged".to_string()
            } else {
                let names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
                format!("tags: {}", names.join(", "))
            };
            self.problem(
                Kind::BrokenManifest,
                &keys::revision_link(repo, &d),
                format!("manifest {d} ({tagged}) cannot be pulled: {why}"),
                Fix::UnlinkManifest {
                    repo: repo.clone(),
                    manifest: d.clone(),
                    tags,
                    subject,
                },
            )
            .await;
            if self.repair {
                linked.remove(&d);
            }
        }

        self.check_tags(repo, &linked).await;
        self.check_referrers(repo, &linked).await;
        self.uploads(repo).await;
    }

    /// The digests of the `<base>/<alg>/<hex>` prefixes, sorted; what is
    /// no digest is noted.
    async fn digest_dirs(&mut self, base: &str) -> Vec<Digest> {
        let mut out = Vec::new();
        for alg_name in self.names(base).await {
            let alg_dir = keys::child(base, &alg_name);
            let Some(alg) = Algorithm::from_name(&alg_name) else {
                self.note(format!(
                    "{}: not a digest algorithm berth knows; not checked",
                    self.show(&alg_dir)
                ));
                continue;
            };
            for hex in self.names(&alg_dir).await {
                match Digest::parse(&format!("{}:{hex}", alg.as_str())) {
                    Ok(d) => out.push(d),
                    Err(_) => self.note(format!(
                        "{}: not a digest directory; ignored",
                        self.show(&keys::child(&alg_dir, &hex))
                    )),
                }
            }
        }
        out
    }

    /// Checks a link `<...>/<alg>/<hex>/link` that must name `d` and point
    /// at an intact blob. Returns whether it is a usable link afterwards
    /// (`false` when absent or dangling).
    async fn check_blob_link(&mut self, link: &str, d: &Digest, what: &str) -> bool {
        let text = match self.link_text(link).await {
            Ok(Some(t)) => t,
            Ok(None) => return false,
            Err(e) => {
                self.unreadable(link, &e).await;
                return true;
            }
        };
        self.report.links += 1;
        let state = self.blob_state(d).await;
        if state != BlobState::Intact {
            self.problem(
                Kind::DanglingLink,
                link,
                format!("{what} link to {d}, whose blob is {}", state.as_str()),
                Fix::RemoveLink(link.to_string()),
            )
            .await;
            return false;
        }
        if Digest::parse(&text).ok().as_ref() != Some(d) {
            self.problem(
                Kind::BadLink,
                link,
                format!("{what} link holds {text:?}, not {d}"),
                Fix::WriteLink(link.to_string(), d.clone()),
            )
            .await;
        }
        true
    }

    /// The tags of `repo`, each with its name as stored; what is no tag
    /// name is noted (and not checked) when `notes`.
    async fn tags(&mut self, repo: &RepoName, notes: bool) -> Vec<(String, Tag)> {
        let mut out = Vec::new();
        for name in self.names(&keys::tags(repo)).await {
            match Tag::parse(&name) {
                Ok(tag) => out.push((name, tag)),
                Err(_) if notes => self.note(format!(
                    "{}: not a tag name; not checked",
                    self.show(&keys::child(&keys::tags(repo), &name))
                )),
                Err(_) => {}
            }
        }
        out
    }

    /// The tags of `repo` whose current link is `d`.
    async fn tags_pointing_at(&mut self, repo: &RepoName, d: &Digest) -> Vec<Tag> {
        let mut out = Vec::new();
        for (_, tag) in self.tags(repo, false).await {
            let current = tree::read_link(self.driver, &keys::tag_current_link(repo, &tag)).await;
            if current.ok().flatten().as_ref() == Some(d) {
                out.push(tag);
            }
        }
        out
    }

    async fn check_tags(&mut self, repo: &RepoName, linked: &HashSet<Digest>) {
        for (name, tag) in self.tags(repo, true).await {
            let current = keys::tag_current_link(repo, &tag);
            let text = match self.link_text(&current).await {
                Ok(Some(t)) => t,
                // Not a tag (registry:2 may leave history without a current link).
                Ok(None) => continue,
                Err(e) => {
                    self.unreadable(&current, &e).await;
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
                        format!("tag {name} holds {text:?}, which is no digest"),
                        Fix::RemoveTag(repo.clone(), tag.clone()),
                    )
                    .await;
                    continue;
                }
                Ok(d) if !linked.contains(&d) => {
                    let why = if self.exists(&keys::revision_link(repo, &d)).await {
                        format!("whose blob is {}", self.blob_state(&d).await.as_str())
                    } else {
                        "which is not in the repository".to_string()
                    };
                    self.problem(
                        Kind::DanglingLink,
                        &current,
                        format!("tag {name} points at manifest {d}, {why}"),
                        Fix::RemoveTag(repo.clone(), tag.clone()),
                    )
                    .await;
                    continue;
                }
                Ok(_) => {}
            }
            for d in self.digest_dirs(&keys::tag_index(repo, &tag)).await {
                let link = keys::tag_index_link(repo, &tag, &d);
                self.check_blob_link(&link, &d, &format!("tag {name} history"))
                    .await;
            }
        }
    }

    async fn check_referrers(&mut self, repo: &RepoName, linked: &HashSet<Digest>) {
        for subject in self.digest_dirs(&keys::referrer_subjects(repo)).await {
            for d in self.digest_dirs(&keys::referrers(repo, &subject)).await {
                let link = keys::referrer_link(repo, &subject, &d);
                let text = match self.link_text(&link).await {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(e) => {
                        self.unreadable(&link, &e).await;
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
                    )
                    .await;
                } else if Digest::parse(&text).ok().as_ref() != Some(&d) {
                    self.problem(
                        Kind::BadLink,
                        &link,
                        format!("referrer link holds {text:?}, not {d}"),
                        Fix::WriteLink(link.clone(), d.clone()),
                    )
                    .await;
                }
            }
        }
    }

    /// Counts the upload sessions of `repo`; one without data is a
    /// leftover.
    async fn uploads(&mut self, repo: &RepoName) {
        for id in self.names(&keys::uploads(repo)).await {
            let data = keys::upload_data(repo, &id);
            match optional(self.driver.stat(&data).await) {
                Ok(Some(meta)) => {
                    self.report.upload_sessions += 1;
                    self.report.upload_bytes += meta.size;
                }
                Ok(None) => {
                    let dir = keys::upload(repo, &id);
                    self.leftover(LeftoverKind::UploadWithoutData, dir, 0).await;
                }
                Err(e) => self.unreadable(&data, &e).await,
            }
        }
    }
}
