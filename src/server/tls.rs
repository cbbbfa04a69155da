//! TLS for instances: where each certificate comes from (ACME, PEM files,
//! berth's local CA) and the server-side rustls configuration built on it;
//! the renewal of ACME and self-signed certificates in the running server.
//! A `berth check` builds the same and writes nothing ([`Purpose`]): the
//! local CA is created by the server, as the user it runs as. One crypto
//! provider (aws-lc-rs) serves all of it, ACME included.
//!
//! Also what is known of the certificate each instance serves
//! ([`CertStatus`]: whether one is loaded, when it ends, the ACME orders
//! that failed), for the metrics and readiness of the admin listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_acme::{
    AccountCache, AcmeConfig, AcmeState, CertCache, EventError, EventOk, ResolvesServerCertAcme,
    UseChallenge,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::task::JoinHandle;

use super::acme_cache::StoreCache;
use crate::config::{AcmeChallenge, Tls};
use crate::storage::driver::{Driver, StorageError};

/// How often a `files` certificate is looked at for changes.
const FILES_RECHECK: Duration = Duration::from_secs(2);

/// aws-lc-rs, its cipher suites with AES-128-GCM first (Go's order, and
/// so Caddy's and docker's): ten AES rounds per block instead of fourteen
/// on every byte served, at a strength well beyond what TLS's other parts
/// give.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // A stable sort: the order of the others stays aws-lc-rs's.
    provider.cipher_suites.sort_by_key(|s| {
        use rustls::CipherSuite::*;
        !matches!(
            s.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

/// TLS 1.2 and 1.3 with the server's order of cipher suites, HTTP/2 and
/// HTTP/1.1 by ALPN.
fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// What is known of the certificate an instance serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertStatus {
    /// Whether a certificate is served (ACME: once one is ordered or
    /// loaded from the cache; the other modes have one from the start).
    pub loaded: bool,
    /// When the served certificate ends, in Unix seconds.
    pub not_after: Option<i64>,
    /// ACME orders that failed since the instance's TLS was built.
    pub order_failures: u64,
    /// The last ACME error, until a certificate is served.
    pub last_error: Option<String>,
}

impl CertStatus {
    /// Why the certificate keeps the instance from being ready at `now`:
    /// none served yet, or the one served has ended.
    pub fn problem(&self, now: SystemTime) -> Option<String> {
        if !self.loaded {
            return Some(match &self.last_error {
                Some(e) => format!("no certificate yet: ACME: {e}"),
                None => "no certificate yet: ACME order under way".to_string(),
            });
        }
        let ended = SystemTime::UNIX_EPOCH + Duration::from_secs(self.not_after?.max(0) as u64);
        (ended <= now).then(|| {
            format!(
                "its certificate ended at {}",
                humantime::format_rfc3339_seconds(ended)
            )
        })
    }
}

/// When the first certificate of `chain` (the leaf) ends, in Unix seconds.
fn not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// [`not_after`] of a PEM bundle as rustls-acme keeps it (the key, then
/// the chain).
fn pem_not_after(pem: &[u8]) -> Option<i64> {
    let leaf = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    not_after(&[leaf])
}

/// The [`CertStatus`] of an instance, kept up to date by whatever serves
/// its certificates.
#[derive(Debug, Default)]
struct Served {
    status: Mutex<CertStatus>,
    /// ACME: when the certificate read from the cache ends, until
    /// rustls-acme says it serves it.
    from_cache: Mutex<Option<i64>>,
}

impl Served {
    /// A certificate ending at `not_after` is served from now on.
    fn serving(&self, not_after: Option<i64>) {
        let mut s = self.status.lock();
        s.loaded = true;
        s.not_after = not_after;
        s.last_error = None;
    }

    /// An ACME event that is an error: counted when an order failed.
    fn acme_error<EC, EA>(&self, e: &EventError<EC, EA>)
    where
        EC: std::fmt::Debug + std::fmt::Display,
        EA: std::fmt::Debug + std::fmt::Display,
    {
        let mut s = self.status.lock();
        if matches!(e, EventError::Order(_) | EventError::NewCertParse(_)) {
            s.order_failures += 1;
        }
        s.last_error = Some(e.to_string());
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// A PEM chain and key on disk, re-read when either file changes. A change
/// that does not parse is logged and the previous certificate stays.
#[derive(Debug)]
struct FileCert {
    instance: String,
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<(Instant, Option<(SystemTime, SystemTime)>)>,
    served: Arc<Served>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    certified_key(chain, key)
}

impl FileCert {
    fn new(instance: &str, cert: &Path, key: &Path, served: Arc<Served>) -> Result<Self, String> {
        let stamp = modified(cert).zip(modified(key));
        let current = load_files(cert, key)?;
        served.serving(not_after(&current.cert));
        Ok(FileCert {
            instance: instance.to_string(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(current),
            seen: Mutex::new((Instant::now(), stamp)),
            served,
        })
    }

    fn refresh(&self) {
        let mut seen = self.seen.lock();
        if seen.0.elapsed() < FILES_RECHECK {
            return;
        }
        seen.0 = Instant::now();
        let stamp = modified(&self.cert).zip(modified(&self.key));
        if stamp == seen.1 {
            return;
        }
        seen.1 = stamp;
        match load_files(&self.cert, &self.key) {
            Ok(k) => {
                self.served.serving(not_after(&k.cert));
                self.current.store(Arc::new(k));
                tracing::info!(instance = %self.instance, "certificate files changed: serving the new certificate");
            }
            Err(e) => {
                tracing::error!(instance = %self.instance, "certificate files changed but cannot be used, keeping the previous certificate: {e}")
            }
        }
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current.load_full())
    }
}

/// The years around now, for the local CA's validity.
fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

/// The path of berth's local CA certificate in `state_dir`.
pub fn ca_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca/ca.crt")
}

fn ca_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca/ca.key")
}

const CA_NAME: &str = "berth local CA";

fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 20, 1, 1);
    Ok(params)
}

