//! Composes the instances of a [`Config`] and serves them: one dedicated
//! listener per `listen` address of an instance, and a shared listener that
//! routes each request by its `Host` to the instance owning that name.
//!
//! What the listeners route to is one [`Snapshot`], swapped whole on reload:
//! a request keeps the instance it started with until it ends, so transfers
//! in flight finish on their old config. Every response carries
//! `Docker-Distribution-API-Version`, and every request gets one access-log
//! line.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::auth::Authenticator;
use crate::config::{Config, InstanceConfig};
use crate::oci::RegistryError;
use crate::registry::Registry;

/// One registry as served: its config, content and credentials.
pub struct Instance {
    pub config: InstanceConfig,
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
}

/// Every instance of one config, by name and by hostname.
pub struct Snapshot {
    pub instances: BTreeMap<String, Arc<Instance>>,
    by_host: HashMap<String, Arc<Instance>>,
    /// Things that work but look wrong (access rules naming unknown users).
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// Builds the instances of `config`. Parts that did not change are taken
    /// over from `previous`: the registry of an unchanged storage root (its
    /// upload sessions go on), the authenticator of an unchanged htpasswd
    /// file (its verified credentials stay). Errors name file and line.
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Result<Snapshot, Vec<String>> {
        let mut instances = BTreeMap::new();
        let mut by_host = HashMap::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for ic in &config.instances {
            let old = previous.and_then(|p| p.instances.get(&ic.name));
            let registry = match old {
                Some(o) if o.config.storage_root == ic.storage_root => o.registry.clone(),
                _ => Arc::new(Registry::new(&ic.storage_root)),
            };
            let auth = match old {
                Some(o)
                    if o.config.htpasswd == ic.htpasswd
                        && o.config.max_login_failures == ic.max_login_failures =>
                {
                    o.auth.refresh_now();
                    Ok(o.auth.clone())
                }
                _ => {
                    Authenticator::load(&ic.name, &ic.htpasswd, ic.max_login_failures).map(Arc::new)
                }
            };
            match auth {
                Ok(auth) => {
                    for rule in &ic.access.rules {
                        for u in rule.users.iter().filter(|u| u.is_literal()) {
                            if !auth.has_user(&u.text) {
                                warnings.push(format!(
                                    "{}: access rule names user '{}', who is not in {}",
                                    ic.file.display(),
                                    u.text,
                                    ic.htpasswd.display()
                                ));
                            }
                        }
                    }
                    let inst = Arc::new(Instance {
                        config: ic.clone(),
                        registry,
                        auth,
                    });
                    for h in &ic.hostnames {
                        by_host.insert(h.clone(), inst.clone());
                    }
                    instances.insert(ic.name.clone(), inst);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(Snapshot {
                instances,
                by_host,
                warnings,
            })
        } else {
            Err(errors)
        }
    }
}

/// Which instance a listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The shared listener: the instance owning the request's `Host`.
    ByHost,
    /// A dedicated listener of the named instance.
    Instance(String),
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::ByHost => "shared",
            Target::Instance(name) => name,
        }
    }
}

/// The host a request is for, lowercased and without port.
fn request_host(req: &Request<Body>) -> Option<String> {
    let raw = match req.uri().host() {
        Some(h) => h.to_string(),
        None => req.headers().get(header::HOST)?.to_str().ok()?.to_string(),
    };
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("").to_string()
    } else {
        raw.rsplit_once(':')
            .map_or(raw.as_str(), |(h, _)| h)
            .to_string()
    };
    Some(host.to_ascii_lowercase())
}

