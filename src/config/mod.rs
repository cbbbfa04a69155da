//! Configuration: `berth.toml` (optional, server-wide) and one
//! `instances/NAME.toml` per registry, read into a validated [`Config`].
//! Every error names its file, and the line and column where it has one.
//! Relative paths resolve against the config directory. This module reads
//! files and checks them; it starts nothing.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::api::Limits;
use crate::auth::Access;
use crate::coord::{PostgresUrl, DEFAULT_POOL_SIZE};
use crate::registry::retention::Retention;

mod access;
mod limits;
mod retention;
mod roots;
mod tls;
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
    pub instances: Vec<InstanceConfig>,
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
    pub storage_root: PathBuf,
    pub htpasswd: PathBuf,
    /// Failed logins per minute from one address before it is throttled.
    pub max_login_failures: u32,
    pub access: Access,
    pub tls: Tls,
    pub retention: Retention,
    pub limits: Limits,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    #[serde(default)]
    listen: ListenSection,
    #[serde(default)]
    paths: PathsSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    server: ServerSection,
    coordination: Option<Spanned<CoordinationSection>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CoordinationSection {
    postgres: Option<Spanned<String>>,
    pool_size: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    drain_timeout: Option<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListenSection {
    http: Option<Spanned<String>>,
    https: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathsSection {
    state: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogSection {
    #[serde(default)]
    format: LogFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceFile {
    #[serde(default)]
    hostnames: Vec<Spanned<String>>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    access: access::AccessSection,
    #[serde(default)]
    tls: tls::TlsSection,
    #[serde(default)]
    retention: retention::RetentionSection,
    #[serde(default)]
    limits: limits::LimitsSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    root: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    htpasswd: Option<Spanned<String>>,
    max_login_failures: Option<Spanned<u32>>,
}

/// A file's text, for turning byte offsets into line:column.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn error_at(&self, offset: Option<usize>, message: impl Into<String>) -> ConfigError {
        let position = offset.map(|o| {
            let before = &self.text[..o.min(self.text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        });
        ConfigError {
            file: self.path.clone(),
            position,
            message: message.into(),
        }
    }

    fn error_spanned<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.error_at(Some(s.span().start), message)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            self.error_at(
                e.span().map(|s| s.start),
                e.message().trim_end().replace('\n', ": "),
            )
        })
    }
}

fn read_source(path: &Path) -> Result<Option<Source>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(Source {
            path: path.to_path_buf(),
            text,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read: {e}"),
        }),
    }
}

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

fn parse_addr(
    src: &Source,
    s: &Spanned<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match s.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(src.error_spanned(
                s,
                format!(
                    "invalid listen address '{}': expected IP:PORT such as 127.0.0.1:5000",
                    s.get_ref()
                ),
            ));
            None
        }
    }
}

