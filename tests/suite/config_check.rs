//! `berth check` and `berth serve` on broken configuration directories: the
//! exit status and `PATH:LINE` locations in the messages.

use crate::common::{berth_bin, ConfigDir, Instance};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `berth SUBCOMMAND --config-dir DIR`, killing it after 20 s.
fn run(subcommand: &str, dir: &Path) -> Outcome {
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let mut child = Command::new(berth_bin())
        .arg(subcommand)
        .arg("--config-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn berth");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth {subcommand} still running after 20 s; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

fn check(cfg: &ConfigDir) -> Outcome {
    run("check", cfg.path())
}

/// Does `text` contain `PATH:LINE` (not followed by another digit)?
fn has_location(text: &str, path: &Path, line: usize) -> bool {
    let needle = format!("{}:{line}", path.display());
    text.match_indices(&needle).any(|(i, _)| {
        !text[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Asserts a run that failed (non-zero exit).
fn assert_failed(out: &Outcome) {
    assert!(
        out.code.is_some_and(|c| c != 0),
        "expected a non-zero exit, got {:?}; stdout:\n{}\nstderr:\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
}

/// Asserts a successful run (exit 0).
fn assert_passes(out: &Outcome) {
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
}

/// Asserts a failed run whose stderr names `path` at `line`.
fn assert_fails_at(out: &Outcome, path: &Path, line: usize) {
    assert_failed(out);
    assert!(
        has_location(&out.stderr, path, line),
        "stderr does not contain {}:{line}; stderr:\n{}",
        path.display(),
        out.stderr
    );
}

/// Asserts that a run's stderr contains `needle`.
fn assert_stderr_contains(out: &Outcome, needle: &str) {
    assert!(
        out.stderr.contains(needle),
        "stderr does not contain {needle:?}; stderr:\n{}",
        out.stderr
    );
}

/// Asserts a failed run whose stderr names `path` (no line).
fn assert_fails_naming(out: &Outcome, path: &Path) {
    assert_failed(out);
    assert_stderr_contains(out, &path.display().to_string());
}

fn one_instance() -> ConfigDir {
    ConfigDir::new(&[Instance::new("ci")])
}

/// `ci` and `cache`, both with the hostname `same.test` (`ci` first with
/// `ci_first` when given).
fn same_hostname(ci_first: Option<&str>) -> ConfigDir {
    let mut ci = Instance::new("ci");
    ci.hostnames = ci_first
        .into_iter()
        .chain(["same.test"])
        .map(String::from)
        .collect();
    let mut cache = Instance::new("cache");
    cache.hostnames = vec!["same.test".into()];
    ConfigDir::new(&[ci, cache])
}

fn instance_file(cfg: &ConfigDir, name: &str) -> PathBuf {
    cfg.path().join("instances").join(format!("{name}.toml"))
}

fn htpasswd_file(cfg: &ConfigDir, name: &str) -> PathBuf {
    cfg.path()
        .join("credentials")
        .join(format!("{name}.htpasswd"))
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
}

/// A file of the single-instance config.
#[derive(Clone, Copy)]
enum ConfigFile {
    /// `berth.toml`
    BerthToml,
    /// `instances/ci.toml`
    CiToml,
    /// `credentials/ci.htpasswd`
    CiHtpasswd,
}
use ConfigFile::*;

impl ConfigFile {
    fn path(self, cfg: &ConfigDir) -> PathBuf {
        match self {
            BerthToml => cfg.path().join("berth.toml"),
            CiToml => instance_file(cfg, "ci"),
            CiHtpasswd => htpasswd_file(cfg, "ci"),
        }
    }
}

/// A fresh single-instance config with `file` rewritten by `edit` (given the
/// file's current content); returns the config and the file's path.
fn broken(file: ConfigFile, edit: impl FnOnce(&str) -> String) -> (ConfigDir, PathBuf) {
    let cfg = one_instance();
    let path = file.path(&cfg);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    write(&path, &edit(&old));
    (cfg, path)
}

/// Asserts that `berth check` fails at `line` of `file` once `edit` has
/// rewritten it.
fn assert_edit_fails_at(file: ConfigFile, line: usize, edit: impl FnOnce(&str) -> String) {
    let (cfg, path) = broken(file, edit);
    assert_fails_at(&check(&cfg), &path, line);
}

/// Asserts, for each (file, content, line), that `berth check` fails at that
/// line of a single-instance config whose file has that content.
fn assert_each_fails_at(cases: &[(ConfigFile, &str, usize)]) {
    for &(file, content, line) in cases {
        assert_edit_fails_at(file, line, |_| content.to_string());
    }
}

#[test]
fn valid_config_passes() {
    let cfg = ConfigDir::new(&[Instance::new("ci"), Instance::new("cache")]);
    let out = check(&cfg);
    assert_eq!(
        out.code,
        Some(0),
        "valid config rejected; stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("ci") && out.stdout.contains("cache"),
        "summary should mention both instances; stdout:\n{}",
        out.stdout
    );

    // Every documented key, spelled out.
    let cfg = one_instance();
    write(
        &BerthToml.path(&cfg),
        "[listen]\nhttp = \"127.0.0.1:0\"\n\n[paths]\nstate = \"state\"\n\n[log]\nformat = \"json\"\n",
    );
    write(
        &CiToml.path(&cfg),
        "hostnames = [\"ci.test\", \"ci.example\"]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [storage]\nroot = \"data/ci\"\n\n[auth]\nhtpasswd = \"credentials/ci.htpasswd\"\n",
    );
    assert_passes(&check(&cfg));

    // berth.toml is optional.
    std::fs::remove_file(BerthToml.path(&cfg)).unwrap();
    assert_passes(&check(&cfg));
}

#[test]
fn toml_syntax_error() {
    assert_each_fails_at(&[
        (
            CiToml,
            "hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\"]\nbad line here\n",
            3,
        ),
        (BerthToml, "[listen]\nhttp = \"127.0.0.1:0\n", 2),
    ]);
}

#[test]
fn unknown_key() {
    assert_each_fails_at(&[
        (
            CiToml,
            "hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\"]\nbogus = 1\n",
            3,
        ),
        (
            CiToml,
            "hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\"]\n[storage]\nroot = \"data/ci\"\nrooot = \"x\"\n",
            5,
        ),
        (
            BerthToml,
            "[listen]\nhttp = \"127.0.0.1:0\"\n[paths]\nstate = \"state\"\ncolour = 1\n",
            5,
        ),
    ]);
}

#[test]
fn wrong_type() {
    assert_each_fails_at(&[
        (
            CiToml,
            "hostnames = \"ci.test\"\nlisten = [\"127.0.0.1:0\"]\n",
            1,
        ),
        (CiToml, "hostnames = [\"ci.test\"]\nlisten = 5\n", 2),
        (
            BerthToml,
            "[listen]\nhttp = \"127.0.0.1:0\"\n[log]\nformat = 3\n",
            4,
        ),
        (
            BerthToml,
            "[listen]\nhttp = \"127.0.0.1:0\"\n[log]\nformat = \"xml\"\n",
            4,
        ),
    ]);
}

#[test]
fn bad_listen_address() {
    for addr in [
        "not-an-address",
        "127.0.0.1:99999",
        "127.0.0.1",
        "300.1.1.1:80",
    ] {
        assert_edit_fails_at(CiToml, 2, |_| {
            format!("hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\", \"{addr}\"]\n")
        });
    }
    assert_each_fails_at(&[(BerthToml, "[listen]\nhttp = \"localhost\"\n", 2)]);
}

#[test]
fn duplicate_hostname_names_both_files() {
    let cfg = same_hostname(Some("unique-ci.test"));
    let out = check(&cfg);
    assert_fails_at(&out, &instance_file(&cfg, "ci"), 1);
    assert_fails_at(&out, &instance_file(&cfg, "cache"), 1);
    assert_stderr_contains(&out, "same.test");
}

#[test]
fn same_storage_root_names_both_files() {
    let mut ci = Instance::new("ci");
    ci.extra = "[storage]\nroot = \"data/same\"".into();
    let mut cache = Instance::new("cache");
    cache.extra = "[storage]\nroot = \"data/same\"".into();
    let cfg = ConfigDir::new(&[ci, cache]);
    let out = check(&cfg);
    let (ci_file, cache_file) = (instance_file(&cfg, "ci"), instance_file(&cfg, "cache"));
    assert!(
        has_location(&out.stderr, &ci_file, 4) || has_location(&out.stderr, &cache_file, 4),
        "stderr locates neither root setting (line 4); stderr:\n{}",
        out.stderr
    );
    assert_fails_naming(&out, &ci_file);
    assert_fails_naming(&out, &cache_file);

    // An explicit root equal to another instance's default root.
    let ci = Instance::new("ci");
    let mut cache = Instance::new("cache");
    cache.extra = "[storage]\nroot = \"data/ci\"".into();
    let cfg = ConfigDir::new(&[ci, cache]);
    let out = check(&cfg);
    assert_fails_at(&out, &instance_file(&cfg, "cache"), 4);
    assert_fails_naming(&out, &instance_file(&cfg, "ci"));
}

/// Roots that are apart as written but one on disk: through a symbolic
/// link to the other root (also one that does not exist yet), under a
/// linked parent, or reaching into it through a link. Each names both
/// instance files.
#[test]
fn storage_roots_overlapping_through_symlinks_name_both_files() {
    use std::os::unix::fs::symlink;
    // (cache's root, a link and its target relative to the config dir,
    // whether ci's root exists); ci has the default root data/ci.
    let cases = [
        // A link to ci's existing root.
        ("data/cache", "data/cache", "ci", true),
        // A link to ci's root, which does not exist yet.
        ("data/cache", "data/cache", "ci", false),
        // Under a parent that links to ci's root.
        ("alias/sub", "alias", "data/ci", true),
        // A parent linking to data/: then data/ci itself.
        ("alias/ci", "alias", "data", false),
        // ci's root reaches into cache's through a link inside it.
        ("store/cache", "data/ci", "../store", false),
    ];
    for (i, (root, link, target, ci_exists)) in cases.into_iter().enumerate() {
        let ci = Instance::new("ci");
        let mut cache = Instance::new("cache");
        cache.extra = format!("[storage]\nroot = \"{root}\"");
        let cfg = ConfigDir::new(&[ci, cache]);
        std::fs::create_dir_all(cfg.path().join("data")).unwrap();
        std::fs::create_dir_all(cfg.path().join("store/cache")).unwrap();
        if ci_exists {
            std::fs::create_dir_all(cfg.storage_root("ci")).unwrap();
        }
        symlink(target, cfg.path().join(link)).unwrap();
        let out = check(&cfg);
        let what = format!("case {i}: cache root {root}, {link} -> {target}");
        assert!(
            out.stderr.contains("overlaps"),
            "{what}: no overlap found; stderr:\n{}",
            out.stderr
        );
        assert_fails_naming(&out, &instance_file(&cfg, "ci"));
        assert_fails_naming(&out, &instance_file(&cfg, "cache"));
    }

    // Roots apart on disk pass, also under one linked parent.
    let cfg = ConfigDir::new(&[Instance::new("ci"), Instance::new("cache")]);
    std::fs::create_dir_all(cfg.path().join("elsewhere/ci")).unwrap();
    symlink("elsewhere", cfg.path().join("data")).unwrap();
    assert_passes(&check(&cfg));
}

#[test]
fn missing_htpasswd_file() {
    let cfg = one_instance();
    let file = CiHtpasswd.path(&cfg);
    std::fs::remove_file(&file).unwrap();
    assert_fails_naming(&check(&cfg), &file);

    let mut ci = Instance::new("ci");
    ci.extra = "[auth]\nhtpasswd = \"credentials/not-there.htpasswd\"".into();
    let cfg = ConfigDir::new(&[ci]);
    let out = check(&cfg);
    assert_fails_at(&out, &instance_file(&cfg, "ci"), 4);
    assert_stderr_contains(&out, "not-there.htpasswd");
}

#[test]
fn malformed_htpasswd_line() {
    assert_edit_fails_at(CiHtpasswd, 2, |good| {
        format!("{good}this line has no colon\n")
    });
    let extra = format!("other:{}\n", bcrypt::hash("x", 4).unwrap());
    assert_edit_fails_at(CiHtpasswd, 3, |good| {
        format!("{good}{extra}:$2y$04$emptyusername\n")
    });
}

#[test]
fn non_bcrypt_htpasswd_hash() {
    assert_edit_fails_at(CiHtpasswd, 2, |good| {
        format!("{good}md5user:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    });
    assert_each_fails_at(&[(CiHtpasswd, "shauser:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", 1)]);
}

#[test]
fn bad_instance_file_name() {
    let cfg = one_instance();
    let bad = cfg.path().join("instances").join("Bad Name!.toml");
    std::fs::copy(CiToml.path(&cfg), &bad).unwrap();
    let out = check(&cfg);
    assert_failed(&out);
    assert_stderr_contains(&out, "Bad Name!.toml");
}

#[test]
fn serve_refuses_broken_config_with_the_same_message() {
    let (cfg, file) = broken(CiToml, |_| {
        "hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\"]\nbogus = 1\n".to_string()
    });
    let checked = check(&cfg);
    assert_fails_at(&checked, &file, 3);
    let served = run("serve", cfg.path());
    assert_fails_at(&served, &file, 3);
    assert!(
        !served.stdout.contains("berth: ready"),
        "serve must not become ready; stdout:\n{}",
        served.stdout
    );
    // The same message: check's location line appears in serve's output.
    let path = file.display().to_string();
    let line = checked
        .stderr
        .lines()
        .find(|l| has_location(l, &file, 3))
        .unwrap();
    let message = line[line.find(&path).unwrap()..].trim();
    assert!(
        served.stderr.contains(message),
        "serve stderr lacks {message:?}; stderr:\n{}",
        served.stderr
    );

    let cfg = same_hostname(None);
    let served = run("serve", cfg.path());
    assert_fails_at(&served, &instance_file(&cfg, "ci"), 1);
    assert_fails_at(&served, &instance_file(&cfg, "cache"), 1);

    let (cfg, file) = broken(CiHtpasswd, |_| "no colon\n".to_string());
    assert_fails_at(&run("serve", cfg.path()), &file, 1);
}

#[test]
fn bad_limits_and_timeouts() {
    assert_each_fails_at(&[
        (
            CiToml,
            "hostnames = [\"ci.test\"]\n[limits]\nmax_blob_size = \"big\"\n",
            3,
        ),
        (
            CiToml,
            "hostnames = [\"ci.test\"]\n[limits]\nmax_upload_sessions = 0\n",
            3,
        ),
        (
            BerthToml,
            "[listen]\nhttp = \"127.0.0.1:0\"\n[server]\nbody_timeout = \"0s\"\n",
            4,
        ),
        (
            BerthToml,
            "[listen]\nhttp = \"127.0.0.1:0\"\n[server]\nheader_timeout = \"soon\"\n",
            4,
        ),
    ]);
}

#[test]
fn coordination() {
    // Checked offline: the server's name need not even resolve.
    let (cfg, _) = broken(BerthToml, |old| {
        format!(
            "{old}\n[coordination]\npostgres = \"postgres://berth:hunter2@db.invalid:6432/registry\"\npool_size = 8\n"
        )
    });
    let out = check(&cfg);
    assert_passes(&out);
    assert!(
        out.stdout
            .contains("coordination: postgres db.invalid:6432/registry (pool of 8 connections)"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"));
    assert_each_fails_at(&[
        (
            BerthToml,
            "[listen]\nhttp = \"127.0.0.1:0\"\n[coordination]\npostgres = \"db.invalid\"\n",
            4,
        ),
        (
            BerthToml,
            "[coordination]\npostgres = \"postgres://db.invalid/x\"\npool_size = -1\n",
            3,
        ),
    ]);
    let (cfg, path) = broken(BerthToml, |_| {
        "[coordination]\npostgres = \"postgres://u:hunter2@db:port/x\"\n".to_string()
    });
    let out = check(&cfg);
    assert_fails_at(&out, &path, 2);
    assert_stderr_contains(&out, "invalid value for option `port`");
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

/// A store whose heartbeats cannot be read (a symbolic link loop where
/// their directory should be) does not fail the check: it is a warning
/// naming the instance and what failed.
#[test]
fn unreadable_heartbeats_are_a_warning() {
    let cfg = one_instance();
    let berth_dir = cfg.storage_root("ci").join("berth");
    std::fs::create_dir_all(&berth_dir).unwrap();
    std::os::unix::fs::symlink("processes", berth_dir.join("processes")).unwrap();
    let out = check(&cfg);
    assert_passes(&out);
    assert_stderr_contains(&out, "warning: instance ci: cannot read the heartbeats");
}

/// A check writes nothing, also where a self-signed instance's local CA
/// is missing: it says the server creates it, and the server does, at
/// start. A CA key the server could not read is named as the file that
/// failed.
#[test]
fn check_writes_nothing_and_names_the_ca_key_that_fails() {
    let mut ci = Instance::new("ci");
    ci.extra = "[tls]\nmode = \"self-signed\"".into();
    let cfg = ConfigDir::new(&[ci]);
    let before = crate::common::paths_under(cfg.path());
    let out = check(&cfg);
    assert_passes(&out);
    assert_eq!(
        crate::common::paths_under(cfg.path()),
        before,
        "the check wrote something"
    );
    let crt = cfg.path().join("state/ca/ca.crt");
    assert!(
        out.stdout.contains(&format!(
            "note: the server creates the local CA ({} and ca.key) at start",
            crt.display()
        )),
        "{}",
        out.stdout
    );

    let server = crate::common::Server::start(&cfg);
    let key = cfg.path().join("state/ca/ca.key");
    assert!(key.is_file() && crt.is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "ca.key is private");
    server.stop();
    let out = check(&cfg);
    assert_passes(&out);
    assert!(!out.stdout.contains("note:"), "{}", out.stdout);

    // A key that cannot be read (here a directory, as root reads any
    // file) or used fails the check, naming ca.key.
    let pem = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    for out in [check(&cfg), run("serve", cfg.path())] {
        assert_fails_naming(&out, &key);
        assert!(!out.stderr.contains("ca.crt"), "{}", out.stderr);
    }
    std::fs::remove_dir(&key).unwrap();
    std::fs::write(&key, b"not a key").unwrap();
    assert_fails_naming(&check(&cfg), &key);

    // The certificate alone missing: written again from the key.
    std::fs::write(&key, &pem).unwrap();
    std::fs::remove_file(&crt).unwrap();
    let out = check(&cfg);
    assert_passes(&out);
    assert!(out.stdout.contains("(from ca.key)"), "{}", out.stdout);
    assert!(!crt.exists());
    let server = crate::common::Server::start(&cfg);
    assert!(crt.is_file());
    assert_eq!(std::fs::read(&key).unwrap(), pem, "the same CA");
    server.stop();
}

/// An unterminated string says what to do; a TLS instance without a
/// listener that speaks TLS is reported at its `tls.mode`, in the
/// `file:line:col: message` form of every other error.
#[test]
fn string_and_tls_listener_errors_point_at_their_line() {
    let (cfg, path) = broken(CiToml, |_| {
        "hostnames = [\"ci.test\"]\nlisten = [\"127.0.0.1:0\"]\n[storage]\nroot = \"data/ci\n"
            .into()
    });
    let out = check(&cfg);
    assert_fails_at(&out, &path, 4);
    assert_stderr_contains(
        &out,
        "the string is not closed: end it with \" on this line",
    );

    let (cfg, path) = broken(CiToml, |_| {
        "hostnames = [\"ci.test\"]\n[tls]\nmode = \"self-signed\"\n".into()
    });
    let out = check(&cfg);
    assert_stderr_contains(
        &out,
        &format!(
            "berth: {}:3:8: a TLS instance needs [listen] https",
            path.display()
        ),
    );
}
