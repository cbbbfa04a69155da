//! Streaming a request body into a store: the body's chunks are gathered
//! (not copied) into batches of ½–4 MiB, each hashed (on the blocking
//! pool) and written through the driver's [`Writer`] side by side, while
//! the next batch is received.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};

use super::driver::{Batch, StorageError, Writer};

/// A body, as received.
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// How streaming a body failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The body ended with an error (the client went away, or a limit).
    #[error("the body broke off after {written} bytes: {source}")]
    Body {
        written: u64,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A task of the pipeline failed (panicked or was cancelled).
    #[error("upload task failed: {0}")]
    Task(String),
}

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

/// Batches a stage may have waiting while it works: a stage that falls
/// behind for a moment (a slow disk write, a preempted hash) holds up
/// neither the other stage nor the receiving of the next batch.
const BACKLOG: usize = 1;

/// The work of a stage on some batches, handing the value back. It must
/// go on without being polled (its work runs in a task of its own, or on
/// the blocking pool): the pipeline polls it only to see whether it is
/// done, from the task receiving the body, so that nothing else has to be
/// scheduled between one batch's end and the next one's start.
type Work<T> = Pin<Box<dyn Future<Output = Result<T, CopyError>> + Send>>;

/// One side of the pipeline (the writer or the hasher), with the batches
/// it has not started on.
struct Stage<T> {
    run: Option<Run<T>>,
    backlog: Vec<Batch>,
    spawn: fn(T, Vec<Batch>) -> Work<T>,
}

/// A stage's value: at hand, being worked on, or lost to an error.
enum Run<T> {
    Idle(T),
    Busy(Work<T>),
    Failed(CopyError),
}

impl<T: Send + 'static> Stage<T> {
    fn new(value: T, spawn: fn(T, Vec<Batch>) -> Work<T>) -> Stage<T> {
        Stage {
            run: Some(Run::Idle(value)),
            backlog: Vec::new(),
            spawn,
        }
    }

    /// Whether work is under way; looks once, without waiting (and so
    /// starts work that begins when first polled).
    fn busy(&mut self) -> bool {
        let Some(Run::Busy(work)) = &mut self.run else {
            return false;
        };
        let done = match work.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => return true,
            Poll::Ready(Ok(t)) => Run::Idle(t),
            Poll::Ready(Err(e)) => Run::Failed(e),
        };
        self.run = Some(done);
        false
    }

    /// Waits for the work under way, if any (after an error there is no
    /// value left).
    async fn settle(&mut self) -> Result<T, CopyError> {
        match self.run.take() {
            Some(Run::Idle(t)) => Ok(t),
            Some(Run::Busy(work)) => work.await,
            Some(Run::Failed(e)) => Err(e),
            None => Err(CopyError::Task("an earlier batch failed".into())),
        }
    }

    /// Hands `batch` to the stage: it starts at once if the stage is free
    /// and waits in the backlog otherwise; only a full backlog waits for
    /// the stage.
    async fn push(&mut self, batch: Batch) -> Result<(), CopyError> {
        self.backlog.push(batch);
        if self.busy() && self.backlog.len() <= BACKLOG {
            return Ok(());
        }
        self.start().await
    }

    /// Waits for the stage, then starts it on the whole backlog.
    async fn start(&mut self) -> Result<(), CopyError> {
        let t = self.settle().await?;
        let batches = std::mem::take(&mut self.backlog);
        self.run = Some(Run::Busy((self.spawn)(t, batches)));
        self.busy();
        Ok(())
    }

    /// Works through the backlog; returns the value.
    async fn finish(mut self) -> Result<T, CopyError> {
        if !self.backlog.is_empty() {
            self.start().await?;
        }
        self.settle().await
    }
}

fn write_batches(mut w: Box<dyn Writer>, batches: Vec<Batch>) -> Work<Box<dyn Writer>> {
    Box::pin(async move {
        w.write_all(batches).await?;
        Ok(w)
    })
}

fn hash_batches(mut h: Sha256, batches: Vec<Batch>) -> Work<Sha256> {
    let task = tokio::task::spawn_blocking(move || {
        batches
            .iter()
            .flat_map(|b| b.iter())
            .for_each(|c| h.update(c));
        h
    });
    Box::pin(async move { task.await.map_err(|e| CopyError::Task(e.to_string())) })
}

/// Streams `body` into `writer`, hashing on the way (when given a hasher).
/// Returns the number of bytes written and the updated hasher. Hashing and
/// writing run side by side, each on earlier batches while the next one is
/// received. After an error no write is under way any more.
pub async fn copy_body(
    writer: Box<dyn Writer>,
    hasher: Option<Sha256>,
    mut body: Body,
) -> Result<(u64, Option<Sha256>), CopyError> {
    let appending = Appending::start();
    let mut batch_size = appending.batch_size();
    let mut file = Stage::new(writer, write_batches);
    let mut hash = hasher.map(|h| Stage::new(h, hash_batches));
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
                // The data is cut back after this: no write may still be
                // under way then.
                let _ = file.settle().await;
                return Err(CopyError::Body { written, source: e });
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
            file.push(data.clone()).await?;
            if let Some(h) = &mut hash {
                h.push(data).await?;
            }
        }
        if done {
            file.finish().await?.finish().await?;
            let hasher = match hash {
                Some(h) => Some(h.finish().await?),
                None => None,
            };
            return Ok((written, hasher));
        }
    }
}
