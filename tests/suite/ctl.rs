//! The operator's front door, `./ctl`, driven as an operator would, on a
//! config directory of its own (BERTH_CONFIG_DIR) and the test-built binary
//! (BERTH_BIN), with dedicated listeners on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ctl(config_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/ctl"))
        .args(args)
        .env("BERTH_CONFIG_DIR", config_dir)
        .env("BERTH_BIN", crate::common::berth_bin())
        .env("BERTH_SYSTEMD_DIR", config_dir.join("systemd"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A config dir holding the shipped example instances, moved to port 0,
/// with no credentials yet.
fn example_config() -> tempfile::TempDir {
    example_config_in(&std::env::temp_dir())
}

/// [`example_config`] in a directory under `parent`.
fn example_config_in(parent: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(parent).unwrap();
    std::fs::create_dir_all(dir.path().join("instances")).unwrap();
    for name in ["ci", "cache"] {
        let shipped = std::fs::read_to_string(format!(
            "{}/instances/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let local = shipped
            .replace("127.0.0.1:5000", "127.0.0.1:0")
            .replace("127.0.0.1:5001", "127.0.0.1:0");
        assert_ne!(
            shipped, local,
            "the example {name}.toml no longer listens where it did"
        );
        std::fs::write(dir.path().join(format!("instances/{name}.toml")), local).unwrap();
    }
    dir
}

/// The status curl got with `args` (options, then the URL); `None` when
/// it got no answer.
fn curl_status(args: &[&str]) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .ok()
        .filter(|c| *c != 0)
}

fn status_of(addr: &str, creds: Option<(&str, &str)>) -> Option<u16> {
    let url = format!("http://{addr}/v2/");
    match creds {
        Some((u, p)) => curl_status(&["-u", &format!("{u}:{p}"), &url]),
        None => curl_status(&[&url]),
    }
}

/// `./ctl start`, which must succeed; what it printed.
fn start_ok(cfg: &Path) -> String {
    let out = ctl(cfg, &["start"], None);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    said
}

/// Adds an unknown key to instances/ci.toml; returns its good text.
fn break_ci(cfg: &Path) -> String {
    let ci_file = cfg.join("instances/ci.toml");
    let good = std::fs::read_to_string(&ci_file).unwrap();
    std::fs::write(&ci_file, format!("{good}\nunknown_key = 1\n")).unwrap();
    good
}

/// Each instance's own listener ("127.0.0.1:PORT") in what ctl printed:
/// the `    http(s)://ADDR (own listener…` line under `  NAME: tls …`.
fn own_listeners(said: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut instance = None;
    for line in said.lines() {
        if let Some(rest) = line.strip_prefix("  ") {
            if let Some((name, _)) = rest.split_once(": tls ") {
                instance = Some(name.to_string());
                continue;
            }
        }
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        let Some((url, what)) = rest.split_once(' ') else {
            continue;
        };
        if let (Some(name), true) = (&instance, what.starts_with("(own listener")) {
            let addr = url.split_once("://").map_or(url, |(_, a)| a);
            found.insert(name.clone(), addr.to_string());
        }
    }
    found
}

/// The password ctl printed when it created `admin` for `instance`.
fn created_password(said: &str, instance: &str) -> Option<String> {
    said.lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "ctl: created user 'admin' for instance '{instance}' with password: "
            ))
        })
        .map(str::to_string)
}

/// The pid in "… (pid N)" of the first line holding `prefix`.
fn pid_after(said: &str, prefix: &str) -> Option<u32> {
    let line = said.lines().find(|l| l.contains(prefix))?;
    line.split("(pid ").nth(1)?.split(')').next()?.parse().ok()
}

