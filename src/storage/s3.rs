//! The S3 driver: objects in a bucket of any S3-compatible store (AWS S3,
//! Ceph RGW, Garage, MinIO), under a prefix, in the keys of Distribution's
//! `s3` driver (`<prefix>/docker/registry/v2/...`), so a bucket written by
//! registry:2 is served as is and the other way round. Requests go
//! through `object_store`'s S3 client (SigV4, retries of idempotent
//! requests with backoff).
//!
//! An object store cannot append, so an object written through
//! [`Driver::writer`] (an upload's `data`, fsck's log) is kept as
//! *segments*: each writer makes one object `<key>.segments/seg-<start>`
//! (`<start>` its first byte's offset, 16 hex digits), sent as a multipart
//! upload whose parts (`part_size` bytes, up to `parallel_parts` of them in
//! flight) leave while the body arrives. A writer at offset `o` first drops
//! the segments that start at or past `o` (and rewrites one across `o` up
//! to it), so a chunk that broke off is cut back as on a file; a segment
//! appears only when its upload completes, so a writer that fails leaves
//! nothing to read. Reading, stat and listing show the segments as one
//! object under its key. A multipart
//! upload under way is recorded in `<key>.segments/mpu-<start>` (its id)
//! until it completes, so that deleting the key (the upload purge, a
//! cancel) aborts it even after the process that began it died: no
//! orphaned parts are left to pay for.
//!
//! [`Driver::commit`] copies the finished upload to its blob key inside the
//! store (one segment: one `CopyObject`; several: streamed through a new
//! multipart upload) and deletes the segments. [`Driver::put`] is one
//! `PutObject` (never torn). Listing is paginated (`ListObjectsV2`, 1 000
//! keys a page), deleting a prefix goes in batches (`DeleteObjects`).
//!
//! Its [`Driver::probe`] tells, at start and in `berth check`, whether the
//! bucket can be read and written, in words an operator can act on.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use tokio::task::JoinHandle;

use super::driver::{Batch, ByteStream, Driver, Meta, Names, Objects, StorageError, Writer};

/// The smallest part S3 takes (all but the last part of an upload).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// The largest part S3 takes.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Default of `part_size`.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Default of `parallel_parts`.
pub const DEFAULT_PARALLEL_PARTS: usize = 4;

/// Where the segments of a written object are: `<key>` + this.
const SEGMENTS: &str = ".segments";
const SEG: &str = "seg-";
const MPU: &str = "mpu-";

/// Static credentials (from `credentials_file`); the secret is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ key_id: {:?}, secret: <hidden> }}",
            self.key_id
        )
    }
}

/// Where a bucket is and how to talk to it (`[storage] driver = "s3"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    /// An S3-compatible endpoint URL; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Keys go under this (Distribution's `rootdirectory`), without
    /// leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub part_size: u64,
    pub parallel_parts: usize,
    /// `None`: the environment or the standard AWS chain (web identity,
    /// container and instance metadata).
    pub credentials: Option<Credentials>,
    /// Blob GETs answer `307` to a URL signed for this long.
    pub redirect: Option<Duration>,
}

impl S3Options {
    /// The bucket as a URL, for logs and errors ("s3://ci/reg at http://…").
    pub fn describe(&self) -> String {
        let at = self.endpoint.as_deref().unwrap_or("AWS");
        match self.prefix.as_str() {
            "" => format!("s3://{} at {at}", self.bucket),
            p => format!("s3://{}/{p} at {at}", self.bucket),
        }
    }

    /// The key id requests are signed with, when it is known up front.
    fn key_id(&self) -> String {
        match &self.credentials {
            Some(c) => c.key_id.clone(),
            None => std::env::var("AWS_ACCESS_KEY_ID")
                .unwrap_or_else(|_| "from the AWS credential chain".into()),
        }
    }
}

/// A bucket (under a prefix) as a [`Driver`].
pub struct S3Driver {
    inner: Arc<Inner>,
}

struct Inner {
    store: AmazonS3,
    opts: S3Options,
}

