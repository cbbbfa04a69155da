//! Garage clusters of our own, for the benchmark's S3 workloads and for the
//! test suite (tests/suite/common/garage.rs wraps this): Garage 2.5 (built
//! by `./ctl test` into `$BERTH_TOOLS/bin/garage`, default
//! `~/.cache/berth/tools`), one process per node with its config, data,
//! metadata and log in a temp dir, every port on 127.0.0.1, stopped by PID
//! when dropped. Each cluster has the bucket `berth` and a key allowed to
//! read, write and own it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::servers::{free_port, stop};

const REGION: &str = "garage";
const BUCKET: &str = "berth";
const KEY_NAME: &str = "berth-key";
/// How long a node is given to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Garage {
    nodes: Vec<Node>,
    endpoint: String,
    key_id: String,
    secret: String,
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
    /// One node (replication factor 1), in the system's temp dir.
    pub fn start() -> Result<Garage> {
        Self::cluster(1)
    }

    /// One node, its files in a temp dir under `parent`.
    pub fn start_in(parent: &Path) -> Result<Garage> {
        Self::cluster_in(parent, 1)
    }

    /// `nodes` nodes connected to each other, each in a zone of its own
    /// (dc1..dcN), replication factor `nodes`: every object is on every node.
    pub fn cluster(nodes: usize) -> Result<Garage> {
        Self::cluster_in(&std::env::temp_dir(), nodes)
    }

    fn cluster_in(parent: &Path, nodes: usize) -> Result<Garage> {
        let bin = garage_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-garage")
            .tempdir_in(parent)
            .with_context(|| format!("temp dir in {}", parent.display()))?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        // Dropping a node stops it: also those started when a later step fails.
        let nodes = (0..nodes)
            .map(|i| Node::start(&bin, &dir.path().join(format!("node{i}")), nodes, &secret))
            .collect::<Result<Vec<Node>>>()?;
        let first = &nodes[0];
        let ids = nodes
            .iter()
            .map(|n| Ok(n.cli(&["node", "id", "-q"])?.trim().to_string()))
            .collect::<Result<Vec<String>>>()?;
        for id in &ids[1..] {
            first.cli(&["node", "connect", id])?;
        }
        for (i, id) in ids.iter().enumerate() {
            let node = id.split('@').next().unwrap_or(id);
            let zone = format!("dc{}", i + 1);
            first.cli(&["layout", "assign", "-z", &zone, "-c", "1G", node])?;
        }
        first.cli(&["layout", "apply", "--version", "1"])?;
        // Node 0 connected to every node; the others find each other in
        // the background. Until they have, a node may see no quorum.
        let all_up =
            |up: &str, failed: bool| !failed && ids.iter().all(|id| up.contains(&id[..16]));
        for node in &nodes {
            node.wait_status("all nodes up", all_up)?;
        }
        // The new layout reaches the other nodes in the background: the
        // first write to a table may find no quorum yet.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(out) = first.try_cli(&["bucket", "create", BUCKET]) {
            ensure!(Instant::now() < deadline, "{out}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let key = first.cli(&["key", "create", KEY_NAME])?;
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .with_context(|| format!("no {name} in `key create`:\n{key}"))
        };
        let (key_id, key_secret) = (field("Key ID:")?, field("Secret key:")?);
        first.allow(BUCKET)?;
        let endpoint = format!("http://{}", first.s3_addr);
        Ok(Garage {
            nodes,
            endpoint,
            key_id,
            secret: key_secret,
            _dir: dir,
        })
    }

    /// "http://127.0.0.1:PORT" of node 0's S3 API.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The S3 API of every node, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.s3_addr))
            .collect()
    }

    pub fn region(&self) -> &str {
        REGION
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn secret(&self) -> &str {
        &self.secret
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
            self.key_id,
            self.secret,
            self.region(),
            self.endpoint,
            self.bucket()
        )
    }

    /// Creates another bucket and allows the key on it.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        self.nodes[0].cli(&["bucket", "create", name])?;
        self.nodes[0].allow(name)
    }

    /// Stops node `i` (SIGTERM, then SIGKILL after 10 s), waits for it,
    /// then waits until every other node counts it as down (some 8 s:
    /// until then a request to them may hang as long).
    pub fn stop_node(&mut self, i: usize) -> Result<()> {
        let id = self.nodes[i].cli(&["node", "id", "-q"])?;
        let short = &id[..16];
        self.nodes[i].stop();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            node.wait_status(&format!("{short} down"), |up, _| !up.contains(short))?;
        }
        Ok(())
    }
}

