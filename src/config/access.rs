//! The `[access]` table of an instance: who may pull, push or delete where.

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

/// What a user may do to a repository; each level includes the ones below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    None,
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// What clients without credentials may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    #[default]
    None,
    Pull,
}

/// A glob: `*` and `?` stay within one path segment, `**` crosses segments.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    matcher: globset::GlobMatcher,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty pattern".to_string());
        }
        let glob = globset::GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }

    /// Whether the pattern names one thing only (no wildcard).
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?', '[', '{', '\\'])
    }
}

/// One `[[access.rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub users: Vec<Pattern>,
    pub repositories: Vec<Pattern>,
    pub allow: Action,
}

/// An instance's access policy. The first rule whose users and repositories
/// both match decides; without one, `default` does.
#[derive(Debug, Clone)]
pub struct Access {
    pub anonymous: Anonymous,
    pub default: Action,
    pub rules: Vec<Rule>,
}

impl Default for Access {
    /// Without an `[access]` table every user may do everything, as with
    /// registry:2's htpasswd.
    fn default() -> Self {
        Access {
            anonymous: Anonymous::None,
            default: Action::Delete,
            rules: Vec::new(),
        }
    }
}

impl Access {
    /// The most `user` may do to `repo`. `user` is `None` for a client
    /// without credentials.
    pub fn allowed(&self, user: Option<&str>, repo: &str) -> Action {
        let Some(user) = user else {
            return match self.anonymous {
                Anonymous::Pull => Action::Pull,
                Anonymous::None => Action::None,
            };
        };
        let rule = self.rules.iter().find(|r| {
            r.users.iter().any(|p| p.matches(user))
                && r.repositories.iter().any(|p| p.matches(repo))
        });
        rule.map_or(self.default, |r| r.allow)
    }

    pub fn permits(&self, user: Option<&str>, repo: &str, needed: Action) -> bool {
        self.allowed(user, repo) >= needed
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(users: &[&str], repos: &[&str], allow: Action) -> Rule {
        Rule {
            users: users.iter().map(|u| Pattern::parse(u).unwrap()).collect(),
            repositories: repos.iter().map(|r| Pattern::parse(r).unwrap()).collect(),
            allow,
        }
    }

    #[test]
    fn globs() {
        let p = Pattern::parse("releases/**").unwrap();
        assert!(p.matches("releases/a") && p.matches("releases/a/b/c"));
        assert!(!p.matches("other/releases/a"));
        let p = Pattern::parse("team/*").unwrap();
        assert!(p.matches("team/app") && !p.matches("team/app/sub"));
        assert!(Pattern::parse("**").unwrap().matches("a/b/c"));
        assert!(Pattern::parse("release-*").unwrap().matches("release-bot"));
        assert!(Pattern::parse("[a").is_err());
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("ci-bot").unwrap().is_literal());
        assert!(!Pattern::parse("ci-*").unwrap().is_literal());
    }

    #[test]
    fn first_matching_rule_decides() {
        let a = Access {
            anonymous: Anonymous::None,
            default: Action::Push,
            rules: vec![
                rule(&["ci-bot"], &["**"], Action::Pull),
                rule(&["release-*"], &["releases/**"], Action::Delete),
                rule(&["release-*"], &["**"], Action::Pull),
                rule(&["alice"], &["secret/**"], Action::None),
            ],
        };
        assert_eq!(a.allowed(Some("ci-bot"), "releases/x"), Action::Pull);
        assert_eq!(a.allowed(Some("release-1"), "releases/x"), Action::Delete);
        assert_eq!(a.allowed(Some("release-1"), "base/x"), Action::Pull);
        assert_eq!(a.allowed(Some("alice"), "base/x"), Action::Push);
        assert_eq!(a.allowed(None, "base/x"), Action::None);
        assert!(a.permits(Some("alice"), "x", Action::Pull));
        assert!(!a.permits(Some("alice"), "x", Action::Delete));
        assert!(!a.permits(Some("alice"), "secret/x", Action::Pull));
        let open = Access {
            anonymous: Anonymous::Pull,
            ..a
        };
        assert_eq!(open.allowed(None, "base/x"), Action::Pull);
        assert!(!open.permits(None, "base/x", Action::Push));
        assert_eq!(
            Access::default().allowed(Some("anyone"), "x"),
            Action::Delete
        );
    }
}
