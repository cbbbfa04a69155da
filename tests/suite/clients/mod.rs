//! Real clients and peers for end-to-end tests: OCI image layouts made with
//! `umoci`, `skopeo`, a private `dockerd` (and its containerd, for `ctr`),
//! and the reference registry (`docker-registry`, CNCF Distribution), also
//! behind token auth as a fake Docker Hub ([`hub`]). Every process started here listens
//! on 127.0.0.1 only, keeps its files under a temporary directory and is
//! stopped by PID when its guard is dropped, also when a test panics.
//!
//! A missing tool fails the test (it never skips): `./ctl test` installs the
//! Debian packages these helpers need.

pub mod hub;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Debian package that ships each tool.
const PACKAGES: &[(&str, &str)] = &[
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("docker-registry", "docker-registry"),
    ("ctr", "containerd"),
];

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Absolute path of a tool, or a panic telling how to get it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let package = PACKAGES
        .iter()
        .find(|(tool, _)| *tool == name)
        .map_or(name, |(_, package)| *package);
    panic!(
        "`{name}` is not installed (Debian package `{package}`); `./ctl test` installs it \
         (or: apt-get install -y {package})"
    );
}

fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

/// Runs a command to completion; returns its stdout, or panics with its
/// stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "`{}` failed ({}):\nstderr:\n{}\nstdout:\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that is expected to fail; returns its stderr (and stdout),
/// or panics when it succeeds.
pub fn run_fails(cmd: &mut Command) -> String {
    let out = output(cmd);
    if out.status.success() {
        panic!(
            "`{}` succeeded but was expected to fail; stdout:\n{}",
            describe(cmd),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Asserts that a client's error output says the registry refused the
/// credentials.
pub fn assert_auth_error(stderr: &str) {
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("unauthorized")
            || lower.contains("authentication required")
            || lower.contains("invalid username/password")
            || lower.contains("401"),
        "expected an authentication error, got:\n{stderr}"
    );
}

/// Prints the end of a log file when dropped during a panic, so that a
/// failing test shows what the server said.
pub struct LogOnPanic {
    label: String,
    path: PathBuf,
}

pub fn log_on_panic(label: &str, path: &Path) -> LogOnPanic {
    LogOnPanic {
        label: label.to_string(),
        path: path.to_path_buf(),
    }
}

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "--- end of {} ({}) ---\n{tail}\n---",
                self.label,
                self.path.display()
            );
        }
    }
}

/// A random lowercase token, for unique names and content.
pub fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

// ---------------------------------------------------------------------------
// skopeo

/// A `skopeo` command with a permissive signature policy and no stored
/// credentials of the machine.
pub fn skopeo_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("skopeo"));
    cmd.arg("--insecure-policy").args(args).env(
        "REGISTRY_AUTH_FILE",
        std::env::temp_dir().join("berth-e2e-no-auth.json"),
    );
    cmd
}

/// Runs skopeo; returns stdout or panics with stderr.
pub fn skopeo(args: &[&str]) -> String {
    run(&mut skopeo_cmd(args))
}

/// Runs skopeo expecting failure; returns its error output.
pub fn skopeo_fails(args: &[&str]) -> String {
    run_fails(&mut skopeo_cmd(args))
}

/// Arguments of `skopeo copy SRC DEST` where `side` ("src" or "dest") is a
/// plain-HTTP registry with credentials.
fn copy_args<'a>(
    side: &str,
    src: &'a str,
    dest: &'a str,
    creds: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let (tls, creds_flag) = match side {
        "src" => ("--src-tls-verify=false", "--src-creds"),
        "dest" => ("--dest-tls-verify=false", "--dest-creds"),
        _ => panic!("side is \"src\" or \"dest\", not {side:?}"),
    };
    let mut args = vec!["copy", tls, creds_flag, creds];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[src, dest]);
    args
}

/// `skopeo copy` from anything to a plain-HTTP registry with credentials.
pub fn skopeo_push(src: &str, dest: &str, creds: &str, extra: &[&str]) {
    skopeo(&copy_args("dest", src, dest, creds, extra));
}

