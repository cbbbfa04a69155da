//! `berth.toml` (optional): the shared listeners, the state directory, the
//! log format, the server's timeouts and `[coordination]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{
    resolve, Admin, Claims, ConfigError, Coordination, LogFormat, DEFAULT_BODY_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
};
use crate::coord::{PostgresUrl, DEFAULT_POOL_SIZE};

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
    #[serde(default)]
    admin: AdminSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    htpasswd: Option<Spanned<String>>,
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
    admin: Option<Spanned<String>>,
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

/// What `berth.toml` sets, validated, with defaults where it says nothing.
pub(super) struct Settings {
    pub(super) http: Option<SocketAddr>,
    pub(super) https: Option<SocketAddr>,
    /// Where a valid `listen.https` is written, for errors about it.
    pub(super) https_key: Option<ConfigError>,
    pub(super) state_dir: PathBuf,
    pub(super) log_format: LogFormat,
    pub(super) drain_timeout: Duration,
    pub(super) header_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) coordination: Option<Coordination>,
    pub(super) admin: Option<Admin>,
}

/// Reads `<dir>/berth.toml`; its listen addresses are claimed in `claims`.
pub(super) fn read(dir: &Path, claims: &mut Claims) -> Settings {
    let (server, src) = match Source::read(&dir.join("berth.toml")) {
        Ok(Some(src)) => match src.parse::<ServerFile>() {
            Ok(f) => (f, Some(src)),
            Err(e) => {
                claims.errors.push(e);
                (ServerFile::default(), None)
            }
        },
        Ok(None) => (ServerFile::default(), None),
        Err(e) => {
            claims.errors.push(e);
            (ServerFile::default(), None)
        }
    };
    let mut settings = Settings {
        http: None,
        https: None,
        https_key: None,
        state_dir: resolve(
            dir,
            server
                .paths
                .state
                .as_ref()
                .map_or("state", |s| s.get_ref().as_str()),
        ),
        log_format: server.log.format,
        drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        header_timeout: DEFAULT_HEADER_TIMEOUT,
        body_timeout: DEFAULT_BODY_TIMEOUT,
        coordination: None,
        admin: None,
    };
    let Some(src) = src else {
        return settings;
    };
    for (key, value) in [
        ("http", &server.listen.http),
        ("https", &server.listen.https),
        ("admin", &server.listen.admin),
    ] {
        let Some(v) = value else { continue };
        let addr = src.addr(v, &mut claims.errors);
        if let Some(a) = addr {
            claims.addr(
                a,
                src.error_spanned(v, format!("listen.{key} address {a} is used twice")),
            );
        }
        match key {
            "http" => settings.http = addr,
            "admin" => {
                settings.admin = addr.map(|addr| Admin {
                    addr,
                    htpasswd: None,
                })
            }
            _ => {
                settings.https = addr;
                settings.https_key = addr.map(|_| src.error_spanned(v, "listen.https"));
            }
        }
    }
    if let Some(h) = &server.admin.htpasswd {
        let path = resolve(dir, h.get_ref());
        match &mut settings.admin {
            None => claims.errors.push(src.error_spanned(
                h,
                "admin.htpasswd is for the admin listener: set [listen] admin too",
            )),
            Some(_) if !path.is_file() => claims.errors.push(src.error_spanned(
                h,
                format!(
                    "admin.htpasswd {} does not exist (make it with htpasswd -B -c)",
                    path.display()
                ),
            )),
            Some(admin) => admin.htpasswd = Some(path),
        }
    }
    let sec = &server.server;
    let errors = &mut claims.errors;
    settings.drain_timeout = duration(&src, &sec.drain_timeout, "drain_timeout", errors)
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    settings.header_timeout = duration(&src, &sec.header_timeout, "header_timeout", errors)
        .unwrap_or(DEFAULT_HEADER_TIMEOUT);
    settings.body_timeout =
        duration(&src, &sec.body_timeout, "body_timeout", errors).unwrap_or(DEFAULT_BODY_TIMEOUT);
    if let Some(section) = &server.coordination {
        settings.coordination = coordination(&src, section, errors);
    }
    settings
}

/// A `[server]` duration; `None` when absent or invalid. A timeout of 0
/// would refuse every request (a drain timeout of 0 stops at once).
fn duration(
    src: &Source,
    value: &Option<Spanned<String>>,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    let d = value.as_ref()?;
    match humantime::parse_duration(d.get_ref()) {
        Ok(v) if v.is_zero() && key != "drain_timeout" => {
            errors.push(src.error_spanned(d, format!("server.{key} must be more than 0")));
            None
        }
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(src.error_spanned(
                d,
                format!(
                    "invalid duration '{}': {e} (e.g. \"30s\", \"2m\")",
                    d.get_ref()
                ),
            ));
            None
        }
    }
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
