//! Blob upload sessions. Data streams into `_uploads/<id>/data` while it is
//! hashed; the body's chunks are gathered (not copied) into batches of
//! ½–4 MiB, each hashed and written (straight to the disk where it can, see
//! [`storage::Appender`]) by two blocking tasks side by side while the next
//! batch is received. A chunk is all-or-nothing: if
//! the body breaks off or has the wrong length, the file is cut back to where
//! the chunk started. On finish the file is fsynced, verified against the
//! digest and renamed into the blob store.
//!
//! The running hash lives in memory; after a restart an upload continues
//! without it and the file is hashed from disk when it is finished.
//!
//! A session belongs to the user who opened it: its owner is written to
//! `_uploads/<id>/owner` (registry:2 ignores files it does not know there),
//! and anyone else is told the session does not exist, also after a
//! restart. A session without that file (opened by registry:2 or an older
//! berth) is open to every user with push rights, as it was before.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use super::{blocking, io_err};
use crate::coord::Coordinator;
use crate::oci::{Algorithm, Digest, RegistryError, RepoName};
use crate::storage::driver::Driver;
use crate::storage::{self, FsStore};

/// A request body as the registry consumes it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// Body bytes per batch handed to the hashing and the writing task; each
/// batch is one disk write. Larger batches mean larger writes and fewer
/// hand-offs between the two tasks (each waits for the slower one), smaller
/// ones less memory: an upload alone gets `MAX_BATCH`, and as more run at
/// once each gets less, down to `MIN_BATCH`, so that their buffers stay
/// within about `PIPELINE_MEMORY`. An upload holds up to `HELD` batches: one
/// received, up to two in work, one in a backlog, and the disk writer's
/// staging copy.
const MIN_BATCH: usize = 512 << 10;
const MAX_BATCH: usize = 4 << 20;
const PIPELINE_MEMORY: usize = 12 << 20;
const HELD: usize = 5;
/// Body chunks per MiB of batch at most. A chunk may keep a whole receive
/// buffer of the connection alive, so this bounds the memory held by a
/// batch of many small chunks.
const CHUNKS_PER_MIB: usize = 64;

/// Appends under way in this process.
static APPENDING: AtomicUsize = AtomicUsize::new(0);

/// Counts one append as under way while it lives.
struct Appending;

impl Appending {
    fn start() -> Appending {
        APPENDING.fetch_add(1, Ordering::Relaxed);
        Appending
    }

    /// The size of the next batch, for as many appends as run now.
    fn batch_size(&self) -> usize {
        let n = APPENDING.load(Ordering::Relaxed).max(1);
        (PIPELINE_MEMORY / HELD / n).clamp(MIN_BATCH, MAX_BATCH)
    }
}

