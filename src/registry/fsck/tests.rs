//! Runs of [`check`] over stores damaged in each way fsck knows, checked,
//! repaired and checked again.

use super::blobs::BUF;
use super::*;
use crate::oci::{media, RepoName, Tag};
use crate::storage;
use serde_json::json;

struct Fixture {
    dir: tempfile::TempDir,
    store: FsStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        fs::create_dir_all(store.blobs_dir()).unwrap();
        Fixture { dir, store }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, bytes);
        self.store.write_blob(&d, bytes).unwrap();
        d
    }

    fn layer(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = self.blob(bytes);
        let repo = RepoName::parse(repo).unwrap();
        storage::write_link(&self.store.layer_link(&repo, &d), &d).unwrap();
        d
    }

    fn desc(d: &Digest, media_type: &str) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": d.to_string(), "size": 1})
    }

    /// Pushes an image (config + layers) and tags it; returns its digest.
    fn image(&self, repo: &str, tag: Option<&str>, layers: &[&[u8]]) -> (Digest, Vec<Digest>) {
        let config = self.layer(repo, format!("config {}", layers.len()).as_bytes());
        let layer_digests: Vec<Digest> = layers.iter().map(|l| self.layer(repo, l)).collect();
        let m = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": Self::desc(&config, "application/vnd.oci.image.config.v1+json"),
            "layers": layer_digests.iter().map(|d| Self::desc(d, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
        });
        let d = self.manifest(repo, tag, &serde_json::to_vec(&m).unwrap());
        (d, layer_digests)
    }

    fn manifest(&self, repo: &str, tag: Option<&str>, bytes: &[u8]) -> Digest {
        let d = self.blob(bytes);
        let repo = RepoName::parse(repo).unwrap();
        storage::write_link(&self.store.revision_link(&repo, &d), &d).unwrap();
        if let Some(tag) = tag {
            let tag = Tag::parse(tag).unwrap();
            storage::write_link(&self.store.tag_index_link(&repo, &tag, &d), &d).unwrap();
            storage::write_link(&self.store.tag_current_link(&repo, &tag), &d).unwrap();
        }
        d
    }

    fn run(&self, repair: bool) -> Report {
        check(self.root(), &Options { repair }, &mut |_| {})
    }
}

fn kinds(r: &Report) -> Vec<Kind> {
    r.problems.iter().map(|p| p.kind).collect()
}

#[test]
fn clean_store_is_clean() {
    let f = Fixture::new();
    f.image("a/b", Some("v1"), &[b"one", b"two"]);
    f.image("c", None, &[b"three"]);
    let r = f.run(false);
    assert!(r.is_clean(), "{}", r.render("t"));
    assert_eq!(r.repositories, 2);
    assert_eq!(r.manifests, 2);
    assert_eq!(r.tags, 1);
    assert_eq!(r.blobs, 7);
    assert!(r.leftovers.is_empty());
    assert!(r.render("t").contains("no problems"));
}

#[test]
fn missing_root_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let r = check(
        &dir.path().join("nothing"),
        &Options::default(),
        &mut |_| {},
    );
    assert!(r.is_clean());
    assert_eq!(r.unresolved(), 0);
}

