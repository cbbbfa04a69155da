//! Parses a request path once into a typed route. Repository names nest to
//! any depth, so the endpoint is found from the right end of the path.

use crate::oci::{Digest, Reference, RegistryError, RepoName};

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    /// A manifest path whose reference is neither a valid tag nor a valid
    /// digest, so that no manifest can have it.
    BadReference(RepoName, BadReference),
    Blob(RepoName, Digest),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, Digest),
}

impl Route {
    /// The repository the route acts on, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(r)
            | Route::Referrers(r, _)
            | Route::Manifest(r, _)
            | Route::BadReference(r, _)
            | Route::Blob(r, _)
            | Route::UploadStart(r)
            | Route::Upload(r, _) => Some(r),
        }
    }

    /// The methods the route is served with, as an `Allow` header says
    /// them; on a read-only instance, those that only read (none, for
    /// the routes of uploads).
    pub fn allow(&self, read_only: bool) -> &'static str {
        match (self, read_only) {
            (Route::Base, _) => "GET, HEAD",
            (Route::Catalog | Route::Tags(_) | Route::Referrers(..), _) => "GET",
            (Route::Manifest(..) | Route::BadReference(..) | Route::Blob(..), true) => "GET, HEAD",
            (Route::Manifest(..) | Route::BadReference(..), false) => "GET, HEAD, PUT, DELETE",
            (Route::Blob(..), false) => "GET, HEAD, DELETE",
            (Route::UploadStart(_) | Route::Upload(..), true) => "",
            (Route::UploadStart(_), false) => "POST",
            (Route::Upload(..), false) => "GET, PATCH, PUT, DELETE",
        }
    }
}

/// A manifest reference that is neither a valid tag nor a valid digest, as
/// the path gave it (percent-encoding and all). Reads and deletes of it find
/// nothing (`MANIFEST_UNKNOWN`, as registry:2, whose routes do not match
/// it); a push under it is refused as an invalid tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReference(String);

impl BadReference {
    /// The path segment as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The reference as text, for messages.
    fn text(&self) -> String {
        percent_encoding::percent_decode_str(&self.0)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// What a read or delete answers: there is no such manifest.
    pub fn unknown(&self) -> RegistryError {
        RegistryError::ManifestUnknown(format!(
            "manifest unknown: '{}' is neither a tag nor a digest",
            self.text()
        ))
    }

    /// What a push answers: a reference with a `:` was meant as a digest.
    pub fn invalid(&self) -> RegistryError {
        let text = self.text();
        if text.contains(':') {
            RegistryError::DigestInvalid(format!("invalid digest '{text}'"))
        } else {
            RegistryError::TagInvalid(format!(
                "invalid tag '{text}': a tag is [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
            ))
        }
    }
}

/// The route of `<repo>/manifests/<segment>`. Only a digest of an algorithm
/// berth does not support stays an error (`UNSUPPORTED`): it is a valid
/// digest, just not one berth stores content under.
fn manifest(repo: RepoName, segment: &str) -> Result<Route, RegistryError> {
    let bad = || Route::BadReference(repo.clone(), BadReference(segment.to_string()));
    let Ok(text) = decode(segment) else {
        return Ok(bad());
    };
    match Reference::parse(&text) {
        Ok(reference) => Ok(Route::Manifest(repo, reference)),
        Err(RegistryError::Unsupported(m)) => Err(RegistryError::Unsupported(m)),
        Err(_) => Ok(bad()),
    }
}

fn not_found(path: &str) -> RegistryError {
    RegistryError::NotFound(format!("{path} is not an endpoint of the registry API"))
}

/// A path segment that carries a reference or digest may be percent-encoded
/// (`sha256%3A...`); repository names never are.
fn decode(segment: &str) -> Result<String, RegistryError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| RegistryError::NameInvalid("path is not valid UTF-8".to_string()))
}

