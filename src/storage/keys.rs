//! CNCF Distribution's storage layout as keys (`/`-separated, relative to
//! the store's root): the one place that knows where things are, for every
//! driver. See the layout in the [`super`] module doc.

use crate::oci::{Digest, RepoName, Tag};

/// Everything registry:2 reads is under this.
pub const V2: &str = "docker/registry/v2";

/// `<base>/<alg>/<hex>`
fn digest_dir(base: &str, d: &Digest) -> String {
    format!("{base}/{}/{}", d.algorithm().as_str(), d.hex())
}

pub fn blobs() -> String {
    format!("{V2}/blobs")
}

/// The directory of a blob: `blobs/<alg>/<hex[0..2]>/<hex>`.
pub fn blob_dir(d: &Digest) -> String {
    let hex = d.hex();
    format!("{V2}/blobs/{}/{}/{hex}", d.algorithm().as_str(), &hex[..2])
}

/// A blob's content.
pub fn blob(d: &Digest) -> String {
    format!("{}/data", blob_dir(d))
}

pub fn repositories() -> String {
    format!("{V2}/repositories")
}

pub fn repo(r: &RepoName) -> String {
    format!("{V2}/repositories/{r}")
}

pub fn layers(r: &RepoName) -> String {
    format!("{}/_layers", repo(r))
}

pub fn layer_link(r: &RepoName, d: &Digest) -> String {
    format!("{}/link", digest_dir(&layers(r), d))
}

pub fn revisions(r: &RepoName) -> String {
    format!("{}/_manifests/revisions", repo(r))
}

pub fn revision_link(r: &RepoName, d: &Digest) -> String {
    format!("{}/link", digest_dir(&revisions(r), d))
}

pub fn tags(r: &RepoName) -> String {
    format!("{}/_manifests/tags", repo(r))
}

pub fn tag(r: &RepoName, t: &Tag) -> String {
    format!("{}/{t}", tags(r))
}

pub fn tag_current_link(r: &RepoName, t: &Tag) -> String {
    format!("{}/current/link", tag(r, t))
}

/// Every manifest a tag had.
pub fn tag_index(r: &RepoName, t: &Tag) -> String {
    format!("{}/index", tag(r, t))
}

/// The entry of one manifest in a tag's history.
pub fn tag_index_entry(r: &RepoName, t: &Tag, d: &Digest) -> String {
    digest_dir(&tag_index(r, t), d)
}

pub fn tag_index_link(r: &RepoName, t: &Tag, d: &Digest) -> String {
    format!("{}/link", tag_index_entry(r, t, d))
}

/// A repository's upload sessions.
pub fn uploads(r: &RepoName) -> String {
    format!("{}/_uploads", repo(r))
}

pub fn upload(r: &RepoName, id: &str) -> String {
    format!("{}/{id}", uploads(r))
}

/// What an upload session received so far.
pub fn upload_data(r: &RepoName, id: &str) -> String {
    format!("{}/data", upload(r, id))
}

/// The subjects of a repository's referrers.
pub fn referrer_subjects(r: &RepoName) -> String {
    format!("{}/_referrers", repo(r))
}

pub fn referrers(r: &RepoName, subject: &Digest) -> String {
    digest_dir(&referrer_subjects(r), subject)
}

/// The entry of one referrer of a subject.
pub fn referrer_entry(r: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    digest_dir(&referrers(r, subject), referrer)
}

pub fn referrer_link(r: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!("{}/link", referrer_entry(r, subject, referrer))
}

/// Where `berth fsck --repair` moves what it takes out of the store:
/// outside `docker/`, so neither registry:2 nor berth serves or collects it.
pub const QUARANTINE: &str = "quarantine";

/// One repair run's quarantine, named after when it began.
pub fn quarantine_run(name: &str) -> String {
    format!("{QUARANTINE}/{name}")
}

/// Where the run `run` keeps the object `key`: under its own key.
pub fn quarantined(run: &str, key: &str) -> String {
    child(run, key)
}

/// What the run `run` did, a line per action.
pub fn quarantine_log(run: &str) -> String {
    format!("{run}/actions.log")
}

/// The key of `name`, a child of `prefix` as a listing gives it.
pub fn child(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}

/// The prefix `key` is listed under ("" at the top).
pub fn parent(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(p, _)| p)
}

/// The last part of `key`: its name in a listing of its [`parent`].
pub fn name(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, n)| n)
}

/// Whether the layout gives `name` to objects only (a blob's or an
/// upload's `data`, a `link`), so that nothing is ever found below it.
pub fn is_object_name(name: &str) -> bool {
    matches!(name, "data" | "link")
}

/// The journal of a running garbage collection: one object per record,
/// and a marker that says the journal is open.
pub const JOURNAL: &str = "berth/gc.journal";
pub const JOURNAL_OPEN: &str = "berth/gc.journal/open";

/// Rewritten by whatever removes repositories, so that running servers
/// walk the catalog again (see `storage::listing`).
pub const REPOSITORIES_CHANGED: &str = "berth/repositories.changed";

/// One heartbeat object per berth process serving the store
/// (`registry::presence`).
pub const PROCESSES: &str = "berth/processes";

/// The ACME account and certificates of the instance the store serves.
pub const ACME: &str = "berth/acme";

/// Rewritten by every write of berth's that creates or removes a tag name
/// of `r`, so that running servers list its tags again (see
/// `storage::listing`). Outside [`V2`]: registry:2 never sees it. The
/// object is `_token` under the repository's name, never the name itself,
/// since a repository's name may be the start of another's (`a`, `a/b`)
/// and a file cannot be a directory too; no name component begins
/// with `_`.
pub fn tags_changed(r: &RepoName) -> String {
    format!("berth/tags.changed/{r}/_token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_distribution() {
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let (r, t, h) = (
            RepoName::parse("a/b").unwrap(),
            Tag::parse("v1").unwrap(),
            "a".repeat(64),
        );
        let repo = "docker/registry/v2/repositories/a/b";
        assert_eq!(
            blob(&d),
            format!("docker/registry/v2/blobs/sha256/aa/{h}/data")
        );
        assert_eq!(
            layer_link(&r, &d),
            format!("{repo}/_layers/sha256/{h}/link")
        );
        assert_eq!(
            revision_link(&r, &d),
            format!("{repo}/_manifests/revisions/sha256/{h}/link")
        );
        assert_eq!(
            tag_current_link(&r, &t),
            format!("{repo}/_manifests/tags/v1/current/link")
        );
        assert_eq!(
            tag_index_link(&r, &t, &d),
            format!("{repo}/_manifests/tags/v1/index/sha256/{h}/link")
        );
        assert_eq!(upload_data(&r, "u1"), format!("{repo}/_uploads/u1/data"));
        assert_eq!(
            referrer_link(&r, &d, &d),
            format!("{repo}/_referrers/sha256/{h}/sha256/{h}/link")
        );
    }

    #[test]
    fn keys_split_and_join_at_slashes() {
        let link = layer_link(
            &RepoName::parse("a/b").unwrap(),
            &Digest::of(crate::oci::Algorithm::Sha256, b""),
        );
        assert_eq!(name(&link), "link");
        assert_eq!(child(parent(&link), name(&link)), link);
        assert_eq!((parent("top"), name("top")), ("", "top"));
        assert_eq!(
            quarantined(&quarantine_run("20240101T000000Z"), "docker/x/data"),
            "quarantine/20240101T000000Z/docker/x/data"
        );
    }
}