fn valid_instance_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'))
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
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
    let mut errors = Vec::new();
    let server_path = dir.join("berth.toml");
    let (server, server_src) = match read_source(&server_path) {
        Ok(Some(src)) => match src.parse::<ServerFile>() {
            Ok(f) => (f, Some(src)),
            Err(e) => {
                errors.push(e);
                (ServerFile::default(), None)
            }
        },
        Ok(None) => (ServerFile::default(), None),
        Err(e) => {
            errors.push(e);
            (ServerFile::default(), None)
        }
    };
    // Every listen address in use, with where it was said.
    let mut addrs: HashMap<SocketAddr, String> = HashMap::new();
    let mut claim_addr =
        |addr: SocketAddr, at: String, errors: &mut Vec<ConfigError>, err: ConfigError| {
            if addr.port() == 0 {
                return;
            }
            if let Some(prev) = addrs.get(&addr) {
                errors.push(ConfigError {
                    message: format!("{} (already used at {prev})", err.message),
                    ..err
                });
            } else {
                addrs.insert(addr, at);
            }
        };
    let (mut http, mut https) = (None, None);
    if let Some(src) = &server_src {
        for (key, value, slot) in [
            ("http", &server.listen.http, &mut http),
            ("https", &server.listen.https, &mut https),
        ] {
            if let Some(v) = value {
                *slot = parse_addr(src, v, &mut errors);
                if let Some(a) = *slot {
                    let e = src.error_spanned(v, format!("listen.{key} address {a} is used twice"));
                    let at = e.location();
                    claim_addr(a, at, &mut errors, e);
                }
            }
        }
    }
    // A timeout of 0 would refuse every request; a drain timeout of 0 stops
    // at once.
    let mut server_duration = |value: &Option<Spanned<String>>, default: Duration, key: &str| {
        let (Some(src), Some(d)) = (&server_src, value) else {
            return default;
        };
        match humantime::parse_duration(d.get_ref()) {
            Ok(v) if v.is_zero() && key != "drain_timeout" => {
                errors.push(src.error_spanned(d, format!("server.{key} must be more than 0")));
                default
            }
            Ok(v) => v,
            Err(e) => {
                errors.push(src.error_spanned(
                    d,
                    format!(
                        "invalid duration '{}': {e} (e.g. \"30s\", \"2m\")",
                        d.get_ref()
                    ),
                ));
                default
            }
        }
    };
    let sec = &server.server;
    let drain_timeout = server_duration(&sec.drain_timeout, DEFAULT_DRAIN_TIMEOUT, "drain_timeout");
    let header_timeout = server_duration(
        &sec.header_timeout,
        DEFAULT_HEADER_TIMEOUT,
        "header_timeout",
    );
    let body_timeout = server_duration(&sec.body_timeout, DEFAULT_BODY_TIMEOUT, "body_timeout");
    let coordination = match (&server_src, &server.coordination) {
        (Some(src), Some(section)) => coordination(src, section, &mut errors),
        _ => None,
    };
    let state_dir = resolve(
        &dir,
        server
            .paths
            .state
            .as_ref()
            .map_or("state", |s| s.get_ref().as_str()),
    );

    let instances_dir = dir.join("instances");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&instances_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            errors.push(ConfigError {
                file: instances_dir.clone(),
                position: None,
                message: format!("cannot read the instances directory: {e}"),
            });
            Vec::new()
        }
    };
    files.sort();
    let mut instances = Vec::new();
    let mut hostnames: HashMap<String, ConfigError> = HashMap::new();
    let mut roots: Vec<(roots::Root, ConfigError)> = Vec::new();
    for file in files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let src = match read_source(&file) {
            Ok(Some(src)) => src,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !valid_instance_name(&name) {
            errors.push(src.error_at(
                None,
                format!("instance name '{name}' (the file name) must be lowercase letters, digits, '-' or '_'"),
            ));
            continue;
        }
        let f: InstanceFile = match src.parse() {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut inst = InstanceConfig {
            name: name.clone(),
            file: file.clone(),
            hostnames: Vec::new(),
            listen: Vec::new(),
            storage_root: resolve(&dir, &format!("data/{name}")),
            htpasswd: resolve(&dir, &format!("credentials/{name}.htpasswd")),
            max_login_failures: DEFAULT_MAX_LOGIN_FAILURES,
            access: access::build(&src, f.access, &mut errors),
            tls: tls::build(&src, &dir, &f.tls, &mut errors),
            retention: retention::build(&src, &f.retention, &mut errors),
            limits: limits::build(&src, &f.limits, &mut errors),
        };
        if inst.tls.is_on() && f.hostnames.is_empty() {
            errors.push(src.error_at(
                None,
                "a TLS instance needs hostnames: its certificate is issued for them",
            ));
        }
        if let Some(n) = &f.auth.max_login_failures {
            if *n.get_ref() == 0 {
                errors.push(src.error_spanned(n, "max_login_failures must be at least 1"));
            }
            inst.max_login_failures = *n.get_ref();
        }
        for h in &f.hostnames {
            let host = h.get_ref();
            if !valid_hostname(host) {
                errors.push(src.error_spanned(
                    h,
                    format!(
                        "invalid hostname '{host}': use lowercase DNS names such as ci.example.com"
                    ),
                ));
                continue;
            }
            let here =
                src.error_spanned(h, format!("hostname '{host}' is served by two instances"));
            if let Some(prev) = hostnames.get(host) {
                errors.push(ConfigError {
                    message: format!("{} (also at {})", here.message, prev.location()),
                    ..here
                });
            } else {
                hostnames.insert(
                    host.clone(),
                    src.error_spanned(h, format!("instance {name}")),
                );
                inst.hostnames.push(host.clone());
            }
        }
        for l in &f.listen {
            if let Some(a) = parse_addr(&src, l, &mut errors) {
                let e = src.error_spanned(l, format!("listen address {a} is used twice"));
                let at = e.location();
                claim_addr(a, at, &mut errors, e);
                inst.listen.push(a);
            }
        }
        if f.hostnames.is_empty() && f.listen.is_empty() {
            errors.push(src.error_at(
                None,
                "the instance has neither hostnames nor listen addresses, so nothing reaches it",
            ));
        }
        if let Some(root) = &f.storage.root {
            inst.storage_root = resolve(&dir, root.get_ref());
        }
        let root_err = match &f.storage.root {
            Some(r) => src.error_spanned(r, "storage root"),
            None => src.error_at(None, "storage root"),
        };
        let root = roots::Root::new(&inst.storage_root);
        for (other, other_err) in &roots {
            if let Some(how) = root.overlap(other) {
                errors.push(ConfigError {
                    message: format!(
                        "storage root {} overlaps the storage root {} of another instance ({}){how}; each instance needs its own",
                        inst.storage_root.display(),
                        other.written().display(),
                        other_err.location()
                    ),
                    ..root_err.clone()
                });
            }
        }
        roots.push((root, root_err));
        if let Some(h) = &f.auth.htpasswd {
            inst.htpasswd = resolve(&dir, h.get_ref());
        }
        if require_htpasswd && !inst.htpasswd.is_file() {
            let message = format!(
                "htpasswd file {} does not exist; create a user with `berth passwd --config-dir {} {name} USER`",
                inst.htpasswd.display(),
                dir.display()
            );
            errors.push(match &f.auth.htpasswd {
                Some(h) => src.error_spanned(h, message),
                None => src.error_at(None, message),
            });
        }
        instances.push(inst);
    }
    let tls_instances: Vec<&InstanceConfig> = instances.iter().filter(|i| i.tls.is_on()).collect();
    if let (Some(src), Some(v), Some(_)) = (&server_src, &server.listen.https, https) {
        if tls_instances.is_empty() {
            errors.push(src.error_spanned(
                v,
                "listen.https is set, but no instance has a [tls] mode other than \"off\"",
            ));
        }
    }
    for inst in &tls_instances {
        if let Tls::Acme { challenge, .. } = &inst.tls {
            let (needed, listener) = match challenge {
                AcmeChallenge::TlsAlpn01 => (https.is_none(), "https"),
                AcmeChallenge::Http01 => (http.is_none(), "http"),
            };
            if needed {
                errors.push(ConfigError {
                    file: inst.file.clone(),
                    position: None,
                    message: format!(
                        "ACME validates this instance over the shared {listener} listener: set [listen] {listener} in berth.toml"
                    ),
                });
            }
        }
        if https.is_none() && inst.listen.is_empty() {
            errors.push(ConfigError {
                file: inst.file.clone(),
                position: None,
                message: "a TLS instance needs [listen] https in berth.toml or listen addresses of its own".to_string(),
            });
        }
    }
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
        http,
        https,
        state_dir,
        log_format: server.log.format,
        drain_timeout,
        header_timeout,
        body_timeout,
        coordination,
        instances,
    })
}

