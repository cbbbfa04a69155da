//! Coordination between the berth processes that serve one store: the
//! locks that keep garbage collection and writers apart. One process alone
//! takes them in its own memory ([`Coordinator::local`]); the processes of
//! one host sharing a local filesystem (`berth serve` and `berth gc`) as
//! lock files ([`Coordinator::files`]); several processes on several
//! machines (serving one bucket) as PostgreSQL advisory locks
//! ([`Coordinator::postgres`]). This module owns the locks
//! and nothing they protect: it never reads or writes the store, and
//! callers decide what to do under them.
//!
//! # The protocol
//!
//! Each lock belongs to one store (a storage root, or a bucket and prefix);
//! the locks of two stores never meet.
//!
//! - [`Lock::GcRun`]: one garbage collection at a time per store; the
//!   collection's journal is its alone. A collection holds it
//!   [`Mode::Exclusive`] for its whole run (a scheduled run may
//!   [`Coordinator::try_lock`] it and skip a turn).
//! - [`Lock::Gc`]: what is referenced, between a collection's decision and
//!   the requests that make content referenced (manifest and tag writes and
//!   deletes, blob commits, mounts). Such a request holds it
//!   [`Mode::Shared`] from its checks to its last write, and records what
//!   it writes in the journal of a running collection before writing it. A
//!   collection holds it [`Mode::Exclusive`] twice: while it opens its
//!   journal (so a writer either finished before, and the scan sees its
//!   write, or records it), and while it reads the journal, decides and
//!   deletes (so no writer is half-way). Writers never block each other.
//!   A collection waiting for it holds new writers back until it has had
//!   its turn, so a steady stream of writers cannot starve it: both
//!   backends queue requests in order (what the turnstile in front of the
//!   filesystem's `flock` does).
//! - [`Lock::Repo`]: the manifests and tags of one repository; a tag's
//!   `PUT` or `DELETE` and a manifest's `DELETE` hold it
//!   [`Mode::Exclusive`], so that each change takes effect whole, in some
//!   order.
//!
//! A holder takes locks in that order (gc-run, gc, repository), at most one
//! repository at a time, and takes each further lock through the guard it
//! already holds ([`Guard::lock`]), never from the [`Coordinator`] again:
//! the first keeps ordering deadlock-free, the second means a holder never
//! needs a second PostgreSQL connection while it holds one (with the pool
//! exhausted, that would wait forever). [`Guard::lock`] refuses a lock out
//! of order with [`CoordError::Order`] instead of deadlocking.
//!
//! Waiting has no deadline of its own: a writer waits as long as a
//! collection decides and deletes, which may be minutes on a large store.
//! A caller with a deadline drops the future (e.g. `tokio::time::timeout`);
//! a wait cut off that way is cancelled on the server, and nothing stays
//! held. Dropping a [`Guard`] releases its lock a moment later (a task does
//! it); [`Guard::release`] releases it before returning.
//!
//! # When a holder dies
//!
//! In one process, its locks go with it. PostgreSQL ends a session's
//! advisory locks when its connection ends: at once when a berth process
//! exits or is killed (its kernel closes the socket), and when its machine
//! or the network is lost, once the server's TCP keepalives give up on the
//! connection (berth asks for probes after 10 s idle, two 5 s apart, and a
//! 20 s TCP user timeout, so about 20 s). The other way round, a berth
//! process notices a dead server as fast: a wait fails, and
//! [`Guard::held`] turns false, so a writer can check it before its last
//! write. Not detected: a server process that hangs while its machine
//! keeps answering TCP (waits go on), and a berth process that stays alive
//! but stops making progress while holding a lock (a hung request), which
//! holds it until it is killed. The sessions that hold or wait for berth's
//! locks (named `berth` in `application_name` unless the URL names them)
//! are listed by
//!
//! ```sql
//! SELECT a.pid, a.client_addr, a.application_name, l.mode, l.granted, a.backend_start
//!   FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory';
//! ```
//!
//! and `SELECT pg_terminate_backend(PID)` ends one, releasing its locks.
//!
//! A lock is only as good as the session that holds it: if the server
//! drops a session (restart, failover, a network cut longer than the
//! timeouts above) while its holder is still writing, another process may
//! take the lock before the holder learns it lost it. [`Guard::held`]
//! narrows that window; closing it would take fencing tokens checked by the
//! store, which an S3-compatible store cannot do (below).
//!
//! # Why PostgreSQL and not a lease object in the bucket
//!
//! A lease in the bucket needs a write that fails when someone else wrote
//! first (`If-None-Match: *`, `If-Match`). Not every S3-compatible store
//! honours those conditions (Garage, for one, overwrites), so two processes
//! could both believe they hold the lease; a lease also needs renewals and
//! clocks that agree. A PostgreSQL session lock needs neither: the server
//! queues waiters fairly (a waiting exclusive request is not overtaken by
//! later shared ones, so a collection is never starved by a stream of
//! writers), detects deadlocks, and ends a lock exactly when its holder's
//! connection ends.
//!
//! # Keys
//!
//! PostgreSQL's advisory locks are named by one 64-bit number; berth's is
//! the first 8 bytes of SHA-256 over a fixed prefix, the store's name and
//! the lock's name. Two different (store, lock) pairs share a key with
//! probability 2^-64; with a million keys in use at once, the chance that
//! any two do is below 10^-7. A shared key would only make two locks one
//! (holders of both wait for each other), never let two holders in at once.
//! Other programs' advisory locks on the same database are as unlikely to
//! meet berth's; a database of berth's own avoids the question.
//!
//! # Connections
//!
//! One pool per process ([`Coordinator::for_store`] shares it between
//! stores) of at most `pool_size` connections; a guard and the guards taken
//! through it keep one checked out until the last of them is dropped (a
//! waiting lock occupies its connection too), so `pool_size` bounds how
//! many requests of one process hold or wait for locks at once; more wait
//! for a connection, in turn, and the log says so after 10 s. A connection is returned to the
//! pool only when every lock taken on it was released; otherwise (a failed
//! or cut-off query, a release that could not be done) it is closed, which
//! releases whatever it held. New connections get 5 s to connect
//! (`connect_timeout` in the URL overrides it) and only to a primary
//! (`target_session_attrs=read-write`: every process must lock on the same
//! server). Each session turns off `statement_timeout`, `lock_timeout` and
//! `idle_session_timeout` (a server-wide default must not cut a legitimate
//! wait or a held lock) and sets `client_connection_check_interval` (a
//! wait whose client vanished ends within 5 s) and the keepalives above;
//! options given in the URL come after berth's and win. PostgreSQL 14 or
//! later; connect to the server itself, or through a pooler in session
//! mode only (a transaction-mode pooler moves session locks between
//! clients). TLS to PostgreSQL is not supported yet.
//!
//! Errors are [`CoordError`] (`thiserror`); they never contain the
//! password, and turn into [`RegistryError::Internal`] with their cause.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use crate::oci::{error_chain, RegistryError};

