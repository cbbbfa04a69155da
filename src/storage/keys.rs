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

pub fn upload(r: &RepoName, id: &str) -> String {
    format!("{}/_uploads/{id}", repo(r))
}

pub fn referrers(r: &RepoName, subject: &Digest) -> String {
    digest_dir(&format!("{}/_referrers", repo(r)), subject)
}

/// The entry of one referrer of a subject.
pub fn referrer_entry(r: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    digest_dir(&referrers(r, subject), referrer)
}

pub fn referrer_link(r: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!("{}/link", referrer_entry(r, subject, referrer))
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
