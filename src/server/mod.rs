//! Composes the instances of a [`Config`] and serves them: one dedicated
//! listener per `listen` address of an instance, and a shared listener that
//! routes each request by its `Host` to the instance owning that name.
//! Every response carries `Docker-Distribution-API-Version`, and every
//! request gets one access-log line.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};
use axum::Router;
use tokio::net::TcpListener;

use crate::api;
use crate::auth::Authenticator;
use crate::config::{Config, InstanceConfig};
use crate::oci::RegistryError;
use crate::registry::Registry;

/// One registry as served: its config, content and credentials.
pub struct Instance {
    pub config: InstanceConfig,
    pub registry: Registry,
    pub auth: Arc<Authenticator>,
}

/// Builds every instance of `config`; errors (unreadable or malformed
/// htpasswd files) name file and line.
pub fn build_instances(config: &Config) -> Result<Vec<Arc<Instance>>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for ic in &config.instances {
        match Authenticator::load(&ic.name, &ic.htpasswd) {
            Ok(auth) => out.push(Arc::new(Instance {
                registry: Registry::new(&ic.storage_root),
                auth: Arc::new(auth),
                config: ic.clone(),
            })),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Which instance a listener serves.
#[derive(Clone)]
pub enum Target {
    /// A dedicated listener of one instance.
    Instance(Arc<Instance>),
    /// The shared listener: by `Host`.
    ByHost(Arc<HashMap<String, Arc<Instance>>>),
}

impl Target {
    pub fn by_host(instances: &[Arc<Instance>]) -> Self {
        let mut map = HashMap::new();
        for inst in instances {
            for h in &inst.config.hostnames {
                map.insert(h.clone(), inst.clone());
            }
        }
        Target::ByHost(Arc::new(map))
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

async fn handle(target: Target, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let instance = match &target {
        Target::Instance(i) => Some(i.clone()),
        Target::ByHost(map) => request_host(&req).and_then(|h| map.get(&h).cloned()),
    };
    let mut resp = match &instance {
        Some(inst) => api::handle(&inst.registry, &inst.auth, req).await,
        None => {
            let host = request_host(&req).unwrap_or_default();
            api::error_response(&RegistryError::NameUnknown(format!(
                "no registry is served for host '{host}'"
            )))
        }
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

/// The one app builder: the router for a listener, used by `serve` and tests.
pub fn app(target: Target) -> Router {
    Router::new().fallback(move |req: Request<Body>| handle(target.clone(), req))
}

/// A listener and what it serves.
pub struct Bound {
    /// Instance name, or `shared`.
    pub label: String,
    pub listener: TcpListener,
    pub target: Target,
}

/// Binds every listener of the config.
pub async fn bind(config: &Config, instances: &[Arc<Instance>]) -> anyhow::Result<Vec<Bound>> {
    if let Some(https) = config.https {
        anyhow::bail!(
            "{}: listen.https = {https} needs TLS certificates, and no instance is configured with TLS; \
             remove the key to serve plain HTTP",
            config.dir.join("berth.toml").display()
        );
    }
    let mut bound = Vec::new();
    let listen = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    if let Some(addr) = config.http {
        bound.push(Bound {
            label: "shared".to_string(),
            listener: listen(addr).await?,
            target: Target::by_host(instances),
        });
    }
    for inst in instances {
        for addr in &inst.config.listen {
            bound.push(Bound {
                label: inst.config.name.clone(),
                listener: listen(*addr).await?,
                target: Target::Instance(inst.clone()),
            });
        }
    }
    Ok(bound)
}

/// Serves the bound listeners until `shutdown` completes, then lets requests
/// in flight finish.
pub async fn serve(
    bound: Vec<Bound>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for b in bound {
        let mut rx = rx.clone();
        let router = app(b.target);
        tasks.spawn(async move {
            axum::serve(b.listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    while let Some(res) = tasks.join_next().await {
        res.context("listener task failed")?
            .context("listener failed")?;
    }
    Ok(())
}
