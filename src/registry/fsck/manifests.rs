//! Whether a repository's manifests can be pulled whole: every blob a
//! manifest references is intact (and linked into the repository), every
//! child of an index is itself complete. Manifests berth cannot parse
//! (schema1, unknown media types, oversized) are noted and not judged.

use std::collections::{HashMap, HashSet};

use super::blobs::BlobState;
use super::repair::Fix;
use super::{Ctx, Kind};
use crate::oci::{media, Digest, RepoName};
use crate::registry::manifest;
use crate::storage::driver::optional;
use crate::storage::keys;

/// Deepest index nesting followed.
const MAX_DEPTH: usize = 32;

/// What a manifest references, as far as completeness goes.
pub(super) struct Refs {
    pub(super) blobs: Vec<Digest>,
    pub(super) children: Vec<Digest>,
    pub(super) subject: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Completeness {
    Complete,
    /// Why it cannot be pulled.
    Broken(String),
    /// Not understood (schema1, unknown media type): not judged.
    Unchecked,
}

impl Ctx<'_> {
    /// Whether manifest `d` of `repo` can be pulled whole.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn completeness(
        &mut self,
        repo: &RepoName,
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
            let r = self.load_refs(d).await;
            refs.insert(d.clone(), r);
        }
        let Some(r) = refs.get(d).and_then(Option::as_ref) else {
            memo.insert(d.clone(), Completeness::Unchecked);
            return Completeness::Unchecked;
        };
        let (blobs, children) = (r.blobs.clone(), r.children.clone());
        let mut why = Vec::new();
        for b in &blobs {
            match self.blob_state(b).await {
                BlobState::Intact => {
                    let layer = keys::layer_link(repo, b);
                    if !self.exists(&layer).await
                        && !self.exists(&keys::revision_link(repo, b)).await
                        && relinked.insert(b.clone())
                    {
                        self.problem(
                            Kind::MissingLink,
                            &layer,
                            format!(
                                "manifest {d} references blob {b}, which is intact but not linked into the repository"
                            ),
                            Fix::WriteLink(layer.clone(), b.clone()),
                        )
                        .await;
                    }
                }
                state => why.push(format!("its blob {b} is {}", state.as_str())),
            }
        }
        for c in &children {
            let state = self.blob_state(c).await;
            if state != BlobState::Intact {
                why.push(format!("its child manifest {c} is {}", state.as_str()));
                continue;
            }
            let child =
                Box::pin(self.completeness(repo, c, linked, memo, refs, relinked, depth + 1)).await;
            if let Completeness::Broken(_) = child {
                why.push(format!("its child manifest {c} cannot be pulled"));
            } else if !linked.contains(c) && relinked.insert(c.clone()) {
                let link = keys::revision_link(repo, c);
                self.problem(
                    Kind::MissingLink,
                    &link,
                    format!(
                        "index {d} references manifest {c}, which is intact but not linked into the repository"
                    ),
                    Fix::WriteLink(link.clone(), c.clone()),
                )
                .await;
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
    async fn load_refs(&mut self, d: &Digest) -> Option<Refs> {
        let key = keys::blob(d);
        let meta = optional(self.driver.stat(&key).await).ok().flatten();
        let size = meta.map_or(0, |m| m.size);
        if size > manifest::MAX_MANIFEST_SIZE as u64 {
            self.note(format!(
                "manifest {d} is {size} bytes, more than any manifest berth accepts; references not checked"
            ));
            return None;
        }
        let bytes = match self.driver.get(&key).await {
            Ok(b) => b,
            Err(e) => {
                self.unreadable(&key, &e).await;
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
}
