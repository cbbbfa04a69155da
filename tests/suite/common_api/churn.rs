//! A workload that makes garbage while it is told things: pushers push new
//! images, re-tag manifests pushed before and delete tags, each on tags of
//! its own, so that what each was told is what must be there afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

use super::*;

/// What one pusher was told: its tags, with the manifest and digest each
/// points at.
pub type Told = HashMap<String, (Vec<u8>, String)>;

async fn status(resp: reqwest::Response) -> u16 {
    let s = resp.status().as_u16();
    let _ = resp.bytes().await;
    s
}

/// Runs `pushers` pushers for `ops` operations in all on `repo`, each
/// operation through the next of `regs` (several servers on one store).
/// Returns what each pusher was told and how many manifest pushes were
/// refused because their blobs were collected first (never acknowledged).
pub async fn churn(regs: &[Reg], repo: &str, pushers: usize, ops: usize) -> (Vec<Told>, usize) {
    let pool: Arc<parking_lot::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..pushers {
        let (regs, pool, refused, repo) = (
            regs.to_vec(),
            pool.clone(),
            refused.clone(),
            repo.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut told = Told::new();
            for op in 0..ops / pushers {
                let reg = &regs[(p + op) % regs.len()];
                let (tag, choice, pick) = {
                    let mut rng = rand::rng();
                    let tag = format!("p{p}-{}", rng.random_range(0..6));
                    (
                        tag,
                        rng.random_range(0..10),
                        rng.random_range(0..usize::MAX),
                    )
                };
                let manifest = match choice {
                    0..=3 => make_image(reg, &repo, OCI_MANIFEST).await,
                    4..=6 => {
                        let pool = pool.lock();
                        if pool.is_empty() {
                            continue;
                        }
                        pool[pick % pool.len()].clone()
                    }
                    _ => {
                        let known = told.remove(&tag).is_some();
                        let path = format!("/v2/{repo}/manifests/{tag}");
                        let s = status(reg.delete(&path).send().await.unwrap()).await;
                        assert_eq!(s, if known { 202 } else { 404 }, "DELETE {tag}");
                        continue;
                    }
                };
                let resp = put_manifest(reg, &repo, &tag, OCI_MANIFEST, &manifest).await;
                match resp.status().as_u16() {
                    201 => {
                        let digest = sha256_digest(&manifest);
                        pool.lock().push(manifest.clone());
                        told.insert(tag, (manifest, digest));
                    }
                    // Its blobs were collected before the manifest came:
                    // refused, so nothing was promised.
                    400 => {
                        let body = resp.bytes().await.unwrap();
                        assert_eq!(error_codes(&body), ["MANIFEST_BLOB_UNKNOWN"]);
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    s => panic!("PUT {tag}: {s}: {}", resp.text().await.unwrap()),
                }
            }
            told
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    (all, refused.load(Ordering::Relaxed))
}

/// What of `told` is not pullable whole through `reg`, and how many tags
/// were checked.
pub async fn lost(reg: &Reg, repo: &str, told: &[Told]) -> (Vec<String>, usize) {
    let mut lost = Vec::new();
    let mut checked = 0;
    for told in told {
        for (tag, (manifest, digest)) in told {
            checked += 1;
            let resp = get_manifest(reg, repo, tag).await;
            let got = header(&resp, "docker-content-digest");
            if resp.status() != 200 || got.as_deref() != Some(digest) {
                lost.push(format!("{tag}: {} {got:?}, told {digest}", resp.status()));
                continue;
            }
            let (_, blobs) = manifest_refs(manifest);
            for b in blobs {
                let path = format!("/v2/{repo}/blobs/{b}");
                let s = status(reg.head(&path).send().await.unwrap()).await;
                if s != 200 {
                    lost.push(format!("{tag}: blob {b}: {s}"));
                }
            }
        }
    }
    (lost, checked)
}

/// A count from the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Two servers of `cfg` taking their locks in `pg` (`[coordination]`),
/// started and each saying so.
pub fn coordinated_pair(
    cfg: &ConfigDir,
    pg: &crate::common::postgres::Postgres,
) -> (Server, Server) {
    cfg.add_to_berth_toml(&format!(
        "[coordination]\npostgres = \"{}\"\npool_size = 4\n",
        pg.url()
    ));
    let (a, b) = (Server::start(cfg), Server::start(cfg));
    for s in [&a, &b] {
        s.wait_for_stderr("locks shared with other berth processes");
    }
    (a, b)
}

/// `berth fsck` of `cfg` finds nothing wrong.
pub fn assert_fsck_clean(cfg: &ConfigDir) {
    let fsck = std::process::Command::new(crate::common::berth_bin())
        .args(["fsck", "--config-dir"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}
