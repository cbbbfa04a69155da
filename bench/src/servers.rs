//! Starting berth and the reference registry (CNCF Distribution, Debian's
//! `docker-registry`) on 127.0.0.1, on a directory or a bucket, over plain
//! HTTP or TLS (berth's self-signed certificate on its shared https
//! listener; Caddy with `tls internal` in front of the reference, as it is
//! deployed), and stopping them by PID.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::http::{Body, Conn, Endpoint};

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ProcGuard {
    child: Child,
}

impl ProcGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// Stops a child: SIGTERM, then SIGKILL when it is still running after
/// `grace`; waits for it to end.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while let Ok(None) = child.try_wait() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.wait();
}

/// Makes the child get SIGTERM if the benchmark dies without its Drop guards
/// running (Ctrl-C, a kill).
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}

/// Where a server under test keeps its data.
pub enum Storage {
    /// A directory (the filesystem drivers), the one holding
    /// `docker/registry/v2`.
    Dir(PathBuf),
    /// A bucket: berth's `[storage]` table, or the `storage:` section of
    /// the reference's config.
    Bucket(String),
}

/// How clients reach a server under test.
#[derive(Clone, Copy, PartialEq)]
pub enum Wire {
    Plain,
    Tls,
}

/// The name the servers answer to over TLS (SNI and `Host`).
const TLS_NAME: &str = "bench.local";

/// One registry under test.
pub struct Server {
    /// "berth", "baseline" (another berth binary), "reference", or
    /// "mirror" (berth mirroring the reference).
    pub name: &'static str,
    pub addr: Endpoint,
    /// Storage root (the directory holding `docker/registry/v2`); `None`
    /// on a bucket.
    pub root: Option<PathBuf>,
    pub log: PathBuf,
    /// berth's admin listener (`/metrics`), when it has one.
    pub admin: Option<SocketAddr>,
    guard: ProcGuard,
    /// The TLS proxy in front of it (Caddy, for the reference over TLS).
    front: Option<ProcGuard>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// `<root>/docker/registry/v2`, on a directory.
    pub fn v2(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join("docker/registry/v2"))
    }

    /// Fails, with the tail of its log, when the server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.guard.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("{} exited ({status}); log tail:\n{tail}", self.name);
        }
        if let Some(front) = &mut self.front {
            if let Some(status) = front.child.try_wait()? {
                bail!("{}'s TLS proxy exited ({status})", self.name);
            }
        }
        Ok(())
    }
}

/// Whether berth serves an admin listener (`[listen] admin`).
#[derive(Clone, Copy, PartialEq)]
pub enum Admin {
    On,
    Off,
}

/// How berth is set up besides its storage and users.
#[derive(Clone, Copy)]
pub struct Setup<'a> {
    pub wire: Wire,
    pub admin: Admin,
    /// Appended to the instance's file.
    pub extra: &'a str,
}

impl Setup<'_> {
    /// Plain HTTP on a dedicated listener, nothing else.
    pub const PLAIN: Setup<'static> = Setup {
        wire: Wire::Plain,
        admin: Admin::Off,
        extra: "",
    };
}

/// Starts `berth serve` with one instance `bench`, its config and log in
/// `dir` under `name`: on a dedicated plain listener, or with its
/// self-signed certificate on the shared https listener; an admin listener
/// and more of the instance's file as `setup` says.
pub fn start_berth(
    name: &'static str,
    bin: &Path,
    dir: &Path,
    storage: Storage,
    htpasswd: &str,
    setup: Setup<'_>,
) -> Result<Server> {
    let cfg = dir.join(format!("{name}-config"));
    std::fs::create_dir_all(cfg.join("instances"))?;
    std::fs::create_dir_all(cfg.join("credentials"))?;
    let Setup { wire, admin, .. } = setup;
    let mut listen = String::new();
    if admin == Admin::On {
        listen.push_str("admin = \"127.0.0.1:0\"\n");
    }
    if wire == Wire::Tls {
        listen.push_str("https = \"127.0.0.1:0\"\n");
    }
    if !listen.is_empty() {
        std::fs::write(cfg.join("berth.toml"), format!("[listen]\n{listen}"))?;
    }
    std::fs::write(cfg.join("credentials/bench.htpasswd"), htpasswd)?;
    let (root, table) = match storage {
        Storage::Dir(root) => {
            let table = format!("[storage]\nroot = {:?}\n", root.display().to_string());
            (Some(root), table)
        }
        Storage::Bucket(table) => (None, table),
    };
    let (listen, tls, announced) = match wire {
        Wire::Plain => (
            "listen = [\"127.0.0.1:0\"]\n",
            "",
            "bench listening on http://",
        ),
        Wire::Tls => (
            "",
            "[tls]\nmode = \"self-signed\"\n",
            "shared-tls listening on https://",
        ),
    };
    std::fs::write(
        cfg.join("instances/bench.toml"),
        format!(
            "hostnames = [\"{TLS_NAME}\"]\n{listen}\n{table}\n{tls}[auth]\nmax_login_failures = 100000\n{extra}",
            extra = setup.extra,
        ),
    )?;
    let log = dir.join(format!("{name}.log"));
    let mut child = die_with_parent(&mut Command::new(bin))
        .arg("serve")
        .arg("--config-dir")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = ProcGuard { child };
    // Read the announcement lines in a thread so a silent server cannot hang us.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                // Keep draining so berth never blocks on a full pipe.
                continue;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut addr, mut admin_addr) = (None, None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| {
            anyhow!(
                "berth did not get ready; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        if line == "berth: ready" {
            break;
        }
        if let Some(url) = line
            .strip_prefix("berth: ")
            .and_then(|l| l.strip_prefix(announced))
        {
            addr = Some(url.trim().parse::<SocketAddr>()?);
        }
        if let Some(url) = line.strip_prefix("berth: admin listening on http://") {
            admin_addr = Some(url.trim().parse::<SocketAddr>()?);
        }
    }
    let addr = addr.ok_or_else(|| anyhow!("berth announced no listener for bench"))?;
    let addr = match wire {
        Wire::Plain => Endpoint::plain(addr),
        Wire::Tls => {
            let out = Command::new(bin)
                .arg("ca-path")
                .arg("--config-dir")
                .arg(&cfg)
                .output()?;
            ensure!(out.status.success(), "berth ca-path failed");
            let ca = PathBuf::from(String::from_utf8(out.stdout)?.trim());
            let pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
            Endpoint::https(addr, TLS_NAME, &pem)?
        }
    };
    if admin == Admin::On && admin_addr.is_none() {
        bail!("berth announced no admin listener");
    }
    Ok(Server {
        name,
        addr,
        root,
        log,
        admin: admin_addr,
        guard,
        front: None,
    })
}