mod files;
mod local;
mod postgres;

pub use postgres::PostgresUrl;

/// Default of `[coordination] pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// What is locked, within one store. The order of the variants is the
/// order in which one holder takes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lock {
    /// One garbage collection at a time.
    GcRun,
    /// Garbage collection (exclusive) against writers (shared).
    Gc,
    /// The manifests and tags of the repository of this name.
    Repo(String),
}

impl Lock {
    fn rank(&self) -> usize {
        match self {
            Lock::GcRun => 0,
            Lock::Gc => 1,
            Lock::Repo(_) => 2,
        }
    }
}

const RANK_NAMES: [&str; 3] = ["gc-run", "gc", "repository"];

impl fmt::Display for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lock::Repo(name) => write!(f, "repository {name}"),
            other => f.write_str(RANK_NAMES[other.rank()]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Shared,
    Exclusive,
}

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("invalid coordination setting: {0}")]
    Setting(String),
    #[error("cannot connect to PostgreSQL at {server}: {cause}")]
    Connect { server: String, cause: String },
    /// The connection broke (or the server ended the session): whatever
    /// it held is released.
    #[error("lost the connection to PostgreSQL at {server} while {doing}: {cause}")]
    Lost {
        server: String,
        doing: String,
        cause: String,
    },
    /// The server answered with an error, e.g. a deadlock it detected.
    #[error("PostgreSQL at {server} failed {doing}: {cause}")]
    Server {
        server: String,
        doing: String,
        cause: String,
    },
    #[error(
        "cannot take the {wanted} lock while holding a {held} lock: locks are taken in the order gc-run, gc, repository (one at a time)"
    )]
    Order { held: &'static str, wanted: String },
    #[error("lock file {path}: {source}")]
    Files {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<CoordError> for RegistryError {
    fn from(e: CoordError) -> Self {
        RegistryError::Internal(format!("coordination: {e}"))
    }
}

/// Takes the locks of one store. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    store: Arc<str>,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// The locks of this coordinator's store, and of every store.
    Local(Arc<local::Locks>, Arc<local::Stores>),
    Postgres(Arc<postgres::Pool>),
    Files(Arc<files::Files>),
}

impl Coordinator {
    /// Lock files in `<root>/berth/`: for a store on a local filesystem,
    /// served by the processes of one host.
    pub fn files(root: &std::path::Path) -> Self {
        Coordinator {
            store: Arc::from(root.display().to_string()),
            backend: Backend::Files(Arc::new(files::Files::new(root))),
        }
    }

    /// In-process locks only: for a store served by this process alone
    /// ([`Coordinator::for_store`] gives those of its other stores).
    pub fn local() -> Self {
        let stores = Arc::new(local::Stores::default());
        Coordinator {
            store: Arc::from(""),
            backend: Backend::Local(stores.of(""), stores),
        }
    }

    /// Advisory locks in PostgreSQL at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`),
    /// for the store named `store`: every process serving one store must
    /// give the same name (e.g. `s3://bucket/prefix`), and different stores
    /// different names. Connects once before returning, so that a wrong URL
    /// or an unreachable server shows at start.
    pub async fn postgres(url: &str, store: &str, pool_size: usize) -> Result<Self, CoordError> {
        Self::connect(&PostgresUrl::parse(url)?, store, pool_size).await
    }

    /// [`Coordinator::postgres`] with a URL parsed already (as
    /// `[coordination] postgres` in the config is).
    pub async fn connect(
        url: &PostgresUrl,
        store: &str,
        pool_size: usize,
    ) -> Result<Self, CoordError> {
        Ok(Coordinator {
            store: Arc::from(store),
            backend: Backend::Postgres(Arc::new(postgres::Pool::connect(url, pool_size).await?)),
        })
    }

    /// The same backend for the store named `store`, sharing the PostgreSQL
    /// connections, or the process's local locks: coordinators for one
    /// name take the same locks.
    pub fn for_store(&self, store: &str) -> Self {
        let backend = match &self.backend {
            Backend::Local(_, stores) => Backend::Local(stores.of(store), stores.clone()),
            Backend::Postgres(pool) => Backend::Postgres(pool.clone()),
            Backend::Files(files) => Backend::Files(files.clone()),
        };
        Coordinator {
            store: Arc::from(store),
            backend,
        }
    }

    /// Takes `lock`, waiting while it is held elsewhere in a conflicting mode.
    pub async fn lock(&self, lock: Lock, mode: Mode) -> Result<Guard, CoordError> {
        self.acquire(lock, mode, true)
            .await
            .map(|g| g.expect("a lock waited for is taken"))
    }

    /// Takes `lock` if nobody holds it in a conflicting mode; `None` when
    /// someone does (or waits for it first).
    pub async fn try_lock(&self, lock: Lock, mode: Mode) -> Result<Option<Guard>, CoordError> {
        self.acquire(lock, mode, false).await
    }

    async fn acquire(
        &self,
        lock: Lock,
        mode: Mode,
        wait: bool,
    ) -> Result<Option<Guard>, CoordError> {
        match &self.backend {
            Backend::Local(locks, _) => {
                Family::new(self.store.clone(), Session::Local(locks.clone()))
                    .acquire(lock, mode, wait)
                    .await
            }
            Backend::Files(files) => {
                Family::new(self.store.clone(), Session::Files(files.clone()))
                    .acquire(lock, mode, wait)
                    .await
            }
            Backend::Postgres(pool) => {
                // An idle pooled connection may have died unnoticed (a
                // server restart): its query fails at once, and another
                // connection is tried.
                let mut tries = pool.max_size() + 1;
                loop {
                    let session = Session::Postgres(Arc::new(pool.session().await?));
                    match Family::new(self.store.clone(), session)
                        .acquire(lock.clone(), mode, wait)
                        .await
                    {
                        Err(CoordError::Lost { .. }) if tries > 1 => tries -= 1,
                        other => return other,
                    }
                }
            }
        }
    }

    /// What this coordinator's locks are shared with: two processes on
    /// one store see each other's locks exactly when their domains are
    /// equal. In words an operator reads (never the password).
    pub fn domain(&self) -> String {
        match &self.backend {
            Backend::Local(..) => format!(
                "in-memory locks of process {} on {}",
                std::process::id(),
                host().name
            ),
            Backend::Files(..) => files_domain(),
            Backend::Postgres(pool) => postgres_domain(pool.server(), &self.store),
        }
    }

    /// For logs and `berth check`: `local`, or `postgres HOST:PORT/DATABASE`
    /// (never the password).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(..) => "local".to_string(),
            Backend::Files(..) => "lock files".to_string(),
            Backend::Postgres(pool) => format!("postgres {}", pool.server()),
        }
    }
}

