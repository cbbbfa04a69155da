//! A local file that a download is written into while readers follow
//! behind the writer (a mirror's blob downloads, see
//! `registry::download`). Pieces are written a batch at a time on the
//! blocking pool, and read back with [`FileRange`]: from the page cache on
//! the async task, into buffers it reuses. The file is removed when the
//! spill is dropped.

use std::fs::File;
use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use super::read::FileRange;

/// Most pieces of one write (below the kernel's `IOV_MAX`).
const MAX_PIECES: usize = 512;

/// The file of one download.
pub struct Spill {
    path: PathBuf,
    file: Arc<File>,
}

impl Spill {
    /// A new, empty spill file at `path`; its directory is made when
    /// missing.
    pub async fn create(path: PathBuf) -> io::Result<Spill> {
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            Ok(Spill {
                path,
                file: Arc::new(file),
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Writes `pieces` one after the other from `offset`, on the blocking
    /// pool.
    pub async fn write_at(&self, offset: u64, pieces: Vec<Bytes>) -> io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut offset = offset;
            for group in pieces.chunks(MAX_PIECES) {
                let mut slices: Vec<IoSlice<'_>> = group.iter().map(|p| IoSlice::new(p)).collect();
                let mut left = &mut slices[..];
                while !left.is_empty() {
                    let n = rustix::io::pwritev(&*file, left, offset)?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    offset += n as u64;
                    IoSlice::advance_slices(&mut left, n);
                }
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// A reader from `start` that reads nothing until told how far the
    /// file is written ([`SpillReader::until`]).
    pub fn reader(&self, start: u64) -> io::Result<SpillReader> {
        Ok(SpillReader(FileRange::new(
            self.file.try_clone()?,
            start,
            0,
        )))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a spill file as far as it is written; the stream pauses (ends
/// its items) at that point until [`Self::until`] moves it.
pub struct SpillReader(FileRange);

impl SpillReader {
    /// The file is written up to `end`: read as far.
    pub fn until(&mut self, end: u64) {
        self.0.extend_to(end);
    }
}

impl Stream for SpillReader {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn readers_follow_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/spill");
        let spill = Spill::create(path.clone()).await.unwrap();
        let mut reader = spill.reader(3).unwrap();
        assert!(reader.next().await.is_none(), "nothing written yet");
        let pieces = vec![Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")];
        spill.write_at(0, pieces).await.unwrap();
        reader.until(8);
        let mut got = Vec::new();
        while let Some(piece) = reader.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got, b"defgh");
        spill
            .write_at(8, vec![Bytes::from_static(b"ij")])
            .await
            .unwrap();
        reader.until(10);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"ij");
        drop(spill);
        assert!(!path.exists(), "removed with the spill");
    }
}
