//! The blob pass: every `blobs/<alg>/<xx>/<hex>/data` is hashed as the
//! driver streams it ([`hash_object`]) and compared with its name; what does not match is
//! corrupt, and the later passes judge links against it
//! ([`Ctx::blob_state`]). Reads blobs only; quarantining is `repair`'s.

use super::repair::Fix;
use super::{sorted_names, Ctx, Kind, Phase, Progress};
use crate::oci::{Algorithm, Digest};
use crate::storage::driver::optional;
use crate::storage::hash::hash_object;
use crate::storage::keys;

/// The state of a blob in the blob store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlobState {
    Intact,
    Missing,
    Corrupt,
}

impl BlobState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            BlobState::Intact => "intact",
            BlobState::Missing => "missing",
            BlobState::Corrupt => "corrupt",
        }
    }
}

impl Ctx<'_> {
    pub(super) async fn blob_state(&self, d: &Digest) -> BlobState {
        if self.corrupt.contains(d) {
            BlobState::Corrupt
        } else if self.exists(&keys::blob(d)).await {
            BlobState::Intact
        } else {
            BlobState::Missing
        }
    }

    /// The names under `prefix`, sorted; with `notes`, a listing that
    /// fails is a problem (else it is only skipped).
    async fn blob_names(&mut self, prefix: &str, notes: bool) -> Vec<String> {
        match notes {
            true => self.names(prefix).await,
            false => sorted_names(self.driver, prefix).await.unwrap_or_default(),
        }
    }

    /// Calls `f` with every blob `blobs/<alg>/<xx>/<hex>/data` whose name is
    /// a digest berth knows, and its size; with `notes`, notes what does
    /// not fit and reports what cannot be listed.
    async fn walk_blobs(&mut self, notes: bool, f: &mut impl AsyncFnMut(&mut Self, Digest, u64)) {
        let blobs = keys::blobs();
        for alg_name in self.blob_names(&blobs, notes).await {
            let alg_dir = keys::child(&blobs, &alg_name);
            let Some(alg) = Algorithm::from_name(&alg_name) else {
                if notes {
                    self.note(format!(
                        "{}: not a digest algorithm berth knows; not verified",
                        self.show(&alg_dir)
                    ));
                }
                continue;
            };
            for prefix in self.blob_names(&alg_dir, notes).await {
                let prefix_dir = keys::child(&alg_dir, &prefix);
                for hex in self.blob_names(&prefix_dir, notes).await {
                    let digest = Digest::parse(&format!("{}:{hex}", alg.as_str()))
                        .ok()
                        .filter(|_| hex.starts_with(&prefix) && prefix.len() == 2);
                    let Some(digest) = digest else {
                        if notes {
                            self.note(format!(
                                "{}: not a blob directory; ignored",
                                self.show(&keys::child(&prefix_dir, &hex))
                            ));
                        }
                        continue;
                    };
                    let meta = optional(self.driver.stat(&keys::blob(&digest)).await);
                    if let Ok(Some(meta)) = meta {
                        f(self, digest, meta.size).await;
                    }
                }
            }
        }
    }

    pub(super) async fn blob_pass(&mut self, progress: &mut (dyn FnMut(&Progress) + Send)) {
        let (mut total, mut bytes_total) = (0u64, 0u64);
        self.walk_blobs(false, &mut async |_: &mut Self, _, size| {
            total += 1;
            bytes_total += size;
        })
        .await;
        let mut p = Progress {
            phase: Phase::Blobs,
            done: 0,
            total,
            bytes_done: 0,
            bytes_total,
        };
        progress(&p);
        self.walk_blobs(true, &mut async |ctx: &mut Self, digest: Digest, size| {
            let key = keys::blob(&digest);
            let result = hash_object(ctx.driver, &key, digest.algorithm(), &mut |n| {
                p.bytes_done += n;
                progress(&p);
            })
            .await;
            p.done += 1;
            progress(&p);
            match result {
                Ok(actual) if actual == digest => {
                    ctx.report.blobs += 1;
                    ctx.report.blob_bytes += size;
                }
                Ok(actual) => {
                    ctx.corrupt.insert(digest.clone());
                    let detail = format!("the bytes hash to {actual}, not {digest}");
                    ctx.problem(
                        Kind::CorruptBlob,
                        &key,
                        detail,
                        Fix::Quarantine(key.clone()),
                    )
                    .await;
                }
                Err(e) => ctx.unreadable(&key, &e).await,
            }
        })
        .await;
    }
}