/// The domain ([`Coordinator::domain`]) of the coordinator a process
/// would have with `postgres` (`[coordination]`, when configured) on the
/// store named `store`, without connecting.
pub fn planned_domain(postgres: Option<&PostgresUrl>, store: &str) -> String {
    match postgres {
        Some(url) => postgres_domain(url.server(), store),
        None => files_domain(),
    }
}

fn postgres_domain(server: &str, store: &str) -> String {
    format!("PostgreSQL {server}, store {store}")
}

/// `flock` is shared by the processes of one kernel (containers included,
/// whatever their host names), so the kernel's boot id names the domain.
fn files_domain() -> String {
    format!("lock files of the kernel booted as {}", host().boot_id)
}

/// This machine as processes on it see it.
pub struct Host {
    /// The host name, for people.
    pub name: String,
    /// The running kernel's boot id (`/proc/sys/kernel/random/boot_id`;
    /// the host name where there is none).
    pub boot_id: String,
}

/// This machine, read once.
pub fn host() -> &'static Host {
    static HOST: std::sync::OnceLock<Host> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let name = read("/proc/sys/kernel/hostname");
        let boot_id = match read("/proc/sys/kernel/random/boot_id") {
            id if id.is_empty() => name.clone(),
            id => id,
        };
        Host { name, boot_id }
    })
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("store", &self.store)
            .field("backend", &self.describe())
            .finish()
    }
}

