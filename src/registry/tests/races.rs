//! Races between requests and garbage collection: deterministic
//! interleavings (a collection stopped between its scan and its sweep
//! while requests run), and many random ones.

use super::*;
use crate::registry::fsck;
use crate::registry::gc::Collection;

#[tokio::test]
async fn a_tag_pushed_to_an_old_untagged_manifest_during_a_collection_stays() {
    for grace in [Duration::from_secs(3600), Duration::ZERO] {
        let reg = memory();
        let r = repo("app");
        let img = push(&reg, &r, "old", "m").await.unwrap();
        reg.delete_manifest(&r, &tag("old")).await.unwrap();
        let (policy, pulls) = (policy(grace), HashMap::new());
        let run = run_at_later(&policy, &pulls);
        let collection = Collection::begin(&*reg.driver, &reg.coord, &run)
            .await
            .unwrap();
        // Between the scan (which found the manifest untagged and old) and
        // the sweep, it is tagged again.
        put(&reg, &r, "promoted", &img).await.unwrap();
        let report = collection.finish().await.unwrap();
        assert!(report.manifests.is_empty(), "{:?}", report.manifests);
        assert_eq!(report.blobs.len(), 0);
        assert_pullable(&reg, &r, "promoted", &img).await;
        // Untagged again, the next run takes it.
        reg.delete_manifest(&r, &tag("promoted")).await.unwrap();
        let report = crate::registry::gc::run(&*reg.driver, &reg.coord, &run)
            .await
            .unwrap();
        assert_eq!(report.manifests, [format!("app@{}", img.digest)]);
        assert_eq!(report.blobs.len(), 3);
    }
}

#[tokio::test]
async fn blobs_and_index_children_written_during_a_collection_stay() {
    let reg = memory();
    let r = repo("app");
    let (child, child_blobs) = image("child");
    let (other, other_blobs) = image("other");
    for (img, blobs) in [(&child, &child_blobs), (&other, &other_blobs)] {
        for (d, data) in img.blobs.iter().zip(blobs) {
            reg.put_blob(&r, "", d, body(data.clone()), None)
                .await
                .unwrap();
        }
        reg.put_manifest(
            &r,
            &Reference::Digest(img.digest.clone()),
            Some(OCI_MANIFEST),
            img.manifest.clone(),
            None,
        )
        .await
        .unwrap();
    }
    let (policy, pulls) = (policy(Duration::ZERO), HashMap::new());
    let run = run_at_later(&policy, &pulls);
    let collection = Collection::begin(&*reg.driver, &reg.coord, &run)
        .await
        .unwrap();
    // An index over the first untagged manifest, and a fresh upload of
    // one of the second's blobs, both after the scan.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.digest.to_string(), "size": child.manifest.len()}],
    })
    .to_string();
    reg.put_manifest(
        &r,
        &tag("multi"),
        Some("application/vnd.oci.image.index.v1+json"),
        Bytes::from(index),
        None,
    )
    .await
    .unwrap();
    let again = other.blobs[1].clone();
    reg.put_blob(&r, "", &again, body(other_blobs[1].clone()), None)
        .await
        .unwrap();
    let report = collection.finish().await.unwrap();
    assert_eq!(report.manifests, [format!("app@{}", other.digest)]);
    reg.manifest(&r, &Reference::Digest(child.digest.clone()))
        .await
        .unwrap();
    for b in &child.blobs {
        reg.blob(&r, b).await.unwrap();
    }
    reg.blob(&r, &again).await.unwrap();
    assert!(reg.blob(&r, &other.blobs[0]).await.is_err());
}