async fn handle(snapshot: Arc<Snapshot>, target: Target, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let host = request_host(&req).unwrap_or_default();
    let instance = match &target {
        Target::Instance(name) => snapshot.instances.get(name).cloned(),
        Target::ByHost => snapshot.by_host.get(&host).cloned(),
    };
    drop(snapshot);
    let mut resp = match &instance {
        Some(inst) => {
            let ctx = api::Instance {
                registry: &inst.registry,
                auth: &inst.auth,
                access: &inst.config.access,
            };
            api::handle(ctx, req).await
        }
        None => api::error_response(&RegistryError::NameUnknown(format!(
            "no registry is served for host '{host}'"
        ))),
    };
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    let user = resp
        .extensions()
        .get::<api::AuthenticatedUser>()
        .map(|u| u.0.clone());
    let bytes = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    tracing::info!(
        target: "access",
        instance = instance.as_ref().map_or("-", |i| i.config.name.as_str()),
        user = user.as_deref().unwrap_or("-"),
        %method,
        path,
        status = resp.status().as_u16(),
        bytes,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    resp
}

/// The one app builder: the router of a listener, reading the current
/// snapshot at each request. Used by [`Server`] and usable by tests.
pub fn app(snapshot: Arc<ArcSwap<Snapshot>>, target: Target) -> Router {
    Router::new()
        .fallback(move |req: Request<Body>| handle(snapshot.load_full(), target.clone(), req))
}

struct Running {
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The process's listeners and what they route to.
pub struct Server {
    config: Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Keyed by the configured address (port 0 stays port 0) and target.
    listeners: BTreeMap<(SocketAddr, Target), Running>,
}

/// The listeners a config asks for.
fn wanted(config: &Config) -> Vec<(SocketAddr, Target)> {
    let mut out = Vec::new();
    if let Some(addr) = config.http {
        out.push((addr, Target::ByHost));
    }
    for ic in &config.instances {
        for addr in &ic.listen {
            out.push((*addr, Target::Instance(ic.name.clone())));
        }
    }
    out
}

fn refuse_https(config: &Config) -> anyhow::Result<()> {
    if let Some(https) = config.https {
        anyhow::bail!(
            "{}: listen.https = {https} needs TLS certificates, and no instance is configured with TLS; \
             remove the key to serve plain HTTP",
            config.dir.join("berth.toml").display()
        );
    }
    Ok(())
}

/// A listener that has been bound and is ready to be served.
pub struct Opened {
    pub label: String,
    pub local: SocketAddr,
}

type Bound = Vec<(SocketAddr, Target, TcpListener)>;

impl Server {
    /// Binds every listener of `config` and serves them.
    pub async fn start(
        config: Config,
        snapshot: Snapshot,
    ) -> anyhow::Result<(Server, Vec<Opened>)> {
        refuse_https(&config)?;
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
        for (addr, target) in wanted(config) {
            if self.listeners.contains_key(&(addr, target.clone())) {
                continue;
            }
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for {}", target.label()))?;
            bound.push((addr, target, l));
        }
        Ok(bound)
    }

    /// Serves newly bound listeners and closes those `config` no longer has
    /// (they finish their requests in flight).
    fn activate(&mut self, bound: Bound, config: &Config) -> Vec<Opened> {
        let mut opened = Vec::new();
        for (addr, target, listener) in bound {
            let local = listener.local_addr().unwrap_or(addr);
            let (stop, mut rx) = watch::channel(false);
            let router = app(self.snapshot.clone(), target.clone());
            let task = tokio::spawn(async move {
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                let result = axum::serve(listener, service)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(listener = %local, "listener failed: {e}");
                }
            });
            let label = target.label().to_string();
            tracing::info!(listener = %local, serves = %label, "listening");
            opened.push(Opened { label, local });
            self.listeners
                .insert((addr, target), Running { local, stop, task });
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
        refuse_https(&config).map_err(|e| vec![e.to_string()])?;
        let snapshot = Snapshot::build(&config, Some(&self.snapshot.load_full()))?;
        for w in &snapshot.warnings {
            tracing::warn!("{w}");
        }
        let bound = self
            .bind_new(&config)
            .await
            .map_err(|e| vec![format!("{e:#}")])?;
        self.snapshot.store(Arc::new(snapshot));
        let opened = self.activate(bound, &config);
        self.config = config;
        Ok(opened)
    }

    /// Stops accepting, lets requests in flight finish for at most `drain`,
    /// then returns.
    pub async fn shutdown(self, drain: Duration) {
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
    }
}
