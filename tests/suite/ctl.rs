//! The operator's front door, `./ctl`, driven as an operator would, on a
//! config directory of its own (BERTH_CONFIG_DIR) and the test-built binary
//! (BERTH_BIN), with dedicated listeners on 127.0.0.1:0.

use std::io::Write;
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
    let dir = tempfile::tempdir().unwrap();
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

fn status_of(addr: &str, creds: Option<(&str, &str)>) -> Option<u16> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    if let Some((u, p)) = creds {
        cmd.args(["-u", &format!("{u}:{p}")]);
    }
    let out = cmd.arg(format!("http://{addr}/v2/")).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .ok()
        .filter(|c| *c != 0)
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
    let out = ctl(cfg, &["start"], None);
    let said = text(&out);
    assert!(out.status.success(), "{said}");

    // One generated admin password per instance, and where each answers.
    let mut found = Vec::new();
    for name in ["ci", "cache"] {
        let password = said
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "ctl: created user 'admin' for instance '{name}' with password: "
                ))
            })
            .unwrap_or_else(|| panic!("no password for {name}:\n{said}"))
            .to_string();
        let addr = said
            .lines()
            .find_map(|l| {
                let rest = l.trim().strip_prefix(&format!("{name}: http://"))?;
                Some(rest.split_whitespace().next()?.to_string())
            })
            .unwrap_or_else(|| panic!("no address for {name}:\n{said}"));
        assert!(said.contains(&format!("docker login {addr}")), "{said}");
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
    for (name, addr, _) in &found {
        assert!(shown.contains(&format!("{name}: http://{addr}")), "{shown}");
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
    let ci_file = cfg.join("instances/ci.toml");
    let good = std::fs::read_to_string(&ci_file).unwrap();
    std::fs::write(&ci_file, format!("{good}\nunknown_key = 1\n")).unwrap();
    let refused = ctl(cfg, &["reload"], None);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("ci.toml:"), "{}", text(&refused));
    std::fs::write(&ci_file, good).unwrap();
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
    assert!(!dir.path().join("state/berth.pid").exists());
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
        "start", "stop", "restart", "reload", "status", "logs", "debug", "check", "passwd",
        "install", "test",
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

#[test]
fn install_writes_a_unit_that_systemd_accepts() {
    let dir = example_config();
    let cfg = dir.path();
    // The service user must be able to read the config dir.
    std::fs::set_permissions(cfg, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = ctl(cfg, &["install"], None);
    assert!(out.status.success(), "{}", text(&out));
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
