//! The `[storage]` table of an instance, parsed into a
//! [`Location`]: a directory (`driver = "filesystem"`, the default) or a
//! bucket (`driver = "s3"`), checked against the stores other instances
//! already claim, and an S3 `credentials_file` read (never shown).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::retention::parse_size;
use super::source::Source;
use super::{resolve, roots, Claims, ConfigError};
use crate::storage::cache::CacheSpec;
use crate::storage::location::Location;
use crate::storage::s3::{self, Credentials, S3Options};

/// Storage drivers an instance may name.
const DRIVERS: [&str; 2] = ["filesystem", "s3"];

/// Default of `redirect_expiry` (as registry:2's).
const DEFAULT_REDIRECT_EXPIRY: Duration = Duration::from_secs(20 * 60);
/// Longest a SigV4 presigned URL may live.
const MAX_REDIRECT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Region when none is given (AWS's default; most other stores ignore it).
const DEFAULT_REGION: &str = "us-east-1";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct StorageSection {
    driver: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
    bucket: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    path_style: Option<Spanned<bool>>,
    part_size: Option<Spanned<String>>,
    parallel_parts: Option<Spanned<usize>>,
    credentials_file: Option<Spanned<String>>,
    redirect: Option<Spanned<bool>>,
    redirect_expiry: Option<Spanned<String>>,
    cache: Option<Spanned<String>>,
    cache_dir: Option<Spanned<String>>,
}

impl StorageSection {
    /// The keys of the S3 driver that are set, with where.
    fn s3_keys(&self) -> Vec<(&'static str, usize)> {
        let mut keys = Vec::new();
        let mut add = |name, at: Option<usize>| {
            if let Some(at) = at {
                keys.push((name, at));
            }
        };
        add("bucket", self.bucket.as_ref().map(|v| v.span().start));
        add("endpoint", self.endpoint.as_ref().map(|v| v.span().start));
        add("region", self.region.as_ref().map(|v| v.span().start));
        add("prefix", self.prefix.as_ref().map(|v| v.span().start));
        add(
            "path_style",
            self.path_style.as_ref().map(|v| v.span().start),
        );
        add("part_size", self.part_size.as_ref().map(|v| v.span().start));
        add(
            "parallel_parts",
            self.parallel_parts.as_ref().map(|v| v.span().start),
        );
        add(
            "credentials_file",
            self.credentials_file.as_ref().map(|v| v.span().start),
        );
        add("redirect", self.redirect.as_ref().map(|v| v.span().start));
        add(
            "redirect_expiry",
            self.redirect_expiry.as_ref().map(|v| v.span().start),
        );
        add("cache", self.cache.as_ref().map(|v| v.span().start));
        add("cache_dir", self.cache_dir.as_ref().map(|v| v.span().start));
        keys
    }
}

/// Reads `[storage]` for the instance `name` of the config dir `dir`: the
/// store, and where this host keeps copies of its blobs, if it does.
pub(super) fn build(
    dir: &Path,
    src: &Source,
    name: &str,
    section: &StorageSection,
    claims: &mut Claims,
) -> (Location, Option<CacheSpec>) {
    let driver = section
        .driver
        .as_ref()
        .map_or("filesystem", |d| d.get_ref());
    if let Some(d) = &section.driver {
        if !DRIVERS.contains(&d.get_ref().as_str()) {
            claims.errors.push(src.error_spanned(
                d,
                format!(
                    "unknown storage driver '{}': one of {}",
                    d.get_ref(),
                    DRIVERS.map(|d| format!("\"{d}\"")).join(", ")
                ),
            ));
        }
    }
    if driver == "s3" {
        if let Some(root) = &section.root {
            claims.errors.push(src.error_spanned(
                root,
                "storage.root is for driver \"filesystem\"; an s3 instance has bucket and prefix",
            ));
        }
        let cache = cache(dir, src, name, section, claims);
        return (s3(dir, src, section, claims), cache);
    }
    for (key, span) in section.s3_keys() {
        claims.errors.push(src.error_at(
            Some(span),
            format!("storage.{key} is for driver \"s3\" (this instance stores in a directory)"),
        ));
    }
    let root = match &section.root {
        Some(root) => resolve(dir, root.get_ref()),
        None => resolve(dir, &format!("data/{name}")),
    };
    let at = match &section.root {
        Some(r) => src.error_spanned(r, "storage root"),
        None => src.error_at(None, "storage root"),
    };
    directory_claim(at, &root, claims);
    (Location::Filesystem(root), None)
}

/// Claims the directory `root`, what `at` says it is (its message) and
/// where: it may overlap no directory of another instance.
fn directory_claim(at: ConfigError, root: &Path, claims: &mut Claims) {
    let claimed = roots::Root::new(root);
    for (other, other_at) in &claims.roots {
        if let Some(how) = claimed.overlap(other) {
            claims.errors.push(ConfigError {
                message: format!(
                    "{} {} overlaps the {} {} of another instance ({}){how}; each instance needs its own",
                    at.message,
                    root.display(),
                    other_at.message,
                    other.written().display(),
                    other_at.location()
                ),
                ..at.clone()
            });
        }
    }
    claims.roots.push((claimed, at));
}

/// `cache` and `cache_dir` of an S3 instance: how many bytes of copies of
/// its blobs this host keeps, and where (`state/cache/NAME` unless set);
/// `None` without `cache` or with `cache = "0"`.
fn cache(
    dir: &Path,
    src: &Source,
    name: &str,
    section: &StorageSection,
    claims: &mut Claims,
) -> Option<CacheSpec> {
    let Some(size) = &section.cache else {
        if let Some(d) = &section.cache_dir {
            claims.errors.push(src.error_spanned(
                d,
                "storage.cache_dir needs storage.cache (how much the cache may hold)",
            ));
        }
        return None;
    };
    let max_bytes = match parse_size(size.get_ref()) {
        Ok(n) => n,
        Err(e) => {
            claims
                .errors
                .push(src.error_spanned(size, format!("storage.cache: {e}")));
            return None;
        }
    };
    if max_bytes == 0 {
        return None;
    }
    let (cache_dir, at) = match &section.cache_dir {
        Some(d) => (
            resolve(dir, d.get_ref()),
            src.error_spanned(d, "blob cache directory"),
        ),
        None => (
            resolve(dir, &format!("state/cache/{name}")),
            src.error_spanned(size, "blob cache directory"),
        ),
    };
    directory_claim(at, &cache_dir, claims);
    Some(CacheSpec {
        dir: cache_dir,
        max_bytes,
    })
}

fn s3(dir: &Path, src: &Source, section: &StorageSection, claims: &mut Claims) -> Location {
    let errors = &mut claims.errors;
    let bucket = match &section.bucket {
        Some(b) if valid_bucket(b.get_ref()) => b.get_ref().clone(),
        Some(b) => {
            errors.push(src.error_spanned(
                b,
                format!(
                    "storage.bucket '{}' is not a bucket name (3-63 lowercase letters, digits, '.' or '-')",
                    b.get_ref()
                ),
            ));
            String::new()
        }
        None => {
            errors.push(src.error_at(None, "driver \"s3\" needs storage.bucket"));
            String::new()
        }
    };
    let endpoint = section.endpoint.as_ref().and_then(|e| {
        let text = e.get_ref().trim_end_matches('/');
        match url_ok(text) {
            Ok(()) if text.is_empty() => None,
            Ok(()) => Some(text.to_string()),
            Err(why) => {
                errors.push(src.error_spanned(e, format!("storage.endpoint: {why}")));
                None
            }
        }
    });
    let region = match &section.region {
        Some(r) if r.get_ref().trim().is_empty() => {
            errors.push(src.error_spanned(r, "storage.region is empty"));
            String::new()
        }
        Some(r) => r.get_ref().clone(),
        None => DEFAULT_REGION.to_string(),
    };
    let prefix = section
        .prefix
        .as_ref()
        .map(|p| p.get_ref().trim_matches('/').to_string())
        .unwrap_or_default();
    if let Some(p) = &section.prefix {
        if prefix
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
            && !prefix.is_empty()
        {
            errors.push(src.error_spanned(
                p,
                "storage.prefix must be path segments (no empty, '.' or '..' ones)",
            ));
        }
    }
    let part_size = match &section.part_size {
        Some(v) => match parse_size(v.get_ref()) {
            Ok(n) if (s3::MIN_PART_SIZE..=s3::MAX_PART_SIZE).contains(&n) => n,
            Ok(_) => {
                errors.push(src.error_spanned(
                    v,
                    "storage.part_size must be from 5MiB to 5GiB (what S3 takes)",
                ));
                s3::DEFAULT_PART_SIZE
            }
            Err(e) => {
                errors.push(src.error_spanned(v, format!("storage.part_size: {e}")));
                s3::DEFAULT_PART_SIZE
            }
        },
        None => s3::DEFAULT_PART_SIZE,
    };
    let parallel_parts = match &section.parallel_parts {
        Some(n) if (1..=64).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            errors.push(src.error_spanned(n, "storage.parallel_parts must be from 1 to 64"));
            s3::DEFAULT_PARALLEL_PARTS
        }
        None => s3::DEFAULT_PARALLEL_PARTS,
    };
    let credentials = section.credentials_file.as_ref().and_then(|f| {
        let path = resolve(dir, f.get_ref());
        match read_credentials(&path) {
            Ok(c) => Some(c),
            Err(why) => {
                errors.push(src.error_spanned(
                    f,
                    format!("storage.credentials_file {}: {why}", path.display()),
                ));
                None
            }
        }
    });
    let expiry = match &section.redirect_expiry {
        Some(v) => match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) && d <= MAX_REDIRECT_EXPIRY => d,
            Ok(_) => {
                errors.push(src.error_spanned(
                    v,
                    "storage.redirect_expiry must be from 1s to 7d (what a signed URL may last)",
                ));
                DEFAULT_REDIRECT_EXPIRY
            }
            Err(e) => {
                errors.push(src.error_spanned(
                    v,
                    format!(
                        "storage.redirect_expiry: invalid duration '{}': {e}",
                        v.get_ref()
                    ),
                ));
                DEFAULT_REDIRECT_EXPIRY
            }
        },
        None => DEFAULT_REDIRECT_EXPIRY,
    };
    let opts = S3Options {
        path_style: section
            .path_style
            .as_ref()
            .map_or(endpoint.is_some(), |v| *v.get_ref()),
        bucket,
        endpoint,
        region,
        prefix,
        part_size,
        parallel_parts,
        credentials,
        redirect: section
            .redirect
            .as_ref()
            .is_some_and(|r| *r.get_ref())
            .then_some(expiry),
    };
    bucket_claim(src, section, &opts, claims);
    Location::S3(opts)
}

