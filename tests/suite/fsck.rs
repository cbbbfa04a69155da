//! `berth fsck`: content pushed over HTTP, damaged on disk in each way fsck
//! knows (a flipped byte in a blob, a blob deleted from under a layer link, a
//! revision and a tag, a dangling tag, leftover temp files), then checked,
//! repaired and checked again; after repair the server serves only
//! consistent content.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{berth_bin, sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;
use serde_json::Value;

/// Output of one `berth fsck` run.
struct Fsck {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Fsck {
    fn run(config_dir: &Path, args: &[&str]) -> Fsck {
        let out = Command::new(berth_bin())
            .arg("fsck")
            .arg("--config-dir")
            .arg(config_dir)
            .args(args)
            .output()
            .expect("run berth fsck");
        Fsck {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn expect(self, code: i32) -> Fsck {
        assert_eq!(
            self.code, code,
            "fsck exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a line of stdout holds every one of `parts`.
    fn has_line(&self, parts: &[&str]) -> &Fsck {
        assert!(
            self.stdout
                .lines()
                .any(|l| parts.iter().all(|p| l.contains(p))),
            "no fsck line with {parts:?}:\n{}",
            self.stdout
        );
        self
    }

    fn clean(config_dir: &Path, args: &[&str]) -> Fsck {
        let f = Fsck::run(config_dir, args).expect(0);
        f.has_line(&["no problems"]);
        f
    }
}

fn v2(cfg: &ConfigDir) -> PathBuf {
    cfg.storage_root("ci").join("docker/registry/v2")
}

fn blob_path(cfg: &ConfigDir, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    v2(cfg).join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
}

fn repo_dir(cfg: &ConfigDir, repo: &str) -> PathBuf {
    v2(cfg).join("repositories").join(repo)
}

fn layer_link(cfg: &ConfigDir, repo: &str, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    repo_dir(cfg, repo).join(format!("_layers/sha256/{hex}/link"))
}

fn revision_link(cfg: &ConfigDir, repo: &str, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    repo_dir(cfg, repo).join(format!("_manifests/revisions/sha256/{hex}/link"))
}

fn tag_link(cfg: &ConfigDir, repo: &str, tag: &str) -> PathBuf {
    repo_dir(cfg, repo).join(format!("_manifests/tags/{tag}/current/link"))
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// Every tag of every repository resolves to a manifest whose blobs and
/// children are all served with bytes matching their digests.
async fn assert_consistent(reg: &Reg) {
    let body = reg.expect_status(Method::GET, "/v2/_catalog", 200).await;
    let catalog: Value = serde_json::from_slice(&body).unwrap();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        for tag in list_tags(reg, repo).await {
            assert_pullable(reg, repo, &tag).await;
        }
    }
}

/// A manifest and everything it references are served intact.
async fn assert_pullable(reg: &Reg, repo: &str, reference: &str) {
    let mut todo = vec![reference.to_string()];
    while let Some(r) = todo.pop() {
        let resp = get_manifest(reg, repo, &r).await;
        let dcd = must_header(&resp, "docker-content-digest");
        let bytes = expect_status(resp, 200).await;
        assert_eq!(sha256_digest(&bytes), dcd, "{repo}:{r} bytes vs digest");
        if r.starts_with("sha256:") {
            assert_eq!(dcd, r);
        }
        let (children, blobs) = manifest_refs(&bytes);
        todo.extend(children);
        for digest in blobs {
            let path = format!("/v2/{repo}/blobs/{digest}");
            let data = reg.expect_status(Method::GET, &path, 200).await;
            assert_eq!(sha256_digest(&data), digest, "{repo} blob {digest}");
        }
    }
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// Layer digests of a manifest.
fn layers_of(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn start() -> (ConfigDir, Server, Reg) {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");
    (cfg, server, reg)
}

#[tokio::test]
async fn clean_storage_passes() {
    let (cfg, _server, reg) = start();
    Fsck::clean(cfg.path(), &[]).has_line(&["holds no registry data yet"]);
    push_image(&reg, "a/b/c", "v1").await;
    let (_, child) = push_image(&reg, "a/b/c", "v2").await;
    let child = Desc {
        media_type: OCI_MANIFEST.into(),
        digest: child,
        size: 1,
    };
    let index = index_manifest(OCI_INDEX, &[child]);
    put_manifest_ok(&reg, "a/b/c", "multi", OCI_INDEX, &index).await;
    push_blob(&reg, "lonely", &random_bytes(3000)).await;
    let f = Fsck::clean(cfg.path(), &[]);
    f.has_line(&[
        "ci: ",
        "8 blob(s)",
        "2 repositories",
        "3 manifest(s)",
        "3 tag(s)",
    ]);
    // --repair on clean storage changes nothing.
    Fsck::clean(cfg.path(), &["--repair"]);
    assert!(!cfg.storage_root("ci").join("quarantine").exists());
    assert_consistent(&reg).await;
}

#[tokio::test]
async fn flipped_byte_is_quarantined_and_the_image_unlinked() {
    let (cfg, mut server, mut reg) = start();
    let (manifest, digest) = push_image(&reg, "app", "v1").await;
    let (other, _) = push_image(&reg, "app", "v2").await;
    let layer = layers_of(&manifest)[0].clone();
    let path = blob_path(&cfg, &layer);
    flip_byte(&path);

    let f = Fsck::run(cfg.path(), &[]).expect(1);
    f.has_line(&["ci: corrupt-blob: ", &show(&path), &format!("not {layer}")])
        .has_line(&["--repair would move it to quarantine/"])
        .has_line(&[
            "ci: dangling-link: ",
            &show(&layer_link(&cfg, "app", &layer)),
            "corrupt",
        ])
        .has_line(&[
            "ci: broken-manifest: ",
            &show(&revision_link(&cfg, "app", &digest)),
            "tags: v1",
        ]);
    assert!(f.stderr.contains("3 problem(s) found"), "{}", f.stderr);
    assert!(path.is_file(), "a check alone changes nothing");

    // The recommended way: repair a stopped server.
    server.stop();
    let f = Fsck::run(cfg.path(), &["--repair"]).expect(0);
    f.has_line(&["repaired: moved to "])
        .has_line(&["repaired: manifest unlinked, tags removed: v1"])
        .has_line(&["3 problem(s), 3 repaired"]);
    let quarantine = std::fs::read_dir(cfg.storage_root("ci").join("quarantine"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let moved = quarantine.join(path.strip_prefix(cfg.storage_root("ci")).unwrap());
    assert!(
        moved.is_file(),
        "{} holds the corrupt blob",
        moved.display()
    );
    assert_ne!(sha256_digest(&std::fs::read(&moved).unwrap()), layer);
    assert!(!path.exists());
    let log = std::fs::read_to_string(quarantine.join("actions.log")).unwrap();
    assert!(log.contains(&layer) && log.contains(&digest), "{log}");
    assert!(blob_path(&cfg, &digest).is_file(), "manifest bytes stay");
    Fsck::clean(cfg.path(), &[]);

    server = Server::start(&cfg);
    reg = Reg::for_instance(&server, "ci");
    assert_no_manifest(&reg, "app", "v1").await;
    assert_no_blob(&reg, "app", &layer).await;
    assert_manifest_body(&reg, "app", "v2", &other).await;
    assert_eq!(list_tags(&reg, "app").await, ["v2"]);
    assert_consistent(&reg).await;

    // Pushing the image again brings it back whole.
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let config = m["config"]["digest"].as_str().unwrap();
    assert!(blob_path(&cfg, config).is_file());
    let fresh = random_bytes(300);
    let fresh_layer = push_desc(&reg, "app", OCI_LAYER, &fresh).await;
    let config = Desc {
        media_type: OCI_CONFIG.into(),
        digest: config.to_string(),
        size: m["config"]["size"].as_u64().unwrap() as usize,
    };
    put_manifest_ok(
        &reg,
        "app",
        "v1",
        OCI_MANIFEST,
        &image_manifest(OCI_MANIFEST, &config, &[fresh_layer]),
    )
    .await;
    assert_consistent(&reg).await;
    Fsck::clean(cfg.path(), &[]);
}

#[tokio::test]
async fn blobs_deleted_from_under_links() {
    let (cfg, _server, reg) = start();
    // A layer link whose blob goes.
    let lone = push_blob(&reg, "app", &random_bytes(2000)).await;
    // A revision (and its tag) whose manifest blob goes.
    let (_, gone) = push_image(&reg, "app", "gone").await;
    // A tag whose revision link goes (the manifest blob stays).
    let (_, unrevised) = push_image(&reg, "app", "unrevised").await;
    let (keep, _) = push_image(&reg, "app", "keep").await;
    std::fs::remove_file(blob_path(&cfg, &lone)).unwrap();
    std::fs::remove_file(blob_path(&cfg, &gone)).unwrap();
    std::fs::remove_file(revision_link(&cfg, "app", &unrevised)).unwrap();

    let f = Fsck::run(cfg.path(), &[]).expect(1);
    f.has_line(&[
        "ci: dangling-link: ",
        &show(&layer_link(&cfg, "app", &lone)),
        "layer link",
        "missing",
    ])
    .has_line(&[
        "ci: dangling-link: ",
        &show(&revision_link(&cfg, "app", &gone)),
        "manifest revision link",
        "missing",
    ])
    .has_line(&[
        "ci: dangling-link: ",
        &show(&tag_link(&cfg, "app", "gone")),
        "tag gone points at",
    ])
    .has_line(&[
        "ci: dangling-link: ",
        &show(&tag_link(&cfg, "app", "unrevised")),
        "not in the repository",
    ]);
    assert_eq!(f.stdout.matches("dangling-link").count(), 4, "{}", f.stdout);

    // Before the repair the server already refuses what is missing...
    assert_no_blob(&reg, "app", &lone).await;
    assert_no_manifest(&reg, "app", "gone").await;
    // ...but still lists the dangling tags.
    assert_eq!(list_tags(&reg, "app").await, ["gone", "keep", "unrevised"]);

    Fsck::run(cfg.path(), &["--repair"])
        .expect(0)
        .has_line(&["4 problem(s), 4 repaired"])
        .has_line(&["repaired: tag removed"])
        .has_line(&["repaired: link removed"]);
    Fsck::clean(cfg.path(), &[]);
    assert_eq!(list_tags(&reg, "app").await, ["keep"]);
    assert_manifest_body(&reg, "app", "keep", &keep).await;
    assert_consistent(&reg).await;
}

#[tokio::test]
async fn dangling_tag_and_index() {
    let (cfg, _server, reg) = start();
    let (_, child) = push_image(&reg, "multi", "child").await;
    let desc = Desc {
        media_type: OCI_MANIFEST.into(),
        digest: child.clone(),
        size: 1,
    };
    let index = put_manifest_ok(
        &reg,
        "multi",
        "all",
        OCI_INDEX,
        &index_manifest(OCI_INDEX, &[desc]),
    )
    .await;
    // A tag written by hand to a manifest that was never pushed.
    let ghost = random_digest();
    let ghost_tag = tag_link(&cfg, "multi", "ghost");
    std::fs::create_dir_all(ghost_tag.parent().unwrap()).unwrap();
    std::fs::write(&ghost_tag, &ghost).unwrap();
    // The child's blob goes: its revision dangles, the index breaks.
    std::fs::remove_file(blob_path(&cfg, &child)).unwrap();

    let f = Fsck::run(cfg.path(), &[]).expect(1);
    f.has_line(&[
        "ci: dangling-link: ",
        &show(&ghost_tag),
        &format!("tag ghost points at manifest {ghost}"),
    ])
    .has_line(&[
        "ci: broken-manifest: ",
        &show(&revision_link(&cfg, "multi", &index)),
        "tags: all",
        &format!("child manifest {child} is missing"),
    ]);
    Fsck::run(cfg.path(), &["--repair"]).expect(0);
    Fsck::clean(cfg.path(), &[]);
    assert!(list_tags(&reg, "multi").await.is_empty());
    assert_no_manifest(&reg, "multi", &index).await;
    assert_consistent(&reg).await;
}

#[tokio::test]
async fn leftover_temp_files_are_reported_and_removed() {
    let (cfg, _server, reg) = start();
    let (manifest, digest) = push_image(&reg, "app", "v1").await;
    let layer = layers_of(&manifest)[0].clone();
    let link_tmp = layer_link(&cfg, "app", &layer)
        .parent()
        .unwrap()
        .join(".link.5f1d2c3b4a5968778695a4b3c2d1e0f0.tmp");
    std::fs::write(&link_tmp, "sha256:").unwrap();
    let tag_tmp = tag_link(&cfg, "app", "v1")
        .parent()
        .unwrap()
        .join(".link.00112233445566778899aabbccddeeff.tmp");
    std::fs::write(&tag_tmp, "").unwrap();
    let blob_tmp = blob_path(&cfg, &digest)
        .parent()
        .unwrap()
        .join(".data.0f1e2d3c4b5a69788796a5b4c3d2e1f0.tmp");
    std::fs::write(&blob_tmp, &manifest[..10]).unwrap();
    // An upload session in progress is no leftover.
    let resp = reg.send(Method::POST, "/v2/app/blobs/uploads/").await;
    let location = must_header(&resp, "location");
    expect_status(resp, 202).await;
    let resp = reg
        .patch(&location)
        .body(vec![1u8; 1234])
        .send()
        .await
        .unwrap();
    expect_status(resp, 202).await;

    // Leftovers are reported, but storage is consistent: exit 0.
    let f = Fsck::clean(cfg.path(), &[]);
    for p in [&link_tmp, &tag_tmp, &blob_tmp] {
        f.has_line(&[
            "ci: leftover temp-file: ",
            &show(p),
            "--repair would remove it",
        ]);
    }
    f.has_line(&["3 leftover(s)", "1 upload session(s) (1.2 KiB"]);
    assert!(link_tmp.exists());

    let f = Fsck::clean(cfg.path(), &["--repair"]);
    f.has_line(&["ci: leftover temp-file: ", &show(&link_tmp), "removed"]);
    assert!(!link_tmp.exists() && !tag_tmp.exists() && !blob_tmp.exists());
    let f = Fsck::clean(cfg.path(), &[]);
    assert!(!f.stdout.contains("leftover temp-file"), "{}", f.stdout);
    f.has_line(&["0 leftover(s)", "1 upload session(s)"]);

    // The session is still resumable, the image still whole.
    let data = [vec![1u8; 1234], vec![2u8; 10]].concat();
    let resp = reg
        .put(&with_query(
            &location,
            &format!("digest={}", sha256_digest(&data)),
        ))
        .body(vec![2u8; 10])
        .send()
        .await
        .unwrap();
    expect_status(resp, 201).await;
    assert_manifest_body(&reg, "app", "v1", &manifest).await;
    assert_consistent(&reg).await;
    Fsck::clean(cfg.path(), &[]).has_line(&["0 upload session(s)"]);
}

#[tokio::test]
async fn instance_selection_and_config_errors() {
    let cfg = ConfigDir::new(&[Instance::new("ci"), Instance::new("cache")]);
    let server = Server::start(&cfg);
    let ci = Reg::for_instance(&server, "ci");
    let cache = Reg::for_instance(&server, "cache");
    let bad = push_blob(&ci, "x", &random_bytes(100)).await;
    push_blob(&cache, "y", &random_bytes(100)).await;
    flip_byte(&blob_path(&cfg, &bad));

    let f = Fsck::run(cfg.path(), &[]).expect(1);
    f.has_line(&["cache: ", "no problems"])
        .has_line(&["ci: corrupt-blob: "]);
    Fsck::clean(cfg.path(), &["--instance", "cache"]);
    assert!(!Fsck::clean(cfg.path(), &["--instance", "cache"])
        .stdout
        .contains("ci:"));
    Fsck::run(cfg.path(), &["--instance", "ci"]).expect(1);

    let f = Fsck::run(cfg.path(), &["--instance", "nope"]).expect(2);
    assert!(f.stderr.contains("no instance 'nope'"), "{}", f.stderr);
    let missing = cfg.path().join("does-not-exist");
    Fsck::run(&missing, &[]).expect(2);
    std::fs::write(cfg.path().join("instances/ci.toml"), "hostnames = [1]\n").unwrap();
    let f = Fsck::run(cfg.path(), &[]).expect(2);
    assert!(f.stderr.contains("ci.toml"), "{}", f.stderr);
}
