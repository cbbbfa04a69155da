//! TLS end to end: one https port, a certificate per instance chosen by SNI,
//! from berth's local CA, from PEM files (re-read on change) and from a real
//! ACME server (Debian's pebble, validating TLS-ALPN-01 and HTTP-01), checked
//! with curl and openssl as clients.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::garage::Garage;
use crate::common::{ConfigDir, Instance, Server};

fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/bin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} is not installed; `./ctl test` installs it (Debian package pebble / openssl / curl)");
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port nothing listens on now, for servers that must be told their port
/// in advance (pebble validates on fixed ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `curl` over TLS to `name` (resolved to 127.0.0.1) trusting `ca`: the
/// status and response headers, or None when no TLS connection came up.
pub fn https(
    name: &str,
    port: u16,
    ca: &Path,
    path: &str,
    extra: &[&str],
) -> Option<(u16, String)> {
    let out = Command::new(tool("curl"))
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = headers.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, headers.to_ascii_lowercase()))
}

/// `openssl s_client` to 127.0.0.1:`port` with SNI `name`.
fn s_client(name: &str, port: u16) -> Command {
    let mut c = Command::new(tool("openssl"));
    c.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        name,
    ]);
    c
}

/// Subject and issuer of the certificate served for SNI `name`.
fn served_cert(name: &str, port: u16) -> String {
    served(
        name,
        port,
        &["-subject", "-issuer", "-ext", "subjectAltName"],
    )
}

/// What `openssl x509 -noout FIELDS` prints of the certificate served for
/// SNI `name`.
pub fn served(name: &str, port: u16, fields: &[&str]) -> String {
    let mut s_client = s_client(name, port)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pem = s_client.stdout.take().unwrap();
    let out = Command::new(tool("openssl"))
        .args(["x509", "-noout"])
        .args(fields)
        .stdin(pem)
        .output()
        .unwrap();
    let _ = s_client.wait();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn tls_instance(name: &str, tls: &str) -> Instance {
    let mut inst = Instance::new(name);
    inst.extra = format!("[tls]\n{tls}\n");
    inst
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The shared https and http ports of a running server.
fn shared_ports(server: &Server) -> (u16, u16) {
    (
        port_of(server.addr("shared-tls")),
        port_of(server.shared_addr.as_deref().unwrap()),
    )
}

fn write_berth_toml(cfg: &ConfigDir, https: &str, http: &str) {
    std::fs::write(
        cfg.path().join("berth.toml"),
        format!("[listen]\nhttps = \"{https}\"\nhttp = \"{http}\"\n"),
    )
    .unwrap();
}

/// Instances `ci` and `cache`, self-signed, on shared http and https
/// listeners.
/// The cipher suite `openssl s_client ARGS` agrees on with the server.
fn negotiated_cipher(name: &str, port: u16, args: &[&str]) -> String {
    let out = s_client(name, port)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.split("Cipher is ").nth(1))
        .unwrap_or_else(|| panic!("no cipher in:\n{text}"))
        .trim()
        .to_string()
}

/// The server picks AES-128-GCM (Go's order, as docker and Caddy) even
/// from a client that lists AES-256-GCM first, over TLS 1.3 and 1.2.
#[test]
fn the_server_orders_the_cipher_suites() {
    let (_cfg, server) = two_self_signed_on_shared_listeners();
    let (port, _) = shared_ports(&server);
    let tls13 = negotiated_cipher(
        "ci.test",
        port,
        &[
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
        ],
    );
    assert_eq!(tls13, "TLS_AES_128_GCM_SHA256");
    let tls12 = negotiated_cipher(
        "ci.test",
        port,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
             ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
        ],
    );
    assert!(tls12.contains("AES128-GCM"), "{tls12}");
    server.stop();
}

fn two_self_signed_on_shared_listeners() -> (ConfigDir, Server) {
    let cfg = ConfigDir::new(&[
        tls_instance("ci", "mode = \"self-signed\""),
        tls_instance("cache", "mode = \"self-signed\""),
    ]);
    write_berth_toml(&cfg, "127.0.0.1:0", "127.0.0.1:0");
    let server = Server::start(&cfg);
    (cfg, server)
}

