//! The filesystem driver: keys are paths below a root directory, laid out
//! as CNCF Distribution's filesystem driver lays them, so a registry:2
//! data directory is served as is.
//!
//! Small objects are written to a temporary name beside their key,
//! fsynced and renamed into place (then the directory is fsynced), so a
//! crash leaves the old or the new content. Uploads append with the
//! appender of `append.rs` (direct I/O where the filesystem has it); a
//! commit fsyncs the upload and renames it into the blob store. Reads
//! stream through `read.rs` (page-cached data on the task, the rest on the
//! blocking pool). Every call that may wait for the disk runs on the
//! blocking pool,
//! but for the small reads of every request (links, manifests, `stat`):
//! they open and `stat` right on the task, as nginx does in its event loop
//! (the kernel answers from its caches for any path used lately), and read
//! with `RWF_NOWAIT`, which never waits for the disk; what is not cached is
//! read on the blocking pool. That saves a hand-over to another thread and
//! back on every small read.
//!
//! A rename is the filesystem's (a copy and a removal across filesystems),
//! made durable like a commit. Listings leave out the temporary names of
//! writes in progress but in [`Driver::list_with_temp`].

use std::fs;
use std::io::{self, IoSliceMut};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rustix::io::{preadv2, ReadWriteFlags};

use super::driver::{Batch, ByteStream, Driver, Meta, Names, Objects, StorageError, Writer};
use super::{atomic_write, remove_dir_all, remove_file, sync_dir, Appender, FileRange};
use futures_util::TryStreamExt;

/// How many names a listing hands over at once.
const LIST_PAGE: usize = 1000;

/// Objects up to this size are read whole on the task when cached.
const SMALL: u64 = 64 << 10;

/// A small object read right on the task, if the page cache holds it
/// whole; `None` otherwise (a large object, a directory, data that is not
/// cached, a filesystem without `RWF_NOWAIT`): read it on the blocking
/// pool then.
fn get_cached(path: &Path) -> io::Result<Option<Bytes>> {
    let f = fs::File::open(path)?;
    let m = f.metadata()?;
    if m.is_dir() || m.len() > SMALL {
        return Ok(None);
    }
    let mut buf = BytesMut::zeroed(m.len() as usize);
    let read = preadv2(
        &f,
        &mut [IoSliceMut::new(&mut buf)],
        0,
        ReadWriteFlags::NOWAIT,
    );
    Ok(match read {
        Ok(n) if n as u64 == m.len() => Some(buf.freeze()),
        _ => None,
    })
}

/// Size and modification time of the file at `path`.
fn meta(path: &Path) -> io::Result<Meta> {
    let m = fs::metadata(path)?;
    if m.is_dir() {
        return Err(io::ErrorKind::NotFound.into());
    }
    Ok(Meta {
        size: m.len(),
        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// A store in a local directory.
#[derive(Debug, Clone)]
pub struct FsDriver {
    root: PathBuf,
}

impl FsDriver {
    pub fn new(root: &Path) -> Self {
        FsDriver {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key.trim_matches('/'))
    }

    /// The names in the directory of `prefix`, temp files too if `temp`.
    fn names(&self, prefix: &str, temp: bool) -> Names<'static> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<String>, StorageError>>(1);
        let (dir, key) = (self.path(prefix), prefix.to_string());
        tokio::task::spawn_blocking(move || {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // Nothing there, or a file: no children.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    return
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(StorageError::io("listing", &key, e)));
                    return;
                }
            };
            let mut page = Vec::with_capacity(LIST_PAGE);
            for entry in entries {
                match entry {
                    Ok(e) => {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if temp || !super::is_temp_name(&name) {
                            page.push(name);
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(StorageError::io("listing", &key, e)));
                        return;
                    }
                }
                if page.len() == LIST_PAGE
                    && tx.blocking_send(Ok(std::mem::take(&mut page))).is_err()
                {
                    return;
                }
            }
            if !page.is_empty() {
                let _ = tx.blocking_send(Ok(page));
            }
        });
        let pages = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|page| (page, rx))
        });
        use futures_util::StreamExt;
        Box::pin(pages.flat_map(|page| {
            let names: Vec<Result<String, StorageError>> = match page {
                Ok(names) => names.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(names)
        }))
    }
}

/// Runs file work on the blocking pool, naming `op` and `key` in errors.
async fn blocking<T, F>(op: &'static str, key: &str, f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| StorageError::io(op, key, e)),
        Err(e) => Err(StorageError::io(op, key, io::Error::other(e))),
    }
}

struct FsWriter {
    key: String,
    file: Option<Appender>,
    size: u64,
}

#[async_trait]
impl Writer for FsWriter {
    async fn write(&mut self, batch: Batch) -> Result<(), StorageError> {
        self.write_all(vec![batch]).await
    }

