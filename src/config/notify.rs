//! The `[[notify]]` tables of an instance: webhook endpoints, with their
//! headers (inline, or from a `headers_file` of `Name: value` lines, mode
//! 0600, for secrets), timeout, the events they want and the media types
//! they do not.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::resolve;
use super::source::Source;
use super::ConfigError;
use crate::notify::{Action, Endpoint};

/// `timeout` when not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifySection {
    url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    headers_file: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    events: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    ignore_media_types: Vec<String>,
}

/// The endpoints of `sections`; problems go to `errors`.
pub(super) fn build(
    dir: &Path,
    src: &Source,
    sections: &[NotifySection],
    errors: &mut Vec<ConfigError>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for n in sections {
        let url = n.url.get_ref();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errors.push(
                src.error_spanned(&n.url, format!("notify.url '{url}' is not an http(s) URL")),
            );
            continue;
        }
        let mut headers: Vec<(String, String)> = n.headers.clone().into_iter().collect();
        if let Some(f) = &n.headers_file {
            let path = resolve(dir, f.get_ref());
            match read_headers(&path) {
                Ok(h) => headers.extend(h),
                Err(why) => {
                    errors.push(src.error_spanned(
                        f,
                        format!("notify.headers_file {}: {why}", path.display()),
                    ));
                }
            }
        }
        let timeout = match &n.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => match humantime::parse_duration(t.get_ref()) {
                Ok(d) if d > Duration::ZERO => d,
                _ => {
                    errors.push(src.error_spanned(
                        t,
                        format!("notify.timeout: invalid duration '{}'", t.get_ref()),
                    ));
                    DEFAULT_TIMEOUT
                }
            },
        };
        let actions = match &n.events {
            None => vec![Action::Push, Action::Mount, Action::Delete, Action::Gc],
            Some(list) => {
                let mut actions = Vec::new();
                for e in list.get_ref() {
                    match Action::parse(e) {
                        Some(a) => actions.push(a),
                        None => errors.push(src.error_spanned(
                            list,
                            format!("notify.events: unknown event '{e}': one of \"push\", \"mount\", \"pull\", \"delete\", \"gc\""),
                        )),
                    }
                }
                actions
            }
        };
        out.push(Endpoint {
            url: url.clone(),
            headers,
            timeout,
            actions,
            ignore_media_types: n.ignore_media_types.clone(),
        });
    }
    out
}

/// `Name: value` lines (blank lines and `#` comments skipped) of a file
/// only its owner may read.
fn read_headers(path: &Path) -> Result<Vec<(String, String)>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err("must not be readable by others (chmod 600)".into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("line {} is not 'Name: value'", i + 1));
        };
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}
