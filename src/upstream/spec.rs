//! What a mirror instance is configured to mirror: its upstreams (which
//! registry, where, under which prefix of this instance, with which
//! credentials) and its cache policy. Plain values: `config` builds them,
//! [`super::Upstreams`] and the registry apply them.

use std::fmt;
use std::time::Duration;

/// `[mirror]` of an instance file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    pub upstreams: Vec<UpstreamSpec>,
    /// How long a tag's digest is trusted before it is checked upstream.
    pub tag_ttl: Duration,
    /// Whether cached tags are served while their upstream cannot be reached.
    pub serve_stale: bool,
    /// Whether repositories that map to no upstream take pushes.
    pub allow_push: bool,
}

/// Default of `[mirror.cache] tag_ttl`.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(600);

/// One `[[mirror.upstream]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The name clients use for it (`docker.io`, `ghcr.io`): containerd's
    /// `?ns=` and the messages name it.
    pub registry: String,
    /// Base URL, without a trailing slash (`https://registry-1.docker.io`).
    pub url: String,
    /// Repositories of this instance that map to it: `PREFIX` + the
    /// upstream's name; "" takes every repository no other prefix takes.
    pub prefix: String,
    pub credentials: Option<Credentials>,
}

impl UpstreamSpec {
    /// Whether this is Docker Hub, whose one-component names live under
    /// `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == "docker.io"
            || self.registry == "registry-1.docker.io"
            || self.url.ends_with("://registry-1.docker.io")
    }
}

/// A user and password (or token) for an upstream. Never printed: its
/// `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl MirrorSpec {
    /// The upstream a repository of this instance maps to, with the
    /// repository's name there: the longest matching prefix wins, and
    /// Docker Hub's one-component names get `library/`.
    pub fn route<'a>(&'a self, repo: &str) -> Option<(&'a UpstreamSpec, String)> {
        let up = self
            .upstreams
            .iter()
            .filter(|u| repo.starts_with(&u.prefix) && repo.len() > u.prefix.len())
            .max_by_key(|u| u.prefix.len())?;
        let name = &repo[up.prefix.len()..];
        let name = if up.is_docker_hub() && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        Some((up, name))
    }

    /// The repository of this instance that containerd means by `repo`
    /// with `?ns=registry`: the upstream's prefix before it.
    pub fn namespaced(&self, ns: &str, repo: &str) -> Option<String> {
        let up = self.upstreams.iter().find(|u| u.registry == ns)?;
        Some(format!("{}{repo}", up.prefix))
    }

    /// The registries mirrored, for messages: "docker.io, ghcr.io".
    pub fn registries(&self) -> String {
        let names: Vec<&str> = self.upstreams.iter().map(|u| u.registry.as_str()).collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(registry: &str, prefix: &str) -> UpstreamSpec {
        UpstreamSpec {
            registry: registry.into(),
            url: format!("https://{registry}"),
            prefix: prefix.into(),
            credentials: None,
        }
    }

    fn spec() -> MirrorSpec {
        MirrorSpec {
            upstreams: vec![up("docker.io", ""), up("ghcr.io", "ghcr/")],
            tag_ttl: DEFAULT_TAG_TTL,
            serve_stale: true,
            allow_push: false,
        }
    }

    #[test]
    fn routes_by_longest_prefix_with_the_library_rule() {
        let s = spec();
        let (u, name) = s.route("alpine").unwrap();
        assert_eq!(
            (u.registry.as_str(), name.as_str()),
            ("docker.io", "library/alpine")
        );
        let (u, name) = s.route("library/alpine").unwrap();
        assert_eq!(
            (u.registry.as_str(), name.as_str()),
            ("docker.io", "library/alpine")
        );
        let (u, name) = s.route("ghcr/owner/app").unwrap();
        assert_eq!(
            (u.registry.as_str(), name.as_str()),
            ("ghcr.io", "owner/app")
        );
        // No library rule away from Docker Hub.
        let (_, name) = s.route("ghcr/app").unwrap();
        assert_eq!(name, "app");
        let only_ghcr = MirrorSpec {
            upstreams: vec![up("ghcr.io", "ghcr/")],
            ..spec()
        };
        assert!(only_ghcr.route("local/thing").is_none());
    }

    #[test]
    fn namespaces_and_hidden_credentials() {
        let s = spec();
        assert_eq!(
            s.namespaced("ghcr.io", "owner/app").unwrap(),
            "ghcr/owner/app"
        );
        assert_eq!(
            s.namespaced("docker.io", "library/alpine").unwrap(),
            "library/alpine"
        );
        assert!(s.namespaced("quay.io", "x").is_none());
        assert_eq!(s.registries(), "docker.io, ghcr.io");
        let c = Credentials {
            user: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
