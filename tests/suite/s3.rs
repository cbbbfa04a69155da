//! The S3 driver against real object stores: the driver contract on Garage
//! and moto, several berth processes serving one Garage bucket (pushes,
//! chunks and a killed process, collections coordinated in PostgreSQL),
//! a three-node Garage cluster losing a node, and a bucket that cannot be
//! used.

use std::time::Duration;

use berth::storage::driver::{contract, Driver};
use berth::storage::s3::{Credentials, S3Driver, S3Options};
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::clients::{make_image, pull_layout, skopeo_push, token};
use crate::common::garage::Garage;
use crate::common::moto::Moto;
use crate::common::{berth_bin, sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;

/// The driver on a bucket, under a fresh prefix, with the smallest parts.
fn driver(endpoint: String, region: &str, bucket: &str, key_id: &str, secret: &str) -> S3Driver {
    S3Driver::new(S3Options {
        bucket: bucket.to_string(),
        endpoint: Some(endpoint),
        region: region.to_string(),
        prefix: format!("contract-{}", token()),
        path_style: true,
        part_size: 5 << 20,
        parallel_parts: 3,
        credentials: Some(Credentials {
            key_id: key_id.to_string(),
            secret: secret.to_string(),
            token: None,
        }),
        redirect: None,
    })
    .unwrap()
}

/// What a store-side write must keep on an object store: several parts,
/// resumed across a segment, aborted uploads leave no parts behind.
async fn multipart_writes(d: &dyn Driver) {
    let data: Vec<u8> = random_bytes(23 << 20);
    let mut w = d.writer("up/big/data", 0).await.unwrap();
    for piece in data[..13 << 20].chunks(1 << 20) {
        w.write(std::sync::Arc::new(vec![Bytes::copy_from_slice(piece)]))
            .await
            .unwrap();
    }
    assert_eq!(w.finish().await.unwrap(), 13 << 20);
    // Resumed inside the first segment (a chunk that broke off), then the
    // rest in a second one.
    let mut w = d.writer("up/big/data", 7 << 20).await.unwrap();
    w.write(std::sync::Arc::new(vec![Bytes::copy_from_slice(
        &data[7 << 20..],
    )]))
    .await
    .unwrap();
    assert_eq!(w.finish().await.unwrap(), 23 << 20);
    assert_eq!(d.stat("up/big/data").await.unwrap().size, 23 << 20);
    let mut names: Vec<String> = d.list("up/big").try_collect().await.unwrap();
    names.sort();
    assert_eq!(names, ["data"], "segments list as one object");
    let back: Vec<Bytes> = d
        .read("up/big/data", 0, 23 << 20)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(back.concat() == data, "read back whole");
    d.commit("up/big/data", "blobs/big/data").await.unwrap();
    assert!(d.stat("up/big/data").await.unwrap_err().is_not_found());
    assert_eq!(d.stat("blobs/big/data").await.unwrap().size, 23 << 20);
    // A writer dropped half-way (the client went away), then the session
    // purged: nothing of it stays.
    let mut w = d.writer("up/gone/data", 0).await.unwrap();
    w.write(std::sync::Arc::new(vec![Bytes::from(vec![7u8; 11 << 20])]))
        .await
        .unwrap();
    drop(w);
    assert!(d.stat("up/gone/data").await.unwrap_err().is_not_found());
    d.delete_all("up").await.unwrap();
    let left: Vec<String> = d.list("up").try_collect().await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

async fn whole_contract(d: &dyn Driver) {
    contract::small_objects(d).await;
    contract::listing_and_prefix_deletes(d).await;
    contract::uploads(d).await;
    contract::renames(d).await;
    contract::walking(d).await;
    multipart_writes(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_contract_holds_on_garage_and_moto() {
    let g = Garage::start();
    let d = driver(g.endpoint(), g.region(), g.bucket(), g.key_id(), g.secret());
    whole_contract(&d).await;
    let keys = g.list_keys("");
    assert!(
        keys.iter().all(|k| !k.contains(".segments/")),
        "segments or upload records left: {keys:?}"
    );
    let m = Moto::start();
    let d = driver(m.endpoint(), m.region(), m.bucket(), m.key_id(), m.secret());
    whole_contract(&d).await;
}

/// The multipart uploads under way in the bucket of `g` (ListMultipartUploads).
fn multipart_uploads(g: &Garage) -> Vec<String> {
    let url = format!("{}/{}?uploads=", g.endpoint(), g.bucket());
    let out = g.curl(&url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("ListMultipartUploadsResult"),
        "{text}"
    );
    text.split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

/// A process that dies in the middle of a part upload leaves its multipart
/// upload (and the record of it) behind; deleting the session, as the
/// upload purge does, aborts it: no parts are left to pay for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_aborts_the_multipart_upload_of_a_writer_that_died() {
    let g = Garage::start();
    let d = driver(g.endpoint(), g.region(), g.bucket(), g.key_id(), g.secret());
    let mut w = d.writer("r/_uploads/1/data", 0).await.unwrap();
    w.write(std::sync::Arc::new(vec![Bytes::from(vec![1u8; 6 << 20])]))
        .await
        .unwrap();
    // Gone without a word, as a process killed is.
    std::mem::forget(w);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(multipart_uploads(&g).len(), 1);
    assert!(g.list_keys("").iter().any(|k| k.contains(".segments/mpu-")));
    assert!(d.delete_all("r/_uploads/1").await.unwrap());
    assert_eq!(multipart_uploads(&g), Vec::<String>::new());
    assert_eq!(g.list_keys(""), Vec::<String>::new());
}

/// An instance `ci` on the bucket of `g` under `prefix`.
fn on_bucket(storage: String) -> Instance {
    let mut ci = Instance::new("ci");
    ci.extra = storage;
    ci
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_bucket_share_images_chunks_and_a_killed_push() {
    let g = Garage::start();
    let ci = on_bucket(g.storage_toml("two"));
    let (user, password) = (ci.user().to_string(), ci.password().to_string());
    let cfg = ConfigDir::new(&[ci]);
    let (a, b) = (Server::start(&cfg), Server::start(&cfg));
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    let creds = format!("{user}:{password}");

    // skopeo pushes a multi-layer image through A, pulls it through B.
    let image = make_image("v1");
    let host = |s: &Server| s.addr("ci").to_string();
    skopeo_push(
        &image.reference("v1"),
        &format!("docker://{}/app:v1", host(&a)),
        &creds,
        &[],
    );
    let back = pull_layout(&format!("docker://{}/app:v1", host(&b)), "v1", &creds, &[]);
    assert_eq!(back.digest("v1"), image.digest("v1"));
    back.assert_layers_intact(&back.digest("v1"));

    // A chunked upload whose PATCHes alternate between A and B.
    let data = random_bytes(12 << 20);
    let digest = sha256_digest(&data);
    let mut session = open_session(&ra, "app").await;
    let chunk = 3 << 20;
    for (i, piece) in data.chunks(chunk).enumerate() {
        let reg = if i % 2 == 0 { &ra } else { &rb };
        session = patch_chunk(reg, &session, i * chunk, piece).await;
    }
    finish_upload(&rb, &session, &digest).await;
    assert_blob(&ra, "app", &digest, &data).await;

    // A is killed while a chunk streams into it; the client asks B where
    // the upload stands and finishes it there.
    let data = random_bytes(24 << 20);
    let digest = sha256_digest(&data);
    let session = open_session(&ra, "app").await;
    let first = 6 << 20;
    let session = patch_chunk(&ra, &session, 0, &data[..first]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let streaming = {
        let (ra, session) = (ra.clone(), session.clone());
        tokio::spawn(async move {
            let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
            ra.patch(&session).body(body).send().await
        })
    };
    for piece in data[first..first + (8 << 20)].chunks(1 << 20) {
        tx.send(Ok(piece.to_vec())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("KILL");
    drop(tx);
    // The chunk ends with A (an error, or whatever A answered before).
    let _ = streaming.await.unwrap();
    let status = rb.get(&session).send().await.unwrap();
    assert_eq!(status.status(), 204);
    let range = must_header(&status, "range");
    let done: usize = range.trim_start_matches("0-").parse::<usize>().unwrap() + 1;
    assert_eq!(done, first, "the broken chunk is not counted");
    let session = patch_chunk(&rb, &session, done, &data[done..]).await;
    finish_upload(&rb, &session, &digest).await;
    assert_blob(&rb, "app", &digest, &data).await;
    b.stop();
}

/// A stream of the pieces sent on `rx`.
fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    })
}

/// Two processes on one bucket take their locks in PostgreSQL and collect
/// every second with no grace, while clients push through both, re-tag and
/// delete: every acknowledged tag is pullable whole, fsck is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_on_one_process_lose_nothing_pushed_through_the_other() {
    let g = Garage::start();
    let pg = crate::common::postgres::Postgres::start();
    let mut ci = on_bucket(g.storage_toml("gc"));
    ci.extra
        .push_str("[retention]\ngc_grace = \"0s\"\ninterval = \"1s\"\n");
    let cfg = ConfigDir::new(&[ci]);
    let (a, b) = churn::coordinated_pair(&cfg, &pg);
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    let ops = churn::env_number("BERTH_S3_STRESS_OPS", 800);
    let (told, refused) = churn::churn(std::slice::from_ref(&rb), "stress", 4, ops).await;
    let (lost, checked) = churn::lost(&ra, "stress", &told).await;
    assert!(
        lost.is_empty(),
        "acknowledged and lost:\n{}",
        lost.join("\n")
    );
    let runs = a.stderr().matches("retention: ci:").count();
    assert!(runs > 0, "A ran no collection:\n{}", a.stderr());
    a.stop();
    b.stop();
    churn::assert_fsck_clean(&cfg);
    eprintln!(
        "s3, PostgreSQL: {ops} operations through B, {runs} collections on A, {checked} tags checked, {refused} pushes refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_cannot_be_used_is_named_at_start_and_in_check_and_others_serve() {
    let g = Garage::start();
    // A wrong secret, a missing bucket, an endpoint nobody listens on.
    let wrong_key = {
        let toml = g.storage_toml("k");
        let creds = g.credentials_file();
        let text = std::fs::read_to_string(&creds).unwrap();
        let bad = creds.with_file_name("bad-credentials");
        std::fs::write(&bad, text.replace(g.secret(), &"0".repeat(64))).unwrap();
        set_private(&bad);
        toml.replace(creds.to_str().unwrap(), bad.to_str().unwrap())
    };
    let missing = g.storage_toml("m").replace(
        &format!("bucket = \"{}\"", g.bucket()),
        "bucket = \"no-such-bucket\"",
    );
    let port = crate::common::s3::free_port();
    let unreachable = g
        .storage_toml("u")
        .replace(&g.endpoint(), &format!("http://127.0.0.1:{port}"));
    let cases = [
        ("key", wrong_key, "access denied to bucket"),
        ("bucket", missing, "bucket 'no-such-bucket' does not exist"),
        (
            "endpoint",
            unreachable,
            "cannot connect to http://127.0.0.1:",
        ),
    ];
    for (name, storage, said) in cases {
        let broken = on_named(name, storage);
        let cfg = ConfigDir::new(&[Instance::new("good"), broken]);
        let check = std::process::Command::new(berth_bin())
            .args(["check", "--config-dir"])
            .arg(cfg.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success(), "{name}: check passed");
        assert!(
            stderr.contains(&format!("instance {name}: storage s3://")) && stderr.contains(said),
            "{name}: {stderr}"
        );
        assert_eq!(
            stderr.matches(said).count(),
            1,
            "{name}: one error: {stderr}"
        );
        let s = Server::start(&cfg);
        let line = s.wait_for_stderr(said);
        assert!(
            line.contains(&format!("instance={name}")) || line.contains(name),
            "{line}"
        );
        push_image(&Reg::for_instance(&s, "good"), "app", "v1").await;
        let broken = Reg::for_instance(&s, name);
        broken
            .expect_error(
                reqwest::Method::GET,
                "/v2/app/tags/list",
                503,
                "UNAVAILABLE",
            )
            .await;
        s.stop();
    }
}

/// Makes `path` readable by its owner only.
fn set_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn on_named(name: &str, storage: String) -> Instance {
    let mut i = Instance::new(name);
    i.extra = storage;
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_pulls_go_on_while_one_node_of_three_is_down() {
    let mut g = Garage::cluster(3);
    let cfg = ConfigDir::new(&[on_bucket(g.storage_toml("three"))]);
    let s = Server::start(&cfg);
    let reg = Reg::for_instance(&s, "ci");
    let (before, _) = push_image(&reg, "app", "before").await;
    g.stop_node(2);
    let (after, _) = push_image(&reg, "app", "after").await;
    let data = random_bytes(9 << 20);
    let digest = push_blob(&reg, "app", &data).await;
    assert_blob(&reg, "app", &digest, &data).await;
    assert_manifest_body(&reg, "app", "before", &before).await;
    assert_manifest_body(&reg, "app", "after", &after).await;
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_serves_as_a_bucket_too() {
    let m = Moto::start();
    let cfg = ConfigDir::new(&[on_bucket(m.storage_toml("moto"))]);
    let s = Server::start(&cfg);
    let reg = Reg::for_instance(&s, "ci");
    let (body, _) = push_image(&reg, "app", "v1").await;
    let data = random_bytes(7 << 20);
    let digest = push_blob(&reg, "app", &data).await;
    assert_blob(&reg, "app", &digest, &data).await;
    assert_manifest_body(&reg, "app", "v1", &body).await;
    reg.expect_status(reqwest::Method::DELETE, "/v2/app/manifests/v1", 202)
        .await;
    assert_eq!(list_tags(&reg, "app").await, Vec::<String>::new());
    s.stop();
}