/// Stops the berth ctl started in a config dir (by the PID in its pid
/// file) when dropped, also when a test fails half way.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = ctl(self.0, &["stop"], None);
    }
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn start_status_passwd_reload_stop() {
    let dir = example_config();
    let cfg = dir.path();
    let _stop = StopOnDrop(cfg);
    let said = start_ok(cfg);

    // One generated admin password per instance, and where each answers.
    let mut found = Vec::new();
    let addrs = own_listeners(&said);
    for name in ["ci", "cache"] {
        let password = created_password(&said, name)
            .unwrap_or_else(|| panic!("no password for {name}:\n{said}"));
        let addr = addrs
            .get(name)
            .unwrap_or_else(|| panic!("no address for {name}:\n{said}"))
            .clone();
        assert!(
            said.contains(&format!(
                "    http://{addr} (own listener)    docker login {addr}"
            )),
            "{said}"
        );
        // The shipped hostnames, and why they are not served here.
        assert!(
            said.contains(&format!(
                "  {name}: tls off; hostnames {name}.localhost (not served: they need [listen] http in berth.toml)"
            )),
            "{said}"
        );
        found.push((name, addr, password));
    }
    let htpasswd = std::fs::read_to_string(cfg.join("credentials/ci.htpasswd")).unwrap();
    assert!(
        htpasswd.starts_with("admin:$2"),
        "stored bcrypt-hashed: {htpasswd}"
    );
    assert!(
        !htpasswd.contains(&found[0].2),
        "the password is never stored in clear"
    );
    for (name, addr, password) in &found {
        assert_eq!(
            status_of(addr, None),
            Some(401),
            "{name} without credentials"
        );
        assert_eq!(
            status_of(addr, Some(("admin", password))),
            Some(200),
            "{name} admin"
        );
    }
    // Each instance refuses the other's admin.
    assert_eq!(
        status_of(&found[0].1, Some(("admin", &found[1].2))),
        Some(401)
    );
    let log = std::fs::read_to_string(cfg.join("state/berth.log")).unwrap();
    assert!(!log.contains(&found[0].2), "the password is never logged");

    let again = ctl(cfg, &["start"], None);
    assert!(again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let status = ctl(cfg, &["status"], None);
    let shown = text(&status);
    assert!(status.status.success(), "{shown}");
    assert!(shown.contains("berth is running (pid "), "{shown}");
    let pid: u32 = shown
        .split("(pid ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(own_listeners(&shown), addrs, "{shown}");
    for (name, _, _) in &found {
        assert!(
            shown.contains(&format!(
                "{name} holds 0 bytes in 0 blobs, 0 repositories, 0 tags"
            )),
            "{shown}"
        );
    }

    // Users added and removed take effect without a restart.
    let ci_addr = &found[0].1;
    let added = ctl(cfg, &["passwd", "ci", "bob"], Some("bobs-long-secret\n"));
    assert!(added.status.success(), "{}", text(&added));
    eventually("bob allowed", || {
        status_of(ci_addr, Some(("bob", "bobs-long-secret"))) == Some(200)
    });
    let removed = ctl(cfg, &["passwd", "ci", "bob", "--delete"], None);
    assert!(removed.status.success(), "{}", text(&removed));
    eventually("bob refused", || {
        status_of(ci_addr, Some(("bob", "bobs-long-secret"))) == Some(401)
    });

    // A broken config is refused by reload, and the old one keeps serving.
    let good = break_ci(cfg);
    let refused = ctl(cfg, &["reload"], None);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("ci.toml:"), "{}", text(&refused));
    std::fs::write(cfg.join("instances/ci.toml"), good).unwrap();
    let reloaded = ctl(cfg, &["reload"], None);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    assert_eq!(status_of(ci_addr, Some(("admin", &found[0].2))), Some(200));

    let stopped = ctl(cfg, &["stop"], None);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "berth is still running"
    );
    let after = ctl(cfg, &["status"], None);
    assert_eq!(after.status.code(), Some(3), "{}", text(&after));
    assert!(text(&after).contains("not running"));
}

