//! One download of a blob from an upstream, shared by every client that
//! asks for the blob while it runs (single flight). The download runs on a
//! task of its own, so that it goes on when the client that started it
//! leaves; it streams into an upload of the store (digest verified before
//! the blob is committed) and into a spill file beside it
//! ([`crate::storage::spill`], written a batch at a time while the next
//! one arrives), which every client reads from as far as the download
//! got. Memory stays bounded: nothing is held but the chunks in flight.
//! The last byte is handed out only once the blob is verified and
//! committed, so that a wrong download never reaches a client whole, and
//! is never kept.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::uploads::Uploads;
use crate::oci::{Digest, RegistryError, RepoName};
use crate::storage::driver::ByteStream;
use crate::storage::spill::{Spill, SpillReader};
use crate::upstream::{FetchedBlob, UpstreamError};

/// Chunks between the download and the upload, at most.
const IN_FLIGHT: usize = 8;
/// Chunks waiting for the spill file, at most: what arrives while a batch
/// is written.
const SPILL_QUEUE: usize = 16;
/// Largest batch written to the spill file at once.
const SPILL_BATCH: usize = 1 << 20;

/// How far a download got.
#[derive(Clone, Debug)]
enum State {
    /// Before the upstream said how large the blob is.
    Starting,
    /// `written` bytes are in the spill file.
    Running {
        size: u64,
        written: u64,
    },
    /// Verified and committed into the store.
    Done {
        size: u64,
    },
    Failed(RegistryError),
}

/// A download in progress (or just ended), followed by its clients.
pub(super) struct Download {
    state: watch::Sender<State>,
    /// Where the spill file goes.
    spill_path: PathBuf,
    /// The spill file, from before the download runs.
    spill: OnceLock<Spill>,
}

/// The downloads of one instance, by digest; an entry lives while the
/// download runs or a client still reads it.
#[derive(Default)]
pub(super) struct Downloads(parking_lot::Mutex<HashMap<Digest, Weak<Download>>>);

/// What a download fetches and where it puts it.
pub(super) struct Job {
    pub repo: RepoName,
    pub digest: Digest,
    pub uploads: Arc<Uploads>,
    pub spill_dir: PathBuf,
}

impl Downloads {
    /// The download of `job.digest`: the one running, or a new one that
    /// `fetch` starts.
    pub(super) fn join<F>(&self, job: Job, fetch: F) -> Arc<Download>
    where
        F: std::future::Future<Output = Result<Option<FetchedBlob>, UpstreamError>>
            + Send
            + 'static,
    {
        let mut map = self.0.lock();
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(d) = map.get(&job.digest).and_then(Weak::upgrade) {
            if !matches!(*d.state.borrow(), State::Failed(_)) {
                return d;
            }
        }
        let spill_path =
            job.spill_dir
                .join(format!("{}-{}", job.digest.hex(), uuid::Uuid::new_v4()));
        let d = Arc::new(Download {
            state: watch::channel(State::Starting).0,
            spill_path,
            spill: OnceLock::new(),
        });
        map.insert(job.digest.clone(), Arc::downgrade(&d));
        let run = d.clone();
        tokio::spawn(async move {
            let outcome = run.run(job, fetch).await;
            if let Err(e) = outcome {
                run.state.send_replace(State::Failed(e));
            }
        });
        d
    }
}

