//! Garage clusters of a test's own: the benchmark's launcher
//! ([`berth_bench::garage::Garage`]: one process per node in a temp dir,
//! stopped by PID when dropped, the bucket `berth` and a key on it) with
//! what the tests add (the key's credentials file, the `[storage]` table of
//! a berth instance, signed requests to look into the bucket). A cluster
//! that cannot start fails the test.

use std::path::PathBuf;
use std::process::Command;

use super::s3::S3Bucket;

pub struct Garage {
    garage: berth_bench::garage::Garage,
    s3: S3Bucket,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// One node (replication factor 1).
    pub fn start() -> Garage {
        Self::with_key_file(berth_bench::garage::Garage::start())
    }

    /// `nodes` nodes connected to each other, each in a zone of its own
    /// (dc1..dcN), replication factor `nodes`: every object is on every node.
    pub fn cluster(nodes: usize) -> Garage {
        Self::with_key_file(berth_bench::garage::Garage::cluster(nodes))
    }

    /// The started cluster, with its key's credentials file written.
    fn with_key_file(started: anyhow::Result<berth_bench::garage::Garage>) -> Garage {
        let garage = started.unwrap_or_else(|e| panic!("{e:#}"));
        let dir = tempfile::Builder::new()
            .prefix("berth-garage-key")
            .tempdir()
            .expect("tempdir");
        let s3 = S3Bucket::new(
            dir.path(),
            garage.endpoint(),
            garage.region(),
            garage.bucket(),
            garage.key_id().to_string(),
            garage.secret().to_string(),
        );
        Garage {
            garage,
            s3,
            _dir: dir,
        }
    }

    /// "http://127.0.0.1:PORT" of node 0's S3 API.
    pub fn endpoint(&self) -> String {
        self.garage.endpoint()
    }

    /// The S3 API of every node, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.garage.endpoints()
    }

    pub fn region(&self) -> &str {
        self.garage.region()
    }

    pub fn bucket(&self) -> &str {
        self.garage.bucket()
    }

    pub fn key_id(&self) -> &str {
        self.garage.key_id()
    }

    pub fn secret(&self) -> &str {
        self.garage.secret()
    }

    /// The key in the AWS shared-credentials format (profile `default`).
    pub fn credentials_file(&self) -> PathBuf {
        self.s3.credentials_file()
    }

    /// The `[storage]` table of a berth instance on the bucket, under `prefix`.
    pub fn storage_toml(&self, prefix: &str) -> String {
        self.s3.storage_toml(prefix)
    }

    /// The `storage:` section of a `docker-registry` config on the bucket
    /// (see [`berth_bench::garage::Garage::registry2_storage_yaml`]).
    pub fn registry2_storage_yaml(&self, rootdirectory: &str) -> String {
        self.garage.registry2_storage_yaml(rootdirectory)
    }

    /// Every object key of the bucket under `prefix`.
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.s3.list_keys(prefix)
    }

    /// A `curl` signed with the key, for `url` (see [`S3Bucket::curl`]).
    pub fn curl(&self, url: &str) -> Command {
        self.s3.curl(url)
    }

    /// Creates another bucket and allows the key on it.
    pub fn create_bucket(&self, name: &str) {
        self.garage
            .create_bucket(name)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Stops node `i` and waits until every other node counts it as down
    /// (see [`berth_bench::garage::Garage::stop_node`]).
    pub fn stop_node(&mut self, i: usize) {
        self.garage.stop_node(i).unwrap_or_else(|e| panic!("{e:#}"));
    }
}
