//! The blob cache of an S3 instance (`[storage] cache`): a pulled blob is
//! kept on the local disk and later pulls read that copy; the bucket stays
//! the truth (a blob gone from it is unknown, copy or not); a full cache
//! disk costs the copy, never the pull.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;

use crate::common::garage::Garage;
use crate::common::{sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;
use crate::full_disk::{is_root, Tmpfs};

/// The object key of `digest`'s data under `prefix`.
fn blob_key(prefix: &str, digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!(
        "{prefix}/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    )
}

/// The copy of `digest` in the cache directory `dir`.
fn copy_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join(digest.replace(':', "-"))
}

/// Waits for the copy of `digest` in `dir` (it is synced after the pull).
async fn wait_for_copy(dir: &Path, digest: &str) {
    for _ in 0..200 {
        if copy_path(dir, digest).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no copy of {digest} in {}", dir.display());
}

/// Runs the signed `curl` request and asserts it worked.
fn curl_ok(cmd: &mut std::process::Command) {
    let out = cmd.arg("--fail-with-body").output().expect("run curl");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_read_the_local_copy_and_the_bucket_stays_the_truth() {
    let g = Garage::start();
    let mut ci = Instance::new("ci");
    ci.extra = g.storage_toml("cached") + "cache = \"64MiB\"\n";
    let cfg = ConfigDir::new(&[ci]);
    let a = Server::start(&cfg);
    let ra = Reg::for_instance(&a, "ci");
    let dir = cfg.path().join("state/cache/ci");

    let data = random_bytes(20 << 20);
    let digest = push_blob(&ra, "app", &data).await;
    assert!(!copy_path(&dir, &digest).exists(), "a push keeps no copy");
    // A range is not kept; the whole blob is.
    let part = ra
        .get(&format!("/v2/app/blobs/{digest}"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(expect_status(part, 206).await, &data[100..200]);
    assert_blob(&ra, "app", &digest, &data).await;
    wait_for_copy(&dir, &digest).await;

    // The object in the bucket is changed behind berth's back (same size):
    // A serves its copy, in whole and in ranges.
    let key = blob_key("cached", &digest);
    let url = format!("{}/{}/{key}", g.endpoint(), g.bucket());
    let other = cfg.path().join("other");
    std::fs::write(&other, random_bytes(data.len())).unwrap();
    curl_ok(
        g.curl(&url)
            .args(["-X", "PUT", "--data-binary"])
            .arg(format!("@{}", other.display())),
    );
    assert_blob(&ra, "app", &digest, &data).await;
    let part = ra
        .get(&format!("/v2/app/blobs/{digest}"))
        .header("range", "bytes=5000000-5000099")
        .send()
        .await
        .unwrap();
    assert_eq!(expect_status(part, 206).await, &data[5_000_000..5_000_100]);

    // Gone from the bucket: unknown, though the copy is still here.
    curl_ok(g.curl(&url).args(["-X", "DELETE"]));
    assert!(copy_path(&dir, &digest).exists());
    ra.expect_error(
        Method::GET,
        &format!("/v2/app/blobs/{digest}"),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    a.stop();
}

/// The cache directory on a 16 MiB tmpfs, a 24 MiB blob pulled: the pull
/// is whole, nothing half-written stays, later pulls work. Needs root (for
/// `mount`); skipped with a message otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_disk_costs_the_copy_not_the_pull() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let g = Garage::start();
    let cfg = ConfigDir::new(&[]);
    let small = cfg.path().join("small-disk");
    let _tmpfs = Tmpfs::mount(&small, "16m");
    let mut ci = Instance::new("ci");
    ci.extra = format!(
        "{}cache = \"1GiB\"\ncache_dir = {:?}\n",
        g.storage_toml("full"),
        small.display().to_string()
    );
    cfg.add_instance(&ci);
    let a = Server::start(&cfg);
    let ra = Reg::for_instance(&a, "ci");
    let data = random_bytes(24 << 20);
    let digest = sha256_digest(&data);
    assert_eq!(push_blob(&ra, "app", &data).await, digest);
    for _ in 0..3 {
        assert_blob(&ra, "app", &digest, &data).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left on the full disk: {left:?}");
    assert!(
        a.stderr().contains("blob cache: no copy of"),
        "the failed copy is logged:\n{}",
        a.stderr()
    );
    a.stop();
}
