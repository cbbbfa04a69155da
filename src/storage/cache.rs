//! A host's copies of the blobs it pulled from a remote store (`[storage]
//! cache` of an S3 instance). Blobs are content-addressed, so a copy never
//! goes stale: a blob read whole from the store is written here on the side
//! (off the request's path: a copy that falls behind the client is given
//! up), its digest checked and the file synced before it is kept, and later
//! pulls of the blob read the local file instead of the bucket. The bucket
//! stays the truth: a pull still finds the blob linked and present there
//! first ([`crate::registry::Registry::blob`]), so a blob collected by any
//! process is unknown here too, copy or not. The least recently used copies
//! are removed past the size limit; a failed write (a full disk) costs the
//! copy, never the pull.

use std::collections::HashSet;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::driver::{ByteStream, StorageError};
use super::hash::Hasher;
use super::read::FileRange;
use crate::oci::Digest;

/// Bytes a copy may have waiting to be written before it is given up: the
/// client is never held back by the disk, and memory stays bounded.
const BACKLOG: u64 = 8 << 20;
/// Names of copies being written start with this.
const PARTIAL: &str = ".partial-";

/// Where a cache is and how much it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// The copies of one instance's blobs on this host.
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    state: parking_lot::Mutex<State>,
}

struct State {
    /// Copies by file name, least recently used first, with their sizes.
    copies: lru::LruCache<String, u64>,
    /// Bytes the copies hold.
    total: u64,
    /// Copies being written.
    filling: HashSet<String>,
}

/// The file name of the copy of `digest`.
fn file_name(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().as_str(), digest.hex())
}

impl BlobCache {
    /// The cache in `spec.dir` (made if missing), knowing the copies
    /// already there, oldest first; unfinished copies of an earlier run
    /// are removed, and the oldest copies past the limit.
    pub fn open(spec: &CacheSpec) -> io::Result<BlobCache> {
        let in_dir =
            |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", spec.dir.display()));
        fs::create_dir_all(&spec.dir).map_err(in_dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&spec.dir).map_err(in_dir)? {
            let entry = entry.map_err(in_dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().map_err(in_dir)?;
            if name.starts_with(PARTIAL) {
                let _ = fs::remove_file(entry.path());
            } else if meta.is_file() {
                found.push((meta.modified().ok(), name, meta.len()));
            }
        }
        found.sort();
        let mut state = State {
            copies: lru::LruCache::unbounded(),
            total: 0,
            filling: HashSet::new(),
        };
        for (_, name, size) in found {
            state.total += size;
            state.copies.put(name, size);
        }
        let cache = BlobCache {
            dir: spec.dir.clone(),
            max_bytes: spec.max_bytes,
            state: parking_lot::Mutex::new(state),
        };
        cache.evict();
        Ok(cache)
    }

    /// `len` bytes from `start` of the blob `digest` of `size` bytes: from
    /// its copy here, else from `fetch` (the store), keeping a copy when
    /// the whole blob is read and none is being made.
    pub async fn read<F>(
        self: &Arc<Self>,
        digest: &Digest,
        size: u64,
        start: u64,
        len: u64,
        fetch: F,
    ) -> Result<ByteStream, StorageError>
    where
        F: Future<Output = Result<ByteStream, StorageError>>,
    {
        let name = file_name(digest);
        if let Some(file) = self.copy(&name, size) {
            return Ok(Box::pin(FileRange::new(file, start, len)));
        }
        let stream = fetch.await?;
        let whole = start == 0 && len == size && size <= self.max_bytes;
        if !whole || !self.state.lock().filling.insert(name.clone()) {
            return Ok(stream);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            cache: self.clone(),
            name,
            digest: digest.clone(),
            size,
            backlog: backlog.clone(),
        };
        tokio::task::spawn_blocking(move || writer.run(rx));
        Ok(Box::pin(Tee {
            inner: stream,
            tx: Some(tx),
            backlog,
        }))
    }

    /// The copy named `name` when it is here with `size` bytes (marked as
    /// just used); one that is gone or of another size is forgotten.
    fn copy(&self, name: &str, size: u64) -> Option<File> {
        if self.state.lock().copies.get(name) != Some(&size) {
            return None;
        }
        match File::open(self.dir.join(name)) {
            Ok(f) if f.metadata().is_ok_and(|m| m.len() == size) => Some(f),
            _ => {
                let mut state = self.state.lock();
                if let Some(n) = state.copies.pop(name) {
                    state.total -= n;
                }
                None
            }
        }
    }

    /// Removes the least recently used copies until the rest fit.
    fn evict(&self) {
        let mut gone = Vec::new();
        {
            let mut state = self.state.lock();
            while state.total > self.max_bytes {
                let Some((name, size)) = state.copies.pop_lru() else {
                    break;
                };
                state.total -= size;
                gone.push(name);
            }
        }
        for name in gone {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }

    /// Takes in the finished copy `name` of `size` bytes.
    fn keep(&self, name: String, size: u64) {
        {
            let mut state = self.state.lock();
            state.filling.remove(&name);
            if let Some(old) = state.copies.put(name, size) {
                state.total -= old;
            }
            state.total += size;
        }
        self.evict();
    }
}

/// The store's stream, handing each piece to the [`Writer`] as it passes.
struct Tee {
    inner: ByteStream,
    /// `None` once the copy is given up (or the stream ended).
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    backlog: Arc<AtomicU64>,
}

impl Stream for Tee {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(piece)) => {
                let n = piece.len() as u64;
                let behind = self.backlog.fetch_add(n, Ordering::Relaxed) + n > BACKLOG;
                let sent = !behind
                    && self
                        .tx
                        .as_ref()
                        .is_some_and(|tx| tx.send(piece.clone()).is_ok());
                if !sent {
                    self.tx = None;
                }
            }
            // An error or the end: the writer knows from the bytes it got
            // whether the copy is whole.
            _ => self.tx = None,
        }
        Poll::Ready(item)
    }
}