impl S3Driver {
    /// A driver for `opts`; talks to nothing yet (see [`Driver::probe`]).
    pub fn new(opts: S3Options) -> Result<S3Driver, StorageError> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&opts.bucket)
            .with_region(&opts.region)
            .with_virtual_hosted_style_request(!opts.path_style)
            // The registry checks every blob's digest itself; signing each
            // payload would hash every byte once more.
            .with_unsigned_payload(true)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    // A blob streams for as long as its client reads; a
                    // store that sends nothing for a minute (a request it
                    // took and never answered) fails the request, which is
                    // retried when it may be.
                    .with_timeout_disabled()
                    .with_read_timeout(Duration::from_secs(60))
                    .with_allow_http(true),
            )
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(c) = &opts.credentials {
            b = b
                .with_access_key_id(&c.key_id)
                .with_secret_access_key(&c.secret);
            if let Some(t) = &c.token {
                b = b.with_token(t);
            }
        }
        let store = b.build().map_err(|e| StorageError::Io {
            op: "open",
            key: opts.describe(),
            source: io::Error::other(e),
        })?;
        Ok(S3Driver {
            inner: Arc::new(Inner { store, opts }),
        })
    }
}

impl Inner {
    /// The object path of `key`.
    fn path(&self, key: &str) -> Result<Path, StorageError> {
        let full = self.full(key);
        Path::parse(&full).map_err(|e| StorageError::Io {
            op: "name",
            key: key.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })
    }

    fn full(&self, key: &str) -> String {
        let key = key.trim_matches('/');
        match (self.opts.prefix.as_str(), key) {
            ("", k) => k.to_string(),
            (p, "") => p.to_string(),
            (p, k) => format!("{p}/{k}"),
        }
    }

