//! Test harness: runs the real `berth` binary on 127.0.0.1 with a config
//! directory made for the test, and stops it by PID when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod garage;
pub mod moto;
pub mod postgres;
pub mod s3;

/// One instance of a test config.
pub struct Instance {
    pub name: String,
    pub hostnames: Vec<String>,
    pub users: Vec<(String, String)>,
    /// Extra TOML appended to the instance file.
    pub extra: String,
}

impl Instance {
    pub fn new(name: &str) -> Self {
        Instance {
            name: name.to_string(),
            hostnames: vec![format!("{name}.test")],
            users: vec![(format!("{name}-user"), format!("{name}-secret"))],
            extra: String::new(),
        }
    }

    /// A mirror instance: `[mirror]` with the keys `top` (such as
    /// `allow_push = true`), the `upstreams` (from
    /// [`ConfigDir::mirror_upstream`]), then the tables `tables` (such as
    /// `[mirror.cache]`).
    pub fn mirror(name: &str, top: &str, upstreams: &[String], tables: &str) -> Self {
        let mut inst = Instance::new(name);
        inst.extra = format!("[mirror]\n{top}{}{tables}", upstreams.concat());
        inst
    }

    /// Lifts the failed-login limit, for tests that fail logins on purpose
    /// many times (the limiter itself is tested in tests/access.rs).
    pub fn tolerating_failed_logins(mut self) -> Self {
        self.extra.push_str("\n[auth]\nmax_login_failures = 1000\n");
        self
    }

    /// Replaces the users with `users`, each with the password `USER-pw`.
    pub fn with_users(mut self, users: &[&str]) -> Self {
        self.users = users
            .iter()
            .map(|u| (u.to_string(), format!("{u}-pw")))
            .collect();
        self
    }

    pub fn user(&self) -> &str {
        &self.users[0].0
    }

    pub fn password(&self) -> &str {
        &self.users[0].1
    }
}

/// One `[[access.rule]]` table of an instance file.
pub fn access_rule(users: &[&str], repositories: &[&str], allow: &str) -> String {
    format!(
        "[[access.rule]]\nusers = {users:?}\nrepositories = {repositories:?}\nallow = {allow:?}\n"
    )
}

