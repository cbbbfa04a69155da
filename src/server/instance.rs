//! The instances of one config as the listeners see them: [`Instance`] (one
//! registry with its config, content, credentials and TLS), [`Snapshot`]
//! (every instance of a config, by name and by hostname, swapped whole on
//! reload) and each instance's background jobs (pull log, retention,
//! usage).
//!
//! Owns building a snapshot from a [`Config`], taking over what did not
//! change from the previous one, and starting and stopping the jobs. Must
//! not touch listeners, connections or requests: which listener serves
//! what is `mod.rs`'s, how a request picks its instance is `routing`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use super::metrics::Metrics;
use super::{tls, usage};
use crate::auth::Authenticator;
use crate::config::{Config, InstanceConfig};
use crate::coord::Coordinator;
use crate::notify::Notifier;
use crate::registry::{presence, Registry};
use crate::storage::cache::BlobCache;

/// One registry as served: its config, content, credentials and TLS.
pub struct Instance {
    pub config: InstanceConfig,
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    pub tls: Option<Arc<tls::InstanceTls>>,
    /// Its webhooks (`[[notify]]`).
    pub notifier: Arc<Notifier>,
    /// The server's state directory, where its usage is written.
    state_dir: std::path::PathBuf,
    /// Background work: the heartbeat; writing the pull log, scheduled
    /// retention runs; keeping the usage file current.
    jobs: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// Why a bucket cannot be used now, when its last probe failed: the
    /// instance then answers 503 until a probe succeeds.
    storage_problem: parking_lot::Mutex<Option<String>>,
    /// When the next scheduled retention run is due (`[retention]
    /// interval`), for the web UI.
    next_gc: parking_lot::Mutex<Option<SystemTime>>,
    /// The last readiness probe: when, and what stood in the way.
    ready_probe: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        for j in self.jobs.lock().drain(..) {
            j.abort();
        }
    }
}

/// How often the pull log is written.
const FLUSH_PULLS: Duration = Duration::from_secs(30);

impl Instance {
    /// Why the instance's storage cannot be used now, if so.
    pub fn storage_problem(&self) -> Option<String> {
        self.storage_problem.lock().clone()
    }

    /// What keeps the instance from being ready at `now`: no certificate
    /// served yet (or one that ended), or storage that cannot be written,
    /// read and cleaned up (probed at most every
    /// [`super::admin::PROBE_EVERY`]); `None` when it is ready.
    pub async fn readiness(&self, now: Instant) -> Option<String> {
        let certificate = self
            .tls
            .as_ref()
            .and_then(|t| t.status().problem(SystemTime::now()));
        let storage = self.storage_readiness(now).await;
        match (certificate, storage) {
            (Some(c), Some(s)) => Some(format!("{c}; {s}")),
            (c, s) => c.or(s),
        }
    }

    async fn storage_readiness(&self, now: Instant) -> Option<String> {
        let mut last = self.ready_probe.lock().await;
        if let Some((at, why)) = &*last {
            if now.duration_since(*at) < super::admin::PROBE_EVERY {
                return why.clone();
            }
        }
        let why = self.registry.driver().probe().await.err();
        *last = Some((now, why.clone()));
        why
    }

    /// When the next scheduled retention run is due, if one is scheduled.
    pub fn next_gc(&self) -> Option<SystemTime> {
        *self.next_gc.lock()
    }

    /// Probes a bucket (a directory is not: a full disk still serves
    /// pulls); logs when the outcome changes. Whether it can be used.
    async fn probe_storage(&self) -> bool {
        if !self.config.storage.is_shared() {
            return true;
        }
        let problem = self.registry.driver().probe().await.err();
        let name = &self.config.name;
        let mut current = self.storage_problem.lock();
        if *current != problem {
            match &problem {
                Some(why) => {
                    tracing::error!(instance = %name, "{why}; answering 503 until it works")
                }
                None if current.is_some() => {
                    tracing::info!(instance = %name, "storage {} works again", self.config.storage)
                }
                None => {}
            }
        }
        let ok = problem.is_none();
        *current = problem;
        ok
    }

