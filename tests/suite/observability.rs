//! The admin listener: a real Prometheus scrapes `/metrics` while skopeo
//! pushes, and a PromQL query through its HTTP API finds the bytes the
//! instance received; `/readyz` is `503` naming the instance whose storage
//! is full and `200` again once there is room; `[admin] htpasswd` guards it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{make_image, skopeo_push};
use crate::common::s3::{free_port, stop};
use crate::common::{ConfigDir, Instance, Server};
use crate::full_disk::{is_root, Tmpfs};

/// A config whose `berth.toml` adds an admin listener (and `extra`).
fn with_admin(instances: &[Instance], extra: &str) -> ConfigDir {
    let cfg = ConfigDir::new(instances);
    std::fs::write(
        cfg.path().join("berth.toml"),
        format!("[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{extra}"),
    )
    .unwrap();
    cfg
}

fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Prometheus scraping `target` every second, stopped by PID when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: berth\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus (Debian package prometheus)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of an instant PromQL query, once it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
        );
        let (code, body) = get(&url);
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_bytes_an_instance_received() {
    let ci = Instance::new("ci");
    let creds = format!("{}:{}", ci.user(), ci.password());
    let cfg = with_admin(&[ci], "");
    let server = Server::start(&cfg);
    let admin = server.addr("admin").to_string();
    let prometheus = Prometheus::start(&admin);

    let image = make_image("v1");
    // What the push sends: the manifest, its config and its layers.
    let manifest = image.blob_json(&image.digest("v1"));
    let layers: u64 = image.descriptor("v1")["size"].as_u64().unwrap()
        + std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().unwrap())
            .map(|d| d["size"].as_u64().unwrap())
            .sum::<u64>();
    skopeo_push(
        &image.reference("v1"),
        &format!("docker://{}/app:v1", server.addr("ci")),
        &creds,
        &[],
    );
    let query = "berth_http_received_bytes_total{registry=\"ci\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    let received = loop {
        match prometheus.value(query) {
            Some(v) if v >= layers as f64 => break v,
            _ if Instant::now() > deadline => panic!(
                "Prometheus never had {query} ≥ {layers} (it has {:?}); berth says:\n{}",
                prometheus.value(query),
                get(&format!("http://{admin}/metrics")).1
            ),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    eprintln!("Prometheus: {query} = {received} (the image's blobs: {layers} bytes)");
    let (code, text) = get(&format!("http://{admin}/metrics"));
    assert_eq!(code, 200);
    for needle in [
        "berth_http_requests_total{registry=\"ci\",method=\"PUT\",route=\"manifest\",status=\"201\"} 1",
        "berth_http_request_duration_seconds_bucket{",
        "berth_open_connections ",
        "berth_process_resident_memory_bytes ",
        "berth_login_failures_total{registry=\"ci\"} 0",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    assert_eq!(
        get(&format!("http://{admin}/healthz")),
        (200, "ok\n".into())
    );
    assert_eq!(get(&format!("http://{admin}/readyz")).0, 200);
    drop(prometheus);
    server.stop();
}

/// Fills the filesystem of `dir` with one file; returns it.
fn fill(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", file.display()))
        .stderr(Stdio::null())
        .status();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_full_disk_and_the_listener_takes_credentials() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mut ci = Instance::new("ci");
    let cfg_probe = tempfile::tempdir().unwrap();
    let disk = cfg_probe.path().join("disk");
    let _tmpfs = Tmpfs::mount(&disk, "8m");
    ci.extra = format!("[storage]\nroot = {:?}\n", disk.display().to_string());
    let cache = Instance::new("cache");
    let cfg = with_admin(
        &[ci, cache],
        "[admin]\nhtpasswd = \"credentials/cache.htpasswd\"\n",
    );
    let server = Server::start(&cfg);
    let admin = server.addr("admin").to_string();
    let (user, password) = ("cache-user", "cache-secret");
    let authed = |path: &str| get(&format!("http://{user}:{password}@{admin}{path}"));
    assert_eq!(get(&format!("http://{admin}/metrics")).0, 401);
    assert_eq!(get(&format!("http://{user}:wrong@{admin}/readyz")).0, 401);
    assert_eq!(authed("/readyz").0, 200);

    let filler = fill(&disk);
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (code, body) = authed("/readyz");
        if code == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with a full disk: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        body.contains("ci: not ready: ") && body.contains("cache: ready"),
        "{body}"
    );
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while authed("/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after the disk had room"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    server.stop();
}

/// The value of the series `series` (name and labels, as written) in a
/// scrape, if it is there.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The end of the certificate served for SNI `name` on `port`, in Unix
/// seconds (openssl's `notAfter=` read by GNU date).
fn served_end(name: &str, port: u16) -> Option<i64> {
    let end = crate::tls::served(name, port, &["-enddate"]);
    let end = end.trim().strip_prefix("notAfter=")?;
    let out = Command::new("date")
        .args(["-u", "-d", end, "+%s"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Upload sessions are counted while open; the end of each certificate
/// served (from files, self-signed) is a gauge that follows a renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_uploads_and_show_when_certificates_end() {
    use crate::tls::{eventually, openssl_ca, openssl_leaf, port_of, tls_instance};
    let certs = tempfile::tempdir().unwrap();
    let (crt, key) = (certs.path().join("f.crt"), certs.path().join("f.key"));
    openssl_leaf(
        &openssl_ca(certs.path(), "files-ca"),
        &["files.test"],
        &crt,
        &key,
    );
    let files = tls_instance(
        "files",
        &format!("mode = \"files\"\ncert = {crt:?}\nkey = {key:?}"),
    );
    let short = tls_instance("short", "mode = \"self-signed\"\nlifetime = \"6s\"");
    let cfg = with_admin(&[Instance::new("ci"), files, short], "");
    let server = Server::start(&cfg);
    let admin = server.addr("admin").to_string();
    let scrape = || get(&format!("http://{admin}/metrics")).1;

    let reg = crate::common_api::Reg::for_instance(&server, "ci");
    let uploads = "berth_uploads_in_progress{registry=\"ci\"}";
    assert_eq!(metric(&scrape(), uploads), Some(0.0));
    let session = crate::common_api::open_session(&reg, "app").await;
    assert_eq!(metric(&scrape(), uploads), Some(1.0));
    let resp = reg.delete(&session).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(metric(&scrape(), uploads), Some(0.0));

    let expiry =
        |name: &str| format!("berth_certificate_expiry_timestamp_seconds{{registry=\"{name}\"}}");
    let files_end = served_end("files.test", port_of(server.addr("files"))).unwrap();
    assert_eq!(metric(&scrape(), &expiry("files")), Some(files_end as f64));
    assert!(metric(&scrape(), &expiry("ci")).is_none());
    assert!(!scrape().contains("berth_acme_order_failures_total"));

    let port = port_of(server.addr("short"));
    let first = eventually("the self-signed end", Duration::from_secs(10), || {
        let end = served_end("short.test", port)?;
        (metric(&scrape(), &expiry("short")) == Some(end as f64)).then_some(end)
    });
    // Renewed with 2 s left: the gauge moves to the new certificate's end.
    eventually("the renewed end", Duration::from_secs(20), || {
        let end = served_end("short.test", port)?;
        (end > first && metric(&scrape(), &expiry("short")) == Some(end as f64)).then_some(())
    });
    server.stop();
}

/// An instance with an ACME certificate is not ready while its ACME server
/// is down (the body says why, failed orders are counted), and ready once
/// pebble, started later, has issued its certificate; its end is a gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_acme_certificate() {
    use crate::tls::{eventually, free_port, tls_instance, Pebble};
    let (tls_port, http_port) = (free_port(), free_port());
    let mut pebble = Pebble::prepare(tls_port, http_port);
    let acme = tls_instance("acme", &pebble.tls_block("tls-alpn-01"));
    let cfg = with_admin(&[Instance::new("ci"), acme], "");
    std::fs::write(
        cfg.path().join("berth.toml"),
        format!(
            "[listen]\nhttps = \"127.0.0.1:{tls_port}\"\nhttp = \"127.0.0.1:{http_port}\"\n\
             admin = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&cfg);
    let admin = server.addr("admin").to_string();
    let failures = "berth_acme_order_failures_total{registry=\"acme\"}";
    let body = eventually("a failed order", Duration::from_secs(20), || {
        // The count first: the readiness read after it has the error.
        let failed = metric(&get(&format!("http://{admin}/metrics")).1, failures)?;
        let (code, body) = get(&format!("http://{admin}/readyz"));
        (code == 503 && failed >= 1.0).then_some(body)
    });
    assert!(
        body.contains("acme: not ready: no certificate yet: ACME: order: ")
            && body.contains("ci: ready"),
        "{body}"
    );

    pebble.run();
    eventually("ready with a certificate", Duration::from_secs(90), || {
        (get(&format!("http://{admin}/readyz")) == (200, "acme: ready\nci: ready\n".into()))
            .then_some(())
    });
    let end = served_end("acme.test", tls_port).expect("a certificate served");
    let text = get(&format!("http://{admin}/metrics")).1;
    assert_eq!(
        metric(
            &text,
            "berth_certificate_expiry_timestamp_seconds{registry=\"acme\"}"
        ),
        Some(end as f64),
        "{text}"
    );
    assert!(metric(&text, failures).unwrap() >= 1.0);
    server.stop();
    drop(pebble);
}
