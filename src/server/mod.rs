//! Composes the instances of a [`Config`] and serves them: one dedicated
//! listener per `listen` address of an instance, and a shared listener that
//! routes each request by its `Host` to the instance owning that name.
//!
//! What the listeners route to is one [`Snapshot`], swapped whole on reload:
//! a request keeps the instance it started with until it ends, so transfers
//! in flight finish on their old config. Every response carries
//! `Docker-Distribution-API-Version`, and every request gets one access-log
//! line. A request whose host is ambiguous (two `Host` headers, one that is
//! not `host[:port]`, none in HTTP/1.1) gets 400 on every listener.
//!
//! TLS: the shared `https` listener reads the ClientHello, picks the
//! instance by SNI (a name no instance serves gets no handshake), and serves
//! that instance's certificate; a request whose `Host` belongs elsewhere gets
//! 421. Dedicated listeners of a TLS instance speak TLS with its certificate.
//! On the shared plain listener, TLS instances answer ACME HTTP-01
//! challenges and redirect everything else to https.

mod early;
pub mod limits;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::auth::Authenticator;
use crate::config::{Config, InstanceConfig};
use crate::oci::RegistryError;
use crate::registry::Registry;

/// One registry as served: its config, content, credentials and TLS.
pub struct Instance {
    pub config: InstanceConfig,
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    pub tls: Option<Arc<tls::InstanceTls>>,
    /// Background work: writing the pull log, scheduled retention runs.
    jobs: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(j) = self.jobs.lock().take() {
            j.abort();
        }
    }
}

/// How often the pull log is written.
const FLUSH_PULLS: Duration = Duration::from_secs(30);

impl Instance {
    /// Starts the background jobs: the pull log every [`FLUSH_PULLS`], and
    /// retention + garbage collection every `[retention] interval`.
    fn start_jobs(self: &Arc<Self>) {
        let mut jobs = self.jobs.lock();
        if jobs.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        let interval = self.config.retention.interval;
        let tick = interval.map_or(FLUSH_PULLS, |i| i.min(FLUSH_PULLS));
        let name = self.config.name.clone();
        *jobs = Some(tokio::spawn(async move {
            let mut last_gc = Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let Some(inst) = weak.upgrade() else { return };
                if let Err(e) = inst.registry.flush_pulls().await {
                    tracing::warn!(instance = %name, "cannot write the pull log: {e}");
                }
                if interval.is_some_and(|i| last_gc.elapsed() >= i) {
                    last_gc = Instant::now();
                    let run = inst.registry.collect_garbage(
                        &inst.config.retention,
                        SystemTime::now(),
                        false,
                    );
                    match run.await {
                        Ok(report) => {
                            tracing::info!(instance = %name, "retention: {}", report.render(&name).trim_end())
                        }
                        Err(e) => tracing::error!(instance = %name, "retention failed: {e}"),
                    }
                }
            }
        }));
    }
}

/// Every instance of one config, by name and by hostname.
pub struct Snapshot {
    pub instances: BTreeMap<String, Arc<Instance>>,
    by_host: HashMap<String, Arc<Instance>>,
    /// Things that work but look wrong (access rules naming unknown users).
    pub warnings: Vec<String>,
    /// Port of the shared https listener, for redirects (0: none).
    https_port: AtomicU16,
    /// `[server] header_timeout`, for connections accepted from now on.
    header_timeout: Duration,
    /// `[server] body_timeout`, for requests started from now on.
    body_timeout: Duration,
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
            let tls = match old {
                Some(o) if o.config.tls == ic.tls && o.config.hostnames == ic.hostnames => {
                    Ok(o.tls.clone())
                }
                _ => tls::InstanceTls::build(&ic.name, &ic.hostnames, &ic.tls, &config.state_dir)
                    .map(|t| t.map(Arc::new)),
            };
            let tls = match tls {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e);
                    None
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
                        tls,
                        jobs: parking_lot::Mutex::new(None),
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
            let https_port = previous.map_or(0, |p| p.https_port.load(Ordering::Relaxed));
            Ok(Snapshot {
                instances,
                by_host,
                warnings,
                https_port: AtomicU16::new(https_port),
                header_timeout: config.header_timeout,
                body_timeout: config.body_timeout,
            })
        } else {
            Err(errors)
        }
    }
}

