//! Which URLs the layers of a pushed manifest may carry (an instance's
//! `[validation]`): layers with `urls` (non-distributable layers) are
//! fetched by clients from elsewhere, so a registry open to pushes would
//! otherwise send its pullers wherever a pusher chose. Owns that rule;
//! the manifest's parsing is `manifest`'s, where it applies is `put_manifest`.

use regex::Regex;

use crate::oci::RegistryError;

/// `manifest_urls_allow` / `manifest_urls_deny`: a URL passes when it is
/// `http(s)://` without a fragment, matches an allow pattern and no deny
/// pattern (patterns match anywhere unless anchored, as registry:2's).
#[derive(Debug, Clone, Default)]
pub struct ManifestUrls {
    pub allow: Vec<Regex>,
    pub deny: Vec<Regex>,
}

impl ManifestUrls {
    /// Refuses the manifest whose layers carry `urls` unless every one passes.
    pub fn check<'a>(&self, urls: impl IntoIterator<Item = &'a str>) -> Result<(), RegistryError> {
        for url in urls {
            let why = if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.contains('#')
            {
                "is not an http(s) URL without a fragment"
            } else if !self.allow.iter().any(|r| r.is_match(url)) {
                "matches no pattern of manifest_urls_allow"
            } else if self.deny.iter().any(|r| r.is_match(url)) {
                "matches a pattern of manifest_urls_deny"
            } else {
                continue;
            };
            return Err(RegistryError::ManifestInvalid(format!(
                "layer URL '{url}' {why}; this registry refuses it"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> ManifestUrls {
        let re = |p: &[&str]| p.iter().map(|p| Regex::new(p).unwrap()).collect();
        ManifestUrls {
            allow: re(allow),
            deny: re(deny),
        }
    }

    #[test]
    fn every_url_must_be_allowed_and_none_denied() {
        let r = rules(
            &[r"^https?://([^/]+\.)*example\.com/"],
            &[r"^https?://www\.example\.com/"],
        );
        assert!(r.check([]).is_ok());
        assert!(r.check(["https://cdn.example.com/l"]).is_ok());
        for bad in [
            "https://www.example.com/l",
            "https://example.org/l",
            "ftp://cdn.example.com/l",
            "https://cdn.example.com/l#frag",
        ] {
            let e = r.check(["https://cdn.example.com/ok", bad]).unwrap_err();
            assert_eq!(e.code(), "MANIFEST_INVALID");
            assert!(e.to_string().contains(bad), "{e}");
        }
        // An empty allow list allows nothing, as registry:2's default.
        assert!(rules(&[], &[]).check(["https://a.test/"]).is_err());
    }
}
