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
//! - this file: [`Server`], its lifecycle: the listeners a config asks for
//!   ([`Listen`]), serving those the caller bound ([`Listeners`]: `berth
//!   serve` binds the configured addresses, tests bind 127.0.0.1:0 and run
//!   the server in their own runtime), reload (snapshot swap, listeners
//!   opened and closed) and graceful shutdown. It does not look at
//!   connections or requests.
//! - `instance`: [`Instance`], [`Snapshot`] and each instance's background
//!   jobs (pull log, retention, usage).
//! - `routing`: listener [`Target`]s, the host a request names, and which
//!   instance serves it (or what is answered instead: 400, 404, 421, the
//!   ACME answer or https redirect of a TLS instance on the plain listener).
//! - `listen`: accept loops, the TLS handshake, HTTP/1.1 and h2 on each
//!   connection.
//! - `handler`: one request: its id and span, limits, routing, the
//!   instance's API, common response headers.
//! - `access_log`: the access-log line of a request, with the bytes it
//!   received and sent, once its response is sent.
//! - `admin`: the admin listener (`/metrics`, `/healthz`, `/readyz`).
//! - `metrics`: the metrics it serves, counted as requests end.
//! - `early`: answers given before the request body was read.
//! - `wrong_scheme`: the `400` for plain HTTP sent to a TLS port.
//! - [`limits`]: timeouts and size limits of connections and requests.
//! - [`tls`]: certificates (ACME, files, local CA) and rustls configuration.
//! - [`usage`]: the usage file of each instance, for `berth usage`.

mod access_log;
mod acme_cache;
mod admin;
mod early;
mod handler;
mod instance;
pub mod limits;
mod listen;
mod metrics;
mod routing;
pub mod tls;
pub mod usage;
mod wrong_scheme;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
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

/// One listener a config asks for: the address as configured (port 0 stays
/// port 0) and what it serves. A caller that binds listeners itself names
/// each one by this (see [`Listeners`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listen {
    pub addr: SocketAddr,
    pub target: Target,
}

impl Listen {
    /// Every listener `config` asks for, in the order `berth serve`
    /// announces them: the shared plain one, the shared TLS one, then each
    /// instance's own.
    pub fn all(config: &Config) -> Vec<Listen> {
        wanted(config).into_iter().map(|(l, _)| l).collect()
    }

    /// "shared", "shared-tls" or the instance's name.
    pub fn label(&self) -> &str {
        self.target.label()
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> anyhow::Result<TcpListener> {
        let addr = self.addr;
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for {}", self.label()))
    }
}

/// The listeners a server starts with, bound by the caller: by
/// [`Listeners::bind`] at the configured addresses (what `berth serve`
/// does), or one by one with [`Listeners::insert`] (what tests do, on
/// 127.0.0.1:0). [`Server::start`] needs one for every [`Listen::all`] of
/// its config and no other.
#[derive(Default)]
pub struct Listeners(BTreeMap<Listen, TcpListener>);

impl Listeners {
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// Binds every listener `config` asks for at its configured address.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bound = bind_all(wanted(config)).await?;
        Ok(Listeners(
            bound.into_iter().map(|((l, _), t)| (l, t)).collect(),
        ))
    }

    /// Serves `listener` as `listen` (replacing any given before).
    pub fn insert(&mut self, listen: Listen, listener: TcpListener) {
        self.0.insert(listen, listener);
    }
}

/// A listener as served: what it is, and whether it speaks TLS (a reload
/// that turns an instance's TLS on or off replaces its listeners).
type Key = (Listen, bool);

/// The process's listeners and what they route to: what `berth serve` runs,
/// and the handle a test holds on a server in its own runtime.
pub struct Server {
    config: Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    listeners: BTreeMap<Key, Running>,
    /// Listeners a reload closed whose connections are still open.
    closing: Vec<JoinHandle<()>>,
}

/// The listeners a config asks for, each once (two `listen` entries on
/// port 0 of one instance are one listener).
fn wanted(config: &Config) -> Vec<Key> {
    let mut out = Vec::new();
    let mut add = |addr, target, tls| {
        let key = (Listen { addr, target }, tls);
        if !out.contains(&key) {
            out.push(key);
        }
    };
    if let Some(addr) = config.http {
        add(addr, Target::ByHost, false);
    }
    if let Some(addr) = config.https {
        add(addr, Target::Https, true);
    }
    if let Some(admin) = &config.admin {
        add(admin.addr, Target::Admin, false);
    }
    for ic in &config.instances {
        for addr in &ic.listen {
            add(*addr, Target::Instance(ic.name.clone()), ic.tls.is_on());
        }
    }
    out
}

/// A listener being served.
#[derive(Clone, Debug)]
pub struct Opened {
    pub listen: Listen,
    /// The address it is bound to (the port chosen for port 0).
    pub local: SocketAddr,
    pub tls: bool,
}

impl Opened {
    /// The listeners `config` asks for, as if bound at their configured
    /// addresses (what `berth check` describes; nothing is bound).
    pub fn planned(config: &Config) -> Vec<Opened> {
        wanted(config)
            .into_iter()
            .map(|(listen, tls)| Opened {
                local: listen.addr,
                listen,
                tls,
            })
            .collect()
    }
}

