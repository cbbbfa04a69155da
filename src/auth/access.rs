//! Who may pull, push or delete where: an instance's access rules, as
//! `[access]` sets them, applied to each request.

use serde::Deserialize;

use crate::oci::Pattern;

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

    /// Whether `user` may do `needed` to every repository there is or
    /// will be: each rule for the user up to one for all repositories
    /// (`**`) allows it, and that rule or else `default` does. A rule for
    /// some repositories that allows less makes it `false` even if no
    /// repository matches it now.
    pub fn everywhere(&self, user: Option<&str>, needed: Action) -> bool {
        let Some(user) = user else {
            return self.allowed(None, "") >= needed;
        };
        for r in self
            .rules
            .iter()
            .filter(|r| r.users.iter().any(|p| p.matches(user)))
        {
            if r.allow < needed {
                return false;
            }
            if r.repositories.iter().any(|p| p.text == "**") {
                return true;
            }
        }
        self.default >= needed
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
        assert!(Access::default().everywhere(Some("anyone"), Action::Delete));
        assert!(!open.everywhere(Some("release-1"), Action::Delete));
        assert!(open.everywhere(Some("release-1"), Action::Pull));
        assert!(
            !open.everywhere(Some("alice"), Action::Pull),
            "not secret/**"
        );
        assert!(open.everywhere(None, Action::Pull) && !open.everywhere(None, Action::Push));
        let admins = Access {
            rules: vec![rule(&["admin"], &["**"], Action::Delete)],
            default: Action::Pull,
            ..open
        };
        assert!(admins.everywhere(Some("admin"), Action::Delete));
        assert!(!admins.everywhere(Some("bob"), Action::Delete));
    }
}
