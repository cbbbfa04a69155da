//! docker over TLS by hostname: a private dockerd resolving the instances'
//! names to 127.0.0.1 and trusting berth's local CA through certs.d logs in,
//! pushes and pulls on one https port serving two instances.

use std::path::PathBuf;
use std::process::Command;

use crate::clients::*;
use crate::common::{ConfigDir, Instance, Server};

#[test]
fn docker_login_push_pull_by_hostname_over_tls() {
    let instances: Vec<Instance> = ["ci", "cache"]
        .iter()
        .map(|name| {
            let mut inst = Instance::new(name);
            inst.extra = "[tls]\nmode = \"self-signed\"\n".to_string();
            inst
        })
        .collect();
    let cfg = ConfigDir::new(&instances);
    std::fs::write(
        cfg.path().join("berth.toml"),
        "[listen]\nhttps = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth log", &server.stderr_log);
    let port = server
        .addr("shared-tls")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let ca = Command::new(crate::common::berth_bin())
        .args(["ca-path", "--config-dir"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let ca = PathBuf::from(String::from_utf8(ca.stdout).unwrap().trim());
    let hosts: Vec<String> = ["ci.test", "cache.test"]
        .iter()
        .map(|h| format!("{h}:{port}"))
        .collect();
    let cas: Vec<(String, PathBuf)> = hosts.iter().map(|h| (h.clone(), ca.clone())).collect();
    let docker = Dockerd::start_with(&[], &["ci.test", "cache.test"], &cas);
    let _dockerd_log = log_on_panic("dockerd log", &docker.log_path());

    docker.load(&make_image("v1"), "v1", "local/app:v1");
    let id = docker.image_id("local/app:v1");

    // Each name has its own users; the other instance's are refused.
    let err = docker
        .login(&hosts[0], "cache-user", "cache-secret")
        .expect_err("cache's user on ci");
    assert_auth_error(&err);
    for (host, name) in hosts.iter().zip(["ci", "cache"]) {
        let out = docker
            .login(host, &format!("{name}-user"), &format!("{name}-secret"))
            .expect("login");
        assert!(out.contains("Login Succeeded"), "{out}");
        let target = format!("{host}/team/app:v1");
        docker.tag_and_push("local/app:v1", &target);
        docker.run(&["rmi", &target]);
        docker.run(&["pull", &target]);
        assert_eq!(docker.image_id(&target), id);
    }
}
