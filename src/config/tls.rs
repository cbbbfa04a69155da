//! The `[tls]` table of an instance: where its certificate comes from.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{resolve, ConfigError};

/// Let's Encrypt's production directory, the default ACME server.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    #[serde(rename = "http-01")]
    Http01,
}

/// How an instance gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Tls {
    /// Plain HTTP.
    #[default]
    Off,
    /// Ordered from an ACME server (Let's Encrypt by default), cached under
    /// the state directory and renewed before it expires.
    Acme {
        email: Option<String>,
        directory: String,
        /// Extra root to trust for the ACME server itself.
        ca: Option<PathBuf>,
        challenge: AcmeChallenge,
    },
    /// A PEM chain and key, re-read when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued by berth's own local CA (kept in the state directory), valid
    /// for `lifetime` and renewed by the running server before it ends.
    SelfSigned { lifetime: Duration },
}

/// Default of `[tls] lifetime`: what ACME CAs issue, renewed likewise
/// (a third before the end).
pub const DEFAULT_SELF_SIGNED_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Shortest and longest `[tls] lifetime`.
const LIFETIMES: (Duration, Duration) =
    (Duration::from_secs(5), Duration::from_secs(825 * 24 * 3600));

impl Tls {
    pub fn is_on(&self) -> bool {
        *self != Tls::Off
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Off,
    Acme,
    Files,
    SelfSigned,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    mode: Option<Spanned<Mode>>,
    acme_email: Option<String>,
    acme_directory: Option<Spanned<String>>,
    acme_ca: Option<Spanned<String>>,
    acme_challenge: Option<AcmeChallenge>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    lifetime: Option<Spanned<String>>,
}

/// An existing file named by `key`, or an error at its span.
fn existing_file(
    src: &Source,
    dir: &std::path::Path,
    key: &str,
    value: &Option<Spanned<String>>,
    errors: &mut Vec<ConfigError>,
) -> Option<PathBuf> {
    let Some(v) = value else {
        errors.push(src.error_at(None, format!("tls.{key} is required for this tls.mode")));
        return None;
    };
    let path = resolve(dir, v.get_ref());
    if !path.is_file() {
        errors.push(src.error_spanned(v, format!("tls.{key}: {} does not exist", path.display())));
        return None;
    }
    Some(path)
}

impl TlsSection {
    fn mode(&self) -> Mode {
        self.mode.as_ref().map_or(Mode::Off, |m| *m.get_ref())
    }

    /// Where `tls.mode` is written, for errors about what the mode needs.
    fn mode_offset(&self) -> Option<usize> {
        self.mode.as_ref().map(|m| m.span().start)
    }
}

/// `[tls] lifetime` of a self-signed certificate; the default when absent
/// or invalid (the error is in `errors`).
fn lifetime(
    src: &Source,
    value: &Option<Spanned<String>>,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    let Some(v) = value else {
        return DEFAULT_SELF_SIGNED_LIFETIME;
    };
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) if (LIFETIMES.0..=LIFETIMES.1).contains(&d) => d,
        Ok(_) => {
            errors.push(src.error_spanned(
                v,
                format!(
                    "tls.lifetime must be from {}s to {}d",
                    LIFETIMES.0.as_secs(),
                    LIFETIMES.1.as_secs() / 86400
                ),
            ));
            DEFAULT_SELF_SIGNED_LIFETIME
        }
        Err(e) => {
            errors.push(src.error_spanned(
                v,
                format!(
                    "tls.lifetime: invalid duration '{}': {e} (e.g. \"90d\")",
                    v.get_ref()
                ),
            ));
            DEFAULT_SELF_SIGNED_LIFETIME
        }
    }
}