/// A held lock; released when dropped. `Send + 'static`: it may be moved
/// into `spawn_blocking` and held across `.await`.
pub struct Guard {
    family: Arc<Family>,
    lock: Lock,
    mode: Mode,
    key: i64,
    local: Option<local::Held>,
    file: Option<files::Held>,
    released: bool,
}

/// The guards taken through one first guard: they share its session (its
/// PostgreSQL connection) and its order.
struct Family {
    store: Arc<str>,
    /// How many locks of each rank the family holds.
    ranks: Mutex<[usize; 3]>,
    session: Session,
}

enum Session {
    Local(Arc<local::Locks>),
    Postgres(Arc<postgres::Session>),
    Files(Arc<files::Files>),
}

impl Family {
    fn new(store: Arc<str>, session: Session) -> Arc<Self> {
        Arc::new(Family {
            store,
            ranks: Mutex::new([0; 3]),
            session,
        })
    }

    async fn acquire(
        self: &Arc<Self>,
        lock: Lock,
        mode: Mode,
        wait: bool,
    ) -> Result<Option<Guard>, CoordError> {
        let key = key(&self.store, &lock);
        let request = Request {
            lock: &lock,
            key,
            mode,
            wait,
        };
        let (mut local, mut file) = (None, None);
        match &self.session {
            Session::Local(locks) => match locks.acquire(&request).await {
                Some(held) => local = Some(held),
                None => return Ok(None),
            },
            Session::Postgres(session) => {
                if !session.acquire(&request).await? {
                    return Ok(None);
                }
            }
            Session::Files(files) => match files.acquire(&request).await? {
                Some(f) => file = Some(f),
                None => return Ok(None),
            },
        }
        self.ranks.lock()[lock.rank()] += 1;
        Ok(Some(Guard {
            family: self.clone(),
            lock,
            mode,
            key,
            local,
            file,
            released: false,
        }))
    }

