//! A moto S3 server of a test's own (PyPI `moto[server]`, which `./ctl
//! test` installs): a second S3 dialect beside Garage, in memory, on a free
//! 127.0.0.1 port, with the bucket `berth`, stopped by PID when dropped.
//! moto takes any key: the one here is made up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::s3::{free_port, stop, S3Bucket};

pub struct Moto {
    child: Child,
    s3: S3Bucket,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server` and creates the bucket `berth`. The port is
    /// free when chosen, but another program may take it first: then
    /// another one is tried.
    pub fn start() -> Moto {
        let bin = moto_bin();
        let dir = tempfile::Builder::new()
            .prefix("berth-moto")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("moto.log");
        for _attempt in 0..5 {
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("spawn moto_server");
            let endpoint = format!("http://127.0.0.1:{port}");
            match wait_ready(&mut child, &endpoint, &log) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    stop(&mut child);
                    panic!("{e}");
                }
            }
            let (id, secret) = ("AKIDBERTHTEST".to_string(), "berth-moto-secret".to_string());
            let s3 = S3Bucket::new(dir.path(), endpoint, "us-east-1", "berth", id, secret);
            let moto = Moto {
                child,
                s3,
                _dir: dir,
            };
            let url = format!("{}/{}", moto.endpoint(), moto.bucket());
            let mut put = moto.curl(&url);
            let put = put
                .args(["-X", "PUT", "--fail-with-body"])
                .output()
                .unwrap();
            assert!(put.status.success(), "PUT {url}: {put:?}");
            return moto;
        }
        panic!("moto_server found no free port");
    }

    /// "http://127.0.0.1:PORT"
    pub fn endpoint(&self) -> String {
        self.s3.endpoint.clone()
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

    /// Every object key of the bucket under `prefix`.
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.s3.list_keys(prefix)
    }

    /// A `curl` signed with the key, for `url` (see [`S3Bucket::curl`]).
    pub fn curl(&self, url: &str) -> Command {
        self.s3.curl(url)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Waits until the server at `endpoint` answers as moto does (an empty
/// bucket list): Ok(false) when it exited because the port was taken.
fn wait_ready(child: &mut Child, endpoint: &str, log: &Path) -> Result<bool, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Address already in use") {
                return Ok(false);
            }
            return Err(format!("moto_server exited; its log:\n{text}"));
        }
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("moto_server did not answer; its log:\n{text}"));
        }
        let out = Command::new("curl").args(["-sS", endpoint]).output();
        let out = out.expect("run curl");
        if String::from_utf8_lossy(&out.stdout).contains("<ListAllMyBucketsResult") {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `moto_server` on PATH, else in the venv `./ctl test` makes under
/// `$BERTH_TOOLS`.
fn moto_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let venv = super::s3::tools_dir().join("venv/bin");
    std::env::split_paths(&path)
        .chain([venv.clone()])
        .map(|dir| dir.join("moto_server"))
        .find(|bin| bin.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server is not on PATH nor in {}: `./ctl test` installs it \
                 (PyPI `moto[server]`)",
                venv.display()
            )
        })
}
