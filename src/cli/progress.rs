//! The progress line `berth fsck` draws on stderr while it runs: it turns
//! the [`Progress`] values that [`crate::registry::fsck::check`] reports into
//! a line redrawn in place. Owns only the drawing; what is counted is fsck's.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::registry::fsck::{human_bytes, Phase, Progress};

/// Progress on stderr when it is a terminal, for runs longer than a second;
/// nothing otherwise.
pub struct TerminalProgress {
    label: String,
    enabled: bool,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl TerminalProgress {
    pub fn new(label: &str) -> Self {
        TerminalProgress {
            label: label.to_string(),
            enabled: io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if !self.enabled || self.started.elapsed() < Duration::from_secs(1) {
            return;
        }
        if self
            .last
            .is_some_and(|l| l.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let line = match p.phase {
            Phase::Blobs => format!(
                "{}: verifying blobs {}/{} ({} of {})",
                self.label,
                p.done,
                p.total,
                human_bytes(p.bytes_done),
                human_bytes(p.bytes_total)
            ),
            Phase::Repositories => format!(
                "{}: checking repositories {}/{}",
                self.label, p.done, p.total
            ),
        };
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        self.shown = true;
    }

    /// Clears the progress line.
    pub fn finish(&mut self) {
        if self.shown {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}