    fn check_order(&self, lock: &Lock) -> Result<(), CoordError> {
        let ranks = self.ranks.lock();
        match (lock.rank()..ranks.len()).rev().find(|&r| ranks[r] > 0) {
            Some(held) => Err(CoordError::Order {
                held: RANK_NAMES[held],
                wanted: lock.to_string(),
            }),
            None => Ok(()),
        }
    }
}

impl Guard {
    /// Takes a further lock, later in the order than every lock this
    /// guard's family holds, on the same session; it is released on its own.
    pub async fn lock(&self, lock: Lock, mode: Mode) -> Result<Guard, CoordError> {
        self.family.check_order(&lock)?;
        self.family
            .acquire(lock, mode, true)
            .await
            .map(|g| g.expect("a lock waited for is taken"))
    }

    /// [`Guard::lock`] without waiting: `None` when it is held elsewhere.
    pub async fn try_lock(&self, lock: Lock, mode: Mode) -> Result<Option<Guard>, CoordError> {
        self.family.check_order(&lock)?;
        self.family.acquire(lock, mode, false).await
    }

    /// Whether the lock is still held: false once the PostgreSQL
    /// connection that holds it has broken (the server released it).
    pub fn held(&self) -> bool {
        match &self.family.session {
            Session::Local(_) | Session::Files(_) => true,
            Session::Postgres(session) => session.is_open(),
        }
    }

    pub fn lock_name(&self) -> &Lock {
        &self.lock
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Releases the lock before returning (dropping the guard releases it
    /// a moment later).
    pub async fn release(mut self) {
        if let Some(session) = self.detach() {
            session.release(self.key, self.mode).await;
        }
    }

    /// Gives up this guard's part of its family: the PostgreSQL session
    /// still to release the lock on, if any.
    fn detach(&mut self) -> Option<Arc<postgres::Session>> {
        if std::mem::replace(&mut self.released, true) {
            return None;
        }
        self.family.ranks.lock()[self.lock.rank()] -= 1;
        self.local = None;
        self.file = None;
        match &self.family.session {
            Session::Local(_) | Session::Files(_) => None,
            Session::Postgres(session) => Some(session.clone()),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(session) = self.detach() {
            postgres::Session::release_later(session, self.key, self.mode);
        }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("lock", &self.lock)
            .field("mode", &self.mode)
            .finish()
    }
}

/// One lock request, as a backend sees it.
struct Request<'a> {
    lock: &'a Lock,
    /// `lock`'s key in its store.
    key: i64,
    mode: Mode,
    /// Wait while it is held elsewhere, or give up at once.
    wait: bool,
}

/// The advisory-lock key of `lock` in `store` (see "Keys" above).
fn key(store: &str, lock: &Lock) -> i64 {
    let mut h = Sha256::new();
    h.update(b"berth coord 1\0");
    h.update((store.len() as u64).to_be_bytes());
    h.update(store.as_bytes());
    h.update(RANK_NAMES[lock.rank()].as_bytes());
    if let Lock::Repo(name) = lock {
        h.update(b"\0");
        h.update(name.as_bytes());
    }
    let digest = h.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests;