#[test]
fn corrupt_blob_is_quarantined_and_its_image_unlinked() {
    let f = Fixture::new();
    let (m, layers) = f.image("app", Some("latest"), &[b"layer bytes"]);
    let path = f.store.blob_path(&layers[0]);
    fs::write(&path, b"layer bytez").unwrap();

    let r = f.run(false);
    assert_eq!(
        kinds(&r),
        [Kind::CorruptBlob, Kind::DanglingLink, Kind::BrokenManifest],
        "{}",
        r.render("t")
    );
    assert_eq!(r.problems[0].path, path);
    assert!(r.problems.iter().all(|p| p.status == Status::Found));
    assert!(path.is_file(), "checking alone changes nothing");

    let r = f.run(true);
    assert_eq!(r.unresolved(), 0, "{}", r.render("t"));
    let q = r.quarantine.clone().unwrap();
    assert!(q.starts_with(f.root().join(QUARANTINE_DIR)));
    let moved = q.join(path.strip_prefix(f.root()).unwrap());
    assert_eq!(fs::read(&moved).unwrap(), b"layer bytez");
    assert!(!path.exists());
    let log = fs::read_to_string(q.join("actions.log")).unwrap();
    assert!(
        log.contains("corrupt-blob") && log.contains(&m.to_string()),
        "{log}"
    );
    let repo = RepoName::parse("app").unwrap();
    assert!(!f.store.revision_link(&repo, &m).exists());
    assert_eq!(f.store.list_tags(&repo).unwrap(), Some(vec![]));
    assert!(f.store.blob_path(&m).is_file(), "manifest bytes are kept");

    let r = f.run(false);
    assert!(r.is_clean(), "{}", r.render("t"));
}

#[test]
fn dangling_links_and_tags_are_removed() {
    let f = Fixture::new();
    let lone = f.layer("app", b"lone layer");
    let (m, _) = f.image("app", Some("v1"), &[b"x"]);
    let repo = RepoName::parse("app").unwrap();
    fs::remove_file(f.store.blob_path(&lone)).unwrap();
    // A tag whose revision is gone.
    let tag = Tag::parse("gone").unwrap();
    let ghost = Digest::of(Algorithm::Sha256, b"never stored");
    storage::write_link(&f.store.tag_current_link(&repo, &tag), &ghost).unwrap();

    let r = f.run(false);
    let paths: Vec<&Path> = r.problems.iter().map(|p| p.path.as_path()).collect();
    assert!(paths.contains(&f.store.layer_link(&repo, &lone).as_path()));
    assert!(paths.contains(&f.store.tag_current_link(&repo, &tag).as_path()));
    assert_eq!(r.unresolved(), 2, "{}", r.render("t"));

    let r = f.run(true);
    assert_eq!(r.unresolved(), 0);
    assert!(!f.store.layer_link(&repo, &lone).exists());
    assert_eq!(f.store.list_tags(&repo).unwrap(), Some(vec!["v1".into()]));
    assert!(f.store.revision_link(&repo, &m).is_file());
    assert!(f.run(false).is_clean());
}

#[test]
fn revision_without_blob_takes_its_tag_and_index_with_it() {
    let f = Fixture::new();
    let (child, _) = f.image("app", None, &[b"c"]);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [Fixture::desc(&child, media::OCI_MANIFEST)],
    });
    let idx = f.manifest("app", Some("multi"), &serde_json::to_vec(&index).unwrap());
    fs::remove_file(f.store.blob_path(&child)).unwrap();
    let r = f.run(false);
    assert_eq!(
        kinds(&r),
        [Kind::DanglingLink, Kind::BrokenManifest],
        "{}",
        r.render("t")
    );
    assert!(r.problems[1].detail.contains(&idx.to_string()));
    assert!(r.problems[1].detail.contains("multi"));
    f.run(true);
    let repo = RepoName::parse("app").unwrap();
    assert!(!f.store.revision_link(&repo, &idx).exists());
    assert_eq!(f.store.list_tags(&repo).unwrap(), Some(vec![]));
    assert!(f.run(false).is_clean());
}

#[test]
fn unlinked_but_intact_layer_is_linked_again() {
    let f = Fixture::new();
    let (_, layers) = f.image("app", Some("v1"), &[b"l"]);
    let repo = RepoName::parse("app").unwrap();
    let link = f.store.layer_link(&repo, &layers[0]);
    fs::remove_file(&link).unwrap();
    let r = f.run(false);
    assert_eq!(kinds(&r), [Kind::MissingLink]);
    assert_eq!(r.problems[0].path, link);
    f.run(true);
    assert!(link.is_file());
    assert!(f.run(false).is_clean());
}

