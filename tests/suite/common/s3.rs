//! What the S3 test servers (`garage`, `moto`) share: one bucket with its
//! endpoint and credentials, the AWS shared-credentials file (mode 0600)
//! and the `[storage]` table that point a berth instance at it, and signed
//! requests made with `curl --aws-sigv4` for tests to look into the bucket;
//! where their programs are, a free port, and stopping a server by PID.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// A bucket of an S3 server and a key allowed to read and write it.
pub struct S3Bucket {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    credentials_file: PathBuf,
}

impl S3Bucket {
    /// Writes `DIR/aws-credentials`, the key as the `[default]` profile.
    pub fn new(
        dir: &Path,
        endpoint: String,
        region: &str,
        bucket: &str,
        key_id: String,
        secret: String,
    ) -> S3Bucket {
        let credentials_file = dir.join("aws-credentials");
        berth_bench::garage::write_credentials_file(&credentials_file, &key_id, &secret)
            .unwrap_or_else(|e| panic!("{e:#}"));
        S3Bucket {
            endpoint,
            region: region.to_string(),
            bucket: bucket.to_string(),
            key_id,
            secret,
            credentials_file,
        }
    }

    pub fn credentials_file(&self) -> PathBuf {
        self.credentials_file.clone()
    }

    /// The `[storage]` table of a berth instance keeping its data in this
    /// bucket under `prefix`.
    pub fn storage_toml(&self, prefix: &str) -> String {
        format!(
            "[storage]\ndriver = \"s3\"\nbucket = {:?}\nendpoint = {:?}\nregion = {:?}\n\
             prefix = {prefix:?}\ncredentials_file = {:?}\n",
            self.bucket,
            self.endpoint,
            self.region,
            self.credentials_file.display().to_string(),
        )
    }

    /// `curl -sS` with the request to `url` signed by this bucket's key
    /// (payload unsigned). curl 7.88 signs the query as it is written: its
    /// parameters must come sorted by name and percent-encoded.
    pub fn curl(&self, url: &str) -> Command {
        let mut cmd = Command::new("curl");
        cmd.arg("-sS")
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.key_id, self.secret))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(url);
        cmd
    }

    /// Every object key under `prefix`, in the store's order
    /// (ListObjectsV2, page after page).
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let continuation = token
                .as_deref()
                .map(|t| format!("continuation-token={}&", uri_encode(t)))
                .unwrap_or_default();
            let url = format!(
                "{}/{}?{continuation}list-type=2&prefix={}",
                self.endpoint,
                self.bucket,
                uri_encode(prefix)
            );
            let out = self
                .curl(&url)
                .arg("--fail-with-body")
                .output()
                .expect("run curl");
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "ListObjectsV2 {url}: {}\n{body}",
                String::from_utf8_lossy(&out.stderr)
            );
            for contents in body.split("<Contents>").skip(1) {
                keys.push(unescape(element(contents, "Key").expect("a Key")));
            }
            if element(&body, "IsTruncated") != Some("true") {
                return keys;
            }
            let next = element(&body, "NextContinuationToken").expect("a continuation token");
            token = Some(unescape(next));
        }
    }
}

/// The text of the first `<name>` element in `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + len])
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Percent-encodes all but the unreserved characters, as SigV4 wants.
fn uri_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where `./ctl test` puts the tools it builds or installs outside the
/// system (see [`berth_bench::garage::tools_dir`]).
pub fn tools_dir() -> PathBuf {
    berth_bench::garage::tools_dir().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A port of 127.0.0.1 free when asked (a server must still retry when
/// another program takes it before the server binds it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// SIGTERM, then SIGKILL after 10 s; waits for the process to end.
pub fn stop(child: &mut Child) {
    berth_bench::stop(child, Duration::from_secs(10));
}
