//! PostgreSQL session-level advisory locks over a pool of connections (the
//! protocol, timeouts and their reasons are in the parent module's doc).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio::runtime::Handle;
use tokio_postgres::config::{Host, SslMode, TargetSessionAttrs};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::{error_chain, CoordError, Mode, Request};

/// How long a new connection may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long releasing a lock may take before its connection is closed
/// instead (which releases it too).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lock request waits for a free connection before it says so
/// in the log (and goes on waiting).
const SLOW_POOL: Duration = Duration::from_secs(10);
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVES_RETRIES: u32 = 2;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);
/// Settings of every session (see "Connections" in the parent module);
/// the server-side twins of the client's keepalives above.
const SESSION_OPTIONS: &str = "-c statement_timeout=0 -c lock_timeout=0 \
     -c idle_session_timeout=0 -c client_connection_check_interval=5s \
     -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=2 \
     -c tcp_user_timeout=20s";

/// A parsed `postgres://` URL. Its `Debug` shows the server, never the
/// password.
#[derive(Clone)]
pub struct PostgresUrl {
    config: tokio_postgres::Config,
    server: String,
}

impl PostgresUrl {
    pub fn parse(url: &str) -> Result<Self, CoordError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(CoordError::Url(
                "expected a URL such as postgres://berth@db.example.com:5432/berth".to_string(),
            ));
        }
        let config =
            tokio_postgres::Config::from_str(url).map_err(|e| CoordError::Url(error_chain(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(CoordError::Url(
                "no host: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE".to_string(),
            ));
        }
        if matches!(config.get_ssl_mode(), SslMode::Require) {
            return Err(CoordError::Url(
                "sslmode=require: TLS to PostgreSQL is not supported yet".to_string(),
            ));
        }
        let server = server_name(&config);
        Ok(PostgresUrl { config, server })
    }

    /// `HOST:PORT/DATABASE` (hosts separated by commas).
    pub fn server(&self) -> &str {
        &self.server
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PostgresUrl").field(&self.server).finish()
    }
}

fn server_name(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(h) if h.contains(':') => format!("[{h}]:{port}"),
                Host::Tcp(h) => format!("{h}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("{}/{db}", hosts.join(","))
}

/// The connections of one process.
pub(super) struct Pool {
    pool: deadpool_postgres::Pool,
    server: Arc<str>,
    connect_timeout: Duration,
}

impl Pool {
    /// A pool of at most `size` connections to `url`, with one connection
    /// made to check that the server answers.
    pub(super) async fn connect(url: &PostgresUrl, size: usize) -> Result<Self, CoordError> {
        if size == 0 {
            return Err(CoordError::Setting(
                "pool_size must be at least 1".to_string(),
            ));
        }
        let mut config = url.config.clone();
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        config
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(KEEPALIVES_IDLE)
            .keepalives_interval(KEEPALIVES_INTERVAL)
            .keepalives_retries(KEEPALIVES_RETRIES)
            .target_session_attrs(TargetSessionAttrs::ReadWrite);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("berth");
        }
        let options = match config.get_options() {
            Some(theirs) => format!("{SESSION_OPTIONS} {theirs}"),
            None => SESSION_OPTIONS.to_string(),
        };
        config.options(options);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| CoordError::Setting(e.to_string()))?;
        let pool = Pool {
            pool,
            server: Arc::from(url.server.as_str()),
            connect_timeout,
        };
        drop(pool.session().await?);
        Ok(pool)
    }

    pub(super) fn server(&self) -> &str {
        &self.server
    }

    pub(super) fn max_size(&self) -> usize {
        self.pool.status().max_size
    }

    /// A connection of the pool, waiting for one while all are in use.
    pub(super) async fn session(&self) -> Result<Session, CoordError> {
        let get = self.pool.get();
        tokio::pin!(get);
        let conn = tokio::select! {
            got = &mut get => got,
            _ = tokio::time::sleep(SLOW_POOL) => {
                tracing::warn!(
                    server = %self.server,
                    "coordination: all {} PostgreSQL connections have been in use for {SLOW_POOL:?}; \
                     waiting for one (raise [coordination] pool_size if this repeats)",
                    self.max_size()
                );
                get.await
            }
        };
        let conn = conn.map_err(|e| {
            let cause = match e {
                PoolError::Timeout(TimeoutType::Create) => {
                    format!("no answer within {:?}", self.connect_timeout)
                }
                PoolError::Backend(e) => error_chain(&e),
                other => error_chain(&other),
            };
            CoordError::Connect {
                server: self.server.to_string(),
                cause,
            }
        })?;
        Ok(Session {
            conn: Some(conn),
            handle: Handle::current(),
            server: self.server.clone(),
            locks: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            cut_off: AtomicBool::new(false),
        })
    }
}

