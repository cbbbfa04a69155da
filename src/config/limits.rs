//! The `[limits]` table of an instance: how much one client may upload and
//! how many upload sessions one user may hold open.

use serde::Deserialize;
use toml::Spanned;

use super::{parse_size, ConfigError, Source};

/// An instance's limits on uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest blob a client may upload; `None`: no limit.
    pub max_blob_size: Option<u64>,
    /// Upload sessions one user may hold open at once.
    pub max_upload_sessions: usize,
}

/// Default of `[limits] max_upload_sessions`: a push opens a few sessions at
/// a time (docker: 3 by default, at most 5), so 100 leaves room for a user
/// running many pushes in parallel plus abandoned sessions that wait for
/// their `upload_ttl`.
pub const DEFAULT_MAX_UPLOAD_SESSIONS: usize = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_size: None,
            max_upload_sessions: DEFAULT_MAX_UPLOAD_SESSIONS,
        }
    }
}

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