/// `skopeo_push` expected to fail; returns its error output.
pub fn skopeo_push_fails(src: &str, dest: &str, creds: &str) -> String {
    skopeo_fails(&copy_args("dest", src, dest, creds, &[]))
}

/// `skopeo copy` from a plain-HTTP registry with credentials to anything.
pub fn skopeo_pull(src: &str, dest: &str, creds: &str, extra: &[&str]) {
    skopeo(&copy_args("src", src, dest, creds, extra));
}

/// `skopeo_pull` of `src` into a new OCI layout, as `tag`.
pub fn pull_layout(src: &str, tag: &str, creds: &str, extra: &[&str]) -> OciLayout {
    let layout = OciLayout::empty();
    skopeo_pull(src, &layout.reference(tag), creds, extra);
    layout
}

/// Arguments of `skopeo inspect --raw` of a plain-HTTP registry's image.
fn raw_args<'a>(image: &'a str, creds: &'a str) -> [&'a str; 6] {
    [
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        creds,
        image,
    ]
}

/// `skopeo inspect --raw`: the manifest bytes as the registry serves them.
pub fn skopeo_raw(image: &str, creds: &str) -> String {
    skopeo(&raw_args(image, creds))
}

/// `skopeo_raw` expected to fail; returns its error output.
pub fn skopeo_raw_fails(image: &str, creds: &str) -> String {
    skopeo_fails(&raw_args(image, creds))
}

/// `skopeo list-tags` expected to fail; returns its error output.
pub fn skopeo_tags_fails(repo: &str, creds: &str) -> String {
    skopeo_fails(&["list-tags", "--tls-verify=false", "--creds", creds, repo])
}