type Ca = (rcgen::Certificate, rcgen::KeyPair);

/// The CA of `key`: the same name and key make the same issuer as the
/// certificate on disk.
fn ca_of(key: rcgen::KeyPair) -> Result<Ca, rcgen::Error> {
    let cert = ca_params()?.self_signed(&key)?;
    Ok((cert, key))
}

/// berth's local CA as it is in `state_dir`: `None` when it has no key yet.
/// Errors name the file that failed.
fn read_ca(state_dir: &Path) -> Result<Option<Ca>, String> {
    let path = ca_key_path(state_dir);
    let err = |e: &dyn std::fmt::Display| format!("local CA key {}: {e}", path.display());
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&e)),
    };
    let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| err(&e))?;
    ca_of(key).map(Some).map_err(|e| err(&e))
}

/// Loads berth's local CA from `state_dir`, creating what is missing: a
/// new CA when there is no key, the certificate of the key when only that
/// is gone. Errors name the file that failed.
pub fn local_ca(state_dir: &Path) -> Result<Ca, String> {
    let crt = ca_path(state_dir);
    let ca = match read_ca(state_dir)? {
        Some(ca) => ca,
        None => {
            let path = ca_key_path(state_dir);
            let err = |e: &dyn std::fmt::Display| format!("local CA key {}: {e}", path.display());
            let ca = rcgen::KeyPair::generate()
                .and_then(ca_of)
                .map_err(|e| err(&e))?;
            let dir = path.parent().expect("ca path has a parent");
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
            write_private(&path, ca.1.serialize_pem().as_bytes()).map_err(|e| err(&e))?;
            tracing::info!(path = %crt.display(), "created the local CA");
            // A certificate of an older key is not this CA's.
            let _ = std::fs::remove_file(&crt);
            ca
        }
    };
    if !crt.is_file() {
        crate::storage::atomic_write(&crt, ca.0.pem().as_bytes())
            .map_err(|e| format!("local CA certificate {}: {e}", crt.display()))?;
    }
    Ok(ca)
}