    /// Starts the background jobs: the heartbeat every
    /// [`presence::BEAT`] (on a task of its own, so that a long collection
    /// does not make this process look gone), the pull log every
    /// [`FLUSH_PULLS`], and retention + garbage collection every
    /// `[retention] interval`, and the usage file ([`usage::keep`]).
    fn start_jobs(self: &Arc<Self>) {
        let mut jobs = self.jobs.lock();
        if !jobs.is_empty() {
            return;
        }
        self.notifier.deliver();
        jobs.push(tokio::spawn(usage::keep(
            Arc::downgrade(self),
            self.config.name.clone(),
            self.state_dir.clone(),
        )));
        let weak = Arc::downgrade(self);
        // A read-only instance changes nothing by itself either: its
        // scheduled collections wait for the reload that lifts it.
        let interval = self
            .config
            .retention
            .interval
            .filter(|_| !self.config.read_only);
        if self.config.read_only && self.config.retention.interval.is_some() {
            tracing::info!(instance = %self.config.name, "read-only: scheduled retention paused");
        }
        let scheduled = interval.is_some();
        let name = self.config.name.clone();
        jobs.push(tokio::spawn(async move {
            let mut first = true;
            loop {
                let Some(inst) = weak.upgrade() else { return };
                if !inst.probe_storage().await {
                    drop(inst);
                    tokio::time::sleep(presence::BEAT).await;
                    continue;
                }
                if let Err(e) = inst.registry.beat().await {
                    tracing::warn!(instance = %name, "cannot write the heartbeat: {e}");
                }
                if std::mem::take(&mut first) && scheduled {
                    match inst.registry.gc_refusal().await {
                        Ok(None) => {}
                        Ok(Some(why)) => {
                            tracing::warn!(instance = %name, "scheduled retention will not run: {why}")
                        }
                        Err(e) => tracing::warn!(instance = %name, "cannot read the heartbeats: {e}"),
                    }
                }
                drop(inst);
                tokio::time::sleep(presence::BEAT).await;
            }
        }));
        let weak = Arc::downgrade(self);
        let tick = interval.map_or(FLUSH_PULLS, |i| i.min(FLUSH_PULLS));
        let name = self.config.name.clone();
        *self.next_gc.lock() = interval.map(|i| SystemTime::now() + i);
        jobs.push(tokio::spawn(async move {
            let mut last_gc = Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let Some(inst) = weak.upgrade() else { return };
                if let Err(e) = inst.registry.flush_pulls().await {
                    tracing::warn!(instance = %name, "cannot write the pull log: {e}");
                }
                if interval.is_some_and(|i| last_gc.elapsed() >= i) {
                    last_gc = Instant::now();
                    *inst.next_gc.lock() = interval.map(|i| SystemTime::now() + i);
                    let run = inst.registry.collect_garbage(
                        &inst.config.retention,
                        SystemTime::now(),
                        false,
                    );
                    match run.await {
                        Ok(report) => {
                            inst.notifier.collection(&report);
                            crate::audit::collection(&name, &report, "scheduled");
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
    pub(super) by_host: HashMap<String, Arc<Instance>>,
    /// Things that work but look wrong (access rules naming unknown users).
    pub warnings: Vec<String>,
    /// What the server will create at start that is not there yet (in a
    /// snapshot built to check only: [`Snapshot::build_for_check`]).
    pub notes: Vec<String>,
    /// Port of the shared https listener, for redirects (0: none).
    pub(super) https_port: AtomicU16,
    /// `[server] header_timeout`, for connections accepted from now on.
    pub(super) header_timeout: Duration,
    /// `[server] body_timeout`, for requests started from now on.
    pub(super) body_timeout: Duration,
    /// The PostgreSQL coordination of `[coordination]`, connected at start
    /// (reloads keep it); `None`: lock files in each storage root.
    coord: Option<Coordinator>,
    /// The process's metrics (reloads keep them).
    pub metrics: Arc<Metrics>,
    /// Whether requests are counted into them: only while an admin
    /// listener can serve them, so that without one they cost nothing.
    pub(super) counting: bool,
    /// Who may read the admin listener (`[admin] htpasswd`); `None`: anyone
    /// who reaches it.
    pub(super) admin_auth: Option<Arc<Authenticator>>,
}

impl Snapshot {
    /// Builds the instances of `config`. Parts that did not change are taken
    /// over from `previous`: the registry of an unchanged storage root (its
    /// upload sessions go on), the authenticator of an unchanged htpasswd
    /// file (its verified credentials stay). Errors name file and line.
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Result<Snapshot, Vec<String>> {
        let coord = previous.and_then(|p| p.coord.clone());
        Self::build_coordinated(config, previous, coord)
    }

    /// [`Snapshot::build`] for `berth check`: the same validation, and
    /// nothing written (what the server creates at start is in `notes`).
    /// Never to be served.
    pub fn build_for_check(config: &Config) -> Result<Snapshot, Vec<String>> {
        Self::build_with(config, None, None, tls::Purpose::Check)
    }

    /// [`Snapshot::build`] with the locks of every instance taken through
    /// `coord` (each storage root is a store of its own), or, with `None`,
    /// as lock files in each storage root.
    pub fn build_coordinated(
        config: &Config,
        previous: Option<&Snapshot>,
        coord: Option<Coordinator>,
    ) -> Result<Snapshot, Vec<String>> {
        Self::build_with(config, previous, coord, tls::Purpose::Serve)
    }

    fn build_with(
        config: &Config,
        previous: Option<&Snapshot>,
        coord: Option<Coordinator>,
        purpose: tls::Purpose,
    ) -> Result<Snapshot, Vec<String>> {
        let mut instances = BTreeMap::new();
        let mut by_host = HashMap::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        for ic in &config.instances {
            let old = previous.and_then(|p| p.instances.get(&ic.name));
            let registry = match old {
                Some(o)
                    if o.config.storage == ic.storage
                        && o.config.blob_cache == ic.blob_cache
                        && o.config.mirror == ic.mirror =>
                {
                    o.registry.clone()
                }
                _ => {
                    let coord = coord.as_ref().map(|c| c.for_store(&ic.storage.identity()));
                    let cache = ic.blob_cache.as_ref().map(BlobCache::open).transpose();
                    let opened = Registry::open(&ic.storage, coord).map(|r| match &ic.mirror {
                        Some(spec) => r.with_mirror(spec.clone(), &ic.storage),
                        None => Ok(r),
                    });
                    match (opened, cache) {
                        (Ok(Ok(r)), Ok(cache)) => Arc::new(r.with_cache(cache.map(Arc::new))),
                        (Ok(Err(e)), _) => {
                            errors.push(format!("instance {}: mirror: {e}", ic.name));
                            continue;
                        }
                        (Err(e), _) => {
                            errors.push(format!("instance {}: {e}", ic.name));
                            continue;
                        }
                        (_, Err(e)) => {
                            errors.push(format!("instance {}: blob cache: {e}", ic.name));
                            continue;
                        }
                    }
                }
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
                Some(o)
                    if o.config.tls == ic.tls
                        && o.config.hostnames == ic.hostnames
                        && Arc::ptr_eq(&o.registry, &registry) =>
                {
                    Ok(o.tls.clone())
                }
                _ => tls::InstanceTls::build(
                    &ic.name,
                    &ic.hostnames,
                    &ic.tls,
                    &config.state_dir,
                    registry.driver(),
                    purpose,
                )
                .map(|t| t.map(Arc::new)),
            };
            let notifier = match old {
                Some(o) if o.config.notify == ic.notify => Ok(o.notifier.clone()),
                _ if purpose == tls::Purpose::Check || ic.notify.is_empty() => {
                    Ok(Arc::new(Notifier::default()))
                }
                _ => Notifier::open(
                    &ic.name,
                    &ic.notify,
                    &config.state_dir.join("notify").join(&ic.name),
                )
                .map(Arc::new)
                .map_err(|e| format!("instance {}: webhook queue: {e}", ic.name)),
            };
            let notifier = match notifier {
                Ok(n) => n,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let tls = match tls {
                Ok(t) => {
                    let note = t.as_ref().and_then(|t| t.note.clone());
                    if let Some(n) = note.filter(|n| !notes.contains(n)) {
                        notes.push(n);
                    }
                    t
                }
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
                        notifier,
                        state_dir: config.state_dir.clone(),
                        jobs: parking_lot::Mutex::new(Vec::new()),
                        storage_problem: parking_lot::Mutex::new(None),
                        next_gc: parking_lot::Mutex::new(None),
                        ready_probe: tokio::sync::Mutex::new(None),
                    });
                    for h in &ic.hostnames {
                        by_host.insert(h.clone(), inst.clone());
                    }
                    instances.insert(ic.name.clone(), inst);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let admin_auth = match config.admin.as_ref().and_then(|a| a.htpasswd.as_ref()) {
            None => None,
            Some(path) => match previous.and_then(|p| p.admin_auth.clone()) {
                Some(auth) if auth.path() == path => {
                    auth.refresh_now();
                    Some(auth)
                }
                _ => match Authenticator::load(
                    "admin",
                    path,
                    crate::config::DEFAULT_MAX_LOGIN_FAILURES,
                ) {
                    Ok(auth) => Some(Arc::new(auth)),
                    Err(e) => {
                        errors.push(format!("admin listener: {e}"));
                        None
                    }
                },
            },
        };
        if errors.is_empty() {
            let https_port = previous.map_or(0, |p| p.https_port.load(Ordering::Relaxed));
            Ok(Snapshot {
                instances,
                by_host,
                warnings,
                notes,
                https_port: AtomicU16::new(https_port),
                header_timeout: config.header_timeout,
                body_timeout: config.body_timeout,
                coord,
                metrics: previous.map(|p| p.metrics.clone()).unwrap_or_default(),
                counting: config.admin.is_some(),
                admin_auth,
            })
        } else {
            Err(errors)
        }
    }
}

impl Snapshot {
    /// Starts the instances' background work: ACME, pull log, retention.
    pub(super) fn start_background(&self) {
        for (name, inst) in &self.instances {
            if let Some(t) = &inst.tls {
                t.start(name);
            }
            inst.start_jobs();
        }
    }
}
