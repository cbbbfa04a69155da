//! What a collection keeps and deletes: retention rules (with pull times
//! from every process on the store), untagged manifests, grace, empty
//! repositories, dry runs.

use super::*;

fn keep_last(n: usize) -> Retention {
    Retention {
        keep_last: Some(n),
        ..Retention::default()
    }
}

async fn gone(reg: &Registry, r: &RepoName, t: &str) -> bool {
    matches!(
        reg.manifest(r, &tag(t)).await,
        Err(RegistryError::ManifestUnknown(_))
    )
}

#[tokio::test]
async fn keep_last_keeps_the_newest_tags_of_each_repository_and_protect_the_rest() {
    let reg = memory();
    let (a, b) = (repo("a"), repo("b/c"));
    let mut images = Vec::new();
    for (r, t) in [
        (&a, "v1"),
        (&a, "v2"),
        (&a, "v3"),
        (&b, "release-1"),
        (&b, "x"),
    ] {
        images.push(push(&reg, r, t, &format!("{r}:{t}")).await.unwrap());
    }
    let mut policy = keep_last(1);
    policy.protect = vec![crate::oci::Pattern::parse("release-*").unwrap()];
    let dry = reg.collect_garbage(&policy, later(), true).await.unwrap();
    assert_eq!(dry.tags, ["a:v1", "a:v2"]);
    assert!(!gone(&reg, &a, "v1").await, "a dry run deleted");
    let report = reg.collect_garbage(&policy, later(), false).await.unwrap();
    assert_eq!(report.tags, dry.tags);
    assert_eq!(report.manifests.len(), 2, "{:?}", report.manifests);
    assert_eq!(report.blobs.len(), 6);
    assert!(gone(&reg, &a, "v1").await && gone(&reg, &a, "v2").await);
    assert_pullable(&reg, &a, "v3", &images[2]).await;
    assert_pullable(&reg, &b, "release-1", &images[3]).await;
    assert_pullable(&reg, &b, "x", &images[4]).await;
}

#[tokio::test]
async fn a_pull_served_by_another_process_keeps_its_tag() {
    let a = memory();
    let b = beside(&a);
    let r = repo("app");
    let pulled = push(&a, &r, "pulled", "p").await.unwrap();
    push(&a, &r, "idle", "i").await.unwrap();
    let now = later();
    // Only B served it, half an hour before the run.
    b.manifest(&r, &tag("pulled")).await.unwrap();
    b.pulls
        .pulled("app:pulled".into(), now - Duration::from_secs(1800));
    b.flush_pulls().await.unwrap();
    let policy = Retention {
        unpulled_for: Some(Duration::from_secs(3600)),
        ..Retention::default()
    };
    let report = a.collect_garbage(&policy, now, false).await.unwrap();
    assert_eq!(report.tags, ["app:idle"]);
    assert_pullable(&a, &r, "pulled", &pulled).await;
}

#[tokio::test]
async fn untagged_manifests_go_after_the_grace_and_empty_repositories_leave_the_catalog() {
    let reg = memory();
    let r = repo("team/app");
    let img = push(&reg, &r, "v1", "untagged").await.unwrap();
    reg.delete_manifest(&r, &tag("v1")).await.unwrap();
    // Within the grace: nothing goes.
    let report = reg
        .collect_garbage(&Retention::default(), SystemTime::now(), false)
        .await
        .unwrap();
    assert!(report.manifests.is_empty() && report.blobs.is_empty());
    // Kept by `untagged = "keep"` whatever its age.
    let keep = Retention {
        untagged: super::super::retention::Untagged::Keep,
        ..Retention::default()
    };
    let report = reg.collect_garbage(&keep, later(), false).await.unwrap();
    assert!(report.manifests.is_empty());
    let report = reg
        .collect_garbage(&Retention::default(), later(), false)
        .await
        .unwrap();
    assert_eq!(report.manifests, [format!("team/app@{}", img.digest)]);
    assert_eq!(report.blobs.len(), 3);
    assert_eq!(report.repositories, ["team/app"]);
    assert!(reg.catalog().await.unwrap().is_empty());
    assert!(matches!(
        reg.blob(&r, &img.blobs[0]).await,
        Err(RegistryError::BlobUnknown(_))
    ));
}

#[tokio::test]
async fn a_tag_moved_during_a_collection_keeps_its_new_manifest() {
    let reg = memory();
    let r = repo("app");
    push(&reg, &r, "latest", "first").await.unwrap();
    let (second, blobs) = image("second");
    for (d, data) in second.blobs.iter().zip(blobs) {
        reg.put_blob(&r, "", d, body(data), None).await.unwrap();
    }
    let policy = keep_last(1);
    let pulls = HashMap::new();
    let run = Run {
        policy: &policy,
        pulls: &pulls,
        now: later(),
        dry_run: false,
    };
    let collection = crate::registry::gc::Collection::begin(&*reg.driver, &reg.coord, &run)
        .await
        .unwrap();
    // The scan saw `latest` on the first image; it moves meanwhile.
    put(&reg, &r, "latest", &second).await.unwrap();
    let report = collection.finish().await.unwrap();
    assert!(report.tags.is_empty(), "{:?}", report.tags);
    assert_pullable(&reg, &r, "latest", &second).await;
}
