//! The `[http]` table of an instance: `headers` added to every response
//! of the instance (API, errors, web UI), parsed into header names and
//! values; the server adds them.

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;

/// Headers that say how a message is framed or routed: set by the HTTP
/// layer for each response, never by configuration.
const FRAMING: [&str; 8] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSection {
    #[serde(default)]
    headers: BTreeMap<Spanned<String>, Spanned<String>>,
}

pub(super) fn build(
    src: &Source,
    raw: &HttpSection,
    errors: &mut Vec<ConfigError>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (name, value) in &raw.headers {
        let header = match HeaderName::from_bytes(name.get_ref().as_bytes()) {
            Ok(h) if FRAMING.contains(&h.as_str()) => {
                errors.push(src.error_spanned(
                    name,
                    format!(
                        "http.headers: {} is set by the server for each response",
                        name.get_ref()
                    ),
                ));
                continue;
            }
            Ok(h) => h,
            Err(_) => {
                errors.push(src.error_spanned(
                    name,
                    format!("http.headers: '{}' is not a header name", name.get_ref()),
                ));
                continue;
            }
        };
        match HeaderValue::from_str(value.get_ref()) {
            Ok(v) => out.push((header, v)),
            Err(_) => errors.push(src.error_spanned(
                value,
                format!(
                    "http.headers.{}: a header value is visible ASCII, spaces and tabs",
                    name.get_ref()
                ),
            )),
        }
    }
    out
}