impl Drop for Appending {
    fn drop(&mut self) {
        APPENDING.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Session {
    size: u64,
    /// Hash of bytes 0..size, when known.
    hasher: Option<Sha256>,
    /// Set once finished or cancelled; a waiter that gets the lock afterwards
    /// must not touch the (gone) files.
    closed: bool,
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

/// A session this process knows, with its owner kept outside the session's
/// lock, so that turning away someone else never waits for a chunk.
#[derive(Clone)]
struct Known {
    /// The user who opened it ("" for anonymous); `None` for a session
    /// from before owners were recorded, which any pusher may use.
    owner: Option<String>,
    session: SessionRef,
}

impl Known {
    /// The session, unless it belongs to someone other than `user`.
    fn for_user(self, user: &str, id: &str) -> Result<SessionRef, RegistryError> {
        match self.owner {
            Some(owner) if owner != user => Err(unknown(id)),
            _ => Ok(self.session),
        }
    }
}

/// The upload sessions of one instance.
pub struct Uploads {
    store: Arc<FsStore>,
    driver: Arc<dyn Driver>,
    coord: Coordinator,
    sessions: Mutex<HashMap<String, Known>>,
}

/// The file of an upload directory naming the session's owner.
const OWNER_FILE: &str = "owner";

fn unknown(id: &str) -> RegistryError {
    RegistryError::BlobUploadUnknown(format!("upload {id} is not known"))
}

/// Upload ids are ours (UUIDs); anything else cannot name a session and must
/// never reach a path.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

impl Uploads {
    pub(super) fn new(store: Arc<FsStore>, driver: Arc<dyn Driver>, coord: Coordinator) -> Self {
        Uploads {
            store,
            driver,
            coord,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn key(repo: &RepoName, id: &str) -> String {
        format!("{repo}\n{id}")
    }

    fn data_path(&self, repo: &RepoName, id: &str) -> PathBuf {
        self.store.upload_dir(repo, id).join("data")
    }

    /// Opens a session owned by `owner` ("" for anonymous); returns its id.
    pub async fn start(&self, repo: &RepoName, owner: &str) -> Result<String, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.store.upload_dir(repo, &id);
        let owner_bytes = owner.as_bytes().to_vec();
        blocking(move || {
            let result = (|| {
                std::fs::create_dir_all(&dir)?;
                // Before `data`: a session on disk without its owner would
                // be open to everyone.
                storage::atomic_write(&dir.join(OWNER_FILE), &owner_bytes)?;
                std::fs::File::create(dir.join("data"))?;
                let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                storage::atomic_write(&dir.join("startedat"), started.to_string().as_bytes())
            })();
            if result.is_err() {
                // No client knows this session's id: leave nothing behind
                // (e.g. an empty `data` when the disk filled up).
                let _ = storage::remove_dir_all(&dir);
            }
            result.map_err(io_err("starting upload"))
        })
        .await?;
        let session = Session {
            size: 0,
            hasher: Some(Sha256::new()),
            closed: false,
        };
        let known = Known {
            owner: Some(owner.to_string()),
            session: Arc::new(tokio::sync::Mutex::new(session)),
        };
        self.sessions.lock().insert(Self::key(repo, &id), known);
        Ok(id)
    }

    /// Whether this process knows the session as open (not finished,
    /// cancelled or found purged).
    pub(super) fn is_open(&self, repo: &RepoName, id: &str) -> bool {
        self.sessions.lock().contains_key(&Self::key(repo, id))
    }

    /// The session of an upload for `user` ("" for anonymous), recovered
    /// from disk when this process has not seen it (e.g. after a restart).
    /// A session of another user is unknown to this one.
    async fn session(
        &self,
        repo: &RepoName,
        id: &str,
        user: &str,
    ) -> Result<SessionRef, RegistryError> {
        if !valid_id(id) {
            return Err(unknown(id));
        }
        let key = Self::key(repo, id);
        let path = self.data_path(repo, id);
        let known = self.sessions.lock().get(&key).cloned();
        if let Some(k) = known {
            // Whether it is still stored is for the caller to see.
            return k.for_user(user, id);
        }
        let owner_path = self.store.upload_dir(repo, id).join(OWNER_FILE);
        let (size, owner) = blocking(move || {
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(RegistryError::io("reading upload", e)),
            };
            let owner = match std::fs::read(&owner_path) {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(RegistryError::io("reading upload owner", e)),
            };
            Ok(Some((size, owner)))
        })
        .await?
        .ok_or_else(|| unknown(id))?;
        let hasher = (size == 0).then(Sha256::new);
        let session = Session {
            size,
            hasher,
            closed: false,
        };
        self.sessions
            .lock()
            .entry(key)
            .or_insert_with(|| Known {
                owner,
                session: Arc::new(tokio::sync::Mutex::new(session)),
            })
            .clone()
            .for_user(user, id)
    }

    /// The session, locked and open, with what the store holds: another
    /// process may have appended to it since this one last did (each PATCH
    /// goes where a load balancer sends it), and then its size is taken
    /// from the store and the running hash is dropped (the data is hashed
    /// from the store when the upload is finished).
    async fn open_session(
        &self,
        repo: &RepoName,
        id: &str,
        user: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<Session>, RegistryError> {
        let mut s = self.session(repo, id, user).await?.lock_owned().await;
        if s.closed {
            return Err(unknown(id));
        }
        let path = self.data_path(repo, id);
        let stored = blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io("reading upload", e)),
        })
        .await?;
        match stored {
            None => {
                self.sessions.lock().remove(&Self::key(repo, id));
                Err(unknown(id))
            }
            Some(size) => {
                if size != s.size {
                    s.size = size;
                    s.hasher = (size == 0).then(Sha256::new);
                }
                Ok(s)
            }
        }
    }

    /// Bytes received so far.
    pub async fn size(&self, repo: &RepoName, id: &str, user: &str) -> Result<u64, RegistryError> {
        let s = self.open_session(repo, id, user).await?;
        Ok(s.size)
    }

    /// Appends a chunk for `user`; `range` is the client's `Content-Range`
    /// (inclusive). A blob may not grow past `max` bytes (`max_blob_size`):
    /// the chunk is then refused whole. Returns the new size.
    pub async fn append(
        &self,
        repo: &RepoName,
        id: &str,
        user: &str,
        range: Option<(u64, u64)>,
        body: BodyStream,
        max: Option<u64>,
    ) -> Result<u64, RegistryError> {
        let mut s = self.open_session(repo, id, user).await?;
        self.append_locked(repo, id, &mut s, range, body, max)
            .await?;
        Ok(s.size)
    }

    async fn append_locked(
        &self,
        repo: &RepoName,
        id: &str,
        s: &mut Session,
        range: Option<(u64, u64)>,
        body: BodyStream,
        max: Option<u64>,
    ) -> Result<(), RegistryError> {
        let start = s.size;
        // Checked under the session's lock, so that concurrent chunks of
        // one session cannot pass the limit together.
        let passed = Arc::new(AtomicBool::new(false));
        let body = match max {
            Some(max) => within(body, max.saturating_sub(start), passed.clone()),
            None => body,
        };
        if let Some((first, last)) = range {
            if first != start {
                return Err(RegistryError::RangeInvalid(format!(
                    "chunk starts at {first} but the upload has {start} bytes"
                )));
            }
            if last < first {
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "invalid Content-Range {first}-{last}"
                )));
            }
        }
        let path = self.data_path(repo, id);
        let open_path = path.clone();
        let file = blocking(move || {
            storage::Appender::open(&open_path, start).map_err(io_err("opening upload"))
        })
        .await?;
        let saved = s.hasher.clone();
        let result = match copy_body(file, s.hasher.take(), body).await {
            Ok((written, hasher)) => match range {
                Some((first, last)) if last - first + 1 != written => {
                    Err(RegistryError::SizeInvalid(format!(
                        "Content-Range {first}-{last} announces {} bytes, the body had {written}",
                        last - first + 1
                    )))
                }
                _ => {
                    s.size = start + written;
                    s.hasher = hasher;
                    return Ok(());
                }
            },
            Err(e) => Err(e),
        };
        s.hasher = saved;
        // Cut the file back so the upload stays resumable at `start`.
        blocking(move || {
            storage::open_upload_at(&path, start)
                .map(drop)
                .map_err(io_err("rolling back chunk"))
        })
        .await?;
        match max {
            Some(max) if passed.load(Ordering::Relaxed) => Err(RegistryError::blob_too_large(max)),
            _ => result,
        }
    }

    /// Appends the last chunk (may be empty; see [`Uploads::append`]),
    /// verifies `digest` and moves the blob into place.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        repo: &RepoName,
        id: &str,
        user: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: BodyStream,
        max: Option<u64>,
    ) -> Result<(), RegistryError> {
        let mut s = self.open_session(repo, id, user).await?;
        self.append_locked(repo, id, &mut s, range, body, max)
            .await?;
        let path = self.data_path(repo, id);
        let computed = match (&s.hasher, digest.algorithm()) {
            (Some(h), Algorithm::Sha256) => Some(Digest::from_parts(
                Algorithm::Sha256,
                hex::encode(h.clone().finalize()),
            )),
            _ => None,
        };
        let (store, digest2, dir) = (
            self.store.clone(),
            digest.clone(),
            self.store.upload_dir(repo, id),
        );
        let check = path.clone();
        let outcome = async {
            let cleanup = dir.clone();
            blocking(move || {
                let actual = match computed {
                    Some(d) => d,
                    None => storage::hash_file(&check, digest2.algorithm())
                        .map_err(io_err("hashing upload"))?,
                };
                if actual != digest2 {
                    storage::remove_dir_all(&cleanup).map_err(io_err("removing upload"))?;
                    return Err(RegistryError::DigestInvalid(format!(
                        "uploaded content has digest {actual}, not {digest2}"
                    )));
                }
                Ok(())
            })
            .await?;
            let _gc = super::gc_shared(&self.coord).await?;
            super::gc::record(&*self.driver, repo, super::gc::Written::Blob(digest)).await?;
            let (repo2, digest2) = (repo.clone(), digest.clone());
            blocking(move || {
                let e = io_err("storing blob");
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(&e)?;
                let stored = (|| {
                    if store.blob_size(&digest2)?.is_none() {
                        store.commit_blob_file(&digest2, &path)?;
                    }
                    storage::write_link(&store.layer_link(&repo2, &digest2), &digest2)
                })();
                // Once the data has moved into the blob store the session is
                // over, even if linking failed (a full disk): nothing is left
                // to resume, and nothing may be left behind.
                if stored.is_ok() || !path.exists() {
                    storage::remove_dir_all(&dir).map_err(&e)?;
                }
                stored.map_err(&e)
            })
            .await
        }
        .await;
        if !matches!(
            outcome,
            Err(RegistryError::Internal(_) | RegistryError::StorageFull(_))
        ) {
            s.closed = true;
            self.sessions.lock().remove(&Self::key(repo, id));
        }
        outcome
    }

    pub async fn cancel(&self, repo: &RepoName, id: &str, user: &str) -> Result<(), RegistryError> {
        let mut s = self.open_session(repo, id, user).await?;
        let dir = self.store.upload_dir(repo, id);
        blocking(move || storage::remove_dir_all(&dir).map_err(io_err("removing upload"))).await?;
        s.closed = true;
        self.sessions.lock().remove(&Self::key(repo, id));
        Ok(())
    }
}