/// Writes one copy on the blocking pool.
struct Writer {
    cache: Arc<BlobCache>,
    name: String,
    digest: Digest,
    size: u64,
    backlog: Arc<AtomicU64>,
}

impl Writer {
    fn run(self, rx: mpsc::UnboundedReceiver<Bytes>) {
        let partial = self.cache.dir.join(format!(
            "{PARTIAL}{}-{:016x}",
            self.name,
            rand::random::<u64>()
        ));
        match self.write(&partial, rx) {
            Ok(true) => {
                let done = self.cache.dir.join(&self.name);
                match fs::rename(&partial, &done) {
                    Ok(()) => return self.cache.keep(self.name, self.size),
                    Err(e) => tracing::warn!("blob cache: {}: {e}", done.display()),
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "blob cache: no copy of {} kept: {}: {e}",
                self.digest,
                partial.display()
            ),
        }
        let _ = fs::remove_file(&partial);
        self.cache.state.lock().filling.remove(&self.name);
    }

    /// Writes what arrives to `path`: `true` when it is the whole blob
    /// with its digest, synced to disk.
    fn write(&self, path: &Path, mut rx: mpsc::UnboundedReceiver<Bytes>) -> io::Result<bool> {
        let mut file = File::create(path)?;
        let mut hasher = Hasher::new(self.digest.algorithm());
        let mut written = 0u64;
        while let Some(piece) = rx.blocking_recv() {
            self.backlog
                .fetch_sub(piece.len() as u64, Ordering::Relaxed);
            file.write_all(&piece)?;
            hasher.update(&piece);
            written += piece.len() as u64;
        }
        if written != self.size {
            return Ok(false);
        }
        if hasher.finish() != self.digest {
            tracing::warn!(
                "blob {} as read from the store does not match its digest (run berth fsck); no copy kept",
                self.digest
            );
            return Ok(false);
        }
        file.sync_all()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures_util::{stream, StreamExt};

    use super::*;
    use crate::oci::Algorithm;

    /// A blob of `len` bytes made from `seed`, and its digest.
    fn blob(seed: u8, len: usize) -> (Vec<u8>, Digest) {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let digest = Digest::of(Algorithm::Sha256, &data);
        (data, digest)
    }

    /// The store: `data` in pieces of 1000 bytes from `start`, each read
    /// counted in `fetches` when it is made.
    fn store(
        data: &[u8],
        start: u64,
        len: u64,
        fetches: &Arc<AtomicUsize>,
    ) -> impl Future<Output = Result<ByteStream, StorageError>> {
        let part = data[start as usize..(start + len) as usize].to_vec();
        let fetches = fetches.clone();
        async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            let pieces: Vec<io::Result<Bytes>> = part
                .chunks(1000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Ok(Box::pin(stream::iter(pieces)) as ByteStream)
        }
    }

    async fn read_all(s: ByteStream) -> Vec<u8> {
        s.map(|p| p.unwrap().to_vec()).concat().await
    }

    /// Waits until the cache holds `n` copies.
    async fn copies(cache: &BlobCache, n: usize) {
        for _ in 0..500 {
            if cache.state.lock().copies.len() == n && cache.state.lock().filling.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the cache never held {n} copies");
    }

    fn open(dir: &Path, max_bytes: u64) -> Arc<BlobCache> {
        let spec = CacheSpec {
            dir: dir.to_path_buf(),
            max_bytes,
        };
        Arc::new(BlobCache::open(&spec).unwrap())
    }

    #[tokio::test]
    async fn a_whole_read_is_kept_and_serves_later_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = open(tmp.path(), 1 << 20);
        let (data, digest) = blob(3, 50_000);
        let size = data.len() as u64;
        let fetches = Arc::new(AtomicUsize::new(0));

        // A range is passed through and not kept.
        let part = cache
            .read(&digest, size, 10, 100, store(&data, 10, 100, &fetches))
            .await
            .unwrap();
        assert_eq!(read_all(part).await, &data[10..110]);
        copies(&cache, 0).await;

        let whole = cache
            .read(&digest, size, 0, size, store(&data, 0, size, &fetches))
            .await
            .unwrap();
        assert_eq!(read_all(whole).await, data);
        copies(&cache, 1).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        for (start, len) in [(0, size), (777, 12_345)] {
            let again = cache
                .read(&digest, size, start, len, store(&data, 0, size, &fetches))
                .await
                .unwrap();
            assert_eq!(
                read_all(again).await,
                &data[start as usize..(start + len) as usize]
            );
        }
        // The copy served both reads.
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        let names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("sha256-{}", digest.hex())]);

        // A copy that went missing is read from the store again.
        fs::remove_file(tmp.path().join(&names[0])).unwrap();
        let fetched = Arc::new(AtomicUsize::new(0));
        let again = cache
            .read(&digest, size, 0, size, store(&data, 0, size, &fetched))
            .await
            .unwrap();
        assert_eq!(read_all(again).await, data);
        assert_eq!(fetched.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_the_digest_are_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = open(tmp.path(), 1 << 20);
        let (data, digest) = blob(5, 20_000);
        let (other, _) = blob(7, 20_000);
        let fetches = Arc::new(AtomicUsize::new(0));
        let s = cache
            .read(
                &digest,
                20_000,
                0,
                20_000,
                store(&other, 0, 20_000, &fetches),
            )
            .await
            .unwrap();
        assert_eq!(read_all(s).await, other);
        copies(&cache, 0).await;
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);

        // Nor is a read given up half way.
        let mut s = cache
            .read(
                &digest,
                20_000,
                0,
                20_000,
                store(&data, 0, 20_000, &fetches),
            )
            .await
            .unwrap();
        s.next().await.unwrap().unwrap();
        drop(s);
        copies(&cache, 0).await;
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_least_recently_used_copies_go_past_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = open(tmp.path(), 25_000);
        let fetches = Arc::new(AtomicUsize::new(0));
        let blobs: Vec<_> = (1..=3).map(|i| blob(i, 10_000)).collect();
        let read = |i: usize| {
            let (data, digest) = &blobs[i];
            let cache = cache.clone();
            let fetch = store(data, 0, 10_000, &fetches);
            async move { read_all(cache.read(digest, 10_000, 0, 10_000, fetch).await.unwrap()).await }
        };
        read(0).await;
        copies(&cache, 1).await;
        read(1).await;
        copies(&cache, 2).await;
        // Blob 0 used again: blob 1 is now the oldest, and goes.
        read(0).await;
        read(2).await;
        copies(&cache, 2).await;
        let here = |i: usize| tmp.path().join(file_name(&blobs[i].1)).exists();
        assert!(here(0) && !here(1) && here(2));
        assert_eq!(cache.state.lock().total, 20_000);

        // Reopened with a smaller limit, with a copy left half written:
        // the newest copy stays, the rest goes.
        fs::write(tmp.path().join(format!("{PARTIAL}x")), b"half").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let newest = tmp.path().join(file_name(&blobs[0].1));
        File::options()
            .append(true)
            .open(&newest)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        let reopened = open(tmp.path(), 15_000);
        assert_eq!(reopened.state.lock().total, 10_000);
        let left: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, [newest]);
    }
}