impl Download {
    /// The blob's size once the upstream said, or why it cannot be had.
    pub(super) async fn size(&self) -> Result<u64, RegistryError> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                State::Starting => {}
                State::Running { size, .. } | State::Done { size } => return Ok(*size),
                State::Failed(e) => return Err(e.clone()),
            }
            // The sender lives as long as `self`.
            let _ = rx.changed().await;
        }
    }

    async fn run<F>(&self, job: Job, fetch: F) -> Result<(), RegistryError>
    where
        F: std::future::Future<Output = Result<Option<FetchedBlob>, UpstreamError>>,
    {
        let fetched = fetch.await.map_err(super::mirror::upstream_error)?;
        let Some(FetchedBlob { size, mut body }) = fetched else {
            return Err(RegistryError::BlobUnknown(format!(
                "blob {} is not in {} upstream",
                job.digest, job.repo
            )));
        };
        let size = size.ok_or_else(|| {
            RegistryError::Unavailable(format!(
                "the upstream sent blob {} without its size",
                job.digest
            ))
        })?;
        let spill = Spill::create(self.spill_path.clone())
            .await
            .map_err(|e| spill_error(&e))?;
        let spill = self.spill.get_or_init(|| spill);
        self.state.send_replace(State::Running { size, written: 0 });
        let (to_store, from_download) = mpsc::channel::<io::Result<Bytes>>(IN_FLIGHT);
        let store = {
            let (uploads, repo, digest) =
                (job.uploads.clone(), job.repo.clone(), job.digest.clone());
            let body = Box::pin(futures_util::stream::unfold(
                from_download,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            ));
            tokio::spawn(async move {
                let id = uploads.start(&repo, "").await?;
                let r = uploads
                    .finish(&repo, &id, "", &digest, None, body, Some(size))
                    .await;
                if r.is_err() {
                    let _ = uploads.cancel(&repo, &id, "").await;
                }
                r
            })
        };
        let (to_spill, spill_queue) = mpsc::channel::<Bytes>(SPILL_QUEUE);
        // Batches of what arrived go to the spill file while the next
        // chunks arrive.
        let spilled = async {
            // Dropped when this ends, so that a failed write stops the copy.
            let mut spill_queue = spill_queue;
            let mut written = 0u64;
            while let Some(first) = spill_queue.recv().await {
                let mut len = first.len();
                let mut batch = vec![first];
                while len < SPILL_BATCH {
                    let Ok(more) = spill_queue.try_recv() else {
                        break;
                    };
                    len += more.len();
                    batch.push(more);
                }
                spill.write_at(written, batch).await?;
                written += len as u64;
                self.state.send_replace(State::Running { size, written });
            }
            Ok::<_, io::Error>(())
        };
        let copied = async {
            let to_spill = to_spill;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                if to_spill.send(chunk.clone()).await.is_err() {
                    return Err("the download file failed".to_string());
                }
                if to_store.send(Ok(chunk)).await.is_err() {
                    break; // the upload failed; its error says why
                }
            }
            Ok(())
        };
        let (copied, spilled) = tokio::join!(copied, spilled);
        if let Err(why) = &copied {
            let _ = to_store.send(Err(io::Error::other(why.clone()))).await;
        }
        drop(to_store);
        let stored = store
            .await
            .map_err(|e| RegistryError::Internal(format!("mirror upload task: {e}")))?;
        spilled.map_err(|e| spill_error(&e))?;
        match (copied, stored) {
            (Err(why), _) => Err(RegistryError::Unavailable(why)),
            (Ok(()), Err(RegistryError::DigestInvalid(why))) => {
                tracing::error!(digest = %job.digest, "the upstream sent a wrong blob: {why}");
                Err(RegistryError::Unavailable(format!(
                    "the upstream sent a wrong blob {}: {why}",
                    job.digest
                )))
            }
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => {
                self.state.send_replace(State::Done { size });
                Ok(())
            }
        }
    }

    /// `len` bytes from `start`, as the download brings them.
    pub(super) fn read(self: Arc<Self>, start: u64, len: u64) -> ByteStream {
        struct Reader {
            download: Arc<Download>,
            rx: watch::Receiver<State>,
            spill: Option<SpillReader>,
            pos: u64,
            end: u64,
            failed: bool,
        }
        let rx = self.state.subscribe();
        let reader = Reader {
            download: self,
            rx,
            spill: None,
            pos: start,
            end: start + len,
            failed: false,
        };
        Box::pin(futures_util::stream::unfold(reader, |mut r| async move {
            loop {
                if r.pos >= r.end || r.failed {
                    return None;
                }
                // What the spill file holds so far.
                if let Some(piece) = match r.spill.as_mut() {
                    Some(s) => s.next().await,
                    None => None,
                } {
                    match &piece {
                        Ok(b) => r.pos += b.len() as u64,
                        Err(_) => r.failed = true,
                    }
                    return Some((piece, r));
                }
                // Then wait for more.
                let available = loop {
                    let state = r.rx.borrow_and_update().clone();
                    let limit = match state {
                        State::Starting => 0,
                        // Everything but the last byte until it is verified.
                        State::Running { size, written } => written.min(size.saturating_sub(1)),
                        State::Done { size } => size,
                        State::Failed(e) => {
                            r.failed = true;
                            return Some((Err(io::Error::other(e.public_message())), r));
                        }
                    };
                    if limit > r.pos {
                        break limit.min(r.end);
                    }
                    let _ = r.rx.changed().await;
                };
                if r.spill.is_none() {
                    let spill = r.download.spill.get().expect("written before it is read");
                    match spill.reader(r.pos) {
                        Ok(s) => r.spill = Some(s),
                        Err(e) => {
                            r.failed = true;
                            return Some((Err(e), r));
                        }
                    }
                }
                r.spill.as_mut().expect("opened above").until(available);
            }
        }))
    }
}

fn spill_error(e: &io::Error) -> RegistryError {
    RegistryError::Internal(format!("mirror download file: {e}"))
}
