//! Retention and garbage collection through `berth gc`, on a running server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::{ConfigDir, Instance, Server};
use crate::common_api::*;

fn gc(cfg: &ConfigDir, extra: &[&str]) -> String {
    crate::common::berth_ok("gc", cfg.path(), extra)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = crate::common::paths_under(dir);
    out.retain(|p| !p.is_dir());
    out
}

fn layers(manifest: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![v["config"]["digest"].as_str().unwrap().to_string()];
    out.extend(
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    out
}

fn blob_file(cfg: &ConfigDir, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    cfg.storage_root("ci").join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

#[tokio::test]
async fn keep_last_two_plus_protected_and_the_rest_is_swept() {
    let mut ci = Instance::new("ci");
    ci.extra = "[retention]\nkeep_last = 2\nprotect = [\"latest\"]\ngc_grace = \"0s\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    let mut pushed = Vec::new();
    for (i, tag) in ["v1", "v2", "v3", "v4", "v5", "latest"].iter().enumerate() {
        let (manifest, digest) = push_image(&reg, "app", tag).await;
        cfg.age_tag(
            "ci",
            "app",
            tag,
            Duration::from_secs(3600 * (10 - i as u64)),
        );
        pushed.push((tag.to_string(), manifest, digest));
    }
    // "latest" is the oldest push of all but protected.
    cfg.age_tag("ci", "app", "latest", Duration::from_secs(3600 * 100));
    // The server keeps this list; `berth gc` changes the tags behind it.
    assert_eq!(
        list_tags(&reg, "app").await,
        ["latest", "v1", "v2", "v3", "v4", "v5"]
    );

    let before = files_under(&cfg.storage_root("ci"));
    let dry = gc(&cfg, &["--dry-run"]);
    assert!(
        dry.contains("ci: would delete 3 tags, 3 manifests, 9 blobs"),
        "{dry}"
    );
    assert_eq!(
        files_under(&cfg.storage_root("ci")),
        before,
        "a dry run changes nothing"
    );

    let report = gc(&cfg, &[]);
    assert!(
        report.contains("ci: deleted 3 tags, 3 manifests, 9 blobs"),
        "{report}"
    );
    for t in ["app:v1", "app:v2", "app:v3"] {
        assert!(report.contains(&format!("tag {t}")), "{report}");
    }
    assert!(
        report.contains("ci: usage") && report.contains("3 tags"),
        "{report}"
    );
    assert_eq!(list_tags(&reg, "app").await, ["latest", "v4", "v5"]);
    for (tag, manifest, _) in &pushed {
        let kept = ["v4", "v5", "latest"].contains(&tag.as_str());
        for d in layers(manifest) {
            assert_eq!(blob_file(&cfg, &d).exists(), kept, "{tag} blob {d}");
            if kept {
                let resp = reg.send(Method::GET, &format!("/v2/app/blobs/{d}")).await;
                assert_eq!(resp.status().as_u16(), 200);
            }
        }
        let resp = get_manifest(&reg, "app", tag).await;
        assert_eq!(
            resp.status().as_u16(),
            if kept { 200 } else { 404 },
            "{tag}"
        );
    }
    drop(server);
}

#[tokio::test]
async fn gc_concurrent_with_pushes_loses_nothing() {
    let mut ci = Instance::new("ci");
    // Every tag is deleted once it is old, to make garbage while pushes go on;
    // blobs a push uploaded before its manifest are protected by the grace
    // period (long enough for a loaded machine; what is written during a run
    // needs no grace, see tests/gc_races.rs).
    ci.extra = "[retention]\nmax_age = \"1h\"\ngc_grace = \"1m\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    for i in 0..10 {
        let tag = format!("old{i}");
        push_image(&reg, "app", &tag).await;
        cfg.age_tag("ci", "app", &tag, Duration::from_secs(7200));
    }
    let pusher = {
        let reg = reg.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..60 {
                let tag = format!("new{i}");
                let (manifest, digest) = push_image(&reg, "app", &tag).await;
                done.push((tag, manifest, digest));
            }
            done
        })
    };
    let cfg_path = cfg.path().to_path_buf();
    let collector = tokio::task::spawn_blocking(move || {
        let mut reports = Vec::new();
        for _ in 0..5 {
            let out = Command::new(crate::common::berth_bin())
                .args(["gc", "--config-dir"])
                .arg(&cfg_path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            reports.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        reports
    });
    let pushed = pusher.await.unwrap();
    let reports = collector.await.unwrap();
    assert!(
        reports.iter().any(|r| r.contains("tag app:old0")),
        "{reports:?}"
    );
    gc(&cfg, &[]);
    for (tag, manifest, digest) in &pushed {
        let resp = get_manifest(&reg, "app", tag).await;
        assert_eq!(resp.status().as_u16(), 200, "{tag} lost");
        assert_eq!(
            header(&resp, "docker-content-digest").as_deref(),
            Some(digest.as_str())
        );
        for d in layers(manifest) {
            assert_blob_present(&reg, &d).await;
        }
    }
}

async fn assert_blob_present(reg: &Reg, digest: &str) {
    let resp = reg
        .send(Method::GET, &format!("/v2/app/blobs/{digest}"))
        .await;
    assert_eq!(resp.status().as_u16(), 200, "blob {digest} lost");
    let body = resp.bytes().await.unwrap();
    assert_eq!(crate::common::sha256_digest(&body), digest);
}

/// A signature-like referrer of `subject` (OCI artifact with a subject),
/// pushed by digest.
async fn push_referrer(reg: &Reg, repo: &str, subject: &str, subject_size: usize) -> String {
    let config = push_desc(reg, repo, "application/vnd.oci.empty.v1+json", b"{}").await;
    let layer = push_desc(
        reg,
        repo,
        "application/vnd.example.sig",
        format!("sig of {subject}").as_bytes(),
    )
    .await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&image_manifest(OCI_MANIFEST, &config, &[layer])).unwrap();
    v["artifactType"] = "application/vnd.example.sig".into();
    v["subject"] =
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size});
    let body = serde_json::to_vec(&v).unwrap();
    let digest = crate::common::sha256_digest(&body);
    put_manifest_subject(reg, repo, &digest, OCI_MANIFEST, &body).await;
    digest
}

