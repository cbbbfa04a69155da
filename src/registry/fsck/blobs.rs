//! The blob pass: every `blobs/<alg>/<xx>/<hex>/data` is hashed, streamed
//! [`BUF`] bytes at a time, and compared with its name; what does not match
//! is corrupt, and the later passes judge links against it
//! ([`Ctx::blob_state`]). Reads blobs only; quarantining is `repair`'s.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::repair::Fix;
use super::{algorithm, entries, Ctx, Kind, Phase, Progress};
use crate::oci::{Algorithm, Digest};
use crate::storage;

/// Bytes read per hashing step.
pub(super) const BUF: usize = 1 << 20;

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

/// Hashes a file `BUF` bytes at a time, telling `on_bytes` how far it got.
fn hash_file(
    path: &Path,
    alg: Algorithm,
    buf: &mut [u8],
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<Digest> {
    fn run<H: sha2::Digest>(
        mut h: H,
        f: &mut fs::File,
        buf: &mut [u8],
        on_bytes: &mut dyn FnMut(u64),
    ) -> io::Result<String> {
        loop {
            let n = match f.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            on_bytes(n as u64);
        }
        Ok(hex::encode(h.finalize()))
    }
    let mut f = fs::File::open(path)?;
    let hex = match alg {
        Algorithm::Sha256 => run(sha2::Sha256::new(), &mut f, buf, on_bytes)?,
        Algorithm::Sha512 => run(sha2::Sha512::new(), &mut f, buf, on_bytes)?,
    };
    Ok(Digest::from_parts(alg, hex))
}

impl Ctx {
    pub(super) fn blob_state(&self, d: &Digest) -> BlobState {
        if self.corrupt.contains(d) {
            BlobState::Corrupt
        } else if self.store.blob_path(d).is_file() {
            BlobState::Intact
        } else {
            BlobState::Missing
        }
    }

    /// Calls `f` with every `blobs/<alg>/<xx>/<hex>/data` whose name is a
    /// digest berth knows; returns what did not fit (as notes) when `notes`.
    fn walk_blobs(&mut self, notes: bool, f: &mut dyn FnMut(&mut Ctx, Digest, PathBuf)) {
        let blobs = self.store.blobs_dir();
        let algs = match entries(&blobs) {
            Ok(l) => l,
            Err(e) => {
                if notes {
                    self.unreadable(&blobs, &e);
                }
                return;
            }
        };
        for (alg_name, alg_dir, ft) in algs {
            let Some(alg) = algorithm(&alg_name).filter(|_| ft.is_dir()) else {
                if notes {
                    self.note(format!(
                        "{}: not a digest algorithm berth knows; not verified",
                        alg_dir.display()
                    ));
                }
                continue;
            };
            let prefixes = match entries(&alg_dir) {
                Ok(l) => l,
                Err(e) => {
                    if notes {
                        self.unreadable(&alg_dir, &e);
                    }
                    continue;
                }
            };
            for (prefix, prefix_dir, _) in prefixes {
                let hexes = match entries(&prefix_dir) {
                    Ok(l) => l,
                    Err(e) => {
                        if notes {
                            self.unreadable(&prefix_dir, &e);
                        }
                        continue;
                    }
                };
                for (hex, hex_dir, ft) in hexes {
                    let digest = Digest::parse(&format!("{}:{hex}", alg.as_str()))
                        .ok()
                        .filter(|_| ft.is_dir() && hex.starts_with(&prefix) && prefix.len() == 2);
                    let Some(digest) = digest else {
                        if notes && !storage::is_temp_name(&hex) {
                            self.note(format!(
                                "{}: not a blob directory; ignored",
                                hex_dir.display()
                            ));
                        }
                        continue;
                    };
                    let data = hex_dir.join("data");
                    if data.is_file() {
                        f(self, digest, data);
                    }
                }
            }
        }
    }

    pub(super) fn blob_pass(&mut self, progress: &mut dyn FnMut(&Progress)) {
        let (mut total, mut bytes_total) = (0u64, 0u64);
        self.walk_blobs(false, &mut |_, _, path| {
            total += 1;
            bytes_total += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        });
        let mut p = Progress {
            phase: Phase::Blobs,
            done: 0,
            total,
            bytes_done: 0,
            bytes_total,
        };
        progress(&p);
        let mut buf = vec![0u8; BUF];
        self.walk_blobs(true, &mut |ctx, digest, path| {
            let result = hash_file(&path, digest.algorithm(), &mut buf, &mut |n| {
                p.bytes_done += n;
                progress(&p);
            });
            p.done += 1;
            progress(&p);
            match result {
                Ok(actual) if actual == digest => {
                    ctx.report.blobs += 1;
                    ctx.report.blob_bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                }
                Ok(actual) => {
                    ctx.corrupt.insert(digest.clone());
                    ctx.problem(
                        Kind::CorruptBlob,
                        &path,
                        format!("the bytes hash to {actual}, not {digest}"),
                        Fix::Quarantine(path.clone()),
                    );
                }
                Err(e) => ctx.unreadable(&path, &e),
            }
        });
    }
}
