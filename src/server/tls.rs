//! TLS for instances: where each certificate comes from (ACME, PEM files,
//! berth's local CA) and the server-side rustls configuration built on it.
//! One crypto provider (aws-lc-rs) serves all of it, ACME included.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_acme::{AcmeConfig, AcmeState, EventOk, ResolvesServerCertAcme, UseChallenge};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::task::JoinHandle;

use super::acme_cache::StoreCache;
use crate::config::{AcmeChallenge, Tls};
use crate::storage::driver::{Driver, StorageError};

/// How often a `files` certificate is looked at for changes.
const FILES_RECHECK: Duration = Duration::from_secs(2);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN.
fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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

/// A certificate served as it is (self-signed mode).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
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
    fn new(instance: &str, cert: &Path, key: &Path) -> Result<Self, String> {
        let stamp = modified(cert).zip(modified(key));
        Ok(FileCert {
            instance: instance.to_string(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(load_files(cert, key)?),
            seen: Mutex::new((Instant::now(), stamp)),
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

/// The years around now, for certificate validity.
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

/// Loads berth's local CA from `state_dir`, creating it the first time.
pub fn local_ca(state_dir: &Path) -> Result<(rcgen::Certificate, rcgen::KeyPair), String> {
    let crt = ca_path(state_dir);
    let key_path = crt.with_file_name("ca.key");
    let err = |e: &dyn std::fmt::Display| format!("local CA in {}: {e}", crt.display());
    if key_path.is_file() && crt.is_file() {
        let pem = std::fs::read_to_string(&key_path).map_err(|e| err(&e))?;
        let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| err(&e))?;
        // The same name and key make the same issuer as the file on disk.
        let cert = ca_params()
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| err(&e))?;
        return Ok((cert, key));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
    let cert = ca_params()
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| err(&e))?;
    let dir = crt.parent().expect("ca path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|e| err(&e))?;
    crate::storage::atomic_write(&crt, cert.pem().as_bytes()).map_err(|e| err(&e))?;
    tracing::info!(path = %crt.display(), "created the local CA");
    Ok((cert, key))
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

fn self_signed(hostnames: &[String], state_dir: &Path) -> Result<CertifiedKey, String> {
    let (ca, ca_key) = local_ca(state_dir)?;
    let err = |e: rcgen::Error| format!("issuing a certificate for {}: {e}", hostnames.join(", "));
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(hostnames.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostnames[0].clone());
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 1, 12, 31);
    let leaf = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    certified_key(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
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

/// An instance's TLS: its server configuration, and its ACME client when
/// it has one.
pub struct InstanceTls {
    pub config: Arc<ServerConfig>,
    acme: Option<Acme>,
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
    ) -> Result<Option<Self>, String> {
        let prefix = |e: String| format!("instance {name}: {e}");
        let (resolver, acme): (Arc<dyn ResolvesServerCert>, _) = match tls {
            Tls::Off => return Ok(None),
            Tls::Files { cert, key } => (
                Arc::new(FileCert::new(name, cert, key).map_err(prefix)?),
                None,
            ),
            Tls::SelfSigned => (
                Arc::new(Fixed(Arc::new(
                    self_signed(hostnames, state_dir).map_err(prefix)?,
                ))),
                None,
            ),
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
                let state = cfg
                    .cache(StoreCache::new(store, state_dir.join("acme").join(name)))
                    .state();
                let resolver = state.resolver();
                let acme = Acme {
                    resolver: resolver.clone(),
                    challenge: state.challenge_rustls_config_with_provider(provider()),
                    pending: Mutex::new(Some(state)),
                    task: Mutex::new(None),
                };
                (resolver as Arc<dyn ResolvesServerCert>, Some(acme))
            }
        };
        Ok(Some(InstanceTls {
            config: server_config(resolver).map_err(prefix)?,
            acme,
        }))
    }

    /// Starts ordering and renewing certificates (ACME); idempotent.
    pub fn start(&self, name: &str) {
        let Some(acme) = &self.acme else { return };
        let Some(mut state) = acme.pending.lock().take() else {
            return;
        };
        let instance = name.to_string();
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
                    Err(e) => tracing::error!(instance, "ACME: {e} (retrying with backoff)"),
                }
            }
        });
        *acme.task.lock() = Some(task);
    }

    /// The configuration for a connection: the challenge one for ACME's
    /// TLS-ALPN-01 validation, the instance's otherwise.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        match &self.acme {
            Some(acme) if rustls_acme::is_tls_alpn_challenge(hello) => acme.challenge.clone(),
            _ => self.config.clone(),
        }
    }

    /// The key authorization for an HTTP-01 challenge token, while one is pending.
    pub fn http01_key_auth(&self, token: &str) -> Option<String> {
        self.acme.as_ref()?.resolver.get_http_01_key_auth(token)
    }
}
