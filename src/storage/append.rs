//! Appending to an upload's data file.
//!
//! On Linux whole blocks go straight to the disk (`O_DIRECT`) from an
//! aligned staging buffer: nothing is copied into the page cache and nothing
//! is left dirty for the kernel to write back, so an upload costs less CPU
//! and the fsync that commits it has only metadata left to write. The last,
//! partial block of each append goes through the page cache, so the file
//! always holds exactly the bytes appended (no padding, even if the process
//! dies). An append that starts inside a block re-reads that block's head
//! and writes the block again whole.
//!
//! Where the filesystem refuses direct I/O (at open or at the first write),
//! the appender falls back to buffered writes and starts writeback every
//! few MiB so that the final fsync finds little left to do.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

/// Alignment of direct I/O: memory, file offsets and lengths. 4 KiB covers
/// both 512-byte and 4 KiB logical blocks.
const ALIGN: usize = 4096;
/// Buffered mode: writeback is started every this many bytes.
const WRITEBACK: usize = 8 << 20;

/// Appends to one upload file, from a given offset on.
pub struct Appender {
    file: File,
    mode: Mode,
}

enum Mode {
    /// `O_DIRECT`: `stage[..len]` are the bytes of the file from `pos` on
    /// (`pos` block-aligned) that are not on disk yet, or are being rewritten.
    Direct { stage: Stage, len: usize, pos: u64 },
    /// Through the page cache, at the file's cursor; `unflushed` bytes were
    /// written since writeback was last started.
    Buffered { unflushed: usize },
}

/// A block-aligned window into an over-allocated vector (no `unsafe`
/// allocation needed).
struct Stage {
    mem: Vec<u8>,
    start: usize,
    cap: usize,
}

impl Stage {
    fn new(cap: usize) -> Stage {
        let cap = cap.next_multiple_of(ALIGN);
        let mem = vec![0u8; cap + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Stage { mem, start, cap }
    }

    fn buf(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.cap]
    }

    /// Grows to hold `cap` bytes, keeping the first `len`.
    fn reserve(&mut self, cap: usize, len: usize) {
        if cap > self.cap {
            let mut grown = Stage::new(cap);
            grown.buf()[..len].copy_from_slice(&self.buf()[..len]);
            *self = grown;
        }
    }
}

impl Appender {
    /// Opens `path` (created if missing) for appending at `offset`, cutting
    /// off any bytes past it (left by a chunk that failed half-way).
    pub fn open(path: &Path, offset: u64) -> io::Result<Appender> {
        Appender::open_with(path, offset, true)
    }

    /// [`Appender::open`], with direct I/O only if `direct` (and the
    /// filesystem has it).
    fn open_with(path: &Path, offset: u64, direct: bool) -> io::Result<Appender> {
        if let Some(file) = direct.then(|| open_direct(path)).transpose()?.flatten() {
            file.set_len(offset)?;
            let pos = offset - offset % ALIGN as u64;
            let len = (offset - pos) as usize;
            let mut stage = Stage::new(ALIGN);
            if len > 0 {
                // The block's head, to write the block again whole.
                File::open(path)?.read_exact_at(&mut stage.buf()[..len], pos)?;
            }
            return Ok(Appender {
                file,
                mode: Mode::Direct { stage, len, pos },
            });
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(offset)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
        Ok(Appender {
            file,
            mode: Mode::Buffered { unflushed: 0 },
        })
    }

    /// Whether whole blocks go to the disk directly.
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        matches!(self.mode, Mode::Direct { .. })
    }

    /// Appends `chunks` in order, in one disk write in direct mode (the
    /// staging buffer grows to the largest append). Less than a block may
    /// stay staged until the next call or [`Appender::finish`].
    pub fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        if let Mode::Direct { stage, len, .. } = &mut self.mode {
            let total: usize = chunks.iter().map(|c| c.len()).sum();
            stage.reserve(*len + total, *len);
        }
        for (i, chunk) in chunks.iter().enumerate() {
            let mut rest: &[u8] = chunk;
            while !rest.is_empty() {
                let Mode::Direct { stage, len, .. } = &mut self.mode else {
                    let parts: Vec<&[u8]> = std::iter::once(rest)
                        .chain(chunks[i + 1..].iter().map(|c| c.as_ref()))
                        .collect();
                    return self.write_buffered(&parts);
                };
                let n = rest.len().min(stage.cap - *len);
                stage.buf()[*len..*len + n].copy_from_slice(&rest[..n]);
                *len += n;
                rest = &rest[n..];
                if *len == stage.cap {
                    self.write_blocks()?;
                }
            }
        }
        self.write_blocks()
    }

    /// Writes what is staged: the file then holds every byte appended.
    /// Later appends (if any) go through the page cache.
    pub fn finish(&mut self) -> io::Result<()> {
        self.leave_direct()
    }

    /// Leaves direct mode: what is staged (the partial last block, or more
    /// when direct I/O was refused) is written through the page cache, and
    /// so is everything after it.
    fn leave_direct(&mut self) -> io::Result<()> {
        let Mode::Direct { stage, len, pos } = &mut self.mode else {
            return Ok(());
        };
        let (len, pos) = (*len, *pos);
        set_direct(&self.file, false)?;
        self.file.write_all_at(&stage.buf()[..len], pos)?;
        io::Seek::seek(&mut self.file, io::SeekFrom::Start(pos + len as u64))?;
        self.mode = Mode::Buffered { unflushed: len };
        Ok(())
    }

    /// Direct mode: writes the whole blocks staged. Falls back to buffered
    /// writes (of everything staged) if the filesystem refuses direct I/O.
    fn write_blocks(&mut self) -> io::Result<()> {
        let Mode::Direct { stage, len, pos } = &mut self.mode else {
            return Ok(());
        };
        let n = *len - *len % ALIGN;
        if n == 0 {
            return Ok(());
        }
        match self.file.write_all_at(&stage.buf()[..n], *pos) {
            Ok(()) => {
                *pos += n as u64;
                let end = *len;
                stage.buf().copy_within(n..end, 0);
                *len -= n;
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Alignment this filesystem does not accept: the staged
                // bytes and all later ones go through the page cache.
                tracing::debug!(error = %e, "direct I/O refused, writing through the page cache");
                self.leave_direct()
            }
            Err(e) => Err(e),
        }
    }

    /// Buffered mode: writes `parts` at the cursor with as few system calls
    /// as possible, starting writeback every few MiB.
    fn write_buffered(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.file.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Mode::Buffered { unflushed } = &mut self.mode {
            *unflushed += parts.iter().map(|p| p.len()).sum::<usize>();
            if *unflushed >= WRITEBACK {
                *unflushed = 0;
                start_writeback(&self.file)?;
            }
        }
        Ok(())
    }
}