    /// One hand-over to the blocking pool for all of them.
    async fn write_all(&mut self, batches: Vec<Batch>) -> Result<(), StorageError> {
        let mut file = self.file.take().expect("writer used after an error");
        let n: usize = batches.iter().flat_map(|b| b.iter()).map(|c| c.len()).sum();
        let file = blocking("writing", &self.key, move || {
            batches.iter().try_for_each(|b| file.write(b))?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        self.size += n as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        let mut file = self.file.take().expect("writer used after an error");
        blocking("writing", &self.key, move || file.finish()).await?;
        Ok(self.size)
    }
}

#[async_trait]
impl Driver for FsDriver {
    fn describe(&self) -> String {
        format!("filesystem {}", self.root.display())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        match get_cached(&path) {
            Ok(Some(data)) => return Ok(data),
            Ok(None) => {}
            Err(e) => return Err(StorageError::io("reading", key, e)),
        }
        blocking("reading", key, move || fs::read(path).map(Bytes::from)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key);
        blocking("writing", key, move || atomic_write(&path, &data)).await
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        let path = self.path(key);
        blocking("writing", key, move || {
            if path.exists() {
                return Ok(false);
            }
            // Written whole beside it, then linked in: a link fails when
            // the key appeared meanwhile.
            let tmp = path.with_file_name(format!(".new.{}.tmp", uuid::Uuid::new_v4().simple()));
            atomic_write(&tmp, &data)?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    sync_dir(path.parent().expect("key has a parent"))?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn stat(&self, key: &str) -> Result<Meta, StorageError> {
        meta(&self.path(key)).map_err(|e| StorageError::io("reading", key, e))
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, StorageError> {
        let path = self.path(key);
        let file = blocking("opening", key, move || fs::File::open(path)).await?;
        Ok(Box::pin(FileRange::new(file, offset, len)))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> Names<'a> {
        self.names(prefix, false)
    }

    fn list_with_temp<'a>(&'a self, prefix: &'a str) -> Names<'a> {
        self.names(prefix, true)
    }

    /// One walk of the directory tree on the blocking pool.
    fn walk<'a>(&'a self, prefix: &'a str) -> Objects<'a> {
        let root = self.path(prefix);
        let found = blocking("listing", prefix, move || {
            let mut out = Vec::new();
            let mut todo = vec![String::new()];
            while let Some(rel) = todo.pop() {
                let entries = match fs::read_dir(root.join(&rel)) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    let key = super::driver::join(&rel, &name);
                    let m = match entry.metadata() {
                        Ok(m) => m,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    if m.is_dir() {
                        todo.push(key);
                    } else if !super::is_temp_name(&name) {
                        let meta = Meta {
                            size: m.len(),
                            modified: m.modified()?,
                        };
                        out.push(Ok((key, meta)));
                    }
                }
            }
            Ok(futures_util::stream::iter(out))
        });
        Box::pin(futures_util::stream::once(found).try_flatten())
    }

    async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path(key);
        blocking("deleting", key, move || remove_file(&path)).await
    }

    async fn delete_all(&self, prefix: &str) -> Result<bool, StorageError> {
        let path = self.path(prefix);
        blocking("deleting", prefix, move || {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            remove_dir_all(&path)
        })
        .await
    }

    async fn prune(&self, prefix: &str, stop: &str) -> Result<(), StorageError> {
        let (mut dir, stop) = (self.path(prefix), self.path(stop));
        blocking("pruning", prefix, move || {
            // remove_dir removes only empty directories.
            while dir.starts_with(&stop) && dir != stop && fs::remove_dir(&dir).is_ok() {
                dir.pop();
            }
            Ok(())
        })
        .await
    }

    async fn writer(&self, key: &str, offset: u64) -> Result<Box<dyn Writer>, StorageError> {
        let path = self.path(key);
        let file = blocking("opening", key, move || {
            fs::create_dir_all(path.parent().expect("key has a parent"))?;
            Appender::open(&path, offset)
        })
        .await?;
        Ok(Box::new(FsWriter {
            key: key.to_string(),
            file: Some(file),
            size: offset,
        }))
    }

    async fn commit(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (src, dst) = (self.path(from), self.path(to));
        blocking("committing", from, move || {
            if dst.exists() {
                return remove_file(&src).map(drop);
            }
            fs::File::open(&src)?.sync_all()?;
            let dir = dst.parent().expect("key has a parent");
            fs::create_dir_all(dir)?;
            fs::rename(&src, &dst)?;
            sync_dir(dir)
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (src, dst) = (self.path(from), self.path(to));
        blocking("moving", from, move || move_file(&src, &dst)).await
    }
}

/// Moves `src` to `dst`, across filesystems too (a copy, fsynced, then a
/// removal), and makes both directories durable.
fn move_file(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().expect("key has a parent");
    fs::create_dir_all(dir)?;
    match fs::rename(src, dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            fs::copy(src, dst)?;
            fs::File::open(dst)?.sync_all()?;
            fs::remove_file(src)?;
        }
        Err(e) => return Err(e),
    }
    sync_dir(dir)?;
    sync_dir(src.parent().expect("key has a parent"))
}

#[cfg(test)]
mod tests {
    use super::super::driver::contract;
    use super::*;

    #[tokio::test]
    async fn keeps_the_driver_contract() {
        for check in 0..6 {
            let dir = tempfile::tempdir().unwrap();
            let d = FsDriver::new(dir.path());
            match check {
                0 => contract::small_objects(&d).await,
                1 => contract::listing_and_prefix_deletes(&d).await,
                2 => contract::temporary_objects(&d).await,
                3 => contract::renames(&d).await,
                4 => contract::walking(&d).await,
                _ => contract::uploads(&d).await,
            }
        }
    }
}
