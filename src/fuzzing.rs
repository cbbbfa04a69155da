//! Property checks over the parsers that read untrusted text, shared by the
//! fuzz targets in `fuzz/` and the corpus replay in `tests/suite/fuzz_corpus.rs`.
//! Each check takes raw input bytes, runs one parser family on them and
//! panics when a property does not hold; an error result is not a failure.

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::api::range;
use crate::api::route::{self, Route};
use crate::auth::htpasswd;
use crate::oci::{media, Digest, Reference, RepoName, Tag};
use crate::registry::manifest::{self, Kind};

/// A check: panics when a property fails on the input.
pub type Check = fn(&[u8]);

/// Every check with the name of its fuzz target and corpus directory.
pub const TARGETS: [(&str, Check); 4] = [
    ("route", check_route),
    ("manifest", check_manifest),
    ("ranges", check_ranges),
    ("htpasswd", check_htpasswd),
];

/// The request path of a route; upload ids are percent-encoded, as they may
/// hold any text.
fn render(route: &Route) -> String {
    match route {
        Route::Base => "/v2/".to_string(),
        Route::Catalog => "/v2/_catalog".to_string(),
        Route::Tags(r) => format!("/v2/{r}/tags/list"),
        Route::Manifest(r, reference) => format!("/v2/{r}/manifests/{reference}"),
        Route::BadReference(r, reference) => format!("/v2/{r}/manifests/{}", reference.as_str()),
        Route::Blob(r, d) => format!("/v2/{r}/blobs/{d}"),
        Route::UploadStart(r) => format!("/v2/{r}/blobs/uploads/"),
        Route::Upload(r, id) => {
            format!(
                "/v2/{r}/blobs/uploads/{}",
                utf8_percent_encode(id, NON_ALPHANUMERIC)
            )
        }
        Route::Referrers(r, d) => format!("/v2/{r}/referrers/{d}"),
    }
}

/// A request path (or a bare name, tag, digest or reference): whatever
/// parses renders back to the same text, and repository names are safe
/// relative paths.
pub fn check_route(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = RepoName::parse(text) {
        assert_eq!(name.as_str(), text);
        assert!(
            name.as_str()
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "{name:?} is not a plain relative path"
        );
    }
    if let Ok(tag) = Tag::parse(text) {
        assert_eq!(tag.as_str(), text);
    }
    if let Ok(digest) = Digest::parse(text) {
        assert_eq!(digest.to_string(), text);
    }
    if let Ok(reference) = Reference::parse(text) {
        assert_eq!(reference.to_string(), text);
    }
    if let Ok(route) = route::parse(text) {
        let path = render(&route);
        assert_eq!(
            route::parse(&path).ok().as_ref(),
            Some(&route),
            "{text:?} renders as {path:?}"
        );
    }
}

/// Whether `media_type` is a manifest type of this kind.
fn is_known_kind(media_type: &str, kind: Kind) -> bool {
    match kind {
        Kind::Image => matches!(media_type, media::OCI_MANIFEST | media::DOCKER_MANIFEST),
        Kind::Index => matches!(media_type, media::OCI_INDEX | media::DOCKER_MANIFEST_LIST),
    }
}

/// `CONTENT-TYPE\nBODY` (an empty first line: no Content-Type). A manifest
/// accepted on push is read back the same way from its bytes alone, as
/// garbage collection, referrers and pulls do: same kind, same references,
/// and the media type served matches.
pub fn check_manifest(data: &[u8]) {
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let Ok(ct) = std::str::from_utf8(ct) else {
        return;
    };
    let ct = (!ct.is_empty()).then_some(ct);
    let stored = manifest::stored_media_type(body);
    let Ok(pushed) = manifest::parse(ct, body) else {
        return;
    };
    assert!(is_known_kind(&pushed.media_type, pushed.kind), "{pushed:?}");
    match pushed.kind {
        Kind::Image => assert!(!pushed.blobs.is_empty() && pushed.children.is_empty()),
        Kind::Index => assert!(pushed.blobs.is_empty()),
    }
    for d in pushed
        .blobs
        .iter()
        .chain(&pushed.children)
        .chain(&pushed.subject)
    {
        assert_eq!(Digest::parse(&d.to_string()).ok().as_ref(), Some(d));
    }
    let read =
        manifest::parse(None, body).expect("an accepted manifest parses without its Content-Type");
    assert_eq!(
        read.kind, pushed.kind,
        "kind changes without the Content-Type"
    );
    assert_eq!(read.blobs, pushed.blobs);
    assert_eq!(read.children, pushed.children);
    assert_eq!(read.subject, pushed.subject);
    assert_eq!(
        stored, pushed.media_type,
        "served media type differs from the pushed one"
    );
}

/// `SIZE\nHEADER`: the header is read both as a `Range` against a blob of
/// SIZE bytes and as an upload's `Content-Range`. Ranges lie within the blob,
/// are not empty, have a length that fits in a u64, and render back to the
/// same range.
pub fn check_ranges(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (size, value) = text.split_once('\n').unwrap_or(("0", text));
    let Ok(size) = size.parse::<u64>() else {
        return;
    };
    if let Ok(Some((first, last))) = range::byte_range(Some(value), size) {
        assert!(first <= last && last < size, "{first}-{last} of {size}");
        let again = range::byte_range(Some(&format!("bytes={first}-{last}")), size);
        assert_eq!(again.ok(), Some(Some((first, last))));
    }
    if let Ok((first, last)) = range::content_range(value) {
        assert!(
            first <= last && (last - first).checked_add(1).is_some(),
            "{value:?}: {first}-{last} has no u64 length"
        );
        for again in [format!("{first}-{last}"), format!("bytes {first}-{last}/*")] {
            assert_eq!(range::content_range(&again).ok(), Some((first, last)));
        }
    }
}

/// An htpasswd file: what loads are well-formed user entries that load the
/// same when written back one per line; errors name a line of the file.
pub fn check_htpasswd(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match htpasswd::parse(text) {
        Ok(users) => {
            let entries: BTreeMap<&str, &str> = users
                .names()
                .map(|u| (u, users.get(u).expect("listed user")))
                .collect();
            let mut written = String::new();
            for (user, hash) in &entries {
                assert!(!user.is_empty() && !user.contains(':'), "{user:?}");
                assert_eq!(hash.len(), 60, "{hash:?}");
                written.push_str(&format!("{user}:{hash}\n"));
            }
            let reread = htpasswd::parse(&written).expect("written entries load");
            let reread: BTreeMap<&str, &str> = reread
                .names()
                .map(|u| (u, reread.get(u).expect("listed user")))
                .collect();
            assert_eq!(reread, entries);
        }
        Err((line, _)) => assert!(
            line >= 1 && line <= text.lines().count(),
            "error on line {line} of {}",
            text.lines().count()
        ),
    }
}