#[test]
fn self_signed_instances_share_one_port_by_sni() {
    let (cfg, server) = two_self_signed_on_shared_listeners();
    let (port, http_port) = shared_ports(&server);
    let ca = PathBuf::from(
        run_ok(
            Command::new(crate::common::berth_bin())
                .args(["ca-path", "--config-dir"])
                .arg(cfg.path()),
        )
        .trim(),
    );
    assert!(ca.is_file(), "{}", ca.display());

    for name in ["ci.test", "cache.test"] {
        let (status, headers) = https(name, port, &ca, "/v2/", &[]).expect("verified TLS");
        assert_eq!(status, 401, "{headers}");
        let realm = name.split('.').next().unwrap();
        assert!(
            headers.contains(&format!("www-authenticate: basic realm=\"{realm}\"")),
            "{headers}"
        );
        assert!(
            headers.contains("strict-transport-security: max-age="),
            "{headers}"
        );
        let (status, _) = https(
            name,
            port,
            &ca,
            "/v2/",
            &["-u", &format!("{realm}-user:{realm}-secret")],
        )
        .unwrap();
        assert_eq!(status, 200);
        assert!(served_cert(name, port).contains(&format!("DNS:{name}")));
        // h2 by ALPN.
        let (_, headers) = https(name, port, &ca, "/v2/", &["--http2"]).unwrap();
        assert!(headers.starts_with("http/2 "), "{headers}");
    }
    // Host and SNI disagree: 421.
    let (status, _) = https("ci.test", port, &ca, "/v2/", &["-H", "Host: cache.test"]).unwrap();
    assert_eq!(status, 421);
    // A name nobody serves gets no certificate at all.
    assert!(https("other.test", port, &ca, "/v2/", &[]).is_none());
    assert!(!served_cert("other.test", port).contains("DNS:"));
    // The dedicated listener of a TLS instance speaks TLS with its certificate.
    let dedicated = port_of(server.addr("ci"));
    assert_eq!(
        https("ci.test", dedicated, &ca, "/v2/", &[]).unwrap().0,
        401
    );
    // Plain HTTP for a TLS instance: a permanent redirect to https.
    let out = run_ok(Command::new(tool("curl")).args([
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Host: ci.test",
        &format!("http://127.0.0.1:{http_port}/v2/_catalog?n=1"),
    ]));
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.contains(&format!("location: https://ci.test:{port}/v2/_catalog?n=1")),
        "{out}"
    );
}

/// A self-signed certificate is renewed by the running server before it
/// ends (here a lifetime of 6 s, renewed with 2 s left), and the new one
/// is served and verifies against the same local CA, with no restart.
#[test]
fn self_signed_certificates_are_renewed_while_serving() {
    let inst = tls_instance("ci", "mode = \"self-signed\"\nlifetime = \"6s\"");
    let cfg = ConfigDir::new(&[inst]);
    let server = Server::start(&cfg);
    let port = port_of(server.addr("ci"));
    let ca = cfg.path().join("state/ca/ca.crt");
    let first = served("ci.test", port, &["-serial", "-enddate"]);
    assert!(first.contains("serial="), "{first}");
    let renewed = eventually("a renewed certificate", Duration::from_secs(20), || {
        let now = served("ci.test", port, &["-serial", "-enddate"]);
        (now.contains("serial=") && now != first).then_some(now)
    });
    server.wait_for_stderr("self-signed: renewed the certificate");
    let (status, _) = https("ci.test", port, &ca, "/v2/", &[]).expect("verified TLS");
    assert_eq!(status, 401);
    // Renewed again before each one ends: never an expired certificate.
    let later = eventually("a second renewal", Duration::from_secs(20), || {
        let now = served("ci.test", port, &["-serial", "-enddate"]);
        (now.contains("serial=") && now != renewed).then_some(now)
    });
    assert_ne!(later, first);
    assert_eq!(
        https("ci.test", port, &ca, "/v2/", &[])
            .expect("verified TLS")
            .0,
        401
    );
}

