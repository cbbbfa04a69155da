//! Throttling of failed logins, per client address and per user name, in
//! fixed one-minute windows. Only failures count, and only attempts that
//! would cost a bcrypt verification are checked, so clients with good,
//! already verified credentials are never slowed down. Memory is bounded:
//! past [`MAX_ENTRIES`] keys the expired windows are dropped, and if that
//! is not enough, the oldest half.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures for one user name, from anywhere, before it is throttled, as a
/// multiple of the per-address limit: higher, so that one noisy address does
/// not lock a user out everywhere.
pub const USER_FACTOR: u32 = 5;
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

struct Table<K> {
    windows: HashMap<K, Window>,
    limit: u32,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(limit: u32) -> Self {
        Table {
            windows: HashMap::new(),
            limit,
        }
    }

    /// How long `key` must still wait, if it is throttled.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let w = self.windows.get(key)?;
        let end = w.start + WINDOW;
        (w.failures >= self.limit && end > now).then(|| end - now)
    }

    fn fail(&mut self, key: K, now: Instant) {
        if self.windows.len() >= MAX_ENTRIES && !self.windows.contains_key(&key) {
            self.windows.retain(|_, w| w.start + WINDOW > now);
            if self.windows.len() >= MAX_ENTRIES {
                let mut starts: Vec<Instant> = self.windows.values().map(|w| w.start).collect();
                starts.sort();
                let cut = starts[starts.len() / 2];
                self.windows.retain(|_, w| w.start > cut);
            }
        }
        let w = self.windows.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if w.start + WINDOW <= now {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures += 1;
    }
}

pub struct Limiter {
    addrs: Mutex<Table<IpAddr>>,
    users: Mutex<Table<String>>,
}

impl Limiter {
    /// Throttles an address after `per_addr` failures in a window.
    pub fn new(per_addr: u32) -> Self {
        Limiter {
            addrs: Mutex::new(Table::new(per_addr)),
            users: Mutex::new(Table::new(per_addr.saturating_mul(USER_FACTOR))),
        }
    }

    /// Forgets every failure (the credentials changed).
    pub fn clear(&self) {
        self.addrs.lock().windows.clear();
        self.users.lock().windows.clear();
    }

    /// `Some(wait)` when a login attempt from `addr` as `user` must be refused.
    pub fn throttled(&self, addr: IpAddr, user: &str, now: Instant) -> Option<Duration> {
        let by_addr = self.addrs.lock().wait(&addr, now);
        let by_user = self.users.lock().wait(&user.to_string(), now);
        by_addr.max(by_user)
    }

    pub fn failed(&self, addr: IpAddr, user: &str, now: Instant) {
        self.addrs.lock().fail(addr, now);
        self.users.lock().fail(user.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    const ADDR_LIMIT: u32 = 10;
    const USER_LIMIT: u32 = ADDR_LIMIT * USER_FACTOR;

    #[test]
    fn throttles_an_address_after_its_limit_then_forgives() {
        let l = Limiter::new(ADDR_LIMIT);
        let t0 = Instant::now();
        for _ in 0..ADDR_LIMIT {
            assert!(l.throttled(ip(1), "alice", t0).is_none());
            l.failed(ip(1), "alice", t0);
        }
        let wait = l.throttled(ip(1), "bob", t0).unwrap();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(1));
        // Another address, same user: below the user limit, not throttled.
        assert!(l.throttled(ip(2), "alice", t0).is_none());
        assert!(l.throttled(ip(1), "alice", t0 + WINDOW).is_none());
        l.clear();
        assert!(l.throttled(ip(1), "alice", t0).is_none());
    }

    #[test]
    fn throttles_a_user_attacked_from_many_addresses() {
        let l = Limiter::new(ADDR_LIMIT);
        let t0 = Instant::now();
        for i in 0..USER_LIMIT {
            l.failed(ip(100 + i), "alice", t0);
        }
        assert!(l.throttled(ip(9999), "alice", t0).is_some());
        assert!(l.throttled(ip(9999), "bob", t0).is_none());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = Limiter::new(ADDR_LIMIT);
        let t0 = Instant::now();
        for i in 0..(3 * MAX_ENTRIES as u32) {
            l.failed(ip(i), "u", t0 + Duration::from_micros(i.into()));
        }
        let held = l.addrs.lock().windows.len() + l.users.lock().windows.len();
        assert!(held <= MAX_ENTRIES + 1, "{held}");
    }
}