#[test]
fn start_refuses_a_broken_config_with_file_and_line() {
    let dir = example_config();
    std::fs::write(
        dir.path().join("instances/cache.toml"),
        "hostnames = [\"x.test\"]\nlisten = 5\n",
    )
    .unwrap();
    let out = ctl(dir.path(), &["start"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("instances/cache.toml:2:10"),
        "{}",
        text(&out)
    );
    let pid_file = std::fs::read_to_string(dir.path().join("state/berth.pid")).unwrap_or_default();
    assert!(pid_file.is_empty(), "no pid recorded: {pid_file}");
}

/// bcrypt uses only the first 72 bytes of a password: a longer one is
/// refused with the reason, and nothing is written.
#[test]
fn passwd_refuses_passwords_over_72_bytes() {
    let dir = example_config();
    let cfg = dir.path();
    let htpasswd = cfg.join("credentials/ci.htpasswd");
    let longest = "p".repeat(72);
    let ok = ctl(
        cfg,
        &["passwd", "ci", "alice"],
        Some(&format!("{longest}\n")),
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let before = std::fs::read_to_string(&htpasswd).unwrap();
    // 73 bytes: as characters, "é" takes two.
    for long in [format!("{longest}x"), format!("{}é", "p".repeat(71))] {
        for user in ["alice", "bob"] {
            let out = ctl(cfg, &["passwd", "ci", user], Some(&format!("{long}\n")));
            assert!(!out.status.success(), "{user}: {}", text(&out));
            assert!(
                text(&out).contains("bcrypt only uses the first 72 bytes"),
                "{}",
                text(&out)
            );
            assert_eq!(std::fs::read_to_string(&htpasswd).unwrap(), before);
        }
    }
}

#[test]
fn help_and_usage_errors() {
    let dir = example_config();
    let help = ctl(dir.path(), &["help"], None);
    assert!(help.status.success());
    for cmd in [
        "start",
        "stop",
        "restart",
        "reload",
        "status",
        "logs",
        "debug",
        "check",
        "passwd",
        "gc",
        "fsck",
        "ca-path",
        "import-registry2",
        "install",
        "test",
    ] {
        assert!(
            text(&help).contains(&format!("  {cmd}")),
            "help lacks {cmd}"
        );
    }
    assert_eq!(
        ctl(dir.path(), &["frobnicate"], None).status.code(),
        Some(64)
    );
    assert_eq!(
        ctl(dir.path(), &["passwd", "ci"], None).status.code(),
        Some(1)
    );
}

/// `./ctl import-registry2` writes the instance of a registry:2 without
/// auth; `./ctl start` then gives it an admin, and anyone may pull.
#[test]
fn import_registry2_then_start() {
    let dir = example_config();
    let cfg = dir.path();
    let yml = cfg.join("registry2.yml");
    std::fs::write(
        &yml,
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /nonexistent/registry\n\
         http:\n  addr: 127.0.0.1:0\n",
    )
    .unwrap();
    let out = ctl(
        cfg,
        &[
            "import-registry2",
            "--name",
            "old",
            "--config",
            yml.to_str().unwrap(),
        ],
        None,
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("berth: wrote instances/old.toml"), "{said}");
    assert!(
        said.contains("warning: auth: registry:2 let anyone pull, push and delete"),
        "{said}"
    );
    let again = ctl(
        cfg,
        &[
            "import-registry2",
            "--name",
            "old",
            "--config",
            yml.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));

    let _stop = StopOnDrop(cfg);
    let said = start_ok(cfg);
    let password = created_password(&said, "old").unwrap_or_else(|| panic!("{said}"));
    let addr = own_listeners(&said)["old"].clone();
    assert_eq!(status_of(&addr, None), Some(200), "anonymous pulls");
    assert_eq!(status_of(&addr, Some(("admin", &password))), Some(200));
}

/// `install` writes a unit systemd accepts; it gives the service user what
/// the service writes (state, storage) and the credentials it reads, not
/// the committed files beside them; a checkout under /tmp, which the
/// service does not see, is warned about.
#[test]
fn install_writes_a_unit_that_systemd_accepts() {
    let dir = example_config_in(Path::new("/tmp"));
    let cfg = dir.path();
    // The service user must be able to read the config dir.
    std::fs::set_permissions(cfg, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(cfg.join("credentials")).unwrap();
    for committed in ["README.md", ".gitignore"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("credentials")
                .join(committed),
            cfg.join("credentials").join(committed),
        )
        .unwrap();
    }
    let set = ctl(cfg, &["passwd", "ci", "alice"], Some("alices-secret\n"));
    assert!(set.status.success(), "{}", text(&set));
    let out = ctl(cfg, &["install"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is under /tmp or /var/tmp, which the service does not see (the unit has PrivateTmp=yes"),
        "{}",
        text(&out)
    );
    let uid = service_uid();
    assert_eq!(owner(&cfg.join("credentials/ci.htpasswd")), uid);
    assert_eq!(owner(&cfg.join("data/ci")), uid);
    assert_eq!(owner(&cfg.join("state")), uid);
    for committed in ["README.md", ".gitignore", ""] {
        assert_eq!(
            owner(&cfg.join("credentials").join(committed)),
            0,
            "{committed}"
        );
    }
    let unit_path = cfg.join("systemd/berth.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for placeholder in [
        "@BIN@",
        "@CONFIG_DIR@",
        "@PROTECT_HOME@",
        "@WRITABLE@",
        "@README@",
    ] {
        assert!(!unit.contains(placeholder), "{placeholder} left:\n{unit}");
    }
    for line in [
        "User=berth",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ] {
        assert!(unit.contains(line), "unit lacks {line}:\n{unit}");
    }
    assert!(unit.contains(&format!(
        "ExecStart={} serve --config-dir {}",
        crate::common::berth_bin(),
        cfg.display()
    )));
    assert!(
        unit.contains(&cfg.join("data/ci").display().to_string()),
        "data dirs writable:\n{unit}"
    );
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        text(&out).contains("wrote"),
        "install says what it did: {}",
        text(&out)
    );
}

/// `restart` checks the new configuration before it stops anything: a
/// broken one leaves the running berth serving.
#[test]
fn restart_with_a_broken_config_keeps_berth_running() {
    let dir = example_config();
    let cfg = dir.path();
    let _stop = StopOnDrop(cfg);
    let said = start_ok(cfg);
    let pid = pid_after(&said, "berth is running").unwrap();
    let addr = own_listeners(&said)["ci"].clone();
    let password = created_password(&said, "ci").unwrap();

    let good = break_ci(cfg);
    let refused = ctl(cfg, &["restart"], None);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("ci.toml:"), "the error: {said}");
    assert!(
        said.contains(&format!("berth keeps running (pid {pid})")),
        "{said}"
    );
    assert!(running(pid), "the running berth was stopped");
    assert_eq!(status_of(&addr, Some(("admin", &password))), Some(200));

    std::fs::write(cfg.join("instances/ci.toml"), good).unwrap();
    let restarted = ctl(cfg, &["restart"], None);
    let said = text(&restarted);
    assert!(restarted.status.success(), "{said}");
    let new_pid = pid_after(&said, "berth is running").unwrap();
    assert_ne!(new_pid, pid, "{said}");
    eventually("the old berth gone", || !running(pid));
    let addr = own_listeners(&said)["ci"].clone();
    assert_eq!(status_of(&addr, Some(("admin", &password))), Some(200));
    assert!(ctl(cfg, &["stop"], None).status.success());
    assert!(!running(new_pid));
}

/// Two `./ctl start` at once: one starts berth, the other waits for it and
/// says it is running; one admin password per instance, one server.
#[test]
fn concurrent_starts_start_one_berth() {
    for round in 0..5 {
        let dir = example_config();
        let cfg = dir.path().to_path_buf();
        let _stop = StopOnDrop(&cfg);
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let cfg = cfg.clone();
                std::thread::spawn(move || ctl(&cfg, &["start"], None))
            })
            .collect();
        let outs: Vec<Output> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        let said: Vec<String> = outs.iter().map(text).collect();
        let both = said.join("\n----\n");
        for o in &outs {
            assert!(o.status.success(), "round {round}: {both}");
        }
        let started: Vec<u32> = said
            .iter()
            .filter_map(|s| pid_after(s, "ctl: berth is running (pid "))
            .collect();
        let already: Vec<u32> = said
            .iter()
            .filter_map(|s| pid_after(s, "ctl: berth is already running (pid "))
            .collect();
        assert_eq!(started.len(), 1, "round {round}: one start: {both}");
        assert_eq!(already, started, "round {round}: {both}");
        for name in ["ci", "cache"] {
            let passwords = said
                .iter()
                .filter(|s| created_password(s, name).is_some())
                .count();
            assert_eq!(passwords, 1, "round {round}: {both}");
        }
        let log = std::fs::read_to_string(cfg.join("state/berth.log")).unwrap();
        assert!(!log.contains("already in use"), "round {round}: {log}");
        assert_eq!(
            log.matches("berth: ready").count(),
            1,
            "round {round}: one server: {log}"
        );
        let stopped = ctl(&cfg, &["stop"], None);
        assert!(stopped.status.success(), "{}", text(&stopped));
        assert!(!running(started[0]));
    }
}