/// `body`, ending with an error (and `passed` set) once it has had more than
/// `allowed` bytes.
fn within(body: BodyStream, allowed: u64, passed: Arc<AtomicBool>) -> BodyStream {
    let mut seen = 0u64;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > allowed {
            passed.store(true, Ordering::Relaxed);
            return Err(io::Error::other("the body passed the blob size limit"));
        }
        Ok(chunk)
    }))
}

/// Body chunks as received (not copied), shared by the hashing and the
/// writing task.
type Batch = Arc<Vec<Bytes>>;

/// Batches a stage may have waiting while it works: a stage that falls
/// behind for a moment (a slow disk write, a preempted hash) holds up
/// neither the other stage nor the receiving of the next batch.
const BACKLOG: usize = 1;

/// One side of the pipeline (the file or the hasher), with the batches it
/// has not started on.
struct Stage<T> {
    run: Option<Run<T>>,
    backlog: Vec<Batch>,
    work: fn(&mut T, &Batch) -> io::Result<()>,
}

/// A stage's value: at hand, or busy on the blocking pool.
enum Run<T> {
    Idle(T),
    Busy(JoinHandle<io::Result<T>>),
}

impl<T: Send + 'static> Stage<T> {
    fn new(value: T, work: fn(&mut T, &Batch) -> io::Result<()>) -> Stage<T> {
        Stage {
            run: Some(Run::Idle(value)),
            backlog: Vec::new(),
            work,
        }
    }

    /// Waits for the work under way, if any (after an error there is no
    /// value left).
    async fn settle(&mut self) -> io::Result<T> {
        match self.run.take() {
            Some(Run::Idle(t)) => Ok(t),
            Some(Run::Busy(task)) => task.await.map_err(io::Error::other)?,
            None => Err(io::Error::other("an earlier batch failed")),
        }
    }

    /// Hands `batch` to the stage: it starts at once if the stage is free
    /// and waits in the backlog otherwise; only a full backlog waits for
    /// the stage.
    async fn push(&mut self, batch: Batch) -> io::Result<()> {
        self.backlog.push(batch);
        if let Some(Run::Busy(task)) = &self.run {
            if !task.is_finished() && self.backlog.len() <= BACKLOG {
                return Ok(());
            }
        }
        self.start().await
    }

    /// Waits for the stage, then starts it on the whole backlog.
    async fn start(&mut self) -> io::Result<()> {
        let mut t = self.settle().await?;
        let batches = std::mem::take(&mut self.backlog);
        let work = self.work;
        self.run = Some(Run::Busy(tokio::task::spawn_blocking(move || {
            batches.iter().try_for_each(|b| work(&mut t, b))?;
            Ok(t)
        })));
        Ok(())
    }

    /// Works through the backlog; returns the value.
    async fn finish(mut self) -> io::Result<T> {
        if !self.backlog.is_empty() {
            self.start().await?;
        }
        self.settle().await
    }
}

