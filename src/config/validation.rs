//! The `[validation]` table of an instance, parsed into
//! [`ManifestUrls`]: the patterns the URLs of pushed manifests' layers are
//! held to. Without the table, such manifests are taken unchecked.

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;
use crate::registry::urls::ManifestUrls;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ValidationSection {
    #[serde(default)]
    manifest_urls_allow: Vec<Spanned<String>>,
    #[serde(default)]
    manifest_urls_deny: Vec<Spanned<String>>,
}

pub(super) fn build(
    src: &Source,
    raw: &ValidationSection,
    errors: &mut Vec<ConfigError>,
) -> ManifestUrls {
    let mut patterns = |key: &str, list: &[Spanned<String>]| -> Vec<Regex> {
        list.iter()
            .filter_map(|p| match Regex::new(p.get_ref()) {
                Ok(re) => Some(re),
                Err(e) => {
                    let why = e.to_string().replace('\n', " ");
                    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                    errors.push(src.error_spanned(
                        p,
                        format!("validation.{key}: invalid pattern '{}': {why}", p.get_ref()),
                    ));
                    None
                }
            })
            .collect()
    };
    ManifestUrls {
        allow: patterns("manifest_urls_allow", &raw.manifest_urls_allow),
        deny: patterns("manifest_urls_deny", &raw.manifest_urls_deny),
    }
}