/// A port of 127.0.0.1 free when asked (a server must still retry when
/// another program takes it before the server binds it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Starts `docker-registry serve config.yml` (Distribution 2.8) with htpasswd
/// auth, its config and logs in `dir`: on a directory with the filesystem
/// driver (deletes enabled), or on a bucket with the `storage:` section
/// given. Either way upload purging is turned off, at the end of that
/// section. Over TLS, Caddy is started in front of it ([`start_caddy`]).
pub async fn start_reference(
    bin: &Path,
    dir: &Path,
    storage: Storage,
    htpasswd: &Path,
    wire: Wire,
) -> Result<Server> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let config = dir.join("reference.yml");
    let (root, section) = match storage {
        Storage::Dir(root) => {
            let section = format!(
                "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
                root.display()
            );
            (Some(root), section)
        }
        Storage::Bucket(section) => (None, section),
    };
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             {section}  maintenance:\n    uploadpurging:\n      enabled: false\n\
             auth:\n  htpasswd:\n    realm: bench\n    path: {htpasswd}\n\
             http:\n  addr: {addr}\n  secret: berth-bench-secret\n\
             health:\n  storagedriver:\n    enabled: false\n",
            htpasswd = htpasswd.display(),
        ),
    )?;
    let log = dir.join("reference.log");
    // With `AWS_CA_BUNDLE` set, its S3 driver does not start
    // ("LoadCustomCABundleError").
    let child = die_with_parent(&mut Command::new(bin))
        .arg("serve")
        .arg(&config)
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("reference.stdout.log"))?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = Server {
        name: "reference",
        addr: Endpoint::plain(addr),
        root,
        log,
        admin: None,
        guard: ProcGuard { child },
        front: None,
    };
    wait_for_challenge(&mut server).await?;
    if wire == Wire::Tls {
        let (front, endpoint) = start_caddy(dir, addr)?;
        server.front = Some(front);
        server.addr = endpoint;
        wait_for_challenge(&mut server).await?;
    }
    Ok(server)
}

/// Waits until `server` answers `GET /v2/` with its `401` challenge.
async fn wait_for_challenge(server: &mut Server) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.check_alive()?;
        let mut c = Conn::new(&server.addr, "Basic Og==");
        if let Ok(r) = c.send("GET", "/v2/", &[], Body::Empty, false).await {
            if r.status == 401 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{} did not answer on {}", server.name, server.addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Debian's Caddy.
pub const CADDY: &str = "/usr/bin/caddy";

/// Starts Caddy (`tls internal`, `reverse_proxy`) in front of `upstream`,
/// its files in `dir/caddy`, as the setups berth replaces run it; returns
/// it with the endpoint that trusts its local CA.
fn start_caddy(dir: &Path, upstream: SocketAddr) -> Result<(ProcGuard, Endpoint)> {
    ensure!(
        Path::new(CADDY).is_file(),
        "the workloads over TLS need Caddy (apt-get install caddy)"
    );
    let home = dir.join("caddy");
    std::fs::create_dir_all(&home)?;
    let data = home.join("data");
    let port = free_port()?;
    let caddyfile = home.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tskip_install_trust\n\
             \tauto_https disable_redirects\n\thttp_port {http}\n\
             \tstorage file_system {data}\n}}\n\
             https://{TLS_NAME}:{port} {{\n\tbind 127.0.0.1\n\ttls internal\n\
             \treverse_proxy {upstream}\n}}\n",
            http = free_port()?,
            data = data.display(),
        ),
    )?;
    let log = dir.join("caddy.log");
    let child = die_with_parent(&mut Command::new(CADDY))
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {CADDY}"))?;
    let mut guard = ProcGuard { child };
    let root = data.join("pki/authorities/local/root.crt");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !root.is_file() {
        if let Some(status) = guard.child.try_wait()? {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("caddy exited ({status}):\n{log}");
        }
        ensure!(Instant::now() < deadline, "caddy made no CA in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr = format!("127.0.0.1:{port}").parse()?;
    let endpoint = Endpoint::https(addr, TLS_NAME, &std::fs::read(&root)?)?;
    Ok((guard, endpoint))
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    proc_file_kib(&format!("/proc/{pid}/status"), field)
}

/// The number after `field` in a `/proc` file of `FIELD: N kB` lines (0 when
/// there is none).
pub fn proc_file_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples VmRSS of a process every few milliseconds until stopped; the
/// maximum seen is returned by `stop`.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = proc_status_kib(pid, "VmRSS:");
            // Bounded: at most ten minutes of sampling.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                max = max.max(proc_status_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(5));
            }
            max.max(proc_status_kib(pid, "VmRSS:"))
        });
        RssSampler { stop, handle }
    }

    /// Peak VmRSS in KiB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}
