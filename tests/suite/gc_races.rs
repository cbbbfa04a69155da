//! Races between requests, and between requests and `berth gc`, over real
//! sockets: every write the server acknowledged must be there afterwards,
//! and racing requests must end as if they had run in some order.
//!
//! `BERTH_STRESS_OPS` and `BERTH_GC_ROUNDS` make the long runs longer.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::common::{ConfigDir, Instance, Server};
use crate::common_api::*;
use rand::Rng;

fn berth(cfg: &ConfigDir, args: &[&str]) -> Command {
    let mut c = Command::new(crate::common::berth_bin());
    c.args(args).arg("--config-dir").arg(cfg.path());
    c
}

/// Sets a file's mtime `age` back.
fn age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

fn v2(cfg: &ConfigDir) -> std::path::PathBuf {
    cfg.storage_root("ci").join("docker/registry/v2")
}

fn blob_data(cfg: &ConfigDir, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    v2(cfg).join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
}

async fn status(resp: reqwest::Response) -> u16 {
    let s = resp.status().as_u16();
    let _ = resp.bytes().await;
    s
}

#[tokio::test]
async fn put_and_delete_of_one_tag_end_in_one_order() {
    // Kept to the end: the server reads its htpasswd file and root there.
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    let (manifest, _) = push_image(&reg, "race", "base").await;
    let mut odd = Vec::new();
    for round in 0..60 {
        let existed = round % 2 == 0;
        if existed {
            put_manifest_ok(&reg, "race", "t", OCI_MANIFEST, &manifest).await;
        }
        let put = put_manifest(&reg, "race", "t", OCI_MANIFEST, &manifest);
        let delete = reg.delete("/v2/race/manifests/t").send();
        let (put, delete) = tokio::join!(put, delete);
        let (put, delete) = (status(put).await, status(delete.unwrap()).await);
        let now = status(get_manifest(&reg, "race", "t").await).await;
        // Tag there before: either order deletes something (202).
        // Not there: DELETE first finds nothing (404) and the tag stays.
        let fine = put == 201
            && match (existed, delete) {
                (true, 202) => now == 200 || now == 404,
                (false, 202) => now == 404,
                (false, 404) => now == 200,
                _ => false,
            };
        if !fine {
            odd.push(format!(
                "round {round} (tag there before: {existed}): PUT {put}, DELETE {delete}, then GET {now}"
            ));
        }
        if now == 200 {
            reg.expect_status(Method::DELETE, "/v2/race/manifests/t", 202)
                .await;
        }
    }
    assert!(odd.is_empty(), "{}", odd.join("\n"));
    server.stop();
}

#[tokio::test]
async fn delete_by_digest_and_put_to_a_new_tag_end_in_one_order() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    // Many other tags: a DELETE by digest looks at each, which takes a
    // moment for the PUT to come in between.
    let (_, other) = push_image(&reg, "race", "other").await;
    bulk_tags(&cfg, "race", &other, 3000);
    let mut odd = Vec::new();
    for round in 0..40 {
        let (manifest, digest) = push_image(&reg, "race", &format!("a{round}")).await;
        let new_tag = format!("b{round}");
        let put = put_manifest(&reg, "race", &new_tag, OCI_MANIFEST, &manifest);
        let delete = reg.delete(&format!("/v2/race/manifests/{digest}")).send();
        let (put, delete) = tokio::join!(put, delete);
        let (put, delete) = (status(put).await, status(delete.unwrap()).await);
        let by_digest = status(get_manifest(&reg, "race", &digest).await).await;
        let by_tag = status(get_manifest(&reg, "race", &new_tag).await).await;
        // DELETE then PUT: both there; PUT then DELETE: neither.
        if (put, delete) != (201, 202) || by_digest != by_tag {
            odd.push(format!(
                "round {round}: PUT {put}, DELETE {delete}, then the digest {by_digest} and the new tag {by_tag}"
            ));
        }
    }
    assert!(odd.is_empty(), "{}", odd.join("\n"));
    server.stop();
}

/// Writes `count` tags of `repo`, all on `digest`, straight to the store:
/// a repository large enough that a collection takes a moment.
fn bulk_tags(cfg: &ConfigDir, repo: &str, digest: &str, count: usize) {
    let hex = digest.trim_start_matches("sha256:");
    let tags = v2(cfg).join(format!("repositories/{repo}/_manifests/tags"));
    for i in 0..count {
        let dir = tags.join(format!("t{i}"));
        std::fs::create_dir_all(dir.join("current")).unwrap();
        std::fs::write(dir.join("current/link"), digest).unwrap();
        let index = dir.join(format!("index/sha256/{hex}"));
        std::fs::create_dir_all(&index).unwrap();
        std::fs::write(index.join("link"), digest).unwrap();
    }
}