#[tokio::test]
async fn referrers_go_with_their_subject_and_empty_repositories_leave_the_catalog() {
    let mut ci = Instance::new("ci");
    ci.extra = "[retention]\nmax_age = \"1h\"\ngc_grace = \"0s\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    let (old, old_digest) = push_image(&reg, "gone/app", "v1").await;
    let old_sig = push_referrer(&reg, "gone/app", &old_digest, old.len()).await;
    cfg.age_tag("ci", "gone/app", "v1", Duration::from_secs(7200));
    let (new, new_digest) = push_image(&reg, "kept/app", "v1").await;
    let new_sig = push_referrer(&reg, "kept/app", &new_digest, new.len()).await;
    // The server keeps these lists; `berth gc` changes the tree behind them.
    assert_eq!(list_tags(&reg, "gone/app").await, ["v1"]);
    assert_eq!(list_catalog(&reg).await, ["gone/app", "kept/app"]);

    let report = gc(&cfg, &[]);
    assert!(
        report.contains(&format!("manifest gone/app@{old_digest}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("manifest gone/app@{old_sig}")),
        "{report}"
    );
    assert!(report.contains("repository gone/app"), "{report}");
    assert!(!report.contains("kept/app"), "{report}");
    assert_eq!(list_catalog(&reg).await, ["kept/app"]);
    reg.expect_error(Method::GET, "/v2/gone/app/tags/list", 404, "NAME_UNKNOWN")
        .await;
    let body = reg
        .expect_status(
            Method::GET,
            &format!("/v2/kept/app/referrers/{new_digest}"),
            200,
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"][0]["digest"], serde_json::json!(new_sig));
    assert_eq!(
        get_manifest(&reg, "kept/app", &new_sig)
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn abandoned_uploads_are_purged_and_scheduled_runs_happen() {
    let mut ci = Instance::new("ci");
    ci.extra = "[retention]\nmax_age = \"1h\"\ninterval = \"1s\"\nupload_ttl = \"1h\"\ngc_grace = \"0s\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    let resp = reg.send(Method::POST, "/v2/app/blobs/uploads/").await;
    let location = header(&resp, "location").unwrap();
    let id = location.rsplit('/').next().unwrap().to_string();
    let uploads = cfg
        .storage_root("ci")
        .join("docker/registry/v2/repositories/app/_uploads");
    let fresh = reg.send(Method::POST, "/v2/app/blobs/uploads/").await;
    let fresh_id = header(&fresh, "location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let started = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(7200));
    std::fs::write(uploads.join(&id).join("startedat"), started.to_string()).unwrap();
    push_image(&reg, "app", "old").await;
    assert_eq!(list_tags(&reg, "app").await, ["old"]);
    assert_eq!(list_catalog(&reg).await, ["app"]);
    cfg.age_tag("ci", "app", "old", Duration::from_secs(7200));
    // The server's own scheduled run deletes the old tag and the old session.
    let log = server.wait_for_stderr("tag app:old");
    assert!(log.contains("retention: ci: deleted 1 tags"), "{log}");
    assert!(!uploads.join(&id).exists(), "abandoned upload kept");
    assert!(uploads.join(&fresh_id).exists(), "fresh upload purged");
    let resp = reg.send(Method::GET, &location).await;
    assert_eq!(resp.status().as_u16(), 404);
    // The emptied repository left the listings (its fresh upload stays).
    assert!(list_catalog(&reg).await.is_empty());
    reg.expect_error(Method::GET, "/v2/app/tags/list", 404, "NAME_UNKNOWN")
        .await;
}
