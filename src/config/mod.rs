//! Configuration: `berth.toml` (optional, server-wide) and one
//! `instances/NAME.toml` per registry, read into a validated [`Config`].
//! Every error names its file, and the line and column where it has one.
//! Relative paths resolve against the config directory. This module reads
//! files and checks them; it starts nothing, and the policies it reads
//! (access rules, retention, limits) are types of the layers that apply
//! them.
//!
//! The parts: `source` (a file's text and errors pointing into it),
//! `server` (`berth.toml`), `instance` (one instance file), the tables of an
//! instance (`access`, `tls`, `retention`, `limits`, `mirror`, `notify`,
//! `storage`, `http`, `validation`) and `roots` (whether two storage roots
//! overlap); this module composes them and holds what no two instances may
//! share.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::Limits;
use crate::auth::Access;
use crate::coord::PostgresUrl;
use crate::registry::retention::Retention;
use crate::registry::urls::ManifestUrls;
use crate::storage::cache::CacheSpec;
use crate::storage::location::Location;
use crate::upstream::MirrorSpec;

mod access;
mod http;
mod instance;
mod limits;
mod mirror;
mod notify;
mod retention;
mod roots;
mod server;
mod source;
mod storage;
mod tls;
mod validation;
pub use instance::valid_instance_name;
pub use retention::parse_size;
pub use tls::{AcmeChallenge, Tls, LETS_ENCRYPT};

/// Validated configuration of the whole process.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    /// Shared plain-HTTP listener, routing by `Host`.
    pub http: Option<SocketAddr>,
    /// Shared TLS listener, routing by SNI.
    pub https: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub log_format: LogFormat,
    /// How long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request's headers (and how long
    /// an idle connection stays open).
    pub header_timeout: Duration,
    /// How long a request body may go without sending data, and a response
    /// without the client taking any.
    pub body_timeout: Duration,
    /// `[coordination]`: locks shared with other berth processes, when set.
    pub coordination: Option<Coordination>,
    /// `[listen] admin`: metrics, health and readiness, when set.
    pub admin: Option<Admin>,
    pub instances: Vec<InstanceConfig>,
}

/// `[ui]` of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    /// Whether the web UI is served (`enabled`, default true).
    pub enabled: bool,
    /// How long its login sessions last.
    pub sessions: crate::auth::session::Limits,
}

/// The admin listener (`[listen] admin`, `[admin] htpasswd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub addr: SocketAddr,
    /// Users who may read it; anyone who reaches it without.
    pub htpasswd: Option<PathBuf>,
}

/// `[coordination]` of `berth.toml`: where berth processes that share a
/// store take their locks (see [`crate::coord`]).
#[derive(Debug, Clone)]
pub struct Coordination {
    pub postgres: PostgresUrl,
    /// Connections to PostgreSQL this process keeps at most.
    pub pool_size: usize,
}

/// Default of `[server] drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `[server] header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `[server] body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// One registry.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub name: String,
    pub file: PathBuf,
    pub hostnames: Vec<String>,
    pub listen: Vec<SocketAddr>,
    pub storage: Location,
    /// This host's copies of the blobs of a remote store, if it keeps any.
    pub blob_cache: Option<CacheSpec>,
    pub htpasswd: PathBuf,
    /// Failed logins per minute from one address before it is throttled.
    pub max_login_failures: u32,
    pub access: Access,
    pub tls: Tls,
    pub retention: Retention,
    pub limits: Limits,
    /// `[ui]`: the web UI outside `/v2/`.
    pub ui: UiConfig,
    /// `[[notify]]`: webhook endpoints.
    pub notify: Vec<crate::notify::Endpoint>,
    /// `[mirror]`: the upstreams this instance mirrors, when it is a mirror.
    pub mirror: Option<MirrorSpec>,
    /// `[maintenance] read_only`: pulls are served, every write refused.
    pub read_only: bool,
    /// `[http] headers`: added to every response of the instance.
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// `[validation]`: what URLs the layers of pushed manifests may carry;
    /// `None`: not checked.
    pub manifest_urls: Option<ManifestUrls>,
}