/// Opens `path` for direct writes; `None` where the filesystem has no
/// direct I/O.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

#[cfg(target_os = "linux")]
fn set_direct(f: &File, on: bool) -> io::Result<()> {
    use rustix::fs::OFlags;
    let mut flags = rustix::fs::fcntl_getfl(f)?;
    flags.set(OFlags::DIRECT, on);
    Ok(rustix::fs::fcntl_setfl(f, flags)?)
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_f: &File, _on: bool) -> io::Result<()> {
    Ok(())
}

/// Starts writing `f`'s dirty pages to disk without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later fsync finds
/// little left to write. Durability still comes only from that fsync.
#[cfg(target_os = "linux")]
fn start_writeback(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor stays open for the call (borrowed from `f`);
    // the call reads no memory of ours.
    let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the final fsync writes everything.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_f: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `data` in pieces of the given sizes, reopening the file every
    /// third piece (so appends start inside blocks), and returns the file.
    fn append_in_pieces(dir: &Path, direct: bool, data: &[u8], sizes: &[usize]) -> Vec<u8> {
        let path = dir.join(format!("data-{direct}"));
        let mut a = Appender::open_with(&path, 0, direct).unwrap();
        let mut at = 0;
        for (i, n) in sizes.iter().cycle().enumerate() {
            if at == data.len() {
                break;
            }
            let n = (*n).min(data.len() - at);
            // Two chunks per piece, as a body arrives in frames.
            let (x, y) = data[at..at + n].split_at(n / 3);
            a.write(&[Bytes::copy_from_slice(x), Bytes::copy_from_slice(y)])
                .unwrap();
            at += n;
            if i % 3 == 2 {
                a.finish().unwrap();
                assert_eq!(std::fs::metadata(&path).unwrap().len(), at as u64);
                a = Appender::open_with(&path, at as u64, direct).unwrap();
            }
        }
        a.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn appends_of_any_size_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 << 20);
        let sizes = [1, 4095, 4096, 4097, 70_000, 1 << 20, 5, (2 << 20) + 3];
        for direct in [true, false] {
            let got = append_in_pieces(dir.path(), direct, &data, &sizes);
            assert!(got == data, "direct={direct}: content differs");
        }
    }

    #[test]
    fn direct_where_the_filesystem_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let a = Appender::open(&path, 0).unwrap();
        let refused = open_direct(&path).unwrap().is_none();
        assert_eq!(a.is_direct(), !refused);
        assert!(!Appender::open_with(&path, 0, false).unwrap().is_direct());
    }

    #[test]
    fn opening_cuts_off_a_failed_chunk_and_finish_leaves_no_padding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data = pattern(10_000);
        let mut a = Appender::open(&path, 0).unwrap();
        a.write(&[Bytes::copy_from_slice(&data)]).unwrap();
        // Without finish, the partial block is not written yet.
        let direct = a.is_direct();
        drop(a);
        let len = std::fs::read(&path).unwrap().len();
        assert_eq!(len, if direct { 8192 } else { data.len() });
        let mut a = Appender::open(&path, 5000).unwrap();
        a.write(&[Bytes::copy_from_slice(&data[5000..6001])])
            .unwrap();
        a.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), &data[..6001]);
    }

    #[test]
    fn reopening_through_the_page_cache_cuts_off_past_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"hello world").unwrap();
        let mut a = Appender::open_with(&path, 5, false).unwrap();
        a.write(&[Bytes::from_static(b"!")]).unwrap();
        a.finish().unwrap();
        drop(a);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello!");
    }

    /// What a refusal of direct I/O half-way does: the staged bytes and all
    /// later ones go through the page cache, and nothing is lost.
    #[test]
    fn falling_back_half_way_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data = pattern(100_000);
        let mut a = Appender::open(&path, 0).unwrap();
        a.write(&[Bytes::copy_from_slice(&data[..10_000])]).unwrap();
        a.leave_direct().unwrap();
        assert!(!a.is_direct());
        a.write(&[
            Bytes::copy_from_slice(&data[10_000..50_001]),
            Bytes::copy_from_slice(&data[50_001..]),
        ])
        .unwrap();
        a.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[test]
    fn on_tmpfs_too() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let data = pattern(1 << 20);
        let got = append_in_pieces(dir.path(), true, &data, &[4097, 100_000, 3]);
        assert!(got == data);
    }
}
