//! HTTP Basic authentication against an instance's htpasswd file (bcrypt, as
//! `htpasswd -B` writes it). bcrypt is verified once per credential; after
//! that the credential is served from a cache keyed by a SHA-256 of user and
//! password (the plain password is never kept), until it expires or the
//! htpasswd file changes. The file is re-read when its metadata changes, at
//! most once per [`RECHECK`]. Fails closed: no readable file, no access.
//! What an authenticated (or anonymous) user may then do to a repository
//! is [`Access`]'s; the web UI's logins are [`session`]s.

mod access;
pub(crate) mod htpasswd;
mod limiter;
pub mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use access::{Access, Action, Anonymous, Rule};
use axum::http::{header, HeaderMap};
use base64::Engine as _;
pub use htpasswd::{set_password, HtpasswdError, Users, MAX_COST, MAX_PASSWORD_BYTES};
use limiter::Limiter;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

/// The user and password of an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// How long a verified credential is trusted without bcrypt.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How often the htpasswd file's metadata is looked at.
pub const RECHECK: Duration = Duration::from_secs(1);
/// Most credentials cached at once; beyond it the cache is cleared.
const CACHE_MAX: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

struct State {
    users: Users,
    stamp: Option<FileStamp>,
    checked: Instant,
    /// sha256(user ":" password) -> expiry
    verified: HashMap<[u8; 32], Instant>,
}

/// The authenticator of one instance.
pub struct Authenticator {
    realm: String,
    path: PathBuf,
    state: Mutex<State>,
    limiter: Limiter,
    sessions: session::Sessions,
    /// Logins refused as wrong, and as throttled, since it was loaded.
    refused: (AtomicU64, AtomicU64),
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Wrong user or password.
    Invalid,
    /// Too many failures lately; try again after this long.
    Throttled(Duration),
}

impl Authenticator {
    /// Loads the htpasswd file; errors name the file and line.
    /// `max_failures`: failed logins per minute from one address before it
    /// is throttled.
    pub fn load(realm: &str, path: &Path, max_failures: u32) -> Result<Self, HtpasswdError> {
        let st = stamp(path);
        let users = htpasswd::load(path)?;
        Ok(Authenticator {
            realm: realm.to_string(),
            path: path.to_path_buf(),
            state: Mutex::new(State {
                users,
                stamp: st,
                checked: Instant::now(),
                verified: HashMap::new(),
            }),
            limiter: Limiter::new(max_failures),
            sessions: session::Sessions::default(),
            refused: Default::default(),
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The htpasswd file it reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logins refused as wrong, and as throttled, since it was loaded.
    pub fn login_counts(&self) -> (u64, u64) {
        (
            self.refused.0.load(Ordering::Relaxed),
            self.refused.1.load(Ordering::Relaxed),
        )
    }

    /// The web UI sessions of the instance.
    pub fn sessions(&self) -> &session::Sessions {
        &self.sessions
    }

    /// Re-reads the file if it changed. A file that vanished or no longer
    /// parses locks everybody out until it is fixed.
    fn refresh(&self, now: Instant) {
        let mut st = self.state.lock();
        if now.duration_since(st.checked) < RECHECK {
            return;
        }
        self.refresh_locked(&mut st, now);
    }

    /// Re-reads the file now if it changed (on reload).
    pub fn refresh_now(&self) {
        let mut st = self.state.lock();
        self.refresh_locked(&mut st, Instant::now());
    }

    fn refresh_locked(&self, st: &mut State, now: Instant) {
        st.checked = now;
        let current = stamp(&self.path);
        if current == st.stamp {
            return;
        }
        st.stamp = current;
        st.verified.clear();
        // Failures against the old users say nothing about the new ones.
        self.limiter.clear();
        match htpasswd::load(&self.path) {
            Ok(users) => {
                tracing::info!(realm = %self.realm, users = users.len(), "htpasswd reloaded");
                st.users = users;
            }
            Err(e) => {
                tracing::error!(realm = %self.realm, "htpasswd unusable, refusing all logins: {e}");
                st.users = Users::default();
            }
        }
    }

    /// Checks a user and password from `addr`. Credentials verified
    /// recently pass at once; others pay one bcrypt verification on the
    /// blocking pool, unless failures from this address or for this user
    /// throttle them first.
    pub async fn authenticate(
        &self,
        addr: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(), Refused> {
        let now = Instant::now();
        self.refresh(now);
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        let (known, hash) = {
            let st = self.state.lock();
            if st.verified.get(&key).is_some_and(|exp| *exp > now) {
                return Ok(());
            }
            match st.users.get(user) {
                Some(h) => (true, h.to_string()),
                // An unknown user is checked against another user's hash
                // (and refused whatever the outcome), so that it takes as
                // long as a wrong password and does not tell which names
                // exist.
                None => match st.users.names().next().and_then(|u| st.users.get(u)) {
                    Some(h) => (false, h.to_string()),
                    None => return Err(Refused::Invalid),
                },
            }
        };
        if let Some(wait) = self.limiter.throttled(addr, user, now) {
            self.refused.1.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Throttled(wait));
        }
        // bcrypt would compare only the first 72 bytes: a longer password
        // can never have been set, so it is wrong, whatever it starts with.
        let password = password.to_string();
        let ok = password.len() <= MAX_PASSWORD_BYTES
            && tokio::task::spawn_blocking(move || {
                bcrypt::verify(password, &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false);
        if !(ok && known) {
            self.refused.0.fetch_add(1, Ordering::Relaxed);
            self.limiter.failed(addr, user, now);
            return Err(Refused::Invalid);
        }
        let mut st = self.state.lock();
        if st.verified.len() >= CACHE_MAX {
            st.verified.clear();
        }
        st.verified.insert(key, now + CACHE_TTL);
        Ok(())
    }

    /// Whether a user of this name is in the file (for config warnings).
    pub fn has_user(&self, user: &str) -> bool {
        self.state.lock().users.get(user).is_some()
    }
}