/// Sends `request` over plain TCP to 127.0.0.1:`port` and returns all the
/// server answers until it closes.
fn plain_exchange(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Plain HTTP on a TLS port (docker's fallback after a failed https
/// login) gets a plain 400 naming the https URL to use, on the shared and
/// on a dedicated TLS listener; TLS on the same ports goes on working.
#[test]
fn plain_http_on_a_tls_port_is_told_to_use_https() {
    let (cfg, server) = two_self_signed_on_shared_listeners();
    let (shared, _) = shared_ports(&server);
    let dedicated = port_of(server.addr("ci"));
    let ca = cfg.path().join("state/ca/ca.crt");
    for (port, host, named) in [
        (shared, "Host: cache.test:443\r\n", "cache.test"),
        (dedicated, "Host: CI.test\r\n", "ci.test"),
        // No Host: the instance's name on its own listener, the address
        // on the shared one.
        (dedicated, "", "ci.test"),
        (shared, "", "127.0.0.1"),
    ] {
        let answer = plain_exchange(port, &format!("GET /v2/ HTTP/1.1\r\n{host}\r\n"));
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("connection: close") || answer.contains("Connection: close"),
            "{answer}"
        );
        assert!(
            answer.ends_with(&format!(
                "This port speaks TLS: use https://{named}:{port}/ instead of http://\n"
            )),
            "{answer}"
        );
        assert_eq!(
            https("ci.test", port, &ca, "/v2/", &[])
                .expect("TLS still works")
                .0,
            401
        );
    }
}

/// Sends `request` exactly as given over TLS to SNI `name` (openssl
/// s_client) and returns the response's status line.
fn raw_tls_status(name: &str, port: u16, request: &str) -> String {
    use std::io::Write;
    let mut child = s_client(name, port)
        .arg("-quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// On the TLS listener too, a request with two Host headers or a Host that
/// is not `host[:port]` gets 400 (RFC 9112 §3.2), even where the first
/// Host, or the part before a colon, names the SNI instance.
#[test]
fn tls_listener_refuses_ambiguous_hosts() {
    let (_cfg, server) = two_self_signed_on_shared_listeners();
    let (port, _) = shared_ports(&server);
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("ci-user:ci-secret")
    };
    let request = |host_lines: &str| {
        format!(
            "GET /v2/ HTTP/1.1\r\n{host_lines}Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"
        )
    };
    let ok = raw_tls_status("ci.test", port, &request("Host: ci.test\r\n"));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
    for lines in [
        "Host: ci.test\r\nHost: cache.test\r\n",
        "Host: ci.test\r\nHost: ci.test\r\n",
        "Host: ci.test:cache.test\r\n",
        "Host: ci.test:99999\r\n",
    ] {
        let status = raw_tls_status("ci.test", port, &request(lines));
        assert!(status.starts_with("HTTP/1.1 400"), "{lines:?}: {status:?}");
    }
}

pub fn openssl_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    run_ok(
        Command::new(tool("openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&crt),
    );
    (crt, key)
}

/// A leaf for `names` (DNS or IP) signed by `ca`, written to `crt`/`key`
/// (with the CA appended to the chain).
pub fn openssl_leaf(ca: &(PathBuf, PathBuf), names: &[&str], crt: &Path, key: &Path) {
    let dir = crt.parent().unwrap();
    let csr = dir.join("leaf.csr");
    let ext = dir.join("leaf.ext");
    let san: Vec<String> = names
        .iter()
        .map(|n| {
            if n.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{n}")
            } else {
                format!("DNS:{n}")
            }
        })
        .collect();
    std::fs::write(&ext, format!("subjectAltName={}\n", san.join(","))).unwrap();
    let tmp_key = dir.join("leaf.key.tmp");
    run_ok(
        Command::new(tool("openssl"))
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={}", names[0]),
                "-keyout",
            ])
            .arg(&tmp_key)
            .arg("-out")
            .arg(&csr),
    );
    let tmp_crt = dir.join("leaf.crt.tmp");
    run_ok(
        Command::new(tool("openssl"))
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca.0)
            .arg("-CAkey")
            .arg(&ca.1)
            .args(["-CAcreateserial", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&tmp_crt),
    );
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&tmp_crt).unwrap(),
        std::fs::read_to_string(&ca.0).unwrap()
    );
    std::fs::write(&tmp_crt, chain).unwrap();
    std::fs::rename(&tmp_key, key).unwrap();
    std::fs::rename(&tmp_crt, crt).unwrap();
}