impl Node {
    /// Starts a node in `dir` and waits until its RPC, S3 and admin
    /// listeners are up. Ports are free when chosen but may be taken before
    /// Garage binds them (a failed API bind leaves it running without
    /// that API): then the node is stopped and started on other ports.
    fn start(bin: &Path, dir: &Path, replication: usize, rpc_secret: &str) -> Result<Node> {
        std::fs::create_dir_all(dir)?;
        for _attempt in 0..5 {
            let [rpc, s3, admin] =
                [free_port()?, free_port()?, free_port()?].map(|port| format!("127.0.0.1:{port}"));
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
            )?;
            let log = dir.join("garage.log");
            let out = File::create(&log)?;
            let child = Command::new(bin)
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
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
                let exited = match node.child.as_mut() {
                    Some(child) => child.try_wait()?.is_some(),
                    None => true,
                };
                if exited || Instant::now() > deadline {
                    bail!("garage did not start; its log ends:\n{}", node.log_tail());
                }
                if ready.iter().all(|l| log.contains(l))
                    && node.try_cli(&["node", "id", "-q"]).is_ok()
                {
                    return Ok(node);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(node);
            let _ = std::fs::remove_dir_all(dir.join("meta"));
            let _ = std::fs::remove_dir_all(dir.join("data"));
        }
        bail!("garage found no free ports")
    }

    /// Waits (bounded) until `ready(healthy, failed)` holds on the node's
    /// `garage status`: the text of its healthy nodes, and whether it
    /// lists failed ones.
    fn wait_status(&self, what: &str, ready: impl Fn(&str, bool) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.cli(&["status"])?;
            let mut parts = status.split("==== FAILED NODES ====");
            let healthy = parts.next().unwrap_or_default();
            if ready(healthy, parts.next().is_some()) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "never {what}:\n{status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Allows the key on `bucket`.
    fn allow(&self, bucket: &str) -> Result<()> {
        let args = ["bucket", "allow", "--read", "--write", "--owner", bucket];
        self.cli(&[&args[..], &["--key", KEY_NAME]].concat())
            .map(drop)
    }

    /// Runs `garage ARGS` against this node: its standard output, or the
    /// failure with both outputs.
    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out: Output = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
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

    /// [`Node::try_cli`], a failure with the tail of the node's log.
    fn cli(&self, args: &[&str]) -> Result<String> {
        self.try_cli(args)
            .map_err(|e| anyhow!("{e}\nnode log ends:\n{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, STOP_GRACE);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$BERTH_TOOLS/bin/garage` (default `~/.cache/berth/tools`), or why it
/// is not there.
pub fn garage_bin() -> Result<PathBuf> {
    let bin = tools_dir()?.join("bin/garage");
    ensure!(
        bin.is_file(),
        "{} is missing: `./ctl test` builds it, or \
         `cargo install garage --locked --version 2.5.0 --root {}`",
        bin.display(),
        tools_dir()?.display()
    );
    Ok(bin)
}

/// Where `./ctl test` puts the tools it builds or installs outside the
/// system: `$BERTH_TOOLS`, default `~/.cache/berth/tools`.
pub fn tools_dir() -> Result<PathBuf> {
    match std::env::var_os("BERTH_TOOLS") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            Ok(Path::new(&home).join(".cache/berth/tools"))
        }
    }
}

/// Writes `path` (new, mode 0600): the key as the `[default]` profile of an
/// AWS shared-credentials file, which berth's `credentials_file` reads.
pub fn write_credentials_file(path: &Path, key_id: &str, secret: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    write!(
        file,
        "[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    )?;
    Ok(())
}
