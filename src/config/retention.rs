//! The `[retention]` table of an instance, parsed into [`Retention`].

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;
use crate::oci::Pattern;
use crate::registry::retention::{Retention, Untagged};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionSection {
    max_age: Option<Spanned<String>>,
    unpulled_for: Option<Spanned<String>>,
    keep_last: Option<usize>,
    #[serde(default)]
    protect: Vec<Spanned<String>>,
    repositories: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    untagged: Untagged,
    max_size: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    upload_ttl: Option<Spanned<String>>,
    gc_grace: Option<Spanned<String>>,
}

/// "200GiB", "1.5 TB", "512MiB", "1000" (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as \"200GiB\""))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "tb" => 1000u64.pow(4),
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ))
        }
    };
    Ok((n * factor as f64) as u64)
}

fn duration(
    src: &Source,
    key: &str,
    v: &Option<Spanned<String>>,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    let v = v.as_ref()?;
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(src.error_spanned(
                v,
                format!(
                    "retention.{key}: invalid duration '{}': {e} (e.g. \"14d\", \"12h\")",
                    v.get_ref()
                ),
            ));
            None
        }
    }
}

fn patterns(
    src: &Source,
    key: &str,
    raw: &[Spanned<String>],
    errors: &mut Vec<ConfigError>,
) -> Vec<Pattern> {
    raw.iter()
        .filter_map(|p| {
            Pattern::parse(p.get_ref())
                .map_err(|e| {
                    errors.push(src.error_spanned(
                        p,
                        format!("retention.{key}: invalid pattern '{}': {e}", p.get_ref()),
                    ))
                })
                .ok()
        })
        .collect()
}

pub(super) fn build(
    src: &Source,
    raw: &RetentionSection,
    errors: &mut Vec<ConfigError>,
) -> Retention {
    let defaults = Retention::default();
    if raw.keep_last == Some(0) {
        errors.push(src.error_at(
            None,
            "retention.keep_last must be at least 1 (leave it out to keep no fixed number)",
        ));
    }
    let max_size = raw.max_size.as_ref().and_then(|v| {
        parse_size(v.get_ref())
            .map_err(|e| errors.push(src.error_spanned(v, format!("retention.max_size: {e}"))))
            .ok()
    });
    Retention {
        max_age: duration(src, "max_age", &raw.max_age, errors),
        unpulled_for: duration(src, "unpulled_for", &raw.unpulled_for, errors),
        keep_last: raw.keep_last,
        protect: patterns(src, "protect", &raw.protect, errors),
        repositories: match &raw.repositories {
            Some(r) => patterns(src, "repositories", r, errors),
            None => defaults.repositories,
        },
        untagged: raw.untagged,
        max_size,
        interval: duration(src, "interval", &raw.interval, errors),
        upload_ttl: duration(src, "upload_ttl", &raw.upload_ttl, errors)
            .unwrap_or(defaults.upload_ttl),
        gc_grace: duration(src, "gc_grace", &raw.gc_grace, errors).unwrap_or(defaults.gc_grace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("200GiB").unwrap(), 200 << 30);
        assert_eq!(parse_size("1.5 GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