#[test]
fn certificate_files_are_served_and_reread_when_they_change() {
    let certs = tempfile::tempdir().unwrap();
    let (crt, key) = (
        certs.path().join("files.crt"),
        certs.path().join("files.key"),
    );
    let first = openssl_ca(certs.path(), "first-ca");
    openssl_leaf(&first, &["files.test"], &crt, &key);
    let mut inst = tls_instance(
        "files",
        &format!("mode = \"files\"\ncert = {:?}\nkey = {:?}", crt, key),
    );
    inst.hostnames = vec!["files.test".into()];
    let cfg = ConfigDir::new(&[inst]);
    write_berth_toml(&cfg, "127.0.0.1:0", "127.0.0.1:0");
    let server = Server::start(&cfg);
    let (port, _) = shared_ports(&server);
    assert_eq!(
        https("files.test", port, &first.0, "/v2/", &[]).unwrap().0,
        401
    );

    // New files from another CA: served without a restart.
    let second = openssl_ca(certs.path(), "second-ca");
    openssl_leaf(&second, &["files.test"], &crt, &key);
    eventually("the new certificate", Duration::from_secs(15), || {
        https("files.test", port, &second.0, "/v2/", &[]).map(|(s, _)| assert_eq!(s, 401))
    });
    assert!(
        https("files.test", port, &first.0, "/v2/", &[]).is_none(),
        "old certificate still served"
    );
    // Garbage in the files: logged, and the last good certificate stays.
    std::fs::write(&crt, "not a certificate").unwrap();
    eventually("the broken files noticed", Duration::from_secs(15), || {
        assert_eq!(
            https("files.test", port, &second.0, "/v2/", &[]).unwrap().0,
            401
        );
        server
            .stderr()
            .contains("cannot be used, keeping the previous certificate")
            .then_some(())
    });
}

/// Debian's pebble ACME server with pebble-challtestsrv as its DNS (every
/// name is 127.0.0.1), validating on the given ports.
pub struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    api: u16,
    management: u16,
}

impl Pebble {
    pub fn start(tls_port: u16, http_port: u16) -> Pebble {
        let mut p = Pebble::prepare(tls_port, http_port);
        p.run();
        p
    }

