//! How many upload sessions each user holds open in one instance. A session
//! stops counting once it is finished, cancelled or purged (the upload
//! sessions no longer know it), or once it is older than the upload TTL
//! (garbage collection purges it on its next run). Counts live in memory:
//! sessions opened before a restart do not count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::oci::{RegistryError, RepoName};

struct Slot {
    /// The session, once it has been opened.
    session: Option<(RepoName, String)>,
    ticket: u64,
    opened: Instant,
}

#[derive(Default)]
pub(super) struct SessionQuota {
    /// Per user: slots taken, and the last ticket handed out.
    users: Mutex<(HashMap<String, Vec<Slot>>, u64)>,
}

/// A slot taken for a session being opened; given back when dropped before
/// [`Reservation::fill`] (the session could not be opened, or the request
/// went away).
pub(super) struct Reservation<'a> {
    quota: &'a SessionQuota,
    user: String,
    ticket: u64,
    filled: bool,
}

impl SessionQuota {
    /// Takes a slot for `user`, who may hold `max`; `is_open` tells whether
    /// a session still exists.
    pub(super) fn reserve(
        &self,
        user: &str,
        max: usize,
        ttl: Duration,
        is_open: impl Fn(&RepoName, &str) -> bool,
    ) -> Result<Reservation<'_>, RegistryError> {
        let mut guard = self.users.lock();
        let (users, last) = &mut *guard;
        let slots = users.entry(user.to_string()).or_default();
        if slots.len() >= max {
            slots.retain(|s| {
                s.opened.elapsed() < ttl
                    && s.session
                        .as_ref()
                        .is_none_or(|(repo, id)| is_open(repo, id))
            });
        }
        if slots.len() >= max {
            return Err(RegistryError::TooManyRequests(format!(
                "user '{user}' has {} upload sessions open, the most allowed; \
                 finish or cancel some (DELETE the upload URL) before starting more",
                slots.len()
            )));
        }
        *last += 1;
        slots.push(Slot {
            session: None,
            ticket: *last,
            opened: Instant::now(),
        });
        Ok(Reservation {
            quota: self,
            user: user.to_string(),
            ticket: *last,
            filled: false,
        })
    }

    fn with_slot(&self, user: &str, ticket: u64, f: impl FnOnce(&mut Vec<Slot>, usize)) {
        let mut guard = self.users.lock();
        if let Some(slots) = guard.0.get_mut(user) {
            if let Some(i) = slots.iter().position(|s| s.ticket == ticket) {
                f(slots, i);
            }
            if slots.is_empty() {
                guard.0.remove(user);
            }
        }
    }
}

impl Reservation<'_> {
    /// The session was opened: the slot is its until it ends.
    pub(super) fn fill(mut self, repo: &RepoName, id: &str) {
        self.filled = true;
        self.quota.with_slot(&self.user, self.ticket, |slots, i| {
            slots[i].session = Some((repo.clone(), id.to_string()));
        });
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.quota.with_slot(&self.user, self.ticket, |slots, i| {
                slots.remove(i);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_freed_by_closed_sessions_ttl_and_failed_opens() {
        let q = SessionQuota::default();
        let repo = RepoName::parse("a").unwrap();
        let ttl = Duration::from_secs(3600);
        let open = |_: &RepoName, id: &str| id != "closed";
        q.reserve("u", 2, ttl, open).unwrap().fill(&repo, "closed");
        q.reserve("u", 2, ttl, open).unwrap().fill(&repo, "s2");
        // "closed" no longer exists: its slot is taken back.
        q.reserve("u", 2, ttl, open).unwrap().fill(&repo, "s3");
        let err = q.reserve("u", 2, ttl, open).err().unwrap();
        assert!(matches!(err, RegistryError::TooManyRequests(_)), "{err}");
        // Other users have their own slots.
        q.reserve("v", 2, ttl, open).unwrap().fill(&repo, "v1");
        // A reservation dropped unfilled gives its slot back.
        drop(q.reserve("v", 2, ttl, open).unwrap());
        q.reserve("v", 2, ttl, open).unwrap().fill(&repo, "v2");
        // Sessions older than the TTL stop counting.
        q.reserve("u", 2, Duration::ZERO, open)
            .unwrap()
            .fill(&repo, "s4");
    }
}
