//! Composes the instances of a [`Config`] and serves them: one dedicated
//! listener per `listen` address of an instance, and a shared listener that
//! routes each request by its `Host` to the instance owning that name.
//!
//! What the listeners route to is one [`Snapshot`], swapped whole on reload:
//! a request keeps the instance it started with until it ends, so transfers
//! in flight finish on their old config. Every response carries
//! `Docker-Distribution-API-Version` and the request's `X-Request-Id`, and
//! every request is logged in its own span, with one access-log line. A
//! request whose host is ambiguous (two `Host` headers, one that is
//! not `host[:port]`, none in HTTP/1.1) gets 400 on every listener.
//!
//! TLS: the shared `https` listener reads the ClientHello, picks the
//! instance by SNI (a name no instance serves gets no handshake), and serves
//! that instance's certificate; a request whose `Host` belongs elsewhere gets
//! 421. Dedicated listeners of a TLS instance speak TLS with its certificate.
//! On the shared plain listener, TLS instances answer ACME HTTP-01
//! challenges and redirect everything else to https.
//!
//! The parts, each owning one thing:
//!
//! - this file: [`Server`], its lifecycle: binding the listeners a config
//!   asks for, reload (snapshot swap, listeners opened and closed) and
//!   graceful shutdown. It does not look at connections or requests.
//! - `instance`: [`Instance`], [`Snapshot`] and each instance's background
//!   jobs (pull log, retention).
//! - `routing`: listener [`Target`]s, the host a request names, and which
//!   instance serves it (or what is answered instead: 400, 404, 421, the
//!   ACME answer or https redirect of a TLS instance on the plain listener).
//! - `listen`: accept loops, the TLS handshake, HTTP/1.1 and h2 on each
//!   connection.
//! - `handler`: one request: its id and span, limits, routing, the
//!   instance's API, common response headers, the access-log line.
//! - `early`: answers given before the request body was read.
//! - [`limits`]: timeouts and size limits of connections and requests.
//! - [`tls`]: certificates (ACME, files, local CA) and rustls configuration.

mod early;
mod handler;
mod instance;
pub mod limits;
mod listen;
mod routing;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use instance::{Instance, Snapshot};
pub use routing::Target;

use crate::config::Config;

struct Running {
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A listener: configured address (port 0 stays port 0), target, TLS or not.
type Key = (SocketAddr, Target, bool);

/// The process's listeners and what they route to.
pub struct Server {
    config: Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    listeners: BTreeMap<Key, Running>,
}

/// The listeners a config asks for.
fn wanted(config: &Config) -> Vec<Key> {
    let mut out = Vec::new();
    if let Some(addr) = config.http {
        out.push((addr, Target::ByHost, false));
    }
    if let Some(addr) = config.https {
        out.push((addr, Target::Https, true));
    }
    for ic in &config.instances {
        for addr in &ic.listen {
            out.push((*addr, Target::Instance(ic.name.clone()), ic.tls.is_on()));
        }
    }
    out
}

/// A listener that has been bound and is ready to be served.
pub struct Opened {
    pub label: String,
    pub local: SocketAddr,
    pub tls: bool,
}

type Bound = Vec<(Key, TcpListener)>;

impl Server {
    /// Binds every listener of `config` and serves them.
    pub async fn start(
        config: Config,
        snapshot: Snapshot,
    ) -> anyhow::Result<(Server, Vec<Opened>)> {
        snapshot.start_background();
        let mut server = Server {
            config: config.clone(),
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            listeners: BTreeMap::new(),
        };
        let bound = server.bind_new(&config).await?;
        let opened = server.activate(bound, &config);
        Ok((server, opened))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the listeners `config` adds, changing nothing yet.
    async fn bind_new(&self, config: &Config) -> anyhow::Result<Bound> {
        let mut bound = Vec::new();
        for key in wanted(config) {
            if self.listeners.contains_key(&key) {
                continue;
            }
            let (addr, target, _) = &key;
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for {}", target.label()))?;
            bound.push((key, l));
        }
        Ok(bound)
    }

    /// Serves newly bound listeners and closes those `config` no longer has
    /// (they finish their requests in flight).
    fn activate(&mut self, bound: Bound, config: &Config) -> Vec<Opened> {
        let mut opened = Vec::new();
        for (key, listener) in bound {
            let (addr, target, tls) = &key;
            let local = listener.local_addr().unwrap_or(*addr);
            if *target == Target::Https {
                self.snapshot
                    .load()
                    .https_port
                    .store(local.port(), Ordering::Relaxed);
            }
            let (stop, rx) = watch::channel(false);
            let snapshot = self.snapshot.clone();
            let task = tokio::spawn(listen::serve_listener(
                listener,
                snapshot,
                target.clone(),
                *tls,
                rx,
            ));
            let label = target.label().to_string();
            let scheme = if *tls { "https" } else { "http" };
            tracing::info!(listener = %local, serves = %label, scheme, "listening");
            opened.push(Opened {
                label,
                local,
                tls: *tls,
            });
            self.listeners.insert(key, Running { local, stop, task });
        }
        let wanted = wanted(config);
        self.listeners.retain(|key, r| {
            let keep = wanted.contains(key);
            if !keep {
                tracing::info!(listener = %r.local, serves = %key.1.label(), "closing listener");
                let _ = r.stop.send(true);
            }
            keep
        });
        opened
    }

    /// Applies a new config: instances added, removed or changed, listeners
    /// opened and closed. A config that fails (an htpasswd file that does not
    /// parse, an address that cannot be bound) changes nothing.
    pub async fn reload(&mut self, config: Config) -> Result<Vec<Opened>, Vec<String>> {
        let snapshot = Snapshot::build(&config, Some(&self.snapshot.load_full()))?;
        for w in &snapshot.warnings {
            tracing::warn!("{w}");
        }
        let bound = self
            .bind_new(&config)
            .await
            .map_err(|e| vec![format!("{e:#}")])?;
        snapshot.start_background();
        self.snapshot.store(Arc::new(snapshot));
        let opened = self.activate(bound, &config);
        self.config = config;
        Ok(opened)
    }

    /// Stops accepting, lets requests in flight finish for at most `drain`,
    /// writes what is kept in memory, then returns.
    pub async fn shutdown(self, drain: Duration) {
        let snapshot = self.snapshot.load_full();
        let mut tasks = Vec::new();
        for (_, r) in self.listeners {
            let _ = r.stop.send(true);
            tasks.push(r.task);
        }
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(drain, all).await.is_err() {
            tracing::warn!(
                drain_secs = drain.as_secs(),
                "requests still in flight after the drain timeout; stopping anyway"
            );
        }
        for (name, inst) in &snapshot.instances {
            if let Err(e) = inst.registry.flush_pulls().await {
                tracing::warn!(instance = %name, "cannot write the pull log: {e}");
            }
        }
    }
}
