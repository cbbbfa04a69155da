//! Garbage collection keeps what real clients pushed: a multi-arch index
//! pushed by skopeo keeps its platform manifests and layers.

use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::clients::*;
use crate::common::{ConfigDir, Instance, Server};

#[test]
fn multi_arch_index_keeps_its_platform_manifests() {
    let mut ci = Instance::new("ci");
    ci.extra = "[retention]\nkeep_last = 1\ngc_grace = \"0s\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth log", &server.stderr_log);
    let addr = server.addr("ci").to_string();
    let creds = "ci-user:ci-secret";
    let multi = make_multiarch("multi");
    let old = make_image("old");
    skopeo_push(
        &old.reference("old"),
        &format!("docker://{addr}/app:old"),
        creds,
        &[],
    );
    let link = cfg
        .storage_root("ci")
        .join("docker/registry/v2/repositories/app/_manifests/tags/old/current/link");
    std::fs::File::options()
        .write(true)
        .open(link)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    skopeo_push(
        &multi.reference("multi"),
        &format!("docker://{addr}/app:multi"),
        creds,
        &["--all"],
    );

    let out = Command::new(crate::common::berth_bin())
        .args(["gc", "--config-dir"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("deleted 1 tags, 1 manifests"), "{report}");
    assert_eq!(
        skopeo_tags(&format!("docker://{addr}/app"), creds),
        ["multi"]
    );
    let copy = pull_layout(
        &format!("docker://{addr}/app:multi"),
        "multi",
        creds,
        &["--all"],
    );
    assert_same_multiarch(&multi, "multi", &copy, "multi");
}