/// Default of `[auth] max_login_failures`.
pub const DEFAULT_MAX_LOGIN_FAILURES: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    /// `file:line:col`, or `file` when there is no position.
    pub fn location(&self) -> String {
        match self.position {
            Some((line, col)) => format!("{}:{line}:{col}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found; the config is used only when there are none.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Joins a relative path to the config dir and folds `.` and `..` away.
fn resolve(dir: &Path, p: &str) -> PathBuf {
    let joined = dir.join(p);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What berth.toml and the instances claim for their own, so that no two
/// claim the same thing (listen addresses, hostnames, storage roots), and
/// every problem found so far.
#[derive(Default)]
struct Claims {
    errors: Vec<ConfigError>,
    /// Listen addresses, with where each was written.
    addrs: HashMap<SocketAddr, String>,
    /// Hostnames, with the instance serving each.
    hostnames: HashMap<String, ConfigError>,
    /// Directories (storage roots, blob caches), each with what it is
    /// (the message) and where it was written.
    roots: Vec<(roots::Root, ConfigError)>,
    /// Buckets (endpoint and bucket) with the prefix claimed in each.
    buckets: Vec<(String, String, ConfigError)>,
}

impl Claims {
    /// Claims a listen address (port 0 may be used many times); `err` says
    /// where, and is reported if it is taken already.
    fn addr(&mut self, addr: SocketAddr, err: ConfigError) {
        if addr.port() == 0 {
            return;
        }
        match self.addrs.get(&addr) {
            Some(prev) => self.errors.push(ConfigError {
                message: format!("{} (already used at {prev})", err.message),
                ..err
            }),
            None => {
                self.addrs.insert(addr, err.location());
            }
        }
    }
}

/// Whether `berth.toml` in `dir` has a shared `[listen] https`, for a
/// tool that writes an instance file before the config is whole;
/// berth.toml's errors when it has any.
pub fn has_shared_https(dir: &Path) -> Result<bool, ConfigErrors> {
    let mut claims = Claims::default();
    let server = server::read(dir, &mut claims);
    match claims.errors.is_empty() {
        true => Ok(server.https.is_some()),
        false => Err(ConfigErrors(claims.errors)),
    }
}

/// Reads and validates the config in `dir`.
pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
    load_inner(dir, true)
}

/// Like [`load`], but an htpasswd file may be missing (it is about to be
/// created).
pub fn load_for_passwd(dir: &Path) -> Result<Config, ConfigErrors> {
    load_inner(dir, false)
}

fn load_inner(dir: &Path, require_htpasswd: bool) -> Result<Config, ConfigErrors> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| resolve(&c, &dir.to_string_lossy()))
            .unwrap_or(dir.to_path_buf())
    };
    let mut claims = Claims::default();
    let server = server::read(&dir, &mut claims);
    let instances_dir = dir.join("instances");
    let instances: Vec<InstanceConfig> = instance_files(&instances_dir, &mut claims.errors)
        .iter()
        .filter_map(|file| instance::read(&dir, file, require_htpasswd, &server, &mut claims))
        .collect();
    let mut errors = claims.errors;
    tls_listeners(&server, &instances, &mut errors);
    if instances.is_empty() && errors.is_empty() {
        errors.push(ConfigError {
            file: instances_dir,
            position: None,
            message: "no instances: add a file such as instances/ci.toml".to_string(),
        });
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        dir,
        http: server.http,
        https: server.https,
        state_dir: server.state_dir,
        log_format: server.log_format,
        drain_timeout: server.drain_timeout,
        header_timeout: server.header_timeout,
        body_timeout: server.body_timeout,
        coordination: server.coordination,
        admin: server.admin,
        instances,
    })
}

/// The instance files (`*.toml`) in `dir`, sorted.
fn instance_files(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            errors.push(ConfigError {
                file: dir.to_path_buf(),
                position: None,
                message: format!("cannot read the instances directory: {e}"),
            });
            Vec::new()
        }
    };
    files.sort();
    files
}

