//! The storage driver: the small, boring interface every store offers
//! (a local filesystem, memory, later an object store), in the shape of
//! CNCF Distribution's `StorageDriver`. Keys are `/`-separated strings in
//! Distribution's layout ([`super::keys`]), never paths; everything else
//! (links, uploads, garbage collection) is written once above it.
//!
//! Semantics every driver keeps:
//! - [`Driver::put`] replaces a whole object: readers see the old or the new
//!   content, never a torn one, and a crash leaves one of the two.
//! - [`Driver::commit`] moves a finished upload to its content-addressed key
//!   in one step; when the key already holds the content, the upload is
//!   dropped.
//! - Listing is of the immediate children of a prefix ("directories" are
//!   the common prefixes of keys), as a stream: a listing of a million keys
//!   never sits in memory at once. The key of an object lists nothing.
//!   Temporary objects (those a write in progress makes beside its key,
//!   named as [`super::is_temp_name`] says) are left out; only
//!   [`Driver::list_with_temp`] shows them, for finding what crashes left.
//! - [`Driver::rename`] moves one object to another key, replacing what
//!   was there. It is not atomic on every driver (an object store copies,
//!   then deletes): a crash may leave the object under both keys, never
//!   under neither. For moving damaged content aside (fsck's quarantine),
//!   not for publishing content, which is [`Driver::commit`]'s.
//! - Errors are one [`StorageError`], mapped once to `RegistryError`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};

/// Size and modification time of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub modified: SystemTime,
}

/// What a driver call failed with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}: not found")]
    NotFound(String),
    /// No space left (or a quota reached).
    #[error("{op} {key}: no space left")]
    Full { op: &'static str, key: String },
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Wraps an I/O error of `op` on `key`; a missing file is
    /// [`StorageError::NotFound`], a full disk [`StorageError::Full`].
    pub fn io(op: &'static str, key: &str, source: io::Error) -> StorageError {
        if source.kind() == io::ErrorKind::NotFound {
            return StorageError::NotFound(key.to_string());
        }
        // ENOSPC, and EDQUOT (a quota is as full as a disk).
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return StorageError::Full {
                op,
                key: key.to_string(),
            };
        }
        StorageError::Io {
            op,
            key: key.to_string(),
            source,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }
}

impl From<StorageError> for crate::oci::RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Full { op, key } => crate::oci::RegistryError::StorageFull(format!(
                "{op} {key}: no space left on device"
            )),
            other => crate::oci::RegistryError::Internal(other.to_string()),
        }
    }
}

/// `a/b` of `a` and `b`; either may be empty.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Turns "not found" into `None`.
pub fn optional<T>(r: Result<T, StorageError>) -> Result<Option<T>, StorageError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bytes of an object, piece by piece.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Names under a prefix, as they come.
pub type Names<'a> = Pin<Box<dyn Stream<Item = Result<String, StorageError>> + Send + 'a>>;

/// Objects under a prefix with their size and time, as they come.
pub type Objects<'a> =
    Pin<Box<dyn Stream<Item = Result<(String, Meta), StorageError>> + Send + 'a>>;

/// One batch of an upload's body: the chunks as received.
pub type Batch = Arc<Vec<Bytes>>;

/// An upload being written: appends, then is made durable.
#[async_trait]
pub trait Writer: Send {
    /// Appends the batch.
    async fn write(&mut self, batch: Batch) -> Result<(), StorageError>;
    /// Appends the batches in order; a driver may write them in one go.
    async fn write_all(&mut self, batches: Vec<Batch>) -> Result<(), StorageError> {
        for b in batches {
            self.write(b).await?;
        }
        Ok(())
    }
    /// Makes what was written durable; returns the object's size.
    async fn finish(self: Box<Self>) -> Result<u64, StorageError>;
}

