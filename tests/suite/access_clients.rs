//! Access control seen from real clients: a pull-only robot can pull with
//! docker and inspect with skopeo but not push; a pushing user cannot delete.

use crate::clients::*;
use crate::common::{access_rule, ConfigDir, Instance, Server};

#[test]
fn pull_only_and_push_only_users_with_skopeo_and_docker() {
    let mut ci = Instance::new("ci").with_users(&["admin", "dev", "robot"]);
    ci.extra = format!(
        "[access]\ndefault = \"push\"\n{}{}",
        access_rule(&["robot"], &["**"], "pull"),
        access_rule(&["admin"], &["**"], "delete")
    );
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth log", &server.stderr_log);
    let addr = server.addr("ci").to_string();
    let image = make_image("v1");
    let app = format!("docker://{addr}/base/app:v1");
    skopeo_push(&image.reference("v1"), &app, "admin:admin-pw", &[]);

    // skopeo: the robot inspects, but may not push.
    let raw = skopeo_raw(&app, "robot:robot-pw");
    assert!(raw.contains("schemaVersion"), "{raw}");
    let err = skopeo_push_fails(
        &image.reference("v1"),
        &format!("docker://{addr}/base/other:v1"),
        "robot:robot-pw",
    );
    assert!(err.to_lowercase().contains("denied"), "{err}");

    // skopeo: dev pushes but may not delete; admin may.
    skopeo_push(
        &image.reference("v1"),
        &format!("docker://{addr}/dev/app:v1"),
        "dev:dev-pw",
        &[],
    );
    let delete = |creds: &str| {
        skopeo_cmd(&[
            "delete",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://{addr}/dev/app:v1"),
        ])
    };
    let err = run_fails(&mut delete("dev:dev-pw"));
    assert!(err.to_lowercase().contains("denied"), "{err}");
    run(&mut delete("admin:admin-pw"));

    // docker: the robot logs in and pulls, and its push is refused, saying why.
    let docker = Dockerd::start(&[&addr]);
    let _dockerd_log = log_on_panic("dockerd log", &docker.log_path());
    let out = docker
        .login(&addr, "robot", "robot-pw")
        .expect("robot login");
    assert!(out.contains("Login Succeeded"), "{out}");
    docker.run(&["pull", &format!("{addr}/base/app:v1")]);
    docker.load(&image, "v1", "local/app:v1");
    let target = format!("{addr}/robot/app:v1");
    docker.run(&["tag", "local/app:v1", &target]);
    let err = docker.run_fails(&["push", &target]);
    assert!(err.to_lowercase().contains("denied"), "{err}");
}
