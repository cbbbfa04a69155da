//! Garage clusters of a test's own: Garage 2.5 (built by `./ctl test` into
//! `$BERTH_TOOLS/bin/garage`, default `~/.cache/berth/tools`), one process
//! per node with its config, data, metadata and log in a temp dir, every
//! port on 127.0.0.1, stopped by PID when dropped. Each cluster has the
//! bucket `berth` and a key allowed to read, write and own it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::s3::{free_port, stop, S3Bucket};

const REGION: &str = "garage";
const BUCKET: &str = "berth";
const KEY_NAME: &str = "berth-key";

pub struct Garage {
    nodes: Vec<Node>,
    s3: S3Bucket,
    _dir: tempfile::TempDir,
}

/// One `garage server` process.
struct Node {
    bin: PathBuf,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// "127.0.0.1:PORT" of its S3 API.
    s3_addr: String,
}

impl Garage {
    /// One node (replication factor 1).
    pub fn start() -> Garage {
        Self::cluster(1)
    }

    /// `nodes` nodes connected to each other, each in a zone of its own
    /// (dc1..dcN), replication factor `nodes`: every object is on every node.
    pub fn cluster(nodes: usize) -> Garage {
        let bin = garage_bin();
        let dir = tempfile::Builder::new()
            .prefix("berth-garage")
            .tempdir()
            .expect("tempdir");
        let secret = hex::encode(rand::random::<[u8; 32]>());
        // Dropping a node stops it: also those started when a later step fails.
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| Node::start(&bin, &dir.path().join(format!("node{i}")), nodes, &secret))
            .collect();
        let first = &nodes[0];
        let ids: Vec<String> = nodes
            .iter()
            .map(|n| n.cli(&["node", "id", "-q"]).trim().to_string())
            .collect();
        for id in &ids[1..] {
            first.cli(&["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let node = id.split('@').next().unwrap();
            let zone = format!("dc{}", i + 1);
            first.cli(&["layout", "assign", "-z", &zone, "-c", "1G", node]);
        }
        first.cli(&["layout", "apply", "--version", "1"]);
        // Node 0 connected to every node; the others find each other in
        // the background. Until they have, a node may see no quorum.
        let all_up =
            |up: &str, failed: bool| !failed && ids.iter().all(|id| up.contains(&id[..16]));
        for node in &nodes {
            node.wait_status("all nodes up", all_up);
        }
        // The new layout reaches the other nodes in the background: the
        // first write to a table may find no quorum yet.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(out) = first.try_cli(&["bucket", "create", BUCKET]) {
            assert!(Instant::now() < deadline, "{out}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let key = first.cli(&["key", "create", KEY_NAME]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in `key create`:\n{key}"))
        };
        let (key_id, key_secret) = (field("Key ID:"), field("Secret key:"));
        first.allow(BUCKET);
        let endpoint = format!("http://{}", first.s3_addr);
        let s3 = S3Bucket::new(dir.path(), endpoint, REGION, BUCKET, key_id, key_secret);
        Garage {
            nodes,
            s3,
            _dir: dir,
        }
    }

    /// "http://127.0.0.1:PORT" of node 0's S3 API.
    pub fn endpoint(&self) -> String {
        self.s3.endpoint.clone()
    }

    /// The S3 API of every node, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.s3_addr))
            .collect()
    }

    pub fn region(&self) -> &str {
        &self.s3.region
    }

    pub fn bucket(&self) -> &str {
        &self.s3.bucket
    }

    pub fn key_id(&self) -> &str {
        &self.s3.key_id
    }

    pub fn secret(&self) -> &str {
        &self.s3.secret
    }

    /// The key in the AWS shared-credentials format (profile `default`).
    pub fn credentials_file(&self) -> PathBuf {
        self.s3.credentials_file()
    }

    /// The `[storage]` table of a berth instance on the bucket, under `prefix`.
    pub fn storage_toml(&self, prefix: &str) -> String {
        self.s3.storage_toml(prefix)
    }

    /// The `storage:` section of a `docker-registry` (Distribution 2.8)
    /// config on the bucket, its files under `rootdirectory` ("/r" puts
    /// them under the key prefix "r/"). The driver of 2.8 has no
    /// `forcepathstyle`: a `regionendpoint` makes it use path-style URLs.
    /// The registry must run without `AWS_CA_BUNDLE` in its environment.
    pub fn registry2_storage_yaml(&self, rootdirectory: &str) -> String {
        format!(
            "storage:\n  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    \
             regionendpoint: {}\n    bucket: {}\n    rootdirectory: {rootdirectory}\n    \
             secure: false\n    v4auth: true\n  delete:\n    enabled: true\n",
            self.s3.key_id, self.s3.secret, self.s3.region, self.s3.endpoint, self.s3.bucket
        )
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
        self.nodes[0].cli(&["bucket", "create", name]);
        self.nodes[0].allow(name);
    }

    /// Stops node `i` (SIGTERM, then SIGKILL after 10 s), waits for it,
    /// then waits until every other node counts it as down (some 8 s:
    /// until then a request to them may hang as long).
    pub fn stop_node(&mut self, i: usize) {
        let id = self.nodes[i].cli(&["node", "id", "-q"]);
        let short = &id[..16];
        self.nodes[i].stop();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            node.wait_status(&format!("{short} down"), |up, _| !up.contains(short));
        }
    }
}

