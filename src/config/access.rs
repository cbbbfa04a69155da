//! The `[access]` table of an instance, parsed into [`Access`].

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;
use crate::auth::{Access, Action, Anonymous, Rule};
use crate::oci::Pattern;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessSection {
    #[serde(default)]
    anonymous: Anonymous,
    default: Option<Action>,
    #[serde(default)]
    rule: Vec<RuleSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    users: Vec<Spanned<String>>,
    repositories: Vec<Spanned<String>>,
    allow: Action,
}

fn patterns(src: &Source, raw: &[Spanned<String>], errors: &mut Vec<ConfigError>) -> Vec<Pattern> {
    raw.iter()
        .filter_map(|p| match Pattern::parse(p.get_ref()) {
            Ok(pat) => Some(pat),
            Err(e) => {
                errors
                    .push(src.error_spanned(p, format!("invalid pattern '{}': {e}", p.get_ref())));
                None
            }
        })
        .collect()
}

pub(super) fn build(src: &Source, raw: AccessSection, errors: &mut Vec<ConfigError>) -> Access {
    let rules = raw
        .rule
        .iter()
        .map(|r| Rule {
            users: patterns(src, &r.users, errors),
            repositories: patterns(src, &r.repositories, errors),
            allow: r.allow,
        })
        .collect();
    Access {
        anonymous: raw.anonymous,
        default: raw.default.unwrap_or(Action::Delete),
        rules,
    }
}
