//! `berth import-registry2`: registry:2's whole reference configuration
//! (seed 004, in `tests/fixtures/`) converts with the warnings it should
//! and the written instance passes `berth check`; a `docker run -e
//! REGISTRY_...` setup converts from the environment alone; and a
//! registry:2 this test ran and pushed to is served by berth from what the
//! import wrote: its image pulls, its user logs in.

use std::path::Path;
use std::process::{Command, Output};

use crate::clients::*;
use crate::common::{berth_bin, berth_ok, Server};

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/registry2-reference-config.yml"
);

/// Runs `berth import-registry2 --config-dir DIR ARGS` with the
/// environment `env` (and no other `REGISTRY_*` variable).
fn import(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(berth_bin());
    cmd.arg("import-registry2")
        .arg("--config-dir")
        .arg(dir)
        .args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A config directory with `berth.toml` holding `server_toml`.
fn config_dir(server_toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("berth.toml"), server_toml).unwrap();
    dir
}

#[test]
fn the_reference_configuration_converts_with_its_warnings() {
    // registry:2 there gets its certificate from Let's Encrypt, which berth
    // orders over a shared https listener: without one, nothing is written.
    let dir = config_dir("");
    let out = import(dir.path(), &["--config", REFERENCE, "--name", "ref"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("nothing written") && err.contains("https = \"0.0.0.0:443\""),
        "{err}"
    );
    assert!(!dir.path().join("instances").exists());

    let dir = config_dir("[listen]\nhttps = \"127.0.0.1:0\"\n");
    let out = import(dir.path(), &["--config", REFERENCE, "--name", "ref"], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let told: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .map(|l| l.split([':', ' ']).next().unwrap())
        .collect();
    assert_eq!(
        told,
        [
            "storage.s3",
            "storage.filesystem.rootdirectory",
            "auth.htpasswd.path",
            "http.tls.certificate",
            "notifications.endpoints[0].headers",
            "log",
            "loglevel",
            "storage.filesystem.maxthreads",
            "storage.azure",
            "storage.gcs",
            "storage.swift",
            "storage.oss",
            "storage.inmemory",
            "storage.cache",
            "storage.maintenance.uploadpurging.interval",
            "storage.maintenance.uploadpurging.dryrun",
            "auth.silly",
            "auth.token",
            "auth.htpasswd.realm",
            "middleware",
            "reporting",
            "http.prefix",
            "http.secret",
            "http.relativeurls",
            "http.draintimeout",
            "http.tls.clientcas",
            "http.debug",
            "http.http2",
            "notifications.events",
            "notifications.endpoints[0].threshold",
            "notifications.endpoints[0].backoff",
            "redis",
            "health",
            "proxy.username",
            "proxy.password",
            "compatibility",
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("storage.cache: not converted: not needed: berth keeps"),
        "{stderr}"
    );
    assert!(stdout.contains("wrote instances/ref.toml"), "{stdout}");
    let toml = std::fs::read_to_string(dir.path().join("instances/ref.toml")).unwrap();
    for line in [
        "hostnames = [\"myregistryaddress.org\"]",
        "listen = [\"127.0.0.1:5000\"]",
        "root = \"/var/lib/registry\"",
        "default = \"push\"",
        "mode = \"acme\"",
        "acme_email = \"emailused@letsencrypt.com\"",
        "upload_ttl = \"168h\"",
        "headers = { \"X-Content-Type-Options\" = \"nosniff\" }",
        "manifest_urls_allow = ['^https?://([^/]+\\.)*example\\.com/']",
        "manifest_urls_deny = ['^https?://www\\.example\\.com/']",
        "url = \"https://registry-1.docker.io\"",
        "url = \"https://my.listener.com/event\"",
        "# - redis: not converted: not needed: berth caches in memory;",
    ] {
        assert!(toml.contains(line), "{line} missing from:\n{toml}");
    }
    let check = berth_ok("check", dir.path(), &[]);
    assert!(check.contains("configuration is valid"), "{check}");
    assert!(check.contains("ref: tls acme"), "{check}");

    // One that would clash with it (the same listen address and hostname)
    // leaves nothing behind.
    let out = import(dir.path(), &["--config", REFERENCE, "--name", "ref2"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not pass berth check") && err.contains("used twice"),
        "{err}"
    );
    assert!(!dir.path().join("instances/ref2.toml").exists());
    assert!(!dir.path().join("credentials/ref2.htpasswd").exists());

    // A second import under the same name replaces nothing.
    let before = std::fs::read_to_string(dir.path().join("instances/ref.toml")).unwrap();
    let out = import(dir.path(), &["--config", REFERENCE, "--name", "ref"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("instances/ref.toml exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("instances/ref.toml")).unwrap(),
        before
    );
}

#[test]
fn a_docker_run_environment_converts() {
    // docker run -e REGISTRY_AUTH=htpasswd -e REGISTRY_AUTH_HTPASSWD_PATH=...
    //   -e REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=... registry:2, with
    // the paths as they are on this machine.
    let dir = config_dir("");
    let data = dir.path().join("registry-data");
    std::fs::create_dir_all(data.join("docker/registry/v2")).unwrap();
    let users = dir.path().join("registry.htpasswd");
    let hash = bcrypt::hash("s3cret-pass", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let env = [
        ("REGISTRY_AUTH", "htpasswd"),
        ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
        ("REGISTRY_AUTH_HTPASSWD_PATH", users.to_str().unwrap()),
        (
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            data.to_str().unwrap(),
        ),
        ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
        ("REGISTRY_HTTP_ADDR", "127.0.0.1:0"),
    ];
    let out = import(dir.path(), &["--name", "hub"], &env);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("from the registry:2 image's own config.yml, with REGISTRY_AUTH, "),
        "{stdout}"
    );
    let toml = std::fs::read_to_string(dir.path().join("instances/hub.toml")).unwrap();
    assert!(
        toml.contains(&format!("htpasswd = {:?}", users.to_str().unwrap())),
        "{toml}"
    );
    assert!(!toml.contains("[access]"), "deletes were enabled:\n{toml}");
    berth_ok("check", dir.path(), &[]);

    let server = Server::start_in(dir.path());
    let _log = log_on_panic("berth stderr", &server.stderr_log);
    let base = format!("{}/v2/", server.url("hub"));
    let status = |user: &str, pw: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %header{x-content-type-options}",
                "-u",
            ])
            .arg(format!("{user}:{pw}"))
            .arg(&base)
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert_eq!(status("alice", "s3cret-pass"), "200 nosniff");
    assert_eq!(status("alice", "wrong"), "401 nosniff");
}

#[test]
fn a_registry2_that_was_pushed_to_is_served_from_what_the_import_wrote() {
    let dir = config_dir("");
    let r2 = dir.path().join("registry2");
    let data = r2.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let storage = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: true\n      age: 72h\n      interval: 24h\n      dryrun: false\n",
        data.display()
    );
    let extra =
        "validation:\n  disabled: true\nnotifications:\n  events:\n    includereferences: true\n";
    let mut reg = DistRegistry::start_in(&r2, &storage, extra, "mover", "moving-pass");
    let _reg_log = log_on_panic("docker-registry log", reg.log_path());
    let image = make_image("v1");
    skopeo_push(
        &image.reference("v1"),
        &reg.image("team/app:v1"),
        &reg.creds(),
        &[],
    );
    let pushed = skopeo_raw(&reg.image("team/app:v1"), &reg.creds());
    reg.stop();

    let config = r2.join("config.yml");
    let out = import(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--name", "moved"],
        // registry:2's port is not berth's to take again.
        &[("REGISTRY_HTTP_ADDR", "127.0.0.1:0")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    for told in [
        "log: not converted",
        "http.secret: not converted",
        "notifications.events: not converted",
        "storage.maintenance.uploadpurging.interval: not converted",
    ] {
        assert!(
            stderr.contains(&format!("warning: {told}")),
            "{told}: {stderr}"
        );
    }
    let toml = std::fs::read_to_string(dir.path().join("instances/moved.toml")).unwrap();
    assert!(
        toml.contains(&format!("root = {:?}", data.to_str().unwrap())),
        "{toml}"
    );
    assert!(toml.contains("upload_ttl = \"72h\""), "{toml}");
    assert!(!toml.contains("[validation]"), "{toml}");
    berth_ok("check", dir.path(), &[]);

    let server = Server::start_in(dir.path());
    let _log = log_on_panic("berth stderr", &server.stderr_log);
    let addr = server.addr("moved");
    let image_ref = format!("docker://{addr}/team/app:v1");
    // The same user and password log in; the image pulls, byte for byte.
    assert_eq!(skopeo_raw(&image_ref, "mover:moving-pass"), pushed);
    let back = pull_layout(&image_ref, "v1", "mover:moving-pass", &[]);
    assert_eq!(back.digest("v1"), image.digest("v1"));
    back.assert_layers_intact(&image.digest("v1"));
    assert_auth_error(&skopeo_raw_fails(&image_ref, "mover:wrong"));
}
