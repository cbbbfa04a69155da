//! One `instances/NAME.toml`: an instance's hostnames, listeners, storage,
//! credentials and the tables its layers apply (`[access]`, `[tls]`,
//! `[retention]`, `[limits]`, `[mirror]`, `[maintenance]`, `[http]`,
//! `[validation]`), checked against what other instances already claim.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::UiConfig;
use super::{
    access, http, limits, mirror, notify, resolve, retention, server, storage, tls, validation,
    Claims, ConfigError, InstanceConfig, DEFAULT_MAX_LOGIN_FAILURES,
};
use crate::auth::session::Limits as SessionLimits;
use crate::storage::location::Location;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceFile {
    #[serde(default)]
    hostnames: Vec<Spanned<String>>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    storage: storage::StorageSection,
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
    #[serde(default)]
    ui: UiSection,
    #[serde(default)]
    notify: Vec<notify::NotifySection>,
    mirror: Option<Spanned<mirror::MirrorSection>>,
    #[serde(default)]
    maintenance: MaintenanceSection,
    #[serde(default)]
    http: http::HttpSection,
    validation: Option<validation::ValidationSection>,
}

/// `[maintenance]`: `read_only` serves pulls and refuses every write
/// (registry:2's `maintenance.readonly`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MaintenanceSection {
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UiSection {
    enabled: Option<bool>,
    session_idle: Option<Spanned<String>>,
    session_max: Option<Spanned<String>>,
}

/// `[ui]`: whether the web UI is served, and how long its sessions last.
fn ui(src: &Source, section: &UiSection, errors: &mut Vec<ConfigError>) -> UiConfig {
    let mut sessions = SessionLimits::default();
    for (key, value, into) in [
        ("session_idle", &section.session_idle, &mut sessions.idle),
        ("session_max", &section.session_max, &mut sessions.max_age),
    ] {
        let Some(v) = value else { continue };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d >= std::time::Duration::from_secs(1) => *into = d,
            _ => errors.push(src.error_spanned(
                v,
                format!(
                    "ui.{key}: '{}' is not a duration of at least 1s",
                    v.get_ref()
                ),
            )),
        }
    }
    UiConfig {
        enabled: section.enabled.unwrap_or(true),
        sessions,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    htpasswd: Option<Spanned<String>>,
    max_login_failures: Option<Spanned<u32>>,
}