/// A config directory with `berth.toml`, `instances/*.toml` and htpasswd files.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// Every instance gets a dedicated listener on 127.0.0.1:0 and the server a
    /// shared listener on 127.0.0.1:0.
    pub fn new(instances: &[Instance]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("instances")).unwrap();
        std::fs::create_dir_all(root.join("credentials")).unwrap();
        std::fs::write(
            root.join("berth.toml"),
            "[listen]\nhttp = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let cfg = ConfigDir { dir };
        for inst in instances {
            cfg.add_instance(inst);
        }
        cfg
    }

    /// Writes an instance file (dedicated listener on 127.0.0.1:0) and its
    /// htpasswd file.
    pub fn add_instance(&self, inst: &Instance) {
        let root = self.path();
        let hostnames: Vec<String> = inst.hostnames.iter().map(|h| format!("{h:?}")).collect();
        let toml = format!(
            "hostnames = [{}]\nlisten = [\"127.0.0.1:0\"]\n{}\n",
            hostnames.join(", "),
            inst.extra
        );
        let mut htpasswd = String::new();
        for (user, password) in &inst.users {
            let hash = bcrypt::hash(password, 4).unwrap();
            htpasswd.push_str(&format!("{user}:{hash}\n"));
        }
        let credentials = root.join(format!("credentials/{}.htpasswd", inst.name));
        std::fs::write(credentials, htpasswd).unwrap();
        std::fs::write(root.join(format!("instances/{}.toml", inst.name)), toml).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// One `[[mirror.upstream]]` table of a mirror instance's file: the
    /// upstream `registry` at `url` under `prefix`; with `creds`
    /// (USER:PASSWORD) logging in as that user, from a credentials file
    /// (mode 0600) written here.
    pub fn mirror_upstream(
        &self,
        registry: &str,
        url: &str,
        prefix: &str,
        creds: Option<&str>,
    ) -> String {
        let mut toml = format!(
            "[[mirror.upstream]]\nregistry = {registry:?}\nurl = {url:?}\nprefix = {prefix:?}\n"
        );
        if let Some(creds) = creds {
            use std::os::unix::fs::PermissionsExt;
            let file = format!(
                "credentials/{registry}-{:08x}.upstream",
                rand::random::<u32>()
            );
            let path = self.path().join(&file);
            std::fs::write(&path, format!("{creds}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            toml.push_str(&format!("credentials_file = {file:?}\n"));
        }
        toml
    }

    /// Appends `text` to `berth.toml`.
    pub fn add_to_berth_toml(&self, text: &str) {
        let toml = self.path().join("berth.toml");
        let mut all = std::fs::read_to_string(&toml).unwrap();
        all.push_str(text);
        std::fs::write(&toml, all).unwrap();
    }

    /// The storage root of an instance (the default `data/NAME`).
    pub fn storage_root(&self, instance: &str) -> PathBuf {
        self.path().join("data").join(instance)
    }

    /// The `_manifests/tags` directory of `repo` in an instance.
    pub fn tags_dir(&self, instance: &str, repo: &str) -> PathBuf {
        self.storage_root(instance).join(format!(
            "docker/registry/v2/repositories/{repo}/_manifests/tags"
        ))
    }

    /// Makes tag `tag` of `repo` on `instance` look pushed `age` ago (the
    /// mtime of its `current/link`).
    pub fn age_tag(&self, instance: &str, repo: &str, tag: &str, age: std::time::Duration) {
        let link = self.tags_dir(instance, repo).join(tag).join("current/link");
        std::fs::File::options()
            .write(true)
            .open(&link)
            .unwrap_or_else(|e| panic!("{}: {e}", link.display()))
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    }

    /// Writes a new tag-list token for `repo`, as a berth process does
    /// after it creates or removes a tag name (see `storage::listing`).
    pub fn renew_tags_token(&self, instance: &str, repo: &str) {
        let token = self
            .storage_root(instance)
            .join(format!("berth/tags.changed/{repo}/_token"));
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        let value = format!("{:?}", std::time::SystemTime::now());
        std::fs::write(token, value).unwrap();
    }
}

/// A running `berth serve`.
pub struct Server {
    child: Child,
    /// Dedicated listener address of each instance: "127.0.0.1:PORT".
    pub instance_addrs: BTreeMap<String, String>,
    /// The shared Host-routed listener, if any.
    pub shared_addr: Option<String>,
    pub stderr_log: PathBuf,
    /// Every stdout line after `berth: ready` (listeners opened by reloads).
    later_stdout: Arc<Mutex<Vec<String>>>,
}

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

impl Server {
    /// Starts `berth serve --config-dir DIR` and waits until it says it is ready.
    pub fn start(config: &ConfigDir) -> Server {
        Self::start_in(config.path())
    }

    pub fn start_in(config_dir: &Path) -> Server {
        // One log per process, when several serve one config dir.
        let stderr_log = (1..)
            .map(|n| match n {
                1 => config_dir.join("berth.stderr.log"),
                n => config_dir.join(format!("berth.stderr.{n}.log")),
            })
            .find(|p| !p.exists())
            .expect("a free log name");
        let stderr = std::fs::File::create(&stderr_log).unwrap();
        let mut child = Command::new(berth_bin())
            .arg("serve")
            .arg("--config-dir")
            .arg(config_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn berth");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut instance_addrs = BTreeMap::new();
        let mut shared_addr = None;
        loop {
            let Some(Ok(line)) = lines.next() else {
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                let _ = child.kill();
                let _ = child.wait();
                panic!("berth exited before it was ready; stderr:\n{log}");
            };
            // "berth: NAME listening on http://ADDR" / "berth: ready"
            if line == "berth: ready" {
                break;
            }
            if let Some(rest) = line.strip_prefix("berth: ") {
                if let Some((who, url)) = rest.split_once(" listening on ") {
                    let addr = url.split_once("://").map_or(url, |(_, a)| a).to_string();
                    if who == "shared" {
                        shared_addr = Some(addr);
                    } else {
                        instance_addrs.insert(who.to_string(), addr);
                    }
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        let later_stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = later_stdout.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            instance_addrs,
            shared_addr,
            stderr_log,
            later_stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// "127.0.0.1:PORT" of an instance's dedicated listener.
    pub fn addr(&self, instance: &str) -> &str {
        &self.instance_addrs[instance]
    }

    /// "http://127.0.0.1:PORT" of an instance's dedicated listener.
    pub fn url(&self, instance: &str) -> String {
        format!("http://{}", self.addr(instance))
    }

    /// Resident set size of the server process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident set size of the server process in KiB (from /proc).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Sends a signal (e.g. "HUP") to the server.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits (bounded) for a reload to announce a listener of `label` and
    /// returns its "127.0.0.1:PORT".
    pub fn wait_for_listener(&self, label: &str) -> String {
        let prefix = format!("berth: {label} listening on ");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.later_stdout.lock().unwrap().iter().find_map(|l| {
                let url = l.strip_prefix(&prefix)?;
                Some(url.split_once("://").map_or(url, |(_, a)| a).to_string())
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no listener for {label}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the server's stderr contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never said {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the process to exit; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `berth SUBCOMMAND --config-dir DIR EXTRA...`, asserts that it
/// succeeded, and returns its stdout.
pub fn berth_ok(subcommand: &str, config_dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(berth_bin())
        .args([subcommand, "--config-dir"])
        .arg(config_dir)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "berth {subcommand}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Every path below `dir`, directories included, sorted.
pub fn paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// sha256 digest string of some bytes: "sha256:<hex>".
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