pub(super) fn build(
    src: &Source,
    dir: &std::path::Path,
    raw: &TlsSection,
    errors: &mut Vec<ConfigError>,
) -> Tls {
    let at = raw.mode_offset();
    let misplaced = |key: &str, set: bool, errors: &mut Vec<ConfigError>| {
        if set {
            errors.push(src.error_at(at, format!("tls.{key} does not apply to this tls.mode")));
        }
    };
    let acme_keys = raw.acme_email.is_some()
        || raw.acme_directory.is_some()
        || raw.acme_ca.is_some()
        || raw.acme_challenge.is_some();
    let mode = raw.mode();
    if mode != Mode::SelfSigned {
        misplaced("lifetime", raw.lifetime.is_some(), errors);
    }
    match mode {
        Mode::Off | Mode::SelfSigned => {
            misplaced("acme_*", acme_keys, errors);
            misplaced("cert/key", raw.cert.is_some() || raw.key.is_some(), errors);
            if mode == Mode::Off {
                Tls::Off
            } else {
                Tls::SelfSigned {
                    lifetime: lifetime(src, &raw.lifetime, errors),
                }
            }
        }
        Mode::Files => {
            misplaced("acme_*", acme_keys, errors);
            let cert = existing_file(src, dir, "cert", &raw.cert, errors);
            let key = existing_file(src, dir, "key", &raw.key, errors);
            match (cert, key) {
                (Some(cert), Some(key)) => Tls::Files { cert, key },
                _ => Tls::Off,
            }
        }
        Mode::Acme => {
            misplaced("cert/key", raw.cert.is_some() || raw.key.is_some(), errors);
            let directory = match &raw.acme_directory {
                Some(d) if !d.get_ref().starts_with("https://") => {
                    errors.push(src.error_spanned(d, "tls.acme_directory must be an https:// URL"));
                    LETS_ENCRYPT.to_string()
                }
                Some(d) => d.get_ref().clone(),
                None => LETS_ENCRYPT.to_string(),
            };
            let ca = raw
                .acme_ca
                .as_ref()
                .and_then(|_| existing_file(src, dir, "acme_ca", &raw.acme_ca, errors));
            if let Some(email) = &raw.acme_email {
                if !email.contains('@') {
                    errors.push(src.error_at(
                        at,
                        format!("tls.acme_email '{email}' is not an e-mail address"),
                    ));
                }
            }
            Tls::Acme {
                email: raw.acme_email.clone(),
                directory,
                ca,
                challenge: raw.acme_challenge.unwrap_or(AcmeChallenge::TlsAlpn01),
            }
        }
    }
}

/// The shared listeners of `berth.toml`, as a TLS instance needs them.
pub(super) struct Shared {
    pub(super) https: bool,
    pub(super) http: bool,
}

/// What a TLS instance needs besides its `[tls]` table: hostnames to issue
/// its certificate for, and a listener that speaks TLS for it (and the one
/// ACME validates on). Errors point at `tls.mode`.
pub(super) fn check_needs(
    src: &Source,
    raw: &TlsSection,
    tls: &Tls,
    shared: Shared,
    has_hostnames: bool,
    has_listen: bool,
    errors: &mut Vec<ConfigError>,
) {
    if !tls.is_on() {
        return;
    }
    let at = raw.mode_offset();
    if !has_hostnames {
        errors.push(src.error_at(
            at,
            "a TLS instance needs hostnames: its certificate is issued for them",
        ));
    }
    if let Tls::Acme { challenge, .. } = tls {
        let (missing, listener) = match challenge {
            AcmeChallenge::TlsAlpn01 => (!shared.https, "https"),
            AcmeChallenge::Http01 => (!shared.http, "http"),
        };
        if missing {
            errors.push(src.error_at(
                at,
                format!("ACME validates this instance over the shared {listener} listener: set [listen] {listener} in berth.toml"),
            ));
        }
    }
    if !shared.https && !has_listen {
        errors.push(src.error_at(
            at,
            "a TLS instance needs [listen] https in berth.toml or listen addresses of its own",
        ));
    }
}