#[test]
fn wrong_link_content_is_rewritten() {
    let f = Fixture::new();
    let d = f.layer("app", b"l");
    let repo = RepoName::parse("app").unwrap();
    let link = f.store.layer_link(&repo, &d);
    fs::write(&link, b"garbage").unwrap();
    let r = f.run(false);
    assert_eq!(kinds(&r), [Kind::BadLink]);
    f.run(true);
    assert_eq!(storage::read_link(&link).unwrap(), Some(d));
    assert!(f.run(false).is_clean());
}

#[test]
fn temp_files_and_uploads_are_no_problems() {
    let f = Fixture::new();
    let (m, _) = f.image("app", Some("v1"), &[b"l"]);
    let repo = RepoName::parse("app").unwrap();
    let link_dir = f.store.revision_link(&repo, &m);
    let tmp = link_dir.parent().unwrap().join(".link.0123abcd.tmp");
    fs::write(&tmp, b"sha256:").unwrap();
    let blob_tmp = f
        .store
        .blob_path(&m)
        .parent()
        .unwrap()
        .join(".data.feed.tmp");
    fs::write(&blob_tmp, b"{").unwrap();
    let session = f.store.upload_dir(&repo, "sess");
    fs::create_dir_all(&session).unwrap();
    fs::write(session.join("data"), b"12345").unwrap();
    let empty = f.store.upload_dir(&repo, "crashed");
    fs::create_dir_all(&empty).unwrap();

    let r = f.run(false);
    assert!(r.is_clean(), "{}", r.render("t"));
    assert_eq!(r.leftovers.len(), 3, "{}", r.render("t"));
    assert_eq!((r.upload_sessions, r.upload_bytes), (1, 5));
    let text = r.render("t");
    assert!(text.contains(&tmp.display().to_string()), "{text}");
    assert!(tmp.exists());

    let r = f.run(true);
    assert!(r.leftovers.iter().all(|l| l.removed));
    assert!(!tmp.exists() && !blob_tmp.exists() && !empty.exists());
    assert!(session.join("data").exists(), "sessions stay resumable");
    let r = f.run(false);
    assert!(r.is_clean() && r.leftovers.is_empty(), "{}", r.render("t"));
}

#[test]
fn dangling_referrer_is_removed() {
    let f = Fixture::new();
    let (subject, _) = f.image("app", Some("v1"), &[b"l"]);
    let repo = RepoName::parse("app").unwrap();
    let ghost = Digest::of(Algorithm::Sha256, b"no such referrer");
    let link = f.store.referrer_link(&repo, &subject, &ghost);
    storage::write_link(&link, &ghost).unwrap();
    let r = f.run(false);
    assert_eq!(kinds(&r), [Kind::DanglingLink]);
    assert_eq!(r.problems[0].path, link);
    f.run(true);
    assert!(!link.exists());
    assert!(f.run(false).is_clean());
}

#[test]
fn hashing_streams_and_reports_progress() {
    let f = Fixture::new();
    let big = vec![7u8; 3 * BUF + 5];
    f.layer("app", &big);
    let mut last = None;
    let r = check(f.root(), &Options::default(), &mut |p| {
        if p.phase == Phase::Blobs {
            last = Some(*p);
        }
    });
    assert!(r.is_clean());
    let p = last.unwrap();
    assert_eq!((p.done, p.total), (1, 1));
    assert_eq!(p.bytes_done, big.len() as u64);
    assert_eq!(p.bytes_total, big.len() as u64);
}

#[test]
fn sha512_blobs_are_verified() {
    let f = Fixture::new();
    let d = Digest::of(Algorithm::Sha512, b"five twelve");
    f.store.write_blob(&d, b"five twelve").unwrap();
    assert!(f.run(false).is_clean());
    fs::write(f.store.blob_path(&d), b"five twelvE").unwrap();
    assert_eq!(kinds(&f.run(false)), [Kind::CorruptBlob]);
}
