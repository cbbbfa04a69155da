//! Streaming a byte range of a blob file out. Data in the page cache is
//! read right on the async task (`preadv2` with `RWF_NOWAIT`, which never
//! waits for the disk); only data that has to come from the disk is read on
//! the blocking pool. Buffers are reused once the sender is done with them.

use std::fs::File;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use rustix::io::{preadv2, Errno, ReadWriteFlags};
use tokio::task::JoinHandle;

/// Largest piece read at once.
pub const PIECE: usize = 256 << 10;
/// Pieces handed out that a stream keeps, to reuse their buffers once the
/// sender has dropped them: a stream owns at most `SPARES + 1` buffers of
/// [`PIECE`] bytes.
const SPARES: usize = 2;

/// A byte range of an open file as a stream of [`Bytes`] pieces of at most
/// `PIECE` bytes, read one at a time when asked for, so memory per stream
/// is bounded. A file shorter than the range ends the stream with
/// `UnexpectedEof`.
pub struct FileRange {
    file: Arc<File>,
    /// Offset of the next piece to read.
    next: u64,
    end: u64,
    /// Whether reads without waiting work on this file (`RWF_NOWAIT` is not
    /// supported by every filesystem).
    nowait: bool,
    /// A read on the blocking pool, for data not in the page cache.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// The last pieces handed out, oldest first.
    sent: Vec<Bytes>,
}

impl FileRange {
    /// `len` bytes of `file` from `start`. The kernel is told that the file
    /// is read sequentially (larger read-ahead when it is not cached).
    pub fn new(file: File, start: u64, len: u64) -> FileRange {
        let _ = rustix::fs::fadvise(&file, start, None, rustix::fs::Advice::Sequential);
        FileRange {
            file: Arc::new(file),
            next: start,
            end: start.saturating_add(len),
            nowait: true,
            reading: None,
            sent: Vec::with_capacity(SPARES),
        }
    }

    /// Moves the end of the range to `end`, for a file written while it
    /// is read.
    pub fn extend_to(&mut self, end: u64) {
        self.end = self.end.max(end);
    }

    /// A buffer of a piece handed out earlier that nobody holds any more,
    /// else a new one.
    fn buffer(&mut self) -> BytesMut {
        let spare = self
            .sent
            .iter()
            .position(Bytes::is_unique)
            .and_then(|i| self.sent.remove(i).try_into_mut().ok());
        match spare {
            Some(mut buf) => {
                buf.resize(PIECE, 0);
                buf
            }
            None => BytesMut::zeroed(PIECE),
        }
    }

    /// Hands out a piece, keeping its buffer for reuse.
    fn hand_out(&mut self, piece: Bytes) -> Poll<Option<io::Result<Bytes>>> {
        if self.sent.len() == SPARES {
            self.sent.remove(0);
        }
        self.sent.push(piece.clone());
        Poll::Ready(Some(Ok(piece)))
    }
}

fn short_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "blob file shorter than its size",
    )
}

impl Stream for FileRange {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(reading) = self.reading.as_mut() {
            let piece = ready!(Pin::new(reading).poll(cx))
                .map_err(io::Error::other)
                .and_then(|r| r);
            self.reading = None;
            return match piece {
                Ok(piece) => self.hand_out(piece),
                Err(e) => Poll::Ready(Some(Err(e))),
            };
        }
        if self.next >= self.end {
            return Poll::Ready(None);
        }
        let n = (self.end - self.next).min(PIECE as u64) as usize;
        let offset = self.next;
        let mut buf = self.buffer();
        if self.nowait {
            let flags = ReadWriteFlags::NOWAIT;
            match preadv2(
                &*self.file,
                &mut [IoSliceMut::new(&mut buf[..n])],
                offset,
                flags,
            ) {
                Ok(0) => return Poll::Ready(Some(Err(short_file()))),
                Ok(k) => {
                    self.next += k as u64;
                    buf.truncate(k);
                    return self.hand_out(buf.freeze());
                }
                // Not (all) in the page cache: read it on the blocking pool.
                Err(Errno::AGAIN) => {}
                Err(_) => self.nowait = false,
            }
        }
        self.next += n as u64;
        let file = self.file.clone();
        self.reading = Some(tokio::task::spawn_blocking(move || {
            file.read_exact_at(&mut buf[..n], offset)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => short_file(),
                    _ => e,
                })?;
            buf.truncate(n);
            Ok(buf.freeze())
        }));
        self.poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use std::io::Write;
    use std::path::Path;

    async fn collect(file: &Path, start: u64, len: u64, nowait: bool) -> io::Result<Vec<u8>> {
        let mut range = FileRange::new(File::open(file).unwrap(), start, len);
        range.nowait = nowait;
        let pieces: Vec<Bytes> = range.try_collect().await?;
        assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= PIECE));
        Ok(pieces.concat())
    }

    /// Both ways of reading: from the page cache on the task, and on the
    /// blocking pool.
    #[tokio::test]
    async fn ranges_across_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(2 * PIECE + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let size = data.len() as u64;
        for nowait in [true, false] {
            for (start, len) in [
                (0, size),
                (0, 0),
                (5, 10),
                (PIECE as u64 - 1, 2),
                (1, size - 1),
            ] {
                let got = collect(&path, start, len, nowait).await.unwrap();
                assert!(
                    got == data[start as usize..(start + len) as usize],
                    "{start}+{len}, nowait {nowait}"
                );
            }
            let short = collect(&path, size - 10, 20, nowait).await.unwrap_err();
            assert_eq!(
                short.kind(),
                io::ErrorKind::UnexpectedEof,
                "nowait {nowait}"
            );
        }
    }
}
