//! `berth import-registry2`: writes `instances/NAME.toml` from a registry:2
//! (CNCF Distribution) `config.yml` and its `REGISTRY_*` environment
//! overrides, with the credentials files it names, and reports what did
//! not carry over. What it writes is new (an existing file is never
//! replaced) and passes `berth check`, or nothing stays written.
//!
//! The parts: `yaml` (the configuration as registry:2 reads it, the
//! environment applied), `convert` (that tree into the instance file),
//! `unsupported` (what is said about each setting not converted). This
//! file reads and writes the files and prints the report.

mod convert;
mod unsupported;
mod yaml;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{config_error, load_checked};

/// The configuration registry:2's image runs with when none is mounted
/// (`/etc/docker/registry/config.yml` of `registry:2`): what a
/// `docker run -e REGISTRY_...` setup starts from.
const IMAGE_CONFIG: &str = "\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

/// What `berth import-registry2` is asked to do.
pub struct Request<'a> {
    pub config_dir: &'a Path,
    /// registry:2's `config.yml`; `None`: the image's own.
    pub config: Option<&'a Path>,
    pub name: &'a str,
    /// The users' file to use instead of the configuration's.
    pub htpasswd: Option<&'a Path>,
}

/// Converts, writes, checks and reports.
pub fn run(req: &Request, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<()> {
    let name = req.name;
    if !crate::config::valid_instance_name(name) {
        return Err(config_error(format!(
            "--name {name}: an instance name is lowercase letters, digits, '-' or '_'"
        )));
    }
    let (text, file) = match req.config {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| config_error(format!("{}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (
            IMAGE_CONFIG.to_string(),
            "the registry:2 image's own config.yml".to_string(),
        ),
    };
    let mut tree = yaml::parse(&text).map_err(|e| config_error(format!("{file}:{e}")))?;
    let applied = yaml::apply_env(&mut tree, env).map_err(config_error)?;
    let source = match applied.is_empty() {
        true => file.clone(),
        false => format!("{file}, with {}", applied.join(", ")),
    };
    let shared_https =
        crate::config::has_shared_https(req.config_dir).map_err(|e| config_error(e.to_string()))?;
    let input = convert::Input {
        name,
        htpasswd: req.htpasswd,
        shared_https,
        source: &source,
    };
    let converted = convert::convert(tree, &input)
        .map_err(|e| config_error(format!("nothing written: {e}")))?;
    // What was wrong before (on a fresh checkout: the shipped instances'
    // users, which ./ctl start creates) is not this import's to refuse.
    let before = check_errors(req.config_dir);
    let written = write(req.config_dir, name, &converted)?;
    let after = check_errors(req.config_dir);
    let made: Vec<&String> = after.iter().filter(|e| !before.contains(e)).collect();
    if !made.is_empty() {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        let made: Vec<&str> = made.iter().map(|e| e.as_str()).collect();
        return Err(config_error(format!(
            "nothing written: the configuration with this instance does not pass berth check:\n{}",
            made.join("\n")
        )));
    }
    for w in &converted.warnings {
        eprintln!("warning: {w}");
    }
    println!("berth: wrote instances/{name}.toml from {source}");
    for s in &converted.secrets {
        println!("berth: wrote {} (mode 600: {})", s.path, s.what);
    }
    if let Some(h) = &converted.default_htpasswd {
        if written.contains(&req.config_dir.join(h)) {
            println!(
                "berth: wrote {h}, empty: nobody logs in until `./ctl passwd {name} USER` \
                 (./ctl start adds a user admin to an empty file)"
            );
        }
    }
    if !converted.warnings.is_empty() {
        println!(
            "berth: {} warning(s) above: settings that carry over differently or not at all \
             (also listed at the end of instances/{name}.toml)",
            converted.warnings.len()
        );
    }
    match after.is_empty() {
        true => println!(
            "berth: the configuration passes berth check; `./ctl reload` (or start) serves {name}"
        ),
        false => println!(
            "berth: instances/{name}.toml passes berth check; the configuration has errors \
             that were there before (`./ctl start` creates missing users' files):\n  {}",
            after.join("\n  ")
        ),
    }
    Ok(())
}

/// What `berth check` finds wrong in the config in `dir`, a line each.
fn check_errors(dir: &Path) -> Vec<String> {
    match load_checked(dir, true) {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// Writes the instance file and the files it names, each created new (an
/// existing one refuses the whole import before anything is written). The
/// paths written.
fn write(dir: &Path, name: &str, c: &convert::Converted) -> anyhow::Result<Vec<PathBuf>> {
    let instance = dir.join("instances").join(format!("{name}.toml"));
    let mut files: Vec<(PathBuf, &str, u32)> = vec![(instance, c.instance.as_str(), 0o644)];
    for s in &c.secrets {
        files.push((dir.join(&s.path), s.text.as_str(), 0o600));
    }
    for (path, _, _) in &files {
        if path.exists() {
            return Err(config_error(format!(
                "nothing written: {} exists, and the import writes new files only \
                 (remove it, or choose another --name)",
                path.display()
            )));
        }
    }
    if let Some(h) = &c.default_htpasswd {
        let path = dir.join(h);
        if !path.exists() {
            files.push((path, "", 0o600));
        }
    }
    let mut written = Vec::new();
    for (path, text, mode) in files {
        let result = create_new(&path, text, mode);
        if let Err(e) = result {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(anyhow::anyhow!("cannot write {}: {e}", path.display()));
        }
        written.push(path);
    }
    Ok(written)
}

fn create_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted() -> convert::Converted {
        convert::Converted {
            instance: "listen = [\"127.0.0.1:0\"]\n".into(),
            secrets: vec![convert::Secret {
                path: "credentials/ci-s3".into(),
                text: "[default]\n".into(),
                what: "the S3 access key",
            }],
            default_htpasswd: Some("credentials/ci.htpasswd".into()),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn never_replaces_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let written = write(d, "ci", &converted()).unwrap();
        assert_eq!(written.len(), 3);
        let mode = |p: &str| std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("credentials/ci-s3"), 0o600);
        assert_eq!(mode("credentials/ci.htpasswd"), 0o600);
        assert_eq!(
            std::fs::read_to_string(d.join("credentials/ci.htpasswd")).unwrap(),
            ""
        );
        let e = write(d, "ci", &converted()).unwrap_err().to_string();
        assert!(e.contains("instances/ci.toml exists"), "{e}");
        // A file it would name, already there, refuses the whole import.
        std::fs::remove_file(d.join("instances/ci.toml")).unwrap();
        let e = write(d, "ci", &converted()).unwrap_err().to_string();
        assert!(e.contains("credentials/ci-s3 exists"), "{e}");
        assert!(!d.join("instances/ci.toml").exists());
        // An existing htpasswd file is the instance's users: kept.
        std::fs::write(d.join("credentials/ci.htpasswd"), "u:x\n").unwrap();
        std::fs::remove_file(d.join("credentials/ci-s3")).unwrap();
        assert_eq!(write(d, "ci", &converted()).unwrap().len(), 2);
        assert_eq!(
            std::fs::read_to_string(d.join("credentials/ci.htpasswd")).unwrap(),
            "u:x\n"
        );
    }
}