/// A new instance file and `reload`: its `admin` is created as at start,
/// and it serves; before that, the hint names the ctl command.
#[test]
fn reload_creates_the_admin_of_a_new_instance() {
    let dir = example_config();
    let cfg = dir.path();
    let _stop = StopOnDrop(cfg);
    start_ok(cfg);
    std::fs::write(
        cfg.join("instances/extra.toml"),
        "listen = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();

    let check = ctl(cfg, &["check"], None);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(
        text(&check).contains("create a user with `./ctl passwd extra USER`"),
        "{}",
        text(&check)
    );
    assert!(!text(&check).contains("--config-dir"), "{}", text(&check));

    let reload = ctl(cfg, &["reload"], None);
    let said = text(&reload);
    assert!(reload.status.success(), "{said}");
    let password = created_password(&said, "extra").unwrap_or_else(|| panic!("{said}"));
    assert!(
        said.contains("(shown once; only its bcrypt hash is stored in "),
        "{said}"
    );
    assert!(created_password(&said, "ci").is_none(), "{said}");
    let mut addr = None;
    eventually("extra in the status", || {
        addr = own_listeners(&text(&ctl(cfg, &["status"], None)))
            .get("extra")
            .cloned();
        addr.is_some()
    });
    let addr = addr.unwrap();
    assert_eq!(status_of(&addr, Some(("admin", &password))), Some(200));
    assert_eq!(status_of(&addr, None), Some(401));
    assert!(ctl(cfg, &["stop"], None).status.success());
}

/// Passwords set through berth have 12 characters at least (characters,
/// not bytes), unless `--allow-short`; a refusal says why and writes
/// nothing.
#[test]
fn passwd_requires_twelve_characters_unless_allowed_short() {
    let dir = example_config();
    let cfg = dir.path();
    let htpasswd = cfg.join("credentials/ci.htpasswd");
    for short in ["x", "eleven-char", "ééééééééééé"] {
        let out = ctl(cfg, &["passwd", "ci", "alice"], Some(&format!("{short}\n")));
        let said = text(&out);
        assert!(!out.status.success(), "{short}: {said}");
        assert!(said.contains("at least 12 are required"), "{said}");
        assert!(said.contains("--allow-short"), "{said}");
        assert!(!htpasswd.exists(), "{short} was written");
    }
    let twelve = ctl(cfg, &["passwd", "ci", "alice"], Some("twelve-chars\n"));
    assert!(twelve.status.success(), "{}", text(&twelve));
    let before = std::fs::read_to_string(&htpasswd).unwrap();
    let allowed = ctl(cfg, &["passwd", "ci", "bob", "--allow-short"], Some("x\n"));
    assert!(allowed.status.success(), "{}", text(&allowed));
    let after = std::fs::read_to_string(&htpasswd).unwrap();
    assert!(
        after.starts_with(&before) && after.contains("\nbob:$2"),
        "{after}"
    );
}

/// A TLS instance on a listener of its own is logged in to by a name its
/// certificate covers, with the port; start, status and check list every
/// instance with its hostnames and TLS mode, and the shared TLS listener
/// with the names it serves.
#[test]
fn tls_instances_are_listed_with_names_their_certificates_cover() {
    let dir = example_config();
    let cfg = dir.path();
    let _stop = StopOnDrop(cfg);
    std::fs::write(
        cfg.join("berth.toml"),
        "[listen]\nhttps = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    std::fs::write(
        cfg.join("instances/ci.toml"),
        "hostnames = [\"ci.test\", \"ci2.test\"]\nlisten = [\"127.0.0.1:0\"]\n[tls]\nmode = \"self-signed\"\n",
    )
    .unwrap();
    // Reached by its hostname on the shared listener only.
    std::fs::write(
        cfg.join("instances/web.toml"),
        "hostnames = [\"web.test\"]\n[tls]\nmode = \"self-signed\"\n",
    )
    .unwrap();
    let said = start_ok(cfg);
    let port = own_listeners(&said)["ci"]
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    assert!(
        said.contains(&format!(
            "(own listener; certificate for ci.test, ci2.test)    docker login ci.test:{port}"
        )),
        "{said}"
    );
    assert!(
        !said.contains(&format!("docker login 127.0.0.1:{port}")),
        "{said}"
    );
    let shared = said
        .lines()
        .find(|l| l.starts_with("  shared TLS listener https://127.0.0.1:"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        shared.ends_with("(routes by SNI): ci.test, ci2.test, web.test"),
        "{said}"
    );
    let shared_port = shared
        .split("https://127.0.0.1:")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        said.contains(&format!("    https://web.test:{shared_port} (shared TLS listener)    docker login web.test:{shared_port}")),
        "{said}"
    );
    for (who, shown) in [
        ("start", said.clone()),
        ("status", text(&ctl(cfg, &["status"], None))),
        ("check", text(&ctl(cfg, &["check"], None))),
    ] {
        for line in [
            "  ci: tls self-signed (clients trust ",
            "; hostnames ci.test, ci2.test",
            "  web: tls self-signed (clients trust ",
            "; hostnames web.test",
            "  cache: tls off; hostnames cache.localhost",
        ] {
            assert!(shown.contains(line), "{who} lacks {line:?}:\n{shown}");
        }
    }
    // The name the hint gives is one the certificate covers.
    let ca = cfg.join("state/ca/ca.crt").display().to_string();
    let resolve = format!("ci.test:{port}:127.0.0.1");
    let url = format!("https://ci.test:{port}/v2/");
    assert_eq!(
        curl_status(&["--cacert", &ca, "--resolve", &resolve, &url]),
        Some(401)
    );
    assert!(ctl(cfg, &["stop"], None).status.success());
}

/// The uid that owns `path`.
fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().uid()
}