/// Operations of a stress run: `BERTH_STRESS_OPS`, or a short run.
fn stress_ops() -> usize {
    std::env::var("BERTH_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

/// Workers push, re-tag old manifests and delete tags (each its own tags,
/// so that what it was told is what must be there) while collections run
/// back to back with the clock past the grace; at the end every tag whose
/// last write was acknowledged is pullable and `fsck` finds nothing.
async fn stress(grace: Duration) {
    use rand::Rng;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const WORKERS: usize = 6;
    let reg = Arc::new(memory());
    let repos = [repo("a"), repo("b/c")];
    let ops = stress_ops();
    let done = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let collector = {
        let (reg, done, runs) = (reg.clone(), done.clone(), runs.clone());
        let policy = policy(grace);
        tokio::spawn(async move {
            let pulls = HashMap::new();
            while !done.load(Ordering::Relaxed) {
                let run = run_at_later(&policy, &pulls);
                crate::registry::gc::run(&*reg.driver, &reg.coord, &run)
                    .await
                    .unwrap();
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let pool: Arc<parking_lot::Mutex<Vec<(usize, Image)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (reg, pool, repos) = (reg.clone(), pool.clone(), repos.clone());
        workers.push(tokio::spawn(async move {
            let mut model: HashMap<(usize, String), Image> = HashMap::new();
            let mut refused = 0;
            for op in 0..ops / WORKERS {
                let (ri, t, choice, pick) = {
                    let mut rng = rand::rng();
                    let ri = rng.random_range(0..repos.len());
                    let t = format!("w{w}-{}", rng.random_range(0..8));
                    (
                        ri,
                        t,
                        rng.random_range(0..10),
                        rng.random_range(0..usize::MAX),
                    )
                };
                let r = &repos[ri];
                let result = match choice {
                    0..=3 => push(&reg, r, &t, &format!("{w}-{op}")).await,
                    4..=6 => {
                        let old = {
                            let pool = pool.lock();
                            let same: Vec<&Image> = pool
                                .iter()
                                .filter(|(i, _)| *i == ri)
                                .map(|(_, img)| img)
                                .collect();
                            (!same.is_empty()).then(|| same[pick % same.len()].clone())
                        };
                        let Some(old) = old else { continue };
                        put(&reg, r, &t, &old).await.map(|()| old)
                    }
                    _ => {
                        let known = model.remove(&(ri, t.clone())).is_some();
                        match reg.delete_manifest(r, &tag(&t)).await {
                            Ok(_) => assert!(known, "{r}:{t} was deleted but never pushed"),
                            Err(RegistryError::ManifestUnknown(_)) => {
                                assert!(!known, "{r}:{t} was acknowledged and is gone")
                            }
                            Err(e) => panic!("DELETE {r}:{t}: {e}"),
                        }
                        continue;
                    }
                };
                match result {
                    Ok(img) => {
                        pool.lock().push((ri, img.clone()));
                        model.insert((ri, t), img);
                    }
                    // Blobs collected between their upload (or the push of
                    // the manifest re-tagged) and this write: refused, not lost.
                    Err(RegistryError::ManifestBlobUnknown(_)) => refused += 1,
                    Err(e) => panic!("PUT {r}:{t}: {e}"),
                }
            }
            (model, refused)
        }));
    }
    let mut models = Vec::new();
    let mut refused = 0;
    for w in workers {
        let (model, n) = w.await.unwrap();
        models.push(model);
        refused += n;
    }
    done.store(true, Ordering::Relaxed);
    collector.await.unwrap();
    assert!(runs.load(Ordering::Relaxed) > 0);
    // One more run with nothing going on, then everything acknowledged.
    let (policy, pulls) = (policy(grace), HashMap::new());
    let run = run_at_later(&policy, &pulls);
    crate::registry::gc::run(&*reg.driver, &reg.coord, &run)
        .await
        .unwrap();
    let mut tags = 0;
    for model in &models {
        for ((ri, t), img) in model {
            assert_pullable(&reg, &repos[*ri], t, img).await;
            tags += 1;
        }
    }
    let report = fsck::check(
        &*reg.driver,
        "memory",
        &fsck::Options::default(),
        &mut |_| {},
    )
    .await;
    assert_eq!(report.unresolved(), 0, "{}", report.render("stress"));
    eprintln!(
        "stress (grace {grace:?}): {ops} operations, {} collections, {tags} tags checked, {refused} writes refused for collected blobs",
        runs.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_with_the_default_grace_loses_nothing() {
    stress(Retention::default().gc_grace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_with_no_grace_loses_nothing() {
    stress(Duration::ZERO).await;
}

#[tokio::test]
async fn a_blob_collected_between_lookup_and_read_is_unknown() {
    let reg = memory();
    let r = repo("app");
    let img = push(&reg, &r, "v1", "gone").await.unwrap();
    let blob = reg.blob(&r, &img.blobs[1]).await.unwrap();
    // What a collection does to it meanwhile.
    reg.driver
        .delete_all(&crate::storage::keys::blob_dir(&img.blobs[1]))
        .await
        .unwrap();
    match blob.open(0, blob.size).await {
        Err(RegistryError::BlobUnknown(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a deleted blob opened"),
    }
}

#[test]
fn the_manifest_cache_keeps_the_latest_within_its_budget() {
    let cache = crate::registry::ManifestCache::default();
    let size = crate::registry::MANIFEST_CACHE / 16;
    let digests: Vec<Digest> = (0..20u8)
        .map(|i| Digest::of(Algorithm::Sha256, &[i]))
        .collect();
    for d in &digests {
        cache.put(d, Bytes::from(vec![0u8; size]));
    }
    // 16 fit: the first 4 went.
    assert!(digests[..4].iter().all(|d| cache.get(d).is_none()));
    assert!(digests[4..].iter().all(|d| cache.get(d).is_some()));
    // Larger than a sixteenth of the budget: not kept.
    let big = Digest::of(Algorithm::Sha256, b"big");
    cache.put(&big, Bytes::from(vec![0u8; size + 1]));
    assert!(cache.get(&big).is_none());
}

/// A process on the store that takes its locks elsewhere and appears while
/// a collection runs stops it before it decides: nothing is deleted, and
/// the journal is closed.
#[tokio::test]
async fn a_process_in_another_lock_domain_appearing_mid_run_stops_the_collection() {
    let reg = memory();
    let r = repo("app");
    let img = push(&reg, &r, "old", "m").await.unwrap();
    reg.delete_manifest(&r, &tag("old")).await.unwrap();
    let (policy, pulls) = (policy(Duration::ZERO), HashMap::new());
    let run = run_at_later(&policy, &pulls);
    let collection = Collection::begin(&*reg.driver, &reg.coord, &run)
        .await
        .unwrap();
    let other = crate::registry::presence::Heartbeat {
        host: "elsewhere".into(),
        pid: 7,
        started: "2026-01-01T00:00:00Z".into(),
        domain: "lock files of the kernel booted as x".into(),
    };
    reg.driver
        .put(
            &format!("{}/other", crate::storage::keys::PROCESSES),
            serde_json::to_vec(&other).unwrap().into(),
        )
        .await
        .unwrap();
    match collection.finish().await {
        Err(RegistryError::Denied(why)) => assert!(why.contains("berth process 7"), "{why}"),
        other => panic!("the collection went on: {:?}", other.map(|r| r.manifests)),
    }
    let open = reg.driver.stat(crate::storage::keys::JOURNAL_OPEN).await;
    assert!(open.unwrap_err().is_not_found(), "the journal stayed open");
    // The untagged manifest it would have taken is still there.
    assert!(reg.blob(&r, &img.digest).await.is_ok());
}