type Bound = Vec<(Key, TcpListener)>;

/// Binds the listeners `keys`.
async fn bind_all(keys: Vec<Key>) -> anyhow::Result<Bound> {
    let mut bound = Vec::new();
    for key in keys {
        let listener = key.0.bind().await?;
        bound.push((key, listener));
    }
    Ok(bound)
}

impl Server {
    /// Serves `config` on `listeners`, one for each listener the config
    /// asks for ([`Listen::all`]); a missing or an unasked one is an error,
    /// and then nothing is started. Must run inside a tokio runtime, whose
    /// tasks then serve the listeners.
    pub async fn start(
        config: Config,
        snapshot: Snapshot,
        mut listeners: Listeners,
    ) -> anyhow::Result<Server> {
        let mut bound = Vec::new();
        for key in wanted(&config) {
            let Some(listener) = listeners.0.remove(&key.0) else {
                bail!(
                    "no listener was given for {} on {}",
                    key.0.label(),
                    key.0.addr
                );
            };
            bound.push((key, listener));
        }
        if let Some(extra) = listeners.0.keys().next() {
            bail!(
                "a listener was given for {} on {}, which the config does not ask for",
                extra.label(),
                extra.addr
            );
        }
        snapshot.start_background();
        let mut server = Server {
            config: config.clone(),
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            listeners: BTreeMap::new(),
            closing: Vec::new(),
        };
        server.activate(bound, &config);
        Ok(server)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every listener being served, in the order of [`Listen::all`].
    pub fn listeners(&self) -> Vec<Opened> {
        wanted(&self.config)
            .into_iter()
            .filter_map(|key| {
                let local = self.listeners.get(&key)?.local;
                let (listen, tls) = key;
                Some(Opened { listen, local, tls })
            })
            .collect()
    }

    /// The bound address of the first listener labelled `label` ("shared",
    /// "shared-tls" or an instance's name).
    pub fn addr(&self, label: &str) -> Option<SocketAddr> {
        self.listeners()
            .into_iter()
            .find(|o| o.listen.label() == label)
            .map(|o| o.local)
    }

    /// Binds the listeners `config` adds, changing nothing yet.
    async fn bind_new(&self, config: &Config) -> anyhow::Result<Bound> {
        let new = wanted(config)
            .into_iter()
            .filter(|key| !self.listeners.contains_key(key))
            .collect();
        bind_all(new).await
    }

    /// Serves newly bound listeners and closes those `config` no longer has
    /// (they finish their requests in flight).
    fn activate(&mut self, bound: Bound, config: &Config) -> Vec<Opened> {
        let mut opened = Vec::new();
        for (key, listener) in bound {
            let (which, tls) = &key;
            let local = listener.local_addr().unwrap_or(which.addr);
            if which.target == Target::Https {
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
                which.target.clone(),
                *tls,
                rx,
            ));
            let scheme = if *tls { "https" } else { "http" };
            tracing::info!(listener = %local, serves = %which.label(), scheme, "listening");
            opened.push(Opened {
                listen: which.clone(),
                local,
                tls: *tls,
            });
            self.listeners.insert(key, Running { local, stop, task });
        }
        let wanted = wanted(config);
        self.closing.retain(|t| !t.is_finished());
        let closed: Vec<Key> = self
            .listeners
            .keys()
            .filter(|key| !wanted.contains(key))
            .cloned()
            .collect();
        for key in closed {
            if let Some(r) = self.listeners.remove(&key) {
                tracing::info!(listener = %r.local, serves = %key.0.label(), "closing listener");
                let _ = r.stop.send(true);
                self.closing.push(r.task);
            }
        }
        opened
    }

    /// Applies a new config: instances added, removed or changed, listeners
    /// opened (bound here, at their configured addresses) and closed. A
    /// config that fails (an htpasswd file that does not parse, an address
    /// that cannot be bound) changes nothing. Returns the listeners opened.
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

    /// Stops accepting, lets requests in flight finish for at most `drain`
    /// (then cuts the connections still open), writes what is kept in
    /// memory and removes the heartbeats, then returns: nothing of this
    /// server runs afterwards.
    pub async fn shutdown(self, drain: Duration) {
        let snapshot = self.snapshot.load_full();
        let mut tasks = self.closing;
        for (_, r) in self.listeners {
            let _ = r.stop.send(true);
            tasks.push(r.task);
        }
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(drain, all).await.is_err() {
            tracing::warn!(
                drain_secs = drain.as_secs(),
                "requests still in flight after the drain timeout; stopping anyway"
            );
            for a in aborts {
                a.abort();
            }
        }
        for (name, inst) in &snapshot.instances {
            if let Err(e) = inst.registry.flush_pulls().await {
                tracing::warn!(instance = %name, "cannot write the pull log: {e}");
            }
            if let Err(e) = inst.registry.leave().await {
                tracing::warn!(instance = %name, "cannot remove the heartbeat: {e}");
            }
        }
    }
}