/// `skopeo list-tags`: the tags of a repository.
pub fn skopeo_tags(repo: &str, creds: &str) -> Vec<String> {
    let out = skopeo(&["list-tags", "--tls-verify=false", "--creds", creds, repo]);
    let v: Value = serde_json::from_str(&out).expect("list-tags output is JSON");
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .expect("Tags")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

// ---------------------------------------------------------------------------
// OCI image layouts

/// An OCI image layout on disk (in its own temporary directory).
pub struct OciLayout {
    pub dir: tempfile::TempDir,
}

impl OciLayout {
    /// An empty directory that a client may write a layout into.
    pub fn empty() -> OciLayout {
        OciLayout {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("layout")
    }

    /// `oci:PATH:TAG`, the skopeo transport reference.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.path().display())
    }

    pub fn index(&self) -> Value {
        let text = std::fs::read_to_string(self.path().join("index.json")).expect("index.json");
        serde_json::from_str(&text).expect("index.json is JSON")
    }

    /// The descriptor that index.json holds for a tag.
    pub fn descriptor(&self, tag: &str) -> Value {
        let index = self.index();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no tag {tag} in {}", self.path().display()))
            .clone()
    }

    /// Digest of the manifest (or index) a tag points at.
    pub fn digest(&self, tag: &str) -> String {
        self.descriptor(tag)["digest"].as_str().unwrap().to_string()
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let (algo, hex) = digest.split_once(':').expect("digest");
        std::fs::read(self.path().join("blobs").join(algo).join(hex))
            .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
    }

    pub fn blob_json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).expect("blob is JSON")
    }

    /// Config digest and layer digests of an image manifest.
    pub fn image_digests(&self, manifest_digest: &str) -> ImageDigests {
        let m = self.blob_json(manifest_digest);
        ImageDigests::of(&m)
    }

    /// Asserts that every layer blob of an image manifest in this layout
    /// has the content its digest names.
    pub fn assert_layers_intact(&self, manifest_digest: &str) {
        for layer in self.image_digests(manifest_digest).layers {
            assert_eq!(
                format!("sha256:{}", sha256_hex(&self.blob(&layer))),
                layer,
                "layer blob in {}",
                self.path().display()
            );
        }
    }

    /// For an index: (platform architecture, manifest digest) of each child.
    pub fn children(&self, index_digest: &str) -> Vec<(String, String)> {
        let index = self.blob_json(index_digest);
        index["manifests"]
            .as_array()
            .expect("index manifests")
            .iter()
            .map(|d| {
                (
                    d["platform"]["architecture"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    d["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// What identifies an image's content independently of its manifest format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigests {
    pub config: String,
    pub layers: Vec<String>,
}

impl ImageDigests {
    pub fn of(manifest: &Value) -> ImageDigests {
        ImageDigests {
            config: manifest["config"]["digest"]
                .as_str()
                .expect("config digest")
                .to_string(),
            layers: manifest["layers"]
                .as_array()
                .expect("layers")
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string())
                .collect(),
        }
    }
}

fn umoci(args: &[&str]) -> String {
    run(Command::new(tool("umoci")).args(args))
}

/// Adds one layer with the given files to `image` (`PATH:TAG`) of a layout.
fn umoci_add_layer(work: &Path, image: &str, files: &[(&str, String)]) {
    let bundle = work.join(format!("bundle-{}", token()));
    let bundle_s = bundle.to_str().unwrap();
    umoci(&["unpack", "--rootless", "--image", image, bundle_s]);
    for (name, content) in files {
        let path = bundle.join("rootfs").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    umoci(&["repack", "--image", image, bundle_s]);
    std::fs::remove_dir_all(&bundle).unwrap();
}

/// Creates `tag` in the layout at `layout`: two layers of unique files, for
/// the given architecture.
fn umoci_image(work: &Path, layout: &Path, tag: &str, arch: &str) {
    let image = format!("{}:{tag}", layout.display());
    let unique = token();
    umoci(&["new", "--image", &image]);
    umoci_add_layer(
        work,
        &image,
        &[
            ("etc/berth-e2e/id", format!("{unique}\n")),
            ("etc/berth-e2e/arch", format!("{arch}\n")),
        ],
    );
    umoci_add_layer(
        work,
        &image,
        &[(
            "srv/data.txt",
            format!("second layer of {unique} for {arch}\n").repeat(64),
        )],
    );
    umoci(&[
        "config",
        "--image",
        &image,
        "--architecture",
        arch,
        "--os",
        "linux",
        "--config.cmd",
        "/bin/true",
    ]);
}

/// A small image with unique content (two layers) tagged `tag`, in a fresh
/// OCI layout.
pub fn make_image(tag: &str) -> OciLayout {
    let layout = OciLayout::empty();
    let path = layout.path();
    umoci(&["init", "--layout", path.to_str().unwrap()]);
    umoci_image(layout.dir.path(), &path, tag, "amd64");
    layout
}

/// A multi-arch image: `tag` points at an OCI index of an amd64 and an arm64
/// image (tagged `TAG-amd64` and `TAG-arm64` too), each with unique content.
pub fn make_multiarch(tag: &str) -> OciLayout {
    let layout = OciLayout::empty();
    let path = layout.path();
    umoci(&["init", "--layout", path.to_str().unwrap()]);
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let child_tag = format!("{tag}-{arch}");
        umoci_image(layout.dir.path(), &path, &child_tag, arch);
        let d = layout.descriptor(&child_tag);
        children.push(json!({
            "mediaType": d["mediaType"],
            "digest": d["digest"],
            "size": d["size"],
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children,
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = sha256_hex(&bytes);
    std::fs::write(path.join("blobs/sha256").join(&digest), &bytes).unwrap();
    let mut top = layout.index();
    top["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": OCI_INDEX,
        "digest": format!("sha256:{digest}"),
        "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(path.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    layout
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Asserts that `copy` (an OCI layout written by `skopeo copy --all`) holds
/// the same multi-arch image as `orig`: same index digest, same children
/// and blobs.
pub fn assert_same_multiarch(orig: &OciLayout, orig_tag: &str, copy: &OciLayout, copy_tag: &str) {
    let index = orig.digest(orig_tag);
    assert_eq!(
        copy.digest(copy_tag),
        index,
        "index digest after the round trip"
    );
    let children = orig.children(&index);
    assert_eq!(
        copy.children(&index),
        children,
        "index children after the round trip"
    );
    for (arch, digest) in &children {
        assert_eq!(
            copy.image_digests(digest),
            orig.image_digests(digest),
            "{arch} image after the round trip"
        );
        copy.assert_layers_intact(digest);
    }
}

// ---------------------------------------------------------------------------
// Process helpers

/// Sends a signal to one process by PID.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Waits for a child to exit; false on timeout.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// SIGTERM, then SIGKILL after `grace`; always reaps the child.
fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        signal(child.id(), "TERM");
        if !wait_exit(child, grace) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// All descendants of a process (children of every thread, recursively).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !found.contains(&c) {
                    found.push(c);
                    queue.push(c);
                }
            }
        }
    }
    found
}

/// True when the process is alive and its command line mentions `needle`.
fn alive_with(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

/// A free port on 127.0.0.1 (for servers that cannot report the port they
/// bound; callers retry when the port is taken meanwhile).
fn pick_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 GET; returns the raw response (headers and body).
pub fn http_get_raw(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

// ---------------------------------------------------------------------------
// The reference registry

/// A running `docker-registry serve` (CNCF Distribution 2.8) with htpasswd
/// auth (or token auth, [`hub`]), filesystem storage (or the storage it is
/// given) and deletes enabled.
pub struct DistRegistry {
    child: Child,
    /// "127.0.0.1:PORT"
    pub addr: String,
    /// Who may push: the htpasswd user, or the token server's.
    pub user: String,
    pub password: String,
    config: PathBuf,
    /// What its `/v2/` challenge says, and no other server's does.
    marker: String,
    log: PathBuf,
    /// Its config and users' file, when it made the directory itself.
    _dir: Option<tempfile::TempDir>,
}

impl DistRegistry {
    /// Starts the reference registry on a free port of 127.0.0.1 serving
    /// `root`, with one user.
    pub fn start(root: &Path, user: &str, password: &str) -> DistRegistry {
        Self::start_with_storage(&filesystem_storage(root), user, password)
    }

    /// The same with `storage`, the config's `storage:` section (e.g. an
    /// S3 bucket).
    pub fn start_with_storage(storage: &str, user: &str, password: &str) -> DistRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Self::start_in(dir.path(), storage, "", user, password);
        reg._dir = Some(dir);
        reg
    }

    /// The same with its `config.yml` and `htpasswd` written into `dir`
    /// (which the caller keeps), `extra` YAML appended to the config.
    pub fn start_in(
        dir: &Path,
        storage: &str,
        extra: &str,
        user: &str,
        password: &str,
    ) -> DistRegistry {
        let htpasswd = dir.join("htpasswd");
        let hash = bcrypt::hash_with_result(password, 5)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
        // A realm of its own tells this registry's answers from those of
        // any other server that took the port meanwhile.
        let realm = format!("reference-{}", token());
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: {realm}\n    path: {}\n{extra}",
            htpasswd.display()
        );
        let marker = format!("realm=\"{realm}\"");
        Self::launch(dir, storage, &auth, marker, user, password)
    }

    /// Starts it serving `root` behind token auth: clients get their
    /// tokens from `tokens`, whose user may push.
    pub fn start_with_tokens(root: &Path, tokens: &hub::TokenServer) -> DistRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = format!("hub-{}", token());
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {service}\n    issuer: {}\n    \
             rootcertbundle: {}\n",
            tokens.realm(),
            hub::ISSUER,
            tokens.certificate().display(),
        );
        let marker = format!("service=\"{service}\"");
        let (user, password) = tokens.user();
        let storage = filesystem_storage(root);
        let mut reg = Self::launch(dir.path(), &storage, &auth, marker, user, password);
        reg._dir = Some(dir);
        reg
    }

    /// Writes its config (a free port, `storage`, `auth`) into `dir` and
    /// starts it, on another port when that one was taken meanwhile.
    fn launch(
        dir: &Path,
        storage: &str,
        auth: &str,
        marker: String,
        user: &str,
        password: &str,
    ) -> DistRegistry {
        let log = dir.join("registry.log");
        let config = dir.join("config.yml");
        for _attempt in 0..10 {
            let addr = format!("127.0.0.1:{}", pick_port());
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
                     {storage}http:\n  addr: {addr}\n  secret: berth-e2e-{secret}\n{auth}",
                    secret = token(),
                ),
            )
            .unwrap();
            let mut child = Self::spawn(&config, &log);
            if Self::ready(&mut child, &addr, &marker) {
                return DistRegistry {
                    child,
                    addr,
                    user: user.to_string(),
                    password: password.to_string(),
                    config,
                    marker,
                    log,
                    _dir: None,
                };
            }
            stop_child(&mut child, Duration::from_secs(5));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("docker-registry did not start; its log:\n{log}");
    }

    /// `AWS_CA_BUNDLE` is kept out of its environment: with it, the S3
    /// driver does not start ("LoadCustomCABundleError").
    fn spawn(config: &Path, log: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(config)
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry")
    }

    /// Waits (bounded) until `addr` answers with `marker`; false when the
    /// registry exits first (most likely its port was taken) or never does.
    fn ready(child: &mut Child, addr: &str, marker: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if http_get_raw(addr, "/v2/").is_some_and(|resp| resp.contains(marker)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn creds(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// `docker://ADDR/REPO:TAG`
    pub fn image(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the registry (SIGTERM, then SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
    }

    /// Starts the stopped registry again, on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(&self.config, &self.log);
        if !Self::ready(&mut self.child, &self.addr, &self.marker) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!(
                "docker-registry did not start again on {}; its log:\n{log}",
                self.addr
            );
        }
    }
}

impl Drop for DistRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `storage:` section of a registry config for a directory.
fn filesystem_storage(root: &Path) -> String {
    std::fs::create_dir_all(root).unwrap();
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
        root.display()
    )
}

// ---------------------------------------------------------------------------
// dockerd

/// A private `dockerd` (vfs storage, no networking of its own) with its
/// data, exec root, socket and client config under a temporary directory.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    docker: PathBuf,
}

impl Dockerd {
    /// Starts dockerd trusting the given plain-HTTP registries
    /// ("127.0.0.1:PORT") and waits until it answers.
    pub fn start(insecure_registries: &[&str]) -> Dockerd {
        Self::start_with(insecure_registries, &[], &[])
    }

    /// A dockerd that pulls Docker Hub's images through `mirrors`
    /// (`registry-mirrors`, "http://127.0.0.1:PORT").
    pub fn start_with_mirrors(mirrors: &[&str]) -> Dockerd {
        Self::launch(&json!({ "registry-mirrors": mirrors }), &[], &[])
    }

    /// A dockerd that resolves `names` to 127.0.0.1 and trusts `cas`
    /// (`("host:port", ca.crt)`, as /etc/docker/certs.d has them). It runs in
    /// a mount namespace of its own where its /etc/hosts and /etc/docker are
    /// bind-mounted from its temporary directory; the machine's files stay
    /// untouched.
    pub fn start_with(
        insecure_registries: &[&str],
        names: &[&str],
        cas: &[(String, PathBuf)],
    ) -> Dockerd {
        let config = json!({ "insecure-registries": insecure_registries });
        Self::launch(&config, names, cas)
    }

    /// Starts dockerd with `config` as its daemon.json, `names` and `cas`
    /// as [`Self::start_with`] has them, and waits until it answers.
    fn launch(config: &Value, names: &[&str], cas: &[(String, PathBuf)]) -> Dockerd {
        let dockerd = tool("dockerd");
        let docker = tool("docker");
        let dir = tempfile::Builder::new()
            .prefix("dkd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), serde_json::to_vec(config).unwrap()).unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let mut command = if names.is_empty() && cas.is_empty() {
            Command::new(dockerd)
        } else {
            let hosts = d.join("hosts");
            std::fs::write(
                &hosts,
                format!("127.0.0.1 localhost\n127.0.0.1 {}\n", names.join(" ")),
            )
            .unwrap();
            let etc_docker = d.join("etc-docker");
            for (host_port, ca) in cas {
                let dir = etc_docker.join("certs.d").join(host_port);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::copy(ca, dir.join("ca.crt")).unwrap();
            }
            std::fs::create_dir_all(&etc_docker).unwrap();
            let mut c = Command::new(tool("unshare"));
            c.args(["-m", "sh", "-c"])
                .arg(
                    "mount --make-rprivate / && mount --bind \"$HOSTS\" /etc/hosts && \
                     mkdir -p /etc/docker && mount --bind \"$ETC_DOCKER\" /etc/docker && exec \"$@\"",
                )
                .arg("sh")
                .arg(dockerd)
                .env("HOSTS", &hosts)
                .env("ETC_DOCKER", &etc_docker);
            c
        };
        let child = command
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs"])
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let mut daemon = Dockerd { child, dir, docker };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("dockerd exited ({status}); its log:\n{}", daemon.log());
            }
            let ok = daemon
                .cmd(&["version", "--format", "{{.Server.Version}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "dockerd did not come up in 60 s; its log:\n{}",
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    /// A `ctr` command talking to the containerd this daemon started.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let socket = self.dir.path().join("exec/containerd/containerd.sock");
        let mut cmd = Command::new(tool("ctr"));
        cmd.arg("--address")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A `docker` CLI command talking to this daemon, with its own client
    /// config (credentials stay in the temporary directory).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.docker);
        cmd.args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `docker ARGS`; returns stdout or panics with stderr.
    pub fn run(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }

    /// Runs `docker ARGS` expecting failure; returns its error output.
    pub fn run_fails(&self, args: &[&str]) -> String {
        run_fails(&mut self.cmd(args))
    }

    /// `docker login -u USER --password-stdin ADDR`; Ok(stdout) or Err(stderr).
    pub fn login(&self, addr: &str, user: &str, password: &str) -> Result<String, String> {
        let mut child = self
            .cmd(&["login", "-u", user, "--password-stdin", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker login");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Loads tag `tag` of `image` into the daemon as `name` (through a
    /// docker-archive that skopeo writes); returns `docker load`'s output.
    pub fn load(&self, image: &OciLayout, tag: &str, name: &str) -> String {
        let archive = tempfile::tempdir().unwrap();
        let tar = archive.path().join("image.tar");
        skopeo(&[
            "copy",
            &image.reference(tag),
            &format!("docker-archive:{}:{name}", tar.display()),
        ]);
        self.run(&["load", "-i", tar.to_str().unwrap()])
    }

    /// Tags the local image `local` as `target`; returns the output of
    /// `docker push target`.
    pub fn tag_and_push(&self, local: &str, target: &str) -> String {
        self.run(&["tag", local, target]);
        self.run(&["push", target])
    }

    /// The image ID (config digest) of a local image.
    pub fn image_id(&self, image: &str) -> String {
        self.run(&["image", "inspect", "--format", "{{.Id}}", image])
            .trim()
            .to_string()
    }

    fn stop(&mut self) {
        let pid = self.child.id();
        let dir = self.dir.path().to_string_lossy().into_owned();
        // containerd and shims are started by dockerd; note them before it
        // goes so that none is left behind if it dies without stopping them.
        let family = descendants(pid);
        stop_child(&mut self.child, Duration::from_secs(30));
        for p in family {
            if alive_with(p, &dir) {
                signal(p, "KILL");
            }
        }
        // dockerd bind-mounts its data root (and may mount more under it).
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(dir.as_str()))
            .collect();
        mounts.reverse();
        for m in mounts {
            let _ = Command::new("umount")
                .args(["-l", m])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}
