//! The in-memory driver: every object in one ordered map, for tests of the
//! layers above storage without a disk (milliseconds each). Nothing
//! survives the process. Its writes leave no temporary objects; a test
//! that plays a crash puts keys with temporary names, which listings leave
//! out as the filesystem driver's do.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use super::driver::{Batch, ByteStream, Driver, Meta, Names, StorageError, Writer};

/// Objects with the time they were written.
type Objects = BTreeMap<String, (Bytes, SystemTime)>;

/// A store in memory.
#[derive(Default, Clone)]
pub struct MemDriver {
    objects: Arc<Mutex<Objects>>,
}

impl MemDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The names under `prefix`; temporary names (which only a test puts
    /// here, to play a crash) only if `temp`.
    fn names(&self, prefix: &str, temp: bool) -> Names<'static> {
        let start = dir(prefix);
        let mut names = std::collections::BTreeSet::new();
        let objects = self.objects.lock();
        for key in objects.range(start.clone()..).map(|(k, _)| k) {
            let Some(rest) = key.strip_prefix(&start) else {
                break;
            };
            let name = rest.split('/').next().unwrap_or(rest);
            if temp || !super::is_temp_name(name) {
                names.insert(name.to_string());
            }
        }
        Box::pin(futures_util::stream::iter(names.into_iter().map(Ok)))
    }
}

/// `prefix` as the start of the keys under it.
fn dir(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

struct MemWriter {
    objects: Arc<Mutex<Objects>>,
    key: String,
    data: BytesMut,
}

#[async_trait]
impl Writer for MemWriter {
    async fn write(&mut self, batch: Batch) -> Result<(), StorageError> {
        batch.iter().for_each(|c| self.data.extend_from_slice(c));
        // Visible as it grows, as a file is.
        let now = SystemTime::now();
        self.objects
            .lock()
            .insert(self.key.clone(), (self.data.clone().freeze(), now));
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        let size = self.data.len() as u64;
        self.objects
            .lock()
            .insert(self.key, (self.data.freeze(), SystemTime::now()));
        Ok(size)
    }
}

#[async_trait]
impl Driver for MemDriver {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let objects = self.objects.lock();
        let (data, _) = objects
            .get(key)
            .ok_or_else(|| StorageError::NotFound(key.into()))?;
        Ok(data.clone())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.objects
            .lock()
            .insert(key.into(), (data, SystemTime::now()));
        Ok(())
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        let mut objects = self.objects.lock();
        if objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.into(), (data, SystemTime::now()));
        Ok(true)
    }

    async fn stat(&self, key: &str) -> Result<Meta, StorageError> {
        let objects = self.objects.lock();
        let (data, modified) = objects
            .get(key)
            .ok_or_else(|| StorageError::NotFound(key.into()))?;
        Ok(Meta {
            size: data.len() as u64,
            modified: *modified,
        })
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, StorageError> {
        let data = self.get(key).await?;
        let start = (offset as usize).min(data.len());
        let end = offset.saturating_add(len);
        let piece = if end as usize > data.len() {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{key} has {} bytes, not {end}", data.len()),
            ))
        } else {
            Ok(data.slice(start..end as usize))
        };
        let pieces = match piece {
            Ok(p) if p.is_empty() => vec![],
            other => vec![other],
        };
        Ok(Box::pin(futures_util::stream::iter(pieces)))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> Names<'a> {
        self.names(prefix, false)
    }

    fn list_with_temp<'a>(&'a self, prefix: &'a str) -> Names<'a> {
        self.names(prefix, true)
    }

    async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.objects.lock().remove(key).is_some())
    }

    async fn delete_all(&self, prefix: &str) -> Result<bool, StorageError> {
        let start = dir(prefix);
        let mut objects = self.objects.lock();
        let keys: Vec<String> = objects
            .range(start.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&start))
            .cloned()
            .collect();
        for k in &keys {
            objects.remove(k);
        }
        Ok(!keys.is_empty())
    }

    async fn prune(&self, _prefix: &str, _stop: &str) -> Result<(), StorageError> {
        // Prefixes exist only while keys do.
        Ok(())
    }

    async fn writer(&self, key: &str, offset: u64) -> Result<Box<dyn Writer>, StorageError> {
        let mut data = BytesMut::new();
        if let Some((old, _)) = self.objects.lock().get(key) {
            data.extend_from_slice(&old[..(offset as usize).min(old.len())]);
        }
        Ok(Box::new(MemWriter {
            objects: self.objects.clone(),
            key: key.into(),
            data,
        }))
    }

    async fn commit(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let mut objects = self.objects.lock();
        let object = objects
            .remove(from)
            .ok_or_else(|| StorageError::NotFound(from.into()))?;
        objects.entry(to.into()).or_insert(object);
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let mut objects = self.objects.lock();
        let object = objects
            .remove(from)
            .ok_or_else(|| StorageError::NotFound(from.into()))?;
        objects.insert(to.into(), object);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::contract;
    use super::*;

    #[tokio::test]
    async fn keeps_the_driver_contract() {
        contract::small_objects(&MemDriver::new()).await;
        contract::listing_and_prefix_deletes(&MemDriver::new()).await;
        contract::uploads(&MemDriver::new()).await;
        contract::temporary_objects(&MemDriver::new()).await;
        contract::renames(&MemDriver::new()).await;
        contract::walking(&MemDriver::new()).await;
    }
}
