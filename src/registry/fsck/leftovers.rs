//! The first pass: what crashes leave behind, anywhere under
//! `docker/registry/v2/`: temp files of interrupted atomic writes and upload
//! directories without a data file. They are reported apart from the
//! problems and do not change the outcome; removing them is `repair`'s.

use std::fs;
use std::path::Path;

use super::{entries, repair, Ctx, Leftover, LeftoverKind};
use crate::storage;

impl Ctx {
    /// Temp files anywhere in the tree and upload directories without data.
    pub(super) fn leftover_pass(&mut self) {
        let mut stack = vec![self.store.v2_dir().to_path_buf()];
        while let Some(dir) = stack.pop() {
            let list = match entries(&dir) {
                Ok(l) => l,
                Err(e) => {
                    self.unreadable(&dir, &e);
                    continue;
                }
            };
            let in_uploads = dir.file_name().is_some_and(|n| n == "_uploads");
            for (name, path, ft) in list {
                if ft.is_dir() {
                    if in_uploads && !path.join("data").exists() {
                        self.leftover(LeftoverKind::UploadWithoutData, &path);
                    } else {
                        stack.push(path);
                    }
                } else if ft.is_file() && storage::is_temp_name(&name) {
                    self.leftover(LeftoverKind::TempFile, &path);
                }
            }
        }
        self.report.leftovers.sort_by(|a, b| a.path.cmp(&b.path));
    }

    fn leftover(&mut self, kind: LeftoverKind, path: &Path) {
        let bytes = match kind {
            LeftoverKind::TempFile => fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            LeftoverKind::UploadWithoutData => 0,
        };
        let mut l = Leftover {
            kind,
            path: path.to_path_buf(),
            bytes,
            removed: false,
            error: None,
        };
        if self.repair {
            repair::remove_leftover(&mut l);
        }
        self.report.leftovers.push(l);
    }
}
