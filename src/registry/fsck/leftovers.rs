//! What crashes leave behind under `docker/registry/v2/`: temp files of
//! interrupted atomic writes, found anywhere by the first pass through
//! listings that show them, and upload directories without a data file,
//! found by the repository pass as it lists each repository's uploads
//! ([`Ctx::leftover`]). They are reported apart from the problems and do
//! not change the outcome; removing them is `repair`'s.

use futures_util::StreamExt;

use super::{repair, Ctx, Leftover, LeftoverKind};
use crate::storage::driver::optional;
use crate::storage::{is_temp_name, keys};

impl Ctx<'_> {
    /// Temp files anywhere in the tree. Listings are read as they come;
    /// what waits is the prefixes still to be listed.
    pub(super) async fn leftover_pass(&mut self) {
        let d = self.driver;
        let mut todo = vec![keys::V2.to_string()];
        while let Some(dir) = todo.pop() {
            let mut names = d.list_with_temp(&dir);
            while let Some(name) = names.next().await {
                let name = match name {
                    Ok(n) => n,
                    Err(e) => {
                        self.unreadable(&dir, &e).await;
                        break;
                    }
                };
                let key = keys::child(&dir, &name);
                if !is_temp_name(&name) {
                    if !keys::is_object_name(&name) {
                        todo.push(key);
                    }
                    continue;
                }
                match optional(d.stat(&key).await) {
                    Ok(Some(meta)) => self.leftover(LeftoverKind::TempFile, key, meta.size).await,
                    // A prefix named like a temp file, or a write that
                    // finished since the listing.
                    Ok(None) => todo.push(key),
                    Err(e) => self.unreadable(&key, &e).await,
                }
            }
        }
    }

    /// Records a leftover of `bytes` at `key`, removed when repairing.
    pub(super) async fn leftover(&mut self, kind: LeftoverKind, key: String, bytes: u64) {
        let mut l = Leftover {
            kind,
            key,
            bytes,
            removed: false,
            error: None,
        };
        if self.repair {
            repair::remove_leftover(self.driver, &mut l).await;
        }
        self.report.leftovers.push(l);
    }
}