/// Claims the bucket and prefix: no other instance may store under it,
/// above it or at it.
fn bucket_claim(src: &Source, section: &StorageSection, opts: &S3Options, claims: &mut Claims) {
    let at = match &section.prefix {
        Some(p) => src.error_spanned(p, "storage prefix"),
        None => src.error_at(None, "storage bucket"),
    };
    let store = format!(
        "{}\n{}",
        opts.endpoint.as_deref().unwrap_or(""),
        opts.bucket
    );
    for (other_store, other_prefix, other_err) in &claims.buckets {
        let nested = |a: &str, b: &str| a.is_empty() || b == a || b.starts_with(&format!("{a}/"));
        if *other_store == store
            && (nested(other_prefix, &opts.prefix) || nested(&opts.prefix, other_prefix))
        {
            claims.errors.push(ConfigError {
                message: format!(
                    "{} overlaps the store of another instance ({}); each instance needs its own prefix",
                    opts.describe(),
                    other_err.location()
                ),
                ..at.clone()
            });
        }
    }
    claims.buckets.push((store, opts.prefix.clone(), at));
}

/// S3's rules for bucket names (those of new buckets on AWS).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether `text` is an `http(s)://host[:port][/path]` URL.
fn url_ok(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("'{text}' is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || host.contains(char::is_whitespace) {
        return Err(format!("'{text}' has no host"));
    }
    Ok(())
}

