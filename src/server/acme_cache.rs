//! The ACME account and certificates of an instance, kept in its store
//! (`berth/acme/…`, through the storage driver), so that every process
//! serving the store shares them: one orders, the others load what it
//! stored when they start, and a restarted or new process orders nothing.
//!
//! Earlier versions kept them in the process's state directory
//! (`<state>/acme/<instance>/`); an entry the store lacks is read there and
//! copied into the store, so an upgrade does not order again.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use rustls_acme::caches::DirCache;
use rustls_acme::{AccountCache, CertCache};
use sha2::{Digest as _, Sha256};

use crate::storage::driver::{optional, Driver, StorageError};
use crate::storage::keys;

/// An instance's ACME cache in its store, with the state directory of
/// earlier versions to fall back on.
pub struct StoreCache {
    driver: Arc<dyn Driver>,
    legacy: DirCache<PathBuf>,
    legacy_dir: PathBuf,
}

impl StoreCache {
    pub fn new(driver: Arc<dyn Driver>, legacy_dir: PathBuf) -> Self {
        StoreCache {
            driver,
            legacy: DirCache::new(legacy_dir.clone()),
            legacy_dir,
        }
    }

    /// The key of an entry: `kind` and a hash of what names it (the
    /// domains or contacts, and the ACME directory).
    fn key(kind: &str, names: &[String], directory_url: &str) -> String {
        let mut h = Sha256::new();
        for n in names {
            h.update(n.as_bytes());
            h.update([0]);
        }
        h.update(directory_url.as_bytes());
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize());
        format!("{}/{kind}_{hash}", keys::ACME)
    }

    /// The entry at `key`; else what `legacy` finds, copied into the store.
    async fn load(
        &self,
        key: String,
        legacy: impl std::future::Future<Output = std::io::Result<Option<Vec<u8>>>>,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(data) = optional(self.driver.get(&key).await)? {
            return Ok(Some(data.to_vec()));
        }
        let old = legacy
            .await
            .map_err(|e| StorageError::io("reading", &self.legacy_dir.display().to_string(), e))?;
        if let Some(data) = &old {
            self.driver.put(&key, Bytes::from(data.clone())).await?;
        }
        Ok(old)
    }
}

#[async_trait]
impl CertCache for StoreCache {
    type EC = StorageError;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let key = Self::key("cert", domains, directory_url);
        self.load(key, self.legacy.load_cert(domains, directory_url))
            .await
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), StorageError> {
        let key = Self::key("cert", domains, directory_url);
        self.driver.put(&key, Bytes::copy_from_slice(cert)).await
    }
}

#[async_trait]
impl AccountCache for StoreCache {
    type EA = StorageError;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let key = Self::key("account", contact, directory_url);
        self.load(key, self.legacy.load_account(contact, directory_url))
            .await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), StorageError> {
        let key = Self::key("account", contact, directory_url);
        self.driver.put(&key, Bytes::copy_from_slice(account)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemDriver;

    #[tokio::test]
    async fn entries_live_in_the_store_and_old_ones_move_in() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("acme/ci");
        let store: Arc<dyn Driver> = Arc::new(MemDriver::new());
        let domains = vec!["ci.example.com".to_string()];
        let url = "https://acme.test/directory";
        // Written by an earlier version into the state directory.
        DirCache::new(legacy.clone())
            .store_cert(&domains, url, b"old cert")
            .await
            .unwrap();
        let a = StoreCache::new(store.clone(), legacy.clone());
        assert_eq!(
            a.load_cert(&domains, url).await.unwrap().unwrap(),
            b"old cert"
        );
        // Another process on the store, with a state directory of its own.
        let b = StoreCache::new(store.clone(), dir.path().join("elsewhere"));
        assert_eq!(
            b.load_cert(&domains, url).await.unwrap().unwrap(),
            b"old cert"
        );
        b.store_cert(&domains, url, b"renewed").await.unwrap();
        assert_eq!(
            a.load_cert(&domains, url).await.unwrap().unwrap(),
            b"renewed"
        );
        assert_eq!(a.load_account(&domains, url).await.unwrap(), None);
        a.store_account(&domains, url, b"account").await.unwrap();
        assert_eq!(
            b.load_account(&domains, url).await.unwrap().unwrap(),
            b"account"
        );
        let other = vec!["other.example.com".to_string()];
        assert_eq!(b.load_cert(&other, url).await.unwrap(), None);
    }
}