    fn segments_dir(&self, key: &str) -> String {
        format!("{}{SEGMENTS}/", self.full(key))
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> StorageError {
        match e {
            // A write finds no object missing: its bucket is.
            object_store::Error::NotFound { .. } if op != "put" => {
                StorageError::NotFound(key.to_string())
            }
            e => StorageError::Io {
                op,
                key: format!("{} in {}", key, self.opts.describe()),
                source: io::Error::other(e),
            },
        }
    }

    /// What a failed probe means, for an operator: the cause in words,
    /// then the store's own (its S3 error code and message, or the
    /// innermost error).
    fn explain(&self, e: &StorageError) -> String {
        let mut chain = vec![e.to_string()];
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        let all = chain.join(" ").to_lowercase();
        let root = chain.last().cloned().unwrap_or_default();
        let detail = match (xml_field(&root, "Code"), xml_field(&root, "Message")) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code,
            _ => root,
        };
        let endpoint = self.opts.endpoint.as_deref().unwrap_or("AWS S3");
        let bucket = &self.opts.bucket;
        let what = if all.contains("nosuchbucket") || all.contains("bucket not found") {
            format!("bucket '{bucket}' does not exist at {endpoint}")
        } else if [
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "accessdenied",
            // The status, not any "403" (a port, a random probe name).
            "403 forbidden",
        ]
        .iter()
        .any(|w| all.contains(w))
        {
            format!(
                "access denied to bucket '{bucket}' for key id {} (check the key, its secret and its rights on the bucket)",
                self.opts.key_id()
            )
        } else if all.contains("dns error") || all.contains("failed to lookup") {
            format!("cannot resolve the host of {endpoint}")
        } else if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
            format!("TLS with {endpoint} failed")
        } else if all.contains("connect") || all.contains("timed out") {
            format!("cannot connect to {endpoint}")
        } else {
            "the bucket cannot be written and read".to_string()
        };
        format!("storage {}: {what} ({detail})", self.opts.describe())
    }

    /// The segments of the written object `key`, in order, with the
    /// uploads under way; `None` when there are none of either.
    async fn segments(&self, key: &str) -> Result<Option<Segments>, StorageError> {
        let dir = self.segments_dir(key);
        let mut segs = Segments::default();
        let mut found = false;
        let mut listing = self.list_raw(dir.clone(), None);
        while let Some(item) = listing.next().await {
            let (name, meta) = item?;
            let Some(meta) = meta else { continue };
            let Some(rest) = name.strip_prefix(&dir) else {
                continue;
            };
            found = true;
            if let Some(start) = rest.strip_prefix(SEG).and_then(parse_hex) {
                segs.parts.push(Segment {
                    start,
                    size: meta.size,
                    modified: meta.modified,
                    path: name,
                });
            } else if let Some(start) = rest.strip_prefix(MPU).and_then(parse_hex) {
                segs.uploads.push((start, name));
            }
        }
        segs.parts.sort_by_key(|s| s.start);
        Ok(found.then_some(segs))
    }

    /// Object paths (with their size and time; `None` for a common
    /// prefix) under the raw path prefix `prefix`, grouped at `delimiter`
    /// when given, page by page.
    fn list_raw(
        &self,
        prefix: String,
        delimiter: Option<&'static str>,
    ) -> stream::BoxStream<'_, Result<(String, Option<Meta>), StorageError>> {
        let pages = stream::try_unfold(Some(None::<String>), move |token| {
            let prefix = prefix.clone();
            async move {
                let Some(page_token) = token else {
                    return Ok(None);
                };
                let opts = PaginatedListOptions {
                    delimiter: delimiter.map(Into::into),
                    page_token,
                    ..Default::default()
                };
                let page = self
                    .store
                    .list_paginated(Some(&prefix), opts)
                    .await
                    .map_err(|e| self.err("list", &prefix, e))?;
                let mut items: Vec<(String, Option<Meta>)> = page
                    .result
                    .common_prefixes
                    .into_iter()
                    .map(|p| (p.to_string(), None))
                    .collect();
                items.extend(page.result.objects.into_iter().map(|o| {
                    let meta = Meta {
                        size: o.size,
                        modified: o.last_modified.into(),
                    };
                    (o.location.to_string(), Some(meta))
                }));
                let next = page.page_token.map(Some);
                Ok(Some((stream::iter(items.into_iter().map(Ok)), next)))
            }
        });
        Box::pin(pages.try_flatten())
    }

    /// Deletes object paths in batches; how many there were.
    async fn delete_paths(&self, paths: Vec<String>) -> Result<usize, StorageError> {
        let n = paths.len();
        if n == 0 {
            return Ok(0);
        }
        let locations = stream::iter(
            paths
                .into_iter()
                .map(|p| Path::parse(p).map_err(object_store::Error::from)),
        )
        .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("delete", "objects", e)),
            }
        }
        Ok(n)
    }

    /// Aborts the multipart uploads these records (`<id>\n<path>`) name
    /// and deletes the records.
    async fn abort_uploads(&self, records: &[String]) -> Result<(), StorageError> {
        for record in records {
            let Ok(got) = self.store.get(&Path::from(record.as_str())).await else {
                continue;
            };
            let Ok(text) = got.bytes().await else {
                continue;
            };
            let text = String::from_utf8_lossy(&text);
            if let Some((id, path)) = text.split_once('\n') {
                // Already completed or aborted: nothing to do.
                let _ = self
                    .store
                    .abort_multipart(&Path::from(path), &id.to_string())
                    .await;
            }
        }
        self.delete_paths(records.to_vec()).await.map(|_| ())
    }

    /// Copies the object (or written object) `from` to `to`; false when
    /// `from` is not there.
    async fn copy(self: &Arc<Self>, from: &str, to: &str) -> Result<bool, StorageError> {
        let dest = self.path(to)?;
        let segs = match self.segments(from).await? {
            Some(segs) if !segs.parts.is_empty() => segs,
            _ => {
                return match self.store.copy(&self.path(from)?, &dest).await {
                    Ok(()) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.err("copy", from, e)),
                };
            }
        };
        segs.check(from)?;
        if let [one] = segs.parts.as_slice() {
            self.store
                .copy(&Path::from(one.path.as_str()), &dest)
                .await
                .map_err(|e| self.err("copy", from, e))?;
            return Ok(true);
        }
        // Several segments: streamed into one new object (S3 cannot
        // concatenate objects without a ranged part copy).
        let mut w = SegmentWriter::new(self.clone(), to.to_string(), dest);
        let mut pieces = self.read_segments(from, &segs, 0, segs.size()).await?;
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(|e| StorageError::io("read", from, e))?;
            w.write(Arc::new(vec![piece])).await?;
        }
        w.complete().await?;
        Ok(true)
    }

    /// Deletes the object `key` and its segments (aborting uploads under
    /// way); whether there was anything.
    async fn delete_key(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path(key)?;
        match self.store.head(&path).await {
            // A key is a whole object or segments, not both.
            Ok(_) => {
                self.store
                    .delete(&path)
                    .await
                    .map_err(|e| self.err("delete", key, e))?;
                return Ok(true);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err("delete", key, e)),
        }
        let Some(segs) = self.segments(key).await? else {
            return Ok(false);
        };
        let records: Vec<_> = segs.uploads.into_iter().map(|(_, r)| r).collect();
        self.abort_uploads(&records).await?;
        let any = !segs.parts.is_empty();
        self.delete_paths(segs.parts.into_iter().map(|s| s.path).collect())
            .await?;
        Ok(any)
    }

    /// `len` bytes from `offset` of a written object.
    async fn read_segments(
        &self,
        key: &str,
        segs: &Segments,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StorageError> {
        let end = offset.saturating_add(len);
        let mut ranges = Vec::new();
        for s in &segs.parts {
            let (from, to) = (offset.max(s.start), end.min(s.start + s.size));
            if from < to {
                ranges.push((Path::from(s.path.as_str()), from - s.start, to - s.start));
            }
        }
        let missing = end.saturating_sub(segs.size().max(offset));
        let store = self.store.clone();
        let key = key.to_string();
        let pieces = stream::iter(ranges)
            .then(move |(path, from, to)| {
                let store = store.clone();
                async move {
                    ranged(&store, &path, from, to)
                        .await
                        .map_err(io::Error::from)
                }
            })
            .try_flatten();
        Ok(exact(Box::pin(pieces), len - missing, missing > 0, key))
    }
}

