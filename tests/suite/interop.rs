//! Interoperability with the reference registry (CNCF Distribution 2.8,
//! `docker-registry`) through the on-disk storage layout: a data directory
//! written by one is served by the other, byte for byte, single-image and
//! multi-arch.

use crate::clients::*;
use crate::common::{ConfigDir, Instance, Server};

/// Manifests as pushed to the first registry, to compare with what the
/// second one serves from the same directory.
struct Pushed {
    image: OciLayout,
    multi: OciLayout,
    /// (repo:tag, raw manifest bytes as first served)
    raw: Vec<(String, String)>,
}

/// Pushes a single image (OCI and Docker schema2) and a multi-arch index
/// with skopeo to the registry at `addr`, and records the manifests it serves.
fn push_fixtures(addr: &str, creds: &str) -> Pushed {
    let image = make_image("v1");
    let multi = make_multiarch("multi");
    let mut raw = Vec::new();
    for (layout, tag, repo_tag, extra) in [
        (&image, "v1", "interop/app:v1", &["--format", "oci"][..]),
        (&image, "v1", "interop/app:v2s2", &["--format", "v2s2"]),
        (&multi, "multi", "interop/nested/multi:latest", &["--all"]),
    ] {
        let target = format!("docker://{addr}/{repo_tag}");
        skopeo_push(&layout.reference(tag), &target, creds, extra);
        raw.push((repo_tag.to_string(), skopeo_raw(&target, creds)));
    }
    assert_eq!(
        raw[0].1.as_bytes(),
        image.blob(&image.digest("v1")),
        "the OCI manifest is served byte for byte as pushed"
    );
    let v2s2: serde_json::Value = serde_json::from_str(&raw[1].1).unwrap();
    assert_eq!(v2s2["mediaType"], DOCKER_MANIFEST);
    Pushed { image, multi, raw }
}

/// Pulls everything `push_fixtures` pushed from the registry at `addr` and
/// compares it with the originals.
fn verify_fixtures(addr: &str, creds: &str, pushed: &Pushed) {
    for (repo_tag, raw) in &pushed.raw {
        assert_eq!(
            &skopeo_raw(&format!("docker://{addr}/{repo_tag}"), creds),
            raw,
            "manifest of {repo_tag} as served from the other registry's data"
        );
    }

    let back = pull_layout(&format!("docker://{addr}/interop/app:v1"), "v1", creds, &[]);
    let orig = pushed.image.digest("v1");
    assert_eq!(
        back.digest("v1"),
        orig,
        "OCI manifest digest after the round trip"
    );
    assert_eq!(back.image_digests(&orig), pushed.image.image_digests(&orig));
    back.assert_layers_intact(&orig);

    // The schema2 copy comes back as OCI with the same layers (skopeo
    // rewrites the config at each format conversion, not its rootfs).
    let back2 = pull_layout(
        &format!("docker://{addr}/interop/app:v2s2"),
        "v2s2",
        creds,
        &[],
    );
    let back2_digests = back2.image_digests(&back2.digest("v2s2"));
    let orig_digests = pushed.image.image_digests(&orig);
    assert_eq!(
        back2_digests.layers, orig_digests.layers,
        "layers of the schema2 copy"
    );
    assert_eq!(
        back2.blob_json(&back2_digests.config)["rootfs"],
        pushed.image.blob_json(&orig_digests.config)["rootfs"],
        "diff_ids in the config of the schema2 copy"
    );

    let multi_back = pull_layout(
        &format!("docker://{addr}/interop/nested/multi:latest"),
        "latest",
        creds,
        &["--all"],
    );
    assert_same_multiarch(&pushed.multi, "multi", &multi_back, "latest");

    assert_eq!(
        skopeo_tags(&format!("docker://{addr}/interop/app"), creds),
        vec!["v1".to_string(), "v2s2".to_string()]
    );
    assert_eq!(
        skopeo_tags(&format!("docker://{addr}/interop/nested/multi"), creds),
        vec!["latest".to_string()]
    );
}

/// The helpers against the reference registry alone: what the two tests
/// below rely on works with the peer itself.
#[test]
fn reference_registry_round_trip() {
    let data = tempfile::tempdir().unwrap();
    let reg = DistRegistry::start(&data.path().join("root"), "ref-user", "ref-secret");
    let pushed = push_fixtures(&reg.addr, &reg.creds());
    verify_fixtures(&reg.addr, &reg.creds(), &pushed);
    assert_auth_error(&skopeo_raw_fails(
        &reg.image("interop/app:v1"),
        "ref-user:wrong",
    ));
}

/// A data directory written by the reference registry is served by berth.
#[test]
fn berth_serves_reference_registry_data() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("root");
    let mut reg = DistRegistry::start(&root, "ref-user", "ref-secret");
    let pushed = push_fixtures(&reg.addr, &reg.creds());
    reg.stop();

    let mut inst = Instance::new("ci");
    inst.extra = format!("[storage]\nroot = {:?}\n", root.to_str().unwrap());
    let cfg = ConfigDir::new(&[inst]);
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth stderr", &server.stderr_log);
    let creds = "ci-user:ci-secret";
    verify_fixtures(server.addr("ci"), creds, &pushed);

    // berth keeps writing the same directory: a new tag is visible to the
    // reference registry afterwards.
    skopeo_push(
        &pushed.image.reference("v1"),
        &format!("docker://{}/interop/app:from-berth", server.addr("ci")),
        creds,
        &[],
    );
    server.stop();
    let reg = DistRegistry::start(&root, "ref-user", "ref-secret");
    assert_eq!(
        skopeo_tags(&reg.image("interop/app"), &reg.creds()),
        vec![
            "from-berth".to_string(),
            "v1".to_string(),
            "v2s2".to_string()
        ]
    );
    let back = pull_layout(&reg.image("interop/app:from-berth"), "t", &reg.creds(), &[]);
    assert_eq!(back.digest("t"), pushed.image.digest("v1"));
}

/// A data directory written by berth is served by the reference registry.
#[test]
fn reference_registry_serves_berth_data() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth stderr", &server.stderr_log);
    let pushed = push_fixtures(server.addr("ci"), "ci-user:ci-secret");
    server.stop();

    let reg = DistRegistry::start(&cfg.storage_root("ci"), "ref-user", "ref-secret");
    let _reg_log = log_on_panic("docker-registry log", reg.log_path());
    verify_fixtures(&reg.addr, &reg.creds(), &pushed);
}
