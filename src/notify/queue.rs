//! One endpoint's queue on disk: events appended as JSON lines to
//! `events.log`, and `cursor`, the offset of the first one not delivered
//! (written to a temporary name and renamed, so a crash leaves the old or
//! the new offset: an event is delivered again at worst, never skipped).
//! Once everything is delivered the log starts over. Past `max` events
//! waiting, the oldest are dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

/// Once delivered up to its end, a log this long starts over.
const RESTART_AT: u64 = 1 << 20;

/// The directory of the queue of the endpoint `url`.
pub fn dir_name(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..8])
}

struct State {
    log: File,
    /// Bytes in the log.
    len: u64,
    /// Offset of the first event not delivered.
    cursor: u64,
    /// Events after the cursor.
    pending: usize,
}

/// The queue of one endpoint.
pub struct Queue {
    dir: PathBuf,
    max: usize,
    state: Mutex<State>,
    dropped: AtomicU64,
    /// Told when an event is added.
    pub(super) wake: Notify,
}

fn lines_after(path: &Path, offset: u64) -> io::Result<usize> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    Ok(BufReader::new(f).split(b'\n').count())
}

impl Queue {
    /// The queue in `dir` (made if missing), with what an earlier run
    /// left in it.
    pub fn open(dir: &Path, max: usize) -> io::Result<Queue> {
        fs::create_dir_all(dir)?;
        let path = dir.join("events.log");
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = log.metadata()?.len();
        let cursor = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|c| c.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(len);
        let pending = lines_after(&path, cursor)?;
        Ok(Queue {
            dir: dir.to_path_buf(),
            max,
            state: Mutex::new(State {
                log,
                len,
                cursor,
                pending,
            }),
            dropped: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    /// Appends an event (one JSON line); drops the oldest when full. A
    /// write that fails (a full disk) loses this event, logged.
    pub fn push(&self, line: &str) {
        let mut s = self.state.lock();
        if s.pending >= self.max {
            match self.line_at(s.cursor) {
                Ok(Some((_, next))) => {
                    s.cursor = next;
                    s.pending -= 1;
                    let _ = self.save_cursor(next);
                }
                _ => return,
            }
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(queue = %self.dir.display(), dropped = n, "webhook queue full: dropping its oldest events");
            }
        }
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        match s.log.write_all(&bytes) {
            Ok(()) => {
                s.len += bytes.len() as u64;
                s.pending += 1;
                self.wake.notify_one();
            }
            Err(e) => tracing::warn!(queue = %self.dir.display(), "webhook event not queued: {e}"),
        }
    }

    /// The line at `offset` and the offset after it, if there is one.
    fn line_at(&self, offset: u64) -> io::Result<Option<(String, u64)>> {
        let mut f = File::open(self.dir.join("events.log"))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut line = Vec::new();
        let n = BufReader::new(f).read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(None);
        }
        line.pop();
        Ok(Some((
            String::from_utf8_lossy(&line).into_owned(),
            offset + n as u64,
        )))
    }

    /// The oldest event not delivered, and what to [`Queue::ack`] once it is.
    pub fn next(&self) -> io::Result<Option<(String, u64)>> {
        let cursor = self.state.lock().cursor;
        self.line_at(cursor)
    }

    /// The event before `next` was delivered.
    pub fn ack(&self, next: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        if next <= s.cursor {
            return Ok(());
        }
        s.cursor = next;
        s.pending = s.pending.saturating_sub(1);
        // The file's own length: another handle (of a config being
        // replaced) may have appended.
        let len = s.log.metadata()?.len();
        if s.cursor == len && len >= RESTART_AT {
            s.log.set_len(0)?;
            s.len = 0;
            s.cursor = 0;
        }
        self.save_cursor(s.cursor)
    }

    fn save_cursor(&self, cursor: u64) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, cursor.to_string())?;
        fs::rename(tmp, self.dir.join("cursor"))
    }

    /// Events waiting, and events dropped since it was opened.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.lock().pending as u64,
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_wait_in_order_survive_a_reopen_and_the_oldest_go_when_full() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open(tmp.path(), 3).unwrap();
        for e in ["a", "b"] {
            q.push(e);
        }
        let (first, after) = q.next().unwrap().unwrap();
        assert_eq!(first, "a");
        q.ack(after).unwrap();
        drop(q);
        // Reopened: b is still waiting.
        let q = Queue::open(tmp.path(), 3).unwrap();
        assert_eq!(q.counts(), (1, 0));
        for e in ["c", "d", "e"] {
            q.push(e);
        }
        assert_eq!(q.counts(), (3, 1), "b dropped");
        let mut seen = Vec::new();
        while let Some((e, after)) = q.next().unwrap() {
            seen.push(e);
            q.ack(after).unwrap();
        }
        assert_eq!(seen, ["c", "d", "e"]);
        assert_eq!(q.counts(), (0, 1));
    }
}
