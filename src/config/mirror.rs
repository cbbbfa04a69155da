//! The `[mirror]` table of an instance, parsed into a
//! [`MirrorSpec`]: its `[[mirror.upstream]]` entries (with their
//! credentials files, read here and never logged), `[mirror.cache]` and
//! `allow_push`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{resolve, ConfigError};
use crate::upstream::{Credentials, MirrorSpec, UpstreamSpec, DEFAULT_TAG_TTL};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MirrorSection {
    #[serde(default)]
    upstream: Vec<Spanned<UpstreamSection>>,
    #[serde(default)]
    cache: CacheSection,
    allow_push: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSection {
    registry: Spanned<String>,
    url: Spanned<String>,
    prefix: Option<Spanned<String>>,
    credentials_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CacheSection {
    tag_ttl: Option<Spanned<String>>,
    serve_stale: Option<bool>,
}

pub(super) fn build(
    dir: &Path,
    src: &Source,
    raw: &Spanned<MirrorSection>,
    errors: &mut Vec<ConfigError>,
) -> MirrorSpec {
    let section = raw.get_ref();
    if section.upstream.is_empty() {
        errors.push(src.error_spanned(
            raw,
            "[mirror] needs at least one [[mirror.upstream]] with registry and url",
        ));
    }
    let mut upstreams: Vec<UpstreamSpec> = Vec::new();
    for entry in &section.upstream {
        let u = entry.get_ref();
        let Some(spec) = upstream(dir, src, u, errors) else {
            continue;
        };
        if let Some(prev) = upstreams.iter().find(|p| p.prefix == spec.prefix) {
            errors.push(src.error_spanned(
                entry,
                format!(
                    "prefix \"{}\" is already that of the upstream {}",
                    spec.prefix, prev.registry
                ),
            ));
            continue;
        }
        if upstreams.iter().any(|p| p.registry == spec.registry) {
            errors.push(src.error_spanned(
                &u.registry,
                format!("registry {} is mirrored twice", spec.registry),
            ));
            continue;
        }
        upstreams.push(spec);
    }
    let tag_ttl = match &section.cache.tag_ttl {
        Some(v) => match humantime::parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                errors.push(src.error_spanned(
                    v,
                    format!(
                        "mirror.cache.tag_ttl: invalid duration '{}': {e} (e.g. \"10m\")",
                        v.get_ref()
                    ),
                ));
                DEFAULT_TAG_TTL
            }
        },
        None => DEFAULT_TAG_TTL,
    };
    let allow_push = section.allow_push.unwrap_or(false);
    if let Some(all) = upstreams.iter().find(|u| u.prefix.is_empty()) {
        if allow_push {
            errors.push(src.error_spanned(
                raw,
                format!(
                    "mirror.allow_push: every repository maps to the upstream {} (its prefix is \"\"), \
                     so none could take pushes; give it a prefix",
                    all.registry
                ),
            ));
        }
    }
    MirrorSpec {
        upstreams,
        tag_ttl,
        serve_stale: section.cache.serve_stale.unwrap_or(true),
        allow_push,
    }
}

fn upstream(
    dir: &Path,
    src: &Source,
    u: &UpstreamSection,
    errors: &mut Vec<ConfigError>,
) -> Option<UpstreamSpec> {
    let registry = u.registry.get_ref();
    let mut ok = true;
    if registry.is_empty() || registry.contains(['/', ' ']) {
        errors.push(src.error_spanned(
            &u.registry,
            format!(
                "mirror.upstream.registry '{registry}': expected a registry name such as docker.io"
            ),
        ));
        ok = false;
    }
    let url = u.url.get_ref().trim_end_matches('/');
    let valid_url = ["http://", "https://"].iter().any(|s| {
        url.strip_prefix(s)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    });
    if !valid_url {
        errors.push(src.error_spanned(
            &u.url,
            format!(
                "mirror.upstream.url '{}': expected http(s)://HOST[:PORT] such as https://registry-1.docker.io",
                u.url.get_ref()
            ),
        ));
        ok = false;
    }
    let prefix = u.prefix.as_ref().map_or("", |p| p.get_ref().as_str());
    let bad_prefix = !prefix.is_empty()
        && (!prefix.ends_with('/')
            || crate::oci::RepoName::parse(prefix.trim_end_matches('/')).is_err());
    if let (Some(at), true) = (&u.prefix, bad_prefix) {
        errors.push(src.error_spanned(
            at,
            format!("mirror.upstream.prefix '{prefix}': expected \"\" or a repository path ending in '/', such as \"ghcr/\""),
        ));
        ok = false;
    }
    let credentials = match &u.credentials_file {
        Some(f) => match credentials(&resolve(dir, f.get_ref())) {
            Ok(c) => Some(c),
            Err(why) => {
                errors
                    .push(src.error_spanned(f, format!("mirror.upstream.credentials_file: {why}")));
                ok = false;
                None
            }
        },
        None => None,
    };
    ok.then(|| UpstreamSpec {
        registry: registry.clone(),
        url: url.to_string(),
        prefix: prefix.to_string(),
        credentials,
    })
}

/// `user:password` on the first line of a file only its owner may read.
fn credentials(path: &Path) -> Result<Credentials, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} may be read by others (mode {mode:o}); `chmod 600 {shown}`"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let line = text.lines().next().unwrap_or("").trim();
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        }),
        _ => Err(format!("{shown}: expected one line USER:PASSWORD")),
    }
}