/// `[coordination]`; parsed only: connecting is the server's job, and a
/// check works offline.
fn coordination(
    src: &Source,
    section: &Spanned<CoordinationSection>,
    errors: &mut Vec<ConfigError>,
) -> Option<Coordination> {
    let (at, section) = (section.span().start, section.get_ref());
    let pool_size = match &section.pool_size {
        Some(n) if *n.get_ref() == 0 => {
            errors.push(src.error_spanned(n, "coordination.pool_size must be at least 1"));
            return None;
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_POOL_SIZE,
    };
    let Some(url) = &section.postgres else {
        errors.push(src.error_at(
            Some(at),
            "[coordination] needs postgres = \"postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE\"",
        ));
        return None;
    };
    match PostgresUrl::parse(url.get_ref()) {
        Ok(postgres) => Some(Coordination {
            postgres,
            pool_size,
        }),
        Err(e) => {
            errors.push(src.error_spanned(url, format!("coordination.postgres: {e}")));
            None
        }
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
        assert_eq!(ci.storage_root, d.0.path().join("data/ci"));
        assert_eq!(ci.htpasswd, d.0.path().join("credentials/ci.htpasswd"));
        let cache = c.instances.iter().find(|i| i.name == "cache").unwrap();
        assert_eq!(cache.storage_root, PathBuf::from("/srv/cache"));
    }

    #[test]
    fn errors_carry_file_and_line() {
        let d = Dir::new();
        d.instance("ci", "hostnames = [\"a.test\"]\n\nbogus = 1\n");
        assert_eq!(d.errors(), vec!["instances/ci.toml:3:1: unknown field `bogus`, expected one of `hostnames`, `listen`, `storage`, `auth`, `access`, `tls`, `retention`, `limits`"]);
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
}
