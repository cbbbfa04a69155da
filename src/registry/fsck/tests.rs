//! Runs of [`check`] over stores on the in-memory driver, damaged in each
//! way fsck knows through their keys, checked, repaired and checked again.
//! `tests/suite/fsck.rs` does the same with the `berth` binary on a directory.

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::oci::{media, Algorithm, RepoName, Tag};
use crate::storage::memory::MemDriver;
use crate::storage::tree;

/// The root the reports name.
const ROOT: &str = "/store";

struct Fixture {
    d: MemDriver,
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).unwrap()
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            d: MemDriver::new(),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) {
        self.d
            .put(key, Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        optional(self.d.get(key).await).unwrap()
    }

    async fn link(&self, key: &str, d: &Digest) {
        tree::write_link(&self.d, key, d).await.unwrap();
    }

    async fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, bytes);
        self.put(&keys::blob(&d), bytes).await;
        d
    }

    async fn layer(&self, r: &str, bytes: &[u8]) -> Digest {
        let d = self.blob(bytes).await;
        self.link(&keys::layer_link(&repo(r), &d), &d).await;
        d
    }

    fn desc(d: &Digest, media_type: &str) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": d.to_string(), "size": 1})
    }

    /// Pushes an image (config + layers) and tags it; returns its digest.
    async fn image(&self, r: &str, tag: Option<&str>, layers: &[&[u8]]) -> (Digest, Vec<Digest>) {
        let config = self
            .layer(r, format!("config {}", layers.len()).as_bytes())
            .await;
        let mut layer_digests = Vec::new();
        for l in layers {
            layer_digests.push(self.layer(r, l).await);
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": Self::desc(&config, "application/vnd.oci.image.config.v1+json"),
            "layers": layer_digests.iter().map(|d| Self::desc(d, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
        });
        let d = self
            .manifest(r, tag, &serde_json::to_vec(&m).unwrap())
            .await;
        (d, layer_digests)
    }

    async fn manifest(&self, r: &str, t: Option<&str>, bytes: &[u8]) -> Digest {
        let d = self.blob(bytes).await;
        let r = repo(r);
        self.link(&keys::revision_link(&r, &d), &d).await;
        if let Some(t) = t {
            self.link(&keys::tag_index_link(&r, &tag(t), &d), &d).await;
            self.link(&keys::tag_current_link(&r, &tag(t)), &d).await;
        }
        d
    }

    /// The tags of `r` (what is left under its tags).
    async fn tags(&self, r: &str) -> Vec<String> {
        let mut names = tree::names(&self.d, &keys::tags(&repo(r))).await.unwrap();
        names.sort();
        names
    }

    async fn run(&self, repair: bool) -> Report {
        check(&self.d, ROOT, &Options { repair }, &mut |_| {}).await
    }
}

fn kinds(r: &Report) -> Vec<Kind> {
    r.problems.iter().map(|p| p.kind).collect()
}

#[tokio::test]
async fn clean_store_is_clean() {
    let f = Fixture::new();
    f.image("a/b", Some("v1"), &[b"one", b"two"]).await;
    f.image("c", None, &[b"three"]).await;
    let r = f.run(false).await;
    assert!(r.is_clean(), "{}", r.render("t"));
    assert_eq!(r.repositories, 2);
    assert_eq!(r.manifests, 2);
    assert_eq!(r.tags, 1);
    assert_eq!(r.blobs, 7);
    assert!(r.leftovers.is_empty());
    let text = r.render("t");
    assert!(text.contains("t: /store: 7 blob(s)"), "{text}");
    assert!(text.contains("no problems"), "{text}");
}

#[tokio::test]
async fn empty_store_is_clean() {
    let r = Fixture::new().run(false).await;
    assert!(r.is_clean());
    assert_eq!(r.unresolved(), 0);
    assert_eq!(r.notes, ["/store holds no registry data yet"]);
}

#[tokio::test]
async fn corrupt_blob_is_quarantined_and_its_image_unlinked() {
    let f = Fixture::new();
    let (m, layers) = f.image("app", Some("latest"), &[b"layer bytes"]).await;
    let key = keys::blob(&layers[0]);
    f.put(&key, b"layer bytez").await;

    let r = f.run(false).await;
    assert_eq!(
        kinds(&r),
        [Kind::CorruptBlob, Kind::DanglingLink, Kind::BrokenManifest],
        "{}",
        r.render("t")
    );
    assert_eq!(r.problems[0].key, key);
    assert!(r.problems.iter().all(|p| p.status == Status::Found));
    assert!(
        f.get(&key).await.is_some(),
        "checking alone changes nothing"
    );

    let r = f.run(true).await;
    assert_eq!(r.unresolved(), 0, "{}", r.render("t"));
    let q = r.quarantine.clone().unwrap();
    assert!(q.starts_with("quarantine/"), "{q}");
    let moved = keys::quarantined(&q, &key);
    assert_eq!(f.get(&moved).await.unwrap(), "layer bytez");
    assert!(f.get(&key).await.is_none());
    assert!(r.problems[0]
        .action
        .contains(&format!("moved to /store/{moved}")));
    let log = f.get(&keys::quarantine_log(&q)).await.unwrap();
    let log = String::from_utf8_lossy(&log);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(
        log.contains("corrupt-blob: /store/docker/") && log.contains(&m.to_string()),
        "{log}"
    );
    let app = repo("app");
    assert!(f.get(&keys::revision_link(&app, &m)).await.is_none());
    assert!(f.tags("app").await.is_empty());
    assert!(
        f.get(&keys::blob(&m)).await.is_some(),
        "manifest bytes are kept"
    );

    let r = f.run(false).await;
    assert!(r.is_clean(), "{}", r.render("t"));
}

