//! Full disk: an instance whose storage is a 16 MiB tmpfs made by the test.
//! Writes that hit ENOSPC fail with an OCI error and 507 Insufficient
//! Storage, leave no temp files or upload directories behind, roll a failed
//! chunk back so its session stays resumable; pulls keep working while the
//! disk is full, and pushes work again once space is freed. Needs root (for
//! `mount`); skipped with a message otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{berth_bin, sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;

const REPO: &str = "full/app";

/// A tmpfs mounted for the test; unmounted when dropped.
pub(crate) struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Every file under `dir` whose name is a temp name (`.NAME.<uuid>.tmp`).
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                out.push(e.path());
            }
        }
    }
    out
}

/// Upload directories of the repository.
fn upload_dirs(root: &Path) -> Vec<String> {
    let dir = root.join(format!("docker/registry/v2/repositories/{REPO}/_uploads"));
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// PATCHes `data` as the chunk at `range` of the upload session `session`.
async fn patch_chunk(reg: &Reg, session: &str, range: &str, data: &[u8]) -> reqwest::Response {
    reg.patch(session)
        .header("content-range", range)
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

/// Asserts the 507 OCI error of a full disk.
async fn expect_full(resp: reqwest::Response, what: &str) {
    let v = expect_error_for(resp, 507, "UNKNOWN", what).await;
    let message = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("storage is full"),
        "{what}: message {message:?}"
    );
}

/// Fills the file system up to the last byte with a file of its own.
fn fill_to_the_brim(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for size in [1 << 16, 1 << 12, 1] {
        let buf = vec![0u8; size];
        loop {
            match f.write(&buf) {
                Ok(n) if n == size => continue,
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
}

fn fsck_clean(config_dir: &Path) -> String {
    let out = Command::new(berth_bin())
        .args(["fsck", "--config-dir"])
        .arg(config_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("no problems") && text.contains("; 0 leftover(s);"),
        "fsck:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn enospc_fails_cleanly_and_pulls_keep_working() {
    if !is_root() {
        eprintln!("full_disk: skipped, mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("store");
    let _tmpfs = Tmpfs::mount(&mnt, "16m");
    let mut inst = Instance::new("ci");
    inst.extra = format!("[storage]\nroot = {:?}\n", mnt.display().to_string());
    let cfg = ConfigDir::new(&[inst]);
    let server = Server::start(&cfg);
    let reg = Reg::for_instance(&server, "ci");

    // Content pushed while there is room.
    let (early, early_digest) = push_image(&reg, REPO, "early").await;
    let big = random_bytes(1 << 20);
    let big_digest = push_blob(&reg, REPO, &big).await;
    // A chunked upload that will be half-way when the disk fills.
    let resp = reg
        .send(Method::POST, &format!("/v2/{REPO}/blobs/uploads/"))
        .await;
    let session = must_header(&resp, "location");
    expect_status(resp, 202).await;
    let first = random_bytes(100 * 1024);
    let resp = patch_chunk(&reg, &session, &format!("0-{}", first.len() - 1), &first).await;
    let session = must_header(&resp, "location");
    expect_status(resp, 202).await;
    let sessions_before = upload_dirs(&mnt);
    assert_eq!(sessions_before.len(), 1);

    // Fill up with pushes: a monolithic upload that hits ENOSPC gets 507
    // and leaves nothing in _uploads.
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![0u8; 9 << 20]).unwrap();
    let mut pushed = 0;
    let mut refused = 0;
    for size in [1 << 20, 256 << 10, 16 << 10, 1 << 10] {
        for _ in 0..64 {
            let data = random_bytes(size);
            let resp = post_blob(&reg, REPO, &sha256_digest(&data), &data).await;
            if resp.status().as_u16() == 201 {
                pushed += 1;
                continue;
            }
            expect_full(resp, &format!("monolithic upload of {size} bytes")).await;
            refused += 1;
            assert_eq!(upload_dirs(&mnt), sessions_before, "after a refused upload");
            break;
        }
    }
    assert!(
        pushed > 0 && refused == 4,
        "{pushed} pushed, {refused} refused"
    );
    // Whatever room is left goes too.
    let brim = mnt.join("brim");
    fill_to_the_brim(&brim);

    // Every kind of write is refused with 507 ...
    let data = random_bytes(4000);
    let resp = post_blob(&reg, REPO, &sha256_digest(&data), &data).await;
    expect_full(resp, "monolithic upload on a full disk").await;
    let resp = reg
        .send(Method::POST, &format!("/v2/{REPO}/blobs/uploads/"))
        .await;
    expect_full(resp, "upload session start on a full disk").await;
    let second = random_bytes(300 * 1024);
    let range = format!("{}-{}", first.len(), first.len() + second.len() - 1);
    let resp = patch_chunk(&reg, &session, &range, &second).await;
    expect_full(resp, "chunk on a full disk").await;
    let (config, layers) = descriptors_of(&early);
    let manifest = image_manifest(OCI_MANIFEST, &config, &layers);
    let manifest = [manifest, b"\n".to_vec()].concat();
    let resp = put_manifest(&reg, REPO, "late", OCI_MANIFEST, &manifest).await;
    expect_full(resp, "manifest PUT on a full disk").await;

    // ... and leaves nothing behind: no temp files, no new upload
    // directories, the failed chunk cut back.
    assert_eq!(temp_files(&mnt), Vec::<PathBuf>::new());
    assert_eq!(upload_dirs(&mnt), sessions_before);
    let resp = reg.send(Method::GET, &session).await;
    assert_eq!(
        header(&resp, "range").as_deref(),
        Some(format!("0-{}", first.len() - 1).as_str()),
        "the failed chunk is rolled back"
    );
    expect_status(resp, 204).await;
    let data_file = mnt
        .join(format!("docker/registry/v2/repositories/{REPO}/_uploads"))
        .join(&sessions_before[0])
        .join("data");
    assert_eq!(
        std::fs::metadata(&data_file).unwrap().len(),
        first.len() as u64
    );

    // Pulls keep working while the disk is full.
    assert_manifest_body(&reg, REPO, "early", &early).await;
    assert_manifest_body(&reg, REPO, &early_digest, &early).await;
    assert_blob(&reg, REPO, &big_digest, &big).await;
    for d in layers.iter().chain([&config]) {
        let path = format!("/v2/{REPO}/blobs/{}", d.digest);
        let body = reg.expect_status(Method::GET, &path, 200).await;
        assert_eq!(sha256_digest(&body), d.digest);
    }
    assert_eq!(list_tags(&reg, REPO).await, ["early"]);
    fsck_clean(cfg.path());

    // Freeing space lets pushes through again; the session resumes.
    std::fs::remove_file(&brim).unwrap();
    std::fs::remove_file(&ballast).unwrap();
    let resp = patch_chunk(&reg, &session, &range, &second).await;
    let session = must_header(&resp, "location");
    expect_status(resp, 202).await;
    let whole = [first, second].concat();
    let digest = sha256_digest(&whole);
    let resp = reg
        .put(&with_query(&session, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    expect_blob_created(resp, REPO, &digest).await;
    assert_blob(&reg, REPO, &digest, &whole).await;
    put_manifest_ok(&reg, REPO, "late", OCI_MANIFEST, &manifest).await;
    let (again, _) = push_image(&reg, REPO, "again").await;
    assert_manifest_body(&reg, REPO, "again", &again).await;
    assert_eq!(upload_dirs(&mnt), Vec::<String>::new());
    let report = fsck_clean(cfg.path());
    assert!(report.contains("0 upload session(s)"), "{report}");
    server.stop();
}

/// The config and layer descriptors of a pushed image manifest.
fn descriptors_of(manifest: &[u8]) -> (Desc, Vec<Desc>) {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let desc = |v: &serde_json::Value| Desc {
        media_type: v["mediaType"].as_str().unwrap().to_string(),
        digest: v["digest"].as_str().unwrap().to_string(),
        size: v["size"].as_u64().unwrap() as usize,
    };
    (
        desc(&m["config"]),
        m["layers"].as_array().unwrap().iter().map(desc).collect(),
    )
}