/// The default settings (grace 1 h, untagged manifests deleted): a
/// manifest untagged and older than the grace is tagged again while `berth
/// gc` runs. The tag the client was told about must stay, with its blobs.
#[tokio::test]
async fn a_tag_pushed_during_gc_to_an_old_untagged_manifest_stays() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    let (_, bulk) = push_image(&reg, "bulk", "base").await;
    bulk_tags(&cfg, "bulk", &bulk, 10_000);
    // How long a run takes, to send the PUT somewhere inside one.
    let started = Instant::now();
    assert!(berth(&cfg, &["gc"]).status().unwrap().success());
    let run = started.elapsed();
    // A new client: the old one's connection may have idled past the
    // server's keep-alive limit meanwhile.
    let reg = Reg::for_instance(&server, "ci");
    let mut lost = Vec::new();
    let mut told = 0;
    let rounds = churn::env_number("BERTH_GC_ROUNDS", 8);
    for round in 0..rounds {
        let (manifest, digest) = push_image(&reg, "app", "old").await;
        reg.expect_status(Method::DELETE, "/v2/app/manifests/old", 202)
            .await;
        let hex = digest.trim_start_matches("sha256:");
        let (_, blobs) = manifest_refs(&manifest);
        let two_hours = Duration::from_secs(7200);
        age(
            &v2(&cfg).join(format!(
                "repositories/app/_manifests/revisions/sha256/{hex}/link"
            )),
            two_hours,
        );
        for b in blobs.iter().chain([&digest]) {
            age(&blob_data(&cfg, b), two_hours);
        }
        for b in &blobs {
            let h = b.trim_start_matches("sha256:");
            age(
                &v2(&cfg).join(format!("repositories/app/_layers/sha256/{h}/link")),
                two_hours,
            );
        }
        let gc = berth(&cfg, &["gc"]).stdout(Stdio::piped()).spawn().unwrap();
        let wait = run.mul_f64(rand::rng().random_range(0.0..0.9));
        tokio::time::sleep(wait).await;
        let promoted = format!("promoted{round}");
        let put = put_manifest(&reg, "app", &promoted, OCI_MANIFEST, &manifest).await;
        let acknowledged = match put.status().as_u16() {
            201 => true,
            // After the sweep: the blobs are gone and the PUT says so.
            400 => {
                let body = put.bytes().await.unwrap();
                assert_eq!(error_codes(&body), ["MANIFEST_BLOB_UNKNOWN"]);
                false
            }
            s => panic!("PUT {promoted}: {s}"),
        };
        let out = tokio::task::spawn_blocking(move || gc.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success());
        if !acknowledged {
            continue;
        }
        told += 1;
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let got = status(get_manifest(&reg, "app", &promoted).await).await;
        let mut missing = Vec::new();
        for b in &blobs {
            if !blob_data(&cfg, b).exists() {
                missing.push(b.clone());
            }
        }
        if got != 200 || !missing.is_empty() || report.contains(&digest) {
            lost.push(format!(
                "round {round} (PUT {wait:?} into a run of {run:?}): GET {got}, blobs missing {missing:?}, report:\n{report}"
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {told} acknowledged tags were lost:\n{}",
        lost.len(),
        lost.join("\n")
    );
    eprintln!("{told} of {rounds} tags pushed during a run acknowledged, none lost");
    server.stop();
}

/// Pushers push new images, re-tag old manifests and delete tags (each on
/// its own tags) while `berth gc` runs back to back with `gc_grace = "0s"`.
/// Every tag whose last write was acknowledged must be pullable at the
/// end, and `berth fsck` must find nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_with_gc_in_a_loop_loses_nothing() {
    stress("[retention]\ngc_grace = \"0s\"\n", false).await;
}

/// The same with the default settings (grace 1 h, untagged manifests
/// deleted), while a thread keeps setting the mtimes of every blob,
/// manifest revision and layer link two hours back: everything the
/// pushers wrote is past the grace at once, so each collection weighs all
/// of it and re-tags of old digests race the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_with_the_default_grace_and_aged_content_loses_nothing() {
    stress("", true).await;
}

/// Sets every blob's data, manifest revision link and layer link under
/// `v2` two hours back.
fn age_content(v2: &Path) {
    let two_hours = Duration::from_secs(7200);
    let mut stack = vec![v2.join("blobs"), v2.join("repositories")];
    while let Some(dir) = stack.pop() {
        // Entries come and go while the pushers and collections run.
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            match e.file_type() {
                Ok(t) if t.is_dir() && name != "_uploads" && name != "tags" => stack.push(path),
                Ok(t) if t.is_file() && (name == "data" || name == "link") => {
                    if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                        let _ = f.set_modified(SystemTime::now() - two_hours);
                    }
                }
                _ => {}
            }
        }
    }
}

async fn stress(retention: &str, aging: bool) {
    const PUSHERS: usize = 8;
    let mut ci = Instance::new("ci");
    ci.extra = retention.into();
    let cfg = Arc::new(ConfigDir::new(&[ci]));
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    let ops = churn::env_number("BERTH_STRESS_OPS", 800);
    let done = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let collector = {
        let (cfg, done, runs) = (cfg.clone(), done.clone(), runs.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let out = berth(&cfg, &["gc"]).output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let ager = aging.then(|| {
        let (v2, done) = (v2(&cfg), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                age_content(&v2);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    let (all, refused) = churn::churn(std::slice::from_ref(&reg), "stress", PUSHERS, ops).await;
    done.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        collector.join().unwrap();
        if let Some(ager) = ager {
            ager.join().unwrap();
        }
    })
    .await
    .unwrap();
    assert!(berth(&cfg, &["gc"]).status().unwrap().success());
    let (lost, checked) = churn::lost(&reg, "stress", &all).await;
    assert!(
        lost.is_empty(),
        "acknowledged and lost:\n{}",
        lost.join("\n")
    );
    churn::assert_fsck_clean(&cfg);
    eprintln!(
        "stress: {ops} operations, {} collections, {checked} tags checked, {} pushes refused for collected blobs",
        runs.load(Ordering::Relaxed),
        refused
    );
    server.stop();
}