impl Snapshot {
    /// Starts the instances' background work: ACME, pull log, retention.
    fn start_background(&self) {
        for (name, inst) in &self.instances {
            if let Some(t) = &inst.tls {
                t.start(name);
            }
            inst.start_jobs();
        }
    }
}

/// Which instance a listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The shared plain listener: the instance owning the request's `Host`.
    ByHost,
    /// The shared TLS listener: the instance owning the SNI name.
    Https,
    /// A dedicated listener of the named instance.
    Instance(String),
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::ByHost => "shared",
            Target::Https => "shared-tls",
            Target::Instance(name) => name,
        }
    }
}

/// How a request arrived.
#[derive(Clone, Debug)]
enum Via {
    /// Plain HTTP on a listener.
    Plain(Target),
    /// TLS: the instance was chosen by SNI (shared listener, `host_checked`)
    /// or by the dedicated listener.
    Tls {
        instance: String,
        host_checked: bool,
    },
}

/// The host a request is for, lowercased and without port: from the
/// request target when it has an authority (absolute form, h2
/// `:authority`), else from the `Host` header; `None` when neither names
/// one (HTTP/1.0, h2). A request with more than one `Host` header, a `Host`
/// that is not `host[:port]`, or (HTTP/1.1) none at all is refused, as RFC
/// 9112 §3.2 requires: it must not be routed on a guess.
fn request_host(req: &Request<Body>) -> Result<Option<String>, RegistryError> {
    let mut headers = req.headers().get_all(header::HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(RegistryError::HostInvalid(
            "more than one Host header".into(),
        ));
    }
    let invalid = |value: &str| {
        RegistryError::HostInvalid(format!(
            "invalid Host '{value}': expected host[:port] (port 0-65535)"
        ))
    };
    let from_header = match header {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| invalid(&String::from_utf8_lossy(v.as_bytes())))?;
            Some(host_of(text).ok_or_else(|| invalid(text))?)
        }
        None => None,
    };
    match req.uri().authority() {
        Some(a) => host_of(a.as_str())
            .map(Some)
            .ok_or_else(|| invalid(a.as_str())),
        None if from_header.is_none() && req.version() == axum::http::Version::HTTP_11 => Err(
            RegistryError::HostInvalid("an HTTP/1.1 request needs a Host header".into()),
        ),
        None => Ok(from_header),
    }
}

/// The host of an authority `host[:port]` (RFC 3986 §3.2.2: a registered
/// name or IPv4 address, or an IPv6 address in brackets; the port 1 to 5
/// digits up to 65535), lowercased; `None` when it is not one.
fn host_of(authority: &str) -> Option<String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (v6, port)
        }
        None => {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if !is_reg_name(host) {
                return None;
            }
            (host, port)
        }
    };
    if let Some(p) = port {
        let digits = (1..=5).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit());
        if !digits || p.parse::<u32>().ok()? > u32::from(u16::MAX) {
            return None;
        }
    }
    Some(host.to_ascii_lowercase())
}

/// `reg-name` of RFC 3986: unreserved characters, sub-delims and
/// percent-encoded octets (an IPv4 address is one too).
fn is_reg_name(host: &str) -> bool {
    let b = host.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c) => i += 1,
            _ => return false,
        }
    }
    true
}

fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

/// A TLS instance on the plain listener: ACME HTTP-01 answers, else https.
fn plain_for_tls(
    snapshot: &Snapshot,
    inst: &Instance,
    host: &str,
    req: &Request<Body>,
) -> Response<Body> {
    let tls = inst.tls.as_ref().expect("called for TLS instances");
    if let Some(token) = req
        .uri()
        .path()
        .strip_prefix("/.well-known/acme-challenge/")
    {
        return match tls.http01_key_auth(token) {
            Some(key_auth) => Response::builder()
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(key_auth))
                .expect("valid response"),
            None => api::error_response(&RegistryError::NotFound("no such ACME challenge".into())),
        };
    }
    let port = match snapshot.https_port.load(Ordering::Relaxed) {
        0 | 443 => String::new(),
        p => format!(":{p}"),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    redirect(&format!("https://{host}{port}{path}"))
}

