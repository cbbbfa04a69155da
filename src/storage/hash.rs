//! Hashing what a store holds: an object streamed from any driver, hashed
//! on the blocking pool a few MiB at a time, so memory stays flat whatever
//! the object's size and no runtime thread is held by the hashing.

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest as _;

use super::driver::{Driver, StorageError};
use crate::oci::{Algorithm, Digest};

/// Bytes gathered before they are handed to the blocking pool.
const BATCH: usize = 4 << 20;

/// A running hash in one of the algorithms digests name.
pub(super) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub(super) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub(super) fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_parts(Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => Digest::from_parts(Algorithm::Sha512, hex::encode(h.finalize())),
        }
    }
}

/// The digest of the object at `key`, read through `driver`; `progress`
/// is told of every piece hashed (its length).
pub async fn hash_object(
    driver: &dyn Driver,
    key: &str,
    algorithm: Algorithm,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Digest, StorageError> {
    let size = driver.stat(key).await?.size;
    let mut stream = driver.read(key, 0, size).await?;
    let failed = |e| StorageError::io("hashing", key, e);
    let mut hasher = Hasher::new(algorithm);
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0;
    loop {
        let piece = stream.next().await.transpose().map_err(failed)?;
        let end = piece.is_none();
        if let Some(p) = piece {
            pending_len += p.len();
            pending.push(p);
        }
        if pending_len >= BATCH || (end && pending_len > 0) {
            let batch = std::mem::take(&mut pending);
            hasher = tokio::task::spawn_blocking(move || {
                batch.iter().for_each(|b| hasher.update(b));
                hasher
            })
            .await
            .map_err(|e| failed(std::io::Error::other(e)))?;
            progress(pending_len as u64);
            pending_len = 0;
        }
        if end {
            return Ok(hasher.finish());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemDriver;

    #[tokio::test]
    async fn hashes_what_is_stored_in_pieces() {
        let d = MemDriver::new();
        let data = vec![7u8; BATCH * 2 + 5];
        d.put("a/data", Bytes::from(data.clone())).await.unwrap();
        let mut seen = 0;
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let got = hash_object(&d, "a/data", alg, &mut |n| seen += n)
                .await
                .unwrap();
            assert_eq!(got, Digest::of(alg, &data));
        }
        assert_eq!(seen, 2 * data.len() as u64);
        let missing = hash_object(&d, "b/data", Algorithm::Sha256, &mut |_| {}).await;
        assert!(missing.unwrap_err().is_not_found());
    }
}