/// One checked-out connection and the locks taken on it. Dropped, it goes
/// back to the pool when it holds nothing and every query on it went well;
/// otherwise it is closed, which ends its locks and any wait on it.
pub(super) struct Session {
    conn: Option<Object>,
    /// The runtime that releases locks of guards dropped elsewhere.
    handle: Handle,
    server: Arc<str>,
    /// Locks taken and not released yet.
    locks: AtomicUsize,
    /// A query failed or was cut off.
    dirty: AtomicBool,
    /// A wait was cut off: the server may still be waiting.
    cut_off: AtomicBool,
}

/// Marks its session dirty when dropped before its query finished (the
/// future running it was dropped).
struct InFlight<'a> {
    session: &'a Session,
    wait: bool,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.session.dirty.store(true, Ordering::SeqCst);
            if self.wait {
                self.session.cut_off.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl Session {
    fn client(&self) -> &tokio_postgres::Client {
        self.conn.as_ref().expect("the connection stays until drop")
    }

    pub(super) fn is_open(&self) -> bool {
        !self.client().is_closed()
    }

    /// Takes a lock; `false` when the request does not wait and the lock
    /// is held elsewhere.
    pub(super) async fn acquire(&self, r: &Request<'_>) -> Result<bool, CoordError> {
        let function = match (r.wait, r.mode) {
            (true, Mode::Shared) => "pg_advisory_lock_shared",
            (true, Mode::Exclusive) => "pg_advisory_lock",
            (false, Mode::Shared) => "pg_try_advisory_lock_shared",
            (false, Mode::Exclusive) => "pg_try_advisory_lock",
        };
        let answer = self
            .query(&format!("SELECT {function}({})", r.key), r.wait)
            .await
            .map_err(|e| self.error(&e, format!("locking {}", r.lock)))?;
        let taken = r.wait || answer.as_deref() == Some("t");
        if taken {
            self.locks.fetch_add(1, Ordering::SeqCst);
        }
        Ok(taken)
    }

    /// Releases a lock taken by [`Session::acquire`]; when that cannot be
    /// done, the session is marked so that dropping it closes it.
    pub(super) async fn release(&self, key: i64, mode: Mode) {
        let function = match mode {
            Mode::Shared => "pg_advisory_unlock_shared",
            Mode::Exclusive => "pg_advisory_unlock",
        };
        let sql = format!("SELECT {function}({key})");
        let problem = match tokio::time::timeout(RELEASE_TIMEOUT, self.query(&sql, false)).await {
            Ok(Ok(Some(t))) if t == "t" => {
                self.locks.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            Ok(Ok(_)) => "the server did not hold it".to_string(),
            Ok(Err(e)) => error_chain(&e),
            Err(_) => format!("no answer within {RELEASE_TIMEOUT:?}"),
        };
        self.dirty.store(true, Ordering::SeqCst);
        tracing::warn!(
            server = %self.server,
            "coordination: could not release an advisory lock ({problem}); closing its connection, which releases it"
        );
    }

    /// [`Session::release`] in a task: for guards dropped outside async code.
    pub(super) fn release_later(session: Arc<Session>, key: i64, mode: Mode) {
        // If the runtime is gone, the task never runs: the session is then
        // dropped with a lock counted, and closed.
        session
            .handle
            .clone()
            .spawn(async move { session.release(key, mode).await });
    }

    /// Runs one statement; the first column of its first row.
    async fn query(&self, sql: &str, wait: bool) -> Result<Option<String>, tokio_postgres::Error> {
        let mut flight = InFlight {
            session: self,
            wait,
            done: false,
        };
        let result = self.client().simple_query(sql).await;
        flight.done = true;
        let messages = result.inspect_err(|_| self.dirty.store(true, Ordering::SeqCst))?;
        Ok(messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_string()),
            _ => None,
        }))
    }

    fn error(&self, e: &tokio_postgres::Error, doing: String) -> CoordError {
        let ended = [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ];
        let lost = e.as_db_error().is_none()
            || self.client().is_closed()
            || e.code().is_some_and(|c| ended.contains(c));
        let (server, cause) = (self.server.to_string(), error_chain(e));
        if lost {
            CoordError::Lost {
                server,
                doing,
                cause,
            }
        } else {
            CoordError::Server {
                server,
                doing,
                cause,
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.dirty.load(Ordering::SeqCst) && self.locks.load(Ordering::SeqCst) == 0 {
            return; // back to the pool
        }
        if self.cut_off.load(Ordering::SeqCst) {
            // The server would notice the closed connection within
            // client_connection_check_interval; a cancel ends the wait now.
            let token = conn.cancel_token();
            self.handle.spawn(async move {
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, token.cancel_query(NoTls)).await;
            });
        }
        drop(Object::take(conn));
    }
}
