//! Where an instance's content is ([`Location`]): a local directory or a
//! bucket, as the config names it, and the driver that serves it.

use std::path::PathBuf;
use std::sync::Arc;

use super::driver::{Driver, StorageError};
use super::filesystem::FsDriver;
use super::s3::{S3Driver, S3Options};

/// A store, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Filesystem(PathBuf),
    S3(S3Options),
}

impl Location {
    /// The driver serving it; talks to nothing yet.
    pub fn open(&self) -> Result<Arc<dyn Driver>, StorageError> {
        Ok(match self {
            Location::Filesystem(root) => Arc::new(FsDriver::new(root)),
            Location::S3(opts) => Arc::new(S3Driver::new(opts.clone())?),
        })
    }

    /// The name every process serving this store gives it (locks in
    /// PostgreSQL are taken per store): the directory, or the bucket and
    /// prefix at their endpoint.
    pub fn identity(&self) -> String {
        match self {
            Location::Filesystem(root) => root.display().to_string(),
            Location::S3(o) => o.describe(),
        }
    }

    /// Whether processes on several hosts may serve it (a bucket); a
    /// directory is shared by the processes of one host at most.
    pub fn is_shared(&self) -> bool {
        matches!(self, Location::S3(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Filesystem(root) => write!(f, "{}", root.display()),
            Location::S3(o) => write!(f, "{}", o.describe()),
        }
    }
}
