//! The `[limits]` table of an instance, parsed into [`Limits`].

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{parse_size, ConfigError};
use crate::api::Limits;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSection {
    max_blob_size: Option<Spanned<String>>,
    max_upload_sessions: Option<Spanned<usize>>,
}

pub(super) fn build(src: &Source, raw: &LimitsSection, errors: &mut Vec<ConfigError>) -> Limits {
    let mut limits = Limits::default();
    if let Some(v) = &raw.max_blob_size {
        match parse_size(v.get_ref()) {
            Ok(0) => errors.push(src.error_spanned(
                v,
                "limits.max_blob_size must be more than 0 bytes (leave it out for no limit)",
            )),
            Ok(n) => limits.max_blob_size = Some(n),
            Err(e) => errors.push(src.error_spanned(v, format!("limits.max_blob_size: {e}"))),
        }
    }
    if let Some(n) = &raw.max_upload_sessions {
        if *n.get_ref() == 0 {
            errors.push(src.error_spanned(n, "limits.max_upload_sessions must be at least 1"));
        }
        limits.max_upload_sessions = *n.get_ref();
    }
    limits
}
