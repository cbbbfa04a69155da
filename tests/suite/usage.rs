//! The usage the running server keeps for each instance, as `berth usage`
//! (and `./ctl status`) print it: measured at start, measured again after
//! pushes, and read from the state directory without reading the store.

use std::time::{Duration, Instant};

use crate::common_api::*;

/// `berth usage --config-dir DIR`: its stdout (it must succeed).
fn usage(dir: &std::path::Path) -> String {
    crate::common::berth_ok("usage", dir, &[])
}

/// Waits (bounded) until `berth usage` prints a line starting with `line`.
fn wait_for_usage(dir: &std::path::Path, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = usage(dir);
        if out.lines().any(|l| l.starts_with(line)) {
            return out;
        }
        assert!(Instant::now() < deadline, "never {line:?}; last:\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn the_server_keeps_usage_and_usage_reads_it_without_the_store() {
    let env = Env::start();
    let dir = env.cfg.path().to_path_buf();
    wait_for_usage(
        &dir,
        "ci holds 0 bytes in 0 blobs, 0 repositories, 0 tags (measured ",
    );

    let layer = push_desc(&env.reg, "app/web", OCI_LAYER, &random_bytes(10_000)).await;
    let config = push_desc(&env.reg, "app/web", OCI_CONFIG, b"{}").await;
    let manifest = image_manifest(OCI_MANIFEST, &config, &[layer]);
    put_manifest_ok(&env.reg, "app/web", "v1", OCI_MANIFEST, &manifest).await;
    let bytes = 10_000 + 2 + manifest.len();
    let expected = format!("ci holds {bytes} bytes in 3 blobs, 1 repositories, 1 tags (measured ");
    wait_for_usage(&dir, &expected);

    // What `usage` prints comes from the state directory: with the store
    // gone (the server stopped), the last figure is still there.
    env.server.stop();
    std::fs::rename(env.cfg.storage_root("ci"), dir.join("moved-away")).unwrap();
    let out = usage(&dir);
    assert!(out.starts_with(&expected), "{out}");
    let file = dir.join("state/usage/ci.json");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(recorded["bytes"], bytes as u64, "{recorded}");
}