pub fn parse(path: &str) -> Result<Route, RegistryError> {
    let rest = match path.strip_prefix("/v2") {
        Some("" | "/") => return Ok(Route::Base),
        Some(rest) => rest.strip_prefix('/').ok_or_else(|| not_found(path))?,
        None => return Err(not_found(path)),
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |upto: usize| -> Result<RepoName, RegistryError> {
        if upto == 0 {
            return Err(not_found(path));
        }
        RepoName::parse(&segs[..upto].join("/"))
    };
    let tail = |k: usize| segs[n - k..].to_vec();
    if n >= 3 && tail(2) == ["tags", "list"] {
        return Ok(Route::Tags(name(n - 2)?));
    }
    if n >= 4 && tail(3)[..2] == ["blobs", "uploads"] {
        let id = segs[n - 1];
        return Ok(if id.is_empty() {
            Route::UploadStart(name(n - 3)?)
        } else {
            Route::Upload(name(n - 3)?, decode(id)?)
        });
    }
    if n >= 3 && tail(2) == ["blobs", "uploads"] {
        return Ok(Route::UploadStart(name(n - 2)?));
    }
    if n >= 3 {
        let last = segs[n - 1];
        match segs[n - 2] {
            "manifests" => {
                return manifest(name(n - 2)?, last);
            }
            "blobs" => {
                let repo = name(n - 2)?;
                return Ok(Route::Blob(repo, Digest::parse(&decode(last)?)?));
            }
            "referrers" => {
                let repo = name(n - 2)?;
                return Ok(Route::Referrers(repo, Digest::parse(&decode(last)?)?));
            }
            _ => {}
        }
    }
    Err(not_found(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/").unwrap(), Route::Base);
        assert_eq!(parse("/v2").unwrap(), Route::Base);
        assert_eq!(parse("/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            parse("/v2/a/b/c/d/e/f/g/h/tags/list").unwrap(),
            Route::Tags(repo("a/b/c/d/e/f/g/h"))
        );
        assert_eq!(
            parse("/v2/a/b/manifests/latest").unwrap(),
            Route::Manifest(repo("a/b"), Reference::parse("latest").unwrap())
        );
        assert_eq!(
            parse(&format!("/v2/a/manifests/{}", dg().replace(':', "%3A"))).unwrap(),
            Route::Manifest(repo("a"), Reference::parse(&dg()).unwrap())
        );
        assert_eq!(
            parse(&format!("/v2/x/blobs/{}", dg())).unwrap(),
            Route::Blob(repo("x"), Digest::parse(&dg()).unwrap())
        );
        assert_eq!(
            parse("/v2/x/y/blobs/uploads/").unwrap(),
            Route::UploadStart(repo("x/y"))
        );
        assert_eq!(
            parse("/v2/x/y/blobs/uploads").unwrap(),
            Route::UploadStart(repo("x/y"))
        );
        assert_eq!(
            parse("/v2/x/blobs/uploads/abc-1").unwrap(),
            Route::Upload(repo("x"), "abc-1".into())
        );
        assert_eq!(
            parse(&format!("/v2/x/referrers/{}", dg())).unwrap(),
            Route::Referrers(repo("x"), Digest::parse(&dg()).unwrap())
        );
        // Names may contain endpoint words.
        assert_eq!(
            parse("/v2/blobs/manifests/tags/list").unwrap(),
            Route::Tags(repo("blobs/manifests"))
        );
        assert_eq!(
            parse("/v2/manifests/manifests/v1").unwrap(),
            Route::Manifest(repo("manifests"), Reference::parse("v1").unwrap())
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(parse("/v3/"), Err(RegistryError::NotFound(_))));
        assert!(matches!(parse("/v2/foo"), Err(RegistryError::NotFound(_))));
        assert!(matches!(
            parse("/v2/tags/list"),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            parse("/v2/A/tags/list"),
            Err(RegistryError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a/../b/tags/list"),
            Err(RegistryError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/%2e%2e/tags/list"),
            Err(RegistryError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a//b/tags/list"),
            Err(RegistryError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a/blobs/sha256:zz"),
            Err(RegistryError::DigestInvalid(_))
        ));
        assert!(matches!(
            parse(&format!("/v2/a/manifests/sha384:{}", "a".repeat(96))),
            Err(RegistryError::Unsupported(_))
        ));
    }

    #[test]
    fn references_that_name_no_manifest() {
        let long = "a".repeat(129);
        for segment in [
            ".INVALID_MANIFEST_NAME",
            "-bad",
            "bad!",
            "",
            long.as_str(),
            "sha256:zz",
            "sha256%3Azz",
            "%FF",
            "a%2Fb",
        ] {
            let route = parse(&format!("/v2/a/b/manifests/{segment}")).unwrap();
            assert_eq!(
                route,
                Route::BadReference(repo("a/b"), BadReference(segment.to_string())),
                "{segment:?}"
            );
        }
        let bad = BadReference(".INVALID".into());
        assert!(matches!(bad.unknown(), RegistryError::ManifestUnknown(_)));
        assert!(matches!(bad.invalid(), RegistryError::TagInvalid(_)));
        let bad = BadReference("sha256%3Azz".into());
        assert!(matches!(bad.invalid(), RegistryError::DigestInvalid(_)));
        // A repository name is still checked first.
        assert!(matches!(
            parse("/v2/A/manifests/-bad"),
            Err(RegistryError::NameInvalid(_))
        ));
    }
}