impl Node {
    /// Starts a node in `dir` and waits until its RPC, S3 and admin
    /// listeners are up. Ports are free when chosen but may be taken before
    /// Garage binds them (a failed API bind leaves it running without
    /// that API): then the node is stopped and started on other ports.
    fn start(bin: &Path, dir: &Path, replication: usize, rpc_secret: &str) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        for _attempt in 0..5 {
            let [rpc, s3, admin] = [(); 3].map(|_| format!("127.0.0.1:{}", free_port()));
            let config = dir.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = {meta:?}\ndata_dir = {data:?}\ndb_engine = \"sqlite\"\n\
                     replication_factor = {replication}\nrpc_bind_addr = \"{rpc}\"\n\
                     rpc_public_addr = \"{rpc}\"\nrpc_secret = \"{rpc_secret}\"\n\
                     [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"{s3}\"\n\
                     [admin]\napi_bind_addr = \"{admin}\"\n",
                    meta = dir.join("meta").display().to_string(),
                    data = dir.join("data").display().to_string(),
                ),
            )
            .unwrap();
            let log = dir.join("garage.log");
            let out = File::create(&log).unwrap();
            let child = Command::new(bin)
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("spawn garage");
            let mut node = Node {
                bin: bin.to_path_buf(),
                child: Some(child),
                config,
                log,
                s3_addr: s3.clone(),
            };
            let ready = [
                format!("Listening on {rpc}"),
                format!("S3 API server listening on http://{s3}"),
                format!("Admin API server listening on http://{admin}"),
            ];
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                if log.contains("Address already in use") {
                    break;
                }
                let exited = node.child.as_mut().unwrap().try_wait().unwrap().is_some();
                if exited || Instant::now() > deadline {
                    panic!("garage did not start; its log ends:\n{}", node.log_tail());
                }
                if ready.iter().all(|l| log.contains(l))
                    && node.try_cli(&["node", "id", "-q"]).is_ok()
                {
                    return node;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(node);
            let _ = std::fs::remove_dir_all(dir.join("meta"));
            let _ = std::fs::remove_dir_all(dir.join("data"));
        }
        panic!("garage found no free ports");
    }

    /// Waits (bounded) until `ready(healthy, failed)` holds on the node's
    /// `garage status`: the text of its healthy nodes, and whether it
    /// lists failed ones.
    fn wait_status(&self, what: &str, ready: impl Fn(&str, bool) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.cli(&["status"]);
            let mut parts = status.split("==== FAILED NODES ====");
            let healthy = parts.next().unwrap();
            if ready(healthy, parts.next().is_some()) {
                return;
            }
            assert!(Instant::now() < deadline, "never {what}:\n{status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Allows the key on `bucket`.
    fn allow(&self, bucket: &str) {
        let args = ["bucket", "allow", "--read", "--write", "--owner", bucket];
        self.cli(&[&args[..], &["--key", KEY_NAME]].concat());
    }

    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out: Output = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run garage");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`garage {}` failed: {}\n{stdout}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("{e}\nnode log ends:\n{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$BERTH_TOOLS/bin/garage` (default `~/.cache/berth/tools`).
fn garage_bin() -> PathBuf {
    let bin = super::s3::tools_dir().join("bin/garage");
    assert!(
        bin.is_file(),
        "{} is missing: `./ctl test` builds it, or \
         `cargo install garage --locked --version 2.5.0 --root {}`",
        bin.display(),
        super::s3::tools_dir().display()
    );
    bin
}