async fn handle(snapshot: Arc<Snapshot>, via: Via, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let too_large = limits::check_request(&req).err();
    let req = req.map(|body| limits::idle_timeout(body, snapshot.body_timeout));
    let (req, unread) = early::track(req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (host, bad_host) = match request_host(&req) {
        Ok(host) => (host.unwrap_or_default(), None),
        Err(e) => (String::new(), Some(api::error_response(&e))),
    };
    let unknown_host = || {
        api::error_response(&RegistryError::NameUnknown(format!(
            "no registry is served for host '{host}'"
        )))
    };
    let (instance, early) = match &via {
        Via::Plain(Target::Instance(name)) => (snapshot.instances.get(name).cloned(), None),
        Via::Plain(_) => match snapshot.by_host.get(&host) {
            Some(inst) if inst.tls.is_some() => (
                Some(inst.clone()),
                Some(plain_for_tls(&snapshot, inst, &host, &req)),
            ),
            Some(inst) => (Some(inst.clone()), None),
            None => (None, Some(unknown_host())),
        },
        Via::Tls {
            instance,
            host_checked,
        } => {
            let inst = snapshot.instances.get(instance).cloned();
            let misdirected = *host_checked
                && snapshot
                    .by_host
                    .get(&host)
                    .is_none_or(|h| h.config.name != *instance);
            let early = misdirected.then(|| {
                api::error_response(&RegistryError::Misdirected(format!(
                    "host '{host}' is not served on this connection (TLS name of {instance}); connect to it by its own name"
                )))
            });
            (inst, early)
        }
    };
    drop(snapshot);
    let early = bad_host
        .or(too_large.map(|e| api::error_response(&e)))
        .or(early);
    let mut resp = match (early, &instance) {
        (Some(resp), _) => resp,
        (None, Some(inst)) => {
            let ctx = api::Instance {
                registry: &inst.registry,
                auth: &inst.auth,
                access: &inst.config.access,
                limits: &inst.config.limits,
                upload_ttl: inst.config.retention.upload_ttl,
            };
            api::handle(ctx, req).await
        }
        (None, None) => unknown_host(),
    };
    if let Some(unread) = unread {
        unread.settle(&mut resp).await;
    }
    if matches!(via, Via::Tls { .. }) {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
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

/// Limit on the TLS handshake, so that silent clients do not pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One TLS connection: handshake with the certificate of the instance the
/// SNI name (shared listener) or the listener (dedicated) says, then HTTP/1.1
/// or h2 as ALPN agreed.
async fn serve_tls_connection(
    tcp: limits::WriteTimeout<early::Lingering<tokio::net::TcpStream>>,
    peer: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    target: Target,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let Ok(Ok(start)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await else {
        return;
    };
    let hello = start.client_hello();
    let snap = snapshot.load_full();
    let (instance, host_checked) = match &target {
        Target::Instance(name) => (snap.instances.get(name).cloned(), false),
        _ => {
            let sni = hello.server_name().map(str::to_ascii_lowercase);
            (sni.and_then(|n| snap.by_host.get(&n).cloned()), true)
        }
    };
    // No certificate for names nobody here serves: the handshake just ends.
    let Some((inst, tls)) = instance.and_then(|i| i.tls.clone().map(|t| (i, t))) else {
        return;
    };
    let config = tls.config_for(&hello);
    drop(snap);
    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await
    else {
        return;
    };
    let via = Via::Tls {
        instance: inst.config.name.clone(),
        host_checked,
    };
    drop(inst);
    serve_http(stream, peer, snapshot, via, watcher).await;
}

/// HTTP/1.1 or h2 on one connection (plain, or TLS after the handshake),
/// with the limits of [`limits::connection_builder`].
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    via: Via,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = limits::connection_builder(snapshot.load().header_timeout);
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let (snapshot, via) = (snapshot.load_full(), via.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(snapshot, via, req).await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Accepts connections until `stop`, then waits for the open ones (which
/// finish the requests in flight).
async fn serve_listener(
    listener: TcpListener,
    snapshot: Arc<ArcSwap<Snapshot>>,
    target: Target,
    tls: bool,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. out of file descriptors: give others a moment
                        // to close theirs instead of spinning.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Small responses must not wait for Nagle's algorithm.
                let _ = tcp.set_nodelay(true);
                let tcp = limits::WriteTimeout::new(early::Lingering::new(tcp), snapshot.load().body_timeout);
                let (snapshot, watcher) = (snapshot.clone(), graceful.watcher());
                if tls {
                    tokio::spawn(serve_tls_connection(tcp, peer, snapshot, target.clone(), watcher));
                } else {
                    let via = Via::Plain(target.clone());
                    tokio::spawn(serve_http(tcp, peer, snapshot, via, watcher));
                }
            }
            // Dropping the guard at once keeps this future `Send`.
            _ = async { drop(stop.wait_for(|s| *s).await) } => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

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
            let task = tokio::spawn(serve_listener(listener, snapshot, target.clone(), *tls, rx));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_authorities() {
        for (authority, host) in [
            ("ci.test", "ci.test"),
            ("CI.Test:5000", "ci.test"),
            ("ci.test:0", "ci.test"),
            ("ci.test:65535", "ci.test"),
            ("ci.test:00080", "ci.test"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]", "::1"),
            ("[::1]:8080", "::1"),
            ("[FE80::1]:443", "fe80::1"),
            ("", ""),
            ("a%2Eb", "a%2eb"),
        ] {
            assert_eq!(host_of(authority).as_deref(), Some(host), "{authority:?}");
        }
        for bad in [
            "b.test:a.test",
            "ci.test:",
            "ci.test:65536",
            "ci.test:123456",
            "ci.test:-1",
            "ci.test:+80",
            "ci.test: 80",
            "ci.test:80:80",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:99999",
            "[ci.test]:80",
            "a b",
            "a/b",
            "user@ci.test",
            "a%zz",
            "a%2",
            "\u{e9}.test",
        ] {
            assert_eq!(host_of(bad), None, "{bad:?}");
        }
    }

    fn request(version: axum::http::Version, uri: &str, hosts: &[&[u8]]) -> Request<Body> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, HeaderValue::from_bytes(h).unwrap());
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn request_hosts() {
        use axum::http::Version;
        let host = |v, uri, hosts: &[&[u8]]| request_host(&request(v, uri, hosts));
        assert_eq!(
            host(Version::HTTP_11, "/v2/", &[b"B.test:80"]).unwrap(),
            Some("b.test".into())
        );
        assert_eq!(
            host(Version::HTTP_11, "http://a.test:81/v2/", &[b"b.test"]).unwrap(),
            Some("a.test".into())
        );
        assert_eq!(host(Version::HTTP_10, "/v2/", &[]).unwrap(), None);
        assert_eq!(host(Version::HTTP_2, "/v2/", &[]).unwrap(), None);
        for (v, uri, hosts) in [
            (Version::HTTP_11, "/v2/", &[&b"a.test"[..], b"b.test"][..]),
            (Version::HTTP_11, "/v2/", &[b"a.test", b"a.test"]),
            (Version::HTTP_10, "/v2/", &[b"a.test", b"b.test"]),
            (
                Version::HTTP_11,
                "http://a.test/v2/",
                &[b"a.test", b"a.test"],
            ),
            (Version::HTTP_11, "/v2/", &[b"b.test:a.test"]),
            (Version::HTTP_11, "/v2/", &[b"\xff.test"]),
            (Version::HTTP_11, "http://a.test/v2/", &[b"b.test:x"]),
            (Version::HTTP_11, "/v2/", &[]),
        ] {
            assert!(
                matches!(host(v, uri, hosts), Err(RegistryError::HostInvalid(_))),
                "{v:?} {uri} {hosts:?}"
            );
        }
    }
}