/// A store of objects under keys.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Where the store is, for logs and errors ("filesystem /srv/ci").
    fn describe(&self) -> String;

    /// A whole object; for small ones (links, manifests, markers).
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;

    /// Writes a whole object, replacing what was there (see the module
    /// doc: never torn).
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError>;

    /// Writes a whole object unless the key exists; whether it wrote.
    async fn put_new(&self, key: &str, data: Bytes) -> Result<bool, StorageError>;

    async fn stat(&self, key: &str) -> Result<Meta, StorageError>;

    /// `len` bytes from `offset`. A shorter object ends the stream with
    /// `UnexpectedEof`.
    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, StorageError>;

    /// Names of the immediate children of `prefix` (objects and common
    /// prefixes, without the prefix or a trailing `/`), in no order;
    /// nothing when there are none.
    fn list<'a>(&'a self, prefix: &'a str) -> Names<'a>;

    /// [`Driver::list`], temporary objects included (see the module doc).
    /// A driver whose writes leave none behind lists what `list` does.
    fn list_with_temp<'a>(&'a self, prefix: &'a str) -> Names<'a> {
        self.list(prefix)
    }

    /// Every object under `prefix`, at any depth, by its key below
    /// `prefix` (`a/b/link`), with its size and time, in no order;
    /// temporary objects left out. One pass over the store where it can
    /// (an object store lists keys with their metadata a thousand at a
    /// time); here, a listing and a look at each name.
    fn walk<'a>(&'a self, prefix: &'a str) -> Objects<'a> {
        let found = async move {
            let mut out = Vec::new();
            let mut todo = vec![String::new()];
            while let Some(rel) = todo.pop() {
                let names: Vec<String> = self.list(&join(prefix, &rel)).try_collect().await?;
                for name in names {
                    let key = join(&rel, &name);
                    if let Some(meta) = optional(self.stat(&join(prefix, &key)).await)? {
                        out.push((key.clone(), meta));
                    }
                    todo.push(key);
                }
            }
            Ok(futures_util::stream::iter(out.into_iter().map(Ok)))
        };
        Box::pin(futures_util::stream::once(found).try_flatten())
    }

    /// Deletes one object; whether it was there.
    async fn delete(&self, key: &str) -> Result<bool, StorageError>;

    /// Deletes every object under `prefix`; whether there was any.
    async fn delete_all(&self, prefix: &str) -> Result<bool, StorageError>;

    /// Removes what is left of the emptied `prefix` and of its parents up
    /// to (not including) `stop`: directories, on a driver that has them;
    /// nothing elsewhere. A parent that still holds something stays.
    async fn prune(&self, prefix: &str, stop: &str) -> Result<(), StorageError>;

    /// A writer appending to `key` at `offset`, cutting off anything past
    /// it (left by a write that failed half-way).
    async fn writer(&self, key: &str, offset: u64) -> Result<Box<dyn Writer>, StorageError>;

    /// Moves the finished object `from` to `to` (see the module doc).
    async fn commit(&self, from: &str, to: &str) -> Result<(), StorageError>;

    /// Moves the object `from` to `to`, replacing what `to` held, durably
    /// (see the module doc). [`StorageError::NotFound`] when `from` is
    /// absent.
    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError>;

    /// A URL that serves the object `key` to anyone holding it for a
    /// while (an object store's presigned URL), when the driver is set to
    /// send clients there instead of streaming the object itself.
    async fn redirect(&self, _key: &str) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    /// Writes, reads and deletes a small object under `berth/probe/`:
    /// `Err` says, in words an operator can act on, what stands in the way.
    async fn probe(&self) -> Result<(), String> {
        let key = format!("berth/probe/{}", uuid::Uuid::new_v4().simple());
        let probed = async {
            self.put(&key, Bytes::from_static(b"berth")).await?;
            self.get(&key).await?;
            self.delete(&key).await
        }
        .await;
        probed.map(|_| ()).map_err(|e| self.explain(&e))
    }

    /// An error of this store in an operator's words, for
    /// [`Driver::probe`].
    fn explain(&self, e: &StorageError) -> String {
        format!("storage {}: {e}", self.describe())
    }
}

#[cfg(any(test, feature = "driver-contract"))]
pub mod contract {
    //! What every driver must do, run against each of them: here for the
    //! filesystem and memory drivers, in the integration tests (feature
    //! `driver-contract`) for the S3 driver against real object stores.

    use super::*;
    use futures_util::{StreamExt, TryStreamExt};

    async fn read_all(d: &dyn Driver, key: &str, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let stream = d.read(key, offset, len).await.map_err(io::Error::other)?;
        let pieces: Vec<Bytes> = stream.try_collect().await?;
        Ok(pieces.concat())
    }

    async fn names(d: &dyn Driver, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = d.list(prefix).try_collect().await.unwrap();
        v.sort();
        v
    }

