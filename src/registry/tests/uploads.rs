//! Upload sessions: chunks, what a failed chunk leaves, digests, owners,
//! limits, and sessions continued by another process on the store.

use std::io;

use super::*;

/// A body that sends `data` and then breaks off.
fn broken(data: &[u8]) -> BodyStream {
    Box::pin(futures_util::stream::iter([
        Ok(Bytes::copy_from_slice(data)),
        Err(io::Error::other("connection reset")),
    ]))
}

#[tokio::test]
async fn chunks_go_to_whichever_process_and_the_upload_finishes_anywhere() {
    let a = memory();
    let b = beside(&a);
    let r = repo("app");
    let data = b"one two three".to_vec();
    let d = Digest::of(Algorithm::Sha256, &data);
    let id = a.uploads().start(&r, "alice").await.unwrap();
    let n = a
        .uploads()
        .append(
            &r,
            &id,
            "alice",
            Some((0, 3)),
            body(data[..4].to_vec()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 4);
    // B never saw the session: it reads its size from the store.
    assert_eq!(b.uploads().size(&r, &id, "alice").await.unwrap(), 4);
    let n = b
        .uploads()
        .append(
            &r,
            &id,
            "alice",
            Some((4, 7)),
            body(data[4..8].to_vec()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 8);
    // A's running hash is stale now: it hashes what is stored instead.
    a.uploads()
        .finish(&r, &id, "alice", &d, None, body(data[8..].to_vec()), None)
        .await
        .unwrap();
    assert_eq!(read_blob(&b, &r, &d).await, data);
    assert!(matches!(
        b.uploads().size(&r, &id, "alice").await,
        Err(RegistryError::BlobUploadUnknown(_))
    ));
}

#[tokio::test]
async fn a_failed_chunk_leaves_the_upload_where_it_was() {
    let reg = memory();
    let r = repo("app");
    let data = b"0123456789".to_vec();
    let d = Digest::of(Algorithm::Sha256, &data);
    let up = reg.uploads();
    let id = up.start(&r, "").await.unwrap();
    up.append(&r, &id, "", None, body(data[..5].to_vec()), None)
        .await
        .unwrap();
    let cut = up
        .append(&r, &id, "", None, broken(&data[5..7]), None)
        .await;
    assert!(
        matches!(cut, Err(RegistryError::BlobUploadInvalid(_))),
        "{cut:?}"
    );
    let wrong_start = up
        .append(&r, &id, "", Some((3, 4)), body(b"xx".to_vec()), None)
        .await;
    assert!(matches!(wrong_start, Err(RegistryError::RangeInvalid(_))));
    let short = up
        .append(&r, &id, "", Some((5, 9)), body(b"56".to_vec()), None)
        .await;
    assert!(
        matches!(short, Err(RegistryError::SizeInvalid(_))),
        "{short:?}"
    );
    let too_big = up
        .append(&r, &id, "", None, body(data[5..].to_vec()), Some(8))
        .await;
    assert!(
        matches!(too_big, Err(RegistryError::BlobTooLarge(_))),
        "{too_big:?}"
    );
    assert_eq!(up.size(&r, &id, "").await.unwrap(), 5);
    up.finish(
        &r,
        &id,
        "",
        &d,
        Some((5, 9)),
        body(data[5..].to_vec()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(read_blob(&reg, &r, &d).await, data);
}

#[tokio::test]
async fn a_wrong_digest_ends_the_session_and_stores_nothing() {
    let reg = memory();
    let r = repo("app");
    let up = reg.uploads();
    let id = up.start(&r, "").await.unwrap();
    let claimed = Digest::of(Algorithm::Sha256, b"something else");
    let e = up
        .finish(&r, &id, "", &claimed, None, body(b"data".to_vec()), None)
        .await;
    assert!(matches!(e, Err(RegistryError::DigestInvalid(_))), "{e:?}");
    assert!(matches!(
        reg.blob(&r, &claimed).await,
        Err(RegistryError::BlobUnknown(_))
    ));
    assert!(matches!(
        up.size(&r, &id, "").await,
        Err(RegistryError::BlobUploadUnknown(_))
    ));
    // sha512 is checked by hashing what is stored.
    let data = b"five twelve".to_vec();
    let d = Digest::of(Algorithm::Sha512, &data);
    let id = up.start(&r, "").await.unwrap();
    up.finish(&r, &id, "", &d, None, body(data.clone()), None)
        .await
        .unwrap();
    assert_eq!(read_blob(&reg, &r, &d).await, data);
}

#[tokio::test]
async fn a_session_is_its_owners_in_every_process_and_cancel_removes_it() {
    let a = memory();
    let b = beside(&a);
    let r = repo("app");
    let id = a.uploads().start(&r, "alice").await.unwrap();
    for reg in [&a, &b] {
        assert!(matches!(
            reg.uploads().size(&r, &id, "mallory").await,
            Err(RegistryError::BlobUploadUnknown(_))
        ));
    }
    assert!(matches!(
        a.uploads().size(&r, "../../etc", "alice").await,
        Err(RegistryError::BlobUploadUnknown(_))
    ));
    b.uploads().cancel(&r, &id, "alice").await.unwrap();
    assert!(matches!(
        a.uploads().size(&r, &id, "alice").await,
        Err(RegistryError::BlobUploadUnknown(_))
    ));
    let names: Vec<String> = a
        .driver
        .list(&format!("{}/_uploads", crate::storage::keys::repo(&r)))
        .try_collect()
        .await
        .unwrap();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn two_uploads_of_one_blob_at_once_both_succeed() {
    let reg = Arc::new(memory());
    let r = repo("app");
    let data = b"the same layer".repeat(1000);
    let d = Digest::of(Algorithm::Sha256, &data);
    let up = |reg: Arc<Registry>, data: Vec<u8>, d: Digest, r: RepoName| async move {
        reg.put_blob(&r, "", &d, body(data), None).await
    };
    let (x, y) = tokio::join!(
        up(reg.clone(), data.clone(), d.clone(), r.clone()),
        up(reg.clone(), data.clone(), d.clone(), repo("other"))
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(read_blob(&reg, &r, &d).await, data);
    assert_eq!(read_blob(&reg, &repo("other"), &d).await, data);
}