/// The text of `<field>` in an S3 error document.
fn xml_field(doc: &str, field: &str) -> Option<String> {
    let start = doc.find(&format!("<{field}>"))? + field.len() + 2;
    let len = doc[start..].find(&format!("</{field}>"))?;
    Some(doc[start..start + len].to_string())
}

/// The key of the segment of `key` starting at `start`.
fn segment_key(key: &str, start: u64) -> String {
    format!("{key}{SEGMENTS}/{SEG}{start:016x}")
}

fn parse_hex(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// One segment of a written object.
struct Segment {
    start: u64,
    size: u64,
    modified: SystemTime,
    path: String,
}

/// The segments of a written object and the uploads recorded beside them.
#[derive(Default)]
struct Segments {
    parts: Vec<Segment>,
    uploads: Vec<(u64, String)>,
}

impl Segments {
    fn size(&self) -> u64 {
        self.parts.last().map_or(0, |s| s.start + s.size)
    }

    /// Whether the segments follow each other without a gap.
    fn check(&self, key: &str) -> Result<(), StorageError> {
        let mut at = 0;
        for s in &self.parts {
            if s.start != at {
                return Err(StorageError::Io {
                    op: "read",
                    key: key.to_string(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("segment at {} follows byte {at}", s.start),
                    ),
                });
            }
            at += s.size;
        }
        Ok(())
    }

    fn meta(&self) -> Meta {
        Meta {
            size: self.size(),
            modified: self
                .parts
                .iter()
                .map(|s| s.modified)
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// Bytes `from..to` of one object, as a stream.
async fn ranged(
    store: &AmazonS3,
    path: &Path,
    from: u64,
    to: u64,
) -> Result<stream::BoxStream<'static, io::Result<Bytes>>, object_store::Error> {
    let opts = GetOptions {
        range: Some(GetRange::Bounded(from..to)),
        ..Default::default()
    };
    let got = store.get_opts(path, opts).await?;
    Ok(got.into_stream().map_err(io::Error::from).boxed())
}

/// `pieces`, checked to hold `len` bytes; ends with `UnexpectedEof` when
/// they hold fewer or `short` says the object is.
fn exact(
    pieces: stream::BoxStream<'static, io::Result<Bytes>>,
    len: u64,
    short: bool,
    key: String,
) -> ByteStream {
    let counted = stream::unfold((pieces, 0u64, false), move |(mut pieces, seen, ended)| {
        let key = key.clone();
        async move {
            if ended {
                return None;
            }
            match pieces.next().await {
                Some(Ok(b)) => {
                    let seen = seen + b.len() as u64;
                    Some((Ok(b), (pieces, seen, false)))
                }
                Some(Err(e)) => Some((Err(e), (pieces, seen, true))),
                None if seen < len || short => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{key} ended after {seen} bytes"),
                    )),
                    (pieces, seen, true),
                )),
                None => None,
            }
        }
    });
    Box::pin(counted)
}

