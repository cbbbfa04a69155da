//! The repository pass: per repository, its layer, revision, tag and
//! referrer links (each must hold its directory's digest and point at an
//! intact blob, or for tags and referrers at a manifest of the repository),
//! its manifests (see `manifests`), and its upload sessions, which are
//! counted and left alone.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::blobs::BlobState;
use super::manifests::{Completeness, Refs};
use super::repair::Fix;
use super::{algorithm, entries, Ctx, Kind, Phase, Progress};
use crate::oci::Digest;
use crate::storage;

impl Ctx {
    pub(super) fn repository_pass(&mut self, progress: &mut dyn FnMut(&Progress)) {
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

pub(super) fn layer_link(repo_dir: &Path, d: &Digest) -> PathBuf {
    repo_dir
        .join("_layers")
        .join(d.algorithm().as_str())
        .join(d.hex())
        .join("link")
}

pub(super) fn revision_link(repo_dir: &Path, d: &Digest) -> PathBuf {
    repo_dir
        .join("_manifests/revisions")
        .join(d.algorithm().as_str())
        .join(d.hex())
        .join("link")
}
