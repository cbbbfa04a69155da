//! Real clients pulling through a mirror instance of two upstreams on
//! 127.0.0.1: a fake Docker Hub (`docker-registry` behind token auth, as
//! `docker.io`, every repository not under another prefix) and another
//! berth instance with Basic auth (under `up/`). A `dockerd` with
//! `registry-mirrors` pulls `alpine:3` (the hub's `library/alpine:3`)
//! and, by name on the mirror, an image of the other upstream; its
//! containerd's `ctr` pulls both by their own registries' names through
//! `hosts.toml` mirror entries (`?ns=`).

use std::path::Path;

use crate::clients::hub::FakeHub;
use crate::clients::*;
use crate::common::{ConfigDir, Instance, Server};

/// `REGISTRY/hosts.toml` under `dir`: pull `registry`'s images through
/// `mirror` ("http://127.0.0.1:PORT").
fn hosts_toml(dir: &Path, registry: &str, mirror: &str) {
    let d = dir.join(registry);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"https://{registry}\"\n\n[host.\"{mirror}\"]\n  \
             capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}

#[test]
fn docker_and_containerd_pull_through_the_mirror() {
    let hub = FakeHub::start();
    let alpine = make_image("3");
    hub.push(&alpine, "3", "library/alpine:3");
    let up_cfg = ConfigDir::new(&[Instance::new("up")]);
    let up = Server::start(&up_cfg);
    let _up_log = log_on_panic("upstream berth", &up.stderr_log);
    let app = make_image("1");
    let up_creds = "up-user:up-secret";
    let up_image = format!("docker://{}/team/app:1", up.addr("up"));
    skopeo_push(&app.reference("1"), &up_image, up_creds, &[]);

    // Anonymous pulls, as machines pulling through a mirror do.
    let cfg = ConfigDir::new(&[]);
    let upstreams = [
        cfg.mirror_upstream("docker.io", &hub.url(), "", None),
        cfg.mirror_upstream("upstream.test", &up.url("up"), "up/", Some(up_creds)),
    ];
    let access = "[access]\nanonymous = \"pull\"\n";
    cfg.add_instance(&Instance::mirror("hub", "", &upstreams, access));
    let server = Server::start(&cfg);
    let _log = log_on_panic("mirror berth", &server.stderr_log);
    let mirror = server.url("hub");
    let config_of = |image: &OciLayout, tag: &str| image.image_digests(&image.digest(tag)).config;

    let docker = Dockerd::start_with_mirrors(&[&mirror]);
    let _dockerd_log = log_on_panic("dockerd", &docker.log_path());
    docker.run(&["pull", "alpine:3"]);
    assert_eq!(docker.image_id("alpine:3"), config_of(&alpine, "3"));
    let by_prefix = format!("{}/up/team/app:1", server.addr("hub"));
    docker.run(&["pull", &by_prefix]);
    assert_eq!(docker.image_id(&by_prefix), config_of(&app, "1"));
    let access_log = std::fs::read_to_string(&server.stderr_log).unwrap();
    assert!(
        access_log.contains("path=\"/v2/library/alpine/manifests/3\" status=200"),
        "docker asked the mirror:\n{access_log}"
    );

    // containerd, by the images' own names: `?ns=` says which upstream.
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(hosts.path(), "docker.io", &mirror);
    hosts_toml(hosts.path(), "upstream.test", &mirror);
    let hosts_dir = hosts.path().to_str().unwrap();
    for (name, image, tag) in [
        ("docker.io/library/alpine:3", &alpine, "3"),
        ("upstream.test/team/app:1", &app, "1"),
    ] {
        run(&mut docker.ctr(&["images", "pull", "--hosts-dir", hosts_dir, name]));
        let listed = run(&mut docker.ctr(&["images", "ls", &format!("name=={name}")]));
        assert!(
            listed.contains(&image.digest(tag)),
            "ctr has {name} at {}:\n{listed}",
            image.digest(tag)
        );
    }
}