    pub async fn small_objects(d: &dyn Driver) {
        assert!(d.get("a/b").await.unwrap_err().is_not_found());
        assert!(d.stat("a/b").await.unwrap_err().is_not_found());
        d.put("a/b", Bytes::from_static(b"one")).await.unwrap();
        d.put("a/b", Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(d.get("a/b").await.unwrap(), "two");
        assert_eq!(d.stat("a/b").await.unwrap().size, 3);
        assert!(!d.put_new("a/b", Bytes::from_static(b"x")).await.unwrap());
        assert!(d.put_new("a/c", Bytes::from_static(b"x")).await.unwrap());
        assert_eq!(d.get("a/b").await.unwrap(), "two");
        assert!(d.delete("a/b").await.unwrap());
        assert!(!d.delete("a/b").await.unwrap());
        assert!(d.get("a/b").await.unwrap_err().is_not_found());
    }

    pub async fn listing_and_prefix_deletes(d: &dyn Driver) {
        for k in [
            "r/x/_layers/l1",
            "r/x/_manifests/t/cur",
            "r/y/z/_layers/l2",
            "r/top",
        ] {
            d.put(k, Bytes::from_static(b"k")).await.unwrap();
        }
        assert_eq!(names(d, "r").await, ["top", "x", "y"]);
        assert_eq!(names(d, "r/x").await, ["_layers", "_manifests"]);
        assert!(names(d, "nothing/here").await.is_empty());
        assert!(
            names(d, "r/top").await.is_empty(),
            "an object lists nothing"
        );
        assert!(d.delete_all("r/x").await.unwrap());
        assert!(!d.delete_all("r/x").await.unwrap());
        assert_eq!(names(d, "r").await, ["top", "y"]);
        // A prefix is not a partial name.
        assert!(!d.delete_all("r/t").await.unwrap());
        assert_eq!(d.get("r/top").await.unwrap(), "k");
    }

    pub async fn uploads(d: &dyn Driver) {
        let mut w = d.writer("up/1/data", 0).await.unwrap();
        w.write(Arc::new(vec![
            Bytes::from_static(b"hello "),
            Bytes::from_static(b"wor"),
        ]))
        .await
        .unwrap();
        assert_eq!(w.finish().await.unwrap(), 9);
        // Resumed at 6: what came after is cut off.
        let mut w = d.writer("up/1/data", 6).await.unwrap();
        w.write(Arc::new(vec![Bytes::from_static(b"world")]))
            .await
            .unwrap();
        assert_eq!(w.finish().await.unwrap(), 11);
        assert_eq!(
            read_all(d, "up/1/data", 0, 11).await.unwrap(),
            b"hello world"
        );
        assert_eq!(read_all(d, "up/1/data", 6, 3).await.unwrap(), b"wor");
        let short = read_all(d, "up/1/data", 6, 100).await.unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        d.commit("up/1/data", "blobs/h/data").await.unwrap();
        assert!(d.stat("up/1/data").await.unwrap_err().is_not_found());
        assert_eq!(d.get("blobs/h/data").await.unwrap(), "hello world");
        // The same content again: the upload goes, the blob stays.
        d.put("up/2/data", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        d.commit("up/2/data", "blobs/h/data").await.unwrap();
        assert!(d.stat("up/2/data").await.unwrap_err().is_not_found());
        assert_eq!(d.get("blobs/h/data").await.unwrap(), "hello world");
        assert!(d.read("nope", 0, 1).await.err().unwrap().is_not_found());
        let mut empty = d.read("blobs/h/data", 11, 0).await.unwrap();
        assert!(empty.next().await.is_none());
    }

    pub async fn walking(d: &dyn Driver) {
        for k in ["w/a/1/link", "w/a/2/link", "w/b/data", "w/top", "wx/no"] {
            d.put(k, Bytes::from_static(b"kk")).await.unwrap();
        }
        let mut w = d.writer("w/up/data", 0).await.unwrap();
        w.write(Arc::new(vec![Bytes::from_static(b"abc")]))
            .await
            .unwrap();
        w.finish().await.unwrap();
        let mut all: Vec<(String, u64)> = d
            .walk("w")
            .map_ok(|(k, m)| (k, m.size))
            .try_collect()
            .await
            .unwrap();
        all.sort();
        let expected = [
            ("a/1/link", 2),
            ("a/2/link", 2),
            ("b/data", 2),
            ("top", 2),
            ("up/data", 3),
        ]
        .map(|(k, n)| (k.to_string(), n));
        assert_eq!(all, expected);
        let none: Vec<(String, Meta)> = d.walk("nothing").try_collect().await.unwrap();
        assert!(none.is_empty());
        assert!(d.delete_all("w").await.unwrap());
        assert!(d.walk("w").try_next().await.unwrap().is_none());
    }

    pub async fn temporary_objects(d: &dyn Driver) {
        d.put("t/.link.0123abcd.tmp", Bytes::from_static(b"half"))
            .await
            .unwrap();
        d.put("t/link", Bytes::from_static(b"whole")).await.unwrap();
        assert_eq!(names(d, "t").await, ["link"]);
        let mut all: Vec<String> = d.list_with_temp("t").try_collect().await.unwrap();
        all.sort();
        assert_eq!(all, [".link.0123abcd.tmp", "link"]);
        assert_eq!(d.stat("t/.link.0123abcd.tmp").await.unwrap().size, 4);
        assert!(d.delete("t/.link.0123abcd.tmp").await.unwrap());
    }

    pub async fn renames(d: &dyn Driver) {
        d.put("a/b", Bytes::from_static(b"one")).await.unwrap();
        d.rename("a/b", "q/1/a/b").await.unwrap();
        assert!(d.get("a/b").await.unwrap_err().is_not_found());
        assert_eq!(d.get("q/1/a/b").await.unwrap(), "one");
        // What the target held is replaced.
        d.put("a/b", Bytes::from_static(b"two")).await.unwrap();
        d.rename("a/b", "q/1/a/b").await.unwrap();
        assert_eq!(d.get("q/1/a/b").await.unwrap(), "two");
        let gone = d.rename("a/b", "q/2").await.unwrap_err();
        assert!(gone.is_not_found(), "{gone}");
        assert!(d.stat("q/2").await.unwrap_err().is_not_found());
    }
}
