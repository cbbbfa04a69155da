//! Blob upload sessions, in the store as Distribution keeps them
//! (`_uploads/<id>/{data,startedat}`), so that any process serving the
//! store can continue one. Data streams into `data` through the driver's
//! writer while it is hashed ([`pipeline`]). A chunk is all-or-nothing: if the body breaks off or has the wrong length, `data`
//! is cut back to where the chunk started. On finish the data is verified
//! against the digest and committed into the blob store
//! ([`Driver::commit`]).
//!
//! The running hash lives in the memory of the process that received the
//! chunks. When a chunk lands on another process (or on one started after
//! the first died), the size is taken from the store and the hash is
//! dropped: the data is hashed again from the store when the upload is
//! finished. That costs one read of the blob at the end (about a second
//! per GiB) instead of saving hash state after every chunk, and only for
//! uploads that changed process.
//!
//! A session belongs to the user who opened it: its owner is written to
//! `_uploads/<id>/owner` (registry:2 ignores files it does not know there),
//! and anyone else is told the session does not exist, also after a
//! restart. A session without that file (opened by registry:2 or an older
//! berth) is open to every user with push rights, as it was before.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use crate::coord::Coordinator;
use crate::oci::{Algorithm, Digest, RegistryError, RepoName};
use crate::storage::driver::{optional, Driver};
use crate::storage::pipeline::{self, copy_body, CopyError};
use crate::storage::{hash, keys, tree};

/// A request body as the registry consumes it.
pub type BodyStream = pipeline::Body;

struct Session {
    size: u64,
    /// Hash of bytes 0..size, when known.
    hasher: Option<Sha256>,
    /// Set once finished or cancelled; a waiter that gets the lock afterwards
    /// must not touch the (gone) objects.
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
    /// When this process opened it or first saw it.
    seen: std::time::Instant,
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
    driver: Arc<dyn Driver>,
    coord: Coordinator,
    sessions: Mutex<HashMap<String, Known>>,
    /// Told of every blob committed.
    usage: Arc<super::usage::Kept>,
}

/// The object of an upload naming the session's owner.
const OWNER: &str = "owner";

fn unknown(id: &str) -> RegistryError {
    RegistryError::BlobUploadUnknown(format!("upload {id} is not known"))
}

/// Upload ids are ours (UUIDs); anything else cannot name a session and must
/// never reach a key.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

impl Uploads {
    pub(super) fn new(
        driver: Arc<dyn Driver>,
        coord: Coordinator,
        usage: Arc<super::usage::Kept>,
    ) -> Self {
        Uploads {
            driver,
            coord,
            sessions: Mutex::new(HashMap::new()),
            usage,
        }
    }

    fn key(repo: &RepoName, id: &str) -> String {
        format!("{repo}\n{id}")
    }

    /// Opens a session owned by `owner` ("" for anonymous); returns its id.
    pub async fn start(&self, repo: &RepoName, owner: &str) -> Result<String, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = keys::upload(repo, &id);
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let d = &*self.driver;
        let written = async {
            // Before `data`: a session in the store without its owner
            // would be open to everyone.
            d.put(&format!("{dir}/{OWNER}"), Bytes::from(owner.to_string()))
                .await?;
            // Empty, through the writer: nothing to make durable yet.
            d.writer(&keys::upload_data(repo, &id), 0)
                .await?
                .finish()
                .await?;
            d.put(&format!("{dir}/startedat"), Bytes::from(started))
                .await
        }
        .await;
        if let Err(e) = written {
            // No client knows this session's id: leave nothing behind
            // (e.g. an empty `data` when the disk filled up).
            let _ = d.delete_all(&dir).await;
            return Err(e.into());
        }
        let session = Session {
            size: 0,
            hasher: Some(Sha256::new()),
            closed: false,
        };
        let known = Known {
            owner: Some(owner.to_string()),
            session: Arc::new(tokio::sync::Mutex::new(session)),
            seen: std::time::Instant::now(),
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
        let known = self.sessions.lock().get(&key).cloned();
        if let Some(k) = known {
            // Whether it is still stored is for the caller to see.
            return k.for_user(user, id);
        }
        let data = optional(self.driver.stat(&keys::upload_data(repo, id)).await)?;
        let size = data.ok_or_else(|| unknown(id))?.size;
        let owner = optional(
            self.driver
                .get(&format!("{}/{OWNER}", keys::upload(repo, id)))
                .await,
        )?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
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
                seen: std::time::Instant::now(),
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
        let stored = optional(self.driver.stat(&keys::upload_data(repo, id)).await)?;
        match stored.map(|m| m.size) {
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

    /// Sessions this process knows as open and has seen within `ttl` (an
    /// older one is purged by the next collection, whichever process runs
    /// it); counted in memory, never read from the store.
    pub fn in_progress(&self, ttl: std::time::Duration) -> usize {
        let sessions = self.sessions.lock();
        sessions.values().filter(|k| k.seen.elapsed() < ttl).count()
    }

    /// Forgets the sessions not seen within `ttl`, after a collection
    /// purged those older than that from the store (one still in use is
    /// found there again when its client goes on).
    pub(super) fn forget_older_than(&self, ttl: std::time::Duration) {
        self.sessions.lock().retain(|_, k| k.seen.elapsed() < ttl);
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
        let key = keys::upload_data(repo, id);
        let writer = self.driver.writer(&key, start).await?;
        let saved = s.hasher.clone();
        let result = match copy_body(writer, s.hasher.take(), body).await {
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
            Err(CopyError::Body { written, source }) => Err(RegistryError::BlobUploadInvalid(
                format!("upload body broke off after {written} bytes: {source}"),
            )),
            Err(CopyError::Storage(e)) => Err(e.into()),
            Err(CopyError::Task(e)) => Err(RegistryError::Internal(format!("upload: {e}"))),
        };
        s.hasher = saved;
        // Cut the data back so the upload stays resumable at `start`.
        self.driver.writer(&key, start).await?.finish().await?;
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
        let (d, dir, key) = (
            &*self.driver,
            keys::upload(repo, id),
            keys::upload_data(repo, id),
        );
        let outcome = async {
            let actual = match (s.hasher.clone(), digest.algorithm()) {
                (Some(h), Algorithm::Sha256) => {
                    Digest::from_parts(Algorithm::Sha256, hex::encode(h.finalize()))
                }
                _ => hash::hash_object(d, &key, digest.algorithm(), &mut |_| {}).await?,
            };
            if actual != *digest {
                d.delete_all(&dir).await?;
                return Err(RegistryError::DigestInvalid(format!(
                    "uploaded content has digest {actual}, not {digest}"
                )));
            }
            let _gc = super::gc_shared(&self.coord).await?;
            super::gc::record(d, repo, super::gc::Written::Blob(digest)).await?;
            let committed = d.commit(&key, &keys::blob(digest)).await;
            let linked = match &committed {
                Ok(()) => tree::write_link(d, &keys::layer_link(repo, digest), digest).await,
                Err(_) => Ok(()),
            };
            // Once the data has moved into the blob store the session is
            // over, even if linking failed (a full disk): nothing is left
            // to resume, and nothing may be left behind.
            if committed.is_ok() {
                self.usage.changed();
                d.delete_all(&dir).await?;
            }
            committed.and(linked).map_err(RegistryError::from)
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
        self.driver.delete_all(&keys::upload(repo, id)).await?;
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