#[async_trait]
impl Driver for S3Driver {
    fn describe(&self) -> String {
        self.inner.opts.describe()
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let i = &self.inner;
        let got = i.store.get(&i.path(key)?).await;
        match got {
            Ok(r) => r.bytes().await.map_err(|e| i.err("get", key, e)),
            Err(object_store::Error::NotFound { .. }) => {
                let Some(segs) = i.segments(key).await?.filter(|s| !s.parts.is_empty()) else {
                    return Err(StorageError::NotFound(key.to_string()));
                };
                let pieces: Vec<Bytes> = i
                    .read_segments(key, &segs, 0, segs.size())
                    .await?
                    .try_collect()
                    .await
                    .map_err(|e| StorageError::io("get", key, e))?;
                Ok(pieces.concat().into())
            }
            Err(e) => Err(i.err("get", key, e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let i = &self.inner;
        i.store
            .put(&i.path(key)?, PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(|e| i.err("put", key, e))
    }

    /// A look, then a write: the two may race, which only content-addressed
    /// objects and unique names are written with (and stores such as
    /// Garage ignore `If-None-Match` on writes anyway).
    async fn put_new(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        match self.stat(key).await {
            Ok(_) => Ok(false),
            Err(StorageError::NotFound(_)) => self.put(key, data).await.map(|()| true),
            Err(e) => Err(e),
        }
    }

    async fn stat(&self, key: &str) -> Result<Meta, StorageError> {
        let i = &self.inner;
        match i.store.head(&i.path(key)?).await {
            Ok(m) => Ok(Meta {
                size: m.size,
                modified: m.last_modified.into(),
            }),
            Err(object_store::Error::NotFound { .. }) => match i.segments(key).await? {
                Some(segs) if !segs.parts.is_empty() => Ok(segs.meta()),
                _ => Err(StorageError::NotFound(key.to_string())),
            },
            Err(e) => Err(i.err("stat", key, e)),
        }
    }

    /// One ranged GET; a look at the object first only when the range is
    /// empty, and at its segments when there is no object.
    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, StorageError> {
        let i = &self.inner;
        let path = i.path(key)?;
        let got = match len {
            0 => i.store.head(&path).await.map(|_| None),
            _ => ranged(&i.store, &path, offset, offset + len)
                .await
                .map(Some),
        };
        match got {
            Ok(Some(pieces)) => Ok(exact(pieces, len, false, key.into())),
            Ok(None) => Ok(exact(stream::empty().boxed(), 0, false, key.into())),
            Err(object_store::Error::NotFound { .. }) => {
                let segs = i
                    .segments(key)
                    .await?
                    .filter(|s| !s.parts.is_empty())
                    .ok_or_else(|| StorageError::NotFound(key.to_string()))?;
                segs.check(key)?;
                i.read_segments(key, &segs, offset, len).await
            }
            // A range past the end is refused (416): the object is shorter.
            Err(e) => match i.store.head(&path).await {
                Ok(m) if m.size <= offset => {
                    Ok(exact(stream::empty().boxed(), len, false, key.into()))
                }
                _ => Err(i.err("read", key, e)),
            },
        }
    }

    fn list<'a>(&'a self, prefix: &'a str) -> Names<'a> {
        let i = &self.inner;
        let dir = match i.full(prefix) {
            d if d.is_empty() => d,
            d => format!("{d}/"),
        };
        let names = i
            .list_raw(dir.clone(), Some("/"))
            .try_filter_map(move |(p, _)| {
                let name = p
                    .strip_prefix(&dir)
                    .unwrap_or(&p)
                    .trim_end_matches('/')
                    .to_string();
                let name = name
                    .strip_suffix(SEGMENTS)
                    .map(str::to_string)
                    .unwrap_or(name);
                async move { Ok((!name.is_empty()).then_some(name)) }
            });
        Box::pin(names)
    }

    /// One listing of every key under the prefix (a thousand a request);
    /// the segments of a written object come as that object.
    fn walk<'a>(&'a self, prefix: &'a str) -> Objects<'a> {
        let i = &self.inner;
        let dir = match i.full(prefix) {
            d if d.is_empty() => d,
            d => format!("{d}/"),
        };
        let listed = i.list_raw(dir.clone(), None).map_ok(move |(path, meta)| {
            let key = path.strip_prefix(&dir).unwrap_or(&path).to_string();
            (
                key,
                meta.unwrap_or(Meta {
                    size: 0,
                    modified: SystemTime::UNIX_EPOCH,
                }),
            )
        });
        // Keys come in order, so the segments of one object come together.
        let merged = stream::try_unfold(
            (Box::pin(listed), None::<(String, Meta)>),
            |(mut listed, mut pending)| async move {
                while let Some((key, meta)) = listed.try_next().await? {
                    let Some((base, name)) = key.rsplit_once(&format!("{SEGMENTS}/")) else {
                        if let Some(done) = pending.take() {
                            return Ok(Some((vec![done, (key, meta)], (listed, None))));
                        }
                        return Ok(Some((vec![(key, meta)], (listed, None))));
                    };
                    if !name.starts_with(SEG) {
                        continue;
                    }
                    match &mut pending {
                        Some((k, m)) if k == base => {
                            m.size += meta.size;
                            m.modified = m.modified.max(meta.modified);
                        }
                        _ => {
                            let done = pending.replace((base.to_string(), meta));
                            if let Some(done) = done {
                                return Ok(Some((vec![done], (listed, pending))));
                            }
                        }
                    }
                }
                Ok(pending.take().map(|done| (vec![done], (listed, None))))
            },
        );
        Box::pin(
            merged
                .map_ok(|v| stream::iter(v.into_iter().map(Ok)))
                .try_flatten(),
        )
    }

    async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        self.inner.delete_key(key).await
    }

    async fn delete_all(&self, prefix: &str) -> Result<bool, StorageError> {
        let i = &self.inner;
        let dir = format!("{}/", i.full(prefix));
        let mut listing = i.list_raw(dir, None);
        let mut batch = Vec::new();
        let mut any = false;
        while let Some(item) = listing.next().await {
            let (path, _) = item?;
            // A record of an upload under way: abort it first.
            let record = path
                .rsplit_once('/')
                .is_some_and(|(d, n)| d.ends_with(SEGMENTS) && n.starts_with(MPU));
            if record {
                i.abort_uploads(&[path]).await?;
                any = true;
                continue;
            }
            batch.push(path);
            if batch.len() >= 1000 {
                any |= i.delete_paths(std::mem::take(&mut batch)).await? > 0;
            }
        }
        any |= i.delete_paths(batch).await? > 0;
        Ok(any)
    }

    /// An object store has no directories to remove.
    async fn prune(&self, _prefix: &str, _stop: &str) -> Result<(), StorageError> {
        Ok(())
    }

    async fn writer(&self, key: &str, offset: u64) -> Result<Box<dyn Writer>, StorageError> {
        let i = &self.inner;
        let segs = i.segments(key).await?.unwrap_or_default();
        // Cut back: what starts at or past `offset` goes (the segment at
        // `offset` itself is replaced when this writer finishes); a
        // segment across `offset` is written again up to it, by this
        // writer, which then starts where that segment did.
        let (mut at, mut start, mut across) = (0, offset, None);
        let mut drop = Vec::new();
        for s in segs.parts {
            if s.start > offset || (s.start == offset && offset > 0) {
                drop.push(s.path);
            } else if s.start + s.size > offset && s.start < offset {
                (at, start) = (offset, s.start);
                across = Some(s);
            } else {
                at = s.start + s.size;
            }
        }
        let stale: Vec<_> = segs
            .uploads
            .into_iter()
            .filter(|(s, _)| *s >= start)
            .map(|(_, record)| record)
            .collect();
        i.abort_uploads(&stale).await?;
        i.delete_paths(drop).await?;
        // At 0 the first segment, if any, is replaced.
        if offset > 0 && at != offset {
            return Err(StorageError::Io {
                op: "append",
                key: key.to_string(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot append at {offset}: the object has {at} bytes"),
                ),
            });
        }
        let path = i.path(&segment_key(key, start))?;
        let mut w = SegmentWriter::new(self.inner.clone(), key.to_string(), path);
        w.start = start;
        if let Some(s) = across {
            let mut kept = ranged(&i.store, &Path::from(s.path.as_str()), 0, offset - s.start)
                .await
                .map_err(|e| i.err("append", key, e))?;
            while let Some(piece) = kept.next().await {
                let piece = piece.map_err(|e| StorageError::io("append", key, e))?;
                w.write(Arc::new(vec![piece])).await?;
            }
        }
        Ok(Box::new(w))
    }

    async fn commit(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let i = &self.inner;
        let exists = match i.store.head(&i.path(to)?).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(i.err("commit", to, e)),
        };
        if !exists && !i.copy(from, to).await? {
            return Err(StorageError::NotFound(from.to_string()));
        }
        i.delete_key(from).await.map(|_| ())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let i = &self.inner;
        if !i.copy(from, to).await? {
            return Err(StorageError::NotFound(from.to_string()));
        }
        i.delete_key(from).await.map(|_| ())
    }

    fn explain(&self, e: &StorageError) -> String {
        self.inner.explain(e)
    }

    async fn redirect(&self, key: &str) -> Result<Option<String>, StorageError> {
        let i = &self.inner;
        let Some(expiry) = i.opts.redirect else {
            return Ok(None);
        };
        let url = i
            .store
            .signed_url(http::Method::GET, &i.path(key)?, expiry)
            .await
            .map_err(|e| i.err("sign", key, e))?;
        Ok(Some(url.to_string()))
    }
}

/// A multipart upload under way.
struct Upload {
    id: String,
    record: Path,
    parts: Vec<PartId>,
    in_flight: VecDeque<JoinHandle<Result<PartId, object_store::Error>>>,
}

/// Writes one object (a segment, or a copy's target): parts leave as
/// they fill; an object smaller than one part is one `PutObject`.
struct SegmentWriter {
    inner: Arc<Inner>,
    /// The written object's key (for errors and the upload's record).
    key: String,
    path: Path,
    start: u64,
    buf: Vec<Bytes>,
    buffered: u64,
    written: u64,
    upload: Option<Upload>,
}

impl SegmentWriter {
    fn new(inner: Arc<Inner>, key: String, path: Path) -> SegmentWriter {
        SegmentWriter {
            inner,
            key,
            path,
            start: 0,
            buf: Vec::new(),
            buffered: 0,
            written: 0,
            upload: None,
        }
    }

    fn err(&self, op: &'static str, e: object_store::Error) -> StorageError {
        self.inner.err(op, &self.key, e)
    }

    /// Sends the buffer as the next part, in a task of its own; waits while
    /// as many parts as allowed are in flight (the buffer filling counts
    /// as one).
    async fn send_part(&mut self) -> Result<(), StorageError> {
        if self.upload.is_none() {
            let id = self
                .inner
                .store
                .create_multipart(&self.path)
                .await
                .map_err(|e| self.err("upload", e))?;
            let record = self.record_path()?;
            let text = format!("{id}\n{}", self.path);
            let recorded = self.inner.store.put(&record, PutPayload::from(text)).await;
            if let Err(e) = recorded {
                let _ = self.inner.store.abort_multipart(&self.path, &id).await;
                return Err(self.err("upload", e));
            }
            self.upload = Some(Upload {
                id,
                record,
                parts: Vec::new(),
                in_flight: VecDeque::new(),
            });
        }
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        self.buffered = 0;
        let limit = self.inner.opts.parallel_parts.saturating_sub(1).max(1);
        let store = self.inner.store.clone();
        let path = self.path.clone();
        let up = self.upload.as_mut().expect("upload started");
        let idx = up.parts.len() + up.in_flight.len();
        let id = up.id.clone();
        up.in_flight.push_back(tokio::spawn(async move {
            store.put_part(&path, &id, idx, payload).await
        }));
        while up.in_flight.len() >= limit {
            let part = up.in_flight.pop_front().expect("in flight");
            let part = join(part)
                .await
                .map_err(|e| self.inner.err("upload", &self.key, e))?;
            up.parts.push(part);
        }
        Ok(())
    }

    /// The key of the record of this writer's upload.
    fn record_path(&self) -> Result<Path, StorageError> {
        let path = self.path.to_string();
        match path.rsplit_once(&format!("{SEGMENTS}/{SEG}")) {
            Some((base, start)) => Ok(Path::from(format!("{base}{SEGMENTS}/{MPU}{start}"))),
            // A copy's target: recorded beside it.
            None => Ok(Path::from(format!("{path}{SEGMENTS}/{MPU}{:016x}", 0))),
        }
    }

    async fn write(&mut self, batch: Batch) -> Result<(), StorageError> {
        for b in batch.iter() {
            self.buffered += b.len() as u64;
            self.written += b.len() as u64;
            self.buf.push(b.clone());
        }
        if self.buffered >= self.inner.opts.part_size {
            self.send_part().await?;
        }
        Ok(())
    }

    /// Makes the object appear; its size.
    async fn complete(mut self) -> Result<u64, StorageError> {
        let Some(mut up) = self.upload.take() else {
            let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
            self.inner
                .store
                .put(&self.path, payload)
                .await
                .map_err(|e| self.err("put", e))?;
            return Ok(self.written);
        };
        let result = async {
            if self.buffered > 0 {
                let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
                let store = self.inner.store.clone();
                let (path, id, idx) = (
                    self.path.clone(),
                    up.id.clone(),
                    up.parts.len() + up.in_flight.len(),
                );
                up.in_flight.push_back(tokio::spawn(async move {
                    store.put_part(&path, &id, idx, payload).await
                }));
            }
            while let Some(part) = up.in_flight.pop_front() {
                up.parts.push(join(part).await?);
            }
            self.inner
                .store
                .complete_multipart(&self.path, &up.id, std::mem::take(&mut up.parts))
                .await?;
            self.inner.store.delete(&up.record).await
        }
        .await;
        match result {
            Ok(()) => Ok(self.written),
            Err(e) => {
                abort(&self.inner, &self.path, up);
                Err(self.err("upload", e))
            }
        }
    }
}

/// A part's result; a task that did not finish is an error.
async fn join(
    part: JoinHandle<Result<PartId, object_store::Error>>,
) -> Result<PartId, object_store::Error> {
    part.await
        .unwrap_or_else(|e| Err(object_store::Error::JoinError { source: e }))
}

/// Aborts an upload that will not complete, in the background (a writer
/// dropped half-way cannot wait for it).
fn abort(inner: &Arc<Inner>, path: &Path, up: Upload) {
    let (inner, path) = (inner.clone(), path.clone());
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        for part in up.in_flight {
            part.abort();
        }
        if inner.store.abort_multipart(&path, &up.id).await.is_ok() {
            let _ = inner.store.delete(&up.record).await;
        }
    });
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if let Some(up) = self.upload.take() {
            abort(&self.inner, &self.path, up);
        }
    }
}