/// For `berth check`, which writes nothing: the local CA on disk, or where
/// there is none a CA made in memory to issue with, and what the server
/// will create at start. Errors name the file that failed.
fn check_local_ca(state_dir: &Path) -> Result<(Ca, Option<String>), String> {
    let crt = ca_path(state_dir);
    match read_ca(state_dir)? {
        Some(ca) if crt.is_file() => Ok((ca, None)),
        Some(ca) => Ok((
            ca,
            Some(format!(
                "the server writes {} (from ca.key) at start",
                crt.display()
            )),
        )),
        None => {
            let ca = rcgen::KeyPair::generate()
                .and_then(ca_of)
                .map_err(|e| format!("local CA: {e}"))?;
            let note = format!(
                "the server creates the local CA ({} and ca.key) at start, as the user it runs as",
                crt.display()
            );
            Ok((ca, Some(note)))
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// How far back a self-signed certificate's validity starts, for clients
/// whose clocks are a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A certificate for `hostnames` issued by `ca`, valid for `lifetime`
/// from now; and when it ends.
fn issue(
    hostnames: &[String],
    ca: &Ca,
    lifetime: Duration,
) -> Result<(CertifiedKey, SystemTime), String> {
    let err = |e: rcgen::Error| format!("issuing a certificate for {}: {e}", hostnames.join(", "));
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(hostnames.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostnames[0].clone());
    let now = SystemTime::now();
    let since_epoch = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    // Whole seconds, as X.509 keeps them.
    let expires =
        SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch(now + lifetime).as_secs());
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch(now - CLOCK_SKEW);
    params.not_after = epoch + since_epoch(expires);
    let leaf = params.signed_by(&key, &ca.0, &ca.1).map_err(err)?;
    let chain = vec![leaf.der().clone(), ca.0.der().clone()];
    let certified = certified_key(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )?;
    Ok((certified, expires))
}

/// How often a self-signed certificate's end is looked at again, also
/// when it is far (a clock set forward is noticed within this).
const RENEW_CHECK: Duration = Duration::from_secs(3600);

/// How long a failed renewal waits before the next try, at most.
const RENEW_RETRY: Duration = Duration::from_secs(60);

/// An instance's certificate from the local CA, renewed in the running
/// server once less than a third of its lifetime is left, as ACME
/// certificates are.
#[derive(Debug)]
struct SelfSigned {
    instance: String,
    hostnames: Vec<String>,
    state_dir: PathBuf,
    lifetime: Duration,
    current: ArcSwap<CertifiedKey>,
    /// When the certificate served now ends.
    expires: Mutex<SystemTime>,
    served: Arc<Served>,
}

impl SelfSigned {
    /// Issues the first certificate: with the local CA on disk (created
    /// when missing) to serve; to check, with what is there and writing
    /// nothing (then also what the server will create).
    fn new(
        instance: &str,
        hostnames: &[String],
        state_dir: &Path,
        lifetime: Duration,
        purpose: Purpose,
        served: Arc<Served>,
    ) -> Result<(Self, Option<String>), String> {
        let (ca, note) = match purpose {
            Purpose::Serve => (local_ca(state_dir)?, None),
            Purpose::Check => check_local_ca(state_dir)?,
        };
        let (cert, expires) = issue(hostnames, &ca, lifetime)?;
        served.serving(not_after(&cert.cert));
        let issued = SelfSigned {
            instance: instance.to_string(),
            hostnames: hostnames.to_vec(),
            state_dir: state_dir.to_path_buf(),
            lifetime,
            current: ArcSwap::from_pointee(cert),
            expires: Mutex::new(expires),
            served,
        };
        Ok((issued, note))
    }

    fn renew_at(&self) -> SystemTime {
        *self.expires.lock() - self.lifetime / 3
    }

    fn renew(&self) -> Result<(), String> {
        let ca = local_ca(&self.state_dir)?;
        let (cert, expires) = issue(&self.hostnames, &ca, self.lifetime)?;
        self.served.serving(not_after(&cert.cert));
        self.current.store(Arc::new(cert));
        *self.expires.lock() = expires;
        tracing::info!(
            instance = %self.instance,
            valid_until = %humantime::format_rfc3339_seconds(expires),
            "self-signed: renewed the certificate"
        );
        Ok(())
    }

    /// Renews the certificate whenever it is due, until aborted.
    async fn keep_renewed(self: Arc<Self>) {
        loop {
            let wait = self
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait.min(RENEW_CHECK)).await;
            if SystemTime::now() < self.renew_at() {
                continue;
            }
            if let Err(e) = self.renew() {
                tracing::error!(instance = %self.instance, "self-signed: cannot renew the certificate, serving the current one: {e}");
                tokio::time::sleep(RENEW_RETRY.min(self.lifetime / 10)).await;
            }
        }
    }
}

impl ResolvesServerCert for SelfSigned {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What building an instance's TLS is for: a server creates the local CA
/// it needs (as the user it runs as); a check reads what is there and
/// writes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Serve,
    Check,
}

/// The renewal of a self-signed certificate, once started.
struct Renewal {
    cert: Arc<SelfSigned>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Renewal {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

struct Acme {
    resolver: Arc<ResolvesServerCertAcme>,
    challenge: Arc<ServerConfig>,
    pending: Mutex<Option<AcmeState<StorageError>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Acme {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// An instance's ACME cache in its store ([`StoreCache`]), telling
/// [`Served`] which certificate rustls-acme deploys: the one it loads
/// (served once it says so), or a new one (stored right after it is
/// served).
struct Observed {
    store: StoreCache,
    served: Arc<Served>,
}

#[async_trait]
impl CertCache for Observed {
    type EC = StorageError;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let pem = self.store.load_cert(domains, directory_url).await?;
        *self.served.from_cache.lock() = pem.as_deref().and_then(pem_not_after);
        Ok(pem)
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), StorageError> {
        self.served.serving(pem_not_after(cert));
        self.store.store_cert(domains, directory_url, cert).await
    }
}

#[async_trait]
impl AccountCache for Observed {
    type EA = StorageError;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.store.load_account(contact, directory_url).await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), StorageError> {
        self.store
            .store_account(contact, directory_url, account)
            .await
    }
}

/// Where an instance's certificates come from.
enum Source {
    Files(Arc<FileCert>),
    SelfSigned(Renewal),
    Acme(Acme),
}

/// An instance's TLS: its server configuration, where its certificates
/// come from, and what is known of the one served.
pub struct InstanceTls {
    pub config: Arc<ServerConfig>,
    source: Source,
    served: Arc<Served>,
    /// What the server will create for it that is not there yet (built to
    /// check only).
    pub note: Option<String>,
}

impl InstanceTls {
    /// Builds the TLS side of an instance; `None` for `tls.mode = "off"`.
    /// Nothing runs until [`InstanceTls::start`].
    pub fn build(
        name: &str,
        hostnames: &[String],
        tls: &Tls,
        state_dir: &Path,
        store: Arc<dyn Driver>,
        purpose: Purpose,
    ) -> Result<Option<Self>, String> {
        let prefix = |e: String| format!("instance {name}: {e}");
        let served = Arc::new(Served::default());
        let mut note = None;
        let (resolver, source): (Arc<dyn ResolvesServerCert>, _) = match tls {
            Tls::Off => return Ok(None),
            Tls::Files { cert, key } => {
                let files =
                    Arc::new(FileCert::new(name, cert, key, served.clone()).map_err(prefix)?);
                (files.clone(), Source::Files(files))
            }
            Tls::SelfSigned { lifetime } => {
                let (cert, to_create) = SelfSigned::new(
                    name,
                    hostnames,
                    state_dir,
                    *lifetime,
                    purpose,
                    served.clone(),
                )
                .map_err(prefix)?;
                let cert = Arc::new(cert);
                note = to_create;
                let renewal = Renewal {
                    cert: cert.clone(),
                    task: Mutex::new(None),
                };
                (cert, Source::SelfSigned(renewal))
            }
            Tls::Acme {
                email,
                directory,
                ca,
                challenge,
            } => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                if let Some(ca) = ca {
                    let certs = CertificateDer::pem_file_iter(ca)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| prefix(format!("{}: {e}", ca.display())))?;
                    for c in certs {
                        roots
                            .add(c)
                            .map_err(|e| prefix(format!("{}: {e}", ca.display())))?;
                    }
                }
                let client = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| prefix(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let mut cfg = AcmeConfig::new_with_client_config(hostnames, Arc::new(client))
                    .directory(directory)
                    .challenge_type(match challenge {
                        AcmeChallenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
                        AcmeChallenge::Http01 => UseChallenge::Http01,
                    });
                if let Some(email) = email {
                    cfg = cfg.contact_push(format!("mailto:{email}"));
                }
                let cache = Observed {
                    store: StoreCache::new(store, state_dir.join("acme").join(name)),
                    served: served.clone(),
                };
                let state = cfg.cache(cache).state();
                let resolver = state.resolver();
                let acme = Acme {
                    resolver: resolver.clone(),
                    challenge: state.challenge_rustls_config_with_provider(provider()),
                    pending: Mutex::new(Some(state)),
                    task: Mutex::new(None),
                };
                (resolver, Source::Acme(acme))
            }
        };
        Ok(Some(InstanceTls {
            config: server_config(resolver).map_err(prefix)?,
            source,
            served,
            note,
        }))
    }

    /// Starts ordering and renewing certificates (ACME), or renewing the
    /// self-signed one; idempotent.
    pub fn start(&self, name: &str) {
        let acme = match &self.source {
            Source::Files(_) => return,
            Source::SelfSigned(r) => {
                let mut task = r.task.lock();
                if task.is_none() {
                    *task = Some(tokio::spawn(r.cert.clone().keep_renewed()));
                }
                return;
            }
            Source::Acme(acme) => acme,
        };
        let Some(mut state) = acme.pending.lock().take() else {
            return;
        };
        let instance = name.to_string();
        let served = self.served.clone();
        tracing::info!(
            instance,
            "ACME: loading the cached certificate or ordering one"
        );
        let task = tokio::spawn(async move {
            let mut had_cert = false;
            while let Some(event) = state.next().await {
                match event {
                    Ok(EventOk::DeployedCachedCert) => {
                        had_cert = true;
                        served.serving(served.from_cache.lock().take());
                        tracing::info!(instance, "ACME: serving the cached certificate");
                    }
                    Ok(EventOk::DeployedNewCert) => {
                        let what = if had_cert {
                            "renewed certificate"
                        } else {
                            "new certificate"
                        };
                        had_cert = true;
                        tracing::info!(instance, "ACME: order succeeded, serving the {what}");
                    }
                    Ok(EventOk::CertCacheStore) => {
                        tracing::info!(instance, "ACME: certificate stored")
                    }
                    Ok(EventOk::AccountCacheStore) => {
                        tracing::info!(instance, "ACME: account stored")
                    }
                    Err(e) => {
                        served.acme_error(&e);
                        tracing::error!(instance, "ACME: {e} (retrying with backoff)")
                    }
                }
            }
        });
        *acme.task.lock() = Some(task);
    }

    /// The configuration for a connection: the challenge one for ACME's
    /// TLS-ALPN-01 validation, the instance's otherwise.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        match &self.source {
            Source::Acme(acme) if rustls_acme::is_tls_alpn_challenge(hello) => {
                acme.challenge.clone()
            }
            _ => self.config.clone(),
        }
    }

    /// The key authorization for an HTTP-01 challenge token, while one is pending.
    pub fn http01_key_auth(&self, token: &str) -> Option<String> {
        match &self.source {
            Source::Acme(acme) => acme.resolver.get_http_01_key_auth(token),
            _ => None,
        }
    }

    /// What is known of the certificate served now (certificate files
    /// changed since the last handshake are read first).
    pub fn status(&self) -> CertStatus {
        if let Source::Files(files) = &self.source {
            files.refresh();
        }
        self.served.status.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_certificate_tells_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let hostnames = ["ci.test".to_string()];
        let lifetime = Duration::from_secs(3600);
        let tls = InstanceTls::build(
            "ci",
            &hostnames,
            &Tls::SelfSigned { lifetime },
            dir.path(),
            Arc::new(crate::storage::memory::MemDriver::new()),
            Purpose::Serve,
        )
        .unwrap()
        .unwrap();
        let status = tls.status();
        let now = SystemTime::now();
        let secs =
            |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let ends = status.not_after.unwrap();
        assert!((ends - secs(now + lifetime)).abs() <= 2, "{status:?}");
        assert!(status.loaded && status.problem(now).is_none());
        assert!(status
            .problem(now + lifetime * 2)
            .unwrap()
            .starts_with("its certificate ended at "));
    }

    #[test]
    fn acme_errors_count_failed_orders_until_a_certificate_is_served() {
        let served = Served::default();
        let now = SystemTime::now();
        assert_eq!(
            served.status.lock().problem(now).unwrap(),
            "no certificate yet: ACME order under way"
        );
        let load: EventError<String, String> = EventError::CertCacheLoad("unreadable".into());
        served.acme_error(&load);
        let order: EventError<String, String> = EventError::Order(
            rustls_acme::OrderError::TooManyAttemptsAuth("ci.test".into()),
        );
        served.acme_error(&order);
        let status = served.status.lock().clone();
        assert_eq!(status.order_failures, 1);
        assert_eq!(
            status.problem(now).unwrap(),
            "no certificate yet: ACME: order: authorization for ci.test failed too many times"
        );
        let (cert, _) = issue(
            &["ci.test".to_string()],
            &ca_of(rcgen::KeyPair::generate().unwrap()).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        served.serving(not_after(&cert.cert));
        let status = served.status.lock().clone();
        assert!(status.loaded && status.last_error.is_none() && status.order_failures == 1);
        assert!(status.problem(now).is_none());
    }
}