fn write_batch(f: &mut storage::Appender, batch: &Batch) -> io::Result<()> {
    f.write(batch)
}

fn hash_batch(h: &mut Sha256, batch: &Batch) -> io::Result<()> {
    batch.iter().for_each(|c| h.update(c));
    Ok(())
}

/// Streams `body` into `file`, hashing on the way. Returns the number of
/// bytes written and the updated hasher. Hashing and writing run side by
/// side on the blocking pool, each on earlier batches while the next one is
/// received.
async fn copy_body(
    file: storage::Appender,
    hasher: Option<Sha256>,
    mut body: BodyStream,
) -> Result<(u64, Option<Sha256>), RegistryError> {
    let appending = Appending::start();
    let mut batch_size = appending.batch_size();
    let write_err = io_err("writing upload");
    let mut file = Stage::new(file, write_batch);
    let mut hash = hasher.map(|h| Stage::new(h, hash_batch));
    let mut batch = Vec::new();
    let mut batch_len = 0;
    let mut written = 0u64;
    loop {
        let done = match body.next().await {
            Some(Ok(chunk)) => {
                written += chunk.len() as u64;
                batch_len += chunk.len();
                batch.push(chunk);
                false
            }
            Some(Err(e)) => {
                // The file is cut back after this: no write may still be
                // under way then.
                let _ = file.settle().await;
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "upload body broke off after {written} bytes: {e}"
                )));
            }
            None => true,
        };
        if !done
            && batch_len < batch_size
            && batch.len() < (batch_size >> 20).max(1) * CHUNKS_PER_MIB
        {
            continue;
        }
        if batch_len > 0 {
            let data: Batch = Arc::new(std::mem::take(&mut batch));
            batch_len = 0;
            batch_size = appending.batch_size();
            file.push(data.clone()).await.map_err(&write_err)?;
            if let Some(h) = &mut hash {
                h.push(data).await.map_err(&write_err)?;
            }
        }
        if done {
            let mut file = file.finish().await.map_err(&write_err)?;
            blocking(move || file.finish().map_err(io_err("writing upload"))).await?;
            let hasher = match hash {
                Some(h) => Some(h.finish().await.map_err(&write_err)?),
                None => None,
            };
            return Ok((written, hasher));
        }
    }
}