    /// Its ports, API certificate and config, with nothing running yet
    /// (its directory URL refuses connections until [`Pebble::run`]).
    pub fn prepare(tls_port: u16, http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = openssl_ca(dir.path(), "pebble-api-ca");
        let (crt, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
        openssl_leaf(&ca, &["127.0.0.1", "localhost"], &crt, &key);
        let (api, management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": crt, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        Pebble {
            children: Vec::new(),
            dir,
            api,
            management,
        }
    }

    /// Starts the DNS server and pebble; returns once pebble answers.
    pub fn run(&mut self) {
        let dir = self.dir.path();
        let cfg = dir.join("pebble.json");
        let (dns, dns_mgmt) = (free_port(), free_port());
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_srv = Command::new(tool("pebble-challtestsrv"))
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns}"),
            ])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .unwrap();
        let pebble = Command::new(tool("pebble"))
            .arg("-config")
            .arg(&cfg)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap();
        self.children = vec![dns_srv, pebble];
        eventually("pebble answering", Duration::from_secs(20), || {
            self.get(self.api, "/dir")
        });
    }

    pub fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }

    fn api_ca(&self) -> PathBuf {
        self.dir.path().join("pebble-api-ca.crt")
    }

    fn get(&self, port: u16, path: &str) -> Option<String> {
        let out = Command::new(tool("curl"))
            .args(["-sf", "--max-time", "5", "--cacert"])
            .arg(self.api_ca())
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The root that issued certificates chain to (new at every start).
    pub fn issuing_root(&self) -> PathBuf {
        let pem = self.get(self.management, "/roots/0").expect("pebble root");
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }

    pub fn tls_block(&self, challenge: &str) -> String {
        format!(
            "mode = \"acme\"\nacme_email = \"ops@example.com\"\nacme_directory = \"https://127.0.0.1:{}/dir\"\nacme_ca = {:?}\nacme_challenge = \"{challenge}\"",
            self.api,
            self.api_ca()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two instances get their own certificate from pebble through
/// `challenge`; a client trusting pebble's root verifies each name; another
/// process serving the same stores (from a config directory of its own,
/// so another state directory) serves the certificates kept in the stores
/// without ordering again. The stores are directories, or prefixes of a
/// Garage bucket.
fn acme_round(challenge: &str, bucket: Option<&Garage>) {
    let (tls_port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(tls_port, http_port);
    let on_bucket = |name: &str| {
        let mut inst = tls_instance(name, &pebble.tls_block(challenge));
        if let Some(g) = bucket {
            inst.extra.push_str(&format!("\n{}", g.storage_toml(name)));
        }
        inst
    };
    let cfg = ConfigDir::new(&[on_bucket("ci"), on_bucket("cache")]);
    write_berth_toml(
        &cfg,
        &format!("127.0.0.1:{tls_port}"),
        &format!("127.0.0.1:{http_port}"),
    );
    let server = Server::start(&cfg);
    let root = pebble.issuing_root();
    for name in ["ci.test", "cache.test"] {
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some((status, _)) = https(name, tls_port, &root, "/v2/", &[]) {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "no certificate for {name}; berth:\n{}\npebble:\n{}",
                server.stderr(),
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(status, 401);
    }
    let ci_cert = served_cert("ci.test", tls_port);
    let cache_cert = served_cert("cache.test", tls_port);
    assert!(
        ci_cert.contains("DNS:ci.test") && !ci_cert.contains("cache.test"),
        "{ci_cert}"
    );
    assert!(
        cache_cert.contains("DNS:cache.test") && !cache_cert.contains("ci.test"),
        "{cache_cert}"
    );
    assert_eq!(
        https(
            "ci.test",
            tls_port,
            &root,
            "/v2/",
            &["-H", "Host: cache.test"]
        )
        .unwrap()
        .0,
        421
    );
    let log = server.stderr();
    assert_eq!(
        log.matches("ACME: order succeeded, serving the new certificate")
            .count(),
        2,
        "{log}"
    );
    server.stop();
    for name in ["ci", "cache"] {
        let kept = match bucket {
            Some(g) => g.list_keys(&format!("{name}/berth/acme/")).len(),
            None => std::fs::read_dir(cfg.storage_root(name).join("berth/acme"))
                .unwrap()
                .count(),
        };
        assert!(kept >= 2, "no account and certificate in {name}'s store");
    }

    let other = ConfigDir::new(&["ci", "cache"].map(|name| {
        let mut inst = on_bucket(name);
        if bucket.is_none() {
            inst.extra.push_str(&format!(
                "[storage]\nroot = {:?}\n",
                cfg.storage_root(name).display().to_string()
            ));
        }
        inst
    }));
    write_berth_toml(
        &other,
        &format!("127.0.0.1:{tls_port}"),
        &format!("127.0.0.1:{http_port}"),
    );
    let again = Server::start(&other);
    for name in ["ci.test", "cache.test"] {
        let (status, _) = eventually("the cached certificate", Duration::from_secs(20), || {
            https(name, tls_port, &root, "/v2/", &[])
        });
        assert_eq!(status, 401);
    }
    let log = again.wait_for_stderr("ACME: serving the cached certificate");
    assert!(
        !log.contains("order succeeded"),
        "ordered again after a restart:\n{log}"
    );
}

#[test]
fn acme_tls_alpn_01_two_instances_one_port() {
    acme_round("tls-alpn-01", None);
}

#[test]
fn acme_http_01_two_instances_one_port() {
    acme_round("http-01", None);
}

/// The ACME account and certificates of instances on a bucket are in the
/// bucket: a second process on it serves them without ordering.
#[test]
fn acme_on_a_bucket_is_ordered_once_for_every_process() {
    acme_round("tls-alpn-01", Some(&Garage::start()));
}