/// Reads an AWS shared-credentials file (`[default]` with
/// `aws_access_key_id`, `aws_secret_access_key`, optionally
/// `aws_session_token`), readable by its owner only.
fn read_credentials(path: &Path) -> Result<Credentials, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "is readable by others (mode {:o}); chmod 600 it",
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut section = None;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected key = value", n + 1));
        };
        if section.as_deref().is_some_and(|s| s != "default") {
            continue;
        }
        let v = Some(v.trim().to_string());
        match k.trim() {
            "aws_access_key_id" => key_id = v,
            "aws_secret_access_key" => secret = v,
            "aws_session_token" => token = v,
            _ => {}
        }
    }
    match (key_id, secret) {
        (Some(key_id), Some(secret)) if !key_id.is_empty() && !secret.is_empty() => {
            Ok(Credentials {
                key_id,
                secret,
                token,
            })
        }
        _ => {
            Err("needs aws_access_key_id and aws_secret_access_key in its [default] section".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        assert!(valid_bucket("berth-ci.images"));
        assert!(!valid_bucket("ab"));
        assert!(!valid_bucket("Berth"));
        assert!(!valid_bucket("-berth"));
    }

    #[test]
    fn credentials_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        std::fs::write(
            &p,
            "# keys\n[other]\naws_access_key_id = X\n[default]\naws_access_key_id = GK1\naws_secret_access_key = s3cr3t\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_credentials(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = read_credentials(&p).unwrap();
        assert_eq!((c.key_id.as_str(), c.secret.as_str()), ("GK1", "s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        std::fs::write(&p, "[default]\naws_access_key_id = GK1\n").unwrap();
        assert!(read_credentials(&p)
            .unwrap_err()
            .contains("aws_secret_access_key"));
    }
}