#[tokio::test]
async fn a_second_repair_run_has_its_own_quarantine() {
    let f = Fixture::new();
    let one = f.layer("app", b"one").await;
    let two = f.layer("app", b"two").await;
    f.put(&keys::blob(&one), b"0ne").await;
    let first = f.run(true).await.quarantine.unwrap();
    f.put(&keys::blob(&two), b"tw0").await;
    let second = f.run(true).await.quarantine.unwrap();
    assert_ne!(first, second);
    for (run, d) in [(&first, &one), (&second, &two)] {
        let log = f.get(&keys::quarantine_log(run)).await.unwrap();
        let log = String::from_utf8_lossy(&log);
        // The corrupt blob, then its dangling layer link.
        assert_eq!(log.lines().count(), 2, "{log}");
        assert!(log.contains(&d.to_string()), "{log}");
        assert!(f
            .get(&keys::quarantined(run, &keys::blob(d)))
            .await
            .is_some());
    }
}

#[tokio::test]
async fn dangling_links_and_tags_are_removed() {
    let f = Fixture::new();
    let lone = f.layer("app", b"lone layer").await;
    let (m, _) = f.image("app", Some("v1"), &[b"x"]).await;
    let app = repo("app");
    f.d.delete(&keys::blob(&lone)).await.unwrap();
    // A tag whose revision is gone.
    let ghost = Digest::of(Algorithm::Sha256, b"never stored");
    let gone = keys::tag_current_link(&app, &tag("gone"));
    f.link(&gone, &ghost).await;

    let r = f.run(false).await;
    let found: Vec<&str> = r.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(found.contains(&keys::layer_link(&app, &lone).as_str()));
    assert!(found.contains(&gone.as_str()));
    assert_eq!(r.unresolved(), 2, "{}", r.render("t"));

    let r = f.run(true).await;
    assert_eq!(r.unresolved(), 0);
    assert!(f.get(&keys::layer_link(&app, &lone)).await.is_none());
    assert_eq!(f.tags("app").await, ["v1"]);
    assert!(f.get(&keys::revision_link(&app, &m)).await.is_some());
    assert!(f.run(false).await.is_clean());
}

#[tokio::test]
async fn revision_without_blob_takes_its_tag_and_index_with_it() {
    let f = Fixture::new();
    let (child, _) = f.image("app", None, &[b"c"]).await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [Fixture::desc(&child, media::OCI_MANIFEST)],
    });
    let idx = f
        .manifest("app", Some("multi"), &serde_json::to_vec(&index).unwrap())
        .await;
    f.d.delete(&keys::blob(&child)).await.unwrap();
    let r = f.run(false).await;
    assert_eq!(
        kinds(&r),
        [Kind::DanglingLink, Kind::BrokenManifest],
        "{}",
        r.render("t")
    );
    assert!(r.problems[1].detail.contains(&idx.to_string()));
    assert!(r.problems[1].detail.contains("multi"));
    f.run(true).await;
    assert!(f
        .get(&keys::revision_link(&repo("app"), &idx))
        .await
        .is_none());
    assert!(f.tags("app").await.is_empty());
    assert!(f.run(false).await.is_clean());
}

#[tokio::test]
async fn unlinked_but_intact_layer_is_linked_again() {
    let f = Fixture::new();
    let (_, layers) = f.image("app", Some("v1"), &[b"l"]).await;
    let link = keys::layer_link(&repo("app"), &layers[0]);
    f.d.delete(&link).await.unwrap();
    let r = f.run(false).await;
    assert_eq!(kinds(&r), [Kind::MissingLink]);
    assert_eq!(r.problems[0].key, link);
    f.run(true).await;
    assert!(f.get(&link).await.is_some());
    assert!(f.run(false).await.is_clean());
}

#[tokio::test]
async fn wrong_link_content_is_rewritten() {
    let f = Fixture::new();
    let d = f.layer("app", b"l").await;
    let link = keys::layer_link(&repo("app"), &d);
    f.put(&link, b"garbage").await;
    let r = f.run(false).await;
    assert_eq!(kinds(&r), [Kind::BadLink]);
    f.run(true).await;
    assert_eq!(tree::read_link(&f.d, &link).await.unwrap(), Some(d));
    assert!(f.run(false).await.is_clean());
}

