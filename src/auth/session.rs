//! Web UI sessions of one instance: a random id in an `HttpOnly` cookie
//! names a user who logged in through the form, until a time after the
//! login or a time after its last request ([`Limits`]), or logout. Ids are kept
//! only as their SHA-256, so a memory dump does not hand out live cookies.
//! Each session has its own CSRF token for the forms it posts; a user who
//! sends Basic credentials instead gets a token of their own for the same
//! purpose. Sessions live in the process that made them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

/// A session ends this long after its login, unless set otherwise.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// A session ends after this long without a request, unless set otherwise.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// How long sessions last (`[ui] session_max`, `session_idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_age: Duration,
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_age: MAX_AGE,
            idle: IDLE,
        }
    }
}
/// Most sessions at once; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// What forms posted in this session carry.
    pub csrf: String,
}

struct Entry {
    session: Session,
    started: Instant,
    last_seen: Instant,
}

/// The sessions of one instance.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Entry>>,
    /// CSRF tokens of users who send Basic credentials.
    basic: Mutex<HashMap<String, String>>,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for `user`; its id (for the cookie) and the session.
    pub fn open(&self, user: &str) -> (String, Session) {
        self.open_at(user, Instant::now())
    }

    fn open_at(&self, user: &str, now: Instant) -> (String, Session) {
        let id = random_token();
        let session = Session {
            user: user.to_string(),
            csrf: random_token(),
        };
        let mut live = self.live.lock();
        if live.len() >= MAX_SESSIONS {
            live.retain(|_, e| alive(e, now, &Limits::default()));
        }
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live.iter().min_by_key(|(_, e)| e.started).map(|(k, _)| *k) {
                live.remove(&oldest);
            }
        }
        live.insert(
            key(&id),
            Entry {
                session: session.clone(),
                started: now,
                last_seen: now,
            },
        );
        (id, session)
    }

    /// The session of the cookie `id` if it is alive under `limits`,
    /// marked as used now.
    pub fn get(&self, id: &str, limits: &Limits) -> Option<Session> {
        self.get_at(id, Instant::now(), limits)
    }

    fn get_at(&self, id: &str, now: Instant, limits: &Limits) -> Option<Session> {
        let mut live = self.live.lock();
        let k = key(id);
        let entry = live.get_mut(&k)?;
        if !alive(entry, now, limits) {
            live.remove(&k);
            return None;
        }
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    /// Ends the session of the cookie `id`.
    pub fn close(&self, id: &str) {
        self.live.lock().remove(&key(id));
    }

    /// The CSRF token of `user` sending Basic credentials.
    pub fn basic_token(&self, user: &str) -> String {
        let mut basic = self.basic.lock();
        if basic.len() >= MAX_SESSIONS && !basic.contains_key(user) {
            basic.clear();
        }
        basic
            .entry(user.to_string())
            .or_insert_with(random_token)
            .clone()
    }
}

fn alive(e: &Entry, now: Instant, limits: &Limits) -> bool {
    now.duration_since(e.started) < limits.max_age && now.duration_since(e.last_seen) < limits.idle
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_by_age_idleness_and_logout() {
        let s = Sessions::default();
        let l = Limits::default();
        let t0 = Instant::now();
        let (id, session) = s.open_at("alice", t0);
        assert_eq!(session.user, "alice");
        assert_eq!(s.get_at(&id, t0 + IDLE / 2, &l), Some(session.clone()));
        // Used within the idle time, again and again: alive until MAX_AGE.
        let mut t = t0;
        while t + IDLE / 2 < t0 + MAX_AGE {
            t += IDLE / 2;
            assert!(s.get_at(&id, t, &l).is_some());
        }
        assert!(s.get_at(&id, t0 + MAX_AGE, &l).is_none());

        let (id, _) = s.open_at("bob", t0);
        assert!(s.get_at(&id, t0 + IDLE, &l).is_none(), "idle too long");
        let (id, _) = s.open_at("carol", t0);
        s.close(&id);
        assert!(s.get_at(&id, t0, &l).is_none());
        assert!(s.get("not-an-id", &l).is_none());
        // Another session of the same user is another id and token.
        let (a, sa) = s.open("dave");
        let (b, sb) = s.open("dave");
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_eq!(s.basic_token("erin"), s.basic_token("erin"));
        assert_ne!(s.basic_token("erin"), s.basic_token("frank"));
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("abc", "ab"));
    }
}
