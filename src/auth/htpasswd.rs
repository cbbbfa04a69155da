//! The htpasswd file format, bcrypt entries only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// user -> bcrypt hash
#[derive(Debug, Default, Clone)]
pub struct Users(HashMap<String, String>);

impl Users {
    pub fn get(&self, user: &str) -> Option<&str> {
        self.0.get(user).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("{}: cannot read htpasswd file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "the password is {bytes} bytes long, but bcrypt only uses the first {MAX_PASSWORD_BYTES} \
         bytes (any password starting with the same {MAX_PASSWORD_BYTES} would be accepted); \
         use at most {MAX_PASSWORD_BYTES} bytes"
    )]
    PasswordTooLong { bytes: usize },
}

pub fn load(path: &Path) -> Result<Users, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|(line, message)| HtpasswdError::Line {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Longest password accepted, in bytes: bcrypt uses only the first 72, so
/// a longer one would let in every password that starts with the same 72
/// bytes. Longer passwords are refused when set and never match at login.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Highest bcrypt cost accepted (as Apache's `htpasswd -C`): every cost step
/// doubles the time of a login that is not cached, and at 17 that is
/// already seconds.
pub const MAX_COST: u32 = 17;

/// Parses `user:hash` lines; blank lines and `#` comments are skipped.
/// Errors carry the 1-based line number.
pub fn parse(text: &str) -> Result<Users, (usize, String)> {
    let mut users = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| (n, "expected 'user:bcrypt-hash'".to_string()))?;
        if user.is_empty() {
            return Err((n, "empty user name".to_string()));
        }
        let bcrypt_prefix = ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p));
        if !bcrypt_prefix || hash.len() != 60 {
            return Err((
                n,
                format!(
                    "user '{user}': only bcrypt hashes are supported (htpasswd -B or ./ctl passwd)"
                ),
            ));
        }
        let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
        if !cost.is_some_and(|c| (4..=MAX_COST).contains(&c)) {
            return Err((
                n,
                format!(
                    "user '{user}': bcrypt cost must be 4 to {MAX_COST} (every step doubles the \
                     time of a login); set the password again with a lower cost"
                ),
            ));
        }
        if users.insert(user.to_string(), hash.to_string()).is_some() {
            return Err((n, format!("user '{user}' appears twice")));
        }
    }
    Ok(Users(users))
}

/// Sets (or with `None` removes) a user's password in an htpasswd file,
/// keeping every other line. The file is replaced atomically and readable by
/// its owner only. Returns whether the user existed before.
pub fn set_password(
    path: &Path,
    user: &str,
    password: Option<&str>,
    cost: u32,
) -> Result<bool, HtpasswdError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let io_err = |source| HtpasswdError::Read {
        path: path.to_path_buf(),
        source,
    };
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_whitespace) {
        return Err(HtpasswdError::Line {
            path: path.to_path_buf(),
            line: 0,
            message: format!("invalid user name '{user}'"),
        });
    }
    if let Some(bytes) = password.map(str::len).filter(|n| *n > MAX_PASSWORD_BYTES) {
        return Err(HtpasswdError::PasswordTooLong { bytes });
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(e)),
    };
    let mut existed = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u.trim() == user) {
            existed = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(password) = password {
        let hash = bcrypt::hash(password, cost).map_err(|e| HtpasswdError::Line {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot hash the password: {e}"),
        })?;
        out.push_str(&format!("{user}:{hash}\n"));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = dir.join(format!(".htpasswd.{}.tmp", uuid::Uuid::new_v4().simple()));
    let previous_owner = std::fs::metadata(path).ok();
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The replacement keeps the owner of the file it replaces, so that
        // a service user can still read it after root changed a password.
        if let Some(meta) = &previous_owner {
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        }
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "$2y$05$abcdefghijklmnopqrstuuGRKaZ8qH4X5rDXvG8B5sNQh2zrr5rkC";

    #[test]
    fn set_password_adds_replaces_and_removes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.htpasswd");
        assert!(!set_password(&p, "alice", Some("one"), 4).unwrap());
        assert!(!set_password(&p, "bob", Some("two"), 4).unwrap());
        assert!(set_password(&p, "alice", Some("three"), 4).unwrap());
        let users = load(&p).unwrap();
        assert_eq!(users.len(), 2);
        assert!(bcrypt::verify("three", users.get("alice").unwrap()).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(set_password(&p, "alice", None, 4).unwrap());
        assert!(load(&p).unwrap().get("alice").is_none());
        assert!(set_password(&p, "a:b", Some("x"), 4).is_err());
    }

    #[test]
    fn passwords_over_72_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.htpasswd");
        let longest = "p".repeat(MAX_PASSWORD_BYTES);
        assert!(!set_password(&p, "alice", Some(&longest), 4).unwrap());
        let before = std::fs::read_to_string(&p).unwrap();
        // 73 bytes, also when counted in bytes rather than characters.
        for long in [format!("{longest}x"), format!("{}é", "p".repeat(71))] {
            let err = set_password(&p, "alice", Some(&long), 4).unwrap_err();
            assert!(
                matches!(err, HtpasswdError::PasswordTooLong { bytes: 73 }),
                "{err}"
            );
            assert!(err.to_string().contains("only uses the first 72 bytes"));
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), before);
    }

    #[test]
    fn parses_bcrypt_lines() {
        let users = parse(&format!(
            "# comment\n\nalice:{H}\nbob:{}\n",
            H.replace("$2y$", "$2b$")
        ))
        .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.get("alice"), Some(H));
        assert!(users.get("carol").is_none());
    }

    #[test]
    fn rejects_bad_lines_with_line_numbers() {
        assert_eq!(parse("\nnocolon\n").unwrap_err().0, 2);
        assert!(parse("a:{SHA}abc=").unwrap_err().1.contains("bcrypt"));
        assert!(parse("a:$apr1$x$y").is_err());
        assert!(parse(&format!(":{H}")).is_err());
        assert_eq!(parse(&format!("a:{H}\na:{H}")).unwrap_err().0, 2);
        for cost in ["03", "18", "31", "x1"] {
            let e = parse(&format!("a:{}", H.replace("$05$", &format!("${cost}$")))).unwrap_err();
            assert!(e.1.contains("cost must be 4 to 17"), "{cost}: {}", e.1);
        }
        assert!(parse(&format!("a:{}", H.replace("$05$", "$17$"))).is_ok());
    }
}