fn service_uid() -> u32 {
    let out = Command::new("id").args(["-u", "berth"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// After `install` on a machine where systemd is not running, `start`
/// runs berth as the service user (what it writes is that user's), and
/// refuses any user but root and that one.
#[test]
fn start_after_install_without_systemd_runs_as_the_service_user() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("systemd is running here: start goes through it, nothing to test");
        return;
    }
    // Not under /tmp, where the service would not see it; readable by the
    // service user.
    let dir = example_config_in(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let cfg = dir.path();
    let _stop = StopOnDrop(cfg);
    std::fs::set_permissions(cfg, PermissionsExt::from_mode(0o755)).unwrap();
    let installed = ctl(cfg, &["install"], None);
    let said = text(&installed);
    assert!(installed.status.success(), "{said}");
    assert!(said.contains("systemd is not running here"), "{said}");
    assert!(
        said.contains("runs berth as a daemon as user berth"),
        "{said}"
    );
    assert!(!said.contains("PrivateTmp"), "not under /tmp: {said}");

    // Any other user is refused, and nothing starts.
    let nobody = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ctl"))
        .arg("start")
        .env("BERTH_CONFIG_DIR", cfg)
        .env("BERTH_BIN", crate::common::berth_bin())
        .env("BERTH_SYSTEMD_DIR", cfg.join("systemd"))
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(1), "{}", text(&nobody));
    assert!(
        text(&nobody).contains("berth is installed to run as user berth"),
        "{}",
        text(&nobody)
    );
    assert!(!cfg.join("credentials/ci.htpasswd").exists());

    let said = start_ok(cfg);
    let pid = pid_after(&said, "berth is running").unwrap();
    let uid = service_uid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec![uid.to_string(); 4],
        "{uids}"
    );
    // Push something so that berth writes into its storage.
    let addr = own_listeners(&said)["ci"].clone();
    let password = created_password(&said, "ci").unwrap();
    assert_eq!(status_of(&addr, Some(("admin", &password))), Some(200));
    let creds = format!("admin:{password}");
    let uploads = format!("http://{addr}/v2/base/blobs/uploads/");
    assert_eq!(
        curl_status(&["-X", "POST", "-u", &creds, &uploads]),
        Some(202)
    );
    // The storage roots and the state dir (install made `data/` itself).
    for top in ["data/ci", "data/cache", "state"] {
        let mut files = 0;
        let mut stack = vec![cfg.join(top)];
        while let Some(p) = stack.pop() {
            assert_eq!(owner(&p), uid, "{} is not the service user's", p.display());
            files += 1;
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        assert!(files > 2, "{top} holds what berth wrote");
    }
    assert_eq!(owner(&cfg.join("credentials/ci.htpasswd")), uid);
    let stopped = ctl(cfg, &["stop"], None);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(!running(pid));
}

/// `gc`, `fsck` and `ca-path` run berth's commands on ctl's config dir
/// (the hints berth prints name them).
#[test]
fn gc_fsck_and_ca_path_run_on_the_config_dir() {
    let dir = example_config();
    let cfg = dir.path();
    for name in ["ci", "cache"] {
        let set = ctl(cfg, &["passwd", name, "alice"], Some("alices-secret\n"));
        assert!(set.status.success(), "{}", text(&set));
    }
    let fsck = ctl(cfg, &["fsck", "--instance", "ci"], None);
    assert!(fsck.status.success(), "{}", text(&fsck));
    assert!(text(&fsck).contains("ci: ") && !text(&fsck).contains("cache: "));
    let gc = ctl(cfg, &["gc", "--dry-run"], None);
    assert!(gc.status.success(), "{}", text(&gc));
    for name in ["ci", "cache"] {
        assert!(
            text(&gc).contains(&format!("{name}: usage 0 bytes")),
            "{}",
            text(&gc)
        );
    }
    let ca = ctl(cfg, &["ca-path"], None);
    assert!(ca.status.success(), "{}", text(&ca));
    let path = String::from_utf8_lossy(&ca.stdout).trim().to_string();
    assert_eq!(Path::new(&path), cfg.join("state/ca/ca.crt"));
    assert!(Path::new(&path).is_file());
}