/// A shared https listener needs an instance that speaks TLS (what each
/// TLS instance needs of the listeners is checked with the instance).
fn tls_listeners(
    server: &server::Settings,
    instances: &[InstanceConfig],
    errors: &mut Vec<ConfigError>,
) {
    if let (Some(key), false) = (&server.https_key, instances.iter().any(|i| i.tls.is_on())) {
        errors.push(ConfigError {
            message: "listen.https is set, but no instance has a [tls] mode other than \"off\""
                .to_string(),
            ..key.clone()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Action, Anonymous};

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(d.path().join("instances")).unwrap();
            std::fs::create_dir_all(d.path().join("credentials")).unwrap();
            Dir(d)
        }
        fn write(&self, rel: &str, text: &str) -> &Self {
            std::fs::write(self.0.path().join(rel), text).unwrap();
            self
        }
        fn instance(&self, name: &str, text: &str) -> &Self {
            self.write(&format!("credentials/{name}.htpasswd"), "");
            self.write(&format!("instances/{name}.toml"), text)
        }
        fn errors(&self) -> Vec<String> {
            let root = format!("{}/", self.0.path().display());
            load(self.0.path())
                .unwrap_err()
                .0
                .iter()
                .map(|e| e.to_string().replace(&root, ""))
                .collect()
        }
    }

    #[test]
    fn valid_config_with_defaults() {
        let d = Dir::new();
        d.instance(
            "ci",
            "hostnames = [\"ci.example.com\"]\nlisten = [\"127.0.0.1:5000\"]\n",
        );
        d.instance(
            "cache",
            "hostnames = [\"cache.example.com\"]\n[storage]\nroot = \"/srv/cache\"\n",
        );
        d.write(
            "berth.toml",
            "[listen]\nhttp = \"127.0.0.1:8080\"\n[log]\nformat = \"json\"\n",
        );
        let c = load(d.0.path()).unwrap();
        assert_eq!(c.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.instances.len(), 2);
        let ci = c.instances.iter().find(|i| i.name == "ci").unwrap();
        assert_eq!(ci.storage, Location::Filesystem(d.0.path().join("data/ci")));
        assert_eq!(ci.htpasswd, d.0.path().join("credentials/ci.htpasswd"));
        let cache = c.instances.iter().find(|i| i.name == "cache").unwrap();
        assert_eq!(
            cache.storage,
            Location::Filesystem(PathBuf::from("/srv/cache"))
        );
    }

    #[test]
    fn errors_carry_file_and_line() {
        let d = Dir::new();
        d.instance("ci", "hostnames = [\"a.test\"]\n\nbogus = 1\n");
        assert_eq!(d.errors(), vec!["instances/ci.toml:3:1: unknown field `bogus`, expected one of `hostnames`, `listen`, `storage`, `auth`, `access`, `tls`, `retention`, `limits`, `ui`, `notify`, `mirror`, `maintenance`, `http`, `validation`"]);
        d.instance("ci", "hostnames = [\"a.test\"\n");
        assert_eq!(
            d.errors(),
            vec!["instances/ci.toml:2:1: invalid array: expected `]`"]
        );
        d.instance("ci", "hostnames = \"a.test\"\n");
        assert!(
            d.errors()[0].starts_with("instances/ci.toml:1:13: invalid type"),
            "{:?}",
            d.errors()
        );
        d.instance("ci", "listen = [\"nope\"]\n");
        assert_eq!(d.errors(), vec!["instances/ci.toml:1:11: invalid listen address 'nope': expected IP:PORT such as 127.0.0.1:5000"]);
        d.instance("ci", "hostnames = [\"Upper.test\"]\n");
        assert!(d.errors()[0].contains("ci.toml:1:14: invalid hostname"));
    }

    #[test]
    fn what_a_tls_instance_needs_is_reported_at_its_mode() {
        let d = Dir::new();
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[tls]\nmode = \"self-signed\"\n",
        );
        assert_eq!(
            d.errors(),
            vec!["instances/ci.toml:3:8: a TLS instance needs [listen] https in berth.toml or listen addresses of its own"]
        );
        d.instance(
            "ci",
            "listen = [\"127.0.0.1:0\"]\n\n[tls]\nmode = \"acme\"\n",
        );
        assert_eq!(
            d.errors(),
            vec![
                "instances/ci.toml:4:8: a TLS instance needs hostnames: its certificate is issued for them",
                "instances/ci.toml:4:8: ACME validates this instance over the shared https listener: set [listen] https in berth.toml",
            ]
        );
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\"]\n[tls]\nmode = \"self-signed\"\n",
        );
        assert!(load(d.0.path()).is_ok());
    }

    #[test]
    fn self_signed_lifetime() {
        let d = Dir::new();
        let with = |tls: &str| {
            format!("hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\"]\n[tls]\n{tls}\n")
        };
        d.instance("ci", &with("mode = \"self-signed\""));
        let lifetime = |d: &Dir| load(d.0.path()).unwrap().instances[0].tls.clone();
        assert_eq!(
            lifetime(&d),
            Tls::SelfSigned {
                lifetime: tls::DEFAULT_SELF_SIGNED_LIFETIME
            }
        );
        d.instance("ci", &with("mode = \"self-signed\"\nlifetime = \"30d\""));
        assert_eq!(
            lifetime(&d),
            Tls::SelfSigned {
                lifetime: Duration::from_secs(30 * 86400)
            }
        );
        d.instance("ci", &with("mode = \"self-signed\"\nlifetime = \"1s\""));
        assert_eq!(
            d.errors(),
            vec!["instances/ci.toml:5:12: tls.lifetime must be from 5s to 825d"]
        );
        d.instance("ci", &with("mode = \"self-signed\"\nlifetime = \"soon\""));
        assert!(
            d.errors()[0]
                .starts_with("instances/ci.toml:5:12: tls.lifetime: invalid duration 'soon'"),
            "{:?}",
            d.errors()
        );
        d.instance(
            "ci",
            &with("lifetime = \"30d\"\nmode = \"acme\"\nacme_email = \"a@b.test\""),
        );
        assert!(
            d.errors().contains(
                &"instances/ci.toml:5:8: tls.lifetime does not apply to this tls.mode".to_string()
            ),
            "{:?}",
            d.errors()
        );
    }

    #[test]
    fn strings_toml_cannot_read_get_a_hint() {
        let d = Dir::new();
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[storage]\nroot = \"data/ci\n",
        );
        let errs = d.errors();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("instances/ci.toml:3:16: invalid basic string"),
            "{errs:?}"
        );
        assert!(
            errs[0].ends_with("the string is not closed: end it with \" on this line (a string cannot go on over lines; \"\"\"...\"\"\" can)"),
            "{errs:?}"
        );
        d.instance("ci", "hostnames = ['ci.test]\n");
        assert!(
            d.errors()[0].contains("the string is not closed: end it with ' on this line"),
            "{:?}",
            d.errors()
        );
        // Closed, but with a backslash TOML does not take.
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[storage]\nroot = \"C:\\data\"\n",
        );
        let errs = d.errors();
        assert!(
            errs[0].contains("a backslash starts an escape")
                && errs[0].contains("instances/ci.toml:3:"),
            "{errs:?}"
        );
    }

    #[test]
    fn conflicts_between_instances() {
        let d = Dir::new();
        d.instance(
            "a",
            "hostnames = [\"x.test\"]\nlisten = [\"127.0.0.1:5000\"]\n",
        );
        d.instance("b", "\nhostnames = [\"x.test\"]\nlisten = [\"127.0.0.1:5000\"]\n[storage]\nroot = \"data/a\"\n");
        let errs = d.errors();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("instances/b.toml:2:14: hostname 'x.test' is served by two instances (also at instances/a.toml:1:14"), "{errs:?}");
        assert!(errs[1].starts_with("instances/b.toml:3:11: listen address 127.0.0.1:5000 is used twice (already used at instances/a.toml:2:11"), "{errs:?}");
        assert!(
            errs[2].starts_with("instances/b.toml:5:8: storage root"),
            "{errs:?}"
        );
        assert!(errs[2].contains("overlaps"), "{errs:?}");
    }

    #[test]
    fn storage_driver() {
        let d = Dir::new();
        d.instance(
            "a",
            "listen = [\"127.0.0.1:0\"]\n[storage]\ndriver = \"filesystem\"\n",
        );
        assert!(load(d.0.path()).is_ok());
        d.instance(
            "a",
            "listen = [\"127.0.0.1:0\"]\n[storage]\ndriver = \"ftp\"\n",
        );
        assert_eq!(
            d.errors(),
            vec!["instances/a.toml:3:10: unknown storage driver 'ftp': one of \"filesystem\", \"s3\""]
        );
        // Keys of the other driver, and what an s3 instance needs.
        d.instance(
            "a",
            "listen = [\"127.0.0.1:0\"]\n[storage]\nbucket = \"b1\"\n",
        );
        assert_eq!(
            d.errors(),
            vec!["instances/a.toml:3:10: storage.bucket is for driver \"s3\" (this instance stores in a directory)"]
        );
        d.instance(
            "a",
            "listen = [\"127.0.0.1:0\"]\n[storage]\ndriver = \"s3\"\nroot = \"x\"\npart_size = \"1MiB\"\nendpoint = \"ftp://x\"\n",
        );
        let errs = d.errors();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].starts_with("instances/a.toml:4:8: storage.root is for driver \"filesystem\""),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.ends_with("driver \"s3\" needs storage.bucket")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("6:12: storage.endpoint: 'ftp://x' is not an http")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("5:13: storage.part_size must be from 5MiB")),
            "{errs:?}"
        );
        // Two instances on one bucket need prefixes apart.
        let s3 = |prefix: &str| {
            format!("listen = [\"127.0.0.1:0\"]\n[storage]\ndriver = \"s3\"\nbucket = \"reg\"\nendpoint = \"http://127.0.0.1:3900\"\nprefix = \"{prefix}\"\n")
        };
        d.instance("a", &s3("ci"));
        d.instance("b", &s3("cache"));
        let c = load(d.0.path()).unwrap();
        let Location::S3(o) = &c.instances[0].storage else {
            panic!("not s3")
        };
        assert!(o.path_style && o.redirect.is_none() && o.region == "us-east-1");
        d.instance("b", &s3("ci/sub"));
        let errs = d.errors();
        assert!(
            errs[0].contains(
                "s3://reg/ci/sub at http://127.0.0.1:3900 overlaps the store of another instance"
            ),
            "{errs:?}"
        );

        // A blob cache: in state/cache/NAME unless placed; apart from every
        // other instance's directories; only for a bucket.
        d.instance("b", &s3("cache"));
        d.instance("a", &(s3("ci") + "cache = \"10GiB\"\n"));
        let c = load(d.0.path()).unwrap();
        let spec = c.instances[0].blob_cache.as_ref().unwrap();
        assert_eq!(spec.max_bytes, 10 << 30);
        assert!(spec.dir.ends_with("state/cache/a"), "{spec:?}");
        assert!(c.instances[1].blob_cache.is_none());
        d.instance("a", &(s3("ci") + "cache = \"0\"\n"));
        assert!(load(d.0.path()).unwrap().instances[0].blob_cache.is_none());
        d.instance(
            "a",
            &(s3("ci") + "cache = \"1GiB\"\ncache_dir = \"data/b\"\n"),
        );
        d.instance("b", "listen = [\"127.0.0.1:0\"]\n");
        assert_eq!(
            d.errors(),
            vec!["instances/b.toml: storage root data/b overlaps the blob cache directory data/b of another instance (instances/a.toml:8:13); each instance needs its own"]
        );
        d.instance("b", &s3("cache"));
        d.instance("a", &(s3("ci") + "cache = \"lots\"\ncache_dir = \"x\"\n"));
        let errs = d.errors();
        assert!(
            errs[0].starts_with("instances/a.toml:7:9: storage.cache: "),
            "{errs:?}"
        );
        d.instance("a", &(s3("ci") + "cache_dir = \"x\"\n"));
        assert_eq!(
            d.errors(),
            vec!["instances/a.toml:7:13: storage.cache_dir needs storage.cache (how much the cache may hold)"]
        );
        d.instance(
            "a",
            "listen = [\"127.0.0.1:0\"]\n[storage]\ncache = \"1GiB\"\n",
        );
        assert_eq!(
            d.errors(),
            vec!["instances/a.toml:3:9: storage.cache is for driver \"s3\" (this instance stores in a directory)"]
        );
    }

    #[test]
    fn missing_htpasswd_and_names() {
        let d = Dir::new();
        d.write(
            "instances/ci.toml",
            "hostnames = [\"ci.test\"]\n[auth]\nhtpasswd = \"nope.htpasswd\"\n",
        );
        let errs = d.errors();
        assert!(
            errs[0].starts_with("instances/ci.toml:3:12: htpasswd file"),
            "{errs:?}"
        );
        assert!(errs[0].contains("nope.htpasswd does not exist"), "{errs:?}");
        let d = Dir::new();
        d.instance("Bad.Name", "hostnames = [\"x.test\"]\n");
        assert!(d.errors()[0].contains("instance name 'Bad.Name'"));
        let d = Dir::new();
        assert!(d.errors()[0].contains("no instances"));
        d.instance("ci", "");
        assert!(d.errors()[0].contains("neither hostnames nor listen"));
    }

    #[test]
    fn access_rules() {
        let d = Dir::new();
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[access]\nanonymous = \"pull\"\ndefault = \"pull\"\n\
             [[access.rule]]\nusers = [\"release-*\"]\nrepositories = [\"releases/**\"]\nallow = \"delete\"\n",
        );
        let c = load(d.0.path()).unwrap();
        let a = &c.instances[0].access;
        assert_eq!(a.anonymous, Anonymous::Pull);
        assert_eq!(a.allowed(Some("release-7"), "releases/x"), Action::Delete);
        assert_eq!(a.allowed(Some("bob"), "releases/x"), Action::Pull);
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[[access.rule]]\nusers = [\"a\"]\nrepositories = [\"x/[y\"]\nallow = \"pull\"\n",
        );
        assert!(
            d.errors()[0].starts_with("instances/ci.toml:4:17: invalid pattern 'x/[y'"),
            "{:?}",
            d.errors()
        );
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[access]\ndefault = \"admin\"\n",
        );
        assert!(
            d.errors()[0].starts_with("instances/ci.toml:3:11: unknown variant `admin`"),
            "{:?}",
            d.errors()
        );
    }

    #[test]
    fn limits() {
        let d = Dir::new();
        d.instance("ci", "hostnames = [\"ci.test\"]\n");
        let c = load(d.0.path()).unwrap();
        assert_eq!(c.instances[0].limits, Limits::default());
        assert_eq!(c.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(c.body_timeout, DEFAULT_BODY_TIMEOUT);
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[limits]\nmax_blob_size = \"2GiB\"\nmax_upload_sessions = 8\n",
        );
        let c = load(d.0.path()).unwrap();
        assert_eq!(
            c.instances[0].limits,
            Limits {
                max_blob_size: Some(2 << 30),
                max_upload_sessions: 8
            }
        );
        for (text, error) in [
            (
                "max_blob_size = \"huge\"",
                "instances/ci.toml:3:17: limits.max_blob_size: 'huge' is not a size",
            ),
            (
                "max_blob_size = \"3 parsecs\"",
                "instances/ci.toml:3:17: limits.max_blob_size: unknown size unit 'parsecs'",
            ),
            (
                "max_blob_size = \"0MiB\"",
                "instances/ci.toml:3:17: limits.max_blob_size must be more than 0 bytes",
            ),
            (
                "max_upload_sessions = 0",
                "instances/ci.toml:3:23: limits.max_upload_sessions must be at least 1",
            ),
            (
                "max_upload_sessions = -1",
                "instances/ci.toml:3:23: invalid value: integer `-1`",
            ),
            (
                "max_sessions = 5",
                "instances/ci.toml:3:1: unknown field `max_sessions`",
            ),
        ] {
            d.instance(
                "ci",
                &format!("hostnames = [\"ci.test\"]\n[limits]\n{text}\n"),
            );
            let errs = d.errors();
            assert!(errs[0].starts_with(error), "{text}: {errs:?}");
        }
    }

    #[test]
    fn coordination() {
        let d = Dir::new();
        d.instance("ci", "hostnames = [\"ci.test\"]\n");
        assert!(load(d.0.path()).unwrap().coordination.is_none());
        d.write(
            "berth.toml",
            "[coordination]\npostgres = \"postgres://berth:hunter2@db.internal/registry\"\n",
        );
        let c = load(d.0.path()).unwrap().coordination.unwrap();
        assert_eq!(c.postgres.server(), "db.internal:5432/registry");
        assert_eq!(c.pool_size, crate::coord::DEFAULT_POOL_SIZE);
        // Debug output (in logs, panics) never shows the password.
        assert!(!format!("{c:?}").contains("hunter2"));
        d.write(
            "berth.toml",
            "[coordination]\npostgres = \"postgres://db/x\"\npool_size = 4\n",
        );
        assert_eq!(load(d.0.path()).unwrap().coordination.unwrap().pool_size, 4);
        for (text, error) in [
            (
                "postgres = \"mysql://db/x\"",
                "berth.toml:2:12: coordination.postgres: invalid PostgreSQL URL: expected a URL such as postgres://",
            ),
            (
                "postgres = \"postgres://u:hunter2@db:x/y\"",
                "berth.toml:2:12: coordination.postgres: invalid PostgreSQL URL: invalid connection string: invalid value for option `port`",
            ),
            (
                "postgres = \"postgres://db/x\"\npool_size = 0",
                "berth.toml:3:13: coordination.pool_size must be at least 1",
            ),
            (
                "pool_size = 4",
                "berth.toml:1:1: [coordination] needs postgres = ",
            ),
            ("redis = \"x\"", "berth.toml:2:1: unknown field `redis`"),
        ] {
            d.write("berth.toml", &format!("[coordination]\n{text}\n"));
            let errs = d.errors();
            assert!(errs[0].starts_with(error), "{text}: {errs:?}");
            assert!(!errs[0].contains("hunter2"), "{errs:?}");
        }
    }

    #[test]
    fn server_file_errors() {
        let d = Dir::new();
        d.instance("ci", "hostnames = [\"ci.test\"]\n");
        d.write("berth.toml", "[listen]\nhttps = \"0.0.0.0\"\n");
        assert_eq!(d.errors(), vec!["berth.toml:2:9: invalid listen address '0.0.0.0': expected IP:PORT such as 127.0.0.1:5000"]);
        d.write("berth.toml", "[listen]\nhttps = \"127.0.0.1:443\"\n");
        assert_eq!(
            d.errors(),
            vec!["berth.toml:2:9: listen.https is set, but no instance has a [tls] mode other than \"off\""]
        );
        d.write("berth.toml", "[server]\ndrain_timeout = \"soon\"\n");
        assert!(
            d.errors()[0].starts_with("berth.toml:2:17: invalid duration 'soon'"),
            "{:?}",
            d.errors()
        );
        d.write("berth.toml", "[server]\ndrain_timeout = \"5s\"\n");
        assert_eq!(
            load(d.0.path()).unwrap().drain_timeout,
            Duration::from_secs(5)
        );
        d.write(
            "berth.toml",
            "[server]\nheader_timeout = \"2s\"\nbody_timeout = \"3m\"\n",
        );
        let c = load(d.0.path()).unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        assert_eq!(c.body_timeout, Duration::from_secs(180));
        d.write("berth.toml", "[server]\nbody_timeout = \"0s\"\n");
        assert_eq!(
            d.errors(),
            vec!["berth.toml:2:16: server.body_timeout must be more than 0"]
        );
        d.write("berth.toml", "[server]\nheader_timeout = \"fast\"\n");
        assert!(
            d.errors()[0].starts_with("berth.toml:2:18: invalid duration 'fast'"),
            "{:?}",
            d.errors()
        );
        d.write("berth.toml", "[log]\nformat = \"xml\"\n");
        assert!(
            d.errors()[0].starts_with("berth.toml:2:10: unknown variant `xml`"),
            "{:?}",
            d.errors()
        );
        d.write(
            "berth.toml",
            "[listen]\nhttp = \"127.0.0.1:80\"\nhttps = \"127.0.0.1:80\"\n",
        );
        assert!(d.errors()[0].contains("used twice"));
    }

    #[test]
    fn mirror() {
        let d = Dir::new();
        d.write("credentials/hub-upstream", "me:tok3n\n");
        let creds = d.0.path().join("credentials/hub-upstream");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        d.instance(
            "hub",
            "listen = [\"127.0.0.1:5000\"]\n[mirror]\n[[mirror.upstream]]\nregistry = \"docker.io\"\n\
             url = \"https://registry-1.docker.io/\"\nprefix = \"\"\ncredentials_file = \"credentials/hub-upstream\"\n\
             [[mirror.upstream]]\nregistry = \"ghcr.io\"\nurl = \"https://ghcr.io\"\nprefix = \"ghcr/\"\n\
             [mirror.cache]\ntag_ttl = \"2m\"\nserve_stale = false\n",
        );
        let c = load(d.0.path()).unwrap();
        let m = c.instances[0].mirror.as_ref().unwrap();
        assert_eq!(m.upstreams.len(), 2);
        assert_eq!(m.upstreams[0].url, "https://registry-1.docker.io");
        assert_eq!(
            m.upstreams[0].credentials.as_ref().unwrap().password,
            "tok3n"
        );
        assert!(m.upstreams[1].credentials.is_none());
        assert_eq!(m.tag_ttl, Duration::from_secs(120));
        assert!(!m.serve_stale && !m.allow_push);
        assert!(
            !format!("{c:?}").contains("tok3n"),
            "credentials are never printed"
        );
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            d.errors(),
            vec!["instances/hub.toml:7:20: mirror.upstream.credentials_file: \
                  credentials/hub-upstream may be read by others (mode 644); `chmod 600 credentials/hub-upstream`"]
        );
        for (text, error) in [
            ("[mirror]\n", "instances/hub.toml:2:1: [mirror] needs at least one [[mirror.upstream]] with registry and url"),
            (
                "[mirror]\n[[mirror.upstream]]\nregistry = \"docker.io\"\nurl = \"ftp://x\"\n",
                "instances/hub.toml:5:7: mirror.upstream.url 'ftp://x': expected http(s)://HOST[:PORT] such as https://registry-1.docker.io",
            ),
            (
                "[mirror]\n[[mirror.upstream]]\nregistry = \"ghcr.io\"\nurl = \"https://ghcr.io\"\nprefix = \"ghcr\"\n",
                "instances/hub.toml:6:10: mirror.upstream.prefix 'ghcr': expected \"\" or a repository path ending in '/', such as \"ghcr/\"",
            ),
            (
                "[mirror]\nallow_push = true\n[[mirror.upstream]]\nregistry = \"docker.io\"\nurl = \"https://h\"\n",
                "instances/hub.toml:2:1: mirror.allow_push: every repository maps to the upstream docker.io (its prefix is \"\"), so none could take pushes; give it a prefix",
            ),
            (
                "[mirror]\n[mirror.cache]\ntag_ttl = \"soon\"\n[[mirror.upstream]]\nregistry = \"a.io\"\nurl = \"https://a.io\"\n",
                "instances/hub.toml:4:11: mirror.cache.tag_ttl: invalid duration 'soon': expected number at 0 (e.g. \"10m\")",
            ),
            (
                "[mirror]\nproxy = 1\n",
                "instances/hub.toml:3:1: unknown field `proxy`, expected one of `upstream`, `cache`, `allow_push`",
            ),
        ] {
            d.instance("hub", &format!("listen = [\"127.0.0.1:5000\"]\n{text}"));
            assert_eq!(d.errors(), vec![error.to_string()], "{text}");
        }
    }

    #[test]
    fn maintenance_headers_and_validation() {
        let d = Dir::new();
        d.instance("ci", "hostnames = [\"ci.test\"]\n");
        let c = load(d.0.path()).unwrap();
        let ci = &c.instances[0];
        assert!(!ci.read_only && ci.headers.is_empty() && ci.manifest_urls.is_none());
        d.instance(
            "ci",
            "hostnames = [\"ci.test\"]\n[maintenance]\nread_only = true\n\
             [http]\nheaders = { \"X-Content-Type-Options\" = \"nosniff\", \"Cache-Control\" = \"no-store\" }\n\
             [validation]\nmanifest_urls_allow = ['^https://cdn\\.example\\.com/']\n",
        );
        let c = load(d.0.path()).unwrap();
        let ci = &c.instances[0];
        assert!(ci.read_only);
        let headers: Vec<_> = ci
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            ["cache-control: no-store", "x-content-type-options: nosniff"]
        );
        let urls = ci.manifest_urls.as_ref().unwrap();
        assert_eq!(urls.allow.len(), 1);
        assert!(urls.deny.is_empty());
        // An empty [validation] table is there: nothing is allowed.
        d.instance("ci", "hostnames = [\"ci.test\"]\n[validation]\n");
        let c = load(d.0.path()).unwrap();
        assert!(c.instances[0]
            .manifest_urls
            .as_ref()
            .unwrap()
            .allow
            .is_empty());
        for (text, error) in [
            (
                "[maintenance]\nread_only = \"yes\"",
                "instances/ci.toml:3:13: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[maintenance]\nreadonly = true",
                "instances/ci.toml:3:1: unknown field `readonly`, expected `read_only`",
            ),
            (
                "[http]\nheaders = { \"Bad Name\" = \"x\" }",
                "instances/ci.toml:3:13: http.headers: 'Bad Name' is not a header name",
            ),
            (
                "[http]\nheaders = { \"Content-Length\" = \"1\" }",
                "instances/ci.toml:3:13: http.headers: Content-Length is set by the server for each response",
            ),
            (
                "[http]\nheaders = { \"X-A\" = \"line\\nbreak\" }",
                "instances/ci.toml:3:21: http.headers.X-A: a header value is visible ASCII, spaces and tabs",
            ),
            (
                "[http]\nheaders = { \"X-A\" = 1 }",
                "instances/ci.toml:3:21: invalid type: integer `1`, expected a string",
            ),
            (
                "[validation]\nmanifest_urls_deny = [\"ok\", \"(unclosed\"]",
                "instances/ci.toml:3:29: validation.manifest_urls_deny: invalid pattern '(unclosed': regex parse error:",
            ),
        ] {
            d.instance("ci", &format!("hostnames = [\"ci.test\"]\n{text}\n"));
            let errs = d.errors();
            assert!(errs[0].starts_with(error), "{text}: {errs:?}");
        }
    }
}