#[tokio::test]
async fn temp_files_and_uploads_are_no_problems() {
    let f = Fixture::new();
    let (m, _) = f.image("app", Some("v1"), &[b"l"]).await;
    let app = repo("app");
    let tmp = keys::child(
        keys::parent(&keys::revision_link(&app, &m)),
        ".link.0123abcd.tmp",
    );
    f.put(&tmp, b"sha256:").await;
    let blob_tmp = keys::child(keys::parent(&keys::blob(&m)), ".data.feed.tmp");
    f.put(&blob_tmp, b"{").await;
    f.put(&keys::upload_data(&app, "sess"), b"12345").await;
    // A crash between creating an upload and its data.
    let crashed = keys::upload(&app, "crashed");
    f.put(&keys::child(&crashed, "startedat"), b"2024-01-01T00:00:00Z")
        .await;

    let r = f.run(false).await;
    assert!(r.is_clean(), "{}", r.render("t"));
    let found: Vec<(LeftoverKind, &str, u64)> = r
        .leftovers
        .iter()
        .map(|l| (l.kind, l.key.as_str(), l.bytes))
        .collect();
    assert_eq!(
        found,
        [
            (LeftoverKind::TempFile, blob_tmp.as_str(), 1),
            (LeftoverKind::TempFile, tmp.as_str(), 7),
            (LeftoverKind::UploadWithoutData, crashed.as_str(), 0),
        ],
        "sorted as paths"
    );
    assert_eq!((r.upload_sessions, r.upload_bytes), (1, 5));
    let text = r.render("t");
    assert!(
        text.contains(&format!("leftover temp-file: /store/{tmp} (7 bytes")),
        "{text}"
    );
    assert!(f.get(&tmp).await.is_some());

    let r = f.run(true).await;
    assert!(r.leftovers.iter().all(|l| l.removed));
    assert!(r.quarantine.is_none(), "removing leftovers is not logged");
    assert!(f.get(&tmp).await.is_none() && f.get(&blob_tmp).await.is_none());
    assert!(tree::names(&f.d, &crashed).await.unwrap().is_empty());
    let data = keys::upload_data(&app, "sess");
    assert!(f.get(&data).await.is_some(), "sessions stay resumable");
    let r = f.run(false).await;
    assert!(r.is_clean() && r.leftovers.is_empty(), "{}", r.render("t"));
}

#[tokio::test]
async fn dangling_referrer_is_removed() {
    let f = Fixture::new();
    let (subject, _) = f.image("app", Some("v1"), &[b"l"]).await;
    let ghost = Digest::of(Algorithm::Sha256, b"no such referrer");
    let link = keys::referrer_link(&repo("app"), &subject, &ghost);
    f.link(&link, &ghost).await;
    let r = f.run(false).await;
    assert_eq!(kinds(&r), [Kind::DanglingLink]);
    assert_eq!(r.problems[0].key, link);
    f.run(true).await;
    assert!(f.get(&link).await.is_none());
    assert!(f.run(false).await.is_clean());
}

#[tokio::test]
async fn hashing_reports_progress() {
    let f = Fixture::new();
    let big = vec![7u8; (3 << 20) + 5];
    f.layer("app", &big).await;
    let mut last = None;
    let r = check(&f.d, ROOT, &Options::default(), &mut |p| {
        if p.phase == Phase::Blobs {
            last = Some(*p);
        }
    })
    .await;
    assert!(r.is_clean());
    let p = last.unwrap();
    assert_eq!((p.done, p.total), (1, 1));
    assert_eq!(p.bytes_done, big.len() as u64);
    assert_eq!(p.bytes_total, big.len() as u64);
}

#[tokio::test]
async fn sha512_blobs_are_verified() {
    let f = Fixture::new();
    let d = Digest::of(Algorithm::Sha512, b"five twelve");
    f.put(&keys::blob(&d), b"five twelve").await;
    assert!(f.run(false).await.is_clean());
    f.put(&keys::blob(&d), b"five twelvE").await;
    assert_eq!(kinds(&f.run(false).await), [Kind::CorruptBlob]);
}

#[tokio::test]
async fn what_is_no_digest_is_noted() {
    let f = Fixture::new();
    f.layer("app", b"l").await;
    f.put(&format!("{}/md5/ab/abcd/data", keys::blobs()), b"x")
        .await;
    let layers = keys::layers(&repo("app"));
    f.put(&format!("{layers}/sha256/nothex/link"), b"x").await;
    let r = f.run(false).await;
    assert!(r.is_clean(), "{}", r.render("t"));
    assert_eq!(
        r.notes,
        [
            format!(
                "/store/{}/md5: not a digest algorithm berth knows; not verified",
                keys::blobs()
            ),
            format!("/store/{layers}/sha256/nothex: not a digest directory; ignored"),
        ]
    );
}