/// Reads the instance file `file`; `None` when it cannot be used at all
/// (the errors are in `claims`). With `require_htpasswd`, a missing
/// htpasswd file is an error. `server` is `berth.toml`, for the shared
/// listeners a TLS instance needs.
pub(super) fn read(
    dir: &Path,
    file: &Path,
    require_htpasswd: bool,
    server: &server::Settings,
    claims: &mut Claims,
) -> Option<InstanceConfig> {
    let name = file
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let src = match Source::read(file) {
        Ok(src) => src?,
        Err(e) => {
            claims.errors.push(e);
            return None;
        }
    };
    if !valid_instance_name(&name) {
        claims.errors.push(src.error_at(
            None,
            format!("instance name '{name}' (the file name) must be lowercase letters, digits, '-' or '_'"),
        ));
        return None;
    }
    let f: InstanceFile = match src.parse() {
        Ok(f) => f,
        Err(e) => {
            claims.errors.push(e);
            return None;
        }
    };
    let errors = &mut claims.errors;
    let mut inst = InstanceConfig {
        name: name.clone(),
        file: file.to_path_buf(),
        hostnames: Vec::new(),
        listen: Vec::new(),
        // Read below, after the keys above it in the file.
        storage: Location::Filesystem(resolve(dir, &format!("data/{name}"))),
        blob_cache: None,
        htpasswd: resolve(dir, &format!("credentials/{name}.htpasswd")),
        max_login_failures: DEFAULT_MAX_LOGIN_FAILURES,
        access: access::build(&src, f.access, errors),
        tls: tls::build(&src, dir, &f.tls, errors),
        retention: retention::build(&src, &f.retention, errors),
        limits: limits::build(&src, &f.limits, errors),
        ui: ui(&src, &f.ui, errors),
        notify: notify::build(dir, &src, &f.notify, errors),
        mirror: f
            .mirror
            .as_ref()
            .map(|m| mirror::build(dir, &src, m, errors)),
        read_only: f.maintenance.read_only,
        headers: http::build(&src, &f.http, errors),
        manifest_urls: f
            .validation
            .as_ref()
            .map(|v| validation::build(&src, v, errors)),
    };
    let shared = tls::Shared {
        https: server.https.is_some(),
        http: server.http.is_some(),
    };
    let (has_hostnames, has_listen) = (!f.hostnames.is_empty(), !f.listen.is_empty());
    tls::check_needs(
        &src,
        &f.tls,
        &inst.tls,
        shared,
        has_hostnames,
        has_listen,
        errors,
    );
    if let Some(n) = &f.auth.max_login_failures {
        if *n.get_ref() == 0 {
            errors.push(src.error_spanned(n, "max_login_failures must be at least 1"));
        }
        inst.max_login_failures = *n.get_ref();
    }
    hostnames(&src, &f.hostnames, &mut inst, claims);
    for l in &f.listen {
        if let Some(a) = src.addr(l, &mut claims.errors) {
            claims.addr(
                a,
                src.error_spanned(l, format!("listen address {a} is used twice")),
            );
            inst.listen.push(a);
        }
    }
    (inst.storage, inst.blob_cache) = storage::build(dir, &src, &name, &f.storage, claims);
    if f.hostnames.is_empty() && f.listen.is_empty() {
        claims.errors.push(src.error_at(
            None,
            "the instance has neither hostnames nor listen addresses, so nothing reaches it",
        ));
    }
    htpasswd(
        dir,
        &src,
        &f.auth,
        require_htpasswd,
        &mut inst,
        &mut claims.errors,
    );
    Some(inst)
}

/// `[auth] htpasswd`: where the instance's users are.
fn htpasswd(
    dir: &Path,
    src: &Source,
    section: &AuthSection,
    require_htpasswd: bool,
    inst: &mut InstanceConfig,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(h) = &section.htpasswd {
        inst.htpasswd = resolve(dir, h.get_ref());
    }
    if require_htpasswd && !inst.htpasswd.is_file() {
        let message = format!(
            "htpasswd file {} does not exist; create a user with `./ctl passwd {} USER` \
             (`./ctl start` and `./ctl reload` create a user admin in a missing file)",
            inst.htpasswd.display(),
            inst.name
        );
        errors.push(match &section.htpasswd {
            Some(h) => src.error_spanned(h, message),
            None => src.error_at(None, message),
        });
    }
}

/// `hostnames`: valid DNS names, each served by one instance only.
fn hostnames(
    src: &Source,
    names: &[Spanned<String>],
    inst: &mut InstanceConfig,
    claims: &mut Claims,
) {
    for h in names {
        let host = h.get_ref();
        if !valid_hostname(host) {
            claims.errors.push(src.error_spanned(
                h,
                format!(
                    "invalid hostname '{host}': use lowercase DNS names such as ci.example.com"
                ),
            ));
            continue;
        }
        let here = src.error_spanned(h, format!("hostname '{host}' is served by two instances"));
        if let Some(prev) = claims.hostnames.get(host) {
            claims.errors.push(ConfigError {
                message: format!("{} (also at {})", here.message, prev.location()),
                ..here
            });
        } else {
            claims.hostnames.insert(
                host.clone(),
                src.error_spanned(h, format!("instance {}", inst.name)),
            );
            inst.hostnames.push(host.clone());
        }
    }
}

/// Whether `name` may name an instance (its file's stem): lowercase
/// letters, digits, `-` and `_`, starting with a letter or digit.
pub fn valid_instance_name(name: &str) -> bool {
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