#[async_trait]
impl Writer for SegmentWriter {
    async fn write(&mut self, batch: Batch) -> Result<(), StorageError> {
        SegmentWriter::write(self, batch).await
    }

    async fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        // An empty writer at 0 still makes the object (an upload's empty
        // `data`); elsewhere it only cut back.
        if self.written == 0 && self.start > 0 {
            return Ok(self.start);
        }
        let start = self.start;
        Ok(start + (*self).complete().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver() -> S3Driver {
        S3Driver::new(S3Options {
            bucket: "reg".into(),
            endpoint: Some("http://127.0.0.1:40377".into()),
            region: "garage".into(),
            prefix: "ci".into(),
            path_style: true,
            part_size: DEFAULT_PART_SIZE,
            parallel_parts: DEFAULT_PARALLEL_PARTS,
            credentials: None,
            redirect: None,
        })
        .unwrap()
    }

    fn failed(text: &str) -> StorageError {
        StorageError::Io {
            op: "put",
            key: "berth/probe/a403f".into(),
            source: io::Error::other(text.to_string()),
        }
    }

    #[test]
    fn probe_failures_are_named_by_their_cause_not_by_digits_in_names() {
        let d = driver();
        let refused = d.explain(&failed(
            "tcp connect error: Connection refused (os error 111)",
        ));
        assert!(
            refused.contains("cannot connect to http://127.0.0.1:40377"),
            "{refused}"
        );
        let denied = d.explain(&failed(
            "403 Forbidden: <Error><Code>AccessDenied</Code><Message>Invalid signature</Message></Error>",
        ));
        assert!(denied.contains("access denied to bucket 'reg'"), "{denied}");
        assert!(
            denied.ends_with("(AccessDenied: Invalid signature)"),
            "{denied}"
        );
        let missing = d.explain(&failed("<Code>NoSuchBucket</Code>"));
        assert!(missing.contains("bucket 'reg' does not exist"), "{missing}");
    }
}
