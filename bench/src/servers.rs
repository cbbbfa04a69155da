//! Starting berth and the reference registry (CNCF Distribution, Debian's
//! `docker-registry`) on 127.0.0.1, on a directory or a bucket, and
//! stopping them by PID.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::http::{Body, Conn};

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

/// One registry under test.
pub struct Server {
    /// "berth", "baseline" (another berth binary), "reference", or
    /// "mirror" (berth mirroring the reference).
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Storage root (the directory holding `docker/registry/v2`); `None`
    /// on a bucket.
    pub root: Option<PathBuf>,
    pub log: PathBuf,
    guard: ProcGuard,
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
        Ok(())
    }
}

/// Starts `berth serve` with one instance `bench` on a dedicated listener
/// (`extra` appended to its file), its config and log in `dir` under
/// `name`.
pub fn start_berth(
    name: &'static str,
    bin: &Path,
    dir: &Path,
    storage: Storage,
    htpasswd: &str,
    extra: &str,
) -> Result<Server> {
    let cfg = dir.join(format!("{name}-config"));
    std::fs::create_dir_all(cfg.join("instances"))?;
    std::fs::create_dir_all(cfg.join("credentials"))?;
    std::fs::write(cfg.join("credentials/bench.htpasswd"), htpasswd)?;
    let (root, table) = match storage {
        Storage::Dir(root) => {
            let table = format!("[storage]\nroot = {:?}\n", root.display().to_string());
            (Some(root), table)
        }
        Storage::Bucket(table) => (None, table),
    };
    std::fs::write(
        cfg.join("instances/bench.toml"),
        format!(
            "hostnames = [\"bench.local\"]\nlisten = [\"127.0.0.1:0\"]\n\n{table}\n[auth]\nmax_login_failures = 100000\n{extra}"
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
    let mut addr = None;
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
        if let Some(url) = line.strip_prefix("berth: bench listening on http://") {
            addr = Some(url.trim().parse::<SocketAddr>()?);
        }
    }
    let addr = addr.ok_or_else(|| anyhow!("berth announced no listener for bench"))?;
    Ok(Server {
        name,
        addr,
        root,
        log,
        guard,
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
/// section.
pub async fn start_reference(
    bin: &Path,
    dir: &Path,
    storage: Storage,
    htpasswd: &Path,
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
        addr,
        root,
        log,
        guard: ProcGuard { child },
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.check_alive()?;
        let mut c = Conn::new(addr, "Basic Og==");
        if let Ok(r) = c.send("GET", "/v2/", &[], Body::Empty, false).await {
            if r.status == 401 {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("docker-registry did not answer on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(server)
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
